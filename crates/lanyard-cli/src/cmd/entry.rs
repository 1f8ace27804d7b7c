//! `lanyard entry …`.

use std::process::ExitCode;

use reqwest::Method;
use serde_json::{json, Value};

use crate::cli::{EntryArgs, EntryCommand, Global};
use crate::client::AdminClient;
use crate::output::{self, s};

pub async fn run(g: &Global, cmd: EntryCommand) -> anyhow::Result<ExitCode> {
    let client = AdminClient::from_global(g)?;
    match cmd {
        EntryCommand::Create(args) => {
            let v = client
                .call(Method::POST, "entries", Some(body(args)?))
                .await?;
            output::print(g.output, &v, |v| {
                println!("created entry {} for {}", s(v, "id"), s(v, "spiffe_id"))
            });
        }
        EntryCommand::Update { id, args } => {
            let v = client
                .call(Method::PUT, &format!("entries/{id}"), Some(body(args)?))
                .await?;
            output::print(g.output, &v, |v| println!("updated entry {}", s(v, "id")));
        }
        EntryCommand::List { tenant } => {
            let path =
                tenant.map_or_else(|| "entries".to_owned(), |t| format!("entries?tenant={t}"));
            let v = client.call(Method::GET, &path, None).await?;
            output::print(g.output, &v, |v| {
                println!(
                    "{:<34} {:<14} {:<48} SELECTORS",
                    "ID", "TENANT", "SPIFFE ID"
                );
                for e in v
                    .get("entries")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                {
                    let sels: Vec<&str> = e["selectors"]
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    println!(
                        "{:<34} {:<14} {:<48} {}",
                        s(&e, "id"),
                        s(&e, "tenant"),
                        s(&e, "spiffe_id"),
                        sels.join(" ")
                    );
                }
            });
        }
        EntryCommand::Show { id } => {
            let v = client
                .call(Method::GET, &format!("entries/{id}"), None)
                .await?;
            output::print(g.output, &v, |v| {
                println!("{}", serde_json::to_string_pretty(v).unwrap_or_default())
            });
        }
        EntryCommand::Apply {
            file,
            tenant,
            prune,
            dry_run,
        } => return apply(g, &client, &file, tenant, prune, dry_run).await,
        EntryCommand::Delete { id } => {
            client
                .call(Method::DELETE, &format!("entries/{id}"), None)
                .await?;
            output::print(g.output, &json!({"deleted": id}), |_| {
                println!("deleted entry {id}")
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn body(a: EntryArgs) -> anyhow::Result<Value> {
    let secs = |flag: &str, v: Option<String>| -> anyhow::Result<Option<u64>> {
        v.map(|t| {
            lanyard_core::ttl::parse_duration(&t)
                .map(|d| d.as_secs())
                .map_err(|e| anyhow::anyhow!("{flag}: {e}"))
        })
        .transpose()
    };
    for sel in &a.selectors {
        lanyard_core::Selector::parse(sel).map_err(|e| anyhow::anyhow!("--selector: {e}"))?;
    }
    Ok(json!({
        "spiffe_id": a.spiffe_id,
        "tenant": a.tenant,
        "issuer": a.issuer,
        "parent": a.parent,
        "dns_names": a.dns_names,
        "selectors": a.selectors,
        "audiences": a.audiences,
        "ttl_seconds": secs("--ttl", a.ttl)?,
        "max_ttl_seconds": secs("--max-ttl", a.max_ttl)?,
        "scopes": a.scopes,
        "may_act": a.may_act,
        "admin": a.admin,
        "token_reviewer": a.token_reviewer,
        "grants": a.grants,
        "federates_with": a.federates_with,
        "role": a.role,
    }))
}

/// Reads an apply file: a list of entries, or `{"entries": [...]}` (what
/// `entry list --output json` prints), as JSON or YAML.
fn read_apply_file(path: &std::path::Path) -> anyhow::Result<Vec<Value>> {
    use anyhow::Context as _;
    use std::io::Read as _;
    let (name, text) = if path.as_os_str() == "-" {
        let mut t = String::new();
        std::io::stdin()
            .take(256 * 1024 * 1024)
            .read_to_string(&mut t)
            .context("reading the entries from standard input")?;
        ("standard input".to_owned(), t)
    } else {
        let t =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        (path.display().to_string(), t)
    };
    // JSON is YAML too, but a JSON parser names JSON mistakes better.
    let doc: Value = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| format!("{name} is not valid JSON"))?
    } else {
        match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(_) => serde_saphyr::from_str(&text)
                .with_context(|| format!("{name} is not valid YAML (or JSON)"))?,
        }
    };
    match doc {
        Value::Array(entries) => Ok(entries),
        Value::Object(mut o) if o.contains_key("entries") => match o.remove("entries") {
            Some(Value::Array(entries)) => Ok(entries),
            _ => anyhow::bail!("{name}: \"entries\" must be a list"),
        },
        Value::Null => Ok(Vec::new()),
        _ => anyhow::bail!(
            "{name}: expected a list of entries (or {{\"entries\": [...]}}, as `lanyard entry list --output json` prints)"
        ),
    }
}

async fn apply(
    g: &Global,
    client: &AdminClient,
    file: &std::path::Path,
    tenant: Option<String>,
    prune: bool,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    use std::io::{IsTerminal as _, Write as _};
    let entries = read_apply_file(file)?;
    let body = json!({
        "entries": entries,
        "tenant": tenant,
        "prune": prune,
        "dry_run": dry_run,
    });
    let progress = std::io::stderr().is_terminal() && !dry_run;
    let mut steps = Vec::new();
    let mut done = Value::Null;
    let mut failed: Option<String> = None;
    client
        .call_stream("entries/apply", &body, |line| {
            if let Some(step) = line.get("step") {
                steps.push(step.clone());
            } else if let Some(p) = line.get("plan") {
                if progress {
                    eprintln!(
                        "plan: {} to create, {} to update, {} to delete, {} unchanged",
                        p["create"], p["update"], p["delete"], p["unchanged"]
                    );
                }
            } else if let (Some(n), Some(t)) = (line.get("applied"), line.get("total")) {
                if progress {
                    let (n, t) = (n.as_u64().unwrap_or(0), t.as_u64().unwrap_or(0));
                    eprint!(
                        "\rapplied {n}/{t} ({}%)",
                        (n * 100).checked_div(t).unwrap_or(100)
                    );
                    let _ = std::io::stderr().flush();
                }
            } else if let Some(d) = line.get("done") {
                done = d.clone();
            } else if let Some(e) = line.get("error") {
                failed = Some(s(e, "message"));
            }
            Ok(())
        })
        .await?;
    if progress {
        eprintln!();
    }
    if let Some(message) = failed {
        anyhow::bail!("entry apply: {message}");
    }
    if done.is_null() {
        anyhow::bail!("entry apply: the server's answer ended before the apply did; run `lanyard entry apply` again (it is idempotent)");
    }
    let count = |k: &str| done.get(k).and_then(Value::as_u64).unwrap_or(0);
    let result = json!({
        "dry_run": dry_run,
        "create": count("create"),
        "update": count("update"),
        "delete": count("delete"),
        "unchanged": count("unchanged"),
        "revision": done.get("revision").cloned().unwrap_or(Value::Null),
        "steps": steps,
    });
    output::print(g.output, &result, |_| {
        for st in &steps {
            println!(
                "{:<9} {} {} ({})",
                s(st, "action"),
                s(st, "id"),
                s(st, "spiffe_id"),
                s(st, "tenant")
            );
        }
        let (c, u, d, n) = (
            count("create"),
            count("update"),
            count("delete"),
            count("unchanged"),
        );
        if c + u + d == 0 {
            println!("nothing to change: {n} entries unchanged");
        } else if dry_run {
            println!("dry run: would create {c}, update {u}, delete {d}; {n} unchanged (nothing was changed)");
        } else {
            println!("created {c}, updated {u}, deleted {d}; {n} unchanged");
        }
    });
    Ok(ExitCode::SUCCESS)
}
