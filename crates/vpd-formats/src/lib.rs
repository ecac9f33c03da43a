//! Model formats for Verify-PD, memory-mapped and zero-copy where the bytes allow it.
//!
//! - [`gguf`]: our own hardened GGUF v3 reader (llama.cpp's `gguf.h` layout), with
//!   dequantisation of F32, F16, BF16, Q8_0, Q4_0 and Q4_1.
//! - [`hf`]: Hugging Face checkpoint directories (`config.json`, single or sharded
//!   `*.safetensors`, `generation_config.json`).
//! - [`config`]: the Llama-family hyperparameters both formats map onto.
//! - [`tokenizer`]: `tokenizers`-crate tokenizers from `tokenizer.json` or a GGUF vocabulary,
//!   and chat templates rendered with `minijinja`.
//!
//! Every loader exposes tensors under Hugging Face names (`model.layers.0.self_attn.q_proj.weight`)
//! with row-major shapes (`[out, in]`), so the model code never sees which format it came from.
#![deny(unsafe_code)]

pub mod config;
pub mod error;
pub mod gguf;
pub mod hf;
pub mod mmap;
pub mod source;
pub mod tokenizer;

pub use config::{LlamaConfig, RopeScaling};
pub use error::FormatError;
pub use source::{DType, TensorInfo, WeightSource};
