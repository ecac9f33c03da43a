//! Llama consistency checks: tensor shapes against hyperparameters, and llama3 RoPE scaling.
use crate::config::{LlamaConfig, RopeScaling};
use crate::error::{FormatError, Result};
use crate::source::WeightSource;

use super::GgufFile;

/// Llama 3.1's `original_max_position_embeddings`, used when the file does not say. Only the
/// ratios of it to the recovered wavelength bounds matter, so any value gives the same RoPE.
const DEFAULT_ORIGINAL_CONTEXT: usize = 8192;

impl GgufFile {
    /// Checks every Llama tensor's row-major shape against `cfg`: embeddings and head
    /// `[vocab, hidden]`, q/o `[heads·head_dim, hidden]` / transposed, k/v
    /// `[kv_heads·head_dim, hidden]`, gate/up `[ffn, hidden]`, down `[hidden, ffn]`, norms
    /// `[hidden]`. Also rejects missing layer tensors and layers beyond `block_count`.
    ///
    /// # Errors
    /// [`FormatError::Tensor`] naming the first offending tensor and the expected shape.
    pub fn check_llama_shapes(&self, cfg: &LlamaConfig) -> Result<()> {
        let (h, ff, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let q = cfg.num_attention_heads * cfg.head_dim;
        let kv = cfg.num_key_value_heads * cfg.head_dim;
        let check = |name: &str, want: &[usize], meaning: &str, required: bool| -> Result<()> {
            let err = |detail: String| FormatError::Tensor {
                path: self.path().to_path_buf(),
                tensor: name.to_string(),
                detail,
            };
            match self.info_gguf(name) {
                None if required => Err(err(format!(
                    "missing (expected shape {want:?} = {meaning})"
                ))),
                None => Ok(()),
                Some(t) if t.shape() != want => Err(err(format!(
                    "shape {:?} disagrees with the hyperparameters: expected {want:?} = {meaning}",
                    t.shape()
                ))),
                Some(_) => Ok(()),
            }
        };
        check(
            "token_embd.weight",
            &[v, h],
            "[vocab_size, hidden_size]",
            true,
        )?;
        check("output.weight", &[v, h], "[vocab_size, hidden_size]", false)?;
        check("output_norm.weight", &[h], "[hidden_size]", true)?;
        check(
            "rope_freqs.weight",
            &[cfg.head_dim / 2],
            "[head_dim / 2]",
            false,
        )?;
        for l in 0..cfg.num_hidden_layers {
            let layer: [(&str, [usize; 2], &str); 7] = [
                ("attn_q", [q, h], "[heads·head_dim, hidden_size]"),
                ("attn_k", [kv, h], "[kv_heads·head_dim, hidden_size]"),
                ("attn_v", [kv, h], "[kv_heads·head_dim, hidden_size]"),
                ("attn_output", [h, q], "[hidden_size, heads·head_dim]"),
                ("ffn_gate", [ff, h], "[feed_forward_length, hidden_size]"),
                ("ffn_up", [ff, h], "[feed_forward_length, hidden_size]"),
                ("ffn_down", [h, ff], "[hidden_size, feed_forward_length]"),
            ];
            for (t, want, meaning) in layer {
                check(&format!("blk.{l}.{t}.weight"), &want, meaning, true)?;
            }
            for t in ["attn_norm", "ffn_norm"] {
                check(&format!("blk.{l}.{t}.weight"), &[h], "[hidden_size]", true)?;
            }
        }
        for t in &self.tensors {
            let layer = t
                .name
                .strip_prefix("blk.")
                .and_then(|r| r.split_once('.'))
                .and_then(|(n, _)| n.parse().ok());
            if let Some(n) = layer.filter(|&n: &usize| n >= cfg.num_hidden_layers) {
                return Err(FormatError::Tensor {
                    path: self.path().to_path_buf(),
                    tensor: t.name.clone(),
                    detail: format!(
                        "layer {n} is beyond llama.block_count = {}",
                        cfg.num_hidden_layers
                    ),
                });
            }
        }
        Ok(())
    }

    /// llama3 RoPE scaling. The converter stores no factors, only `rope_freqs.weight`: the
    /// per-frequency divisor (1 for short wavelengths, `factor` for long ones, a smooth blend
    /// between). We recover `factor` as the largest divisor and the two wavelength bounds by
    /// fitting the blend, then verify the result reproduces every divisor.
    pub(super) fn llama3_scaling(&self, cfg: &LlamaConfig) -> Result<Option<RopeScaling>> {
        const TYPE: &str = "llama.rope.scaling.type";
        let ty =
            match self.get(TYPE) {
                None => None,
                Some(v) => Some(v.as_str().ok_or_else(|| {
                    self.field_err(TYPE, format!("expected a string, found {v:?}"))
                })?),
            };
        let has_freqs = self.info_gguf("rope_freqs.weight").is_some();
        let unsupported = |detail: String| FormatError::Unsupported {
            path: self.path().to_path_buf(),
            what: "RoPE scaling",
            detail,
        };
        match ty {
            None | Some("none") if !has_freqs => return Ok(None),
            None | Some("none") | Some("llama3") => {}
            Some(other) => {
                return Err(unsupported(format!(
                    "{TYPE} = `{other}` (only llama3 is read)"
                )))
            }
        }
        if !has_freqs {
            return Err(unsupported(
                "llama3 scaling without a rope_freqs.weight tensor: factors cannot be recovered"
                    .into(),
            ));
        }
        let divisors = self.read_f32("rope_freqs.weight")?;
        let half = cfg.head_dim / 2;
        if divisors.len() != half || cfg.head_dim == 0 {
            return Err(unsupported(format!(
                "rope_freqs.weight has {} values, head_dim/2 is {half}",
                divisors.len()
            )));
        }
        let factor = divisors.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if !(factor.is_finite() && factor >= 1.0)
            || divisors.iter().any(|&r| r.is_nan() || r <= 0.0)
        {
            return Err(unsupported(format!(
                "rope_freqs.weight has out-of-range divisors (max {factor})"
            )));
        }
        if factor - 1.0 < 1e-6 {
            return Ok(None); // all divisors 1: no scaling
        }
        let old = match self.opt_usize("llama.rope.scaling.original_context_length")? {
            Some(o) if o > 0 => o,
            _ => DEFAULT_ORIGINAL_CONTEXT,
        };
        // In the blend, 1/r = (1-s)/factor + s with s = old/λ · a + b, a = 1/(high-low), b = -low·a.
        let theta = f64::from(cfg.rope_theta);
        let (f, o) = (f64::from(factor), old as f64);
        let points: Vec<(f64, f64)> = (0..half)
            .filter(|&i| divisors[i] > 1.0 + 1e-4 && divisors[i] < factor * (1.0 - 1e-4))
            .map(|i| {
                let wavelen =
                    2.0 * std::f64::consts::PI * theta.powf(2.0 * i as f64 / cfg.head_dim as f64);
                let s = (1.0 / f64::from(divisors[i]) - 1.0 / f) / (1.0 - 1.0 / f);
                (o / wavelen, s)
            })
            .collect();
        let n = points.len() as f64;
        let (sx, sy) = points
            .iter()
            .fold((0.0, 0.0), |(x, y), p| (x + p.0, y + p.1));
        let sxx: f64 = points.iter().map(|p| (p.0 - sx / n).powi(2)).sum();
        let sxy: f64 = points.iter().map(|p| (p.0 - sx / n) * (p.1 - sy / n)).sum();
        if points.len() < 2 || sxx <= 0.0 || sxy <= 0.0 {
            return Err(unsupported(
                "rope_freqs.weight has too few blended frequencies to recover low/high_freq_factor"
                    .into(),
            ));
        }
        let a = sxy / sxx;
        let b = sy / n - a * sx / n;
        let low = -b / a;
        let scaling = RopeScaling {
            factor,
            low_freq_factor: low as f32,
            high_freq_factor: (low + 1.0 / a) as f32,
            original_max_position_embeddings: old,
        };
        let check = LlamaConfig {
            rope_scaling: Some(scaling.clone()),
            ..cfg.clone()
        };
        let plain = LlamaConfig {
            rope_scaling: None,
            ..cfg.clone()
        };
        let ok = check
            .rope_inv_freq()
            .iter()
            .zip(plain.rope_inv_freq())
            .zip(&divisors)
            .all(|((&got, base), &r)| {
                let want = base / r;
                (got - want).abs() <= 1e-3 * want.abs()
            });
        if !ok || scaling.low_freq_factor.is_nan() || scaling.low_freq_factor <= 0.0 {
            return Err(unsupported(
                "rope_freqs.weight does not follow the llama3 scaling formula".into(),
            ));
        }
        Ok(Some(scaling))
    }
}
