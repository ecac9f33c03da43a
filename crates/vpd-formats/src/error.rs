//! One error type for every format, with the file, tensor or field it is about.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a {format} file: {detail}")]
    BadMagic { path: PathBuf, format: &'static str, detail: String },
    #[error("{path}: corrupt or truncated: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("{path}: unsupported {what}: {detail}")]
    Unsupported { path: PathBuf, what: &'static str, detail: String },
    #[error("{path}: tensor `{tensor}`: {detail}")]
    Tensor { path: PathBuf, tensor: String, detail: String },
    #[error("{path}: field `{field}`: {detail}")]
    Field { path: PathBuf, field: String, detail: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
}

pub type Result<T, E = FormatError> = std::result::Result<T, E>;
