//! The engine's error type. Every variant names what was wrong; nothing here aborts.
use vpd_formats::FormatError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("kv cache: {0}")]
    Kv(#[from] vpd_kv::KvError),
    #[error("sampling: {0}")]
    Sampling(#[from] vpd_sampling::SamplingError),
    #[error("invalid request: `{field}`: {detail}")]
    InvalidRequest { field: &'static str, detail: String },
    #[error("prompt of {len} tokens does not fit the context of {max} tokens")]
    PromptTooLong { len: usize, max: usize },
    #[error("token id {id} at index {index} is outside the vocabulary of {vocab}")]
    OutOfVocab { id: u32, index: usize, vocab: usize },
    #[error("model `{path}`: {detail}")]
    Model { path: String, detail: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("backend: {0}")]
    Backend(String),
    #[error("backend: `{op}` does not support {shape}")]
    UnsupportedShape { op: &'static str, shape: String },
    #[error("backend: needs {needed} bytes of device memory, {free} free")]
    OutOfDeviceMemory { needed: usize, free: usize },
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
