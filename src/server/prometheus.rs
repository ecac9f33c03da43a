//! `GET /metrics` in the Prometheus text exposition format (version 0.0.4). Names follow
//! vLLM's metrics where one exists (`vllm:num_requests_running`, `vllm:time_to_first_token_seconds`,
//! `vllm:spec_decode_num_accepted_tokens_per_pos`, ...), with our `vpd:` prefix; lane queue
//! depths and the draft-length distribution have no vLLM counterpart and get their own names.
use std::fmt::Write;

use crate::runtime::metrics::{Histogram, RuntimeMetrics};

/// Renders `m`; `model` labels every series, as vLLM's `model_name` label does.
pub fn render(m: &RuntimeMetrics, model: &str, draining: bool) -> String {
    let mut out = String::new();
    let label = format!("model_name=\"{}\"", escape(model));
    let mut gauge = |name: &str, help: &str, v: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{label}}} {v}");
    };
    gauge("vpd:num_requests_running", "Requests holding KV-cache blocks.", m.running as f64);
    gauge("vpd:num_requests_waiting", "Requests waiting to start or restart prefill.", m.waiting as f64);
    gauge("vpd:kv_cache_usage_perc", "Fraction of KV-cache blocks in use (1 = full).", m.kv_usage());
    gauge("vpd:kv_cache_used_blocks", "KV-cache blocks in use.", m.kv_used_blocks as f64);
    gauge("vpd:kv_cache_total_blocks", "KV-cache blocks in all.", m.kv_total_blocks as f64);
    gauge("vpd:draining", "1 while the server drains for shutdown.", f64::from(u8::from(draining)));
    let _ = writeln!(
        out,
        "# HELP vpd:lane_queue_depth Requests queued per lane (decode: ready to draft or decode; verify: drafts awaiting verification; prefill: waiting or prefilling).\n# TYPE vpd:lane_queue_depth gauge"
    );
    for (lane, depth) in ["decode", "verify", "prefill"].iter().zip(m.lane_queue) {
        let _ = writeln!(out, "vpd:lane_queue_depth{{{label},lane=\"{lane}\"}} {depth}");
    }
    let counter = |out: &mut String, name: &str, help: &str, v: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{{label}}} {v}");
    };
    counter(&mut out, "vpd:num_preemptions_total", "Preemptions by recompute.", m.preemptions);
    counter(&mut out, "vpd:prompt_tokens_total", "Prompt tokens prefilled (first admission only).", m.prompt_tokens);
    counter(&mut out, "vpd:generation_tokens_total", "Tokens generated.", m.generation_tokens);
    counter(&mut out, "vpd:spec_decode_num_drafts_total", "Verify steps that checked at least one drafted token.", m.verifies);
    counter(&mut out, "vpd:spec_decode_num_draft_tokens_total", "Drafted tokens verified.", m.drafted);
    counter(&mut out, "vpd:spec_decode_num_accepted_tokens_total", "Drafted tokens accepted.", m.accepted);
    counter(&mut out, "vpd:engine_faults_total", "Engine faults (each failed the requests then in flight).", m.engine_faults);
    let _ = writeln!(
        out,
        "# HELP vpd:spec_decode_num_accepted_tokens_per_pos Drafts whose token at this position (0-based) was accepted.\n# TYPE vpd:spec_decode_num_accepted_tokens_per_pos counter"
    );
    for (pos, n) in m.accepted_per_pos.iter().enumerate() {
        let _ = writeln!(out, "vpd:spec_decode_num_accepted_tokens_per_pos{{{label},position=\"{pos}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP vpd:draft_length_total Decode-lane steps of one request by the draft length L the controller chose (0 = plain decode).\n# TYPE vpd:draft_length_total counter"
    );
    for (l, n) in m.l_histogram.iter().enumerate() {
        let _ = writeln!(out, "vpd:draft_length_total{{{label},l=\"{l}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP vpd:request_success_total Requests that finished, by finish reason.\n# TYPE vpd:request_success_total counter"
    );
    for (reason, n) in [("stop", m.finished_stop), ("length", m.finished_length), ("abort", m.aborted)] {
        let _ = writeln!(out, "vpd:request_success_total{{{label},finished_reason=\"{reason}\"}} {n}");
    }
    histogram(&mut out, &label, "vpd:time_to_first_token_seconds", "Time to first token.", &m.ttft);
    histogram(&mut out, &label, "vpd:time_per_output_token_seconds", "Mean time per output token after the first, per request.", &m.tpot);
    histogram(&mut out, &label, "vpd:inter_token_latency_seconds", "Time between consecutive streamed chunks.", &m.itl);
    histogram(&mut out, &label, "vpd:e2e_request_latency_seconds", "End-to-end request latency.", &m.e2e);
    out
}

fn histogram(out: &mut String, label: &str, name: &str, help: &str, h: &Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let cum = h.cumulative();
    for (b, c) in h.bounds.iter().zip(&cum) {
        let _ = writeln!(out, "{name}_bucket{{{label},le=\"{b}\"}} {c}");
    }
    let _ = writeln!(out, "{name}_bucket{{{label},le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum{{{label}}} {}", h.sum);
    let _ = writeln!(out, "{name}_count{{{label}}} {}", h.count);
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_line_is_name_labels_value() {
        let mut m = RuntimeMetrics::new(4);
        m.ttft.observe(0.2);
        m.accepted_per_pos[1] = 3;
        let text = render(&m, "my\"model", false);
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(series.starts_with("vpd:") && series.ends_with('}'), "{line}");
        }
        assert!(text.contains("vpd:time_to_first_token_seconds_bucket{model_name=\"my\\\"model\",le=\"0.25\"} 1"));
        assert!(text.contains("position=\"1\"} 3"));
        assert!(text.contains("vpd:lane_queue_depth{model_name=\"my\\\"model\",lane=\"verify\"} 0"));
    }
}
