//! Rust wrappers of the `csrc/` kernel families and the cuBLAS GEMM: the third tier of
//! STYLE.md 5's naming. The kernels come as fatbins loaded through the driver API, which has
//! no host object code to link, so the middle "launcher" tier is the `*_launch` function here
//! that picks the grid for a parameter struct; the wrapper above it checks every extent
//! against the buffers before it packs the struct, so no launch can index out of bounds.
//!
//! Every parameter struct comes from bindgen (`kernels::params`), never written by hand.
#![allow(unsafe_code)]

use std::sync::Arc;

use cudarc::cublas::sys as cublas_sys;
use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};

use super::device::{blas, drv, ptr, ptr_mut, Device};
use crate::error::{EngineError, Result};
use crate::kernels::params::{
    EmbeddingParams, FillRandomParams, KvCopyParams, PagedAttnParams, RmsNormParams, RopeKvParams, SwigluParams,
};

// SAFETY: these are plain C structs of integers, floats and device addresses (bindgen output
// with layout tests); the kernels take them by value, exactly as declared in vpd_params.h.
unsafe impl DeviceRepr for EmbeddingParams {}
unsafe impl DeviceRepr for RmsNormParams {}
unsafe impl DeviceRepr for RopeKvParams {}
unsafe impl DeviceRepr for SwigluParams {}
unsafe impl DeviceRepr for PagedAttnParams {}
unsafe impl DeviceRepr for KvCopyParams {}
unsafe impl DeviceRepr for FillRandomParams {}

/// Largest token tree (new tokens of one tree sequence) the attention kernel's shared-memory
/// ancestor list takes.
pub const MAX_TREE: usize = 4096;
/// Largest head_dim the attention kernel takes (8 elements per lane).
pub const MAX_HEAD_DIM: usize = 256;
const ATTN_WARPS: u32 = 4;

pub(crate) fn shape_err(op: &'static str, shape: String) -> EngineError {
    EngineError::UnsupportedShape { op, shape }
}

pub(crate) fn check_len<T>(op: &'static str, what: &str, s: &CudaSlice<T>, need: usize) -> Result<()> {
    if s.len() < need {
        return Err(EngineError::Backend(format!("{op}: buffer `{what}` holds {} elements, needs {need}", s.len())));
    }
    Ok(())
}

pub(crate) fn launch<P: DeviceRepr>(dev: &Device, name: &'static str, cfg: LaunchConfig, p: P) -> Result<()> {
    if cfg.grid_dim.0 == 0 || cfg.grid_dim.1 == 0 || cfg.grid_dim.2 == 0 {
        return Ok(());
    }
    let f = dev.function(name);
    let mut b = dev.stream.launch_builder(f);
    b.arg(&p);
    // SAFETY: `p` is the by-value parameter struct `name` is declared with in vpd_params.h, and
    // the wrapper that built it checked every pointer's extent against its buffer.
    unsafe { b.launch(cfg) }.map_err(|e| EngineError::Backend(format!("launching {name}: {e}")))?;
    Ok(())
}

pub(crate) fn cfg(grid: (u32, u32, u32), block: u32, smem: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: grid, block_dim: (block, 1, 1), shared_mem_bytes: smem }
}

/// Threads per block for a row of `n` elements: a multiple of 32, 32..=1024.
fn row_threads(n: usize) -> u32 {
    (n.div_ceil(32) * 32).clamp(32, 1024) as u32
}

// ---- embedding ------------------------------------------------------------------------------

pub fn embedding_launch(dev: &Device, p: EmbeddingParams) -> Result<()> {
    launch(dev, "embedding_kernel", cfg((p.tokens, 1, 1), row_threads(p.hidden as usize).min(256), 0), p)
}

/// `out[t] = f32(table[ids[t]])`. Ids are checked against the vocabulary by the caller.
pub fn embedding(
    dev: &Device,
    ids: &CudaSlice<u32>,
    table: &CudaSlice<u16>,
    out: &mut CudaSlice<f32>,
    tokens: usize,
    hidden: usize,
) -> Result<()> {
    check_len("embedding", "ids", ids, tokens)?;
    check_len("embedding", "out", out, tokens * hidden)?;
    check_len("embedding", "table", table, hidden)?;
    let p = EmbeddingParams {
        ids: ptr(dev, ids) as *const u32,
        table: ptr(dev, table) as *const u16,
        out: ptr_mut(dev, out) as *mut f32,
        tokens: tokens as u32,
        hidden: hidden as u32,
    };
    embedding_launch(dev, p)
}

