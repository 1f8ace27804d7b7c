//! Attestation: an untrusted bearer token in, verified
//! [`lanyard_core::Evidence`] or a [`lanyard_core::Denial`] out.
//!
//! It verifies Kubernetes projected service-account tokens (keys from an
//! inline JWKS, a JWKS URL, OIDC discovery, or the cluster's TokenReview
//! API), GitHub Actions and GitLab CI OIDC tokens, and any OIDC ID token,
//! against a list of trusted issuers ([`IssuerConfig`]). In order: the size
//! limit before any decoding, the token's shape, a trusted issuer for the
//! *unverified* `iss` (used only to choose whose rules and keys apply),
//! legacy Kubernetes tokens, the algorithm against the issuer's allow-list
//! (never `none`, never HMAC: `lanyard_jose` has neither), the signature
//! with keys parsed once and cached, then `iss`, `aud`, `exp`/`nbf`/`iat`
//! with [`CLOCK_SKEW_SECS`] of skew, the maximum lifetime, and the claims
//! each kind requires. From the verified claims it derives sorted selectors
//! (`k8s:ns:payments`, `gha:repository:acme/api`, …), the tenant, revocation
//! keys and the token's SHA-256. Every failure is a [`Denial`] with a
//! stable reason and an operator-facing detail that never contains the
//! token or key material; nothing ever falls back to a default identity.
//!
//! What it does not do: match registration entries, compare tenants with
//! entries, check revocations or issue anything; those are the server's
//! next steps, fed by the [`Evidence`]. Join tokens are checked by the
//! server's node API (they are one-time secrets in the store, not signed
//! evidence); a node agent's callers are attested from their peer
//! credentials by [`workload`].
//!
//! | kind | selectors | revocation keys |
//! |---|---|---|
//! | `kubernetes` | `k8s:ns`, `k8s:sa`, `k8s:sa-uid`, and when present `k8s:pod-name`, `k8s:pod-uid`, `k8s:node-name`, `k8s:node-uid` | `k8s-sa-uid`, `k8s-pod-uid` (when present), `jti` (when present), `subject` |
//! | `github-actions` | `gha:<claim>` for the string claims in [`GITHUB_ACTIONS_CLAIMS`] | `jti` (when present), `subject` |
//! | `gitlab` | `gitlab:<claim>` for [`GITLAB_CLAIMS`], numbers and booleans stringified | `jti` (when present), `subject` |
//! | `oidc` | `oidc:sub`, and `oidc:<claim>` for other top-level string claims (not `iss`, `aud`, `exp`, `nbf`, `iat`, `jti`) that make valid selectors | `jti` (when present), `subject` |
//!
//! The `subject` revocation key is `{iss}:{sub}`. Kubernetes evidence
//! comes from the projected token's `kubernetes.io` claim or, with a
//! TokenReview issuer, from the API server's answer.
//!
//! Start at [`Attestor::verify`] and [`IssuerConfig`].

#![warn(missing_docs)]

mod claims;
mod config;
mod fetch;
mod keys;
mod kinds;
mod token;
mod token_review;
mod verified;
pub mod workload;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use lanyard_core::{Clock, Denial, DenyReason, Evidence, TenantId};
use serde::Serialize;

pub use claims::jose_denial;
pub use config::{
    validate_set, AttestError, IssuerConfig, IssuerKind, KeySource, TenantBinding,
    DEFAULT_MAX_TOKEN_LIFETIME_SECS, LEGACY_K8S_ISSUER, MAX_TOKEN_LIFETIME_CEILING_SECS,
};
pub use fetch::{DEFAULT_MAX_AGE_SECS, FETCH_TIMEOUT, MAX_AGE_BOUNDS_SECS, MAX_DOCUMENT_BYTES};
pub use keys::{MAX_KEYS, REFRESH_INTERVAL_SECS, STALE_GRACE_SECS};
pub use kinds::{GITHUB_ACTIONS_CLAIMS, GITLAB_CLAIMS};
pub use token::{digest_hex, parse_unverified, UnverifiedToken};
pub use verified::VerifiedCacheStats;

use crate::keys::{KeySet, RemoteKeys};
use crate::token_review::Reviewer;

/// Clock skew allowed for `exp`, `nbf` and `iat`, in seconds.
pub const CLOCK_SKEW_SECS: i64 = 60;
/// How long evidence from a token without `exp` (an allowed legacy
/// Kubernetes token) is valid, in seconds: it bounds what is issued for it.
pub const LEGACY_EVIDENCE_SECS: i64 = 300;

