//! Remote keys against a JWKS/discovery server on 127.0.0.1: caching,
//! max-age, rate-limited refresh on unknown kids, single flight, stale
//! grace, fail-closed fetch errors, and cache reuse across rebuilds. The
//! clock is fake; the server counts its hits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::Response;
use lanyard_attest::{
    IssuerKind, KeySource, MAX_DOCUMENT_BYTES, REFRESH_INTERVAL_SECS, STALE_GRACE_SECS,
};
use lanyard_core::{Clock, DenyReason};
use lanyard_jose::{Algorithm, Jwks};
use lanyard_testkit::tokens::TestIssuer;
use lanyard_testkit::FakeClock;
use serde_json::{json, Value};
use tokio::sync::{Notify, Semaphore};

use crate::{attestor, config, reason, TestResult};

/// What the stub serves; tests change it while it runs.
struct State {
    jwks: Value,
    up: bool,
    cache_control: Option<String>,
    /// Replaces the JWKS body when set.
    raw_body: Option<Vec<u8>>,
    /// Overrides the discovery document when set.
    discovery: Option<Value>,
}

/// Announces a fetch has started, then waits for a permit.
type Gate = Arc<Mutex<Option<(Arc<Notify>, Arc<Semaphore>)>>>;

struct Stub {
    base: String,
    state: Arc<Mutex<State>>,
    jwks_hits: Arc<AtomicUsize>,
    discovery_hits: Arc<AtomicUsize>,
    /// When set, the JWKS handler announces itself and waits for a permit.
    gate: Gate,
}