// ---- RMSNorm --------------------------------------------------------------------------------

pub fn rms_norm_launch(dev: &Device, p: RmsNormParams) -> Result<()> {
    launch(dev, "rms_norm_kernel", cfg((p.rows, 1, 1), row_threads(p.dim as usize).min(512), 0), p)
}

/// `residual[r] += x[r]` (if `x`), then `out[r] = bf16(rmsnorm(residual[src r]) · weight)`,
/// `src r = rows_idx[r]` (if given, for gathering the rows that want logits).
#[allow(clippy::too_many_arguments)]
pub fn rms_norm(
    dev: &Device,
    x: Option<&CudaSlice<f32>>,
    residual: &mut CudaSlice<f32>,
    weight: &CudaSlice<u16>,
    out: &mut CudaSlice<u16>,
    rows_idx: Option<(&CudaSlice<u32>, usize)>,
    rows: usize,
    dim: usize,
    eps: f32,
) -> Result<()> {
    check_len("rms_norm", "weight", weight, dim)?;
    check_len("rms_norm", "out", out, rows * dim)?;
    if let Some(x) = x {
        if rows_idx.is_some() {
            return Err(EngineError::Backend("rms_norm: a residual add cannot gather rows".into()));
        }
        check_len("rms_norm", "x", x, rows * dim)?;
    }
    match rows_idx {
        // The caller's bound on the gathered indices: every index < `src_rows`.
        Some((idx, src_rows)) => {
            check_len("rms_norm", "rows_idx", idx, rows)?;
            check_len("rms_norm", "residual", residual, src_rows * dim)?;
        }
        None => check_len("rms_norm", "residual", residual, rows * dim)?,
    }
    let p = RmsNormParams {
        x: x.map_or(std::ptr::null(), |x| ptr(dev, x) as *const f32),
        residual: ptr_mut(dev, residual) as *mut f32,
        weight: ptr(dev, weight) as *const u16,
        out: ptr_mut(dev, out) as *mut u16,
        rows_idx: rows_idx.map_or(std::ptr::null(), |(i, _)| ptr(dev, i) as *const u32),
        rows: rows as u32,
        dim: dim as u32,
        eps,
    };
    rms_norm_launch(dev, p)
}

// ---- RoPE + K/V cache write -----------------------------------------------------------------

/// Attention geometry of one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl HeadShape {
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
    pub fn qkv_dim(&self) -> usize {
        self.q_dim() + 2 * self.kv_dim()
    }

    /// # Errors
    /// Shapes the kernels do not take: odd or > 256 head_dim, heads not a multiple of kv heads.
    pub fn check(&self) -> Result<()> {
        let s = format!("heads {} / kv heads {} / head_dim {}", self.n_heads, self.n_kv_heads, self.head_dim);
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) || self.head_dim > MAX_HEAD_DIM {
            return Err(shape_err("attention", format!("{s}: head_dim must be even and at most {MAX_HEAD_DIM}")));
        }
        if self.n_kv_heads == 0 || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(shape_err("attention", format!("{s}: heads must be a multiple of kv heads")));
        }
        Ok(())
    }
}

/// The paged K/V cache in device memory: `[2 · layers, slots, kv_dim]` bf16, K of layer `l` at
/// plane `2l`, V at `2l + 1` (the layout `kv_copy_kernel` walks).
/// Paged K/V of every layer. Cloning shares the buffer (a forked executor's view of the same
/// cache); who writes which slots when is the runtime's business (`Backend::fork_executor`).
#[derive(Clone)]
pub struct KvCache {
    pub buf: Arc<CudaSlice<u16>>,
    pub layers: usize,
    pub num_blocks: usize,
    pub block_size: usize,
    pub kv_dim: usize,
}