/// One trusted issuer: its configuration and how its tokens are verified.
#[derive(Debug)]
struct Issuer {
    config: IssuerConfig,
    verifier: Verifier,
}

#[derive(Debug)]
enum Verifier {
    /// Signatures checked here, with these keys.
    Keys(Keys),
    /// The cluster's TokenReview API decides.
    TokenReview(Reviewer),
}

#[derive(Debug, Clone)]
enum Keys {
    Inline(Arc<KeySet>),
    Remote(Arc<RemoteKeys>),
}

impl Keys {
    async fn get(
        &self,
        kid: &str,
        now: i64,
        http: &reqwest::Client,
    ) -> Result<Arc<KeySet>, Denial> {
        match self {
            Self::Inline(set) => Ok(set.clone()),
            Self::Remote(remote) => remote.get(kid, now, http).await,
        }
    }
}

/// How many verified tokens an [`Attestor`] remembers by default (see
/// [`Attestor::with_verified_cache`]).
pub const DEFAULT_VERIFIED_CACHE_ENTRIES: usize = 10_000;

/// Verifies tokens from a set of trusted issuers.
///
/// Immutable and `Send + Sync`: share it in an `Arc`, and on a
/// configuration change build the next one with [`Attestor::with_issuers`]
/// and swap it in (e.g. with `ArcSwap`). The verify path takes no lock:
/// remote key sets are read with one atomic load.
#[derive(Debug)]
pub struct Attestor {
    /// Issuers by exact `iss`; several may share one `iss` with different
    /// audiences.
    by_iss: HashMap<String, Vec<Issuer>>,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    /// Tokens verified earlier ([`verified`]).
    verified: verified::VerifiedCache,
}

/// One step of a verification, as [`Attestor::explain`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The check: `parse`, `issuer`, `legacy`, `algorithm`, `keys`,
    /// `signature`, `claims`, `token_review`, `identity`, `tenant`.
    pub step: &'static str,
    /// Whether it passed.
    pub outcome: Outcome,
    /// What was checked or found, for the operator (no token text, no key
    /// material).
    pub detail: String,
}

/// How a [`Step`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The check passed.
    Passed,
    /// The check failed: verification stops with this reason.
    Denied(DenyReason),
}

impl Outcome {
    /// `passed`, or the denial's stable code (e.g. `wrong_audience`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Denied(r) => r.as_str(),
        }
    }
}

impl Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Collects steps when explaining; costs nothing otherwise.
struct Trace {
    steps: Option<Vec<Step>>,
}

impl Trace {
    fn check<T>(
        &mut self,
        step: &'static str,
        result: Result<T, Denial>,
        detail: impl FnOnce(&T) -> String,
    ) -> Result<T, Denial> {
        if let Some(steps) = &mut self.steps {
            let (outcome, detail) = match &result {
                Ok(v) => (Outcome::Passed, detail(v)),
                Err(d) => (Outcome::Denied(d.reason), d.detail.clone()),
            };
            steps.push(Step {
                step,
                outcome,
                detail,
            });
        }
        result
    }
}

impl Attestor {
    /// Builds an attestor for `configs`. Inline JWKS are parsed here, once;
    /// remote keys are fetched on first use. `http` is used for JWKS,
    /// discovery and (without a CA file) TokenReview calls; each call also
    /// gets a [`FETCH_TIMEOUT`] total timeout, and [`Attestor::http_client`]
    /// builds a client with a connect timeout too.
    ///
    /// # Errors
    /// [`AttestError`] for an invalid configuration, a repeated name, or two
    /// issuers with the same `iss` and audience.
    pub fn new(
        configs: Vec<IssuerConfig>,
        clock: Arc<dyn Clock>,
        http: reqwest::Client,
    ) -> Result<Self, AttestError> {
        Self::build(configs, clock, http, &HashMap::new())
    }

    /// A new attestor for `configs` with this one's clock and HTTP client,
    /// keeping the fetched key caches of issuers whose name, issuer and key
    /// source did not change (a reload does not refetch every JWKS).
    ///
    /// # Errors
    /// As [`Attestor::new`].
    pub fn with_issuers(&self, configs: Vec<IssuerConfig>) -> Result<Self, AttestError> {
        let remotes: HashMap<String, Arc<RemoteKeys>> = self
            .by_iss
            .values()
            .flatten()
            .filter_map(|i| match &i.verifier {
                Verifier::Keys(Keys::Remote(r)) => Some((i.config.name.clone(), r.clone())),
                _ => None,
            })
            .collect();
        Self::build(configs, self.clock.clone(), self.http.clone(), &remotes)
            .map(|a| a.with_verified_cache(self.verified.capacity()))
    }

