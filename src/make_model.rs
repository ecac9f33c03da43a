//! `vpd make-model`: random-weight Hugging Face checkpoints at real Llama shapes.
//!
//! Real 8B/1B weights cannot be fetched here, so performance runs use random weights of the
//! same shapes: every byte a real model moves still moves. The safetensors file is streamed
//! tensor by tensor (an 8B checkpoint is 16 GB in bf16), with weights drawn uniformly with
//! standard deviation 0.02 (the usual `initializer_range`) from a seeded generator, so the
//! same seed gives the same bytes.
use std::io::{BufWriter, Write};
use std::path::Path;

use half::bf16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde_json::json;
use vpd_formats::tokenizer::Tokenizer;
use vpd_formats::{LlamaConfig, RopeScaling};

use crate::error::{EngineError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// Llama-3-8B: 32 layers, hidden 4096, GQA 32/8, untied head.
    #[value(name = "llama3-8b")]
    Llama3_8b,
    /// Llama-3.2-1B: 16 layers, hidden 2048, GQA 32/8, llama3 RoPE scaling, tied embeddings.
    #[value(name = "llama3.2-1b")]
    Llama32_1b,
    /// A tiny Llama-3.2-style model for tests: 2 layers, hidden 64.
    #[value(name = "tiny-llama3")]
    TinyLlama3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightDType {
    Bf16,
    F32,
}

impl Preset {
    pub fn config(self) -> LlamaConfig {
        let llama3 = |vocab, hidden, inter, layers, heads, kv, head_dim| LlamaConfig {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: inter,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv,
            head_dim,
            rms_norm_eps: 1e-5,
            rope_theta: 500_000.0,
            rope_scaling: None,
            max_position_embeddings: 8192,
            tie_word_embeddings: false,
            bos_token_id: Some(128_000),
            eos_token_ids: vec![128_001, 128_009],
        };
        let scaling = |factor, original| RopeScaling {
            factor,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: original,
        };
        match self {
            Self::Llama3_8b => llama3(128_256, 4096, 14_336, 32, 32, 8, 128),
            Self::Llama32_1b => LlamaConfig {
                rope_scaling: Some(scaling(32.0, 8192)),
                max_position_embeddings: 131_072,
                tie_word_embeddings: true,
                ..llama3(128_256, 2048, 8192, 16, 32, 8, 64)
            },
            Self::TinyLlama3 => LlamaConfig {
                rope_scaling: Some(scaling(8.0, 64)),
                max_position_embeddings: 2048,
                tie_word_embeddings: true,
                bos_token_id: Some(256),
                eos_token_ids: vec![257],
                ..llama3(512, 64, 160, 2, 4, 2, 16)
            },
        }
    }
}

/// `cfg` re-targeted at `tok`'s vocabulary: size, BOS and EOS ids.
pub fn with_vocabulary(cfg: &LlamaConfig, tok: &Tokenizer) -> LlamaConfig {
    LlamaConfig { vocab_size: tok.vocab_size(), bos_token_id: tok.bos_id(), eos_token_ids: tok.eos_ids().to_vec(), ..cfg.clone() }
}

/// Every tensor of a Llama checkpoint, in file order, with its row-major shape (the loader's
/// own list, without `lm_head.weight` when the embeddings are tied).
pub fn tensor_shapes(cfg: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
    let mut t = vpd_formats::hf::expected_shapes(cfg);
    if cfg.tie_word_embeddings {
        t.retain(|(name, _)| name != "lm_head.weight");
    }
    t
}

/// Hugging Face `config.json` for `cfg`.
pub fn config_json(cfg: &LlamaConfig) -> serde_json::Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": cfg.rope_scaling.as_ref().map(|s| json!({
            "rope_type": "llama3",
            "factor": s.factor,
            "low_freq_factor": s.low_freq_factor,
            "high_freq_factor": s.high_freq_factor,
            "original_max_position_embeddings": s.original_max_position_embeddings,
        })),
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_ids,
        "hidden_act": "silu",
        "torch_dtype": "bfloat16",
    })
}

