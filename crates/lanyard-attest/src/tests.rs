//! Attestation tests: the fail-closed table, selectors per kind, remote keys
//! with caching and rate-limited refresh on a fake clock, TokenReview against
//! a stub server, and property tests for the parser.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use lanyard_core::{Clock, DenyReason, TenantId};
use lanyard_jose::{Algorithm, Jwks, SigningKey};
use lanyard_testkit::FakeClock;
use serde_json::{json, Value};

use super::*;

const ISS: &str = "https://k8s.test";

fn key() -> SigningKey {
    SigningKey::generate(Algorithm::Es256)
        .map(|(k, _)| k)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn config(name: &str, kind: IssuerKind, iss: &str, keys: KeySource) -> IssuerConfig {
    IssuerConfig {
        name: name.into(),
        kind,
        issuer: iss.into(),
        keys,
        audience: "lanyard".into(),
        tenant: TenantBinding::Fixed(TenantId::parse("payments").unwrap_or_else(|e| panic!("{e}"))),
        algorithms: vec![Algorithm::Es256],
        max_token_lifetime_secs: 86400,
        insecure_allow_legacy_tokens: false,
        insecure_http: true,
    }
}

fn attestor(configs: Vec<IssuerConfig>, clock: &FakeClock) -> Attestor {
    let clock: Arc<dyn Clock> = Arc::new(clock.clone());
    Attestor::new(configs, clock, reqwest::Client::new()).unwrap_or_else(|e| panic!("{e}"))
}

fn k8s_claims(now: i64) -> Value {
    json!({
        "iss": ISS, "aud": ["lanyard"], "sub": "system:serviceaccount:payments:api",
        "iat": now, "nbf": now, "exp": now + 3600, "jti": "j1",
        "kubernetes.io": {
            "namespace": "payments",
            "serviceaccount": {"name": "api", "uid": "sa-1"},
            "pod": {"name": "api-0", "uid": "pod-1"},
            "node": {"name": "n1", "uid": "node-1"},
        },
    })
}

fn sign(k: &SigningKey, claims: &Value) -> String {
    lanyard_jose::encode_jwt(k, claims).unwrap_or_default()
}

fn inline(k: &SigningKey) -> KeySource {
    KeySource::JwksInline(Jwks {
        keys: vec![k.public_jwk()],
    })
}

#[tokio::test]
async fn kubernetes_token_gives_selectors_tenant_and_revocation_keys() -> Result<(), Denial> {
    let clock = FakeClock::new();
    let k = key();
    let a = attestor(
        vec![config("k8s", IssuerKind::Kubernetes, ISS, inline(&k))],
        &clock,
    );
    let ev = a
        .verify(&sign(&k, &k8s_claims(clock.unix_seconds())))
        .await?;
    let sels: Vec<String> = ev.selectors.iter().map(ToString::to_string).collect();
    assert_eq!(
        sels,
        [
            "k8s:node-name:n1",
            "k8s:node-uid:node-1",
            "k8s:ns:payments",
            "k8s:pod-name:api-0",
            "k8s:pod-uid:pod-1",
            "k8s:sa:api",
            "k8s:sa-uid:sa-1"
        ]
    );
    assert_eq!(ev.tenant.as_ref().map(TenantId::as_str), Some("payments"));
    assert_eq!(ev.issuer, "k8s");
    assert!(ev
        .revocation_keys
        .contains(&("k8s-sa-uid".into(), "sa-1".into())));
    assert!(ev
        .revocation_keys
        .contains(&("k8s-pod-uid".into(), "pod-1".into())));
    assert!(ev.revocation_keys.contains(&("jti".into(), "j1".into())));
    assert!(ev.revocation_keys.contains(&(
        "subject".into(),
        format!("{ISS}:system:serviceaccount:payments:api")
    )));
    assert_eq!(ev.digest.len(), 64);
    Ok(())
}

#[tokio::test]
async fn fail_closed_table() {
    let clock = FakeClock::new();
    let now = clock.unix_seconds();
    let k = key();
    let mut legacy_cfg = config(
        "legacy",
        IssuerKind::Kubernetes,
        "kubernetes/serviceaccount",
        inline(&k),
    );
    legacy_cfg.algorithms = vec![Algorithm::Es256];
    let a = attestor(
        vec![
            config("k8s", IssuerKind::Kubernetes, ISS, inline(&k)),
            legacy_cfg,
        ],
        &clock,
    );
    let good = sign(&k, &k8s_claims(now));
    let payload = good.split('.').nth(1).unwrap_or("").to_owned();
    let hdr = |alg: &str| B64.encode(format!(r#"{{"alg":"{alg}","kid":"{}"}}"#, k.kid()));
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = k8s_claims(now);
        f(&mut c);
        sign(&k, &c)
    };
    let hs = {
        let input = format!("{}.{payload}", hdr("HS256"));
        let secret = serde_json::to_vec(&k.public_jwk()).unwrap_or_default();
        let tag = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret),
            input.as_bytes(),
        );
        format!("{input}.{}", B64.encode(tag.as_ref()))
    };
    let rs_key = SigningKey::generate(Algorithm::Rs256)
        .map(|(k, _)| k)
        .unwrap_or_else(|e| panic!("{e}"));
    let cases: Vec<(&str, String, DenyReason)> = vec![
        (
            "unknown issuer",
            with(&|c| c["iss"] = json!("https://evil")),
            DenyReason::UnknownIssuer,
        ),
        (
            "wrong aud",
            with(&|c| c["aud"] = json!("x")),
            DenyReason::WrongAudience,
        ),
        (
            "expired",
            with(&|c| {
                c["exp"] = json!(now - 61);
                c["iat"] = json!(now - 100);
                c["nbf"] = json!(now - 100)
            }),
            DenyReason::Expired,
        ),
        (
            "no exp",
            with(&|c| {
                if let Some(o) = c.as_object_mut() {
                    o.remove("exp");
                }
            }),
            DenyReason::MissingClaim,
        ),
        (
            "nbf future",
            with(&|c| c["nbf"] = json!(now + 120)),
            DenyReason::NotYetValid,
        ),
        (
            "iat future",
            with(&|c| c["iat"] = json!(now + 120)),
            DenyReason::NotYetValid,
        ),
        (
            "too long",
            with(&|c| c["exp"] = json!(now + 86401)),
            DenyReason::LifetimeTooLong,
        ),
        (
            "alg none",
            format!("{}.{payload}.", hdr("none")),
            DenyReason::AlgorithmNotAllowed,
        ),
        ("HS256 with public key", hs, DenyReason::AlgorithmNotAllowed),
        (
            "RS256 not allowed",
            sign(&rs_key, &k8s_claims(now)),
            DenyReason::AlgorithmNotAllowed,
        ),
        (
            "unknown kid",
            sign(&key(), &k8s_claims(now)),
            DenyReason::UnknownKey,
        ),
        (
            "tampered",
            format!(
                "{}.{}.{}",
                good.split('.').next().unwrap_or(""),
                B64.encode(b"{\"iss\":\"https://k8s.test\"}"),
                good.split('.').nth(2).unwrap_or("")
            ),
            DenyReason::BadSignature,
        ),
        (
            "truncated",
            good[..good.len() - 10].to_owned(),
            DenyReason::BadSignature,
        ),
        ("garbage", "garbage".into(), DenyReason::Malformed),
        ("two parts", "a.b".into(), DenyReason::Malformed),
        (
            "oversized",
            "a".repeat(lanyard_jose::MAX_COMPACT_LEN + 1),
            DenyReason::TooLarge,
        ),
        (
            "no kubernetes.io",
            with(&|c| {
                if let Some(o) = c.as_object_mut() {
                    o.remove("kubernetes.io");
                }
            }),
            DenyReason::MissingClaim,
        ),
        (
            "no sa uid",
            with(&|c| c["kubernetes.io"]["serviceaccount"] = json!({"name": "api"})),
            DenyReason::MissingClaim,
        ),
        (
            "control char in ns",
            with(&|c| c["kubernetes.io"]["namespace"] = json!("a\nb")),
            DenyReason::Malformed,
        ),
        (
            "legacy token",
            {
                let c = json!({"iss": "kubernetes/serviceaccount", "aud": "lanyard", "sub": "system:serviceaccount:a:b", "exp": now + 60,
                "kubernetes.io/serviceaccount/namespace": "a", "kubernetes.io/serviceaccount/service-account.name": "b"});
                sign(&k, &c)
            },
            DenyReason::LegacyToken,
        ),
    ];
    for (name, token, want) in cases {
        let got = a.verify(&token).await.map(|_| ()).map_err(|d| d.reason);
        assert_eq!(got, Err(want), "{name}");
    }
}

