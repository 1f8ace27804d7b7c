//! `lanyard server` and `lanyard server init`.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use lanyard_core::{Clock, SystemClock};
use lanyard_server::config::ServerConfig;
use lanyard_server::{admin_token, env_map, shutdown_signal, Server, StoreInit};
use serde_json::json;

use crate::cli::{Global, ServerAction, ServerArgs};
use crate::output;

pub async fn run(g: &Global, args: ServerArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        Some(ServerAction::Init {
            config,
            token_file,
            insecure_plain_http,
        }) => init(g, &config, token_file.as_deref(), insecure_plain_http).await,
        Some(ServerAction::Rekey {
            config,
            new_kek_file,
            insecure_plain_http,
        }) => rekey(g, &config, &new_kek_file, insecure_plain_http).await,
        Some(ServerAction::NewEpoch {
            config,
            insecure_plain_http,
        }) => new_epoch(g, &config, insecure_plain_http).await,
        None => {
            let Some(path) = args.config else {
                bail!("`lanyard server` needs --config FILE (see the README's configuration section), or use `lanyard dev`");
            };
            serve(&path, args.insecure_plain_http).await
        }
    }
}

fn load(path: &Path, insecure_plain_http: bool) -> anyhow::Result<ServerConfig> {
    let mut env = env_map();
    if insecure_plain_http {
        env.insert("LANYARD__SERVER__INSECURE_PLAIN_HTTP".into(), "true".into());
    }
    Ok(lanyard_server::config::load(path, &env)?)
}

async fn serve(path: &Path, insecure_plain_http: bool) -> anyhow::Result<ExitCode> {
    let config = load(path, insecure_plain_http)?;
    let listen = config.listen;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // Never creates a store: a missing or truncated database is an error,
    // not a fresh start with new keys (create one with `lanyard server init`).
    let server = Server::build_with(config, clock, StoreInit::Existing)
        .await
        .context("starting the server")?;
    let listener =
        std::net::TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
    server.serve(listener, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn init(
    g: &Global,
    path: &Path,
    token_file: Option<&Path>,
    insecure_plain_http: bool,
) -> anyhow::Result<ExitCode> {
    let config = load(path, insecure_plain_http)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let issuer = config.issuer.clone();
    let server = Server::build(config, clock.clone())
        .await
        .context("initialising the store")?;
    let store = server.state().store.clone();
    let existing = store.count_admin_tokens().await?;
    let created = admin_token::create(&*store, &*clock, "bootstrap", "system:init").await?;
    let keys: Vec<_> = server
        .state()
        .keys
        .current()
        .ring
        .keys()
        .iter()
        .map(|k| json!({"kid": k.kid, "alg": k.alg.to_string(), "state": k.state.to_string()}))
        .collect();
    let mut result = json!({ "issuer": issuer, "admin_token_id": created.id, "keys": keys, "existing_admin_tokens": existing });
    match token_file {
        Some(file) => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(file)
                .with_context(|| format!("creating {} (it must not exist yet)", file.display()))?;
            f.write_all(created.token.as_bytes())
                .with_context(|| format!("writing {}", file.display()))?;
            result["admin_token_file"] = json!(file);
        }
        None => result["admin_token"] = json!(created.token),
    }
    output::print(g.output, &result, |r| {
        println!("Store initialised; signing keys ready for {issuer}.");
        match r.get("admin_token").and_then(|v| v.as_str()) {
            Some(t) => println!("Admin token (shown once, store it now):\n{t}"),
            None => println!(
                "Admin token written to {}",
                token_file
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
        }
    });
    Ok(ExitCode::SUCCESS)
}

async fn rekey(
    g: &Global,
    path: &Path,
    new_kek_file: &Path,
    insecure_plain_http: bool,
) -> anyhow::Result<ExitCode> {
    use lanyard_server::config::KekSource;
    let config = load(path, insecure_plain_http)?;
    let old = match &config.kek {
        KekSource::File(p) => lanyard_ca::Kek::from_file(p)?,
        KekSource::Env(text) => lanyard_ca::Kek::from_base64(text, lanyard_ca::KEK_ENV)?,
    };
    let new = lanyard_ca::Kek::from_file(new_kek_file)
        .with_context(|| format!("reading the new KEK {}", new_kek_file.display()))?;
    if new.fingerprint() == old.fingerprint() {
        bail!(
            "{} holds the current key-encryption key; generate a new one",
            new_kek_file.display()
        );
    }
    let store = lanyard_store::open_with(&config.store_url, lanyard_store::OpenMode::Existing)
        .await
        .context("opening the store to re-seal (nothing was changed)")?;
    let at_ms = SystemClock.unix_seconds().saturating_mul(1000);
    let done = lanyard_server::rekey::reseal_everything(&*store, &old, &new, "system:rekey", at_ms)
        .await?;
    let (n, cas, backends, audit_keys) = (
        done.signing_keys,
        done.ca_keys,
        done.broker_backends,
        done.audit_keys,
    );
    let result = json!({ "resealed": n, "resealed_cas": cas, "broker_backends_resealed": backends, "audit_keys_resealed": audit_keys, "old_kek": old.fingerprint(), "new_kek": new.fingerprint() });
    output::print(g.output, &result, |_| {
        println!(
            "{n} signing keys, {cas} X.509 CA keys, {backends} broker backend secrets and {audit_keys} audit keys re-sealed under key-encryption key {} (was {}).",
            new.fingerprint(),
            old.fingerprint()
        );
        println!(
            "Now set keys.kek_file to {} (or LANYARD_KEK) and start the servers.",
            new_kek_file.display()
        );
    });
    Ok(ExitCode::SUCCESS)
}

async fn new_epoch(g: &Global, path: &Path, insecure_plain_http: bool) -> anyhow::Result<ExitCode> {
    let config = load(path, insecure_plain_http)?;
    let store = lanyard_store::open_with(&config.store_url, lanyard_store::OpenMode::Existing)
        .await
        .context("opening the store (nothing was changed)")?;
    let (old, revision) = store.fetch_change_head().await?;
    let epoch = lanyard_server::correlation::new_id();
    let audit = lanyard_store::AuditDraft {
        at_ms: SystemClock.unix_seconds().saturating_mul(1000),
        correlation_id: lanyard_server::correlation::new_id(),
        actor: "system:new-epoch".into(),
        action: "changes.epoch".into(),
        subject: format!("epoch {old} -> {epoch}"),
        tenant: None,
        decision: lanyard_core::Decision::Allow,
        reason: format!("new change-log epoch at revision {revision} (store restored)"),
        evidence_digest: None,
    };
    store.new_change_epoch(&epoch, audit).await?;
    let result = json!({ "old_epoch": old, "epoch": epoch, "revision": revision });
    output::print(g.output, &result, |_| {
        println!("change-log epoch {epoch} (was {old}) at revision {revision}; every agent resyncs in full at its next sync. Start the servers.");
    });
    Ok(ExitCode::SUCCESS)
}
