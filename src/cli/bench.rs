//! `vpd bench`: the in-process load benchmark. ShareGPT requests filtered and sampled as
//! vLLM's `benchmark_serving.py` does, sent with Poisson (or gamma) arrivals over a sweep of
//! request rates, served by the runtime under each policy on identical inputs, and reported
//! with vLLM `bench serve`'s metrics as JSON, a Markdown table and a PNG plot.
//!
//! With `--url` the same workload goes over streaming HTTP to an OpenAI-compatible server
//! instead (`bench_http.rs`); both share the workload and the outputs (`bench_workload.rs`).
use std::path::PathBuf;

use vpd_bench::metrics::{summarize, AcceptanceSummary, RequestDetail};
use vpd_bench::report::{Report, RunResult};
use vpd_bench::synthetic::SyntheticAcceptance;
use vpd_bench::workload::arrival_times;

use super::bench_workload::{check_common, dataset_info, load_dataset, sample, write_outputs};
use super::engines::{run_once, BackendKind, DraftChoice, ModelSource, RunSetup, SmPartition};
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
    /// With --backend cuda: run the drafter in a green-context partition of this many SMs
    /// (a multiple of 8 on Hopper) and the target on the rest.
    #[arg(long)]
    pub decode_sms: Option<u32>,
    /// With --backend cuda: confine the prefill lane's chunks to a green-context partition of
    /// this many SMs while decode and verify have work (the whole GPU otherwise); decode and
    /// verify keep the whole GPU. Not with --decode-sms.
    #[arg(long)]
    pub prefill_sms: Option<u32>,
    /// With --backend cuda: replay decode steps (target and drafter) from CUDA graphs captured
    /// per shape. On by default there; `--cuda-graphs false` turns them off.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub cuda_graphs: Option<bool>,
    /// Three-lane policies: draft for requests as soon as they return from verification, in
    /// groups that overlap draft and verify, instead of gathering everyone into one round.
    #[arg(long)]
    pub overlap_groups: bool,
    /// Three-lane policies: run the target's prefill chunks on the prefill lane's own thread
    /// and executor (on the GPU its own stream at the lowest priority), beside the verify
    /// forwards. Off by default (the chunks ride in the verify forwards instead), on with
    /// --backend cuda and --prefill-sms; on the CPU the two executors share one cache and
    /// take turns.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub prefill_thread: Option<bool>,
    /// Three-lane policies without the prefill thread: prompt tokens riding in each decode or
    /// verify forward, as single-lane mixes its chunks (default: the prefill budget; 0: prefill
    /// only in forwards of its own).
    #[arg(long)]
    pub prefill_ride: Option<usize>,
    /// Three-lane policies: requests at L = 0 take a plain step in a target forward of their
    /// own while the round's drafts run, and another in its verify forward (two tokens a round
    /// instead of one); three-lane-adaptive then parks low-acceptance requests at L = 0 where
    /// that forward fits in the drafts' time. Not with --overlap-groups.
    #[arg(long)]
    pub plain_beside_drafts: bool,
    /// three-lane-adaptive: what the choice of L maximises (vpd_sched::Objective). tail (the
    /// default): the inverse of the 16-norm of the predicted TPOT over the requests of a
    /// round, close to the slowest request's, which keeps rounds short for the requests whose
    /// drafts are mostly rejected; tpot: the inverse of its RMS; goodput: accepted tokens a
    /// second (TurboSpec).
    #[arg(long, default_value = "tail", value_name = "goodput|tpot|tail")]
    pub controller_objective: vpd_sched::Objective,
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
    /// Sampling temperature of every request; 0 (the default, as vLLM's benchmark) is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest most likely set of at least this mass (1: off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Keep only the K most likely tokens (0: off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Copy every step's logits rows to the host and choose tokens there (same tokens), as a
    /// baseline for what choosing them on the device saves.
    #[arg(long)]
    pub pick_on_host: bool,
    /// Directory for bench.json, bench.md and bench.png.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// Also write every request (send time, lengths, TTFT, TPOT, E2E, drafts accepted) into
    /// bench.json, under each run's `requests`.
    #[arg(long)]
    pub save_detailed: bool,
    /// Benchmark the OpenAI-compatible server at this http:// URL over streaming HTTP instead
    /// of the in-process runtime (--model then only gives the tokenizer for the ShareGPT
    /// filter; --policies and the runtime settings are ignored).
    #[arg(long)]
    pub url: Option<String>,
    /// The `model` field sent with --url (default: the first model the server lists).
    #[arg(long, requires = "url")]
    pub served_model_name: Option<String>,
    /// With --url: requests in flight at once (default: no cap, as vLLM's benchmark).
    #[arg(long, requires = "url")]
    pub max_concurrency: Option<usize>,
}

