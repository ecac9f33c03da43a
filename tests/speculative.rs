//! Speculative decoding on the CPU backend: greedy output equals plain greedy output for every
//! drafter, draft length and tree shape; caches roll back exactly; context limits hold.
mod common;

use std::sync::Arc;

use proptest::prelude::*;
use verify_pd::backend::cpu::CpuBackend;
use verify_pd::backend::{Backend, LogitsWanted, SeqStep, StepPlan};
use verify_pd::engine::{Engine, FinishReason, GenerateRequest};
use verify_pd::make_model::{write_random_checkpoint, Preset, WeightDType};
use verify_pd::model::Model;
use verify_pd::spec::factory::cpu_drafter;
use verify_pd::spec::{DraftSpec, SpecEngine, SpecOptions, TreeShape};
use vpd_formats::LlamaConfig;
use vpd_kv::BlockManager;
use vpd_sampling::SamplingParams;

fn tiny(cfg: LlamaConfig, seed: u64) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_random_checkpoint(&cfg, WeightDType::F32, seed, dir.path(), None, &mut |_, _| {}).expect("write");
    let m = Model::load(dir.path()).expect("load");
    (dir, m)
}

fn engine(m: &Model, blocks: usize) -> Engine<CpuBackend> {
    Engine::new(CpuBackend::new(m.config.clone(), Arc::clone(&m.weights), blocks, 4).expect("backend")).expect("engine")
}

fn spec_engine(target: &Model, draft: &DraftSpec, opts: SpecOptions, blocks: usize) -> SpecEngine<CpuBackend> {
    let drafter = cpu_drafter(draft, target, blocks * 2, 4).expect("drafter");
    SpecEngine::new(engine(target, blocks), drafter, opts).expect("spec engine")
}

fn greedy(prompt: Vec<u32>, n: usize) -> GenerateRequest {
    GenerateRequest { prompt_ids: prompt, max_new_tokens: n, sampling: SamplingParams::greedy(), ignore_eos: true }
}

/// A prompt with repeats, so prompt lookup finds matches.
fn prompt() -> Vec<u32> {
    let mut p: Vec<u32> = (0..12).map(|i| 10 + (i * 7) % 31).collect();
    p.extend_from_slice(&p.clone()[2..9]);
    p
}

#[test]
fn greedy_speculative_output_equals_plain_output_on_a_random_model() {
    let (_d, target) = tiny(Preset::TinyLlama3.config(), 1);
    // A different random model of the same shape and vocabulary: low acceptance, so the
    // rejection path runs constantly.
    let (dd, _) = tiny(Preset::TinyLlama3.config(), 2);
    let plain = engine(&target, 64).generate(&greedy(prompt(), 40)).expect("plain").token_ids;
    let drafters = [
        DraftSpec::LayerSkip(1),
        DraftSpec::Ngram(2),
        DraftSpec::Model(dd.path().to_path_buf()),
        // The target as its own drafter accepts everything: the bonus-token path.
        DraftSpec::Model(_d.path().to_path_buf()),
    ];
    for d in &drafters {
        for l in [1, 2, 4, 8] {
            let mut se = spec_engine(&target, d, SpecOptions { num_draft: l, tree: None }, 64);
            let out = se.generate(&greedy(prompt(), 40)).expect("spec");
            assert_eq!(out.token_ids, plain, "{d:?} L={l}");
            let st = out.spec.expect("stats");
            assert!(st.steps > 0 && st.accepted <= st.drafted);
            se.target().blocks().check_invariants().expect("invariants");
            assert_eq!(se.target().blocks().num_used(), 0, "{d:?} L={l}: blocks leaked");
        }
        for (w, depth) in [(2, 2), (3, 3), (1, 4)] {
            let tree = Some(TreeShape::parse(&format!("{w},{depth}"), 64).expect("shape"));
            let mut se = spec_engine(&target, d, SpecOptions { num_draft: 4, tree }, 64);
            let out = se.generate(&greedy(prompt(), 40)).expect("tree spec");
            assert_eq!(out.token_ids, plain, "{d:?} tree {w},{depth}");
        }
    }
}

