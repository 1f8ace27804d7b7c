//! Shared helpers: AdmissionReviews, patches, certificates, a stub
//! Kubernetes API server, and a running webhook.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The in-process webhook `lanyard webhook render` builds: `toml`'s
/// conventions, these service accounts, no I/O. The proxy sidecar is native
/// unless the config says otherwise.
pub fn in_process(
    toml: &str,
    accounts: &[Value],
) -> Result<lanyard_k8s::Webhook, Box<dyn std::error::Error>> {
    let mutation = lanyard_k8s::config::RawFile::parse(toml, "test")?.mutation()?;
    let native = mutation
        .azure
        .as_ref()
        .and_then(|a| a.native_sidecar)
        .unwrap_or(true);
    let accounts = accounts
        .iter()
        .map(|a| serde_json::from_value(a.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(lanyard_k8s::Webhook::new(
        lanyard_k8s::mutate::Mutator::new(mutation, native),
        lanyard_k8s::ServiceAccounts::Fixed(accounts),
        lanyard_k8s::config::FailureMode::Deny,
        std::sync::Arc::new(lanyard_k8s::metrics::Metrics::new()),
    ))
}

/// An AdmissionReview for `object` of kind `gvk` in `namespace`.
pub fn review(object: &Value, namespace: &str, gvk: (&str, &str, &str), uid: &str) -> Vec<u8> {
    let (group, version, kind) = gvk;
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "object": object,
        }
    }))
    .unwrap_or_default()
}

/// A pod review.
pub fn pod_review(pod: &Value, namespace: &str) -> Vec<u8> {
    review(
        pod,
        namespace,
        ("", "v1", "Pod"),
        "705ab4f5-6393-11e8-b7cc-42010a800002",
    )
}

/// The response part of an AdmissionReview answer, and its decoded patch.
pub fn response_of(answer: &Value) -> Result<(Value, Vec<Value>), Box<dyn std::error::Error>> {
    let response = answer.get("response").cloned().ok_or("no response")?;
    let patch = match response.get("patch").and_then(Value::as_str) {
        Some(b64) => {
            assert_eq!(response.get("patchType"), Some(&json!("JSONPatch")));
            serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(b64)?)?
        }
        None => Vec::new(),
    };
    Ok((response, patch))
}

/// A self-signed certificate for 127.0.0.1 and localhost: (cert PEM, key PEM).
pub fn self_signed() -> Result<(String, String), Box<dyn std::error::Error>> {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    Ok((ck.cert.pem(), ck.signing_key.serialize_pem()))
}

/// What the stub API server knows, and what it was asked.
#[derive(Debug, Default)]
pub struct StubState {
    pub service_accounts: Mutex<HashMap<(String, String), Value>>,
    pub gets: AtomicUsize,
}

impl StubState {
    pub fn put(&self, sa: &Value) {
        let ns = sa
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        let name = sa
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if let Ok(mut m) = self.service_accounts.lock() {
            m.insert((ns.to_owned(), name.to_owned()), sa.clone());
        }
    }

    pub fn clear(&self) {
        if let Ok(mut m) = self.service_accounts.lock() {
            m.clear();
        }
    }
}

pub const STUB_TOKEN: &str = "stub-bearer-token";

/// A STUB of the Kubernetes API server: no API server can run on this
/// machine, so this small HTTPS server answers the only calls the webhook
/// makes, shaped as kube-apiserver shapes them:
/// `GET /api/v1/namespaces/{ns}/serviceaccounts/{name}` (the object, or a
/// 404 `Status`) and `GET /version`. It checks the bearer token like the
/// real one (401 `Status` otherwise). Everything else is real: the webhook's
/// kube client, its TLS, its HTTP.
pub struct StubApiServer {
    pub addr: SocketAddr,
    pub state: Arc<StubState>,
    pub ca_pem: String,
    handle: axum_server::Handle,
}

