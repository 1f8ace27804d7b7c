//! `lanyard dev`: everything on one laptop, one command.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use lanyard_ca::Kek;
use lanyard_core::{Clock, Decision, SystemClock, TenantId, TrustDomain};
use lanyard_server::config::{
    RawAudit, RawCa, RawConfig, RawKeys, RawNodeApi, RawServer, RawStore,
};
use lanyard_server::{admin_token, shutdown_signal, Server};
use lanyard_store::{AuditDraft, Tenant};
use serde_json::json;

use crate::cli::{DevArgs, Global};
use crate::client::DEFAULT_DATA_DIR;
use crate::output;

const DEV_TENANT: &str = "dev";
/// The built-in agent's node id: entries with only `unix:` selectors and no
/// `--parent` belong to it.
pub const DEV_NODE: &str = "dev";

pub async fn run(g: &Global, args: DevArgs) -> anyhow::Result<ExitCode> {
    let dir = g
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating data directory {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let kek_path = dir.join("kek");
    if !kek_path.exists() {
        Kek::generate_file(&kek_path).context("creating the dev key-encryption key")?;
    }
    let listener = std::net::TcpListener::bind(args.listen).with_context(|| {
        format!(
            "listening on {} (in use? try --listen 127.0.0.1:0 for a free port)",
            args.listen
        )
    })?;
    let addr = listener
        .local_addr()
        .context("reading the listen address")?;
    let issuer = format!("http://{addr}");
    let td = TrustDomain::parse(&args.trust_domain)
        .map_err(|e| anyhow::anyhow!("--trust-domain {:?}: {e}", args.trust_domain))?;
    // The same validation as `lanyard server --config` (one set of rules).
    let raw = RawConfig {
        trust_domain: Some(td.to_string()),
        issuer: Some(issuer.clone()),
        server: RawServer {
            listen: Some(addr.to_string()),
            insecure_plain_http: Some(true),
            ..RawServer::default()
        },
        store: RawStore {
            url: Some(format!("sqlite://{}", dir.join("lanyard.db").display())),
        },
        keys: RawKeys {
            kek_file: Some(kek_path),
            // RS256 too, so Azure Entra (RS256 only) works out of the box.
            algorithms: Some(vec!["ES256".into(), "RS256".into()]),
            ..RawKeys::default()
        },
        ca: RawCa {
            svid_ttl: Some(args.svid_ttl.clone()),
            ..RawCa::default()
        },
        node_api: RawNodeApi {
            listen: Some("127.0.0.1:0".into()),
            dns_names: Some(vec!["localhost".into()]),
            default_parent_node: Some(DEV_NODE.into()),
            ..RawNodeApi::default()
        },
        audit: RawAudit {
            checkpoint_file: Some(dir.join("audit-checkpoints.jsonl")),
            ..RawAudit::default()
        },
        // A bundle endpoint (https_spiffe) on a free port, so another
        // `lanyard dev` or a SPIRE server can federate with this one.
        federation: lanyard_server::config::RawFederation {
            bundle_endpoint: lanyard_server::config::RawBundleEndpoint {
                listen: Some("127.0.0.1:0".into()),
                ..Default::default()
            },
            // Peers on this machine: refresh quickly.
            refresh_floor: Some("5s".into()),
            ..Default::default()
        },
        ..RawConfig::default()
    };
    let config = raw
        .validate(&std::collections::BTreeMap::new())
        .context("the dev configuration (check --svid-ttl and --trust-domain)")?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let server = Server::build(config, clock.clone())
        .await
        .with_context(|| format!("starting Lanyard on {}", dir.display()))?;
    let store = server.state().store.clone();
    let bundle_endpoint = server
        .bundle_endpoint_addr()
        .map(|a| format!("https://{a}"));

    if store.fetch_tenant(DEV_TENANT).await?.is_none() {
        let tenant = Tenant {
            id: TenantId::parse(DEV_TENANT)?,
            description: "lanyard dev".into(),
            created_at: clock.unix_seconds(),
        };
        let audit = AuditDraft {
            at_ms: clock.unix_seconds().saturating_mul(1000),
            correlation_id: lanyard_server::correlation::new_id(),
            actor: "system:dev".into(),
            action: "tenant.create".into(),
            subject: DEV_TENANT.into(),
            tenant: Some(DEV_TENANT.into()),
            decision: Decision::Allow,
            reason: "lanyard dev first start".into(),
            evidence_digest: None,
        };
        store.create_tenant(tenant, audit).await?;
    }

    let dev_json = dir.join("dev.json");
    let previous = std::fs::read_to_string(&dev_json)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    let old_token = previous
        .as_ref()
        .and_then(|v| v.get("admin_token"))
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let token = match old_token {
        Some(t) if admin_token::verify(&*store, &t).await?.is_some() => t,
        _ => {
            admin_token::create(&*store, &*clock, "dev", "system:dev")
                .await?
                .token
        }
    };
    let socket = dir.join("workload.sock");
    let node_listener = server
        .bind_node_api()?
        .context("the dev server always has a node API")?;
    let node_addr = node_listener
        .local_addr()
        .context("reading the node API address")?;
    let state = server.state().clone();
    let mut server_task =
        tokio::spawn(server.serve_all(listener, Some(node_listener), shutdown_signal()));
    let delegates = lanyard_agent::delegated::Delegates {
        spiffe_ids: args
            .delegates
            .iter()
            .map(|d| lanyard_core::SpiffeId::parse(d).with_context(|| format!("--delegate {d}")))
            .collect::<anyhow::Result<_>>()?,
        selector_sets: Vec::new(),
    };
    let admin_socket = (!delegates.is_empty()).then(|| dir.join("admin.sock"));
    let agent = start_agent(
        &state,
        &td,
        &dir,
        &socket,
        (admin_socket.clone(), delegates),
        node_addr,
        clock.clone(),
    )
    .await?;
    let info = json!({
        "issuer": issuer,
        "admin_token": token,
        "workload_socket": socket,
        "admin_socket": admin_socket,
        "bundle_endpoint": format!("{issuer}/bundle"),
        "jwks_uri": format!("{issuer}{}", lanyard_server::http::oidc::JWKS_PATH),
        "token_endpoint": format!("{issuer}{}", lanyard_server::http::oidc::TOKEN_PATH),
        "audit_keys_uri": format!("{issuer}{}", lanyard_server::http::oidc::AUDIT_KEYS_PATH),
        "audit_checkpoints": dir.join("audit-checkpoints.jsonl"),
        "trust_domain": td.to_string(),
        "tenant": DEV_TENANT,
        "data_dir": dir,
        "pid": std::process::id(),
        "node_api": node_addr.to_string(),
        "node_id": DEV_NODE,
        "node_spiffe_id": lanyard_core::naming::node_id(&td, DEV_NODE)?.to_string(),
        "federation_bundle_endpoint": bundle_endpoint,
        "federation_endpoint_spiffe_id": lanyard_core::naming::server_id(&td).to_string(),
    });
    write_private(&dev_json, serde_json::to_vec_pretty(&info)?.as_slice())?;

    let mut shown = info.clone();
    shown["admin_token"] = json!(format!("(in {})", dev_json.display()));
    output::print(g.output, &shown, |_| {
        println!("Lanyard dev is running.");
        println!();
        println!("  issuer           {issuer}");
        println!("  discovery        {issuer}/.well-known/openid-configuration");
        println!("  bundle endpoint  {issuer}/bundle");
        println!("  trust domain     {td}   tenant {DEV_TENANT}");
        if let Some(url) = &bundle_endpoint {
            println!(
                "  federation       {url}  (https_spiffe, {})",
                lanyard_core::naming::server_id(&td)
            );
        }
        println!(
            "  workload API     unix:{}  (node spiffe://{td}/lanyard/node/{DEV_NODE})",
            socket.display()
        );
        println!("  state            {}", dir.display());
        println!("  admin token      in {} (mode 0600)", dev_json.display());
        println!();
        println!("Try, in another shell:");
        println!("  curl -s {issuer}/.well-known/openid-configuration");
        println!(
            "  cargo run --release -- --data-dir {} entry create --spiffe-id spiffe://{td}/me --tenant {DEV_TENANT} --selector unix:uid:$(id -u)",
            dir.display()
        );
        println!(
            "  cargo run --release -- svid fetch --socket {}",
            socket.display()
        );
        println!(
            "  cargo run --release -- --data-dir {} tenant list",
            dir.display()
        );
        println!();
        println!("Stop with Ctrl-C.");
    });
    let result = (&mut server_task).await;
    agent.stop();
    result.context("the server task failed")??;
    Ok(ExitCode::SUCCESS)
}

/// The built-in agent: attests node `dev` over the real node API with a
/// join token the dev server makes for itself (once; the node SVID is kept
/// in DATA_DIR/agent), then serves the Workload API on `socket`.
async fn start_agent(
    state: &lanyard_server::state::AppState,
    td: &TrustDomain,
    dir: &Path,
    socket: &Path,
    (admin_socket_path, delegates): (Option<PathBuf>, lanyard_agent::delegated::Delegates),
    node_addr: std::net::SocketAddr,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<crate::cmd::agent::Running> {
    let state_dir = dir.join("agent");
    let stored = std::fs::read(state_dir.join("node-svid.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<lanyard_agent::node_client::NodeIdentity>(&b).ok())
        .filter(|n| n.expires_at > clock.unix_seconds() + 60);
    let bootstrap = if stored.is_some() {
        lanyard_agent::Bootstrap::Stored
    } else {
        let (token, row) = lanyard_server::node::new_join_token(
            td,
            DEV_NODE,
            Vec::new(),
            clock.unix_seconds(),
            std::time::Duration::from_secs(600),
            "system:dev",
        )
        .map_err(anyhow::Error::msg)?;
        let audit = AuditDraft {
            at_ms: clock.unix_seconds().saturating_mul(1000),
            correlation_id: lanyard_server::correlation::new_id(),
            actor: "system:dev".into(),
            action: "jointoken.create".into(),
            subject: format!("jointoken {} for the built-in agent", row.id),
            tenant: None,
            decision: Decision::Allow,
            reason: "lanyard dev".into(),
            evidence_digest: None,
        };
        state.store.create_join_token(row, audit).await?;
        lanyard_agent::Bootstrap::JoinToken(token)
    };
    let config = lanyard_agent::AgentConfig {
        server_addr: node_addr.to_string(),
        server_name: Some("localhost".into()),
        trust_domain: td.to_string(),
        bootstrap_roots: state.ca.current().roots.clone(),
        bootstrap,
        state_dir,
        socket_path: socket.to_owned(),
        sync_interval: std::time::Duration::from_secs(1),
        attest: lanyard_agent::attest::AttestConfig::default(),
        files: Vec::new(),
        metadata_listen: None,
        admin_socket_path,
        delegates,
    };
    crate::cmd::agent::start(config, None, clock).await
}

/// Writes `bytes` to `path` with mode 0600 atomically (temp file + rename).
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}
