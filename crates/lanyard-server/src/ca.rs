//! The X.509 CA manager: a root (self-signed, or an upstream CA from PEM
//! files) and signing intermediates rotated on a schedule, sealed in the
//! store like the JWT keys and planned inside the store's CA lock so replicas
//! never race.
//!
//! Intermediates follow the same planner as the JWT keys
//! ([`lanyard_ca::rotation::plan`]): the next intermediate is created
//! `publish_lead` before it signs, the active one signs for
//! `rotation_period`, and a demoted one is kept until every SVID it signed
//! has expired. Each intermediate is valid for its whole life plus the
//! longest SVID, so an SVID never outlives its issuer. The bundle's X.509
//! authorities are the roots.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use lanyard_ca::rotation::{plan, plan_rotate_now};
use lanyard_ca::x509::{self, Authority, CaMaterial, Upstream};
use lanyard_ca::{Kek, KeyAction, KeyMeta};
use lanyard_core::clock::{from_unix_seconds, unix_seconds};
use lanyard_core::{Clock, Decision, KeyState, TrustDomain};
use lanyard_jose::Algorithm;
use lanyard_store::{AuditDraft, CaChange, Store, X509CaRow};
use serde::Serialize;

use crate::config::CaConfig;
use crate::ServerError;

const ROLE_ROOT: &str = "root";
const ROLE_INTERMEDIATE: &str = "intermediate";

/// What signs and what is published, rebuilt when the CAs change.
#[derive(Debug)]
pub struct CaPublished {
    /// Signs X.509-SVIDs with the active intermediate.
    pub authority: Arc<Authority>,
    /// The bundle's X.509 authorities (roots), DER.
    pub roots: Vec<Vec<u8>>,
    /// The same as SPIFFE bundle JWKs (`use: x509-svid`, `x5c`).
    pub bundle_keys: Vec<serde_json::Value>,
    /// Store generation of the CAs (part of `spiffe_sequence`).
    pub generation: i64,
}

/// One stored CA, for `lanyard ca list`-style output.
#[derive(Debug, Clone, Serialize)]
pub struct CaSummary {
    /// SHA-256 of the certificate.
    pub id: String,
    /// `root` or `intermediate`.
    pub role: String,
    /// `next`, `active` or `previous`.
    pub state: String,
    /// Unix seconds.
    pub activate_at: i64,
    /// Unix seconds.
    pub not_after: i64,
}

/// Owns the X.509 CAs.
#[derive(Debug)]
pub struct CaManager {
    store: Arc<dyn Store>,
    kek: Kek,
    trust_domain: TrustDomain,
    config: CaConfig,
    upstream: Option<Upstream>,
    clock: Arc<dyn Clock>,
    current: ArcSwap<CaPublished>,
}

