//! The HTTP surface: the router, one module per surface, the extractors
//! every handler shares ([`extract`]) and the one OAuth error renderer
//! ([`oauth`]). Handlers call services ([`crate::exchange`],
//! [`crate::issuer`], [`crate::broker`]); they never call each other.

pub mod admin;
pub mod broker;
pub mod extract;
pub mod health;
pub mod oauth;
pub mod oidc;
pub mod tokenreview;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use tracing::Instrument as _;

use crate::error::ApiError;
use crate::state::{AppState, CorrelationId};

/// Builds the full HTTP router. `limits` bound how long a request's body
/// may take to arrive and how long its answer may take.
pub fn router(state: AppState, limits: &crate::net::ListenLimits) -> Router {
    let (body_timeout, request_timeout) = (limits.body_timeout, limits.request_timeout);
    let limit = state.settings.max_request_bytes;
    let metrics = state.metrics.clone();
    Router::new()
        .route("/.well-known/openid-configuration", get(oidc::discovery))
        .route(oidc::JWKS_PATH, get(oidc::jwks))
        .route(oidc::AUDIT_KEYS_PATH, get(oidc::audit_keys))
        .route("/bundle", get(oidc::bundle))
        .route(oidc::TOKEN_PATH, post(oidc::token))
        .route(tokenreview::PATH, post(tokenreview::review))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .merge(admin::routes())
        .route("/broker/v1/creds/{backend}/{role}", post(broker::creds))
        .route("/broker/v1/leases/{id}/renew", post(broker::renew))
        .route("/broker/v1/leases/{id}", delete(broker::revoke))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(move |req, next| {
            crate::net::request_deadline(request_timeout, req, next)
        }))
        .layer(middleware::from_fn(move |req, next| {
            crate::net::body_deadline(body_timeout, req, next)
        }))
        .layer(middleware::from_fn(move |req, next| {
            crate::metrics::record(metrics.clone(), req, next)
        }))
        .layer(middleware::from_fn(correlate))
        .with_state(state)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    // Echo only the path, bounded, never the query (it may carry secrets).
    let path: String = uri.path().chars().take(200).collect();
    ApiError::NotFound(format!(
        "route {method} {}",
        lanyard_core::text::shown(&path, 200)
    ))
}

/// Gives each request a correlation id (request extension, response header)
/// and a tracing span carrying it.
async fn correlate(mut req: Request, next: Next) -> Response {
    let id = crate::correlation::new_id();
    let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), correlation_id = %id);
    req.extensions_mut().insert(CorrelationId(id.clone()));
    let mut resp = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| tracing::debug!(status = resp.status().as_u16(), "request done"));
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(crate::correlation::HEADER, v);
    }
    resp
}
