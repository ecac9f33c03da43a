//! The speculative generation loop: draft, verify every sequence's draft in one batched
//! target step, accept by exact rejection sampling, roll back the caches.
//!
//! Per sequence, the target cache holds every committed token but the newest. A verify step
//! feeds `[newest, d1..dn]` (a chain, or a tree with an ancestor-only mask), gets `n + 1`
//! logit rows, accepts a path of k drafts plus one sampled token, moves the accepted tree
//! nodes' K/V into consecutive slots, and truncates the cache to `cached + 1 + k`, so no
//! rejected K/V survives in any row's tail whatever the other rows' draft lengths.
use std::time::Instant;

use vpd_sampling::{processed_probs, verify_tree, verify_tree_greedy_ids, Sampler, TreeOutcome};

use super::drafter::{DraftQuery, Drafter, Proposal};
use super::stats::{SpecStats, TraceWriter};
use super::TreeShape;
use crate::backend::{forward_picks, Backend, LogitsWanted, Pick, Picked, RowDraw, SeqStep, StepPlan, TARGET_STREAM};
use crate::engine::generate::stop_reason;
use crate::engine::{Engine, FinishReason, GenerateOutput, GenerateRequest, Timings};
use crate::error::{EngineError, Result};

/// Seed offset of the drafter's sampler, so drafting and verification draw independent
/// streams from one request seed.
const DRAFT_STREAM: u64 = 0x9E37_79B9_7F4A_7C15;

#[derive(Debug, Clone, Copy)]
pub struct SpecOptions {
    /// Chain length L (ignored for trees, whose depth is the tree shape's).
    pub num_draft: usize,
    pub tree: Option<TreeShape>,
}

/// A target [`Engine`] plus a [`Drafter`].
pub struct SpecEngine<B: Backend> {
    target: Engine<B>,
    drafter: Box<dyn Drafter>,
    opts: SpecOptions,
    trace: Option<TraceWriter>,
    next_request: u64,
}

struct Active {
    seq: u64,
    request: u64,
    verify: Sampler,
    draft: Sampler,
    /// Prompt and output so far.
    context: Vec<u32>,
    prompt_len: usize,
    /// Tokens in the target cache (all of `context` but the newest).
    cached: usize,
    finish: Option<FinishReason>,
    stats: SpecStats,
    started: Instant,
    first_token_at: Option<Instant>,
}

impl Active {
    fn out_len(&self) -> usize {
        self.context.len() - self.prompt_len
    }
}

impl<B: Backend> SpecEngine<B> {
    /// # Errors
    /// `num_draft` outside `1..=MAX_DRAFT_LEN`.
    pub fn new(target: Engine<B>, drafter: Box<dyn Drafter>, opts: SpecOptions) -> Result<Self> {
        super::check_draft_len(opts.num_draft)?;
        Ok(Self { target, drafter, opts, trace: None, next_request: 0 })
    }

    /// Writes one JSON line per verify step to `trace`.
    pub fn set_trace(&mut self, trace: TraceWriter) {
        self.trace = Some(trace);
    }

    pub fn target(&self) -> &Engine<B> {
        &self.target
    }

    pub fn drafter_label(&self) -> String {
        self.drafter.describe()
    }

    /// # Errors
    /// See [`SpecEngine::generate_batch`].
    pub fn generate(&mut self, req: &GenerateRequest) -> Result<GenerateOutput> {
        Ok(self.generate_batch(std::slice::from_ref(req))?.remove(0))
    }

    /// Generates for several requests, verifying their drafts together. Caches are released
    /// on every path.
    ///
    /// # Errors
    /// An invalid request (before any work), cache exhaustion, or a backend failure.
    pub fn generate_batch(&mut self, reqs: &[GenerateRequest]) -> Result<Vec<GenerateOutput>> {
        let cfg = self.target.backend().config();
        for r in reqs {
            r.validate(cfg.vocab_size, cfg.max_position_embeddings)?;
        }
        let mut active = Vec::with_capacity(reqs.len());
        let result = self.run(reqs, &mut active);
        for a in &active {
            let _ = self.target.blocks_mut().free(a.seq);
            self.drafter.end(a.seq);
        }
        if let Some(t) = &mut self.trace {
            t.flush()?;
        }
        result?;
        Ok(active
            .into_iter()
            .zip(reqs)
            .map(|(a, r)| GenerateOutput {
                prompt_ids: r.prompt_ids.clone(),
                timings: Timings::from_marks(a.started, a.first_token_at, a.out_len()),
                token_ids: a.context[a.prompt_len..].to_vec(),
                finish_reason: a.finish.unwrap_or(FinishReason::Length),
                spec: Some(a.stats),
            })
            .collect())
    }

