//! What a caller asks for and what it gets back.
use serde::Serialize;
use vpd_sampling::SamplingParams;

use crate::error::{EngineError, Result};

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

#[derive(Debug, Clone, Serialize)]
pub struct GenerateOutput {
    pub prompt_ids: Vec<u32>,
    /// Generated ids only, including the end-of-sequence id when generation stopped on it.
    pub token_ids: Vec<u32>,
    pub finish_reason: FinishReason,
    pub timings: Timings,
}