pub(super) fn bad(field: &'static str, detail: impl ToString) -> EngineError {
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

/// The sampling parameters `--temperature`, `--top-p` and `--top-k` give every request (its
/// seed is set per request).
///
/// # Errors
/// A negative or non-finite temperature, or top-p outside (0, 1].
pub(super) fn sampling_of(a: &BenchArgs) -> Result<vpd_sampling::SamplingParams> {
    let s = vpd_sampling::SamplingParams { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p, seed: 0 };
    s.validate().map_err(|e| bad("sampling", e))?;
    Ok(s)
}

/// `T=0.8 top-p=0.95 top-k=50`, the parts that are on.
fn sampling_label(s: &vpd_sampling::SamplingParams) -> String {
    let mut l = format!("T={}", s.temperature);
    if s.top_p < 1.0 {
        l += &format!(" top-p={}", s.top_p);
    }
    if s.top_k > 0 {
        l += &format!(" top-k={}", s.top_k);
    }
    l
}

pub fn run(a: BenchArgs) -> Result<()> {
    if let Some(url) = a.url.clone() {
        return super::bench_http::run(&a, &url);
    }
    // Every setting is checked before the (slow) loads.
    let policies = a
        .policies
        .iter()
        .map(|p| p.parse::<Policy>())
        .collect::<Result<Vec<_>>>()?;
    if policies.is_empty() {
        return Err(bad("policies", "give at least one policy"));
    }
    let slo = check_common(&a)?;
    let synthetic = a
        .acceptance
        .as_deref()
        .map(|s| s.parse::<SyntheticAcceptance>())
        .transpose()
        .map_err(|e| bad("acceptance", e))?;
    let speculates = policies.iter().any(|p| p.speculates());
    let graphs = super::engines::decode_graphs(a.backend, a.cuda_graphs)?;
    let prefill_thread = super::engines::prefill_thread(a.backend, a.prefill_thread, a.prefill_sms);
    let prefill_ride = super::engines::prefill_ride(a.prefill_ride, prefill_thread, a.prefill_budget);
    let partition = SmPartition::from_flags(a.decode_sms, a.prefill_sms)?;
    let draft = DraftChoice::parse(&a.draft)?;
    // One runtime configuration per policy, the same at every rate, checked before the loads.
    let configs = policies
        .iter()
        .map(|&policy| {
            let mut cfg = RuntimeConfig::new(policy, a.num_draft);
            cfg.prefill_budget = a.prefill_budget;
            cfg.max_running = a.max_running;
            cfg.synthetic = synthetic;
            cfg.seed = a.seed;
            cfg.overlap_groups = a.overlap_groups;
            cfg.prefill_thread = prefill_thread;
            cfg.prefill_ride = prefill_ride;
            cfg.plain_beside_drafts = a.plain_beside_drafts;
            cfg.pick_on_host = a.pick_on_host;
            cfg.controller.objective = a.controller_objective;
            cfg.validate().map(|()| cfg)
        })
        .collect::<Result<Vec<RuntimeConfig>>>()?;
    let data = load_dataset(&a)?;
    let model = ModelSource::open(&a.model)?;
    let config = model.config();
    let tok = &model.tokenizer(&a.tokenizer)?;
    let ignore_eos = !a.respect_eos;
    let sampling = sampling_of(&a)?;
    let reqs: Vec<GenerateRequest> = sample(&a, &data, tok, Some(config.max_position_embeddings))?
        .into_iter()
        .enumerate()
        .map(|(i, s)| GenerateRequest {
            prompt_ids: s.prompt_ids,
            max_new_tokens: s.max_new_tokens,
            sampling: vpd_sampling::SamplingParams {
                seed: a.seed.wrapping_add(i as u64),
                ..sampling
            },
            ignore_eos,
        })
        .collect();
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
        for (&policy, cfg) in policies.iter().zip(&configs) {
            bar.set_message(format!("{policy} @ {rate} req/s"));
            let d = policy.speculates().then_some(&draft);
            let setup = RunSetup {
                kind: a.backend,
                target: &model,
                draft: d,
                blocks,
                block_size: BLOCK_SIZE,
                partition,
                decode_graphs: graphs,
            };
            let out = run_once(&setup, cfg, reqs.clone(), &times, &mut || {
                bar.inc(1)
            })?;
            let mut summary =
                summarize(&out.records, out.duration_s, slo).map_err(|e| bad("metrics", e))?;
            if policy.speculates() {
                summary.acceptance = Some(AcceptanceSummary::new(
                    out.metrics.verifies,
                    out.metrics.drafted,
                    out.metrics.accepted,
                ));
            }
            summary.l_histogram = out.metrics.l_histogram.clone();
            summary.controller = out.controller.clone();
            summary.serving_loop = Some(out.loop_time);
            // `suspend`, not `println`: a hidden bar (stderr not a terminal) drops `println`.
            bar.suspend(|| {
                eprintln!(
                    "{policy:>20} @ {rate} req/s: {}/{} done, TPOT p50 {:.1} p99 {:.1} ms, {:.1} out tok/s, {} preemptions",
                    summary.completed,
                    reqs.len(),
                    summary.tpot_ms.p50,
                    summary.tpot_ms.p99,
                    summary.output_throughput,
                    out.metrics.preemptions
                );
                let t = &out.loop_time;
                eprintln!(
                    "{:>20}   serving thread over {:.1} s: target forwards {:.1} s, drafting {:.1} s (+{:.1} s on the lane), \
                     lane waits {:.1} s, idle {:.1} s, host {:.1} s ({:.2} ms a target forward); {} prefill and {} plain forwards beside drafts, \
                     {} prefill forwards while decoding waited",
                    "",
                    t.wall_s,
                    t.target_forward_s,
                    t.draft_in_thread_s,
                    t.draft_on_lane_s,
                    t.lane_wait_s,
                    t.idle_s,
                    t.host_s,
                    1e3 * t.host_s / t.forwards.max(1) as f64,
                    t.prefill_beside_drafts,
                    t.plain_beside_drafts,
                    t.prefill_while_decode_waits
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
                requests: a.save_detailed.then(|| out.records.iter().map(RequestDetail::of).collect()),
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
        models: {
            let graphs = if graphs { ", decode CUDA graphs" } else { "" };
            let mut sampled = if sampling.is_greedy() { String::new() } else { format!(", sampling {}", sampling_label(&sampling)) };
            if a.pick_on_host {
                sampled += ", tokens chosen on the host";
            }
            if speculates {
                let groups = match (a.overlap_groups, a.plain_beside_drafts) {
                    (true, _) => ", overlapping draft/verify groups",
                    (false, true) => ", plain steps beside the drafts",
                    (false, false) => "",
                };
                let chunks = match (prefill_thread, partition) {
                    (true, SmPartition::Prefill(n)) => format!(", prefill lane thread on {n} SMs while decode has work"),
                    (true, _) => ", prefill lane thread".into(),
                    (false, _) if prefill_ride > 0 => format!(", prefill rides in verify forwards up to {prefill_ride} tokens"),
                    (false, _) => String::new(),
                };
                let objective = if policies.contains(&Policy::ThreeLaneAdaptive) {
                    format!(", controller objective {}", a.controller_objective)
                } else {
                    String::new()
                };
                format!("{name}, draft {} (L = {}){groups}{chunks}{objective}{graphs}{sampled}", a.draft, a.num_draft)
            } else {
                format!("{name}{graphs}{sampled}")
            }
        },
        seed: a.seed,
        ignore_eos,
        synthetic_acceptance: synthetic.map(|s| s.label()),
        dataset: dataset_info(&a, &data, reqs.len()),
        runs,
    };
    write_outputs(&a.out, &report)
}
