//! Signed audit checkpoints: tamper evidence against someone who can write
//! the database.
//!
//! The hash chain alone shows an edit in the middle of the log, but someone
//! who can write the database can also delete its last events (after
//! dropping the append-only triggers), roll it back to a backup, or rewrite
//! the chain consistently from any point. So the server signs checkpoints
//! `(origin, seq, head hash, time)` with a dedicated audit key (ES256, its
//! private part sealed under the KEK; its public part published at
//! `/.well-known/lanyard-audit-keys.json`) every `audit.checkpoint_interval`,
//! and copies each one out of the database to a sink (a file, stdout). A
//! checkpoint kept elsewhere proves what the log contained at that time:
//! `lanyard audit verify --checkpoint FILE` fails unless the log still has
//! exactly that event at that sequence. Threat model: docs/SECURITY.md.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lanyard_ca::Kek;
use lanyard_core::{Clock, Decision};
use lanyard_jose::{Algorithm, Jwk, Jwks, Pkcs8Der, SigningKey, VerifyingKey};
use lanyard_store::{AuditDraft, AuditKeyRow, CheckpointRow, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::ServerError;

/// Default interval between checkpoints.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// The JWS `typ` of a checkpoint.
pub const CHECKPOINT_TYP: &str = "lanyard-audit-checkpoint";

/// What a checkpoint says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The server's issuer URL (whose log this is).
    pub origin: String,
    /// The last sequence number in the log.
    pub seq: i64,
    /// That event's hash.
    pub hash: String,
    /// When the checkpoint was made, ms since the Unix epoch.
    pub at_ms: i64,
    /// Always [`CHECKPOINT_TYP`], so no other token can pass as one.
    pub typ: String,
}

/// Where checkpoints are copied (besides the store).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sink {
    /// Append each checkpoint as a JSON line to this file (0600).
    pub file: Option<PathBuf>,
    /// Print each checkpoint as a JSON line on stdout.
    pub stdout: bool,
}

/// Signs, stores and publishes checkpoints.
#[derive(Debug)]
pub struct Checkpointer {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    key: SigningKey,
    public_jwks: Vec<u8>,
    origin: String,
    sink: Sink,
    interval: Duration,
    job: crate::jobs::JobLease,
}

fn aad(kid: &str) -> String {
    format!("audit-key:{kid}")
}

impl Checkpointer {
    /// Loads the audit key, creating it on a store that has none (one key
    /// for every replica: the store keeps the first one created).
    ///
    /// # Errors
    /// [`ServerError`] from the store or the KEK.
    pub async fn start(
        store: Arc<dyn Store>,
        kek: &Kek,
        clock: Arc<dyn Clock>,
        origin: String,
        sink: Sink,
        interval: Duration,
    ) -> Result<Self, ServerError> {
        let mut rows = store.list_audit_keys().await?;
        if rows.is_empty() {
            let (key, der) = SigningKey::generate(Algorithm::Es256)
                .map_err(|e| ServerError::StoredKey(e.to_string()))?;
            let kid = key.kid().to_owned();
            let row = AuditKeyRow {
                kid: kid.clone(),
                created_at: clock.unix_seconds(),
                public_jwk: serde_json::to_string(&key.public_jwk())
                    .map_err(|e| ServerError::StoredKey(e.to_string()))?,
                sealed_private: kek.seal(der.expose(), &aad(&kid))?,
                kek_fingerprint: kek.fingerprint().to_owned(),
            };
            let audit = AuditDraft {
                at_ms: crate::correlation::unix_millis(clock.now()),
                correlation_id: crate::correlation::new_id(),
                actor: "system".into(),
                action: "audit_key.create".into(),
                subject: kid,
                tenant: None,
                decision: Decision::Allow,
                reason: "the key that signs audit checkpoints".into(),
                evidence_digest: None,
            };
            rows = store.create_audit_key(row, audit).await?;
        }
        // The newest key signs; all are published.
        let newest = rows
            .last()
            .ok_or_else(|| ServerError::StoredKey("no audit key after creating one".into()))?;
        let der = kek.open(&newest.sealed_private, &aad(&newest.kid))?;
        let key = SigningKey::from_pkcs8(Algorithm::Es256, &Pkcs8Der::new(der.to_vec()))
            .map_err(|e| ServerError::StoredKey(format!("audit key {}: {e}", newest.kid)))?;
        let keys = rows
            .iter()
            .map(|r| serde_json::from_str::<Jwk>(&r.public_jwk))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ServerError::StoredKey(format!("audit key JWK: {e}")))?;
        let public_jwks = serde_json::to_vec(&Jwks { keys })
            .map_err(|e| ServerError::StoredKey(e.to_string()))?;
        let lease = i64::try_from(interval.as_secs().saturating_mul(3)).unwrap_or(180);
        let job = crate::jobs::JobLease::new(
            "audit_checkpoint",
            &crate::correlation::new_id(),
            lease,
            store.clone(),
            clock.clone(),
        );
        Ok(Self {
            store,
            clock,
            key,
            public_jwks,
            origin,
            sink,
            interval,
            job,
        })
    }

    /// The published keys (a JWKS), for `/.well-known/lanyard-audit-keys.json`.
    pub fn public_jwks(&self) -> Vec<u8> {
        self.public_jwks.clone()
    }

    /// How often [`Checkpointer::run`] writes one.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Signs the log's current head, stores the checkpoint and copies it to
    /// the sink.
    ///
    /// # Errors
    /// Store errors, or signing failure.
    pub async fn checkpoint(&self) -> Result<CheckpointRow, StoreError> {
        self.write(None).await
    }

    async fn write(
        &self,
        fence: Option<&lanyard_store::Fence>,
    ) -> Result<CheckpointRow, StoreError> {
        let (seq, hash) = self.store.fetch_audit_head().await?;
        let at_ms = crate::correlation::unix_millis(self.clock.now());
        let claims = Checkpoint {
            origin: self.origin.clone(),
            seq,
            hash: hash.clone(),
            at_ms,
            typ: CHECKPOINT_TYP.into(),
        };
        let jws = lanyard_jose::encode_jwt(&self.key, &claims)
            .map_err(|e| StoreError::Planner(format!("signing the checkpoint: {e}")))?;
        let row = CheckpointRow {
            seq,
            hash,
            at_ms,
            kid: self.key.kid().to_owned(),
            jws,
        };
        self.store
            .create_audit_checkpoint_fenced(row.clone(), fence)
            .await?;
        self.publish(&row);
        Ok(row)
    }

    /// The newest stored checkpoint.
    ///
    /// # Errors
    /// Store errors.
    pub async fn latest(&self) -> Result<Option<CheckpointRow>, StoreError> {
        Ok(self
            .store
            .list_audit_checkpoints(1)
            .await?
            .into_iter()
            .next())
    }

    /// Writes a checkpoint every interval while this replica holds the
    /// `audit_checkpoint` job (one replica at a time).
    pub async fn run(self: Arc<Self>) {
        let mut every = tokio::time::interval(self.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            match self.job.claim().await {
                Ok(true) => {
                    let fence = self.job.fence();
                    if let Err(e) = self.write(Some(&fence)).await {
                        tracing::error!(error = %e, "writing an audit checkpoint failed");
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "audit checkpoint job: store unavailable"),
            }
        }
    }

    fn publish(&self, row: &CheckpointRow) {
        let line = match serde_json::to_string(row) {
            Ok(l) => l,
            Err(_) => return,
        };
        if self.sink.stdout {
            println!("{line}");
        }
        if let Some(path) = &self.sink.file {
            use std::os::unix::fs::OpenOptionsExt as _;
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .and_then(|mut f| {
                    f.write_all(line.as_bytes())?;
                    f.write_all(b"\n")?;
                    f.sync_data()
                });
            if let Err(e) = written {
                tracing::error!(path = %path.display(), error = %e, "writing the audit checkpoint to its file failed");
            }
        }
        tracing::info!(seq = row.seq, kid = %row.kid, "audit checkpoint");
    }
}

