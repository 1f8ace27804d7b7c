//! `faultload`: the client side of the fault tests (issue 13,
//! `scripts/faults.sh`). Workers run token exchanges, X.509-SVID signings
//! (node API, as an agent) and broker credential requests in a closed loop
//! against a round-robin proxy in front of the replicas, and record every
//! operation and its result, etcd-robustness style, as JSON lines:
//!
//! `{"op":"exchange","t0_ms":…,"t1_ms":…,"ok":true,"status":200,"id":"<jti>"}`
//!
//! `id` is what the audit log must name for a credential the client
//! received: the token's `jti`, the certificate's serial (hex), the broker
//! lease id (plus `user`, the login). The checker (scripts/faults/check.py)
//! then holds the history against the audit log and the databases.
//! Loopback only; bounded by `--duration`; every call by a timeout.

#![forbid(unsafe_code)]
#![allow(clippy::indexing_slicing)]

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;
use clap::Parser;
use lanyard_agent::{Bootstrap, NodeClient};
use lanyard_proto::node::{SignX509SvidsRequest, SvidRequest, SyncRequest};
use serde_json::{json, Value};

const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Parser)]
#[command(about = "History-recording load for Lanyard's fault tests (loopback only)")]
struct Args {
    /// The replicas' round-robin HTTP address (also the issuer URL).
    #[arg(long)]
    base: String,
    /// The replicas' round-robin node API address.
    #[arg(long)]
    node_api: String,
    /// Admin token file (join token for the load's node).
    #[arg(long)]
    admin_token_file: PathBuf,
    /// Subject tokens, one per line (Kubernetes service-account tokens).
    #[arg(long)]
    tokens: PathBuf,
    /// Exchange audience.
    #[arg(long, default_value = "api://fault")]
    audience: String,
    /// Broker grant (`backend/role`).
    #[arg(long, default_value = "appdb/ro")]
    grant: String,
    /// Node id for X.509 signing (its entry must exist).
    #[arg(long, default_value = "fault-load")]
    node: String,
    /// Where the node SVID is kept.
    #[arg(long)]
    state_dir: PathBuf,
    /// Workers.
    #[arg(long, default_value_t = 6)]
    concurrency: usize,
    /// Seconds of load.
    #[arg(long)]
    duration: f64,
    /// Pause between one worker's operations, ms (0: closed loop).
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
    /// History output (JSON lines).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug)]
struct Shared {
    args: Args,
    http: reqwest::Client,
    tokens: Vec<String>,
    node: NodeClient,
    entry_id: String,
    start: Instant,
    out: Mutex<std::fs::File>,
}

fn main() -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(Args::parse())))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("faultload: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn loopback(addr: &str) -> anyhow::Result<()> {
    let hostport = addr.trim_start_matches("http://");
    let host = hostport
        .rsplit_once(':')
        .map(|(h, _)| h)
        .context("expected host:port")?;
    if host != "127.0.0.1" && host != "localhost" {
        bail!("{addr} is not a loopback address");
    }
    Ok(())
}

fn pem_certs(text: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    let mut body: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if line == "-----BEGIN CERTIFICATE-----" {
            body = Some(String::new());
        } else if line == "-----END CERTIFICATE-----" {
            out.push(b64.decode(body.take().context("END without BEGIN")?)?);
        } else if let Some(b) = body.as_mut() {
            b.push_str(line);
        }
    }
    Ok(out)
}

