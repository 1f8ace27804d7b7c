//! What each issuer kind's verified tokens become: selectors, tenant,
//! revocation keys, digest, expiry.

use lanyard_attest::{IssuerKind, TenantBinding, LEGACY_EVIDENCE_SECS, LEGACY_K8S_ISSUER};
use lanyard_core::{Clock, DenyReason};
use lanyard_jose::Algorithm;
use lanyard_testkit::tokens::{
    github_actions_claims, gitlab_claims, legacy_k8s_claims, TestIssuer,
};
use lanyard_testkit::FakeClock;
use serde_json::{json, Value};

use crate::{attestor, config, inline, reason, selectors, tenant, TestResult, AUD, K8S_ISS};

fn sha256_hex(s: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<lanyard_core::RevocationKey> {
    v.iter()
        .map(|(a, b)| {
            let kind = a.parse().unwrap_or_else(|e| panic!("{e}"));
            lanyard_core::RevocationKey::new(kind, *b)
        })
        .collect()
}

#[tokio::test]
async fn kubernetes_projected_token() -> TestResult {
    let (clock, k8s, a) = crate::k8s_setup();
    let now = clock.unix_seconds();
    let token = k8s.sign(&k8s.k8s_claims(now, "payments", "api"));
    let ev = a.verify(&token).await?;
    assert_eq!(
        selectors(&ev),
        [
            "k8s:cluster:k8s",
            "k8s:node-name:node-1",
            "k8s:node-uid:node-uid-1",
            "k8s:ns:payments",
            "k8s:pod-name:api-0",
            "k8s:pod-uid:pod-uid-api",
            "k8s:sa:api",
            "k8s:sa-uid:sa-uid-api",
        ]
    );
    assert_eq!(ev.issuer, "k8s");
    assert_eq!(ev.tenant, Some(tenant("payments")));
    assert_eq!(ev.subject, "system:serviceaccount:payments:api");
    assert_eq!(ev.jti.as_deref(), Some("jti-payments-api"));
    assert_eq!(ev.expires_at, now + 3600);
    assert_eq!(ev.digest, sha256_hex(&token));
    assert_eq!(
        ev.revocation_keys,
        pairs(&[
            ("k8s-sa-uid", "sa-uid-api"),
            ("k8s-pod-uid", "pod-uid-api"),
            ("jti", "jti-payments-api"),
            (
                "subject",
                "https://k8s.test:system:serviceaccount:payments:api"
            ),
        ])
    );
    Ok(())
}

#[tokio::test]
async fn kubernetes_token_without_pod_or_node() -> TestResult {
    let (clock, k8s, a) = crate::k8s_setup();
    let mut c = k8s.k8s_claims(clock.unix_seconds(), "payments", "api");
    if let Some(k) = c["kubernetes.io"].as_object_mut() {
        k.remove("pod");
        k.remove("node");
    }
    if let Some(o) = c.as_object_mut() {
        o.remove("jti");
    }
    c["aud"] = json!(AUD);
    let ev = a.verify(&k8s.sign(&c)).await?;
    assert_eq!(
        selectors(&ev),
        [
            "k8s:cluster:k8s",
            "k8s:ns:payments",
            "k8s:sa:api",
            "k8s:sa-uid:sa-uid-api"
        ]
    );
    assert_eq!(ev.jti, None);
    assert_eq!(
        ev.revocation_keys,
        pairs(&[
            ("k8s-sa-uid", "sa-uid-api"),
            (
                "subject",
                "https://k8s.test:system:serviceaccount:payments:api"
            ),
        ])
    );
    Ok(())
}

#[tokio::test]
async fn legacy_tokens_only_with_the_insecure_switch() -> TestResult {
    let (clock, legacy, a) = crate::legacy_setup();
    let now = clock.unix_seconds();
    let ev = a
        .verify(&legacy.sign(&legacy_k8s_claims("payments", "api")))
        .await?;
    assert_eq!(
        selectors(&ev),
        [
            "k8s:cluster:old-cluster",
            "k8s:ns:payments",
            "k8s:sa:api",
            "k8s:sa-uid:sa-uid-api"
        ]
    );
    assert_eq!(
        ev.expires_at,
        now + LEGACY_EVIDENCE_SECS,
        "no exp: evidence is short-lived"
    );
    // Still signature-checked.
    let other = TestIssuer::new(LEGACY_K8S_ISSUER, Algorithm::Rs256);
    let forged = other.sign(&legacy_k8s_claims("kube-system", "admin"));
    assert_eq!(
        reason(&a.verify(&forged).await),
        Some(DenyReason::UnknownKey)
    );
    Ok(())
}

#[tokio::test]
async fn github_actions_token() -> TestResult {
    let clock = FakeClock::new();
    let now = clock.unix_seconds();
    let iss = "https://token.actions.githubusercontent.com";
    let gha = TestIssuer::new(iss, Algorithm::Rs256);
    let mut cfg = config("github", IssuerKind::GithubActions, iss, inline(gha.jwks()));
    cfg.algorithms = vec![Algorithm::Rs256];
    cfg.tenant = TenantBinding::Claim("/repository_owner".into());
    let a = attestor(vec![cfg], &clock);
    let mut c = github_actions_claims(iss, AUD, now, "acme/api");
    c["environment"] = json!(""); // empty: no selector
    c["workflow"] = json!(12); // not a string: no selector
    let token = gha.sign(&c);
    let ev = a.verify(&token).await?;
    assert_eq!(
        selectors(&ev),
        [
            "gha:actor:octocat",
            "gha:actor_id:1",
            "gha:event_name:push",
            "gha:job_workflow_ref:acme/api/.github/workflows/deploy.yml@refs/heads/main",
            "gha:ref:refs/heads/main",
            "gha:ref_type:branch",
            "gha:repository:acme/api",
            "gha:repository_id:123456",
            "gha:repository_owner:acme",
            "gha:repository_owner_id:654321",
            "gha:runner_environment:github-hosted",
            "gha:sha:0123456789abcdef0123456789abcdef01234567",
            "gha:workflow_ref:acme/api/.github/workflows/deploy.yml@refs/heads/main",
        ]
    );
    assert_eq!(
        ev.tenant,
        Some(tenant("acme")),
        "tenant from /repository_owner"
    );
    assert_eq!(ev.subject, "repo:acme/api:environment:prod");
    assert_eq!(
        ev.revocation_keys,
        pairs(&[
            ("jti", "gha-jti-1"),
            (
                "subject",
                "https://token.actions.githubusercontent.com:repo:acme/api:environment:prod"
            ),
        ])
    );
    // The tenant claim absent or not a tenant name: no tenant (the server denies).
    for owner in [Value::Null, json!("Acme Corp"), json!(42)] {
        let mut c = github_actions_claims(iss, AUD, now, "acme/api");
        c["repository_owner"] = owner.clone();
        let ev = a.verify(&gha.sign(&c)).await?;
        assert_eq!(ev.tenant, None, "owner {owner}");
    }
    Ok(())
}

#[tokio::test]
async fn gitlab_token_stringifies_numbers_and_booleans() -> TestResult {
    let clock = FakeClock::new();
    let iss = "https://gitlab.example.com";
    let gl = TestIssuer::new(iss, Algorithm::Es256);
    let a = attestor(
        vec![config("gitlab", IssuerKind::Gitlab, iss, inline(gl.jwks()))],
        &clock,
    );
    let ev = a
        .verify(&gl.sign(&gitlab_claims(iss, AUD, clock.unix_seconds(), "group/app")))
        .await?;
    assert_eq!(
        selectors(&ev),
        [
            "gitlab:ci_config_ref_uri:gitlab.example.com/group/app//.gitlab-ci.yml@refs/heads/main",
            "gitlab:environment:production",
            "gitlab:environment_protected:false",
            "gitlab:namespace_id:72",
            "gitlab:namespace_path:group",
            "gitlab:pipeline_source:push",
            "gitlab:project_id:22",
            "gitlab:project_path:group/app",
            "gitlab:ref:main",
            "gitlab:ref_protected:true",
            "gitlab:ref_type:branch",
            "gitlab:user_login:alice",
        ]
    );
    Ok(())
}

#[tokio::test]
async fn oidc_token_gives_sub_and_top_level_strings() -> TestResult {
    let clock = FakeClock::new();
    let now = clock.unix_seconds();
    let iss = "https://idp.test";
    let idp = TestIssuer::new(iss, Algorithm::Es256);
    let mut cfg = config("idp", IssuerKind::Oidc, iss, inline(idp.jwks()));
    cfg.tenant = TenantBinding::Claim("/org/tenant".into());
    let a = attestor(vec![cfg], &clock);
    let c = json!({
        "iss": iss, "aud": [AUD, "other"], "sub": "user-1", "iat": now, "exp": now + 60,
        "jti": "j-9", "nbf": now,
        "email": "a@example.com",
        "preferred_username": "alice",
        "Weird Key": "skipped: not a selector key",
        "bad_value": "line\nbreak",
        "long": "x".repeat(600),
        "empty": "",
        "count": 3,
        "org": {"tenant": "team-a"},
    });
    let ev = a.verify(&idp.sign(&c)).await?;
    assert_eq!(
        selectors(&ev),
        [
            "oidc:email:a@example.com",
            "oidc:preferred_username:alice",
            "oidc:sub:user-1"
        ]
    );
    assert_eq!(
        ev.tenant,
        Some(tenant("team-a")),
        "tenant from a nested pointer"
    );
    assert_eq!(
        ev.revocation_keys,
        pairs(&[("jti", "j-9"), ("subject", "https://idp.test:user-1")])
    );
    // sub itself must be usable.
    let mut c = c.clone();
    c["sub"] = json!("a\u{0}b");
    assert_eq!(
        reason(&a.verify(&idp.sign(&c)).await),
        Some(DenyReason::Malformed)
    );
    Ok(())
}

#[tokio::test]
async fn issuers_sharing_an_iss_are_chosen_by_audience() -> TestResult {
    let clock = FakeClock::new();
    let now = clock.unix_seconds();
    let k8s = TestIssuer::new(K8S_ISS, Algorithm::Es256);
    let mut a_cfg = config(
        "cluster-a",
        IssuerKind::Kubernetes,
        K8S_ISS,
        inline(k8s.jwks()),
    );
    a_cfg.audience = "tenant-a".into();
    a_cfg.tenant = TenantBinding::Fixed(tenant("team-a"));
    let mut b_cfg = a_cfg.clone();
    b_cfg.name = "cluster-b".into();
    b_cfg.audience = "tenant-b".into();
    b_cfg.tenant = TenantBinding::Fixed(tenant("team-b"));
    let a = attestor(vec![a_cfg, b_cfg], &clock);
    for (aud, name, t) in [
        ("tenant-a", "cluster-a", "team-a"),
        ("tenant-b", "cluster-b", "team-b"),
    ] {
        let mut c = k8s.k8s_claims(now, "payments", "api");
        c["aud"] = json!([aud]);
        let ev = a.verify(&k8s.sign(&c)).await?;
        assert_eq!((ev.issuer.as_str(), ev.tenant), (name, Some(tenant(t))));
    }
    let mut c = k8s.k8s_claims(now, "payments", "api");
    c["aud"] = json!(["tenant-c"]);
    assert_eq!(
        reason(&a.verify(&k8s.sign(&c)).await),
        Some(DenyReason::WrongAudience)
    );
    Ok(())
}