impl KvCache {
    pub fn bytes(layers: usize, num_blocks: usize, block_size: usize, kv_dim: usize) -> usize {
        2 * layers * num_blocks * block_size * kv_dim * 2
    }
    pub fn new(dev: &Device, layers: usize, num_blocks: usize, block_size: usize, kv_dim: usize) -> Result<Self> {
        let buf = dev.stream.alloc_zeros::<u16>(2 * layers * num_blocks * block_size * kv_dim).map_err(drv)?;
        Ok(Self { buf: Arc::new(buf), layers, num_blocks, block_size, kv_dim })
    }
    pub fn slots(&self) -> usize {
        self.num_blocks * self.block_size
    }
    /// The buffer, to fill from the host (checks and benches), while no fork shares it.
    ///
    /// # Errors
    /// The buffer is shared with a forked executor.
    pub fn unshared_buf(&mut self) -> Result<&mut CudaSlice<u16>> {
        Arc::get_mut(&mut self.buf).ok_or_else(|| EngineError::Backend("KV cache: shared with a forked executor".into()))
    }
    pub fn plane(&self) -> usize {
        self.slots() * self.kv_dim
    }
    /// Device addresses of layer `l`'s K and V planes.
    pub(crate) fn layer_ptrs(&mut self, dev: &Device, l: usize) -> (u64, u64) {
        assert!(l < self.layers, "layer {l} >= {}", self.layers);
        // The kernels write through this address; the buffer may be shared (see the type).
        let base = ptr(dev, &self.buf);
        let plane_bytes = (self.plane() * 2) as u64;
        (base + 2 * l as u64 * plane_bytes, base + (2 * l as u64 + 1) * plane_bytes)
    }
}

pub fn rope_kv_launch(dev: &Device, p: RopeKvParams) -> Result<()> {
    let pairs = (p.n_heads + p.n_kv_heads) * p.head_dim / 2;
    launch(dev, "rope_kv_kernel", cfg((p.tokens, 1, 1), row_threads(pairs as usize).min(256), 0), p)
}

/// Rotates q and k of `qkv` (`[tokens, qkv_dim]`) in place and writes k and v to the cache
/// slots of layer `layer`. Slots must be `< cache.slots()` (the plan checks them).
#[allow(clippy::too_many_arguments)]
pub fn rope_kv(
    dev: &Device,
    qkv: &mut CudaSlice<f32>,
    positions: &CudaSlice<i32>,
    slots: &CudaSlice<u32>,
    inv_freq: &CudaSlice<f32>,
    cache: &mut KvCache,
    layer: usize,
    shape: HeadShape,
    tokens: usize,
) -> Result<()> {
    shape.check()?;
    check_len("rope_kv", "qkv", qkv, tokens * shape.qkv_dim())?;
    check_len("rope_kv", "positions", positions, tokens)?;
    check_len("rope_kv", "slots", slots, tokens)?;
    check_len("rope_kv", "inv_freq", inv_freq, shape.head_dim / 2)?;
    if cache.kv_dim != shape.kv_dim() {
        return Err(EngineError::Backend(format!("rope_kv: cache kv_dim {} != {}", cache.kv_dim, shape.kv_dim())));
    }
    let (k, v) = cache.layer_ptrs(dev, layer);
    let p = RopeKvParams {
        qkv: ptr_mut(dev, qkv) as *mut f32,
        positions: ptr(dev, positions) as *const i32,
        slots: ptr(dev, slots) as *const u32,
        inv_freq: ptr(dev, inv_freq) as *const f32,
        k_cache: k as *mut u16,
        v_cache: v as *mut u16,
        tokens: tokens as u32,
        n_heads: shape.n_heads as u32,
        n_kv_heads: shape.n_kv_heads as u32,
        head_dim: shape.head_dim as u32,
        qkv_stride: shape.qkv_dim() as u32,
    };
    rope_kv_launch(dev, p)
}

// ---- SwiGLU ---------------------------------------------------------------------------------

pub fn swiglu_launch(dev: &Device, p: SwigluParams) -> Result<()> {
    let n = p.tokens as usize * p.ff as usize;
    let blocks = n.div_ceil(256).min(dev.sm_count as usize * 16) as u32;
    launch(dev, "swiglu_kernel", cfg((blocks, 1, 1), 256, 0), p)
}

/// `out[t, i] = bf16(silu(gate_up[t, i]) · gate_up[t, ff + i])`.
pub fn swiglu(
    dev: &Device,
    gate_up: &CudaSlice<f32>,
    out: &mut CudaSlice<u16>,
    tokens: usize,
    ff: usize,
) -> Result<()> {
    check_len("swiglu", "gate_up", gate_up, tokens * 2 * ff)?;
    check_len("swiglu", "out", out, tokens * ff)?;
    let p = SwigluParams {
        gate_up: ptr(dev, gate_up) as *const f32,
        out: ptr_mut(dev, out) as *mut u16,
        tokens: tokens as u32,
        ff: ff as u32,
    };
    swiglu_launch(dev, p)
}

// ---- paged attention ------------------------------------------------------------------------

