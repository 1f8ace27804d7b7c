//! Two workloads talking mTLS with X.509-SVIDs from the SPIFFE Workload API.
//!
//! Each process reads its SVID and bundles with `spiffe::X509Source` from the
//! socket in `SPIFFE_ENDPOINT_SOCKET` (e.g. `unix:/path/from/dev.json`), or
//! `--socket`. Run the server, then the client with the address it printed:
//!
//! ```sh
//! export SPIFFE_ENDPOINT_SOCKET=unix:$(jq -r .workload_socket .lanyard-dev/dev.json)
//! cargo run -p lanyard-spiffe-tls --example mtls_pair -- server \
//!     --listen 127.0.0.1:0 --allow-trust-domain example.org
//! cargo run -p lanyard-spiffe-tls --example mtls_pair -- client \
//!     --connect 127.0.0.1:PORT --allow spiffe://example.org/server \
//!     --rounds 20 --interval 1s --reconnect-every 5
//! ```
//!
//! The client keeps one connection open for all rounds (one echo per
//! round) and opens a fresh one every `--reconnect-every` rounds: after the
//! agent rotates an SVID, the fresh connections show the new serial while
//! the long one keeps working. `--output json` prints one JSON object per
//! line. Both sides print the peer's SPIFFE ID and certificate serial.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};
use lanyard_spiffe_tls::{
    client_config, peer_spiffe_id, server_config, Authorizer, SpiffeId, SpiffeIdPicker,
    TrustDomain, X509Material,
};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Size of one echo message.
const MSG: usize = 32;

#[derive(Debug, Parser)]
#[command(about = "Two workloads talking mTLS with SVIDs from the SPIFFE Workload API")]
struct Args {
    /// Workload API socket, `unix:/path` (default: SPIFFE_ENDPOINT_SOCKET).
    #[arg(long, global = true)]
    socket: Option<String>,
    /// Use the SVID with this SPIFFE ID when the Workload API returns several
    /// (default: the first, which the agent marks as default).
    #[arg(long, global = true, value_name = "SPIFFE_ID")]
    spiffe_id: Option<SpiffeId>,
    /// How long to wait for the first SVID from the Workload API.
    #[arg(long, global = true, default_value = "30s", value_parser = humantime::parse_duration)]
    sync_timeout: Duration,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    role: Role,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// Accept mTLS connections and echo what clients send.
    Server {
        /// Address to listen on (loopback; port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        #[command(flatten)]
        allow: Allow,
        /// Stop after this many connections (default: run until killed).
        #[arg(long)]
        max_connections: Option<u64>,
    },
    /// Connect, echo, reconnect; exits non-zero on any failure.
    Client {
        /// The server's address.
        #[arg(long)]
        connect: SocketAddr,
        #[command(flatten)]
        allow: Allow,
        /// Rounds of echo on the long-lived connection.
        #[arg(long, default_value_t = 10)]
        rounds: u32,
        /// Pause between rounds.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// Open a fresh connection every N rounds (0: never).
        #[arg(long, default_value_t = 5)]
        reconnect_every: u32,
    },
}

/// Which peers to accept (at least one of the two).
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = true)]
struct Allow {
    /// Accept this peer SPIFFE ID (repeatable).
    #[arg(long = "allow", value_name = "SPIFFE_ID")]
    ids: Vec<SpiffeId>,
    /// Accept any peer in this trust domain (repeatable).
    #[arg(long = "allow-trust-domain", value_name = "TRUST_DOMAIN")]
    trust_domains: Vec<TrustDomain>,
}

