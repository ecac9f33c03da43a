//! The Llama architecture in GGUF: tensor names, the q/k row permutation and `llama.*` keys.
//!
//! Names and keys are those llama.cpp's `convert_hf_to_gguf.py` writes (`gguf-py`'s
//! `constants.py`). Its `LlamaModel.permute` reorders q_proj/k_proj rows so ggml's
//! interleaved RoPE (pairs `(2i, 2i+1)`) matches Hugging Face's rotate-half RoPE (pairs
//! `(i, i + head_dim/2)`); we undo it so the exposed tensors equal the HF checkpoint's.
use crate::config::LlamaConfig;
use crate::error::{FormatError, Result};

use super::{GgufFile, GgufValue};

/// The Hugging Face name of a GGUF tensor; unknown names are kept as they are.
pub fn hf_tensor_name(gguf: &str) -> String {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return f.to_string();
    }
    let layer = gguf
        .strip_prefix("blk.")
        .and_then(|rest| rest.split_once('.'));
    if let Some((n, rest)) = layer {
        if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
            let hf = match rest {
                "attn_norm.weight" => Some("input_layernorm.weight"),
                "attn_q.weight" => Some("self_attn.q_proj.weight"),
                "attn_k.weight" => Some("self_attn.k_proj.weight"),
                "attn_v.weight" => Some("self_attn.v_proj.weight"),
                "attn_output.weight" => Some("self_attn.o_proj.weight"),
                "ffn_norm.weight" => Some("post_attention_layernorm.weight"),
                "ffn_gate.weight" => Some("mlp.gate_proj.weight"),
                "ffn_up.weight" => Some("mlp.up_proj.weight"),
                "ffn_down.weight" => Some("mlp.down_proj.weight"),
                _ => None,
            };
            if let Some(hf) = hf {
                return format!("model.layers.{n}.{hf}");
            }
        }
    }
    gguf.to_string()
}

/// The converter's permutation (HF → GGUF) of a row-major `[rows, cols]` matrix whose rows
/// are `n_head` heads: per head, rows `(2, half, cols)` become `(half, 2, cols)`.
pub fn permute_hf_to_gguf(w: &[f32], n_head: usize, cols: usize) -> Result<Vec<f32>, String> {
    permute(w, n_head, cols, true)
}

/// Inverse of [`permute_hf_to_gguf`]: GGUF row `h·d + 2i + j` goes back to HF row `h·d + j·d/2 + i`.
pub fn permute_gguf_to_hf(w: &[f32], n_head: usize, cols: usize) -> Result<Vec<f32>, String> {
    permute(w, n_head, cols, false)
}

fn permute(w: &[f32], n_head: usize, cols: usize, to_gguf: bool) -> Result<Vec<f32>, String> {
    let rows = w.len().checked_div(cols).unwrap_or(0);
    if n_head == 0 || cols == 0 || rows * cols != w.len() || rows % (2 * n_head) != 0 {
        return Err(format!(
            "cannot split {} values × {cols} columns into {n_head} heads of even size",
            w.len()
        ));
    }
    let head_dim = rows / n_head;
    let half = head_dim / 2;
    let mut out = vec![0.0; w.len()];
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let gguf_row = h * head_dim + 2 * i + j;
                let hf_row = h * head_dim + j * half + i;
                let (src, dst) = if to_gguf {
                    (hf_row, gguf_row)
                } else {
                    (gguf_row, hf_row)
                };
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    Ok(out)
}

impl GgufFile {
    pub(super) fn field_err(&self, key: &str, detail: String) -> FormatError {
        FormatError::Field {
            path: self.path().to_path_buf(),
            field: key.to_string(),
            detail,
        }
    }

