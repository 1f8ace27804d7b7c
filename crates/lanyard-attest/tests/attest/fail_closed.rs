//! The fail-closed table: each bad input next to the reason it is refused
//! with. Every row must be a denial; none may panic or fall back.

use lanyard_attest::{IssuerKind, MAX_DOCUMENT_BYTES};
use lanyard_core::{Clock, DenyReason};
use lanyard_jose::{Algorithm, Jwks, MAX_COMPACT_LEN};
use lanyard_testkit::tokens::{
    alg_none_token, github_actions_claims, hs256_confusion_token, legacy_k8s_claims, raw_token,
    tampered, TestIssuer,
};
use lanyard_testkit::FakeClock;
use serde_json::{json, Value};

use crate::{attestor, config, inline, reason, TestResult, AUD, K8S_ISS};

const GHA_ISS: &str = "https://token.actions.githubusercontent.com";
const MIXED_ISS: &str = "https://mixed.test";

#[tokio::test]
async fn every_bad_token_is_refused_with_its_reason() -> TestResult {
    let clock = FakeClock::new();
    let now = clock.unix_seconds();
    let k8s = TestIssuer::new(K8S_ISS, Algorithm::Es256);
    let gha = TestIssuer::new(GHA_ISS, Algorithm::Es256);
    let rsa = TestIssuer::new(K8S_ISS, Algorithm::Rs256);
    // An issuer that allows both algorithms and publishes an EC and an RSA key.
    let mixed = TestIssuer::new(MIXED_ISS, Algorithm::Es256);
    let mixed_rsa = TestIssuer::new(MIXED_ISS, Algorithm::Rs256);
    let mut mixed_cfg = config(
        "mixed",
        IssuerKind::Kubernetes,
        MIXED_ISS,
        inline(Jwks {
            keys: vec![mixed.key().public_jwk(), mixed_rsa.key().public_jwk()],
        }),
    );
    mixed_cfg.algorithms = Algorithm::ALL.to_vec();
    let a = attestor(
        vec![
            config("k8s", IssuerKind::Kubernetes, K8S_ISS, inline(k8s.jwks())),
            config(
                "gha",
                IssuerKind::GithubActions,
                GHA_ISS,
                inline(gha.jwks()),
            ),
            mixed_cfg,
        ],
        &clock,
    );

    let claims = || k8s.k8s_claims(now, "payments", "api");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        k8s.sign(&c)
    };
    let without = |name: &'static str| {
        with(&move |c: &mut Value| {
            if let Some(o) = c.as_object_mut() {
                o.remove(name);
            }
        })
    };
    let good = k8s.sign(&claims());
    let parts: Vec<&str> = good.split('.').collect();
    let part = |i: usize| parts.get(i).copied().unwrap_or_default();
    let header = |h: Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.to_string())
    };
    let k8s_kid = k8s.key().kid().to_owned();
    let gha_claims = || github_actions_claims(GHA_ISS, AUD, now, "acme/api");
    let gha_with = |f: &dyn Fn(&mut Value)| {
        let mut c = gha_claims();
        f(&mut c);
        gha.sign(&c)
    };

    let cases: Vec<(&str, String, DenyReason)> = vec![
        // Size first, before any decoding.
        (
            "one byte over the limit",
            "a".repeat(MAX_COMPACT_LEN + 1),
            DenyReason::TooLarge,
        ),
        (
            "validly signed but huge",
            with(&|c| c["padding"] = json!("x".repeat(20_000))),
            DenyReason::TooLarge,
        ),
        (
            "a JWKS-sized blob",
            ".".repeat(MAX_DOCUMENT_BYTES),
            DenyReason::TooLarge,
        ),
        // Shape.
        ("empty", String::new(), DenyReason::Malformed),
        ("garbage", "not-a-token".into(), DenyReason::Malformed),
        ("two parts", "a.b".into(), DenyReason::Malformed),
        ("four parts", format!("{good}.x"), DenyReason::Malformed),
        (
            "truncated",
            good.get(..good.len() / 2).unwrap_or_default().to_owned(),
            DenyReason::Malformed,
        ),
        (
            "header not base64url",
            format!("!!.{}.{}", part(1), part(2)),
            DenyReason::Malformed,
        ),
        (
            "header not JSON",
            format!("{}.{}.{}", header(json!("x")), part(1), part(2)),
            DenyReason::Malformed,
        ),
        (
            "header without alg",
            format!(
                "{}.{}.{}",
                header(json!({"kid": k8s_kid})),
                part(1),
                part(2)
            ),
            DenyReason::Malformed,
        ),
        (
            "payload an array",
            raw_token(
                &json!({"alg": "ES256", "kid": k8s_kid}),
                &json!([1, 2]),
                b"sig",
            ),
            DenyReason::Malformed,
        ),
        (
            "padded signature",
            format!("{good}=="),
            DenyReason::Malformed,
        ),
        (
            "whitespace around",
            format!(" {good}\n"),
            DenyReason::Malformed,
        ),
        // Issuer.
        (
            "unknown issuer",
            with(&|c| c["iss"] = json!("https://evil.test")),
            DenyReason::UnknownIssuer,
        ),
        (
            "issuer with a trailing slash",
            with(&|c| c["iss"] = json!(format!("{K8S_ISS}/"))),
            DenyReason::UnknownIssuer,
        ),
        (
            "issuer differing in case",
            with(&|c| c["iss"] = json!("https://K8S.test")),
            DenyReason::UnknownIssuer,
        ),
        ("no iss", without("iss"), DenyReason::MissingClaim),
        (
            "iss not a string",
            with(&|c| c["iss"] = json!(["https://k8s.test"])),
            DenyReason::Malformed,
        ),
        // Algorithm.
        (
            "alg none",
            alg_none_token(k8s.key(), &claims()),
            DenyReason::AlgorithmNotAllowed,
        ),
        (
            "HS256 keyed with the public key",
            hs256_confusion_token(k8s.key(), &claims()),
            DenyReason::AlgorithmNotAllowed,
        ),
        (
            "alg outside the allow-list",
            rsa.sign(&claims()),
            DenyReason::AlgorithmNotAllowed,
        ),
        (
            "alg PS256",
            raw_token(&json!({"alg": "PS256", "kid": k8s_kid}), &claims(), b"sig"),
            DenyReason::AlgorithmNotAllowed,
        ),
        (
            "alg swapped to the other key's type",
            {
                let mut c = claims();
                c["iss"] = json!(MIXED_ISS);
                let t = mixed.sign(&c);
                let mut p = t.split('.');
                let _ = p.next();
                format!(
                    "{}.{}",
                    header(json!({"alg": "RS256", "kid": mixed.key().kid()})),
                    p.collect::<Vec<_>>().join(".")
                )
            },
            DenyReason::AlgorithmNotAllowed,
        ),
        // Keys and signature.
        (
            "unknown kid",
            TestIssuer::new(K8S_ISS, Algorithm::Es256).sign(&claims()),
            DenyReason::UnknownKey,
        ),
        (
            "no kid",
            format!(
                "{}.{}.{}",
                header(json!({"alg": "ES256"})),
                part(1),
                part(2)
            ),
            DenyReason::Malformed,
        ),
        (
            "tampered payload",
            tampered(&good, &{
                let mut c = claims();
                c["kubernetes.io"]["namespace"] = json!("kube-system");
                c
            }),
            DenyReason::BadSignature,
        ),
        (
            "signature of another token",
            format!(
                "{}.{}.{}",
                part(0),
                part(1),
                with(&|c| c["jti"] = json!("other"))
                    .rsplit('.')
                    .next()
                    .unwrap_or_default()
            ),
            DenyReason::BadSignature,
        ),
        (
            "empty signature",
            format!("{}.{}.", part(0), part(1)),
            DenyReason::BadSignature,
        ),
        // Audience.
        (
            "wrong aud (array)",
            with(&|c| c["aud"] = json!(["someone-else"])),
            DenyReason::WrongAudience,
        ),
        (
            "wrong aud (string)",
            with(&|c| c["aud"] = json!("someone-else")),
            DenyReason::WrongAudience,
        ),
        (
            "aud prefix only",
            with(&|c| c["aud"] = json!("lanyard-extra")),
            DenyReason::WrongAudience,
        ),
        (
            "empty aud array",
            with(&|c| c["aud"] = json!([])),
            DenyReason::WrongAudience,
        ),
        ("no aud", without("aud"), DenyReason::MissingClaim),
        (
            "aud an object",
            with(&|c| c["aud"] = json!({"aud": AUD})),
            DenyReason::Malformed,
        ),
        // Time.
        (
            "expired beyond skew",
            with(&|c| {
                c["exp"] = json!(now - 61);
                c["iat"] = json!(now - 600);
                c["nbf"] = json!(now - 600)
            }),
            DenyReason::Expired,
        ),
        (
            "expired long ago",
            with(&|c| {
                c["exp"] = json!(0);
                c["iat"] = json!(-600);
                c["nbf"] = json!(-600)
            }),
            DenyReason::Expired,
        ),
        ("no exp", without("exp"), DenyReason::MissingClaim),
        (
            "exp a string",
            with(&|c| c["exp"] = json!((now + 60).to_string())),
            DenyReason::Malformed,
        ),
        (
            "nbf in the future",
            with(&|c| c["nbf"] = json!(now + 61)),
            DenyReason::NotYetValid,
        ),
        (
            "iat in the future",
            with(&|c| c["iat"] = json!(now + 3600)),
            DenyReason::NotYetValid,
        ),
        (
            "lifetime above the maximum",
            with(&|c| c["exp"] = json!(now + 86_401)),
            DenyReason::LifetimeTooLong,
        ),
        (
            "no iat or nbf, far exp",
            with(&|c| {
                c["exp"] = json!(now + 200_000);
                if let Some(o) = c.as_object_mut() {
                    o.remove("iat");
                    o.remove("nbf");
                }
            }),
            DenyReason::LifetimeTooLong,
        ),
        (
            "huge exp",
            with(&|c| c["exp"] = json!(u64::MAX)),
            DenyReason::LifetimeTooLong,
        ),
        (
            "exp before iat",
            with(&|c| {
                c["iat"] = json!(now + 30);
                c["nbf"] = json!(now + 30);
                c["exp"] = json!(now + 10)
            }),
            DenyReason::Malformed,
        ),
        // Kubernetes claims.
        (
            "no kubernetes.io",
            without("kubernetes.io"),
            DenyReason::MissingClaim,
        ),
        (
            "kubernetes.io a string",
            with(&|c| c["kubernetes.io"] = json!("payments")),
            DenyReason::Malformed,
        ),
        (
            "no namespace",
            with(&|c| c["kubernetes.io"]["namespace"] = Value::Null),
            DenyReason::MissingClaim,
        ),
        (
            "no service account uid",
            with(&|c| c["kubernetes.io"]["serviceaccount"] = json!({"name": "api"})),
            DenyReason::MissingClaim,
        ),
        (
            "service account a string",
            with(&|c| c["kubernetes.io"]["serviceaccount"] = json!("api")),
            DenyReason::Malformed,
        ),
        (
            "pod uid a number",
            with(&|c| c["kubernetes.io"]["pod"]["uid"] = json!(7)),
            DenyReason::Malformed,
        ),
        (
            "control character in namespace",
            with(&|c| {
                c["kubernetes.io"]["namespace"] = json!("pay\nments");
                c["sub"] = json!("system:serviceaccount:pay\nments:api")
            }),
            DenyReason::Malformed,
        ),
        (
            "namespace too long for a selector",
            with(&|c| {
                let ns = "n".repeat(600);
                c["sub"] = json!(format!("system:serviceaccount:{ns}:api"));
                c["kubernetes.io"]["namespace"] = json!(ns)
            }),
            DenyReason::Malformed,
        ),
        (
            "sub for another service account",
            with(&|c| c["sub"] = json!("system:serviceaccount:kube-system:admin")),
            DenyReason::Malformed,
        ),
        ("no sub", without("sub"), DenyReason::MissingClaim),
        (
            "jti a number",
            with(&|c| c["jti"] = json!(5)),
            DenyReason::Malformed,
        ),
        // Legacy tokens.
        (
            "legacy token",
            k8s.sign(&legacy_k8s_claims("payments", "api")),
            DenyReason::LegacyToken,
        ),
        (
            "legacy claims under the projected issuer",
            {
                let mut c = legacy_k8s_claims("payments", "api");
                c["iss"] = json!(K8S_ISS);
                k8s.sign(&c)
            },
            DenyReason::LegacyToken,
        ),
        // CI tokens.
        (
            "GitHub token without sub",
            gha_with(&|c| {
                if let Some(o) = c.as_object_mut() {
                    o.remove("sub");
                }
            }),
            DenyReason::MissingClaim,
        ),
        (
            "GitHub repository with a control character",
            gha_with(&|c| c["repository"] = json!("acme/\u{7}api")),
            DenyReason::Malformed,
        ),
        (
            "GitHub token for another audience",
            gha_with(&|c| c["aud"] = json!("https://github.com/acme")),
            DenyReason::WrongAudience,
        ),
        (
            "GitHub token signed by the cluster key",
            k8s.sign(&gha_claims()),
            DenyReason::UnknownKey,
        ),
    ];
    let mut failures = Vec::new();
    for (name, token, want) in &cases {
        let got = a.verify(token).await;
        if reason(&got) != Some(*want) {
            failures.push(format!(
                "{name}: want {want}, got {:?}",
                got.as_ref().map(|e| &e.selectors)
            ));
        }
        if let Err(d) = &got {
            // Denial details are for operators: never the token text.
            let sig = token.rsplit('.').next().unwrap_or_default();
            assert!(
                sig.len() < 16 || !d.detail.contains(sig),
                "{name}: detail leaks the signature: {}",
                d.detail
            );
            assert!(
                !d.detail.contains(token.as_str()) || token.len() < 8,
                "{name}: detail leaks the token"
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The same attestor still accepts a good token afterwards.
    assert_eq!(reason(&a.verify(&good).await), None);
    Ok(())
}

#[tokio::test]
async fn edges_within_skew_are_accepted() -> TestResult {
    let (clock, k8s, a) = crate::k8s_setup();
    let now = clock.unix_seconds();
    let mut c = k8s.k8s_claims(now, "payments", "api");
    c["exp"] = json!(now - 59);
    c["iat"] = json!(now - 600);
    c["nbf"] = json!(now - 600);
    assert_eq!(
        reason(&a.verify(&k8s.sign(&c)).await),
        None,
        "expired 59s ago"
    );
    let mut c = k8s.k8s_claims(now, "payments", "api");
    c["nbf"] = json!(now + 59);
    c["iat"] = json!(now + 59);
    assert_eq!(
        reason(&a.verify(&k8s.sign(&c)).await),
        None,
        "issued 59s ahead"
    );
    let mut c = k8s.k8s_claims(now, "payments", "api");
    c["exp"] = json!(now + 86_400);
    assert_eq!(
        reason(&a.verify(&k8s.sign(&c)).await),
        None,
        "exactly the maximum lifetime"
    );
    let mut c = k8s.k8s_claims(now, "payments", "api");
    c["exp"] = json!(now as f64 + 3600.5);
    assert_eq!(
        reason(&a.verify(&k8s.sign(&c)).await),
        None,
        "fractional NumericDate"
    );
    Ok(())
}

#[tokio::test]
async fn no_issuers_means_every_token_is_unknown() -> TestResult {
    let clock = FakeClock::new();
    let k8s = TestIssuer::new(K8S_ISS, Algorithm::Es256);
    let a = crate::attestor(Vec::new(), &clock);
    assert!(a.is_empty());
    let t = k8s.sign(&k8s.k8s_claims(clock.unix_seconds(), "payments", "api"));
    assert_eq!(reason(&a.verify(&t).await), Some(DenyReason::UnknownIssuer));
    Ok(())
}