#[tokio::test]
async fn ci_and_oidc_tokens_become_selectors() -> Result<(), Denial> {
    let clock = FakeClock::new();
    let now = clock.unix_seconds();
    let k = key();
    let mut gha = config(
        "gha",
        IssuerKind::GithubActions,
        "https://token.actions.githubusercontent.com",
        inline(&k),
    );
    gha.tenant = TenantBinding::Claim("/repository_owner".into());
    let gitlab = config(
        "gitlab",
        IssuerKind::Gitlab,
        "https://gitlab.example.com",
        inline(&k),
    );
    let oidc = config("idp", IssuerKind::Oidc, "https://idp.test", inline(&k));
    let a = attestor(vec![gha, gitlab, oidc], &clock);
    let base =
        |iss: &str| json!({"iss": iss, "aud": "lanyard", "sub": "s", "iat": now, "exp": now + 300});
    let mut c = base("https://token.actions.githubusercontent.com");
    c["repository"] = json!("acme/api");
    c["repository_owner"] = json!("acme");
    c["ref"] = json!("refs/heads/main");
    c["environment"] = json!("prod");
    c["job_workflow_ref"] = json!("acme/wf/.github/workflows/deploy.yml@refs/heads/main");
    let ev = a.verify(&sign(&k, &c)).await?;
    let sels: Vec<String> = ev.selectors.iter().map(ToString::to_string).collect();
    assert!(
        sels.contains(&"gha:repository:acme/api".to_owned())
            && sels.contains(&"gha:ref:refs/heads/main".to_owned()),
        "{sels:?}"
    );
    assert_eq!(
        ev.tenant.as_ref().map(TenantId::as_str),
        Some("acme"),
        "tenant from the claim"
    );
    let mut c = base("https://gitlab.example.com");
    c["project_path"] = json!("group/app");
    c["ref_protected"] = json!(true);
    let ev = a.verify(&sign(&k, &c)).await?;
    let sels: Vec<String> = ev.selectors.iter().map(ToString::to_string).collect();
    assert_eq!(
        sels,
        ["gitlab:project_path:group/app", "gitlab:ref_protected:true"]
    );
    let mut c = base("https://idp.test");
    c["email"] = json!("a@b.c");
    c["Weird Key"] = json!("ignored");
    let ev = a.verify(&sign(&k, &c)).await?;
    let sels: Vec<String> = ev.selectors.iter().map(ToString::to_string).collect();
    assert_eq!(sels, ["oidc:email:a@b.c", "oidc:sub:s"]);
    // Tenant claim absent: evidence says so, the server denies.
    let mut c = base("https://token.actions.githubusercontent.com");
    c["repository"] = json!("x/y");
    assert_eq!(a.verify(&sign(&k, &c)).await?.tenant, None);
    Ok(())
}

