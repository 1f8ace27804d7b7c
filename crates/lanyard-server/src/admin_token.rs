//! Admin bearer tokens: `lya1.<id>.<secret>`.
//!
//! Only SHA-256 of the secret is stored. Verification looks the token up by
//! its public id and compares hashes in constant time; an unknown id costs
//! the same comparison against a dummy hash.

use aws_lc_rs::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use lanyard_core::{Clock, Decision};
use lanyard_store::{AdminTokenRow, AuditDraft, Store, StoreError};
use subtle::ConstantTimeEq as _;

use crate::correlation::unix_millis;

const PREFIX: &str = "lya1";

/// A freshly created admin token. `Debug` redacts it.
pub struct NewAdminToken {
    /// The public id.
    pub id: String,
    /// The whole bearer token; shown once.
    pub token: String,
}

impl std::fmt::Debug for NewAdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewAdminToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Creates and stores an admin token named `name`; audited as `actor`.
///
/// # Errors
/// [`StoreError`] from the store.
pub async fn create(
    store: &dyn Store,
    clock: &dyn Clock,
    name: &str,
    actor: &str,
) -> Result<NewAdminToken, StoreError> {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    // An RNG failure must not produce a guessable token.
    aws_lc_rs::rand::fill(&mut id)
        .map_err(|_| StoreError::Planner("random number generator failed".into()))?;
    aws_lc_rs::rand::fill(&mut secret)
        .map_err(|_| StoreError::Planner("random number generator failed".into()))?;
    let id = lanyard_core::hex::encode(&id);
    let secret = B64.encode(secret);
    let row = AdminTokenRow {
        id: id.clone(),
        name: name.to_owned(),
        secret_hash: hash(&secret),
        created_at: clock.unix_seconds(),
    };
    let audit = AuditDraft {
        at_ms: unix_millis(clock.now()),
        correlation_id: crate::correlation::new_id(),
        actor: actor.to_owned(),
        action: "admin_token.create".into(),
        subject: format!("admin:{id}"),
        tenant: None,
        decision: Decision::Allow,
        reason: name.to_owned(),
        evidence_digest: None,
    };
    store.create_admin_token(row, audit).await?;
    Ok(NewAdminToken {
        token: format!("{PREFIX}.{id}.{secret}"),
        id,
    })
}

/// Checks a presented bearer token; returns its id when valid.
///
/// # Errors
/// [`StoreError`] only when the store fails; a bad token is `Ok(None)`.
pub async fn verify(store: &dyn Store, presented: &str) -> Result<Option<String>, StoreError> {
    let mut parts = presented.split('.');
    let (Some(PREFIX), Some(id), Some(secret), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ok(None);
    };
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let row = store.fetch_admin_token(id).await?;
    let presented_hash = hash(secret);
    let stored = row
        .as_ref()
        .map_or(&[0u8; 32][..], |r| r.secret_hash.as_slice());
    let equal: bool = presented_hash.ct_eq(stored).into();
    Ok((equal && row.is_some()).then(|| id.to_owned()))
}

fn hash(secret: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, secret.as_bytes())
        .as_ref()
        .to_vec()
}