impl CaManager {
    /// Loads the upstream CA (if configured), runs one rotation tick (which
    /// creates the root and first intermediates on a fresh store), and
    /// opens the active intermediate.
    ///
    /// # Errors
    /// [`ServerError`] for unreadable upstream files, a wrong KEK, store errors.
    pub async fn start(
        store: Arc<dyn Store>,
        kek: Kek,
        trust_domain: TrustDomain,
        config: CaConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ServerError> {
        let upstream = match &config.upstream {
            None => None,
            Some((cert, key, bundle)) => {
                let read = |p: &std::path::PathBuf| {
                    std::fs::read_to_string(p).map_err(|source| ServerError::Io {
                        what: format!("reading upstream CA file {}", p.display()),
                        source,
                    })
                };
                let up = x509::load_upstream(&read(cert)?, &read(key)?, &read(bundle)?)
                    .map_err(|e| ServerError::StoredKey(format!("upstream CA: {e}")))?;
                Some(up)
            }
        };
        let placeholder = Authority::generate(
            &trust_domain,
            clock.now(),
            Duration::from_secs(120),
            Duration::from_secs(60),
        )
        .map_err(|e| ServerError::StoredKey(e.to_string()))?;
        let manager = Self {
            store,
            kek,
            trust_domain,
            config,
            upstream,
            clock,
            current: ArcSwap::from_pointee(CaPublished {
                authority: Arc::new(placeholder),
                roots: Vec::new(),
                bundle_keys: Vec::new(),
                generation: -1,
            }),
        };
        manager.tick().await?;
        manager.reload().await?;
        Ok(manager)
    }

    /// The current CA: a lock-free load.
    pub fn current(&self) -> Arc<CaPublished> {
        self.current.load_full()
    }

    /// Default and longest X.509-SVID lifetimes.
    pub fn svid_ttls(&self) -> (Duration, Duration) {
        (self.config.svid_ttl, self.config.svid_max_ttl)
    }

    /// The lifetime of a node's own SVID (`ca.node_svid_ttl`).
    #[must_use]
    pub fn node_svid_ttl(&self) -> Duration {
        self.config.node_svid_ttl
    }

    /// Applies the rotation plan for now and republishes on change (here or
    /// on another replica).
    ///
    /// # Errors
    /// [`ServerError`] from the store or key handling.
    pub async fn tick(&self) -> Result<usize, ServerError> {
        self.apply(false, "system", None).await
    }

    /// [`CaManager::tick`] as the `key_rotation` job (see
    /// [`crate::keys::KeyManager::tick_as`]).
    ///
    /// # Errors
    /// As [`CaManager::tick`].
    pub async fn tick_as(&self, job: Option<&crate::jobs::JobLease>) -> Result<usize, ServerError> {
        self.apply(false, "system", job).await
    }

    /// Brings the next intermediate forward (it signs once it has existed
    /// for the publish lead).
    ///
    /// # Errors
    /// [`ServerError`] from the store or key handling.
    pub async fn rotate(&self, actor: &str) -> Result<usize, ServerError> {
        self.apply(true, actor, None).await
    }

    async fn apply(
        &self,
        now_requested: bool,
        actor: &str,
        job: Option<&crate::jobs::JobLease>,
    ) -> Result<usize, ServerError> {
        let now = self.clock.now();
        let correlation_id = crate::correlation::new_id();
        let planner = |rows: &[X509CaRow]| -> Result<(Vec<CaChange>, Vec<AuditDraft>), String> {
            self.plan(rows, now, now_requested, &correlation_id, actor)
        };
        let fence = job.map(crate::jobs::JobLease::fence);
        let changes = match job {
            Some(j) if !j.held() => Vec::new(),
            _ => {
                self.store
                    .update_x509_cas_fenced(&planner, fence.as_ref())
                    .await?
            }
        };
        if !changes.is_empty() {
            tracing::info!(changes = changes.len(), correlation_id, "X.509 CA rotated");
        }
        if !changes.is_empty()
            || self.store.generation("x509_cas").await? != self.current().generation
        {
            self.reload().await?;
        }
        Ok(changes.len())
    }

    fn plan(
        &self,
        rows: &[X509CaRow],
        now: SystemTime,
        now_requested: bool,
        correlation_id: &str,
        actor: &str,
    ) -> Result<(Vec<CaChange>, Vec<AuditDraft>), String> {
        let mut changes = Vec::new();
        let mut audits = Vec::new();
        let audit = |action: &str, subject: &str, reason: &str| AuditDraft {
            at_ms: crate::correlation::unix_millis(now),
            correlation_id: correlation_id.to_owned(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            subject: subject.to_owned(),
            tenant: None,
            decision: Decision::Allow,
            reason: reason.to_owned(),
            evidence_digest: None,
        };
        // The parent of new intermediates: the upstream CA or our active root.
        let parent = match &self.upstream {
            Some(up) => up.signer.clone(),
            None => match rows
                .iter()
                .find(|r| r.role == ROLE_ROOT && r.state == KeyState::Active)
            {
                Some(r)
                    if from_unix_seconds(r.not_after)
                        > now + self.config.rotation.rotation_period =>
                {
                    self.open(r)?
                }
                _ => {
                    // First start (or the root is about to end): a new root.
                    let root = x509::generate_root(&self.trust_domain, now, self.config.root_ttl)
                        .map_err(|e| e.to_string())?;
                    for old in rows
                        .iter()
                        .filter(|r| r.role == ROLE_ROOT && r.state == KeyState::Active)
                    {
                        changes.push(CaChange::SetState {
                            id: old.id.clone(),
                            state: KeyState::Previous,
                            retire_at: Some(old.not_after),
                        });
                    }
                    let row = self.row(ROLE_ROOT, KeyState::Active, &root, now, now)?;
                    audits.push(audit(
                        "ca.root.create",
                        &row.id,
                        "self-signed root for the trust domain",
                    ));
                    changes.push(CaChange::Insert(row));
                    root
                }
            },
        };
        for r in rows
            .iter()
            .filter(|r| r.role == ROLE_ROOT && r.state == KeyState::Previous)
        {
            if r.retire_at.is_none_or(|t| from_unix_seconds(t) <= now) {
                changes.push(CaChange::Delete { id: r.id.clone() });
                audits.push(audit("ca.root.delete", &r.id, "expired"));
            }
        }
        let metas: Vec<KeyMeta> = rows
            .iter()
            .filter(|r| r.role == ROLE_INTERMEDIATE)
            .map(|r| KeyMeta {
                kid: r.id.clone(),
                alg: Algorithm::Es256,
                state: r.state,
                created_at: from_unix_seconds(r.created_at),
                activate_at: from_unix_seconds(r.activate_at),
                retire_at: r.retire_at.map(from_unix_seconds),
            })
            .collect();
        let actions = if now_requested {
            plan_rotate_now(now, &metas, Algorithm::Es256, &self.config.rotation)
                .map(|(action, _)| vec![action])
                .unwrap_or_default()
        } else {
            plan(now, &metas, &[Algorithm::Es256], &self.config.rotation)
        };
        let policy = self.config.rotation;
        for action in actions {
            match action {
                KeyAction::Create {
                    state, activate_at, ..
                } => {
                    // Valid from now through its signing period and the
                    // longest SVID it may sign, plus slack for a late tick.
                    let lead = activate_at.duration_since(now).unwrap_or_default();
                    let ttl = lead + policy.rotation_period * 2 + policy.retain_after;
                    let int = x509::generate_intermediate(&self.trust_domain, &parent, now, ttl)
                        .map_err(|e| e.to_string())?;
                    let row = self.row(ROLE_INTERMEDIATE, state, &int, now, activate_at)?;
                    audits.push(audit(
                        &format!("ca.intermediate.create.{state}"),
                        &row.id,
                        "rotation schedule",
                    ));
                    changes.push(CaChange::Insert(row));
                }
                KeyAction::Promote { kid } => {
                    audits.push(audit("ca.intermediate.activate", &kid, "rotation schedule"));
                    changes.push(CaChange::SetState {
                        id: kid,
                        state: KeyState::Active,
                        retire_at: None,
                    });
                }
                KeyAction::Demote { kid, retire_at } => {
                    audits.push(audit("ca.intermediate.retire", &kid, "rotation schedule"));
                    changes.push(CaChange::SetState {
                        id: kid,
                        state: KeyState::Previous,
                        retire_at: Some(unix_seconds(retire_at)),
                    });
                }
                KeyAction::Reschedule { kid, activate_at } => {
                    audits.push(audit("ca.intermediate.rotate", &kid, "rotation requested"));
                    changes.push(CaChange::SetActivation {
                        id: kid,
                        activate_at: unix_seconds(activate_at),
                    });
                }
                KeyAction::Delete { kid } => {
                    audits.push(audit(
                        "ca.intermediate.delete",
                        &kid,
                        "every SVID it signed has expired",
                    ));
                    changes.push(CaChange::Delete { id: kid });
                }
            }
        }
        Ok((changes, audits))
    }

    fn row(
        &self,
        role: &str,
        state: KeyState,
        m: &CaMaterial,
        now: SystemTime,
        activate_at: SystemTime,
    ) -> Result<X509CaRow, String> {
        let id = lanyard_core::hex::encode(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &m.cert_der).as_ref(),
        );
        let sealed = self
            .kek
            .seal(m.key_pkcs8(), &aad(&id))
            .map_err(|e| e.to_string())?;
        Ok(X509CaRow {
            id,
            role: role.to_owned(),
            state,
            created_at: unix_seconds(now),
            activate_at: unix_seconds(activate_at),
            retire_at: None,
            not_after: unix_seconds(m.not_after),
            cert_der: m.cert_der.clone(),
            sealed_private: sealed,
            kek_fingerprint: self.kek.fingerprint().to_owned(),
        })
    }

    fn open(&self, row: &X509CaRow) -> Result<CaMaterial, String> {
        if row.kek_fingerprint != self.kek.fingerprint() {
            return Err(format!(
                "X.509 CA {} is sealed with KEK {} but the configured KEK is {}",
                row.id,
                row.kek_fingerprint,
                self.kek.fingerprint()
            ));
        }
        let key = self
            .kek
            .open(&row.sealed_private, &aad(&row.id))
            .map_err(|e| format!("X.509 CA {}: {e}", row.id))?;
        CaMaterial::from_parts(row.cert_der.clone(), key.to_vec())
            .map_err(|e| format!("X.509 CA {}: {e}", row.id))
    }

    async fn reload(&self) -> Result<(), ServerError> {
        let generation = self.store.generation("x509_cas").await?;
        let rows = self.store.list_x509_cas().await?;
        let active = rows
            .iter()
            .find(|r| r.role == ROLE_INTERMEDIATE && r.state == KeyState::Active)
            .ok_or_else(|| ServerError::StoredKey("no active X.509 intermediate".into()))?;
        let material = self.open(active).map_err(ServerError::StoredKey)?;
        let (chain_above, roots) = match &self.upstream {
            Some(up) => {
                let mut above = vec![up.signer.cert_der.clone()];
                above.extend(up.chain_above.iter().cloned());
                (above, up.roots.clone())
            }
            None => (
                Vec::new(),
                rows.iter()
                    .filter(|r| r.role == ROLE_ROOT)
                    .map(|r| r.cert_der.clone())
                    .collect(),
            ),
        };
        let authority = Authority::new(&self.trust_domain, &material, chain_above, roots.clone())
            .map_err(|e| ServerError::StoredKey(e.to_string()))?;
        let bundle_keys = roots
            .iter()
            .filter_map(|der| lanyard_ca::bundle::x509_jwk(der))
            .collect();
        self.current.store(Arc::new(CaPublished {
            authority: Arc::new(authority),
            roots,
            bundle_keys,
            generation,
        }));
        Ok(())
    }

    /// Every stored CA (roots and intermediates).
    ///
    /// # Errors
    /// Store errors.
    pub async fn list(&self) -> Result<Vec<CaSummary>, ServerError> {
        Ok(self
            .store
            .list_x509_cas()
            .await?
            .into_iter()
            .map(|r| CaSummary {
                id: r.id,
                role: r.role,
                state: r.state.as_str().to_owned(),
                activate_at: r.activate_at,
                not_after: r.not_after,
            })
            .collect())
    }
}

/// Re-seals every stored CA key under `new` (KEK rotation), in one
/// transaction, each audited. CAs already sealed under `new` are left alone,
/// so a rekey that stopped half-way can simply be run again.
///
/// # Errors
/// [`ServerError`] when a key does not open with `old` or the store fails;
/// nothing is changed then.
pub async fn reseal_all(
    store: &dyn Store,
    old: &Kek,
    new: &Kek,
    actor: &str,
    at_ms: i64,
    correlation_id: &str,
) -> Result<usize, ServerError> {
    let planner = |rows: &[X509CaRow]| -> Result<(Vec<CaChange>, Vec<AuditDraft>), String> {
        let mut changes = Vec::new();
        let mut audits = Vec::new();
        for row in rows
            .iter()
            .filter(|r| r.kek_fingerprint != new.fingerprint())
        {
            let key = old
                .open(&row.sealed_private, &aad(&row.id))
                .map_err(|e| format!("X.509 CA {}: {e}", row.id))?;
            let sealed = new.seal(&key, &aad(&row.id)).map_err(|e| e.to_string())?;
            changes.push(CaChange::Reseal {
                id: row.id.clone(),
                sealed_private: sealed,
                kek_fingerprint: new.fingerprint().to_owned(),
            });
            audits.push(crate::rekey::event(
                actor,
                at_ms,
                correlation_id,
                "ca.reseal",
                &row.id,
                old,
                new,
            ));
        }
        Ok((changes, audits))
    };
    Ok(store.update_x509_cas(&planner).await?.len())
}

fn aad(id: &str) -> String {
    format!("lanyard x509 ca {id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn a_root_becomes_an_x509_svid_bundle_key() -> Result<(), Box<dyn std::error::Error>> {
        let td = TrustDomain::parse("example.org")?;
        let root = x509::generate_root(&td, SystemTime::now(), Duration::from_secs(3600))?;
        let jwk = lanyard_ca::bundle::x509_jwk(&root.cert_der).ok_or("no JWK")?;
        assert_eq!(jwk["use"], "x509-svid");
        assert_eq!(jwk["crv"], "P-256");
        assert!(jwk.get("kid").is_none());
        let x5c = jwk["x5c"][0].as_str().ok_or("x5c")?;
        assert_eq!(
            base64::engine::general_purpose::STANDARD.decode(x5c)?,
            root.cert_der
        );
        // x and y are the certificate's own public key.
        let (_, cert) = x509_parser::parse_x509_certificate(&root.cert_der)?;
        let point = &cert.public_key().subject_public_key.data;
        let mut expected = vec![4u8];
        expected.extend(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(jwk["x"].as_str().ok_or("x")?)?,
        );
        expected.extend(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(jwk["y"].as_str().ok_or("y")?)?,
        );
        assert_eq!(point.as_ref(), expected.as_slice());
        Ok(())
    }
}
