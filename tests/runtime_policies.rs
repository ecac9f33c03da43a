//! The serving runtime on a random tiny model: every policy completes every request with the
//! same greedy tokens as plain `Engine::generate`, and under KV overload nothing is lost.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use verify_pd::backend::cpu::CpuBackend;
use verify_pd::backend::{Argmax, Backend, Logits, Pick, Picked, StepPlan};
use verify_pd::engine::{Engine, FinishReason, GenerateRequest};
use verify_pd::make_model::{write_random_checkpoint, Preset, WeightDType};
use verify_pd::model::Model;
use verify_pd::runtime::{run_workload, Policy, RunOutput, RuntimeConfig};
use verify_pd::spec::factory::cpu_drafter;
use verify_pd::spec::{DraftSpec, Drafter};
use vpd_sampling::SamplingParams;
use vpd_sched::StarvationBounds;

fn tiny(seed: u64) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_random_checkpoint(
        &Preset::TinyLlama3.config(),
        WeightDType::F32,
        seed,
        dir.path(),
        None,
        &mut |_, _| {},
    )
    .expect("write");
    let m = Model::load(dir.path()).expect("load");
    (dir, m)
}

fn engine(m: &Model, blocks: usize) -> Engine<CpuBackend> {
    Engine::new(
        CpuBackend::new(m.config.clone(), Arc::clone(&m.weights), blocks, 4).expect("backend"),
    )
    .expect("engine")
}

/// `n` greedy requests with distinct prompts of 5..=17 tokens (some with repeats, so prompt
/// lookup matches) and 6..=14 output tokens.
fn requests(n: usize) -> Vec<GenerateRequest> {
    (0..n)
        .map(|i| {
            let len = 5 + (i * 5) % 13;
            let mut p: Vec<u32> = (0..len)
                .map(|j| (3 + i * 11 + (j * 7) % 23) as u32 % 256)
                .collect();
            p.extend_from_within(1..4);
            GenerateRequest {
                prompt_ids: p,
                max_new_tokens: 6 + (i * 3) % 9,
                sampling: SamplingParams::greedy(),
                ignore_eos: true,
            }
        })
        .collect()
}

fn plain(m: &Model, reqs: &[GenerateRequest]) -> Vec<Vec<u32>> {
    reqs.iter()
        .map(|r| engine(m, 64).generate(r).expect("plain").token_ids)
        .collect()
}

fn run(
    m: &Model,
    policy: Policy,
    draft: &DraftSpec,
    blocks: usize,
    reqs: &[GenerateRequest],
    gap_s: f64,
    prefill_budget: usize,
) -> RunOutput {
    let mut cfg = RuntimeConfig::new(policy, 3);
    cfg.prefill_budget = prefill_budget;
    cfg.max_running = 6;
    run_with(m, &cfg, draft, blocks, reqs, gap_s)
}

fn run_with(
    m: &Model,
    cfg: &RuntimeConfig,
    draft: &DraftSpec,
    blocks: usize,
    reqs: &[GenerateRequest],
    gap_s: f64,
) -> RunOutput {
    let policy = cfg.policy;
    let mut e = engine(m, blocks);
    let mut drafter = cpu_drafter(draft, m, blocks * 2 + 8, 4).expect("drafter");
    let times: Vec<f64> = (0..reqs.len()).map(|i| i as f64 * gap_s).collect();
    let mut done = 0;
    let d = if policy.speculates() {
        Some(&mut *drafter as &mut dyn Drafter)
    } else {
        None
    };
    let out = run_workload(&mut e, d, cfg, reqs.to_vec(), &times, &mut || done += 1).expect("run");
    assert_eq!(done, reqs.len(), "{policy}: on_done once per request");
    assert_eq!(e.blocks().num_used(), 0, "{policy}: blocks leaked");
    e.blocks().check_invariants().expect("invariants");
    assert_eq!(out.outcomes.len(), reqs.len());
    assert_eq!(out.records.len(), reqs.len());
    out
}

