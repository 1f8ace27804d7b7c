//! `loadgen`: a closed-loop HTTP load generator for Lanyard's benchmarks.
//!
//! It runs *flows* (one or more HTTP requests that together obtain one
//! credential) against a server on the loopback interface with a fixed number
//! of concurrent workers, each sending its next flow as soon as the previous
//! one has finished. A run is bounded by both a duration and a maximum count
//! of flows, preceded by an uncounted warm-up, and ends with one JSON line on
//! stdout:
//!
//! ```text
//! {"target":"lanyard-exchange","concurrency":8,"flows":51234,"errors":0,"seconds":10.0,
//!  "flows_per_sec":5123.4,"p50_ms":1.2,"p99_ms":3.4,"max_ms":9.1,"warmup_flows":4100,
//!  "token_pool":1000,"first_token":0,"tokens_sent":55334,"distinct_tokens_sent":1000,
//!  "token_reuse":true,"pool_exhausted":false}
//! ```
//!
//! `flows` counts successful flows; latencies are those of successful flows.
//! A flow fails on a transport error, a non-2xx status or a missing field in
//! the answer; the first failure's body goes to stderr once.
//!
//! Tokens: each flow takes the next token of the file (one shared counter,
//! starting at `--first-token`), round robin by default, so a pool smaller
//! than the run is reused (a pod presenting its projected token again).
//! With `--no-reuse` each token is sent at most once: when the pool is used
//! up the run stops early (`pool_exhausted`; the rate is still flows over
//! the measured seconds). `tokens_sent` counts every flow started, warm-up
//! included; `token_reuse` says whether any token (by value) was sent twice.
//!
//! What it deliberately does not do: talk to anything but `127.0.0.1`,
//! `::1` or `localhost` over plain HTTP, follow redirects, or use a proxy.
//! It is a benchmark driver, not a general HTTP tool.
//!
//! Flow kinds:
//! - `lanyard-exchange`: one RFC 8693 token exchange, `POST {base}/oauth2/token`.
//! - `openbao-jwt-oidc`: `POST {base}/v1/auth/jwt/login`, then
//!   `GET {base}/v1/identity/oidc/token/{role}` with the returned client token.
//! - `lanyard-broker-creds`: `POST {base}/broker/v1/creds/{role}` with the
//!   token (a JWT-SVID for the broker) as bearer; one PostgreSQL user.
//! - `openbao-db-creds`: `GET {base}/v1/database/creds/{role}` with the token
//!   as `X-Vault-Token`; one PostgreSQL user from the database secrets engine.

#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use reqwest::header::CONTENT_TYPE;
use serde::Serialize;
use serde_json::Value;

/// RFC 8693 §2.1 grant type.
const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 §3 token type for a JWT.
const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// One request may not take longer than this; it also bounds how long a run
/// can overshoot its duration.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONCURRENCY: usize = 1024;
const MAX_DURATION_SECS: f64 = 600.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Flow {
    /// One RFC 8693 token exchange against Lanyard.
    LanyardExchange,
    /// OpenBao JWT login followed by an identity OIDC token.
    OpenbaoJwtOidc,
    /// One brokered PostgreSQL credential from Lanyard.
    LanyardBrokerCreds,
    /// One PostgreSQL credential from OpenBao's database secrets engine.
    OpenbaoDbCreds,
}

impl Flow {
    fn name(self) -> &'static str {
        match self {
            Flow::LanyardExchange => "lanyard-exchange",
            Flow::OpenbaoJwtOidc => "openbao-jwt-oidc",
            Flow::LanyardBrokerCreds => "lanyard-broker-creds",
            Flow::OpenbaoDbCreds => "openbao-db-creds",
        }
    }
}

