//! Benchmark reports: JSON (serde), a Markdown table (one row per policy × rate) and a PNG
//! plot of p50 and p99 TPOT and ITL against request rate, one line per policy.
//!
//! A run with synthetic acceptance says so in every output: the JSON field
//! `synthetic_acceptance`, the Markdown title and the plot title. DESIGN.md also asks every
//! report to state the card, the models or shapes, the rates, the seed and `ignore_eos`, so
//! [`Report`] carries them.
//!
//! Text in the PNG uses plotters' `ab_glyph` backend with DejaVu Sans embedded from the
//! `dejavu` crate: no fontconfig or system fonts needed, the same picture on every machine.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use serde::Serialize;

use crate::metrics::{ControllerSummary, Dist, RequestDetail, Summary};

/// Where the requests came from.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct DatasetInfo {
    pub path: String,
    /// Complete conversations read from the (truncated) file.
    pub conversations_read: usize,
    pub truncated: bool,
    /// Requests sampled after filtering.
    pub requests: usize,
}

/// One policy at one request rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunResult {
    /// e.g. "vpd-lanes", "plain", "fixed-L4".
    pub policy: String,
    /// Requests per second (inf = all at once).
    pub request_rate: f64,
    pub burstiness: f64,
    pub summary: Summary,
    /// Every request, in sending order (`--save-detailed`); left out of the JSON otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<Vec<RequestDetail>>,
}

/// A whole sweep.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Report {
    /// The accelerator (e.g. "NVIDIA H100 80GB HBM3") or "cpu".
    pub device: String,
    /// Target and draft models, or shapes for random weights.
    pub models: String,
    pub seed: u64,
    pub ignore_eos: bool,
    /// `Some(label)` when accept/reject outcomes came from the synthetic process.
    pub synthetic_acceptance: Option<String>,
    pub dataset: DatasetInfo,
    pub runs: Vec<RunResult>,
}

/// A report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("plot {path}: {detail}")]
    Plot { path: String, detail: String },
    #[error("nothing to report: no runs")]
    Empty,
}

impl Report {
    /// The title line every output uses.
    pub fn title(&self) -> String {
        let mut t = format!("vpd bench: {} on {}", self.models, self.device);
        if let Some(s) = &self.synthetic_acceptance {
            t.push_str(&format!(" [SYNTHETIC: {s}]"));
        }
        t
    }

