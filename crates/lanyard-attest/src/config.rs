//! Trusted issuer configuration: the serde shape the server stores and the
//! CLI sends, its safe defaults, and validation that names the bad field.

use std::path::PathBuf;

use lanyard_core::TenantId;
use lanyard_jose::{Algorithm, Jwks, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Default for [`IssuerConfig::max_token_lifetime_secs`]: 24 hours.
pub const DEFAULT_MAX_TOKEN_LIFETIME_SECS: u64 = 24 * 3600;
/// Largest [`IssuerConfig::max_token_lifetime_secs`] accepted: 7 days.
/// Projected service-account tokens for an audience other than the API
/// server are requested with `expirationSeconds` (typically one hour);
/// nothing Lanyard should trust lives longer than a week.
pub const MAX_TOKEN_LIFETIME_CEILING_SECS: u64 = 7 * 24 * 3600;
/// The `iss` of legacy (secret-based) Kubernetes service-account tokens.
pub const LEGACY_K8S_ISSUER: &str = "kubernetes/serviceaccount";

const MAX_FIELD_LEN: usize = 512;

/// An invalid issuer configuration or issuer set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// A field of one issuer is invalid.
    #[error("issuer {issuer:?}: {field}: {message}")]
    Invalid {
        /// The issuer's name, as given (shown quoted and possibly invalid).
        issuer: String,
        /// The offending field, as spelled in the configuration.
        field: &'static str,
        /// What is wrong and how to fix it; never secret material.
        message: String,
    },
    /// Two issuers have the same name.
    #[error("issuer name {name:?} is used twice; names must be unique")]
    DuplicateName {
        /// The repeated name.
        name: String,
    },
    /// Two issuers share `iss` and `audience`, so a token could not tell
    /// which one applies.
    #[error("issuers {first:?} and {second:?} both trust iss {issuer:?} with audience {audience:?}; give them different audiences")]
    Ambiguous {
        /// The first issuer's name.
        first: String,
        /// The second issuer's name.
        second: String,
        /// The shared `iss`.
        issuer: String,
        /// The shared audience.
        audience: String,
    },
    /// The HTTP client could not be built.
    #[error("building the HTTP client for issuer key fetches")]
    HttpClient(#[source] reqwest::Error),
}

/// What kind of tokens an issuer mints: decides the claims required and the
/// selectors derived. Serialised in kebab-case (`github-actions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssuerKind {
    /// Kubernetes projected service-account tokens (`k8s:` selectors).
    Kubernetes,
    /// GitHub Actions OIDC tokens (`gha:` selectors).
    GithubActions,
    /// GitLab CI `id_tokens` (`gitlab:` selectors).
    Gitlab,
    /// Any OIDC ID token (`oidc:` selectors).
    Oidc,
}

impl IssuerKind {
    /// The selector type this kind derives, e.g. `k8s`.
    pub fn selector_type(self) -> &'static str {
        match self {
            Self::Kubernetes => "k8s",
            Self::GithubActions => "gha",
            Self::Gitlab => "gitlab",
            Self::Oidc => "oidc",
        }
    }

    /// The kebab-case name, as in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kubernetes => "kubernetes",
            Self::GithubActions => "github-actions",
            Self::Gitlab => "gitlab",
            Self::Oidc => "oidc",
        }
    }
}

/// Where an issuer's verification keys come from. Serialised externally
/// tagged in snake_case: `{"jwks_inline": {...}}`, `{"jwks_url": "..."}`,
/// `"discovery"`, `{"token_review": {"url": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// A JWKS given in the configuration (e.g. `kubectl get --raw
    /// /openid/v1/jwks`). Parsed once when the attestor is built.
    JwksInline(Jwks),
    /// A JWKS URL, fetched and cached.
    JwksUrl(String),
    /// OIDC discovery: `{issuer}/.well-known/openid-configuration`, then its
    /// `jwks_uri`, fetched and cached.
    Discovery,
    /// The cluster's TokenReview API decides, per token.
    TokenReview {
        /// `https://API-SERVER/apis/authentication.k8s.io/v1/tokenreviews`.
        url: String,
        /// A file holding the bearer token for the API call (re-read at
        /// most once a minute, as kubelet rotates it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bearer_token_file: Option<PathBuf>,
        /// A PEM file with the CA certificate(s) of the API server; when
        /// given, only these roots are trusted for the call.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca_file: Option<PathBuf>,
    },
}