impl StubApiServer {
    pub async fn start() -> Result<Self, Box<dyn std::error::Error>> {
        let (cert, key) = self_signed()?;
        let state = Arc::new(StubState::default());
        let app = Router::new()
            .route(
                "/api/v1/namespaces/{ns}/serviceaccounts/{name}",
                get(get_sa),
            )
            .route("/version", get(version))
            .with_state(state.clone());
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
            cert.clone().into_bytes(),
            key.into_bytes(),
        )
        .await?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let handle = axum_server::Handle::new();
        let server = axum_server::from_tcp_rustls(listener, tls).handle(handle.clone());
        tokio::spawn(async move { server.serve(app.into_make_service()).await });
        Ok(Self {
            addr,
            state,
            ca_pem: cert,
            handle,
        })
    }

    /// A kubeconfig for this server in `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stub\n  cluster:\n    server: https://{}\n    certificate-authority-data: {ca}\nusers:\n- name: webhook\n  user:\n    token: {STUB_TOKEN}\ncontexts:\n- name: stub\n  context:\n    cluster: stub\n    user: webhook\ncurrent-context: stub\n",
            self.addr
        );
        let path = dir.join("kubeconfig");
        std::fs::write(&path, text)?;
        Ok(path)
    }

    pub fn stop(&self) {
        self.handle.shutdown();
    }
}

fn status(code: u16, reason: &str, message: String) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code});
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Json(body),
    )
        .into_response()
}

async fn get_sa(
    State(state): State<Arc<StubState>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {STUB_TOKEN}"))
    {
        return status(401, "Unauthorized", "Unauthorized".into());
    }
    state.gets.fetch_add(1, Ordering::SeqCst);
    let found = state
        .service_accounts
        .lock()
        .ok()
        .and_then(|m| m.get(&(ns.clone(), name.clone())).cloned());
    match found {
        Some(sa) => Json(sa).into_response(),
        None => status(
            404,
            "NotFound",
            format!("serviceaccounts \"{name}\" not found"),
        ),
    }
}

async fn version() -> Json<Value> {
    Json(
        json!({"major": "1", "minor": "33", "gitVersion": "v1.33.2", "gitCommit": "stub",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24",
        "compiler": "gc", "platform": "linux/amd64"}),
    )
}

/// Polls `f` every 20 ms until it returns true or `deadline` passes.
pub async fn eventually(deadline: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An HTTPS client that trusts `ca_pem` only.
pub fn client(ca_pem: &str) -> Result<reqwest::Client, Box<dyn std::error::Error>> {
    Ok(reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes())?)
        .timeout(Duration::from_secs(20))
        // A new connection (and handshake) per request: the TLS tests must
        // see the certificate served now, not the one of a pooled connection.
        .pool_max_idle_per_host(0)
        .build()?)
}

/// A real webhook (`lanyard_k8s::server::Running`) on 127.0.0.1 with a fresh
/// certificate, reading service accounts from `stub`.
pub struct RunningWebhook {
    pub running: Option<lanyard_k8s::server::Running>,
    pub url: String,
    pub ca_pem: String,
    pub dir: tempfile::TempDir,
}

impl RunningWebhook {
    pub async fn start(
        stub: &StubApiServer,
        extra_toml: &str,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let (cert, key) = self_signed()?;
        std::fs::write(dir.path().join("tls.crt"), &cert)?;
        std::fs::write(dir.path().join("tls.key"), &key)?;
        let kubeconfig = stub.kubeconfig(dir.path())?;
        let toml = format!(
            "[webhook]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntls_reload_interval = \"100ms\"\nkubeconfig = \"{}\"\napi_timeout = \"2s\"\n{extra_toml}",
            dir.path().join("tls.crt").display(),
            dir.path().join("tls.key").display(),
            kubeconfig.display()
        );
        let config = lanyard_k8s::config::RawFile::parse(&toml, "test")?.validate()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let running = lanyard_k8s::server::Running::start(config, listener).await?;
        let url = format!("https://127.0.0.1:{}", running.addr.port());
        Ok(Self {
            running: Some(running),
            url,
            ca_pem: cert,
            dir,
        })
    }

    pub async fn post(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(u16, String), Box<dyn std::error::Error>> {
        let resp = client(&self.ca_pem)?
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let code = resp.status().as_u16();
        Ok((code, resp.text().await?))
    }

    pub async fn stop(mut self) -> TestResult {
        if let Some(r) = self.running.take() {
            r.stop().await?;
        }
        Ok(())
    }
}
