//! `vpd demo`: a few chat-formatted ShareGPT prompts through plain decoding, printing each
//! reply and the decode speed. `make run` calls it on the embedded default model.
use std::path::PathBuf;

use vpd_bench::sharegpt;

use super::generate::{cpu_engine, encode_prompt, SamplingArgs};
use crate::engine::GenerateRequest;
use crate::error::{EngineError, Result};
use crate::model::Model;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    #[arg(long, default_value = "assets/SmolLM2-135M-Instruct.Q4_1.gguf")]
    pub model: PathBuf,
    #[arg(long, default_value = "assets/ShareGPT_V3_unfiltered_cleaned_split.json")]
    pub dataset: PathBuf,
    /// How many prompts (the first ShareGPT first-turns of 16..400 characters).
    #[arg(long, default_value_t = 3)]
    pub prompts: usize,
    #[arg(long, default_value_t = 48)]
    pub max_new_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

pub fn run(a: DemoArgs) -> Result<()> {
    let sampling = a.sampling.params();
    sampling.validate()?;
    let data = sharegpt::load(&a.dataset).map_err(|e| EngineError::InvalidRequest { field: "dataset", detail: e.to_string() })?;
    eprintln!(
        "ShareGPT: read {} complete conversations{}",
        data.conversations.len(),
        if data.truncated { " (the file is truncated; the cut-off record was skipped)" } else { "" }
    );
    let prompts: Vec<&str> = data
        .conversations
        .iter()
        .filter_map(|c| c.first_exchange().map(|(q, _)| q))
        .filter(|q| (16..=400).contains(&q.chars().count()))
        .take(a.prompts)
        .collect();
    if prompts.is_empty() {
        return Err(EngineError::InvalidRequest { field: "dataset", detail: "has no usable prompts".into() });
    }
    let t0 = std::time::Instant::now();
    let model = Model::load(&a.model)?;
    eprintln!("loaded {} in {:.2} s", a.model.display(), t0.elapsed().as_secs_f64());
    let tok = model.tokenizer.as_ref().ok_or_else(|| EngineError::Model {
        path: a.model.display().to_string(),
        detail: "has no tokenizer".into(),
    })?;
    let mut total_tokens = 0usize;
    let mut total_decode_ms = 0.0;
    for (i, prompt) in prompts.iter().enumerate() {
        let prompt_ids = encode_prompt(tok, prompt, true)?;
        let mut engine = cpu_engine(&model, prompt_ids.len() + a.max_new_tokens, 1)?;
        let req = GenerateRequest { prompt_ids, max_new_tokens: a.max_new_tokens, sampling, ignore_eos: false };
        let out = engine.generate(&req)?;
        let text = tok.decode(&out.token_ids, true)?;
        println!("--- prompt {} ({} tokens) ---\n{}\n--- reply ({} tokens, {:?}) ---\n{}\n", i + 1, req.prompt_ids.len(), prompt.trim(), out.token_ids.len(), out.finish_reason, text.trim());
        println!(
            "    ttft {:.1} ms · decode {:.1} tok/s",
            out.timings.ttft_ms, out.timings.decode_tokens_per_s
        );
        total_tokens += out.token_ids.len().saturating_sub(1);
        total_decode_ms += out.timings.decode_ms;
    }
    if total_decode_ms > 0.0 {
        println!("mean decode speed: {:.1} tokens/s on the CPU ({} threads)", total_tokens as f64 / (total_decode_ms / 1e3), rayon::current_num_threads());
    }
    Ok(())
}
