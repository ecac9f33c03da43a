//! Hugging Face checkpoint directories: `config.json`, optional `generation_config.json`,
//! and weights in `model.safetensors` or shards listed by `model.safetensors.index.json`
//! (`{"weight_map": {tensor: shard file}}`, the layout `transformers.save_pretrained` writes).
//!
//! Every shard is memory-mapped; tensors are viewed in place (`view_bf16` etc.) or converted
//! to f32. At open time every tensor the Llama forward pass needs is checked against the
//! shapes the config implies, so a bad checkpoint fails here and not mid-inference.
mod config;
mod shard;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use config::{parse_generation_config, parse_llama_config, GenerationConfig};
use shard::{open_shard, Entry};

use crate::config::LlamaConfig;
use crate::error::{FormatError, Result};
use crate::mmap::{typed_view, MappedFile};
use crate::source::{DType, TensorInfo, WeightSource};

/// An opened checkpoint directory.
#[derive(Debug)]
pub struct HfCheckpoint {
    dir: PathBuf,
    config: LlamaConfig,
    generation: Option<GenerationConfig>,
    shards: Vec<MappedFile>,
    tensors: BTreeMap<String, Entry>,
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| FormatError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Opens `dir`: parses the configs, maps every shard and checks the tensor inventory.
///
/// # Errors
/// Missing or malformed files, unsupported architecture or dtype, missing tensors or
/// shapes that disagree with `config.json`.
pub fn open(dir: &Path) -> Result<HfCheckpoint> {
    HfCheckpoint::open(dir)
}

impl HfCheckpoint {
    /// See [`open`].
    ///
    /// # Errors
    /// As [`open`].
    pub fn open(dir: &Path) -> Result<Self> {
        let config_path = dir.join("config.json");
        let mut config = parse_llama_config(&read_text(&config_path)?, &config_path)?;
        let gen_path = dir.join("generation_config.json");
        let generation = if gen_path.is_file() {
            let g = parse_generation_config(&read_text(&gen_path)?, &gen_path)?;
            // generation_config's stop ids extend config.json's (transformers prefers them).
            for &id in &g.eos_token_ids {
                if !config.eos_token_ids.contains(&id) {
                    config.eos_token_ids.push(id);
                }
            }
            config::validate(&config, &gen_path)?;
            Some(g)
        } else {
            None
        };

        let index_path = dir.join("model.safetensors.index.json");
        let single_path = dir.join("model.safetensors");
        let (shards, tensors, listing) = if index_path.is_file() {
            let (s, t) = open_sharded(dir, &index_path)?;
            (s, t, index_path)
        } else if single_path.is_file() {
            let (file, entries) = open_shard(&single_path, 0)?;
            (vec![file], entries.into_iter().collect(), single_path)
        } else {
            return Err(FormatError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "neither model.safetensors nor model.safetensors.index.json exists",
                ),
            });
        };
        let ckpt = Self {
            dir: dir.to_path_buf(),
            config,
            generation,
            shards,
            tensors,
        };
        ckpt.check_inventory(&listing)?;
        Ok(ckpt)
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn generation_config(&self) -> Option<&GenerationConfig> {
        self.generation.as_ref()
    }

    /// The file a tensor is stored in.
    pub fn tensor_path(&self, name: &str) -> Option<&Path> {
        self.tensors.get(name).map(|e| self.shards[e.shard].path())
    }

    fn entry(&self, name: &str) -> Result<(&Entry, &MappedFile)> {
        let e = self.tensors.get(name).ok_or_else(|| FormatError::Tensor {
            path: self.dir.clone(),
            tensor: name.to_string(),
            detail: "no such tensor in the checkpoint".into(),
        })?;
        Ok((e, &self.shards[e.shard]))
    }

    /// The raw little-endian bytes of a tensor, with its type.
    ///
    /// # Errors
    /// Unknown tensor.
    pub fn raw_bytes(&self, name: &str) -> Result<(DType, &[u8])> {
        let (e, file) = self.entry(name)?;
        Ok((e.dtype, &file.bytes()[e.bytes.clone()]))
    }

    fn view<T: bytemuck::Pod>(&self, name: &str, want: DType) -> Result<&[T]> {
        let (e, file) = self.entry(name)?;
        if e.dtype != want {
            return Err(FormatError::Tensor {
                path: file.path().to_path_buf(),
                tensor: name.to_string(),
                detail: format!("stored as {:?}, viewed as {want:?}", e.dtype),
            });
        }
        typed_view(&file.bytes()[e.bytes.clone()], file.path(), name)
    }

    /// Zero-copy view of a BF16 tensor.
    ///
    /// # Errors
    /// Unknown tensor, another dtype, or data not 2-byte aligned in the file.
    pub fn view_bf16(&self, name: &str) -> Result<&[half::bf16]> {
        self.view(name, DType::BF16)
    }

    /// Zero-copy view of an F16 tensor.
    ///
    /// # Errors
    /// As [`Self::view_bf16`].
    pub fn view_f16(&self, name: &str) -> Result<&[half::f16]> {
        self.view(name, DType::F16)
    }

    /// Zero-copy view of an F32 tensor.
    ///
    /// # Errors
    /// As [`Self::view_bf16`]; F32 data needs 4-byte alignment.
    pub fn view_f32(&self, name: &str) -> Result<&[f32]> {
        self.view(name, DType::F32)
    }

