//! The CUDA backend: the Llama forward pass of [`crate::backend::cpu`] on one GPU, through
//! cudarc (driver API, loaded at run time), the kernels of `csrc/` and cuBLAS.
//!
//! Data layout and precision, chosen so that the greedy tokens can match the f32 CPU
//! reference: weights bf16 (fused `wq|wk|wv` and `w_gate|w_up`), the residual stream f32,
//! GEMM inputs bf16 with f32 accumulation and f32 outputs (the residual adds after `wo` and
//! `w_down` are fused into the GEMM as `beta = 1`), K/V cache bf16 in pages, logits f32.
//!
//! A step is prepared (plan validated and uploaded) and then launched, so it can be timed alone
//! or captured as a CUDA graph ([`CudaBackend::capture_step`]); [`CudaBackend::random`] draws
//! bf16 weights on the device for performance runs at full model shapes.
//!
//! Per-lane streams with priorities and green-context SM partitions are in [`lanes`]
//! ([`CudaBackend::bind_lane`]); the fused sampler and chain verification in [`sampling`],
//! tree verification in [`tree_verify`], decode-step CUDA graphs in `graphs`, and the fused
//! decode-sized projections in [`gemv`] (the path [`CudaBackend::launch_step`] takes for steps
//! of at most [`FUSED_MAX_T`] tokens).
pub mod check;
pub mod device;
pub mod gemv;
pub mod gemv_check;
mod graphs;
pub mod lanes;
pub mod ops;
pub mod pick;
pub mod pick_check;
pub mod plan;
pub mod sampling;
pub mod sampling_check;
pub mod tree_check;
pub mod tree_verify;

use std::sync::Arc;

use cudarc::driver::CudaSlice;
use vpd_formats::LlamaConfig;

pub use self::device::{driver_present, Device};
use self::gemv::{GemvIn, GemvOut};
use self::ops::{AttnMeta, HeadShape, KvCache};
use self::plan::FlatPlan;
use super::{Argmax, Backend, Logits, StepPlan};
use crate::error::{EngineError, Result};
use crate::model::LlamaWeights;

struct LayerW {
    attn_norm: CudaSlice<u16>,
    wqkv: CudaSlice<u16>,
    wo: CudaSlice<u16>,
    ffn_norm: CudaSlice<u16>,
    w_gate_up: CudaSlice<u16>,
    w_down: CudaSlice<u16>,
}

/// Per-step buffers, grown to the largest step seen (`tokens` rows, `rows` logits rows).
struct Workspace {
    tokens: usize,
    rows: usize,
    x: CudaSlice<f32>,
    hn: CudaSlice<u16>,
    qkv: CudaSlice<f32>,
    attn: CudaSlice<u16>,
    gate_up: CudaSlice<f32>,
    act: CudaSlice<u16>,
    partial: CudaSlice<f32>,
    normed: CudaSlice<u16>,
    logits: CudaSlice<f32>,
    greedy: GreedyRows,
}

/// Sampling parameters of `rows` greedy rows (temperature 0) and the tokens the sampler writes:
/// [`Backend::forward_argmax`] reduces the logits on the device with the fused sampler.
struct GreedyRows {
    temperature: CudaSlice<f32>,
    top_k: CudaSlice<u32>,
    top_p: CudaSlice<f32>,
    seed: CudaSlice<u64>,
    ids: CudaSlice<u32>,
}

impl GreedyRows {
    fn new(d: &Device, rows: usize) -> Result<Self> {
        Ok(Self {
            temperature: d.upload(&vec![0.0f32; rows])?,
            top_k: d.upload(&vec![0u32; rows])?,
            top_p: d.upload(&vec![1.0f32; rows])?,
            seed: d.upload(&vec![0u64; rows])?,
            ids: d.alloc(rows)?,
        })
    }
}

/// Most tokens a step may have to run its layers through the fused GEMV kernels: at 3 and 4
/// tokens the 8B projections lose more to cuBLAS than the fusion saves (docs/perf.md, run O).
pub const FUSED_MAX_T: usize = 2;

/// The model on the device, shared by a backend and the executors it forks
/// ([`Backend::fork_executor`]).
struct DeviceWeights {
    embed: CudaSlice<u16>,
    lm_head: Option<CudaSlice<u16>>,
    norm: CudaSlice<u16>,
    layers: Vec<LayerW>,
    inv_freq: CudaSlice<f32>,
}

