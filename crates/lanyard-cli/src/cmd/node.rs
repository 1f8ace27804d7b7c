//! `lanyard node list` and `lanyard explain --pid`.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::Context as _;
use reqwest::Method;
use serde_json::{json, Value};

use crate::cli::{ExplainArgs, Global, NodeCommand};
use crate::client::AdminClient;
use crate::output::{self, s};

pub async fn run(g: &Global, cmd: NodeCommand) -> anyhow::Result<ExitCode> {
    let client = AdminClient::from_global(g)?;
    match cmd {
        NodeCommand::List => {
            let v = client.call(Method::GET, "nodes", None).await?;
            output::print(g.output, &v, |v| {
                println!(
                    "{:<28} {:<12} {:<22} LAST SEEN",
                    "NODE", "ATTESTED BY", "SVID EXPIRES"
                );
                for n in v["nodes"].as_array().cloned().unwrap_or_default() {
                    println!(
                        "{:<28} {:<12} {:<22} {}",
                        s(&n, "id"),
                        s(&n, "attestation"),
                        output::time(&n["svid_expires_at"]),
                        output::time(&n["last_seen"])
                    );
                }
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The effective uid and gid of `pid` from /proc.
fn proc_ids(pid: i32) -> anyhow::Result<(u32, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is not running (or /proc is not readable)"))?;
    let field = |name: &str| -> Option<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Ok((
        field("Uid:").context("no Uid in /proc status")?,
        field("Gid:").context("no Gid in /proc status")?,
    ))
}

pub async fn explain_pid(g: &Global, a: ExplainArgs) -> anyhow::Result<ExitCode> {
    let pid = a.pid.context("--pid is required")?;
    let (uid, gid) = proc_ids(pid)?;
    let attestor = lanyard_agent::attest::WorkloadAttestor::new(
        lanyard_agent::attest::AttestConfig::default(),
    );
    let attested = attestor
        .attest_full(lanyard_agent::attest::PeerCred {
            pid: Some(pid),
            uid,
            gid,
        })
        .await
        .map_err(|e| anyhow::anyhow!("attesting process {pid}: {} ({})", e.reason, e.code))?;
    let have: BTreeSet<String> = attested.selectors.iter().map(ToString::to_string).collect();
    let diagnostics: Vec<String> = attested
        .diagnostics
        .iter()
        .map(|d| format!("{}: {}", d.plugin, d.message))
        .collect();
    let node = match a.node {
        Some(n) if n.starts_with("spiffe://") => n,
        Some(n) => anyhow::bail!("--node takes the node's SPIFFE ID (spiffe://TD/lanyard/node/{n}), see `lanyard node list`"),
        None => {
            let dir = g.data_dir.clone().unwrap_or_else(|| std::path::PathBuf::from(crate::client::DEFAULT_DATA_DIR));
            crate::client::read_dev_json(&dir)?
                .get("node_spiffe_id")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .context("give --node spiffe://TD/lanyard/node/ID (dev.json names no node)")?
        }
    };
    let client = AdminClient::from_global(g)?;
    let entries = client.call(Method::GET, "entries", None).await?;
    let mut matched = Vec::new();
    let mut near = Vec::new();
    for e in entries["entries"].as_array().cloned().unwrap_or_default() {
        if e["parent"].as_str() != Some(node.as_str()) {
            continue;
        }
        let wanted: Vec<String> = e["selectors"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        let missing: Vec<&String> = wanted.iter().filter(|w| !have.contains(*w)).collect();
        if missing.is_empty() {
            matched.push(
                json!({ "entry": e["id"], "spiffe_id": e["spiffe_id"], "selectors": wanted }),
            );
        } else if missing.len() < wanted.len() {
            near.push(json!({ "entry": e["id"], "spiffe_id": e["spiffe_id"], "missing": missing }));
        }
    }
    let v = json!({ "pid": pid, "node": node, "selectors": have, "diagnostics": diagnostics, "matched": matched, "near_misses": near });
    output::print(g.output, &v, |v| {
        println!("process {pid} on node {node}");
        println!("selectors:");
        for sel in v["selectors"].as_array().cloned().unwrap_or_default() {
            println!("  {}", sel.as_str().unwrap_or_default());
        }
        for d in &diagnostics {
            println!("  note: {d}");
        }
        if matched.is_empty() {
            println!("no entry matches: the Workload API answers PermissionDenied");
        } else {
            println!("identities issued:");
            for m in &matched {
                println!("  {} (entry {})", s(m, "spiffe_id"), s(m, "entry"));
            }
        }
        if !near.is_empty() {
            println!("nearly matching entries:");
            for n in &near {
                println!(
                    "  {} (entry {}) lacks {}",
                    s(n, "spiffe_id"),
                    s(n, "entry"),
                    n["missing"]
                );
            }
        }
    });
    Ok(if matched.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
