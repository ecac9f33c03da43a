//! Paged KV-cache block manager: device-free bookkeeping of block tables.
//!
//! Algorithm: PagedAttention's block tables (Kwon et al., 2023, "Efficient Memory
//! Management for Large Language Model Serving with PagedAttention", the vLLM paper).
//! The KV cache is split into fixed-size physical blocks of `block_size` token slots.
//! Each sequence owns a *block table* mapping its logical blocks to physical ones, so
//! memory is allocated on demand instead of reserving `max_len` per request.
//!
//! Blocks carry reference counts so that `fork` (parallel sampling, beam search, or a
//! draft branch in speculative decoding) can share a prefix without copying; a write
//! into a shared, partially filled last block triggers copy-on-write, reported to the
//! caller as a [`CopyOp`] because only the caller can move the actual KV data.
//!
//! `truncate` exists for speculative decoding: rejected draft tokens are rolled back
//! and the tail blocks they occupied are returned to the pool.
//!
//! This crate holds no device memory; it only decides which slot each token uses.
#![forbid(unsafe_code)]

mod error;
mod manager;

pub use error::KvError;
pub use manager::{BlockManager, CopyOp};

/// Identifier of a sequence (request or speculative branch), chosen by the caller.
pub type SeqId = u64;

/// Index of a physical KV-cache block, `0..num_total()`.
pub type BlockId = u32;

/// Tokens per block used by [`BlockManager::with_default_block_size`] (vLLM's default).
pub const DEFAULT_BLOCK_SIZE: usize = 16;
