//! End-to-end tests of the server over real sockets: OIDC discovery and JWKS
//! checked by a standard OIDC client library, the admin API, bad input,
//! restarts, key rotation on a fake clock, TLS.

// Tests and benchmarks fail by panicking and index fixtures they built.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lanyard_ca::{Kek, RotationPolicy};
use lanyard_core::{Clock, TrustDomain};
use lanyard_jose::Algorithm;
use lanyard_server::config::{KekSource, ServerConfig, TlsFiles};
use lanyard_server::{admin_token, Server};
use lanyard_testkit::FakeClock;
use serde_json::{json, Value};

type TestResult = Result<(), Box<dyn std::error::Error>>;

struct Running {
    base: String,
    admin: String,
    server: Arc<lanyard_server::state::AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Result<(), lanyard_server::ServerError>>,
    http: reqwest::Client,
}

impl Running {
    async fn stop(mut self) -> TestResult {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.done.await??;
        Ok(())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value, String), reqwest::Error> {
        let mut req = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.admin);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let cid = resp
            .headers()
            .get("x-correlation-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = resp.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            cid,
        ))
    }
}

fn config(
    dir: &Path,
    store_url: Option<&str>,
    tls: Option<TlsFiles>,
    listen: std::net::SocketAddr,
) -> ServerConfig {
    let scheme = if tls.is_some() { "https" } else { "http" };
    ServerConfig {
        trust_domain: TrustDomain::parse("example.org").expect("constant trust domain"),
        issuer: format!("{scheme}://{listen}"),
        listen,
        tls,
        max_request_bytes: 4096,
        store_url: store_url.map_or_else(
            || format!("sqlite://{}", dir.join("lanyard.db").display()),
            str::to_owned,
        ),
        kek: KekSource::File(dir.join("kek")),
        algorithms: vec![Algorithm::Es256, Algorithm::Rs256],
        rotation: RotationPolicy {
            rotation_period: Duration::from_secs(2 * 3600),
            publish_lead: Duration::from_secs(3600),
            retain_after: Duration::from_secs(3600),
        },
        jwt_default_ttl: Duration::from_secs(300),
        jwt_max_ttl: Duration::from_secs(3600),
        max_delegation_depth: 3,
        verified_token_cache: 10_000,
        ca: lanyard_server::config::CaConfig::default(),
        node_api: None,
        listen_limits: Default::default(),
        audit: Default::default(),
        federation: Default::default(),
    }
}

fn ensure_kek(dir: &Path) -> Result<(), lanyard_ca::CaError> {
    if !dir.join("kek").exists() {
        Kek::generate_file(&dir.join("kek"))?;
    }
    Ok(())
}

