//! What both modes of `vpd bench` share (in-process, `bench.rs`; over HTTP, `bench_http.rs`):
//! the settings checks, the ShareGPT workload (filtered and sampled as vLLM's
//! `benchmark_serving.py` does) and the reports (JSON, Markdown, PNG).
use std::path::Path;

use vpd_bench::metrics::Slo;
use vpd_bench::report::{DatasetInfo, Report};
use vpd_bench::sharegpt::{self, Dataset};
use vpd_bench::workload::{sample_requests, validate_rates, FilterLimits, SampledRequest};
use vpd_formats::tokenizer::Tokenizer;

use super::bench::{bad, BenchArgs};
use crate::error::{EngineError, Result};

/// Checks the settings both paths share; returns the SLOs.
pub(super) fn check_common(a: &BenchArgs) -> Result<Option<Slo>> {
    validate_rates(&a.request_rates).map_err(|e| bad("request_rates", e))?;
    if !(a.burstiness.is_finite() && a.burstiness > 0.0) {
        return Err(bad(
            "burstiness",
            format!("must be finite and > 0, got {}", a.burstiness),
        ));
    }
    super::bench::sampling_of(a)?;
    a.slo
        .as_deref()
        .map(|s| s.parse::<Slo>())
        .transpose()
        .map_err(|e| bad("slo", e))
}

/// Reads the ShareGPT file, saying how much of it was usable.
pub(super) fn load_dataset(a: &BenchArgs) -> Result<Dataset> {
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
    Ok(data)
}

/// One request of the workload: its prompt, the prompt's token ids and the output length.
pub(super) struct Sampled {
    pub prompt: String,
    pub prompt_ids: Vec<u32>,
    pub max_new_tokens: usize,
}

/// Filters and samples as vLLM's benchmark does, lengths by `tok`; output lengths capped by
/// --max-output. With the model's `context` known (in process, or from the server's model
/// list over HTTP), prompts that could not fit it
/// are filtered out as too long and each output is cut to the room its prompt leaves, so a
/// small-context model is measured, not failed.
pub(super) fn sample(a: &BenchArgs, data: &Dataset, tok: &Tokenizer, context: Option<usize>) -> Result<Vec<Sampled>> {
    let mut limits = FilterLimits { max_prompt: a.max_prompt, ..FilterLimits::default() };
    if let Some(c) = context {
        let fit = c.saturating_sub(1);
        if fit < limits.max_prompt {
            eprintln!("prompts limited to {fit} tokens by the model's context of {c} (--max-prompt {})", a.max_prompt);
            limits.max_prompt = fit;
        }
    }
    let (sampled, stats) = sample_requests(data, a.num_prompts, a.seed, limits, |s| {
        tok.encode(s, true).map_or(usize::MAX, |v| v.len())
    })
    .map_err(|e| bad("dataset", e))?;
    eprintln!(
        "sampled {} requests (visited {}, {} too short, {} too long, {} without a reply)",
        stats.kept, stats.visited, stats.too_short, stats.too_long, stats.no_exchange
    );
    sampled
        .into_iter()
        .map(|s: SampledRequest| {
            let prompt_ids = tok.encode(&s.prompt, true)?;
            let mut max_new_tokens = if a.max_output > 0 { s.output_len.min(a.max_output) } else { s.output_len };
            if let Some(c) = context {
                max_new_tokens = max_new_tokens.min(c.saturating_sub(prompt_ids.len())).max(1);
            }
            Ok(Sampled { prompt_ids, prompt: s.prompt, max_new_tokens })
        })
        .collect()
}

pub(super) fn dataset_info(a: &BenchArgs, data: &Dataset, requests: usize) -> DatasetInfo {
    DatasetInfo {
        path: a.dataset.display().to_string(),
        conversations_read: data.conversations.len(),
        truncated: data.truncated,
        requests,
    }
}

/// Writes bench.json, bench.md and bench.png into `out` and prints the table.
pub(super) fn write_outputs(out: &Path, report: &Report) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|source| EngineError::Io {
        path: out.display().to_string(),
        source,
    })?;
    let report_err = |e: vpd_bench::report::ReportError| bad("out", e);
    report
        .write_json(&out.join("bench.json"))
        .map_err(report_err)?;
    let md = report.markdown();
    std::fs::write(out.join("bench.md"), &md).map_err(|source| EngineError::Io {
        path: out.join("bench.md").display().to_string(),
        source,
    })?;
    let png = out.join("bench.png");
    match report.write_plot(&png, 1200, 900) {
        Ok(()) => eprintln!(
            "wrote {}, bench.md and bench.png",
            out.join("bench.json").display()
        ),
        // Only infinite rates: nothing to plot, the JSON and table still stand.
        Err(vpd_bench::report::ReportError::Empty) => eprintln!("no finite request rate: no plot"),
        Err(e) => return Err(report_err(e)),
    }
    println!("{md}");
    Ok(())
}