#[derive(Debug, Parser)]
#[command(version, about = "Closed-loop HTTP load generator (loopback only)")]
struct Args {
    /// Flow kind to run.
    #[arg(long, value_enum)]
    flow: Flow,
    /// Base URL of the target, e.g. http://127.0.0.1:8080 (loopback only).
    #[arg(long)]
    base: String,
    /// File with one subject token per line, used round robin.
    #[arg(long)]
    tokens: PathBuf,
    /// Concurrent workers, each with one flow in flight.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Measured seconds (the run stops at this or --max-flows, whichever is first).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Most flows started in the measured phase (and, separately, in the warm-up).
    #[arg(long, default_value_t = 200_000)]
    max_flows: u64,
    /// Uncounted warm-up seconds before the measured phase.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Index (0-based line among the non-empty lines) of the first token to
    /// send, e.g. where a previous run against the same server stopped.
    #[arg(long, default_value_t = 0)]
    first_token: usize,
    /// Send each token at most once (warm-up included): stop the run when the
    /// tokens from --first-token on are used up instead of wrapping round.
    #[arg(long)]
    no_reuse: bool,
    /// `audience` of the token exchange (lanyard-exchange).
    #[arg(long, default_value = "bench-api")]
    audience: String,
    /// JWT auth role and OIDC role name (openbao-jwt-oidc); broker role
    /// (lanyard-broker-creds, e.g. appdb/readonly) or database role
    /// (openbao-db-creds).
    #[arg(long, default_value = "bench")]
    role: String,
}

/// What every worker shares: the client, the prepared requests and the counters.
#[derive(Debug)]
struct Target {
    client: reqwest::Client,
    flow: Flow,
    /// Request bodies, one per token, prepared once so the loop only clones.
    bodies: Vec<String>,
    /// The first request's URL (token endpoint or JWT login).
    first_url: reqwest::Url,
    /// The OIDC token URL (openbao-jwt-oidc only).
    second_url: reqwest::Url,
    /// Index of the first token sent.
    first_token: usize,
    /// Stop at the end of the pool instead of wrapping round.
    no_reuse: bool,
    /// Tokens taken so far (every flow started, warm-up included; in
    /// `no_reuse` mode also the attempts that found the pool used up).
    next_token: AtomicUsize,
    pool_exhausted: AtomicBool,
    error_printed: AtomicBool,
}

/// The one JSON line a run prints, fields in this order.
#[derive(Debug, Serialize)]
struct Report {
    target: &'static str,
    concurrency: usize,
    /// Successful flows in the measured phase.
    flows: u64,
    errors: u64,
    seconds: f64,
    flows_per_sec: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    /// Flows (successful or not) in the uncounted warm-up, so that a caller
    /// measuring CPU time over the whole run can divide by every flow.
    warmup_flows: u64,
    /// Tokens in the file (non-empty lines).
    token_pool: usize,
    /// Index of the first token sent (`--first-token`).
    first_token: usize,
    /// Tokens sent: every flow started, warm-up and errors included.
    tokens_sent: usize,
    /// Distinct token values among those sent.
    distinct_tokens_sent: usize,
    /// Whether any token value was sent more than once in this run.
    token_reuse: bool,
    /// `--no-reuse` only: the run stopped because the pool was used up.
    pool_exhausted: bool,
}

/// The outcome of one worker in one phase.
#[derive(Debug, Default)]
struct Tally {
    latencies_us: Vec<u64>,
    errors: u64,
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("loadgen: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if args.concurrency == 0 || args.concurrency > MAX_CONCURRENCY {
        bail!(
            "--concurrency must be 1..={MAX_CONCURRENCY}, not {}",
            args.concurrency
        );
    }
    for (name, secs) in [("--duration", args.duration), ("--warmup", args.warmup)] {
        if !(0.0..=MAX_DURATION_SECS).contains(&secs) {
            bail!("{name} must be 0..={MAX_DURATION_SECS} seconds, not {secs}");
        }
    }
    if args.max_flows == 0 {
        bail!("--max-flows must be at least 1");
    }
    let base = loopback_base(&args.base)?;
    let target = Arc::new(Target::new(&args, &base)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let mut warmup_flows = 0;
        if args.warmup > 0.0 {
            let warmup = phase(
                &target,
                args.concurrency,
                Duration::from_secs_f64(args.warmup),
                args.max_flows,
            )
            .await?;
            warmup_flows = warmup.latencies_us.len() as u64 + warmup.errors;
        }
        let started = Instant::now();
        let tally = phase(
            &target,
            args.concurrency,
            Duration::from_secs_f64(args.duration),
            args.max_flows,
        )
        .await?;
        let seconds = started.elapsed().as_secs_f64();
        let (tokens_sent, distinct_tokens_sent) = target.tokens_sent();
        let pool_exhausted = target.pool_exhausted.load(Ordering::Relaxed);
        if pool_exhausted {
            eprintln!(
                "loadgen: the token pool was used up after {tokens_sent} flows: \
                 the run stopped early (--no-reuse), after {seconds:.1} s measured"
            );
        }
        let mut lat = tally.latencies_us;
        lat.sort_unstable();
        let flows = lat.len() as u64;
        let report = Report {
            target: args.flow.name(),
            concurrency: args.concurrency,
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
            token_pool: target.bodies.len(),
            first_token: target.first_token,
            tokens_sent,
            distinct_tokens_sent,
            token_reuse: tokens_sent > distinct_tokens_sent,
            pool_exhausted,
        };
        let line = serde_json::to_string(&report).context("serialising the report")?;
        println!("{line}");
        // No successful flow at all means the setup is broken, not slow.
        Ok(if flows == 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    })
}