/// The step's token/sequence metadata on the device (uploaded from a [`super::plan::FlatPlan`]).
pub struct AttnMeta {
    pub tok_seq: CudaSlice<u32>,
    pub seq_tok_start: CudaSlice<u32>,
    pub seq_start_pos: CudaSlice<u32>,
    pub seq_is_tree: CudaSlice<u32>,
    pub parents: CudaSlice<i32>,
    pub block_tables: CudaSlice<u32>,
    pub tokens: usize,
    pub seqs: usize,
    pub max_blocks: usize,
    pub max_tree: usize,
    /// Longest visible context of any token (picks the split count).
    pub max_context: usize,
}

impl AttnMeta {
    pub fn upload(dev: &Device, f: &super::plan::FlatPlan) -> Result<Self> {
        Ok(Self {
            tok_seq: dev.upload(&f.tok_seq)?,
            seq_tok_start: dev.upload(&f.seq_tok_start)?,
            seq_start_pos: dev.upload(&f.seq_start_pos)?,
            seq_is_tree: dev.upload(&f.seq_is_tree)?,
            parents: dev.upload(&f.parents)?,
            block_tables: dev.upload(&f.block_tables)?,
            tokens: f.tokens.len(),
            seqs: f.seq_start_pos.len(),
            max_blocks: f.max_blocks,
            max_tree: f.max_tree,
            max_context: f.max_context,
        })
    }
}

/// Which attention kernel a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttnPath {
    /// `paged_attn_gqa<G>_kernel`: one block per (token, KV head, split) for the whole query
    /// group, 16-byte K/V loads.
    Gqa,
    /// `paged_attn_kernel`: one block per (token, query head, split); any even head_dim.
    Generic,
    /// `paged_attn_mmaq<G>_d<D>_kernel` (attention_mma.cu): one warp per (query tile, KV
    /// head, split), a query tile being up to 16 / G chain tokens of one sequence, so that a
    /// verify or prefill step reads each sequence's K/V once a tile instead of once a token;
    /// both products on tensor cores, K/V staged through shared memory by cp.async. Head size
    /// 64 or 128, groups up to [`MAX_GQA_GROUP`]. A step of one token a sequence (decode) runs
    /// [`AttnPath::MmaPerToken`]'s kernel instead: the same work without a tile to share.
    Mma,
    /// `paged_attn_mma<G>_d<D>_kernel`: the tensor-core kernel with one token a warp (what
    /// every step ran before the query tiles; the checks and benches run both).
    MmaPerToken,
}

/// Largest query group (heads per KV head) the GQA kernels are instantiated for.
pub const MAX_GQA_GROUP: usize = 8;
/// Rows of the tensor-core kernel's m16n8k16 tiles: a query tile is 16 / G tokens.
const MMA_TILE_ROWS: usize = crate::kernels::params::MMA_TILE as usize;

/// Warps of a `paged_attn_mmaq` block for query group `g`: enough tiles of 16 / G tokens for
/// `MMA_BLOCK_TOKENS` chain tokens (MMA_TILE_WARPS in attention_mma.cu, from the same header).
fn mma_tile_warps(g: usize) -> usize {
    (crate::kernels::params::MMA_BLOCK_TOKENS as usize).div_ceil(MMA_TILE_ROWS / g.max(1))
}

/// Chain tokens of one sequence a `paged_attn_mmaq` block takes together.
fn mma_block_tokens(g: usize) -> usize {
    (MMA_TILE_ROWS / g.max(1)) * mma_tile_warps(g)
}
const GQA_WARPS: u32 = 4;
/// The 48 KiB of shared memory a block gets without opting in.
const SMEM_DEFAULT: u32 = 48 << 10;

fn gqa_smem(shape: HeadShape, max_tree: usize) -> u32 {
    let g = (shape.n_heads / shape.n_kv_heads) as u32;
    (GQA_WARPS * g * (shape.head_dim as u32 + 2) + max_tree as u32) * 4
}

/// Resident blocks a SM the split rule of the tensor-core kernel counts on: its 24 KiB of
/// staging buffers (D = 128) allow 9 on an H100/H200 and 6 on an A100; 8 keeps one wave on
/// the former without a second partial wave on the latter's larger share.
const MMA_BLOCKS_PER_SM: usize = 8;