#[test]
fn every_policy_completes_every_request_with_plain_greedy_tokens() {
    let (_d, m) = tiny(1);
    let reqs = requests(7);
    let want = plain(&m, &reqs);
    for draft in [DraftSpec::LayerSkip(1), DraftSpec::Ngram(2)] {
        for policy in Policy::ALL {
            // 8-token chunks: several per prompt, mixed with decoding.
            let out = run(&m, policy, &draft, 96, &reqs, 0.002, 8);
            for (i, o) in out.outcomes.iter().enumerate() {
                assert_eq!(
                    o.result,
                    Ok(FinishReason::Length),
                    "{policy} {draft:?} request {i}"
                );
                assert_eq!(o.tokens, want[i], "{policy} {draft:?} request {i}");
                let rec = &out.records[i];
                let streamed: u32 = rec.chunks.iter().map(|c| c.tokens).sum();
                assert_eq!(
                    streamed as usize,
                    want[i].len(),
                    "{policy}: every token streamed once"
                );
                assert!(rec.chunks.windows(2).all(|w| w[0].t_s <= w[1].t_s));
                assert!(rec.chunks[0].t_s >= rec.send_s && rec.end_s.is_some());
            }
            if policy.speculates() {
                assert!(
                    out.metrics.verifies > 0 && out.metrics.accepted <= out.metrics.drafted,
                    "{policy} {draft:?}"
                );
            } else {
                assert_eq!(out.metrics.drafted, 0);
            }
            assert_eq!(out.metrics.preemptions, 0, "{policy}: the cache is large enough");
        }
    }
}

#[test]
fn three_lane_tokens_are_plain_greedy_tokens_with_groups_gathered_or_overlapping() {
    // Gathering (the default) is checked inside the runtime: a second draft batch sent while
    // one is out fails the run. Overlapping groups and riding prefill chunks must give the
    // same tokens too.
    let (_d, m) = tiny(2);
    let reqs = requests(6);
    let want = plain(&m, &reqs);
    for policy in [Policy::ThreeLane, Policy::ThreeLaneAdaptive] {
        // Gathered, overlapping, gathered with prefill chunks riding in verify forwards, and
        // with plain (L = 0) steps beside the drafts.
        for (overlap_groups, prefill_ride, beside) in [(false, 0, false), (true, 0, false), (false, 16, false), (false, 16, true)] {
            let mut cfg = RuntimeConfig::new(policy, 3);
            cfg.prefill_budget = 8;
            cfg.max_running = 6;
            cfg.overlap_groups = overlap_groups;
            cfg.prefill_ride = prefill_ride;
            cfg.plain_beside_drafts = beside;
            // All at once, then staggered: both shapes of arrival.
            for gap_s in [0.0, 0.003] {
                let out = run_with(&m, &cfg, &DraftSpec::LayerSkip(1), 96, &reqs, gap_s);
                for (i, o) in out.outcomes.iter().enumerate() {
                    assert_eq!(o.tokens, want[i], "{policy} overlap {overlap_groups} ride {prefill_ride} beside {beside} gap {gap_s} request {i}");
                }
                if !beside {
                    assert_eq!(out.loop_time.plain_beside_drafts, 0);
                } else if gap_s == 0.0 && policy == Policy::ThreeLane {
                    // Requests arriving together end together: one takes its last token (no
                    // room for a draft) while others draft, beside them. (The controller may
                    // not draft at all on this tiny model, whose forwards cost little.)
                    assert!(out.loop_time.plain_beside_drafts > 0, "{policy}: a plain step beside the drafts ran");
                }
                assert!(out.metrics.verifies > 0, "{policy}: speculation ran");
                if prefill_ride > 0 {
                    // Riding prefill waits for the verify forward of the drafts out.
                    assert_eq!(out.loop_time.prefill_beside_drafts, 0, "{policy} gap {gap_s}");
                }
            }
        }
    }
}

