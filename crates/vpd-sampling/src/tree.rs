//! Exact speculative sampling over a token tree.
//!
//! Algorithms:
//! - i.i.d. children: multi-step speculative sampling of SpecInfer (Miao et al., 2024,
//!   "SpecInfer: Accelerating Large Language Model Serving with Tree-based Speculative
//!   Inference and Verification"). Children `c_1..c_k` of a node were drawn i.i.d. from
//!   `q`. Try them in order: accept `c_j` with probability `min(1, p(c_j) / q(c_j))`,
//!   on rejection `p <- norm(max(0, p - q))` and try the next one; if all are rejected
//!   emit a draw from the final `p`.
//! - children without replacement: Recursive Speculative Decoding (Jeon et al., 2024,
//!   "Recursive Speculative Decoding: Accelerating LLM Inference via Sampling Without
//!   Replacement"). `c_j` was drawn from `q_j`, where `q_1 = q` and
//!   `q_{j+1} = norm(q_j with c_j zeroed)`. Accept with `min(1, p_j(c_j) / q_j(c_j))`;
//!   on rejection first `p_{j+1} = norm(max(0, p_j - q_j))` (with the `q_j` that `c_j`
//!   was drawn from) and only then `q_{j+1} = remove(q_j, c_j)`.
//!
//! Why both are exact: let `p_j` be the distribution still owed at try `j`. Given the
//! history, `c_j ~ q_j`, and the try emits
//! `min(p_j, q_j)(x) + r * p_{j+1}(x) = p_j(x)` with `r = sum max(0, q_j - p_j)` when
//! `p_{j+1} = norm(max(0, p_j - q_j))` — the chain identity — *whatever later tries
//! do*, provided they in turn emit `p_{j+1}`. `p_{j+1}` does not depend on which `c_j`
//! was rejected, so the dependence of `q_{j+1}` on `c_j` (without replacement) is
//! harmless; by induction from the last try (a direct draw from `p_{k+1}`) the node
//! emits `p_1 = p`. On acceptance the same holds one level down with the child's rows,
//! and an accepted leaf emits a bonus draw from its own `p`.
//!
//! Deterministic children (n-gram candidates) are given as `None` draft rows: child `j`
//! then has a one-hot `q_j` at its own token (accept with `p_j(c_j)`, residual `p_j`
//! without `c_j`), which the same induction covers; `mode` does not matter there.
//!
//! Sibling order is node-index order and must be the order the children were drawn in
//! (it matters for `WithoutReplacement`). Randomness: one [`Sampler::uniform`] per tried
//! child plus one [`Sampler::sample_probs`] for the final token, as in the chain, so a
//! chain tree reproduces [`crate::verify_chain`] draw for draw.

use crate::speculative::{accept, Dist};
use crate::{argmax, Sampler, SpecError};

/// Draft tokens in a tree: node `i` has token `tokens[i]` and parent `parents[i] < i`,
/// with `-1` meaning a child of the root (the committed prefix).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenTree {
    pub tokens: Vec<u32>,
    pub parents: Vec<i32>,
}

/// How the children of one node were drawn from that node's draft distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildSampling {
    /// Independently, with replacement (SpecInfer).
    Iid,
    /// Sequentially without replacement, e.g. Gumbel-top-k / stochastic beam (RSD).
    WithoutReplacement,
}

/// Result of verifying a tree: the emitted tokens are the tokens of `path` (accepted
/// nodes, root to deepest) followed by `next_token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeOutcome {
    pub path: Vec<usize>,
    pub next_token: u32,
}

impl TreeOutcome {
    /// The emitted tokens: the accepted path's tokens, then `next_token`.
    pub fn emitted(&self, tree: &TokenTree) -> Vec<u32> {
        let mut out: Vec<u32> = self.path.iter().map(|&i| tree.tokens[i]).collect();
        out.push(self.next_token);
        out
    }
}

impl TokenTree {
    /// A chain `tokens[0] -> tokens[1] -> ...` as a tree.
    pub fn chain(tokens: &[u32]) -> Self {
        Self {
            tokens: tokens.to_vec(),
            parents: (-1..tokens.len() as i32 - 1).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Equal lengths and `-1 <= parents[i] < i` (topological order, so no cycles).
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.tokens.len() != self.parents.len() {
            return Err(SpecError::InvalidTree(format!(
                "{} tokens but {} parents",
                self.tokens.len(),
                self.parents.len()
            )));
        }
        for (i, &p) in self.parents.iter().enumerate() {
            if p < -1 || p >= i as i32 {
                return Err(SpecError::InvalidTree(format!(
                    "node {i} has parent {p}; need -1 <= parent < {i}"
                )));
            }
        }
        Ok(())
    }

    /// Children of `node` (`None` = the root) in index order.
    pub fn children(&self, node: Option<usize>) -> impl Iterator<Item = usize> + '_ {
        let parent = node.map_or(-1, |n| n as i32);
        self.parents
            .iter()
            .enumerate()
            .filter(move |&(_, &p)| p == parent)
            .map(|(i, _)| i)
    }

