//! `/admin/v1`: one module per resource. Every call needs an admin bearer
//! token ([`crate::http::extract::Admin`], failures audited); every change
//! is audited in the same store transaction as the change.

pub mod apply;
pub mod audit;
pub mod entries;
pub mod explain;
pub mod federation;
pub mod issuers;
pub mod keys;
pub mod nodes;
pub mod profiles;
pub mod revocations;
pub mod tenants;

use axum::routing::{delete, get, post};
use axum::Router;
use lanyard_store::AuditDraft;

use crate::error::ApiError;
use crate::http::broker;
use crate::http::extract::StoreResultExt as _;
use crate::state::{AppState, CorrelationId};

/// Every `/admin/v1` route.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/admin/v1/tenants",
            get(tenants::list_tenants).post(tenants::create_tenant),
        )
        .route(
            "/admin/v1/tenants/{name}",
            get(tenants::show_tenant).delete(tenants::delete_tenant),
        )
        .route("/admin/v1/keys", get(keys::list_keys))
        .route("/admin/v1/keys/rotate", post(keys::rotate_keys))
        .route("/admin/v1/ca", get(keys::list_cas))
        .route("/admin/v1/audit", get(audit::list_audit))
        .route("/admin/v1/audit/verify", get(audit::verify_audit))
        .route(
            "/admin/v1/audit/checkpoints",
            get(audit::list_checkpoints).post(audit::create_checkpoint),
        )
        .route(
            "/admin/v1/issuers",
            get(issuers::list_issuers).post(issuers::create_issuer),
        )
        .route(
            "/admin/v1/issuers/{name}",
            get(issuers::show_issuer).delete(issuers::delete_issuer),
        )
        .route(
            "/admin/v1/entries",
            get(entries::list_entries).post(entries::create_entry),
        )
        .route(
            "/admin/v1/entries/apply",
            post(apply::apply_entries).layer(apply::body_limit()),
        )
        .route(
            "/admin/v1/entries/{id}",
            get(entries::show_entry)
                .put(entries::update_entry)
                .delete(entries::delete_entry),
        )
        .route(
            "/admin/v1/revocations",
            get(revocations::list_revocations).post(revocations::create_revocation),
        )
        .route("/admin/v1/explain", post(explain::explain))
        .route(
            "/admin/v1/audience-profiles",
            get(profiles::list_profiles).post(profiles::create_profile),
        )
        .route(
            "/admin/v1/audience-profiles/{id}",
            delete(profiles::delete_profile),
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
            delete(broker::admin_revoke_lease),
        )
        .route(
            "/admin/v1/jointokens",
            get(nodes::list_join_tokens).post(nodes::create_join_token),
        )
        .route("/admin/v1/nodes", get(nodes::list_nodes))
        .route(
            "/admin/v1/federations",
            get(federation::list_federations).post(federation::create_federation),
        )
        .route(
            "/admin/v1/federations/{td}",
            get(federation::show_federation).delete(federation::delete_federation),
        )
        .route(
            "/admin/v1/federations/{td}/refresh",
            post(federation::refresh_federation),
        )
        .route("/admin/v1/bundles", get(federation::list_bundles))
        .route(
            "/admin/v1/bundles/{td}",
            get(federation::show_federation)
                .put(federation::set_bundle)
                .delete(federation::delete_bundle),
        )
}

/// An admin change's audit event (allowed), written in the change's transaction.
pub(crate) fn audit(
    state: &AppState,
    cid: &str,
    actor: &str,
    action: &str,
    subject: &str,
    tenant: Option<&str>,
) -> AuditDraft {
    AuditDraft {
        at_ms: crate::correlation::unix_millis(state.clock.now()),
        correlation_id: cid.to_owned(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        subject: subject.to_owned(),
        tenant: tenant.map(str::to_owned),
        decision: lanyard_core::Decision::Allow,
        reason: "admin request".into(),
        evidence_digest: None,
    }
}

/// The tenant must exist.
pub(crate) async fn require_tenant(
    state: &AppState,
    tenant: &str,
    cid: &str,
) -> Result<(), ApiError> {
    match state
        .store
        .fetch_tenant(tenant)
        .await
        .api(&CorrelationId(cid.to_owned()))?
    {
        Some(_) => Ok(()),
        None => Err(ApiError::BadRequest(format!(
            "tenant {} does not exist; create it with `lanyard tenant create NAME`",
            lanyard_core::text::shown(tenant, 64)
        ))),
    }
}

/// Makes this replica see a change at once (others poll).
pub(crate) async fn refresh(state: &AppState) {
    if let Err(e) = state.registry.refresh().await {
        tracing::warn!(error = %e, "registry refresh after change failed; the poller will retry");
    }
}
