//! `vpd bench`: the in-process load benchmark. ShareGPT requests filtered and sampled as
//! vLLM's `benchmark_serving.py` does, sent with Poisson (or gamma) arrivals over a sweep of
//! request rates, served by the runtime under each policy on identical inputs, and reported
//! with vLLM `bench serve`'s metrics as JSON, a Markdown table and a PNG plot.
use std::path::PathBuf;

use vpd_bench::metrics::{summarize, AcceptanceSummary, Slo};
use vpd_bench::report::{DatasetInfo, Report, RunResult};
use vpd_bench::sharegpt;
use vpd_bench::synthetic::SyntheticAcceptance;
use vpd_bench::workload::{arrival_times, sample_requests, validate_rates, FilterLimits};

use super::engines::{run_once, BackendKind, DraftChoice, ModelSource};
use super::generate::BLOCK_SIZE;
use crate::engine::GenerateRequest;
use crate::error::{EngineError, Result};
use crate::runtime::{Policy, RuntimeConfig};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Target model: a GGUF file, a checkpoint directory, or random:PRESET (random weights at
    /// a real shape, drawn on the GPU: random:llama3-8b, random:llama3.2-1b).
    #[arg(long, default_value = "assets/SmolLM2-135M-Instruct.Q4_1.gguf")]
    pub model: PathBuf,
    /// Where the target and the drafter run.
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    pub backend: BackendKind,
    /// Tokenizer for prompt lengths when the model has none (random:PRESET models).
    #[arg(long, default_value = "assets/SmolLM2-135M-Instruct.Q4_1.gguf")]
    pub tokenizer: PathBuf,
    #[arg(
        long,
        default_value = "assets/ShareGPT_V3_unfiltered_cleaned_split.json"
    )]
    pub dataset: PathBuf,
    /// Requests per run (sampled once, the same for every policy and rate).
    #[arg(long, default_value_t = 12)]
    pub num_prompts: usize,
    /// Request rates to sweep, requests per second (`inf`: all at once).
    #[arg(long, value_delimiter = ',', default_value = "0.5,2")]
    pub request_rates: Vec<f64>,
    /// Gamma shape of the inter-arrival gaps: 1 is Poisson, below 1 burstier.
    #[arg(long, default_value_t = 1.0)]
    pub burstiness: f64,
    /// Seeds the sample, the arrivals and the synthetic acceptance.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "nospec,single-lane,three-lane,three-lane-adaptive"
    )]
    pub policies: Vec<String>,
    /// Drafter for the speculating policies: layer-skip:K, model:PATH, ngram:N or (GPU)
    /// random:PRESET.
    #[arg(long, default_value = "ngram:3")]
    pub draft: String,
    /// L for the fixed-L policies, Lmax for three-lane-adaptive.
    #[arg(long, default_value_t = 4)]
    pub num_draft: usize,
    /// Service-level objectives for goodput, e.g. ttft:2000,tpot:200 (milliseconds).
    #[arg(long)]
    pub slo: Option<String>,
    /// Replace accept/reject outcomes by a labelled synthetic process: synthetic:MEAN[,SPREAD].
    #[arg(long)]
    pub acceptance: Option<String>,
    /// Cap every request's output length (0: the dataset's reply length, as vLLM).
    #[arg(long, default_value_t = 0)]
    pub max_output: usize,
    /// Longest prompt kept, in tokens (vLLM's filter: 1024).
    #[arg(long, default_value_t = 1024)]
    pub max_prompt: usize,
    /// Prompt tokens per step over all prefilling requests.
    #[arg(long, default_value_t = 256)]
    pub prefill_budget: usize,
    /// Requests holding KV cache at once (the cache is sized for this many).
    #[arg(long, default_value_t = 16)]
    pub max_running: usize,
    /// Stop at end-of-sequence tokens (default: ignore them, generating the sampled lengths).
    #[arg(long)]
    pub respect_eos: bool,
    /// Directory for bench.json, bench.md and bench.png.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
}

