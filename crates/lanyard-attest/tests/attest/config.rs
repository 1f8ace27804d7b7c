//! Issuer configuration: validation names the field, the serde shape is the
//! one the server stores and the CLI sends, defaults are safe.

use std::path::PathBuf;

use lanyard_attest::{
    validate_set, AttestError, Attestor, IssuerConfig, IssuerKind, KeySource, TenantBinding,
    DEFAULT_MAX_TOKEN_LIFETIME_SECS, LEGACY_K8S_ISSUER,
};
use lanyard_jose::{Algorithm, Jwks};
use lanyard_testkit::tokens::TestIssuer;
use serde_json::json;

use crate::{config, inline, TestResult, K8S_ISS};

fn base() -> IssuerConfig {
    let k = TestIssuer::new(K8S_ISS, Algorithm::Es256);
    config("k8s", IssuerKind::Kubernetes, K8S_ISS, inline(k.jwks()))
}

#[test]
fn validation_names_the_field() {
    let review = |url: &str| KeySource::TokenReview {
        url: url.into(),
        bearer_token_file: None,
        ca_file: None,
    };
    type Tweak = Box<dyn Fn(&mut IssuerConfig)>;
    let cases: Vec<(&str, Tweak, &str)> = vec![
        ("empty name", Box::new(|c| c.name = String::new()), "name"),
        (
            "upper-case name",
            Box::new(|c| c.name = "Prod".into()),
            "name",
        ),
        (
            "name with a space",
            Box::new(|c| c.name = "a b".into()),
            "name",
        ),
        (
            "name ending in -",
            Box::new(|c| c.name = "prod-".into()),
            "name",
        ),
        (
            "64-character name",
            Box::new(|c| c.name = "a".repeat(64)),
            "name",
        ),
        (
            "empty issuer",
            Box::new(|c| c.issuer = String::new()),
            "issuer",
        ),
        (
            "issuer with a newline",
            Box::new(|c| c.issuer = "https://a\n".into()),
            "issuer",
        ),
        (
            "empty audience",
            Box::new(|c| c.audience = String::new()),
            "audience",
        ),
        (
            "no algorithms",
            Box::new(|c| c.algorithms.clear()),
            "algorithms",
        ),
        (
            "zero lifetime",
            Box::new(|c| c.max_token_lifetime_secs = 0),
            "max_token_lifetime_secs",
        ),
        (
            "lifetime over a week",
            Box::new(|c| c.max_token_lifetime_secs = 8 * 86_400),
            "max_token_lifetime_secs",
        ),
        (
            "tenant claim not a pointer",
            Box::new(|c| c.tenant = TenantBinding::Claim("tenant".into())),
            "JSON pointer",
        ),
        (
            "empty JWKS",
            Box::new(|c| c.keys = inline(Jwks::default())),
            "keys.jwks_inline",
        ),
        (
            "HMAC key in the JWKS",
            Box::new(|c| {
                c.keys = KeySource::JwksInline(
                    serde_json::from_value(
                        json!({"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}),
                    )
                    .unwrap_or_default(),
                )
            }),
            "keys.jwks_inline",
        ),
        (
            "plain HTTP JWKS URL",
            Box::new(|c| c.keys = KeySource::JwksUrl("http://keys.test/jwks".into())),
            "keys.jwks_url",
        ),
        (
            "JWKS URL with credentials",
            Box::new(|c| c.keys = KeySource::JwksUrl("https://u:p@keys.test/jwks".into())),
            "keys.jwks_url",
        ),
        (
            "JWKS URL not a URL",
            Box::new(|c| c.keys = KeySource::JwksUrl("keys.json".into())),
            "keys.jwks_url",
        ),
        (
            "file URL",
            Box::new(|c| c.keys = KeySource::JwksUrl("file:///etc/keys".into())),
            "keys.jwks_url",
        ),
        (
            "discovery on a plain HTTP issuer",
            Box::new(|c| {
                c.issuer = "http://k8s.test".into();
                c.keys = KeySource::Discovery
            }),
            "issuer",
        ),
        (
            "discovery on a non-URL issuer",
            Box::new(|c| {
                c.issuer = "kubernetes".into();
                c.keys = KeySource::Discovery
            }),
            "issuer",
        ),
        (
            "plain HTTP TokenReview",
            Box::new(move |c| c.keys = review("http://api.test/x")),
            "keys.token_review.url",
        ),
        (
            "TokenReview for GitHub",
            Box::new(move |c| {
                c.kind = IssuerKind::GithubActions;
                c.keys = review("https://api.test/x")
            }),
            "keys.token_review",
        ),
        (
            "empty CA path",
            Box::new(|c| {
                c.keys = KeySource::TokenReview {
                    url: "https://api.test/x".into(),
                    bearer_token_file: None,
                    ca_file: Some(PathBuf::new()),
                }
            }),
            "ca_file",
        ),
        (
            "legacy tokens for GitLab",
            Box::new(|c| {
                c.kind = IssuerKind::Gitlab;
                c.insecure_allow_legacy_tokens = true
            }),
            "insecure_allow_legacy_tokens",
        ),
        (
            "legacy tokens under a projected issuer",
            Box::new(|c| c.insecure_allow_legacy_tokens = true),
            "insecure_allow_legacy_tokens",
        ),
        (
            "legacy issuer without the switch",
            Box::new(|c| c.issuer = LEGACY_K8S_ISSUER.into()),
            "issuer",
        ),
    ];
    for (name, tweak, field) in cases {
        let mut c = base();
        tweak(&mut c);
        let msg = c
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            msg.contains(field),
            "{name}: want an error naming {field:?}, got {msg:?}"
        );
    }
    let mut http_ok = base();
    http_ok.insecure_http = true;
    http_ok.keys = KeySource::JwksUrl("http://127.0.0.1:1/jwks".into());
    assert!(http_ok.validate().is_ok(), "http:// with insecure_http");
    assert!(base().validate().is_ok());
}

#[test]
fn the_set_has_unique_names_and_unambiguous_issuers() -> TestResult {
    let a = base();
    let mut same_name = base();
    same_name.issuer = "https://other.test".into();
    assert!(matches!(
        validate_set(&[a.clone(), same_name]),
        Err(AttestError::DuplicateName { .. })
    ));
    let mut same_iss_aud = base();
    same_iss_aud.name = "k8s-2".into();
    assert!(matches!(
        validate_set(&[a.clone(), same_iss_aud.clone()]),
        Err(AttestError::Ambiguous { .. })
    ));
    same_iss_aud.audience = "other".into();
    validate_set(&[a.clone(), same_iss_aud])?;
    // The attestor refuses what the set check refuses.
    let clock: std::sync::Arc<dyn lanyard_core::Clock> =
        std::sync::Arc::new(lanyard_testkit::FakeClock::new());
    assert!(Attestor::new(vec![a.clone(), a], clock, reqwest::Client::new()).is_err());
    Ok(())
}

#[test]
fn serde_shape_and_defaults() -> TestResult {
    let k = TestIssuer::new(K8S_ISS, Algorithm::Es256);
    let mut c = config(
        "gh",
        IssuerKind::GithubActions,
        "https://token.actions.githubusercontent.com",
        KeySource::Discovery,
    );
    c.tenant = TenantBinding::Claim("/repository_owner".into());
    let v = serde_json::to_value(&c)?;
    assert_eq!(v["kind"], "github-actions");
    assert_eq!(v["keys"], "discovery");
    assert_eq!(v["tenant"], json!({"claim": "/repository_owner"}));
    assert_eq!(v["algorithms"], json!(["ES256"]));
    let inline_v = serde_json::to_value(config(
        "k",
        IssuerKind::Kubernetes,
        K8S_ISS,
        inline(k.jwks()),
    ))?;
    assert_eq!(inline_v["tenant"], json!({"fixed": "payments"}));
    assert!(inline_v["keys"]["jwks_inline"]["keys"].is_array());
    let review = serde_json::to_value(KeySource::TokenReview {
        url: "https://api/x".into(),
        bearer_token_file: None,
        ca_file: Some("/ca".into()),
    })?;
    assert_eq!(
        review,
        json!({"token_review": {"url": "https://api/x", "ca_file": "/ca"}})
    );
    // Round trip.
    let back: IssuerConfig = serde_json::from_value(v)?;
    assert_eq!(back, c);
    // Omitted fields take the safe defaults.
    let minimal: IssuerConfig = serde_json::from_value(json!({
        "name": "k", "kind": "kubernetes", "issuer": K8S_ISS, "keys": {"jwks_url": "https://k8s.test/openid/v1/jwks"},
        "audience": "lanyard", "tenant": {"fixed": "payments"},
    }))?;
    assert_eq!(minimal.algorithms, Algorithm::ALL.to_vec());
    assert_eq!(
        minimal.max_token_lifetime_secs,
        DEFAULT_MAX_TOKEN_LIFETIME_SECS
    );
    assert!(!minimal.insecure_allow_legacy_tokens && !minimal.insecure_http);
    minimal.validate()?;
    // Refused: unknown fields, unknown kinds, none/HMAC algorithms, bad tenants.
    for bad in [
        json!({"name": "k", "kind": "kubernetes", "issuer": K8S_ISS, "keys": "discovery", "audience": "a", "tenant": {"fixed": "p"}, "skip_signature": true}),
        json!({"name": "k", "kind": "k8s", "issuer": K8S_ISS, "keys": "discovery", "audience": "a", "tenant": {"fixed": "p"}}),
        json!({"name": "k", "kind": "oidc", "issuer": K8S_ISS, "keys": "discovery", "audience": "a", "tenant": {"fixed": "p"}, "algorithms": ["none"]}),
        json!({"name": "k", "kind": "oidc", "issuer": K8S_ISS, "keys": "discovery", "audience": "a", "tenant": {"fixed": "p"}, "algorithms": ["HS256"]}),
        json!({"name": "k", "kind": "oidc", "issuer": K8S_ISS, "keys": "discovery", "audience": "a", "tenant": {"fixed": "Not A Tenant"}}),
    ] {
        assert!(
            serde_json::from_value::<IssuerConfig>(bad.clone()).is_err(),
            "{bad}"
        );
    }
    Ok(())
}