    /// This attestor remembering about `entries` verified tokens (`0`:
    /// none), [`DEFAULT_VERIFIED_CACHE_ENTRIES`] otherwise. A token
    /// presented again is answered without a new signature verification
    /// while it has not expired and its issuer's key set is the one that
    /// verified it; revocation stays the caller's check on every use. An
    /// attestor built by [`Attestor::with_issuers`] keeps the size and
    /// starts empty.
    #[must_use]
    pub fn with_verified_cache(mut self, entries: usize) -> Self {
        self.verified = verified::VerifiedCache::new(entries);
        self
    }

    fn build(
        configs: Vec<IssuerConfig>,
        clock: Arc<dyn Clock>,
        http: reqwest::Client,
        remotes: &HashMap<String, Arc<RemoteKeys>>,
    ) -> Result<Self, AttestError> {
        validate_set(&configs)?;
        let mut by_iss: HashMap<String, Vec<Issuer>> = HashMap::new();
        for config in configs {
            if config.insecure_http {
                tracing::warn!(issuer = %config.name, "insecure_http: this issuer's keys may be fetched over plain HTTP");
            }
            if config.insecure_allow_legacy_tokens {
                tracing::warn!(issuer = %config.name, "insecure_allow_legacy_tokens: legacy service-account tokens (no audience, no expiry) are accepted");
            }
            let verifier = match &config.keys {
                KeySource::JwksInline(jwks) => {
                    let set = KeySet::inline(jwks).map_err(|message| AttestError::Invalid {
                        issuer: config.name.clone(),
                        field: "keys.jwks_inline",
                        message,
                    })?;
                    Verifier::Keys(Keys::Inline(Arc::new(set)))
                }
                KeySource::JwksUrl(_) | KeySource::Discovery => Verifier::Keys(Keys::Remote(
                    remotes
                        .get(&config.name)
                        .filter(|r| r.serves(&config))
                        .cloned()
                        .unwrap_or_else(|| Arc::new(RemoteKeys::new(&config))),
                )),
                KeySource::TokenReview { .. } => {
                    Verifier::TokenReview(Reviewer::new(&config, &http))
                }
            };
            by_iss
                .entry(config.issuer.clone())
                .or_default()
                .push(Issuer { config, verifier });
        }
        Ok(Self {
            by_iss,
            clock,
            http,
            verified: verified::VerifiedCache::new(DEFAULT_VERIFIED_CACHE_ENTRIES),
        })
    }

