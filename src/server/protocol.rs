//! OpenAI request parameters (`/v1/completions`, `/v1/chat/completions`), read and checked.
//! Every rejection is a 400 naming the field. Defaults follow OpenAI and vLLM's server:
//! temperature 1, top_p 1, no top-k; `max_tokens` 16 for completions and the rest of the
//! context for chat; a completion prompt gets the tokenizer's special tokens (BOS), a chat
//! prompt is the rendered template, which carries its own.
use serde_json::{Map, Value};
use vpd_formats::tokenizer::{ChatMessage, Tokenizer};
use vpd_sampling::SamplingParams;

use super::error::ApiError;
use super::json::{kind, Fields};

/// The most choices one request may ask for.
pub const MAX_N: i64 = 16;
/// The most stop strings one request may give.
pub const MAX_STOP: usize = 16;
/// Alternatives per token: OpenAI allows 5 for completions and 20 for chat.
pub const MAX_LOGPROBS_COMPLETIONS: i64 = 5;
pub const MAX_TOP_LOGPROBS_CHAT: i64 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Completions,
    Chat,
}

/// What the server knows about the model it serves.
#[derive(Debug, Clone)]
pub struct ModelLimits {
    pub name: String,
    pub vocab: usize,
    pub context: usize,
}

/// A checked request.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub prompt_ids: Vec<u32>,
    pub max_tokens: usize,
    /// Sampling with `seed` unset; each choice gets its own (see [`Job::seed_for`]).
    pub sampling: SamplingParams,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    pub n: usize,
    pub stream: bool,
    pub include_usage: bool,
    /// vLLM's `stream_options.continuous_usage_stats`: usage in every chunk.
    pub continuous_usage: bool,
    /// `Some(k)`: each token's log-probability and its `k` most likely alternatives.
    pub logprobs: Option<usize>,
}

impl Job {
    /// The seed of choice `i`: the request's seed plus `i`, or `fallback` plus `i`.
    pub fn seed_for(&self, i: usize, fallback: u64) -> u64 {
        self.seed.unwrap_or(fallback).wrapping_add(i as u64)
    }
}

/// Reads and checks a raw request body: JSON (with NaN and ±Infinity named as errors), then
/// [`parse`]. The server's one entry point for request bodies.
///
/// # Errors
/// As [`parse`], and a 400 for a body that is not a JSON object.
pub fn parse_body(endpoint: Endpoint, body: &[u8], tok: &Tokenizer, model: &ModelLimits) -> Result<Job, ApiError> {
    super::json::parse_object(body).and_then(|m| parse(endpoint, &m, tok, model))
}

