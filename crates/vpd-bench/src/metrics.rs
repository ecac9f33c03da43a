//! Serving metrics as vLLM's `bench serve` (`benchmarks/benchmark_serving.py`,
//! `calculate_metrics`) defines them; DESIGN.md, "Metrics".
//!
//! - TTFT: send → first streamed chunk.
//! - TPOT, per request with more than one output token: (E2E − TTFT) / (output tokens − 1).
//! - ITL: every gap between consecutive chunks of a request, pooled over requests (a chunk
//!   can carry several accepted tokens, so ITL is per chunk, not per token).
//! - E2E: send → end (the last chunk).
//! - Percentiles are numpy's default (`np.percentile`, linear): for sorted x of length n, the
//!   q-th percentile sits at rank h = (n − 1)·q/100, interpolated between x[⌊h⌋] and x[⌈h⌉].
//!   Computed exactly by sorting (no histogram error).
//! - Throughput: completed requests, output tokens, and input + output tokens, per second of
//!   benchmark duration. Goodput: completed requests meeting every given SLO, per second.
//!
//! Times are seconds in [`RequestRecord`] and milliseconds in [`Summary`], as vLLM prints them.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// One streamed chunk of output.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Chunk {
    /// Seconds since the benchmark start.
    pub t_s: f64,
    /// Tokens it carried (≥ 1; several with accepted drafts).
    pub tokens: u32,
}

/// What the client saw of one request.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct RequestRecord {
    /// Seconds since the benchmark start.
    pub send_s: f64,
    pub chunks: Vec<Chunk>,
    /// When the response ended; `None` means the last chunk's time.
    pub end_s: Option<f64>,
    pub prompt_tokens: usize,
    /// `None` means the sum of the chunks' tokens.
    pub output_tokens: Option<usize>,
    /// A failed request counts in `failed` and in no latency metric.
    pub error: Option<String>,
    /// Draft tokens this request had verified, and how many were accepted (speculating
    /// policies of the in-process benchmark; 0 elsewhere).
    pub drafted: u64,
    pub accepted: u64,
}

impl RequestRecord {
    fn ok(&self) -> bool {
        self.error.is_none() && !self.chunks.is_empty()
    }

    fn out_tokens(&self) -> usize {
        self.output_tokens
            .unwrap_or_else(|| self.chunks.iter().map(|c| c.tokens as usize).sum())
    }

    fn end(&self) -> f64 {
        self.end_s
            .unwrap_or_else(|| self.chunks.last().map_or(self.send_s, |c| c.t_s))
    }

    /// Time to first token, seconds.
    pub fn ttft_s(&self) -> Option<f64> {
        self.chunks.first().map(|c| c.t_s - self.send_s)
    }

    /// End-to-end latency, seconds.
    pub fn e2e_s(&self) -> f64 {
        self.end() - self.send_s
    }

    /// Time per output token after the first, seconds; `None` for one output token.
    pub fn tpot_s(&self) -> Option<f64> {
        let out = self.out_tokens();
        (out > 1).then(|| (self.e2e_s() - self.ttft_s().unwrap_or(0.0)) / (out - 1) as f64)
    }
}

/// Service-level objectives for goodput, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Slo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2el_ms: Option<f64>,
}

/// A bad `--slo` string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SloError {
    #[error("--slo is empty: expected e.g. ttft:200,tpot:50")]
    Empty,
    #[error("--slo item `{0}`: expected METRIC:MS with METRIC one of ttft, tpot, e2el")]
    Malformed(String),
    #[error("--slo metric `{0}` is unknown: use ttft, tpot or e2el")]
    UnknownMetric(String),
    #[error("--slo {metric}: `{value}` is not a positive number of milliseconds")]
    BadValue { metric: String, value: String },
    #[error("--slo {0} is given twice")]
    Duplicate(String),
}

impl FromStr for Slo {
    type Err = SloError;

