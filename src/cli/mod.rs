//! The `vpd` command line: argument parsing, validation and printing. No model logic here.
mod bench;
mod bench_http;
mod bench_workload;
mod demo;
mod engines;
mod generate;
mod gpu_check;
mod make_model;
mod serve;
mod spec_eval;

use clap::{Parser, Subcommand};

use crate::error::Result;

#[derive(Debug, Parser)]
#[command(name = "vpd", version, about = "Verify-PD: speculative decoding, served for tail latency")]
pub struct Cli {
    /// Worker threads for CPU compute (default: all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate text for one prompt.
    Generate(generate::GenerateArgs),
    /// Write a random-weight Hugging Face checkpoint at a real Llama shape.
    MakeModel(make_model::MakeModelArgs),
    /// The load benchmark: ShareGPT at Poisson rates under each policy in process (`make run`),
    /// or against an OpenAI-compatible server with --url.
    Bench(Box<bench::BenchArgs>),
    /// Serve the model over an OpenAI-compatible HTTP API.
    Serve(serve::ServeArgs),
    /// Generate for a few ShareGPT prompts and report tokens/s.
    Demo(demo::DemoArgs),
    /// Measure a drafter's acceptance on ShareGPT prompts and its speed-up over plain decoding.
    SpecEval(spec_eval::SpecEvalArgs),
    /// Check the CUDA backend against the CPU reference, kernel by kernel and end to end.
    GpuCheck(gpu_check::GpuCheckArgs),
}

/// Runs a parsed command line.
///
/// # Errors
/// Whatever the command reports; the binary prints it and exits non-zero.
pub fn run(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        // Fails only if the global pool already exists, which cannot happen before this point.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(n.max(1)).build_global();
    }
    match cli.command {
        Command::Generate(a) => generate::run(a),
        Command::MakeModel(a) => make_model::run(a),
        Command::Bench(a) => bench::run(*a),
        Command::Serve(a) => serve::run(a),
        Command::Demo(a) => demo::run(a),
        Command::GpuCheck(a) => gpu_check::run(a),
        Command::SpecEval(a) => spec_eval::run(a),
    }
}
