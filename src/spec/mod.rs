//! Speculative decoding: a cheap drafter proposes tokens, the target verifies them in one
//! batched forward pass, and exact rejection sampling keeps the target's distribution
//! (Leviathan et al. 2023; Chen et al. 2023; trees after SpecInfer, Miao et al. 2024).
//!
//! Split as proposer / verifier / policy (STYLE.md, after mistral.rs):
//! - [`drafter`]: the [`Drafter`] trait and its proposals (a chain is a one-wide tree);
//! - [`model_drafter`]: a separate draft model, or the target's first K layers (layer-skip);
//! - [`ngram`]: model-free prompt lookup;
//! - [`generate`]: the verify loop — target step, rejection sampling (`vpd_sampling`),
//!   KV rollback and tree compaction;
//! - [`options`]: parsing `--draft` and `--tree`;
//! - [`stats`]: acceptance statistics and the JSONL trace.
pub mod drafter;
pub mod factory;
pub mod generate;
pub mod model_drafter;
pub mod ngram;
pub mod options;
pub mod stats;

pub use drafter::{DraftQuery, DraftStep, Drafter, Proposal};
pub use generate::{SpecEngine, SpecOptions};
pub use options::{check_draft_len, DraftSpec, TreeShape, DEFAULT_TREE_BUDGET, MAX_DRAFT_LEN};
pub use stats::{SpecStats, TraceWriter};
