//! The decode-sized projections of `csrc/gemv.cu`: matrix-vector products for steps of at
//! most [`GEMV_MAX_T`] tokens with the layer's RMSNorm, SwiGLU, RoPE + K/V cache write and
//! residual add fused in (see that file's header). [`super::CudaBackend`] runs a decode layer
//! as five launches through these when [`gemv_fits`] says the step and shapes allow it, and
//! through cuBLAS and the separate kernels otherwise; `vpd gpu-check` compares both with the
//! CPU reference.
#![allow(unsafe_code)]

use cudarc::driver::{CudaSlice, DeviceRepr};

use super::device::{ptr, ptr_mut, Device};
use super::ops::{cfg, check_len, launch, shape_err, HeadShape, KvCache};
use crate::error::Result;
use crate::kernels::params::GemvParams;

// SAFETY: a plain C struct of integers, floats and device addresses (bindgen output with layout
// tests); the kernels take it by value, exactly as declared in vpd_params.h.
unsafe impl DeviceRepr for GemvParams {}

/// Most tokens one GEMV launch takes (`GEMV_MAX_T` in vpd_params.h).
pub const GEMV_MAX_T: usize = crate::kernels::params::GEMV_MAX_T as usize;
const GEMV_WARPS: u32 = 8;
/// Blocks of 8 warps an SM holds at once (the kernels use 64–120 registers).
const BLOCKS_PER_SM: u32 = 3;

/// Whether a step of `tokens` tokens over inputs of `d_in` elements can take the GEMV path.
pub fn gemv_fits(tokens: usize, d_in: usize) -> bool {
    (1..=GEMV_MAX_T).contains(&tokens) && d_in > 0 && d_in.is_multiple_of(8) && u32::try_from(d_in).is_ok()
}

/// The input rows of a [`gemv`].
pub enum GemvIn<'a> {
    /// bf16 rows `[tokens, d_in]`.
    Bf16(&'a CudaSlice<u16>),
    /// The RMSNorm of the f32 residual rows `[tokens, d_in]` with this bf16 weight, computed
    /// in the kernel's prologue.
    Norm { residual: &'a CudaSlice<f32>, weight: &'a CudaSlice<u16>, eps: f32 },
}

