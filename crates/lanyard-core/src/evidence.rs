//! Verified evidence: what an attestor proved about a caller.

use crate::{RevocationKey, Selector, TenantId};

/// The result of verifying a token or other attestation: who issued it, what
/// it says about the workload (as selectors), and what audit needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// The trusted issuer's name (as configured), e.g. `prod-cluster`.
    pub issuer: String,
    /// The tenant the issuer binds (fixed, or read from the configured claim).
    pub tenant: Option<TenantId>,
    /// The token's `sub`.
    pub subject: String,
    /// Facts about the workload, sorted and deduplicated.
    pub selectors: Vec<Selector>,
    /// The token's `jti`, when it has one.
    pub jti: Option<String>,
    /// `exp`, Unix seconds.
    pub expires_at: i64,
    /// SHA-256 (hex) of the raw token: audit records this, never the token.
    pub digest: String,
    /// Revocable identifiers named by the evidence (service-account and
    /// pod uids, `jti`, `issuer:sub`).
    pub revocation_keys: Vec<RevocationKey>,
}