/// Checks a request body already read as a JSON object.
///
/// # Errors
/// A 400 naming the field, or a 404 for another model's name.
pub fn parse(
    endpoint: Endpoint,
    body: &Map<String, Value>,
    tok: &Tokenizer,
    model: &ModelLimits,
) -> Result<Job, ApiError> {
    let f = Fields(body);
    if let Some(name) = f.str("model")? {
        if name != model.name {
            return Err(ApiError {
                status: axum::http::StatusCode::NOT_FOUND,
                message: format!("The model `{name}` does not exist; this server serves `{}`.", model.name),
                param: Some("model".into()),
            });
        }
    }
    unsupported(&f)?;
    let prompt_ids = match endpoint {
        Endpoint::Completions => completion_prompt(&f, tok, model.vocab)?,
        Endpoint::Chat => chat_prompt(&f, tok)?,
    };
    if prompt_ids.is_empty() {
        let field = if endpoint == Endpoint::Chat { "messages" } else { "prompt" };
        return Err(ApiError::field(field, "is empty"));
    }
    let room = model.context.saturating_sub(prompt_ids.len());
    if room == 0 {
        let field = if endpoint == Endpoint::Chat { "messages" } else { "prompt" };
        return Err(ApiError::field(
            field,
            format!(
                "has {} tokens; this model's maximum context length is {} tokens",
                prompt_ids.len(),
                model.context
            ),
        ));
    }
    let max_field = if endpoint == Endpoint::Chat && f.get("max_completion_tokens").is_some() {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    let max_tokens = match f.i64(max_field)? {
        None if endpoint == Endpoint::Completions => 16.min(room),
        None => room,
        Some(m) if m < 1 => return Err(ApiError::field(max_field, format!("must be at least 1, got {m}"))),
        Some(m) if m as u64 > room as u64 => {
            return Err(ApiError::field(
                max_field,
                format!(
                    "this model's maximum context length is {} tokens; you requested {} tokens ({} in the prompt, {m} to generate)",
                    model.context,
                    prompt_ids.len() as i64 + m,
                    prompt_ids.len()
                ),
            ))
        }
        Some(m) => m as usize,
    };
    let temperature = match f.f64("temperature")? {
        None => 1.0,
        Some(t) if (0.0..=2.0).contains(&t) => t as f32,
        Some(t) => return Err(ApiError::field("temperature", format!("must be in [0, 2], got {t}"))),
    };
    let top_p = match f.f64("top_p")? {
        None => 1.0,
        Some(p) if p > 0.0 && p <= 1.0 => p as f32,
        Some(p) => return Err(ApiError::field("top_p", format!("must be in (0, 1], got {p}"))),
    };
    let top_k = match f.i64("top_k")? {
        None | Some(-1 | 0) => 0,
        Some(k) if k > 0 => usize::try_from(k).unwrap_or(usize::MAX),
        Some(k) => return Err(ApiError::field("top_k", format!("must be -1 or 0 (off) or at least 1, got {k}"))),
    };
    let n = match f.i64("n")? {
        None => 1,
        Some(n) if (1..=MAX_N).contains(&n) => n as usize,
        Some(n) => return Err(ApiError::field("n", format!("must be in [1, {MAX_N}], got {n}"))),
    };
    let seed = f.i64("seed")?.map(|s| s as u64);
    let stream = f.bool("stream")?.unwrap_or(false);
    let (include_usage, continuous_usage) = stream_options(&f, stream)?;
    Ok(Job {
        prompt_ids,
        max_tokens,
        sampling: SamplingParams {
            temperature,
            top_k,
            top_p,
            seed: 0,
        },
        seed,
        stop: stop_strings(&f)?,
        ignore_eos: f.bool("ignore_eos")?.unwrap_or(false),
        n,
        stream,
        include_usage,
        continuous_usage,
        logprobs: logprobs(endpoint, &f)?,
    })
}

fn logprobs(endpoint: Endpoint, f: &Fields) -> Result<Option<usize>, ApiError> {
    match endpoint {
        Endpoint::Completions => match f.get("logprobs") {
            None | Some(Value::Bool(false)) => Ok(None),
            Some(_) => match f.i64("logprobs")? {
                Some(k) if (0..=MAX_LOGPROBS_COMPLETIONS).contains(&k) => Ok(Some(k as usize)),
                Some(k) => Err(ApiError::field(
                    "logprobs",
                    format!("must be in [0, {MAX_LOGPROBS_COMPLETIONS}], got {k}"),
                )),
                None => Ok(None),
            },
        },
        Endpoint::Chat => {
            let on = f.bool("logprobs")?.unwrap_or(false);
            match (on, f.i64("top_logprobs")?) {
                (false, None) => Ok(None),
                (false, Some(_)) => Err(ApiError::field("top_logprobs", "needs `logprobs: true`")),
                (true, None) => Ok(Some(0)),
                (true, Some(k)) if (0..=MAX_TOP_LOGPROBS_CHAT).contains(&k) => Ok(Some(k as usize)),
                (true, Some(k)) => Err(ApiError::field(
                    "top_logprobs",
                    format!("must be in [0, {MAX_TOP_LOGPROBS_CHAT}], got {k}"),
                )),
            }
        }
    }
}

/// Parameters this server does not implement are refused rather than silently ignored.
fn unsupported(f: &Fields) -> Result<(), ApiError> {
    if f.bool("echo").ok().flatten() == Some(true) {
        return Err(ApiError::field("echo", "is not supported by this server"));
    }
    if let Some(b) = f.i64("best_of")? {
        if b != 1 {
            return Err(ApiError::field("best_of", "only 1 is supported"));
        }
    }
    Ok(())
}

fn completion_prompt(f: &Fields, tok: &Tokenizer, vocab: usize) -> Result<Vec<u32>, ApiError> {
    let encode = |s: &str| {
        tok.encode(s, true)
            .map_err(|e| ApiError::field("prompt", format!("cannot be tokenised: {e}")))
    };
    match f.get("prompt") {
        None => Err(ApiError::field("prompt", "is required")),
        Some(Value::String(s)) => encode(s),
        Some(Value::Array(items)) => match items.as_slice() {
            [] => Err(ApiError::field("prompt", "is empty")),
            [Value::String(s)] => encode(s),
            [Value::Array(ids)] => token_ids(ids, vocab),
            [Value::String(_), ..] | [Value::Array(_), ..] => Err(ApiError::field(
                "prompt",
                "a batch of several prompts is not supported; send one prompt per request",
            )),
            ids => token_ids(ids, vocab),
        },
        Some(v) => Err(ApiError::field(
            "prompt",
            format!("must be a string or a list of token ids, got {}", kind(v)),
        )),
    }
}

fn token_ids(ids: &[Value], vocab: usize) -> Result<Vec<u32>, ApiError> {
    ids.iter()
        .enumerate()
        .map(|(i, v)| match v.as_i64() {
            Some(id) if id >= 0 && (id as u64) < vocab as u64 => Ok(id as u32),
            Some(id) => Err(ApiError::field(
                "prompt",
                format!("token id {id} at index {i} is outside the vocabulary [0, {vocab})"),
            )),
            None => Err(ApiError::field(
                "prompt",
                format!("item {i} must be a token id (an integer), got {}", kind(v)),
            )),
        })
        .collect()
}

fn chat_prompt(f: &Fields, tok: &Tokenizer) -> Result<Vec<u32>, ApiError> {
    let Some(Value::Array(items)) = f.get("messages") else {
        return Err(ApiError::field("messages", "is required and must be a list of messages"));
    };
    if items.is_empty() {
        return Err(ApiError::field("messages", "is empty"));
    }
    let mut messages = Vec::with_capacity(items.len());
    for (i, m) in items.iter().enumerate() {
        let bad = |what: &str| ApiError::field("messages", format!("message {i}: {what}"));
        let Value::Object(m) = m else {
            return Err(bad("must be an object"));
        };
        let role = match m.get("role") {
            Some(Value::String(r)) if ["system", "user", "assistant", "developer", "tool"].contains(&r.as_str()) => r.clone(),
            Some(Value::String(r)) => return Err(bad(&format!("unknown role `{r}`"))),
            _ => return Err(bad("`role` must be a string")),
        };
        let content = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(Value::Array(parts)) => {
                let mut text = String::new();
                for p in parts {
                    match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                        (Some("text"), Some(t)) => text.push_str(t),
                        _ => return Err(bad("only text content parts are supported")),
                    }
                }
                text
            }
            Some(v) => return Err(bad(&format!("`content` must be a string or a list of parts, got {}", kind(v)))),
        };
        messages.push(ChatMessage::new(role, content));
    }
    let text = tok
        .apply_chat_template(&messages, true)
        .map_err(|e| ApiError::field("messages", e))?;
    tok.encode(&text, false)
        .map_err(|e| ApiError::field("messages", format!("cannot be tokenised: {e}")))
}