#[test]
fn riding_prefill_never_stops_the_decoding_requests_for_a_forward_of_its_own() {
    // Anti-starvation as eager as it can be set: while the prefill lane was offered a forward of
    // its own at every round's start, each start with a prompt waiting ran one, prefill alone,
    // while the decoding requests waited (one round in six on an H100 at 50 req/s).
    let (_d, m) = tiny(2);
    let reqs = requests(8);
    let want = plain(&m, &reqs);
    for policy in [Policy::ThreeLane, Policy::ThreeLaneAdaptive] {
        let mut cfg = RuntimeConfig::new(policy, 3);
        cfg.prefill_budget = 8;
        cfg.max_running = 8;
        cfg.prefill_ride = 4;
        cfg.starvation = StarvationBounds { prefill_every: 1, prefill_max_wait: Duration::ZERO, verify_every: 4 };
        let out = run_with(&m, &cfg, &DraftSpec::LayerSkip(1), 128, &reqs, 0.002);
        for (i, o) in out.outcomes.iter().enumerate() {
            assert_eq!(o.tokens, want[i], "{policy} request {i}");
        }
        assert!(out.metrics.verifies > 0, "{policy}: speculation ran");
        assert_eq!(out.loop_time.prefill_while_decode_waits, 0, "{policy}");
        assert_eq!(out.loop_time.prefill_beside_drafts, 0, "{policy}");
    }
}

/// What a [`Probe`] and the executors it forks saw.
#[derive(Default)]
struct Counts {
    logits_steps: AtomicUsize,
    argmax_steps: AtomicUsize,
    /// Steps whose rows were picked on the backend (`Backend::forward_pick`).
    pick_steps: AtomicUsize,
    /// Forwards (of either kind) run on forked executors: the prefill lane's.
    fork_forwards: AtomicUsize,
    /// `Backend::confine` calls on forks: `[false, true]`.
    confines: [AtomicUsize; 2],
}

/// A CPU backend that counts which kind of step the runtime asks for, and where it runs.
struct Probe {
    inner: CpuBackend,
    counts: Arc<Counts>,
    is_fork: bool,
}

impl Probe {
    fn new(m: &Model, blocks: usize) -> (Self, Arc<Counts>) {
        let counts = Arc::new(Counts::default());
        let inner = CpuBackend::new(m.config.clone(), Arc::clone(&m.weights), blocks, 4).expect("backend");
        (Self { inner, counts: Arc::clone(&counts), is_fork: false }, counts)
    }

