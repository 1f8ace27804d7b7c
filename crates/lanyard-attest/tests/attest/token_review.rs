//! TokenReview against a stub API server on 127.0.0.1: a stub because no
//! Kubernetes API server runs where these tests do. It answers like
//! `authentication.k8s.io/v1` does (201 Created, `status.authenticated`,
//! `status.audiences`, `status.user`), checks the bearer token, and counts
//! calls so the tests can see which tokens never reach it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use lanyard_attest::{IssuerConfig, IssuerKind, KeySource};
use lanyard_core::{Clock, DenyReason};
use lanyard_jose::{Algorithm, MAX_COMPACT_LEN};
use lanyard_testkit::tokens::{alg_none_token, TestIssuer};
use lanyard_testkit::FakeClock;
use serde_json::{json, Value};

use crate::{attestor, config, reason, selectors, TestResult, AUD, K8S_ISS};

const PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const BEARER: &str = "lanyard-reviewer-token";

/// How the stub answers the next reviews.
#[derive(Clone)]
enum Verdict {
    /// Authenticated as this user, echoing the requested audiences.
    User(Value),
    /// `authenticated: false` with this error.
    Refuse(&'static str),
    /// Authenticated, but for another audience.
    OtherAudience,
    /// HTTP 500.
    Broken,
}

struct Stub {
    calls: Arc<AtomicUsize>,
    verdict: Arc<Mutex<Verdict>>,
    last_request: Arc<Mutex<Value>>,
}

fn sa_user() -> Value {
    json!({
        "username": "system:serviceaccount:payments:api",
        "uid": "sa-uid-api",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:payments"],
        "extra": {
            "authentication.kubernetes.io/pod-name": ["api-0"],
            "authentication.kubernetes.io/pod-uid": ["pod-uid-api"],
            "authentication.kubernetes.io/node-name": ["node-1"],
            "authentication.kubernetes.io/node-uid": ["node-uid-1"],
            "authentication.kubernetes.io/credential-id": ["JTI=jti-payments-api"],
        },
    })
}

fn router(stub: &Stub) -> axum::Router {
    let (calls, verdict, last) = (
        stub.calls.clone(),
        stub.verdict.clone(),
        stub.last_request.clone(),
    );
    axum::Router::new().route(
        PATH,
        axum::routing::post(move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| {
            let (calls, verdict, last) = (calls.clone(), verdict.clone(), last.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                *last.lock().unwrap_or_else(|p| p.into_inner()) = body.clone();
                let authorized = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    == Some(&format!("Bearer {BEARER}"));
                if !authorized {
                    return (StatusCode::UNAUTHORIZED, axum::Json(json!({"kind": "Status", "code": 401})));
                }
                let audiences = body.pointer("/spec/audiences").cloned().unwrap_or(json!([]));
                let v = verdict.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let status = match v {
                    Verdict::User(user) => json!({"authenticated": true, "audiences": audiences, "user": user}),
                    Verdict::Refuse(e) => json!({"authenticated": false, "error": e, "user": {}}),
                    Verdict::OtherAudience => json!({"authenticated": true, "audiences": ["https://kubernetes.default.svc"], "user": sa_user()}),
                    Verdict::Broken => return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({}))),
                };
                let mut review = body;
                review["status"] = status;
                (StatusCode::CREATED, axum::Json(review))
            }
        }),
    )
}

fn new_stub() -> Stub {
    Stub {
        calls: Arc::new(AtomicUsize::new(0)),
        verdict: Arc::new(Mutex::new(Verdict::User(sa_user()))),
        last_request: Arc::new(Mutex::new(Value::Null)),
    }
}

fn review_config(url: String, bearer: Option<PathBuf>, ca: Option<PathBuf>) -> IssuerConfig {
    let mut c = config(
        "cluster",
        IssuerKind::Kubernetes,
        K8S_ISS,
        KeySource::TokenReview {
            url,
            bearer_token_file: bearer,
            ca_file: ca,
        },
    );
    c.algorithms = Algorithm::ALL.to_vec();
    c.insecure_http = true;
    c
}

