//! `svidload`: a closed-loop load driver for the node agent and X.509 CA
//! benchmarks (issue 4). See docs/BENCHMARKS.md, "Node agent and X.509 CA".
//!
//! Load modes, each with `--concurrency` workers that own one connection
//! each and start their next call as soon as the previous one ended; a run is
//! bounded by `--duration` and `--max-flows`, after an uncounted warm-up, and
//! ends with one JSON line on stdout in the shape `bench/loadgen` prints:
//!
//! - `workload-jwt`: `FetchJWTSVID` on the SPIFFE Workload API (Unix socket,
//!   `workload.spiffe.io: true` metadata). After the first call per audience
//!   the agent answers from its JWT-SVID cache.
//! - `node-x509`: `SignX509Svids` on Lanyard's node API over mTLS with a node
//!   SVID (attested once with `node-attest`), one pre-generated CSR per call.
//! - `openbao-pki`: `POST /v1/pki/sign/ROLE` on OpenBao with the root token,
//!   the same kind of CSRs as PEM.
//!
//! Helpers: `node-attest` (spends a join token, stores the node SVID in a
//! state directory), `entries` (creates registration entries through the
//! admin API, for the agent memory benchmark) and `noop-server` (a Workload
//! API whose FetchJWTSVID answers a fixed token with no attestation and no
//! cache: the floor of a tonic call over a Unix socket, issue 10).
//!
//! The CSRs are distinct EC P-256 keys, each with one URI SAN
//! `spiffe://example.org/bench/x509/N`, generated before the load and used
//! round robin. What it deliberately does not do: talk to anything but
//! loopback addresses and a local Unix socket.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;
use clap::{Args as ClapArgs, Parser, Subcommand};
use lanyard_agent::{Bootstrap, NodeClient};
use lanyard_proto::node::node_client::NodeClient as NodePb;
use lanyard_proto::node::{SignX509SvidsRequest, SvidRequest};
use lanyard_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use lanyard_proto::workload::JwtsvidRequest;
use serde::Serialize;
use serde_json::Value;
use tonic::transport::{Channel, Endpoint};

