//! The CUDA backend: the Llama forward pass of [`crate::backend::cpu`] on one GPU, through
//! cudarc (driver API, loaded at run time), the kernels of `csrc/` and cuBLAS.
//!
//! Data layout and precision, chosen so that the greedy tokens can match the f32 CPU
//! reference: weights bf16 (fused `wq|wk|wv` and `w_gate|w_up`), the residual stream f32,
//! GEMM inputs bf16 with f32 accumulation and f32 outputs (the residual adds after `wo` and
//! `w_down` are fused into the GEMM as `beta = 1`), K/V cache bf16 in pages, logits f32.
//!
//! Later work, not here yet: per-lane streams with priorities and green contexts, CUDA graph
//! capture of decode steps per batch bucket, fused sampling and rejection sampling kernels.
pub mod check;
pub mod device;
pub mod ops;
pub mod plan;

use std::sync::Arc;

use cudarc::driver::CudaSlice;
use vpd_formats::LlamaConfig;

pub use self::device::{driver_present, Device};
use self::ops::{AttnMeta, HeadShape, KvCache};
use self::plan::FlatPlan;
use super::{Backend, Logits, StepPlan};
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
}

pub struct CudaBackend {
    config: LlamaConfig,
    shape: HeadShape,
    dev: Device,
    embed: CudaSlice<u16>,
    lm_head: Option<CudaSlice<u16>>,
    norm: CudaSlice<u16>,
    layers: Vec<LayerW>,
    inv_freq: CudaSlice<f32>,
    cache: KvCache,
    ws: Option<Workspace>,
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
        let needed = weight_bytes(&config) + kv_bytes;
        let (free, _total) = dev.mem_info()?;
        // Leave room for cuBLAS workspaces and the per-step buffers.
        let margin = 256 << 20;
        if needed + margin > free {
            return Err(EngineError::OutOfDeviceMemory { needed: needed + margin, free });
        }
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
        let inv_freq = dev.upload(&config.rope_inv_freq())?;
        let cache = KvCache::new(&dev, config.num_hidden_layers, num_blocks, block_size, shape.kv_dim())?;
        dev.sync()?;
        Ok(Self { config, shape, dev, embed, lm_head, norm, layers, inv_freq, cache, ws: None })
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
        self.ws = None; // free the old buffers first
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
        });
        Ok(())
    }
}

impl Backend for CudaBackend {
    fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn kv_geometry(&self) -> (usize, usize) {
        (self.cache.num_blocks, self.cache.block_size)
    }

    fn forward_layers(&mut self, plan: &StepPlan, num_layers: usize) -> Result<Logits> {
        let flat = FlatPlan::build(plan, self.cache.num_blocks, self.cache.block_size, self.config.vocab_size)?;
        let vocab = self.config.vocab_size;
        let (t, r) = (flat.tokens.len(), flat.logit_rows.len());
        if t == 0 {
            return Ok(Logits { vocab, data: Vec::new(), row_start: flat.row_start });
        }
        self.dev.ctx.bind_to_thread().map_err(device::drv)?;
        let s = self.shape;
        let splits = ops::attn_splits(t, s.n_heads, flat.max_context, self.dev.sm_count as usize);
        self.workspace(t, r, splits)?;
        let cfg = &self.config;
        let (h, ff, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.rms_norm_eps);
        let num_layers = num_layers.min(cfg.num_hidden_layers);
        let d = &self.dev;
        let ids = d.upload(&flat.tokens)?;
        let positions = d.upload(&flat.positions)?;
        let slots = d.upload(&flat.slots)?;
        let meta = AttnMeta::upload(d, &flat)?;
        let rows = d.upload(&flat.logit_rows)?;
        let ws = self.ws.as_mut().expect("workspace allocated above");
        ops::embedding(d, &ids, &self.embed, &mut ws.x, t, h)?;
        for (l, lw) in self.layers.iter().enumerate().take(num_layers) {
            ops::rms_norm(d, None, &mut ws.x, &lw.attn_norm, &mut ws.hn, None, t, h, eps)?;
            ops::gemm(d, &ws.hn, &lw.wqkv, 0, &mut ws.qkv, t, h, s.qkv_dim(), 0.0)?;
            ops::rope_kv(d, &mut ws.qkv, &positions, &slots, &self.inv_freq, &mut self.cache, l, s, t)?;
            ops::paged_attn(d, &ws.qkv, s.qkv_dim(), &mut self.cache, l, &meta, s, &mut ws.attn, &mut ws.partial, splits)?;
            ops::gemm(d, &ws.attn, &lw.wo, 0, &mut ws.x, t, s.q_dim(), h, 1.0)?;
            ops::rms_norm(d, None, &mut ws.x, &lw.ffn_norm, &mut ws.hn, None, t, h, eps)?;
            ops::gemm(d, &ws.hn, &lw.w_gate_up, 0, &mut ws.gate_up, t, h, 2 * ff, 0.0)?;
            ops::swiglu(d, &ws.gate_up, &mut ws.act, t, ff)?;
            ops::gemm(d, &ws.act, &lw.w_down, 0, &mut ws.x, t, ff, h, 1.0)?;
        }
        let mut data = Vec::new();
        if r > 0 {
            ops::rms_norm(d, None, &mut ws.x, &self.norm, &mut ws.normed, Some((&rows, t)), r, h, eps)?;
            let head = self.lm_head.as_ref().unwrap_or(&self.embed);
            ops::gemm(d, &ws.normed, head, 0, &mut ws.logits, r, h, vocab, 0.0)?;
            data = d.download(&ws.logits, r * vocab)?;
        }
        d.sync()?;
        Ok(Logits { vocab, data, row_start: flat.row_start })
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
                return Err(EngineError::Backend(format!("move_slots: ({from}, {to}) outside the {cap} slots of the table")));
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
    fn attention_splits_fill_the_card_only_for_long_contexts() {
        assert_eq!(ops::attn_splits(1, 32, 100, 132), 1);
        assert_eq!(ops::attn_splits(1, 32, 4096, 132), 9);
        assert_eq!(ops::attn_splits(64, 32, 4096, 132), 1);
        assert!(ops::attn_splits(1, 1, 1 << 20, 132) <= 64);
    }
}
