//! Verification keys per issuer: inline, or fetched (JWKS URL, discovery)
//! and cached.
//!
//! The verify path reads the cached key set with one lock-free load. A
//! refresh happens when the cache is older than its max-age, or when a token
//! names an unknown `kid` (at most once per [`REFRESH_INTERVAL_SECS`], so a
//! flood of made-up kids cannot hammer the issuer). Refreshes are
//! single-flight. A failed fetch never means acceptance: without keys the
//! answer is `IssuerUnavailable`; with keys fetched earlier, they keep
//! working for [`STALE_GRACE_SECS`] past their max-age, with a warning.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use lanyard_core::{Denial, DenyReason};
use lanyard_jose::{Jwks, VerifyingKey};
use serde_json::Value;

use crate::{AttestError, IssuerConfig, KeySource};

/// Minimum time between refreshes triggered by unknown kids.
pub const REFRESH_INTERVAL_SECS: i64 = 30;
/// Default cache lifetime when the server sends no usable max-age.
pub const DEFAULT_MAX_AGE_SECS: i64 = 300;
/// How long stale keys keep working while the issuer is unreachable.
pub const STALE_GRACE_SECS: i64 = 3600;
/// Largest JWKS or discovery document read.
const MAX_DOCUMENT: usize = 1024 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Fetched {
    keys: Arc<Vec<VerifyingKey>>,
    fetched_at: i64,
    max_age: i64,
}

/// Where keys come from.
#[derive(Debug)]
enum Source {
    Static(Arc<Vec<VerifyingKey>>),
    Remote {
        issuer: String,
        jwks_url: Option<String>,
        insecure_http: bool,
    },
    None,
}

/// One issuer's keys.
#[derive(Debug)]
pub(crate) struct KeyStore {
    source: Source,
    cached: ArcSwapOption<Fetched>,
    last_attempt: AtomicI64,
    refresh: tokio::sync::Mutex<()>,
}

impl KeyStore {
    pub(crate) fn new(config: &IssuerConfig) -> Result<Self, AttestError> {
        let source = match &config.keys {
            KeySource::JwksInline(jwks) => {
                Source::Static(Arc::new(parse_jwks(jwks).map_err(|m| {
                    AttestError::Invalid {
                        name: config.name.clone(),
                        field: "jwks",
                        message: m,
                    }
                })?))
            }
            KeySource::JwksUrl(url) => Source::Remote {
                issuer: config.issuer.clone(),
                jwks_url: Some(url.clone()),
                insecure_http: config.insecure_http,
            },
            KeySource::Discovery => Source::Remote {
                issuer: config.issuer.clone(),
                jwks_url: None,
                insecure_http: config.insecure_http,
            },
            KeySource::TokenReview { .. } => Source::None,
        };
        Ok(Self {
            source,
            cached: ArcSwapOption::empty(),
            last_attempt: AtomicI64::new(i64::MIN),
            refresh: tokio::sync::Mutex::new(()),
        })
    }

    /// Keys to verify a token naming `kid` at `now`.
    pub(crate) async fn keys_for(
        &self,
        kid: &str,
        now: i64,
        http: &reqwest::Client,
    ) -> Result<Arc<Vec<VerifyingKey>>, Denial> {
        let (issuer, jwks_url, insecure_http) = match &self.source {
            Source::Static(keys) => return Ok(keys.clone()),
            Source::None => {
                return Err(Denial::new(
                    DenyReason::IssuerUnavailable,
                    "issuer has no keys (TokenReview)",
                ))
            }
            Source::Remote {
                issuer,
                jwks_url,
                insecure_http,
            } => (issuer, jwks_url, *insecure_http),
        };
        if let Some(f) = self.cached.load_full() {
            let fresh = now < f.fetched_at.saturating_add(f.max_age);
            let known = f.keys.iter().any(|k| k.kid() == kid);
            let recently = now - self.last_attempt.load(Ordering::Relaxed) < REFRESH_INTERVAL_SECS;
            if fresh && (known || recently) {
                return Ok(f.keys.clone());
            }
        }
        let _flight = self.refresh.lock().await;
        // Another request may have refreshed while we waited.
        let current = self.cached.load_full();
        if let Some(f) = &current {
            let fresh = now < f.fetched_at.saturating_add(f.max_age);
            let recently = now - self.last_attempt.load(Ordering::Relaxed) < REFRESH_INTERVAL_SECS;
            if fresh && (recently || f.keys.iter().any(|k| k.kid() == kid)) {
                return Ok(f.keys.clone());
            }
        }
        self.last_attempt.store(now, Ordering::Relaxed);
        match fetch(http, issuer, jwks_url.as_deref(), insecure_http).await {
            Ok((keys, max_age)) => {
                let keys = Arc::new(keys);
                self.cached.store(Some(Arc::new(Fetched {
                    keys: keys.clone(),
                    fetched_at: now,
                    max_age,
                })));
                tracing::debug!(issuer = %issuer, keys = keys.len(), "issuer keys refreshed");
                Ok(keys)
            }
            Err(why) => match current {
                Some(f)
                    if now
                        < f.fetched_at
                            .saturating_add(f.max_age)
                            .saturating_add(STALE_GRACE_SECS) =>
                {
                    tracing::warn!(issuer = %issuer, error = %why, "issuer keys could not be refreshed; using the cached ones");
                    Ok(f.keys.clone())
                }
                _ => {
                    tracing::warn!(issuer = %issuer, error = %why, "issuer keys unavailable; refusing its tokens");
                    Err(Denial::new(
                        DenyReason::IssuerUnavailable,
                        format!("keys of {issuer} could not be fetched: {why}"),
                    ))
                }
            },
        }
    }
}

