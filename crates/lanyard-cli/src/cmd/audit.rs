//! `lanyard audit …`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use reqwest::Method;
use serde_json::Value;

use crate::cli::{AuditCommand, Global, Output};
use crate::client::AdminClient;
use crate::output::{self, s};

/// Parses an RFC 3339 time, or a duration meaning "that long ago" (for
/// --since) / "that long from now" (for --until, positive durations).
/// Returns Unix milliseconds.
pub fn parse_time(text: &str) -> anyhow::Result<i64> {
    if let Ok(t) = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
    {
        return Ok(i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX));
    }
    let d = lanyard_core::ttl::parse_duration(text)
        .map_err(|e| anyhow!("{text:?} is neither an RFC 3339 time nor a duration: {e}"))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    Ok(now + i64::try_from(d.as_millis()).unwrap_or(0))
}

fn since_ms(text: &str) -> anyhow::Result<i64> {
    if time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok() {
        return parse_time(text);
    }
    let d = lanyard_core::ttl::parse_duration(text).map_err(|e| anyhow!("--since: {e}"))?;
    Ok(time::OffsetDateTime::now_utc().unix_timestamp() * 1000
        - i64::try_from(d.as_millis()).unwrap_or(0))
}

fn line(e: &Value) -> String {
    let at = e["at_ms"]
        .as_i64()
        .map(|ms| output::time(&Value::from(ms / 1000)))
        .unwrap_or_default();
    format!(
        "{:>6} {} {:<5} {:<16} {:<26} {} [{}] {}",
        e["seq"].as_i64().unwrap_or(0),
        at,
        s(e, "decision"),
        s(e, "action"),
        s(e, "actor"),
        s(e, "subject"),
        e["tenant"].as_str().unwrap_or("-"),
        s(e, "reason").lines().next().unwrap_or("")
    )
}

fn print_events(output: Output, events: &[Value]) {
    for e in events {
        match output {
            Output::Json => println!("{e}"),
            Output::Text => println!("{}", line(e)),
        }
    }
}

