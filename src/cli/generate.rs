//! `vpd generate`: one prompt, plain decoding, text or JSON out (the CLI contract later checks
//! rely on: with `--json` the last stdout line is one JSON object).
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;
use vpd_formats::tokenizer::{ChatMessage, Tokenizer};
use vpd_sampling::SamplingParams;

use crate::backend::cpu::CpuBackend;
use crate::backend::Backend;
use crate::spec::factory::cpu_drafter;
use crate::spec::{DraftSpec, SpecEngine, SpecOptions, TraceWriter, TreeShape};
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
    /// Where the model runs (cuda: bf16 weights on GPU 0).
    #[arg(long, value_enum, default_value_t = super::engines::BackendKind::Cpu)]
    pub backend: super::engines::BackendKind,
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
    #[command(flatten)]
    pub spec: SpecArgs,
}

#[derive(Debug, clap::Args)]
pub struct SpecArgs {
    /// Speculative decoding drafter: layer-skip:K, model:PATH or ngram:N.
    #[arg(long)]
    pub draft: Option<String>,
    /// Draft length L per verify step (1..=16).
    #[arg(long, default_value_t = 4, requires = "draft")]
    pub num_draft: usize,
    /// Draft a token tree of WIDTH children per node and DEPTH levels instead of a chain.
    #[arg(long, requires = "draft")]
    pub tree: Option<String>,
    /// Largest number of tree nodes per verify step.
    #[arg(long, default_value_t = crate::spec::DEFAULT_TREE_BUDGET, requires = "tree")]
    pub tree_budget: usize,
    /// Write a JSONL acceptance trace (request, step, L, accepted) to this file.
    #[arg(long, requires = "draft")]
    pub trace: Option<PathBuf>,
}

impl SpecArgs {
    /// The parsed drafter and options, or `None` without `--draft`.
    pub fn parse(&self) -> Result<Option<(DraftSpec, SpecOptions)>> {
        let Some(d) = &self.draft else { return Ok(None) };
        let spec: DraftSpec = d.parse()?;
        crate::spec::check_draft_len(self.num_draft)?;
        let tree = self.tree.as_deref().map(|t| TreeShape::parse(t, self.tree_budget)).transpose()?;
        Ok(Some((spec, SpecOptions { num_draft: self.num_draft, tree })))
    }
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
    let spec = a.spec.parse()?;
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
    let tokens = prompt_ids.len() + a.max_new_tokens + crate::spec::MAX_DRAFT_LEN + 1;
    let req = GenerateRequest { prompt_ids, max_new_tokens: a.max_new_tokens, sampling, ignore_eos: a.ignore_eos };
    if a.backend == super::engines::BackendKind::Cuda {
        let out = super::engines::generate_cuda(&model, spec.as_ref(), &req, tokens, a.spec.trace.as_deref())?;
        return print_output(&a, &model, &out);
    }
    let engine = cpu_engine(&model, tokens, 1)?;
    let out = match spec {
        None => {
            let mut engine = engine;
            engine.generate(&req)?
        }
        Some((draft, opts)) => {
            let (blocks, _) = engine.backend().kv_geometry();
            let tree_nodes = opts.tree.map_or(0, |t| t.budget);
            let drafter = cpu_drafter(&draft, &model, blocks + tree_nodes.div_ceil(BLOCK_SIZE) + 1, BLOCK_SIZE)?;
            let mut se = SpecEngine::new(engine, drafter, opts)?;
            if let Some(path) = &a.spec.trace {
                se.set_trace(TraceWriter::create(path)?);
            }
            se.generate(&req)?
        }
    };
    print_output(&a, &model, &out)
}

fn print_output(a: &GenerateArgs, model: &Model, out: &crate::engine::GenerateOutput) -> Result<()> {
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
        let mut obj = obj;
        if let Some(st) = &out.spec {
            obj["drafter"] = json!(a.spec.draft);
            obj["drafted"] = json!(st.drafted);
            obj["accepted"] = json!(st.accepted);
            obj["steps"] = json!(st.steps);
            obj["mean_accepted_length"] = json!(st.mean_accepted_length());
            obj["acceptance_rate"] = json!(st.acceptance_rate());
            obj["accepted_len_hist"] = json!(st.accepted_len_hist);
        }
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
        if let Some(st) = &out.spec {
            eprintln!(
                "[speculative: {} steps, {} drafted, {} accepted ({:.1}%), {:.2} accepted per step]",
                st.steps,
                st.drafted,
                st.accepted,
                100.0 * st.acceptance_rate(),
                st.mean_accepted_length()
            );
        }
    }
    Ok(())
}