/// Whether `path` takes the shape. The generic kernel takes every shape the backend allows.
/// The GQA kernel takes head_dim 8·2^k (≤ 256, so D / 8 lanes hold one row), groups up to
/// [`MAX_GQA_GROUP`], and a tree whose ancestor list fits beside the merge buffer. The
/// tensor-core kernel takes head_dim 64 or 128 and the same groups (its ancestor list, at most
/// [`MAX_TREE`] entries, fits beside its 24 KiB of staging buffers).
pub fn attn_path_allowed(path: AttnPath, shape: HeadShape, max_tree: usize) -> bool {
    let d = shape.head_dim;
    let g = shape.n_heads / shape.n_kv_heads.max(1);
    let group_ok = shape.n_kv_heads > 0 && shape.n_heads.is_multiple_of(shape.n_kv_heads) && (1..=MAX_GQA_GROUP).contains(&g);
    match path {
        AttnPath::Generic => true,
        AttnPath::Gqa => {
            group_ok
                && d.is_multiple_of(8)
                && (d / 8).is_power_of_two()
                && d <= MAX_HEAD_DIM
                && gqa_smem(shape, max_tree) <= SMEM_DEFAULT
        }
        AttnPath::Mma | AttnPath::MmaPerToken => group_ok && (d == 64 || d == 128) && max_tree <= MAX_TREE,
    }
}

/// The fastest kernel that takes the shape: tensor cores, then GQA, then generic.
pub fn attn_path(shape: HeadShape, max_tree: usize) -> AttnPath {
    [AttnPath::Mma, AttnPath::Gqa]
        .into_iter()
        .find(|&p| attn_path_allowed(p, shape, max_tree))
        .unwrap_or(AttnPath::Generic)
}

/// Split-K factor (flash-decoding), sized by the context. GQA and tensor-core paths: as many
/// splits as fill one wave of resident blocks (4 a SM for the GQA kernel's 128 registers × 128
/// threads, [`MMA_BLOCKS_PER_SM`] for the one-warp tensor-core kernel) without
/// going over, since every block of a decode step has the same work and a partial second wave
/// costs a whole block's time; generic path: about 8 blocks a SM. Each split at least 128
/// positions long, at most 64 splits. The block count is tokens × KV heads on the GQA path,
/// tokens × query heads on the generic one.
pub fn attn_splits(tokens: usize, shape: HeadShape, max_context: usize, sm_count: usize) -> usize {
    attn_splits_for(attn_path(shape, 0), tokens, shape, max_context, sm_count)
}

/// [`attn_splits`] for a flattened step on the kernel [`attn_path`] picks: on the
/// tensor-core path a block takes up to 8 or more chain tokens of a sequence (a tile of 16 / G
/// a warp), so a split has as many blocks as the step has such groups, not tokens. `tiles`
/// off: one token a block ([`AttnPath::MmaPerToken`]).
pub fn step_splits(flat: &super::plan::FlatPlan, shape: HeadShape, sm_count: usize, tiles: bool) -> usize {
    let path = attn_path(shape, flat.max_tree);
    let g = shape.n_heads / shape.n_kv_heads.max(1);
    let blocks = match path {
        AttnPath::Mma if tiles && flat.tokens.len() > flat.seq_is_tree.len() => flat.attn_blocks(mma_block_tokens(g)),
        _ => flat.tokens.len(),
    };
    attn_splits_for(path, blocks, shape, flat.max_context, sm_count)
}

/// [`attn_splits`] for a chosen kernel (the benches compare them).
pub fn attn_splits_for(path: AttnPath, tokens: usize, shape: HeadShape, max_context: usize, sm_count: usize) -> usize {
    let want = match path {
        AttnPath::Mma | AttnPath::MmaPerToken => (MMA_BLOCKS_PER_SM * sm_count) / (tokens * shape.n_kv_heads).max(1),
        AttnPath::Gqa => (4 * sm_count) / (tokens * shape.n_kv_heads).max(1),
        AttnPath::Generic => (8 * sm_count).div_ceil((tokens * shape.n_heads).max(1)),
    };
    want.min(max_context.div_ceil(128)).clamp(1, 64)
}