#[test]
fn chunked_drafter_prefill_leaves_the_same_drafts_as_catching_up_in_the_draft_step() {
    use verify_pd::spec::DraftQuery;
    let (_d, target) = tiny(Preset::TinyLlama3.config(), 1);
    let (dd, _) = tiny(Preset::TinyLlama3.config(), 3);
    let context: Vec<u32> = (0..45).map(|i| 20 + (i * 13) % 200).collect();
    let sampling = SamplingParams::greedy();
    let query = DraftQuery { seq: 9, context: &context, len: 4, sampling: &sampling };
    let mut drafts = Vec::new();
    for chunks in [None, Some(7), Some(100)] {
        let mut d = cpu_drafter(&DraftSpec::Model(dd.path().to_path_buf()), &target, 64, 4).expect("drafter");
        d.begin(9).expect("begin");
        if let Some(chunk) = chunks {
            let mut taken = 0;
            loop {
                let n = d.prefill(9, &context, chunk).expect("prefill");
                assert!(n <= chunk);
                taken += n;
                if n < chunk {
                    break;
                }
            }
            // Everything but the last token, whose logits the first draft step needs.
            assert_eq!(taken, context.len() - 1, "chunk {chunk}");
            assert_eq!(d.prefill(9, &context, chunk).expect("again"), 0);
        }
        let p = d.propose(&[query]).expect("propose");
        drafts.push(p[0].tree.tokens.clone());
        // The drafter times each forward for the controller: the first one catches the cache
        // up (the whole prompt when nothing was prefilled), the rest run one token.
        let steps = d.last_steps();
        assert_eq!(steps.len(), 4, "chunk {chunks:?}");
        let first_tokens = if chunks.is_none() { context.len() } else { 1 };
        assert_eq!((steps[0].seqs, steps[0].tokens), (1, first_tokens));
        assert_eq!(steps[0].is_steady(), chunks.is_some(), "a catch-up prefill is not a draft step");
        assert!(steps[1..].iter().all(|s| s.seqs == 1 && s.tokens == 1 && s.is_steady() && s.secs > 0.0));
    }
    assert_eq!(drafts[0].len(), 4);
    assert!(drafts.iter().all(|t| *t == drafts[0]), "{drafts:?}");
    // A drafter without per-sequence state takes nothing.
    let mut ngram = cpu_drafter(&DraftSpec::Ngram(2), &target, 64, 4).expect("ngram");
    ngram.begin(1).expect("begin");
    assert_eq!(ngram.prefill(1, &context, 8).expect("ngram prefill"), 0);
    ngram.propose(&[DraftQuery { seq: 1, ..query }]).expect("ngram propose");
    assert!(ngram.last_steps().is_empty(), "n-gram lookup runs no forwards");
}

#[test]
fn self_drafting_accepts_everything() {
    let (d, target) = tiny(Preset::TinyLlama3.config(), 1);
    let mut se = spec_engine(&target, &DraftSpec::Model(d.path().to_path_buf()), SpecOptions { num_draft: 4, tree: None }, 64);
    let out = se.generate(&greedy(prompt(), 31)).expect("spec");
    let st = out.spec.expect("stats");
    assert_eq!(st.accepted, st.drafted, "a model drafting for itself must always be accepted");
    // 1 token from prefill, then 6 steps of 5 tokens.
    assert_eq!(st.steps, 6);
}

#[test]
fn batched_verification_with_different_draft_lengths_matches_single_runs() {
    let (_d, target) = tiny(Preset::TinyLlama3.config(), 1);
    let (dd, _) = tiny(Preset::TinyLlama3.config(), 3);
    // Different output budgets cap L differently per row inside every batched step.
    let reqs: Vec<GenerateRequest> = [(3usize, 5usize), (40, 1), (17, 9)]
        .iter()
        .map(|&(n, shift)| greedy(prompt().into_iter().map(|t| t + shift as u32).collect(), n))
        .collect();
    for d in [DraftSpec::LayerSkip(1), DraftSpec::Model(dd.path().to_path_buf()), DraftSpec::Ngram(1)] {
        let mut se = spec_engine(&target, &d, SpecOptions { num_draft: 8, tree: None }, 96);
        let batch = se.generate_batch(&reqs).expect("batch");
        for (r, b) in reqs.iter().zip(&batch) {
            let plain = engine(&target, 64).generate(r).expect("plain").token_ids;
            assert_eq!(b.token_ids, plain, "{d:?}");
        }
        assert_eq!(se.target().blocks().num_used(), 0);
    }
}

