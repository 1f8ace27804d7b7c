//! Row types.

use lanyard_core::{KeyState, RevocationKind, TenantId};
use serde::Serialize;

fn ser_kind<S: serde::Serializer>(k: &RevocationKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(k.as_str())
}

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
    /// What is revoked.
    #[serde(serialize_with = "ser_kind")]
    pub kind: RevocationKind,
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

/// An X.509 CA certificate Lanyard holds: a self-signed root or a signing
/// intermediate. `sealed_private` is the KEK-sealed PKCS#8 key.
#[derive(Clone, PartialEq, Eq)]
pub struct X509CaRow {
    /// SHA-256 of the certificate, hex.
    pub id: String,
    /// `root` or `intermediate`.
    pub role: String,
    /// Rotation state.
    pub state: KeyState,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds: when it starts (or started) signing.
    pub activate_at: i64,
    /// Unix seconds, for `previous` rows.
    pub retire_at: Option<i64>,
    /// The certificate's `notAfter`, Unix seconds.
    pub not_after: i64,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// Sealed private key.
    pub sealed_private: Vec<u8>,
    /// Fingerprint of the sealing KEK.
    pub kek_fingerprint: String,
}

impl std::fmt::Debug for X509CaRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509CaRow")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("state", &self.state)
            .field("activate_at", &self.activate_at)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// One change to the X.509 CAs, applied by [`crate::Store::update_x509_cas`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaChange {
    /// Insert a CA.
    Insert(X509CaRow),
    /// Change a CA's state (and retire time).
    SetState {
        /// CA id.
        id: String,
        /// New state.
        state: KeyState,
        /// Retire time for `previous`.
        retire_at: Option<i64>,
    },
    /// Change when a CA starts signing.
    SetActivation {
        /// CA id.
        id: String,
        /// Unix seconds.
        activate_at: i64,
    },
    /// Replace a CA key's sealed private part (KEK rotation).
    Reseal {
        /// CA id.
        id: String,
        /// The key sealed under the new KEK.
        sealed_private: Vec<u8>,
        /// Fingerprint of the new KEK.
        kek_fingerprint: String,
    },
    /// Remove a CA.
    Delete {
        /// CA id.
        id: String,
    },
}

/// A one-time node join token. Only a SHA-256 of its secret is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JoinTokenRow {
    /// Public id (printed, used to list and audit).
    pub id: String,
    /// SHA-256 of the whole token, hex.
    #[serde(skip)]
    pub token_hash: String,
    /// The node id the agent gets.
    pub node_id: String,
    /// Trust domain the token is for.
    pub trust_domain: String,
    /// Extra node selectors granted.
    pub selectors: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// Unix seconds, once used.
    pub used_at: Option<i64>,
    /// Who created it.
    pub created_by: String,
}

/// An attested node (a host running `lanyard agent`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRow {
    /// Node id.
    pub id: String,
    /// Its SPIFFE ID (`spiffe://TD/lanyard/node/ID`).
    pub spiffe_id: String,
    /// How it attested: `join_token`, `k8s_psat`, `dev`.
    pub attestation: String,
    /// Node selectors.
    pub selectors: Vec<String>,
    /// Serial of its current node SVID, hex: the only node certificate the
    /// node API accepts from it.
    pub svid_serial: String,
    /// Serial of the SVID a renewal just issued (empty when none is
    /// pending); accepted too, and promoted to current at its first use, so
    /// an agent that lost the renewal's answer keeps its old SVID working.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub svid_serial_next: String,
    /// Unix seconds.
    pub svid_expires_at: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub last_seen: i64,
}