pub struct CudaBackend {
    config: LlamaConfig,
    shape: HeadShape,
    dev: Device,
    w: Arc<DeviceWeights>,
    /// Shared with forked executors: each writes only the slots of the sequences its lane
    /// owns, and finishes its writes before the call returns.
    cache: KvCache,
    /// The lanes of executors made by [`Backend::fork_executor`] ([`CudaBackend::set_fork_lanes`]):
    /// the one they start on and [`Backend::confine`]s to, and the whole-GPU one they move to
    /// when not confined (none: they stay put).
    fork_lanes: Option<(Arc<lanes::Lane>, Option<Arc<lanes::Lane>>)>,
    /// Made by [`Backend::fork_executor`]: only such an executor moves when [`Backend::confine`]d.
    forked: bool,
    ws: Option<Workspace>,
    /// Bumped whenever the workspace is reallocated: a captured graph holds its addresses.
    ws_generation: u64,
    /// Decode steps replayed from CUDA graphs ([`CudaBackend::set_decode_graphs`]); `None`: off.
    graphs: Option<graphs::DecodeGraphs>,
    /// Decode-sized steps through the fused GEMV kernels (default) rather than cuBLAS.
    gemv: bool,
    /// Chain tokens share the tensor-core attention kernel's query tiles (default).
    query_tiles: bool,
    /// The lane it runs on ([`lanes`]); last, so that the lanes outlive every buffer above.
    lanes: lanes::Bound,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend").field("device", &self.dev).field("shape", &self.shape).finish_non_exhaustive()
    }
}

