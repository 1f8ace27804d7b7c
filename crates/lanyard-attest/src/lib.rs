//! Attestation: an untrusted bearer token in, verified [`Evidence`] (or a
//! [`Denial`]) out.
//!
//! Covers Kubernetes projected service-account tokens (JWKS, OIDC discovery,
//! or the cluster's TokenReview API), GitHub Actions and GitLab CI OIDC
//! tokens, and any OIDC ID token. What it checks, in order: size, shape, a
//! trusted issuer for the unverified `iss`, the algorithm against the
//! issuer's allow-list (never `none`, never HMAC: `lanyard_jose` has no such
//! algorithms), the signature with keys parsed once and cached, then `iss`,
//! `aud`, `exp`/`nbf`/`iat` with bounded skew, the maximum lifetime, and the
//! claims each kind requires. It derives selectors and revocation keys.
//!
//! What it does not do: match entries, check tenants against entries, or
//! check revocations; those are the server's next steps.
//!
//! Start at [`Attestor::verify`] and [`IssuerConfig`].

#![warn(missing_docs)]
#![warn(clippy::indexing_slicing)]

mod claims;
mod config;
mod keys;
mod token_review;

use std::collections::HashMap;
use std::sync::Arc;

use lanyard_core::{Clock, Denial, DenyReason, Evidence};
use serde_json::Value;

pub use claims::parse_unverified;
pub use config::{AttestError, IssuerConfig, IssuerKind, KeySource, TenantBinding};

use crate::keys::KeyStore;

/// Allowed clock skew for `exp`, `nbf` and `iat`.
pub const CLOCK_SKEW_SECS: i64 = 60;

/// One issuer's configuration and its key cache.
#[derive(Debug)]
struct Issuer {
    config: IssuerConfig,
    keys: Arc<KeyStore>,
}

/// Verifies tokens from a set of trusted issuers. Immutable; rebuild with
/// [`Attestor::with_issuers`] and swap.
#[derive(Debug)]
pub struct Attestor {
    by_iss: HashMap<String, Vec<Arc<Issuer>>>,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
}

impl Attestor {
    /// Builds an attestor for `configs`.
    ///
    /// # Errors
    /// [`AttestError`] naming the first invalid configuration.
    pub fn new(
        configs: Vec<IssuerConfig>,
        clock: Arc<dyn Clock>,
        http: reqwest::Client,
    ) -> Result<Self, AttestError> {
        let empty = Self {
            by_iss: HashMap::new(),
            clock,
            http,
        };
        empty.with_issuers(configs)
    }

    /// A new attestor for `configs`, keeping the key caches of issuers whose
    /// name and key source did not change (so a config reload does not
    /// refetch every JWKS).
    ///
    /// # Errors
    /// [`AttestError`] naming the first invalid configuration.
    pub fn with_issuers(&self, configs: Vec<IssuerConfig>) -> Result<Self, AttestError> {
        let mut by_iss: HashMap<String, Vec<Arc<Issuer>>> = HashMap::new();
        for config in configs {
            config.validate()?;
            let reused = self
                .by_iss
                .values()
                .flatten()
                .find(|old| {
                    old.config.name == config.name
                        && old.config.keys == config.keys
                        && old.config.insecure_http == config.insecure_http
                })
                .map(|old| old.keys.clone());
            let keys = match reused {
                Some(k) => k,
                None => Arc::new(KeyStore::new(&config)?),
            };
            by_iss
                .entry(config.issuer.clone())
                .or_default()
                .push(Arc::new(Issuer { config, keys }));
        }
        Ok(Self {
            by_iss,
            clock: self.clock.clone(),
            http: self.http.clone(),
        })
    }

    /// Number of trusted issuers.
    pub fn len(&self) -> usize {
        self.by_iss.values().map(Vec::len).sum()
    }

    /// Whether no issuer is trusted.
    pub fn is_empty(&self) -> bool {
        self.by_iss.is_empty()
    }

    /// Verifies `token` completely. The unverified `iss` only chooses which
    /// issuer's rules and keys apply.
    ///
    /// # Errors
    /// The first [`Denial`]; never a default identity.
    pub async fn verify(&self, token: &str) -> Result<Evidence, Denial> {
        let parsed = parse_unverified(token)?;
        let iss = parsed
            .claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or("");
        let candidates = self.by_iss.get(iss).ok_or_else(|| {
            Denial::new(
                DenyReason::UnknownIssuer,
                format!("issuer {} is not trusted", short(iss)),
            )
        })?;
        // Several configurations may share an `iss` (e.g. one cluster, two
        // audiences): the one whose audience the token carries applies.
        let auds = claims::audiences(&parsed.claims);
        let issuer = candidates
            .iter()
            .find(|i| auds.iter().any(|a| a == &i.config.audience))
            .or_else(|| candidates.first())
            .ok_or_else(|| Denial::new(DenyReason::UnknownIssuer, "no issuer configuration"))?;
        let config = &issuer.config;
        let now = self.clock.unix_seconds();

        let claims = match &config.keys {
            KeySource::TokenReview { .. } => {
                token_review::review(&self.http, config, token, now).await?
            }
            _ => {
                let alg = claims::check_algorithm(&parsed.header, config)?;
                let kid = parsed.header.kid.as_deref().unwrap_or("");
                let keys = issuer.keys.keys_for(kid, now, &self.http).await?;
                let verified = lanyard_jose::verify_compact(token, keys.iter(), &[alg])
                    .map_err(|e| claims::jose_denial(&e))?;
                let value: Value = serde_json::from_slice(&verified.payload).map_err(|_| {
                    Denial::new(DenyReason::Malformed, "payload is not a JSON object")
                })?;
                claims::check_times_and_audience(&value, config, now)?;
                value
            }
        };
        claims::evidence(config, &claims, token)
    }
}

fn short(s: &str) -> String {
    let s: String = s.chars().filter(|c| !c.is_control()).take(80).collect();
    format!("{s:?}")
}

#[cfg(test)]
mod tests;
