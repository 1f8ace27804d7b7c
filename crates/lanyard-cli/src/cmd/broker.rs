//! `lanyard broker …`: backends, roles, leases (admin) and `creds` (workload).

use std::process::ExitCode;

use anyhow::{anyhow, bail, Context as _};
use reqwest::Method;
use serde_json::{json, Value};

use crate::cli::{
    BrokerBackendCommand, BrokerCommand, BrokerCredsArgs, BrokerLeaseCommand, BrokerRoleCommand,
    CredsFormat, Global, Output,
};
use crate::client::AdminClient;
use crate::output::{self, raw, s};

pub async fn run(g: &Global, cmd: BrokerCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BrokerCommand::Backend(c) => backend(g, c).await,
        BrokerCommand::Role(c) => role(g, c).await,
        BrokerCommand::Lease(c) => lease(g, c).await,
        BrokerCommand::Creds(a) => creds(g, a).await,
    }
}

async fn backend(g: &Global, cmd: BrokerBackendCommand) -> anyhow::Result<ExitCode> {
    let client = AdminClient::from_global(g)?;
    match cmd {
        BrokerBackendCommand::Add { kind: _, name, url } => {
            let v = client
                .call(
                    Method::POST,
                    "broker/backends",
                    Some(json!({"kind": "postgres", "name": name, "url": url})),
                )
                .await?;
            output::print(g.output, &v, |v| {
                println!("added backend {} ({})", s(v, "name"), s(v, "url"))
            });
        }
        BrokerBackendCommand::List => {
            let v = client.call(Method::GET, "broker/backends", None).await?;
            output::print(g.output, &v, |v| {
                println!("{:<16} {:<10} {:<22} URL", "NAME", "KIND", "ROOT ROTATED");
                for b in list(v, "backends") {
                    println!(
                        "{:<16} {:<10} {:<22} {}",
                        s(&b, "name"),
                        s(&b, "kind"),
                        output::time(&b["updated_at"]),
                        s(&b, "url")
                    );
                }
            });
        }
        BrokerBackendCommand::RotateRoot { name } => {
            let v = client
                .call(
                    Method::POST,
                    &format!("broker/backends/{name}/rotate-root"),
                    None,
                )
                .await?;
            output::print(g.output, &v, |v| {
                println!(
                    "rotated the admin password of backend {}; only Lanyard knows the new one",
                    s(v, "name")
                )
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn role(g: &Global, cmd: BrokerRoleCommand) -> anyhow::Result<ExitCode> {
    let client = AdminClient::from_global(g)?;
    match cmd {
        BrokerRoleCommand::Add {
            role,
            creation_sql,
            revocation_sql,
            ttl,
            max_ttl,
        } => {
            let read = |p: &std::path::Path| {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
            };
            let secs = |flag: &str, t: &str| {
                lanyard_core::ttl::parse_duration(t)
                    .map(|d| d.as_secs())
                    .map_err(|e| anyhow!("{flag}: {e}"))
            };
            let body = json!({
                "role": role,
                "creation_sql": read(&creation_sql)?,
                "revocation_sql": revocation_sql.as_deref().map(read).transpose()?.unwrap_or_default(),
                "ttl_seconds": secs("--ttl", &ttl)?,
                "max_ttl_seconds": secs("--max-ttl", &max_ttl)?,
            });
            let v = client
                .call(Method::POST, "broker/roles", Some(body))
                .await?;
            output::print(g.output, &v, |v| {
                println!(
                    "added role {}/{} (ttl {}s, max {}s)",
                    s(v, "backend"),
                    s(v, "name"),
                    v["ttl_secs"],
                    v["max_ttl_secs"]
                )
            });
        }
        BrokerRoleCommand::List => {
            let v = client.call(Method::GET, "broker/roles", None).await?;
            output::print(g.output, &v, |v| {
                println!("{:<32} {:>8} {:>8}", "ROLE", "TTL", "MAX TTL");
                for r in list(v, "roles") {
                    println!(
                        "{:<32} {:>7}s {:>7}s",
                        format!("{}/{}", s(&r, "backend"), s(&r, "name")),
                        r["ttl_secs"],
                        r["max_ttl_secs"]
                    );
                }
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn lease(g: &Global, cmd: BrokerLeaseCommand) -> anyhow::Result<ExitCode> {
    let client = AdminClient::from_global(g)?;
    match cmd {
        BrokerLeaseCommand::List {
            pending_revocation,
            active,
            tenant,
        } => {
            let mut query = vec![];
            if pending_revocation {
                query.push("state=revoking".to_owned());
            } else if active {
                query.push("state=active".to_owned());
            }
            if let Some(t) = tenant {
                query.push(format!("tenant={t}"));
            }
            let path = if query.is_empty() {
                "broker/leases".to_owned()
            } else {
                format!("broker/leases?{}", query.join("&"))
            };
            let v = client.call(Method::GET, &path, None).await?;
            output::print(g.output, &v, |v| {
                println!(
                    "{:<32} {:<20} {:<9} {:<22} {:>8}  IDENTITY / LAST ERROR",
                    "LEASE", "ROLE", "STATE", "EXPIRES", "ATTEMPTS"
                );
                for l in list(v, "leases") {
                    let detail = if s(&l, "last_error").is_empty() {
                        s(&l, "spiffe_id").to_owned()
                    } else {
                        format!("{} / {}", s(&l, "spiffe_id"), s(&l, "last_error"))
                    };
                    println!(
                        "{:<32} {:<20} {:<9} {:<22} {:>8}  {detail}",
                        s(&l, "id"),
                        format!("{}/{}", s(&l, "backend"), s(&l, "role")),
                        s(&l, "state"),
                        output::time(&l["expires_at"]),
                        l["attempts"],
                    );
                }
            });
        }
        BrokerLeaseCommand::Revoke { id } => {
            let v = client
                .call(Method::DELETE, &format!("broker/leases/{id}"), None)
                .await?;
            output::print(g.output, &v, |v| {
                match s(v, "state").as_str() {
                "revoked" => println!("revoked lease {id}; the user is gone"),
                other => println!(
                    "lease {id} is {other}: the backend did not answer ({}); Lanyard keeps retrying",
                    s(v, "last_error")
                ),
            }
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn creds(g: &Global, a: BrokerCredsArgs) -> anyhow::Result<ExitCode> {
    let client = AdminClient::anonymous(g)?;
    let audience = format!("{}/broker", client.base());
    // Without --socket, `lanyard dev`'s socket (from --data-dir's dev.json).
    let dev_socket = || {
        g.data_dir
            .as_deref()
            .and_then(|d| crate::client::read_dev_json(d).ok())
            .and_then(|v| v["workload_socket"].as_str().map(str::to_owned))
    };
    let socket = a.socket.clone().or_else(dev_socket);
    let svid = match (&a.token_file, &socket) {
        (Some(path), _) => crate::cmd::token::read_token(path)?,
        (None, Some(socket)) => fetch_svid(socket, &audience).await?,
        (None, None) => bail!(
            "give --socket PATH (the Workload API, or SPIFFE_ENDPOINT_SOCKET) or --token-file F holding a JWT-SVID for audience {audience}"
        ),
    };
    if a.role.split_once('/').is_none() {
        bail!(
            "role {:?} must be backend/role, e.g. appdb/readonly",
            a.role
        );
    }
    let ttl = a
        .ttl
        .as_deref()
        .map(|t| {
            lanyard_core::ttl::parse_duration(t)
                .map(|d| d.as_secs())
                .map_err(|e| anyhow!("--ttl: {e}"))
        })
        .transpose()?;
    let body = ttl.map(|t| json!({"ttl_seconds": t}));
    let v = client
        .broker(Method::POST, &format!("creds/{}", a.role), &svid, body)
        .await?;
    let format = if g.output == Output::Json {
        CredsFormat::Json
    } else {
        a.format
    };
    match format {
        CredsFormat::Json => println!("{}", serde_json::to_string_pretty(&v)?),
        CredsFormat::Uri => println!("{}", connection_uri(&v)?),
        CredsFormat::Env => {
            for (k, val) in env_vars(&v)? {
                println!("export {k}={}", shell_quote(&val));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A JWT-SVID for `audience` from the SPIFFE Workload API at `socket`.
async fn fetch_svid(socket: &str, audience: &str) -> anyhow::Result<String> {
    let endpoint = if socket.starts_with("unix:") {
        socket.to_owned()
    } else {
        format!("unix:{socket}")
    };
    let client = spiffe::WorkloadApiClient::connect_to(&endpoint)
        .await
        .with_context(|| format!("connecting to the Workload API at {endpoint}"))?;
    let svid = client
        .fetch_jwt_svid([audience], None)
        .await
        .with_context(|| format!("fetching a JWT-SVID for audience {audience} from {endpoint}"))?;
    Ok(svid.token().to_owned())
}

/// `postgres://USER:PASSWORD@HOST:PORT/DB?…` from the server's answer.
fn connection_uri(v: &Value) -> anyhow::Result<String> {
    let url = v["database_url"]
        .as_str()
        .ok_or_else(|| anyhow!("the server's answer has no database_url"))?;
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| anyhow!("database_url is not a URL"))?;
    let (user, host) = rest
        .split_once('@')
        .ok_or_else(|| anyhow!("database_url names no user"))?;
    Ok(format!(
        "{scheme}://{user}:{}@{host}",
        percent(raw(v, "password"))
    ))
}

/// libpq environment variables (PGHOST, PGPORT, PGDATABASE, PGUSER,
/// PGPASSWORD) plus LANYARD_LEASE_ID and LANYARD_LEASE_EXPIRES_AT.
fn env_vars(v: &Value) -> anyhow::Result<Vec<(&'static str, String)>> {
    let url = v["database_url"]
        .as_str()
        .ok_or_else(|| anyhow!("the server's answer has no database_url"))?;
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host_part = rest.split_once('@').map_or(rest, |(_, h)| h);
    let (authority, db) = host_part.split_once('/').unwrap_or((host_part, ""));
    let db = db.split('?').next().unwrap_or_default();
    let (host, port) = authority.rsplit_once(':').unwrap_or((authority, "5432"));
    Ok(vec![
        ("PGHOST", host.to_owned()),
        ("PGPORT", port.to_owned()),
        ("PGDATABASE", db.to_owned()),
        ("PGUSER", raw(v, "username").to_owned()),
        ("PGPASSWORD", raw(v, "password").to_owned()),
        ("LANYARD_LEASE_ID", raw(v, "lease_id").to_owned()),
        ("LANYARD_LEASE_EXPIRES_AT", v["expires_at"].to_string()),
    ])
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn list(v: &Value, key: &str) -> Vec<Value> {
    v.get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_from_an_answer() {
        let v = json!({"username": "lanyard_ro_x", "password": "p@ss", "lease_id": "L1", "expires_at": 99,
                       "database_url": "postgres://lanyard_ro_x@db.internal:6432/app?sslmode=verify-full"});
        assert_eq!(
            connection_uri(&v).unwrap_or_default(),
            "postgres://lanyard_ro_x:p%40ss@db.internal:6432/app?sslmode=verify-full"
        );
        let env = env_vars(&v).unwrap_or_default();
        let get = |k| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PGHOST"), Some("db.internal"));
        assert_eq!(get("PGPORT"), Some("6432"));
        assert_eq!(get("PGDATABASE"), Some("app"));
        assert_eq!(get("PGPASSWORD"), Some("p@ss"));
        assert_eq!(get("LANYARD_LEASE_EXPIRES_AT"), Some("99"));
        assert_eq!(shell_quote("a'b"), "'a'\\''b'");
    }
}