/// What a [`gemv`] writes.
pub enum GemvOut<'a> {
    /// `y[t, n] = acc[t, n] + beta · y[t, n]` (`y` is not read when `beta` is 0).
    F32 { y: &'a mut CudaSlice<f32>, beta: f32 },
    /// `act[t, i] = bf16(silu(acc[t, i]) · acc[t, F + i])` over the fused gate|up rows, F = d_out / 2.
    Swiglu { act: &'a mut CudaSlice<u16> },
    /// The fused q|k|v rows of `shape`: q and k rotated (rotate-half RoPE at `positions`) into
    /// `y`, v as is, and k and v written as bf16 to `slots` of `layer` in `cache`.
    RopeKv {
        y: &'a mut CudaSlice<f32>,
        positions: &'a CudaSlice<i32>,
        slots: &'a CudaSlice<u32>,
        inv_freq: &'a CudaSlice<f32>,
        cache: &'a mut KvCache,
        layer: usize,
        shape: HeadShape,
    },
}

pub fn gemv_launch(dev: &Device, mut p: GemvParams) -> Result<()> {
    const PLAIN: [&str; GEMV_MAX_T] = ["gemv1_kernel", "gemv2_kernel", "gemv3_kernel", "gemv4_kernel"];
    const NORM: [&str; GEMV_MAX_T] = ["gemv_norm1_kernel", "gemv_norm2_kernel", "gemv_norm3_kernel", "gemv_norm4_kernel"];
    let sms = dev.sm_count.max(1);
    let pairs = if p.mode == crate::kernels::params::GEMV_OUT_F32 { p.n.div_ceil(2) } else { p.n / 2 };
    let resident = BLOCKS_PER_SM * sms;
    p.ksplit = ksplit(pairs, p.k / 8, resident);
    // As many rounds of block groups as the resident blocks need, then as few blocks as give
    // every block that many, so that none is left with one more group than the others.
    let groups = pairs.div_ceil(GEMV_WARPS / p.ksplit);
    let rounds = groups.div_ceil(resident).max(1);
    let blocks = groups.div_ceil(rounds);
    let name = if p.x.is_null() { NORM } else { PLAIN }[p.tokens as usize - 1];
    launch(dev, name, cfg((blocks, 1, 1), GEMV_WARPS * 32, 0), p)
}

/// Warps per row pair: 1 unless K is long (at least 8192, 1024 chunks), then the fewest (2, 4
/// or 8) that give twice as many warps as the `resident` blocks hold, while every warp keeps at
/// least one 16-byte chunk per lane. Measured on the H200 (docs/perf.md): splitting the 8B
/// down projection (K 14336) and the 1B one (K 8192) gains 8–13%, splitting K = 2048 or 4096
/// loses 8–28%.
fn ksplit(pairs: u32, chunks: u32, resident: u32) -> u32 {
    if chunks < 1024 {
        return 1;
    }
    let want = 2 * resident * GEMV_WARPS;
    let mut s = 1;
    while s < GEMV_WARPS && pairs * s < want && chunks / (2 * s) >= 32 {
        s *= 2;
    }
    s
}

/// `acc = in · wᵀ` for `tokens` rows (`w` row-major `[d_out, d_in]` bf16, f32 sums), written as
/// `out` says.
///
/// # Errors
/// A step or shape [`gemv_fits`] refuses, an odd `d_out` for SwiGLU, a `d_out` other than the
/// head shape's q|k|v width for RoPE, a cache of another K/V width, or a buffer too short.
pub fn gemv(
    dev: &Device,
    input: GemvIn<'_>,
    w: &CudaSlice<u16>,
    out: GemvOut<'_>,
    tokens: usize,
    d_in: usize,
    d_out: usize,
) -> Result<()> {
    use crate::kernels::params::{GEMV_OUT_F32, GEMV_OUT_ROPE_KV, GEMV_OUT_SWIGLU};
    if !gemv_fits(tokens, d_in) || u32::try_from(d_out).is_err() {
        return Err(shape_err("gemv", format!("[{tokens}, {d_in}] x [{d_out}, {d_in}]ᵀ (at most {GEMV_MAX_T} tokens, d_in a multiple of 8)")));
    }
    if d_out == 0 {
        return Ok(());
    }
    check_len("gemv", "w", w, d_out * d_in)?;
    let null = std::ptr::null_mut();
    let mut p = GemvParams {
        w: ptr(dev, w) as *const u16,
        x: null,
        residual: null as *const f32,
        norm_w: null,
        y: null as *mut f32,
        act: null,
        positions: null as *const i32,
        slots: null as *const u32,
        inv_freq: null as *const f32,
        k_cache: null,
        v_cache: null,
        tokens: tokens as u32,
        n: d_out as u32,
        k: d_in as u32,
        mode: GEMV_OUT_F32,
        half: 1,
        n_heads: 0,
        n_kv_heads: 0,
        head_dim: 0,
        ksplit: 1,
        beta: 0.0,
        eps: 0.0,
    };
    match input {
        GemvIn::Bf16(x) => {
            check_len("gemv", "x", x, tokens * d_in)?;
            p.x = ptr(dev, x) as *const u16;
        }
        GemvIn::Norm { residual, weight, eps } => {
            check_len("gemv", "residual", residual, tokens * d_in)?;
            check_len("gemv", "norm weight", weight, d_in)?;
            p.residual = ptr(dev, residual) as *const f32;
            p.norm_w = ptr(dev, weight) as *const u16;
            p.eps = eps;
        }
    }
    match out {
        GemvOut::F32 { y, beta } => {
            check_len("gemv", "y", y, tokens * d_out)?;
            p.y = ptr_mut(dev, y) as *mut f32;
            p.beta = beta;
        }
        GemvOut::Swiglu { act } => {
            if !d_out.is_multiple_of(2) {
                return Err(shape_err("gemv (SwiGLU)", format!("odd gate|up width {d_out}")));
            }
            check_len("gemv", "act", act, tokens * d_out / 2)?;
            p.act = ptr_mut(dev, act) as *mut u16;
            p.mode = GEMV_OUT_SWIGLU;
            p.half = (d_out / 2) as u32;
        }
        GemvOut::RopeKv { y, positions, slots, inv_freq, cache, layer, shape } => {
            shape.check()?;
            if d_out != shape.qkv_dim() || cache.kv_dim != shape.kv_dim() || layer >= cache.layers {
                return Err(shape_err(
                    "gemv (RoPE + K/V)",
                    format!("{d_out} rows for heads {shape:?}, cache kv_dim {} layer {layer}", cache.kv_dim),
                ));
            }
            check_len("gemv", "y", y, tokens * d_out)?;
            check_len("gemv", "positions", positions, tokens)?;
            check_len("gemv", "slots", slots, tokens)?;
            check_len("gemv", "inv_freq", inv_freq, shape.head_dim / 2)?;
            let (k, v) = cache.layer_ptrs(dev, layer);
            p.y = ptr_mut(dev, y) as *mut f32;
            p.positions = ptr(dev, positions) as *const i32;
            p.slots = ptr(dev, slots) as *const u32;
            p.inv_freq = ptr(dev, inv_freq) as *const f32;
            p.k_cache = k as *mut u16;
            p.v_cache = v as *mut u16;
            p.mode = GEMV_OUT_ROPE_KV;
            p.half = (shape.head_dim / 2) as u32;
            p.n_heads = shape.n_heads as u32;
            p.n_kv_heads = shape.n_kv_heads as u32;
            p.head_dim = shape.head_dim as u32;
        }
    }
    gemv_launch(dev, p)
}

#[cfg(test)]
mod tests {
    use super::ksplit;

    #[test]
    fn only_long_narrow_projections_split_k() {
        // H200, 132 SMs, 3 blocks a SM: 8B gate|up (14336 pairs) is wide enough; the 8B down
        // (2048 pairs, K 14336) and the 1B down (1024 pairs, K 8192) are split; K 4096 is not.
        let resident = 3 * 132;
        assert_eq!(ksplit(14336, 512, resident), 1);
        assert_eq!(ksplit(2048, 1792, resident), 4);
        assert_eq!(ksplit(1024, 1024, resident), 8);
        assert_eq!(ksplit(2048, 512, resident), 1);
        assert_eq!(ksplit(1536, 256, resident), 1);
        assert_eq!(ksplit(64, 8, resident), 1);
        for (pairs, chunks) in [(1, 1), (3, 100), (1, 1 << 20), (50_000, 4096)] {
            let s = ksplit(pairs, chunks, resident);
            assert!(s.is_power_of_two() && s <= 8);
        }
    }
}
