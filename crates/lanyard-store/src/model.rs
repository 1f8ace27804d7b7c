//! Row types.

use lanyard_core::{KeyState, TenantId};
use serde::Serialize;

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    /// Validated name.
    pub id: TenantId,
    /// Free text.
    pub description: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A signing key row. `sealed_private` is the KEK-sealed PKCS#8.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyRow {
    /// Key id (RFC 7638 thumbprint).
    pub kid: String,
    /// JOSE algorithm name.
    pub alg: String,
    /// Rotation state.
    pub state: KeyState,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub activate_at: i64,
    /// Unix seconds, for `previous` keys.
    pub retire_at: Option<i64>,
    /// Sealed private key.
    pub sealed_private: Vec<u8>,
    /// Fingerprint of the sealing KEK.
    pub kek_fingerprint: String,
}

impl std::fmt::Debug for SigningKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRow")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("state", &self.state)
            .field("activate_at", &self.activate_at)
            .field("retire_at", &self.retire_at)
            .finish_non_exhaustive()
    }
}

/// One change to the signing keys, applied by [`crate::Store::update_signing_keys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChange {
    /// Insert a new key.
    Insert(SigningKeyRow),
    /// Replace a key's sealed private part (KEK rotation).
    Reseal {
        /// Key id.
        kid: String,
        /// The key sealed under the new KEK.
        sealed_private: Vec<u8>,
        /// Fingerprint of the new KEK.
        kek_fingerprint: String,
    },
    /// Change a key's state (and retire time).
    SetState {
        /// Key id.
        kid: String,
        /// New state.
        state: KeyState,
        /// Retire time for `previous`.
        retire_at: Option<i64>,
    },
    /// Change when a key activates.
    SetActivation {
        /// Key id.
        kid: String,
        /// Unix seconds.
        activate_at: i64,
    },
    /// Remove a key.
    Delete {
        /// Key id.
        kid: String,
    },
}

/// An admin bearer token: the secret is stored only as a SHA-256 hash.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminTokenRow {
    /// Public id (the part before the dot).
    pub id: String,
    /// Human label.
    pub name: String,
    /// SHA-256 of the secret part.
    pub secret_hash: Vec<u8>,
    /// Unix seconds.
    pub created_at: i64,
}

impl std::fmt::Debug for AdminTokenRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminTokenRow")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A trusted issuer: its validated configuration, stored as JSON (the
/// attestation crate owns the schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssuerRow {
    /// Unique name.
    pub name: String,
    /// Configuration JSON.
    pub config: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A revocation: evidence or identities named by `kind`/`value` are refused
/// until `until` (forever when `None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Revocation {
    /// What is revoked: `jti`, `spiffe-id`, `k8s-sa-uid`, `k8s-pod-uid`, `entry`, `subject`.
    pub kind: String,
    /// The revoked value.
    pub value: String,
    /// Why (operator text).
    pub reason: String,
    /// Unix seconds; `None` = forever.
    pub until: Option<i64>,
    /// Unix seconds.
    pub created_at: i64,
    /// Who revoked it.
    pub actor: String,
}

/// Filters for reading the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only events with `seq > after`.
    pub after: i64,
    /// Only events at or after this time (ms).
    pub since_ms: Option<i64>,
    /// Only events with this correlation id.
    pub correlation_id: Option<String>,
    /// At most this many (oldest first).
    pub limit: i64,
}
