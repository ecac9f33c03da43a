//! What one streamed `/v1/completions` response tells the benchmark, event by event, following
//! vLLM's `benchmark_serving.py` (`async_request_openai_completions`):
//!
//! - an event whose `choices[0].text` is non-empty is one [`Chunk`], timed when its bytes
//!   arrived; the first is the TTFT point, the gaps between them are the ITLs;
//! - tokens per chunk: when the server puts `usage` on content events (vLLM's
//!   `continuous_usage_stats`), the growth of `usage.completion_tokens` since the last
//!   content chunk; otherwise 1 per chunk, as vLLM counts;
//! - the output length is the last `usage.completion_tokens` seen (the final usage-only
//!   event that `stream_options.include_usage` asks for); without usage it stays `None`,
//!   and [`metrics`](crate::metrics) falls back to the chunks' token sum;
//! - `data: [DONE]` ends the stream; an `error` object in an event fails the request (vLLM's
//!   server reports mid-stream errors that way).
//!
//! Anything malformed fails the request with a message; nothing here panics.

use serde_json::Value;

use crate::metrics::Chunk;

/// Longest piece of server output quoted in an error message.
const QUOTE_CHARS: usize = 200;

/// The accounting of one response stream so far.
#[derive(Debug, Default)]
pub struct StreamState {
    pub chunks: Vec<Chunk>,
    /// The last `usage.completion_tokens` seen.
    pub output_tokens: Option<usize>,
    /// `completion_tokens` already handed out to chunks (per-chunk usage only).
    attributed: u64,
    /// `data: [DONE]` arrived.
    pub done: bool,
}

/// `s` cut to [`QUOTE_CHARS`] characters for an error message.
pub fn quote(s: &str) -> String {
    let mut q: String = s.chars().take(QUOTE_CHARS).collect();
    if q.len() < s.len() {
        q.push('…');
    }
    q
}

/// The message of an OpenAI-style error object (`{"error": {"message": …}}`), of vLLM's
/// older flat form (`{"message": …}`), or FastAPI's (`{"detail": …}`).
pub fn error_message(v: &Value) -> Option<String> {
    let e = v.get("error").unwrap_or(v);
    let m = e.get("message").or_else(|| e.get("detail")).unwrap_or(e);
    match m {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other if v.get("error").is_some() => Some(other.to_string()),
        _ => None,
    }
}

impl StreamState {
    /// Takes one event's `data` payload, received at `t_s` seconds since the benchmark start.
    ///
    /// # Errors
    /// A message for a payload that is not a completion chunk, or an error event.
    pub fn on_event(&mut self, data: &str, t_s: f64) -> Result<(), String> {
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        if self.done {
            return Err(format!("data after `data: [DONE]`: {}", quote(data)));
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| format!("malformed event data ({e}): {}", quote(data)))?;
        if !v.is_object() {
            return Err(format!("event data is not a JSON object: {}", quote(data)));
        }
        if v.get("error").is_some() {
            let msg = error_message(&v).unwrap_or_else(|| quote(data));
            return Err(format!("server error in stream: {msg}"));
        }
        let usage = match v.get("usage") {
            None | Some(Value::Null) => None,
            Some(u) => Some(
                u.get("completion_tokens")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| {
                        format!("usage without a completion_tokens count: {}", quote(data))
                    })?,
            ),
        };
        let text = match v.get("choices") {
            None | Some(Value::Null) => None,
            Some(Value::Array(cs)) => match cs.first().map(|c| c.get("text")) {
                None | Some(None) | Some(Some(Value::Null)) => None,
                Some(Some(Value::String(s))) => Some(s.as_str()),
                Some(Some(_)) => {
                    return Err(format!("choices[0].text is not a string: {}", quote(data)))
                }
            },
            Some(_) => return Err(format!("choices is not an array: {}", quote(data))),
        };
        if text.is_some_and(|t| !t.is_empty()) {
            let tokens = match usage {
                // Tokens whose text was empty (e.g. half a UTF-8 character) land on this chunk.
                Some(u) => u.saturating_sub(self.attributed),
                None => 1,
            };
            self.attributed = self.attributed.saturating_add(tokens);
            self.chunks.push(Chunk {
                t_s,
                tokens: u32::try_from(tokens).unwrap_or(u32::MAX),
            });
        }
        if let Some(u) = usage {
            self.output_tokens = Some(usize::try_from(u).unwrap_or(usize::MAX));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(text: &str) -> String {
        serde_json::json!({"choices": [{"index": 0, "text": text, "finish_reason": null}]})
            .to_string()
    }

    fn tokens(s: &StreamState) -> Vec<u32> {
        s.chunks.iter().map(|c| c.tokens).collect()
    }

    #[test]
    fn one_token_per_chunk_without_usage_and_final_usage_wins() {
        let mut s = StreamState::default();
        s.on_event(&content("a"), 0.1).unwrap();
        s.on_event(&content(""), 0.15).unwrap();
        s.on_event(&content("bc"), 0.2).unwrap();
        assert_eq!(tokens(&s), [1, 1]);
        assert_eq!(s.output_tokens, None);
        s.on_event(
            r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3}}"#,
            0.3,
        )
        .unwrap();
        s.on_event(" [DONE]", 0.3).unwrap();
        assert_eq!((s.output_tokens, s.done), (Some(3), true));
        assert_eq!(s.chunks[1].t_s, 0.2);
    }

    #[test]
    fn per_chunk_usage_gives_tokens_per_chunk() {
        let mut s = StreamState::default();
        let ev = |text: &str, n: u64| {
            serde_json::json!({"choices": [{"text": text}], "usage": {"completion_tokens": n}})
                .to_string()
        };
        s.on_event(&ev("a", 1), 0.1).unwrap();
        s.on_event(&ev("", 2), 0.2).unwrap();
        s.on_event(&ev("bcd", 5), 0.3).unwrap();
        assert_eq!(tokens(&s), [1, 4]);
        assert_eq!(s.output_tokens, Some(5));
    }

    #[test]
    fn malformed_events_are_errors() {
        let mut s = StreamState::default();
        for bad in [
            "{oops",
            "[1,2]",
            r#"{"choices": 3}"#,
            r#"{"choices": [{"text": 7}]}"#,
            r#"{"usage": {"completion_tokens": -1}}"#,
        ] {
            assert!(s.on_event(bad, 0.0).is_err(), "{bad}");
        }
        let e = s
            .on_event(r#"{"error": {"message": "engine died", "code": 500}}"#, 0.0)
            .unwrap_err();
        assert_eq!(e, "server error in stream: engine died");
        s.on_event("[DONE]", 0.0).unwrap();
        assert!(s.on_event(&content("late"), 0.0).is_err());
    }

    #[test]
    fn error_messages_of_each_shape() {
        let m = |s: &str| error_message(&serde_json::from_str(s).unwrap());
        assert_eq!(
            m(r#"{"error":{"message":"queue full"}}"#).as_deref(),
            Some("queue full")
        );
        assert_eq!(
            m(r#"{"object":"error","message":"bad n"}"#).as_deref(),
            Some("bad n")
        );
        assert_eq!(m(r#"{"detail":"Not Found"}"#).as_deref(), Some("Not Found"));
        assert_eq!(m(r#"{"error":"plain"}"#).as_deref(), Some("plain"));
        assert_eq!(m(r#"{"other":1}"#), None);
        assert_eq!(quote(&"é".repeat(300)).chars().count(), QUOTE_CHARS + 1);
    }
}