fn stop_strings(f: &Fields) -> Result<Vec<String>, ApiError> {
    let stops = match f.get("stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::field("stop", format!("items must be strings, got {}", kind(v))))
            })
            .collect::<Result<_, _>>()?,
        Some(v) => return Err(ApiError::field("stop", format!("must be a string or a list of strings, got {}", kind(v)))),
    };
    if stops.len() > MAX_STOP {
        return Err(ApiError::field("stop", format!("at most {MAX_STOP} stop strings, got {}", stops.len())));
    }
    if stops.iter().any(String::is_empty) {
        return Err(ApiError::field("stop", "stop strings must not be empty"));
    }
    Ok(stops)
}

fn stream_options(f: &Fields, stream: bool) -> Result<(bool, bool), ApiError> {
    match f.get("stream_options") {
        None => Ok((false, false)),
        Some(Value::Object(o)) if stream => {
            let o = Fields(o);
            let include = o.bool("include_usage").map_err(|_| ApiError::field("stream_options", "`include_usage` must be a boolean"))?;
            let continuous = o.bool("continuous_usage_stats").map_err(|_| ApiError::field("stream_options", "`continuous_usage_stats` must be a boolean"))?;
            Ok((include.unwrap_or(false), continuous.unwrap_or(false)))
        }
        Some(Value::Object(_)) => Err(ApiError::field("stream_options", "is only allowed with `stream: true`")),
        Some(v) => Err(ApiError::field("stream_options", format!("must be an object, got {}", kind(v)))),
    }
}
