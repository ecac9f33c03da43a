//! Kernel-by-kernel and end-to-end checks of the CUDA backend against the CPU reference
//! (llm.c `dev/cuda` and ggml's `test-backend-ops` style): fresh random inputs at odd sizes,
//! outputs poisoned with NaN before each launch, normalised error ‖gpu − cpu‖ / ‖cpu‖ against
//! a tolerance set by the output precision (f32 outputs 1e-5; bf16 outputs 1e-2, a few bf16
//! ulps). Run by `vpd gpu-check` on the GPU machine (tools/gpu-check.sh).
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::device::Device;
use super::ops::{self, from_bf16, to_bf16, AttnMeta, HeadShape, KvCache};
use super::plan::FlatPlan;
use super::CudaBackend;
use crate::backend::cpu::attention::{paged_attention, AttnShape, TokenRef};
use crate::backend::cpu::kv_store::KvStore;
use crate::backend::cpu::{matmul, ops as cpu_ops, CpuBackend};
use crate::backend::{Argmax, Backend, LogitsWanted, SeqStep, StepPlan};
use crate::engine::{Engine, GenerateRequest};
use crate::error::Result;
use crate::model::{LayerWeights, LlamaWeights, Model};

pub(crate) const TOL_F32: f64 = 1e-5;
pub(crate) const TOL_BF16: f64 = 1e-2;

#[derive(Debug, Clone, Serialize)]
pub struct CheckRow {
    pub name: String,
    pub size: String,
    pub err: f64,
    pub tol: f64,
    pub pass: bool,
}

impl CheckRow {
    pub(crate) fn new(name: &str, size: String, err: f64, tol: f64) -> Self {
        // NaN never passes (an unwritten, poisoned output).
        Self { name: name.into(), size, err, tol, pass: err.is_finite() && err <= tol }
    }
}

/// ‖a − b‖ / ‖b‖ in f64 (‖a − b‖ when b = 0); NaN when anything is NaN.
pub fn norm_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let d = f64::from(x) - f64::from(y);
        num += d * d;
        den += f64::from(y) * f64::from(y);
    }
    if a.iter().chain(b).any(|v| v.is_nan()) {
        return f64::NAN;
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

pub(crate) fn randn(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale).collect()
}

/// Values exactly representable in bf16, so both sides start from the same inputs.
pub(crate) fn round_bf16(x: &[f32]) -> Vec<f32> {
    from_bf16(&to_bf16(x))
}

pub(crate) fn nan_f32(dev: &Device, n: usize) -> Result<cudarc::driver::CudaSlice<f32>> {
    dev.upload(&vec![f32::NAN; n])
}

pub(crate) fn nan_bf16(dev: &Device, n: usize) -> Result<cudarc::driver::CudaSlice<u16>> {
    dev.upload(&vec![0x7fc0u16; n])
}

/// `silu(gate) · up` of fused gate|up rows `[tokens, 2·ff]` on the CPU.
pub(crate) fn swiglu_ref(gate_up: &[f32], ff: usize) -> Vec<f32> {
    let (mut g, mut u) = (Vec::new(), Vec::new());
    for row in gate_up.chunks_exact(2 * ff) {
        g.extend_from_slice(&row[..ff]);
        u.extend_from_slice(&row[ff..]);
    }
    cpu_ops::silu_mul(&mut g, &u);
    g
}