/// One call may not take longer than this; it also bounds how long a run can
/// overshoot its duration.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CONCURRENCY: usize = 1024;
const MAX_DURATION_SECS: f64 = 600.0;
const MAX_CSRS: usize = 100_000;
const MAX_ENTRIES: u32 = 1_000_000;
const TRUST_DOMAIN: &str = "example.org";
const DEFAULT_URI_BASE: &str = "spiffe://example.org/bench/x509";

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Load driver for the node agent and X.509 CA benchmarks (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// FetchJWTSVID in a closed loop on the Workload API socket.
    WorkloadJwt {
        /// The Workload API Unix socket (dev.json `workload_socket`).
        #[arg(long)]
        socket: PathBuf,
        /// Audience asked for (one per call).
        #[arg(long, default_value = "bench")]
        audience: String,
        #[command(flatten)]
        load: Load,
    },
    /// FetchX509SVID stream setup in a closed loop: open the stream on the
    /// worker's connection, read the first response, close it.
    WorkloadX509 {
        /// The Workload API Unix socket.
        #[arg(long)]
        socket: PathBuf,
        #[command(flatten)]
        load: Load,
    },
    /// A Workload API that answers FetchJWTSVID with a fixed token, nothing
    /// else (the floor of a tonic unary call on a Unix socket). Serves until
    /// SIGTERM or --max-seconds, then prints its calls and CPU per call.
    NoopServer {
        /// Where to listen (a stale socket is replaced).
        #[arg(long)]
        socket: PathBuf,
        /// Put the agent's HTTP/2 front (`:authority` rewriting, peer
        /// credentials at accept) in front of tonic, as the agent does.
        #[arg(long)]
        front: bool,
        /// Length of the token answered (a real JWT-SVID: about 600 bytes).
        #[arg(long, default_value_t = 600)]
        token_len: usize,
        /// Stop after this long whatever happens.
        #[arg(long, default_value_t = 300.0)]
        max_seconds: f64,
    },
    /// Spends a join token: attests a node and stores its SVID in --state-dir.
    NodeAttest {
        #[command(flatten)]
        node: NodeArgs,
        /// File holding the one-time join token (`lyj1.…`).
        #[arg(long)]
        join_token_file: PathBuf,
    },
    /// SignX509Svids (one CSR per call) on the node API with a stored node SVID.
    NodeX509 {
        #[command(flatten)]
        node: NodeArgs,
        /// The registration entry (parent = the attested node) to sign for.
        #[arg(long)]
        entry_id: String,
        /// Distinct CSRs generated before the load, used round robin.
        #[arg(long, default_value_t = 5000)]
        csrs: usize,
        /// The CSRs' URI SAN is this followed by /N.
        #[arg(long, default_value = DEFAULT_URI_BASE)]
        uri_base: String,
        #[command(flatten)]
        load: Load,
    },
    /// POST /v1/pki/sign/ROLE on OpenBao with the root token.
    OpenbaoPki {
        /// OpenBao base URL, e.g. http://127.0.0.1:8200 (loopback only).
        #[arg(long)]
        base: String,
        /// File holding the root token.
        #[arg(long)]
        token_file: PathBuf,
        /// The PKI mount.
        #[arg(long, default_value = "pki")]
        mount: String,
        /// The PKI role.
        #[arg(long, default_value = "spiffe")]
        role: String,
        /// Distinct CSRs generated before the load, used round robin.
        #[arg(long, default_value_t = 5000)]
        csrs: usize,
        /// The CSRs' URI SAN is this followed by /N.
        #[arg(long, default_value = DEFAULT_URI_BASE)]
        uri_base: String,
        #[command(flatten)]
        load: Load,
    },
    /// Creates COUNT entries `unix:uid:N` (N from --first-uid) through the admin API.
    /// Writes `unix:uid:N` entries for one node straight into a stopped
    /// server's store (8 writers), the fast way to load 10,000 identities.
    StoreEntries {
        /// Store URL, e.g. sqlite:///tmp/x/lanyard.db.
        #[arg(long)]
        store: String,
        #[arg(long, default_value = "dev")]
        tenant: String,
        /// The node the entries belong to.
        #[arg(long, default_value = "spiffe://example.org/lanyard/node/dev")]
        parent: String,
        #[arg(long, default_value_t = 10_000)]
        count: u32,
        #[arg(long, default_value_t = 100_000)]
        first_uid: u32,
    },
    Entries {
        /// Lanyard base URL (dev.json `issuer`), loopback only.
        #[arg(long)]
        base: String,
        /// File holding the admin token.
        #[arg(long)]
        token_file: PathBuf,
        #[arg(long, default_value = "dev")]
        tenant: String,
        #[arg(long, default_value_t = 10_000)]
        count: u32,
        #[arg(long, default_value_t = 100_000)]
        first_uid: u32,
        /// Parallel requests.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
}

#[derive(Debug, ClapArgs)]
struct NodeArgs {
    /// Node API address host:port (dev.json `node_api`), loopback only.
    #[arg(long)]
    addr: String,
    /// PEM file with the trust domain's X.509 roots.
    #[arg(long)]
    bundle: PathBuf,
    /// Where the node SVID is stored (node-svid.json, 0600).
    #[arg(long)]
    state_dir: PathBuf,
}

#[derive(Debug, Clone, ClapArgs)]
struct Load {
    /// Concurrent clients, each with its own connection and one call in flight.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Measured seconds (the run stops at this or --max-flows, whichever is first).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Most calls started in the measured phase (and, separately, in the warm-up).
    #[arg(long, default_value_t = 500_000)]
    max_flows: u64,
    /// Uncounted warm-up seconds before the measured phase.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
}

impl Load {
    fn check(&self) -> anyhow::Result<()> {
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            bail!(
                "--concurrency must be 1..={MAX_CONCURRENCY}, not {}",
                self.concurrency
            );
        }
        for (name, secs) in [("--duration", self.duration), ("--warmup", self.warmup)] {
            if !(0.0..=MAX_DURATION_SECS).contains(&secs) {
                bail!("{name} must be 0..={MAX_DURATION_SECS} seconds, not {secs}");
            }
        }
        if self.max_flows == 0 {
            bail!("--max-flows must be at least 1");
        }
        Ok(())
    }
}

/// The one JSON line a load run prints (the fields of `bench/loadgen`).
#[derive(Debug, Serialize)]
struct Report {
    target: &'static str,
    concurrency: usize,
    flows: u64,
    errors: u64,
    seconds: f64,
    flows_per_sec: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    warmup_flows: u64,
    /// This process's CPU time (user + system, all threads) in the measured
    /// phase per call: the load generator's own cost, on the same cores.
    client_cpu_us_per_call: Option<f64>,
}

