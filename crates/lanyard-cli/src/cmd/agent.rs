//! `lanyard agent --config F`: the node agent (a systemd unit on VMs, a
//! DaemonSet on Kubernetes nodes). Also used by `lanyard dev` in-process.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use lanyard_agent::files::FileTarget;
use lanyard_agent::{Agent, AgentConfig, Bootstrap};
use lanyard_core::{Clock, SystemClock};
use serde::Deserialize;

use crate::cli::{AgentArgs, Global};

/// The agent config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAgent {
    /// Node API address of the server, `host:port`.
    server_address: String,
    /// Name on the server's certificate (default: host of server_address).
    server_name: Option<String>,
    trust_domain: String,
    /// PEM roots to trust for the server before the first sync.
    trust_bundle: PathBuf,
    /// A one-time join token (or a file holding it).
    join_token: Option<String>,
    join_token_file: Option<PathBuf>,
    /// A projected service-account token file (Kubernetes nodes).
    k8s_token_file: Option<PathBuf>,
    /// Where the node SVID is kept.
    state_dir: PathBuf,
    /// Workload API (and SDS) socket.
    socket: PathBuf,
    /// Admin socket for the Delegated Identity API (off when absent).
    admin_socket: Option<PathBuf>,
    /// Who may use the Delegated Identity API.
    delegated_identity: Option<RawDelegated>,
    sync_interval: Option<String>,
    #[serde(default)]
    files: Vec<RawFiles>,
    metadata: Option<RawMetadata>,
    /// Resolve callers' pods through the kubelet (Kubernetes nodes).
    kubelet: Option<RawKubelet>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelegated {
    /// Callers holding one of these SPIFFE IDs are delegates.
    #[serde(default)]
    authorized_delegates: Vec<String>,
    /// Callers whose selectors include all of one of these sets are delegates.
    #[serde(default)]
    authorized_delegate_selectors: Vec<Vec<String>>,
}