/// Every kernel against its CPU reference at odd sizes.
///
/// # Errors
/// A device failure (a failed comparison is a row with `pass: false`, not an error).
pub fn kernel_checks(dev: &Device, seed: u64) -> Result<Vec<CheckRow>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut rows = Vec::new();
    // Embedding gather.
    for &(t, vocab, h) in &[(1usize, 111usize, 64usize), (7, 111, 99), (99, 1000, 4096)] {
        let table = round_bf16(&randn(&mut rng, vocab * h, 1.0));
        let ids: Vec<u32> = (0..t).map(|_| rng.random_range(0..vocab as u32)).collect();
        let (d_ids, d_table) = (dev.upload(&ids)?, dev.upload(&to_bf16(&table))?);
        let mut out = nan_f32(dev, t * h)?;
        ops::embedding(dev, &d_ids, &d_table, &mut out, t, h)?;
        let got = dev.download(&out, t * h)?;
        let want: Vec<f32> = ids.iter().flat_map(|&i| table[i as usize * h..][..h].to_vec()).collect();
        rows.push(CheckRow::new("embedding", format!("T={t} V={vocab} H={h}"), norm_err(&got, &want), TOL_F32));
    }
    // Fused residual add + RMSNorm, and the gathering form used before the LM head.
    // Rows of 4k floats take the vector path (16-byte loads, the row in registers), others not.
    for &(r, d, add) in &[(1usize, 7usize, true), (7, 99, false), (5, 12, true), (99, 4096, true), (7, 2048, false)] {
        let res = randn(&mut rng, r * d, 2.0);
        let x = randn(&mut rng, r * d, 1.0);
        let w = round_bf16(&randn(&mut rng, d, 1.5));
        let mut d_res = dev.upload(&res)?;
        let d_x = dev.upload(&x)?;
        let d_w = dev.upload(&to_bf16(&w))?;
        let mut out = nan_bf16(dev, r * d)?;
        ops::rms_norm(dev, add.then_some(&d_x), &mut d_res, &d_w, &mut out, None, r, d, 1e-5)?;
        let mut want_res = res.clone();
        if add {
            cpu_ops::add_assign(&mut want_res, &x);
        }
        let mut want = vec![0.0; r * d];
        cpu_ops::rms_norm(&want_res, &w, 1e-5, &mut want);
        let size = format!("rows={r} dim={d} add={add}");
        rows.push(CheckRow::new(
            "rms_norm out",
            size.clone(),
            norm_err(&from_bf16(&dev.download(&out, r * d)?), &want),
            TOL_BF16,
        ));
        rows.push(CheckRow::new(
            "rms_norm residual",
            size,
            norm_err(&dev.download(&d_res, r * d)?, &want_res),
            TOL_F32,
        ));
        // Gather rows (reverse order, one repeated).
        let idx: Vec<u32> = (0..r as u32).rev().chain(std::iter::once(0)).collect();
        let d_idx = dev.upload(&idx)?;
        let mut out = nan_bf16(dev, idx.len() * d)?;
        ops::rms_norm(dev, None, &mut d_res, &d_w, &mut out, Some((&d_idx, r)), idx.len(), d, 1e-5)?;
        let src: Vec<f32> = idx.iter().flat_map(|&i| want_res[i as usize * d..][..d].to_vec()).collect();
        let mut want = vec![0.0; src.len()];
        cpu_ops::rms_norm(&src, &w, 1e-5, &mut want);
        let got = from_bf16(&dev.download(&out, idx.len() * d)?);
        rows.push(CheckRow::new(
            "rms_norm gather",
            format!("rows={} dim={d}", idx.len()),
            norm_err(&got, &want),
            TOL_BF16,
        ));
    }
    // SwiGLU.
    // ff a multiple of 4 takes the vector path.
    for &(t, ff) in &[(1usize, 1usize), (7, 99), (3, 8), (99, 14336)] {
        let gu = randn(&mut rng, t * 2 * ff, 4.0);
        let d_gu = dev.upload(&gu)?;
        let mut out = nan_bf16(dev, t * ff)?;
        ops::swiglu(dev, &d_gu, &mut out, t, ff)?;
        let g = swiglu_ref(&gu, ff);
        let got = from_bf16(&dev.download(&out, t * ff)?);
        rows.push(CheckRow::new("swiglu", format!("T={t} ff={ff}"), norm_err(&got, &g), TOL_BF16));
    }
    // GEMM (cuBLAS bf16 in, f32 out), with and without accumulation into y.
    for &(t, din, dout, beta) in
        &[(1usize, 64usize, 111usize, 0.0f32), (7, 99, 4096, 1.0), (99, 4096, 1000, 0.0), (3, 4096, 14336, 1.0)]
    {
        let x = round_bf16(&randn(&mut rng, t * din, 1.0));
        let w = round_bf16(&randn(&mut rng, dout * din, 0.05));
        let y0 = randn(&mut rng, t * dout, 1.0);
        let (dx, dw) = (dev.upload(&to_bf16(&x))?, dev.upload(&to_bf16(&w))?);
        let mut dy = if beta == 0.0 { nan_f32(dev, t * dout)? } else { dev.upload(&y0)? };
        ops::gemm(dev, &dx, &dw, 0, &mut dy, t, din, dout, beta)?;
        let mut want = vec![0.0; t * dout];
        matmul::linear(&x, &w, &mut want, t, din, dout);
        if beta != 0.0 {
            cpu_ops::add_assign(&mut want, &y0);
        }
        let got = dev.download(&dy, t * dout)?;
        rows.push(CheckRow::new("gemm", format!("T={t} {din}->{dout} beta={beta}"), norm_err(&got, &want), 1e-4));
    }
    rows.extend(super::gemv_check::gemv_checks(dev, seed)?);
    rows.extend(rope_checks(dev, &mut rng)?);
    rows.extend(attention_checks(dev, &mut rng)?);
    rows.extend(kv_copy_checks(dev, &mut rng)?);
    rows.extend(super::sampling_check::sampling_checks(dev, seed)?);
    rows.extend(super::pick_check::pick_kernel_checks(dev, seed)?);
    rows.extend(super::tree_check::tree_checks(dev, seed)?);
    Ok(rows)
}

