//! One batched step over many sequences must equal running each alone: mixed lengths,
//! scattered block tables, chunked prefill, and token trees with an ancestor-only mask.
mod common;

use std::sync::Arc;

use common::max_rel_err;
use verify_pd::backend::cpu::CpuBackend;
use verify_pd::backend::{Backend, LogitsWanted, SeqStep, StepPlan};
use verify_pd::engine::{Engine, GenerateRequest};
use verify_pd::make_model::{write_random_checkpoint, Preset, WeightDType};
use verify_pd::model::Model;
use vpd_sampling::SamplingParams;

fn tiny_model() -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_random_checkpoint(&Preset::TinyLlama3.config(), WeightDType::F32, 7, dir.path(), None, &mut |_, _| {}).expect("write");
    let m = Model::load(dir.path()).expect("load");
    (dir, m)
}

fn backend(m: &Model, blocks: usize) -> CpuBackend {
    CpuBackend::new(m.config.clone(), Arc::clone(&m.weights), blocks, 4).expect("backend")
}

fn step(tokens: &[u32], start_pos: usize, table: &[u32], logits: LogitsWanted) -> SeqStep {
    SeqStep { tokens: tokens.to_vec(), start_pos, block_table: table.to_vec(), tree_parents: None, logits }
}

fn alone(m: &Model, tokens: &[u32]) -> Vec<Vec<f32>> {
    let mut be = backend(m, 64);
    let table: Vec<u32> = (0..64).collect();
    let l = be.forward(&StepPlan { seqs: vec![step(tokens, 0, &table, LogitsWanted::All)] }).expect("forward");
    l.seq_rows(0).map(<[f32]>::to_vec).collect()
}

fn seqs() -> Vec<Vec<u32>> {
    vec![(0..7).map(|i| 3 + 5 * i).collect(), (0..13).map(|i| 400 - 7 * i).collect(), vec![99]]
}

#[test]
fn batched_step_equals_each_sequence_alone() {
    let (_d, m) = tiny_model();
    let s = seqs();
    // Interleaved, non-contiguous block tables (block size 4).
    let tables: [Vec<u32>; 3] = [vec![9, 2], vec![0, 7, 3, 11], vec![5]];
    let mut be = backend(&m, 12);
    let plan = StepPlan { seqs: (0..3).map(|i| step(&s[i], 0, &tables[i], LogitsWanted::All)).collect() };
    let l = be.forward(&plan).expect("batched forward");
    for (i, tokens) in s.iter().enumerate() {
        let want = alone(&m, tokens);
        let got: Vec<&[f32]> = l.seq_rows(i).collect();
        assert_eq!(got.len(), tokens.len());
        for (p, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(max_rel_err(g, w) < 1e-4, "seq {i} pos {p}");
        }
    }
}

#[test]
fn chunked_prefill_then_decode_equals_one_pass() {
    let (_d, m) = tiny_model();
    let tokens: Vec<u32> = (0..19).map(|i| (i * 37 % 500) as u32).collect();
    let want = alone(&m, &tokens);
    let mut be = backend(&m, 8);
    let table: Vec<u32> = (0..8).rev().collect();
    let mut pos = 0;
    for chunk in [5usize, 1, 9, 1, 1, 2] {
        let l = be.forward(&StepPlan { seqs: vec![step(&tokens[pos..pos + chunk], pos, &table, LogitsWanted::Last)] }).expect("step");
        pos += chunk;
        assert!(max_rel_err(l.last_row(0).expect("row"), &want[pos - 1]) < 1e-4, "after {pos} tokens");
    }
}

#[test]
fn tree_branches_see_only_their_ancestors() {
    let (_d, m) = tiny_model();
    let prefix: Vec<u32> = vec![11, 22, 33, 44, 55];
    // Tree over new tokens: a(root) -> b -> d, a -> c.
    let (a, b, c, d) = (101u32, 202, 303, 404);
    let parents = vec![-1, 0, 0, 1];
    let mut be = backend(&m, 8);
    let table: Vec<u32> = (0..8).collect();
    be.forward(&StepPlan { seqs: vec![step(&prefix, 0, &table, LogitsWanted::None)] }).expect("prefix");
    let tree = SeqStep {
        tokens: vec![a, b, c, d],
        start_pos: prefix.len(),
        block_table: table.clone(),
        tree_parents: Some(parents),
        logits: LogitsWanted::All,
    };
    let l = be.forward(&StepPlan { seqs: vec![tree] }).expect("tree step");
    let rows: Vec<&[f32]> = l.seq_rows(0).collect();
    let chain = |path: &[u32]| alone(&m, &prefix.iter().chain(path).copied().collect::<Vec<_>>());
    let abd = chain(&[a, b, d]);
    let ac = chain(&[a, c]);
    let n = prefix.len();
    assert!(max_rel_err(rows[0], &abd[n]) < 1e-4, "node a");
    assert!(max_rel_err(rows[1], &abd[n + 1]) < 1e-4, "node b");
    assert!(max_rel_err(rows[3], &abd[n + 2]) < 1e-4, "node d");
    assert!(max_rel_err(rows[2], &ac[n + 1]) < 1e-4, "node c");
}

#[test]
fn engine_batch_equals_single_requests_and_frees_every_block() {
    let (_d, m) = tiny_model();
    let reqs: Vec<GenerateRequest> = seqs()
        .into_iter()
        .enumerate()
        .map(|(i, p)| GenerateRequest {
            prompt_ids: p,
            max_new_tokens: 5 + 3 * i,
            sampling: if i == 1 { SamplingParams { temperature: 0.8, top_k: 50, top_p: 0.9, seed: 5 } } else { SamplingParams::greedy() },
            ignore_eos: true,
        })
        .collect();
    let mut engine = Engine::new(backend(&m, 40)).expect("engine");
    let batch = engine.generate_batch(&reqs).expect("batch");
    engine.blocks().check_invariants().expect("invariants");
    assert_eq!(engine.blocks().num_used(), 0);
    for (r, b) in reqs.iter().zip(&batch) {
        let single = engine.generate(r).expect("single");
        assert_eq!(single.token_ids, b.token_ids);
        assert_eq!(b.token_ids.len(), r.max_new_tokens);
    }
}

#[test]
fn sampled_generation_is_reproducible_per_seed() {
    let (_d, m) = tiny_model();
    let mut engine = Engine::new(backend(&m, 16)).expect("engine");
    let req = |seed| GenerateRequest {
        prompt_ids: vec![1, 2, 3],
        max_new_tokens: 20,
        sampling: SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0, seed },
        ignore_eos: true,
    };
    let a = engine.generate(&req(1)).expect("a").token_ids;
    let b = engine.generate(&req(1)).expect("b").token_ids;
    let c = engine.generate(&req(2)).expect("c").token_ids;
    assert_eq!(a, b);
    assert_ne!(a, c, "different seeds should diverge over 20 tokens of a random model");
}

#[test]
fn bad_plans_are_errors_not_panics() {
    let (_d, m) = tiny_model();
    let mut be = backend(&m, 2);
    let too_few_blocks = StepPlan { seqs: vec![step(&[1, 2, 3, 4, 5], 0, &[0], LogitsWanted::Last)] };
    assert!(be.forward(&too_few_blocks).is_err());
    let bad_block = StepPlan { seqs: vec![step(&[1], 0, &[7], LogitsWanted::Last)] };
    assert!(be.forward(&bad_block).is_err());
    let oov = StepPlan { seqs: vec![step(&[512], 0, &[0], LogitsWanted::Last)] };
    assert!(be.forward(&oov).is_err());
}
