//! `vpd`: the Verify-PD command line.
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = verify_pd::cli::Cli::parse();
    match verify_pd::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
