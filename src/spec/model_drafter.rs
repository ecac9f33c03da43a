//! Drafting with a model: a separate small model (Llama-3.2-1B for Llama-3-8B), or the
//! target's own first K layers with its final norm and LM head (layer-skip
//! self-speculation, as in LayerSkip, Elhoushi et al. 2024, and Draft & Verify, Zhang et al.
//! 2023), which shares the target's weight memory and keeps its own K-layer cache.
//!
//! The draft cache holds a prefix of the committed context. A proposal first feeds the
//! committed tokens the cache lacks (the newest token, plus the bonus token when the whole
//! previous draft was accepted), then drafts autoregressively. Rollback truncates the cache
//! to at most `committed − 1` tokens, the part the target has confirmed.
use std::collections::HashMap;

use vpd_kv::BlockManager;
use vpd_sampling::{processed_probs, ChildSampling, Sampler, SamplingParams, TokenTree};

use super::drafter::{DraftQuery, DraftStep, Drafter, Proposal};
use super::TreeShape;
use crate::backend::{forward_picks, Backend, LogitsWanted, Pick, Picked, ProbRow, RowDraw, SeqStep, StepPlan, DRAFT_STREAM};
use crate::error::{EngineError, Result};

pub struct ModelDrafter<B: Backend> {
    label: String,
    backend: B,
    blocks: BlockManager,
    /// Layers to run (all of them for a separate model; K for layer-skip).
    layers: usize,
    /// Tokens of each sequence in the draft cache.
    cached: HashMap<u64, usize>,
    /// The forwards of the last `propose`, timed for the controller.
    steps: Vec<DraftStep>,
}

impl<B: Backend> ModelDrafter<B> {
    /// # Errors
    /// `layers` is 0 or exceeds the model's depth, or the cache geometry is unusable.
    pub fn new(label: String, backend: B, layers: usize) -> Result<Self> {
        let depth = backend.config().num_hidden_layers;
        if layers == 0 || layers > depth {
            return Err(EngineError::InvalidRequest { field: "draft", detail: format!("{label}: K = {layers} is outside 1..={depth} layers") });
        }
        let (num_blocks, block_size) = backend.kv_geometry();
        Ok(Self { label, blocks: BlockManager::new(num_blocks, block_size)?, backend, layers, cached: HashMap::new(), steps: Vec::new() })
    }

    fn context_limit(&self) -> usize {
        self.backend.config().max_position_embeddings
    }

    fn step(&self, seq: u64, tokens: Vec<u32>, start_pos: usize, tree_parents: Option<Vec<i32>>, logits: LogitsWanted) -> SeqStep {
        let block_table = self.blocks.block_table(seq).map(<[u32]>::to_vec).unwrap_or_default();
        SeqStep { tokens, start_pos, block_table, tree_parents, logits }
    }

    fn append(&mut self, seq: u64, n: usize) -> Result<()> {
        let copies = self.blocks.append(seq, n)?;
        if !copies.is_empty() {
            self.backend.copy_blocks(&copies.iter().map(|c| (c.src, c.dst)).collect::<Vec<_>>())?;
        }
        Ok(())
    }

    fn cached(&self, seq: u64) -> Result<usize> {
        self.cached.get(&seq).copied().ok_or(EngineError::Kv(vpd_kv::KvError::UnknownSequence(seq)))
    }
}