    /// Parses `ttft:MS,tpot:MS[,e2el:MS]`, any subset, in any order.
    fn from_str(s: &str) -> Result<Self, SloError> {
        if s.trim().is_empty() {
            return Err(SloError::Empty);
        }
        let mut slo = Slo::default();
        for item in s.split(',') {
            let (k, v) = item
                .split_once(':')
                .ok_or_else(|| SloError::Malformed(item.to_owned()))?;
            let (k, v) = (k.trim(), v.trim());
            let ms: f64 = v
                .parse()
                .ok()
                .filter(|x: &f64| x.is_finite() && *x > 0.0)
                .ok_or_else(|| SloError::BadValue {
                    metric: k.to_owned(),
                    value: v.to_owned(),
                })?;
            let slot = match k {
                "ttft" => &mut slo.ttft_ms,
                "tpot" => &mut slo.tpot_ms,
                "e2el" => &mut slo.e2el_ms,
                _ => return Err(SloError::UnknownMetric(k.to_owned())),
            };
            if slot.replace(ms).is_some() {
                return Err(SloError::Duplicate(k.to_owned()));
            }
        }
        Ok(slo)
    }
}

impl fmt::Display for Slo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [("ttft", self.ttft_ms), ("tpot", self.tpot_ms), ("e2el", self.e2el_ms)]
            .iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k}:{v}")))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Mean and percentiles of one metric, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Dist {
    pub count: usize,
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

impl Dist {
    /// From unsorted samples in seconds; all zeros when empty (as vLLM reports `or 0`).
    pub fn from_seconds(mut xs: Vec<f64>) -> Self {
        if xs.is_empty() {
            return Self::default();
        }
        xs.iter_mut().for_each(|x| *x *= 1000.0);
        xs.sort_by(f64::total_cmp);
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        Self {
            count: xs.len(),
            mean,
            p50: percentile(&xs, 50.0),
            p95: percentile(&xs, 95.0),
            p99: percentile(&xs, 99.0),
        }
    }
}

/// numpy's default linear percentile of sorted data; `q` in [0, 100].
///
/// # Panics
/// If `sorted` is empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    assert!(!sorted.is_empty(), "percentile of no data");
    let h = (sorted.len() - 1) as f64 * (q / 100.0).clamp(0.0, 1.0);
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Speculative-decoding acceptance, passed in by the runner.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct AcceptanceSummary {
    /// Verify steps that checked at least one drafted token.
    pub verifies: u64,
    pub drafted: u64,
    pub accepted: u64,
    /// accepted / drafted.
    pub rate: f64,
    /// Mean tokens emitted per verify step (accepted + the corrected or bonus token).
    pub tokens_per_verify: f64,
}

impl AcceptanceSummary {
    pub fn new(verifies: u64, drafted: u64, accepted: u64) -> Self {
        let rate = if drafted > 0 {
            accepted as f64 / drafted as f64
        } else {
            0.0
        };
        let tpv = if verifies > 0 {
            (accepted + verifies) as f64 / verifies as f64
        } else {
            0.0
        };
        Self {
            verifies,
            drafted,
            accepted,
            rate,
            tokens_per_verify: tpv,
        }
    }
}

/// The requests of one acceptance quartile and their TPOT.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct AcceptanceBand {
    /// The band's lowest and highest per-request acceptance rate (accepted / drafted).
    pub rate_lo: f64,
    pub rate_hi: f64,
    pub tpot_ms: Dist,
}

/// Splits the requests that had drafts verified and have a TPOT into four bands by their own
/// acceptance rate (lowest first; the first bands take the remainder of an uneven split).
/// Empty when fewer than four such requests.
pub fn tpot_by_acceptance(records: &[RequestRecord]) -> Vec<AcceptanceBand> {
    let mut rated: Vec<(f64, f64)> = records
        .iter()
        .filter(|r| r.ok() && r.drafted > 0)
        .filter_map(|r| Some((r.accepted as f64 / r.drafted as f64, r.tpot_s()?)))
        .collect();
    if rated.len() < 4 {
        return Vec::new();
    }
    rated.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (n, mut start) = (rated.len(), 0);
    (0..4)
        .map(|q| {
            let end = start + n / 4 + usize::from(q < n % 4);
            let band = &rated[start..end];
            start = end;
            AcceptanceBand {
                rate_lo: band[0].0,
                rate_hi: band[band.len() - 1].0,
                tpot_ms: Dist::from_seconds(band.iter().map(|b| b.1).collect()),
            }
        })
        .collect()
}

