//! `lanyard federation …` and `lanyard bundle …`.

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use reqwest::Method;
use serde_json::{json, Value};

use crate::cli::{BundleCommand, FederationCommand, Global};
use crate::client::AdminClient;
use crate::output::{self, s};

fn read_file(path: &std::path::Path, what: &str) -> anyhow::Result<String> {
    const MAX: u64 = 256 * 1024;
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .take(MAX + 1)
            .read_to_string(&mut text)
            .with_context(|| format!("reading {what} from standard input"))?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX + 1).read_to_string(&mut text))
            .with_context(|| format!("reading {what} {}", path.display()))?;
    }
    if text.len() as u64 > MAX {
        bail!("{what} {} is larger than {MAX} bytes", path.display());
    }
    Ok(text)
}

fn status_line(d: &Value) -> String {
    match d.get("last_error").and_then(Value::as_str) {
        Some(e) => format!(
            "FAILING ({} in a row): {}",
            d.get("failures").and_then(Value::as_u64).unwrap_or(0),
            lanyard_core::text::escape_control(e)
        ),
        None if d.get("last_success_at").is_some_and(|v| !v.is_null()) => "ok".into(),
        None => "not fetched yet".into(),
    }
}

fn print_domain(d: &Value) {
    println!("trust domain      {}", s(d, "trust_domain"));
    println!("source            {}", s(d, "source"));
    if !s(d, "bundle_endpoint_url").is_empty() {
        println!(
            "bundle endpoint   {} ({})",
            s(d, "bundle_endpoint_url"),
            s(d, "profile")
        );
    }
    if !s(d, "endpoint_spiffe_id").is_empty() {
        println!("endpoint ID       {}", s(d, "endpoint_spiffe_id"));
    }
    println!(
        "tenant            {}",
        d.get("tenant")
            .and_then(Value::as_str)
            .unwrap_or("(none: its JWT-SVIDs are not exchanged)")
    );
    println!(
        "bundle            sequence {}, {} X.509 and {} JWT authorities",
        d.get("sequence").map_or("-".into(), |v| if v.is_null() {
            "-".into()
        } else {
            v.to_string()
        }),
        d.get("x509_authorities")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        d.get("jwt_authorities")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    );
    if d.get("source").and_then(Value::as_str) == Some("federation") {
        println!("last refresh      {}", output::time(&d["last_attempt_at"]));
        println!("last success      {}", output::time(&d["last_success_at"]));
        println!("next refresh      {}", output::time(&d["next_refresh_at"]));
        println!("status            {}", status_line(d));
    }
}

