//! The HTTPS server of `lanyard webhook`.
//!
//! | path | what |
//! |---|---|
//! | `POST /mutate-v1-pod` | the pod webhook (MutatingWebhookConfiguration) |
//! | `POST /validate-spinapp` | the SpinApp webhook (ValidatingWebhookConfiguration) |
//! | `GET /healthz` | liveness: the process serves |
//! | `GET /readyz` | readiness: the certificate is loaded and the server serves |
//! | `GET /metrics` | Prometheus text |
//!
//! Bodies over `max_request_bytes` get 413 before they are read whole;
//! headers must arrive within 10 s and the TLS handshake within 10 s, so a
//! slow client holds one connection, not the server.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::accounts::{KubeServiceAccounts, ServiceAccounts};
use crate::admission::{BadReview, Reviewed, Webhook};
use crate::config::{KubeSettings, WebhookConfig};
use crate::metrics::Metrics;
use crate::mutate::Mutator;
use crate::tls::ReloadingCert;
use crate::Error;

/// Longest time to wait for a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open requests may finish after shutdown is asked for.
const DRAIN: Duration = Duration::from_secs(10);

/// The webhook's routes; `max_request_bytes` bounds every body.
pub fn router(webhook: Arc<Webhook>, max_request_bytes: usize) -> Router {
    Router::new()
        .route("/mutate-v1-pod", post(mutate_pod))
        .route("/validate-spinapp", post(validate_spinapp))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .with_state(webhook)
}

async fn mutate_pod(State(w): State<Arc<Webhook>>, body: Bytes) -> Response {
    answer(w.review_pod(&body).await)
}

async fn validate_spinapp(State(w): State<Arc<Webhook>>, body: Bytes) -> Response {
    answer(w.review_spinapp(&body).await)
}

fn answer(result: Result<Reviewed, BadReview>) -> Response {
    match result {
        Ok(r) => Json(r.to_review()).into_response(),
        Err(e) => {
            tracing::info!(error = %e, "malformed AdmissionReview refused");
            (StatusCode::BAD_REQUEST, e.to_string()).into_response()
        }
    }
}

async fn metrics(State(w): State<Arc<Webhook>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        w.metrics().encode(),
    )
        .into_response()
}

/// A Kubernetes client from an explicit kubeconfig, or in-cluster config,
/// or `KUBECONFIG`/`~/.kube/config`, with the configured timeouts.
///
/// # Errors
/// [`Error::KubeConfig`] saying which source failed and how to fix it.
pub async fn kube_client(settings: &KubeSettings) -> Result<kube::Client, Error> {
    let mut config = match &settings.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| Error::KubeConfig {
                message: format!("webhook.kubeconfig {}: {e}", path.display()),
            })?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| Error::KubeConfig {
                    message: format!("webhook.kubeconfig {}: {e}", path.display()),
                })?
        }
        None => kube::Config::infer().await.map_err(|e| Error::KubeConfig {
            message: format!("no in-cluster service account and no usable KUBECONFIG or ~/.kube/config ({e}); run the webhook in its pod, or set webhook.kubeconfig"),
        })?,
    };
    config.connect_timeout = Some(settings.timeout);
    config.read_timeout = Some(settings.timeout);
    config.write_timeout = Some(settings.timeout);
    kube::Client::try_from(config).map_err(|e| Error::KubeConfig {
        message: format!("building the client: {e}"),
    })
}

/// Whether Azure's proxy sidecar goes in initContainers (`restartPolicy:
/// Always`): the configured value, else API server ≥ 1.32 as upstream asks
/// at start. An unreadable version means classic placement (works on every
/// version), with a warning.
pub async fn native_sidecar(client: &kube::Client, configured: Option<bool>) -> bool {
    if let Some(v) = configured {
        return v;
    }
    match client.apiserver_version().await {
        Ok(info) => {
            let major: u32 = info.major.trim_end_matches('+').parse().unwrap_or(0);
            let minor: u32 = info.minor.trim_end_matches('+').parse().unwrap_or(0);
            (major, minor) >= (1, 32)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the API server version; Azure proxy sidecars go in containers (set webhook.azure.native_sidecar to choose)");
            false
        }
    }
}

/// A webhook ready to serve: build it with [`Running::start`].
#[derive(Debug)]
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    handle: axum_server::Handle,
    task: tokio::task::JoinHandle<Result<(), Error>>,
    watch: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Builds the Kubernetes client and the webhook from `config` and serves
    /// on `listener` until [`Running::stop`].
    ///
    /// # Errors
    /// TLS files that do not load, a Kubernetes client that cannot be built.
    pub async fn start(config: WebhookConfig, listener: TcpListener) -> Result<Self, Error> {
        let metrics = Arc::new(Metrics::new());
        let cert = Arc::new(ReloadingCert::load(&config.tls_cert, &config.tls_key)?);
        let client = kube_client(&config.kube).await?;
        let native = match &config.mutation.azure {
            Some(a) => native_sidecar(&client, a.native_sidecar).await,
            None => false,
        };
        let accounts = ServiceAccounts::Kube(KubeServiceAccounts::new(
            client,
            &config.kube,
            metrics.clone(),
        ));
        let webhook = Arc::new(Webhook::new(
            Mutator::new(config.mutation.clone(), native),
            accounts,
            config.kube.on_error,
            metrics.clone(),
        ));
        let addr = listener.local_addr().map_err(|source| Error::Io {
            context: "reading the listen address".into(),
            source,
        })?;
        listener.set_nonblocking(true).map_err(|source| Error::Io {
            context: "preparing the listener".into(),
            source,
        })?;
        let rustls =
            axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(cert.server_config()));
        let handle = axum_server::Handle::new();
        let mut server = axum_server::from_tcp_rustls(listener, rustls).handle(handle.clone());
        server
            .http_builder()
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT);
        let app = router(webhook, config.max_request_bytes);
        tracing::info!(%addr, azure = config.mutation.azure.is_some(), aws = config.mutation.aws.is_some(), lanyard = config.mutation.lanyard.is_some(), native_sidecar = native, "webhook listening");
        let task = tokio::spawn(async move {
            server
                .serve(app.into_make_service())
                .await
                .map_err(|source| Error::Io {
                    context: "serving HTTPS".into(),
                    source,
                })
        });
        let watch = tokio::spawn(cert.watch(config.tls_reload_interval, metrics));
        Ok(Self {
            addr,
            handle,
            task,
            watch,
        })
    }

    /// Stops accepting, lets open requests finish (up to 10 s) and waits.
    ///
    /// # Errors
    /// What the server failed with, if it did.
    pub async fn stop(self) -> Result<(), Error> {
        self.handle.graceful_shutdown(Some(DRAIN));
        self.watch.abort();
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(Error::Io {
                context: "the server task".into(),
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }

    /// Serves until `shutdown` resolves, then stops.
    ///
    /// # Errors
    /// What the server failed with.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        tokio::select! {
            () = shutdown => {
                tracing::info!("webhook stopping");
                self.stop().await
            }
            ended = &mut self.task => {
                self.watch.abort();
                match ended {
                    Ok(r) => r,
                    Err(e) => Err(Error::Io {
                        context: "the server task".into(),
                        source: std::io::Error::other(e.to_string()),
                    }),
                }
            }
        }
    }
}