fn rope_checks(dev: &Device, rng: &mut ChaCha8Rng) -> Result<Vec<CheckRow>> {
    let mut rows = Vec::new();
    let cfg1b = crate::make_model::Preset::Llama32_1b.config();
    for &(t, nh, nkv, hd) in &[(1usize, 4usize, 2usize, 16usize), (7, 3, 1, 64), (99, 32, 8, 128)] {
        let shape = HeadShape { n_heads: nh, n_kv_heads: nkv, head_dim: hd };
        let mut cfg = cfg1b.clone();
        cfg.head_dim = hd; // llama3-scaled frequencies at this head size
        let inv = cfg.rope_inv_freq();
        let (blocks, bs) = (t.div_ceil(16) + 3, 16);
        let mut cache = KvCache::new(dev, 2, blocks, bs, shape.kv_dim())?;
        let qkv = randn(rng, t * shape.qkv_dim(), 1.0);
        let positions: Vec<i32> = (0..t).map(|_| rng.random_range(0..1000)).collect();
        // Distinct random slots.
        let mut all: Vec<u32> = (0..(blocks * bs) as u32).collect();
        for i in 0..all.len() {
            let j = rng.random_range(i..all.len());
            all.swap(i, j);
        }
        let slots = all[..t].to_vec();
        let mut d_qkv = dev.upload(&qkv)?;
        let (d_pos, d_slots, d_inv) = (dev.upload(&positions)?, dev.upload(&slots)?, dev.upload(&inv)?);
        ops::rope_kv(dev, &mut d_qkv, &d_pos, &d_slots, &d_inv, &mut cache, 1, shape, t)?;
        let got = dev.download(&d_qkv, qkv.len())?;
        let cache_host = from_bf16(&dev.download(&cache.buf, cache.buf.len())?);
        let mut want = qkv.clone();
        let (qd, kvd) = (shape.q_dim(), shape.kv_dim());
        let (mut got_k, mut want_k, mut got_v, mut want_v) = (vec![], vec![], vec![], vec![]);
        for (r, row) in want.chunks_exact_mut(shape.qkv_dim()).enumerate() {
            row[..qd + kvd]
                .chunks_exact_mut(hd)
                .for_each(|h| cpu_ops::rope_rotate_half(h, positions[r] as usize, &inv));
            want_k.extend_from_slice(&row[qd..qd + kvd]);
            want_v.extend_from_slice(&row[qd + kvd..]);
            let s = slots[r] as usize;
            got_k.extend_from_slice(&cache_host[2 * cache.plane() + s * kvd..][..kvd]);
            got_v.extend_from_slice(&cache_host[3 * cache.plane() + s * kvd..][..kvd]);
        }
        let size = format!("T={t} heads={nh}/{nkv} D={hd}");
        rows.push(CheckRow::new("rope q,k", size.clone(), norm_err(&got, &want), TOL_F32));
        rows.push(CheckRow::new("rope k->cache", size.clone(), norm_err(&got_k, &want_k), TOL_BF16));
        rows.push(CheckRow::new("rope v->cache", size, norm_err(&got_v, &want_v), TOL_BF16));
    }
    Ok(rows)
}

