//! `lanyard svid fetch`: a SPIFFE Workload API client.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use lanyard_agent::files::{pem, write_atomic};
use lanyard_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use lanyard_proto::workload::{JwtsvidRequest, X509svidRequest, X509svidResponse};
use serde_json::{json, Value};
use tonic::transport::{Channel, Endpoint};

use crate::cli::{Global, SvidFetchArgs};
use crate::output;

/// Where the Workload API is: --socket, SPIFFE_ENDPOINT_SOCKET, or dev.json.
fn socket_path(g: &Global, explicit: Option<&str>) -> anyhow::Result<PathBuf> {
    let from_env = std::env::var("SPIFFE_ENDPOINT_SOCKET").ok();
    let text = match (explicit, from_env) {
        (Some(s), _) => s.to_owned(),
        (None, Some(s)) => s,
        (None, None) => {
            let dir = g
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(crate::client::DEFAULT_DATA_DIR));
            let dev = crate::client::read_dev_json(&dir)?;
            dev.get("workload_socket")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .context("dev.json has no workload_socket")?
        }
    };
    let path = text
        .strip_prefix("unix://")
        .or_else(|| text.strip_prefix("unix:"))
        .unwrap_or(&text);
    Ok(PathBuf::from(path))
}

/// A Workload API client over the Unix socket at `path`.
pub async fn connect(path: &Path) -> anyhow::Result<SpiffeWorkloadApiClient<Channel>> {
    let p = path.to_owned();
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
        .with_context(|| format!("connecting to the Workload API at {} (is `lanyard dev` or `lanyard agent` running?)", path.display()))?;
    Ok(SpiffeWorkloadApiClient::new(channel))
}

fn request<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        lanyard_agent::workload_api::SECURITY_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    r
}

fn explain_status(s: &tonic::Status, path: &Path) -> anyhow::Error {
    match s.code() {
        tonic::Code::PermissionDenied => anyhow::anyhow!(
            "no identity issued to this process: no entry of the node matches it. Run `lanyard explain --pid {}` to see its selectors and the entries that nearly matched",
            std::process::id()
        ),
        _ => anyhow::anyhow!("Workload API at {}: {}: {}", path.display(), s.code(), s.message()),
    }
}

/// Splits concatenated DER certificates.
fn split_ders(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        match x509_parser::parse_x509_certificate(bytes) {
            Ok((rest, _)) => {
                let used = bytes.len() - rest.len();
                out.push(bytes.get(..used).unwrap_or_default().to_vec());
                bytes = rest;
            }
            Err(_) => break,
        }
    }
    out
}

fn describe(resp: &X509svidResponse) -> Value {
    let svids: Vec<Value> = resp
        .svids
        .iter()
        .map(|s| {
            let chain = split_ders(&s.x509_svid);
            let leaf = chain
                .first()
                .and_then(|c| x509_parser::parse_x509_certificate(c).ok())
                .map(|(_, c)| c);
            let exp = leaf
                .as_ref()
                .map_or(0, |c| c.validity().not_after.timestamp());
            let serial = leaf
                .as_ref()
                .map(|c| lanyard_core::hex::encode(c.raw_serial()))
                .unwrap_or_default();
            json!({
                "spiffe_id": s.spiffe_id,
                "serial": serial,
                "expires_at": exp,
                "chain_length": chain.len(),
                "bundle_roots": split_ders(&s.bundle).len(),
            })
        })
        .collect();
    json!({ "svids": svids })
}

/// Keeps only the SVID for `wanted` when given (issue 10: with
/// `--spiffe-id X` a process that does not hold X is an error, never
/// another identity).
fn select(mut resp: X509svidResponse, wanted: Option<&str>) -> anyhow::Result<X509svidResponse> {
    if let Some(id) = wanted {
        let held: Vec<String> = resp.svids.iter().map(|s| s.spiffe_id.clone()).collect();
        resp.svids.retain(|s| s.spiffe_id == id);
        if resp.svids.is_empty() {
            bail!(
                "this process holds no X.509-SVID for {id}; the Workload API issued it only {}",
                if held.is_empty() {
                    "nothing".to_owned()
                } else {
                    held.join(", ")
                }
            );
        }
    }
    if resp.svids.is_empty() {
        bail!("the Workload API returned no SVID");
    }
    Ok(resp)
}