async fn start(
    dir: &Path,
    clock: FakeClock,
    store_url: Option<&str>,
    tls: Option<TlsFiles>,
) -> Result<Running, Box<dyn std::error::Error>> {
    ensure_kek(dir)?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let with_tls = tls.is_some();
    let cfg = config(dir, store_url, tls, addr);
    let clock: Arc<dyn Clock> = Arc::new(clock);
    let server = Server::build(cfg, clock.clone()).await?;
    // Reuse an admin token across restarts, as `lanyard dev` does.
    let token_file = dir.join("admin-token");
    let admin = match std::fs::read_to_string(&token_file) {
        Ok(t) => t,
        Err(_) => {
            let t = admin_token::create(&*server.state().store, &*clock, "test", "system:test")
                .await?
                .token;
            std::fs::write(&token_file, &t)?;
            t
        }
    };
    let state = Arc::new(server.state().clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(server.serve(listener, async move {
        let _ = rx.await;
    }));
    let mut http = reqwest::Client::builder().timeout(Duration::from_secs(10));
    if with_tls {
        let pem = std::fs::read(dir.join("tls.crt"))?;
        http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    let scheme = if with_tls { "https" } else { "http" };
    Ok(Running {
        base: format!("{scheme}://{addr}"),
        admin,
        server: state,
        stop: Some(tx),
        done,
        http: http.build()?,
    })
}

fn jwt_claims(issuer: &str, aud: &str, clock: &dyn Clock) -> Value {
    let now = clock.unix_seconds();
    json!({"iss": issuer, "sub": "spiffe://example.org/ns/default/sa/api", "aud": [aud], "iat": now, "exp": now + 300})
}

mod oidc {
    use openidconnect::core::{
        CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet, CoreJwsSigningAlgorithm,
        CoreProviderMetadata,
    };
    use openidconnect::{ClientId, IssuerUrl, Nonce};

    use super::*;

    #[tokio::test]
    async fn discovery_and_jwks_satisfy_a_standard_oidc_client() -> TestResult {
        let dir = tempfile::tempdir()?;
        let clock = FakeClock::new();
        let srv = start(dir.path(), clock.clone(), None, None).await?;
        let discovery: Vec<u8> = srv
            .http
            .get(srv.url("/.well-known/openid-configuration"))
            .send()
            .await?
            .bytes()
            .await?
            .to_vec();
        let metadata: CoreProviderMetadata = serde_json::from_slice(&discovery)?;
        assert_eq!(metadata.issuer().as_str(), srv.base);
        let raw: Value = serde_json::from_slice(&discovery)?;
        assert!(
            raw["grant_types_supported"].as_array().is_some_and(
                |g| g.contains(&json!("urn:ietf:params:oauth:grant-type:token-exchange"))
            )
        );
        assert_eq!(raw["token_endpoint"], json!(srv.url("/oauth2/token")));

        let jwks_bytes = srv
            .http
            .get(metadata.jwks_uri().url().as_str())
            .send()
            .await?
            .bytes()
            .await?;
        let jwks: CoreJsonWebKeySet = serde_json::from_slice(&jwks_bytes)?;
        let issuer = IssuerUrl::new(srv.base.clone())?;
        let verifier = CoreIdTokenVerifier::new_public_client(
            ClientId::new("api://AzureADTokenExchange".into()),
            issuer,
            jwks,
        )
        .set_allowed_algs([
            CoreJwsSigningAlgorithm::EcdsaP256Sha256,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        ]);
        let published = srv.server.keys.current();
        for alg in [Algorithm::Es256, Algorithm::Rs256] {
            let signer = published.ring.signer(alg).ok_or("no signer")?;
            let token = lanyard_jose::encode_jwt(
                signer,
                &jwt_claims(&srv.base, "api://AzureADTokenExchange", &clock),
            )?;
            // The library checks exp against the real clock; the fake clock is
            // set in 2026-01, so sign with real time for this check.
            let now = lanyard_core::SystemClock.unix_seconds();
            let mut claims = jwt_claims(&srv.base, "api://AzureADTokenExchange", &clock);
            claims["iat"] = json!(now);
            claims["exp"] = json!(now + 300);
            let token_now = lanyard_jose::encode_jwt(signer, &claims)?;
            let id_token: CoreIdToken = token_now.parse()?;
            let verified = id_token.claims(&verifier, |_: Option<&Nonce>| Ok(()))?;
            assert_eq!(
                verified.subject().as_str(),
                "spiffe://example.org/ns/default/sa/api"
            );
            // Signed at the fake clock's 2026-01-01, so long expired by the
            // library's own clock: refused.
            let stale: CoreIdToken = token.parse()?;
            assert!(stale.claims(&verifier, |_: Option<&Nonce>| Ok(())).is_err());
        }
        // A token from a key the issuer never published is refused.
        let (foreign, _) = lanyard_jose::SigningKey::generate(Algorithm::Es256)?;
        let now = lanyard_core::SystemClock.unix_seconds();
        let mut claims = jwt_claims(&srv.base, "api://AzureADTokenExchange", &clock);
        claims["iat"] = json!(now);
        claims["exp"] = json!(now + 300);
        let forged: CoreIdToken = lanyard_jose::encode_jwt(&foreign, &claims)?.parse()?;
        assert!(forged
            .claims(&verifier, |_: Option<&Nonce>| Ok(()))
            .is_err());
        srv.stop().await
    }

    #[tokio::test]
    async fn jwks_and_bundle_are_public_only_and_cacheable() -> TestResult {
        let dir = tempfile::tempdir()?;
        let srv = start(dir.path(), FakeClock::new(), None, None).await?;
        let resp = srv
            .http
            .get(srv.url("/.well-known/jwks.json"))
            .send()
            .await?;
        let cache = resp
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        assert_eq!(
            cache, "public, max-age=300",
            "max-age is below the 1h publish lead"
        );
        let jwks: Value = resp.json().await?;
        let keys = jwks["keys"].as_array().ok_or("keys")?;
        assert_eq!(keys.len(), 4, "active + next for ES256 and RS256");
        let text = jwks.to_string();
        for private in ["\"d\"", "\"p\"", "\"q\"", "\"dp\"", "\"dq\"", "\"qi\""] {
            assert!(!text.contains(private), "{private} in JWKS");
        }
        for k in keys {
            for member in ["kid", "alg", "use", "kty"] {
                assert!(
                    k.get(member).is_some_and(Value::is_string),
                    "{member} missing in {k}"
                );
            }
            assert_eq!(k["use"], "sig");
        }
        let bundle: Value = srv
            .http
            .get(srv.url("/bundle"))
            .send()
            .await?
            .json()
            .await?;
        assert!(bundle["spiffe_sequence"].as_i64().is_some_and(|s| s > 0));
        assert_eq!(bundle["spiffe_refresh_hint"], 300);
        // The SPIFFE bundle format: JWT keys carry kid, X.509 authorities
        // carry exactly one certificate in x5c and no kid.
        let keys = bundle["keys"].as_array().cloned().unwrap_or_default();
        let jwt: Vec<_> = keys.iter().filter(|k| k["use"] == "jwt-svid").collect();
        let x509: Vec<_> = keys.iter().filter(|k| k["use"] == "x509-svid").collect();
        assert_eq!(jwt.len(), 4);
        assert!(jwt
            .iter()
            .all(|k| k["kid"].is_string() && k.get("x5c").is_none()));
        assert_eq!(x509.len(), 1, "one root");
        assert!(x509.iter().all(|k| k.get("kid").is_none()
            && k["x5c"].as_array().is_some_and(|c| c.len() == 1)
            && k["kty"] == "EC"));
        assert_eq!(keys.len(), jwt.len() + x509.len());
        srv.stop().await
    }
}

mod admin {
    use reqwest::Method;

    use super::*;

    #[tokio::test]
    async fn admin_api_refuses_anything_but_a_valid_token() -> TestResult {
        let dir = tempfile::tempdir()?;
        let srv = start(dir.path(), FakeClock::new(), None, None).await?;
        let url = srv.url("/admin/v1/tenants");
        let (prefix, rest) = srv.admin.split_at(srv.admin.len() - 4);
        let wrong_secret = format!("{prefix}{}", if rest == "AAAA" { "BBBB" } else { "AAAA" });
        let parts: Vec<&str> = srv.admin.split('.').collect();
        let other_id = format!(
            "lya1.0000000000000000.{}",
            parts.get(2).copied().unwrap_or("")
        );
        for bad in [
            None,
            Some(""),
            Some("garbage"),
            Some(wrong_secret.as_str()),
            Some(other_id.as_str()),
            Some("lya1.zz.zz"),
        ] {
            let mut req = srv.http.get(&url);
            if let Some(t) = bad {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await?;
            assert_eq!(resp.status(), 401, "token {bad:?}");
            assert!(resp.headers().contains_key("www-authenticate"));
            let body: Value = resp.json().await?;
            assert_eq!(body["error"], "unauthorized");
        }
        let (status, _, _) = srv.admin(Method::GET, "/admin/v1/tenants", None).await?;
        assert_eq!(status, 200);
        // issue 9: failed admin authentications are audited, not only logged,
        // naming the token's public id at most (never the token).
        let (_, body, _) = srv
            .admin(Method::GET, "/admin/v1/audit?limit=1000", None)
            .await?;
        let events = body["events"].as_array().cloned().unwrap_or_default();
        let denied: Vec<&Value> = events
            .iter()
            .filter(|e| e["action"] == "admin.authenticate" && e["decision"] == "deny")
            .collect();
        assert_eq!(denied.len(), 6, "{denied:?}");
        assert!(denied
            .iter()
            .any(|e| e["subject"] == "admin:0000000000000000"));
        let text = body.to_string();
        assert!(
            !text.contains(&wrong_secret) && !text.contains(parts.get(2).copied().unwrap_or("-"))
        );
        srv.stop().await
    }

    /// `audit verify` while other requests keep appending: it checks the
    /// chain as of the head it read, and does not mistake the newer events
    /// for a changed head (found by scripts/faults.sh, where the broker's
    /// reaper kept writing during the check).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn audit_verify_holds_while_writers_append() -> TestResult {
        let dir = tempfile::tempdir()?;
        let srv = start(dir.path(), FakeClock::new(), None, None).await?;
        for i in 0..300 {
            let (status, _, _) = srv
                .admin(
                    Method::POST,
                    "/admin/v1/tenants",
                    Some(json!({"name": format!("seed{i}")})),
                )
                .await?;
            assert_eq!(status, 201);
        }
        let writer = {
            let (http, url, admin) = (
                srv.http.clone(),
                srv.url("/admin/v1/tenants"),
                srv.admin.clone(),
            );
            tokio::spawn(async move {
                let mut written = 0u32;
                for i in 0..400 {
                    let resp = http
                        .post(&url)
                        .bearer_auth(&admin)
                        .json(&json!({"name": format!("busy{i}")}))
                        .send()
                        .await?;
                    if resp.status().as_u16() == 201 {
                        written += 1;
                    }
                }
                Ok::<u32, reqwest::Error>(written)
            })
        };
        let mut checks = 0;
        while !writer.is_finished() && checks < 200 {
            let (status, v, _) = srv
                .admin(Method::GET, "/admin/v1/audit/verify", None)
                .await?;
            assert_eq!(
                (status, &v["ok"]),
                (200, &json!(true)),
                "verify during writes: {v}"
            );
            checks += 1;
        }
        assert_eq!(writer.await??, 400);
        assert!(checks > 0, "the writer finished before any verify ran");
        let (_, v, _) = srv
            .admin(Method::GET, "/admin/v1/audit/verify", None)
            .await?;
        assert_eq!(v["ok"], true, "{v}");
        srv.stop().await
    }

    #[tokio::test]
    async fn tenants_are_validated_unique_and_audited() -> TestResult {
        let dir = tempfile::tempdir()?;
        let srv = start(dir.path(), FakeClock::new(), None, None).await?;
        let (status, body, create_cid) = srv
            .admin(
                Method::POST,
                "/admin/v1/tenants",
                Some(json!({"name": "payments"})),
            )
            .await?;
        assert_eq!((status, body["id"].clone()), (201, json!("payments")));
        let (status, body, _) = srv
            .admin(
                Method::POST,
                "/admin/v1/tenants",
                Some(json!({"name": "payments"})),
            )
            .await?;
        assert_eq!((status, body["error"].clone()), (409, json!("conflict")));
        for (bad, want) in [
            (json!({"name": "Payments"}), "'P'"),
            (json!({"name": "a_b"}), "'_'"),
            (json!({"name": ""}), "empty"),
            (json!({"name": "x", "color": "red"}), "color"),
            (json!({"nam": "x"}), "name"),
            (json!({"name": 5}), "string"),
        ] {
            let (status, body, _) = srv
                .admin(Method::POST, "/admin/v1/tenants", Some(bad.clone()))
                .await?;
            let desc = body["error_description"].as_str().unwrap_or("");
            assert_eq!(status, 400, "{bad}");
            assert!(desc.contains(want), "{bad}: {desc}");
        }
        // Not JSON, and too large: clear errors, nothing stored.
        let resp = srv
            .http
            .post(srv.url("/admin/v1/tenants"))
            .bearer_auth(&srv.admin)
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await?;
        assert_eq!(resp.status(), 400);
        let huge = json!({"name": "big", "description": "x".repeat(10_000)});
        let (status, body, _) = srv
            .admin(Method::POST, "/admin/v1/tenants", Some(huge))
            .await?;
        assert_eq!(
            (status, body["error"].clone()),
            (413, json!("request_too_large"))
        );
        let (_, list, _) = srv.admin(Method::GET, "/admin/v1/tenants", None).await?;
        assert_eq!(list["tenants"].as_array().map(Vec::len), Some(1));

        let (status, _, delete_cid) = srv
            .admin(Method::DELETE, "/admin/v1/tenants/payments", None)
            .await?;
        assert_eq!(status, 204);
        let (status, _, _) = srv
            .admin(Method::DELETE, "/admin/v1/tenants/payments", None)
            .await?;
        assert_eq!(status, 404);

        let (_, audit, _) = srv
            .admin(Method::GET, "/admin/v1/audit?after=0&limit=1000", None)
            .await?;
        let events = audit["events"].as_array().ok_or("events")?;
        let tenant_events: Vec<(&str, &str)> = events
            .iter()
            .filter(|e| {
                e["action"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("tenant."))
            })
            .map(|e| {
                (
                    e["action"].as_str().unwrap_or(""),
                    e["correlation_id"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            tenant_events,
            [
                ("tenant.create", create_cid.as_str()),
                ("tenant.delete", delete_cid.as_str())
            ]
        );
        assert!(events
            .iter()
            .all(|e| e["hash"].as_str().is_some_and(|h| h.len() == 64)));
        srv.stop().await
    }

    #[tokio::test]
    async fn unknown_routes_health_and_metrics() -> TestResult {
        let dir = tempfile::tempdir()?;
        let srv = start(dir.path(), FakeClock::new(), None, None).await?;
        let resp = srv
            .http
            .get(srv.url("/no/such/path?secret=hunter2"))
            .send()
            .await?;
        assert_eq!(resp.status(), 404);
        let body: Value = resp.json().await?;
        assert_eq!(body["error"], "not_found");
        assert!(
            !body.to_string().contains("hunter2"),
            "query strings are never echoed"
        );
        assert_eq!(
            srv.http.get(srv.url("/healthz")).send().await?.status(),
            200
        );
        let ready: Value = srv
            .http
            .get(srv.url("/readyz"))
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(ready["status"], "ready");
        let token = srv
            .http
            .post(srv.url("/oauth2/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await?;
        assert_eq!(token.status(), 400);
        let metrics = srv
            .http
            .get(srv.url("/metrics"))
            .send()
            .await?
            .text()
            .await?;
        assert!(
            metrics.contains(
                r#"lanyard_http_requests_total{method="GET",route="/healthz",status="200"} 1"#
            ),
            "{metrics}"
        );
        assert!(
            metrics.contains(
                r#"lanyard_http_requests_total{method="GET",route="unmatched",status="404"} 1"#
            ),
            "{metrics}"
        );
        assert!(
            metrics.contains(r#"lanyard_http_request_duration_seconds_bucket{le="#),
            "{metrics}"
        );
        srv.stop().await
    }
}

mod lifecycle {
    use super::*;

    async fn restart_keeps_state(store_url: Option<&str>) -> TestResult {
        let dir = tempfile::tempdir()?;
        let clock = FakeClock::new();
        let srv = start(dir.path(), clock.clone(), store_url, None).await?;
        srv.admin(
            reqwest::Method::POST,
            "/admin/v1/tenants",
            Some(json!({"name": "keep-me"})),
        )
        .await?;
        let before: Value = srv
            .http
            .get(srv.url("/.well-known/jwks.json"))
            .send()
            .await?
            .json()
            .await?;
        srv.stop().await?;

        let again = start(dir.path(), clock, store_url, None).await?;
        let after: Value = again
            .http
            .get(again.url("/.well-known/jwks.json"))
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(before, after, "same keys after restart");
        let (status, tenant, _) = again
            .admin(reqwest::Method::GET, "/admin/v1/tenants/keep-me", None)
            .await?;
        assert_eq!(
            (status, tenant["id"].clone()),
            (200, json!("keep-me")),
            "tenant kept, admin token still valid"
        );
        again.stop().await
    }

    #[tokio::test]
    async fn restart_keeps_keys_tenants_and_tokens_sqlite() -> TestResult {
        restart_keeps_state(None).await
    }

    #[tokio::test]
    async fn restart_keeps_keys_tenants_and_tokens_postgres() -> TestResult {
        match lanyard_testkit::fresh_postgres("restart_keeps_keys_tenants_and_tokens_postgres")
            .await
        {
            Some(url) => restart_keeps_state(Some(&url)).await,
            None => Ok(()),
        }
    }

    #[tokio::test]
    async fn a_wrong_kek_stops_start_up_and_changes_nothing() -> TestResult {
        let dir = tempfile::tempdir()?;
        let srv = start(dir.path(), FakeClock::new(), None, None).await?;
        let kids: Vec<String> = srv
            .server
            .keys
            .current()
            .ring
            .keys()
            .iter()
            .map(|k| k.kid.clone())
            .collect();
        srv.stop().await?;
        // Compare content, not bytes: SQLite may checkpoint its WAL on open.
        let url = format!("sqlite://{}", dir.path().join("lanyard.db").display());
        let snapshot = || async {
            let store = lanyard_store::open(&url).await?;
            let keys = store.list_signing_keys().await?;
            let audit = store.list_audit(0, 100_000).await?;
            Ok::<_, lanyard_store::StoreError>((keys, audit))
        };
        let db_before = snapshot().await?;
        let good_kek = std::fs::read(dir.path().join("kek"))?;
        std::fs::remove_file(dir.path().join("kek"))?;
        Kek::generate_file(&dir.path().join("kek"))?;
        let listen = "127.0.0.1:0".parse()?;
        let err = Server::build(
            config(dir.path(), None, None, listen),
            Arc::new(FakeClock::new()),
        )
        .await
        .err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("key-encryption key") && msg.contains("nothing was changed"),
            "{msg}"
        );
        assert!(
            snapshot().await? == db_before,
            "keys and audit log untouched"
        );
        // Garbage KEK file and world-readable KEK file: refused, named.
        std::fs::write(dir.path().join("kek"), "not base64!")?;
        let err = Server::build(
            config(dir.path(), None, None, listen),
            Arc::new(FakeClock::new()),
        )
        .await
        .err();
        assert!(err
            .map(|e| e.to_string())
            .unwrap_or_default()
            .contains("not 32 bytes"));
        // The right KEK again: the same keys come back.
        std::fs::write(dir.path().join("kek"), good_kek)?;
        let srv = start(dir.path(), FakeClock::new(), None, None).await?;
        let again: Vec<String> = srv
            .server
            .keys
            .current()
            .ring
            .keys()
            .iter()
            .map(|k| k.kid.clone())
            .collect();
        assert_eq!(kids, again);
        srv.stop().await
    }

    #[tokio::test]
    async fn rotation_publishes_the_next_key_before_it_signs() -> TestResult {
        let dir = tempfile::tempdir()?;
        let clock = FakeClock::new();
        let srv = start(dir.path(), clock.clone(), None, None).await?;
        let jwks_kids = |srv: &Running| -> Vec<String> {
            srv.server
                .keys
                .current()
                .ring
                .jwks()
                .keys
                .iter()
                .filter_map(|k| k.kid.clone())
                .collect()
        };
        let first = srv
            .server
            .keys
            .current()
            .ring
            .signer(Algorithm::Es256)
            .map(|k| k.kid().to_owned())
            .ok_or("signer")?;
        let old_token = lanyard_jose::encode_jwt(
            srv.server
                .keys
                .current()
                .ring
                .signer(Algorithm::Es256)
                .ok_or("signer")?,
            &jwt_claims(&srv.base, "x", &clock),
        )?;
        let next_kid = |srv: &Running| {
            srv.server
                .keys
                .current()
                .ring
                .keys()
                .iter()
                .find(|k| k.alg == Algorithm::Es256 && k.state == lanyard_core::KeyState::Next)
                .map(|k| k.kid.clone())
        };
        let mut seen_published: Vec<String> = Vec::new();
        let mut signers = vec![first.clone()];
        // Walk a fake clock through 10 hours in 10-minute steps: every key
        // that ever signs was in the JWKS served over HTTP for an hour before.
        for _ in 0..60 {
            let served: Value = srv
                .http
                .get(srv.url("/.well-known/jwks.json"))
                .send()
                .await?
                .json()
                .await?;
            let served_kids: Vec<String> = served["keys"]
                .as_array()
                .ok_or("keys")?
                .iter()
                .filter_map(|k| k["kid"].as_str().map(str::to_owned))
                .collect();
            if let Some(n) = next_kid(&srv) {
                assert!(served_kids.contains(&n));
                if !seen_published.contains(&n) {
                    seen_published.push(n);
                }
            }
            clock.advance(Duration::from_secs(600));
            srv.server.keys.tick().await?;
            let signer = srv
                .server
                .keys
                .current()
                .ring
                .signer(Algorithm::Es256)
                .map(|k| k.kid().to_owned())
                .ok_or("signer")?;
            if signers.last() != Some(&signer) {
                assert!(
                    seen_published.contains(&signer),
                    "{signer} signed before it was published"
                );
                signers.push(signer);
            }
        }
        assert_eq!(signers.len(), 6, "2-hour period over 10 hours: {signers:?}");
        // A token signed by the first key verifies while that key is retained,
        // then the key is gone from the JWKS.
        assert!(!jwks_kids(&srv).contains(&first));
        let published = srv.server.keys.current();
        assert!(lanyard_jose::verify_compact(
            &old_token,
            published.ring.verifiers(),
            &[Algorithm::Es256]
        )
        .is_err());
        srv.stop().await
    }

    #[tokio::test]
    async fn a_compromised_key_leaves_the_jwks_at_once() -> TestResult {
        let dir = tempfile::tempdir()?;
        let clock = FakeClock::new();
        let srv = start(dir.path(), clock.clone(), None, None).await?;
        let before = srv.server.keys.current();
        let old = before
            .ring
            .signer(Algorithm::Es256)
            .ok_or("signer")?
            .clone();
        let next = before
            .ring
            .keys()
            .iter()
            .find(|k| k.alg == Algorithm::Es256 && k.state == lanyard_core::KeyState::Next)
            .map(|k| k.kid.clone())
            .ok_or("next")?;
        let leaked = lanyard_jose::encode_jwt(&old, &jwt_claims(&srv.base, "x", &clock))?;
        let (status, r, _) = srv
            .admin(
                reqwest::Method::POST,
                "/admin/v1/keys/rotate",
                Some(json!({"alg": "ES256", "compromised": true})),
            )
            .await?;
        assert_eq!(status, 200, "{r}");
        assert_eq!(
            (r["kid"].as_str(), r["immediate"].as_bool()),
            (Some(next.as_str()), Some(true))
        );
        let served: Value = srv
            .http
            .get(srv.url("/.well-known/jwks.json"))
            .send()
            .await?
            .json()
            .await?;
        let kids: Vec<&str> = served["keys"]
            .as_array()
            .ok_or("keys")?
            .iter()
            .filter_map(|k| k["kid"].as_str())
            .collect();
        assert!(
            !kids.contains(&old.kid()),
            "the compromised key is no longer published"
        );
        assert_eq!(
            kids.len(),
            4,
            "new active and a fresh next for ES256, RS256 untouched"
        );
        let now = srv.server.keys.current();
        assert!(
            lanyard_jose::verify_compact(&leaked, now.ring.verifiers(), &[Algorithm::Es256])
                .is_err()
        );
        let (_, audit, _) = srv
            .admin(reqwest::Method::GET, "/admin/v1/audit?limit=1000", None)
            .await?;
        let deleted = audit["events"].as_array().ok_or("events")?.iter().any(|e| {
            e["action"] == "key.delete"
                && e["subject"] == old.kid()
                && e["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("compromised"))
        });
        assert!(deleted, "the deletion is audited as a compromise");
        srv.stop().await
    }

    #[tokio::test]
    async fn operator_rotation_waits_for_the_publish_lead() -> TestResult {
        let dir = tempfile::tempdir()?;
        let clock = FakeClock::new();
        let srv = start(dir.path(), clock.clone(), None, None).await?;
        let (status, r, _) = srv
            .admin(
                reqwest::Method::POST,
                "/admin/v1/keys/rotate",
                Some(json!({"alg": "ES256"})),
            )
            .await?;
        assert_eq!(status, 200);
        assert_eq!(r["immediate"], false, "next key was published just now");
        assert_eq!(
            r["activates_at"].as_i64(),
            Some(clock.unix_seconds() + 3600)
        );
        clock.advance(Duration::from_secs(3600));
        srv.server.keys.tick().await?;
        let signer = srv
            .server
            .keys
            .current()
            .ring
            .signer(Algorithm::Es256)
            .map(|k| k.kid().to_owned());
        assert_eq!(signer.as_deref(), r["kid"].as_str());
        clock.advance(Duration::from_secs(3600));
        let (_, r2, _) = srv
            .admin(
                reqwest::Method::POST,
                "/admin/v1/keys/rotate",
                Some(json!({})),
            )
            .await?;
        assert_eq!(
            r2["immediate"], true,
            "the new next key has been published for the lead"
        );
        let (status, bad, _) = srv
            .admin(
                reqwest::Method::POST,
                "/admin/v1/keys/rotate",
                Some(json!({"alg": "HS256"})),
            )
            .await?;
        assert_eq!(status, 400, "{bad}");
        let (_, audit, _) = srv
            .admin(reqwest::Method::GET, "/admin/v1/audit?limit=1000", None)
            .await?;
        let rotations = audit["events"]
            .as_array()
            .ok_or("events")?
            .iter()
            .filter(|e| e["action"] == "key.rotate")
            .count();
        assert_eq!(rotations, 2);
        srv.stop().await
    }
}

mod tls {
    use super::*;

    #[tokio::test]
    async fn serves_https_with_the_configured_certificate() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (cert, key) = lanyard_testkit::self_signed_tls();
        let cert_path: PathBuf = dir.path().join("tls.crt");
        std::fs::write(&cert_path, cert)?;
        std::fs::write(dir.path().join("tls.key"), key)?;
        let tls = TlsFiles {
            cert: cert_path,
            key: dir.path().join("tls.key"),
        };
        let srv = start(dir.path(), FakeClock::new(), None, Some(tls)).await?;
        assert!(srv.base.starts_with("https://"));
        let body: Value = srv
            .http
            .get(srv.url("/.well-known/openid-configuration"))
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(body["issuer"], json!(srv.base));
        // Plain HTTP to the TLS port gets no answer.
        let plain = reqwest::Client::new()
            .get(srv.base.replace("https://", "http://") + "/healthz")
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
        srv.stop().await
    }

    #[tokio::test]
    async fn missing_tls_files_are_named() -> TestResult {
        let dir = tempfile::tempdir()?;
        ensure_kek(dir.path())?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let tls = TlsFiles {
            cert: dir.path().join("nope.crt"),
            key: dir.path().join("nope.key"),
        };
        let cfg = config(dir.path(), None, Some(tls), listener.local_addr()?);
        let server = Server::build(cfg, Arc::new(FakeClock::new())).await?;
        let err = server.serve(listener, std::future::pending()).await.err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("nope.crt"), "{msg}");
        Ok(())
    }
}

/// issue 9: slow-header, slow-body and idle connections stayed open
/// indefinitely, and a few hundred idle connections made `/healthz` time
/// out under a low descriptor limit.
mod limits {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    use super::*;

    async fn start_limited(
        dir: &Path,
        max_connections: usize,
    ) -> Result<(std::net::SocketAddr, tokio::sync::oneshot::Sender<()>), Box<dyn std::error::Error>>
    {
        ensure_kek(dir)?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let mut cfg = config(dir, None, None, addr);
        cfg.listen_limits = lanyard_server::net::ListenLimits {
            max_connections,
            handshake_timeout: Duration::from_secs(1),
            header_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
        };
        let clock: Arc<dyn Clock> = Arc::new(lanyard_core::SystemClock);
        let server = Server::build(cfg, clock).await?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.serve(listener, async move {
            let _ = rx.await;
        }));
        Ok((addr, tx))
    }

    /// Reads until the server closes the connection (or `limit` passes,
    /// which fails the test): returns what it sent.
    async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(out),
                Ok(Ok(n)) => out.extend_from_slice(buf.get(..n).unwrap_or_default()),
                Err(_) => return Err(format!("still open after {limit:?}")),
            }
        }
    }

    #[tokio::test]
    async fn slow_and_idle_clients_are_cut_off() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (addr, _stop) = start_limited(dir.path(), 64).await?;
        // Idle: connected, never a byte.
        let mut idle = TcpStream::connect(addr).await?;
        read_until_closed(&mut idle, Duration::from_secs(20)).await?;
        // Slow headers: a request line and half a header block.
        let mut slow = TcpStream::connect(addr).await?;
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await?;
        let got = read_until_closed(&mut slow, Duration::from_secs(20)).await?;
        assert!(!String::from_utf8_lossy(&got).contains("200 OK"));
        // Keep-alive idle after a request: cut too.
        let mut kept = TcpStream::connect(addr).await?;
        kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await?;
        let got = read_until_closed(&mut kept, Duration::from_secs(20)).await?;
        assert!(
            String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
            "served first"
        );
        // Slow body: headers promise 200 bytes, 10 arrive.
        let mut body = TcpStream::connect(addr).await?;
        body.write_all(
            b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 200\r\n\r\ngrant_type",
        )
        .await?;
        let got =
            String::from_utf8_lossy(&read_until_closed(&mut body, Duration::from_secs(20)).await?)
                .into_owned();
        assert!(got.starts_with("HTTP/1.1 400"), "{got}");
        assert!(got.contains("sent too slowly"), "{got}");
        Ok(())
    }

    #[tokio::test]
    async fn idle_connections_beyond_the_limit_never_starve_healthz() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (addr, _stop) = start_limited(dir.path(), 8).await?;
        // Far more idle connections than the limit: the server takes 8, the
        // rest wait in the backlog, and each is cut after the idle timeout.
        let mut idle = Vec::new();
        for _ in 0..60 {
            idle.push(TcpStream::connect(addr).await?);
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let status = http
            .get(format!("http://{addr}/healthz"))
            .send()
            .await?
            .status();
        assert_eq!(status, 200);
        drop(idle);
        Ok(())
    }

    // issue 9: the oversized-body error said the token was too large.
    #[tokio::test]
    async fn an_oversized_request_is_called_that() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (addr, _stop) = start_limited(dir.path(), 64).await?;
        let body = format!("grant_type=x&subject_token={}", "a".repeat(8000));
        let resp = reqwest::Client::new()
            .post(format!("http://{addr}/oauth2/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await?;
        assert_eq!(resp.status(), 400);
        let v: Value = resp.json().await?;
        let d = v["error_description"].as_str().unwrap_or("");
        assert!(
            d.contains("request is larger than the server accepts"),
            "{d}"
        );
        assert!(!d.contains("token"), "{d}");
        Ok(())
    }
}
