//! The key manager: rotation against the store, and the published key ring
//! the request path reads without locking (an `ArcSwap` load).

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use lanyard_ca::rotation::{plan, plan_compromised, plan_rotate_now};
use lanyard_ca::{Kek, KeyAction, KeyMeta, KeyRing, RotationPolicy, SealedKey};
use lanyard_core::clock::{from_unix_seconds, unix_seconds};
use lanyard_core::{Clock, Decision, KeyState};
use lanyard_jose::{Algorithm, Jwk};
use lanyard_store::{AuditDraft, KeyChange, SigningKeyRow, Store};
use serde::Serialize;

use crate::ServerError;

/// What the HTTP layer serves, rebuilt whenever the keys change.
#[derive(Debug)]
pub struct Published {
    /// Keys ready to sign and verify.
    pub ring: KeyRing,
    /// The OIDC JWKS document, serialised once.
    pub jwks_json: Vec<u8>,
    /// The JWT part of the SPIFFE trust bundle (`use: jwt-svid`).
    pub bundle_keys: Vec<serde_json::Value>,
    /// `spiffe_sequence`.
    pub generation: i64,
}

/// Owns the signing keys: plans rotations inside the store's key lock, and
/// publishes the current ring.
#[derive(Debug)]
pub struct KeyManager {
    store: Arc<dyn Store>,
    kek: Kek,
    algorithms: Vec<Algorithm>,
    policy: RotationPolicy,
    clock: Arc<dyn Clock>,
    current: ArcSwap<Published>,
}

/// One operator-requested rotation.
#[derive(Debug, Clone, Serialize)]
pub struct RotationScheduled {
    /// Algorithm rotated.
    pub alg: String,
    /// The key that takes over.
    pub kid: String,
    /// When it starts signing (Unix seconds).
    pub activates_at: i64,
    /// True when it already signs.
    pub immediate: bool,
}

/// How often relying parties should refetch the SPIFFE bundle.
pub const BUNDLE_REFRESH_HINT_SECS: u64 = 300;

