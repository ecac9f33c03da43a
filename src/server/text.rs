//! From a request's token events to the text a client sees: incremental detokenisation
//! (special tokens skipped, incomplete UTF-8 held back) and stop strings. A stop string may
//! span chunks, so the tail that could still start one is held back until it cannot; on a
//! match the text is cut before it (OpenAI and vLLM do not return the stop string), the
//! finish reason is `stop`, and the engine request is cancelled by closing its stream.
use std::sync::Arc;

use vpd_formats::tokenizer::{DecodeStream, Tokenizer};

use crate::engine::FinishReason;
use crate::runtime::events::{Event, EventStream, TokenLogprob};

/// Finds stop strings in streamed text.
#[derive(Debug, Clone)]
pub struct StopScanner {
    stops: Vec<String>,
    pending: String,
    /// Bytes that may have to wait: one less than the longest stop string.
    hold: usize,
}

impl StopScanner {
    pub fn new(stops: Vec<String>) -> Self {
        let hold = stops.iter().map(String::len).max().unwrap_or(1).saturating_sub(1);
        Self {
            stops,
            pending: String::new(),
            hold,
        }
    }

    /// Adds `text`; returns what may be shown now and whether a stop string was hit.
    pub fn push(&mut self, text: &str) -> (String, bool) {
        self.pending.push_str(text);
        let hit = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min();
        if let Some(at) = hit {
            let shown = self.pending[..at].to_string();
            self.pending.clear();
            return (shown, true);
        }
        let mut cut = self.pending.len().saturating_sub(self.hold);
        while !self.pending.is_char_boundary(cut) {
            cut -= 1;
        }
        let shown: String = self.pending.drain(..cut).collect();
        (shown, false)
    }

    /// The held-back text, at the end of the output.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// One step of a choice's output.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// New text, and the log-probabilities of the tokens that arrived since the last piece
    /// (empty unless asked for; text held back for stop strings can lag its tokens).
    Text { text: String, logprobs: Vec<TokenLogprob> },
    /// The last text and why the choice ended (`stop` or `length`).
    End {
        text: String,
        reason: &'static str,
        logprobs: Vec<TokenLogprob>,
    },
    /// The request failed; `client_fault` when the runtime refused it at admission.
    Error { message: String, client_fault: bool },
}

/// One choice of a request: its engine event stream, turned into text pieces.
pub struct Choice {
    pub index: usize,
    events: EventStream,
    detok: DecodeStream<Arc<Tokenizer>>,
    stop: StopScanner,
    /// Tokens generated so far.
    pub tokens: usize,
    done: bool,
    logprobs: Vec<TokenLogprob>,
}

impl Choice {
    pub fn new(index: usize, events: EventStream, tok: Arc<Tokenizer>, stops: Vec<String>) -> Self {
        Self {
            index,
            events,
            detok: DecodeStream::new(tok, true),
            stop: StopScanner::new(stops),
            tokens: 0,
            done: false,
            logprobs: Vec::new(),
        }
    }

    /// The next piece; `None` after the end or an error.
    pub async fn next(&mut self) -> Option<Piece> {
        if self.done {
            return None;
        }
        loop {
            let piece = match self.events.recv().await {
                Some(Event::Tokens { ids, logprobs }) => {
                    self.tokens += ids.len();
                    self.logprobs.extend(logprobs);
                    let mut text = String::new();
                    for id in ids {
                        match self.detok.step(id) {
                            Ok(t) => text.push_str(&t.unwrap_or_default()),
                            Err(e) => return Some(self.fail(format!("detokenisation: {e}"), false)),
                        }
                    }
                    let (shown, stopped) = self.stop.push(&text);
                    if stopped {
                        // Closing the stream cancels the engine request between steps.
                        self.events.close();
                        self.done = true;
                        Piece::End {
                            text: shown,
                            reason: "stop",
                            logprobs: std::mem::take(&mut self.logprobs),
                        }
                    } else if shown.is_empty() {
                        continue;
                    } else {
                        Piece::Text {
                            text: shown,
                            logprobs: std::mem::take(&mut self.logprobs),
                        }
                    }
                }
                Some(Event::Finished { reason, .. }) => {
                    let rest = self.detok.flush().ok().flatten().unwrap_or_default();
                    let (mut shown, stopped) = self.stop.push(&rest);
                    if !stopped {
                        shown.push_str(&self.stop.finish());
                    }
                    self.done = true;
                    let reason = match reason {
                        _ if stopped => "stop",
                        FinishReason::Stop => "stop",
                        FinishReason::Length => "length",
                    };
                    Piece::End {
                        text: shown,
                        reason,
                        logprobs: std::mem::take(&mut self.logprobs),
                    }
                }
                Some(Event::Failed(m)) => self.fail(m, false),
                Some(Event::Rejected(m)) => self.fail(m, true),
                None => self.fail("the engine stopped before the request ended".into(), false),
            };
            return Some(piece);
        }
    }

    fn fail(&mut self, message: String, client_fault: bool) -> Piece {
        self.done = true;
        Piece::Error { message, client_fault }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], chunks: &[&str]) -> (String, bool) {
        let mut s = StopScanner::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for c in chunks {
            let (shown, hit) = s.push(c);
            out.push_str(&shown);
            if hit {
                return (out, true);
            }
        }
        out.push_str(&s.finish());
        (out, false)
    }

    #[test]
    fn stop_strings_are_found_across_chunks_and_cut() {
        assert_eq!(run(&["END"], &["abc E", "N", "D tail"]), ("abc ".into(), true));
        assert_eq!(run(&["\n\n", "xyz"], &["one\n", "\ntwo"]), ("one".into(), true));
        assert_eq!(run(&["zz"], &["no ", "stop", " here z"]), ("no stop here z".into(), false));
        assert_eq!(run(&[], &["plain", " text"]), ("plain text".into(), false));
        // The earliest match wins whichever stop string it is.
        assert_eq!(run(&["b", "a"], &["xab"]), ("x".into(), true));
    }

    #[test]
    fn held_back_text_respects_char_boundaries() {
        let mut s = StopScanner::new(vec!["éé".into()]);
        let (shown, hit) = s.push("aé");
        assert!(!hit);
        let (rest, hit) = s.push("é!");
        assert!(hit);
        assert_eq!(format!("{shown}{rest}"), "a");
    }
}