impl Target {
    fn new(args: &Args, base: &str) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(&args.tokens)
            .with_context(|| format!("reading tokens from {}", args.tokens.display()))?;
        let tokens: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if tokens.is_empty() {
            bail!("{} holds no tokens", args.tokens.display());
        }
        if args.no_reuse && args.first_token >= tokens.len() {
            bail!(
                "--first-token {} with --no-reuse: {} holds only {} tokens, none left unsent",
                args.first_token,
                args.tokens.display(),
                tokens.len()
            );
        }
        let mut distinct = tokens.clone();
        distinct.sort_unstable();
        distinct.dedup();
        eprintln!(
            "loadgen: {} tokens ({} distinct) from {}",
            tokens.len(),
            distinct.len(),
            args.tokens.display()
        );
        let (bodies, first, second) = match args.flow {
            Flow::LanyardExchange => {
                let bodies = tokens
                    .iter()
                    .map(|t| {
                        format!(
                            "grant_type={}&subject_token={}&subject_token_type={}&audience={}",
                            form_encode(GRANT_TOKEN_EXCHANGE),
                            form_encode(t),
                            form_encode(TOKEN_TYPE_JWT),
                            form_encode(&args.audience)
                        )
                    })
                    .collect();
                (bodies, format!("{base}/oauth2/token"), format!("{base}/"))
            }
            Flow::OpenbaoJwtOidc => {
                let bodies = tokens
                    .iter()
                    .map(|t| serde_json::json!({ "role": args.role, "jwt": t }).to_string())
                    .collect();
                let role = form_encode(&args.role);
                (
                    bodies,
                    format!("{base}/v1/auth/jwt/login"),
                    format!("{base}/v1/identity/oidc/token/{role}"),
                )
            }
            Flow::LanyardBrokerCreds | Flow::OpenbaoDbCreds => {
                // `backend/role` keeps its slash; each part is encoded.
                let role = args
                    .role
                    .split('/')
                    .map(form_encode)
                    .collect::<Vec<_>>()
                    .join("/");
                let url = if args.flow == Flow::LanyardBrokerCreds {
                    format!("{base}/broker/v1/creds/{role}")
                } else {
                    format!("{base}/v1/database/creds/{role}")
                };
                let bodies = tokens.iter().map(|t| (*t).to_owned()).collect();
                (bodies, url, format!("{base}/"))
            }
        };
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(args.concurrency)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            client,
            flow: args.flow,
            bodies,
            first_url: first.parse().with_context(|| format!("bad URL {first}"))?,
            second_url: second
                .parse()
                .with_context(|| format!("bad URL {second}"))?,
            first_token: args.first_token % tokens.len(),
            no_reuse: args.no_reuse,
            next_token: AtomicUsize::new(0),
            pool_exhausted: AtomicBool::new(false),
            error_printed: AtomicBool::new(false),
        })
    }

    /// The prepared request body of the next token, or `None` when
    /// `no_reuse` is set and the pool is used up.
    fn next_body(&self) -> Option<String> {
        let taken = self.next_token.fetch_add(1, Ordering::Relaxed);
        let i = self.first_token.saturating_add(taken);
        let i = if self.no_reuse {
            if i >= self.bodies.len() {
                self.pool_exhausted.store(true, Ordering::Relaxed);
                return None;
            }
            i
        } else {
            i % self.bodies.len()
        };
        self.bodies.get(i).cloned()
    }

    /// (tokens sent, distinct token values among them) so far.
    fn tokens_sent(&self) -> (usize, usize) {
        let n = self.bodies.len();
        let taken = self.next_token.load(Ordering::Relaxed);
        let sent = if self.no_reuse {
            taken.min(n - self.first_token)
        } else {
            taken
        };
        // Bodies are one per token line, so distinct bodies are distinct tokens.
        let distinct: std::collections::HashSet<&str> = (0..sent.min(n))
            .filter_map(|k| self.bodies.get((self.first_token + k) % n))
            .map(String::as_str)
            .collect();
        (sent, distinct.len())
    }

    /// Runs one flow with `body`, the prepared request of one token.
    async fn flow(&self, body: String) -> anyhow::Result<()> {
        match self.flow {
            Flow::LanyardExchange => {
                let req = self
                    .client
                    .post(self.first_url.clone())
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(body);
                let answer = send(req).await?;
                string_at(&answer, "/access_token")?;
            }
            Flow::OpenbaoJwtOidc => {
                let req = self
                    .client
                    .post(self.first_url.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .body(body);
                let login = send(req).await?;
                let client_token = string_at(&login, "/auth/client_token")?;
                let req = self
                    .client
                    .get(self.second_url.clone())
                    .header("X-Vault-Token", client_token);
                let answer = send(req).await?;
                string_at(&answer, "/data/token")?;
            }
            Flow::LanyardBrokerCreds => {
                let req = self
                    .client
                    .post(self.first_url.clone())
                    .header("Authorization", format!("Bearer {body}"));
                let answer = send(req).await?;
                string_at(&answer, "/password")?;
            }
            Flow::OpenbaoDbCreds => {
                let req = self
                    .client
                    .get(self.first_url.clone())
                    .header("X-Vault-Token", body);
                let answer = send(req).await?;
                string_at(&answer, "/data/password")?;
            }
        }
        Ok(())
    }
}

