//! Requests and the plain (non-speculative) generation loop over any [`Backend`].
//!
//! The loop is the baseline every speculative path is checked against: greedy speculative
//! output must equal [`Engine::generate`]'s greedy output token for token.
pub mod generate;
pub mod request;

pub use generate::Engine;
pub use request::{FinishReason, GenerateOutput, GenerateRequest, Timings};
