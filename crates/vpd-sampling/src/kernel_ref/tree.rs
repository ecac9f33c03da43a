//! Tree verification exactly as `csrc/tree_verify.cu` does it: the algorithm of
//! [`crate::verify_tree`] (SpecInfer's multi-step speculative sampling for i.i.d. children,
//! Recursive Speculative Decoding for children drawn without replacement, one-hot proposals for
//! deterministic children), in integer arithmetic so that a block-parallel kernel and this
//! sequential code agree bit for bit.
//!
//! The owed distribution `p_j` and the proposal `q_j` of a node are fixed-point masses `P`, `Q`
//! (`u64`, see [`super::fx`]) with totals `Zp`, `Zq`, each scaled down by a right shift so that
//! its total stays below `2^45` ([`fit_shift`]). Then:
//! - **accept** child `c` (24-bit uniform `U`): `Q[c] > 0 && U·Q[c]·Zp < P[c]·Zq·2^24`, the
//!   exact form of `u < p(c)/q(c)`; products stay below `2^115`, so `u128` holds them;
//! - **residual** `norm(max(0, p - q))`: `R[i] = max(0, P[i]·Zq - Q[i]·Zp)` (below `2^90`),
//!   then `P' = R >> fit_shift(ΣR)`; a deterministic child zeroes `P[c]`; without replacement
//!   `Q[c] = 0` afterwards;
//! - **draw** from what is owed: [`super::pick`] over `P` with Philox words 2-3.
//!
//! Philox counter `(row, try, offset)`: `try` counts accept tests in the row, and the final draw
//! takes the next one, so every number is used once.

use super::{argmax_key, fx, pick, pos};
use crate::philox::{draw_bits, philox_words};
use crate::tree::{check_tree, row_of};
use crate::{ChildSampling, SpecError, TokenTree, TreeOutcome};

/// Most nodes per tree the kernel takes (its shared-memory node table).
pub const MAX_TREE_NODES: usize = 64;
/// Totals are kept below `2^TOTAL_BITS`.
pub const TOTAL_BITS: u32 = 45;

/// Right shift that brings `total` below `2^TOTAL_BITS` (0 when it already is).
pub fn fit_shift(total: u128) -> u32 {
    (128 - total.leading_zeros()).saturating_sub(TOTAL_BITS)
}

/// Masses of a probability row, shifted so that their total fits; and that total.
fn fitted(row: &[f32]) -> (Vec<u64>, u64) {
    let raw: Vec<u64> = row.iter().map(|&x| fx(pos(x))).collect();
    let s = fit_shift(raw.iter().map(|&m| u128::from(m)).sum());
    let m: Vec<u64> = raw.iter().map(|&m| m >> s).collect();
    let total = m.iter().sum();
    (m, total)
}

/// Whether child token `t` is accepted against the owed masses and (if drawn) the proposal.
fn accepts(u24: u32, p: &[u64], zp: u64, q: Option<(&[u64], u64)>, t: usize) -> bool {
    let u = u128::from(u24);
    match q {
        Some((q, zq)) => {
            q[t] > 0
                && u * u128::from(q[t]) * u128::from(zp) < (u128::from(p[t]) * u128::from(zq)) << 24
        }
        None => u * u128::from(zp) < u128::from(p[t]) << 24,
    }
}

/// `p <- norm(max(0, p - q))` after rejecting token `t` (a one-hot `q` at `t` when `None`).
fn subtract(p: &mut [u64], zp: &mut u64, q: Option<(&[u64], u64)>, t: usize) {
    match q {
        Some((_, 0)) => {} // a proposal without mass takes nothing away
        Some((q, zq)) => {
            let r: Vec<u128> = p
                .iter()
                .zip(q)
                .map(|(&a, &b)| {
                    (u128::from(a) * u128::from(zq)).saturating_sub(u128::from(b) * u128::from(*zp))
                })
                .collect();
            let s = fit_shift(r.iter().sum());
            for (x, r) in p.iter_mut().zip(r) {
                *x = (r >> s) as u64;
            }
            *zp = p.iter().sum();
        }
        None => {
            *zp -= p[t];
            p[t] = 0;
        }
    }
}

/// The kernel's verification of one tree (`row` of a batch at `offset`). Rows are as in
/// [`crate::verify_tree`]: `target[0]` for the first new position, `target[i + 1]` after node
/// `i`; `draft[r]` the distribution the children of that position were drawn from (`None`:
/// deterministic children).
///
/// # Errors
/// The tree, row-count, row-length and token-range errors of [`crate::verify_tree`], and an
/// `InvalidTree` for more than [`MAX_TREE_NODES`] nodes.
pub fn verify_tree_ref(
    tree: &TokenTree,
    target: &[&[f32]],
    draft: &[Option<&[f32]>],
    mode: ChildSampling,
    seed: u64,
    offset: u64,
    row: u32,
) -> Result<TreeOutcome, SpecError> {
    if tree.len() > MAX_TREE_NODES {
        return Err(SpecError::InvalidTree(format!(
            "{} nodes (at most {MAX_TREE_NODES})",
            tree.len()
        )));
    }
    check_tree(tree, target, draft)?;
    let mut tries = 0u32;
    let mut path = Vec::new();
    let mut node = None;
    'descend: loop {
        let r = row_of(node);
        let (mut p, mut zp) = fitted(target[r]);
        let mut q = draft[r].map(fitted);
        for child in tree.children(node) {
            let t = tree.tokens[child] as usize;
            let w = philox_words(seed, offset, row, tries);
            tries += 1;
            let qv = q.as_ref().map(|(m, z)| (m.as_slice(), *z));
            if accepts(w[0] >> 8, &p, zp, qv, t) {
                path.push(child);
                node = Some(child);
                continue 'descend;
            }
            subtract(&mut p, &mut zp, qv, t);
            if let (Some((qm, zq)), ChildSampling::WithoutReplacement) = (q.as_mut(), mode) {
                *zq -= qm[t];
                qm[t] = 0;
            }
        }
        let bits = draw_bits(philox_words(seed, offset, row, tries));
        let next_token = pick(&p, bits).unwrap_or_else(|| argmax_key(target[r]));
        return Ok(TreeOutcome { path, next_token });
    }
}