pub fn paged_attn_launch(dev: &Device, p: PagedAttnParams, path: AttnPath) -> Result<()> {
    match path {
        AttnPath::Mma | AttnPath::MmaPerToken => {
            // [one token a warp, query tiles][D = 64, 128][G - 1]
            const NAMES: [[[&str; MAX_GQA_GROUP]; 2]; 2] = [
                [
                    [
                        "paged_attn_mma1_d64_kernel",
                        "paged_attn_mma2_d64_kernel",
                        "paged_attn_mma3_d64_kernel",
                        "paged_attn_mma4_d64_kernel",
                        "paged_attn_mma5_d64_kernel",
                        "paged_attn_mma6_d64_kernel",
                        "paged_attn_mma7_d64_kernel",
                        "paged_attn_mma8_d64_kernel",
                    ],
                    [
                        "paged_attn_mma1_d128_kernel",
                        "paged_attn_mma2_d128_kernel",
                        "paged_attn_mma3_d128_kernel",
                        "paged_attn_mma4_d128_kernel",
                        "paged_attn_mma5_d128_kernel",
                        "paged_attn_mma6_d128_kernel",
                        "paged_attn_mma7_d128_kernel",
                        "paged_attn_mma8_d128_kernel",
                    ],
                ],
                [
                    [
                        "paged_attn_mmaq1_d64_kernel",
                        "paged_attn_mmaq2_d64_kernel",
                        "paged_attn_mmaq3_d64_kernel",
                        "paged_attn_mmaq4_d64_kernel",
                        "paged_attn_mmaq5_d64_kernel",
                        "paged_attn_mmaq6_d64_kernel",
                        "paged_attn_mmaq7_d64_kernel",
                        "paged_attn_mmaq8_d64_kernel",
                    ],
                    [
                        "paged_attn_mmaq1_d128_kernel",
                        "paged_attn_mmaq2_d128_kernel",
                        "paged_attn_mmaq3_d128_kernel",
                        "paged_attn_mmaq4_d128_kernel",
                        "paged_attn_mmaq5_d128_kernel",
                        "paged_attn_mmaq6_d128_kernel",
                        "paged_attn_mmaq7_d128_kernel",
                        "paged_attn_mmaq8_d128_kernel",
                    ],
                ],
            ];
            let g = (p.n_heads / p.n_kv_heads) as usize;
            let by_d = usize::from(p.head_dim == 128);
            // Dynamic shared memory: the ancestor list of a tree token (static: the staging ring).
            let smem = p.max_tree * 4;
            let tiled = path == AttnPath::Mma;
            let warps = if tiled { mma_tile_warps(g) } else { 1 };
            launch(dev, NAMES[usize::from(tiled)][by_d][g - 1], cfg((p.tokens, p.n_kv_heads, p.num_splits), 32 * warps as u32, smem), p)?;
        }
        AttnPath::Gqa => {
            // By head size: compiled for D = 64 and 128 (folded index math), any D otherwise.
            const NAMES: [[&str; MAX_GQA_GROUP]; 3] = [
                [
                    "paged_attn_gqa1_kernel",
                    "paged_attn_gqa2_kernel",
                    "paged_attn_gqa3_kernel",
                    "paged_attn_gqa4_kernel",
                    "paged_attn_gqa5_kernel",
                    "paged_attn_gqa6_kernel",
                    "paged_attn_gqa7_kernel",
                    "paged_attn_gqa8_kernel",
                ],
                [
                    "paged_attn_gqa1_d64_kernel",
                    "paged_attn_gqa2_d64_kernel",
                    "paged_attn_gqa3_d64_kernel",
                    "paged_attn_gqa4_d64_kernel",
                    "paged_attn_gqa5_d64_kernel",
                    "paged_attn_gqa6_d64_kernel",
                    "paged_attn_gqa7_d64_kernel",
                    "paged_attn_gqa8_d64_kernel",
                ],
                [
                    "paged_attn_gqa1_d128_kernel",
                    "paged_attn_gqa2_d128_kernel",
                    "paged_attn_gqa3_d128_kernel",
                    "paged_attn_gqa4_d128_kernel",
                    "paged_attn_gqa5_d128_kernel",
                    "paged_attn_gqa6_d128_kernel",
                    "paged_attn_gqa7_d128_kernel",
                    "paged_attn_gqa8_d128_kernel",
                ],
            ];
            let g = (p.n_heads / p.n_kv_heads) as usize;
            let shape = HeadShape {
                n_heads: p.n_heads as usize,
                n_kv_heads: p.n_kv_heads as usize,
                head_dim: p.head_dim as usize,
            };
            let smem = gqa_smem(shape, p.max_tree as usize);
            let by_d = match p.head_dim {
                64 => 1,
                128 => 2,
                _ => 0,
            };
            launch(dev, NAMES[by_d][g - 1], cfg((p.tokens, p.n_kv_heads, p.num_splits), GQA_WARPS * 32, smem), p)?;
        }
        AttnPath::Generic => {
            let smem = (ATTN_WARPS * (p.head_dim + 2) + p.max_tree) * 4;
            launch(dev, "paged_attn_kernel", cfg((p.tokens, p.n_heads, p.num_splits), ATTN_WARPS * 32, smem), p)?;
        }
    }
    if p.num_splits > 1 {
        launch(dev, "attn_combine_kernel", cfg((p.tokens, p.n_heads, 1), row_threads(p.head_dim as usize), 0), p)?;
    }
    Ok(())
}

