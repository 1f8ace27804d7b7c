//! Trusted issuer configuration, validated.

use std::path::PathBuf;

use lanyard_core::TenantId;
use lanyard_jose::{Algorithm, Jwks};
use serde::{Deserialize, Serialize};

/// A configuration error naming the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// A field is invalid.
    #[error("issuer {name:?}: {field}: {message}")]
    Invalid {
        /// Issuer name.
        name: String,
        /// Field name.
        field: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// What kind of tokens an issuer mints, which decides the claims required
/// and the selectors derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssuerKind {
    /// Kubernetes projected service-account tokens.
    Kubernetes,
    /// GitHub Actions OIDC tokens.
    GithubActions,
    /// GitLab CI ID tokens.
    Gitlab,
    /// Any OIDC ID token.
    Oidc,
}

impl IssuerKind {
    /// The selector type prefix of this kind.
    pub fn selector_type(self) -> &'static str {
        match self {
            Self::Kubernetes => "k8s",
            Self::GithubActions => "gha",
            Self::Gitlab => "gitlab",
            Self::Oidc => "oidc",
        }
    }
}

/// Where an issuer's verification keys come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// A JWKS given at configuration time.
    JwksInline(Jwks),
    /// A JWKS URL, fetched and cached.
    JwksUrl(String),
    /// `{issuer}/.well-known/openid-configuration` → `jwks_uri`.
    Discovery,
    /// The Kubernetes TokenReview API validates each token.
    TokenReview {
        /// `https://apiserver/apis/authentication.k8s.io/v1/tokenreviews`.
        url: String,
        /// Bearer token file for the API call.
        #[serde(default)]
        bearer_token_file: Option<PathBuf>,
        /// CA certificate (PEM) for the API server.
        #[serde(default)]
        ca_file: Option<PathBuf>,
    },
}

/// How an issuer's tokens are bound to a tenant (seed 001).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantBinding {
    /// Every token of this issuer belongs to this tenant.
    Fixed(TenantId),
    /// The tenant is a string claim at this RFC 6901 JSON pointer.
    Claim(String),
}

/// A trusted issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Unique name (lowercase letters, digits, `-`, `_`).
    pub name: String,
    /// Token kind.
    pub kind: IssuerKind,
    /// The exact `iss`.
    pub issuer: String,
    /// Verification keys.
    pub keys: KeySource,
    /// The audience tokens must carry.
    pub audience: String,
    /// Tenant binding.
    pub tenant: TenantBinding,
    /// Allowed algorithms.
    #[serde(default = "default_algorithms", with = "alg_names")]
    pub algorithms: Vec<Algorithm>,
    /// Longest accepted `exp - iat`.
    #[serde(default = "default_lifetime")]
    pub max_token_lifetime_secs: u64,
    /// Accept legacy secret-based Kubernetes tokens (they never expire).
    #[serde(default)]
    pub insecure_allow_legacy_tokens: bool,
    /// Allow `http://` key URLs (tests on loopback).
    #[serde(default)]
    pub insecure_http: bool,
}

fn default_algorithms() -> Vec<Algorithm> {
    Algorithm::ALL.to_vec()
}

fn default_lifetime() -> u64 {
    24 * 3600
}

mod alg_names {
    use lanyard_jose::Algorithm;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(algs: &[Algorithm], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(algs.iter().map(|a| a.as_str()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Algorithm>, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        names
            .iter()
            .map(|n| n.parse().map_err(serde::de::Error::custom))
            .collect()
    }
}

/// Longest accepted max token lifetime (Kubernetes allows 48 h tokens).
const MAX_LIFETIME: u64 = 7 * 24 * 3600;

impl IssuerConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// [`AttestError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<(), AttestError> {
        let bad = |field: &'static str, message: String| AttestError::Invalid {
            name: self.name.clone(),
            field,
            message,
        };
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 63
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(bad(
                "name",
                "use 1-63 lowercase letters, digits, '-' or '_'".into(),
            ));
        }
        if self.issuer.is_empty() || self.issuer.len() > 512 {
            return Err(bad(
                "issuer",
                "must be the exact `iss` of the tokens (1-512 bytes)".into(),
            ));
        }
        if self.audience.is_empty() || self.audience.len() > 512 {
            return Err(bad("audience", "is required (1-512 bytes)".into()));
        }
        if self.algorithms.is_empty() {
            return Err(bad(
                "algorithms",
                "name at least one of ES256, RS256".into(),
            ));
        }
        if self.max_token_lifetime_secs == 0 || self.max_token_lifetime_secs > MAX_LIFETIME {
            return Err(bad(
                "max_token_lifetime",
                "must be between 1s and 7 days".into(),
            ));
        }
        if let TenantBinding::Claim(pointer) = &self.tenant {
            if !pointer.starts_with('/') {
                return Err(bad(
                    "tenant_claim",
                    format!("{pointer:?} is not a JSON pointer; write it like /tenant"),
                ));
            }
        }
        if self.insecure_allow_legacy_tokens && self.kind != IssuerKind::Kubernetes {
            return Err(bad(
                "insecure_allow_legacy_tokens",
                "applies to kubernetes issuers only".into(),
            ));
        }
        let url_ok =
            |u: &str| u.starts_with("https://") || (self.insecure_http && u.starts_with("http://"));
        match &self.keys {
            KeySource::JwksInline(jwks) => {
                if jwks.keys.is_empty() {
                    return Err(bad("jwks", "the JWKS has no keys".into()));
                }
                for jwk in &jwks.keys {
                    lanyard_jose::VerifyingKey::from_jwk(jwk)
                        .map_err(|e| bad("jwks", format!("key {:?}: {e}", jwk.kid)))?;
                }
            }
            KeySource::JwksUrl(u) if !url_ok(u) => {
                return Err(bad(
                    "jwks_url",
                    format!("{u:?} must be https:// (http:// only with insecure_http)"),
                ))
            }
            KeySource::Discovery if !url_ok(&self.issuer) => {
                return Err(bad(
                    "issuer",
                    "discovery needs an https:// issuer (http:// only with insecure_http)".into(),
                ))
            }
            KeySource::TokenReview { url, .. } => {
                if !url_ok(url) {
                    return Err(bad(
                        "token_review_url",
                        format!("{url:?} must be https:// (http:// only with insecure_http)"),
                    ));
                }
                if self.kind != IssuerKind::Kubernetes {
                    return Err(bad(
                        "token_review_url",
                        "TokenReview applies to kubernetes issuers only".into(),
                    ));
                }
            }
            _ => {}
        }
        if self.insecure_http {
            tracing::warn!(issuer = %self.name, "insecure_http: this issuer's keys may be fetched over plain HTTP");
        }
        Ok(())
    }
}
