//! Building and running the server: store, keys, router, listener, jobs.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use lanyard_ca::Kek;
use lanyard_core::Clock;

use crate::app::{router, AppState, Settings};
use crate::audit_writer::AuditWriter;
use crate::config::{KekSource, ServerConfig};
use crate::keys::KeyManager;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::ServerError;

/// How often each replica runs the rotation tick and reloads keys.
const KEY_TICK: Duration = Duration::from_secs(30);
/// How long in-flight requests get after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(10);

/// A built server, ready to serve.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    state: AppState,
}

impl Server {
    /// Loads the KEK, opens and migrates the store, opens the signing keys
    /// (creating the first ones on a fresh store).
    ///
    /// # Errors
    /// [`ServerError`] naming the file, store or key at fault. Nothing stored
    /// is rewritten when start-up fails.
    pub async fn build(config: ServerConfig, clock: Arc<dyn Clock>) -> Result<Self, ServerError> {
        let load_kek = || -> Result<Kek, ServerError> {
            Ok(match &config.kek {
                KekSource::File(path) => Kek::from_file(path)?,
                KekSource::Env(text) => Kek::from_base64(text, lanyard_ca::KEK_ENV)?,
            })
        };
        let kek = load_kek()?;
        let store = lanyard_store::open(&config.store_url).await?;
        let keys = KeyManager::start(
            store.clone(),
            kek,
            config.algorithms.clone(),
            config.rotation,
            clock.clone(),
        )
        .await?;
        let ca = crate::ca::CaManager::start(
            store.clone(),
            load_kek()?,
            config.trust_domain.clone(),
            config.ca.clone(),
            clock.clone(),
        )
        .await?;
        // Caches must expire well before a pre-published key starts signing.
        let jwks_max_age = (config.rotation.publish_lead / 4).min(Duration::from_secs(300));
        let settings = Settings {
            issuer: config.issuer.clone(),
            trust_domain: config.trust_domain.clone(),
            max_request_bytes: config.max_request_bytes,
            jwks_max_age,
            jwt_default_ttl: config.jwt_default_ttl,
            jwt_max_ttl: config.jwt_max_ttl,
            max_delegation_depth: config.max_delegation_depth,
            default_parent: config
                .node_api
                .as_ref()
                .and_then(|n| n.default_parent.clone()),
            join_token_max_ttl: config
                .node_api
                .as_ref()
                .map_or(Duration::from_secs(24 * 3600), |n| n.join_token_max_ttl),
        };
        let http = lanyard_attest::Attestor::http_client().map_err(|e| ServerError::Io {
            what: "building the HTTP client".into(),
            source: std::io::Error::other(e),
        })?;
        let registry = Registry::load(store.clone(), clock.clone(), http).await?;
        let state = AppState {
            audit: AuditWriter::spawn(store.clone()),
            store,
            keys: Arc::new(keys),
            ca: Arc::new(ca),
            metrics: Arc::new(Metrics::default()),
            clock,
            settings: Arc::new(settings),
            registry: Arc::new(registry),
        };
        Ok(Self { config, state })
    }

    /// The shared state (for tests and embedding).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The HTTP router.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` completes, then drains in-flight
    /// requests. Runs the key rotation job meanwhile. TLS when configured,
    /// plain HTTP otherwise (validated to be loopback-only).
    ///
    /// # Errors
    /// [`ServerError::Tls`] or [`ServerError::Io`].
    pub async fn serve(
        self,
        listener: std::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        self.serve_all(listener, None, shutdown).await
    }

    /// Binds the node API listener from the configuration (`None` when the
    /// node API is disabled).
    ///
    /// # Errors
    /// [`ServerError::Io`] when the address cannot be bound.
    pub fn bind_node_api(&self) -> Result<Option<std::net::TcpListener>, ServerError> {
        let Some(cfg) = &self.config.node_api else {
            return Ok(None);
        };
        std::net::TcpListener::bind(cfg.listen)
            .map(Some)
            .map_err(|source| ServerError::Io {
                what: format!(
                    "binding the node API on {} (in use? set node_api.listen)",
                    cfg.listen
                ),
                source,
            })
    }