    /// An optional unsigned integer key that must fit in `usize` if present.
    pub(super) fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64().and_then(|x| usize::try_from(x).ok()) {
                Some(x) => Ok(Some(x)),
                None => {
                    Err(self.field_err(key, format!("expected an unsigned integer, found {v:?}")))
                }
            },
        }
    }

    fn req_usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| self.field_err(key, "missing".into()))
    }

    fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f32()
                .map(Some)
                .ok_or_else(|| self.field_err(key, format!("expected a number, found {v:?}"))),
        }
    }

    fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        match self.opt_usize(key)? {
            None => Ok(None),
            Some(x) => u32::try_from(x)
                .map(Some)
                .map_err(|_| self.field_err(key, format!("{x} does not fit in u32"))),
        }
    }

    /// Number of heads whose rows `read_f32` un-permutes for this GGUF tensor, if any.
    pub(super) fn permute_heads(&self, gguf_name: &str) -> Result<Option<usize>> {
        let Some(rest) = gguf_name
            .strip_prefix("blk.")
            .and_then(|r| r.split_once('.'))
            .map(|(_, r)| r)
        else {
            return Ok(None);
        };
        match rest {
            "attn_q.weight" => self.req_usize("llama.attention.head_count").map(Some),
            "attn_k.weight" => match self.opt_usize("llama.attention.head_count_kv")? {
                Some(n) => Ok(Some(n)),
                None => self.req_usize("llama.attention.head_count").map(Some),
            },
            _ => Ok(None),
        }
    }

    /// The Llama hyperparameters from `llama.*` and `tokenizer.ggml.*` keys, validated and
    /// checked against every tensor's shape.
    ///
    /// # Errors
    /// Architecture other than `llama` ([`FormatError::Unsupported`]); a missing, mistyped or
    /// inconsistent key ([`FormatError::Field`]); a tensor of the wrong shape or a missing one
    /// ([`FormatError::Tensor`]); llama3 RoPE scaling whose factors cannot be recovered.
    pub fn llama_config(&self) -> Result<LlamaConfig> {
        const ARCH: &str = "general.architecture";
        match self.get(ARCH) {
            None => return Err(self.field_err(ARCH, "missing".into())),
            Some(GgufValue::String(a)) if a == "llama" => {}
            Some(GgufValue::String(a)) => {
                return Err(FormatError::Unsupported {
                    path: self.path().to_path_buf(),
                    what: "architecture",
                    detail: format!("`{a}` (only `llama` is read)"),
                })
            }
            Some(v) => return Err(self.field_err(ARCH, format!("expected a string, found {v:?}"))),
        }
        let vocab_size = match self.opt_usize("llama.vocab_size")? {
            Some(v) => v,
            None => match self
                .get("tokenizer.ggml.tokens")
                .and_then(GgufValue::as_array)
            {
                Some(t) => t.len(),
                None => {
                    return Err(self.field_err(
                        "llama.vocab_size",
                        "missing, and no tokenizer.ggml.tokens".into(),
                    ))
                }
            },
        };
        let hidden_size = self.req_usize("llama.embedding_length")?;
        let heads = self.req_usize("llama.attention.head_count")?;
        let kv_heads = self
            .opt_usize("llama.attention.head_count_kv")?
            .unwrap_or(heads);
        let head_dim = match self.opt_usize("llama.attention.key_length")? {
            Some(d) => d,
            None if heads != 0 && hidden_size % heads == 0 => hidden_size / heads,
            None => {
                let detail = format!(
                    "missing, and embedding_length {hidden_size} is not divisible by {heads} heads"
                );
                return Err(self.field_err("llama.attention.key_length", detail));
            }
        };
        if let Some(v) = self.opt_usize("llama.attention.value_length")? {
            if v != head_dim {
                return Err(self.field_err(
                    "llama.attention.value_length",
                    format!("{v} differs from key_length {head_dim}"),
                ));
            }
        }
        const EPS: &str = "llama.attention.layer_norm_rms_epsilon";
        let rms_norm_eps = self
            .opt_f32(EPS)?
            .ok_or_else(|| self.field_err(EPS, "missing".into()))?;
        let rope_theta = self.opt_f32("llama.rope.freq_base")?.unwrap_or(10000.0);
        let eos = self.opt_u32("tokenizer.ggml.eos_token_id")?;
        let mut cfg = LlamaConfig {
            vocab_size,
            hidden_size,
            intermediate_size: self.req_usize("llama.feed_forward_length")?,
            num_hidden_layers: self.req_usize("llama.block_count")?,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps,
            rope_theta,
            rope_scaling: None,
            max_position_embeddings: self.req_usize("llama.context_length")?,
            tie_word_embeddings: self.info_gguf("output.weight").is_none(),
            bos_token_id: self.opt_u32("tokenizer.ggml.bos_token_id")?,
            eos_token_ids: eos.into_iter().collect(),
        };
        cfg.rope_scaling = self.llama3_scaling(&cfg)?;
        cfg.validate().map_err(|e| {
            // `validate` names the HF field in backticks; report it under that name.
            let field = e.split('`').nth(1).unwrap_or("llama").to_string();
            FormatError::Field {
                path: self.path().to_path_buf(),
                field,
                detail: e,
            }
        })?;
        self.check_llama_shapes(&cfg)?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_round_trips_and_matches_the_converter() {
        // 2 heads of head_dim 4, 3 columns: HF row r holds r·10 + c.
        let cols = 3;
        let hf: Vec<f32> = (0..8)
            .flat_map(|r| (0..cols).map(move |c| (r * 10 + c) as f32))
            .collect();
        let g = permute_hf_to_gguf(&hf, 2, cols).unwrap();
        // Converter: per head rows (2, 2) -> swap -> GGUF rows [0, 2, 1, 3] of each head.
        let rows: Vec<f32> = g.chunks(cols).map(|r| r[0] / 10.0).collect();
        assert_eq!(rows, [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        assert_eq!(permute_gguf_to_hf(&g, 2, cols).unwrap(), hf);
        // head_dim 64, 3 heads, like SmolLM2's k_proj.
        let big: Vec<f32> = (0..192 * 5).map(|x| x as f32).collect();
        let back = permute_gguf_to_hf(&permute_hf_to_gguf(&big, 3, 5).unwrap(), 3, 5).unwrap();
        assert_eq!(back, big);
        assert!(permute_gguf_to_hf(&big, 7, 5).is_err());
    }

    #[test]
    fn tensor_names_map_to_hugging_face() {
        assert_eq!(
            hf_tensor_name("blk.12.ffn_down.weight"),
            "model.layers.12.mlp.down_proj.weight"
        );
        assert_eq!(hf_tensor_name("output.weight"), "lm_head.weight");
        assert_eq!(hf_tensor_name("rope_freqs.weight"), "rope_freqs.weight");
        assert_eq!(hf_tensor_name("blk.x.attn_q.weight"), "blk.x.attn_q.weight");
    }
}