impl KeySource {
    /// Short name for logs: `jwks_inline`, `jwks_url`, `discovery`, `token_review`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::JwksInline(_) => "jwks_inline",
            Self::JwksUrl(_) => "jwks_url",
            Self::Discovery => "discovery",
            Self::TokenReview { .. } => "token_review",
        }
    }
}

/// How an issuer's tokens are bound to a tenant. Serialised as
/// `{"fixed": "payments"}` or `{"claim": "/tenant"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantBinding {
    /// Every token of this issuer belongs to this tenant.
    Fixed(TenantId),
    /// The tenant is the string claim at this RFC 6901 JSON pointer (e.g.
    /// `/tenant`, `/kubernetes.io/namespace`). Absent or not a valid tenant
    /// name: the evidence has no tenant and the server denies.
    Claim(String),
}

/// A trusted issuer, as stored by the server (JSON) and sent by the CLI.
///
/// Unknown fields are refused so a typo never silently weakens a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Unique name: 1-63 lowercase letters, digits, `-`, `_`, starting and
    /// ending with a letter or digit. Evidence names its issuer by it.
    pub name: String,
    /// Token kind.
    pub kind: IssuerKind,
    /// The exact `iss` of the tokens (no normalisation, no trailing-slash
    /// games).
    pub issuer: String,
    /// Where the verification keys come from.
    pub keys: KeySource,
    /// The audience the tokens' `aud` must contain.
    pub audience: String,
    /// How tokens are bound to a tenant.
    pub tenant: TenantBinding,
    /// Allowed signature algorithms (default ES256 and RS256). There is no
    /// `none` and no HMAC to allow.
    #[serde(default = "default_algorithms", with = "alg_names")]
    pub algorithms: Vec<Algorithm>,
    /// Longest accepted `exp - iat` (or `exp - nbf`), in seconds; default
    /// [`DEFAULT_MAX_TOKEN_LIFETIME_SECS`], at most
    /// [`MAX_TOKEN_LIFETIME_CEILING_SECS`].
    #[serde(default = "default_lifetime")]
    pub max_token_lifetime_secs: u64,
    /// Accept legacy secret-based service-account tokens (issuer
    /// `kubernetes/serviceaccount`): they have no audience and never expire,
    /// so any such token of the cluster is accepted. Off by default; logs a
    /// warning when on.
    #[serde(default)]
    pub insecure_allow_legacy_tokens: bool,
    /// Allow `http://` JWKS, discovery and TokenReview URLs (tests on
    /// loopback). Off by default; logs a warning when on.
    #[serde(default)]
    pub insecure_http: bool,
    /// For `kubernetes` issuers: the cluster's name, given to its tokens as
    /// the selector `k8s:cluster:NAME` (default: the issuer's name). Two
    /// clusters' identical namespaces and service accounts are different
    /// workloads; entries say which cluster they mean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

fn default_algorithms() -> Vec<Algorithm> {
    Algorithm::ALL.to_vec()
}

fn default_lifetime() -> u64 {
    DEFAULT_MAX_TOKEN_LIFETIME_SECS
}

