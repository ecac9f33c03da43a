//! Shared helpers for the engine's integration tests.
#![allow(dead_code)]

pub mod server;

use std::path::PathBuf;
use std::sync::Arc;

use verify_pd::backend::cpu::CpuBackend;
use verify_pd::backend::{Backend, LogitsWanted, SeqStep, StepPlan};
use verify_pd::model::Model;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn smollm2_path() -> PathBuf {
    let p = repo().join("assets/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.exists(), "{} is missing: run `make test` (or `bash tools/fetch-assets.sh`)", p.display());
    p
}

pub fn fixture(rel: &str) -> PathBuf {
    repo().join("tests/fixtures").join(rel)
}

pub fn read_json(rel: &str) -> serde_json::Value {
    let p = fixture(rel);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("id array").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().expect("float array").iter().map(|x| x.as_f64().expect("float") as f32).collect()
}

/// A CPU backend over `model` with room for `tokens` tokens in one sequence of blocks 0...
pub fn backend(model: &Model, tokens: usize) -> CpuBackend {
    let blocks = tokens.div_ceil(16) + 1;
    CpuBackend::new(model.config.clone(), Arc::clone(&model.weights), blocks, 16).expect("backend")
}

/// Logits at every position of one causal forward pass over `tokens` from an empty cache.
pub fn all_logits(be: &mut CpuBackend, tokens: &[u32]) -> Vec<Vec<f32>> {
    let (nb, _) = be.kv_geometry();
    let plan = StepPlan {
        seqs: vec![SeqStep {
            tokens: tokens.to_vec(),
            start_pos: 0,
            block_table: (0..nb as u32).collect(),
            tree_parents: None,
            logits: LogitsWanted::All,
        }],
    };
    let l = be.forward(&plan).expect("forward");
    l.seq_rows(0).map(<[f32]>::to_vec).collect()
}

/// `|a - b| <= tol · max(1, |b|)` for every element; returns the worst scaled error.
pub fn max_rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / y.abs().max(1.0)).fold(0.0, f32::max)
}
