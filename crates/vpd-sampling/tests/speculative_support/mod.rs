//! Shared helpers for the speculative-sampling tests: synthetic distributions, draft
//! generation, and a frequency check with a rigorous (non-asymptotic) bound.
//!
//! Bound (Bernstein's inequality): a bin with probability `p` observed in `N` independent
//! trials has count `X ~ Binomial(N, p)`, a sum of variables with `|X_i - p| <= 1` and
//! variance `v = N p (1 - p)`, so `P(|X - N p| >= t) <= 2 exp(-t^2 / (2 (v + t / 3)))`.
//! Setting the right side to `DELTA = 1e-10` gives
//! `t = L/3 + sqrt(L^2/9 + 2 L v)` with `L = ln(2 / DELTA) ~ 23.7`. Unlike a normal
//! approximation this holds for small counts too. Bins with `p = 0` must be exactly 0
//! (zero-mass tokens are never emitted by construction, not just rarely). The whole
//! suite checks fewer than 10^4 positive bins, so by the union bound a correct
//! implementation fails any of them with probability < 10^4 * 1e-10 = 1e-6. Counts
//! conditioned on an earlier event (e.g. "x1 accepted") are still i.i.d. draws from the
//! stated distribution given that event, so the bound applies with `N` = their number.
//! Seeds are fixed, so runs are deterministic; the bound shows the tolerance is not
//! tuned to the seed. Rounding (f32 rows, 24-bit uniforms) biases bins by ~1e-7 * N,
//! far below `t`.
#![allow(dead_code)]

use vpd_sampling::Sampler;

pub const DELTA: f64 = 1e-10;

/// Asserts `counts` is consistent with `probs` (normalised here) within the Bernstein
/// bound of the module header; `what` names the check in the failure message.
pub fn check_counts(what: &str, counts: &[u64], probs: &[f32]) {
    assert_eq!(counts.len(), probs.len());
    let n: u64 = counts.iter().sum();
    let total: f64 = probs.iter().map(|&x| f64::from(x.max(0.0))).sum();
    let l = (2.0 / DELTA).ln();
    for (i, (&c, &x)) in counts.iter().zip(probs).enumerate() {
        let p = f64::from(x.max(0.0)) / total;
        if p == 0.0 {
            assert_eq!(
                c, 0,
                "{what}: token {i} has probability 0 but was emitted {c} times"
            );
            continue;
        }
        let mean = n as f64 * p;
        let v = mean * (1.0 - p);
        let t = l / 3.0 + (l * l / 9.0 + 2.0 * l * v).sqrt();
        let dev = (c as f64 - mean).abs();
        assert!(
            dev <= t,
            "{what}: token {i} count {c} of {n}, expected {mean:.1} ± {t:.1} (p = {p:.4})"
        );
    }
}

/// Asserts at least `min` samples went into a conditioned check (so it has power).
pub fn assert_enough(what: &str, counts: &[u64], min: u64) {
    let n: u64 = counts.iter().sum();
    assert!(n >= min, "{what}: only {n} samples (need {min})");
}

/// A random distribution over `vocab` tokens, zero outside `support`, with weights
/// u^2 + 0.05 so probabilities spread over about two orders of magnitude.
pub fn random_dist(vocab: usize, support: std::ops::Range<usize>, seed: u64) -> Vec<f32> {
    let mut s = Sampler::new(seed);
    let mut w = vec![0.0f64; vocab];
    for x in &mut w[support] {
        let u = f64::from(s.uniform());
        *x = u * u + 0.05;
    }
    let z: f64 = w.iter().sum();
    w.iter().map(|&x| (x / z) as f32).collect()
}

/// Distinct pseudo-random logits in about [-4, 4).
pub fn random_logits(vocab: usize, seed: u64) -> Vec<f32> {
    let mut s = Sampler::new(seed);
    (0..vocab).map(|_| s.uniform() * 8.0 - 4.0).collect()
}

pub fn one_hot_f32(vocab: usize, t: usize) -> Vec<f32> {
    let mut v = vec![0.0; vocab];
    v[t] = 1.0;
    v
}

/// Draws `k` tokens from `q` sequentially without replacement (each draw from `q`
/// with the earlier draws removed and renormalised; `sample_probs` renormalises).
pub fn draw_without_replacement(q: &[f32], k: usize, s: &mut Sampler, out: &mut Vec<u32>) {
    let mut w = q.to_vec();
    for _ in 0..k {
        let t = s.sample_probs(&w);
        w[t as usize] = 0.0;
        out.push(t);
    }
}
