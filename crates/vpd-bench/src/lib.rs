//! Benchmark client pieces that need no model or device.
#![forbid(unsafe_code)]

pub mod sharegpt;
