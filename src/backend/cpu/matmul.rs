//! Dense matrix products for the CPU backend, through the `gemm` crate (BLIS-style kernels,
//! rayon-parallel). This wrapper is the only `unsafe` in the CPU backend: it checks every
//! extent before handing raw pointers to `gemm`.
#![allow(unsafe_code)]

use gemm::Parallelism;

/// `y[t, o] = Σ_i x[t, i] · w[o, i]` — a linear layer with a row-major `[out, in]` weight.
///
/// Computed as `yᵀ = W · xᵀ` so that batch-1 decode is a matrix-vector product over
/// contiguous weight rows, the bandwidth-bound case that matters most.
///
/// # Panics
/// If a slice is shorter than its stated shape (a programming error, never input-driven:
/// shapes come from the validated config).
pub fn linear(x: &[f32], w: &[f32], y: &mut [f32], tokens: usize, d_in: usize, d_out: usize) {
    assert!(x.len() >= tokens * d_in, "linear: x has {} < {}", x.len(), tokens * d_in);
    assert!(w.len() >= d_out * d_in, "linear: w has {} < {}", w.len(), d_out * d_in);
    assert!(y.len() >= tokens * d_out, "linear: y has {} < {}", y.len(), tokens * d_out);
    if tokens == 0 || d_out == 0 {
        return;
    }
    if d_in == 0 {
        y[..tokens * d_out].fill(0.0);
        return;
    }
    let threads = rayon::current_num_threads();
    let par = if threads > 1 && d_out * d_in * tokens >= 1 << 16 { Parallelism::Rayon(threads) } else { Parallelism::None };
    // SAFETY: the asserts above guarantee that every index the strides reach lies inside the
    // three slices: dst (m = d_out, n = tokens) at y[n * d_out + m]; lhs W (m, k) at
    // w[m * d_in + k]; rhs xᵀ (k, n) at x[n * d_in + k]. `y` is uniquely borrowed and does not
    // alias `x` or `w` (distinct Rust borrows).
    unsafe {
        gemm::gemm(
            d_out,
            tokens,
            d_in,
            y.as_mut_ptr(),
            d_out as isize, // dst_cs: next token
            1,              // dst_rs: next output feature
            false,
            w.as_ptr(),
            1,
            d_in as isize,
            x.as_ptr(),
            d_in as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}