/// Clock ticks per second of /proc's times (Linux's USER_HZ, 100 on every
/// architecture it builds for by default).
const USER_HZ: f64 = 100.0;

/// utime + stime of this process, all threads (/proc/self/stat fields 14, 15).
fn own_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which may hold spaces: state is field 3.
    let rest = stat.rsplit_once(')')?.1;
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// One client: its connection and what it sends.
#[derive(Debug)]
enum Worker {
    Jwt {
        client: SpiffeWorkloadApiClient<Channel>,
        audience: String,
    },
    X509Stream {
        client: SpiffeWorkloadApiClient<Channel>,
    },
    X509 {
        client: NodePb<Channel>,
        entry_id: String,
        csrs: Arc<Vec<Csr>>,
    },
    Bao {
        http: reqwest::Client,
        url: reqwest::Url,
        token: Arc<str>,
        bodies: Arc<Vec<String>>,
    },
}

/// A CSR in both encodings.
#[derive(Debug)]
struct Csr {
    der: Vec<u8>,
    pem: String,
}

#[derive(Debug, Default)]
struct Tally {
    latencies_us: Vec<u64>,
    errors: u64,
}

/// Shared by the workers of one phase.
#[derive(Debug)]
struct Shared {
    started: AtomicU64,
    max_flows: u64,
    deadline: Instant,
    error_printed: Arc<AtomicBool>,
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("svidload: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::WorkloadJwt {
                socket,
                audience,
                load,
            } => {
                load.check()?;
                let mut workers = Vec::with_capacity(load.concurrency);
                for _ in 0..load.concurrency {
                    workers.push(Worker::Jwt {
                        client: workload_client(&socket).await?,
                        audience: audience.clone(),
                    });
                }
                drive("lanyard-workload-jwt", workers, &load).await
            }
            Command::WorkloadX509 { socket, load } => {
                load.check()?;
                let mut workers = Vec::with_capacity(load.concurrency);
                for _ in 0..load.concurrency {
                    workers.push(Worker::X509Stream {
                        client: workload_client(&socket).await?,
                    });
                }
                drive("lanyard-workload-x509-stream", workers, &load).await
            }
            Command::NodeAttest {
                node,
                join_token_file,
            } => {
                let token = read_secret(&join_token_file)?;
                let client = node_client(&node)?;
                let now = lanyard_agent::node_client::unix_now(std::time::SystemTime::now());
                client
                    .ensure_identity(&Bootstrap::JoinToken(token), now)
                    .await
                    .map_err(|e| anyhow!("attesting with the join token: {e}"))?;
                let id = client.identity().context("no node identity after attesting")?;
                println!(
                    "{}",
                    serde_json::json!({ "node_spiffe_id": id.spiffe_id, "expires_at": id.expires_at })
                );
                Ok(ExitCode::SUCCESS)
            }
            Command::NodeX509 {
                node,
                entry_id,
                csrs,
                uri_base,
                load,
            } => {
                load.check()?;
                let csrs = Arc::new(generate_csrs(csrs, &uri_base)?);
                let mut workers = Vec::with_capacity(load.concurrency);
                for _ in 0..load.concurrency {
                    // A client per worker: its own TLS connection, like OpenBao's side.
                    let client = node_client(&node)?;
                    if client.identity().is_none() {
                        bail!(
                            "no node SVID in {}: run `svidload node-attest` first",
                            node.state_dir.display()
                        );
                    }
                    let pb = client
                        .grpc()
                        .map_err(|e| anyhow!("node API client: {e}"))?;
                    workers.push(Worker::X509 {
                        client: pb,
                        entry_id: entry_id.clone(),
                        csrs: csrs.clone(),
                    });
                }
                drive("lanyard-sign-x509", workers, &load).await
            }
            Command::OpenbaoPki {
                base,
                token_file,
                mount,
                role,
                csrs,
                uri_base,
                load,
            } => {
                load.check()?;
                let base = loopback_base(&base)?;
                let token: Arc<str> = read_secret(&token_file)?.into();
                let bodies: Vec<String> = generate_csrs(csrs, &uri_base)?
                    .iter()
                    .map(|c| serde_json::json!({ "csr": c.pem, "format": "der" }).to_string())
                    .collect();
                let bodies = Arc::new(bodies);
                let url: reqwest::Url = format!("{base}/v1/{mount}/sign/{role}")
                    .parse()
                    .context("building the pki/sign URL")?;
                let mut workers = Vec::with_capacity(load.concurrency);
                for _ in 0..load.concurrency {
                    workers.push(Worker::Bao {
                        http: http_client()?,
                        url: url.clone(),
                        token: token.clone(),
                        bodies: bodies.clone(),
                    });
                }
                drive("openbao-pki-sign", workers, &load).await
            }
            Command::NoopServer {
                socket,
                front,
                token_len,
                max_seconds,
            } => noop_server(&socket, front, token_len, max_seconds).await,
            Command::StoreEntries {
                store,
                tenant,
                parent,
                count,
                first_uid,
            } => store_entries(&store, &tenant, &parent, count, first_uid).await,
            Command::Entries {
                base,
                token_file,
                tenant,
                count,
                first_uid,
                concurrency,
            } => {
                create_entries(&base, &token_file, &tenant, count, first_uid, concurrency).await
            }
        }
    })
}

