//! `config.json` and `generation_config.json` of a Hugging Face Llama checkpoint.
//!
//! Defaults follow `transformers.LlamaConfig` (`head_dim = hidden / heads`,
//! `num_key_value_heads = heads`, `rope_theta = 10000`, `rms_norm_eps = 1e-6`,
//! `max_position_embeddings = 2048`, untied embeddings). Fields are read from a
//! `serde_json::Value` by hand rather than derived, so that every error names the field.
use std::path::Path;

use serde_json::{Map, Value};

use crate::config::{LlamaConfig, RopeScaling};
use crate::error::{FormatError, Result};

/// The sampling defaults and extra stop ids of `generation_config.json`; every field is optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationConfig {
    pub do_sample: Option<bool>,
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub max_length: Option<usize>,
    pub bos_token_id: Option<u32>,
    /// `eos_token_id` (an int or a list); empty when absent.
    pub eos_token_ids: Vec<u32>,
}

/// Field accessors that turn a wrong type into a `FormatError::Field` naming file and key.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    path: &'a Path,
}

impl<'a> Fields<'a> {
    fn err(&self, field: &str, detail: impl Into<String>) -> FormatError {
        FormatError::Field {
            path: self.path.to_path_buf(),
            field: field.to_string(),
            detail: detail.into(),
        }
    }

    /// The value of `key`, treating JSON `null` as absent (HF writes `null` for unset fields).
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    self.err(key, format!("expected a non-negative integer, found {v}"))
                }),
        }
    }

    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| self.err(key, "missing"))
    }

    fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|f| Some(f as f32))
                .ok_or_else(|| self.err(key, format!("expected a number, found {v}"))),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected a boolean, found {v}"))),
        }
    }

    fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        match self.opt_usize(key)? {
            None => Ok(None),
            Some(n) => u32::try_from(n)
                .map(Some)
                .map_err(|_| self.err(key, format!("{n} does not fit in u32"))),
        }
    }

    /// An id or a list of ids (Llama 3 lists several end-of-turn tokens).
    fn ids(&self, key: &str) -> Result<Vec<u32>> {
        let bad = |v: &Value| {
            self.err(
                key,
                format!("expected a token id or a list of ids, found {v}"),
            )
        };
        let one = |v: &Value| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad(v))
        };
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items.iter().map(one).collect(),
            Some(v) => Ok(vec![one(v)?]),
        }
    }
}

fn parse_object<'a>(
    json: &str,
    path: &Path,
    value: &'a mut Value,
) -> Result<&'a Map<String, Value>> {
    *value = serde_json::from_str(json).map_err(|e| FormatError::Corrupt {
        path: path.to_path_buf(),
        detail: format!("invalid JSON: {e}"),
    })?;
    value.as_object().ok_or_else(|| FormatError::Corrupt {
        path: path.to_path_buf(),
        detail: "expected a JSON object".into(),
    })
}

