//! Exact speculative sampling for a chain of drafted tokens.
//!
//! Algorithm: speculative sampling of Leviathan, Kalman & Matias (2023), "Fast Inference
//! from Transformers via Speculative Decoding", and Chen et al. (2023), "Accelerating
//! Large Language Model Decoding with Speculative Sampling". A drafter proposed
//! `x_1..x_L`, `x_i ~ q_i`; the target model gives `p_1..p_{L+1}`. For each position
//! accept `x_i` with probability `min(1, p_i(x_i) / q_i(x_i))`; at the first rejection
//! emit a draw from the residual `norm(max(0, p_i - q_i))` and stop; if everything was
//! accepted emit a bonus draw from `p_{L+1}`. Every emitted token is then distributed
//! exactly as the target would have sampled it:
//! `P(emit x) = min(p(x), q(x)) + (sum_y max(0, q(y) - p(y))) * norm(max(0, p - q))(x)
//!            = min(p(x), q(x)) + max(0, p(x) - q(x)) = p(x)`,
//! because `sum_y max(0, q - p) = sum_y max(0, p - q)` when both sum to 1.
//!
//! Inputs are *processed* distributions (temperature/top-k/top-p already applied to
//! both models with the same parameters, e.g. by [`crate::processed_probs`]); rows are
//! assumed normalised. Negative and NaN entries count as 0.
//!
//! Deterministic drafters (n-gram / prompt lookup) have a one-hot `q`: use
//! [`verify_chain_one_hot`] (no `q` rows needed, nothing allocated for them). There the
//! acceptance probability is `p(x)` and the residual is `p` with `x` removed,
//! renormalised (`max(0, p - onehot(x))`). [`one_hot`] builds an explicit row if a
//! caller prefers the general entry point; both give the same draws.
//!
//! Randomness: one [`Sampler::uniform`] per tried draft plus exactly one
//! [`Sampler::sample_probs`] for the emitted token, so a seeded run is reproducible.

use crate::{argmax, Sampler};

/// Malformed verification input; the message says which argument and index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("expected {expected} {what} rows, got {got}")]
    RowCount {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{what} row {row} has {got} entries, expected vocabulary size {expected}")]
    RowLength {
        what: &'static str,
        row: usize,
        expected: usize,
        got: usize,
    },
    #[error("vocabulary is empty")]
    EmptyVocab,
    #[error("draft {index} has token id {token}, outside the vocabulary of {vocab}")]
    TokenOutOfRange {
        index: usize,
        token: u32,
        vocab: usize,
    },
    #[error("invalid token tree: {0}")]
    InvalidTree(String),
}

/// Result of verifying a chain: the emitted tokens are `drafts[..accepted]` followed by
/// `next_token` (a residual draw if `accepted < L`, otherwise the bonus token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainOutcome {
    pub accepted: usize,
    pub next_token: u32,
}

/// Probability mass of an entry: negative and NaN count as 0.
#[inline]
pub(crate) fn mass(x: f32) -> f64 {
    if x > 0.0 {
        f64::from(x)
    } else {
        0.0
    }
}

/// The accept test `u < p(x) / q(x)` written without a division. `q(x) = 0` means the
/// draft could not have come from `q`: it is rejected (the ratio is undefined, and
/// accepting would emit a token whose probability nothing accounts for).
#[inline]
pub(crate) fn accept(u: f32, p_x: f64, q_x: f64) -> bool {
    q_x > 0.0 && f64::from(u) * q_x < p_x
}

/// A distribution the verifier may rewrite: either a borrowed input row (assumed to sum
/// to 1) or an owned buffer with its exact `f64` total. Owning happens lazily, on the
/// first rejection, so the all-accepted path allocates nothing.
pub(crate) struct Dist<'a> {
    pub(crate) row: std::borrow::Cow<'a, [f32]>,
    pub(crate) total: f64,
}

impl<'a> Dist<'a> {
    pub(crate) fn borrowed(row: &'a [f32]) -> Self {
        Self {
            row: std::borrow::Cow::Borrowed(row),
            total: 1.0,
        }
    }

    /// Normalised probability of token `t`.
    #[inline]
    pub(crate) fn prob(&self, t: u32) -> f64 {
        if self.total > 0.0 {
            mass(self.row[t as usize]) / self.total
        } else {
            0.0
        }
    }

    /// `self <- norm(max(0, self - q))`, with `q = None` meaning one-hot at `t`.
    ///
    /// If the residual has no mass, `self` is left unchanged. That happens only when
    /// `self <= q` everywhere, i.e. `self == q` (both sum to 1), and then a rejection
    /// has probability 0 unless the draft had `q(x) = 0`, which a draft really drawn
    /// from `q` never has. Conditioning on a probability-zero event cannot change the
    /// output distribution, so any choice is exact; keeping `self` (sampling from `p`)
    /// is the one that stays correct for callers whose drafts ignore `q`.
    pub(crate) fn subtract_residual(&mut self, q: Option<&Dist<'_>>, t: u32) {
        let scale = if self.total > 0.0 {
            1.0 / self.total
        } else {
            0.0
        };
        let residual = |i: usize, x: f32| -> f64 {
            let p = mass(x) * scale;
            let q = match q {
                Some(q) => q.prob(i as u32),
                None => f64::from(u8::from(i == t as usize)),
            };
            (p - q).max(0.0)
        };
        let total: f64 = self
            .row
            .iter()
            .enumerate()
            .map(|(i, &x)| residual(i, x))
            .sum();
        if total <= 0.0 || !total.is_finite() {
            return;
        }
        let owned = self.row.to_mut();
        for (i, x) in owned.iter_mut().enumerate() {
            *x = residual(i, *x) as f32;
        }
        // Recompute from the stored f32 values so `prob` matches what is sampled.
        self.total = owned.iter().map(|&x| mass(x)).sum();
    }