/// Runs `concurrency` workers until `duration` has passed or `max_flows` flows have started.
async fn phase(
    target: &Arc<Target>,
    concurrency: usize,
    duration: Duration,
    max_flows: u64,
) -> anyhow::Result<Tally> {
    let deadline = Instant::now() + duration;
    let started = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let target = Arc::clone(target);
        let started = Arc::clone(&started);
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < deadline && started.fetch_add(1, Ordering::Relaxed) < max_flows {
                let t0 = Instant::now();
                let Some(body) = target.next_body() else {
                    break; // --no-reuse and the pool is used up
                };
                match target.flow(body).await {
                    Ok(()) => tally
                        .latencies_us
                        .push(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX)),
                    Err(err) => {
                        tally.errors += 1;
                        if !target.error_printed.swap(true, Ordering::Relaxed) {
                            eprintln!("loadgen: first error: {err:#}");
                        }
                    }
                }
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for worker in workers {
        let tally = worker.await.context("a worker panicked")?;
        total.latencies_us.extend(tally.latencies_us);
        total.errors += tally.errors;
    }
    Ok(total)
}

/// Sends a request and returns its JSON answer; a non-2xx status is an error carrying the body.
async fn send(req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let resp = req.send().await.context("sending the request")?;
    let status = resp.status();
    let url = resp.url().path().to_owned();
    let bytes = resp
        .bytes()
        .await
        .with_context(|| format!("reading the answer of {url}"))?;
    if !status.is_success() {
        let body = String::from_utf8_lossy(bytes.get(..2048).unwrap_or(&bytes));
        bail!("{url}: HTTP {status}: {body}");
    }
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{url}: HTTP {status}: answer is not JSON"))
}

/// The non-empty string at a JSON pointer, or an error naming the pointer.
fn string_at<'a>(value: &'a Value, pointer: &str) -> anyhow::Result<&'a str> {
    match value.pointer(pointer).and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => {
            let shown: String = value.to_string().chars().take(2048).collect();
            bail!("answer has no string at {pointer}: {shown}")
        }
    }
}