impl Stub {
    async fn start(jwks: Jwks) -> Result<Self, Box<dyn std::error::Error>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(Mutex::new(State {
            jwks: serde_json::to_value(jwks)?,
            up: true,
            cache_control: None,
            raw_body: None,
            discovery: None,
        }));
        let jwks_hits = Arc::new(AtomicUsize::new(0));
        let discovery_hits = Arc::new(AtomicUsize::new(0));
        let gate: Gate = Arc::new(Mutex::new(None));
        let (s1, h1, g1) = (state.clone(), jwks_hits.clone(), gate.clone());
        let (s2, h2, base2) = (state.clone(), discovery_hits.clone(), base.clone());
        let app = axum::Router::new()
            .route(
                "/jwks",
                axum::routing::get(move || {
                    let (state, hits, gate) = (s1.clone(), h1.clone(), g1.clone());
                    async move {
                        hits.fetch_add(1, Ordering::SeqCst);
                        let g = lock(&gate).clone();
                        if let Some((entered, permits)) = g {
                            entered.notify_one();
                            if let Ok(p) = permits.acquire().await {
                                p.forget();
                            }
                        }
                        let s = lock(&state);
                        if !s.up {
                            return respond(
                                StatusCode::SERVICE_UNAVAILABLE,
                                None,
                                b"down".to_vec(),
                            );
                        }
                        let body = s
                            .raw_body
                            .clone()
                            .unwrap_or_else(|| s.jwks.to_string().into_bytes());
                        respond(StatusCode::OK, s.cache_control.clone(), body)
                    }
                }),
            )
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || {
                    let (state, hits, base) = (s2.clone(), h2.clone(), base2.clone());
                    async move {
                        hits.fetch_add(1, Ordering::SeqCst);
                        let s = lock(&state);
                        if !s.up {
                            return respond(StatusCode::SERVICE_UNAVAILABLE, None, Vec::new());
                        }
                        let doc = s.discovery.clone().unwrap_or_else(
                            || json!({"issuer": base, "jwks_uri": format!("{base}/jwks")}),
                        );
                        respond(StatusCode::OK, None, doc.to_string().into_bytes())
                    }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self {
            base,
            state,
            jwks_hits,
            discovery_hits,
            gate,
        })
    }

    fn url(&self) -> String {
        format!("{}/jwks", self.base)
    }

    fn set(&self, f: impl FnOnce(&mut State)) {
        f(&mut lock(&self.state));
    }

    fn hits(&self) -> usize {
        self.jwks_hits.load(Ordering::SeqCst)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn respond(status: StatusCode, cache_control: Option<String>, body: Vec<u8>) -> Response {
    let mut b = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(cc) = cache_control {
        b = b.header(header::CACHE_CONTROL, cc);
    }
    b.body(axum::body::Body::from(body))
        .unwrap_or_else(|_| Response::new(axum::body::Body::empty()))
}

fn remote_config(iss: &str, keys: KeySource) -> lanyard_attest::IssuerConfig {
    let mut c = config("remote", IssuerKind::Kubernetes, iss, keys);
    c.insecure_http = true;
    c
}

const ISS: &str = crate::K8S_ISS;

#[tokio::test]
async fn keys_are_fetched_once_then_cached_for_max_age() -> TestResult {
    let clock = FakeClock::new();
    let k = TestIssuer::new(ISS, Algorithm::Es256);
    let stub = Stub::start(k.jwks()).await?;
    stub.set(|s| s.cache_control = Some("public, max-age=120".into()));
    let a = attestor(
        vec![remote_config(ISS, KeySource::JwksUrl(stub.url()))],
        &clock,
    );
    let token = |clock: &FakeClock| k.sign(&k.k8s_claims(clock.unix_seconds(), "payments", "api"));
    for _ in 0..5 {
        a.verify(&token(&clock)).await?;
    }
    assert_eq!(stub.hits(), 1, "fetched once, then cached");
    clock.advance(Duration::from_secs(119));
    a.verify(&token(&clock)).await?;
    assert_eq!(stub.hits(), 1, "still fresh at 119s");
    clock.advance(Duration::from_secs(1));
    a.verify(&token(&clock)).await?;
    assert_eq!(stub.hits(), 2, "max-age 120 honoured");
    Ok(())
}

#[tokio::test]
async fn unknown_kids_refresh_at_most_every_30_seconds() -> TestResult {
    let clock = FakeClock::new();
    let old = TestIssuer::new(ISS, Algorithm::Es256);
    let stub = Stub::start(old.jwks()).await?;
    let a = attestor(
        vec![remote_config(ISS, KeySource::JwksUrl(stub.url()))],
        &clock,
    );
    let now = || clock.unix_seconds();
    a.verify(&old.sign(&old.k8s_claims(now(), "payments", "api")))
        .await?;
    assert_eq!(stub.hits(), 1);
    // The issuer rotates to a new key; a flood of tokens with made-up kids
    // and with the new key arrives within 30 s of the last fetch.
    let new = TestIssuer::new(ISS, Algorithm::Es256);
    stub.set(|s| s.jwks = json!({"keys": [old.key().public_jwk(), new.key().public_jwk()]}));
    for _ in 0..10 {
        let forged = TestIssuer::new(ISS, Algorithm::Es256);
        let r = a
            .verify(&forged.sign(&forged.k8s_claims(now(), "payments", "api")))
            .await;
        assert_eq!(reason(&r), Some(DenyReason::UnknownKey));
    }
    let new_token = || new.sign(&new.k8s_claims(now(), "payments", "api"));
    assert_eq!(
        reason(&a.verify(&new_token()).await),
        Some(DenyReason::UnknownKey)
    );
    assert_eq!(stub.hits(), 1, "no refetch within 30s of the last one");
    clock.advance(Duration::from_secs(u64::try_from(REFRESH_INTERVAL_SECS)?));
    a.verify(&new_token()).await?;
    assert_eq!(stub.hits(), 2, "one refresh picked up the rotated key");
    for _ in 0..5 {
        a.verify(&new_token()).await?;
    }
    let forged = TestIssuer::new(ISS, Algorithm::Es256);
    let r = a
        .verify(&forged.sign(&forged.k8s_claims(now(), "payments", "api")))
        .await;
    assert_eq!(reason(&r), Some(DenyReason::UnknownKey));
    assert_eq!(stub.hits(), 2);
    Ok(())
}

#[tokio::test]
async fn an_unreachable_issuer_never_means_acceptance() -> TestResult {
    let clock = FakeClock::new();
    let k = TestIssuer::new(ISS, Algorithm::Es256);
    let stub = Stub::start(k.jwks()).await?;
    stub.set(|s| s.cache_control = Some("max-age=60".into()));
    let a = attestor(
        vec![remote_config(ISS, KeySource::JwksUrl(stub.url()))],
        &clock,
    );
    let token = |clock: &FakeClock| k.sign(&k.k8s_claims(clock.unix_seconds(), "payments", "api"));
    a.verify(&token(&clock)).await?;
    // The issuer goes down. Past max-age, cached keys keep verifying for
    // the grace period (one refresh attempt per 30 s)...
    stub.set(|s| s.up = false);
    clock.advance(Duration::from_secs(61));
    a.verify(&token(&clock)).await?;
    assert_eq!(stub.hits(), 2, "tried to refresh once");
    a.verify(&token(&clock)).await?;
    assert_eq!(stub.hits(), 2, "no retry within 30s");
    clock.advance(Duration::from_secs(u64::try_from(STALE_GRACE_SECS)? - 100));
    a.verify(&token(&clock)).await?;
    // ...and then nothing is accepted.
    clock.advance(Duration::from_secs(100));
    let r = a.verify(&token(&clock)).await;
    assert_eq!(reason(&r), Some(DenyReason::IssuerUnavailable), "{r:?}");
    let detail = r.err().map(|d| d.detail).unwrap_or_default();
    assert!(detail.contains("HTTP 503"), "{detail}");
    // Back up: keys are fetched again and tokens verify.
    stub.set(|s| s.up = true);
    clock.advance(Duration::from_secs(30));
    a.verify(&token(&clock)).await?;
    Ok(())
}

#[tokio::test]
async fn no_keys_ever_fetched_is_issuer_unavailable() -> TestResult {
    let clock = FakeClock::new();
    let k = TestIssuer::new(ISS, Algorithm::Es256);
    let stub = Stub::start(k.jwks()).await?;
    let a = attestor(
        vec![remote_config(ISS, KeySource::JwksUrl(stub.url()))],
        &clock,
    );
    let token = |clock: &FakeClock| k.sign(&k.k8s_claims(clock.unix_seconds(), "payments", "api"));
    let bad_bodies: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"<html>".to_vec()),
        ("no keys array", br#"{"kid":"x"}"#.to_vec()),
        ("no usable key", br#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"},{"kty":"EC","crv":"P-384","kid":"p384","x":"AA","y":"AA"}]}"#.to_vec()),
        ("over the size limit", vec![b' '; MAX_DOCUMENT_BYTES + 1]),
    ];
    for (name, body) in bad_bodies {
        stub.set(|s| s.raw_body = Some(body));
        let r = a.verify(&token(&clock)).await;
        assert_eq!(
            reason(&r),
            Some(DenyReason::IssuerUnavailable),
            "{name}: {r:?}"
        );
        clock.advance(Duration::from_secs(30));
    }
    stub.set(|s| s.raw_body = None);
    a.verify(&token(&clock)).await?;
    // A server that is not there at all.
    let gone = attestor(
        vec![remote_config(
            ISS,
            KeySource::JwksUrl("http://127.0.0.1:9/jwks".into()),
        )],
        &clock,
    );
    assert_eq!(
        reason(&gone.verify(&token(&clock)).await),
        Some(DenyReason::IssuerUnavailable)
    );
    Ok(())
}

#[tokio::test]
async fn unusable_keys_in_a_fetched_set_are_skipped() -> TestResult {
    let clock = FakeClock::new();
    let k = TestIssuer::new(ISS, Algorithm::Es256);
    let stub = Stub::start(k.jwks()).await?;
    let mut keys = vec![
        json!({"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"}),
        json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}),
        json!({"kty": 5}),
    ];
    keys.push(serde_json::to_value(k.key().public_jwk())?);
    stub.set(|s| s.jwks = json!({ "keys": keys }));
    let a = attestor(
        vec![remote_config(ISS, KeySource::JwksUrl(stub.url()))],
        &clock,
    );
    a.verify(&k.sign(&k.k8s_claims(clock.unix_seconds(), "payments", "api")))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_requests_share_one_fetch() -> TestResult {
    let clock = FakeClock::new();
    let k = TestIssuer::new(ISS, Algorithm::Es256);
    let stub = Stub::start(k.jwks()).await?;
    let entered = Arc::new(Notify::new());
    let permits = Arc::new(Semaphore::new(0));
    *lock(&stub.gate) = Some((entered.clone(), permits.clone()));
    let a = Arc::new(attestor(
        vec![remote_config(ISS, KeySource::JwksUrl(stub.url()))],
        &clock,
    ));
    let token = k.sign(&k.k8s_claims(clock.unix_seconds(), "payments", "api"));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (a, token) = (a.clone(), token.clone());
        tasks.push(tokio::spawn(async move { a.verify(&token).await }));
    }
    // One request is inside the fetch; let the rest pile up behind it.
    entered.notified().await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    permits.add_permits(1000);
    for t in tasks {
        t.await??;
    }
    assert_eq!(stub.hits(), 1, "single flight");
    Ok(())
}

