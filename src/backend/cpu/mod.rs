//! The CPU reference backend: f32 compute, multi-threaded (rayon), matrix products through the
//! `gemm` crate. It is the oracle the CUDA backend is checked against, so clarity wins over
//! cleverness everywhere except the linear layers, which dominate the time.
pub mod attention;
pub mod kv_store;
pub mod matmul;
pub mod ops;

use std::sync::{Arc, Mutex, MutexGuard};

use vpd_formats::LlamaConfig;

use self::attention::{paged_attention, AttnShape, TokenRef};
use self::kv_store::KvStore;
use self::matmul::linear;
use super::{Backend, Logits, LogitsWanted, StepPlan};
use crate::error::{EngineError, Result};
use crate::model::LlamaWeights;

pub struct CpuBackend {
    config: LlamaConfig,
    weights: Arc<LlamaWeights>,
    inv_freq: Vec<f32>,
    /// Shared with the executors [`Backend::fork_executor`] makes; each call holds the lock for
    /// its whole pass, so on the CPU the lanes' forwards take turns.
    kv: Arc<Mutex<KvStore>>,
    /// The cache's geometry, fixed at construction: `(num_blocks, block_size)`.
    geometry: (usize, usize),
}

impl CpuBackend {
    /// A backend over `weights` with a paged cache of `num_blocks` blocks of `block_size` tokens.
    ///
    /// # Errors
    /// A zero-sized cache.
    pub fn new(config: LlamaConfig, weights: Arc<LlamaWeights>, num_blocks: usize, block_size: usize) -> Result<Self> {
        if num_blocks == 0 || block_size == 0 {
            return Err(EngineError::InvalidRequest {
                field: "kv_blocks",
                detail: format!("cache of {num_blocks} blocks × {block_size} tokens is empty"),
            });
        }
        let kv_dim = config.num_key_value_heads * config.head_dim;
        let kv = KvStore::new(config.num_hidden_layers, num_blocks, block_size, kv_dim);
        let inv_freq = config.rope_inv_freq();
        Ok(Self { config, weights, inv_freq, kv: Arc::new(Mutex::new(kv)), geometry: (num_blocks, block_size) })
    }

    /// Another executor over the same weights and the same cache ([`Backend::fork_executor`]).
    pub fn fork(&self) -> Self {
        Self {
            config: self.config.clone(),
            weights: Arc::clone(&self.weights),
            inv_freq: self.inv_freq.clone(),
            kv: Arc::clone(&self.kv),
            geometry: self.geometry,
        }
    }

    fn store(&self) -> Result<MutexGuard<'_, KvStore>> {
        self.kv
            .lock()
            .map_err(|_| EngineError::Backend("CPU KV cache: a thread panicked while writing it".into()))
    }

    /// Rejects plans that would index outside the cache or the vocabulary.
    fn check_plan(&self, plan: &StepPlan) -> Result<()> {
        let (num_blocks, bs) = self.geometry;
        let bad = |detail: String| EngineError::Backend(format!("invalid step plan: {detail}"));
        for (s, seq) in plan.seqs.iter().enumerate() {
            let end = seq.start_pos + seq.tokens.len();
            if seq.block_table.len() * bs < end {
                return Err(bad(format!("sequence {s}: {} blocks cannot hold {end} slots", seq.block_table.len())));
            }
            if let Some(&b) = seq.block_table.iter().find(|&&b| b as usize >= num_blocks) {
                return Err(bad(format!("sequence {s}: block {b} >= {num_blocks}")));
            }
            for (i, &t) in seq.tokens.iter().enumerate() {
                if t as usize >= self.config.vocab_size {
                    return Err(EngineError::OutOfVocab { id: t, index: i, vocab: self.config.vocab_size });
                }
            }
            if let Some(parents) = &seq.tree_parents {
                if parents.len() != seq.tokens.len() || parents.iter().enumerate().any(|(i, &p)| p >= i as i32 || p < -1) {
                    return Err(bad(format!("sequence {s}: tree parents must satisfy -1 <= parent[i] < i")));
                }
            }
        }
        Ok(())
    }
}

impl Backend for CpuBackend {
    fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn kv_geometry(&self) -> (usize, usize) {
        self.geometry
    }

    fn fork_executor(&mut self) -> Result<Option<Box<dyn Backend>>> {
        Ok(Some(Box::new(self.fork())))
    }