    /// Writes the report as pretty JSON.
    ///
    /// # Errors
    /// [`ReportError`] on serialisation or I/O failure.
    pub fn write_json(&self, path: &Path) -> Result<(), ReportError> {
        let s = serde_json::to_string_pretty(self)?;
        std::fs::write(path, s).map_err(|source| ReportError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// A Markdown section: title, settings, and one table row per policy × rate.
    pub fn markdown(&self) -> String {
        let mut m = format!("## {}\n\n", self.title());
        m.push_str(&format!(
            "seed {}, ignore_eos {}, dataset {} ({} conversations read{}, {} requests)\n\n",
            self.seed,
            self.ignore_eos,
            self.dataset.path,
            self.dataset.conversations_read,
            if self.dataset.truncated { ", file truncated" } else { "" },
            self.dataset.requests
        ));
        m.push_str(
            "| policy | rate (req/s) | done | TTFT p50/p95/p99 (ms) | TPOT p50/p95/p99 (ms) | ITL p50/p95/p99 (ms) \
             | E2E p50/p95/p99 (ms) | out tok/s | req/s | goodput (req/s) | accept | L histogram |\n",
        );
        m.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        let d = |x: &Dist| format!("{:.1} / {:.1} / {:.1}", x.p50, x.p95, x.p99);
        for r in &self.runs {
            let s = &r.summary;
            let good = match (s.goodput, s.slo) {
                (Some(g), Some(slo)) => format!("{g:.2} ({slo})"),
                _ => "-".into(),
            };
            let acc = s.acceptance.as_ref().map_or("-".into(), |a| format!("{:.3}", a.rate));
            m.push_str(&format!(
                "| {} | {} | {}/{} | {} | {} | {} | {} | {:.1} | {:.2} | {} | {} | {:?} |\n",
                r.policy,
                r.request_rate,
                s.completed,
                s.completed + s.failed,
                d(&s.ttft_ms),
                d(&s.tpot_ms),
                d(&s.itl_ms),
                d(&s.e2el_ms),
                s.output_throughput,
                s.request_throughput,
                good,
                acc,
                s.l_histogram
            ));
        }
        m.push_str(&self.acceptance_markdown());
        m.push_str(&self.controller_markdown());
        m
    }

    /// TPOT by each request's own acceptance rate, one row per speculating run; empty without
    /// one.
    fn acceptance_markdown(&self) -> String {
        let runs: Vec<&RunResult> = self.runs.iter().filter(|r| !r.summary.tpot_by_acceptance.is_empty()).collect();
        if runs.is_empty() {
            return String::new();
        }
        let mut m = String::from(
            "\nTPOT p50 / p99 (ms) by each request's acceptance rate, in quartiles (rates in brackets).\n\n\
             | policy | rate (req/s) | lowest quarter | second | third | highest quarter |\n\
             |---|---|---|---|---|---|\n",
        );
        for r in runs {
            let bands: Vec<String> = r
                .summary
                .tpot_by_acceptance
                .iter()
                .map(|b| format!("{:.1} / {:.1} [{:.2}–{:.2}]", b.tpot_ms.p50, b.tpot_ms.p99, b.rate_lo, b.rate_hi))
                .collect();
            m.push_str(&format!("| {} | {} | {} |\n", r.policy, r.request_rate, bands.join(" | ")));
        }
        m
    }

    /// The controller's view of each `three-lane-adaptive` run, empty without one.
    fn controller_markdown(&self) -> String {
        let runs: Vec<(&RunResult, &ControllerSummary)> =
            self.runs.iter().filter_map(|r| r.summary.controller.as_ref().map(|c| (r, c))).collect();
        if runs.is_empty() {
            return String::new();
        }
        let pairs = |v: &[(usize, f64)]| v.iter().map(|(n, ms)| format!("{n}: {ms:.2}")).collect::<Vec<_>>().join(", ");
        let mut m = String::from(
            "\nController: fitted solo costs at the end of the run; steps = draft forwards timed \
             (left out: those carrying a catch-up prefill).\n\n\
             | policy | rate (req/s) | decisions | L changes | probes | mean requests | mean verify busy \
             | draft step ms (batch: ms) | verify: ms + µs/token (+ above ridge) + µs/seq | steps timed / left out |\n\
             |---|---|---|---|---|---|---|---|---|---|\n",
        );
        for (r, c) in runs {
            m.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:.1} | {:.2} | {} | {:.2} + {:.1} (+{:.1} above {}) + {:.1} | {} / {} |\n",
                r.policy,
                r.request_rate,
                c.decisions,
                c.l_changes,
                c.probes,
                c.mean_requests,
                c.mean_verify_busy,
                pairs(&c.draft_step_ms),
                c.verify_base_ms,
                c.verify_per_token_us,
                c.verify_above_ridge_us,
                c.ridge_tokens,
                c.verify_per_seq_us,
                c.draft_steps_timed,
                c.draft_steps_catching_up
            ));
        }
        m
    }

    /// Draws p50 and p99 of TPOT (top) and ITL (bottom) against request rate, one line per
    /// policy, into a PNG of `width × height` pixels. Infinite rates are left out.
    ///
    /// # Errors
    /// [`ReportError::Empty`] with no finite-rate run; [`ReportError::Plot`] if drawing or
    /// encoding fails.
    pub fn write_plot(&self, path: &Path, width: u32, height: u32) -> Result<(), ReportError> {
        let runs: Vec<&RunResult> = self.runs.iter().filter(|r| r.request_rate.is_finite()).collect();
        if runs.is_empty() {
            return Err(ReportError::Empty);
        }
        let err = |e: String| ReportError::Plot {
            path: path.display().to_string(),
            detail: e,
        };
        ensure_font().map_err(err)?;
        draw(self, &runs, path, (width, height)).map_err(err)
    }
}

