//! The runtime's live numbers for monitoring: gauges (queue depths, running and waiting
//! requests, KV-cache usage), counters (tokens, preemptions, drafted and accepted tokens, per
//! draft position, the draft-length distribution, finishes) and latency histograms (TTFT,
//! TPOT, ITL, E2E) with vLLM's bucket boundaries (`vllm/v1/metrics/loggers.py`), so that
//! dashboards built for vLLM read the same scales. The server renders them as Prometheus text.

/// A cumulative histogram with fixed upper bounds (seconds), as Prometheus expects.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub bounds: &'static [f64],
    /// `counts[i]`: observations <= `bounds[i]` and > `bounds[i - 1]`; the last slot is +Inf.
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        if !v.is_finite() {
            return;
        }
        let slot = self.bounds.iter().position(|&b| v <= b).unwrap_or(self.bounds.len());
        self.counts[slot] += 1;
        self.sum += v;
        self.count += 1;
    }

    /// Cumulative counts per bound, then +Inf (Prometheus `_bucket` lines).
    pub fn cumulative(&self) -> Vec<u64> {
        self.counts
            .iter()
            .scan(0, |acc, &c| {
                *acc += c;
                Some(*acc)
            })
            .collect()
    }
}

/// vLLM's `time_to_first_token_seconds` buckets.
pub const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// vLLM's `time_per_output_token_seconds` / `inter_token_latency_seconds` buckets.
pub const TPOT_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
];
/// vLLM's `e2e_request_latency_seconds` buckets.
pub const E2E_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
    240.0, 480.0, 960.0, 1920.0, 7680.0,
];

/// A snapshot of everything the runtime reports.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeMetrics {
    /// Requests holding KV blocks.
    pub running: usize,
    /// Requests admitted and waiting to (re)start prefill.
    pub waiting: usize,
    /// Lane queue depths: decode (ready to draft or decode), verify (drafts waiting), prefill
    /// (waiting and prefilling requests).
    pub lane_queue: [usize; 3],
    pub kv_used_blocks: usize,
    pub kv_total_blocks: usize,
    pub preemptions: u64,
    pub prompt_tokens: u64,
    pub generation_tokens: u64,
    /// Verify steps with at least one drafted token, drafted and accepted tokens.
    pub verifies: u64,
    pub drafted: u64,
    pub accepted: u64,
    /// `accepted_per_pos[i]`: drafts whose position `i` (0-based depth) was accepted.
    pub accepted_per_pos: Vec<u64>,
    /// `l_histogram[L]`: decode-lane steps of one request that drafted L tokens (0 = plain).
    pub l_histogram: Vec<u64>,
    pub finished_stop: u64,
    pub finished_length: u64,
    pub aborted: u64,
    /// Engine faults in service mode (each fails the requests then in flight).
    pub engine_faults: u64,
    pub ttft: Histogram,
    pub tpot: Histogram,
    pub itl: Histogram,
    pub e2e: Histogram,
}

impl Default for RuntimeMetrics {
    fn default() -> Self {
        Self::new(0)
    }
}

impl RuntimeMetrics {
    pub fn new(l_max: usize) -> Self {
        Self {
            running: 0,
            waiting: 0,
            lane_queue: [0; 3],
            kv_used_blocks: 0,
            kv_total_blocks: 0,
            preemptions: 0,
            prompt_tokens: 0,
            generation_tokens: 0,
            verifies: 0,
            drafted: 0,
            accepted: 0,
            accepted_per_pos: vec![0; l_max],
            l_histogram: vec![0; l_max + 1],
            finished_stop: 0,
            finished_length: 0,
            aborted: 0,
            engine_faults: 0,
            ttft: Histogram::new(TTFT_BUCKETS),
            tpot: Histogram::new(TPOT_BUCKETS),
            itl: Histogram::new(TPOT_BUCKETS),
            e2e: Histogram::new(E2E_BUCKETS),
        }
    }

    /// KV-cache usage in [0, 1].
    pub fn kv_usage(&self) -> f64 {
        if self.kv_total_blocks == 0 {
            0.0
        } else {
            self.kv_used_blocks as f64 / self.kv_total_blocks as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_with_inf_last() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        for v in [0.05, 0.1, 0.5, 2.0, f64::NAN] {
            h.observe(v);
        }
        assert_eq!(h.cumulative(), vec![2, 3, 4]);
        assert_eq!(h.count, 4);
        assert!((h.sum - 2.65).abs() < 1e-12);
    }
}
