//! `vpd generate`: one prompt, plain decoding, text or JSON out (the CLI contract later checks
//! rely on: with `--json` the last stdout line is one JSON object).
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;
use vpd_formats::tokenizer::{ChatMessage, Tokenizer};
use vpd_sampling::SamplingParams;

use crate::backend::cpu::CpuBackend;
use crate::engine::{Engine, GenerateRequest};
use crate::error::{EngineError, Result};
use crate::model::Model;

pub const BLOCK_SIZE: usize = 16;

#[derive(Debug, clap::Args)]
pub struct SamplingArgs {
    /// Softmax temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Keep only the K most likely tokens (0: off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches P (1: off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SamplingArgs {
    pub fn params(&self) -> SamplingParams {
        SamplingParams { temperature: self.temperature, top_k: self.top_k, top_p: self.top_p, seed: self.seed }
    }
}

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// A GGUF file or a Hugging Face checkpoint directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Prompt text, tokenised with the model's own BOS policy.
    #[arg(long, conflicts_with = "prompt_ids", required_unless_present = "prompt_ids")]
    pub prompt: Option<String>,
    /// Format the prompt as one user turn with the model's chat template.
    #[arg(long, requires = "prompt")]
    pub chat: bool,
    /// Comma-separated prompt token ids, used verbatim (no BOS added).
    #[arg(long, value_delimiter = ',')]
    pub prompt_ids: Option<Vec<u32>>,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print one JSON object as the last stdout line instead of plain text.
    #[arg(long)]
    pub json: bool,
}

/// A CPU engine over `model` whose cache holds `max_tokens` tokens for each of `sequences`.
pub(crate) fn cpu_engine(model: &Model, max_tokens: usize, sequences: usize) -> Result<Engine<CpuBackend>> {
    let per_seq = (max_tokens.min(model.config.max_position_embeddings) + 1).div_ceil(BLOCK_SIZE);
    let backend = CpuBackend::new(model.config.clone(), Arc::clone(&model.weights), per_seq * sequences.max(1), BLOCK_SIZE)?;
    Engine::new(backend)
}

/// Prompt ids from text: chat-formatted or raw, following the model's BOS policy.
pub(crate) fn encode_prompt(tok: &Tokenizer, text: &str, chat: bool) -> Result<Vec<u32>> {
    if chat {
        let msgs = [ChatMessage { role: "user".into(), content: text.into() }];
        let formatted = tok.apply_chat_template(&msgs, true)?;
        // The template already spells out any special tokens it wants.
        Ok(tok.encode(&formatted, false)?)
    } else {
        Ok(tok.encode(text, true)?)
    }
}

pub fn run(a: GenerateArgs) -> Result<()> {
    // Reject bad sampling values before the (slow) model load.
    let sampling = a.sampling.params();
    sampling.validate()?;
    let model = Model::load(&a.model)?;
    let prompt_ids = match (&a.prompt, &a.prompt_ids) {
        (_, Some(ids)) => ids.clone(),
        (Some(text), None) => {
            let tok = model.tokenizer.as_ref().ok_or_else(|| EngineError::Model {
                path: a.model.display().to_string(),
                detail: "has no tokenizer; pass --prompt-ids".into(),
            })?;
            encode_prompt(tok, text, a.chat)?
        }
        (None, None) => return Err(EngineError::InvalidRequest { field: "prompt", detail: "give --prompt or --prompt-ids".into() }),
    };
    let mut engine = cpu_engine(&model, prompt_ids.len() + a.max_new_tokens, 1)?;
    let req = GenerateRequest { prompt_ids, max_new_tokens: a.max_new_tokens, sampling, ignore_eos: a.ignore_eos };
    let out = engine.generate(&req)?;
    let text = match &model.tokenizer {
        Some(t) => t.decode(&out.token_ids, true)?,
        None => String::new(),
    };
    if a.json {
        let obj = json!({
            "model": a.model.display().to_string(),
            "prompt_ids": out.prompt_ids,
            "token_ids": out.token_ids,
            "text": text,
            "finish_reason": out.finish_reason,
            "timings": out.timings,
        });
        println!("{obj}");
    } else {
        println!("{text}");
        eprintln!(
            "[{} tokens, finish: {:?}, ttft {:.1} ms, decode {:.2} tok/s]",
            out.token_ids.len(),
            out.finish_reason,
            out.timings.ttft_ms,
            out.timings.decode_tokens_per_s
        );
    }
    Ok(())
}
