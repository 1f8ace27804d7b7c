//! Building and running the server: store, keys, router, listener, jobs.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use lanyard_ca::Kek;
use lanyard_core::Clock;

use crate::audit_writer::AuditWriter;
use crate::checkpoint::Checkpointer;
use crate::config::{KekSource, ServerConfig};
use crate::exchange::ExchangeService;
use crate::http::router;
use crate::issuer::Issuer;
use crate::keys::KeyManager;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::state::{AppState, Settings};
use crate::ServerError;

/// How often each replica runs the rotation tick and reloads keys.
const KEY_TICK: Duration = Duration::from_secs(30);
/// Longest one background step (a refresh, a reaper or rotation tick) may
/// take before it is abandoned and retried.
const JOB_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests get after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(10);

/// Whether building the server may create a new store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreInit {
    /// Create the store, keys and CA when missing (`lanyard server init`,
    /// `lanyard dev`, tests).
    Create,
    /// Only open an initialised store (`lanyard server`): a missing or
    /// 0-byte database is an error, never a fresh start with new keys.
    Existing,
}

/// A built server, ready to serve.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    state: AppState,
    /// The federation bundle endpoint's listener, bound at build time.
    bundle_listener: Option<std::net::TcpListener>,
}

impl Server {
    /// Loads the KEK, opens and migrates the store (creating it if
    /// missing), opens the signing keys (creating the first ones on a fresh
    /// store).
    ///
    /// # Errors
    /// As [`Server::build_with`].
    pub async fn build(config: ServerConfig, clock: Arc<dyn Clock>) -> Result<Self, ServerError> {
        Self::build_with(config, clock, StoreInit::Create).await
    }