fn write_x509(dir: &Path, resp: &X509svidResponse) -> anyhow::Result<()> {
    let Some(first) = resp.svids.first() else {
        bail!("the Workload API returned no SVID");
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let put = |name: &str, data: &[u8], mode: u32| {
        let path = dir.join(name);
        write_atomic(&path, data, mode).with_context(|| format!("writing {}", path.display()))
    };
    put(
        "svid.pem",
        pem("CERTIFICATE", &split_ders(&first.x509_svid)).as_bytes(),
        0o644,
    )?;
    put(
        "svid.key",
        pem("PRIVATE KEY", std::slice::from_ref(&first.x509_svid_key)).as_bytes(),
        0o600,
    )?;
    put(
        "bundle.pem",
        pem("CERTIFICATE", &split_ders(&first.bundle)).as_bytes(),
        0o644,
    )?;
    Ok(())
}

pub async fn fetch(g: &Global, a: SvidFetchArgs) -> anyhow::Result<ExitCode> {
    let path = socket_path(g, a.socket.as_deref())?;
    let mut client = connect(&path).await?;
    if a.jwt {
        if a.audience.is_empty() {
            bail!("--jwt needs at least one --audience");
        }
        let resp = client
            .fetch_jwtsvid(request(JwtsvidRequest {
                audience: a.audience.clone(),
                spiffe_id: a.spiffe_id.clone().unwrap_or_default(),
            }))
            .await
            .map_err(|s| match (&a.spiffe_id, s.code()) {
                (Some(id), tonic::Code::PermissionDenied) => anyhow::anyhow!(
                    "this process holds no JWT-SVID for {id}: no entry of the node gives it that identity. Run `lanyard explain --pid {}` to see its selectors",
                    std::process::id()
                ),
                _ => explain_status(&s, &path),
            })?
            .into_inner();
        let first = match &a.spiffe_id {
            Some(id) => resp.svids.iter().find(|s| &s.spiffe_id == id),
            None => resp.svids.first(),
        };
        let Some(first) = first else {
            bail!(
                "the Workload API returned no JWT-SVID{}",
                a.spiffe_id
                    .as_ref()
                    .map(|id| format!(" for {id}"))
                    .unwrap_or_default()
            );
        };
        if let Some(dir) = &a.write {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            write_atomic(&dir.join("token.jwt"), first.svid.as_bytes(), 0o600)
                .with_context(|| format!("writing {}", dir.join("token.jwt").display()))?;
        }
        let v = json!({ "spiffe_id": first.spiffe_id, "token": first.svid });
        output::print(g.output, &v, |_| println!("{}", first.svid));
        return Ok(ExitCode::SUCCESS);
    }
    let mut stream = client
        .fetch_x509svid(request(X509svidRequest {}))
        .await
        .map_err(|s| explain_status(&s, &path))?
        .into_inner();
    loop {
        let resp = match stream.message().await {
            Ok(Some(r)) => r,
            Ok(None) => bail!("the Workload API closed the stream"),
            Err(s) => return Err(explain_status(&s, &path)),
        };
        let resp = select(resp, a.spiffe_id.as_deref())?;
        if let Some(dir) = &a.write {
            write_x509(dir, &resp)?;
        }
        let v = describe(&resp);
        output::print(g.output, &v, |v| {
            for s in v["svids"].as_array().cloned().unwrap_or_default() {
                println!(
                    "{}  expires {}  (chain {}, bundle {} roots)",
                    output::s(&s, "spiffe_id"),
                    output::time(&s["expires_at"]),
                    s["chain_length"],
                    s["bundle_roots"]
                );
            }
            if let Some(dir) = &a.write {
                println!(
                    "wrote svid.pem, svid.key (0600), bundle.pem to {}",
                    dir.display()
                );
            }
        });
        if !a.watch {
            return Ok(ExitCode::SUCCESS);
        }
    }
}
