//! Acceptance statistics, per request and in aggregate, and the JSONL acceptance trace
//! (`{"request", "step", "L", "accepted"}` per verify step) that the controller and the
//! benchmarks read.
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::error::{EngineError, Result};

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SpecStats {
    /// Verify steps (each emits 1..=L+1 tokens).
    pub steps: u64,
    /// Draft tokens proposed (tree nodes count once each).
    pub drafted: u64,
    /// Draft tokens accepted.
    pub accepted: u64,
    /// `drafted_at[i]` / `accepted_at[i]`: drafts proposed / accepted at depth `i + 1`.
    pub drafted_at: Vec<u64>,
    pub accepted_at: Vec<u64>,
    /// `accepted_len_hist[k]`: steps that accepted exactly `k` drafts.
    pub accepted_len_hist: Vec<u64>,
}

impl SpecStats {
    /// Records one verify step: `depth_counts[i]` drafts proposed at depth `i + 1`, `accepted`
    /// of them accepted (always a prefix of depths).
    pub fn record(&mut self, depth_counts: &[u64], accepted: usize) {
        self.steps += 1;
        let drafted: u64 = depth_counts.iter().sum();
        self.drafted += drafted;
        self.accepted += accepted as u64;
        grow(&mut self.drafted_at, depth_counts.len());
        grow(&mut self.accepted_at, depth_counts.len());
        for (i, &c) in depth_counts.iter().enumerate() {
            self.drafted_at[i] += c;
        }
        for a in self.accepted_at.iter_mut().take(accepted) {
            *a += 1;
        }
        grow(&mut self.accepted_len_hist, accepted + 1);
        self.accepted_len_hist[accepted] += 1;
    }

    pub fn merge(&mut self, o: &SpecStats) {
        self.steps += o.steps;
        self.drafted += o.drafted;
        self.accepted += o.accepted;
        for (dst, src) in [(&mut self.drafted_at, &o.drafted_at), (&mut self.accepted_at, &o.accepted_at), (&mut self.accepted_len_hist, &o.accepted_len_hist)] {
            grow(dst, src.len());
            for (d, s) in dst.iter_mut().zip(src) {
                *d += s;
            }
        }
    }

    /// Accepted drafts over proposed drafts.
    pub fn acceptance_rate(&self) -> f64 {
        if self.drafted == 0 { 0.0 } else { self.accepted as f64 / self.drafted as f64 }
    }

    /// Accepted drafts per verify step (tokens emitted per step is this plus one).
    pub fn mean_accepted_length(&self) -> f64 {
        if self.steps == 0 { 0.0 } else { self.accepted as f64 / self.steps as f64 }
    }
}

fn grow(v: &mut Vec<u64>, len: usize) {
    if v.len() < len {
        v.resize(len, 0);
    }
}

/// Appends one JSON line per verify step.
pub struct TraceWriter {
    out: std::io::BufWriter<std::fs::File>,
    path: String,
}

#[derive(Serialize)]
struct TraceLine {
    request: u64,
    step: u64,
    #[serde(rename = "L")]
    l: usize,
    accepted: usize,
}

impl TraceWriter {
    /// # Errors
    /// The file cannot be created.
    pub fn create(path: &Path) -> Result<Self> {
        let p = path.display().to_string();
        let f = std::fs::File::create(path).map_err(|source| EngineError::Io { path: p.clone(), source })?;
        Ok(Self { out: std::io::BufWriter::new(f), path: p })
    }

    /// # Errors
    /// A write failure.
    pub fn record(&mut self, request: u64, step: u64, l: usize, accepted: usize) -> Result<()> {
        let line = serde_json::to_string(&TraceLine { request, step, l, accepted }).unwrap_or_default();
        writeln!(self.out, "{line}").map_err(|source| EngineError::Io { path: self.path.clone(), source })
    }

    /// # Errors
    /// A write failure.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|source| EngineError::Io { path: self.path.clone(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_counts_per_depth_and_histogram() {
        let mut s = SpecStats::default();
        s.record(&[1, 1, 1, 1], 2);
        s.record(&[1, 1, 1, 1], 4);
        s.record(&[2, 3], 0);
        assert_eq!(s.steps, 3);
        assert_eq!(s.drafted, 13);
        assert_eq!(s.accepted, 6);
        assert_eq!(s.drafted_at, vec![4, 5, 2, 2]);
        assert_eq!(s.accepted_at, vec![2, 2, 1, 1]);
        assert_eq!(s.accepted_len_hist, vec![1, 0, 1, 0, 1]);
        assert!((s.mean_accepted_length() - 2.0).abs() < 1e-12);
        let mut m = SpecStats::default();
        m.merge(&s);
        m.merge(&s);
        assert_eq!(m.accepted, 12);
        assert_eq!(m.accepted_len_hist, vec![2, 0, 2, 0, 2]);
    }
}