mod alg_names {
    use lanyard_jose::Algorithm;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(algs: &[Algorithm], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(algs.iter().map(|a| a.as_str()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Algorithm>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|n| n.parse().map_err(serde::de::Error::custom))
            .collect()
    }
}

impl IssuerConfig {
    /// A configuration with the safe defaults: ES256 and RS256, 24 h
    /// maximum lifetime, no legacy tokens, HTTPS only.
    pub fn new(
        name: impl Into<String>,
        kind: IssuerKind,
        issuer: impl Into<String>,
        keys: KeySource,
        audience: impl Into<String>,
        tenant: TenantBinding,
    ) -> Self {
        Self {
            name: name.into(),
            kind,
            issuer: issuer.into(),
            keys,
            audience: audience.into(),
            tenant,
            algorithms: default_algorithms(),
            max_token_lifetime_secs: DEFAULT_MAX_TOKEN_LIFETIME_SECS,
            insecure_allow_legacy_tokens: false,
            insecure_http: false,
            cluster: None,
        }
    }

    /// The cluster name of a `kubernetes` issuer (`None` for other kinds).
    pub fn cluster_name(&self) -> Option<&str> {
        (self.kind == IssuerKind::Kubernetes).then(|| self.cluster.as_deref().unwrap_or(&self.name))
    }

    /// Checks every field without touching the network or the file system.
    ///
    /// # Errors
    /// [`AttestError::Invalid`] naming the first bad field and how to fix it.
    pub fn validate(&self) -> Result<(), AttestError> {
        let bad = |field: &'static str, message: String| AttestError::Invalid {
            issuer: shown(&self.name),
            field,
            message,
        };
        if let Some(c) = &self.cluster {
            if self.kind != IssuerKind::Kubernetes {
                return Err(bad(
                    "cluster",
                    "only kubernetes issuers name a cluster".into(),
                ));
            }
            if !name_ok(c) {
                return Err(bad(
                    "cluster",
                    format!(
                        "{} must be 1-63 lowercase letters, digits, '-' and '_'",
                        shown(c)
                    ),
                ));
            }
        }
        if !name_ok(&self.name) {
            return Err(bad(
                "name",
                "use 1-63 lowercase letters, digits, '-' or '_', starting and ending with a letter or digit".into(),
            ));
        }
        if !text_ok(&self.issuer) {
            return Err(bad(
                "issuer",
                format!("must be the exact iss of the tokens: 1-{MAX_FIELD_LEN} bytes without spaces or control characters"),
            ));
        }
        if !text_ok(&self.audience) {
            return Err(bad(
                "audience",
                format!(
                    "is required: 1-{MAX_FIELD_LEN} bytes without spaces or control characters"
                ),
            ));
        }
        if self.algorithms.is_empty() {
            return Err(bad(
                "algorithms",
                "name at least one of ES256, RS256".into(),
            ));
        }
        if self.max_token_lifetime_secs == 0
            || self.max_token_lifetime_secs > MAX_TOKEN_LIFETIME_CEILING_SECS
        {
            return Err(bad(
                "max_token_lifetime_secs",
                format!(
                    "{} is out of range; use 1 to {MAX_TOKEN_LIFETIME_CEILING_SECS} (7 days)",
                    self.max_token_lifetime_secs
                ),
            ));
        }
        if let TenantBinding::Claim(pointer) = &self.tenant {
            if !pointer.starts_with('/') || !text_ok(pointer) {
                return Err(bad(
                    "tenant",
                    format!(
                        "claim {:?} is not a JSON pointer; write it like /tenant",
                        shown(pointer)
                    ),
                ));
            }
        }
        let legacy_iss = self.issuer == LEGACY_K8S_ISSUER;
        if self.insecure_allow_legacy_tokens {
            if self.kind != IssuerKind::Kubernetes {
                return Err(bad(
                    "insecure_allow_legacy_tokens",
                    "applies to kubernetes issuers only".into(),
                ));
            }
            if !legacy_iss {
                return Err(bad(
                    "insecure_allow_legacy_tokens",
                    format!("legacy tokens carry iss {LEGACY_K8S_ISSUER:?}: configure a separate issuer with that issuer"),
                ));
            }
        } else if legacy_iss {
            return Err(bad(
                "issuer",
                format!("{LEGACY_K8S_ISSUER:?} is the legacy token issuer; it needs kind kubernetes and insecure_allow_legacy_tokens (prefer projected tokens)"),
            ));
        }
        match &self.keys {
            KeySource::JwksInline(jwks) => {
                if jwks.keys.is_empty() {
                    return Err(bad("keys.jwks_inline", "the JWKS has no keys".into()));
                }
                for jwk in &jwks.keys {
                    VerifyingKey::from_jwk(jwk).map_err(|e| {
                        bad(
                            "keys.jwks_inline",
                            format!("key {:?}: {e}", jwk.kid.as_deref().map(shown)),
                        )
                    })?;
                }
            }
            KeySource::JwksUrl(url) => {
                check_url(url, self.insecure_http).map_err(|m| bad("keys.jwks_url", m))?;
            }
            KeySource::Discovery => {
                check_url(&self.issuer, self.insecure_http).map_err(|m| {
                    bad("issuer", format!("OIDC discovery needs a URL issuer: {m}"))
                })?;
            }
            KeySource::TokenReview {
                url,
                bearer_token_file,
                ca_file,
            } => {
                if self.kind != IssuerKind::Kubernetes {
                    return Err(bad(
                        "keys.token_review",
                        "TokenReview applies to kubernetes issuers only".into(),
                    ));
                }
                check_url(url, self.insecure_http).map_err(|m| bad("keys.token_review.url", m))?;
                let empty =
                    |p: &Option<PathBuf>| p.as_ref().is_some_and(|p| p.as_os_str().is_empty());
                if empty(bearer_token_file) {
                    return Err(bad(
                        "keys.token_review.bearer_token_file",
                        "is empty".into(),
                    ));
                }
                if empty(ca_file) {
                    return Err(bad("keys.token_review.ca_file", "is empty".into()));
                }
            }
        }
        Ok(())
    }
}

