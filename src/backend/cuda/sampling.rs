//! Rust wrappers of `csrc/sampling.cu`: the fused sampler (temperature → top-k → top-p →
//! softmax → Philox draw, greedy = argmax) and chain speculative verification (Leviathan et al.
//! 2023; all L positions and the bonus token in one launch, accepted counts and tokens written
//! on the device). Both reproduce `vpd_sampling::kernel_ref` token for token; see that module
//! for the arithmetic. Nothing here synchronises with the host: advance `offset` per step.
//!
//! Extents are checked against the buffers before the struct is packed; values that live on
//! the device (draft lengths, draft tokens) are clamped or rejected inside the kernel instead,
//! since reading them here would need a synchronisation.
#![allow(unsafe_code)]

use cudarc::driver::{CudaSlice, DeviceRepr};

use super::device::{ptr, ptr_mut, Device};
use super::ops::{cfg, check_len, launch, shape_err};
use crate::error::Result;
use crate::kernels::params::{ChainVerifyParams, SampleParams};

// SAFETY: plain C structs of integers and device addresses (bindgen output with layout tests);
// the kernels take them by value, exactly as declared in vpd_params.h.
unsafe impl DeviceRepr for SampleParams {}
unsafe impl DeviceRepr for ChainVerifyParams {}

/// Threads per row; the kernels are compiled for exactly this block size.
pub const SAMPLING_THREADS: u32 = 1024;
/// Largest vocabulary: `vocab · 2^44` fixed-point masses must fit a `u64`.
pub const MAX_VOCAB: usize = 1 << 20;
/// Longest draft chain per row.
pub const MAX_DRAFT: usize = vpd_sampling::kernel_ref::MAX_DRAFT;

pub(super) fn check_vocab(op: &'static str, vocab: usize) -> Result<()> {
    if vocab == 0 || vocab > MAX_VOCAB {
        return Err(shape_err(op, format!("vocab {vocab} (need 1..={MAX_VOCAB})")));
    }
    Ok(())
}

pub(super) fn check_rows(op: &'static str, rows: usize) -> Result<()> {
    if rows > i32::MAX as usize {
        return Err(shape_err(op, format!("{rows} rows")));
    }
    Ok(())
}

/// Per-row sampling parameters on the device, `[rows]` each.
pub struct RowParams<'a> {
    pub temperature: &'a CudaSlice<f32>,
    pub top_k: &'a CudaSlice<u32>,
    pub top_p: &'a CudaSlice<f32>,
    pub seed: &'a CudaSlice<u64>,
}

pub fn sample_launch(dev: &Device, p: SampleParams) -> Result<()> {
    launch(dev, "sample_kernel", cfg((p.rows, 1, 1), SAMPLING_THREADS, 0), p)
}

/// `out[r]` = a draw from row `r` of `logits` (`[rows, vocab]`) under row `r`'s parameters,
/// with Philox counter `(r, 0, offset)` and key `seed[r]`.
///
/// # Errors
/// `UnsupportedShape` for `vocab` outside `1..=2^20`; a backend error for short buffers or a
/// failed launch.
pub fn sample(
    dev: &Device,
    logits: &CudaSlice<f32>,
    rp: &RowParams<'_>,
    out: &mut CudaSlice<u32>,
    rows: usize,
    vocab: usize,
    offset: u64,
) -> Result<()> {
    let mut p = sample_params(dev, "sample", logits, rp, out, rows, vocab)?;
    p.offset = offset;
    sample_launch(dev, p)
}

/// The checked [`SampleParams`] of a launch over `rows` rows: no per-row counters, no rows
/// written, offset 0 (the callers set what they use).
fn sample_params(
    dev: &Device,
    op: &'static str,
    logits: &CudaSlice<f32>,
    rp: &RowParams<'_>,
    out: &mut CudaSlice<u32>,
    rows: usize,
    vocab: usize,
) -> Result<SampleParams> {
    check_vocab(op, vocab)?;
    check_rows(op, rows)?;
    check_len(op, "logits", logits, rows * vocab)?;
    check_len(op, "temperature", rp.temperature, rows)?;
    check_len(op, "top_k", rp.top_k, rows)?;
    check_len(op, "top_p", rp.top_p, rows)?;
    check_len(op, "seed", rp.seed, rows)?;
    check_len(op, "out", out, rows)?;
    Ok(SampleParams {
        logits: ptr(dev, logits) as *const f32,
        temperature: ptr(dev, rp.temperature) as *const f32,
        top_k: ptr(dev, rp.top_k) as *const u32,
        top_p: ptr(dev, rp.top_p) as *const f32,
        seed: ptr(dev, rp.seed) as *const u64,
        counter: std::ptr::null(),
        out: ptr_mut(dev, out) as *mut u32,
        probs: std::ptr::null_mut(),
        offset: 0,
        rows: rows as u32,
        vocab: vocab as u32,
        stream: 0,
    })
}

