//! RFC 8693 token exchange end to end over a real socket: the happy paths,
//! delegation chains, revocation, and the fail-closed table of
//! docs/SECURITY.md (each bad input: the right RFC 6749 error, an audited
//! denial with its reason code, no panic).

// Tests and benchmarks fail by panicking and index fixtures they built.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use lanyard_ca::{Kek, RotationPolicy};
use lanyard_core::{Clock, TrustDomain};
use lanyard_jose::{Algorithm, Jwks, SigningKey};
use lanyard_server::config::{KekSource, ServerConfig};
use lanyard_server::{admin_token, Server};
use lanyard_testkit::FakeClock;
use serde_json::{json, Value};

/// Audience profiles and cloud token shapes; OpenBao as a consumer.
#[path = "exchange/federation.rs"]
mod federation;

/// The gRPC node API over real TLS: node attestation, SVID pinning, and the
/// same policy as the exchange for the node's workloads.
#[path = "exchange/node_api.rs"]
mod node_api;
/// The store going away and hanging.
#[path = "exchange/outage.rs"]
mod outage;

/// TokenReview and several clusters.
#[path = "exchange/tokenreview.rs"]
mod tokenreview;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const K8S_ISS: &str = "https://k8s.test";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// How a test server differs from the default one.
struct Options {
    store_url: Option<String>,
    algorithms: Vec<Algorithm>,
    clock: FakeClock,
    /// Serve HTTPS with a self-signed certificate (its PEM is in `Env::ca_pem`).
    tls: bool,
    /// `tokens.max_ttl` (1h when `None`).
    jwt_max_ttl: Option<Duration>,
    /// The KEK file (a new one when `None`); share it to share a store.
    kek_file: Option<std::path::PathBuf>,
    /// `server.request_timeout` (the default when `None`).
    request_timeout: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            store_url: None,
            algorithms: vec![Algorithm::Es256],
            clock: FakeClock::new(),
            tls: false,
            jwt_max_ttl: None,
            kek_file: None,
            request_timeout: None,
        }
    }
}

struct Env {
    config: ServerConfig,
    /// The server certificate, when serving HTTPS.
    ca_pem: Option<String>,
    base: String,
    admin: String,
    http: reqwest::Client,
    clock: FakeClock,
    state: lanyard_server::state::AppState,
    key: SigningKey,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn start() -> Result<Self, Box<dyn std::error::Error>> {
        Self::start_on(None).await
    }

    /// A server on `store_url` (a fresh SQLite file when `None`).
    async fn start_on(store_url: Option<String>) -> Result<Self, Box<dyn std::error::Error>> {
        Self::start_with(Options {
            store_url,
            ..Options::default()
        })
        .await
    }