/// Warm-up, then the measured phase; prints the report line.
async fn drive(
    target: &'static str,
    workers: Vec<Worker>,
    load: &Load,
) -> anyhow::Result<ExitCode> {
    let concurrency = workers.len();
    let error_printed = Arc::new(AtomicBool::new(false));
    let mut workers = workers;
    let mut warmup_flows = 0;
    if load.warmup > 0.0 {
        let (back, tally) = phase(workers, load.warmup, load.max_flows, &error_printed).await?;
        workers = back;
        warmup_flows = tally.latencies_us.len() as u64 + tally.errors;
    }
    let started = Instant::now();
    let cpu_before = own_cpu_ticks();
    let (_, tally) = phase(workers, load.duration, load.max_flows, &error_printed).await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after = own_cpu_ticks();
    let mut lat = tally.latencies_us;
    lat.sort_unstable();
    let flows = lat.len() as u64;
    let report = Report {
        target,
        concurrency,
        flows,
        errors: tally.errors,
        seconds: round3(seconds),
        flows_per_sec: round3(if seconds > 0.0 {
            flows as f64 / seconds
        } else {
            0.0
        }),
        p50_ms: percentile_ms(&lat, 0.50),
        p99_ms: percentile_ms(&lat, 0.99),
        max_ms: percentile_ms(&lat, 1.0),
        warmup_flows,
        client_cpu_us_per_call: match (cpu_before, cpu_after) {
            (Some(a), Some(b)) if flows + tally.errors > 0 => Some(round3(
                b.saturating_sub(a) as f64 * 1e6 / USER_HZ / (flows + tally.errors) as f64,
            )),
            _ => None,
        },
    };
    println!(
        "{}",
        serde_json::to_string(&report).context("serialising the report")?
    );
    // No successful call at all means the setup is broken, not slow.
    Ok(if flows == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Runs every worker until the deadline or `max_flows` calls have started;
/// gives the workers back for the next phase.
async fn phase(
    workers: Vec<Worker>,
    seconds: f64,
    max_flows: u64,
    error_printed: &Arc<AtomicBool>,
) -> anyhow::Result<(Vec<Worker>, Tally)> {
    let shared = Arc::new(Shared {
        started: AtomicU64::new(0),
        max_flows,
        deadline: Instant::now() + Duration::from_secs_f64(seconds),
        error_printed: error_printed.clone(),
    });
    let mut tasks = Vec::with_capacity(workers.len());
    for mut w in workers {
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < shared.deadline {
                let n = shared.started.fetch_add(1, Ordering::Relaxed);
                if n >= shared.max_flows {
                    break;
                }
                let t0 = Instant::now();
                match tokio::time::timeout(CALL_TIMEOUT, w.call(n)).await {
                    Ok(Ok(())) => tally
                        .latencies_us
                        .push(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX)),
                    Ok(Err(e)) => {
                        tally.errors += 1;
                        if !shared.error_printed.swap(true, Ordering::Relaxed) {
                            eprintln!("svidload: first error: {e:#}");
                        }
                    }
                    Err(_) => {
                        tally.errors += 1;
                        if !shared.error_printed.swap(true, Ordering::Relaxed) {
                            eprintln!("svidload: first error: no answer within {CALL_TIMEOUT:?}");
                        }
                    }
                }
            }
            (w, tally)
        }));
    }
    let mut all = Tally::default();
    let mut back = Vec::with_capacity(tasks.len());
    for t in tasks {
        let (w, tally) = t.await.context("a worker task failed")?;
        all.latencies_us.extend(tally.latencies_us);
        all.errors += tally.errors;
        back.push(w);
    }
    Ok((back, all))
}