    fn forward_layers(&mut self, plan: &StepPlan, num_layers: usize) -> Result<Logits> {
        self.check_plan(plan)?;
        let cfg = &self.config;
        let w = &*self.weights;
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let (qd, kvd, ff) = (nh * hd, nkv * hd, cfg.intermediate_size);
        let num_layers = num_layers.min(cfg.num_hidden_layers);
        let mut kv = self.store()?;

        // Flatten the plan: one row per new token.
        let mut tokens = Vec::new();
        let mut positions = Vec::new();
        let mut slots = Vec::new();
        for (s, seq) in plan.seqs.iter().enumerate() {
            for (index, pos) in seq.positions().into_iter().enumerate() {
                tokens.push(TokenRef { seq: s, index });
                positions.push(pos);
                slots.push(kv.slot(&seq.block_table, seq.start_pos + index));
            }
        }
        let t = tokens.len();
        let mut x = Vec::with_capacity(t * h);
        for seq in &plan.seqs {
            for &id in &seq.tokens {
                x.extend_from_slice(&w.embed[id as usize * h..][..h]);
            }
        }
        let mut hn = vec![0.0; t * h];
        let (mut q, mut k, mut v) = (vec![0.0; t * qd], vec![0.0; t * kvd], vec![0.0; t * kvd]);
        let mut attn = vec![0.0; t * qd];
        let mut proj = vec![0.0; t * h];
        let (mut gate, mut up) = (vec![0.0; t * ff], vec![0.0; t * ff]);
        let shape = AttnShape { n_heads: nh, n_kv_heads: nkv, head_dim: hd };

        for (l, lw) in w.layers.iter().enumerate().take(num_layers) {
            ops::rms_norm(&x, &lw.attn_norm, cfg.rms_norm_eps, &mut hn);
            linear(&hn, &lw.wq, &mut q, t, h, qd);
            linear(&hn, &lw.wk, &mut k, t, h, kvd);
            linear(&hn, &lw.wv, &mut v, t, h, kvd);
            for (r, &pos) in positions.iter().enumerate() {
                q[r * qd..][..qd].chunks_exact_mut(hd).for_each(|head| ops::rope_rotate_half(head, pos, &self.inv_freq));
                k[r * kvd..][..kvd].chunks_exact_mut(hd).for_each(|head| ops::rope_rotate_half(head, pos, &self.inv_freq));
                let slot = slots[r];
                kv.k[l][slot * kvd..][..kvd].copy_from_slice(&k[r * kvd..][..kvd]);
                kv.v[l][slot * kvd..][..kvd].copy_from_slice(&v[r * kvd..][..kvd]);
            }
            paged_attention(&plan.seqs, &tokens, &q, &kv, l, &shape, &mut attn);
            linear(&attn, &lw.wo, &mut proj, t, qd, h);
            ops::add_assign(&mut x, &proj);

            ops::rms_norm(&x, &lw.ffn_norm, cfg.rms_norm_eps, &mut hn);
            linear(&hn, &lw.w_gate, &mut gate, t, h, ff);
            linear(&hn, &lw.w_up, &mut up, t, h, ff);
            ops::silu_mul(&mut gate, &up);
            linear(&gate, &lw.w_down, &mut proj, t, ff, h);
            ops::add_assign(&mut x, &proj);
        }
        drop(kv); // the head needs no cache: let the other lane's pass start

        // Final norm and LM head, only on the rows that want logits.
        let mut rows = Vec::new();
        let mut row_start = vec![0];
        let mut base = 0;
        for seq in &plan.seqs {
            let n = seq.tokens.len();
            match seq.logits {
                LogitsWanted::All => rows.extend(base..base + n),
                LogitsWanted::Last if n > 0 => rows.push(base + n - 1),
                _ => {}
            }
            row_start.push(rows.len());
            base += n;
        }
        let mut sel = Vec::with_capacity(rows.len() * h);
        for &r in &rows {
            sel.extend_from_slice(&x[r * h..][..h]);
        }
        let mut normed = vec![0.0; sel.len()];
        ops::rms_norm(&sel, &w.norm, cfg.rms_norm_eps, &mut normed);
        let mut data = vec![0.0; rows.len() * cfg.vocab_size];
        linear(&normed, w.lm_head(), &mut data, rows.len(), h, cfg.vocab_size);
        Ok(Logits { vocab: cfg.vocab_size, data, row_start })
    }

    fn copy_blocks(&mut self, pairs: &[(u32, u32)]) -> Result<()> {
        let (nb, bs) = self.geometry;
        let mut kv = self.store()?;
        for &(src, dst) in pairs {
            if src as usize >= nb || dst as usize >= nb {
                return Err(EngineError::Backend(format!("copy_blocks: block pair ({src}, {dst}) outside 0..{nb}")));
            }
            for off in 0..bs {
                kv.copy_slot(src as usize * bs + off, dst as usize * bs + off);
            }
        }
        Ok(())
    }

    fn move_slots(&mut self, block_table: &[u32], moves: &[(usize, usize)]) -> Result<()> {
        let cap = block_table.len() * self.geometry.1;
        let mut kv = self.store()?;
        for &(from, to) in moves {
            if from >= cap || to >= cap {
                return Err(EngineError::Backend(format!("move_slots: ({from}, {to}) outside the {cap} slots of the table")));
            }
            let (a, b) = (kv.slot(block_table, from), kv.slot(block_table, to));
            kv.copy_slot(a, b);
        }
        Ok(())
    }
}