/// Parses a Llama `config.json`; `path` is only used in error messages.
///
/// # Errors
/// Bad JSON (`Corrupt`), a non-Llama architecture or unknown RoPE scaling (`Unsupported`),
/// or a missing, mistyped or inconsistent field (`Field`).
pub fn parse_llama_config(json: &str, path: &Path) -> Result<LlamaConfig> {
    let mut value = Value::Null;
    let obj = parse_object(json, path, &mut value)?;
    let f = Fields { obj, path };

    let archs: Vec<&str> = match f.get("architectures") {
        None => Vec::new(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        Some(v) => {
            return Err(f.err(
                "architectures",
                format!("expected a list of strings, found {v}"),
            ))
        }
    };
    let model_type = f.get("model_type").and_then(Value::as_str);
    if !archs.contains(&"LlamaForCausalLM") && model_type != Some("llama") {
        let named = if archs.is_empty() {
            format!("model_type {model_type:?}")
        } else {
            archs.join(", ")
        };
        return Err(FormatError::Unsupported {
            path: path.to_path_buf(),
            what: "architecture",
            detail: format!("{named} (only LlamaForCausalLM / model_type \"llama\" is supported)"),
        });
    }

    let hidden_size = f.usize("hidden_size")?;
    let num_attention_heads = f.usize("num_attention_heads")?;
    if num_attention_heads == 0 {
        return Err(f.err("num_attention_heads", "must be positive"));
    }
    let head_dim = match f.opt_usize("head_dim")? {
        Some(d) => d,
        None if hidden_size % num_attention_heads == 0 => hidden_size / num_attention_heads,
        None => {
            return Err(f.err(
                "head_dim",
                format!("absent, and hidden_size {hidden_size} is not divisible by num_attention_heads {num_attention_heads}"),
            ))
        }
    };
    let cfg = LlamaConfig {
        vocab_size: f.usize("vocab_size")?,
        hidden_size,
        intermediate_size: f.usize("intermediate_size")?,
        num_hidden_layers: f.usize("num_hidden_layers")?,
        num_attention_heads,
        num_key_value_heads: f
            .opt_usize("num_key_value_heads")?
            .unwrap_or(num_attention_heads),
        head_dim,
        rms_norm_eps: f.opt_f32("rms_norm_eps")?.unwrap_or(1e-6),
        rope_theta: rope_theta(&f)?,
        rope_scaling: parse_rope_scaling(&f)?,
        max_position_embeddings: f.opt_usize("max_position_embeddings")?.unwrap_or(2048),
        tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
        bos_token_id: f.opt_u32("bos_token_id")?,
        eos_token_ids: f.ids("eos_token_id")?,
    };
    validate(&cfg, path)?;
    Ok(cfg)
}

/// Runs `LlamaConfig::validate`, turning its message into a `Field` error for the named field.
pub(crate) fn validate(cfg: &LlamaConfig, path: &Path) -> Result<()> {
    cfg.validate().map_err(|msg| {
        // validate() quotes the offending field in backticks first; use it as the field name.
        let field = msg.split('`').nth(1).unwrap_or("config").to_string();
        FormatError::Field {
            path: path.to_path_buf(),
            field,
            detail: msg,
        }
    })
}

/// Where the RoPE settings live: `rope_scaling` (hub checkpoints, transformers 4) or
/// `rope_parameters` (what transformers 5 writes, with `rope_theta` inside it).
fn rope_key(f: &Fields<'_>) -> &'static str {
    if f.get("rope_scaling").is_some_and(|v| !v.is_null()) || f.get("rope_parameters").is_none() {
        "rope_scaling"
    } else {
        "rope_parameters"
    }
}

fn rope_theta(f: &Fields<'_>) -> Result<f32> {
    if let Some(t) = f.opt_f32("rope_theta")? {
        return Ok(t);
    }
    if let Some(obj) = f.get("rope_parameters").and_then(Value::as_object) {
        let s = Fields { obj, path: f.path };
        if let Some(t) = s.opt_f32("rope_theta").map_err(|_| f.err("rope_parameters.rope_theta", "expected a number"))? {
            return Ok(t);
        }
    }
    Ok(10_000.0)
}

fn parse_rope_scaling(f: &Fields<'_>) -> Result<Option<RopeScaling>> {
    let key = rope_key(f);
    let Some(v) = f.get(key) else {
        return Ok(None);
    };
    if v.is_null() {
        return Ok(None);
    }
    let Some(obj) = v.as_object() else {
        return Err(f.err(key, format!("expected an object or null, found {v}")));
    };
    let s = Fields { obj, path: f.path };
    // transformers renamed `type` to `rope_type`; checkpoints carry either.
    let kind = s
        .get("rope_type")
        .or_else(|| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("");
    match kind {
        "default" => Ok(None),
        "llama3" => {
            let need = |k: &str| -> Result<f32> {
                s.opt_f32(k)?
                    .ok_or_else(|| f.err(&format!("rope_scaling.{k}"), "missing"))
            };
            Ok(Some(RopeScaling {
                factor: need("factor")?,
                low_freq_factor: need("low_freq_factor")?,
                high_freq_factor: need("high_freq_factor")?,
                original_max_position_embeddings: s
                    .opt_usize("original_max_position_embeddings")
                    .map_err(|_| {
                        f.err(
                            "rope_scaling.original_max_position_embeddings",
                            "expected an integer",
                        )
                    })?
                    .ok_or_else(|| {
                        f.err("rope_scaling.original_max_position_embeddings", "missing")
                    })?,
            }))
        }
        other => Err(FormatError::Unsupported {
            path: f.path.to_path_buf(),
            what: "rope_scaling",
            detail: format!(
                "rope type {other:?} in field `rope_scaling` (only \"llama3\" is supported)"
            ),
        }),
    }
}

/// Parses `generation_config.json`; unknown keys are ignored.
///
/// # Errors
/// Bad JSON or a mistyped field.
pub fn parse_generation_config(json: &str, path: &Path) -> Result<GenerationConfig> {
    let mut value = Value::Null;
    let obj = parse_object(json, path, &mut value)?;
    let f = Fields { obj, path };
    Ok(GenerationConfig {
        do_sample: f.opt_bool("do_sample")?,
        temperature: f.opt_f32("temperature")?,
        top_k: f.opt_usize("top_k")?,
        top_p: f.opt_f32("top_p")?,
        max_length: f.opt_usize("max_length")?,
        bos_token_id: f.opt_u32("bos_token_id")?,
        eos_token_ids: f.ids("eos_token_id")?,
    })
}