    /// Number of nodes from the root to `node` inclusive (1 for a child of the root).
    pub fn depth(&self, node: usize) -> usize {
        let mut d = 1;
        let mut cur = node;
        // `p < cur` guards against looping on an unvalidated tree.
        while let Some(&p) = self.parents.get(cur) {
            if p < 0 || p as usize >= cur {
                break;
            }
            cur = p as usize;
            d += 1;
        }
        d
    }

    /// The largest [`Self::depth`] (0 for an empty tree).
    pub fn max_depth(&self) -> usize {
        (0..self.len()).map(|i| self.depth(i)).max().unwrap_or(0)
    }
}

/// Row index of a node's "next position" distribution: 0 for the root, `i + 1` for i.
pub(crate) fn row_of(node: Option<usize>) -> usize {
    node.map_or(0, |i| i + 1)
}

/// Validates a tree and its rows; returns the vocabulary size.
pub(crate) fn check_tree(
    tree: &TokenTree,
    target: &[&[f32]],
    draft: &[Option<&[f32]>],
) -> Result<usize, SpecError> {
    tree.validate()?;
    let n = tree.len();
    for (what, got) in [("target", target.len()), ("draft", draft.len())] {
        if got != n + 1 {
            return Err(SpecError::RowCount {
                what,
                expected: n + 1,
                got,
            });
        }
    }
    let vocab = target[0].len();
    if vocab == 0 {
        return Err(SpecError::EmptyVocab);
    }
    let lens = target.iter().map(|r| ("target", r.len()));
    let lens = lens.chain(
        draft
            .iter()
            .map(|r| ("draft", r.map_or(vocab, <[f32]>::len))),
    );
    for (row, (what, got)) in lens.enumerate() {
        if got != vocab {
            let row = row % (n + 1);
            return Err(SpecError::RowLength {
                what,
                row,
                expected: vocab,
                got,
            });
        }
    }
    crate::speculative::check_tokens(&tree.tokens, vocab)?;
    Ok(vocab)
}

/// Verifies a drafted tree. `target_p` has `n + 1` processed target rows (row 0: the
/// first new position; row `i + 1`: the position after node `i`); `draft_q` likewise
/// holds the distribution each node's children were drawn from (`None` for leaves, or
/// for deterministic children, see the module docs).
pub fn verify_tree(
    tree: &TokenTree,
    target_p: &[&[f32]],
    draft_q: &[Option<&[f32]>],
    mode: ChildSampling,
    sampler: &mut Sampler,
) -> Result<TreeOutcome, SpecError> {
    check_tree(tree, target_p, draft_q)?;
    let mut path = Vec::with_capacity(tree.max_depth());
    let mut node = None;
    'descend: loop {
        let mut p = Dist::borrowed(target_p[row_of(node)]);
        let mut q = draft_q[row_of(node)].map(Dist::borrowed);
        for child in tree.children(node) {
            let t = tree.tokens[child];
            let q_t = q.as_ref().map_or(1.0, |q| q.prob(t));
            if accept(sampler.uniform(), p.prob(t), q_t) {
                path.push(child);
                node = Some(child);
                continue 'descend;
            }
            // Residual against the q this child was drawn from, then (without
            // replacement) take the child out of q for the next sibling.
            p.subtract_residual(q.as_ref(), t);
            if let (Some(q), ChildSampling::WithoutReplacement) = (q.as_mut(), mode) {
                q.remove(t);
            }
        }
        // Every child rejected, or an accepted leaf: draw from what is still owed.
        return Ok(TreeOutcome {
            path,
            next_token: sampler.sample_probs(&p.row),
        });
    }
}

/// Greedy tree verification on raw logits (`n + 1` rows as in [`verify_tree`]): descend
/// into the first child whose token is the row's [`argmax`]; when none matches, emit it.
pub fn verify_tree_greedy(
    tree: &TokenTree,
    target_logits: &[&[f32]],
) -> Result<TreeOutcome, SpecError> {
    let none = vec![None; target_logits.len()];
    check_tree(tree, target_logits, &none)?;
    Ok(greedy_descend(tree, |row| argmax(target_logits[row])))
}

/// [`verify_tree_greedy`] given only each row's [`argmax`] (`n + 1` tokens), for a backend
/// that reduces the target's logits on the device.
pub fn verify_tree_greedy_ids(tree: &TokenTree, best: &[u32]) -> Result<TreeOutcome, SpecError> {
    tree.validate()?;
    if best.len() != tree.len() + 1 {
        return Err(SpecError::RowCount {
            what: "target",
            expected: tree.len() + 1,
            got: best.len(),
        });
    }
    Ok(greedy_descend(tree, |row| best[row]))
}

fn greedy_descend(tree: &TokenTree, best_of_row: impl Fn(usize) -> u32) -> TreeOutcome {
    let mut path = Vec::new();
    let mut node = None;
    loop {
        let best = best_of_row(row_of(node));
        match tree.children(node).find(|&c| tree.tokens[c] == best) {
            Some(c) => {
                path.push(c);
                node = Some(c);
            }
            None => {
                return TreeOutcome {
                    path,
                    next_token: best,
                }
            }
        }
    }
}
