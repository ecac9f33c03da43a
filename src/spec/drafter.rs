//! The proposer side of speculative decoding.
//!
//! A proposal is a token tree ([`TokenTree`]); a chain of L tokens is the one-wide tree.
//! With it come the draft distributions the children were drawn from, which exact
//! rejection sampling needs: `q[0]` for the root's children, `q[i + 1]` for node `i`'s
//! children, `None` for leaves and for deterministic proposals (checked as one-hot drafts).
//! A model drafter on a GPU keeps them there ([`ProbRow`]) for the target to verify against.
use vpd_sampling::{ChildSampling, Sampler, SamplingParams, TokenTree};

use crate::backend::ProbRow;
use crate::error::Result;

/// One sequence asking for a draft.
#[derive(Debug, Clone, Copy)]
pub struct DraftQuery<'a> {
    pub seq: u64,
    /// Every committed token: the prompt and the output so far. The last one is not yet in
    /// any cache.
    pub context: &'a [u32],
    /// Chain length L for a chain proposal (the tree shape is the drafter call's argument).
    pub len: usize,
    pub sampling: &'a SamplingParams,
}

#[derive(Debug, Clone)]
pub struct Proposal {
    pub tree: TokenTree,
    /// `tree.len() + 1` rows, see the module docs.
    pub q: Vec<Option<ProbRow>>,
    /// How siblings were drawn from their parent's `q`.
    pub mode: ChildSampling,
}

impl Proposal {
    /// No draft: the verify step degenerates to one plain decode step.
    pub fn empty() -> Self {
        Self { tree: TokenTree::chain(&[]), q: vec![None], mode: ChildSampling::Iid }
    }

    /// Whether the tree is a single path (verified with a causal mask).
    pub fn is_chain(&self) -> bool {
        self.tree.parents.iter().enumerate().all(|(i, &p)| p == i as i32 - 1)
    }

    /// For a chain: the distribution each draft was drawn from (`q[i]` for draft `i`).
    pub fn chain_q(&self) -> &[Option<ProbRow>] {
        &self.q[..self.tree.len().min(self.q.len())]
    }

    /// The rows in host memory (host-side tree verification): each copied from its device
    /// where it lives there.
    ///
    /// # Errors
    /// A failed device copy.
    pub fn host_q(&self) -> Result<Vec<Option<std::borrow::Cow<'_, [f32]>>>> {
        self.q.iter().map(|q| q.as_ref().map(ProbRow::to_host).transpose()).collect()
    }
}

/// One draft forward of a [`Drafter::propose`] call, as the controller's cost model wants it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DraftStep {
    /// Sequences in the forward.
    pub seqs: usize,
    /// Tokens it ran: one per sequence for a pure draft step; more in a first step that
    /// catches a sequence's cache up (a new prompt, the tokens of L = 0 steps).
    pub tokens: usize,
    /// Wall time, the drafted tokens back on the host.
    pub secs: f64,
}

impl DraftStep {
    /// Whether this is a draft step in the cost model's sense: a steady first step catches up
    /// at most two tokens a sequence (the newest token, and the bonus token after a fully
    /// accepted draft); more is a prefill riding in the step, a one-off cost of a new prompt
    /// or of a resume from L = 0, which charged as a step would make drafting look dearer
    /// the less a request drafts (the divisor is its L).
    pub fn is_steady(&self) -> bool {
        self.seqs > 0 && self.tokens <= 2 * self.seqs
    }
}

/// Proposes drafts for many sequences and keeps any per-sequence state (a draft KV cache)
/// consistent with what the target committed.
pub trait Drafter: Send {
    /// A short label for logs and statistics (`layer-skip:4`).
    fn describe(&self) -> String;

    /// Registers a new sequence.
    ///
    /// # Errors
    /// Duplicate sequence, or no room for its state.
    fn begin(&mut self, seq: u64) -> Result<()>;

    /// Tokens of the sequence in the drafter's cache; `None` for a drafter that keeps no
    /// per-sequence state (or an unknown sequence).
    fn cached_len(&self, seq: u64) -> Option<usize> {
        let _ = seq;
        None
    }

    /// Advances the sequence's state over at most `budget` more tokens of `context` (every
    /// one committed), so that a later [`Self::propose`] has less to catch up on. It stops
    /// before the last token, whose logits the first draft step needs. Returns the tokens
    /// taken: 0 when nothing is left, or for a drafter that keeps no per-sequence state.
    ///
    /// # Errors
    /// Unknown sequence, no room for its state, or a backend failure.
    fn prefill(&mut self, seq: u64, context: &[u32], budget: usize) -> Result<usize> {
        let _ = (seq, context, budget);
        Ok(0)
    }

    /// Proposes a chain of up to `query.len` tokens for every query, in one batch where the
    /// drafter can. A drafter may propose fewer (its context is full, nothing matched). A
    /// sampled draft is drawn with the request's seed on the drafter's Philox stream, counted
    /// by the position it drafts ([`crate::backend::RowDraw`]), so it needs no sampler state.
    ///
    /// # Errors
    /// Unknown sequence or a backend failure.
    fn propose(&mut self, queries: &[DraftQuery<'_>]) -> Result<Vec<Proposal>>;

    /// The forwards of the last [`Self::propose`], in order; empty for a drafter that runs
    /// none (n-gram lookup).
    fn last_steps(&self) -> &[DraftStep] {
        &[]
    }

    /// Proposes a token tree of `width` × `depth` under a node budget for one sequence.
    ///
    /// # Errors
    /// Unknown sequence or a backend failure.
    fn propose_tree(&mut self, query: &DraftQuery<'_>, shape: &super::TreeShape, sampler: &mut Sampler) -> Result<Proposal>;

    /// The target has committed `committed` tokens of context: drop any state past the last
    /// position the drafter can still trust (rollback of rejected drafts).
    ///
    /// # Errors
    /// Unknown sequence.
    fn rollback(&mut self, seq: u64, committed: usize) -> Result<()>;

    /// Releases a sequence's state. Unknown sequences are ignored.
    fn end(&mut self, seq: u64);
}
