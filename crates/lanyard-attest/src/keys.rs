//! An issuer's verification keys: parsed once from the configuration, or
//! fetched (JWKS URL, OIDC discovery) and cached.
//!
//! The verify path reads the cached set with one lock-free `ArcSwap` load.
//! A refresh happens when the set is past its max-age or a token names an
//! unknown `kid`, at most once per [`REFRESH_INTERVAL_SECS`] of the injected
//! clock per issuer, so a flood of made-up kids cannot hammer the issuer.
//! Refreshes are single-flight: one request fetches; others that hold usable
//! keys carry on with them, others wait for that one fetch. A failed fetch
//! never means acceptance: without keys the answer is `IssuerUnavailable`;
//! keys fetched earlier keep working for [`STALE_GRACE_SECS`] past their
//! max-age, with a warning at each failed refresh.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use lanyard_core::{Denial, DenyReason};
use lanyard_jose::{Jwk, Jwks, VerifyingKey};
use reqwest::Url;
use serde_json::Value;

use crate::config::{check_url, IssuerConfig, KeySource};
use crate::fetch::{self, FetchError};

/// Minimum time between two fetches of one issuer's keys.
pub const REFRESH_INTERVAL_SECS: i64 = 30;
/// How long keys past their max-age keep verifying while the issuer cannot
/// be reached.
pub const STALE_GRACE_SECS: i64 = 3600;
/// At most this many keys of a fetched JWKS are used.
pub const MAX_KEYS: usize = 100;

/// A parsed key set and where it came from.
#[derive(Debug)]
pub(crate) struct KeySet {
    pub keys: Vec<VerifyingKey>,
    /// `inline`, or the JWKS URL.
    pub origin: String,
    pub fetched_at: i64,
    /// Unix seconds until which the set is fresh (`i64::MAX` for inline keys).
    pub fresh_until: i64,
}

