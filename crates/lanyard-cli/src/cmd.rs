//! Command implementations.

pub mod agent;
mod audience_profile;
pub mod audit;
mod broker;
pub mod dev;
mod entry;
mod federation;
mod issuer;
mod jointoken;
mod keys;
mod node;
mod revoke;
mod server;
pub mod svid;
mod tenant;
mod token;
mod webhook;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Dev(args) => dev::run(&cli.global, args).await,
        Command::Server(args) => server::run(&cli.global, args).await,
        Command::Tenant(c) => tenant::run(&cli.global, c).await,
        Command::Keys(c) => keys::run(&cli.global, c).await,
        Command::Issuer(c) => issuer::run(&cli.global, c).await,
        Command::Federation(c) => federation::run(&cli.global, c).await,
        Command::Bundle(c) => federation::bundle(&cli.global, c).await,
        Command::Entry(c) => entry::run(&cli.global, c).await,
        Command::AudienceProfile(c) => audience_profile::run(&cli.global, c).await,
        Command::Token(c) => token::run(&cli.global, c).await,
        Command::Revoke(a) => revoke::run(&cli.global, a).await,
        Command::Audit(c) => audit::run(&cli.global, c).await,
        Command::Explain(a) if a.pid.is_some() => node::explain_pid(&cli.global, a).await,
        Command::Explain(a) => token::explain(&cli.global, a).await,
        Command::Broker(c) => broker::run(&cli.global, c).await,
        Command::Agent(a) => agent::run(&cli.global, a).await,
        Command::Jointoken(c) => jointoken::run(&cli.global, c).await,
        Command::Svid(crate::cli::SvidCommand::Fetch(a)) => svid::fetch(&cli.global, a).await,
        Command::Node(c) => node::run(&cli.global, c).await,
        Command::Webhook(a) => webhook::run(&cli.global, a).await,
    }
}
