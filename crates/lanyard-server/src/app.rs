//! Shared state and the router.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use lanyard_core::{Clock, TrustDomain};
use lanyard_store::Store;
use tracing::Instrument as _;

use crate::error::ApiError;
use crate::keys::KeyManager;
use crate::metrics::Metrics;
use crate::routes::{admin, broker, health, oidc, profiles};

/// What every handler can reach. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Signing keys.
    pub keys: Arc<KeyManager>,
    /// The X.509 CA.
    pub ca: Arc<crate::ca::CaManager>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Settings the handlers read.
    pub settings: Arc<Settings>,
    /// Entries, revocations, trusted issuers.
    pub registry: Arc<crate::registry::Registry>,
    /// Group-committing audit writer for the request path.
    pub audit: crate::audit_writer::AuditWriter,
    /// The credential broker.
    pub broker: Arc<crate::broker::BrokerService>,
}

/// The subset of configuration handlers need.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Issuer URL.
    pub issuer: String,
    /// Trust domain.
    pub trust_domain: TrustDomain,
    /// Request body limit.
    pub max_request_bytes: usize,
    /// `Cache-Control: max-age` for the JWKS and bundle.
    pub jwks_max_age: Duration,
    /// Default JWT-SVID lifetime.
    pub jwt_default_ttl: Duration,
    /// Longest JWT-SVID lifetime.
    pub jwt_max_ttl: Duration,
    /// Longest delegation chain (number of actors).
    pub max_delegation_depth: usize,
    /// Parent node of agent entries created without one (`lanyard dev`).
    pub default_parent: Option<lanyard_core::SpiffeId>,
    /// Longest join token lifetime.
    pub join_token_max_ttl: Duration,
}

/// The correlation id of the current request, set by middleware.
#[derive(Debug, Clone)]
pub struct CorrelationId(pub String);

/// Builds the full HTTP router.
pub fn router(state: AppState) -> Router {
    let limit = state.settings.max_request_bytes;
    Router::new()
        .route("/.well-known/openid-configuration", get(oidc::discovery))
        .route(oidc::JWKS_PATH, get(oidc::jwks))
        .route("/bundle", get(oidc::bundle))
        .route(oidc::TOKEN_PATH, post(oidc::token))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route(
            "/admin/v1/tenants",
            get(admin::list_tenants).post(admin::create_tenant),
        )
        .route(
            "/admin/v1/tenants/{name}",
            get(admin::show_tenant).delete(admin::delete_tenant),
        )
        .route("/admin/v1/keys", get(admin::list_keys))
        .route("/admin/v1/keys/rotate", post(admin::rotate_keys))
        .route("/admin/v1/audit", get(admin::list_audit))
        .route("/admin/v1/audit/verify", get(admin::verify_audit))
        .route(
            "/admin/v1/issuers",
            get(admin::list_issuers).post(admin::create_issuer),
        )
        .route(
            "/admin/v1/issuers/{name}",
            get(admin::show_issuer).delete(admin::delete_issuer),
        )
        .route(
            "/admin/v1/entries",
            get(admin::list_entries).post(admin::create_entry),
        )
        .route(
            "/admin/v1/entries/{id}",
            get(admin::show_entry)
                .put(admin::update_entry)
                .delete(admin::delete_entry),
        )
        .route(
            "/admin/v1/revocations",
            get(admin::list_revocations).post(admin::create_revocation),
        )
        .route("/admin/v1/explain", post(admin::explain))
        .route(
            "/admin/v1/audience-profiles",
            get(profiles::list_profiles).post(profiles::create_profile),
        )
        .route(
            "/admin/v1/audience-profiles/{id}",
            axum::routing::delete(profiles::delete_profile),
        )
        .route(
            "/admin/v1/broker/backends",
            get(broker::list_backends).post(broker::add_backend),
        )
        .route(
            "/admin/v1/broker/backends/{name}/rotate-root",
            post(broker::rotate_root),
        )
        .route(
            "/admin/v1/broker/roles",
            get(broker::list_roles).post(broker::add_role),
        )
        .route("/admin/v1/broker/leases", get(broker::list_leases))
        .route(
            "/admin/v1/broker/leases/{id}",
            axum::routing::delete(broker::admin_revoke_lease),
        )
        .route("/broker/v1/creds/{backend}/{role}", post(broker::creds))
        .route("/broker/v1/leases/{id}/renew", post(broker::renew))
        .route(
            "/broker/v1/leases/{id}",
            axum::routing::delete(broker::revoke),
        )
        .route(
            "/admin/v1/jointokens",
            get(admin::list_join_tokens).post(admin::create_join_token),
        )
        .route("/admin/v1/nodes", get(admin::list_nodes))
        .route("/admin/v1/ca", get(admin::list_cas))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::record,
        ))
        .layer(middleware::from_fn(correlate))
        .with_state(state)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    // Echo only the path, bounded, never the query (it may carry secrets).
    let path: String = uri.path().chars().take(200).collect();
    ApiError::NotFound(format!("route {method} {path}"))
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

/// Shortcut for handlers that need only the state.
pub(crate) type St = State<AppState>;