    fn run(&mut self, reqs: &[GenerateRequest], active: &mut Vec<Active>) -> Result<()> {
        for r in reqs {
            let seq = self.target.new_sequence()?;
            let request = self.next_request;
            self.next_request += 1;
            active.push(Active {
                seq,
                request,
                verify: Sampler::new(r.sampling.seed),
                draft: Sampler::new(r.sampling.seed ^ DRAFT_STREAM),
                context: r.prompt_ids.clone(),
                prompt_len: r.prompt_ids.len(),
                cached: 0,
                finish: (r.max_new_tokens == 0).then_some(FinishReason::Length),
                stats: SpecStats::default(),
                started: Instant::now(),
                first_token_at: None,
            });
            self.drafter.begin(seq)?;
        }
        for (a, r) in active.iter_mut().zip(reqs) {
            if a.finish.is_some() {
                continue;
            }
            a.started = Instant::now();
            let draw = RowDraw { sampling: r.sampling, counter: r.prompt_ids.len() as u64, stream: TARGET_STREAM };
            let tok = self.target.prefill(a.seq, &r.prompt_ids, draw)?;
            a.cached = r.prompt_ids.len();
            a.first_token_at = Some(Instant::now());
            a.context.push(tok);
            a.finish = stop_reason(self.target.backend().config(), r, a.out_len(), tok);
        }
        loop {
            let live: Vec<usize> = (0..active.len()).filter(|&i| active[i].finish.is_none()).collect();
            if live.is_empty() {
                return Ok(());
            }
            let proposals = self.propose(reqs, active, &live)?;
            self.verify(reqs, active, &live, &proposals)?;
        }
    }

    /// How many tokens sequence `a` may still draft: never more than it may still emit
    /// minus the one verification always adds, nor past the target's context.
    fn draft_budget(&self, a: &Active, r: &GenerateRequest, want: usize) -> usize {
        let ctx_room = self.target.backend().config().max_position_embeddings.saturating_sub(a.context.len());
        let out_room = r.max_new_tokens.saturating_sub(a.out_len()).saturating_sub(1);
        want.min(ctx_room).min(out_room)
    }

    fn propose(&mut self, reqs: &[GenerateRequest], active: &mut [Active], live: &[usize]) -> Result<Vec<Proposal>> {
        if let Some(shape) = self.opts.tree {
            let mut out = Vec::with_capacity(live.len());
            for &i in live {
                let depth = self.draft_budget(&active[i], &reqs[i], shape.depth);
                if depth == 0 {
                    out.push(Proposal::empty());
                    continue;
                }
                let a = &mut active[i];
                let q = DraftQuery { seq: a.seq, context: &a.context, len: depth, sampling: &reqs[i].sampling };
                out.push(self.drafter.propose_tree(&q, &TreeShape { depth, ..shape }, &mut a.draft)?);
            }
            return Ok(out);
        }
        let lens: Vec<usize> = live.iter().map(|&i| self.draft_budget(&active[i], &reqs[i], self.opts.num_draft)).collect();
        let queries: Vec<DraftQuery<'_>> = live
            .iter()
            .zip(&lens)
            .map(|(&i, &len)| DraftQuery { seq: active[i].seq, context: &active[i].context, len, sampling: &reqs[i].sampling })
            .collect();
        self.drafter.propose(&queries)
    }