#[tokio::test]
async fn the_api_server_decides() -> TestResult {
    let stub = new_stub();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}{PATH}", listener.local_addr()?);
    let app = router(&stub);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir()?;
    let bearer = dir.path().join("token");
    std::fs::write(&bearer, format!("{BEARER}\n"))?;
    let clock = FakeClock::new();
    let now = clock.unix_seconds();
    let a = attestor(
        vec![review_config(url.clone(), Some(bearer.clone()), None)],
        &clock,
    );
    // The cluster's key is unknown to Lanyard: only the API server checks it.
    let cluster = TestIssuer::new(K8S_ISS, Algorithm::Rs256);
    let token = cluster.sign(&cluster.k8s_claims(now, "payments", "api"));

    let ev = a.verify(&token).await?;
    assert_eq!(
        selectors(&ev),
        [
            "k8s:cluster:cluster",
            "k8s:node-name:node-1",
            "k8s:node-uid:node-uid-1",
            "k8s:ns:payments",
            "k8s:pod-name:api-0",
            "k8s:pod-uid:pod-uid-api",
            "k8s:sa:api",
            "k8s:sa-uid:sa-uid-api",
        ]
    );
    assert_eq!(ev.subject, "system:serviceaccount:payments:api");
    assert_eq!(
        ev.expires_at,
        now + 3600,
        "the token's own exp, vouched for by the API server"
    );
    assert!(ev
        .revocation_keys
        .contains(&lanyard_core::RevocationKey::new(
            lanyard_core::RevocationKind::K8sPodUid,
            "pod-uid-api"
        )));
    let sent = stub
        .last_request
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    assert_eq!(sent["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(sent["kind"], "TokenReview");
    assert_eq!(sent["spec"]["audiences"], json!([AUD]));
    assert_eq!(sent["spec"]["token"], json!(token));
    assert_eq!(stub.calls.load(Ordering::SeqCst), 1);

    // The same token again is reviewed again: the API server vouches for
    // every use (a deleted pod's token stops working), never a cache.
    a.verify(&token).await?;
    assert_eq!(stub.calls.load(Ordering::SeqCst), 2);
    assert_eq!(a.verified_cache_stats().entries, 0);

    // Refusals by the API server.
    let set = |v: Verdict| *stub.verdict.lock().unwrap_or_else(|p| p.into_inner()) = v;
    let cases = [
        (
            Verdict::Refuse("[invalid bearer token, service account token has been invalidated]"),
            DenyReason::BadSignature,
        ),
        (Verdict::OtherAudience, DenyReason::WrongAudience),
        (
            Verdict::User(json!({"username": "alice", "uid": "u1"})),
            DenyReason::MissingClaim,
        ),
        (
            Verdict::User(json!({"username": "system:node:node-1", "uid": "u1"})),
            DenyReason::MissingClaim,
        ),
        (
            Verdict::User(json!({"username": "system:serviceaccount:payments:api"})),
            DenyReason::MissingClaim,
        ),
        (
            Verdict::User(
                json!({"username": "system:serviceaccount:pay\u{1}ments:api", "uid": "u1"}),
            ),
            DenyReason::Malformed,
        ),
        (Verdict::Broken, DenyReason::IssuerUnavailable),
    ];
    for (i, (verdict, want)) in cases.into_iter().enumerate() {
        set(verdict);
        let r = a.verify(&token).await;
        assert_eq!(reason(&r), Some(want), "case {i}: {r:?}");
    }
    set(Verdict::User(sa_user()));
    let calls = stub.calls.load(Ordering::SeqCst);

    // Tokens refused before the API server is asked.
    let mut expired = cluster.k8s_claims(now - 7200, "payments", "api");
    expired["exp"] = json!(now - 3600);
    let mut wrong_aud = cluster.k8s_claims(now, "payments", "api");
    wrong_aud["aud"] = json!(["https://kubernetes.default.svc"]);
    let local = [
        (
            "too large",
            "a".repeat(MAX_COMPACT_LEN + 1),
            DenyReason::TooLarge,
        ),
        ("garbage", "garbage".to_owned(), DenyReason::Malformed),
        (
            "alg none",
            alg_none_token(cluster.key(), &cluster.k8s_claims(now, "payments", "api")),
            DenyReason::AlgorithmNotAllowed,
        ),
        ("expired", cluster.sign(&expired), DenyReason::Expired),
        (
            "wrong aud",
            cluster.sign(&wrong_aud),
            DenyReason::WrongAudience,
        ),
        (
            "legacy",
            cluster.sign(&lanyard_testkit::tokens::legacy_k8s_claims(
                "payments", "api",
            )),
            DenyReason::LegacyToken,
        ),
    ];
    for (name, t, want) in local {
        assert_eq!(reason(&a.verify(&t).await), Some(want), "{name}");
    }
    assert_eq!(
        stub.calls.load(Ordering::SeqCst),
        calls,
        "none of them reached the API server"
    );

    // Without the bearer token the stub says 401; a missing file is unavailable too.
    let anonymous = attestor(vec![review_config(url.clone(), None, None)], &clock);
    assert_eq!(
        reason(&anonymous.verify(&token).await),
        Some(DenyReason::IssuerUnavailable)
    );
    let missing = attestor(
        vec![review_config(url, Some(dir.path().join("nope")), None)],
        &clock,
    );
    assert_eq!(
        reason(&missing.verify(&token).await),
        Some(DenyReason::IssuerUnavailable)
    );
    Ok(())
}

#[tokio::test]
async fn https_with_the_configured_ca_only() -> TestResult {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let stub = new_stub();
    let (cert, key) = lanyard_testkit::self_signed_tls();
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
        cert.clone().into_bytes(),
        key.into_bytes(),
    )
    .await?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let app = router(&stub);
    tokio::spawn(async move {
        axum_server::from_tcp_rustls(listener, tls)
            .serve(app.into_make_service())
            .await
    });
    let dir = tempfile::tempdir()?;
    let (bearer, ca) = (dir.path().join("token"), dir.path().join("ca.crt"));
    std::fs::write(&bearer, BEARER)?;
    std::fs::write(&ca, &cert)?;
    let clock = FakeClock::new();
    let cluster = TestIssuer::new(K8S_ISS, Algorithm::Es256);
    let token = cluster.sign(&cluster.k8s_claims(clock.unix_seconds(), "payments", "api"));
    let url = format!("https://127.0.0.1:{}{PATH}", addr.port());

    let mut cfg = review_config(url.clone(), Some(bearer.clone()), Some(ca));
    cfg.insecure_http = false;
    let a = attestor(vec![cfg.clone()], &clock);
    a.verify(&token).await?;
    // Without the CA the server's certificate is not trusted.
    cfg.keys = KeySource::TokenReview {
        url: url.clone(),
        bearer_token_file: Some(bearer.clone()),
        ca_file: None,
    };
    let untrusted = attestor(vec![cfg.clone()], &clock);
    assert_eq!(
        reason(&untrusted.verify(&token).await),
        Some(DenyReason::IssuerUnavailable)
    );
    // An unreadable CA file leaves the issuer unavailable, not the attestor broken.
    cfg.keys = KeySource::TokenReview {
        url,
        bearer_token_file: Some(bearer),
        ca_file: Some(dir.path().join("missing.crt")),
    };
    let broken = attestor(vec![cfg], &clock);
    let r = broken.verify(&token).await;
    assert_eq!(reason(&r), Some(DenyReason::IssuerUnavailable));
    assert!(r
        .err()
        .map(|d| d.detail)
        .unwrap_or_default()
        .contains("missing.crt"));
    Ok(())
}