    /// An HTTP client for key fetches and TokenReview: [`FETCH_TIMEOUT`]
    /// to connect and in total, at most 3 redirects.
    ///
    /// # Errors
    /// [`AttestError::HttpClient`] if the TLS backend cannot start.
    pub fn http_client() -> Result<reqwest::Client, AttestError> {
        reqwest::Client::builder()
            .connect_timeout(FETCH_TIMEOUT)
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("lanyard-attest/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(AttestError::HttpClient)
    }

    /// How the verified-token cache has been used since this attestor was
    /// built.
    pub fn verified_cache_stats(&self) -> VerifiedCacheStats {
        self.verified.stats()
    }

    /// The number of trusted issuers.
    pub fn len(&self) -> usize {
        self.by_iss.values().map(Vec::len).sum()
    }

    /// Whether no issuer is trusted (every token is then `UnknownIssuer`).
    pub fn is_empty(&self) -> bool {
        self.by_iss.is_empty()
    }

    /// The configurations in force, in no particular order.
    pub fn issuers(&self) -> impl Iterator<Item = &IssuerConfig> {
        self.by_iss.values().flatten().map(|i| &i.config)
    }

    /// Verifies `token` completely. The unverified `iss` only chooses which
    /// issuer's rules and keys apply; everything is then verified.
    ///
    /// # Errors
    /// The first [`Denial`]; never a default identity.
    pub async fn verify(&self, token: &str) -> Result<Evidence, Denial> {
        let digest = token::digest(token.as_bytes());
        let now = self.clock.unix_seconds();
        if let Some(hit) = self.verified.get(&digest) {
            if now < hit.evidence.expires_at {
                if let Ok(set) = hit.keys.get(&hit.kid, now, &self.http).await {
                    if Arc::ptr_eq(&set, &hit.verified_with) {
                        self.verified.count(true);
                        return Ok(hit.evidence);
                    }
                }
            }
            // Expired, or the keys changed: verify afresh.
            self.verified.remove(&digest);
        }
        if self.verified.capacity() > 0 {
            self.verified.count(false);
        }
        let (evidence, cacheable) = self.run(token, &digest, &mut Trace { steps: None }).await?;
        if let Some((kid, keys, verified_with)) = cacheable {
            let cached = verified::Cached {
                evidence: evidence.clone(),
                kid,
                keys,
                verified_with,
            };
            self.verified.insert(digest, cached, now);
        }
        Ok(evidence)
    }

    /// Verifies `token` like [`Attestor::verify`], also returning each step
    /// taken (for `lanyard explain`). The steps end at the first denial.
    pub async fn explain(&self, token: &str) -> (Vec<Step>, Result<Evidence, Denial>) {
        let mut trace = Trace {
            steps: Some(Vec::new()),
        };
        let digest = token::digest(token.as_bytes());
        let result = self.run(token, &digest, &mut trace).await.map(|(e, _)| e);
        (trace.steps.unwrap_or_default(), result)
    }

    /// The whole verification of `token` (whose SHA-256 is `digest`); also
    /// what [`verified`] may remember, for a signature-verified token
    /// with an `exp`.
    async fn run(
        &self,
        token: &str,
        digest: &verified::Digest,
        trace: &mut Trace,
    ) -> Result<(Evidence, Option<(String, Keys, Arc<KeySet>)>), Denial> {
        let now = self.clock.unix_seconds();
        let parsed = trace.check("parse", parse_unverified(token), |p| {
            format!(
                "compact JWT, {} bytes, alg {:?}, kid {:?}",
                token.len(),
                config::shown(&p.header.alg),
                p.header.kid.as_deref().map(config::shown)
            )
        })?;
        let issuer = trace.check("issuer", self.route(&parsed), |i| {
            format!(
                "trusted issuer {} ({}) for iss {:?}, audience {:?}",
                i.config.name,
                i.config.kind.as_str(),
                i.config.issuer,
                i.config.audience
            )
        })?;
        let config = &issuer.config;
        let legacy = if config.kind == IssuerKind::Kubernetes {
            trace.check(
                "legacy",
                claims::check_legacy(config, &parsed.claims),
                |l| {
                    if *l {
                        "legacy service-account token, accepted by insecure_allow_legacy_tokens"
                            .into()
                    } else {
                        "a projected (bound) service-account token, not a legacy one".into()
                    }
                },
            )?
        } else {
            false
        };
        let alg = trace.check(
            "algorithm",
            claims::check_algorithm(&parsed.header, config),
            |a| format!("{a} is in the issuer's allow-list"),
        )?;
        let (validity, identity, cacheable) = match &issuer.verifier {
            Verifier::Keys(keys) => {
                let Some(kid) = parsed.header.kid.as_deref() else {
                    let missing = Denial::new(DenyReason::Malformed, "the header has no kid");
                    return trace.check("keys", Err(missing), |_| String::new());
                };
                let set = trace.check("keys", keys.get(kid, now, &self.http).await, |set| {
                    describe_keys(set, kid, now)
                })?;
                trace.check(
                    "signature",
                    lanyard_jose::verify_compact(token, set.keys.iter(), &[alg])
                        .map(|_| ())
                        .map_err(|e| claims::jose_denial(&e)),
                    |()| format!("{alg} signature verified with key {:?}", config::shown(kid)),
                )?;
                // The verified payload is the very part `parse_unverified`
                // decoded, so its claims are now verified.
                let validity = trace.check(
                    "claims",
                    claims::check_claims(config, &parsed.claims, now, legacy),
                    |v| describe_validity(config, v, now),
                )?;
                let identity = kinds::from_claims(config, &parsed.claims, legacy);
                let cacheable = (!legacy).then(|| (kid.to_owned(), keys.clone(), set));
                (validity, identity, cacheable)
            }
            Verifier::TokenReview(reviewer) => {
                // Checked before the API call so garbage costs the cluster
                // nothing; they are verified once the API server vouches for
                // the token.
                let validity = trace.check(
                    "claims",
                    claims::check_claims(config, &parsed.claims, now, legacy),
                    |v| describe_validity(config, v, now),
                )?;
                let reviewed = trace.check(
                    "token_review",
                    reviewer.review(token, &config.audience, now).await,
                    |r| format!("the API server authenticated {}", r.username),
                )?;
                let identity = kinds::jti(&parsed.claims).and_then(|jti| {
                    kinds::k8s_identity(config, reviewed.username, jti, &reviewed.identity)
                });
                (validity, identity, None)
            }
        };
        let identity = trace.check("identity", identity, |id| {
            let mut s = format!("subject {:?}; selectors", id.subject);
            for sel in &id.selectors {
                let _ = write!(s, " {sel}");
            }
            s
        })?;
        let tenant = tenant(config, &parsed);
        trace.check("tenant", Ok(&tenant), |t| match (t, &config.tenant) {
            (Some(t), TenantBinding::Fixed(_)) => format!("{t} (fixed by the issuer)"),
            (Some(t), TenantBinding::Claim(p)) => format!("{t} (from claim {p})"),
            (None, TenantBinding::Claim(p)) => format!(
                "none: claim {p} is absent or not a tenant name (the server denies missing_tenant)"
            ),
            (None, TenantBinding::Fixed(_)) => "none".into(),
        })?;
        let evidence = Evidence {
            issuer: config.name.clone(),
            tenant,
            subject: identity.subject,
            selectors: identity.selectors,
            jti: identity.jti,
            expires_at: validity.expires_at,
            digest: lanyard_core::hex::encode(digest),
            revocation_keys: identity.revocation_keys,
        };
        Ok((evidence, cacheable))
    }

    /// The issuer whose rules apply to `parsed`, chosen by its unverified
    /// `iss` (and, when several share it, by audience).
    fn route(&self, parsed: &UnverifiedToken) -> Result<&Issuer, Denial> {
        let iss = match parsed.claims.get("iss") {
            Some(serde_json::Value::String(iss)) => iss,
            None | Some(serde_json::Value::Null) => {
                return Err(Denial::new(
                    DenyReason::MissingClaim,
                    "the token has no iss",
                ))
            }
            Some(_) => return Err(Denial::new(DenyReason::Malformed, "iss is not a string")),
        };
        let Some(candidates) = self.by_iss.get(iss) else {
            if iss == LEGACY_K8S_ISSUER {
                return Err(claims::legacy_denial());
            }
            return Err(Denial::new(
                DenyReason::UnknownIssuer,
                format!("no trusted issuer has iss {:?}", config::shown(iss)),
            ));
        };
        candidates
            .iter()
            .find(|i| claims::has_audience(&parsed.claims, &i.config.audience))
            .or_else(|| candidates.first())
            .ok_or_else(|| Denial::new(DenyReason::UnknownIssuer, "no trusted issuer"))
    }
}

fn tenant(config: &IssuerConfig, parsed: &UnverifiedToken) -> Option<TenantId> {
    match &config.tenant {
        TenantBinding::Fixed(t) => Some(t.clone()),
        TenantBinding::Claim(pointer) => parsed
            .pointer(pointer)
            .and_then(serde_json::Value::as_str)
            .and_then(|s| TenantId::parse(s).ok()),
    }
}

fn describe_keys(set: &KeySet, kid: &str, now: i64) -> String {
    let mut s = format!("{} key(s) from {}", set.keys.len(), set.origin);
    if set.fresh_until != i64::MAX {
        let age = now.saturating_sub(set.fetched_at);
        if now < set.fresh_until {
            let _ = write!(s, ", fetched {age}s ago");
        } else {
            let _ = write!(
                s,
                ", STALE: fetched {age}s ago and the issuer could not be reached since"
            );
        }
    }
    let _ = write!(
        s,
        "; kid {:?} {}",
        config::shown(kid),
        if set.has(kid) {
            "found"
        } else {
            "not among them"
        }
    );
    s
}

fn describe_validity(config: &IssuerConfig, v: &claims::Validity, now: i64) -> String {
    let mut s = format!(
        "iss exact; aud contains {:?}; expires in {}s",
        config.audience,
        v.expires_at.saturating_sub(now)
    );
    if let Some(l) = v.lifetime {
        let _ = write!(
            s,
            "; lifetime {l}s of at most {}s",
            config.max_token_lifetime_secs
        );
    }
    s
}