    fn verify(&mut self, reqs: &[GenerateRequest], active: &mut [Active], live: &[usize], proposals: &[Proposal]) -> Result<()> {
        let mut seqs = Vec::with_capacity(live.len());
        for (&i, p) in live.iter().zip(proposals) {
            let a = &active[i];
            let newest = *a.context.last().ok_or_else(|| EngineError::Backend("empty context".into()))?;
            let mut tokens = Vec::with_capacity(p.tree.len() + 1);
            tokens.push(newest);
            tokens.extend_from_slice(&p.tree.tokens);
            // Node i of the tree is new token i + 1; the tree's roots hang off the newest token.
            let tree_parents = (!p.is_chain()).then(|| std::iter::once(-1).chain(p.tree.parents.iter().map(|&q| if q < 0 { 0 } else { q + 1 })).collect());
            self.target.append(a.seq, tokens.len())?;
            let block_table = self.target.blocks().block_table(a.seq).map(<[u32]>::to_vec).unwrap_or_default();
            seqs.push(SeqStep { tokens, start_pos: a.cached, block_table, tree_parents, logits: LogitsWanted::All });
        }
        // Chains are verified where the logits are (exact chain speculative sampling, keyed by
        // the request's seed and counted by position); a tree's rows come back as argmax rows
        // (greedy) or whole logits rows for host-side multi-draft verification.
        let plan = StepPlan { seqs };
        let picks: Vec<Pick<'_>> = live
            .iter()
            .zip(proposals)
            .map(|(&i, p)| {
                let draw = RowDraw { sampling: reqs[i].sampling, counter: active[i].context.len() as u64, stream: TARGET_STREAM };
                match () {
                    _ if p.is_chain() => Pick::Chain { drafts: &p.tree.tokens, q: p.chain_q(), draw },
                    _ if reqs[i].sampling.is_greedy() => Pick::Draw { draw, keep: false },
                    _ => Pick::Skip,
                }
            })
            .collect();
        let want_logits = live.iter().zip(proposals).any(|(&i, p)| !p.is_chain() && !reqs[i].sampling.is_greedy());
        let layers = self.target.backend().config().num_hidden_layers;
        let (picked, logits) = forward_picks(self.target.backend_mut(), &plan, layers, &picks, want_logits)?;
        let cfg = self.target.backend().config().clone();
        for (s, (&i, p)) in live.iter().zip(proposals).enumerate() {
            let (a, r) = (&mut active[i], &reqs[i]);
            let outcome: TreeOutcome = match &picked[s] {
                Picked::Chain { accepted, next } => Ok(TreeOutcome { path: (0..*accepted).collect(), next_token: *next }),
                Picked::Drawn { tokens, .. } => verify_tree_greedy_ids(&p.tree, tokens),
                Picked::Skip => {
                    let rows = logits.as_ref().ok_or_else(|| EngineError::Backend("a sampled tree got no logits".into()))?;
                    let probs: Vec<Vec<f32>> = rows.seq_rows(s).map(|l| processed_probs(l, &r.sampling)).collect();
                    let p_rows: Vec<&[f32]> = probs.iter().map(Vec::as_slice).collect();
                    let q = p.host_q()?;
                    let q_rows: Vec<Option<&[f32]>> = q.iter().map(|q| q.as_deref()).collect();
                    verify_tree(&p.tree, &p_rows, &q_rows, p.mode, &mut a.verify)
                }
            }
            .map_err(|e| EngineError::Backend(format!("verification: {e}")))?;
            let k = outcome.path.len();
            // Keep only the accepted path's K/V, in consecutive slots after the newest token.
            if !p.is_chain() && k > 0 {
                let moves: Vec<(usize, usize)> = outcome
                    .path
                    .iter()
                    .enumerate()
                    .map(|(j, &node)| (a.cached + 1 + node, a.cached + 1 + j))
                    .filter(|(from, to)| from != to)
                    .collect();
                let table = self.target.blocks().block_table(a.seq).map(<[u32]>::to_vec).unwrap_or_default();
                self.target.backend_mut().move_slots(&table, &moves)?;
            }
            a.cached += 1 + k;
            self.target.blocks_mut().truncate(a.seq, a.cached)?;
            let mut depth_counts = vec![0u64; p.tree.max_depth()];
            for node in 0..p.tree.len() {
                depth_counts[p.tree.depth(node) - 1] += 1;
            }
            a.stats.record(&depth_counts, k);
            if let Some(t) = &mut self.trace {
                t.record(a.request, a.stats.steps - 1, p.tree.max_depth(), k)?;
            }
            for tok in outcome.emitted(&p.tree) {
                a.context.push(tok);
                a.finish = stop_reason(&cfg, r, a.out_len(), tok);
                if a.finish.is_some() {
                    break;
                }
            }
            self.drafter.rollback(a.seq, a.context.len())?;
        }
        Ok(())
    }
}
