//! Our SPIFFE bundle endpoint (SPIFFE Federation §4), on its own listener
//! (`[federation.bundle_endpoint]`): `GET /` answers the trust domain's
//! bundle as `application/json` (X.509 authorities with one `x5c` each and
//! no `kid`, JWT authorities with `kid`, `spiffe_sequence`,
//! `spiffe_refresh_hint`); other methods get 405 and other paths 404. It
//! never asks for client authentication.
//!
//! - `https_spiffe` (the default): TLS with the server's own X.509-SVID,
//!   `spiffe://TD/lanyard/server`, signed through the one issuance path and
//!   renewed at half-life or when the CA changes (so peers that verify it
//!   against our latest bundle follow a CA rotation).
//! - `https_web`: TLS with a configured certificate (a public CA's).

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::{BundleEndpointConfig, BundleEndpointProfile};
use crate::state::AppState;
use crate::ServerError;

/// The trust domain's bundle in SPIFFE format, with `refresh_hint`.
pub fn bundle_document(state: &AppState, refresh_hint: i64) -> serde_json::Value {
    let published = state.keys.current();
    let ca = state.ca.current();
    let mut keys = ca.bundle_keys.clone();
    keys.extend(published.bundle_keys.iter().cloned());
    serde_json::json!({
        "keys": keys,
        "spiffe_sequence": published.generation + ca.generation.max(0),
        "spiffe_refresh_hint": refresh_hint,
    })
}

async fn serve_bundle(State((state, hint)): State<(AppState, i64)>) -> Response {
    let body = serde_json::to_vec(&bundle_document(&state, hint)).unwrap_or_default();
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The endpoint's routes.
pub fn router(state: AppState, cfg: &BundleEndpointConfig) -> Router {
    let hint = i64::try_from(cfg.refresh_hint.as_secs()).unwrap_or(300);
    Router::new()
        .route("/", get(serve_bundle))
        .with_state((state, hint))
}

/// Serves the bundle endpoint on `listener` until `shutdown`.
///
/// # Errors
/// [`ServerError`] when the TLS configuration cannot be built.
pub async fn serve(
    state: AppState,
    cfg: BundleEndpointConfig,
    listener: tokio::net::TcpListener,
    limits: crate::net::ListenLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let tls = match &cfg.profile {
        BundleEndpointProfile::HttpsWeb { cert, key } => crate::serve::load_tls(cert, key)?,
        BundleEndpointProfile::HttpsSpiffe => {
            let resolver = SvidResolver::new(state.clone())?;
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let mut config = rustls::ServerConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|e| ServerError::Federation(e.to_string()))?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(resolver));
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            Arc::new(config)
        }
    };
    let addr = listener.local_addr().ok();
    tracing::info!(
        ?addr,
        profile = cfg.profile.name(),
        "bundle endpoint listening"
    );
    let app = router(state, &cfg);
    crate::net::serve_http(
        listener,
        Some(tls),
        app,
        limits,
        shutdown,
        std::time::Duration::from_secs(5),
    )
    .await;
    Ok(())
}

/// Presents the server's current SVID, renewing it when due.
#[derive(Debug)]
struct SvidResolver {
    state: AppState,
    current: ArcSwap<Current>,
    renewing: Mutex<()>,
}

#[derive(Debug)]
struct Current {
    key: Arc<CertifiedKey>,
    renew_at: SystemTime,
    ca_generation: i64,
}

impl SvidResolver {
    fn new(state: AppState) -> Result<Self, ServerError> {
        let first = issue(&state).map_err(ServerError::Federation)?;
        Ok(Self {
            state,
            current: ArcSwap::from_pointee(first),
            renewing: Mutex::new(()),
        })
    }
}

impl ResolvesServerCert for SvidResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let cur = self.current.load_full();
        let stale = self.state.clock.now() >= cur.renew_at
            || self.state.ca.current().generation != cur.ca_generation;
        if stale {
            // One renewal at a time; the others present the current SVID.
            if let Ok(_guard) = self.renewing.try_lock() {
                match issue(&self.state) {
                    Ok(next) => {
                        let key = next.key.clone();
                        self.current.store(Arc::new(next));
                        return Some(key);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "renewing the bundle endpoint's SVID failed; presenting the current one")
                    }
                }
            }
        }
        Some(cur.key.clone())
    }
}

fn issue(state: &AppState) -> Result<Current, String> {
    let svid = state.issuer.server_svid(Vec::new())?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let certified =
        CertifiedKey::from_der(svid.chain, svid.key, &provider).map_err(|e| e.to_string())?;
    Ok(Current {
        key: Arc::new(certified),
        renew_at: svid.renew_at,
        ca_generation: svid.ca_generation,
    })
}
