//! `vpd spec-eval`: acceptance of a drafter on ShareGPT prompts, and the speed-up of
//! speculative over plain decoding on the same prompts (what docs/speculative.md records).
use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;
use vpd_bench::sharegpt;

use super::generate::{cpu_engine, encode_prompt, SamplingArgs, SpecArgs, BLOCK_SIZE};
use crate::backend::Backend;
use crate::engine::GenerateRequest;
use crate::error::{EngineError, Result};
use crate::model::Model;
use crate::spec::factory::cpu_drafter;
use crate::spec::{SpecEngine, SpecStats, MAX_DRAFT_LEN};

#[derive(Debug, clap::Args)]
pub struct SpecEvalArgs {
    #[arg(long, default_value = "assets/SmolLM2-135M-Instruct.Q4_1.gguf")]
    pub model: PathBuf,
    #[arg(long, default_value = "assets/ShareGPT_V3_unfiltered_cleaned_split.json")]
    pub dataset: PathBuf,
    /// ShareGPT first turns to run (chat-formatted, prompts of 4..=MAX_PROMPT tokens).
    #[arg(long, default_value_t = 200)]
    pub prompts: usize,
    /// Longest prompt kept, in tokens (long prefills dominate CPU time).
    #[arg(long, default_value_t = 256)]
    pub max_prompt: usize,
    #[arg(long, default_value_t = 16)]
    pub max_new_tokens: usize,
    /// Also decode the first N prompts without speculation and report the speed-up.
    #[arg(long, default_value_t = 20)]
    pub speed_prompts: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: SpecEvalArgs) -> Result<()> {
    let sampling = a.sampling.params();
    sampling.validate()?;
    let (draft, opts) = a.spec.parse()?.ok_or(EngineError::InvalidRequest { field: "draft", detail: "spec-eval needs --draft".into() })?;
    let data = sharegpt::load(&a.dataset).map_err(|e| EngineError::InvalidRequest { field: "dataset", detail: e.to_string() })?;
    let model = Model::load(&a.model)?;
    let tok = model.tokenizer.as_ref().ok_or_else(|| EngineError::Model { path: a.model.display().to_string(), detail: "has no tokenizer".into() })?;
    let mut prompts = Vec::new();
    for c in &data.conversations {
        if prompts.len() == a.prompts {
            break;
        }
        let Some((q, _)) = c.first_exchange() else { continue };
        let ids = encode_prompt(tok, q, true)?;
        if (4..=a.max_prompt).contains(&ids.len()) {
            prompts.push(ids);
        }
    }
    if prompts.is_empty() {
        return Err(EngineError::InvalidRequest { field: "dataset", detail: "no prompt passed the filters".into() });
    }
    eprintln!("{} complete conversations read; evaluating {} prompts with {}", data.conversations.len(), prompts.len(), a.spec.draft.as_deref().unwrap_or(""));
    let max_tokens = a.max_prompt + a.max_new_tokens + MAX_DRAFT_LEN + 1;
    let bar = indicatif::ProgressBar::new(prompts.len() as u64);
    let mut total = SpecStats::default();
    let (mut spec_s, mut plain_s, mut speed_tokens_spec, mut speed_tokens_plain) = (0.0, 0.0, 0usize, 0usize);
    for (i, prompt) in prompts.iter().enumerate() {
        let req = GenerateRequest { prompt_ids: prompt.clone(), max_new_tokens: a.max_new_tokens, sampling, ignore_eos: false };
        let engine = cpu_engine(&model, max_tokens, 1)?;
        let (blocks, _) = engine.backend().kv_geometry();
        let drafter = cpu_drafter(&draft, &model, blocks + opts.tree.map_or(0, |t| t.budget.div_ceil(BLOCK_SIZE)) + 1, BLOCK_SIZE)?;
        let mut se = SpecEngine::new(engine, drafter, opts)?;
        let t = Instant::now();
        let out = se.generate(&req)?;
        let spec_time = t.elapsed().as_secs_f64();
        if let Some(st) = &out.spec {
            total.merge(st);
        }
        if i < a.speed_prompts {
            let mut plain = cpu_engine(&model, max_tokens, 1)?;
            let t = Instant::now();
            let p = plain.generate(&req)?;
            plain_s += t.elapsed().as_secs_f64();
            spec_s += spec_time;
            speed_tokens_spec += out.token_ids.len();
            speed_tokens_plain += p.token_ids.len();
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let per_pos: Vec<f64> = total.accepted_at.iter().zip(&total.drafted_at).map(|(&acc, &d)| if d == 0 { 0.0 } else { acc as f64 / d as f64 }).collect();
    let spec_tps = speed_tokens_spec as f64 / spec_s.max(1e-9);
    let plain_tps = speed_tokens_plain as f64 / plain_s.max(1e-9);
    println!(
        "{} L={} {}T={}: {} prompts, {} steps, acceptance {:.3}, mean accepted length {:.2}, tokens/step {:.2}",
        a.spec.draft.as_deref().unwrap_or(""),
        opts.num_draft,
        opts.tree.map(|t| format!("tree {},{} ", t.width, t.depth)).unwrap_or_default(),
        sampling.temperature,
        prompts.len(),
        total.steps,
        total.acceptance_rate(),
        total.mean_accepted_length(),
        total.mean_accepted_length() + 1.0
    );
    println!("    acceptance by position: {}", per_pos.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(" "));
    println!("    accepted-length histogram: {:?}", total.accepted_len_hist);
    if a.speed_prompts > 0 {
        println!(
            "    speed on the first {} prompts (end to end, prefill included): speculative {:.1} tok/s, plain {:.1} tok/s, speed-up {:.2}x ({} CPU threads)",
            a.speed_prompts.min(prompts.len()),
            spec_tps,
            plain_tps,
            spec_tps / plain_tps.max(1e-9),
            rayon::current_num_threads()
        );
    }
    if a.json {
        println!(
            "{}",
            json!({
                "drafter": a.spec.draft, "num_draft": opts.num_draft, "tree": a.spec.tree, "temperature": sampling.temperature,
                "prompts": prompts.len(), "max_new_tokens": a.max_new_tokens, "stats": total,
                "acceptance_rate": total.acceptance_rate(), "mean_accepted_length": total.mean_accepted_length(),
                "acceptance_by_position": per_pos, "speculative_tokens_per_s": spec_tps, "plain_tokens_per_s": plain_tps,
            })
        );
    }
    Ok(())
}
