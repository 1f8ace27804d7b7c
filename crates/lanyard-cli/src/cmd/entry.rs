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
        "role": a.role,
    }))
}
