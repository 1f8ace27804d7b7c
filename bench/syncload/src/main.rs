//! `syncload`: a fleet of simulated node agents for the scale benchmark
//! (issue 13, `bench/scale/run.sh`). See docs/BENCHMARKS.md, "Scale".
//!
//! It attests `--agents` nodes (`{prefix}-0` …) with join tokens, gives each
//! its own mTLS connection to the node API, syncs each once in full, then
//! syncs every agent every `--interval` seconds with its `(epoch, cursor)`,
//! as `lanyard agent` does, applying deltas and paged resyncs. Two measured
//! phases follow:
//!
//! 1. quiet (`--quiet` s): nothing changes; counts unchanged syncs and the
//!    server's CPU time, RSS and socket bytes (`/proc/PID/io`) per sync;
//! 2. probes (`--duration` s): every `--probe-every` s an entry is created
//!    through the admin API for one agent's node; the time from the request
//!    until that agent's sync returns it is the propagation latency.
//!
//! It prints one JSON line. Loopback only; every loop is bounded in time.

#![forbid(unsafe_code)]
// A benchmark driver: indexing its own fixtures is fine.
#![allow(clippy::indexing_slicing)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;
use clap::Parser;
use lanyard_agent::{Bootstrap, NodeClient};
use lanyard_proto::node::{SyncRequest, SyncResponse};
use prost::Message as _;
use serde::Serialize;
use serde_json::{json, Value};

const TRUST_DOMAIN: &str = "example.org";
const MAX_AGENTS: usize = 5000;
const MAX_SECONDS: f64 = 900.0;
const MAX_PAGES: usize = 1000;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Simulated node-agent fleet for Lanyard's scale benchmark (loopback only)"
)]
struct Args {
    /// Server base URL (admin API), e.g. http://127.0.0.1:8080.
    #[arg(long)]
    admin: String,
    /// File with the admin token.
    #[arg(long)]
    admin_token_file: PathBuf,
    /// Node API address, 127.0.0.1:PORT.
    #[arg(long)]
    node_api: String,
    /// Where each simulated agent keeps its node SVID.
    #[arg(long)]
    state_dir: PathBuf,
    /// Simulated agents (nodes `{prefix}-0` …).
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Node id prefix (the entries file names the same nodes).
    #[arg(long, default_value = "scale")]
    prefix: String,
    /// Tenant of the probe entries.
    #[arg(long, default_value = "bench")]
    tenant: String,
    /// Seconds between one agent's syncs.
    #[arg(long, default_value_t = 5.0)]
    interval: f64,
    /// Seconds of the quiet phase.
    #[arg(long, default_value_t = 20.0)]
    quiet: f64,
    /// Seconds of the probe phase.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Seconds between probe entries.
    #[arg(long, default_value_t = 1.0)]
    probe_every: f64,
    /// The server's PID, for CPU, RSS and socket bytes.
    #[arg(long)]
    server_pid: Option<u32>,
}

/// One simulated agent.
#[derive(Debug)]
struct Agent {
    node: NodeClient,
    epoch: String,
    cursor: i64,
    bundle: i64,
    entries: HashSet<String>,
}

#[derive(Debug, Default)]
struct Counters {
    unchanged: AtomicU64,
    delta: AtomicU64,
    full: AtomicU64,
    errors: AtomicU64,
    went_back: AtomicU64,
    unchanged_message_bytes: AtomicU64,
}

#[derive(Debug, Default)]
struct Shared {
    counters: Counters,
    /// Probe SPIFFE ID -> when its creation was requested.
    probes: Mutex<HashMap<String, Instant>>,
    latencies_us: Mutex<Vec<u64>>,
    stop: AtomicBool,
}

#[derive(Debug, Clone, Copy, Default)]
struct ProcSample {
    at: Option<Instant>,
    cpu_ticks: u64,
    rss_kib: u64,
    rchar: u64,
    wchar: u64,
}