impl Worker {
    /// One call; `n` picks the CSR round robin.
    async fn call(&mut self, n: u64) -> anyhow::Result<()> {
        match self {
            Worker::Jwt { client, audience } => {
                let mut req = tonic::Request::new(JwtsvidRequest {
                    audience: vec![audience.clone()],
                    spiffe_id: String::new(),
                });
                req.metadata_mut().insert(
                    lanyard_agent::workload_api::SECURITY_HEADER,
                    tonic::metadata::MetadataValue::from_static("true"),
                );
                let svids = client.fetch_jwtsvid(req).await?.into_inner().svids;
                match svids.first() {
                    Some(s) if !s.svid.is_empty() => Ok(()),
                    _ => bail!("FetchJWTSVID answered without a JWT-SVID"),
                }
            }
            Worker::X509Stream { client } => {
                let mut req = tonic::Request::new(lanyard_proto::workload::X509svidRequest {});
                req.metadata_mut().insert(
                    lanyard_agent::workload_api::SECURITY_HEADER,
                    tonic::metadata::MetadataValue::from_static("true"),
                );
                let mut stream = client.fetch_x509svid(req).await?.into_inner();
                match stream.message().await? {
                    Some(r) if !r.svids.is_empty() => Ok(()),
                    _ => bail!("FetchX509SVID opened without an X.509-SVID"),
                }
            }
            Worker::X509 {
                client,
                entry_id,
                csrs,
            } => {
                let csr = pick(csrs, n)?;
                let svids = client
                    .sign_x509_svids(SignX509SvidsRequest {
                        requests: vec![SvidRequest {
                            entry_id: entry_id.clone(),
                            csr: csr.der.clone(),
                        }],
                    })
                    .await?
                    .into_inner()
                    .svids;
                match svids.first() {
                    Some(s)
                        if svids.len() == 1
                            && s.cert_chain.first().is_some_and(|c| !c.is_empty()) =>
                    {
                        Ok(())
                    }
                    _ => bail!("SignX509Svids answered without one certificate"),
                }
            }
            Worker::Bao {
                http,
                url,
                token,
                bodies,
            } => {
                let body = pick(bodies, n)?.clone();
                let resp = http
                    .post(url.clone())
                    .header("X-Vault-Token", &**token)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await?;
                let status = resp.status();
                let text = resp.text().await?;
                if !status.is_success() {
                    bail!(
                        "HTTP {status}: {}",
                        text.chars().take(500).collect::<String>()
                    );
                }
                let v: Value = serde_json::from_str(&text).context("answer is not JSON")?;
                match v.pointer("/data/certificate").and_then(Value::as_str) {
                    Some(c) if !c.is_empty() => Ok(()),
                    _ => bail!("pki/sign answered without data.certificate"),
                }
            }
        }
    }
}

fn pick<T>(items: &[T], n: u64) -> anyhow::Result<&T> {
    let len = u64::try_from(items.len()).unwrap_or(u64::MAX);
    if len == 0 {
        bail!("nothing to send");
    }
    usize::try_from(n % len)
        .ok()
        .and_then(|i| items.get(i))
        .ok_or_else(|| anyhow!("index out of range"))
}

/// `count` distinct P-256 keys, each in a CSR with the URI SAN `URI_BASE/N`.
fn generate_csrs(count: usize, uri_base: &str) -> anyhow::Result<Vec<Csr>> {
    if count == 0 || count > MAX_CSRS {
        bail!("--csrs must be 1..={MAX_CSRS}, not {count}");
    }
    let started = Instant::now();
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("generating a P-256 key")?;
        let mut params = rcgen::CertificateParams::default();
        let uri = format!("{uri_base}/{i}");
        params.subject_alt_names = vec![rcgen::SanType::URI(
            uri.try_into().context("URI SAN is not IA5")?,
        )];
        let csr = params.serialize_request(&key).context("building a CSR")?;
        out.push(Csr {
            der: csr.der().to_vec(),
            pem: csr.pem().context("CSR to PEM")?,
        });
    }
    eprintln!(
        "svidload: {count} distinct P-256 CSRs in {:?}",
        started.elapsed()
    );
    Ok(out)
}