/// One request as `--save-detailed` writes it (vLLM's `bench serve --save-detailed` keeps
/// per-request lists the same way): enough to ask which requests make a tail, and when they ran.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct RequestDetail {
    /// Seconds since the benchmark start.
    pub send_s: f64,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    /// `None` when no chunk came back.
    pub ttft_ms: Option<f64>,
    /// `None` for fewer than two output tokens.
    pub tpot_ms: Option<f64>,
    pub e2el_ms: f64,
    /// Streamed chunks (several tokens each when drafts were accepted).
    pub chunks: usize,
    /// Draft tokens verified and accepted (speculating in-process runs; 0 elsewhere).
    pub drafted: u64,
    pub accepted: u64,
    pub error: Option<String>,
}

impl RequestDetail {
    pub fn of(r: &RequestRecord) -> Self {
        RequestDetail {
            send_s: r.send_s,
            prompt_tokens: r.prompt_tokens,
            output_tokens: r.out_tokens(),
            ttft_ms: r.ttft_s().map(|s| s * 1e3),
            tpot_ms: r.tpot_s().map(|s| s * 1e3),
            e2el_ms: r.e2e_s() * 1e3,
            chunks: r.chunks.len(),
            drafted: r.drafted,
            accepted: r.accepted,
            error: r.error.clone(),
        }
    }
}

/// What the draft-length controller saw and believed over a run (`three-lane-adaptive`), so
/// that a run shows why it chose the L it did: its fitted step costs at a few sizes, the load
/// it was given, and how many draft steps fed its cost model.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ControllerSummary {
    pub decisions: u64,
    pub l_changes: u64,
    pub probes: u64,
    pub refreshes: u64,
    /// Means over the decisions: tracked requests, the verify lane's busy fraction (draft
    /// steps are charged κ = 1 + interference · busy) and the tokens sharing the verify
    /// forward (B).
    pub mean_requests: f64,
    pub mean_verify_busy: f64,
    pub mean_background_tokens: f64,
    /// The fitted solo draft step at the end of the run, `[batch, ms]`.
    pub draft_step_ms: Vec<(usize, f64)>,
    /// The fitted verify forward at the end of the run: `base + per_token·T +
    /// above_ridge·max(0, T − ridge) + per_seq·S` for T tokens of S sequences.
    pub verify_base_ms: f64,
    pub verify_per_token_us: f64,
    pub verify_above_ridge_us: f64,
    pub ridge_tokens: f64,
    pub verify_per_seq_us: f64,
    /// Draft forwards that fed the cost model, and those left out because they carried a
    /// catch-up prefill (a new prompt, a resume from L = 0).
    pub draft_steps_timed: u64,
    pub draft_steps_catching_up: u64,
    /// Predicted goodput of the last decision, tokens per second.
    pub predicted_goodput: f64,
}