    /// Checks that every tensor of the Llama forward pass is present with the expected shape.
    fn check_inventory(&self, listing: &Path) -> Result<()> {
        for (name, want) in expected_shapes(&self.config) {
            let Some(e) = self.tensors.get(&name) else {
                let tied = name == "lm_head.weight" && self.config.tie_word_embeddings;
                if tied {
                    continue;
                }
                return Err(FormatError::Tensor {
                    path: listing.to_path_buf(),
                    tensor: name,
                    detail: format!("missing (expected shape {want:?})"),
                });
            };
            if e.shape != want {
                return Err(FormatError::Tensor {
                    path: self.shards[e.shard].path().to_path_buf(),
                    tensor: name,
                    detail: format!(
                        "shape {:?} disagrees with config.json: expected {want:?}",
                        e.shape
                    ),
                });
            }
        }
        Ok(())
    }
}

/// The tensors a Llama model needs and their shapes (`[out, in]`), from the config.
/// `lm_head.weight` is listed even when tied; the caller skips it if absent.
pub fn expected_shapes(c: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let q = c.num_attention_heads * c.head_dim;
    let kv = c.num_key_value_heads * c.head_dim;
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, h])];
    for l in 0..c.num_hidden_layers {
        let p = format!("model.layers.{l}");
        out.extend([
            (format!("{p}.input_layernorm.weight"), vec![h]),
            (format!("{p}.self_attn.q_proj.weight"), vec![q, h]),
            (format!("{p}.self_attn.k_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.v_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.o_proj.weight"), vec![h, q]),
            (format!("{p}.post_attention_layernorm.weight"), vec![h]),
            (format!("{p}.mlp.gate_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.up_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.down_proj.weight"), vec![h, i]),
        ]);
    }
    out.push(("model.norm.weight".to_string(), vec![h]));
    out.push(("lm_head.weight".to_string(), vec![v, h]));
    out
}

type Shards = (Vec<MappedFile>, BTreeMap<String, Entry>);

/// Opens every shard named by the index and merges their tensors, refusing duplicates and
/// tensors the index assigns to a shard that does not hold them.
fn open_sharded(dir: &Path, index_path: &Path) -> Result<Shards> {
    let field = |detail: String| FormatError::Field {
        path: index_path.to_path_buf(),
        field: "weight_map".into(),
        detail,
    };
    let index: serde_json::Value =
        serde_json::from_str(&read_text(index_path)?).map_err(|e| FormatError::Corrupt {
            path: index_path.to_path_buf(),
            detail: format!("invalid JSON: {e}"),
        })?;
    let map = index
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| field("missing or not an object".into()))?;
    let mut assigned: BTreeMap<&str, &str> = BTreeMap::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| field(format!("tensor `{tensor}`: shard name is not a string")))?;
        // Shard names are plain file names; refuse anything that would leave the directory.
        if file.is_empty() || file.contains(['/', '\\']) || file == ".." {
            return Err(field(format!(
                "tensor `{tensor}`: shard name {file:?} is not a plain file name"
            )));
        }
        assigned.insert(tensor, file);
    }
    let mut files: Vec<&str> = assigned.values().copied().collect();
    files.sort_unstable();
    files.dedup();

    let mut shards = Vec::new();
    let mut tensors: BTreeMap<String, Entry> = BTreeMap::new();
    for (k, file) in files.iter().enumerate() {
        let path = dir.join(file);
        if !path.is_file() {
            let example = assigned
                .iter()
                .find(|(_, f)| *f == file)
                .map_or("", |(t, _)| *t);
            return Err(field(format!(
                "shard `{file}` (holding tensor `{example}` and others) does not exist at {}",
                path.display()
            )));
        }
        let (mapped, entries) = open_shard(&path, k)?;
        for (name, e) in entries {
            if let Some(prev) = tensors.get(&name) {
                return Err(FormatError::Tensor {
                    path: path.clone(),
                    tensor: name,
                    detail: format!(
                        "duplicate: also stored in {}",
                        shards_path(&shards, prev.shard)
                    ),
                });
            }
            tensors.insert(name, e);
        }
        shards.push(mapped);
    }
    for (tensor, file) in &assigned {
        let holder = tensors.get(*tensor).map(|e| shards[e.shard].path());
        if holder.and_then(Path::file_name).and_then(|n| n.to_str()) != Some(*file) {
            return Err(FormatError::Tensor {
                path: dir.join(file),
                tensor: (*tensor).to_string(),
                detail: format!("the index places it in `{file}`, which does not contain it"),
            });
        }
    }
    Ok((shards, tensors))
}

fn shards_path(shards: &[MappedFile], k: usize) -> String {
    shards
        .get(k)
        .map_or_else(String::new, |s| s.path().display().to_string())
}

impl WeightSource for HfCheckpoint {
    fn tensors(&self) -> Vec<TensorInfo> {
        self.tensors
            .iter()
            .map(|(name, e)| TensorInfo {
                name: name.clone(),
                dtype: e.dtype,
                shape: e.shape.clone(),
            })
            .collect()
    }

    fn info(&self, name: &str) -> Option<TensorInfo> {
        self.tensors.get(name).map(|e| TensorInfo {
            name: name.to_string(),
            dtype: e.dtype,
            shape: e.shape.clone(),
        })
    }

    fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        let (dtype, bytes) = self.raw_bytes(name)?;
        // Decode from little-endian byte pairs/quads: works at any alignment.
        Ok(match dtype {
            DType::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::BF16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(FormatError::Tensor {
                    path: self.dir.clone(),
                    tensor: name.to_string(),
                    detail: format!("dtype {other:?} cannot occur in safetensors"),
                })
            }
        })
    }
}