async fn workload_client(socket: &Path) -> anyhow::Result<SpiffeWorkloadApiClient<Channel>> {
    let p = socket.to_owned();
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let p = p.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(p).await?,
                ))
            }
        }))
        .await
        .with_context(|| format!("connecting to the Workload API at {}", socket.display()))?;
    Ok(SpiffeWorkloadApiClient::new(channel))
}

fn node_client(node: &NodeArgs) -> anyhow::Result<NodeClient> {
    let host = node
        .addr
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']))
        .context("--addr must be host:port")?;
    if !is_loopback(host) {
        bail!("--addr must be a loopback address, not {host}");
    }
    let pem = std::fs::read_to_string(&node.bundle)
        .with_context(|| format!("reading {}", node.bundle.display()))?;
    let roots = pem_certs(&pem)?;
    if roots.is_empty() {
        bail!("{} holds no certificate", node.bundle.display());
    }
    std::fs::create_dir_all(&node.state_dir)
        .with_context(|| format!("creating {}", node.state_dir.display()))?;
    // The node API's certificate names `localhost` (and the server's SPIFFE ID).
    NodeClient::new(
        &node.addr,
        Some("localhost"),
        TRUST_DOMAIN,
        roots,
        &node.state_dir,
    )
    .map_err(|e| anyhow!("node API client: {e}"))
}

/// DER certificates from PEM text.
fn pem_certs(text: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    let mut body: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if line == "-----BEGIN CERTIFICATE-----" {
            body = Some(String::new());
        } else if line == "-----END CERTIFICATE-----" {
            let b = body.take().context("END CERTIFICATE without BEGIN")?;
            out.push(b64.decode(b).context("certificate is not base64")?);
        } else if let Some(b) = body.as_mut() {
            b.push_str(line);
        }
    }
    if body.is_some() {
        bail!("BEGIN CERTIFICATE without END");
    }
    Ok(out)
}

