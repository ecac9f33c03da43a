//! Errors of the block manager. Every bad call is reported here; nothing panics.

use crate::SeqId;

/// Why a [`crate::BlockManager`] operation was refused. A refused operation leaves the
/// manager unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("unknown sequence {0}")]
    UnknownSequence(SeqId),
    #[error("sequence {0} already exists")]
    DuplicateSequence(SeqId),
    #[error("out of KV blocks: needed {needed}, free {free}")]
    OutOfBlocks { needed: usize, free: usize },
    #[error("cannot truncate sequence {seq} of length {len} to {requested}")]
    TruncateBeyondLength {
        seq: SeqId,
        len: usize,
        requested: usize,
    },
    #[error("invalid block manager config: {0}")]
    InvalidConfig(String),
}
