//! `lanyard`: the one binary. Parses arguments, installs logging, runs the
//! command, maps errors to exit codes (0 ok, 1 failed, 2 usage).

#![forbid(unsafe_code)]
// The CLI reads the server's answers with `serde_json::Value` indexing,
// which yields `Null` for a missing key or a wrong shape instead of
// panicking, and writes only into objects it built itself.
#![allow(clippy::indexing_slicing)]

mod cli;
mod client;
mod cmd;
mod output;

use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc instead of glibc malloc: on the token-exchange path glibc's
/// allocator took 15 % of the server's CPU (arena locking and
/// consolidation across the runtime's worker threads); see
/// docs/BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(&args.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cmd::run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