    /// Like [`Server::serve`], also serving the gRPC node API on
    /// `node_listener` (bound with [`Server::bind_node_api`]).
    ///
    /// # Errors
    /// [`ServerError::Tls`] or [`ServerError::Io`].
    pub async fn serve_all(
        self,
        listener: std::net::TcpListener,
        node_listener: Option<std::net::TcpListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let node_task = match (node_listener, self.config.node_api.clone()) {
            (Some(l), Some(cfg)) => {
                l.set_nonblocking(true).map_err(|source| ServerError::Io {
                    what: "configuring the node API listener".into(),
                    source,
                })?;
                let l = tokio::net::TcpListener::from_std(l).map_err(|source| ServerError::Io {
                    what: "adopting the node API listener".into(),
                    source,
                })?;
                let state = self.state.clone();
                let stop = stopped(stop_rx.clone());
                Some(tokio::spawn(async move {
                    if let Err(e) = crate::node_api::serve(state, cfg, l, stop).await {
                        tracing::error!(error = %e, "node API stopped");
                    }
                }))
            }
            _ => None,
        };
        let shutdown = stopped(stop_rx);
        let io = |what: &str| {
            let what = what.to_owned();
            move |source| ServerError::Io { what, source }
        };
        let addr = listener
            .local_addr()
            .map_err(io("reading the listen address"))?;
        listener
            .set_nonblocking(true)
            .map_err(io("configuring the listener"))?;
        let registry = self.state.registry.clone();
        let poll = tokio::spawn(async move {
            let mut every = tokio::time::interval(crate::registry::POLL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Err(e) = registry.refresh().await {
                    tracing::warn!(error = %e, "registry refresh failed; serving the previous view");
                }
            }
        });
        let keys = self.state.keys.clone();
        let ca = self.state.ca.clone();
        let job = tokio::spawn(async move {
            let mut every = tokio::time::interval(KEY_TICK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            loop {
                every.tick().await;
                if let Err(e) = keys.tick().await {
                    tracing::error!(error = %e, "key rotation tick failed; keeping the current keys");
                }
                if let Err(e) = ca.tick().await {
                    tracing::error!(error = %e, "X.509 CA rotation tick failed; keeping the current CA");
                }
            }
        });
        let app = self.router();
        let result = match &self.config.tls {
            Some(tls) => {
                let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
                let rustls =
                    axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                        .await
                        .map_err(|source| ServerError::Tls {
                            cert: tls.cert.display().to_string(),
                            key: tls.key.display().to_string(),
                            source,
                        })?;
                tracing::info!(%addr, issuer = %self.config.issuer, tls = true, "listening");
                let handle = axum_server::Handle::new();
                let signal_handle = handle.clone();
                tokio::spawn(async move {
                    shutdown.await;
                    signal_handle.graceful_shutdown(Some(DRAIN));
                });
                axum_server::from_tcp_rustls(listener, rustls)
                    .handle(handle)
                    .serve(app.into_make_service())
                    .await
                    .map_err(io("serving HTTPS"))
            }
            None => {
                tracing::warn!(%addr, "serving plain HTTP (insecure_plain_http); use TLS anywhere but a developer machine");
                tracing::info!(%addr, issuer = %self.config.issuer, tls = false, "listening");
                let listener = tokio::net::TcpListener::from_std(listener)
                    .map_err(io("adopting the listener"))?;
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                    .map_err(io("serving HTTP"))
            }
        };
        job.abort();
        poll.abort();
        if let Some(t) = node_task {
            t.abort();
        }
        tracing::info!("server stopped");
        result
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received; draining");
}

/// The process environment as a map, read once at start-up.
pub fn env_map() -> BTreeMap<String, String> {
    std::env::vars().collect()
}
