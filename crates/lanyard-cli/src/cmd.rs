//! Command implementations.

mod dev;
mod keys;
mod server;
mod tenant;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Dev(args) => dev::run(&cli.global, args).await,
        Command::Server(args) => server::run(&cli.global, args).await,
        Command::Tenant(c) => tenant::run(&cli.global, c).await,
        Command::Keys(c) => keys::run(&cli.global, c).await,
    }
}