fn bad(field: &'static str, detail: impl ToString) -> EngineError {
    EngineError::InvalidRequest {
        field,
        detail: detail.to_string(),
    }
}

fn cpu_name() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let name = info.lines().find_map(|l| {
        l.strip_prefix("model name")
            .and_then(|r| r.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    });
    format!(
        "cpu: {} ({} threads)",
        name.unwrap_or_else(|| "unknown".into()),
        rayon::current_num_threads()
    )
}

pub fn run(a: BenchArgs) -> Result<()> {
    // Every setting is checked before the (slow) loads.
    let policies = a
        .policies
        .iter()
        .map(|p| p.parse::<Policy>())
        .collect::<Result<Vec<_>>>()?;
    if policies.is_empty() {
        return Err(bad("policies", "give at least one policy"));
    }
    validate_rates(&a.request_rates).map_err(|e| bad("request_rates", e))?;
    if !(a.burstiness.is_finite() && a.burstiness > 0.0) {
        return Err(bad(
            "burstiness",
            format!("must be finite and > 0, got {}", a.burstiness),
        ));
    }
    let slo = a
        .slo
        .as_deref()
        .map(|s| s.parse::<Slo>())
        .transpose()
        .map_err(|e| bad("slo", e))?;
    let synthetic = a
        .acceptance
        .as_deref()
        .map(|s| s.parse::<SyntheticAcceptance>())
        .transpose()
        .map_err(|e| bad("acceptance", e))?;
    let speculates = policies.iter().any(|p| p.speculates());
    let draft = DraftChoice::parse(&a.draft)?;
    for &p in &policies {
        let mut cfg = RuntimeConfig::new(p, a.num_draft);
        cfg.prefill_budget = a.prefill_budget;
        cfg.max_running = a.max_running;
        cfg.validate()?;
    }
    let data = sharegpt::load(&a.dataset).map_err(|e| bad("dataset", e))?;
    eprintln!(
        "ShareGPT: read {} complete conversations from {}{}",
        data.conversations.len(),
        a.dataset.display(),
        if data.truncated {
            " (the file is truncated; the cut-off record was skipped)"
        } else {
            ""
        }
    );
    if data.conversations.is_empty() {
        return Err(bad(
            "dataset",
            format!("{} has no complete conversation", a.dataset.display()),
        ));
    }
    let model = ModelSource::open(&a.model)?;
    let config = model.config();
    let tok = &model.tokenizer(&a.tokenizer)?;
    let limits = FilterLimits {
        max_prompt: a.max_prompt,
        ..FilterLimits::default()
    };
    let (sampled, stats) = sample_requests(&data, a.num_prompts, a.seed, limits, |s| {
        tok.encode(s, true).map_or(usize::MAX, |v| v.len())
    })
    .map_err(|e| bad("dataset", e))?;
    eprintln!(
        "sampled {} requests (visited {}, {} too short, {} too long, {} without a reply)",
        stats.kept, stats.visited, stats.too_short, stats.too_long, stats.no_exchange
    );
    let ignore_eos = !a.respect_eos;
    let mut reqs = Vec::with_capacity(sampled.len());
    for (i, s) in sampled.iter().enumerate() {
        let out = if a.max_output > 0 {
            s.output_len.min(a.max_output)
        } else {
            s.output_len
        };
        let sampling = vpd_sampling::SamplingParams {
            seed: a.seed.wrapping_add(i as u64),
            ..vpd_sampling::SamplingParams::greedy()
        };
        reqs.push(GenerateRequest {
            prompt_ids: tok.encode(&s.prompt, true)?,
            max_new_tokens: out,
            sampling,
            ignore_eos,
        });
    }
    // Cache: room for `max_running` of the longest request, with a draft's worth of slack.
    let longest = reqs
        .iter()
        .map(|r| r.prompt_ids.len() + r.max_new_tokens)
        .max()
        .unwrap_or(1);
    let per_seq =
        (longest.min(config.max_position_embeddings) + a.num_draft + 2).div_ceil(BLOCK_SIZE);
    let blocks = per_seq * a.max_running;
    let total = (policies.len() * a.request_rates.len() * reqs.len()) as u64;
    let bar = indicatif::ProgressBar::new(total);
    let mut runs = Vec::new();
    for &rate in &a.request_rates {
        let times = arrival_times(reqs.len(), rate, a.burstiness, a.seed)
            .map_err(|e| bad("request_rates", e))?;
        for &policy in &policies {
            bar.set_message(format!("{policy} @ {rate} req/s"));
            let mut cfg = RuntimeConfig::new(policy, a.num_draft);
            cfg.prefill_budget = a.prefill_budget;
            cfg.max_running = a.max_running;
            cfg.synthetic = synthetic;
            cfg.seed = a.seed;
            let d = policy.speculates().then_some(&draft);
            let out = run_once(a.backend, &model, d, blocks, BLOCK_SIZE, &cfg, reqs.clone(), &times, &mut || {
                bar.inc(1)
            })?;
            let mut summary =
                summarize(&out.records, out.duration_s, slo).map_err(|e| bad("metrics", e))?;
            if policy.speculates() {
                summary.acceptance = Some(AcceptanceSummary::new(
                    out.verifies,
                    out.drafted,
                    out.accepted,
                ));
            }
            summary.l_histogram = out.l_histogram.clone();
            // `suspend`, not `println`: a hidden bar (stderr not a terminal) drops `println`.
            bar.suspend(|| {
                eprintln!(
                    "{policy:>20} @ {rate} req/s: {}/{} done, TPOT p50 {:.1} p99 {:.1} ms, {:.1} out tok/s, {} preemptions",
                    summary.completed,
                    reqs.len(),
                    summary.tpot_ms.p50,
                    summary.tpot_ms.p99,
                    summary.output_throughput,
                    out.preemptions
                )
            });
            for (i, o) in out.outcomes.iter().enumerate() {
                if let Err(e) = &o.result {
                    bar.suspend(|| eprintln!("  request {i} aborted: {e}"));
                }
            }
            runs.push(RunResult {
                policy: policy.name().into(),
                request_rate: rate,
                burstiness: a.burstiness,
                summary,
            });
        }
    }
    bar.finish_and_clear();
    let name = model.name(&a.model);
    let report = Report {
        device: match a.backend {
            BackendKind::Cpu => cpu_name(),
            BackendKind::Cuda => super::engines::gpu_name(),
        },
        models: if speculates {
            format!("{name}, draft {} (L = {})", a.draft, a.num_draft)
        } else {
            name
        },
        seed: a.seed,
        ignore_eos,
        synthetic_acceptance: synthetic.map(|s| s.label()),
        dataset: DatasetInfo {
            path: a.dataset.display().to_string(),
            conversations_read: data.conversations.len(),
            truncated: data.truncated,
            requests: reqs.len(),
        },
        runs,
    };
    std::fs::create_dir_all(&a.out).map_err(|source| EngineError::Io {
        path: a.out.display().to_string(),
        source,
    })?;
    let report_err = |e: vpd_bench::report::ReportError| bad("out", e);
    report
        .write_json(&a.out.join("bench.json"))
        .map_err(report_err)?;
    let md = report.markdown();
    std::fs::write(a.out.join("bench.md"), &md).map_err(|source| EngineError::Io {
        path: a.out.join("bench.md").display().to_string(),
        source,
    })?;
    let png = a.out.join("bench.png");
    match report.write_plot(&png, 1200, 900) {
        Ok(()) => eprintln!(
            "wrote {}, bench.md and bench.png",
            a.out.join("bench.json").display()
        ),
        // Only infinite rates: nothing to plot, the JSON and table still stand.
        Err(vpd_bench::report::ReportError::Empty) => eprintln!("no finite request rate: no plot"),
        Err(e) => return Err(report_err(e)),
    }
    println!("{md}");
    Ok(())
}
