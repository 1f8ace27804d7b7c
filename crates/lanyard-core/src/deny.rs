//! Why a request was refused: data, with a stable code for audit and logs.

use std::fmt;

/// A denial reason. [`DenyReason::as_str`] is stored in audit events and must
/// never change for an existing variant. Callers see the protocol's error
/// (RFC 6749 §5.2, gRPC status), never this detail unless it is safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DenyReason {
    /// The token's issuer is not a trusted issuer.
    UnknownIssuer,
    /// The token is not for the configured audience.
    WrongAudience,
    /// `exp` is in the past (beyond skew).
    Expired,
    /// `nbf` or `iat` is in the future (beyond skew).
    NotYetValid,
    /// `exp - iat` exceeds the issuer's maximum token lifetime.
    LifetimeTooLong,
    /// The header's algorithm is not allowed (`none`, HMAC, not in the issuer's list).
    AlgorithmNotAllowed,
    /// No published key has the token's `kid`.
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// The token is not a well-formed JWT.
    Malformed,
    /// The token is larger than the limit.
    TooLarge,
    /// A legacy (secret-based) Kubernetes service-account token.
    LegacyToken,
    /// A claim the issuer kind requires is missing.
    MissingClaim,
    /// The issuer's keys could not be fetched; nothing is accepted meanwhile.
    IssuerUnavailable,
    /// No registration entry matches the evidence.
    NoMatchingEntry,
    /// More than one entry matches with equal specificity.
    AmbiguousEntry,
    /// The tenant is missing from evidence or entry.
    MissingTenant,
    /// Tenants of issuer, entry and request disagree.
    TenantMismatch,
    /// The requested audience is not one the entry allows.
    AudienceNotAllowed,
    /// The evidence or identity has been revoked.
    Revoked,
    /// The actor is not allowed to act for the subject.
    ActorNotAllowed,
    /// The delegation chain is deeper than allowed.
    ChainTooDeep,
    /// The requested scope is wider than granted.
    ScopeWidening,
    /// The request itself is malformed (missing/duplicated parameters).
    InvalidRequest,
    /// The requested token type is not supported.
    UnsupportedTokenType,
    /// The audience profile cannot issue for this identity (subject template
    /// needs a role the entry lacks, algorithm without a key, audience not alone).
    AudienceProfile,
    /// The identity is reserved for the Lanyard server and its nodes (INV-8).
    ReservedId,
    /// The entry is served by another node's agent (or by none).
    NotServedByNode,
    /// A node presented a certificate that is not its current node SVID.
    StaleNodeSvid,
    /// The request body exceeds the server's limit.
    RequestTooLarge,
}

impl DenyReason {
    /// The stable snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownIssuer => "unknown_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::LifetimeTooLong => "lifetime_too_long",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
            Self::LegacyToken => "legacy_token",
            Self::MissingClaim => "missing_claim",
            Self::IssuerUnavailable => "issuer_unavailable",
            Self::NoMatchingEntry => "no_matching_entry",
            Self::AmbiguousEntry => "ambiguous_entry",
            Self::MissingTenant => "missing_tenant",
            Self::TenantMismatch => "tenant_mismatch",
            Self::AudienceNotAllowed => "audience_not_allowed",
            Self::Revoked => "revoked",
            Self::ActorNotAllowed => "actor_not_allowed",
            Self::ChainTooDeep => "chain_too_deep",
            Self::ScopeWidening => "scope_widening",
            Self::InvalidRequest => "invalid_request",
            Self::UnsupportedTokenType => "unsupported_token_type",
            Self::AudienceProfile => "audience_profile",
            Self::ReservedId => "reserved_id",
            Self::NotServedByNode => "not_served_by_node",
            Self::StaleNodeSvid => "stale_node_svid",
            Self::RequestTooLarge => "request_too_large",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A denial with an operator-facing detail (logged and audited, never sent
/// to the caller as is).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Denial {
    /// The stable reason.
    pub reason: DenyReason,
    /// What exactly was wrong, for the operator. No secrets, no token text.
    pub detail: String,
}

impl Denial {
    /// Builds a denial.
    pub fn new(reason: DenyReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}
