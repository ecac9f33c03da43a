//! What a caller asks for and what it gets back.
use std::time::Instant;

use serde::Serialize;
use vpd_sampling::SamplingParams;

use crate::error::{EngineError, Result};
use crate::spec::SpecStats;

#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// Prompt token ids, used verbatim (no BOS is added here).
    pub prompt_ids: Vec<u32>,
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Keep generating past end-of-sequence ids (benchmarks with fixed output lengths).
    pub ignore_eos: bool,
}

impl GenerateRequest {
    /// Checks the request against a model's vocabulary and context.
    ///
    /// # Errors
    /// Empty prompt, out-of-vocabulary ids, a prompt that leaves no room to generate, or bad
    /// sampling parameters — each naming the field.
    pub fn validate(&self, vocab: usize, context: usize) -> Result<()> {
        if self.prompt_ids.is_empty() {
            return Err(EngineError::InvalidRequest { field: "prompt", detail: "is empty".into() });
        }
        if let Some((index, &id)) = self.prompt_ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
            return Err(EngineError::OutOfVocab { id, index, vocab });
        }
        if self.prompt_ids.len() >= context {
            return Err(EngineError::PromptTooLong { len: self.prompt_ids.len(), max: context.saturating_sub(1) });
        }
        self.sampling.validate()?;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// An end-of-sequence id was generated.
    Stop,
    /// `max_new_tokens` or the context limit was reached.
    Length,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    /// Prompt processing, up to and including the first generated token.
    pub ttft_ms: f64,
    /// Everything after the first token.
    pub decode_ms: f64,
    pub total_ms: f64,
    /// Generated tokens after the first, per second of `decode_ms`.
    pub decode_tokens_per_s: f64,
}

impl Timings {
    /// Timings of a request that started at `started`, produced its first token at `first`
    /// and `n_tokens` tokens in all, ending now.
    pub(crate) fn from_marks(started: Instant, first: Option<Instant>, n_tokens: usize) -> Self {
        let now = Instant::now();
        let first = first.unwrap_or(now);
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let decode_ms = ms(now - first);
        Self {
            ttft_ms: ms(first - started),
            decode_ms,
            total_ms: ms(now - started),
            decode_tokens_per_s: if decode_ms > 0.0 { n_tokens.saturating_sub(1) as f64 / (decode_ms / 1e3) } else { 0.0 },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GenerateOutput {
    pub prompt_ids: Vec<u32>,
    /// Generated ids only, including the end-of-sequence id when generation stopped on it.
    pub token_ids: Vec<u32>,
    pub finish_reason: FinishReason,
    pub timings: Timings,
    /// Acceptance statistics when the request was decoded speculatively.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<SpecStats>,
}
