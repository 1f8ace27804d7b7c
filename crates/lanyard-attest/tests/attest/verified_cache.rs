//! The verified-token cache: a token presented again is answered from it
//! only while it has not expired and its issuer's key set is the one that
//! verified it; TokenReview answers and legacy tokens are never remembered;
//! the cache is bounded and can be turned off. Hits and misses are read
//! from `Attestor::verified_cache_stats`, never from timing.

use std::time::Duration;

use lanyard_attest::{IssuerKind, KeySource, VerifiedCacheStats};
use lanyard_core::{Clock, DenyReason};
use lanyard_jose::{Algorithm, Jwks};
use lanyard_testkit::tokens::{legacy_k8s_claims, TestIssuer};
use lanyard_testkit::FakeClock;

use crate::{attestor, config, inline, k8s_setup, reason, TestResult, K8S_ISS};

fn hits_misses(s: VerifiedCacheStats) -> (u64, u64) {
    (s.hits, s.misses)
}

#[tokio::test]
async fn a_token_presented_again_is_answered_from_the_cache_until_it_expires() -> TestResult {
    let (clock, issuer, a) = k8s_setup();
    let now = clock.unix_seconds();
    let token = issuer.sign(&issuer.k8s_claims(now, "payments", "api"));
    let fresh = a.verify(&token).await?;
    assert_eq!(hits_misses(a.verified_cache_stats()), (0, 1));
    let again = a.verify(&token).await?;
    assert_eq!(
        hits_misses(a.verified_cache_stats()),
        (1, 1),
        "answered from the cache"
    );
    assert_eq!(again, fresh, "the same evidence, digest included");

    // Another token of the same workload is a different entry.
    let other = issuer.sign(&issuer.k8s_claims(now + 1, "payments", "api"));
    a.verify(&other).await?;
    assert_eq!(hits_misses(a.verified_cache_stats()), (1, 2));
    assert_eq!(a.verified_cache_stats().entries, 2);

    // At exp the cache no longer answers; a fresh verification still
    // allows the clock skew, then refuses.
    clock.advance(Duration::from_secs(u64::try_from(fresh.expires_at - now)?));
    a.verify(&token).await?;
    assert_eq!(
        hits_misses(a.verified_cache_stats()),
        (1, 3),
        "expired: verified afresh"
    );
    clock.advance(Duration::from_secs(61));
    assert_eq!(reason(&a.verify(&token).await), Some(DenyReason::Expired));
    assert_eq!(reason(&a.verify(&token).await), Some(DenyReason::Expired));
    assert_eq!(
        a.verified_cache_stats().hits,
        1,
        "an expired token is never a hit"
    );
    Ok(())
}

#[tokio::test]
async fn denials_are_not_remembered() -> TestResult {
    let (clock, issuer, a) = k8s_setup();
    let now = clock.unix_seconds();
    let wrong_aud = {
        let mut c = issuer.k8s_claims(now, "payments", "api");
        c["aud"] = serde_json::json!(["someone-else"]);
        issuer.sign(&c)
    };
    for _ in 0..3 {
        assert!(a.verify(&wrong_aud).await.is_err());
    }
    let s = a.verified_cache_stats();
    assert_eq!((s.hits, s.misses, s.entries), (0, 3, 0));
    Ok(())
}

#[tokio::test]
async fn rotated_keys_are_not_trusted_through_the_cache() -> TestResult {
    // The issuer's keys come from a JWKS URL; the cached token's key is
    // then rotated out. Once the key set is refetched, the token is
    // verified afresh against the new set and refused.
    let clock = FakeClock::new();
    let old = TestIssuer::new(K8S_ISS, Algorithm::Es256);
    let new = TestIssuer::new(K8S_ISS, Algorithm::Es256);
    let jwks = std::sync::Arc::new(std::sync::Mutex::new(old.jwks()));
    let served = jwks.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/jwks", listener.local_addr()?);
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let body: Jwks = served.lock().map(|j| j.clone()).unwrap_or_default();
            async move { ([("cache-control", "max-age=60")], axum::Json(body)) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut cfg = config(
        "remote",
        IssuerKind::Kubernetes,
        K8S_ISS,
        KeySource::JwksUrl(url),
    );
    cfg.insecure_http = true;
    let a = attestor(vec![cfg], &clock);
    let token = old.sign(&old.k8s_claims(clock.unix_seconds(), "payments", "api"));
    a.verify(&token).await?;
    a.verify(&token).await?;
    assert_eq!(a.verified_cache_stats().hits, 1);

    *jwks.lock().map_err(|_| "poisoned")? = new.jwks();
    clock.advance(Duration::from_secs(61));
    assert_eq!(
        reason(&a.verify(&token).await),
        Some(DenyReason::UnknownKey),
        "the refreshed key set no longer has the token's key"
    );
    assert_eq!(
        a.verified_cache_stats().hits,
        1,
        "not a hit once the keys changed"
    );
    let newer = new.sign(&new.k8s_claims(clock.unix_seconds(), "payments", "api"));
    a.verify(&newer).await?;
    Ok(())
}

#[tokio::test]
async fn a_new_issuer_set_starts_with_an_empty_cache_of_the_same_size() -> TestResult {
    let (clock, issuer, a) = k8s_setup();
    let a = a.with_verified_cache(64);
    let token = issuer.sign(&issuer.k8s_claims(clock.unix_seconds(), "payments", "api"));
    a.verify(&token).await?;
    assert_eq!(a.verified_cache_stats().entries, 1);
    // The issuer is re-added with another tenant: nothing verified under
    // the old configuration may answer for the new one.
    let mut cfg = config(
        "k8s",
        IssuerKind::Kubernetes,
        K8S_ISS,
        inline(issuer.jwks()),
    );
    cfg.tenant = lanyard_attest::TenantBinding::Fixed(crate::tenant("billing"));
    let b = a.with_issuers(vec![cfg])?;
    let s = b.verified_cache_stats();
    assert_eq!((s.entries, s.capacity), (0, 64));
    let ev = b.verify(&token).await?;
    assert_eq!(ev.tenant, Some(crate::tenant("billing")));
    assert_eq!(b.verified_cache_stats().hits, 0);
    Ok(())
}

#[tokio::test]
async fn the_cache_is_bounded_and_can_be_off() -> TestResult {
    let (clock, issuer, a) = k8s_setup();
    let small = a.with_verified_cache(32);
    let now = clock.unix_seconds();
    let tokens: Vec<String> = (0..200)
        .map(|i| issuer.sign(&issuer.k8s_claims(now - i, "payments", "api")))
        .collect();
    for t in &tokens {
        small.verify(t).await?;
    }
    let s = small.verified_cache_stats();
    assert_eq!(s.capacity, 32);
    assert!(s.entries <= 32 && s.entries > 0, "{s:?}");

    let off = small.with_verified_cache(0);
    for _ in 0..3 {
        off.verify(&tokens[0]).await?;
    }
    let s = off.verified_cache_stats();
    assert_eq!((s.hits, s.misses, s.entries, s.capacity), (0, 0, 0, 0));
    Ok(())
}

#[tokio::test]
async fn legacy_tokens_are_never_remembered() -> TestResult {
    let (_, legacy, a) = crate::legacy_setup();
    let token = legacy.sign(&legacy_k8s_claims("payments", "api"));
    a.verify(&token).await?;
    a.verify(&token).await?;
    let s = a.verified_cache_stats();
    assert_eq!((s.hits, s.entries), (0, 0), "no exp: verified at every use");
    Ok(())
}
