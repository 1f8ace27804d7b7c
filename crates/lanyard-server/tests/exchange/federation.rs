//! Audience profiles end to end, the token shapes Azure Entra, AWS STS and
//! GCP Workload Identity Federation document, and OpenBao's JWT auth method
//! accepting Lanyard tokens (`openbao` module).

use std::collections::BTreeSet;

use reqwest::Method;

use super::*;

#[path = "federation/openbao.rs"]
mod openbao;

pub(super) const AZURE: &str = "api://AzureADTokenExchange";
pub(super) const AWS: &str = "sts.amazonaws.com";
pub(super) const GCP: &str = "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/lanyard/providers/lanyard";

impl Env {
    /// An admin call that returns the status instead of failing on it.
    async fn admin_raw(
        &self,
        method: Method,
        path: &str,
        body: Value,
    ) -> Result<(u16, Value), Box<dyn std::error::Error>> {
        let resp = self
            .http
            .request(method, format!("{}/admin/v1/{path}", self.base))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    /// Registers `spiffe://example.org/cloud/{sa}` for `k8s:ns:cloud` +
    /// `k8s:sa:{sa}` in `tenant` (through an issuer bound to that tenant).
    async fn cloud_entry(
        &self,
        tenant: &str,
        sa: &str,
        role: Option<&str>,
    ) -> Result<String, Box<dyn std::error::Error>> {
        let issuer = if tenant == "payments" {
            "k8s"
        } else {
            "k8s-claim"
        };
        let mut body = json!({
            "spiffe_id": format!("spiffe://example.org/cloud/{sa}"), "tenant": tenant,
            "issuer": issuer, "selectors": ["k8s:ns:cloud", format!("k8s:sa:{sa}")],
        });
        if let Some(r) = role {
            body["role"] = json!(r);
        }
        let e = self.admin(Method::POST, "entries", body).await?;
        Ok(e["id"].as_str().ok_or("entry without id")?.to_owned())
    }

    /// A subject token for `sa` in namespace `cloud`; `tenant` is read by the
    /// `k8s-claim` issuer (the `k8s` issuer binds `payments` itself).
    fn cloud_token(&self, tenant: &str, sa: &str) -> (String, &'static str) {
        let tenant = tenant.to_owned();
        if tenant == "payments" {
            (self.k8s_token("cloud", sa, |_| {}), K8S_ISS)
        } else {
            let token = self.k8s_token("cloud", sa, |c| {
                c["iss"] = json!("https://claims.test");
                c["tenant"] = json!(tenant);
            });
            (token, "https://claims.test")
        }
    }

    async fn issue_for(
        &self,
        tenant: &str,
        sa: &str,
        audiences: &[&str],
    ) -> Result<(u16, Value, String), Box<dyn std::error::Error>> {
        let (token, _) = self.cloud_token(tenant, sa);
        let mut form = vec![
            ("grant_type", EXCHANGE),
            ("subject_token", token.as_str()),
            ("subject_token_type", JWT),
        ];
        for a in audiences {
            form.push(("audience", a));
        }
        self.exchange(&form).await
    }

    async fn profile(&self, body: Value) -> Result<Value, Box<dyn std::error::Error>> {
        self.admin(Method::POST, "audience-profiles", body).await
    }
}

fn header_of(token: &str) -> Value {
    token
        .split('.')
        .next()
        .and_then(|p| B64.decode(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

fn keys_of(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// Verifies `token` against the served JWKS with only `alg` allowed, and
/// returns its claims.
async fn verify_with(
    env: &Env,
    token: &str,
    alg: Algorithm,
) -> Result<Value, Box<dyn std::error::Error>> {
    let jwks: Jwks = env
        .http
        .get(format!("{}/.well-known/jwks.json", env.base))
        .send()
        .await?
        .json()
        .await?;
    let keys = jwks
        .keys
        .iter()
        .map(lanyard_jose::VerifyingKey::from_jwk)
        .collect::<Result<Vec<_>, _>>()?;
    let verified = lanyard_jose::verify_compact(token, &keys, &[alg])?;
    Ok(serde_json::from_slice(&verified.payload)?)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn cloud_profiles_issue_the_tokens_each_cloud_documents() -> TestResult {
    let env = Env::start_with(Options {
        algorithms: vec![Algorithm::Es256, Algorithm::Rs256],
        ..Options::default()
    })
    .await?;
    env.cloud_entry("payments", "app", Some("reader")).await?;
    // Azure Entra: RS256 only; one federated credential per role.
    env.profile(
        json!({"audience": AZURE, "tenant": "payments", "algorithm": "RS256",
        "subject_template": "tenant/{tenant}/role/{role}"}),
    )
    .await?;
    // AWS STS: RS256 or ES256; the SPIFFE ID stays the subject (IAM trust
    // policies condition on `<issuer>:sub`). A profile for every tenant.
    env.profile(json!({"audience": AWS, "algorithm": "ES256"}))
        .await?;
    // GCP WIF: google.subject is at most 127 bytes; keep it short.
    env.profile(
        json!({"audience": GCP, "tenant": "payments", "algorithm": "RS256",
        "subject_template": "{tenant}:{role}"}),
    )
    .await?;

    let discovery: Value = env
        .http
        .get(format!("{}/.well-known/openid-configuration", env.base))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(discovery["issuer"], json!(env.base));
    assert_eq!(
        discovery["jwks_uri"],
        json!(format!("{}/.well-known/jwks.json", env.base))
    );
    assert!(discovery["id_token_signing_alg_values_supported"]
        .as_array()
        .is_some_and(|a| a.contains(&json!("RS256")) && a.contains(&json!("ES256"))));

    let cases = [
        (AZURE, Algorithm::Rs256, "tenant/payments/role/reader"),
        (AWS, Algorithm::Es256, "spiffe://example.org/cloud/app"),
        (GCP, Algorithm::Rs256, "payments:reader"),
    ];
    for (aud, alg, sub) in cases {
        let (status, body, cid) = env.issue_for("payments", "app", &[aud]).await?;
        assert_eq!(status, 200, "{aud}: {body}");
        let token = body["access_token"].as_str().ok_or("no token")?;
        // JWT-SVID header: exactly alg, kid, typ.
        let header = header_of(token);
        assert_eq!(keys_of(&header), set(&["alg", "kid", "typ"]), "{aud}");
        assert_eq!(header["alg"], alg.as_str(), "{aud}");
        assert_eq!(header["typ"], "JWT", "{aud}");
        // Signed by a published key of that algorithm (kid lookup as the
        // clouds do it).
        let claims = verify_with(&env, token, alg).await?;
        // Exactly the registered claims each cloud documents, plus `tenant`
        // (INV-5), which all three ignore and OpenBao binds on.
        assert_eq!(
            keys_of(&claims),
            set(&["iss", "sub", "aud", "exp", "iat", "jti", "tenant"]),
            "{aud}: {claims}"
        );
        assert_eq!(claims["iss"], json!(env.base), "{aud}");
        assert_eq!(claims["sub"], sub, "{aud}");
        assert_eq!(claims["aud"], json!([aud]), "{aud}");
        assert_eq!(claims["tenant"], "payments");
        let (iat, exp) = (claims["iat"].as_i64(), claims["exp"].as_i64());
        assert_eq!(iat, Some(env.clock.unix_seconds()));
        assert_eq!(exp, Some(env.clock.unix_seconds() + 300));
        // The audit event names the real identity, the profile and the sub.
        let events = env.audit_for(&cid).await?;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["subject"], "spiffe://example.org/cloud/app");
        let reason = events[0]["reason"].as_str().unwrap_or("");
        assert!(reason.contains(&format!("sub={sub}")), "{reason}");
        assert!(reason.contains("profile="), "{reason}");
    }
    // An audience without a profile keeps the JWT-SVID: default algorithm,
    // SPIFFE ID subject.
    let (status, body, _) = env.issue_for("payments", "app", &["api://plain"]).await?;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().ok_or("no token")?;
    assert_eq!(header_of(token)["alg"], "ES256");
    let claims = verify_with(&env, token, Algorithm::Es256).await?;
    assert_eq!(claims["sub"], "spiffe://example.org/cloud/app");
    Ok(())
}

#[tokio::test]
async fn subject_templates_keep_tenants_apart_and_fail_closed() -> TestResult {
    let env = Env::start_with(Options {
        algorithms: vec![Algorithm::Rs256, Algorithm::Es256],
        ..Options::default()
    })
    .await?;
    let pay = env.cloud_entry("payments", "app", Some("reader")).await?;
    env.cloud_entry("agents-co", "app2", Some("reader")).await?;
    let norole = env.cloud_entry("payments", "norole", None).await?;
    let tpl = "tenant/{tenant}/role/{role}";
    for t in ["payments", "agents-co"] {
        env.profile(json!({"audience": AZURE, "tenant": t, "subject_template": tpl}))
            .await?;
    }
    // Same template, same role, two tenants: two different subjects.
    let mut subs = Vec::new();
    for (t, sa) in [("payments", "app"), ("agents-co", "app2")] {
        let (status, body, _) = env.issue_for(t, sa, &[AZURE]).await?;
        assert_eq!(status, 200, "{t}: {body}");
        let c = claims_of(body["access_token"].as_str().unwrap_or(""));
        assert_eq!(c["tenant"], t);
        subs.push(c["sub"].as_str().unwrap_or("").to_owned());
    }
    assert_eq!(
        subs,
        [
            "tenant/payments/role/reader",
            "tenant/agents-co/role/reader"
        ]
    );

    // Refused at creation, each naming the problem; nothing stored.
    let refused = [
        (
            json!({"audience": AZURE, "tenant": "payments", "algorithm": "ES256"}),
            "RS256",
        ),
        (
            json!({"audience": "aud", "tenant": "payments", "subject_template": "role/{role}"}),
            "{tenant}",
        ),
        (
            json!({"audience": "aud", "tenant": "payments", "subject_template": "t-{tenant}"}),
            "whole segment",
        ),
        (
            json!({"audience": "aud", "tenant": "payments", "subject_template": "x/{tenant}/{pod}"}),
            "{pod}",
        ),
        (
            json!({"audience": "aud", "subject_template": "x/{tenant}"}),
            "--tenant",
        ),
        (
            json!({"audience": "aud", "tenant": "payments"}),
            "at least one",
        ),
        (json!({"audience": "aud", "algorithm": "HS256"}), "HS256"),
        (
            json!({"audience": "aud", "tenant": "nobody", "algorithm": "RS256"}),
            "nobody",
        ),
        (
            json!({"audience": "aud", "entry": norole, "subject_template": "x/{tenant}/{role}"}),
            "no role",
        ),
        (
            json!({"audience": "aud", "entry": pay, "tenant": "agents-co", "algorithm": "RS256"}),
            "is in tenant payments",
        ),
        (
            json!({"audience": env.base, "algorithm": "RS256"}),
            "Lanyard itself",
        ),
        (json!({"audience": "a b", "algorithm": "RS256"}), "audience"),
    ];
    let before = env
        .admin(Method::GET, "audience-profiles", Value::Null)
        .await?;
    for (body, needle) in refused {
        let (status, answer) = env
            .admin_raw(Method::POST, "audience-profiles", body.clone())
            .await?;
        assert_eq!(status, 400, "{body}: {answer}");
        let text = answer["error_description"].as_str().unwrap_or("");
        assert!(text.contains(needle), "{body}: {text}");
    }
    // A third tenant may not move {tenant} for the same audience.
    env.admin(Method::POST, "tenants", json!({"name": "shop"}))
        .await?;
    let (status, answer) = env
        .admin_raw(
            Method::POST,
            "audience-profiles",
            json!({"audience": AZURE, "tenant": "shop", "subject_template": "payments/{tenant}"}),
        )
        .await?;
    assert_eq!(status, 409, "{answer}");
    // Nor have two profiles for one audience and scope.
    let (status, _) = env
        .admin_raw(
            Method::POST,
            "audience-profiles",
            json!({"audience": AZURE, "tenant": "payments", "subject_template": "tenant/{tenant}"}),
        )
        .await?;
    assert_eq!(status, 409);
    let after = env
        .admin(Method::GET, "audience-profiles", Value::Null)
        .await?;
    assert_eq!(before, after, "refused profiles are not stored");

    // Refused at issue: the template needs a role the entry lacks; a
    // profiled audience asked together with another one. Audited denials.
    for (sa, auds) in [("norole", vec![AZURE]), ("app", vec![AZURE, "api://other"])] {
        let (status, body, cid) = env.issue_for("payments", sa, &auds).await?;
        assert_eq!(status, 400, "{sa}: {body}");
        assert_eq!(body["error"], "invalid_target", "{body}");
        let events = env.audit_for(&cid).await?;
        assert_eq!(events[0]["decision"], "deny");
        assert!(
            events[0]["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("audience_profile:")),
            "{}",
            events[0]["reason"]
        );
    }

    // An entry's own profile wins over its tenant's; deleting it (audited)
    // brings the tenant's back.
    let own = env
        .profile(json!({"audience": AZURE, "entry": pay, "subject_template": "tenant/{tenant}/entry/{entry}"}))
        .await?;
    let (_, body, _) = env.issue_for("payments", "app", &[AZURE]).await?;
    assert_eq!(
        claims_of(body["access_token"].as_str().unwrap_or(""))["sub"],
        json!(format!("tenant/payments/entry/{pay}"))
    );
    let id = own["id"].as_str().ok_or("no id")?;
    let resp = env
        .http
        .delete(format!("{}/admin/v1/audience-profiles/{id}", env.base))
        .bearer_auth(&env.admin)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 204);
    let cid = resp
        .headers()
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let events = env.audit_for(&cid).await?;
    assert_eq!(events[0]["action"], "audience_profile.delete");
    assert!(events[0]["subject"]
        .as_str()
        .is_some_and(|s| s.contains(id)));
    let (_, body, _) = env.issue_for("payments", "app", &[AZURE]).await?;
    assert_eq!(
        claims_of(body["access_token"].as_str().unwrap_or(""))["sub"],
        "tenant/payments/role/reader"
    );
    // The entry a profile names cannot be deleted under it... (checked in
    // the store suite) and a bad role is refused at entry creation.
    let (status, answer) = env
        .admin_raw(
            Method::POST,
            "entries",
            json!({"spiffe_id": "spiffe://example.org/r", "tenant": "payments",
            "selectors": ["k8s:ns:r"], "role": "a/b"}),
        )
        .await?;
    assert_eq!(status, 400, "{answer}");
    Ok(())
}