#[test]
fn generation_stops_at_the_context_limit_and_a_shorter_draft_context_is_handled() {
    let cfg = LlamaConfig { max_position_embeddings: 48, ..Preset::TinyLlama3.config() };
    let (_d, target) = tiny(cfg.clone(), 1);
    let (dd, _) = tiny(LlamaConfig { max_position_embeddings: 30, ..cfg }, 1);
    let p = prompt(); // 19 tokens
    let plain = engine(&target, 64).generate(&greedy(p.clone(), 100)).expect("plain");
    assert_eq!(plain.finish_reason, FinishReason::Length);
    assert_eq!(p.len() + plain.token_ids.len(), 48);
    for d in [DraftSpec::Model(dd.path().to_path_buf()), DraftSpec::LayerSkip(1), DraftSpec::Ngram(3)] {
        let mut se = spec_engine(&target, &d, SpecOptions { num_draft: 8, tree: None }, 64);
        let out = se.generate(&greedy(p.clone(), 100)).expect("spec");
        assert_eq!(out.finish_reason, FinishReason::Length, "{d:?}");
        assert_eq!(out.token_ids, plain.token_ids, "{d:?}");
    }
}

#[test]
fn bad_speculative_settings_are_errors() {
    let (_d, target) = tiny(Preset::TinyLlama3.config(), 1);
    let other = LlamaConfig { vocab_size: 600, ..Preset::TinyLlama3.config() };
    let (od, _) = tiny(other, 1);
    let e = cpu_drafter(&DraftSpec::Model(od.path().to_path_buf()), &target, 8, 4).err().expect("vocab mismatch");
    assert!(e.to_string().contains("vocabulary"), "{e}");
    assert!(cpu_drafter(&DraftSpec::LayerSkip(2), &target, 8, 4).is_err(), "K must be below the depth");
    let d = cpu_drafter(&DraftSpec::Ngram(2), &target, 8, 4).expect("ngram");
    assert!(SpecEngine::new(engine(&target, 8), d, SpecOptions { num_draft: 0, tree: None }).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    /// Random accept/reject sequences: after every verify-and-truncate step the cache must
    /// give the logits a from-scratch pass over the committed tokens gives.
    #[test]
    fn rollback_leaves_the_cache_as_if_recomputed(steps in proptest::collection::vec((0usize..6, 0usize..6, any::<u32>()), 1..8)) {
        let (_d, m) = tiny(Preset::TinyLlama3.config(), 4);
        let mut be = CpuBackend::new(m.config.clone(), Arc::clone(&m.weights), 32, 4).expect("backend");
        let mut blocks = BlockManager::new(32, 4).expect("blocks");
        blocks.add_sequence(0).expect("seq");
        let mut committed: Vec<u32> = vec![5, 6, 7];
        blocks.append(0, 2).expect("append");
        let table = |b: &BlockManager| b.block_table(0).expect("table").to_vec();
        be.forward(&StepPlan { seqs: vec![SeqStep { tokens: vec![5, 6], start_pos: 0, block_table: table(&blocks), tree_parents: None, logits: LogitsWanted::None }] }).expect("prefill");
        for (l, k, salt) in steps {
            let k = k.min(l);
            let cached = committed.len() - 1;
            let drafts: Vec<u32> = (0..l).map(|i| (salt.wrapping_add(i as u32 * 97)) % 512).collect();
            let mut tokens = vec![*committed.last().unwrap()];
            tokens.extend(&drafts);
            blocks.append(0, tokens.len()).expect("append");
            be.forward(&StepPlan { seqs: vec![SeqStep { tokens, start_pos: cached, block_table: table(&blocks), tree_parents: None, logits: LogitsWanted::All }] }).expect("verify");
            blocks.truncate(0, cached + 1 + k).expect("truncate");
            committed.extend(&drafts[..k]);
            committed.push(salt % 512);
            blocks.check_invariants().expect("invariants");
        }
        // Feed the newest token on the rolled-back cache, and compare with a fresh pass.
        let cached = committed.len() - 1;
        blocks.append(0, 1).expect("append");
        let got = be.forward(&StepPlan { seqs: vec![SeqStep { tokens: vec![*committed.last().unwrap()], start_pos: cached, block_table: table(&blocks), tree_parents: None, logits: LogitsWanted::Last }] }).expect("step");
        let mut fresh = CpuBackend::new(m.config.clone(), Arc::clone(&m.weights), 32, 4).expect("backend");
        let want = fresh.forward(&StepPlan { seqs: vec![SeqStep { tokens: committed.clone(), start_pos: 0, block_table: (0..32).collect(), tree_parents: None, logits: LogitsWanted::Last }] }).expect("fresh");
        let err = common::max_rel_err(got.last_row(0).unwrap(), want.last_row(0).unwrap());
        prop_assert!(err < 1e-4, "relative error {}", err);
    }
}