fn parse_jwks(jwks: &Jwks) -> Result<Vec<VerifyingKey>, String> {
    let mut keys = Vec::with_capacity(jwks.keys.len());
    for jwk in &jwks.keys {
        // Skip keys we cannot use (e.g. encryption keys) rather than failing
        // the whole set; a token naming one then fails as unknown kid.
        if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
            continue;
        }
        match VerifyingKey::from_jwk(jwk) {
            Ok(k) => keys.push(k),
            Err(e) => tracing::debug!(kid = ?jwk.kid, error = %e, "skipping unusable JWK"),
        }
    }
    if keys.is_empty() {
        return Err("no usable signing keys in the JWKS".into());
    }
    Ok(keys)
}

fn url_allowed(url: &str, insecure_http: bool) -> bool {
    url.starts_with("https://") || (insecure_http && url.starts_with("http://"))
}

async fn get_json(
    http: &reqwest::Client,
    url: &str,
    insecure_http: bool,
) -> Result<(Value, i64), String> {
    if !url_allowed(url, insecure_http) {
        return Err(format!("{url} is not https"));
    }
    let resp = http
        .get(url)
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", resp.status().as_u16()));
    }
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_DOCUMENT as u64)
    {
        return Err(format!(
            "GET {url}: document larger than {MAX_DOCUMENT} bytes"
        ));
    }
    let max_age = resp
        .headers()
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',').find_map(|d| {
                d.trim()
                    .strip_prefix("max-age=")
                    .and_then(|n| n.parse::<i64>().ok())
            })
        })
        .unwrap_or(DEFAULT_MAX_AGE_SECS)
        .clamp(30, 3600);
    let body = resp.bytes().await.map_err(|e| format!("GET {url}: {e}"))?;
    if body.len() > MAX_DOCUMENT {
        return Err(format!(
            "GET {url}: document larger than {MAX_DOCUMENT} bytes"
        ));
    }
    let value = serde_json::from_slice(&body).map_err(|_| format!("GET {url}: not JSON"))?;
    Ok((value, max_age))
}

async fn fetch(
    http: &reqwest::Client,
    issuer: &str,
    jwks_url: Option<&str>,
    insecure_http: bool,
) -> Result<(Vec<VerifyingKey>, i64), String> {
    let url = match jwks_url {
        Some(u) => u.to_owned(),
        None => {
            let (doc, _) = get_json(
                http,
                &format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                ),
                insecure_http,
            )
            .await?;
            if doc.get("issuer").and_then(Value::as_str) != Some(issuer) {
                return Err("discovery document names another issuer".into());
            }
            doc.get("jwks_uri")
                .and_then(Value::as_str)
                .ok_or("discovery document has no jwks_uri")?
                .to_owned()
        }
    };
    let (doc, max_age) = get_json(http, &url, insecure_http).await?;
    let jwks: Jwks = serde_json::from_value(doc).map_err(|_| format!("{url} is not a JWKS"))?;
    Ok((parse_jwks(&jwks)?, max_age))
}
