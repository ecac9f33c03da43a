//! GPU checks of `csrc/gemv.cu` for `vpd gpu-check`: each input form (bf16 rows, the fused
//! RMSNorm of an f32 residual) and each epilogue (f32 with and without the residual add,
//! SwiGLU, RoPE with the K/V cache write) against the CPU reference ops at odd sizes (token
//! counts 1..=4, widths not multiples of the warp's row pair), outputs poisoned with NaN.
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::check::{nan_bf16, nan_f32, norm_err, randn, round_bf16, swiglu_ref, CheckRow, TOL_BF16, TOL_F32};
use super::device::Device;
use super::gemv::{gemv, GemvIn, GemvOut};
use super::ops::{from_bf16, to_bf16, HeadShape, KvCache};
use crate::backend::cpu::{matmul, ops as cpu_ops};
use crate::error::Result;

/// f32 sums in another order than the CPU's: a few ulps of the output norm.
const TOL_SUM: f64 = 1e-4;

/// The kernel's input rows on the host: bf16 `x`, or `bf16(RMSNorm(residual))` as it computes them.
fn input_rows(rng: &mut ChaCha8Rng, t: usize, din: usize, norm: bool) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    if norm {
        let res = randn(rng, t * din, 2.0);
        let w = round_bf16(&randn(rng, din, 1.5));
        let mut normed = vec![0.0; t * din];
        cpu_ops::rms_norm(&res, &w, 1e-5, &mut normed);
        (round_bf16(&normed), res, w)
    } else {
        (round_bf16(&randn(rng, t * din, 1.0)), Vec::new(), Vec::new())
    }
}

/// Every GEMV form against the CPU reference.
///
/// # Errors
/// A device failure (a failed comparison is a row with `pass: false`).
pub fn gemv_checks(dev: &Device, seed: u64) -> Result<Vec<CheckRow>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6e6d);
    let mut rows = Vec::new();
    // f32 out, bf16 or normed input, with and without the residual add.
    for &(t, din, dout, norm, beta) in &[
        (1usize, 8usize, 1usize, false, 0.0f32),
        (1, 64, 111, true, 0.0),
        (2, 200, 6145, false, 1.0),
        (3, 4096, 99, true, 1.0),
        (4, 14336, 4096, false, 1.0),
        (4, 2048, 1001, true, 0.0),
    ] {
        let (x, res, nw) = input_rows(&mut rng, t, din, norm);
        let w = round_bf16(&randn(&mut rng, dout * din, 0.05));
        let y0 = randn(&mut rng, t * dout, 1.0);
        let dw = dev.upload(&to_bf16(&w))?;
        let mut dy = if beta == 0.0 { nan_f32(dev, t * dout)? } else { dev.upload(&y0)? };
        let (dx, dres, dnw) = (dev.upload(&to_bf16(&x))?, dev.upload(&res)?, dev.upload(&to_bf16(&nw))?);
        let input = if norm { GemvIn::Norm { residual: &dres, weight: &dnw, eps: 1e-5 } } else { GemvIn::Bf16(&dx) };
        gemv(dev, input, &dw, GemvOut::F32 { y: &mut dy, beta }, t, din, dout)?;
        let mut want = vec![0.0; t * dout];
        matmul::linear(&x, &w, &mut want, t, din, dout);
        if beta != 0.0 {
            cpu_ops::add_assign(&mut want, &y0);
        }
        let size = format!("T={t} {din}->{dout} norm={norm} beta={beta}");
        rows.push(CheckRow::new("gemv", size, norm_err(&dev.download(&dy, t * dout)?, &want), TOL_SUM));
    }
    // SwiGLU over gate|up rows, normed input (the MLP's first projection).
    for &(t, din, ff) in &[(1usize, 64usize, 160usize), (3, 4096, 99), (4, 2048, 8192)] {
        let (x, res, nw) = input_rows(&mut rng, t, din, true);
        let w = round_bf16(&randn(&mut rng, 2 * ff * din, 0.05));
        let (dw, dres, dnw) = (dev.upload(&to_bf16(&w))?, dev.upload(&res)?, dev.upload(&to_bf16(&nw))?);
        let mut act = nan_bf16(dev, t * ff)?;
        let input = GemvIn::Norm { residual: &dres, weight: &dnw, eps: 1e-5 };
        gemv(dev, input, &dw, GemvOut::Swiglu { act: &mut act }, t, din, 2 * ff)?;
        let mut gu = vec![0.0; t * 2 * ff];
        matmul::linear(&x, &w, &mut gu, t, din, 2 * ff);
        let g = swiglu_ref(&gu, ff);
        let got = from_bf16(&dev.download(&act, t * ff)?);
        rows.push(CheckRow::new("gemv swiglu", format!("T={t} {din}->2x{ff}"), norm_err(&got, &g), TOL_BF16));
    }
    rows.extend(rope_checks(dev, &mut rng)?);
    Ok(rows)
}