    /// Like [`Server::build`]; with [`StoreInit::Existing`] the store must
    /// already be initialised.
    ///
    /// # Errors
    /// [`ServerError`] naming the file, store or key at fault; also when the
    /// audit log's append-only triggers are missing. Nothing stored is
    /// rewritten when start-up fails.
    pub async fn build_with(
        config: ServerConfig,
        clock: Arc<dyn Clock>,
        init: StoreInit,
    ) -> Result<Self, ServerError> {
        let load_kek = || -> Result<Kek, ServerError> {
            Ok(match &config.kek {
                KekSource::File(path) => Kek::from_file(path)?,
                KekSource::Env(text) => Kek::from_base64(text, lanyard_ca::KEK_ENV)?,
            })
        };
        let kek = load_kek()?;
        let mode = match init {
            StoreInit::Create => lanyard_store::OpenMode::Create,
            StoreInit::Existing => lanyard_store::OpenMode::Existing,
        };
        let store = lanyard_store::open_with(&config.store_url, mode).await?;
        if !store.audit_is_append_only().await? {
            return Err(ServerError::AuditNotAppendOnly);
        }
        if init == StoreInit::Existing && store.list_signing_keys().await?.is_empty() {
            return Err(ServerError::StoredKey(
                "the store has no signing keys, so it was never initialised (or they were deleted); restore it from a backup, or create a new store with `lanyard server init`".into(),
            ));
        }
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
        let settings = Arc::new(Settings {
            issuer: config.issuer.clone(),
            trust_domain: config.trust_domain.clone(),
            max_request_bytes: config.max_request_bytes,
            jwks_max_age,
            limits: lanyard_core::policy::Limits {
                own_audience: config.issuer.clone(),
                jwt_default_ttl: config.jwt_default_ttl,
                jwt_max_ttl: config.jwt_max_ttl,
                max_delegation_depth: config.max_delegation_depth,
                x509_ttl: config.ca.svid_ttl,
                x509_max_ttl: config.ca.svid_max_ttl,
            },
            algorithm_names: config.algorithms.iter().map(|a| a.as_str()).collect(),
            default_parent: config
                .node_api
                .as_ref()
                .and_then(|n| n.default_parent.clone()),
            join_token_max_ttl: config
                .node_api
                .as_ref()
                .map_or(crate::config::DEFAULT_JOIN_TOKEN_MAX_TTL, |n| {
                    n.join_token_max_ttl
                }),
        });
        let http = lanyard_attest::Attestor::http_client().map_err(|e| ServerError::Io {
            what: "building the HTTP client".into(),
            source: std::io::Error::other(e),
        })?;
        let registry = Arc::new(
            Registry::load(
                store.clone(),
                clock.clone(),
                http,
                config.verified_token_cache,
            )
            .await?,
        );
        let keys = Arc::new(keys);
        let ca = Arc::new(ca);
        let broker = crate::broker::BrokerService::load(
            store.clone(),
            keys.clone(),
            clock.clone(),
            format!("{}/broker", config.issuer),
        )
        .await?;
        let audit = AuditWriter::spawn(store.clone());
        let issuer = Arc::new(Issuer::new(
            keys.clone(),
            ca.clone(),
            audit.clone(),
            clock.clone(),
            settings.clone(),
        ));
        let exchange = Arc::new(ExchangeService::new(
            registry.clone(),
            keys.clone(),
            issuer.clone(),
            clock.clone(),
            settings.clone(),
        ));
        let checkpoints = Arc::new(
            Checkpointer::start(
                store.clone(),
                &load_kek()?,
                clock.clone(),
                config.issuer.clone(),
                config.audit.sink.clone(),
                config.audit.checkpoint_interval,
            )
            .await?,
        );
        let web_roots = match &config.federation.web_roots {
            None => Vec::new(),
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| ServerError::Io {
                    what: format!("reading federation.web_roots {}", path.display()),
                    source,
                })?;
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    ServerError::Federation(format!("federation.web_roots {}: {e}", path.display()))
                })?
            }
        };
        let federation = Arc::new(crate::state::FederationSettings {
            refresh_floor: config.federation.refresh_floor,
            web_roots,
        });
        let bundle_listener = match &config.federation.bundle_endpoint {
            None => None,
            Some(be) => Some(std::net::TcpListener::bind(be.listen).map_err(|source| {
                ServerError::Io {
                    what: format!(
                        "binding the federation bundle endpoint on {} (in use? set federation.bundle_endpoint.listen)",
                        be.listen
                    ),
                    source,
                }
            })?),
        };
        let state = AppState::new(crate::state::Shared {
            federation,
            audit,
            store,
            keys,
            broker: Arc::new(broker),
            ca,
            metrics: Arc::new(Metrics::default()),
            clock,
            settings,
            registry,
            issuer,
            exchange,
            checkpoints,
        });
        Ok(Self {
            config,
            state,
            bundle_listener,
        })
    }

    /// The bundle endpoint's address, when one is configured.
    pub fn bundle_endpoint_addr(&self) -> Option<std::net::SocketAddr> {
        self.bundle_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The shared state (for tests and embedding).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The HTTP router.
    pub fn router(&self) -> Router {
        router(self.state.clone(), &self.config.listen_limits)
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
                    if let Err(e) = crate::node::serve(state, cfg, l, stop).await {
                        tracing::error!(error = %e, "node API stopped");
                    }
                }))
            }
            _ => None,
        };
        let shutdown = stopped(stop_rx.clone());
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
        let store = self.state.store.clone();
        let poll = tokio::spawn(async move {
            // Other replicas' commits wake us (PostgreSQL NOTIFY); the poll
            // is the backstop for a lost wake-up or a lost listener.
            let mut wake = match store.watch_changes().await {
                Ok(rx) => rx,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for other replicas' changes; polling only");
                    None
                }
            };
            let mut every = tokio::time::interval(crate::registry::POLL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let woken = async {
                    match wake.as_mut() {
                        Some(rx) => rx.recv().await.is_some(),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = every.tick() => {}
                    alive = woken => {
                        if !alive {
                            wake = None;
                        }
                    }
                }
                // A hung store connection must not stop the refreshes.
                match tokio::time::timeout(JOB_TIMEOUT, registry.refresh()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "registry refresh failed; serving the previous view")
                    }
                    Err(_) => tracing::warn!("registry refresh timed out (the store is not answering); serving the previous view"),
                }
            }
        });
        let reaper_state = self.state.clone();
        let reaper = tokio::spawn(async move {
            let broker = reaper_state.broker.clone();
            loop {
                broker.sleep(crate::broker::REAP_EVERY).await;
                if let Err(e) = broker.refresh().await {
                    tracing::warn!(error = %e, "broker refresh failed; using the previous view");
                }
                match tokio::time::timeout(JOB_TIMEOUT, broker.tick(&reaper_state.registry)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "broker reaper tick failed; retrying"),
                    Err(_) => tracing::warn!(
                        "broker reaper tick timed out (the store is not answering); retrying"
                    ),
                }
            }
        });
        let keys = self.state.keys.clone();
        let ca = self.state.ca.clone();
        // Rotation is planned under the store's key lock anyway (replicas
        // never plan concurrently); the lease keeps it on one replica.
        let rotation = crate::jobs::JobLease::new(
            "key_rotation",
            &crate::correlation::new_id(),
            i64::try_from(KEY_TICK.as_secs() * 3).unwrap_or(90),
            self.state.store.clone(),
            self.state.clock.clone(),
        );
        let job = tokio::spawn(async move {
            let mut every = tokio::time::interval(KEY_TICK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            loop {
                every.tick().await;
                if let Err(e) = rotation.claim().await {
                    tracing::warn!(error = %e, job = rotation.name(), "cannot renew the job's lease; not rotating until the store answers");
                }
                if let Err(e) = keys.tick_as(Some(&rotation)).await {
                    tracing::error!(error = %e, "key rotation tick failed; keeping the current keys");
                }
                if let Err(e) = ca.tick_as(Some(&rotation)).await {
                    tracing::error!(error = %e, "X.509 CA rotation tick failed; keeping the current CA");
                }
            }
        });
        let checkpoints = tokio::spawn(self.state.checkpoints.clone().run());
        let federation = tokio::spawn(crate::federation::refresh::run(self.state.clone()));
        let bundle_task = match (
            self.bundle_listener,
            self.config.federation.bundle_endpoint.clone(),
        ) {
            (Some(l), Some(cfg)) => {
                l.set_nonblocking(true)
                    .map_err(io("configuring the bundle endpoint listener"))?;
                let l = tokio::net::TcpListener::from_std(l)
                    .map_err(io("adopting the bundle endpoint listener"))?;
                let state = self.state.clone();
                let limits = self.config.listen_limits;
                let stop = stopped(stop_rx.clone());
                Some(tokio::spawn(async move {
                    if let Err(e) =
                        crate::federation::endpoint::serve(state, cfg, l, limits, stop).await
                    {
                        tracing::error!(error = %e, "federation bundle endpoint stopped");
                    }
                }))
            }
            _ => None,
        };
        let app = router(self.state.clone(), &self.config.listen_limits);
        let tls = match &self.config.tls {
            Some(tls) => Some(load_tls(&tls.cert, &tls.key)?),
            None => {
                tracing::warn!(%addr, "serving plain HTTP (insecure_plain_http); use TLS anywhere but a developer machine");
                None
            }
        };
        tracing::info!(%addr, issuer = %self.config.issuer, tls = tls.is_some(), "listening");
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(io("adopting the listener"))?;
        crate::net::serve_http(
            listener,
            tls,
            app,
            self.config.listen_limits,
            shutdown,
            DRAIN,
        )
        .await;
        let result: Result<(), ServerError> = Ok(());
        checkpoints.abort();
        federation.abort();
        if let Some(t) = bundle_task {
            t.abort();
        }
        job.abort();
        poll.abort();
        reaper.abort();
        if let Some(t) = node_task {
            t.abort();
        }
        tracing::info!("server stopped");
        result
    }
}

/// Loads a PEM certificate chain and key into a TLS 1.2/1.3 server config.
pub(crate) fn load_tls(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls_error = |source: std::io::Error| ServerError::Tls {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        source,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_error(std::io::Error::other(e.to_string())))?;
    if chain.is_empty() {
        return Err(tls_error(std::io::Error::other(
            "no certificate in the file",
        )));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| tls_error(std::io::Error::other(e.to_string())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(std::io::Error::other(e.to_string())))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| tls_error(std::io::Error::other(e.to_string())))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
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