/// `k` children of a node: the top-k of the draft logits when greedy (deterministic), else
/// `k` draws without replacement from `q` (sequential draws with renormalisation).
fn draw_children(row: &[f32], k: usize, sampling: &SamplingParams, sampler: &mut Sampler) -> (Vec<u32>, Option<Vec<f32>>) {
    if sampling.is_greedy() {
        let mut idx: Vec<u32> = (0..row.len() as u32).collect();
        let k = k.min(idx.len());
        idx.select_nth_unstable_by(k.saturating_sub(1), |&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
        idx.truncate(k);
        idx.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
        return (idx, None);
    }
    let q = processed_probs(row, sampling);
    let mut rest = q.clone();
    let mut out = Vec::with_capacity(k);
    for _ in 0..k {
        if rest.iter().all(|&x| x <= 0.0) {
            break;
        }
        let t = sampler.sample_probs(&rest);
        rest[t as usize] = 0.0;
        out.push(t);
    }
    (out, Some(q))
}

impl<B: Backend> Drafter for ModelDrafter<B> {
    fn describe(&self) -> String {
        self.label.clone()
    }

    fn begin(&mut self, seq: u64) -> Result<()> {
        self.blocks.add_sequence(seq)?;
        self.cached.insert(seq, 0);
        Ok(())
    }

    fn cached_len(&self, seq: u64) -> Option<usize> {
        self.cached.get(&seq).copied()
    }

    fn prefill(&mut self, seq: u64, context: &[u32], budget: usize) -> Result<usize> {
        let cached = self.cached(seq)?;
        let end = context.len().saturating_sub(1).min(self.context_limit()).min(cached.saturating_add(budget));
        if end <= cached {
            return Ok(0);
        }
        let tokens = context[cached..end].to_vec();
        self.append(seq, tokens.len())?;
        let plan = StepPlan { seqs: vec![self.step(seq, tokens, cached, None, LogitsWanted::None)] };
        self.backend.forward_layers(&plan, self.layers)?;
        self.cached.insert(seq, end);
        Ok(end - cached)
    }

    fn propose(&mut self, queries: &[DraftQuery<'_>]) -> Result<Vec<Proposal>> {
        let limit = self.context_limit();
        // Per query: tokens still to draft (the draft model's own context may be shorter).
        let mut want = Vec::with_capacity(queries.len());
        let mut fed = Vec::with_capacity(queries.len());
        for q in queries {
            let cached = self.cached(q.seq)?;
            let room = limit.saturating_sub(q.context.len());
            want.push(if cached < q.context.len() { q.len.min(room) } else { 0 });
            fed.push(cached);
        }
        let mut drafts: Vec<Vec<u32>> = vec![Vec::new(); queries.len()];
        let mut qs: Vec<Vec<Option<ProbRow>>> = vec![Vec::new(); queries.len()];
        let steps = want.iter().copied().max().unwrap_or(0);
        self.steps.clear();
        for step in 0..steps {
            let t0 = std::time::Instant::now();
            let mut seqs = Vec::new();
            let mut who = Vec::new();
            for (i, q) in queries.iter().enumerate() {
                if want[i] <= step {
                    continue;
                }
                // First step: catch up on every committed token the cache lacks.
                let tokens = if step == 0 { q.context[fed[i]..].to_vec() } else { vec![*drafts[i].last().unwrap_or(&0)] };
                self.append(q.seq, tokens.len())?;
                seqs.push(self.step(q.seq, tokens.clone(), fed[i], None, LogitsWanted::Last));
                fed[i] += tokens.len();
                who.push(i);
            }
            // Each draft is drawn where the logits are, keyed by the request's seed and counted
            // by the position it drafts (the drafter's own Philox stream); a sampled request's
            // distribution q stays there too, for the target to verify against. All greedy:
            // only the argmax rows are computed.
            let picks: Vec<Pick<'_>> = who
                .iter()
                .map(|&i| {
                    let q = &queries[i];
                    let draw = RowDraw { sampling: *q.sampling, counter: (q.context.len() + step) as u64, stream: DRAFT_STREAM };
                    Pick::Draw { draw, keep: !q.sampling.is_greedy() }
                })
                .collect();
            let plan = StepPlan { seqs };
            let tokens = plan.num_tokens();
            let (picked, _) = forward_picks(&mut self.backend, &plan, self.layers, &picks, false)?;
            // The drafted tokens are on the host now: the step is over on the device too.
            self.steps.push(DraftStep { seqs: who.len(), tokens, secs: t0.elapsed().as_secs_f64() });
            for (p, &i) in picked.into_iter().zip(&who) {
                let Picked::Drawn { tokens, probs } = p else {
                    return Err(EngineError::Backend("draft step returned no draw".into()));
                };
                let tok = *tokens.last().ok_or_else(|| EngineError::Backend("draft step returned no logits".into()))?;
                drafts[i].push(tok);
                qs[i].push(probs.and_then(|mut rows| rows.pop()));
            }
        }
        for (i, q) in queries.iter().enumerate() {
            self.cached.insert(q.seq, fed[i]);
        }
        Ok(drafts
            .into_iter()
            .zip(qs)
            .map(|(d, mut q)| {
                if d.is_empty() {
                    return Proposal::empty();
                }
                q.push(None); // the last draft token is a leaf
                Proposal { tree: TokenTree::chain(&d), q, mode: ChildSampling::Iid }
            })
            .collect())
    }

    fn last_steps(&self) -> &[DraftStep] {
        &self.steps
    }

    fn propose_tree(&mut self, query: &DraftQuery<'_>, shape: &TreeShape, sampler: &mut Sampler) -> Result<Proposal> {
        let seq = query.seq;
        let cached = self.cached(seq)?;
        let depth_room = self.context_limit().saturating_sub(query.context.len());
        let max_depth = shape.depth.min(depth_room);
        if cached >= query.context.len() || max_depth == 0 {
            return Ok(Proposal::empty());
        }
        // Catch up; the last row is the root's draft distribution.
        let catch_up = query.context[cached..].to_vec();
        self.append(seq, catch_up.len())?;
        let plan = StepPlan { seqs: vec![self.step(seq, catch_up.clone(), cached, None, LogitsWanted::Last)] };
        let logits = self.backend.forward_layers(&plan, self.layers)?;
        let base = cached + catch_up.len();
        self.cached.insert(seq, base);
        let mut row_of: Vec<Vec<f32>> = vec![logits.last_row(0).map(<[f32]>::to_vec).unwrap_or_default()];
        let mut tree = TokenTree { tokens: Vec::new(), parents: Vec::new() };
        let mut q_rows: Vec<Option<Vec<f32>>> = vec![None];
        // Path log-probabilities decide which nodes grow next (EAGLE-2's confidence rule).
        let mut path_logp: Vec<f32> = Vec::new();
        let mut frontier: Vec<Option<usize>> = vec![None];
        for _ in 0..max_depth {
            let mut new_nodes = Vec::new();
            for &f in &frontier {
                let left = shape.budget - tree.len();
                if left == 0 {
                    break;
                }
                let row_idx = f.map_or(0, |n| n + 1);
                let (children, q) = draw_children(&row_of[row_idx], shape.width.min(left), query.sampling, sampler);
                let probs = q.clone().unwrap_or_else(|| processed_probs(&row_of[row_idx], &SamplingParams { temperature: 1.0, ..*query.sampling }));
                q_rows[row_idx] = q;
                let parent_lp = f.map_or(0.0, |n| path_logp[n]);
                for c in children {
                    tree.tokens.push(c);
                    tree.parents.push(f.map_or(-1, |n| n as i32));
                    path_logp.push(parent_lp + probs[c as usize].max(1e-30).ln());
                    q_rows.push(None);
                    new_nodes.push(tree.len() - 1);
                }
            }
            if new_nodes.is_empty() || tree.len() >= shape.budget {
                break;
            }
            // Grow the `width` most likely new nodes at the next level.
            new_nodes.sort_by(|&a, &b| path_logp[b].total_cmp(&path_logp[a]));
            new_nodes.truncate(shape.width);
            new_nodes.sort_unstable();
            // Draft distributions after every node: run the whole tree (ancestor mask) in the
            // slots after the committed prefix; they are scratch space, dropped below.
            let have = self.blocks.seq_len(seq).unwrap_or(base);
            if base + tree.len() > have {
                self.append(seq, base + tree.len() - have)?;
            }
            let step = self.step(seq, tree.tokens.clone(), base, Some(tree.parents.clone()), LogitsWanted::All);
            let logits = self.backend.forward_layers(&StepPlan { seqs: vec![step] }, self.layers)?;
            row_of.truncate(1);
            row_of.extend(logits.seq_rows(0).map(<[f32]>::to_vec));
            frontier = new_nodes.into_iter().map(Some).collect();
        }
        self.blocks.truncate(seq, base)?;
        let q_rows = q_rows.into_iter().map(|q| q.map(ProbRow::host)).collect();
        Ok(Proposal { tree, q: q_rows, mode: if query.sampling.is_greedy() { ChildSampling::Iid } else { ChildSampling::WithoutReplacement } })
    }

    fn rollback(&mut self, seq: u64, committed: usize) -> Result<()> {
        let cached = self.cached(seq)?;
        let keep = cached.min(committed.saturating_sub(1));
        self.blocks.truncate(seq, keep)?;
        self.cached.insert(seq, keep);
        Ok(())
    }

    fn end(&mut self, seq: u64) {
        self.cached.remove(&seq);
        let _ = self.blocks.free(seq);
    }
}