pub async fn run(g: &Global, cmd: FederationCommand) -> anyhow::Result<ExitCode> {
    let client = AdminClient::from_global(g)?;
    match cmd {
        FederationCommand::Add(a) => {
            let initial = match &a.initial_bundle {
                Some(p) => Some(read_file(p, "--initial-bundle")?),
                None => None,
            };
            if !matches!(a.profile.as_str(), "https_spiffe" | "https_web") {
                bail!("--profile {:?}: use https_spiffe or https_web", a.profile);
            }
            let body = json!({
                "trust_domain": a.trust_domain,
                "bundle_endpoint_url": a.bundle_endpoint,
                "profile": a.profile,
                "endpoint_spiffe_id": a.endpoint_spiffe_id,
                "tenant": a.tenant,
                "initial_bundle": initial,
            });
            let v = client.call(Method::POST, "federations", Some(body)).await?;
            output::print(g.output, &v, |v| {
                println!(
                    "federating with {}: its bundle is fetched now and then at its refresh hint (`lanyard federation list` shows how it goes)",
                    s(v, "trust_domain")
                );
            });
        }
        FederationCommand::List => {
            let v = client.call(Method::GET, "federations", None).await?;
            output::print(g.output, &v, |v| {
                println!(
                    "{:<24} {:<10} {:<13} {:<21} {:<21} STATUS",
                    "TRUST DOMAIN", "SEQUENCE", "PROFILE", "LAST REFRESH", "NEXT REFRESH"
                );
                for d in v
                    .get("federations")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                {
                    println!(
                        "{:<24} {:<10} {:<13} {:<21} {:<21} {}",
                        s(&d, "trust_domain"),
                        d.get("sequence")
                            .filter(|v| !v.is_null())
                            .map_or("-".into(), ToString::to_string),
                        s(&d, "profile"),
                        output::time(&d["last_attempt_at"]),
                        output::time(&d["next_refresh_at"]),
                        status_line(&d)
                    );
                }
            });
        }
        FederationCommand::Show { trust_domain } => {
            let v = client
                .call(Method::GET, &format!("federations/{trust_domain}"), None)
                .await?;
            output::print(g.output, &v, print_domain);
        }
        FederationCommand::Refresh { trust_domain } => {
            let v = client
                .call(
                    Method::POST,
                    &format!("federations/{trust_domain}/refresh"),
                    None,
                )
                .await?;
            let ok = matches!(s(&v, "outcome").as_str(), "updated" | "unchanged");
            output::print(g.output, &v, |v| match s(v, "outcome").as_str() {
                "updated" => println!(
                    "bundle of {} updated (sequence {})",
                    s(v, "trust_domain"),
                    v["sequence"]
                ),
                "unchanged" => println!(
                    "bundle of {} unchanged (sequence {})",
                    s(v, "trust_domain"),
                    v["sequence"]
                ),
                other => eprintln!(
                    "error: refreshing {} {}: {}; the bundle held stays in use",
                    s(v, "trust_domain"),
                    if other == "refused" {
                        "refused the bundle"
                    } else {
                        "failed"
                    },
                    s(v, "error")
                ),
            });
            if !ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        FederationCommand::Delete { trust_domain } => {
            client
                .call(Method::DELETE, &format!("federations/{trust_domain}"), None)
                .await?;
            output::print(g.output, &json!({ "deleted": trust_domain }), |_| {
                println!("no longer federating with {trust_domain}; its bundle is dropped")
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn bundle(g: &Global, cmd: BundleCommand) -> anyhow::Result<ExitCode> {
    let client = AdminClient::from_global(g)?;
    match cmd {
        BundleCommand::Show {
            format,
            trust_domain,
        } => {
            let (doc, pem) = match &trust_domain {
                None => {
                    let bytes = client.get_public("/bundle").await?;
                    let doc: Value = serde_json::from_slice(&bytes)
                        .context("the server's /bundle is not JSON")?;
                    let pem = own_pem(&doc);
                    (doc, pem)
                }
                Some(td) => {
                    let v = client
                        .call(Method::GET, &format!("bundles/{td}"), None)
                        .await?;
                    if v.get("bundle").is_none() {
                        bail!("no bundle of {td} is held yet (`lanyard federation show {td}` tells why)");
                    }
                    (v["bundle"].clone(), s(&v, "bundle_pem"))
                }
            };
            match format.as_str() {
                "spiffe" => output::print(g.output, &doc, |d| {
                    println!("{}", serde_json::to_string_pretty(d).unwrap_or_default())
                }),
                "pem" => output::print(g.output, &json!({ "pem": pem }), |_| print!("{pem}")),
                other => bail!("--format {other:?}: use spiffe or pem"),
            }
        }
        BundleCommand::Set {
            trust_domain,
            file,
            tenant,
        } => {
            let text = read_file(&file, "--file")?;
            let v = client
                .call(
                    Method::PUT,
                    &format!("bundles/{trust_domain}"),
                    Some(json!({ "bundle": text, "tenant": tenant })),
                )
                .await?;
            output::print(g.output, &v, |v| {
                println!(
                    "bundle of {} set: {} X.509 and {} JWT authorities",
                    s(v, "trust_domain"),
                    v["x509_authorities"],
                    v["jwt_authorities"]
                )
            });
        }
        BundleCommand::List => {
            let v = client.call(Method::GET, "bundles", None).await?;
            output::print(g.output, &v, |v| {
                println!(
                    "{:<24} {:<11} {:<10} {:<5} {:<5} TENANT",
                    "TRUST DOMAIN", "SOURCE", "SEQUENCE", "X509", "JWT"
                );
                for d in v
                    .get("bundles")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                {
                    println!(
                        "{:<24} {:<11} {:<10} {:<5} {:<5} {}",
                        s(&d, "trust_domain"),
                        s(&d, "source"),
                        d.get("sequence")
                            .filter(|v| !v.is_null())
                            .map_or("-".into(), ToString::to_string),
                        d["x509_authorities"],
                        d["jwt_authorities"],
                        d.get("tenant").and_then(Value::as_str).unwrap_or("-")
                    );
                }
            });
        }
        BundleCommand::Delete { trust_domain } => {
            client
                .call(Method::DELETE, &format!("bundles/{trust_domain}"), None)
                .await?;
            output::print(g.output, &json!({ "deleted": trust_domain }), |_| {
                println!("bundle of {trust_domain} dropped")
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The X.509 authorities of a SPIFFE bundle document as PEM.
fn own_pem(doc: &Value) -> String {
    lanyard_ca::bundle::pem_certs(&lanyard_ca::bundle::x509_authorities_of(doc))
}
