//! `vpd bench --url`: the workload of `vpd bench` (same ShareGPT sample, arrivals, metrics and
//! outputs) sent over streaming HTTP to an OpenAI-compatible server, ours or another.
//! Prompt lengths for the ShareGPT filter come from the local tokenizer of --model, as vLLM's
//! benchmark uses the model's tokenizer; the server gets the prompt text. The runtime's
//! settings (--policies, --draft, ...) have no meaning here: rows are labelled with the
//! served model name and the report with the server's URL.
use std::time::Duration;

use vpd_bench::http::{self, ClientConfig, HttpRequest, Prompt};
use vpd_bench::metrics::{summarize, RequestDetail};
use vpd_bench::report::{Report, RunResult};
use vpd_bench::workload::arrival_times;

use super::bench::{bad, BenchArgs};
use super::bench_workload::{check_common, dataset_info, load_dataset, sample, write_outputs};
use crate::error::{EngineError, Result};

/// How long the server may take to list its models before we give up on it.
const MODELS_TIMEOUT: Duration = Duration::from_secs(10);

/// Failed requests printed per run; the rest are counted.
const ERRORS_SHOWN: usize = 5;

pub(super) fn run(a: &BenchArgs, url: &str) -> Result<()> {
    let api = http::parse_base_url(url).map_err(|e| bad("url", e))?;
    let slo = check_common(a)?;
    if a.max_concurrency == Some(0) {
        return Err(bad(
            "max_concurrency",
            "must be ≥ 1 (leave it out for no cap)",
        ));
    }
    if a.acceptance.is_some() {
        return Err(bad(
            "acceptance",
            "synthetic acceptance replaces the in-process runtime's accept/reject step; a server over --url cannot use it",
        ));
    }
    // The server's model list names the model when --served-model-name does not, and gives
    // its context (max_model_len) when it says, so that prompts are filtered as in process.
    let listed = http::served_models_blocking(&api, MODELS_TIMEOUT);
    let (model, context) = match (&a.served_model_name, listed) {
        (Some(m), _) if m.trim().is_empty() => return Err(bad("served_model_name", "is empty")),
        (Some(m), listed) => {
            let context = listed.ok().and_then(|l| l.into_iter().find(|s| s.id == *m)).and_then(|s| s.max_model_len);
            (m.clone(), context)
        }
        (None, Err(e)) => return Err(bad("url", format!("{e} (or pass --served-model-name)"))),
        (None, Ok(l)) => {
            let first = l.into_iter().next().ok_or_else(|| {
                bad("served_model_name", format!("{api}/models lists no model: pass --served-model-name"))
            })?;
            (first.id, first.max_model_len)
        }
    };
    eprintln!("benchmarking `{model}` at {api} (--policies and the runtime settings do not apply)");
    let data = load_dataset(a)?;
    // Only the tokenizer: the weights are the server's business. A random:PRESET --model, or
    // one without a tokenizer, borrows --tokenizer's, as the in-process path does.
    let is_random = a.model.to_str().is_some_and(|s| s.starts_with("random:"));
    let own = if is_random {
        None
    } else {
        crate::model::load_tokenizer(&a.model)?
    };
    let (tok, tok_path) = match own {
        Some(t) => (t, &a.model),
        None => {
            let t = crate::model::load_tokenizer(&a.tokenizer)?.ok_or_else(|| EngineError::Model {
                path: a.tokenizer.display().to_string(),
                detail: "has no tokenizer (--url still needs one to filter ShareGPT prompts by length)"
                    .into(),
            })?;
            (t, &a.tokenizer)
        }
    };
    // vLLM's benchmark sends ignore_eos only when asked; so do we.
    let ignore_eos = !a.respect_eos;
    let reqs: Vec<HttpRequest> = sample(a, &data, &tok, context)?
        .into_iter()
        .map(|s| HttpRequest {
            prompt_tokens: s.prompt_ids.len(),
            prompt: Prompt::Text(s.prompt),
            max_tokens: s.max_new_tokens,
            ignore_eos: ignore_eos.then_some(true),
        })
        .collect();
    let cfg = ClientConfig {
        api: api.clone(),
        model: model.clone(),
        max_concurrency: a.max_concurrency,
        request_timeout: None,
        sampling: vpd_bench::http::RequestSampling { temperature: a.temperature, top_p: a.top_p, top_k: a.top_k },
    };
    let bar = indicatif::ProgressBar::new((a.request_rates.len() * reqs.len()) as u64);
    let mut runs = Vec::new();
    for &rate in &a.request_rates {
        let times = arrival_times(reqs.len(), rate, a.burstiness, a.seed)
            .map_err(|e| bad("request_rates", e))?;
        bar.set_message(format!("{model} @ {rate} req/s"));
        let out = http::run_blocking(&cfg, &reqs, &times, |_, _| bar.inc(1))
            .map_err(|e| bad("url", e))?;
        let summary =
            summarize(&out.records, out.duration_s, slo).map_err(|e| bad("metrics", e))?;
        let errors: Vec<(usize, &str)> = out
            .records
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.error.as_deref().map(|e| (i, e)))
            .collect();
        // `suspend`, not `println`: a hidden bar (stderr not a terminal) drops `println`.
        bar.suspend(|| {
            eprintln!(
                "{model:>20} @ {rate} req/s: {}/{} done, TPOT p50 {:.1} p99 {:.1} ms, {:.1} out tok/s",
                summary.completed,
                reqs.len(),
                summary.tpot_ms.p50,
                summary.tpot_ms.p99,
                summary.output_throughput,
            );
            for (i, e) in errors.iter().take(ERRORS_SHOWN) {
                eprintln!("  request {i} failed: {e}");
            }
            if errors.len() > ERRORS_SHOWN {
                eprintln!("  ... and {} more failed requests", errors.len() - ERRORS_SHOWN);
            }
        });
        runs.push(RunResult {
            policy: model.clone(),
            request_rate: rate,
            burstiness: a.burstiness,
            summary,
            requests: a.save_detailed.then(|| out.records.iter().map(RequestDetail::of).collect()),
        });
    }
    bar.finish_and_clear();
    let tok_name = tok_path.file_name().map_or_else(
        || tok_path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let report = Report {
        // Short: the title "vpd bench: MODELS on DEVICE" heads the plot too.
        device: api.to_string(),
        models: format!("{model}, tokenizer {tok_name}"),
        seed: a.seed,
        ignore_eos,
        synthetic_acceptance: None,
        dataset: dataset_info(a, &data, reqs.len()),
        runs,
    };
    write_outputs(&a.out, &report)
}