async fn run(args: Args) -> anyhow::Result<()> {
    loopback(&args.base)?;
    loopback(&args.node_api)?;
    if !(1.0..=3600.0).contains(&args.duration) || !(1..=256).contains(&args.concurrency) {
        bail!("--duration must be 1..=3600 s and --concurrency 1..=256");
    }
    let tokens: Vec<String> = std::fs::read_to_string(&args.tokens)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if tokens.is_empty() {
        bail!("{} holds no tokens", args.tokens.display());
    }
    let admin = std::fs::read_to_string(&args.admin_token_file)?
        .trim()
        .to_owned();
    let http = reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        // A new connection per request: each goes to the next replica.
        .pool_max_idle_per_host(0)
        .build()?;
    // The load's node: attested once (retrying: replicas may be starting).
    let created: Value = http
        .post(format!("{}/admin/v1/jointokens", args.base))
        .bearer_auth(&admin)
        .json(&json!({ "node_id": args.node, "ttl_seconds": 600 }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let roots = pem_certs(created["trust_bundle_pem"].as_str().unwrap_or(""))?;
    std::fs::create_dir_all(&args.state_dir)?;
    let node = NodeClient::new(
        &args.node_api,
        Some("localhost"),
        "example.org",
        roots,
        &args.state_dir,
    )
    .map_err(|e| anyhow!("{e}"))?;
    let join = created["token"]
        .as_str()
        .context("no join token")?
        .to_owned();
    let now = lanyard_agent::node_client::unix_now(std::time::SystemTime::now());
    node.ensure_identity(&Bootstrap::JoinToken(join), now)
        .await
        .map_err(|e| anyhow!("attesting the load's node: {e}"))?;
    let sync = node
        .grpc()
        .map_err(|e| anyhow!("{e}"))?
        .sync(SyncRequest::default())
        .await?
        .into_inner();
    let entry_id = sync
        .entries
        .first()
        .map(|e| e.id.clone())
        .context("the load's node has no entry (create one with parent spiffe://example.org/lanyard/node/NODE)")?;
    let out = std::fs::File::create(&args.out)?;
    let concurrency = args.concurrency;
    let duration = Duration::from_secs_f64(args.duration);
    let shared = Arc::new(Shared {
        args,
        http,
        tokens,
        node,
        entry_id,
        start: Instant::now(),
        out: Mutex::new(out),
    });
    let deadline = shared.start + duration;
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            let mut counts = [0u64; 6];
            while Instant::now() < deadline {
                let kind = (w + n) % 3;
                n += 1;
                let t0 = shared.start.elapsed();
                let result = tokio::time::timeout(CALL_TIMEOUT, op(&shared, kind, w + n)).await;
                let t1 = shared.start.elapsed();
                let (ok, status, id, user, error) = match result {
                    Ok(Ok(r)) => (r.status == 200, r.status, r.id, r.user, r.error),
                    Ok(Err(e)) => (false, 0, String::new(), String::new(), format!("{e:#}")),
                    Err(_) => (false, 0, String::new(), String::new(), "timed out".into()),
                };
                counts[kind * 2 + usize::from(!ok)] += 1;
                let name = ["exchange", "x509", "broker"][kind];
                let line = json!({
                    "op": name,
                    "t0_ms": t0.as_millis() as u64,
                    "t1_ms": t1.as_millis() as u64,
                    "ok": ok,
                    "status": status,
                    "id": id,
                    "user": user,
                    "error": error.chars().take(300).collect::<String>(),
                });
                if let Ok(mut f) = shared.out.lock() {
                    let _ = writeln!(f, "{line}");
                }
                if shared.args.pause_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(shared.args.pause_ms)).await;
                }
            }
            counts
        }));
    }
    let mut total = [0u64; 6];
    for t in tasks {
        let c = t.await?;
        for (a, b) in total.iter_mut().zip(c) {
            *a += b;
        }
    }
    println!(
        "{}",
        json!({
            "exchange_ok": total[0], "exchange_failed": total[1],
            "x509_ok": total[2], "x509_failed": total[3],
            "broker_ok": total[4], "broker_failed": total[5],
        })
    );
    Ok(())
}

struct Outcome {
    status: u16,
    id: String,
    user: String,
    error: String,
}

fn failed(status: u16, body: &str) -> Outcome {
    Outcome {
        status,
        id: String::new(),
        user: String::new(),
        error: body.chars().take(300).collect(),
    }
}

async fn exchange(s: &Shared, token: &str, audience: &str) -> anyhow::Result<(u16, Value)> {
    let resp = s
        .http
        .post(format!("{}/oauth2/token", s.args.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token={}&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt&audience={}",
            urlencode(token),
            urlencode(audience)
        ))
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

fn jti(token: &str) -> String {
    token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|c| c["jti"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn op(s: &Shared, kind: usize, n: usize) -> anyhow::Result<Outcome> {
    let token = &s.tokens[n % s.tokens.len()];
    match kind {
        0 => {
            let (status, body) = exchange(s, token, &s.args.audience).await?;
            if status != 200 {
                return Ok(failed(status, &body.to_string()));
            }
            let id = jti(body["access_token"].as_str().unwrap_or(""));
            Ok(Outcome {
                status,
                id,
                user: String::new(),
                error: String::new(),
            })
        }
        1 => {
            let key = rcgen_free_csr()?;
            let resp = s
                .node
                .grpc()
                .map_err(|e| anyhow!("{e}"))?
                .sign_x509_svids(SignX509SvidsRequest {
                    requests: vec![SvidRequest {
                        entry_id: s.entry_id.clone(),
                        csr: key,
                    }],
                })
                .await;
            match resp {
                Ok(r) => {
                    let der = r
                        .into_inner()
                        .svids
                        .first()
                        .and_then(|v| v.cert_chain.first().cloned())
                        .context("no certificate in the answer")?;
                    let (_, cert) = x509_parser::parse_x509_certificate(&der)
                        .map_err(|e| anyhow!("certificate: {e}"))?;
                    let id = cert
                        .raw_serial()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    Ok(Outcome {
                        status: 200,
                        id,
                        user: String::new(),
                        error: String::new(),
                    })
                }
                Err(st) => Ok(failed(503, &format!("{:?}: {}", st.code(), st.message()))),
            }
        }
        _ => {
            let (status, body) = exchange(s, token, &format!("{}/broker", s.args.base)).await?;
            if status != 200 {
                return Ok(failed(status, &format!("bearer: {body}")));
            }
            let bearer = body["access_token"].as_str().unwrap_or("").to_owned();
            let resp = s
                .http
                .post(format!("{}/broker/v1/creds/{}", s.args.base, s.args.grant))
                .bearer_auth(bearer)
                .send()
                .await?;
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if status != 200 {
                return Ok(failed(status, &body.to_string()));
            }
            Ok(Outcome {
                status,
                id: body["lease_id"].as_str().unwrap_or("").to_owned(),
                user: body["username"].as_str().unwrap_or("").to_owned(),
                error: String::new(),
            })
        }
    }
}

/// A fresh P-256 key's CSR (the agent's own helper).
fn rcgen_free_csr() -> anyhow::Result<Vec<u8>> {
    let (_key, csr) = lanyard_agent::node_client::new_key_and_csr().map_err(|e| anyhow!("{e}"))?;
    Ok(csr)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