impl RawDelegated {
    fn build(self) -> anyhow::Result<lanyard_agent::delegated::Delegates> {
        let spiffe_ids = self
            .authorized_delegates
            .iter()
            .map(|d| {
                lanyard_core::SpiffeId::parse(d).with_context(|| {
                    format!("agent config delegated_identity.authorized_delegates: {d:?}")
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let mut selector_sets = Vec::new();
        for set in self.authorized_delegate_selectors {
            if set.is_empty() {
                bail!("agent config delegated_identity.authorized_delegate_selectors: an empty set would authorize everyone");
            }
            let mut parsed = set
                .iter()
                .map(|s| {
                    lanyard_core::Selector::parse(s).with_context(|| {
                        format!(
                            "agent config delegated_identity.authorized_delegate_selectors: {s:?}"
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            parsed.sort();
            selector_sets.push(parsed);
        }
        Ok(lanyard_agent::delegated::Delegates {
            spiffe_ids,
            selector_sets,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKubelet {
    /// e.g. https://127.0.0.1:10250
    url: String,
    ca_file: Option<PathBuf>,
    bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    danger_insecure_kubelet_skip_verify: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFiles {
    spiffe_id: String,
    dir: PathBuf,
    jwt_audience: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetadata {
    listen: std::net::SocketAddr,
    spiffe_id: String,
}

/// A running agent: stop it with [`Running::stop`].
#[derive(Debug)]
pub struct Running {
    _agent: Arc<Agent>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Running {
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

pub fn read_pem_certs(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for p in x509_parser::pem::Pem::iter_from_buffer(&text) {
        let p = p.with_context(|| format!("{} is not PEM", path.display()))?;
        if p.label == "CERTIFICATE" {
            out.push(p.contents);
        }
    }
    if out.is_empty() {
        bail!("{} holds no CERTIFICATE", path.display());
    }
    Ok(out)
}

/// Attests (retrying briefly while the server starts), then runs the sync
/// loop, the Workload API, the file writer and the metadata endpoint.
pub async fn start(
    config: AgentConfig,
    metadata_spiffe_id: Option<String>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Running> {
    let agent = Agent::new(config.clone(), clock)?;
    let mut attempt = 0;
    loop {
        match agent.sync_once().await {
            Ok(()) => break,
            Err(lanyard_agent::AgentError::Unavailable(e)) if attempt < 20 => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "server not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e).context("the agent could not attest its node"),
        }
    }
    let (stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(agent.clone().run_sync(rx.clone()));
    let (a, path, r) = (agent.clone(), config.socket_path.clone(), rx.clone());
    tokio::spawn(async move {
        if let Err(e) = lanyard_agent::workload_api::serve(a, &path, r).await {
            tracing::error!(error = %e, "the Workload API stopped");
        }
    });
    if let Some(admin) = config.admin_socket_path.clone() {
        let (a, r) = (agent.clone(), rx.clone());
        let audit: Arc<dyn lanyard_agent::audit::AuditSink> =
            Arc::new(lanyard_agent::audit::TracingAuditSink);
        tokio::spawn(async move {
            if let Err(e) = lanyard_agent::delegated::serve(a, audit, &admin, r).await {
                tracing::error!(error = %e, "the admin socket stopped");
            }
        });
    }
    tokio::spawn(lanyard_agent::files::run(
        agent.clone(),
        config.files.clone(),
        rx.clone(),
    ));
    if let (Some(addr), Some(id)) = (config.metadata_listen, metadata_spiffe_id) {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metadata endpoint on {addr}"))?;
        let app = lanyard_agent::metadata::router(agent.clone(), id);
        let mut r = rx.clone();
        tracing::info!(%addr, "metadata endpoint listening");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = r.changed().await;
                })
                .await;
        });
    }
    Ok(Running {
        _agent: agent,
        stop,
    })
}

/// Parses the agent config file's text (unknown keys and wrong types are
/// errors naming the key). Also used to check the Helm chart's agent config.
pub(crate) fn parse_raw(text: &str, origin: &str) -> anyhow::Result<RawAgent> {
    toml::from_str(text).with_context(|| format!("agent config {origin}"))
}

pub async fn run(_g: &Global, args: AgentArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading agent config {}", args.config.display()))?;
    let raw = parse_raw(&text, &args.config.display().to_string())?;
    let bootstrap = match (raw.join_token, raw.join_token_file, raw.k8s_token_file) {
        (Some(t), None, None) => Bootstrap::JoinToken(t),
        (None, Some(f), None) => Bootstrap::JoinToken(
            std::fs::read_to_string(&f)
                .with_context(|| format!("reading join_token_file {}", f.display()))?
                .trim()
                .to_owned(),
        ),
        (None, None, Some(f)) => Bootstrap::K8sTokenFile(f),
        (None, None, None) => Bootstrap::Stored,
        _ => bail!("agent config: give at most one of join_token, join_token_file, k8s_token_file"),
    };
    let sync_interval = raw
        .sync_interval
        .as_deref()
        .map(lanyard_core::ttl::parse_duration)
        .transpose()
        .map_err(|e| anyhow::anyhow!("agent config sync_interval: {e}"))?
        .unwrap_or(Duration::from_secs(2));
    let config = AgentConfig {
        server_addr: raw.server_address,
        server_name: raw.server_name,
        trust_domain: raw.trust_domain,
        bootstrap_roots: read_pem_certs(&raw.trust_bundle)?,
        bootstrap,
        state_dir: raw.state_dir,
        socket_path: raw.socket,
        sync_interval,
        attest: lanyard_agent::attest::AttestConfig {
            k8s: raw.kubelet.map(|k| {
                let mut c = lanyard_agent::attest::KubeletConfig::new(k.url);
                c.ca_file = k.ca_file;
                c.bearer_token_file = k.bearer_token_file;
                c.danger_insecure_kubelet_skip_verify = k.danger_insecure_kubelet_skip_verify;
                c
            }),
            ..lanyard_agent::attest::AttestConfig::default()
        },
        files: raw
            .files
            .into_iter()
            .map(|f| FileTarget {
                spiffe_id: f.spiffe_id,
                dir: f.dir,
                jwt_audience: f.jwt_audience,
            })
            .collect(),
        metadata_listen: raw.metadata.as_ref().map(|m| m.listen),
        admin_socket_path: raw.admin_socket,
        delegates: raw
            .delegated_identity
            .map(RawDelegated::build)
            .transpose()?
            .unwrap_or_default(),
    };
    let running = start(
        config,
        raw.metadata.map(|m| m.spiffe_id),
        Arc::new(SystemClock),
    )
    .await?;
    lanyard_server::shutdown_signal().await;
    running.stop();
    Ok(ExitCode::SUCCESS)
}