async fn create_entries(
    base: &str,
    token_file: &Path,
    tenant: &str,
    count: u32,
    first_uid: u32,
    concurrency: usize,
) -> anyhow::Result<ExitCode> {
    if count == 0 || count > MAX_ENTRIES {
        bail!("--count must be 1..={MAX_ENTRIES}, not {count}");
    }
    if concurrency == 0 || concurrency > 64 {
        bail!("--concurrency must be 1..=64, not {concurrency}");
    }
    let base = loopback_base(base)?;
    let token: Arc<str> = read_secret(token_file)?.into();
    let http = http_client()?;
    let url: Arc<str> = format!("{base}/admin/v1/entries").into();
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, url, token, next, tenant) = (
            http.clone(),
            url.clone(),
            token.clone(),
            next.clone(),
            tenant.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= u64::from(count) {
                    return Ok::<_, anyhow::Error>(());
                }
                let uid = u64::from(first_uid) + i;
                let body = serde_json::json!({
                    "spiffe_id": format!("spiffe://{TRUST_DOMAIN}/bench/agent/{uid}"),
                    "tenant": tenant,
                    "selectors": [format!("unix:uid:{uid}")],
                });
                let resp = http
                    .post(&*url)
                    .bearer_auth(&*token)
                    .json(&body)
                    .send()
                    .await
                    .context("POST /admin/v1/entries")?;
                let status = resp.status();
                if !status.is_success() {
                    let text = resp.text().await.unwrap_or_default();
                    bail!(
                        "creating entry for uid {uid}: HTTP {status}: {}",
                        text.chars().take(500).collect::<String>()
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await.context("an entry task failed")??;
    }
    println!(
        "{}",
        serde_json::json!({ "created": count, "first_uid": first_uid, "seconds": round3(started.elapsed().as_secs_f64()) })
    );
    Ok(ExitCode::SUCCESS)
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(CALL_TIMEOUT)
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")
}

fn read_secret(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let t = text.trim();
    if t.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(t.to_owned())
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `http://HOST:PORT` with a loopback host, without a trailing slash.
fn loopback_base(base: &str) -> anyhow::Result<String> {
    let url: reqwest::Url = base.parse().with_context(|| format!("bad URL {base}"))?;
    if url.scheme() != "http" {
        bail!("{base}: only plain http:// on loopback is supported");
    }
    let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
    if !is_loopback(host) {
        bail!("{base}: the load driver only talks to loopback addresses");
    }
    Ok(base.trim_end_matches('/').to_owned())
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
fn percentile_ms(sorted_us: &[u64], p: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let rank = (p * sorted_us.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted_us.len()) - 1;
    sorted_us.get(idx).map(|&us| round3(us as f64 / 1000.0))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `store-entries`: entries straight into the store, 8 writers.
async fn store_entries(
    url: &str,
    tenant: &str,
    parent: &str,
    count: u32,
    first_uid: u32,
) -> anyhow::Result<ExitCode> {
    use lanyard_core::{Decision, Entry, Selector, SpiffeId, TenantId};
    let store = lanyard_store::open(url)
        .await
        .with_context(|| format!("opening {url}"))?;
    let tenant = TenantId::parse(tenant)?;
    let parent = SpiffeId::parse(parent)?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8u32 {
        let (store, tenant, parent) = (store.clone(), tenant.clone(), parent.clone());
        tasks.spawn(async move {
            for i in (worker..count).step_by(8) {
                let uid = first_uid + i;
                let entry = Entry {
                    id: format!("agentbench{i:06}"),
                    spiffe_id: SpiffeId::parse(&format!("spiffe://example.org/bench/uid/{uid}"))?,
                    tenant: tenant.clone(),
                    issuer: None,
                    parent: Some(parent.clone()),
                    dns_names: Vec::new(),
                    selectors: vec![Selector::parse(&format!("unix:uid:{uid}"))?],
                    audiences: Vec::new(),
                    ttl: None,
                    max_ttl: None,
                    scopes: Vec::new(),
                    may_act: Vec::new(),
                    admin: false,
                    token_reviewer: false,
                    grants: Vec::new(),
                    role: None,
                    federates_with: Vec::new(),
                    created_at: 0,
                };
                let audit = lanyard_store::AuditDraft {
                    at_ms: 0,
                    correlation_id: format!("agentbench-{i}"),
                    actor: "bench:svidload".into(),
                    action: "entry.create".into(),
                    subject: entry.id.clone(),
                    tenant: Some(tenant.to_string()),
                    decision: Decision::Allow,
                    reason: "bulk load".into(),
                    evidence_digest: None,
                };
                store.create_entry(entry, audit).await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a writer task failed")??;
    }
    eprintln!(
        "svidload: {count} entries stored in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_loopback_targets() {
        assert!(loopback_base("http://127.0.0.1:8200").is_ok());
        assert!(loopback_base("http://[::1]:8200/").is_ok());
        assert!(loopback_base("http://localhost:1").is_ok());
        assert!(loopback_base("http://10.0.0.1:8200").is_err());
        assert!(loopback_base("https://127.0.0.1:8200").is_err());
        assert!(loopback_base("http://example.org").is_err());
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&v, 0.5), Some(50.0));
        assert_eq!(percentile_ms(&v, 0.99), Some(99.0));
        assert_eq!(percentile_ms(&v, 1.0), Some(100.0));
        assert_eq!(percentile_ms(&[], 0.5), None);
    }

    #[test]
    fn csrs_are_distinct_and_carry_the_uri_san() {
        let csrs = generate_csrs(3, DEFAULT_URI_BASE).expect("csrs");
        assert_eq!(csrs.len(), 3);
        assert_ne!(csrs[0].der, csrs[1].der);
        for (i, c) in csrs.iter().enumerate() {
            let uri = format!("spiffe://example.org/bench/x509/{i}");
            // The IA5String of the URI SAN appears verbatim in the DER.
            assert!(
                c.der.windows(uri.len()).any(|w| w == uri.as_bytes()),
                "CSR {i} lacks {uri}"
            );
            assert!(c.pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        }
        assert!(generate_csrs(0, DEFAULT_URI_BASE).is_err());
    }

    #[test]
    fn pem_certificates_decode() {
        let text = "junk\n-----BEGIN CERTIFICATE-----\nAAEC\nAw==\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_certs(text).expect("pem"), vec![vec![0, 1, 2, 3]]);
        assert!(pem_certs("-----BEGIN CERTIFICATE-----\nAAEC\n").is_err());
        assert!(pem_certs("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----").is_err());
    }

    #[test]
    fn round_robin_wraps() {
        let items = [1, 2, 3];
        assert_eq!(*pick(&items, 4).expect("pick"), 2);
        assert!(pick::<u8>(&[], 0).is_err());
    }
}

/// The no-op Workload API of `noop-server`.
#[derive(Debug)]
struct Noop {
    token: String,
    calls: Arc<AtomicU64>,
}

type NoStream<T> =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<T, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl lanyard_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApi for Noop {
    type FetchX509SVIDStream = NoStream<lanyard_proto::workload::X509svidResponse>;
    type FetchX509BundlesStream = NoStream<lanyard_proto::workload::X509BundlesResponse>;
    type FetchJWTBundlesStream = NoStream<lanyard_proto::workload::JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        _: tonic::Request<lanyard_proto::workload::X509svidRequest>,
    ) -> Result<tonic::Response<Self::FetchX509SVIDStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("noop"))
    }

    async fn fetch_x509_bundles(
        &self,
        _: tonic::Request<lanyard_proto::workload::X509BundlesRequest>,
    ) -> Result<tonic::Response<Self::FetchX509BundlesStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("noop"))
    }

    async fn fetch_jwtsvid(
        &self,
        _: tonic::Request<JwtsvidRequest>,
    ) -> Result<tonic::Response<lanyard_proto::workload::JwtsvidResponse>, tonic::Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(tonic::Response::new(
            lanyard_proto::workload::JwtsvidResponse {
                svids: vec![lanyard_proto::workload::Jwtsvid {
                    spiffe_id: "spiffe://example.org/bench/workload".into(),
                    svid: self.token.clone(),
                    hint: String::new(),
                }],
            },
        ))
    }

    async fn fetch_jwt_bundles(
        &self,
        _: tonic::Request<lanyard_proto::workload::JwtBundlesRequest>,
    ) -> Result<tonic::Response<Self::FetchJWTBundlesStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("noop"))
    }

    async fn validate_jwtsvid(
        &self,
        _: tonic::Request<lanyard_proto::workload::ValidateJwtsvidRequest>,
    ) -> Result<tonic::Response<lanyard_proto::workload::ValidateJwtsvidResponse>, tonic::Status>
    {
        Err(tonic::Status::unimplemented("noop"))
    }
}