fn ensure_font() -> Result<(), String> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| "the embedded DejaVu Sans font did not load".to_string())
    })
    .clone()
}

type Pick = fn(&Summary) -> f64;

fn draw(rep: &Report, runs: &[&RunResult], path: &Path, size: (u32, u32)) -> Result<(), String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let root = root.titled(&rep.title(), ("sans-serif", 20)).map_err(|x| e(&x))?;
    let mut policies: Vec<&str> = Vec::new();
    for r in runs {
        if !policies.contains(&r.policy.as_str()) {
            policies.push(&r.policy);
        }
    }
    let x_max = runs.iter().map(|r| r.request_rate).fold(0.0, f64::max) * 1.05;
    let panels: [(&str, Pick); 4] = [
        ("TPOT p50 (ms)", |s| s.tpot_ms.p50),
        ("TPOT p99 (ms)", |s| s.tpot_ms.p99),
        ("ITL p50 (ms)", |s| s.itl_ms.p50),
        ("ITL p99 (ms)", |s| s.itl_ms.p99),
    ];
    for (area, (name, pick)) in root.split_evenly((2, 2)).iter().zip(panels) {
        let y_max = runs.iter().map(|r| pick(&r.summary)).fold(0.0, f64::max).max(1e-3) * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(name, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_max.max(1e-3), 0.0..y_max)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc("request rate (req/s)")
            .y_desc("ms")
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(|x| e(&x))?;
        for (i, p) in policies.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let mut pts: Vec<(f64, f64)> = runs
                .iter()
                .filter(|r| r.policy == *p)
                .map(|r| (r.request_rate, pick(&r.summary)))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|x| e(&x))?
                .label(*p)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            chart
                .draw_series(pts.into_iter().map(|q| Circle::new(q, 3, color.filled())))
                .map_err(|x| e(&x))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 12))
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{summarize, AcceptanceSummary, Chunk, RequestRecord};

    fn run(policy: &str, rate: f64, itl: f64) -> RunResult {
        let recs: Vec<RequestRecord> = (0..20)
            .map(|i| {
                let t0 = i as f64 / rate;
                let k = 1.0 + (i % 7) as f64 / 7.0;
                RequestRecord {
                    send_s: t0,
                    chunks: (0..10)
                        .map(|j| Chunk {
                            t_s: t0 + 0.05 + j as f64 * itl * k,
                            tokens: 2,
                        })
                        .collect(),
                    prompt_tokens: 100,
                    ..Default::default()
                }
            })
            .collect();
        let mut summary = summarize(&recs, 20.0 / rate + 1.0, Some("ttft:100,tpot:20".parse().unwrap())).unwrap();
        summary.acceptance = Some(AcceptanceSummary::new(100, 400, 280));
        summary.l_histogram = vec![3, 0, 10, 0, 87];
        RunResult {
            policy: policy.into(),
            request_rate: rate,
            burstiness: 1.0,
            summary,
            requests: None,
        }
    }

    fn report() -> Report {
        let mut runs = Vec::new();
        for (i, rate) in [2.0, 6.0, 10.0].into_iter().enumerate() {
            runs.push(run("vllm-like", rate, 0.012 * (1.0 + i as f64)));
            runs.push(run("vpd-lanes", rate, 0.010 * (1.0 + 0.3 * i as f64)));
        }
        Report {
            device: "test".into(),
            models: "8B/1B shapes".into(),
            seed: 0,
            ignore_eos: true,
            synthetic_acceptance: Some("synthetic acceptance (mean 0.7, spread 0.1)".into()),
            dataset: DatasetInfo {
                path: "sharegpt.json".into(),
                conversations_read: 17_000,
                truncated: true,
                requests: 20,
            },
            runs,
        }
    }

    #[test]
    fn synthetic_label_is_in_every_output() {
        let r = report();
        assert!(r.markdown().lines().next().unwrap().contains("SYNTHETIC"));
        let json = serde_json::to_value(&r).unwrap();
        assert!(json["synthetic_acceptance"].as_str().unwrap().contains("synthetic"));
        assert_eq!(json["runs"].as_array().unwrap().len(), 6);
        let real = Report {
            synthetic_acceptance: None,
            ..r
        };
        assert!(!real.title().contains("SYNTHETIC"));
    }

    #[test]
    fn markdown_has_one_row_per_policy_and_rate() {
        let md = report().markdown();
        let rows: Vec<&str> = md
            .lines()
            .filter(|l| l.starts_with("| vpd") || l.starts_with("| vllm"))
            .collect();
        assert_eq!(rows.len(), 6);
        assert!(rows[0].contains("| 20/20 |"), "{}", rows[0]);
        assert!(md.contains("ttft:100,tpot:20"));
        assert!(md.contains("17000 conversations read, file truncated"));
        assert!(!md.contains("Controller:"), "no controller section without an adaptive run");
        assert!(!md.contains("by each request's acceptance"), "no bands without per-request acceptance");
    }

    #[test]
    fn markdown_bands_tpot_by_each_requests_acceptance() {
        let mut r = report();
        let recs: Vec<RequestRecord> = (0..8u64)
            .map(|i| RequestRecord {
                send_s: 0.0,
                chunks: vec![Chunk { t_s: 0.1, tokens: 1 }, Chunk { t_s: 0.2 + 0.01 * i as f64, tokens: 1 }],
                drafted: 10,
                accepted: 10 - i,
                ..Default::default()
            })
            .collect();
        r.runs[1].summary.tpot_by_acceptance = crate::metrics::tpot_by_acceptance(&recs);
        let md = r.markdown();
        let row = md.lines().find(|l| l.starts_with("| vpd-lanes | 2 |") && l.contains("[0.")).expect("a bands row");
        // Lowest quarter: acceptance 0.3 and 0.4, TPOT 170 and 160 ms.
        assert!(row.contains("| 165.0 / 169.9 [0.30–0.40] |"), "{row}");
        assert_eq!(md.matches("–").count(), 4, "one row only: {md}");
    }

    #[test]
    fn markdown_shows_the_controllers_view_of_adaptive_runs() {
        let mut r = report();
        r.runs[1].summary.controller = Some(ControllerSummary {
            decisions: 900,
            l_changes: 12,
            draft_step_ms: vec![(1, 0.8), (64, 1.25)],
            verify_base_ms: 5.5,
            verify_per_token_us: 4.0,
            ridge_tokens: 128.0,
            verify_per_seq_us: 60.0,
            draft_steps_timed: 2000,
            draft_steps_catching_up: 40,
            ..ControllerSummary::default()
        });
        let md = r.markdown();
        let row = md.lines().find(|l| l.contains("| 900 | 12 |")).expect("controller row");
        assert!(row.starts_with("| vpd-lanes | 2 |"), "{row}");
        assert!(row.contains("1: 0.80, 64: 1.25") && row.contains("5.50 + 4.0 (+0.0 above 128) + 60.0") && row.contains("2000 / 40"), "{row}");
    }

    #[test]
    fn json_and_png_are_written_and_decode() {
        let dir = tempfile::tempdir().unwrap();
        let r = report();
        let json = dir.path().join("bench.json");
        r.write_json(&json).unwrap();
        let back: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert_eq!(back["seed"], 0);
        let png = dir.path().join("bench.png");
        r.write_plot(&png, 1200, 800).unwrap();
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&bytes[12..16], b"IHDR");
        let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert_eq!((w, h), (1200, 800));
        assert_eq!(&bytes[bytes.len() - 8..bytes.len() - 4], b"IEND");
        if let Ok(keep) = std::env::var("VPD_BENCH_KEEP_PLOT") {
            std::fs::copy(&png, keep).unwrap();
        }
        let empty = Report { runs: vec![], ..r };
        assert!(matches!(empty.write_plot(&png, 100, 100), Err(ReportError::Empty)));
    }
}
