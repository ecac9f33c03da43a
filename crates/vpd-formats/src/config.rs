//! Llama-family hyperparameters (Llama 3 / 3.1 / 3.2, SmolLM2), shared by every format.
//!
//! Field names follow Hugging Face's `LlamaConfig`; the GGUF loader maps `llama.*` keys onto
//! the same struct. RoPE scaling type `llama3` is the frequency-dependent scaling of
//! Llama 3.1 (`transformers.modeling_rope_utils._compute_llama3_parameters`).
use serde::{Deserialize, Serialize};

/// `rope_scaling` with `rope_type: "llama3"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_max_position_embeddings: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub rope_scaling: Option<RopeScaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    /// Every id that ends generation (`eos_token_id` may be a list in Llama 3).
    pub eos_token_ids: Vec<u32>,
}

impl LlamaConfig {
    /// Checks the internal consistency every kernel relies on.
    ///
    /// # Errors
    /// A message naming the first field that is zero or inconsistent.
    pub fn validate(&self) -> Result<(), String> {
        let nonzero = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (name, v) in nonzero {
            if v == 0 {
                return Err(format!("`{name}` must be positive"));
            }
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return Err(format!(
                "`num_attention_heads` ({}) is not a multiple of `num_key_value_heads` ({})",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!("`head_dim` ({}) must be even for RoPE", self.head_dim));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err("`rms_norm_eps` must be a positive number".into());
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err("`rope_theta` must be a positive number".into());
        }
        if let Some(s) = &self.rope_scaling {
            if !(s.factor >= 1.0 && s.low_freq_factor > 0.0 && s.high_freq_factor > s.low_freq_factor)
                || s.original_max_position_embeddings == 0
            {
                return Err("`rope_scaling` (llama3) has out-of-range factors".into());
            }
        }
        for &e in &self.eos_token_ids {
            if e as usize >= self.vocab_size {
                return Err(format!("`eos_token_id` {e} is outside the vocabulary"));
            }
        }
        Ok(())
    }

    /// Inverse frequencies of RoPE, one per pair of dimensions, with llama3 scaling applied.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let half = self.head_dim / 2;
        let mut inv: Vec<f32> = (0..half)
            .map(|i| 1.0 / (self.rope_theta as f64).powf(2.0 * i as f64 / self.head_dim as f64) as f32)
            .collect();
        if let Some(s) = &self.rope_scaling {
            let old = s.original_max_position_embeddings as f32;
            let low_wavelen = old / s.low_freq_factor;
            let high_wavelen = old / s.high_freq_factor;
            for f in &mut inv {
                let wavelen = 2.0 * std::f32::consts::PI / *f;
                if wavelen > low_wavelen {
                    *f /= s.factor;
                } else if wavelen >= high_wavelen {
                    let smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                    *f = (1.0 - smooth) * *f / s.factor + smooth * *f;
                }
            }
        }
        inv
    }

    /// Number of bytes a batch-1 decode step reads in weights of `bytes_per_weight`
    /// (the output head counts; the embedding table does not, unless tied).
    pub fn decode_weight_bytes(&self, bytes_per_weight: usize) -> usize {
        let h = self.hidden_size;
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let per_layer = h * q + 2 * h * kv + q * h + 3 * h * self.intermediate_size + 2 * h;
        (self.num_hidden_layers * per_layer + h + self.vocab_size * h) * bytes_per_weight
    }
}