    fn count(&self, kind: &AtomicUsize) {
        kind.fetch_add(1, Ordering::Relaxed);
        if self.is_fork {
            self.counts.fork_forwards.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Backend for Probe {
    fn config(&self) -> &vpd_formats::LlamaConfig {
        self.inner.config()
    }
    fn kv_geometry(&self) -> (usize, usize) {
        self.inner.kv_geometry()
    }
    fn forward_layers(&mut self, plan: &StepPlan, num_layers: usize) -> verify_pd::error::Result<Logits> {
        self.count(&self.counts.logits_steps);
        self.inner.forward_layers(plan, num_layers)
    }
    fn forward_argmax(&mut self, plan: &StepPlan, num_layers: usize) -> verify_pd::error::Result<Argmax> {
        self.count(&self.counts.argmax_steps);
        Ok(Argmax::of(&self.inner.forward_layers(plan, num_layers)?))
    }
    fn forward_pick(&mut self, plan: &StepPlan, num_layers: usize, picks: &[Pick<'_>]) -> verify_pd::error::Result<Vec<Picked>> {
        self.count(&self.counts.pick_steps);
        self.inner.forward_pick(plan, num_layers, picks)
    }
    fn fork_executor(&mut self) -> verify_pd::error::Result<Option<Box<dyn Backend>>> {
        let (inner, counts) = (self.inner.fork(), Arc::clone(&self.counts));
        Ok(Some(Box::new(Probe { inner, counts, is_fork: true })))
    }
    fn confine(&mut self, on: bool) -> verify_pd::error::Result<()> {
        assert!(self.is_fork, "only the prefill lane's executor is confined");
        self.counts.confines[usize::from(on)].fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn copy_blocks(&mut self, pairs: &[(u32, u32)]) -> verify_pd::error::Result<()> {
        self.inner.copy_blocks(pairs)
    }
    fn move_slots(&mut self, block_table: &[u32], moves: &[(usize, usize)]) -> verify_pd::error::Result<()> {
        self.inner.move_slots(block_table, moves)
    }
}

#[test]
fn prefill_lane_thread_keeps_plain_greedy_tokens_and_runs_every_chunk_on_the_fork_confined_beside_decoding() {
    let (_d, m) = tiny(4);
    let reqs = requests(7);
    let want = plain(&m, &reqs);
    for policy in [Policy::ThreeLane, Policy::ThreeLaneAdaptive] {
        let mut cfg = RuntimeConfig::new(policy, 3);
        cfg.prefill_budget = 8; // several chunks per prompt, beside drafting and verifying
        cfg.max_running = 6;
        cfg.prefill_thread = true;
        for gap_s in [0.0, 0.003] {
            let (backend, counts) = Probe::new(&m, 96);
            let mut e = Engine::new(backend).expect("engine");
            let mut drafter = cpu_drafter(&DraftSpec::LayerSkip(1), &m, 200, 4).expect("drafter");
            let times: Vec<f64> = (0..reqs.len()).map(|i| i as f64 * gap_s).collect();
            let out = run_workload(&mut e, Some(&mut *drafter), &cfg, reqs.clone(), &times, &mut || {}).expect("run");
            for (i, o) in out.outcomes.iter().enumerate() {
                assert_eq!(o.result, Ok(FinishReason::Length), "{policy} gap {gap_s} request {i}");
                assert_eq!(o.tokens, want[i], "{policy} gap {gap_s} request {i}");
            }
            let chunks = counts.fork_forwards.load(Ordering::Relaxed) as u64;
            assert!(chunks > 0, "{policy}: the prefill lane ran");
            assert_eq!(chunks, out.lane_steps[2], "{policy}: every prefill step ran on the fork");
            let (whole, confined) = (counts.confines[0].load(Ordering::Relaxed), counts.confines[1].load(Ordering::Relaxed));
            assert_eq!((whole + confined) as u64, chunks, "{policy}: each chunk chose its partition");
            // The first prompt runs alone: the whole device. With every request there at once,
            // the later chunks run beside decoding requests: confined. (Staggered by 3 ms, the
            // tiny model may finish each request before the next arrives.)
            assert!(whole > 0, "{policy} gap {gap_s}: {whole} whole, {confined} confined");
            if gap_s == 0.0 {
                assert!(confined > 0, "{policy} gap {gap_s}: {whole} whole, {confined} confined");
            }
            assert_eq!(e.blocks().num_used(), 0, "{policy}: blocks leaked");
        }
    }
}

#[test]
fn sampled_tokens_do_not_depend_on_where_prefill_runs() {
    // Each request draws from its own seeded samplers, so with a fixed L moving its prefill to
    // another thread (and so changing when everything runs) must not change a single token.
    // (three-lane-adaptive picks L from measured step times, and its sampled tokens follow the
    // draws that L consumes: the same distribution, not the same tokens.)
    let (_d, m) = tiny(5);
    let reqs: Vec<GenerateRequest> = requests(6)
        .into_iter()
        .map(|mut r| {
            r.sampling = SamplingParams { temperature: 0.9, ..r.sampling };
            r
        })
        .collect();
    for policy in [Policy::ThreeLane] {
        let mut cfg = RuntimeConfig::new(policy, 3);
        cfg.prefill_budget = 8;
        cfg.max_running = 6;
        let base = run_with(&m, &cfg, &DraftSpec::LayerSkip(1), 96, &reqs, 0.001);
        cfg.prefill_thread = true;
        let threaded = run_with(&m, &cfg, &DraftSpec::LayerSkip(1), 96, &reqs, 0.001);
        for (i, (a, b)) in base.outcomes.iter().zip(&threaded.outcomes).enumerate() {
            assert_eq!(a.tokens, b.tokens, "{policy} request {i}");
        }
    }
}

#[test]
fn sampled_tokens_do_not_depend_on_the_batch_or_on_how_steps_are_scheduled() {
    // Every draw is keyed by the request's seed and counted by the position it decides, so with
    // a fixed L a request's sampled tokens are the same served alone or beside others, and
    // under single-lane (prefill mixed into verify steps) or three-lane scheduling; a plain
    // policy likewise alone or in a batch. (Plain and speculative runs use their random words
    // differently: the same distribution, not the same tokens.)
    let (_d, m) = tiny(6);
    let reqs: Vec<GenerateRequest> = requests(5)
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            r.sampling = SamplingParams { temperature: 0.9, top_k: 40 * (i % 2), top_p: 0.95, seed: 100 + i as u64 };
            r
        })
        .collect();
    let tokens = |policy: Policy, reqs: &[GenerateRequest]| -> Vec<Vec<u32>> {
        let out = run(&m, policy, &DraftSpec::LayerSkip(1), 96, reqs, 0.001, 8);
        out.outcomes.iter().map(|o| o.tokens.clone()).collect()
    };
    let together = tokens(Policy::ThreeLane, &reqs);
    assert_eq!(tokens(Policy::SingleLane, &reqs), together, "single-lane against three-lane");
    let plain_together = tokens(Policy::NoSpec, &reqs);
    assert_ne!(plain_together, together, "plain and speculative draws should differ somewhere");
    for (i, r) in reqs.iter().enumerate() {
        let one = std::slice::from_ref(r);
        assert_eq!(tokens(Policy::ThreeLane, one)[0], together[i], "three-lane request {i} alone");
        assert_eq!(tokens(Policy::NoSpec, one)[0], plain_together[i], "nospec request {i} alone");
    }
    // And plain generation outside the runtime draws the same tokens as its plain policy.
    let mut e = engine(&m, 96);
    let batch: Vec<Vec<u32>> = e.generate_batch(&reqs).expect("batch").into_iter().map(|o| o.token_ids).collect();
    assert_eq!(batch, plain_together, "Engine::generate_batch against the nospec policy");
}

#[test]
fn overload_preempts_by_recompute_and_loses_nothing() {
    let (_d, m) = tiny(3);
    let mut reqs = requests(10);
    // Needs more blocks than the whole cache: rejected with an explicit error.
    reqs.push(GenerateRequest {
        prompt_ids: vec![7; 40],
        max_new_tokens: 30,
        sampling: SamplingParams::greedy(),
        ignore_eos: true,
    });
    let want = plain(&m, &reqs[..10]);
    for policy in Policy::ALL {
        // 14 blocks of 4 tokens: about two requests fit at once; all arrive together.
        // A budget that admits several prompts in one step, so decoding outgrows the cache.
        let out = run(&m, policy, &DraftSpec::LayerSkip(1), 14, &reqs, 0.0, 64);
        check_overload(policy, &out, &want);
    }
    // With prefill chunks on the prefill lane's thread: a request preempted or aborted while
    // its chunk is out waits for the chunk before its blocks go back.
    for policy in [Policy::ThreeLane, Policy::ThreeLaneAdaptive] {
        let mut cfg = RuntimeConfig::new(policy, 3);
        cfg.prefill_budget = 64;
        cfg.max_running = 6;
        cfg.prefill_thread = true;
        let out = run_with(&m, &cfg, &DraftSpec::LayerSkip(1), 14, &reqs, 0.0);
        check_overload(policy, &out, &want);
    }
}

fn check_overload(policy: Policy, out: &RunOutput, want: &[Vec<u32>]) {
    {
        eprintln!("{policy}: {} preemptions", out.metrics.preemptions);
        assert!(out.metrics.preemptions > 0, "{policy}: overload must preempt");
        for (i, o) in out.outcomes.iter().enumerate().take(10) {
            assert_eq!(o.result, Ok(FinishReason::Length), "{policy} request {i}");
            assert_eq!(
                o.tokens, want[i],
                "{policy} request {i}: recompute keeps greedy tokens"
            );
        }
        let last = &out.outcomes[10];
        let err = last
            .result
            .clone()
            .expect_err("the oversized request is rejected");
        assert!(err.contains("KV blocks"), "{err}");
        assert!(out.records[10].error.is_some());
    }
}

#[test]
fn bad_configurations_are_refused_with_clear_errors() {
    let (_d, m) = tiny(1);
    let mut e = engine(&m, 16);
    let err = run_workload(
        &mut e,
        None,
        &RuntimeConfig::new(Policy::ThreeLane, 0),
        vec![],
        &[],
        &mut || {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("Lmax is 0"), "{err}");
    let err = run_workload(
        &mut e,
        None,
        &RuntimeConfig::new(Policy::SingleLane, 2),
        vec![],
        &[],
        &mut || {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("needs a drafter"), "{err}");
    let mut both = RuntimeConfig::new(Policy::ThreeLane, 2);
    (both.prefill_ride, both.prefill_thread) = (16, true);
    let err = run_workload(&mut e, None, &both, vec![], &[], &mut || {}).unwrap_err().to_string();
    assert!(err.contains("prefill_ride") && err.contains("--prefill-thread false"), "{err}");
    let err = "fastest".parse::<Policy>().unwrap_err().to_string();
    assert!(err.contains("unknown policy"), "{err}");
    for p in Policy::ALL {
        assert_eq!(p.name().parse::<Policy>().unwrap(), p);
    }
}

#[test]
fn greedy_steps_ask_only_for_argmax_rows_and_sampling_steps_pick_on_the_backend() {
    // On the GPU a logits step copies 4·vocab bytes a row to the host, an argmax or pick step
    // a few integers: neither greedy nor sampled work may fall back to whole rows (docs/perf.md,
    // run G) unless a request reports logprobs.
    let (_d, m) = tiny(3);
    for temperature in [0.0f32, 0.8] {
        let reqs: Vec<GenerateRequest> = requests(5)
            .into_iter()
            .map(|mut r| {
                r.sampling = SamplingParams { temperature, ..r.sampling };
                r
            })
            .collect();
        for policy in Policy::ALL {
            let (backend, counts) = Probe::new(&m, 96);
            let mut e = Engine::new(backend).expect("engine");
            let mut drafter = cpu_drafter(&DraftSpec::LayerSkip(1), &m, 200, 4).expect("drafter");
            let cfg = RuntimeConfig::new(policy, 3);
            let d = policy.speculates().then_some(&mut *drafter as &mut dyn Drafter);
            let times = vec![0.0; reqs.len()];
            let out = run_workload(&mut e, d, &cfg, reqs.clone(), &times, &mut || {}).expect("run");
            assert!(out.outcomes.iter().all(|o| o.result.is_ok()), "{policy} T={temperature}");
            let (l, a, p) = (
                counts.logits_steps.load(Ordering::Relaxed),
                counts.argmax_steps.load(Ordering::Relaxed),
                counts.pick_steps.load(Ordering::Relaxed),
            );
            if temperature == 0.0 {
                assert!(l == 0 && a > 0 && p == 0, "{policy} greedy: {l} logits, {a} argmax, {p} pick steps");
            } else {
                assert!(l == 0 && a == 0 && p > 0, "{policy} sampling: {l} logits, {a} argmax, {p} pick steps");
            }
        }
    }
}
