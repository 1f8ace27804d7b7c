//! Command-line interface definition.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Lanyard: workload identity without static secrets.
///
/// Workloads prove what they are by attestation and get short-lived,
/// audience-scoped, tenant-bound credentials. Start with `lanyard dev`.
#[derive(Debug, Parser)]
#[command(
    name = "lanyard",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Output format for results.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Log format (logs go to stderr; filter with LANYARD_LOG, e.g. LANYARD_LOG=debug).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Server URL for admin commands (default: from --data-dir's dev.json).
    #[arg(long, global = true, env = "LANYARD_SERVER")]
    pub server: Option<String>,
    /// Admin bearer token (default: from --data-dir's dev.json).
    #[arg(
        long,
        global = true,
        env = "LANYARD_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// PEM CA certificate to trust for the server's TLS certificate.
    #[arg(long, global = true, env = "LANYARD_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Data directory of `lanyard dev`; admin commands read dev.json from it.
    #[arg(long, global = true, env = "LANYARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run server and agent in one process for development, on SQLite in
    /// --data-dir (default ./.lanyard-dev), plain HTTP on loopback.
    ///
    /// Creates the `dev` tenant, trust domain example.org, signing keys and an
    /// admin token on first start, and writes DATA_DIR/dev.json (issuer,
    /// admin_token, workload_socket, bundle_endpoint). Restarting on the same
    /// directory keeps keys, tenants and the admin token.
    Dev(DevArgs),
    /// Run the identity server from a config file, or initialise its store.
    Server(ServerArgs),
    /// Manage tenants (every entry, token and lease belongs to one).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Inspect and rotate the JWT signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Address to listen on; 127.0.0.1:0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServerArgs {
    /// TOML config file (see README, "Configuration"). Keys can be overridden
    /// with LANYARD__SECTION__KEY environment variables.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Serve plain HTTP. Allowed only on a loopback listen address.
    #[arg(long)]
    pub insecure_plain_http: bool,
    #[command(subcommand)]
    pub action: Option<ServerAction>,
}

#[derive(Debug, Subcommand)]
pub enum ServerAction {
    /// Create the schema and signing keys, and print a new admin token once.
    Init {
        /// TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Write the admin token to this new file (mode 0600) instead of stdout.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Serve plain HTTP later (accepted for symmetry; validated like `server`).
        #[arg(long)]
        insecure_plain_http: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant. NAME is a DNS label: lowercase letters, digits, '-'.
    Create {
        name: String,
        /// Free-text description.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List tenants.
    List,
    /// Show one tenant.
    Show { name: String },
    /// Delete a tenant.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List published signing keys (active, next, previous); no key material.
    List,
    /// Rotate now: the pre-published next key takes over as soon as it has
    /// been published for the configured lead time (at once if it has).
    Rotate {
        /// Algorithm to rotate (default: the server's first algorithm).
        #[arg(long)]
        alg: Option<String>,
    },
}

/// Installs the tracing subscriber: stderr, text or JSON, filtered by LANYARD_LOG.
pub fn init_logging(global: &Global) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("LANYARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match global.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