/// Where the serving thread's wall time went over a run, in seconds. Drafting on the decode
/// lane's thread overlaps the serving thread (which then waits in `lane_wait_s` or runs
/// other forwards); drafting in the serving thread (single-lane) does not.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct LoopTime {
    pub wall_s: f64,
    /// Target forwards run by the serving thread.
    pub forwards: u64,
    /// Their time (decode, verify, riding prefill chunks).
    pub target_forward_s: f64,
    /// Of those, forwards of prefill chunks alone run while drafts were out on the decode
    /// lane's thread (beside them on the device). Riding prefill makes this 0.
    pub prefill_beside_drafts: u64,
    /// Of those, forwards of prefill chunks alone run while requests waited for their next
    /// decode or verify step. With riding prefill the prefill lane is offered none while
    /// anything decodes, so this stays 0 (docs/runtime.md).
    pub prefill_while_decode_waits: u64,
    /// Of those, plain (L = 0) forwards run while drafts were out, with
    /// `--plain-beside-drafts`.
    pub plain_beside_drafts: u64,
    /// Draft forwards run by the serving thread itself.
    pub draft_in_thread_s: f64,
    /// Draft batches on the decode lane's thread (overlapping the serving thread).
    pub draft_on_lane_s: f64,
    /// Blocked on a lane thread's answer (drafts or a prefill chunk).
    pub lane_wait_s: f64,
    /// Waiting for an arrival with nothing in flight.
    pub idle_s: f64,
    /// The rest: planning, sampling bookkeeping, commits, streaming.
    pub host_s: f64,
}

/// Everything one benchmark run reports.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Summary {
    pub completed: usize,
    pub failed: usize,
    pub duration_s: f64,
    pub total_input_tokens: usize,
    pub total_output_tokens: usize,
    pub request_throughput: f64,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    pub ttft_ms: Dist,
    pub tpot_ms: Dist,
    pub itl_ms: Dist,
    pub e2el_ms: Dist,
    /// Requests per second meeting every SLO; `None` without SLOs.
    pub goodput: Option<f64>,
    pub slo: Option<Slo>,
    pub acceptance: Option<AcceptanceSummary>,
    /// `l_histogram[L]` = decode steps that drafted L tokens (L = 0: plain steps).
    pub l_histogram: Vec<u64>,
    /// TPOT of the requests in each quartile of their own acceptance rate, lowest first
    /// (speculating in-process runs; empty elsewhere): whether the TPOT tail is the requests
    /// whose drafts the target rejects.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tpot_by_acceptance: Vec<AcceptanceBand>,
    /// The controller's view, for `three-lane-adaptive` runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller: Option<ControllerSummary>,
    /// Where the serving thread's time went (in-process runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serving_loop: Option<LoopTime>,
}

/// Invalid input to [`summarize`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    #[error("benchmark duration must be finite and > 0 s, got {0}")]
    BadDuration(f64),
    #[error("no requests to summarise")]
    NoRequests,
}

