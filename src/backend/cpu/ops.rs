//! Element-wise CPU reference operators of the Llama block (Touvron et al. 2023; Hugging Face
//! `modeling_llama.py` is the oracle): RMSNorm, rotate-half RoPE, SwiGLU, residual add.
//! These double as the references the CUDA kernels are checked against.

/// `out = x / sqrt(mean(x²) + eps) · weight`, one row of `weight.len()` at a time.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        // Accumulate in f64: the mean of squares over 4096 dims loses bits in f32.
        let ms = xr.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / d as f64;
        let inv = (1.0 / (ms + f64::from(eps)).sqrt()) as f32;
        for ((o, &v), &w) in or.iter_mut().zip(xr).zip(weight) {
            *o = w * (v * inv);
        }
    }
}

/// Rotary embedding in Hugging Face's rotate-half layout, applied in place to one head
/// vector of `2 · inv_freq.len()` values at position `pos`:
/// `x[i] ← x[i]·cos − x[i+h]·sin`, `x[i+h] ← x[i+h]·cos + x[i]·sin`.
pub fn rope_rotate_half(head: &mut [f32], pos: usize, inv_freq: &[f32]) {
    let half = inv_freq.len();
    let (a, b) = head.split_at_mut(half);
    for i in 0..half {
        // Angle in f32 like transformers (position · inv_freq computed in float32).
        let angle = pos as f32 * inv_freq[i];
        let (sin, cos) = angle.sin_cos();
        let (x1, x2) = (a[i], b[i]);
        a[i] = x1 * cos - x2 * sin;
        b[i] = x2 * cos + x1 * sin;
    }
}

/// SwiGLU: `gate ← silu(gate) · up`.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let s = *g / (1.0 + (-*g).exp());
        *g = s * u;
    }
}

/// `acc += x`.
pub fn add_assign(acc: &mut [f32], x: &[f32]) {
    for (a, &b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}

/// Numerically stable softmax in place; `-inf` entries get probability 0.
pub fn softmax_in_place(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return;
    }
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_of_constant_row_is_weight() {
        let x = [3.0f32; 7];
        let w: Vec<f32> = (0..7).map(|i| i as f32).collect();
        let mut out = [0.0; 7];
        rms_norm(&x, &w, 0.0, &mut out);
        for (o, wv) in out.iter().zip(&w) {
            assert!((o - wv).abs() < 1e-6);
        }
    }

    #[test]
    fn rope_at_position_zero_is_identity_and_preserves_norm() {
        let inv = [1.0f32, 0.1, 0.01];
        let orig = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut h = orig;
        rope_rotate_half(&mut h, 0, &inv);
        assert_eq!(h, orig);
        rope_rotate_half(&mut h, 17, &inv);
        let n0: f32 = orig.iter().map(|v| v * v).sum();
        let n1: f32 = h.iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-4);
    }

    #[test]
    fn softmax_sums_to_one_and_zeroes_neg_inf() {
        let mut x = [1.0, f32::NEG_INFINITY, 3.0, 0.5];
        softmax_in_place(&mut x);
        assert_eq!(x[1], 0.0);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}