/// Per-row Philox counters of a [`sample_rows`] launch: row `r` draws with counter
/// `(stream, 0, counter[r])` under key `seed[r]`, whatever else shares the launch.
pub struct RowCounters<'a> {
    pub counter: &'a CudaSlice<u64>,
    pub stream: u32,
}

/// [`sample`] with a Philox counter per row, and each row's processed distribution written to
/// `probs` (`[rows, vocab]`) when given: `vpd_sampling::kernel_ref::probs_ref` exactly, token
/// for token `sample_ref(row, params, counter[r], stream)`.
///
/// # Errors
/// As [`sample`].
#[allow(clippy::too_many_arguments)]
pub fn sample_rows(
    dev: &Device,
    logits: &CudaSlice<f32>,
    rp: &RowParams<'_>,
    ctr: &RowCounters<'_>,
    out: &mut CudaSlice<u32>,
    probs: Option<&mut CudaSlice<f32>>,
    rows: usize,
    vocab: usize,
) -> Result<()> {
    const OP: &str = "sample_rows";
    let mut p = sample_params(dev, OP, logits, rp, out, rows, vocab)?;
    check_len(OP, "counter", ctr.counter, rows)?;
    p.counter = ptr(dev, ctr.counter) as *const u64;
    p.stream = ctr.stream;
    if let Some(pr) = probs {
        check_len(OP, "probs", pr, rows * vocab)?;
        p.probs = ptr_mut(dev, pr) as *mut f32;
    }
    sample_launch(dev, p)
}

/// The chain batch: `rows` sequences of up to `max_draft` drafts each.
pub struct ChainBatch<'a> {
    /// `[rows, max_draft + 1, vocab]`: processed target probabilities (greedy: logits).
    pub target: &'a CudaSlice<f32>,
    /// `[rows, max_draft]` drafted tokens.
    pub draft_tokens: &'a CudaSlice<u32>,
    /// `[rows]` drafts per row; values above `max_draft` are clamped on the device.
    pub num_drafts: &'a CudaSlice<u32>,
    pub rows: usize,
    pub vocab: usize,
    pub max_draft: usize,
}

/// Device outputs of verification: `accepted[rows]` and `tokens[rows, max_draft + 1]`
/// (accepted drafts, then the residual or bonus token).
pub struct ChainOut<'a> {
    pub accepted: &'a mut CudaSlice<u32>,
    pub tokens: &'a mut CudaSlice<u32>,
}

pub fn chain_verify_launch(dev: &Device, p: ChainVerifyParams, greedy: bool) -> Result<()> {
    let name = if greedy { "chain_verify_greedy_kernel" } else { "chain_verify_kernel" };
    launch(dev, name, cfg((p.rows, 1, 1), SAMPLING_THREADS, 0), p)
}

fn chain_params(
    dev: &Device,
    op: &'static str,
    b: &ChainBatch<'_>,
    out: &mut ChainOut<'_>,
    draft: Option<(&CudaSlice<f32>, &CudaSlice<u64>)>,
    offset: u64,
) -> Result<ChainVerifyParams> {
    check_vocab(op, b.vocab)?;
    check_rows(op, b.rows)?;
    if b.max_draft > MAX_DRAFT {
        return Err(shape_err(op, format!("max_draft {} (need <= {MAX_DRAFT})", b.max_draft)));
    }
    let (rows, v, l) = (b.rows, b.vocab, b.max_draft);
    check_len(op, "target", b.target, rows * (l + 1) * v)?;
    check_len(op, "draft_tokens", b.draft_tokens, rows * l)?;
    check_len(op, "num_drafts", b.num_drafts, rows)?;
    check_len(op, "accepted", out.accepted, rows)?;
    check_len(op, "tokens", out.tokens, rows * (l + 1))?;
    if let Some((q, seed)) = draft {
        check_len(op, "draft", q, rows * l * v)?;
        check_len(op, "seed", seed, rows)?;
    }
    Ok(ChainVerifyParams {
        target: ptr(dev, b.target) as *const f32,
        draft: draft.map_or(std::ptr::null(), |(q, _)| ptr(dev, q) as *const f32),
        draft_rows: std::ptr::null(),
        target_row: std::ptr::null(),
        draft_tokens: ptr(dev, b.draft_tokens) as *const u32,
        num_drafts: ptr(dev, b.num_drafts) as *const u32,
        seed: draft.map_or(std::ptr::null(), |(_, s)| ptr(dev, s) as *const u64),
        counter: std::ptr::null(),
        accepted: ptr_mut(dev, out.accepted) as *mut u32,
        out_tokens: ptr_mut(dev, out.tokens) as *mut u32,
        offset,
        rows: rows as u32,
        vocab: v as u32,
        max_draft: l as u32,
    })
}