    async fn start_with(opts: Options) -> Result<Self, Box<dyn std::error::Error>> {
        let Options {
            store_url,
            algorithms,
            clock,
            tls,
            jwt_max_ttl,
            kek_file,
            request_timeout,
        } = opts;
        let fresh = store_url.is_none();
        let dir = tempfile::tempdir()?;
        let kek_file = match kek_file {
            Some(f) => f,
            None => {
                Kek::generate_file(&dir.path().join("kek"))?;
                dir.path().join("kek")
            }
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let (tls, ca_pem) = if tls {
            let (cert, key) = lanyard_testkit::self_signed_tls();
            std::fs::write(dir.path().join("tls.crt"), &cert)?;
            std::fs::write(dir.path().join("tls.key"), key)?;
            let files = lanyard_server::config::TlsFiles {
                cert: dir.path().join("tls.crt"),
                key: dir.path().join("tls.key"),
            };
            (Some(files), Some(cert))
        } else {
            (None, None)
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let cfg = ServerConfig {
            trust_domain: TrustDomain::parse("example.org")?,
            issuer: format!("{scheme}://{addr}"),
            listen: addr,
            tls,
            max_request_bytes: 64 * 1024,
            store_url: store_url
                .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("lanyard.db").display())),
            kek: KekSource::File(kek_file),
            algorithms,
            rotation: RotationPolicy::default(),
            jwt_default_ttl: Duration::from_secs(300),
            jwt_max_ttl: jwt_max_ttl.unwrap_or(Duration::from_secs(3600)),
            max_delegation_depth: 2,
            verified_token_cache: 10_000,
            ca: lanyard_server::config::CaConfig::default(),
            node_api: None,
            listen_limits: lanyard_server::net::ListenLimits {
                request_timeout: request_timeout.unwrap_or(lanyard_server::net::REQUEST_TIMEOUT),
                ..Default::default()
            },
            audit: Default::default(),
            federation: Default::default(),
        };
        let shared: Arc<dyn Clock> = Arc::new(clock.clone());
        let server = Server::build(cfg.clone(), shared.clone()).await?;
        let admin = admin_token::create(&*server.state().store, &*shared, "test", "system:test")
            .await?
            .token;
        let state = server.state().clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.serve(listener, async move {
            let _ = rx.await;
        }));
        let (key, _) = SigningKey::generate(Algorithm::Es256)?;
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(10));
        if let Some(pem) = &ca_pem {
            http = http.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes())?);
        }
        let env = Self {
            config: cfg,
            ca_pem,
            base: format!("{scheme}://{addr}"),
            admin,
            http: http.build()?,
            clock,
            state,
            key,
            stop: Some(tx),
            _dir: dir,
        };
        // A store shared with an earlier test server already has the fixtures.
        if fresh
            || env
                .admin(reqwest::Method::GET, "tenants/payments", Value::Null)
                .await
                .is_err()
        {
            env.setup().await?;
        }
        Ok(env)
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Result<Value, Box<dyn std::error::Error>> {
        let resp = self
            .http
            .request(method, format!("{}/admin/v1/{path}", self.base))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!("{path}: {status} {v}").into());
        }
        Ok(v)
    }

    async fn setup(&self) -> TestResult {
        use reqwest::Method;
        for t in ["payments", "agents-co"] {
            self.admin(Method::POST, "tenants", json!({"name": t}))
                .await?;
        }
        let jwks = Jwks {
            keys: vec![self.key.public_jwk()],
        };
        self.admin(
            Method::POST,
            "issuers",
            issuer_config("k8s", K8S_ISS, json!({"fixed": "payments"}), &jwks),
        )
        .await?;
        self.admin(
            Method::POST,
            "issuers",
            issuer_config(
                "k8s-claim",
                "https://claims.test",
                json!({"claim": "/tenant"}),
                &jwks,
            ),
        )
        .await?;
        let entry = |spiffe: &str, tenant: &str, sels: &[&str], extra: Value| {
            let mut e = json!({"spiffe_id": spiffe, "tenant": tenant, "selectors": sels});
            if let (Some(obj), Some(more)) = (e.as_object_mut(), extra.as_object()) {
                obj.extend(more.clone());
            }
            e
        };
        self.admin(
            Method::POST,
            "entries",
            entry(
                "spiffe://example.org/ns/payments/sa/api",
                "payments",
                &["k8s:ns:payments", "k8s:sa:api"],
                json!({"issuer": "k8s", "audiences": ["api://x", "api://y"], "scopes": ["read", "write"], "may_act": ["spiffe://example.org/agents/*"]}),
            ),
        )
        .await?;
        for (agent, may_act) in [
            ("a1", json!(["spiffe://example.org/agents/*"])),
            ("a2", json!(["spiffe://example.org/agents/*"])),
            ("a3", json!([])),
        ] {
            self.admin(
                Method::POST,
                "entries",
                entry(
                    &format!("spiffe://example.org/agents/{agent}"),
                    "payments",
                    &["k8s:ns:agents", &format!("k8s:sa:{agent}")],
                    json!({"issuer": "k8s", "may_act": may_act}),
                ),
            )
            .await?;
        }
        self.admin(
            Method::POST,
            "entries",
            // Any trusted issuer: an entry for issuer k8s itself must be in
            // k8s's tenant (refused at creation, issue 9), so the mismatch
            // can only show at exchange through an unbound entry.
            entry(
                "spiffe://example.org/other",
                "agents-co",
                &["k8s:cluster:k8s", "k8s:ns:other"],
                json!({}),
            ),
        )
        .await?;
        self.admin(
            Method::POST,
            "entries",
            entry(
                "spiffe://example.org/claimed",
                "payments",
                &["k8s:ns:claimed"],
                json!({"issuer": "k8s-claim"}),
            ),
        )
        .await?;
        Ok(())
    }

    /// A Kubernetes projected service-account token signed by the test issuer.
    fn k8s_token(&self, ns: &str, sa: &str, tweak: impl FnOnce(&mut Value)) -> String {
        let now = self.clock.unix_seconds();
        let mut claims = json!({
            "iss": K8S_ISS, "aud": ["lanyard"], "sub": format!("system:serviceaccount:{ns}:{sa}"),
            "iat": now, "nbf": now, "exp": now + 3600, "jti": format!("jti-{ns}-{sa}"),
            "kubernetes.io": {
                "namespace": ns,
                "serviceaccount": {"name": sa, "uid": format!("sa-uid-{sa}")},
                "pod": {"name": format!("{sa}-pod"), "uid": format!("pod-uid-{sa}")},
            },
        });
        tweak(&mut claims);
        lanyard_jose::encode_jwt(&self.key, &claims).unwrap_or_default()
    }

    async fn exchange(
        &self,
        form: &[(&str, &str)],
    ) -> Result<(u16, Value, String), Box<dyn std::error::Error>> {
        let body = serde_urlencoded::to_string(form)?;
        let resp = self
            .http
            .post(format!("{}/oauth2/token", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let cid = resp
            .headers()
            .get("x-correlation-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        Ok((status, resp.json().await?, cid))
    }

    async fn audit_for(&self, cid: &str) -> Result<Vec<Value>, Box<dyn std::error::Error>> {
        let v = self
            .http
            .get(format!("{}/admin/v1/audit?correlation_id={cid}", self.base))
            .bearer_auth(&self.admin)
            .send()
            .await?
            .json::<Value>()
            .await?;
        Ok(v["events"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn issuer_config(name: &str, iss: &str, tenant: Value, jwks: &Jwks) -> Value {
    json!({
        "name": name, "kind": "kubernetes", "issuer": iss, "keys": {"jwks_inline": jwks},
        "audience": "lanyard", "tenant": tenant, "algorithms": ["ES256"],
        "max_token_lifetime_secs": 86400, "insecure_allow_legacy_tokens": false, "insecure_http": false,
    })
}

fn claims_of(token: &str) -> Value {
    token
        .split('.')
        .nth(1)
        .and_then(|p| B64.decode(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

fn base_form<'a>(token: &'a str, audience: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", EXCHANGE),
        ("subject_token", token),
        ("subject_token_type", JWT),
        ("audience", audience),
    ]
}

#[tokio::test]
async fn kubernetes_token_becomes_a_tenant_bound_jwt_svid() -> TestResult {
    let env = Env::start().await?;
    let token = env.k8s_token("payments", "api", |_| {});
    let (status, body, cid) = env.exchange(&base_form(&token, "api://x")).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["issued_token_type"], JWT);
    assert_eq!(body["expires_in"], 300);
    let svid = body["access_token"].as_str().ok_or("no token")?;
    // Verify against the JWKS served over HTTP.
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
    let verified = lanyard_jose::verify_compact(svid, &keys, &[Algorithm::Es256])?;
    assert_eq!(verified.header.typ.as_deref(), Some("JWT"));
    let c: Value = serde_json::from_slice(&verified.payload)?;
    assert_eq!(c["sub"], "spiffe://example.org/ns/payments/sa/api");
    assert_eq!(c["iss"], json!(env.base));
    assert_eq!(c["aud"], json!(["api://x"]));
    assert_eq!(c["tenant"], "payments");
    assert_eq!(c["scope"], "read write");
    assert_eq!(c["exp"].as_i64(), Some(env.clock.unix_seconds() + 300));
    assert!(c.get("act").is_none());
    let events = env.audit_for(&cid).await?;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["decision"], "allow");
    assert_eq!(events[0]["tenant"], "payments");
    assert_eq!(
        events[0]["evidence_digest"].as_str().map(str::len),
        Some(64)
    );
    assert!(
        !events[0].to_string().contains(&token),
        "the token itself is never audited"
    );

    // access_token flavour, narrowed scope, shorter TTL.
    let mut form = base_form(&token, "api://y");
    form.extend([
        (
            "requested_token_type",
            "urn:ietf:params:oauth:token-type:access_token",
        ),
        ("scope", "read"),
        ("expires_in", "60"),
    ]);
    let (status, body, _) = env.exchange(&form).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["token_type"].clone(),
            body["scope"].clone(),
            body["expires_in"].clone()
        ),
        (json!("Bearer"), json!("read"), json!(60))
    );
    Ok(())
}

#[tokio::test]
async fn delegation_chains_nest_act_and_narrow() -> TestResult {
    let env = Env::start().await?;
    let subject = env.k8s_token("payments", "api", |_| {});
    let a1 = env.k8s_token("agents", "a1", |_| {});
    let a2 = env.k8s_token("agents", "a2", |_| {});
    let a3 = env.k8s_token("agents", "a3", |_| {});

    // Step 1: a1 acts for api. Ask for a token Lanyard itself accepts next.
    let mut form = base_form(&subject, &env.base);
    form.extend([
        ("actor_token", a1.as_str()),
        ("actor_token_type", JWT),
        ("scope", "read"),
    ]);
    let (status, body, cid) = env.exchange(&form).await?;
    assert_eq!(status, 200, "{body}");
    let hop1 = body["access_token"].as_str().ok_or("token")?.to_owned();
    let c = claims_of(&hop1);
    assert_eq!(c["sub"], "spiffe://example.org/ns/payments/sa/api");
    assert_eq!(c["act"], json!({"sub": "spiffe://example.org/agents/a1"}));
    let ev = env.audit_for(&cid).await?;
    assert!(
        ev[0]["subject"]
            .as_str()
            .is_some_and(|s| s.contains("<- spiffe://example.org/agents/a1")),
        "{ev:?}"
    );

    // Step 2: a2 acts on the delegated token: act nests, scope cannot widen.
    let mut widen = base_form(&hop1, "api://x");
    widen.extend([
        ("actor_token", a2.as_str()),
        ("actor_token_type", JWT),
        ("scope", "read write"),
    ]);
    let (status, body, _) = env.exchange(&widen).await?;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_scope")),
        "{body}"
    );
    let mut form = base_form(&hop1, "api://x");
    form.extend([("actor_token", a2.as_str()), ("actor_token_type", JWT)]);
    let (status, body, _) = env.exchange(&form).await?;
    assert_eq!(status, 200, "{body}");
    let hop2 = body["access_token"].as_str().ok_or("token")?.to_owned();
    let c = claims_of(&hop2);
    assert_eq!(
        c["act"],
        json!({"sub": "spiffe://example.org/agents/a2", "act": {"sub": "spiffe://example.org/agents/a1"}})
    );
    assert_eq!(c["scope"], "read", "scope stays narrowed along the chain");

    // Step 3: depth limit is 2 in this server.
    let hop2_self = {
        let mut form = base_form(&hop1, &env.base);
        form.extend([("actor_token", a2.as_str()), ("actor_token_type", JWT)]);
        env.exchange(&form).await?.1["access_token"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    let mut form = base_form(&hop2_self, "api://x");
    form.extend([("actor_token", a1.as_str()), ("actor_token_type", JWT)]);
    let (status, body, cid) = env.exchange(&form).await?;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_grant")),
        "{body}"
    );
    assert!(env.audit_for(&cid).await?[0]["reason"]
        .as_str()
        .is_some_and(|r| r.starts_with("chain_too_deep")));

    // a3 is not in api's may_act? It is (agents/*); but api is not in a3's,
    // so a3 cannot be the subject of a delegation to a1.
    let mut form = base_form(&a3, "api://x");
    form.extend([("actor_token", a1.as_str()), ("actor_token_type", JWT)]);
    let (status, body, _) = env.exchange(&form).await?;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("unauthorized_client")),
        "{body}"
    );
    Ok(())
}

#[tokio::test]
async fn revocation_applies_at_once() -> TestResult {
    let env = Env::start().await?;
    let token = env.k8s_token("payments", "api", |_| {});
    assert_eq!(env.exchange(&base_form(&token, "api://x")).await?.0, 200);
    for (kind, value) in [
        ("k8s-pod-uid", "pod-uid-api"),
        ("k8s-sa-uid", "sa-uid-api"),
        ("jti", "jti-payments-api"),
        ("spiffe-id", "spiffe://example.org/ns/payments/sa/api"),
    ] {
        let env2 = Env::start().await?;
        let token = env2.k8s_token("payments", "api", |_| {});
        assert_eq!(env2.exchange(&base_form(&token, "api://x")).await?.0, 200);
        env2.admin(
            reqwest::Method::POST,
            "revocations",
            json!({"kind": kind, "value": value, "reason": "test"}),
        )
        .await?;
        let (status, body, cid) = env2.exchange(&base_form(&token, "api://x")).await?;
        assert_eq!(
            (status, body["error"].clone()),
            (400, json!("invalid_grant")),
            "{kind}: {body}"
        );
        assert!(
            env2.audit_for(&cid).await?[0]["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("revoked")),
            "{kind}"
        );
        // The second presentation was answered from the verified-token
        // cache, and the revocation still applied to it.
        let metrics = env2
            .http
            .get(format!("{}/metrics", env2.base))
            .send()
            .await?
            .text()
            .await?;
        for line in [
            r#"lanyard_verified_token_cache{state="hits"} 1"#,
            r#"lanyard_verified_token_cache{state="misses"} 1"#,
            r#"lanyard_verified_token_cache{state="capacity"} 10000"#,
        ] {
            assert!(
                metrics.lines().any(|l| l == line),
                "{kind}: no {line:?} in\n{metrics}"
            );
        }
    }
    // A time-bounded revocation lapses with the (fake) clock.
    let until = env.clock.unix_seconds() + 60;
    env.admin(
        reqwest::Method::POST,
        "revocations",
        json!({"kind": "k8s-sa-uid", "value": "sa-uid-api", "reason": "t", "until": until}),
    )
    .await?;
    assert_eq!(env.exchange(&base_form(&token, "api://x")).await?.0, 400);
    env.clock.advance(Duration::from_secs(61));
    let fresh = env.k8s_token("payments", "api", |_| {});
    assert_eq!(env.exchange(&base_form(&fresh, "api://x")).await?.0, 200);
    Ok(())
}

/// docs/SECURITY.md, "Fail-closed table": every row, one case.
#[tokio::test]
async fn fail_closed_table() -> TestResult {
    let env = Env::start().await?;
    let now = env.clock.unix_seconds();
    let good = env.k8s_token("payments", "api", |_| {});
    let parts: Vec<&str> = good.split('.').collect();
    let header_with = |alg: &str, kid: &str| {
        B64.encode(format!(r#"{{"alg":"{alg}","kid":"{kid}","typ":"JWT"}}"#))
    };
    let payload = parts.get(1).copied().unwrap_or("");
    let none = format!("{}.{payload}.", header_with("none", env.key.kid()));
    let hs256 = {
        // HMAC keyed with the issuer's public JWK text: the classic confusion attack.
        let signing_input = format!("{}.{payload}", header_with("HS256", env.key.kid()));
        let secret = serde_json::to_vec(&env.key.public_jwk())?;
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret);
        let tag = aws_lc_rs::hmac::sign(&key, signing_input.as_bytes());
        format!("{signing_input}.{}", B64.encode(tag.as_ref()))
    };
    let (other_key, _) = SigningKey::generate(Algorithm::Es256)?;
    let unknown_kid = lanyard_jose::encode_jwt(&other_key, &claims_of(&good))?;
    let tampered = {
        let mut c = claims_of(&good);
        c["kubernetes.io"]["namespace"] = json!("admin");
        format!(
            "{}.{}.{}",
            parts.first().copied().unwrap_or(""),
            B64.encode(c.to_string()),
            parts.get(2).copied().unwrap_or("")
        )
    };
    let oversized = env.k8s_token("payments", "api", |c| {
        c["padding"] = json!("x".repeat(20_000))
    });
    let unknown_issuer =
        env.k8s_token("payments", "api", |c| c["iss"] = json!("https://evil.test"));
    let wrong_aud = env.k8s_token("payments", "api", |c| c["aud"] = json!(["someone-else"]));
    let expired = env.k8s_token("payments", "api", |c| {
        c["iat"] = json!(now - 7200);
        c["nbf"] = json!(now - 7200);
        c["exp"] = json!(now - 3600);
    });
    let not_yet = env.k8s_token("payments", "api", |c| {
        c["nbf"] = json!(now + 3600);
        c["iat"] = json!(now + 3600);
        c["exp"] = json!(now + 7200);
    });
    let too_long = env.k8s_token("payments", "api", |c| c["exp"] = json!(now + 200_000));
    let within_skew = env.k8s_token("payments", "api", |c| {
        c["iat"] = json!(now - 600);
        c["nbf"] = json!(now - 600);
        c["exp"] = json!(now - 30);
    });
    let wrong_ns = env.k8s_token("billing", "api", |_| {});
    let wrong_sa = env.k8s_token("payments", "web", |_| {});
    let no_tenant = {
        let mut c = claims_of(&env.k8s_token("claimed", "x", |_| {}));
        c["iss"] = json!("https://claims.test");
        lanyard_jose::encode_jwt(&env.key, &c)?
    };
    let other_tenant_entry = env.k8s_token("other", "x", |_| {});
    let a1 = env.k8s_token("agents", "a1", |_| {});
    let a3 = env.k8s_token("agents", "a3", |_| {});

    // (name, form, expected status, expected error, expected audit reason code)
    let form = |t: &str| {
        base_form(t, "api://x")
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect::<Vec<_>>()
    };
    let with = |mut f: Vec<(String, String)>, extra: &[(&str, &str)]| {
        f.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        f
    };
    let without = |f: Vec<(String, String)>, key: &str| {
        f.into_iter().filter(|(k, _)| k != key).collect::<Vec<_>>()
    };
    type Form = Vec<(String, String)>;
    let cases: Vec<(&str, Form, &str, &str)> = vec![
        (
            "unknown issuer",
            form(&unknown_issuer),
            "invalid_grant",
            "unknown_issuer",
        ),
        (
            "wrong aud",
            form(&wrong_aud),
            "invalid_grant",
            "wrong_audience",
        ),
        ("expired", form(&expired), "invalid_grant", "expired"),
        (
            "not yet valid",
            form(&not_yet),
            "invalid_grant",
            "not_yet_valid",
        ),
        (
            "too long-lived",
            form(&too_long),
            "invalid_grant",
            "lifetime_too_long",
        ),
        (
            "expired within the skew: no lifetime to lend",
            form(&within_skew),
            "invalid_grant",
            "expired",
        ),
        (
            "alg none",
            form(&none),
            "invalid_grant",
            "algorithm_not_allowed",
        ),
        (
            "HS256 with the public key",
            form(&hs256),
            "invalid_grant",
            "algorithm_not_allowed",
        ),
        (
            "unknown kid",
            form(&unknown_kid),
            "invalid_grant",
            "unknown_key",
        ),
        (
            "tampered payload",
            form(&tampered),
            "invalid_grant",
            "bad_signature",
        ),
        (
            "truncated",
            form(&good[..good.len() / 2]),
            "invalid_grant",
            "malformed",
        ),
        ("garbage", form("not-a-token"), "invalid_grant", "malformed"),
        (
            "oversized",
            form(&oversized),
            "invalid_request",
            "too_large",
        ),
        (
            "wrong namespace",
            form(&wrong_ns),
            "invalid_grant",
            "no_matching_entry",
        ),
        (
            "wrong service account",
            form(&wrong_sa),
            "invalid_grant",
            "no_matching_entry",
        ),
        (
            "missing tenant",
            form(&no_tenant),
            "invalid_grant",
            "missing_tenant",
        ),
        (
            "tenant mismatch (request)",
            with(form(&good), &[("tenant", "agents-co")]),
            "invalid_grant",
            "tenant_mismatch",
        ),
        (
            "tenant mismatch (issuer vs entry)",
            form(&other_tenant_entry),
            "invalid_grant",
            "tenant_mismatch",
        ),
        (
            "audience not allowed",
            base_form(&good, "api://z")
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            "invalid_target",
            "audience_not_allowed",
        ),
        (
            "actor not allowed",
            with(
                form(&a3),
                &[("actor_token", &a1), ("actor_token_type", JWT)],
            ),
            "unauthorized_client",
            "actor_not_allowed",
        ),
        (
            "scope widening",
            with(form(&good), &[("scope", "admin")]),
            "invalid_scope",
            "scope_widening",
        ),
        (
            "unknown requested_token_type",
            with(form(&good), &[("requested_token_type", "urn:x:saml")]),
            "invalid_request",
            "invalid_request",
        ),
        (
            "missing subject_token",
            without(form(&good), "subject_token"),
            "invalid_request",
            "invalid_request",
        ),
        (
            "missing grant_type",
            without(form(&good), "grant_type"),
            "invalid_request",
            "invalid_request",
        ),
        (
            "duplicated subject_token",
            with(form(&good), &[("subject_token", &good)]),
            "invalid_request",
            "invalid_request",
        ),
        (
            "unsupported grant",
            with(
                without(form(&good), "grant_type"),
                &[("grant_type", "password")],
            ),
            "unsupported_grant_type",
            "unsupported_token_type",
        ),
    ];
    for (name, form, error, reason) in cases {
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (status, body, cid) = env.exchange(&pairs).await?;
        assert_eq!(status, 400, "{name}: {body}");
        assert_eq!(body["error"], error, "{name}: {body}");
        let description = body["error_description"].as_str().unwrap_or("");
        assert!(
            !description.contains("spiffe://example.org/other")
                && !description.contains("agents-co entry"),
            "{name}: leaks {description}"
        );
        let events = env.audit_for(&cid).await?;
        assert_eq!(events.len(), 1, "{name}: one audit event");
        assert_eq!(events[0]["decision"], "deny", "{name}");
        let audited = events[0]["reason"].as_str().unwrap_or("");
        assert!(
            audited.starts_with(reason),
            "{name}: audited {audited:?}, want {reason}"
        );
    }
    // Wrong content type and garbage bodies: refused, audited, no panic.
    let resp = env
        .http
        .post(format!("{}/oauth2/token", env.base))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await?;
    assert_eq!(resp.status(), 400);
    let resp = env
        .http
        .post(format!("{}/oauth2/token", env.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![0xff, 0xfe, b'=', b'%'])
        .send()
        .await?;
    assert_eq!(resp.status(), 400);
    // The chain verifies after all of that.
    let v: Value = env
        .http
        .get(format!("{}/admin/v1/audit/verify", env.base))
        .bearer_auth(&env.admin)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(v["ok"], true, "{v}");
    Ok(())
}

#[tokio::test]
async fn issuer_sets_stay_unambiguous() -> TestResult {
    let env = Env::start().await?;
    let jwks = Jwks {
        keys: vec![env.key.public_jwk()],
    };
    let post = |body: Value| {
        let http = env.http.clone();
        let url = format!("{}/admin/v1/issuers", env.base);
        let admin = env.admin.clone();
        async move {
            http.post(url)
                .bearer_auth(admin)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    assert_eq!(
        post(issuer_config(
            "k8s",
            "https://other.test",
            json!({"fixed": "payments"}),
            &jwks
        ))
        .await?,
        409,
        "same name"
    );
    assert_eq!(
        post(issuer_config(
            "k8s-again",
            K8S_ISS,
            json!({"fixed": "payments"}),
            &jwks
        ))
        .await?,
        400,
        "same iss and audience"
    );
    assert_eq!(
        post(issuer_config(
            "k8s-ghost",
            "https://ghost.test",
            json!({"fixed": "no-such-tenant"}),
            &jwks
        ))
        .await?,
        400,
        "unknown tenant"
    );
    Ok(())
}

#[tokio::test]
async fn explain_walks_every_step_and_issues_nothing() -> TestResult {
    let env = Env::start().await?;
    let wrong_sa = env.k8s_token("payments", "web", |_| {});
    let v = env
        .admin(
            reqwest::Method::POST,
            "explain",
            json!({"subject_token": wrong_sa, "audience": ["api://x"]}),
        )
        .await?;
    assert_eq!(v["decision"], "deny");
    let steps = v["steps"].as_array().ok_or("steps")?;
    assert!(steps
        .iter()
        .any(|s| s["step"] == "attestation" && s["ok"] == true));
    assert!(
        steps.iter().any(|s| s["step"] == "entry"
            && s["ok"] == false
            && s["detail"]
                .as_str()
                .is_some_and(|d| d.contains("k8s:sa:web"))),
        "{steps:?}"
    );
    let good = env.k8s_token("payments", "api", |_| {});
    let v = env
        .admin(
            reqwest::Method::POST,
            "explain",
            json!({"subject_token": good, "audience": ["api://x"]}),
        )
        .await?;
    assert_eq!(v["decision"], "allow", "{v}");
    assert!(
        !v.to_string().contains("eyJ"),
        "explain never returns a token"
    );
    Ok(())
}

/// Two replicas on one PostgreSQL store: a revocation taken by one is
/// enforced by the other within 5 seconds (its registry poller runs every
/// second).
#[tokio::test]
async fn revocation_reaches_other_replicas_within_five_seconds() -> TestResult {
    let Some(url) =
        lanyard_testkit::fresh_postgres("revocation_reaches_other_replicas_within_five_seconds")
            .await
    else {
        return Ok(());
    };
    assert!(lanyard_server::registry::POLL <= Duration::from_secs(5));
    let a = Env::start_on(Some(url)).await?;
    // Replica B: same store and KEK, its own listener, registry and poller.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let b_addr = listener.local_addr()?;
    let mut cfg = a.config.clone();
    cfg.listen = b_addr;
    let clock: Arc<dyn Clock> = Arc::new(a.clock.clone());
    let b = Server::build(cfg, clock).await?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(b.serve(listener, async move {
        let _ = rx.await;
    }));
    let exchange_b = |token: String| {
        let http = a.http.clone();
        async move {
            let body = serde_urlencoded::to_string([
                ("grant_type", EXCHANGE),
                ("subject_token", &token),
                ("subject_token_type", JWT),
                ("audience", "api://x"),
            ])?;
            let resp = http
                .post(format!("http://{b_addr}/oauth2/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await?;
            Ok::<_, Box<dyn std::error::Error>>(resp.status().as_u16())
        }
    };
    let token = a.k8s_token("payments", "api", |_| {});
    assert_eq!(
        exchange_b(token.clone()).await?,
        200,
        "B issues before the revocation"
    );
    a.admin(
        reqwest::Method::POST,
        "revocations",
        json!({"kind": "k8s-sa-uid", "value": "sa-uid-api", "reason": "replica test"}),
    )
    .await?;
    assert_eq!(
        a.exchange(&base_form(&token, "api://x")).await?.0,
        400,
        "A refuses at once"
    );
    // Bounded wait for B's own poller (no manual refresh): at most 5 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if exchange_b(token.clone()).await? == 400 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica B still issues 5 s after the revocation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = tx.send(());
    serving.await??;
    Ok(())
}

/// The RFC 7523 client-assertion form Azure-style SDKs send:
/// `grant_type=client_credentials` with the token as `client_assertion` and
/// the target as `scope=<resource>/.default`.
#[tokio::test]
async fn client_assertion_form_is_an_exchange_too() -> TestResult {
    let env = Env::start().await?;
    let token = env.k8s_token("payments", "api", |_| {});
    let form = [
        ("grant_type", "client_credentials"),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", token.as_str()),
        ("client_id", "ignored"),
        ("scope", "api://x/.default"),
    ];
    let (status, body, _) = env.exchange(&form).await?;
    assert_eq!(status, 200, "{body}");
    let claims = claims_of(body["access_token"].as_str().unwrap_or(""));
    assert_eq!(claims["aud"], json!(["api://x"]));
    assert_eq!(claims["sub"], "spiffe://example.org/ns/payments/sa/api");
    // Without the assertion type it is refused, naming the parameter.
    let (status, body, _) = env
        .exchange(
            &form[..3]
                .iter()
                .copied()
                .filter(|(k, _)| *k != "client_assertion_type")
                .collect::<Vec<_>>(),
        )
        .await?;
    assert_eq!(status, 400);
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("client_assertion_type")),
        "{body}"
    );
    Ok(())
}

/// Admin input for entries and revocations: each bad value is refused with a
/// message naming it, and nothing is stored.
#[tokio::test]
async fn entry_and_revocation_bad_input() -> TestResult {
    let env = Env::start().await?;
    let post = |path: &'static str, body: Value| {
        let http = env.http.clone();
        let url = format!("{}/admin/v1/{path}", env.base);
        let admin = env.admin.clone();
        async move {
            let resp = http.post(url).bearer_auth(admin).json(&body).send().await?;
            let status = resp.status().as_u16();
            let v: Value = resp.json().await?;
            Ok::<_, reqwest::Error>((
                status,
                v["error_description"].as_str().unwrap_or("").to_owned(),
            ))
        }
    };
    let entry = |patch: Value| {
        let mut e = json!({"spiffe_id": "spiffe://example.org/new", "tenant": "payments", "selectors": ["k8s:ns:new"]});
        if let (Some(obj), Some(more)) = (e.as_object_mut(), patch.as_object()) {
            for (k, v) in more {
                obj.insert(k.clone(), v.clone());
            }
        }
        e
    };
    let before = env
        .admin(reqwest::Method::GET, "entries", Value::Null)
        .await?["entries"]
        .as_array()
        .map(Vec::len);
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            entry(json!({"spiffe_id": "spiffe://other.org/x"})),
            400,
            "trust domain",
        ),
        (entry(json!({"spiffe_id": "not-an-id"})), 400, "spiffe_id"),
        (entry(json!({"tenant": "Bad"})), 400, "tenant"),
        (entry(json!({"tenant": "nobody"})), 400, "does not exist"),
        (entry(json!({"selectors": []})), 400, "selector"),
        (
            entry(json!({"selectors": ["k8s-ns-x"]})),
            400,
            "TYPE:KEY:VALUE",
        ),
        (
            entry(json!({"issuer": "nope"})),
            400,
            "not a trusted issuer",
        ),
        (entry(json!({"may_act": ["agents"]})), 400, "may_act"),
        (entry(json!({"ttl_seconds": 0})), 400, "ttl"),
        (entry(json!({"ttl_seconds": 7200})), 400, "ttl"),
        (
            entry(json!({"ttl_seconds": 600, "max_ttl_seconds": 300})),
            400,
            "max_ttl",
        ),
        (entry(json!({"color": "red"})), 400, "color"),
    ];
    for (body, status, needle) in cases {
        let (got, description) = post("entries", body.clone()).await?;
        assert_eq!(got, status, "{body}: {description}");
        assert!(description.contains(needle), "{body}: {description}");
    }
    let after = env
        .admin(reqwest::Method::GET, "entries", Value::Null)
        .await?["entries"]
        .as_array()
        .map(Vec::len);
    assert_eq!(before, after, "nothing stored");

    let now = env.clock.unix_seconds();
    let revocations: Vec<(Value, &str)> = vec![
        (
            json!({"kind": "password", "value": "x", "reason": "r"}),
            "kind",
        ),
        (json!({"kind": "jti", "value": "", "reason": "r"}), "value"),
        (
            json!({"kind": "jti", "value": "x", "reason": " "}),
            "reason",
        ),
        (
            json!({"kind": "jti", "value": "x", "reason": "r", "until": now - 1}),
            "past",
        ),
    ];
    for (body, needle) in revocations {
        let (status, description) = post("revocations", body.clone()).await?;
        assert_eq!(status, 400, "{body}");
        assert!(description.contains(needle), "{body}: {description}");
    }
    let listed = env
        .admin(reqwest::Method::GET, "revocations", Value::Null)
        .await?;
    assert_eq!(listed["revocations"].as_array().map(Vec::len), Some(0));
    Ok(())
}