    /// Removes token `t` (sampling without replacement): `self <- norm(self with t = 0)`.
    pub(crate) fn remove(&mut self, t: u32) {
        let owned = self.row.to_mut();
        owned[t as usize] = 0.0;
        self.total = owned.iter().map(|&x| mass(x)).sum();
    }
}

/// A one-hot row of length `vocab` at `token` (for passing deterministic drafts to
/// [`verify_chain`] or [`crate::verify_tree`]; [`verify_chain_one_hot`] needs none).
pub fn one_hot(vocab: usize, token: u32) -> Vec<f32> {
    let mut row = vec![0.0; vocab];
    if let Some(x) = row.get_mut(token as usize) {
        *x = 1.0;
    }
    row
}

/// Checks row counts, a common vocabulary size and token ranges; returns the vocab size.
pub(crate) fn check_chain(
    target: &[&[f32]],
    draft: Option<&[&[f32]]>,
    drafts: &[u32],
) -> Result<usize, SpecError> {
    let l = drafts.len();
    if target.len() != l + 1 {
        return Err(SpecError::RowCount {
            what: "target",
            expected: l + 1,
            got: target.len(),
        });
    }
    let vocab = target[0].len();
    if vocab == 0 {
        return Err(SpecError::EmptyVocab);
    }
    let rows = |what, rs: &[&[f32]]| {
        for (row, r) in rs.iter().enumerate() {
            if r.len() != vocab {
                return Err(SpecError::RowLength {
                    what,
                    row,
                    expected: vocab,
                    got: r.len(),
                });
            }
        }
        Ok(())
    };
    rows("target", target)?;
    if let Some(draft) = draft {
        if draft.len() != l {
            return Err(SpecError::RowCount {
                what: "draft",
                expected: l,
                got: draft.len(),
            });
        }
        rows("draft", draft)?;
    }
    check_tokens(drafts, vocab)?;
    Ok(vocab)
}

/// Every drafted token must index the vocabulary; names the first that does not.
pub(crate) fn check_tokens(tokens: &[u32], vocab: usize) -> Result<(), SpecError> {
    match tokens
        .iter()
        .enumerate()
        .find(|(_, &t)| t as usize >= vocab)
    {
        Some((index, &token)) => Err(SpecError::TokenOutOfRange {
            index,
            token,
            vocab,
        }),
        None => Ok(()),
    }
}

fn chain(
    target: &[&[f32]],
    draft: Option<&[&[f32]]>,
    drafts: &[u32],
    sampler: &mut Sampler,
) -> Result<ChainOutcome, SpecError> {
    check_chain(target, draft, drafts)?;
    for (i, &x) in drafts.iter().enumerate() {
        let mut p = Dist::borrowed(target[i]);
        let q = draft.map(|d| Dist::borrowed(d[i]));
        let q_x = q.as_ref().map_or(1.0, |q| q.prob(x));
        if accept(sampler.uniform(), p.prob(x), q_x) {
            continue;
        }
        p.subtract_residual(q.as_ref(), x);
        return Ok(ChainOutcome {
            accepted: i,
            next_token: sampler.sample_probs(&p.row),
        });
    }
    Ok(ChainOutcome {
        accepted: drafts.len(),
        next_token: sampler.sample_probs(target[drafts.len()]),
    })
}

/// Verifies drafts `x_1..x_L` drawn from `draft` rows `q_1..q_L` against `target` rows
/// `p_1..p_{L+1}` (all processed probabilities over one vocabulary).
pub fn verify_chain(
    target: &[&[f32]],
    draft: &[&[f32]],
    drafts: &[u32],
    sampler: &mut Sampler,
) -> Result<ChainOutcome, SpecError> {
    chain(target, Some(draft), drafts, sampler)
}

/// [`verify_chain`] for deterministic drafts (each `q_i` one-hot at `x_i`): accepts
/// `x_i` with probability `p_i(x_i)`; the residual is `p_i` without `x_i`.
pub fn verify_chain_one_hot(
    target: &[&[f32]],
    drafts: &[u32],
    sampler: &mut Sampler,
) -> Result<ChainOutcome, SpecError> {
    chain(target, None, drafts, sampler)
}

/// Greedy verification on raw logits (`L + 1` rows): accept while `x_i` equals
/// [`argmax`] of row `i`; emit the argmax at the first mismatch, or of row `L + 1`.
/// Consumes no randomness.
pub fn verify_chain_greedy(
    target_logits: &[&[f32]],
    drafts: &[u32],
) -> Result<ChainOutcome, SpecError> {
    check_chain(target_logits, None, drafts)?;
    for (i, &x) in drafts.iter().enumerate() {
        let best = argmax(target_logits[i]);
        if x != best {
            return Ok(ChainOutcome {
                accepted: i,
                next_token: best,
            });
        }
    }
    Ok(ChainOutcome {
        accepted: drafts.len(),
        next_token: argmax(target_logits[drafts.len()]),
    })
}