/// Attention of every new token over its visible cache slots in layer `layer`, on the kernel
/// `path` (the backend passes [`attn_path`]'s; the checks run each). `q` is `[tokens,
/// q_stride]` f32 (rotated), `out` `[tokens, n_heads · head_dim]` bf16, `partial` a workspace
/// of at least `splits · tokens · n_heads · (head_dim + 2)` f32 when `splits > 1`. A path the
/// shape does not allow ([`attn_path_allowed`]) falls back to the generic kernel.
#[allow(clippy::too_many_arguments)]
pub fn paged_attn_on(
    dev: &Device,
    q: &CudaSlice<f32>,
    q_stride: usize,
    cache: &mut KvCache,
    layer: usize,
    meta: &AttnMeta,
    shape: HeadShape,
    out: &mut CudaSlice<u16>,
    partial: &mut CudaSlice<f32>,
    splits: usize,
    path: AttnPath,
) -> Result<()> {
    shape.check()?;
    let path = match path {
        _ if !attn_path_allowed(path, shape, meta.max_tree) => AttnPath::Generic,
        // One token a sequence: no tile to share.
        AttnPath::Mma if meta.tokens == meta.seqs => AttnPath::MmaPerToken,
        _ => path,
    };
    let t = meta.tokens;
    if meta.max_tree > MAX_TREE {
        return Err(shape_err("attention", format!("token tree of {} nodes (at most {MAX_TREE})", meta.max_tree)));
    }
    if q_stride < shape.q_dim() {
        return Err(EngineError::Backend(format!("paged_attn: q stride {q_stride} < {}", shape.q_dim())));
    }
    check_len("paged_attn", "q", q, t.saturating_sub(1) * q_stride + shape.q_dim())?;
    check_len("paged_attn", "out", out, t * shape.q_dim())?;
    check_len("paged_attn", "block_tables", &meta.block_tables, meta.seqs * meta.max_blocks)?;
    let splits = splits.clamp(1, 64);
    if splits > 1 {
        check_len("paged_attn", "partial", partial, splits * t * shape.n_heads * (shape.head_dim + 2))?;
    }
    let (k, v) = cache.layer_ptrs(dev, layer);
    let p = PagedAttnParams {
        q: ptr(dev, q) as *const f32,
        k_cache: k as *const u16,
        v_cache: v as *const u16,
        tok_seq: ptr(dev, &meta.tok_seq) as *const u32,
        seq_tok_start: ptr(dev, &meta.seq_tok_start) as *const u32,
        seq_start_pos: ptr(dev, &meta.seq_start_pos) as *const u32,
        seq_is_tree: ptr(dev, &meta.seq_is_tree) as *const u32,
        parents: ptr(dev, &meta.parents) as *const i32,
        block_tables: ptr(dev, &meta.block_tables) as *const u32,
        out: ptr_mut(dev, out) as *mut u16,
        partial: ptr_mut(dev, partial) as *mut f32,
        tokens: t as u32,
        n_heads: shape.n_heads as u32,
        n_kv_heads: shape.n_kv_heads as u32,
        head_dim: shape.head_dim as u32,
        q_stride: q_stride as u32,
        block_size: cache.block_size as u32,
        max_blocks: meta.max_blocks as u32,
        num_splits: splits as u32,
        max_tree: meta.max_tree as u32,
        scale: 1.0 / (shape.head_dim as f32).sqrt(),
    };
    paged_attn_launch(dev, p, path)
}

// ---- K/V slot copies ------------------------------------------------------------------------

pub fn kv_copy_launch(dev: &Device, p: KvCopyParams, planes: u32) -> Result<()> {
    launch(dev, "kv_copy_kernel", cfg((planes, 1, 1), row_threads(p.kv_dim as usize), 0), p)
}