/// A plan of `n_seqs` sequences cycling through decode, chain verification, a token tree and
/// a prefill chunk, with committed contexts cycling through `contexts`; blocks are handed out
/// in a shuffled order so the block tables are not the identity.
pub fn mixed_plan(
    rng: &mut ChaCha8Rng,
    n_seqs: usize,
    contexts: &[usize],
    block_size: usize,
    vocab: u32,
) -> (StepPlan, usize) {
    let mut seqs = Vec::new();
    let mut next_block = 0u32;
    for s in 0..n_seqs {
        let start = contexts[s % contexts.len()];
        let (n, tree) = match s % 4 {
            0 => (1, None),
            1 => (5, None),
            2 => (7, Some(vec![-1, 0, 0, 1, 1, 2, -1])),
            _ => (13, None),
        };
        let blocks = (start + n).div_ceil(block_size);
        let table: Vec<u32> = (next_block..next_block + blocks as u32).rev().collect();
        next_block += blocks as u32;
        let logits = if s % 4 == 3 { LogitsWanted::Last } else { LogitsWanted::All };
        let tokens = (0..n).map(|_| rng.random_range(0..vocab)).collect();
        seqs.push(SeqStep { tokens, start_pos: start, block_table: table, tree_parents: tree, logits });
    }
    (StepPlan { seqs }, next_block as usize)
}

