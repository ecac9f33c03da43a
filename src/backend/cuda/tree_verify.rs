//! Rust wrappers of `csrc/tree_verify.cu`: exact speculative verification of token trees
//! (SpecInfer's multi-step speculative sampling, Miao et al. 2024; Recursive Speculative
//! Decoding, Jeon et al. 2024), every tree of a batch in one launch, with the accepted path and
//! tokens written on the device. Token for token equal to
//! `vpd_sampling::kernel_ref::verify_tree_ref`; greedy equal to `vpd_sampling::verify_tree_greedy`.
//!
//! Extents are checked here; the trees themselves live on the device, so the kernel clamps
//! node counts and never follows a parent that does not precede its child.
#![allow(unsafe_code)]

use cudarc::driver::{CudaSlice, DeviceRepr};
use vpd_sampling::ChildSampling;

use super::device::{ptr, ptr_mut, Device};
use super::ops::{cfg, check_len, launch, shape_err};
use super::sampling::{check_rows, check_vocab, SAMPLING_THREADS};
use crate::error::Result;
use crate::kernels::params::TreeVerifyParams;

// SAFETY: a plain C struct of integers and device addresses (bindgen output with layout
// tests); the kernels take it by value, exactly as declared in vpd_params.h.
unsafe impl DeviceRepr for TreeVerifyParams {}

/// Most nodes per tree.
pub const MAX_TREE_NODES: usize = vpd_sampling::kernel_ref::MAX_TREE_NODES;

/// A batch of `rows` trees of up to `max_nodes` nodes.
pub struct TreeBatch<'a> {
    /// `[rows, max_nodes + 1, vocab]`: processed target probabilities (greedy: logits); row 0
    /// is the position after the prefix, row `i + 1` the position after node `i`.
    pub target: &'a CudaSlice<f32>,
    /// `[rows, max_nodes]` node tokens.
    pub tokens: &'a CudaSlice<u32>,
    /// `[rows, max_nodes]` parents (`-1`: a child of the prefix).
    pub parents: &'a CudaSlice<i32>,
    /// `[rows]` nodes per tree; values above `max_nodes` are clamped on the device.
    pub num_nodes: &'a CudaSlice<u32>,
    pub rows: usize,
    pub vocab: usize,
    pub max_nodes: usize,
}

/// What sampling mode needs beyond the batch.
pub struct TreeDraft<'a> {
    /// `[rows, max_nodes + 1, vocab]`: the distribution each position's children were drawn from.
    pub draft: &'a CudaSlice<f32>,
    /// `[rows, max_nodes + 1]`: 0 where the children are deterministic (a one-hot proposal).
    pub has_draft: &'a CudaSlice<u8>,
    /// `[rows]` Philox keys.
    pub seed: &'a CudaSlice<u64>,
    /// `[rows, vocab]` scratch for residual masses.
    pub workspace: &'a mut CudaSlice<u64>,
    pub mode: ChildSampling,
}

/// Device outputs: `accepted[rows]`, `path[rows, max_nodes]` (accepted node indices, from the
/// prefix down) and `tokens[rows, max_nodes + 1]` (their tokens, then the next token).
pub struct TreeOut<'a> {
    pub accepted: &'a mut CudaSlice<u32>,
    pub path: &'a mut CudaSlice<u32>,
    pub tokens: &'a mut CudaSlice<u32>,
}

pub fn tree_verify_launch(dev: &Device, p: TreeVerifyParams, greedy: bool) -> Result<()> {
    let name = if greedy { "tree_verify_greedy_kernel" } else { "tree_verify_kernel" };
    launch(dev, name, cfg((p.rows, 1, 1), SAMPLING_THREADS, 0), p)
}

fn tree_params(
    dev: &Device,
    op: &'static str,
    b: &TreeBatch<'_>,
    out: &mut TreeOut<'_>,
    draft: Option<&mut TreeDraft<'_>>,
    offset: u64,
) -> Result<TreeVerifyParams> {
    check_vocab(op, b.vocab)?;
    check_rows(op, b.rows)?;
    if b.max_nodes > MAX_TREE_NODES {
        return Err(shape_err(op, format!("max_nodes {} (need <= {MAX_TREE_NODES})", b.max_nodes)));
    }
    let (rows, v, n) = (b.rows, b.vocab, b.max_nodes);
    check_len(op, "target", b.target, rows * (n + 1) * v)?;
    check_len(op, "tokens", b.tokens, rows * n)?;
    check_len(op, "parents", b.parents, rows * n)?;
    check_len(op, "num_nodes", b.num_nodes, rows)?;
    check_len(op, "accepted", out.accepted, rows)?;
    check_len(op, "path", out.path, rows * n)?;
    check_len(op, "out tokens", out.tokens, rows * (n + 1))?;
    let mut p = TreeVerifyParams {
        target: ptr(dev, b.target) as *const f32,
        draft: std::ptr::null(),
        has_draft: std::ptr::null(),
        tokens: ptr(dev, b.tokens) as *const u32,
        parents: ptr(dev, b.parents) as *const i32,
        num_nodes: ptr(dev, b.num_nodes) as *const u32,
        seed: std::ptr::null(),
        workspace: std::ptr::null_mut(),
        accepted: ptr_mut(dev, out.accepted) as *mut u32,
        out_path: ptr_mut(dev, out.path) as *mut u32,
        out_tokens: ptr_mut(dev, out.tokens) as *mut u32,
        offset,
        rows: rows as u32,
        vocab: v as u32,
        max_nodes: n as u32,
        without_replacement: 0,
    };
    if let Some(d) = draft {
        check_len(op, "draft", d.draft, rows * (n + 1) * v)?;
        check_len(op, "has_draft", d.has_draft, rows * (n + 1))?;
        check_len(op, "seed", d.seed, rows)?;
        check_len(op, "workspace", d.workspace, rows * v)?;
        p.draft = ptr(dev, d.draft) as *const f32;
        p.has_draft = ptr(dev, d.has_draft) as *const u8;
        p.seed = ptr(dev, d.seed) as *const u64;
        p.workspace = ptr_mut(dev, d.workspace) as *mut u64;
        p.without_replacement = u32::from(d.mode == ChildSampling::WithoutReplacement);
    }
    Ok(p)
}

/// Exact tree verification of every row in one launch; try `k` of row `r` uses Philox counter
/// `(r, k, offset)`. Matches `vpd_sampling::kernel_ref::verify_tree_ref` token for token.
///
/// # Errors
/// `UnsupportedShape` for a bad vocabulary or more than 64 nodes; a backend error for short
/// buffers or a failed launch.
pub fn verify_tree(dev: &Device, b: &TreeBatch<'_>, d: &mut TreeDraft<'_>, out: &mut TreeOut<'_>, offset: u64) -> Result<()> {
    let p = tree_params(dev, "verify_tree", b, out, Some(d), offset)?;
    tree_verify_launch(dev, p, false)
}

/// Greedy tree verification on target logits: descend into the first child equal to the
/// row's argmax, then emit the argmax (`vpd_sampling::verify_tree_greedy`).
///
/// # Errors
/// As [`verify_tree`].
pub fn verify_tree_greedy(dev: &Device, b: &TreeBatch<'_>, out: &mut TreeOut<'_>) -> Result<()> {
    let p = tree_params(dev, "verify_tree_greedy", b, out, None, 0)?;
    tree_verify_launch(dev, p, true)
}