/// The fused q|k|v projection: RoPE on q and k, k and v to their cache slots.
fn rope_checks(dev: &Device, rng: &mut ChaCha8Rng) -> Result<Vec<CheckRow>> {
    let mut rows = Vec::new();
    let cfg1b = crate::make_model::Preset::Llama32_1b.config();
    for &(t, din, nh, nkv, hd) in &[(1usize, 64usize, 4usize, 2usize, 16usize), (3, 200, 3, 1, 64), (4, 4096, 32, 8, 128)] {
        let shape = HeadShape { n_heads: nh, n_kv_heads: nkv, head_dim: hd };
        let dout = shape.qkv_dim();
        let mut cfg = cfg1b.clone();
        cfg.head_dim = hd;
        let inv = cfg.rope_inv_freq();
        let (blocks, bs) = (4, 16);
        let mut cache = KvCache::new(dev, 2, blocks, bs, shape.kv_dim())?;
        let (x, res, nw) = input_rows(rng, t, din, true);
        let w = round_bf16(&randn(rng, dout * din, 0.05));
        let positions: Vec<i32> = (0..t).map(|_| rng.random_range(0..5000)).collect();
        let slots: Vec<u32> = (0..t as u32).map(|i| 5 + 13 * i).collect();
        let (dw, dres, dnw) = (dev.upload(&to_bf16(&w))?, dev.upload(&res)?, dev.upload(&to_bf16(&nw))?);
        let (d_pos, d_slots, d_inv) = (dev.upload(&positions)?, dev.upload(&slots)?, dev.upload(&inv)?);
        let mut y = nan_f32(dev, t * dout)?;
        let out = GemvOut::RopeKv {
            y: &mut y,
            positions: &d_pos,
            slots: &d_slots,
            inv_freq: &d_inv,
            cache: &mut cache,
            layer: 1,
            shape,
        };
        gemv(dev, GemvIn::Norm { residual: &dres, weight: &dnw, eps: 1e-5 }, &dw, out, t, din, dout)?;
        let mut want = vec![0.0; t * dout];
        matmul::linear(&x, &w, &mut want, t, din, dout);
        let (qd, kvd) = (shape.q_dim(), shape.kv_dim());
        let cache_host = from_bf16(&dev.download(&cache.buf, cache.buf.len())?);
        let (mut got_kv, mut want_kv) = (Vec::new(), Vec::new());
        for (r, row) in want.chunks_exact_mut(dout).enumerate() {
            row[..qd + kvd].chunks_exact_mut(hd).for_each(|h| cpu_ops::rope_rotate_half(h, positions[r] as usize, &inv));
            want_kv.extend_from_slice(&row[qd..]);
            let s = slots[r] as usize;
            got_kv.extend_from_slice(&cache_host[2 * cache.plane() + s * kvd..][..kvd]);
            got_kv.extend_from_slice(&cache_host[3 * cache.plane() + s * kvd..][..kvd]);
        }
        let size = format!("T={t} {din}-> heads {nh}/{nkv} D={hd}");
        let got = dev.download(&y, t * dout)?;
        rows.push(CheckRow::new("gemv rope q,k,v", size.clone(), norm_err(&got, &want), TOL_SUM.max(TOL_F32)));
        rows.push(CheckRow::new("gemv rope k,v->cache", size, norm_err(&got_kv, &want_kv), TOL_BF16));
    }
    Ok(rows)
}