/// Writes `config.json`, `generation_config.json`, `tokenizer.json` and `model.safetensors`
/// with seeded random weights into `out`. The tokenizer is `tokenizer` (a real model's, for a
/// random drafter that shares its vocabulary) or a synthetic byte-level one.
/// `progress(done, total)` is called with bytes written.
///
/// # Errors
/// The directory or a file cannot be written.
pub fn write_random_checkpoint(
    cfg: &LlamaConfig,
    dtype: WeightDType,
    seed: u64,
    out: &Path,
    tokenizer: Option<&Tokenizer>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| EngineError::Io { path: path.clone(), source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let write_json = |name: &str, v: &serde_json::Value| {
        let p = out.join(name);
        std::fs::write(&p, serde_json::to_string_pretty(v).unwrap_or_default()).map_err(io(&p))
    };
    let mut config = config_json(cfg);
    if dtype == WeightDType::F32 {
        config["torch_dtype"] = json!("float32");
    }
    write_json("config.json", &config)?;
    write_json(
        "generation_config.json",
        &json!({"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_ids, "do_sample": false}),
    )?;
    let tok_path = out.join("tokenizer.json");
    match tokenizer {
        Some(t) => {
            std::fs::write(&tok_path, t.to_json()?).map_err(io(&tok_path))?;
            if let Some(template) = t.chat_template() {
                write_json("tokenizer_config.json", &json!({ "chat_template": template }))?;
            }
        }
        None => {
            let eos = cfg.eos_token_ids.first().copied().unwrap_or(0);
            let t = Tokenizer::synthetic_byte_level(cfg.vocab_size, eos)?;
            std::fs::write(&tok_path, t.to_json()?).map_err(io(&tok_path))?;
        }
    }

    // safetensors: u64 header length, JSON header (offsets relative to the data start), data.
    let width = match dtype {
        WeightDType::Bf16 => 2,
        WeightDType::F32 => 4,
    };
    let shapes = tensor_shapes(cfg);
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt", "generator": "vpd make-model", "seed": seed.to_string()}));
    let mut offset = 0u64;
    for (name, shape) in &shapes {
        let bytes = shape.iter().product::<usize>() as u64 * width;
        let dt = if width == 2 { "BF16" } else { "F32" };
        header.insert(name.clone(), json!({"dtype": dt, "shape": shape, "data_offsets": [offset, offset + bytes]}));
        offset += bytes;
    }
    let mut header = serde_json::to_vec(&header).unwrap_or_default();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let path = out.join("model.safetensors");
    let file = std::fs::File::create(&path).map_err(io(&path))?;
    let mut w = BufWriter::with_capacity(1 << 22, file);
    w.write_all(&(header.len() as u64).to_le_bytes()).map_err(io(&path))?;
    w.write_all(&header).map_err(io(&path))?;
    let total = offset;
    let mut done = 0u64;
    for (t, (_, shape)) in shapes.iter().enumerate() {
        let n: usize = shape.iter().product();
        let is_norm = shape.len() == 1;
        // Chunks of 1 Mi values, each from its own stream, generated in parallel.
        const CHUNK: usize = 1 << 20;
        let chunks: Vec<Vec<u8>> = (0..n.div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(((t as u64) << 32) | c as u64);
                let len = CHUNK.min(n - c * CHUNK);
                let vals = (0..len).map(|_| if is_norm { 1.0 } else { rng.random_range(-0.0346f32..0.0346) });
                if width == 2 {
                    vals.flat_map(|v| bf16::from_f32(v).to_le_bytes()).collect()
                } else {
                    vals.flat_map(f32::to_le_bytes).collect()
                }
            })
            .collect();
        for c in chunks {
            w.write_all(&c).map_err(io(&path))?;
            done += c.len() as u64;
            progress(done, total);
        }
    }
    w.flush().map_err(io(&path))?;
    Ok(())
}