/// Device bytes of the bf16 weights of `cfg`.
pub fn weight_bytes(cfg: &LlamaConfig) -> usize {
    let (h, ff, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (q, kv) = (cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim);
    let layer = 2 * h + (q + 2 * kv) * h + h * q + 3 * ff * h;
    let head = if cfg.tie_word_embeddings { 0 } else { v * h };
    2 * (v * h + head + h + cfg.num_hidden_layers * layer)
}

impl CudaBackend {
    /// Uploads `weights` as bf16 to GPU `ordinal` and allocates a paged bf16 K/V cache of
    /// `num_blocks × block_size` tokens per layer.
    ///
    /// # Errors
    /// No CUDA driver ("no CUDA driver found", on machines without a GPU), an empty cache, a
    /// head shape the kernels do not take, or too little free device memory (the error says
    /// how much was needed and free).
    pub fn new(
        config: LlamaConfig,
        weights: Arc<LlamaWeights>,
        num_blocks: usize,
        block_size: usize,
        ordinal: usize,
    ) -> Result<Self> {
        let (dev, shape) = Self::open_for(&config, num_blocks, block_size, ordinal)?;
        let up = |x: &[f32]| dev.upload(&ops::to_bf16(x));
        let cat = |parts: &[&[f32]]| {
            let mut v = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
            parts.iter().for_each(|p| v.extend(ops::to_bf16(p)));
            dev.upload(&v)
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for lw in &weights.layers {
            layers.push(LayerW {
                attn_norm: up(&lw.attn_norm)?,
                wqkv: cat(&[&lw.wq, &lw.wk, &lw.wv])?,
                wo: up(&lw.wo)?,
                ffn_norm: up(&lw.ffn_norm)?,
                w_gate_up: cat(&[&lw.w_gate, &lw.w_up])?,
                w_down: up(&lw.w_down)?,
            });
        }
        let embed = up(&weights.embed)?;
        let lm_head = weights.lm_head.as_deref().map(up).transpose()?;
        let norm = up(&weights.norm)?;
        Self::assemble(config, shape, dev, embed, lm_head, norm, layers, num_blocks, block_size)
    }

    /// A backend with random bf16 weights drawn on the device (no host copy, no file): for
    /// performance runs at the Llama-3-8B and Llama-3.2-1B shapes. Linear weights are uniform
    /// in ±0.02, norm weights in 1 ± 0.05; the output is meaningless, the bytes moved are real.
    ///
    /// # Errors
    /// As [`CudaBackend::new`].
    pub fn random(
        config: LlamaConfig,
        num_blocks: usize,
        block_size: usize,
        ordinal: usize,
        seed: u64,
    ) -> Result<Self> {
        let (dev, shape) = Self::open_for(&config, num_blocks, block_size, ordinal)?;
        let (h, ff, v) = (config.hidden_size, config.intermediate_size, config.vocab_size);
        let mut k = 0u64;
        let mut rand = |n: usize, scale: f32, offset: f32| -> Result<CudaSlice<u16>> {
            let mut b = dev.alloc::<u16>(n)?;
            k += 1;
            ops::fill_random_bf16(&dev, &mut b, seed.wrapping_mul(1 << 20).wrapping_add(k), scale, offset)?;
            Ok(b)
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for _ in 0..config.num_hidden_layers {
            layers.push(LayerW {
                attn_norm: rand(h, 0.05, 1.0)?,
                wqkv: rand(shape.qkv_dim() * h, 0.02, 0.0)?,
                wo: rand(h * shape.q_dim(), 0.02, 0.0)?,
                ffn_norm: rand(h, 0.05, 1.0)?,
                w_gate_up: rand(2 * ff * h, 0.02, 0.0)?,
                w_down: rand(h * ff, 0.02, 0.0)?,
            });
        }
        let embed = rand(v * h, 0.02, 0.0)?;
        let lm_head = if config.tie_word_embeddings { None } else { Some(rand(v * h, 0.02, 0.0)?) };
        let norm = rand(h, 0.05, 1.0)?;
        Self::assemble(config, shape, dev, embed, lm_head, norm, layers, num_blocks, block_size)
    }

    /// Shape and cache checks, the device, and the free-memory check for weights plus cache.
    fn open_for(
        config: &LlamaConfig,
        num_blocks: usize,
        block_size: usize,
        ordinal: usize,
    ) -> Result<(Device, HeadShape)> {
        if num_blocks == 0 || block_size == 0 {
            return Err(EngineError::InvalidRequest {
                field: "kv_blocks",
                detail: format!("cache of {num_blocks} blocks × {block_size} tokens is empty"),
            });
        }
        let shape = HeadShape {
            n_heads: config.num_attention_heads,
            n_kv_heads: config.num_key_value_heads,
            head_dim: config.head_dim,
        };
        shape.check()?;
        let dev = Device::open(ordinal)?;
        let kv_bytes = KvCache::bytes(config.num_hidden_layers, num_blocks, block_size, shape.kv_dim());
        let needed = weight_bytes(config) + kv_bytes;
        let (free, _total) = dev.mem_info()?;
        // Leave room for cuBLAS workspaces and the per-step buffers.
        let margin = 256 << 20;
        if needed + margin > free {
            return Err(EngineError::OutOfDeviceMemory { needed: needed + margin, free });
        }
        Ok((dev, shape))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        config: LlamaConfig,
        shape: HeadShape,
        dev: Device,
        embed: CudaSlice<u16>,
        lm_head: Option<CudaSlice<u16>>,
        norm: CudaSlice<u16>,
        layers: Vec<LayerW>,
        num_blocks: usize,
        block_size: usize,
    ) -> Result<Self> {
        let inv_freq = dev.upload(&config.rope_inv_freq())?;
        let cache = KvCache::new(&dev, config.num_hidden_layers, num_blocks, block_size, shape.kv_dim())?;
        dev.sync()?;
        let (ws, lanes) = (None, lanes::Bound::default());
        Ok(Self {
            config,
            shape,
            dev,
            w: Arc::new(DeviceWeights { embed, lm_head, norm, layers, inv_freq }),
            cache,
            fork_lanes: None,
            forked: false,
            ws,
            ws_generation: 0,
            graphs: None,
            gemv: true,
            query_tiles: true,
            lanes,
        })
    }

    pub fn device(&self) -> &Device {
        &self.dev
    }

    fn workspace(&mut self, tokens: usize, rows: usize, splits: usize) -> Result<()> {
        let need_partial = splits * tokens * self.shape.n_heads * (self.shape.head_dim + 2);
        if let Some(ws) = &self.ws {
            if ws.tokens >= tokens && ws.rows >= rows && ws.partial.len() >= need_partial {
                return Ok(());
            }
        }
        let t = tokens.next_power_of_two().max(self.ws.as_ref().map_or(0, |w| w.tokens));
        let r = rows.next_power_of_two().max(self.ws.as_ref().map_or(0, |w| w.rows));
        let (h, ff, v) = (self.config.hidden_size, self.config.intermediate_size, self.config.vocab_size);
        let s = self.shape;
        let partial = (64 * s.n_heads * (s.head_dim + 2)).max(need_partial.next_power_of_two());
        self.dev.sync()?; // steps in flight may still use the old buffers
        self.ws = None; // free the old buffers first
        self.ws_generation += 1;
        let d = &self.dev;
        self.ws = Some(Workspace {
            tokens: t,
            rows: r,
            x: d.alloc(t * h)?,
            hn: d.alloc(t * h)?,
            qkv: d.alloc(t * s.qkv_dim())?,
            attn: d.alloc(t * s.q_dim())?,
            gate_up: d.alloc(t * 2 * ff)?,
            act: d.alloc(t * ff)?,
            partial: d.alloc(partial)?,
            normed: d.alloc(r * h)?,
            logits: d.alloc(r * v)?,
            greedy: GreedyRows::new(d, r)?,
        });
        Ok(())
    }
}

/// One step's plan on the device (ids, positions, slots, attention metadata, logit rows):
/// "plan, then run" (STYLE.md 7). [`CudaBackend::launch_step`] launches the kernels that read
/// it and nothing else, so the same step can be timed alone or captured in a CUDA graph.
pub struct PreparedStep {
    ids: CudaSlice<u32>,
    positions: CudaSlice<i32>,
    slots: CudaSlice<u32>,
    meta: AttnMeta,
    rows: CudaSlice<u32>,
    pub tokens: usize,
    pub logit_rows: usize,
    pub splits: usize,
    num_layers: usize,
    pub row_start: Vec<usize>,
}

/// A decode step captured as a CUDA graph; valid while the backend's workspace stays put.
pub struct StepGraph {
    graph: cudarc::driver::CudaGraph,
    generation: u64,
}

impl CudaBackend {
    /// Validates and uploads `plan` and sizes the workspace for it (host work and copies).
    ///
    /// # Errors
    /// Invalid plans (as the CPU backend), device allocation or copy failures.
    pub fn prepare_step(&mut self, plan: &StepPlan, num_layers: usize) -> Result<PreparedStep> {
        let flat = FlatPlan::build(plan, self.cache.num_blocks, self.cache.block_size, self.config.vocab_size)?;
        let splits = ops::step_splits(&flat, self.shape, self.dev.sm_count as usize, self.query_tiles);
        self.prepare_flat(flat, num_layers, splits)
    }

    /// [`CudaBackend::prepare_step`] of a flattened plan with a chosen split count.
    fn prepare_flat(&mut self, flat: FlatPlan, num_layers: usize, splits: usize) -> Result<PreparedStep> {
        let (t, r) = (flat.tokens.len(), flat.logit_rows.len());
        self.dev.ctx.bind_to_thread().map_err(device::drv)?;
        if t > 0 {
            self.workspace(t, r, splits)?;
        }
        let d = &self.dev;
        Ok(PreparedStep {
            ids: d.upload(&flat.tokens)?,
            positions: d.upload(&flat.positions)?,
            slots: d.upload(&flat.slots)?,
            meta: AttnMeta::upload(d, &flat)?,
            rows: d.upload(&flat.logit_rows)?,
            tokens: t,
            logit_rows: r,
            splits,
            num_layers: num_layers.min(self.config.num_hidden_layers),
            row_start: flat.row_start,
        })
    }

    /// Launches the step's kernels on the backend's stream: no host copies, no synchronisation
    /// (so it can be captured). Writes the K/V of the step's tokens and the logits rows.
    ///
    /// # Errors
    /// Launch failures; a step prepared for a larger workspace than the current one.
    pub fn launch_step(&mut self, st: &PreparedStep) -> Result<()> {
        if st.tokens == 0 {
            return Ok(());
        }
        let s = self.shape;
        let cfg = &self.config;
        let (h, ff, eps, vocab) = (cfg.hidden_size, cfg.intermediate_size, cfg.rms_norm_eps, cfg.vocab_size);
        let (t, r, splits) = (st.tokens, st.logit_rows, st.splits);
        let attn_path = match ops::attn_path(s, st.meta.max_tree) {
            ops::AttnPath::Mma if !self.query_tiles => ops::AttnPath::MmaPerToken,
            path => path,
        };
        let d = &self.dev;
        // Steps of at most FUSED_MAX_T tokens take the fused GEMV path (five launches a layer,
        // gemv.rs); larger ones cuBLAS and the separate RMSNorm, RoPE and SwiGLU kernels.
        let (fused, fused_head) = (self.takes_fused_path(t, &[h, s.q_dim(), ff]), self.takes_fused_path(r, &[h]));
        let ws = self.ws.as_mut().ok_or_else(|| EngineError::Backend("launch_step: step not prepared".into()))?;
        let w = &*self.w;
        ops::embedding(d, &st.ids, &w.embed, &mut ws.x, t, h)?;
        for (l, lw) in w.layers.iter().enumerate().take(st.num_layers) {
            if fused {
                let rope = GemvOut::RopeKv {
                    y: &mut ws.qkv,
                    positions: &st.positions,
                    slots: &st.slots,
                    inv_freq: &w.inv_freq,
                    cache: &mut self.cache,
                    layer: l,
                    shape: s,
                };
                let norm = GemvIn::Norm { residual: &ws.x, weight: &lw.attn_norm, eps };
                gemv::gemv(d, norm, &lw.wqkv, rope, t, h, s.qkv_dim())?;
            } else {
                ops::rms_norm(d, None, &mut ws.x, &lw.attn_norm, &mut ws.hn, None, t, h, eps)?;
                ops::gemm(d, &ws.hn, &lw.wqkv, 0, &mut ws.qkv, t, h, s.qkv_dim(), 0.0)?;
                ops::rope_kv(d, &mut ws.qkv, &st.positions, &st.slots, &w.inv_freq, &mut self.cache, l, s, t)?;
            }
            ops::paged_attn_on(
                d,
                &ws.qkv,
                s.qkv_dim(),
                &mut self.cache,
                l,
                &st.meta,
                s,
                &mut ws.attn,
                &mut ws.partial,
                splits,
                attn_path,
            )?;
            if fused {
                let residual = GemvOut::F32 { y: &mut ws.x, beta: 1.0 };
                gemv::gemv(d, GemvIn::Bf16(&ws.attn), &lw.wo, residual, t, s.q_dim(), h)?;
                let norm = GemvIn::Norm { residual: &ws.x, weight: &lw.ffn_norm, eps };
                gemv::gemv(d, norm, &lw.w_gate_up, GemvOut::Swiglu { act: &mut ws.act }, t, h, 2 * ff)?;
                let residual = GemvOut::F32 { y: &mut ws.x, beta: 1.0 };
                gemv::gemv(d, GemvIn::Bf16(&ws.act), &lw.w_down, residual, t, ff, h)?;
            } else {
                ops::gemm(d, &ws.attn, &lw.wo, 0, &mut ws.x, t, s.q_dim(), h, 1.0)?;
                ops::rms_norm(d, None, &mut ws.x, &lw.ffn_norm, &mut ws.hn, None, t, h, eps)?;
                ops::gemm(d, &ws.hn, &lw.w_gate_up, 0, &mut ws.gate_up, t, h, 2 * ff, 0.0)?;
                ops::swiglu(d, &ws.gate_up, &mut ws.act, t, ff)?;
                ops::gemm(d, &ws.act, &lw.w_down, 0, &mut ws.x, t, ff, h, 1.0)?;
            }
        }
        if r > 0 {
            ops::rms_norm(d, None, &mut ws.x, &w.norm, &mut ws.normed, Some((&st.rows, t)), r, h, eps)?;
            let head = w.lm_head.as_ref().unwrap_or(&w.embed);
            if fused_head {
                let logits = GemvOut::F32 { y: &mut ws.logits, beta: 0.0 };
                gemv::gemv(d, GemvIn::Bf16(&ws.normed), head, logits, r, h, vocab)?;
            } else {
                ops::gemm(d, &ws.normed, head, 0, &mut ws.logits, r, h, vocab, 0.0)?;
            }
        }
        Ok(())
    }

    /// Whether `tokens` rows with inputs of these widths go through the fused GEMV kernels.
    fn takes_fused_path(&self, tokens: usize, input_widths: &[usize]) -> bool {
        self.gemv && tokens <= FUSED_MAX_T && input_widths.iter().all(|&w| gemv::gemv_fits(tokens, w))
    }

    /// Copies the step's logits rows to the host (synchronises the stream).
    ///
    /// # Errors
    /// Copy failures.
    pub fn read_logits(&self, st: &PreparedStep) -> Result<Vec<f32>> {
        self.read_logit_rows(st.logit_rows)
    }

    fn read_logit_rows(&self, rows: usize) -> Result<Vec<f32>> {
        let mut data = Vec::new();
        if rows > 0 {
            let ws = self.ws.as_ref().ok_or_else(|| EngineError::Backend("read_logits: no step ran".into()))?;
            data = self.dev.download(&ws.logits, rows * self.config.vocab_size)?;
        }
        self.dev.sync()?;
        Ok(data)
    }

    /// Reduces the step's logits rows to their greedy tokens on the device (the fused sampler
    /// at temperature 0, `vpd_sampling::kernel_ref::argmax_key`, which picks as
    /// `vpd_sampling::argmax` does) and copies only those back (synchronises the stream).
    ///
    /// # Errors
    /// Launch or copy failures.
    pub fn read_argmax(&mut self, st: &PreparedStep) -> Result<Vec<u32>> {
        self.read_argmax_rows(st.logit_rows)
    }

    fn read_argmax_rows(&mut self, rows: usize) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if rows > 0 {
            let vocab = self.config.vocab_size;
            let ws = self.ws.as_mut().ok_or_else(|| EngineError::Backend("read_argmax: no step ran".into()))?;
            let g = &mut ws.greedy;
            let rp = sampling::RowParams { temperature: &g.temperature, top_k: &g.top_k, top_p: &g.top_p, seed: &g.seed };
            sampling::sample(&self.dev, &ws.logits, &rp, &mut g.ids, rows, vocab, 0)?;
            ids = self.dev.download(&g.ids, rows)?;
        }
        self.dev.sync()?;
        Ok(ids)
    }

    /// Replays decode steps (every sequence one token, as a chain, wanting its logits row)
    /// from CUDA graphs captured per shape instead of launching their kernels one by one
    /// ([`graphs`]). Off by default here (`vpd bench` and `vpd serve` turn it on with
    /// `--backend cuda`); other steps always run the ordinary way.
    pub fn set_decode_graphs(&mut self, on: bool) {
        self.graphs = on.then(graphs::DecodeGraphs::default);
    }

    /// Runs decode-sized steps (at most [`FUSED_MAX_T`] tokens) through the fused GEMV
    /// kernels (`true`, the default) or through cuBLAS and the separate kernels, for side-by-side
    /// checks and benches. Drops captured decode graphs, which hold the other path.
    pub fn set_gemv(&mut self, on: bool) {
        self.gemv = on;
        if let Some(g) = self.graphs.as_mut() {
            *g = graphs::DecodeGraphs::default();
        }
    }

    /// Runs the tensor-core attention with query tiles (`true`, the default: a sequence's chain
    /// tokens share each K/V read) or one token a warp, for side-by-side benches.
    pub fn set_query_tiles(&mut self, on: bool) {
        self.query_tiles = on;
    }

    /// The lanes that executors made by [`Backend::fork_executor`] run on: `lanes.prefill`, and
    /// with [`lanes::Lanes::confined_prefill`] `lanes.prefill_whole` while not
    /// [`Backend::confine`]d. Without them forks run on a stream of their own at the default
    /// priority.
    pub fn set_fork_lanes(&mut self, lanes: &lanes::Lanes) {
        self.fork_lanes = Some((Arc::clone(&lanes.prefill), lanes.prefill_whole.clone()));
    }

    /// Decode steps replayed and graphs captured so far: `(replays, captures)`.
    pub fn decode_graph_counts(&self) -> (u64, u64) {
        self.graphs.as_ref().map_or((0, 0), |g| (g.replays, g.captures))
    }

    /// Runs `plan` on the device (from a decode graph where one applies); the logits rows are
    /// then in the workspace.
    fn execute(&mut self, plan: &StepPlan, num_layers: usize) -> Result<graphs::RanStep> {
        // A drafter runs on the decode lane's own thread: make this context current there.
        self.dev.ctx.bind_to_thread().map_err(device::drv)?;
        let flat = FlatPlan::build(plan, self.cache.num_blocks, self.cache.block_size, self.config.vocab_size)?;
        if flat.is_decode() {
            if let Some(mut graphs) = self.graphs.take() {
                let ran = self.run_decode_graph(&mut graphs, flat, num_layers);
                self.graphs = Some(graphs);
                return ran;
            }
        }
        let splits = ops::step_splits(&flat, self.shape, self.dev.sm_count as usize, self.query_tiles);
        let step = self.prepare_flat(flat, num_layers, splits)?;
        self.launch_step(&step)?;
        Ok(graphs::RanStep { rows: step.logit_rows, row_start: step.row_start.clone(), step: Some(step) })
    }

    /// Captures [`CudaBackend::launch_step`] of `st` as a CUDA graph (run the step once
    /// uncaptured first, so cuBLAS has chosen its kernels and workspace).
    ///
    /// # Errors
    /// A capture or instantiation failure (for example a library call that cannot be captured).
    pub fn capture_step(&mut self, st: &PreparedStep) -> Result<StepGraph> {
        use cudarc::driver::sys;
        self.dev.sync()?;
        self.dev
            .stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(device::drv)?;
        let launched = self.launch_step(st);
        let ended = self.dev.stream.end_capture(sys::CUgraphInstantiate_flags(0));
        launched?;
        let graph =
            ended.map_err(device::drv)?.ok_or_else(|| EngineError::Backend("capture_step: empty graph".into()))?;
        Ok(StepGraph { graph, generation: self.ws_generation })
    }

    /// Replays a captured step (asynchronously).
    ///
    /// # Errors
    /// The workspace moved since the capture (the graph would write freed memory), or a
    /// launch failure.
    pub fn replay_step(&self, g: &StepGraph) -> Result<()> {
        if g.generation != self.ws_generation {
            return Err(EngineError::Backend("replay_step: the workspace was reallocated after capture".into()));
        }
        g.graph.launch().map_err(device::drv)
    }
}

/// Bytes of weights one decode step reads: every matrix and norm once, the output head (the
/// embedding table when tied) once, but not the untied embedding table (one row is gathered).
pub fn step_weight_bytes(cfg: &LlamaConfig) -> usize {
    if cfg.tie_word_embeddings {
        weight_bytes(cfg)
    } else {
        weight_bytes(cfg) - 2 * cfg.vocab_size * cfg.hidden_size
    }
}

impl Backend for CudaBackend {
    fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn kv_geometry(&self) -> (usize, usize) {
        (self.cache.num_blocks, self.cache.block_size)
    }

    /// The same weights and cache on a new stream and cuBLAS handle of the same GPU, bound to
    /// the fork lane when one is set; fused GEMV as this backend, no decode graphs.
    fn fork_executor(&mut self) -> Result<Option<Box<dyn Backend>>> {
        // Everything this backend queued (uploads, cache writes) is done before the fork runs.
        self.dev.sync()?;
        let dev = Device::open(self.dev.ctx.ordinal())?;
        let mut fork = Self {
            config: self.config.clone(),
            shape: self.shape,
            dev,
            w: Arc::clone(&self.w),
            cache: self.cache.clone(),
            fork_lanes: self.fork_lanes.clone(),
            forked: true,
            ws: None,
            ws_generation: 0,
            graphs: None,
            gemv: self.gemv,
            query_tiles: self.query_tiles,
            lanes: lanes::Bound::default(),
        };
        if let Some((lane, _)) = &self.fork_lanes {
            fork.bind_lane(lane)?;
        }
        Ok(Some(Box::new(fork)))
    }

    fn confine(&mut self, on: bool) -> Result<()> {
        let Some((small, Some(whole))) = self.fork_lanes.as_ref().filter(|_| self.forked) else { return Ok(()) };
        let want = if on { small } else { whole };
        if self.lane().is_some_and(|l| Arc::ptr_eq(l, want)) {
            return Ok(());
        }
        let want = Arc::clone(want);
        self.bind_lane(&want)
    }

    fn forward_layers(&mut self, plan: &StepPlan, num_layers: usize) -> Result<Logits> {
        let ran = self.execute(plan, num_layers)?;
        let data = self.read_logit_rows(ran.rows)?;
        drop(ran.step); // after the synchronising read: the kernels are done with its inputs
        Ok(Logits { vocab: self.config.vocab_size, data, row_start: ran.row_start })
    }

    fn forward_argmax(&mut self, plan: &StepPlan, num_layers: usize) -> Result<Argmax> {
        let ran = self.execute(plan, num_layers)?;
        let ids = self.read_argmax_rows(ran.rows)?;
        drop(ran.step);
        Ok(Argmax { ids, row_start: ran.row_start })
    }

    fn forward_pick(&mut self, plan: &StepPlan, num_layers: usize, picks: &[super::Pick<'_>]) -> Result<Vec<super::Picked>> {
        self.pick_rows(plan, num_layers, picks)
    }

    fn copy_blocks(&mut self, pairs: &[(u32, u32)]) -> Result<()> {
        let (nb, bs) = (self.cache.num_blocks, self.cache.block_size as u32);
        let (mut src, mut dst) = (Vec::new(), Vec::new());
        for &(a, b) in pairs {
            if a as usize >= nb || b as usize >= nb {
                return Err(EngineError::Backend(format!("copy_blocks: block pair ({a}, {b}) outside 0..{nb}")));
            }
            src.extend((0..bs).map(|o| a * bs + o));
            dst.extend((0..bs).map(|o| b * bs + o));
        }
        self.dev.ctx.bind_to_thread().map_err(device::drv)?;
        ops::kv_copy(&self.dev, &mut self.cache, &src, &dst)?;
        self.dev.sync()
    }

    fn move_slots(&mut self, block_table: &[u32], moves: &[(usize, usize)]) -> Result<()> {
        let bs = self.cache.block_size;
        let cap = block_table.len() * bs;
        if let Some(&b) = block_table.iter().find(|&&b| b as usize >= self.cache.num_blocks) {
            return Err(EngineError::Backend(format!("move_slots: block {b} >= {}", self.cache.num_blocks)));
        }
        let slot = |p: usize| block_table[p / bs] * bs as u32 + (p % bs) as u32;
        let (mut src, mut dst) = (Vec::new(), Vec::new());
        for &(from, to) in moves {
            if from >= cap || to >= cap {
                return Err(EngineError::Backend(format!(
                    "move_slots: ({from}, {to}) outside the {cap} slots of the table"
                )));
            }
            src.push(slot(from));
            dst.push(slot(to));
        }
        self.dev.ctx.bind_to_thread().map_err(device::drv)?;
        ops::kv_copy(&self.dev, &mut self.cache, &src, &dst)?;
        self.dev.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_without_a_driver_is_a_clean_error_not_a_panic() {
        if driver_present() {
            return; // a GPU machine: tools/gpu-check.sh covers this path
        }
        let cfg = crate::make_model::Preset::TinyLlama3.config();
        let w = LlamaWeights { embed: vec![0.0; 0], layers: vec![], norm: vec![], lm_head: None };
        let err = CudaBackend::new(cfg, Arc::new(w), 4, 16, 0).expect_err("no GPU here");
        assert!(err.to_string().contains("no CUDA driver found"), "{err}");
    }

    #[test]
    fn unsupported_head_shapes_are_reported_before_touching_the_device() {
        let mut cfg = crate::make_model::Preset::TinyLlama3.config();
        cfg.head_dim = 512;
        let w = LlamaWeights { embed: vec![], layers: vec![], norm: vec![], lm_head: None };
        let err = CudaBackend::new(cfg, Arc::new(w), 4, 16, 0).expect_err("head_dim 512");
        assert!(matches!(err, EngineError::UnsupportedShape { op: "attention", .. }), "{err}");
    }

    #[test]
    fn weight_bytes_of_llama3_8b_is_its_bf16_size() {
        let cfg = crate::make_model::Preset::Llama3_8b.config();
        // 8.03 B parameters in bf16.
        let gb = weight_bytes(&cfg) as f64 / 1e9;
        assert!((16.0..16.1).contains(&gb), "{gb}");
    }

    #[test]
    fn decode_step_reads_15_gb_at_8b_and_2_5_gb_at_1b() {
        let gb = |p: crate::make_model::Preset| step_weight_bytes(&p.config()) as f64 / 1e9;
        let (b8, b1) = (gb(crate::make_model::Preset::Llama3_8b), gb(crate::make_model::Preset::Llama32_1b));
        assert!((15.0..15.02).contains(&b8), "{b8}");
        assert!((2.46..2.48).contains(&b1), "{b1}");
    }

    #[test]
    fn attention_splits_fill_the_card_only_for_long_contexts() {
        let llama = HeadShape { n_heads: 32, n_kv_heads: 8, head_dim: 128 };
        assert_eq!(ops::attn_path(llama, 0), ops::AttnPath::Mma);
        assert_eq!(ops::attn_path(llama, 4096), ops::AttnPath::Mma);
        assert!(ops::attn_path_allowed(ops::AttnPath::Gqa, llama, 0));
        assert_eq!(ops::attn_splits(1, llama, 100, 132), 1);
        assert_eq!(ops::attn_splits(1, llama, 4096, 132), 32);
        // One wave of one-warp blocks: 32 tokens x 8 KV heads = 256 blocks, four splits fill
        // 1024 of the 1056 slots counted (8 a SM).
        assert_eq!(ops::attn_splits(32, llama, 2048, 132), 4);
        assert_eq!(ops::attn_splits(64, llama, 1024, 132), 2);
        assert_eq!(ops::attn_splits(512, llama, 4096, 132), 1);
        assert!(ops::attn_splits(1, llama, 1 << 20, 132) <= 64);
        // Shapes the GQA kernels do not take use the generic kernel, split by query heads.
        let odd = HeadShape { n_heads: 4, n_kv_heads: 2, head_dim: 6 };
        assert_eq!(ops::attn_path(odd, 0), ops::AttnPath::Generic);
        let wide = HeadShape { n_heads: 32, n_kv_heads: 2, head_dim: 128 };
        assert_eq!(ops::attn_path(wide, 0), ops::AttnPath::Generic);
        let small = HeadShape { n_heads: 9, n_kv_heads: 3, head_dim: 64 };
        assert_eq!(ops::attn_path(small, 7), ops::AttnPath::Mma);
        let deep_tree = HeadShape { n_heads: 64, n_kv_heads: 8, head_dim: 256 };
        assert_eq!(ops::attn_path(deep_tree, 0), ops::AttnPath::Gqa);
        assert_eq!(ops::attn_path(deep_tree, 4096), ops::AttnPath::Generic);
    }

    #[test]
    fn query_tile_blocks_set_the_splits() {
        use crate::backend::{LogitsWanted, SeqStep, StepPlan};
        let seq = |n: usize, start: usize, tree: Option<Vec<i32>>, first: u32| SeqStep {
            tokens: vec![1; n],
            start_pos: start,
            block_table: (first..first + 300).collect(),
            tree_parents: tree,
            logits: LogitsWanted::All,
        };
        let mixed = StepPlan {
            seqs: vec![
                seq(1, 9, None, 0),
                seq(5, 9, None, 300),
                seq(7, 9, Some(vec![-1, 0, 0, 1, 1, 2, -1]), 600),
                seq(13, 9, None, 900),
            ],
        };
        let f = plan::FlatPlan::build(&mixed, 1200, 16, 2).unwrap();
        // Chains in blocks of 4 tokens (1 + 2 + 4), tree tokens alone (7).
        assert_eq!(f.attn_blocks(4), 14);
        assert_eq!(f.attn_blocks(1), f.tokens.len());
        // One sequence verifying 5 tokens at 4096 (G = 4: two warps of 4 tokens a block): one
        // block x 8 KV heads a split, so more splits than counting 5 tokens (26) would give,
        // up to one per 128 positions.
        let llama = HeadShape { n_heads: 32, n_kv_heads: 8, head_dim: 128 };
        let verify = StepPlan { seqs: vec![seq(5, 4096, None, 0)] };
        let f = plan::FlatPlan::build(&verify, 300, 16, 2).unwrap();
        assert_eq!(ops::attn_splits(5, llama, f.max_context, 132), 26);
        assert_eq!(ops::step_splits(&f, llama, 132, true), 33);
        assert_eq!(ops::step_splits(&f, llama, 132, false), 26);
        // 64 sequences verifying 5 tokens at 1024: 64 blocks x 8 KV heads, two splits fill a wave.
        let verify = StepPlan { seqs: (0..64).map(|s| seq(5, 1024, None, 300 * s)).collect() };
        let f = plan::FlatPlan::build(&verify, 64 * 300, 16, 2).unwrap();
        assert_eq!(ops::step_splits(&f, llama, 132, true), 2);
        // Decode counts tokens.
        let decode = StepPlan { seqs: (0..64).map(|s| seq(1, 1024, None, 300 * s)).collect() };
        let f = plan::FlatPlan::build(&decode, 64 * 300, 16, 2).unwrap();
        assert_eq!(ops::step_splits(&f, llama, 132, true), ops::attn_splits(64, llama, 1025, 132));
    }
}