impl KeyManager {
    /// Opens every stored key with `kek` (a wrong KEK or a corrupt key stops
    /// here, before anything is written), then runs one rotation tick, which
    /// creates the first keys on a fresh store.
    ///
    /// # Errors
    /// [`ServerError`] from the store or the key ring.
    pub async fn start(
        store: Arc<dyn Store>,
        kek: Kek,
        algorithms: Vec<Algorithm>,
        policy: RotationPolicy,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ServerError> {
        let first = load_published(&*store, &kek).await?;
        let manager = Self {
            store,
            kek,
            algorithms,
            policy,
            clock,
            current: ArcSwap::from_pointee(first),
        };
        manager.tick().await?;
        Ok(manager)
    }

    /// The key-encryption key, for other secrets sealed at rest (broker
    /// backend passwords).
    pub fn kek(&self) -> &Kek {
        &self.kek
    }

    /// The published ring: a lock-free load.
    pub fn current(&self) -> Arc<Published> {
        self.current.load_full()
    }

    /// The enabled algorithms, default first.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    /// The rotation schedule.
    pub fn policy(&self) -> &RotationPolicy {
        &self.policy
    }

    /// Applies the rotation plan for now, then republishes. Safe to run on
    /// every replica: the plan is made inside the store's key lock.
    ///
    /// # Errors
    /// [`ServerError`] from the store or key handling.
    pub async fn tick(&self) -> Result<Vec<KeyChange>, ServerError> {
        self.tick_as(None).await
    }

    /// [`KeyManager::tick`] as the `key_rotation` job: plans only while
    /// `job` is held, and the store refuses the change if it no longer is
    /// (fencing); always picks up other replicas' changes.
    ///
    /// # Errors
    /// As [`KeyManager::tick`].
    pub async fn tick_as(
        &self,
        job: Option<&crate::jobs::JobLease>,
    ) -> Result<Vec<KeyChange>, ServerError> {
        let now = self.clock.now();
        let correlation_id = crate::correlation::new_id();
        let planner =
            |rows: &[SigningKeyRow]| -> Result<(Vec<KeyChange>, Vec<AuditDraft>), String> {
                let metas = metas_of(rows)?;
                let actions = plan(now, &metas, &self.algorithms, &self.policy);
                self.materialise(&actions, now, &correlation_id, "system")
            };
        let fence = job.map(crate::jobs::JobLease::fence);
        let changes = match job {
            Some(j) if !j.held() => Vec::new(),
            _ => {
                self.store
                    .update_signing_keys_fenced(&planner, fence.as_ref())
                    .await?
            }
        };
        if !changes.is_empty() {
            tracing::info!(
                changes = changes.len(),
                correlation_id,
                "signing keys rotated"
            );
        }
        // Reopen the keys only when they changed here or on another replica.
        if !changes.is_empty()
            || self.store.signing_keys_generation().await? != self.current().generation
        {
            self.reload().await?;
        }
        Ok(changes)
    }

    /// Brings the rotation of `alg` forward: the next key signs as soon as it
    /// has been published for the configured lead (at once if it has).
    ///
    /// # Errors
    /// [`ServerError::NotEnabled`] when `alg` has no keys; store errors.
    pub async fn rotate(
        &self,
        alg: Algorithm,
        actor: &str,
        correlation_id: &str,
    ) -> Result<RotationScheduled, ServerError> {
        if !self.algorithms.contains(&alg) {
            return Err(ServerError::NotEnabled { alg });
        }
        let now = self.clock.now();
        let scheduled = std::sync::Mutex::new(None);
        let planner =
            |rows: &[SigningKeyRow]| -> Result<(Vec<KeyChange>, Vec<AuditDraft>), String> {
                let metas = metas_of(rows)?;
                let Some((action, when)) = plan_rotate_now(now, &metas, alg, &self.policy) else {
                    return Ok((vec![], vec![]));
                };
                if let KeyAction::Reschedule { kid, .. } = &action {
                    if let Ok(mut s) = scheduled.lock() {
                        *s = Some((kid.clone(), when));
                    }
                }
                self.materialise(&[action], now, correlation_id, actor)
            };
        self.store.update_signing_keys(&planner).await?;
        self.tick().await?;
        let (kid, when) = scheduled
            .into_inner()
            .ok()
            .flatten()
            .ok_or(ServerError::NotEnabled { alg })?;
        Ok(RotationScheduled {
            alg: alg.to_string(),
            kid,
            activates_at: unix_seconds(when),
            immediate: when <= now,
        })
    }

    /// Emergency rotation after `alg`'s signing key was compromised: the key
    /// is deleted from the store and the JWKS at once, and the pre-published
    /// next key signs immediately.
    ///
    /// # Errors
    /// [`ServerError::NotEnabled`]; store errors.
    pub async fn replace_compromised(
        &self,
        alg: Algorithm,
        actor: &str,
        correlation_id: &str,
    ) -> Result<RotationScheduled, ServerError> {
        if !self.algorithms.contains(&alg) {
            return Err(ServerError::NotEnabled { alg });
        }
        let now = self.clock.now();
        let planner =
            |rows: &[SigningKeyRow]| -> Result<(Vec<KeyChange>, Vec<AuditDraft>), String> {
                let metas = metas_of(rows)?;
                let actions = plan_compromised(now, &metas, alg, &self.policy);
                let (changes, mut audits) =
                    self.materialise(&actions, now, correlation_id, actor)?;
                for a in &mut audits {
                    a.reason = "signing key compromised: emergency rotation".into();
                }
                Ok((changes, audits))
            };
        self.store.update_signing_keys(&planner).await?;
        self.reload().await?;
        tracing::warn!(%alg, actor, correlation_id, "compromised signing key removed; the next key signs now");
        let kid = self
            .current()
            .ring
            .signer(alg)
            .map(|k| k.kid().to_owned())
            .ok_or(ServerError::NotEnabled { alg })?;
        Ok(RotationScheduled {
            alg: alg.to_string(),
            kid,
            activates_at: unix_seconds(now),
            immediate: true,
        })
    }

    /// Re-reads the keys from the store and publishes them (picks up changes
    /// made by other replicas).
    ///
    /// # Errors
    /// [`ServerError`] from the store or key ring.
    pub async fn reload(&self) -> Result<(), ServerError> {
        let published = load_published(&*self.store, &self.kek).await?;
        self.current.store(Arc::new(published));
        Ok(())
    }

    fn materialise(
        &self,
        actions: &[KeyAction],
        now: SystemTime,
        correlation_id: &str,
        actor: &str,
    ) -> Result<(Vec<KeyChange>, Vec<AuditDraft>), String> {
        let mut changes = Vec::with_capacity(actions.len());
        let mut audits = Vec::with_capacity(actions.len());
        for action in actions {
            let (change, what, subject) = match action {
                KeyAction::Create {
                    alg,
                    state,
                    activate_at,
                } => {
                    let sealed = SealedKey::generate(&self.kek, *alg, *state, now, *activate_at)
                        .map_err(|e| e.to_string())?;
                    let kid = sealed.meta.kid.clone();
                    (
                        KeyChange::Insert(row_from_sealed(&sealed)),
                        format!("key.create.{state}"),
                        kid,
                    )
                }
                KeyAction::Promote { kid } => (
                    KeyChange::SetState {
                        kid: kid.clone(),
                        state: KeyState::Active,
                        retire_at: None,
                    },
                    "key.activate".into(),
                    kid.clone(),
                ),
                KeyAction::Demote { kid, retire_at } => (
                    KeyChange::SetState {
                        kid: kid.clone(),
                        state: KeyState::Previous,
                        retire_at: Some(unix_seconds(*retire_at)),
                    },
                    "key.retire".into(),
                    kid.clone(),
                ),
                KeyAction::Reschedule { kid, activate_at } => (
                    KeyChange::SetActivation {
                        kid: kid.clone(),
                        activate_at: unix_seconds(*activate_at),
                    },
                    "key.rotate".into(),
                    kid.clone(),
                ),
                KeyAction::Delete { kid } => (
                    KeyChange::Delete { kid: kid.clone() },
                    "key.delete".into(),
                    kid.clone(),
                ),
            };
            changes.push(change);
            audits.push(AuditDraft {
                at_ms: crate::correlation::unix_millis(now),
                correlation_id: correlation_id.to_owned(),
                actor: actor.to_owned(),
                action: what,
                subject,
                tenant: None,
                decision: Decision::Allow,
                reason: "rotation schedule".into(),
                evidence_digest: None,
            });
        }
        Ok((changes, audits))
    }
}

/// Re-seals the signing keys not yet under `new` (KEK rotation), in one
/// transaction, each audited. Keys already under `new` are skipped, so a
/// rekey that stopped half-way can be run again (issue 9: it failed here
/// every time, since `old` does not open a key re-sealed under `new`). Run
/// it with the servers stopped (or restart them right after with the new
/// KEK: a replica still holding the old KEK keeps its loaded keys but
/// cannot load changed ones).
///
/// # Errors
/// A wrong `old` KEK or a corrupt key stops the whole operation; nothing is
/// changed then.
pub async fn reseal_all(
    store: &dyn Store,
    old: &Kek,
    new: &Kek,
    actor: &str,
    at_ms: i64,
    correlation_id: &str,
) -> Result<usize, ServerError> {
    let planner = |rows: &[SigningKeyRow]| -> Result<(Vec<KeyChange>, Vec<AuditDraft>), String> {
        let mut changes = Vec::with_capacity(rows.len());
        let mut audits = Vec::with_capacity(rows.len());
        for row in rows
            .iter()
            .filter(|r| r.kek_fingerprint != new.fingerprint())
        {
            let sealed = SealedKey {
                meta: meta_from_row(row)?,
                sealed: row.sealed_private.clone(),
                kek_fingerprint: row.kek_fingerprint.clone(),
            };
            let moved = sealed.reseal(old, new).map_err(|e| e.to_string())?;
            changes.push(KeyChange::Reseal {
                kid: row.kid.clone(),
                sealed_private: moved.sealed,
                kek_fingerprint: moved.kek_fingerprint,
            });
            audits.push(crate::rekey::event(
                actor,
                at_ms,
                correlation_id,
                "key.reseal",
                &row.kid,
                old,
                new,
            ));
        }
        Ok((changes, audits))
    };
    Ok(store.update_signing_keys(&planner).await?.len())
}

async fn load_published(store: &dyn Store, kek: &Kek) -> Result<Published, ServerError> {
    let rows = store.list_signing_keys().await?;
    let generation = store.signing_keys_generation().await?;
    let sealed = rows
        .iter()
        .map(|r| {
            Ok(SealedKey {
                meta: meta_from_row(r)?,
                sealed: r.sealed_private.clone(),
                kek_fingerprint: r.kek_fingerprint.clone(),
            })
        })
        .collect::<Result<Vec<_>, String>>()
        .map_err(ServerError::StoredKey)?;
    let ring = KeyRing::load(kek, &sealed)?;
    let jwks_json =
        serde_json::to_vec(ring.jwks()).map_err(|e| ServerError::StoredKey(e.to_string()))?;
    let bundle_keys: Vec<Jwk> = ring
        .jwks()
        .keys
        .iter()
        .map(|k| Jwk {
            use_: Some("jwt-svid".into()),
            alg: None,
            ..k.clone()
        })
        .collect();
    let bundle_keys = bundle_keys
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServerError::StoredKey(e.to_string()))?;
    Ok(Published {
        ring,
        jwks_json,
        bundle_keys,
        generation,
    })
}

fn metas_of(rows: &[SigningKeyRow]) -> Result<Vec<KeyMeta>, String> {
    rows.iter().map(meta_from_row).collect()
}

fn meta_from_row(r: &SigningKeyRow) -> Result<KeyMeta, String> {
    Ok(KeyMeta {
        kid: r.kid.clone(),
        alg: r
            .alg
            .parse()
            .map_err(|e| format!("signing key {}: {e}", r.kid))?,
        state: r.state,
        created_at: from_unix_seconds(r.created_at),
        activate_at: from_unix_seconds(r.activate_at),
        retire_at: r.retire_at.map(from_unix_seconds),
    })
}

fn row_from_sealed(s: &SealedKey) -> SigningKeyRow {
    SigningKeyRow {
        kid: s.meta.kid.clone(),
        alg: s.meta.alg.to_string(),
        state: s.meta.state,
        created_at: unix_seconds(s.meta.created_at),
        activate_at: unix_seconds(s.meta.activate_at),
        retire_at: s.meta.retire_at.map(unix_seconds),
        sealed_private: s.sealed.clone(),
        kek_fingerprint: s.kek_fingerprint.clone(),
    }
}
