//! Loading a model from a path: a GGUF file or a Hugging Face checkpoint directory.
pub mod weights;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vpd_formats::gguf::GgufFile;
use vpd_formats::hf::HfCheckpoint;
use vpd_formats::tokenizer::Tokenizer;
use vpd_formats::LlamaConfig;

pub use weights::{LayerWeights, LlamaWeights};

use crate::error::{EngineError, Result};

/// A loaded model: hyperparameters, f32 weights (shared by drafters that reuse them) and,
/// when the checkpoint has one, its tokenizer.
pub struct Model {
    pub path: PathBuf,
    pub config: LlamaConfig,
    pub weights: Arc<LlamaWeights>,
    pub tokenizer: Option<Tokenizer>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("path", &self.path).field("config", &self.config).finish_non_exhaustive()
    }
}

/// Only the tokenizer of a model path (GGUF file or checkpoint directory), without its weights.
///
/// # Errors
/// The path cannot be read or its tokenizer is malformed.
pub fn load_tokenizer(path: &Path) -> Result<Option<Tokenizer>> {
    if path.is_dir() {
        if path.join("tokenizer.json").exists() {
            return Ok(Some(Tokenizer::from_hf_dir(path)?));
        }
        return Ok(None);
    }
    Ok(Some(Tokenizer::from_gguf(&GgufFile::open(path)?)?))
}

impl Model {
    /// Loads `path`: a `.gguf` file, or a directory with `config.json` and safetensors.
    ///
    /// # Errors
    /// The path does not exist, is neither format, or the checkpoint is malformed.
    pub fn load(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|source| EngineError::Io { path: path.display().to_string(), source })?;
        if meta.is_dir() {
            let ckpt = HfCheckpoint::open(path)?;
            let config = ckpt.config().clone();
            let weights = LlamaWeights::load(&ckpt, &config)?;
            let tokenizer = if path.join("tokenizer.json").exists() { Some(Tokenizer::from_hf_dir(path)?) } else { None };
            Ok(Self { path: path.to_path_buf(), config, weights: Arc::new(weights), tokenizer })
        } else {
            let gguf = GgufFile::open(path)?;
            let config = gguf.llama_config()?;
            let weights = LlamaWeights::load(&gguf, &config)?;
            let tokenizer = Some(Tokenizer::from_gguf(&gguf)?);
            Ok(Self { path: path.to_path_buf(), config, weights: Arc::new(weights), tokenizer })
        }
    }
}
