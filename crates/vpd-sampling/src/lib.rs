//! Sampling math (placeholder: being written).
