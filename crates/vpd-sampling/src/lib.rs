//! Sampling math shared by the CPU engine and (later) GPU checks.
//!
//! The distribution sampled from is built in the order of Hugging Face transformers'
//! logits warpers (`TemperatureLogitsWarper` -> `TopKLogitsWarper` -> `TopPLogitsWarper`):
//! temperature scaling, then top-k, then nucleus (top-p) filtering on the renormalised
//! top-k distribution (Holtzman et al., 2020, "The Curious Case of Neural Text
//! Degeneration"). Draws use inverse-CDF sampling with one uniform from a seeded ChaCha
//! stream, so a `(seed, logits)` sequence is reproducible across runs and platforms,
//! which speculative-decoding verification relies on. [`kernel_ref`] is the same math in
//! the fixed-point, Philox-driven form of the CUDA kernels, for token-exact GPU checks.
#![forbid(unsafe_code)]

pub mod kernel_ref;
mod params;
pub mod philox;
mod probs;
mod sampler;
pub mod speculative;
pub mod tree;

pub use params::{SamplingError, SamplingParams};
pub use probs::{argmax, processed_probs};
pub use sampler::Sampler;
pub use speculative::{
    one_hot, verify_chain, verify_chain_greedy, verify_chain_one_hot, ChainOutcome, SpecError,
};
pub use tree::{verify_tree, verify_tree_greedy, verify_tree_greedy_ids, ChildSampling, TokenTree, TreeOutcome};