/// Summarises a run of `duration_s` seconds. Acceptance and the L histogram are filled in
/// by the caller.
///
/// # Errors
/// [`MetricsError`] for a non-positive duration or no records.
pub fn summarize(records: &[RequestRecord], duration_s: f64, slo: Option<Slo>) -> Result<Summary, MetricsError> {
    if !(duration_s.is_finite() && duration_s > 0.0) {
        return Err(MetricsError::BadDuration(duration_s));
    }
    if records.is_empty() {
        return Err(MetricsError::NoRequests);
    }
    let (mut ttft, mut tpot, mut itl, mut e2el) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut s = Summary {
        slo,
        ..Summary::default()
    };
    let mut good = 0usize;
    for r in records {
        if !r.ok() {
            s.failed += 1;
            continue;
        }
        s.completed += 1;
        s.total_input_tokens += r.prompt_tokens;
        s.total_output_tokens += r.out_tokens();
        let t = r.ttft_s().unwrap_or(0.0);
        ttft.push(t);
        let tp = r.tpot_s();
        tpot.extend(tp);
        itl.extend(r.chunks.windows(2).map(|w| w[1].t_s - w[0].t_s));
        e2el.push(r.e2e_s());
        if let Some(slo) = slo {
            let within = |v: f64, lim: Option<f64>| lim.is_none_or(|l| v * 1000.0 <= l);
            if within(t, slo.ttft_ms) && within(tp.unwrap_or(0.0), slo.tpot_ms) && within(r.e2e_s(), slo.e2el_ms) {
                good += 1;
            }
        }
    }
    s.duration_s = duration_s;
    s.request_throughput = s.completed as f64 / duration_s;
    s.output_throughput = s.total_output_tokens as f64 / duration_s;
    s.total_token_throughput = (s.total_input_tokens + s.total_output_tokens) as f64 / duration_s;
    s.goodput = slo.map(|_| good as f64 / duration_s);
    s.ttft_ms = Dist::from_seconds(ttft);
    s.tpot_ms = Dist::from_seconds(tpot);
    s.itl_ms = Dist::from_seconds(itl);
    s.e2el_ms = Dist::from_seconds(e2el);
    s.tpot_by_acceptance = tpot_by_acceptance(records);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(send: f64, chunks: &[(f64, u32)]) -> RequestRecord {
        RequestRecord {
            send_s: send,
            chunks: chunks.iter().map(|&(t_s, tokens)| Chunk { t_s, tokens }).collect(),
            prompt_tokens: 10,
            ..Default::default()
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    /// Nine requests, acceptance i/10 and TPOT (10 − i)·10 ms for i = 1..=9, split 3/2/2/2:
    /// the lowest band holds rates 0.1–0.3 and TPOT 70–90 ms. A request without drafts and a
    /// failed one are left out.
    #[test]
    fn tpot_bands_by_acceptance() {
        let mut rs: Vec<RequestRecord> = (1..=9u32)
            .map(|i| RequestRecord {
                drafted: 10,
                accepted: u64::from(i),
                ..rec(0.0, &[(0.1, 1), (0.1 + 0.01 * f64::from(10 - i), 1)])
            })
            .collect();
        rs.push(rec(0.0, &[(0.1, 1), (0.9, 1)]));
        rs.push(RequestRecord { drafted: 10, error: Some("x".into()), ..rec(0.0, &[(0.1, 1), (0.9, 1)]) });
        let b = tpot_by_acceptance(&rs);
        assert_eq!(b.iter().map(|b| b.tpot_ms.count).collect::<Vec<_>>(), vec![3, 2, 2, 2]);
        assert!(close(b[0].rate_lo, 0.1) && close(b[0].rate_hi, 0.3) && close(b[3].rate_hi, 0.9));
        assert!(close(b[0].tpot_ms.p50, 80.0) && close(b[3].tpot_ms.p50, 15.0));
        assert!(tpot_by_acceptance(&rs[..3]).is_empty());
    }

    #[test]
    fn percentiles_match_numpy_linear() {
        // np.percentile([1, 2, 3, 4], [50, 95, 99]) = [2.5, 3.85, 3.97]
        let x = [1.0, 2.0, 3.0, 4.0];
        assert!(close(percentile(&x, 50.0), 2.5));
        assert!(close(percentile(&x, 95.0), 3.85));
        assert!(close(percentile(&x, 99.0), 3.97));
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        // np.percentile(range(1, 101), 99) = 99.01
        let y: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!(close(percentile(&y, 99.0), 99.01));
        assert!(close(percentile(&y, 0.0), 1.0) && close(percentile(&y, 100.0), 100.0));
    }

    /// Two requests worked by hand.
    /// A: sent 0.0, chunks at 0.10 (1 token), 0.15 (3), 0.30 (1): TTFT 100 ms, E2E 300 ms,
    ///    5 tokens, TPOT (300 − 100)/4 = 50 ms, ITL 50 and 150 ms.
    /// B: sent 1.0, chunks at 1.20 (1), 1.30 (1): TTFT 200, E2E 300, TPOT 100, ITL 100.
    #[test]
    fn hand_computed_two_requests() {
        let a = rec(0.0, &[(0.10, 1), (0.15, 3), (0.30, 1)]);
        let b = rec(1.0, &[(1.20, 1), (1.30, 1)]);
        let slo: Slo = "ttft:150,tpot:80".parse().unwrap();
        let s = summarize(&[a, b], 2.0, Some(slo)).unwrap();
        assert_eq!(
            (s.completed, s.failed, s.total_output_tokens, s.total_input_tokens),
            (2, 0, 7, 20)
        );
        assert!(close(s.ttft_ms.mean, 150.0) && close(s.ttft_ms.p50, 150.0) && close(s.ttft_ms.p99, 199.0));
        assert!(close(s.tpot_ms.p50, 75.0) && close(s.tpot_ms.p95, 97.5));
        // ITL samples 50, 100, 150: p50 100, p99 = 100 + 0.98·50 = 149.
        assert_eq!(s.itl_ms.count, 3);
        assert!(close(s.itl_ms.p50, 100.0) && close(s.itl_ms.p99, 149.0));
        assert!(close(s.e2el_ms.p50, 300.0));
        assert!(close(s.request_throughput, 1.0) && close(s.output_throughput, 3.5));
        assert!(close(s.total_token_throughput, 13.5));
        // Only A meets ttft ≤ 150 ms and tpot ≤ 80 ms: 1 request / 2 s.
        assert!(close(s.goodput.unwrap(), 0.5));
    }

    #[test]
    fn failures_and_single_token_requests() {
        let ok1 = rec(0.0, &[(0.5, 1)]);
        let failed = RequestRecord {
            error: Some("timeout".into()),
            ..rec(0.0, &[(0.1, 1)])
        };
        let empty = rec(0.0, &[]);
        let s = summarize(&[ok1, failed, empty], 1.0, None).unwrap();
        assert_eq!((s.completed, s.failed), (1, 2));
        assert_eq!(s.tpot_ms.count, 0, "one output token has no TPOT");
        assert_eq!(s.tpot_ms.p99, 0.0);
        assert_eq!(s.goodput, None);
        assert!(close(s.e2el_ms.p50, 500.0));
    }

    #[test]
    fn explicit_end_and_output_count_win() {
        let r = RequestRecord {
            end_s: Some(1.0),
            output_tokens: Some(11),
            ..rec(0.0, &[(0.2, 1), (0.6, 9)])
        };
        assert!(close(r.e2e_s(), 1.0));
        assert!(close(r.tpot_s().unwrap(), 0.08));
    }

    #[test]
    fn slo_parser_errors_are_specific() {
        let s: Slo = " tpot:50 , ttft:200".parse().unwrap();
        assert_eq!(
            s,
            Slo {
                ttft_ms: Some(200.0),
                tpot_ms: Some(50.0),
                e2el_ms: None
            }
        );
        assert_eq!(s.to_string(), "ttft:200,tpot:50");
        assert_eq!("".parse::<Slo>(), Err(SloError::Empty));
        assert_eq!("ttft".parse::<Slo>(), Err(SloError::Malformed("ttft".into())));
        assert_eq!("itl:5".parse::<Slo>(), Err(SloError::UnknownMetric("itl".into())));
        assert!(matches!("ttft:-1".parse::<Slo>(), Err(SloError::BadValue { .. })));
        assert!(matches!("ttft:abc".parse::<Slo>(), Err(SloError::BadValue { .. })));
        assert!(matches!("ttft:NaN".parse::<Slo>(), Err(SloError::BadValue { .. })));
        assert_eq!("ttft:1,ttft:2".parse::<Slo>(), Err(SloError::Duplicate("ttft".into())));
    }

    #[test]
    fn summarize_rejects_bad_input() {
        assert_eq!(summarize(&[], 1.0, None), Err(MetricsError::NoRequests));
        let r = [rec(0.0, &[(0.1, 1)])];
        for d in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(summarize(&r, d, None), Err(MetricsError::BadDuration(_))));
        }
    }

    #[test]
    fn acceptance_summary_rates() {
        let a = AcceptanceSummary::new(10, 40, 30);
        assert!(close(a.rate, 0.75) && close(a.tokens_per_verify, 4.0));
        assert_eq!(AcceptanceSummary::new(0, 0, 0).rate, 0.0);
    }
}