#[tokio::test]
async fn discovery_finds_the_jwks_and_checks_the_document() -> TestResult {
    let clock = FakeClock::new();
    let stub = Stub::start(Jwks::default()).await?;
    let iss = stub.base.clone();
    let k = TestIssuer::new(&iss, Algorithm::Es256);
    stub.set(|s| s.jwks = serde_json::to_value(k.jwks()).unwrap_or_default());
    let token = |clock: &FakeClock| k.sign(&k.k8s_claims(clock.unix_seconds(), "payments", "api"));
    let a = attestor(vec![remote_config(&iss, KeySource::Discovery)], &clock);
    a.verify(&token(&clock)).await?;
    assert_eq!(
        (stub.discovery_hits.load(Ordering::SeqCst), stub.hits()),
        (1, 1)
    );

    let bad_docs = [
        (
            "another issuer",
            json!({"issuer": "https://evil.test", "jwks_uri": stub.url()}),
        ),
        ("no jwks_uri", json!({"issuer": iss})),
        (
            "jwks_uri with another scheme",
            json!({"issuer": iss, "jwks_uri": "https://127.0.0.1:1/jwks"}),
        ),
        (
            "jwks_uri not a URL",
            json!({"issuer": iss, "jwks_uri": "keys"}),
        ),
    ];
    for (name, doc) in bad_docs {
        stub.set(|s| s.discovery = Some(doc));
        let fresh = attestor(vec![remote_config(&iss, KeySource::Discovery)], &clock);
        let r = fresh.verify(&token(&clock)).await;
        assert_eq!(
            reason(&r),
            Some(DenyReason::IssuerUnavailable),
            "{name}: {r:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn rebuilding_keeps_caches_of_unchanged_issuers() -> TestResult {
    let clock = FakeClock::new();
    let k = TestIssuer::new(ISS, Algorithm::Es256);
    let stub = Stub::start(k.jwks()).await?;
    let cfg = remote_config(ISS, KeySource::JwksUrl(stub.url()));
    let a = attestor(vec![cfg.clone()], &clock);
    let token = || k.sign(&k.k8s_claims(clock.unix_seconds(), "payments", "api"));
    a.verify(&token()).await?;
    // Same issuer, another audience setting: the key cache carries over.
    let mut same_source = cfg.clone();
    same_source.max_token_lifetime_secs = 7200;
    let b = a.with_issuers(vec![same_source])?;
    b.verify(&token()).await?;
    assert_eq!(stub.hits(), 1, "cache kept");
    // Another key URL: a new cache.
    let mut moved = cfg.clone();
    moved.keys = KeySource::JwksUrl(format!("{}?v=2", stub.url()));
    let c = b.with_issuers(vec![moved])?;
    c.verify(&token()).await?;
    assert_eq!(stub.hits(), 2, "new source, new fetch");
    assert_eq!(c.len(), 1);
    Ok(())
}
