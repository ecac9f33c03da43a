//! Benchmark client pieces that need no model or device: the ShareGPT reader, vLLM-style
//! workload sampling and arrivals, serving metrics as vLLM's `bench serve` defines them,
//! JSON / Markdown / PNG reports, the labelled synthetic acceptance process, and the streaming
//! HTTP client that runs a workload against an OpenAI-compatible server.
#![forbid(unsafe_code)]

pub mod http;
pub mod metrics;
pub mod report;
pub mod sharegpt;
pub mod synthetic;
pub mod workload;
