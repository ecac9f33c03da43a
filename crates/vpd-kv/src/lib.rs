//! Paged KV-cache block manager (placeholder: being written).
