//! The exact algorithm of the CUDA sampling kernels (`csrc/sampling.cu`), on the CPU, so the GPU
//! output can be compared token for token.
//!
//! The distributions are those of [`crate::processed_probs`] (temperature → top-k → top-p, Hugging
//! Face's warper order) and of chain speculative sampling (Leviathan et al. 2023; Chen et al.
//! 2023, see [`crate::speculative`]). What changes is the arithmetic, chosen so that a parallel
//! kernel and this sequential code get identical bits whatever their summation order:
//!
//! - **Masses are fixed-point integers.** Each weight `w ∈ [0, 1]` becomes `⌊w · 2^44⌋` (`u64`);
//!   sums of up to 2^17 of them fit, and integer addition is associative, so a block reduction and
//!   a left-to-right loop agree. Weights below 2^-44 become 0 (a bias under `V · 2^-44 ≈ 1e-8`).
//! - **exp is [`exp_det`]**: Cody–Waite range reduction and a degree-6 polynomial, built from
//!   single IEEE operations only (the kernel uses `__fmul_rn`/`__fadd_rn`, which are never fused),
//!   so both sides round identically. Error about 2 ulp.
//! - **Ranking** (top-k, top-p) uses the key `(order(logit), !id)`: higher logit first, then lower
//!   id, as `processed_probs` does; NaN counts as -inf and -0 as +0.
//! - **Random numbers** are Philox4x32-10 words for (seed, offset, row, position)
//!   ([`crate::philox::philox_words`]): word 0 is the accept uniform (24 bits), words 2 and 3 a
//!   64-bit integer `R`; a draw from masses with total `S` picks the first token (in id order)
//!   whose inclusive prefix sum exceeds `⌊R · S / 2^64⌋`.
//! - **Accept test**: `q(x) > 0 && u · q(x) < p(x)` in f64, where the product of two 24-bit
//!   significands is exact.
//!
//! Tree verification (`csrc/tree_verify.cu`) keeps whole residual distributions and so needs
//! exact normalisation as well: see [`verify_tree_ref`].

mod tree;

pub use tree::{fit_shift, verify_tree_ref, MAX_TREE_NODES, TOTAL_BITS};

use crate::philox::{accept_uniform, draw_bits, philox_words};
use crate::speculative::{accept, check_chain, mass};
use crate::{ChainOutcome, SamplingParams, SpecError};

/// Fixed-point scale of the masses: `2^FX_SHIFT` is probability 1.
pub const FX_SHIFT: i32 = 44;
/// Longest draft chain the kernel takes.
pub const MAX_DRAFT: usize = 16;

/// `⌊clamp(w, 0, 1) · 2^44⌋`; NaN and negative weights are 0.
pub fn fx(w: f32) -> u64 {
    if w > 0.0 {
        (w.min(1.0) * (1u64 << FX_SHIFT) as f32) as u64
    } else {
        0
    }
}

const LOG2E: u32 = 0x3fb8_aa3b;
const LN2_HI: u32 = 0x3f31_7200; // 16 significant bits: k · LN2_HI is exact for |k| < 2^8
const LN2_LO: u32 = 0x35bf_be8e;
const POLY: [u32; 5] = [
    0x3ab6_0b61,
    0x3c08_8889,
    0x3d2a_aaab,
    0x3e2a_aaab,
    0x3f00_0000,
]; // 1/720 .. 1/2

/// `e^d` for `d <= 0`, bit-identical to the kernel's `exp_det`. Returns 0 below -32 (where the
/// fixed-point mass would be 0 anyway) and for NaN.
pub fn exp_det(d: f32) -> f32 {
    if d.is_nan() || d <= -32.0 {
        return 0.0;
    }
    let f = f32::from_bits;
    let k = (d * f(LOG2E)).round_ties_even();
    let r = (d - k * f(LN2_HI)) - k * f(LN2_LO);
    let mut p = f(POLY[0]);
    for c in &POLY[1..] {
        p = p * r + f(*c);
    }
    p = p * r + 1.0;
    p = p * r + 1.0;
    // k in [-47, 1]: 2^k is a normal f32 and the product is exact.
    p * f(((k as i32 + 127) as u32) << 23)
}