/// Checks that `base` is plain HTTP to a loopback host and returns it without a trailing slash.
fn loopback_base(base: &str) -> anyhow::Result<String> {
    let url = reqwest::Url::parse(base).with_context(|| format!("--base {base:?} is not a URL"))?;
    if url.scheme() != "http" {
        bail!(
            "--base must be http:// (loopback only), not {}",
            url.scheme()
        );
    }
    let host = url.host_str().unwrap_or_default();
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>();
    let loopback = host.eq_ignore_ascii_case("localhost") || ip.is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!("--base host {host:?} is not loopback: loadgen only targets 127.0.0.1, ::1 or localhost");
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        bail!("--base must be scheme://host:port[/path] only");
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// `application/x-www-form-urlencoded` percent-encoding of one value.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Nearest-rank percentile of sorted microsecond latencies, in milliseconds.
fn percentile_ms(sorted_us: &[u64], p: f64) -> Option<f64> {
    let n = sorted_us.len();
    if n == 0 {
        return None;
    }
    let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
    sorted_us
        .get(rank - 1)
        .map(|us| round3(*us as f64 / 1000.0))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_loopback_hosts() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:1/",
            "http://[::1]:80",
            "http://127.0.0.2:9",
        ] {
            assert!(loopback_base(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1:80",
            "https://127.0.0.1:1",
            "http://example.org",
            "http://127.0.0.1.nip.io",
            "http://u@127.0.0.1:1",
        ] {
            assert!(loopback_base(bad).is_err(), "{bad}");
        }
        assert_eq!(
            loopback_base("http://127.0.0.1:8080/").ok().as_deref(),
            Some("http://127.0.0.1:8080")
        );
    }

    #[test]
    fn flow_names_match_the_command_line() {
        for flow in [
            Flow::LanyardExchange,
            Flow::OpenbaoJwtOidc,
            Flow::LanyardBrokerCreds,
            Flow::OpenbaoDbCreds,
        ] {
            let value = flow.to_possible_value();
            assert_eq!(value.as_ref().map(|v| v.get_name()), Some(flow.name()));
        }
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&v, 0.5), Some(50.0));
        assert_eq!(percentile_ms(&v, 0.99), Some(99.0));
        assert_eq!(percentile_ms(&v, 1.0), Some(100.0));
        assert_eq!(percentile_ms(&[], 0.5), None);
    }

    fn pool(bodies: &[&str], first_token: usize, no_reuse: bool) -> Target {
        Target {
            client: reqwest::Client::new(),
            flow: Flow::LanyardExchange,
            bodies: bodies.iter().map(|b| (*b).to_owned()).collect(),
            first_url: "http://127.0.0.1:1/".parse().unwrap(),
            second_url: "http://127.0.0.1:1/".parse().unwrap(),
            first_token,
            no_reuse,
            next_token: AtomicUsize::new(0),
            pool_exhausted: AtomicBool::new(false),
            error_printed: AtomicBool::new(false),
        }
    }

    #[test]
    fn round_robin_wraps_and_reports_reuse() {
        let t = pool(&["a", "b", "c"], 1, false);
        let sent: Vec<_> = (0..4).filter_map(|_| t.next_body()).collect();
        assert_eq!(sent, ["b", "c", "a", "b"]);
        assert_eq!(t.tokens_sent(), (4, 3));
        assert!(!t.pool_exhausted.load(Ordering::Relaxed));
        let t = pool(&["a", "b", "c"], 0, false);
        t.next_body();
        t.next_body();
        assert_eq!(t.tokens_sent(), (2, 2));
    }

    #[test]
    fn no_reuse_stops_at_the_end_of_the_pool() {
        let t = pool(&["a", "b", "c", "d"], 1, true);
        let sent: Vec<_> = (0..6).map(|_| t.next_body()).collect();
        assert_eq!(
            sent,
            [
                Some("b".into()),
                Some("c".into()),
                Some("d".into()),
                None,
                None,
                None
            ]
        );
        assert_eq!(t.tokens_sent(), (3, 3));
        assert!(t.pool_exhausted.load(Ordering::Relaxed));
        // The same value on two lines counts as reuse.
        let t = pool(&["a", "a"], 0, true);
        t.next_body();
        t.next_body();
        assert_eq!(t.tokens_sent(), (2, 1));
    }

    #[test]
    fn form_encoding_escapes_reserved_bytes() {
        assert_eq!(form_encode("urn:a b/c=d&e"), "urn%3Aa%20b%2Fc%3Dd%26e");
        assert_eq!(form_encode("eyJ.a-b_c~"), "eyJ.a-b_c~");
    }
}
