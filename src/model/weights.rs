//! Llama-family weights as f32 host tensors, read from any [`WeightSource`] (GGUF or
//! safetensors) under Hugging Face names, with every shape checked against the config.
use rayon::prelude::*;
use vpd_formats::{LlamaConfig, WeightSource};

use crate::error::{EngineError, Result};

/// One decoder layer. Linear weights are row-major `[out, in]`.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub wq: Vec<f32>,
    pub wk: Vec<f32>,
    pub wv: Vec<f32>,
    pub wo: Vec<f32>,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Vec<f32>,
    pub w_up: Vec<f32>,
    pub w_down: Vec<f32>,
}

#[derive(Debug, Clone)]
pub struct LlamaWeights {
    /// `[vocab, hidden]`.
    pub embed: Vec<f32>,
    pub layers: Vec<LayerWeights>,
    pub norm: Vec<f32>,
    /// `[vocab, hidden]`; `None` when tied to `embed`.
    pub lm_head: Option<Vec<f32>>,
}

impl LlamaWeights {
    /// The output projection (the embedding table when tied).
    pub fn lm_head(&self) -> &[f32] {
        self.lm_head.as_deref().unwrap_or(&self.embed)
    }

    /// Reads every tensor, converting to f32, in parallel over layers.
    ///
    /// # Errors
    /// A missing tensor, or one whose shape disagrees with `cfg` (the error names it).
    pub fn load(src: &dyn WeightSource, cfg: &LlamaConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        let q = cfg.num_attention_heads * cfg.head_dim;
        let kv = cfg.num_key_value_heads * cfg.head_dim;
        let ff = cfg.intermediate_size;
        let read = |name: &str, shape: &[usize]| read_checked(src, name, shape);
        let embed = read("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
        let norm = read("model.norm.weight", &[h])?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(read("lm_head.weight", &[cfg.vocab_size, h])?)
        };
        let layers = (0..cfg.num_hidden_layers)
            .into_par_iter()
            .map(|i| {
                let p = format!("model.layers.{i}");
                Ok(LayerWeights {
                    attn_norm: read(&format!("{p}.input_layernorm.weight"), &[h])?,
                    wq: read(&format!("{p}.self_attn.q_proj.weight"), &[q, h])?,
                    wk: read(&format!("{p}.self_attn.k_proj.weight"), &[kv, h])?,
                    wv: read(&format!("{p}.self_attn.v_proj.weight"), &[kv, h])?,
                    wo: read(&format!("{p}.self_attn.o_proj.weight"), &[h, q])?,
                    ffn_norm: read(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                    w_gate: read(&format!("{p}.mlp.gate_proj.weight"), &[ff, h])?,
                    w_up: read(&format!("{p}.mlp.up_proj.weight"), &[ff, h])?,
                    w_down: read(&format!("{p}.mlp.down_proj.weight"), &[h, ff])?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { embed, layers, norm, lm_head })
    }
}

fn read_checked(src: &dyn WeightSource, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let model_err = |detail: String| EngineError::Model { path: name.to_string(), detail };
    let info = src.info(name).ok_or_else(|| model_err("tensor is missing from the checkpoint".into()))?;
    if info.shape != shape {
        return Err(model_err(format!("shape {:?} disagrees with the config, which implies {:?}", info.shape, shape)));
    }
    let data = src.read_f32(name)?;
    if data.len() != info.numel() {
        return Err(model_err(format!("read {} values, expected {}", data.len(), info.numel())));
    }
    Ok(data)
}