/// In every layer, `slot dst[i] ← slot src[i]`, in order. Slots must be `< cache.slots()`.
pub fn kv_copy(dev: &Device, cache: &mut KvCache, src: &[u32], dst: &[u32]) -> Result<()> {
    assert_eq!(src.len(), dst.len());
    if src.is_empty() {
        return Ok(());
    }
    let slots = cache.slots() as u32;
    if let Some(bad) = src.iter().chain(dst).find(|&&s| s >= slots) {
        return Err(EngineError::Backend(format!("kv_copy: slot {bad} >= {slots}")));
    }
    let (s, d) = (dev.upload(src)?, dev.upload(dst)?);
    let p = KvCopyParams {
        cache: ptr(dev, &cache.buf) as *mut u16,
        src: ptr(dev, &s) as *const u32,
        dst: ptr(dev, &d) as *const u32,
        pairs: src.len() as u32,
        kv_dim: cache.kv_dim as u32,
        plane: cache.plane() as u64,
    };
    kv_copy_launch(dev, p, 2 * cache.layers as u32)?;
    // `s` and `d` are freed on drop; cudarc frees asynchronously on the stream, after the kernel.
    Ok(())
}

// ---- random fill --------------------------------------------------------------------------

/// `buf[i] = bf16(offset + scale · u)`, `u` uniform in [-1, 1) from a hash of `(seed, i)`.
pub fn fill_random_bf16(dev: &Device, buf: &mut CudaSlice<u16>, seed: u64, scale: f32, offset: f32) -> Result<()> {
    let n = buf.len() as u64;
    let p = FillRandomParams { out: ptr_mut(dev, buf) as *mut u16, n, seed, scale, offset };
    let blocks = n.div_ceil(256).min(u64::from(dev.sm_count) * 32) as u32;
    launch(dev, "fill_random_bf16_kernel", cfg((blocks.max(1), 1, 1), 256, 0), p)
}

// ---- GEMM -----------------------------------------------------------------------------------

/// `y[t, o] = Σ_i x[t, i] · w[o, i] + beta · y[t, o]`: bf16 `x` `[tokens, d_in]` and row-major
/// `w` `[d_out, d_in]`, f32 accumulate and output (cuBLAS, `yᵀ = W · xᵀ` in column-major terms).
/// `beta = 1` adds the product into `y` (the residual add after `wo` and `w_down`).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    dev: &Device,
    x: &CudaSlice<u16>,
    w: &CudaSlice<u16>,
    w_offset: usize,
    y: &mut CudaSlice<f32>,
    tokens: usize,
    d_in: usize,
    d_out: usize,
    beta: f32,
) -> Result<()> {
    if tokens == 0 || d_out == 0 {
        return Ok(());
    }
    check_len("gemm", "x", x, tokens * d_in)?;
    check_len("gemm", "w", w, w_offset + d_out * d_in)?;
    check_len("gemm", "y", y, tokens * d_out)?;
    let too_big = |n: usize| i32::try_from(n).is_err();
    if too_big(tokens) || too_big(d_in) || too_big(d_out) {
        return Err(shape_err("gemm", format!("[{tokens}, {d_in}] x [{d_out}, {d_in}]ᵀ")));
    }
    let alpha = 1.0f32;
    let (xp, wp, yp) = (ptr(dev, x), ptr(dev, w) + 2 * w_offset as u64, ptr_mut(dev, y));
    // SAFETY: the length checks above cover every element cuBLAS reads or writes: A = W
    // (k = d_in rows of lda = d_in, m = d_out columns, transposed), B = xᵀ (k × n = tokens,
    // ldb = d_in), C = yᵀ (m × n, ldc = d_out). The handle is bound to `dev.stream`, on which
    // every buffer here was written; alpha and beta are host f32 (the default pointer mode).
    unsafe {
        cudarc::cublas::result::gemm_ex(
            *dev.blas.handle(),
            cublas_sys::cublasOperation_t::CUBLAS_OP_T,
            cublas_sys::cublasOperation_t::CUBLAS_OP_N,
            d_out as i32,
            tokens as i32,
            d_in as i32,
            (&alpha) as *const f32 as *const _,
            wp as *const _,
            cublas_sys::cudaDataType::CUDA_R_16BF,
            d_in as i32,
            xp as *const _,
            cublas_sys::cudaDataType::CUDA_R_16BF,
            d_in as i32,
            (&beta) as *const f32 as *const _,
            yp as *mut _,
            cublas_sys::cudaDataType::CUDA_R_32F,
            d_out as i32,
            cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(blas)
}

/// f32 → bf16 bit patterns (round to nearest even).
pub fn to_bf16(x: &[f32]) -> Vec<u16> {
    x.iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect()
}

pub fn from_bf16(x: &[u16]) -> Vec<f32> {
    x.iter().map(|&v| half::bf16::from_bits(v).to_f32()).collect()
}
