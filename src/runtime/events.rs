//! What the runtime tells the client of a served request, in order: zero or more `Tokens`
//! chunks (one per step that emitted tokens; a verify step can emit several accepted tokens
//! at once), then exactly one `Finished` or `Failed`. A client that drops its receiver
//! cancels the request: the runtime notices between steps, aborts it and frees its KV blocks.
use crate::engine::FinishReason;

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Tokens emitted by one step, with their log-probabilities when the request asked.
    Tokens {
        ids: Vec<u32>,
        /// One per id, or empty.
        logprobs: Vec<TokenLogprob>,
    },
    /// The request finished normally.
    Finished {
        reason: FinishReason,
        prompt_tokens: usize,
        output_tokens: usize,
    },
    /// The request ended with this error (tokens already sent stay valid).
    Failed(String),
    /// The runtime refused the request at admission (the request's fault: too long for
    /// the cache, out-of-vocabulary ids, bad parameters).
    Rejected(String),
}

/// A sampled token's log-probability under the target model's raw logits (before
/// temperature, top-k and top-p, as vLLM's default `raw_logprobs`), with the most likely
/// alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    /// The `top` most likely tokens and their log-probabilities, most likely first.
    pub top: Vec<(u32, f32)>,
}

/// Most alternatives a request may ask for per token.
pub const MAX_TOP_LOGPROBS: usize = 20;

impl TokenLogprob {
    /// `token`'s log-softmax in `row` (computed in f64), and the `top` best entries.
    pub fn from_row(row: &[f32], token: u32, top: usize) -> Self {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let lse = f64::from(max)
            + row
                .iter()
                .map(|&x| (f64::from(x) - f64::from(max)).exp())
                .sum::<f64>()
                .ln();
        let lp = |i: usize| row.get(i).map_or(f32::NEG_INFINITY, |&x| (f64::from(x) - lse) as f32);
        let mut best: Vec<(u32, f32)> = Vec::with_capacity(top + 1);
        if top > 0 {
            for (i, &x) in row.iter().enumerate() {
                if best.len() < top || x > best[best.len() - 1].1 {
                    let at = best.partition_point(|&(_, y)| y >= x);
                    best.insert(at, (i as u32, x));
                    best.truncate(top);
                }
            }
        }
        Self {
            token,
            logprob: lp(token as usize),
            top: best.into_iter().map(|(i, _)| (i, lp(i as usize))).collect(),
        }
    }
}

/// The runtime's end of a request's event stream. Unbounded: the runtime thread must never
/// block on a slow client; a client's backlog is bounded by its `max_tokens`.
pub type EventSink = tokio::sync::mpsc::UnboundedSender<Event>;

/// The client's end.
pub type EventStream = tokio::sync::mpsc::UnboundedReceiver<Event>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_are_a_log_softmax_with_ordered_alternatives() {
        let row = [1.0f32, 3.0, -2.0, 3.0, 0.5];
        let lp = TokenLogprob::from_row(&row, 4, 3);
        let all: Vec<f32> = (0..5).map(|t| TokenLogprob::from_row(&row, t, 0).logprob).collect();
        let total: f64 = all.iter().map(|&l| f64::from(l).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6, "{total}");
        assert!((lp.logprob - all[4]).abs() < 1e-7);
        // Most likely first; ties keep the lower id first.
        assert_eq!(lp.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 3, 0]);
        assert!(TokenLogprob::from_row(&row, 2, 0).top.is_empty());
    }
}