impl KeySet {
    pub(crate) fn inline(jwks: &Jwks) -> Result<Self, String> {
        let keys = jwks
            .keys
            .iter()
            .map(|jwk| {
                VerifyingKey::from_jwk(jwk).map_err(|e| {
                    format!(
                        "key {:?}: {e}",
                        jwk.kid.as_deref().map(crate::config::shown)
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            keys,
            origin: "inline".into(),
            fetched_at: 0,
            fresh_until: i64::MAX,
        })
    }

    pub(crate) fn has(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid() == kid)
    }
}

/// Keys fetched from a JWKS URL or through discovery, cached.
#[derive(Debug)]
pub(crate) struct RemoteKeys {
    name: String,
    issuer: String,
    source: KeySource,
    insecure_http: bool,
    current: ArcSwapOption<KeySet>,
    /// Unix seconds of the last fetch attempt; `i64::MIN` before the first.
    last_attempt: AtomicI64,
    last_error: ArcSwapOption<String>,
    flight: Arc<tokio::sync::Mutex<()>>,
}

impl RemoteKeys {
    pub(crate) fn new(config: &IssuerConfig) -> Self {
        Self {
            name: config.name.clone(),
            issuer: config.issuer.clone(),
            source: config.keys.clone(),
            insecure_http: config.insecure_http,
            current: ArcSwapOption::empty(),
            last_attempt: AtomicI64::new(i64::MIN),
            last_error: ArcSwapOption::empty(),
            flight: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Whether this cache serves `config` unchanged (same name, issuer and
    /// key source), so a rebuilt attestor can keep it.
    pub(crate) fn serves(&self, config: &IssuerConfig) -> bool {
        self.name == config.name
            && self.issuer == config.issuer
            && self.source == config.keys
            && self.insecure_http == config.insecure_http
    }

    /// Keys to verify a token naming `kid` at `now`, refreshing when
    /// allowed and needed.
    pub(crate) async fn get(
        self: &Arc<Self>,
        kid: &str,
        now: i64,
        http: &reqwest::Client,
    ) -> Result<Arc<KeySet>, Denial> {
        let current = self.current.load_full();
        if let Some(set) = &current {
            if now < set.fresh_until && set.has(kid) {
                return Ok(set.clone());
            }
        }
        // Single flight. While another request fetches, carry on with usable
        // keys if there are any, else wait for its result.
        let flight = match self.flight.clone().try_lock_owned() {
            Ok(guard) => guard,
            Err(_) if self.usable(current.clone(), now).is_ok() => {
                return self.usable(current, now);
            }
            Err(_) => self.flight.clone().lock_owned().await,
        };
        // The flight we may have waited for could have done the work.
        let current = self.current.load_full();
        if let Some(set) = &current {
            if now < set.fresh_until && set.has(kid) {
                return Ok(set.clone());
            }
        }
        if !self.may_fetch(now) {
            return self.usable(current, now);
        }
        self.last_attempt.store(now, Ordering::SeqCst);
        // The fetch runs as its own task holding the flight lock, so a
        // request cancelled mid-fetch (a client hanging up) neither wastes
        // the attempt nor leaves the waiters without keys.
        let this = self.clone();
        let http = http.clone();
        let fetched = tokio::spawn(async move {
            let _flight = flight;
            let result = this.fetch(&http, now).await;
            this.record(result, now)
        })
        .await;
        match fetched {
            Ok(Some(set)) => Ok(set),
            Ok(None) | Err(_) => self.usable(self.current.load_full(), now),
        }
    }

    /// Stores a fetch's outcome; the new set on success.
    fn record(&self, result: Result<KeySet, FetchError>, now: i64) -> Option<Arc<KeySet>> {
        match result {
            Ok(set) => {
                let set = Arc::new(set);
                tracing::debug!(
                    issuer = %self.name,
                    keys = set.keys.len(),
                    max_age = set.fresh_until.saturating_sub(now),
                    "issuer keys fetched"
                );
                self.current.store(Some(set.clone()));
                self.last_error.store(None);
                Some(set)
            }
            Err(e) => {
                let message = e.to_string();
                match self.current.load_full() {
                    Some(set) if now < set.fresh_until.saturating_add(STALE_GRACE_SECS) => {
                        tracing::warn!(
                            issuer = %self.name,
                            error = %message,
                            age = now.saturating_sub(set.fetched_at),
                            "issuer keys could not be refreshed; verifying with the cached keys"
                        );
                    }
                    _ => tracing::warn!(
                        issuer = %self.name,
                        error = %message,
                        "issuer keys unavailable; refusing its tokens"
                    ),
                }
                self.last_error.store(Some(Arc::new(message)));
                None
            }
        }
    }

    fn may_fetch(&self, now: i64) -> bool {
        let last = self.last_attempt.load(Ordering::SeqCst);
        // A clock that went backwards must not freeze refreshes.
        last == i64::MIN || now < last || now.saturating_sub(last) >= REFRESH_INTERVAL_SECS
    }

    /// The cached set if it may still be used at `now`.
    fn usable(&self, current: Option<Arc<KeySet>>, now: i64) -> Result<Arc<KeySet>, Denial> {
        match current {
            Some(set) if now < set.fresh_until.saturating_add(STALE_GRACE_SECS) => Ok(set),
            Some(_) => Err(self.unavailable("cached keys are past their grace period")),
            None => Err(self.unavailable("no keys fetched yet")),
        }
    }

    fn unavailable(&self, state: &str) -> Denial {
        let last = self.last_error.load_full();
        let why = last
            .as_deref()
            .map_or("no fetch attempted yet", String::as_str);
        Denial::new(
            DenyReason::IssuerUnavailable,
            format!("keys of issuer {}: {state}; last fetch: {why}", self.name),
        )
    }

    async fn fetch(&self, http: &reqwest::Client, now: i64) -> Result<KeySet, FetchError> {
        let url = match &self.source {
            KeySource::JwksUrl(url) => checked(url, self.insecure_http)?,
            _ => self.discover(http).await?,
        };
        let doc = fetch::get(http, &url, self.insecure_http).await?;
        let keys = parse_remote_jwks(&doc.body).map_err(|what| FetchError::Shape {
            url: url.to_string(),
            what,
        })?;
        Ok(KeySet {
            keys,
            origin: url.to_string(),
            fetched_at: now,
            fresh_until: now.saturating_add(doc.max_age),
        })
    }

    /// OIDC discovery: the document must name this exact issuer, and its
    /// `jwks_uri` must use the issuer's scheme.
    async fn discover(&self, http: &reqwest::Client) -> Result<Url, FetchError> {
        let base = self.issuer.trim_end_matches('/');
        let url = checked(
            &format!("{base}/.well-known/openid-configuration"),
            self.insecure_http,
        )?;
        let doc = fetch::get(http, &url, self.insecure_http).await?;
        let shape = |what| FetchError::Shape {
            url: url.to_string(),
            what,
        };
        let doc: Value = serde_json::from_slice(&doc.body).map_err(|_| shape("not JSON"))?;
        if doc.get("issuer").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(shape("the discovery document names another issuer"));
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| shape("the discovery document has no jwks_uri"))?;
        let jwks_url = checked(jwks_uri, self.insecure_http)?;
        if jwks_url.scheme() != url.scheme() {
            return Err(FetchError::Refused {
                url: jwks_url.to_string(),
                reason: format!("jwks_uri must use the issuer's scheme ({})", url.scheme()),
            });
        }
        Ok(jwks_url)
    }
}

fn checked(url: &str, insecure_http: bool) -> Result<Url, FetchError> {
    check_url(url, insecure_http).map_err(|reason| FetchError::Refused {
        url: crate::config::shown(url),
        reason,
    })
}

/// The usable signing keys of a fetched JWKS. Keys for other uses, other
/// algorithms or of unreadable shape are skipped (issuers publish such);
/// a set with none left is an error.
pub(crate) fn parse_remote_jwks(body: &[u8]) -> Result<Vec<VerifyingKey>, &'static str> {
    let doc: Value = serde_json::from_slice(body).map_err(|_| "not JSON")?;
    let entries = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("not a JWKS (no keys array)")?;
    let mut keys = Vec::new();
    for entry in entries {
        if keys.len() >= MAX_KEYS {
            tracing::warn!(
                limit = MAX_KEYS,
                "JWKS has more keys than the limit; ignoring the rest"
            );
            break;
        }
        let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
            continue;
        };
        if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
            continue;
        }
        match VerifyingKey::from_jwk(&jwk) {
            Ok(k) => keys.push(k),
            Err(e) => tracing::debug!(kid = ?jwk.kid, error = %e, "skipping an unusable JWK"),
        }
    }
    if keys.is_empty() {
        return Err("no usable signing key (ES256 P-256 or RS256 of 2048+ bits, with a kid)");
    }
    Ok(keys)
}
