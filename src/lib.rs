//! Verify-PD: a serving runtime for speculative decoding, aimed at tail latency.
//!
//! Layers, top to bottom (dependencies point down; see `DESIGN.md` in the shared docs):
//! - [`cli`]: the `vpd` command line (parse, validate, print; no model logic);
//! - [`runtime`]: the serving loop: admission, lanes, policies, preemption;
//! - [`engine`]: requests, generation loops, sampling;
//! - [`model`]: loading Llama-family checkpoints;
//! - [`backend`]: batched forward steps over a paged KV cache (CPU reference; CUDA later).
#![deny(unsafe_code)]

pub mod backend;
pub mod cli;
pub mod engine;
pub mod error;
pub mod kernels;
pub mod make_model;
pub mod model;
pub mod runtime;
pub mod server;
pub mod spec;

pub use error::{EngineError, Result};