fn attention_checks(dev: &Device, rng: &mut ChaCha8Rng) -> Result<Vec<CheckRow>> {
    let mut rows = Vec::new();
    let cases: &[(usize, &[usize], HeadShape)] = &[
        (1, &[1], HeadShape { n_heads: 4, n_kv_heads: 2, head_dim: 16 }),
        (1, &[1000], HeadShape { n_heads: 32, n_kv_heads: 8, head_dim: 128 }),
        (7, &[1, 17, 1000], HeadShape { n_heads: 4, n_kv_heads: 2, head_dim: 16 }),
        (7, &[17, 1000, 1], HeadShape { n_heads: 9, n_kv_heads: 3, head_dim: 64 }),
        (99, &[1, 17, 1000], HeadShape { n_heads: 32, n_kv_heads: 8, head_dim: 128 }),
        (7, &[4096, 1, 17], HeadShape { n_heads: 32, n_kv_heads: 8, head_dim: 128 }),
        (7, &[4096, 1000], HeadShape { n_heads: 24, n_kv_heads: 3, head_dim: 64 }),
        (1, &[4096], HeadShape { n_heads: 32, n_kv_heads: 8, head_dim: 128 }),
        (7, &[17, 1000], HeadShape { n_heads: 3, n_kv_heads: 3, head_dim: 8 }),
        (7, &[17, 1000], HeadShape { n_heads: 6, n_kv_heads: 1, head_dim: 256 }),
        // Query tiles of 16 and 8 tokens (G = 1, 2). Context 14: a chain's first tokens see no
        // position of the tile the last one ends in, so with 5 splits their rows see nothing
        // in a split (max -inf, sum 0).
        (7, &[14, 1000], HeadShape { n_heads: 2, n_kv_heads: 2, head_dim: 64 }),
        (7, &[1, 300], HeadShape { n_heads: 4, n_kv_heads: 2, head_dim: 128 }),
        (7, &[14], HeadShape { n_heads: 32, n_kv_heads: 8, head_dim: 128 }),
    ];
    let bs = 16;
    for &(n_seqs, contexts, shape) in cases {
        let (plan, blocks) = mixed_plan(rng, n_seqs, contexts, bs, 100);
        let f = FlatPlan::build(&plan, blocks, bs, 100)?;
        let t = f.tokens.len();
        let kvd = shape.kv_dim();
        let mut kv = KvStore::new(1, blocks, bs, kvd);
        kv.k[0] = round_bf16(&randn(rng, blocks * bs * kvd, 1.0));
        kv.v[0] = round_bf16(&randn(rng, blocks * bs * kvd, 1.0));
        let mut cache = KvCache::new(dev, 1, blocks, bs, kvd)?;
        let mut host = to_bf16(&kv.k[0]);
        host.extend(to_bf16(&kv.v[0]));
        dev.upload_into(&host, cache.unshared_buf()?)?;
        let q = randn(rng, t * shape.q_dim(), 2.0);
        let d_q = dev.upload(&q)?;
        let meta = AttnMeta::upload(dev, &f)?;
        let tokens: Vec<TokenRef> = (0..t)
            .map(|i| TokenRef {
                seq: f.tok_seq[i] as usize,
                index: i - f.seq_tok_start[f.tok_seq[i] as usize] as usize,
            })
            .collect();
        let mut want = vec![0.0; t * shape.q_dim()];
        let cs = AttnShape { n_heads: shape.n_heads, n_kv_heads: shape.n_kv_heads, head_dim: shape.head_dim };
        paged_attention(&plan.seqs, &tokens, &q, &kv, 0, &cs, &mut want);
        let auto = ops::attn_splits(t, shape, f.max_context, dev.sm_count as usize);
        let mut tried = vec![1, 5];
        if !tried.contains(&auto) {
            tried.push(auto);
        }
        // Every kernel that takes the shape (each must match the CPU).
        let paths: Vec<ops::AttnPath> =
            [ops::AttnPath::Generic, ops::AttnPath::Gqa, ops::AttnPath::MmaPerToken, ops::AttnPath::Mma]
            .into_iter()
            .filter(|&p| ops::attn_path_allowed(p, shape, f.max_tree))
            .collect();
        for &path in &paths {
            for &splits in &tried {
                let mut partial = dev.alloc::<f32>(splits * t * shape.n_heads * (shape.head_dim + 2))?;
                let mut out = nan_bf16(dev, t * shape.q_dim())?;
                ops::paged_attn_on(
                    dev,
                    &d_q,
                    shape.q_dim(),
                    &mut cache,
                    0,
                    &meta,
                    shape,
                    &mut out,
                    &mut partial,
                    splits,
                    path,
                )?;
                let got = from_bf16(&dev.download(&out, t * shape.q_dim())?);
                let size = format!(
                    "S={n_seqs} T={t} ctx={contexts:?} heads={}/{} D={} splits={splits}",
                    shape.n_heads, shape.n_kv_heads, shape.head_dim
                );
                let name = match path {
                    ops::AttnPath::Mma => "paged_attn mma tiles",
                    ops::AttnPath::MmaPerToken => "paged_attn mma",
                    ops::AttnPath::Gqa => "paged_attn gqa",
                    ops::AttnPath::Generic => "paged_attn generic",
                };
                rows.push(CheckRow::new(name, size, norm_err(&got, &want), TOL_BF16));
            }
        }
    }
    Ok(rows)
}

fn kv_copy_checks(dev: &Device, rng: &mut ChaCha8Rng) -> Result<Vec<CheckRow>> {
    let (layers, blocks, bs, kvd) = (3, 7, 16, 99);
    let mut cache = KvCache::new(dev, layers, blocks, bs, kvd)?;
    let host = to_bf16(&randn(rng, cache.buf.len(), 1.0));
    dev.upload_into(&host, cache.unshared_buf()?)?;
    // A chain of moves where a later pair reads what an earlier one wrote.
    let src = [5u32, 17, 40, 3, 99];
    let dst = [17u32, 40, 41, 3, 0];
    ops::kv_copy(dev, &mut cache, &src, &dst)?;
    let got = dev.download(&cache.buf, cache.buf.len())?;
    let mut want = host.clone();
    let plane = cache.plane();
    for p in 0..2 * layers {
        for (&s, &d) in src.iter().zip(&dst) {
            let (s, d) = (p * plane + s as usize * kvd, p * plane + d as usize * kvd);
            want.copy_within(s..s + kvd, d);
        }
    }
    let err = norm_err(&from_bf16(&got), &from_bf16(&want));
    Ok(vec![CheckRow::new(
        "kv_copy",
        format!("layers={layers} slots={} kvd={kvd} pairs=5 in order", blocks * bs),
        err,
        0.0,
    )])
}

