//! Rows and store methods for tamper evidence beyond the hash chain: the
//! audit signing key, signed checkpoints, and the chain's head.
//!
//! Someone who can write the database can rewrite the whole chain
//! consistently; a checkpoint signed with a key kept sealed under the KEK,
//! and copied out of the database (a file, stdout), is what lets
//! `lanyard audit verify --checkpoint` notice.

use serde::Serialize;

use crate::{AuditDraft, StoreFuture};

/// The key that signs audit checkpoints. Its private part is KEK-sealed.
#[derive(Clone, PartialEq, Eq)]
pub struct AuditKeyRow {
    /// Key id (RFC 7638 thumbprint).
    pub kid: String,
    /// Unix seconds.
    pub created_at: i64,
    /// The public JWK, JSON.
    pub public_jwk: String,
    /// Sealed PKCS#8.
    pub sealed_private: Vec<u8>,
    /// Fingerprint of the sealing KEK.
    pub kek_fingerprint: String,
}

impl std::fmt::Debug for AuditKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKeyRow")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// A signed checkpoint: the chain's head `(seq, hash)` at `at_ms`, as a
/// compact JWS by audit key `kid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointRow {
    /// Last sequence number covered.
    pub seq: i64,
    /// Hash of that event.
    pub hash: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Signing key id.
    pub kid: String,
    /// The compact JWS over the checkpoint's JSON.
    pub jws: String,
}

/// The tamper-evidence part of the store.
pub trait AuditStore {
    /// The chain's head: last sequence number and its hash (0 and the
    /// genesis hash when empty).
    fn fetch_audit_head(&self) -> StoreFuture<'_, (i64, String)>;

    /// Every audit key, oldest first.
    fn list_audit_keys(&self) -> StoreFuture<'_, Vec<AuditKeyRow>>;

    /// Stores `key` (and appends `audit`) unless an audit key exists
    /// already; returns every key afterwards. Replicas starting together
    /// thus agree on one key.
    fn create_audit_key(
        &self,
        key: AuditKeyRow,
        audit: AuditDraft,
    ) -> StoreFuture<'_, Vec<AuditKeyRow>>;

    /// Replaces an audit key's sealed part (KEK rotation) and appends `audit`.
    fn reseal_audit_key(&self, key: AuditKeyRow, audit: AuditDraft) -> StoreFuture<'_, ()>;

    /// Stores a checkpoint.
    fn create_audit_checkpoint(&self, checkpoint: CheckpointRow) -> StoreFuture<'_, ()> {
        self.create_audit_checkpoint_fenced(checkpoint, None)
    }

    /// Stores a checkpoint if `fence` (when given) still holds.
    fn create_audit_checkpoint_fenced<'a>(
        &'a self,
        checkpoint: CheckpointRow,
        fence: Option<&'a crate::Fence>,
    ) -> StoreFuture<'a, ()>;

    /// The newest checkpoints, newest first, at most `limit`.
    fn list_audit_checkpoints(&self, limit: i64) -> StoreFuture<'_, Vec<CheckpointRow>>;

    /// Whether the database still refuses `UPDATE` and `DELETE` on the
    /// audit events (its append-only triggers are in place).
    fn audit_is_append_only(&self) -> StoreFuture<'_, bool>;
}