async fn noop_server(
    socket: &Path,
    front: bool,
    token_len: usize,
    max_seconds: f64,
) -> anyhow::Result<ExitCode> {
    if !(0.0..=3600.0).contains(&max_seconds) || token_len > 1 << 20 {
        bail!("--max-seconds must be 0..=3600 and --token-len at most 1 MiB");
    }
    let calls = Arc::new(AtomicU64::new(0));
    let service =
        lanyard_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApiServer::new(Noop {
            token: "x".repeat(token_len),
            calls: calls.clone(),
        });
    let listener = lanyard_agent::socket::bind(socket, 0o700)
        .map_err(|e| anyhow!("binding {}: {e}", socket.display()))?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let deadline = Duration::from_secs_f64(max_seconds);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            () = tokio::time::sleep(deadline) => {}
        }
        let _ = stop.send(true);
    });
    let cpu_before = own_cpu_ticks();
    if front {
        let routes = tonic::service::Routes::new(service);
        lanyard_agent::socket::serve(listener, routes, "the no-op Workload API", stopped)
            .await
            .map_err(|e| anyhow!("serving: {e}"))?;
    } else {
        let incoming = futures_util::stream::unfold(listener, |l| async move {
            Some((l.accept().await.map(|(s, _)| s), l))
        });
        let mut stopped = stopped;
        tonic::transport::Server::builder()
            .max_concurrent_streams(lanyard_agent::socket::MAX_STREAMS_PER_CONNECTION)
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stopped.changed().await;
            })
            .await
            .context("serving")?;
    }
    let n = calls.load(Ordering::Relaxed);
    let cpu = match (cpu_before, own_cpu_ticks()) {
        (Some(a), Some(b)) if n > 0 => Some(round3(
            b.saturating_sub(a) as f64 * 1e6 / USER_HZ / n as f64,
        )),
        _ => None,
    };
    println!(
        "{}",
        serde_json::json!({ "target": "noop-server", "front": front, "calls": n, "server_cpu_us_per_call": cpu })
    );
    Ok(ExitCode::SUCCESS)
}