/// `weights` with every tensor rounded to bf16, the values the GPU holds: the CPU run on
/// these differs from the GPU only by activation precision.
pub fn bf16_weights(w: &LlamaWeights) -> LlamaWeights {
    let r = |x: &Vec<f32>| round_bf16(x);
    LlamaWeights {
        embed: r(&w.embed),
        norm: r(&w.norm),
        lm_head: w.lm_head.as_ref().map(r),
        layers: w
            .layers
            .iter()
            .map(|l| LayerWeights {
                attn_norm: r(&l.attn_norm),
                wq: r(&l.wq),
                wk: r(&l.wk),
                wv: r(&l.wv),
                wo: r(&l.wo),
                ffn_norm: r(&l.ffn_norm),
                w_gate: r(&l.w_gate),
                w_up: r(&l.w_up),
                w_down: r(&l.w_down),
            })
            .collect(),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GreedyRow {
    pub prompt: String,
    pub tokens: usize,
    /// Leading tokens where CUDA and the CPU (bf16 weights) agree.
    pub agree_cpu: usize,
    /// Leading tokens where CUDA agrees with an external reference (transformers), if given.
    pub agree_ref: Option<usize>,
}

/// `(name, prompt ids, reference greedy ids)`.
pub type Prompt = (String, Vec<u32>, Option<Vec<u32>>);

/// End to end on a model: (1) logits of a mixed step (decode, chain, tree, prefill over
/// cached prefixes) against the CPU backend; (2) greedy generation of each prompt on both.
///
/// # Errors
/// Loading or running either backend.
pub fn model_checks(
    model: &Model,
    prompts: &[Prompt],
    new_tokens: usize,
    seed: u64,
) -> Result<(Vec<CheckRow>, Vec<GreedyRow>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let cfg = model.config.clone();
    let wq = Arc::new(bf16_weights(&model.weights));
    let bs = 16;
    let vocab = cfg.vocab_size as u32;
    let mut rows = Vec::new();
    for &(n_seqs, ctx) in &[(1usize, 17usize), (7, 60), (13, 200)] {
        let contexts: Vec<usize> = (0..n_seqs).map(|s| 1 + (s * 37 + ctx) % ctx.max(1)).collect();
        let (step, blocks) = mixed_plan(&mut rng, n_seqs, &contexts, bs, vocab);
        let mut cpu = CpuBackend::new(cfg.clone(), wq.clone(), blocks, bs)?;
        let mut gpu = CudaBackend::new(cfg.clone(), wq.clone(), blocks, bs, 0)?;
        // Prefill each sequence's committed prefix as one causal chunk, then run the step.
        let prefill = StepPlan {
            seqs: step
                .seqs
                .iter()
                .map(|s| SeqStep {
                    tokens: (0..s.start_pos).map(|_| rng.random_range(0..vocab)).collect(),
                    start_pos: 0,
                    block_table: s.block_table.clone(),
                    tree_parents: None,
                    logits: LogitsWanted::Last,
                })
                .collect(),
        };
        let a = cpu.forward(&prefill)?;
        let b = gpu.forward(&prefill)?;
        rows.push(CheckRow::new(
            "model prefill logits",
            format!("S={n_seqs} ctx<={ctx}"),
            norm_err(&b.data, &a.data),
            2e-2,
        ));
        let a = cpu.forward(&step)?;
        let b = gpu.forward(&step)?;
        let size = format!("S={n_seqs} T={} mixed decode/chain/tree/prefill", step.num_tokens());
        rows.push(CheckRow::new("model step logits", size, norm_err(&b.data, &a.data), 2e-2));
        let err = if a.row_start == b.row_start { 0.0 } else { f64::NAN };
        rows.push(CheckRow::new("model step row_start", format!("S={n_seqs}"), err, 0.0));
        // Tree compaction and copy-on-write through the backend API, then one more step.
        let t0 = &step.seqs[0];
        let moves = [(t0.start_pos, 0usize)];
        cpu.move_slots(&t0.block_table, &moves)?;
        gpu.move_slots(&t0.block_table, &moves)?;
        let pairs: Vec<(u32, u32)> =
            step.seqs.iter().skip(1).map(|s| (s.block_table[0], step.seqs[0].block_table[0])).take(1).collect();
        cpu.copy_blocks(&pairs)?;
        gpu.copy_blocks(&pairs)?;
        let a = cpu.forward(&step)?;
        let b = gpu.forward(&step)?;
        rows.push(CheckRow::new("model step after copies", format!("S={n_seqs}"), norm_err(&b.data, &a.data), 2e-2));
        // The same step again, reduced to greedy tokens on the device: the argmax of the
        // logits it just returned, row for row (the step rewrites the same K/V).
        let best = gpu.forward_argmax(&step, cfg.num_hidden_layers)?;
        let want = Argmax::of(&b);
        let wrong = if best.row_start == want.row_start && best.ids.len() == want.ids.len() {
            best.ids.iter().zip(&want.ids).filter(|(x, y)| x != y).count() as f64
        } else {
            f64::NAN
        };
        rows.push(CheckRow::new("model step argmax on device", format!("S={n_seqs} rows={} (mismatches)", want.ids.len()), wrong, 0.0));
        // And sampled: draws, kept q rows and chain outcomes on the device (the same step again).
        rows.extend(super::pick_check::model_pick_check(&mut gpu, &step, cfg.num_hidden_layers, seed)?);
    }
    // Greedy generation.
    let max_len = prompts.iter().map(|p| p.1.len()).max().unwrap_or(0) + new_tokens + 1;
    let blocks = max_len.div_ceil(bs) + 1;
    let mut cpu = Engine::new(CpuBackend::new(cfg.clone(), wq.clone(), blocks, bs)?)?;
    let mut gpu = Engine::new(CudaBackend::new(cfg.clone(), wq.clone(), blocks, bs, 0)?)?;
    // The same on a backend that replays decode steps from CUDA graphs: the same tokens.
    let mut graphed = Engine::new(CudaBackend::new(cfg.clone(), wq, blocks, bs, 0)?)?;
    graphed.backend_mut().set_decode_graphs(true);
    let mut greedy = Vec::new();
    let mut graph_diverged = 0usize;
    for (name, ids, reference) in prompts {
        let req = GenerateRequest {
            prompt_ids: ids.clone(),
            max_new_tokens: new_tokens,
            sampling: vpd_sampling::SamplingParams::greedy(),
            ignore_eos: true,
        };
        let a = cpu.generate(&req)?.token_ids;
        let b = gpu.generate(&req)?.token_ids;
        let c = graphed.generate(&req)?.token_ids;
        let prefix = |x: &[u32], y: &[u32]| x.iter().zip(y).take_while(|(p, q)| p == q).count();
        graph_diverged += usize::from(c.len() != b.len() || prefix(&b, &c) < b.len());
        greedy.push(GreedyRow {
            prompt: name.clone(),
            tokens: b.len(),
            agree_cpu: prefix(&a, &b),
            agree_ref: reference.as_ref().map(|r| prefix(r, &b)),
        });
    }
    let (replays, captures) = graphed.backend().decode_graph_counts();
    let size = format!("{} prompts, {captures} graphs, {replays} replays (prompts diverged)", prompts.len());
    // Replays must have happened, or the row checks nothing.
    let err = if replays > 0 { graph_diverged as f64 } else { f64::NAN };
    rows.push(CheckRow::new("greedy tokens with decode graphs", size, err, 0.0));
    Ok((rows, greedy))
}
