//! `lanyard server rekey`: every secret sealed under the key-encryption key
//! (signing keys, X.509 CA keys, broker backend secrets, audit keys) moved
//! to a new KEK.
//!
//! Each step re-seals only what is not under the new KEK yet, so a rekey
//! interrupted at any point (a crash, a store error, a key that does not
//! open) is finished by running it again with the same two KEKs (issue 9).
//! Each step is one transaction per kind of secret, and every re-sealed
//! secret is audited.

use lanyard_ca::Kek;
use lanyard_core::Decision;
use lanyard_store::{AuditDraft, Store};
use serde::Serialize;

use crate::ServerError;

/// What a rekey re-sealed (0 for a step that was already done).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Rekeyed {
    /// JWT signing keys.
    pub signing_keys: usize,
    /// X.509 CA keys.
    pub ca_keys: usize,
    /// Broker backend admin secrets.
    pub broker_backends: usize,
    /// Audit checkpoint keys.
    pub audit_keys: usize,
}

/// Which step of a rekey failed, for the operator's message.
#[derive(Debug, thiserror::Error)]
#[error("re-sealing the {step} failed ({done:?} done so far; run the same rekey again to finish): {source}")]
pub struct RekeyError {
    /// The step.
    pub step: &'static str,
    /// What was done before it.
    pub done: Rekeyed,
    /// Why.
    #[source]
    pub source: ServerError,
}

/// Re-seals everything under `new`. Idempotent: rerun it after any failure.
///
/// # Errors
/// [`RekeyError`] naming the step that failed.
pub async fn reseal_everything(
    store: &dyn Store,
    old: &Kek,
    new: &Kek,
    actor: &str,
    at_ms: i64,
) -> Result<Rekeyed, RekeyError> {
    let cid = crate::correlation::new_id();
    let mut done = Rekeyed::default();
    let fail = |step, done, source| RekeyError { step, done, source };
    done.ca_keys = crate::ca::reseal_all(store, old, new, actor, at_ms, &cid)
        .await
        .map_err(|e| fail("X.509 CA keys", done, e))?;
    done.signing_keys = crate::keys::reseal_all(store, old, new, actor, at_ms, &cid)
        .await
        .map_err(|e| fail("signing keys", done, e))?;
    done.broker_backends = crate::broker::reseal_backends(store, old, new, actor, at_ms, &cid)
        .await
        .map_err(|e| fail("broker backend secrets", done, e))?;
    done.audit_keys = crate::checkpoint::reseal_all(store, old, new, actor, at_ms, &cid)
        .await
        .map_err(|e| fail("audit keys", done, e))?;
    Ok(done)
}

/// The audit event of one re-sealed secret.
pub(crate) fn event(
    actor: &str,
    at_ms: i64,
    correlation_id: &str,
    action: &str,
    subject: &str,
    old: &Kek,
    new: &Kek,
) -> AuditDraft {
    AuditDraft {
        at_ms,
        correlation_id: correlation_id.to_owned(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        subject: subject.to_owned(),
        tenant: None,
        decision: Decision::Allow,
        reason: format!(
            "key-encryption key {} -> {}",
            old.fingerprint(),
            new.fingerprint()
        ),
        evidence_digest: None,
    }
}