/// Checks an issuer set as a whole: each configuration, unique names, and
/// no two issuers with the same `iss` and audience.
///
/// # Errors
/// The first [`AttestError`].
pub fn validate_set(configs: &[IssuerConfig]) -> Result<(), AttestError> {
    for (i, c) in configs.iter().enumerate() {
        c.validate()?;
        for earlier in configs.iter().take(i) {
            if earlier.name == c.name {
                return Err(AttestError::DuplicateName {
                    name: c.name.clone(),
                });
            }
            if earlier.issuer == c.issuer && earlier.audience == c.audience {
                return Err(AttestError::Ambiguous {
                    first: earlier.name.clone(),
                    second: c.name.clone(),
                    issuer: c.issuer.clone(),
                    audience: c.audience.clone(),
                });
            }
        }
    }
    Ok(())
}

fn name_ok(name: &str) -> bool {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    name.len() <= 63
        && edge_ok(name.chars().next())
        && edge_ok(name.chars().last())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn text_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_FIELD_LEN
        && !s.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// Checks a key or TokenReview URL: `https://` (or `http://` when
/// `insecure_http`), with a host and without credentials.
pub(crate) fn check_url(url: &str, insecure_http: bool) -> Result<reqwest::Url, String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("{:?} is not a URL: {e}", shown(url)))?;
    match parsed.scheme() {
        "https" => {}
        "http" if insecure_http => {}
        "http" => {
            return Err(format!(
                "{:?} is plain HTTP; use https:// (http:// only with insecure_http, for tests)",
                shown(url)
            ))
        }
        other => return Err(format!("scheme {other:?} is not https")),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{:?} has no host", shown(url)));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("URLs with credentials are refused; use bearer_token_file".into());
    }
    Ok(parsed)
}

/// An outside string made safe to show: no control characters, at most 80
/// characters.
pub(crate) fn shown(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(80).collect()
}
