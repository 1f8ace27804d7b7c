//! TokenReview (`/apis/authentication.k8s.io/v1/tokenreviews`) in
//! Kubernetes' exact shape, and several clusters kept apart (issue 11).

use reqwest::Method;
use serde_json::{json, Value};

use super::{base_form, issuer_config, Env, TestResult};

const PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

async fn review(
    env: &Env,
    bearer: Option<&str>,
    token: &str,
    audiences: &[&str],
) -> Result<(u16, Value), Box<dyn std::error::Error>> {
    let mut req = env.http.post(format!("{}{PATH}", env.base)).json(&json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "spec": {"token": token, "audiences": audiences},
    }));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

/// A second cluster: issuer `k8s-b` at https://k8s-b.test, tenant agents-co.
async fn second_cluster(env: &Env) -> TestResult {
    let jwks = lanyard_jose::Jwks {
        keys: vec![env.key.public_jwk()],
    };
    env.admin(
        Method::POST,
        "issuers",
        issuer_config(
            "k8s-b",
            "https://k8s-b.test",
            json!({"fixed": "agents-co"}),
            &jwks,
        ),
    )
    .await?;
    Ok(())
}

fn in_cluster_b(c: &mut Value) {
    c["iss"] = json!("https://k8s-b.test");
}

#[tokio::test]
async fn service_account_tokens_are_reviewed_as_kubernetes_does() -> TestResult {
    let env = Env::start().await?;
    let token = env.k8s_token("payments", "api", |c| {
        c["kubernetes.io"]["node"] = json!({"name": "node-1", "uid": "node-uid-1"});
    });
    let (status, body) = review(&env, Some(&env.admin), &token, &["lanyard"]).await?;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(body["kind"], "TokenReview");
    assert_eq!(body["spec"]["audiences"], json!(["lanyard"]));
    let st = &body["status"];
    assert_eq!(st["authenticated"], true, "{body}");
    assert_eq!(st["user"]["username"], "system:serviceaccount:payments:api");
    assert_eq!(st["user"]["uid"], "sa-uid-api");
    let groups: Vec<&str> = st["user"]["groups"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for g in [
        "system:serviceaccounts",
        "system:serviceaccounts:payments",
        "system:authenticated",
        "lanyard:tenant:payments",
        "lanyard:cluster:k8s",
    ] {
        assert!(groups.contains(&g), "{groups:?} lacks {g}");
    }
    assert_eq!(
        st["user"]["extra"]["authentication.kubernetes.io/pod-uid"],
        json!(["pod-uid-api"])
    );
    assert_eq!(st["audiences"], json!(["lanyard"]));
    // No audiences asked: the issuer's own.
    let (_, body) = review(&env, Some(&env.admin), &token, &[]).await?;
    assert_eq!(body["status"]["authenticated"], true, "{body}");
    // Not for the audience asked: 201, not authenticated, a reason.
    let (status, body) = review(&env, Some(&env.admin), &token, &["vault"]).await?;
    assert_eq!(status, 201);
    assert_eq!(body["status"]["authenticated"], false);
    assert_eq!(body["status"]["user"], json!({}));
    assert!(
        body["status"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("wrong_audience")),
        "{body}"
    );
    // A token of an untrusted cluster (another key), garbage: not authenticated.
    let (forger, _) = lanyard_jose::SigningKey::generate(lanyard_jose::Algorithm::Es256)?;
    let mut claims = super::claims_of(&token);
    claims["jti"] = json!("forged");
    let forged = lanyard_jose::encode_jwt(&forger, &claims)?;
    for bad in [forged.as_str(), "garbage"] {
        let (status, body) = review(&env, Some(&env.admin), bad, &["lanyard"]).await?;
        assert_eq!(
            (status, body["status"]["authenticated"].clone()),
            (201, json!(false)),
            "{body}"
        );
    }
    // Lanyard's revocations apply: revoke the pod, every integrator refuses it.
    env.admin(
        Method::POST,
        "revocations",
        json!({"kind": "k8s-pod-uid", "value": "pod-uid-api", "reason": "pod compromised"}),
    )
    .await?;
    let (_, body) = review(&env, Some(&env.admin), &token, &["lanyard"]).await?;
    assert_eq!(body["status"]["authenticated"], false);
    assert!(body["status"]["error"]
        .as_str()
        .is_some_and(|e| e.contains("revoked")));
    assert!(
        !body.to_string().contains("pod compromised"),
        "operator detail stays in the audit log"
    );
    Ok(())
}

#[tokio::test]
async fn jwt_svids_are_reviewed_and_callers_must_be_allowed() -> TestResult {
    let env = Env::start().await?;
    let k8s = env.k8s_token("payments", "api", |_| {});
    let (status, body, _) = env.exchange(&base_form(&k8s, "api://x")).await?;
    assert_eq!(status, 200, "{body}");
    let svid = body["access_token"].as_str().ok_or("token")?.to_owned();
    let (status, body) = review(&env, Some(&env.admin), &svid, &["api://x"]).await?;
    assert_eq!(status, 201);
    let st = &body["status"];
    assert_eq!(st["authenticated"], true, "{body}");
    assert_eq!(
        st["user"]["username"],
        "spiffe://example.org/ns/payments/sa/api"
    );
    assert!(st["user"]["groups"]
        .as_array()
        .is_some_and(|g| g.contains(&json!("lanyard:tenant:payments"))));
    assert!(st["user"]["extra"]["lanyard.io/entry"].is_array());
    assert_eq!(st["audiences"], json!(["api://x"]));

    // Callers: none, a random bearer, a JWT-SVID whose entry may not review.
    let (status, body) = review(&env, None, &svid, &[]).await?;
    assert_eq!((status, body["kind"].clone()), (401, json!("Status")));
    let (status, _) = review(&env, Some("nope"), &svid, &[]).await?;
    assert_eq!(status, 401);
    let aud = format!("{}/tokenreview", env.base);
    env.admin(
        Method::POST,
        "entries",
        json!({"spiffe_id": "spiffe://example.org/plain", "tenant": "payments", "issuer": "k8s",
               "selectors": ["k8s:ns:lanyard", "k8s:sa:plain"]}),
    )
    .await?;
    let plain = env.k8s_token("lanyard", "plain", |_| {});
    let (_, body, _) = env.exchange(&base_form(&plain, &aud)).await?;
    let not_reviewer = body["access_token"].as_str().ok_or("token")?.to_owned();
    let (status, body) = review(&env, Some(&not_reviewer), &svid, &["api://x"]).await?;
    assert_eq!(status, 403, "{body}");
    assert!(body["message"]
        .as_str()
        .is_some_and(|m| m.contains("--token-reviewer")));
    // A reviewer entry (issue 11: `--token-reviewer`) may.
    env.admin(
        Method::POST,
        "entries",
        json!({"spiffe_id": "spiffe://example.org/reviewer", "tenant": "payments", "issuer": "k8s",
               "selectors": ["k8s:ns:lanyard", "k8s:sa:reviewer"], "token_reviewer": true}),
    )
    .await?;
    let r = env.k8s_token("lanyard", "reviewer", |_| {});
    let (_, body, _) = env.exchange(&base_form(&r, &aud)).await?;
    let reviewer = body["access_token"].as_str().ok_or("token")?.to_owned();
    let (status, body) = review(&env, Some(&reviewer), &svid, &["api://x"]).await?;
    assert_eq!(
        (status, body["status"]["authenticated"].clone()),
        (201, json!(true)),
        "{body}"
    );
    // Self-review: the reviewed token as its own bearer (OpenBao outside a pod).
    let (status, body) = review(&env, Some(&k8s), &k8s, &["lanyard"]).await?;
    assert_eq!(
        (status, body["status"]["authenticated"].clone()),
        (201, json!(true)),
        "{body}"
    );
    // Bad requests: no token, not a TokenReview, not JSON, too large.
    let (status, _) = review(&env, Some(&env.admin), "", &[]).await?;
    assert_eq!(status, 400);
    for body in [
        json!({"kind": "Pod", "spec": {"token": "x"}}).to_string(),
        "{not json".to_owned(),
        json!({"spec": {"token": "x".repeat(70_000)}}).to_string(),
    ] {
        let resp = env
            .http
            .post(format!("{}{PATH}", env.base))
            .bearer_auth(&env.admin)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        assert!(
            [400, 413].contains(&resp.status().as_u16()),
            "{}",
            resp.status()
        );
    }
    // Every review and refusal is audited.
    let audit = env
        .admin(Method::GET, "audit?limit=1000", Value::Null)
        .await?
        .to_string();
    assert!(audit.contains("token.review") && audit.contains("caller refused"));
    Ok(())
}

// issue 11: the same namespace and service account in two clusters never
// match the other's entries unless an entry says so.
#[tokio::test]
async fn two_clusters_never_share_identities() -> TestResult {
    let env = Env::start().await?;
    second_cluster(&env).await?;
    let a = env.k8s_token("payments", "api", |_| {});
    let b = env.k8s_token("payments", "api", in_cluster_b);
    // Cluster a's entry (issuer k8s): cluster b's identical pod does not match.
    let (status, _, _) = env.exchange(&base_form(&a, "api://x")).await?;
    assert_eq!(status, 200);
    let (status, body, cid) = env.exchange(&base_form(&b, "api://x")).await?;
    assert_eq!(status, 400, "{body}");
    assert!(env.audit_for(&cid).await?.iter().any(|e| e["reason"]
        .as_str()
        .is_some_and(|r| r.starts_with("no_matching_entry"))));
    // An entry for cluster b by its cluster selector, in cluster b's tenant.
    env.admin(
        Method::POST,
        "entries",
        json!({"spiffe_id": "spiffe://example.org/b/payments/api", "tenant": "agents-co",
               "selectors": ["k8s:cluster:k8s-b", "k8s:ns:payments", "k8s:sa:api"]}),
    )
    .await?;
    let (status, body, _) = env.exchange(&base_form(&b, "api://x")).await?;
    assert_eq!(status, 200, "{body}");
    let claims = super::claims_of(body["access_token"].as_str().unwrap_or(""));
    assert_eq!(claims["sub"], "spiffe://example.org/b/payments/api");
    assert_eq!(claims["tenant"], "agents-co");
    // Cluster a's pod still gets only cluster a's identity.
    let (_, body, _) = env.exchange(&base_form(&a, "api://x")).await?;
    assert_eq!(
        super::claims_of(body["access_token"].as_str().unwrap_or(""))["sub"],
        "spiffe://example.org/ns/payments/sa/api"
    );
    // An entry that names no cluster for Kubernetes evidence is refused.
    let err = env
        .admin(
            Method::POST,
            "entries",
            json!({"spiffe_id": "spiffe://example.org/anywhere", "tenant": "payments",
                   "selectors": ["k8s:ns:payments", "k8s:sa:worker"]}),
        )
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("which cluster"), "{err}");
    // Cluster b's tenant binding cannot be borrowed by asking for tenant payments.
    let mut form = base_form(&b, "api://x");
    form.push(("tenant", "payments"));
    let (status, _, _) = env.exchange(&form).await?;
    assert_eq!(status, 400);
    // TokenReview tells the clusters apart too.
    let (_, body) = review(&env, Some(&env.admin), &b, &["lanyard"]).await?;
    let groups = body["status"]["user"]["groups"].to_string();
    assert!(
        groups.contains("lanyard:cluster:k8s-b") && groups.contains("lanyard:tenant:agents-co"),
        "{groups}"
    );
    Ok(())
}
