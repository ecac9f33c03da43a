//! Greedy choice and the processed distribution (temperature -> top-k -> top-p).
//!
//! Order and semantics follow Hugging Face's `TemperatureLogitsWarper`,
//! `TopKLogitsWarper` and `TopPLogitsWarper`: top-p acts on the distribution already
//! restricted to the top-k and renormalised. Ties in rank are broken by lower token id
//! so results do not depend on sort stability. Cost: O(V) selection for top-k plus an
//! O(k log k) sort for top-p (O(V log V) when top-k is off).

use std::cmp::Ordering;

use crate::SamplingParams;

/// NaN logits are treated as -inf: they must never win and never get mass.
fn clean(x: f32) -> f32 {
    if x.is_nan() {
        f32::NEG_INFINITY
    } else {
        x
    }
}

/// Index of the largest logit, the first one on ties; NaN counts as -inf.
/// Returns 0 for an empty slice (and when every entry is NaN or -inf).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &x) in logits.iter().enumerate() {
        // Strict `>` keeps the first maximum.
        if clean(x) > best_v {
            best = i;
            best_v = clean(x);
        }
    }
    best as u32
}

fn one_hot(v: usize, id: u32) -> Vec<f32> {
    let mut out = vec![0.0; v];
    if let Some(x) = out.get_mut(id as usize) {
        *x = 1.0;
    }
    out
}

/// The distribution [`crate::Sampler::sample`] draws from, zero outside the kept set.
///
/// Greedy (`temperature <= 0` or NaN) gives a one-hot at [`argmax`]; so does a vector
/// with no finite-or-+inf logit. Call [`SamplingParams::validate`] first: invalid values
/// never panic here but degrade (NaN top_p = off, top_p <= 0 keeps one token).
pub fn processed_probs(logits: &[f32], p: &SamplingParams) -> Vec<f32> {
    let v = logits.len();
    let greedy = p.temperature.is_nan() || p.temperature <= 0.0;
    if v == 0 || greedy {
        return one_hot(v, argmax(logits));
    }
    let logit = |i: u32| clean(logits[i as usize]);
    // Best first: higher logit, then lower id. A strict total order on distinct ids,
    // so selection and sorting are exact regardless of algorithm stability.
    // Temperature > 0 preserves this order, so ranking raw logits is equivalent.
    let rank = |a: &u32, b: &u32| {
        logit(*b)
            .partial_cmp(&logit(*a))
            .unwrap_or(Ordering::Equal)
            .then(a.cmp(b))
    };

    let mut kept: Vec<u32> = (0..v as u32).collect();
    let k = if p.top_k == 0 { v } else { p.top_k.min(v) };
    if k < v {
        kept.select_nth_unstable_by(k - 1, rank);
        kept.truncate(k);
    }

    // Softmax weights in f64: exp(z - max) with z = logit / T.
    let t = f64::from(p.temperature);
    let z = |i: u32| {
        let z = f64::from(logit(i)) / t;
        if z.is_nan() {
            f64::NEG_INFINITY // inf/inf with an infinite temperature
        } else {
            z
        }
    };
    let m = kept.iter().map(|&i| z(i)).fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return one_hot(v, argmax(logits));
    }
    let weight = |i: u32| {
        if m == f64::INFINITY {
            // +inf logits share all the mass equally.
            f64::from(u8::from(z(i) == f64::INFINITY))
        } else {
            (z(i) - m).exp()
        }
    };

    // Nucleus: the smallest best-first prefix whose cumulative mass reaches top_p of the
    // (top-k renormalised) total; at least one token. Comparing with `top_p * total`
    // avoids dividing every term. `top_p < 1` is false for NaN, which means off.
    if p.top_p < 1.0 {
        kept.sort_unstable_by(rank);
        let total: f64 = kept.iter().map(|&i| weight(i)).sum();
        let target = f64::from(p.top_p) * total;
        let mut cum = 0.0;
        let mut n = kept.len();
        for (j, &i) in kept.iter().enumerate() {
            cum += weight(i);
            if cum >= target {
                n = j + 1;
                break;
            }
        }
        kept.truncate(n);
    }

    let total: f64 = kept.iter().map(|&i| weight(i)).sum();
    let mut out = vec![0.0f32; v];
    for &i in &kept {
        out[i as usize] = (weight(i) / total) as f32;
    }
    out
}
