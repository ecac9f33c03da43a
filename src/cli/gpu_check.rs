//! `vpd gpu-check`: the CUDA backend against the CPU reference on the GPU machine
//! (tools/gpu-check.sh runs it). Prints a table; exits non-zero when any check fails.
use std::path::PathBuf;

use crate::error::{EngineError, Result};

#[derive(Debug, clap::Args)]
pub struct GpuCheckArgs {
    /// Model checks on this checkpoint (a GGUF file or a Hugging Face directory).
    #[arg(long)]
    pub model: Vec<PathBuf>,
    /// A transformers reference (tests/fixtures/*/reference.json: cases with prompt_ids and
    /// greedy_ids) whose prompts are generated, for the first --model.
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Tokens generated per prompt in the greedy comparison.
    #[arg(long, default_value_t = 32)]
    pub new_tokens: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Write every row as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[cfg(all(feature = "cuda", vpd_kernels))]
pub fn run(a: GpuCheckArgs) -> Result<()> {
    use crate::backend::cuda::{check, Device};
    use crate::model::Model;

    let dev = Device::open(0)?;
    println!("device: {} ({} SMs)", dev.name, dev.sm_count);
    let mut rows = check::kernel_checks(&dev, a.seed)?;
    drop(dev);
    let mut greedy = Vec::new();
    for (k, path) in a.model.iter().enumerate() {
        let model = Model::load(path)?;
        let mut prompts = Vec::new();
        if let (0, Some(r)) = (k, &a.reference) {
            let text = std::fs::read_to_string(r).map_err(|source| EngineError::Io { path: r.display().to_string(), source })?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| EngineError::Backend(format!("{}: {e}", r.display())))?;
            let ids = |x: &serde_json::Value| -> Vec<u32> {
                x.as_array().map(|a| a.iter().filter_map(|i| i.as_u64()).map(|i| i as u32).collect()).unwrap_or_default()
            };
            for c in v["cases"].as_array().into_iter().flatten() {
                let name = c["name"].as_str().unwrap_or("?").to_string();
                prompts.push((name, ids(&c["prompt_ids"]), Some(ids(&c["greedy_ids"]))));
            }
        }
        if prompts.is_empty() {
            let vocab = model.config.vocab_size as u32;
            for (n, len) in [(0u32, 1usize), (1, 7), (2, 99)] {
                let p: Vec<u32> = (0..len as u32).map(|i| (i * 7919 + n * 104_729 + 1) % vocab).collect();
                prompts.push((format!("synthetic-{len}"), p, None));
            }
        }
        let (r, g) = check::model_checks(&model, &prompts, a.new_tokens, a.seed)?;
        let tag = path.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default();
        rows.extend(r.into_iter().map(|mut x| {
            x.name = format!("{tag}: {}", x.name);
            x
        }));
        greedy.extend(g.into_iter().map(|mut x| {
            x.prompt = format!("{tag}: {}", x.prompt);
            x
        }));
    }
    println!("{:<40} {:<62} {:>10} {:>8}  result", "check", "size", "norm err", "tol");
    for r in &rows {
        println!("{:<40} {:<62} {:>10.3e} {:>8.0e}  {}", r.name, r.size, r.err, r.tol, if r.pass { "ok" } else { "FAIL" });
    }
    if !greedy.is_empty() {
        println!("\n{:<40} {:>7} {:>18} {:>22}", "greedy prompt", "tokens", "= CPU (bf16 w)", "= transformers (f32)");
        for g in &greedy {
            let r = g.agree_ref.map_or("-".into(), |n| format!("{n}/{}", g.tokens));
            println!("{:<40} {:>7} {:>18} {:>22}", g.prompt, g.tokens, format!("{}/{}", g.agree_cpu, g.tokens), r);
        }
    }
    if let Some(p) = &a.json {
        let v = serde_json::json!({ "checks": rows, "greedy": greedy });
        std::fs::write(p, serde_json::to_string_pretty(&v).unwrap_or_default())
            .map_err(|source| EngineError::Io { path: p.display().to_string(), source })?;
    }
    let failed = rows.iter().filter(|r| !r.pass).count();
    let diverged = greedy.iter().filter(|g| g.agree_cpu < g.tokens).count();
    println!("\n{} checks, {failed} failed; {} greedy prompts, {diverged} diverged from the CPU", rows.len(), greedy.len());
    if failed > 0 || diverged > 0 {
        return Err(EngineError::Backend(format!("gpu-check: {failed} checks failed, {diverged} greedy prompts diverged")));
    }
    Ok(())
}

#[cfg(not(all(feature = "cuda", vpd_kernels)))]
pub fn run(_a: GpuCheckArgs) -> Result<()> {
    Err(EngineError::Backend("this binary was built without the CUDA backend (feature `cuda` and nvcc)".into()))
}