fn sample(pid: Option<u32>) -> ProcSample {
    let Some(pid) = pid else {
        return ProcSample::default();
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let field = |text: &str, key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    ProcSample {
        at: Some(Instant::now()),
        cpu_ticks: tick(11) + tick(12),
        rss_kib: field(&status, "VmRSS:"),
        rchar: field(&io, "rchar:"),
        wchar: field(&io, "wchar:"),
    }
}

/// Clock ticks per second of `/proc/PID/stat` (USER_HZ; 100 on Linux).
const HZ: f64 = 100.0;

fn cpu_percent(a: &ProcSample, b: &ProcSample) -> Option<f64> {
    let secs = b.at?.duration_since(a.at?).as_secs_f64();
    (secs > 0.0).then(|| round1(100.0 * b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / HZ / secs))
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[derive(Debug, Serialize)]
struct Report {
    agents: usize,
    entries_synced: usize,
    attest_seconds: f64,
    initial_sync_seconds: f64,
    interval_seconds: f64,
    quiet: Phase,
    probes: Phase,
    probes_sent: usize,
    probe_errors: usize,
    probes_seen: usize,
    propagation_p50_ms: Option<f64>,
    propagation_p99_ms: Option<f64>,
    propagation_max_ms: Option<f64>,
    syncs_went_back: u64,
}

#[derive(Debug, Serialize, Default)]
struct Phase {
    seconds: f64,
    unchanged_syncs: u64,
    delta_syncs: u64,
    full_syncs: u64,
    errors: u64,
    server_cpu_pct: Option<f64>,
    server_rss_mib_end: Option<f64>,
    server_bytes_out_per_sync: Option<u64>,
    server_bytes_in_per_sync: Option<u64>,
    unchanged_message_bytes: Option<u64>,
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
            eprintln!("syncload: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn loopback(host_port: &str) -> anyhow::Result<()> {
    let host = host_port
        .trim_start_matches("http://")
        .rsplit_once(':')
        .map(|(h, _)| h)
        .context("expected host:port")?;
    if host != "127.0.0.1" && host != "localhost" {
        bail!("{host_port} is not a loopback address");
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
            let b = body.take().context("END without BEGIN")?;
            out.push(b64.decode(b).context("certificate is not base64")?);
        } else if let Some(b) = body.as_mut() {
            b.push_str(line);
        }
    }
    Ok(out)
}

/// A small deterministic generator (no dependency for a benchmark).
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

async fn run(args: Args) -> anyhow::Result<()> {
    loopback(&args.admin)?;
    loopback(&args.node_api)?;
    if args.agents == 0 || args.agents > MAX_AGENTS {
        bail!("--agents must be 1..={MAX_AGENTS}");
    }
    for (name, v) in [
        ("--interval", args.interval),
        ("--quiet", args.quiet),
        ("--duration", args.duration),
        ("--probe-every", args.probe_every),
    ] {
        if !(0.05..=MAX_SECONDS).contains(&v) {
            bail!("{name} must be 0.05..={MAX_SECONDS} seconds");
        }
    }
    let token = std::fs::read_to_string(&args.admin_token_file)
        .with_context(|| format!("reading {}", args.admin_token_file.display()))?
        .trim()
        .to_owned();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let admin = args.admin.trim_end_matches('/').to_owned();
    let post = |path: &str, body: Value| {
        let req = http
            .post(format!("{admin}/admin/v1/{path}"))
            .bearer_auth(&token)
            .json(&body);
        async move {
            let resp = req.send().await?;
            let status = resp.status();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                bail!("POST {status}: {v}");
            }
            Ok::<Value, anyhow::Error>(v)
        }
    };

    // 1. Attest every node.
    let started = Instant::now();
    eprintln!("[syncload] attesting {} nodes", args.agents);
    let mut agents: Vec<Agent> = Vec::with_capacity(args.agents);
    for chunk in (0..args.agents).collect::<Vec<_>>().chunks(32) {
        let mut tasks = Vec::new();
        for &i in chunk {
            let created = post(
                "jointokens",
                json!({ "node_id": format!("{}-{i}", args.prefix), "ttl_seconds": 3600 }),
            )
            .await?;
            let join = created["token"].as_str().context("no token")?.to_owned();
            let roots = pem_certs(created["trust_bundle_pem"].as_str().unwrap_or(""))?;
            let dir = args.state_dir.join(i.to_string());
            std::fs::create_dir_all(&dir)?;
            let node =
                NodeClient::new(&args.node_api, Some("localhost"), TRUST_DOMAIN, roots, &dir)
                    .map_err(|e| anyhow!("node client: {e}"))?;
            tasks.push(tokio::spawn(async move {
                let now = lanyard_agent::node_client::unix_now(std::time::SystemTime::now());
                node.ensure_identity(&Bootstrap::JoinToken(join), now)
                    .await
                    .map_err(|e| anyhow!("attesting: {e}"))?;
                Ok::<_, anyhow::Error>(node)
            }));
        }
        for t in tasks {
            let node = t.await??;
            agents.push(Agent {
                node,
                epoch: String::new(),
                cursor: 0,
                bundle: -1,
                entries: HashSet::new(),
            });
        }
    }
    let attest_seconds = started.elapsed().as_secs_f64();

    // 2. One full sync each, then every agent syncs on its own schedule.
    let started = Instant::now();
    eprintln!("[syncload] first sync of every agent");
    let shared = Arc::new(Shared::default());
    let mut entries_synced = 0;
    let mut ready = Vec::with_capacity(agents.len());
    let mut batch = Vec::new();
    for agent in agents {
        let shared = shared.clone();
        batch.push(tokio::spawn(async move {
            let mut agent = agent;
            sync_once(&mut agent, &shared).await.map(|()| agent)
        }));
        if batch.len() == 32 {
            for t in batch.drain(..) {
                ready.push(t.await??);
            }
        }
    }
    for t in batch.drain(..) {
        ready.push(t.await??);
    }
    for a in &ready {
        entries_synced += a.entries.len();
    }
    let initial_sync_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "[syncload] {} agents hold {entries_synced} entries; syncing every {} s",
        ready.len(),
        args.interval
    );
    reset(&shared.counters);
    let interval = Duration::from_secs_f64(args.interval);
    let total = args.agents as u64;
    let mut tasks = Vec::with_capacity(ready.len());
    for (i, mut agent) in ready.into_iter().enumerate() {
        let shared = shared.clone();
        // Spread the agents over the interval, as real ones drift apart.
        let offset = interval.mul_f64((mix(i as u64) % 10_000) as f64 / 10_000.0);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !shared.stop.load(Ordering::Relaxed) {
                tick.tick().await;
                if shared.stop.load(Ordering::Relaxed) {
                    break;
                }
                if sync_once(&mut agent, &shared).await.is_err() {
                    shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    // 3. Quiet phase: one interval to settle, then measure.
    tokio::time::sleep(interval).await;
    reset(&shared.counters);
    let a = sample(args.server_pid);
    tokio::time::sleep(Duration::from_secs_f64(args.quiet)).await;
    let b = sample(args.server_pid);
    let quiet = phase(&shared.counters, &a, &b, args.quiet);
    eprintln!("[syncload] quiet: {}", serde_json::to_string(&quiet)?);

    // 4. Probe phase.
    reset(&shared.counters);
    let a = sample(args.server_pid);
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let mut probes_sent = 0usize;
    let mut probe_errors = 0usize;
    let mut every = tokio::time::interval(Duration::from_secs_f64(args.probe_every));
    while Instant::now() < deadline {
        every.tick().await;
        let k = probes_sent;
        let node = mix(k as u64 + 17) % total;
        let spiffe_id = format!("spiffe://{TRUST_DOMAIN}/probe/{k}");
        if let Ok(mut p) = shared.probes.lock() {
            p.insert(spiffe_id.clone(), Instant::now());
        }
        let created = post(
            "entries",
            json!({
                "spiffe_id": spiffe_id,
                "tenant": args.tenant,
                "parent": format!("spiffe://{TRUST_DOMAIN}/lanyard/node/{}-{node}", args.prefix),
                "selectors": [format!("unix:uid:{}", 900_000 + k)],
            }),
        )
        .await;
        probes_sent += 1;
        if let Err(e) = created {
            // A replica down (fault tests): the probe never existed.
            probe_errors += 1;
            eprintln!("[syncload] probe {k} not created: {e:#}");
            if let Ok(mut p) = shared.probes.lock() {
                p.remove(&spiffe_id);
            }
        }
    }
    // The last probes need up to one interval to arrive.
    let grace = Instant::now() + interval + Duration::from_secs(2);
    while Instant::now() < grace && shared.probes.lock().map(|p| !p.is_empty()).unwrap_or(false) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = sample(args.server_pid);
    let seconds =
        b.at.zip(a.at)
            .map_or(args.duration, |(b, a)| b.duration_since(a).as_secs_f64());
    let probes = phase(&shared.counters, &a, &b, seconds);
    shared.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }

    let mut lat = shared
        .latencies_us
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    lat.sort_unstable();
    let report = Report {
        agents: args.agents,
        entries_synced,
        attest_seconds: round1(attest_seconds),
        initial_sync_seconds: round1(initial_sync_seconds),
        interval_seconds: args.interval,
        quiet,
        probes,
        probes_sent,
        probe_errors,
        probes_seen: lat.len(),
        propagation_p50_ms: percentile_ms(&lat, 0.50),
        propagation_p99_ms: percentile_ms(&lat, 0.99),
        propagation_max_ms: percentile_ms(&lat, 1.0),
        syncs_went_back: shared.counters.went_back.load(Ordering::Relaxed),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn reset(c: &Counters) {
    for a in [
        &c.unchanged,
        &c.delta,
        &c.full,
        &c.errors,
        &c.unchanged_message_bytes,
    ] {
        a.store(0, Ordering::Relaxed);
    }
}

fn phase(c: &Counters, a: &ProcSample, b: &ProcSample, seconds: f64) -> Phase {
    let unchanged = c.unchanged.load(Ordering::Relaxed);
    let syncs = unchanged + c.delta.load(Ordering::Relaxed) + c.full.load(Ordering::Relaxed);
    let per_sync =
        |x: u64, y: u64| (a.at.is_some() && syncs > 0).then(|| y.saturating_sub(x) / syncs);
    Phase {
        seconds: round1(seconds),
        unchanged_syncs: unchanged,
        delta_syncs: c.delta.load(Ordering::Relaxed),
        full_syncs: c.full.load(Ordering::Relaxed),
        errors: c.errors.load(Ordering::Relaxed),
        server_cpu_pct: cpu_percent(a, b),
        server_rss_mib_end: b.at.map(|_| round1(b.rss_kib as f64 / 1024.0)),
        server_bytes_out_per_sync: per_sync(a.wchar, b.wchar),
        server_bytes_in_per_sync: per_sync(a.rchar, b.rchar),
        unchanged_message_bytes: (unchanged > 0)
            .then(|| c.unchanged_message_bytes.load(Ordering::Relaxed) / unchanged),
    }
}

/// One sync as `lanyard agent` does it: with the cursor, every page of a
/// full resync, deltas applied; probe entries timed when they arrive.
async fn sync_once(agent: &mut Agent, shared: &Shared) -> anyhow::Result<()> {
    let mut req = SyncRequest {
        epoch: agent.epoch.clone(),
        cursor: agent.cursor,
        known_bundle: agent.bundle,
        ..SyncRequest::default()
    };
    let mut full: Option<HashSet<String>> = None;
    for _ in 0..MAX_PAGES {
        let mut grpc = agent.node.grpc().map_err(|e| anyhow!("{e}"))?;
        let resp: SyncResponse = grpc.sync(req.clone()).await?.into_inner();
        let c = &shared.counters;
        if resp.unchanged {
            c.unchanged.fetch_add(1, Ordering::Relaxed);
            c.unchanged_message_bytes
                .fetch_add(resp.encoded_len() as u64, Ordering::Relaxed);
            return Ok(());
        }
        if resp.epoch == agent.epoch && resp.revision < agent.cursor {
            c.went_back.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        seen(shared, &resp);
        if resp.bundle_included {
            agent.bundle = resp.bundle_revision;
        }
        if resp.delta {
            c.delta.fetch_add(1, Ordering::Relaxed);
            for id in &resp.deleted_entry_ids {
                agent.entries.remove(id);
            }
            agent
                .entries
                .extend(resp.entries.iter().map(|e| e.id.clone()));
            agent.epoch = resp.epoch;
            agent.cursor = resp.revision;
            return Ok(());
        }
        let set = full.get_or_insert_with(HashSet::new);
        set.extend(resp.entries.iter().map(|e| e.id.clone()));
        if resp.next_page_token.is_empty() {
            c.full.fetch_add(1, Ordering::Relaxed);
            agent.entries = full.take().unwrap_or_default();
            agent.epoch = resp.epoch;
            agent.cursor = resp.revision;
            return Ok(());
        }
        req.page_token = resp.next_page_token;
    }
    bail!("a full resync did not end within {MAX_PAGES} pages")
}

fn seen(shared: &Shared, resp: &SyncResponse) {
    let Ok(mut probes) = shared.probes.lock() else {
        return;
    };
    if probes.is_empty() {
        return;
    }
    for e in &resp.entries {
        if let Some(at) = probes.remove(&e.spiffe_id) {
            if let Ok(mut l) = shared.latencies_us.lock() {
                l.push(u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX));
            }
        }
    }
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
fn percentile_ms(sorted_us: &[u64], p: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let rank = ((p * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    Some(round1(sorted_us[rank - 1] as f64 / 1000.0))
}