pub async fn run(g: &Global, cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    let client = AdminClient::from_global(g)?;
    let page = |after: i64, extra: &str| format!("audit?after={after}&limit=1000{extra}");
    match cmd {
        AuditCommand::Tail { lines, follow } => {
            // Find the head, then show the last `lines` events.
            let mut after = 0;
            let mut all: Vec<Value> = Vec::new();
            loop {
                let v = client.call(Method::GET, &page(after, ""), None).await?;
                let events = v["events"].as_array().cloned().unwrap_or_default();
                let Some(last) = events.last() else { break };
                after = last["seq"].as_i64().unwrap_or(after);
                all.extend(events);
                let keep = usize::try_from(lines.max(0)).unwrap_or(0);
                if all.len() > keep {
                    all.drain(..all.len() - keep);
                }
            }
            print_events(g.output, &all);
            // Like `tail -f`: until interrupted.
            if follow {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let v = client.call(Method::GET, &page(after, ""), None).await?;
                    let events = v["events"].as_array().cloned().unwrap_or_default();
                    if let Some(last) = events.last() {
                        after = last["seq"].as_i64().unwrap_or(after);
                    }
                    print_events(g.output, &events);
                }
            }
        }
        AuditCommand::Export { since } => {
            let extra = since
                .as_deref()
                .map(since_ms)
                .transpose()?
                .map(|ms| format!("&since_ms={ms}"))
                .unwrap_or_default();
            let mut after = 0;
            loop {
                let v = client.call(Method::GET, &page(after, &extra), None).await?;
                let events = v["events"].as_array().cloned().unwrap_or_default();
                let Some(last) = events.last() else { break };
                after = last["seq"].as_i64().unwrap_or(after);
                for e in &events {
                    println!("{e}");
                }
            }
        }
        AuditCommand::Verify {
            checkpoint,
            audit_keys,
        } => {
            let mut path = "audit/verify".to_owned();
            let mut signed = None;
            if let Some(file) = &checkpoint {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("reading the checkpoint {}", file.display()))?;
                // One checkpoint (`audit checkpoint --output json`, pretty
                // or not), or the server's file of JSON lines: the last one.
                let line = if serde_json::from_str::<Value>(&text).is_ok() {
                    text.as_str()
                } else {
                    text.lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .ok_or_else(|| anyhow!("{} holds no checkpoint", file.display()))?
                };
                let keys = match &audit_keys {
                    Some(f) => std::fs::read(f)
                        .with_context(|| format!("reading the audit keys {}", f.display()))?,
                    None => client
                        .get_public(lanyard_server::http::oidc::AUDIT_KEYS_PATH)
                        .await
                        .context("fetching the published audit keys")?,
                };
                let c = lanyard_server::checkpoint::verify(line, &keys)
                    .with_context(|| format!("checkpoint {}", file.display()))?;
                // The signature, by a key this server publishes, is what ties
                // the checkpoint to its log; the origin (the issuer URL when it
                // was signed) may differ, e.g. `lanyard dev` on a new port.
                if c.origin != client.base() {
                    eprintln!(
                        "note: the checkpoint was signed when the server's issuer was {}",
                        lanyard_core::text::escape_control(&c.origin)
                    );
                }
                path = format!("audit/verify?at_seq={}&at_hash={}", c.seq, c.hash);
                signed = Some(c);
            }
            let mut v = client
                .call(Method::GET, &path, None)
                .await
                .context("verifying the audit chain")?;
            let ok = v["ok"].as_bool().unwrap_or(false);
            if let Some(c) = &signed {
                v["checkpoint"] =
                    serde_json::json!({"seq": c.seq, "hash": c.hash, "at_ms": c.at_ms});
            }
            output::print(g.output, &v, |v| {
                if ok {
                    println!(
                        "audit chain intact: {} events verified, ending at the stored head (sequence {})",
                        v["verified"], v["head_seq"]
                    );
                    if let Some(c) = &signed {
                        println!(
                            "the log still holds the signed checkpoint of sequence {} ({})",
                            c.seq,
                            output::time(&serde_json::Value::from(c.at_ms / 1000))
                        );
                    }
                } else {
                    println!(
                        "audit chain BROKEN at sequence {}: {}",
                        v["first_broken_seq"],
                        s(v, "problem")
                    );
                }
            });
            if !ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        AuditCommand::Checkpoint { now } => {
            let v = if now {
                client.call(Method::POST, "audit/checkpoints", None).await?
            } else {
                let list = client
                    .call(Method::GET, "audit/checkpoints?limit=1", None)
                    .await?;
                match list["checkpoints"].as_array().and_then(|a| a.first()) {
                    Some(c) => c.clone(),
                    None => client.call(Method::POST, "audit/checkpoints", None).await?,
                }
            };
            output::print(g.output, &v, |v| {
                println!(
                    "checkpoint: sequence {} hash {} at {} (audit key {})",
                    v["seq"],
                    s(v, "hash"),
                    output::time(&serde_json::Value::from(
                        v["at_ms"].as_i64().unwrap_or(0) / 1000
                    )),
                    s(v, "kid")
                );
                println!("keep this line somewhere the database's writers cannot change it:");
                println!("{v}");
            });
        }
        AuditCommand::Show { correlation_id } => {
            if !correlation_id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(anyhow!("{correlation_id:?} is not a correlation id (hex, from the x-correlation-id header)"));
            }
            let v = client
                .call(
                    Method::GET,
                    &format!("audit?correlation_id={correlation_id}&limit=1000"),
                    None,
                )
                .await?;
            let events = v["events"].as_array().cloned().unwrap_or_default();
            if events.is_empty() {
                return Err(anyhow!(
                    "no audit events with correlation id {correlation_id}"
                ));
            }
            output::print(g.output, &v, |_| {
                for e in &events {
                    println!("{}", line(e));
                    // A denied exchange records the steps that led to it.
                    for step in s(e, "reason").lines().skip(1) {
                        println!("       {step}");
                    }
                    if let Some(d) = e["evidence_digest"].as_str() {
                        println!("       evidence sha256 {d}");
                    }
                }
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}