/// Chain speculative sampling of every row in one launch: `draft` is `[rows, max_draft, vocab]`
/// drafter probabilities, `seed` `[rows]` Philox keys; position `i` of row `r` uses counter
/// `(r, i, offset)`. Matches `vpd_sampling::kernel_ref::verify_chain_ref` exactly.
///
/// # Errors
/// `UnsupportedShape` for a bad vocabulary or `max_draft > 16`; a backend error for short
/// buffers or a failed launch.
pub fn verify_chain(
    dev: &Device,
    b: &ChainBatch<'_>,
    draft: &CudaSlice<f32>,
    seed: &CudaSlice<u64>,
    out: &mut ChainOut<'_>,
    offset: u64,
) -> Result<()> {
    let p = chain_params(dev, "verify_chain", b, out, Some((draft, seed)), offset)?;
    chain_verify_launch(dev, p, false)
}

/// Greedy chain verification on target logits: accept while the draft equals the row's argmax,
/// then emit the argmax (`vpd_sampling::verify_chain_greedy`).
///
/// # Errors
/// As [`verify_chain`].
pub fn verify_chain_greedy(dev: &Device, b: &ChainBatch<'_>, out: &mut ChainOut<'_>) -> Result<()> {
    let p = chain_params(dev, "verify_chain_greedy", b, out, None, 0)?;
    chain_verify_launch(dev, p, true)
}

/// Chains laid out as a step leaves them: chain `r`'s `num_drafts[r] + 1` target rows start at
/// row `target_row[r]` of `target` (`[target_rows, vocab]`), and its drafts' q rows are
/// anywhere on the device (a drafter's own buffers).
pub struct ChainRows<'a> {
    pub target: &'a CudaSlice<f32>,
    pub target_rows: usize,
    /// `[rows]` first target row of each chain; each chain's rows must lie inside `target`
    /// (the caller builds them from the step's row layout).
    pub target_row: &'a CudaSlice<u32>,
    /// `[rows, max_draft]` device address of each q row; 0: one-hot at the draft (a
    /// deterministic draft). Each address must name `vocab` live f32 values.
    pub draft_rows: &'a CudaSlice<u64>,
    pub draft_tokens: &'a CudaSlice<u32>,
    pub num_drafts: &'a CudaSlice<u32>,
    pub seed: &'a CudaSlice<u64>,
    /// `[rows]` Philox offset of each chain (counter word 0 is 0).
    pub counter: &'a CudaSlice<u64>,
    pub rows: usize,
    pub vocab: usize,
    pub max_draft: usize,
}

/// [`verify_chain`] over chains laid out by [`ChainRows`]: chain `r` equals
/// `kernel_ref::verify_chain_ref(p rows, q rows, drafts, seed[r], counter[r], 0)`.
///
/// # Safety
/// Every non-zero entry of `draft_rows` must be the address of `vocab` f32 values that stay
/// allocated, and are not written, until the launch has finished.
///
/// # Errors
/// As [`verify_chain`], and `target_rows` too short for `rows` chains of `max_draft + 1`
/// rows at most.
pub unsafe fn verify_chain_rows(dev: &Device, b: &ChainRows<'_>, out: &mut ChainOut<'_>) -> Result<()> {
    const OP: &str = "verify_chain_rows";
    check_vocab(OP, b.vocab)?;
    check_rows(OP, b.rows)?;
    if b.max_draft > MAX_DRAFT {
        return Err(shape_err(OP, format!("max_draft {} (need <= {MAX_DRAFT})", b.max_draft)));
    }
    let (rows, l) = (b.rows, b.max_draft);
    check_len(OP, "target", b.target, b.target_rows * b.vocab)?;
    check_len(OP, "target_row", b.target_row, rows)?;
    check_len(OP, "draft_rows", b.draft_rows, rows * l)?;
    check_len(OP, "draft_tokens", b.draft_tokens, rows * l)?;
    check_len(OP, "num_drafts", b.num_drafts, rows)?;
    check_len(OP, "seed", b.seed, rows)?;
    check_len(OP, "counter", b.counter, rows)?;
    check_len(OP, "accepted", out.accepted, rows)?;
    check_len(OP, "tokens", out.tokens, rows * (l + 1))?;
    let p = ChainVerifyParams {
        target: ptr(dev, b.target) as *const f32,
        draft: std::ptr::null(),
        draft_rows: ptr(dev, b.draft_rows) as *const *const f32,
        target_row: ptr(dev, b.target_row) as *const u32,
        draft_tokens: ptr(dev, b.draft_tokens) as *const u32,
        num_drafts: ptr(dev, b.num_drafts) as *const u32,
        seed: ptr(dev, b.seed) as *const u64,
        counter: ptr(dev, b.counter) as *const u64,
        accepted: ptr_mut(dev, out.accepted) as *mut u32,
        out_tokens: ptr_mut(dev, out.tokens) as *mut u32,
        offset: 0,
        rows: rows as u32,
        vocab: b.vocab as u32,
        max_draft: l as u32,
    };
    chain_verify_launch(dev, p, false)
}
