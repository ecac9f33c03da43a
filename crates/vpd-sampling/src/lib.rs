//! Sampling math shared by the CPU engine and (later) GPU checks.
//!
//! The distribution sampled from is built in the order of Hugging Face transformers'
//! logits warpers (`TemperatureLogitsWarper` -> `TopKLogitsWarper` -> `TopPLogitsWarper`):
//! temperature scaling, then top-k, then nucleus (top-p) filtering on the renormalised
//! top-k distribution (Holtzman et al., 2020, "The Curious Case of Neural Text
//! Degeneration"). Draws use inverse-CDF sampling with one uniform from a seeded ChaCha
//! stream, so a `(seed, logits)` sequence is reproducible across runs and platforms,
//! which speculative-decoding verification relies on.
#![forbid(unsafe_code)]

mod params;
mod probs;
mod sampler;

pub use params::{SamplingError, SamplingParams};
pub use probs::{argmax, processed_probs};
pub use sampler::Sampler;