/// Why a checkpoint does not verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The text is neither a checkpoint line nor a JWS.
    #[error("not a Lanyard audit checkpoint (a JSON line with a jws field, or the JWS itself)")]
    Shape,
    /// The JWKS does not parse.
    #[error("the audit keys do not parse: {0}")]
    Keys(String),
    /// The signature does not verify with the published keys.
    #[error("the checkpoint's signature does not verify with the published audit keys: {0}")]
    Signature(String),
}

/// Verifies a checkpoint (a stored line or the bare JWS) against the
/// published audit keys `jwks`; returns what it says.
///
/// # Errors
/// [`CheckpointError`].
pub fn verify(text: &str, jwks: &[u8]) -> Result<Checkpoint, CheckpointError> {
    let text = text.trim();
    let jws = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => v
            .get("jws")
            .and_then(|j| j.as_str())
            .map(str::to_owned)
            .ok_or(CheckpointError::Shape)?,
        Err(_) if text.split('.').count() == 3 => text.to_owned(),
        Err(_) => return Err(CheckpointError::Shape),
    };
    let set: Jwks =
        serde_json::from_slice(jwks).map_err(|e| CheckpointError::Keys(e.to_string()))?;
    let keys = set
        .keys
        .iter()
        .map(VerifyingKey::from_jwk)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CheckpointError::Keys(e.to_string()))?;
    let verified = lanyard_jose::verify_compact(&jws, &keys, &[Algorithm::Es256])
        .map_err(|e| CheckpointError::Signature(e.to_string()))?;
    let c: Checkpoint =
        serde_json::from_slice(&verified.payload).map_err(|_| CheckpointError::Shape)?;
    if c.typ != CHECKPOINT_TYP {
        return Err(CheckpointError::Shape);
    }
    Ok(c)
}

/// Re-seals every audit key from `old` to `new` (part of `lanyard server
/// rekey`); keys already under `new` are skipped.
///
/// # Errors
/// A key that `old` cannot open, or a store error.
pub async fn reseal_all(
    store: &dyn Store,
    old: &Kek,
    new: &Kek,
    actor: &str,
    at_ms: i64,
    correlation_id: &str,
) -> Result<usize, ServerError> {
    let mut n = 0;
    for mut row in store.list_audit_keys().await? {
        if row.kek_fingerprint == new.fingerprint() {
            continue;
        }
        let plain = old.open(&row.sealed_private, &aad(&row.kid))?;
        row.sealed_private = new.seal(&plain, &aad(&row.kid))?;
        row.kek_fingerprint = new.fingerprint().to_owned();
        let audit = crate::rekey::event(
            actor,
            at_ms,
            correlation_id,
            "audit_key.reseal",
            &row.kid,
            old,
            new,
        );
        store.reseal_audit_key(row, audit).await?;
        n += 1;
    }
    Ok(n)
}