/// Ranking key of a logit: larger is better; NaN = -inf, -0 = +0.
pub fn key32(x: f32) -> u32 {
    let x = if x.is_nan() {
        f32::NEG_INFINITY
    } else if x == 0.0 {
        0.0
    } else {
        x
    };
    let b = x.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// Ranking key of token `id`: higher logit first, then lower id (a strict total order).
pub fn key64(x: f32, id: u32) -> u64 {
    (u64::from(key32(x)) << 32) | u64::from(u32::MAX - id)
}

/// Inverse-CDF pick: the first index whose inclusive prefix sum of `m` exceeds `⌊bits·S/2^64⌋`.
/// `None` when the total is 0.
pub fn pick(m: &[u64], bits: u64) -> Option<u32> {
    let total: u64 = m.iter().sum();
    if total == 0 {
        return None;
    }
    let t = ((u128::from(bits) * u128::from(total)) >> 64) as u64;
    let mut cum = 0u64;
    m.iter()
        .position(|&x| {
            cum += x;
            cum > t
        })
        .map(|i| i as u32)
}

/// Index of the best key (first maximum, NaN = -inf); 0 for an empty row. Equals [`crate::argmax`].
pub fn argmax_key(row: &[f32]) -> u32 {
    (0..row.len() as u32)
        .max_by_key(|&i| key64(row[i as usize], i))
        .unwrap_or(0)
}

/// The fixed-point weights the kernel samples from for one row of logits: temperature, then
/// top-k, then top-p, zero outside the kept set. `None` for greedy (or no finite logit).
pub fn sampling_masses(logits: &[f32], p: &SamplingParams) -> Option<Vec<u64>> {
    let t = p.temperature;
    if logits.is_empty() || t.is_nan() || t <= 0.0 {
        return None;
    }
    let best = logits[argmax_key(logits) as usize];
    let xm = if best.is_nan() {
        f32::NEG_INFINITY
    } else {
        best
    };
    if xm == f32::NEG_INFINITY {
        return None;
    }
    // Multiplying by 1/T (one division per row) keeps the kernel's per-token work cheap.
    let inv_t = 1.0 / t;
    let zm = xm * inv_t;
    let w = |x: f32| -> f32 {
        let z = if x.is_nan() {
            f32::NEG_INFINITY
        } else {
            x * inv_t
        };
        if zm == f32::INFINITY {
            f32::from(u8::from(z == f32::INFINITY))
        } else {
            exp_det(z - zm)
        }
    };
    let mut m: Vec<u64> = logits.iter().map(|&x| fx(w(x))).collect();
    let v = logits.len();
    let mut order: Vec<u32> = (0..v as u32).collect();
    order.sort_unstable_by_key(|&i| std::cmp::Reverse(key64(logits[i as usize], i)));
    let key = |i: u32| key64(logits[i as usize], i);
    let mut cut = 0u64; // keep keys >= cut
    if p.top_k > 0 && p.top_k < v {
        cut = key(order[p.top_k - 1]);
    }
    if p.top_p < 1.0 {
        let kept = order.iter().take_while(|&&i| key(i) >= cut);
        let total: u64 = kept.clone().map(|&i| m[i as usize]).sum();
        let tgt = ((f64::from(p.top_p) * total as f64) as u64).min(total);
        let mut cum = 0u64;
        for &i in kept {
            cum += m[i as usize];
            if cum >= tgt {
                cut = cut.max(key(i));
                break;
            }
        }
    }
    for (i, x) in m.iter_mut().enumerate() {
        if key(i as u32) < cut {
            *x = 0;
        }
    }
    Some(m)
}

/// The token the fused sampling kernel draws for `row` of a batch at `offset`.
pub fn sample_ref(logits: &[f32], p: &SamplingParams, offset: u64, row: u32) -> u32 {
    match sampling_masses(logits, p) {
        Some(m) => pick(&m, draw_bits(philox_words(p.seed, offset, row, 0)))
            .unwrap_or_else(|| argmax_key(logits)),
        None => argmax_key(logits),
    }
}

/// The processed distribution the fused sampling kernel writes for a row when asked for it
/// (a drafter's q): each kept mass over the total kept mass, the quotient of the two integers
/// in f64 rounded to f32; one-hot at the argmax for a greedy row or one with no mass.
pub fn probs_ref(logits: &[f32], p: &SamplingParams) -> Vec<f32> {
    let mut out = vec![0.0f32; logits.len()];
    let masses = sampling_masses(logits, p).filter(|m| m.iter().any(|&x| x > 0));
    match masses {
        Some(m) => {
            let total = m.iter().sum::<u64>() as f64;
            for (o, &x) in out.iter_mut().zip(&m) {
                *o = (x as f64 / total) as f32;
            }
        }
        None => {
            if let Some(o) = out.get_mut(argmax_key(logits) as usize) {
                *o = 1.0;
            }
        }
    }
    out
}

/// `mass(x)` as f32 (negative and NaN are 0).
fn pos(x: f32) -> f32 {
    if x > 0.0 {
        x
    } else {
        0.0
    }
}

/// A draw from a probability row with the kernel's arithmetic; argmax when it has no mass.
fn draw_row(row: &[f32], bits: u64) -> u32 {
    let m: Vec<u64> = row.iter().map(|&x| fx(x)).collect();
    pick(&m, bits).unwrap_or_else(|| argmax_key(row))
}

/// Chain verification exactly as the kernel does it for `row` of a batch at `offset`: the
/// algorithm of [`crate::verify_chain`] with the arithmetic of the module header.
///
/// # Errors
/// The row-count, row-length and token-range errors of [`crate::verify_chain`].
pub fn verify_chain_ref(
    target: &[&[f32]],
    draft: &[&[f32]],
    drafts: &[u32],
    seed: u64,
    offset: u64,
    row: u32,
) -> Result<ChainOutcome, SpecError> {
    check_chain(target, Some(draft), drafts)?;
    for (i, &x) in drafts.iter().enumerate() {
        let w = philox_words(seed, offset, row, i as u32);
        let (p, q) = (target[i], draft[i]);
        if accept(accept_uniform(w), mass(p[x as usize]), mass(q[x as usize])) {
            continue;
        }
        let m: Vec<u64> = p
            .iter()
            .zip(q)
            .map(|(&a, &b)| fx(pos(a) - pos(b)))
            .collect();
        let next_token = pick(&m, draw_bits(w)).unwrap_or_else(|| draw_row(p, draw_bits(w)));
        return Ok(ChainOutcome {
            accepted: i,
            next_token,
        });
    }
    let l = drafts.len();
    let w = philox_words(seed, offset, row, l as u32);
    Ok(ChainOutcome {
        accepted: l,
        next_token: draw_row(target[l], draw_bits(w)),
    })
}