/// A JWKS server on loopback that counts fetches and can be switched off.
async fn jwks_server(
    jwks: Jwks,
    up: Arc<std::sync::atomic::AtomicBool>,
) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let (h, up, jwks) = (h.clone(), up.clone(), jwks.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                if up.load(Ordering::SeqCst) {
                    Ok(axum::Json(jwks))
                } else {
                    Err(axum::http::StatusCode::SERVICE_UNAVAILABLE)
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/jwks"), hits)
}

#[tokio::test]
async fn remote_keys_are_cached_refreshed_rate_limited_and_fail_closed() {
    let clock = FakeClock::new();
    let k = key();
    let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (url, hits) = jwks_server(
        Jwks {
            keys: vec![k.public_jwk()],
        },
        up.clone(),
    )
    .await;
    let a = attestor(
        vec![config(
            "k8s",
            IssuerKind::Kubernetes,
            ISS,
            KeySource::JwksUrl(url),
        )],
        &clock,
    );
    let token = || sign(&k, &k8s_claims(clock.unix_seconds()));
    for _ in 0..5 {
        assert!(a.verify(&token()).await.is_ok());
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1, "fetched once, then cached");
    // Unknown kids refresh at most once per 30 s.
    for _ in 0..5 {
        assert_eq!(
            a.verify(&sign(&key(), &k8s_claims(clock.unix_seconds())))
                .await
                .map_err(|d| d.reason)
                .err(),
            Some(DenyReason::UnknownKey)
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "within 30s of the last fetch no refetch"
    );
    clock.advance(Duration::from_secs(31));
    let _ = a
        .verify(&sign(&key(), &k8s_claims(clock.unix_seconds())))
        .await;
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    // The issuer goes down: cached keys keep working through the grace period...
    up.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_secs(400));
    assert!(a.verify(&token()).await.is_ok());
    // ...then nothing is accepted.
    clock.advance(Duration::from_secs(4000));
    assert_eq!(
        a.verify(&token()).await.map_err(|d| d.reason).err(),
        Some(DenyReason::IssuerUnavailable)
    );
    // A brand-new attestor with the issuer down has no keys at all.
    let (url, _) = jwks_server(
        Jwks::default(),
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    )
    .await;
    let cold = attestor(
        vec![config(
            "k8s",
            IssuerKind::Kubernetes,
            ISS,
            KeySource::JwksUrl(url),
        )],
        &clock,
    );
    assert_eq!(
        cold.verify(&token()).await.map_err(|d| d.reason).err(),
        Some(DenyReason::IssuerUnavailable)
    );
}

#[tokio::test]
async fn token_review_against_a_stub_api_server() {
    // Stub: no Kubernetes API server runs on this machine.
    let app = axum::Router::new().route(
        "/apis/authentication.k8s.io/v1/tokenreviews",
        axum::routing::post(|axum::Json(body): axum::Json<Value>| async move {
            let token = body.pointer("/spec/token").and_then(Value::as_str).unwrap_or("");
            let ok = token.ends_with(".good");
            axum::Json(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": {
                "authenticated": ok,
                "audiences": body.pointer("/spec/audiences").cloned().unwrap_or(json!([])),
                "user": {"username": "system:serviceaccount:payments:api", "uid": "sa-9",
                    "extra": {"authentication.kubernetes.io/pod-name": ["api-0"], "authentication.kubernetes.io/pod-uid": ["pod-9"]}},
            }}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let clock = FakeClock::new();
    let url = format!("http://{addr}/apis/authentication.k8s.io/v1/tokenreviews");
    let a = attestor(
        vec![config(
            "k8s",
            IssuerKind::Kubernetes,
            ISS,
            KeySource::TokenReview {
                url,
                bearer_token_file: None,
                ca_file: None,
            },
        )],
        &clock,
    );
    let body = B64.encode(json!({"iss": ISS}).to_string());
    let head = B64.encode(r#"{"alg":"RS256","kid":"k"}"#);
    let ev = a
        .verify(&format!("{head}.{body}.good"))
        .await
        .map_err(|d| d.to_string());
    let sels: Vec<String> = ev
        .as_ref()
        .map(|e| e.selectors.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    assert_eq!(
        sels,
        [
            "k8s:ns:payments",
            "k8s:pod-name:api-0",
            "k8s:pod-uid:pod-9",
            "k8s:sa:api",
            "k8s:sa-uid:sa-9"
        ],
        "{ev:?}"
    );
    let refused = a
        .verify(&format!("{head}.{body}.bad"))
        .await
        .map_err(|d| d.reason);
    assert_eq!(refused.err(), Some(DenyReason::BadSignature));
}

#[test]
fn config_validation_names_the_field() {
    let k = key();
    let mut c = config("BAD NAME", IssuerKind::Kubernetes, ISS, inline(&k));
    assert!(c
        .validate()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
        .contains("name"));
    c.name = "ok".into();
    c.insecure_http = false;
    c.keys = KeySource::JwksUrl("http://plain".into());
    assert!(c
        .validate()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
        .contains("jwks_url"));
    c.keys = KeySource::JwksInline(Jwks::default());
    assert!(c.validate().is_err());
    c.keys = inline(&k);
    c.tenant = TenantBinding::Claim("tenant".into());
    assert!(c
        .validate()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
        .contains("JSON pointer"));
    // Serde shape the server stores and the CLI sends.
    let json = serde_json::to_value(config(
        "k8s",
        IssuerKind::GithubActions,
        ISS,
        KeySource::Discovery,
    ))
    .unwrap_or_default();
    assert_eq!(json["kind"], "github-actions");
    assert_eq!(json["keys"], "discovery");
    assert_eq!(json["tenant"], json!({"fixed": "payments"}));
    assert_eq!(json["algorithms"], json!(["ES256"]));
}

mod prop {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn parser_never_panics(s in ".{0,300}") {
            let _ = parse_unverified(&s);
        }

        #[test]
        fn dotted_base64_garbage_is_refused(a in "[A-Za-z0-9_-]{0,60}", b in "[A-Za-z0-9_-]{0,200}", c in "[A-Za-z0-9_-]{0,90}") {
            let clock = FakeClock::new();
            let k = key();
            let att = attestor(vec![config("k8s", IssuerKind::Kubernetes, ISS, inline(&k))], &clock);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}"));
            let token = format!("{a}.{b}.{c}");
            prop_assert!(rt.block_on(att.verify(&token)).is_err());
        }
    }
}