impl Allow {
    fn authorizer(&self) -> Authorizer {
        let mut all = vec![Authorizer::exact(self.ids.clone())];
        all.extend(
            self.trust_domains
                .iter()
                .cloned()
                .map(Authorizer::any_in_trust_domain),
        );
        Authorizer::one_of(all)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let output = args.output;
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match output {
                Output::Json => {
                    eprintln!("{}", json!({"event": "error", "error": format!("{e:#}")}))
                }
                Output::Text => eprintln!("error: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut builder = spiffe::X509Source::builder().initial_sync_timeout(args.sync_timeout);
    if let Some(socket) = &args.socket {
        builder = builder.endpoint(socket);
    }
    if let Some(id) = &args.spiffe_id {
        builder = builder.picker(SpiffeIdPicker::new(id.clone()));
    }
    let source = Arc::new(
        builder
            .build()
            .await
            .context("fetching an SVID from the Workload API (is SPIFFE_ENDPOINT_SOCKET set, and is there an entry for this process?)")?,
    );
    let own = X509Material::svid(source.as_ref())?;
    emit(
        args.output,
        json!({"event": "svid", "spiffe_id": own.spiffe_id().to_string(),
               "serial": own.cert_chain().first().map(|c| serial(c)).unwrap_or_default()}),
        &format!("own SVID {}", own.spiffe_id()),
    );
    match args.role {
        Role::Server {
            listen,
            allow,
            max_connections,
        } => {
            serve(
                source,
                allow.authorizer(),
                listen,
                max_connections,
                args.output,
            )
            .await
        }
        Role::Client {
            connect,
            allow,
            rounds,
            interval,
            reconnect_every,
        } => {
            let config = Arc::new(client_config(source, allow.authorizer())?);
            let client = ClientRun {
                connector: TlsConnector::from(config),
                addr: connect,
                output: args.output,
            };
            client.run(rounds, interval, reconnect_every).await
        }
    }
}

async fn serve(
    source: Arc<spiffe::X509Source>,
    authorizer: Authorizer,
    listen: SocketAddr,
    max_connections: Option<u64>,
    output: Output,
) -> anyhow::Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(server_config(source, authorizer)?));
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    emit(
        output,
        json!({"event": "listening", "addr": addr.to_string()}),
        &format!("listening on {addr}"),
    );
    let mut accepted = 0u64;
    while max_connections.is_none_or(|max| accepted < max) {
        let (tcp, from) = listener.accept().await?;
        accepted += 1;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let mut tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    emit(
                        output,
                        json!({"event": "refused", "from": from.to_string(), "error": e.to_string()}),
                        &format!("refused {from}: {e}"),
                    );
                    return;
                }
            };
            let (peer, peer_serial) = describe_peer(tls.get_ref().1);
            emit(
                output,
                json!({"event": "accepted", "peer": peer, "peer_serial": peer_serial}),
                &format!("accepted {peer} (serial {peer_serial})"),
            );
            let mut buf = [0u8; MSG];
            while tls.read_exact(&mut buf).await.is_ok() {
                if tls.write_all(&buf).await.is_err() || tls.flush().await.is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

struct ClientRun {
    connector: TlsConnector,
    addr: SocketAddr,
    output: Output,
}

impl ClientRun {
    async fn run(
        &self,
        rounds: u32,
        interval: Duration,
        reconnect_every: u32,
    ) -> anyhow::Result<()> {
        let mut long = self.connect("long").await?;
        for round in 1..=rounds {
            echo(&mut long, round)
                .await
                .context("echo on the long-lived connection")?;
            emit(
                self.output,
                json!({"event": "echo", "conn": "long", "round": round}),
                &format!("round {round}: echo on the long-lived connection"),
            );
            if reconnect_every > 0 && round % reconnect_every == 0 {
                let mut fresh = self.connect("fresh").await?;
                echo(&mut fresh, round)
                    .await
                    .context("echo on a fresh connection")?;
            }
            if round < rounds {
                tokio::time::sleep(interval).await;
            }
        }
        long.shutdown().await.ok();
        Ok(())
    }

    async fn connect(
        &self,
        which: &str,
    ) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        // Not checked: SPIFFE authenticates the server by its SPIFFE ID.
        let name = rustls::pki_types::ServerName::try_from("spiffe")?;
        let tls = tokio::time::timeout(Duration::from_secs(10), self.connector.connect(name, tcp))
            .await
            .context("handshake timed out")?
            .context("mTLS handshake")?;
        let (peer, peer_serial) = describe_peer(tls.get_ref().1);
        emit(
            self.output,
            json!({"event": "connected", "conn": which, "peer": peer, "peer_serial": peer_serial}),
            &format!("{which} connection to {peer} (serial {peer_serial})"),
        );
        Ok(tls)
    }
}

async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    tls: &mut S,
    round: u32,
) -> anyhow::Result<()> {
    let mut msg = [b' '; MSG];
    for (slot, byte) in msg.iter_mut().zip(format!("round {round}").bytes()) {
        *slot = byte;
    }
    let exchange = async {
        tls.write_all(&msg).await?;
        tls.flush().await?;
        let mut back = [0u8; MSG];
        tls.read_exact(&mut back).await?;
        anyhow::Ok(back)
    };
    let back = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .context("echo timed out")??;
    if back != msg {
        bail!("the echo differs from what was sent");
    }
    Ok(())
}

/// The peer's SPIFFE ID and leaf serial (hex).
fn describe_peer(conn: &rustls::CommonState) -> (String, String) {
    let id = peer_spiffe_id(conn)
        .map(|i| i.to_string())
        .unwrap_or_default();
    let serial = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| serial(c))
        .unwrap_or_default();
    (id, serial)
}

fn serial(cert: &[u8]) -> String {
    use x509_parser::prelude::{FromDer as _, X509Certificate};
    X509Certificate::from_der(cert)
        .map(|(_, c)| c.raw_serial().iter().map(|b| format!("{b:02x}")).collect())
        .unwrap_or_default()
}

fn emit(output: Output, value: serde_json::Value, text: &str) {
    match output {
        Output::Json => println!("{value}"),
        Output::Text => println!("{text}"),
    }
}
