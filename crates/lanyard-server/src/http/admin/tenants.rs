//! `/admin/v1/tenants`: the owners of every entry, token and lease (INV-5).

use lanyard_core::TenantId;
use lanyard_store::Tenant;
use serde::Deserialize;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use crate::error::ApiError;
use crate::http::admin::audit;
use crate::http::extract::{Admin, Body, StoreResultExt as _};
use crate::state::{AppState, CorrelationId};

type St = State<AppState>;

/// `POST /admin/v1/tenants` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    name: String,
    #[serde(default)]
    description: String,
}

/// `GET /admin/v1/tenants`.
pub async fn list_tenants(
    state: St,
    _admin: Admin,
    Extension(cid): Extension<CorrelationId>,
) -> Result<Response, ApiError> {
    let tenants = state.store.list_tenants().await.api(&cid)?;
    Ok(Json(serde_json::json!({ "tenants": tenants })).into_response())
}

/// `POST /admin/v1/tenants`.
pub async fn create_tenant(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Body(req): Body<CreateTenant>,
) -> Result<Response, ApiError> {
    let id = TenantId::parse(&req.name)
        .map_err(|e| ApiError::BadRequest(format!("name {:?}: {e}", req.name)))?;
    if req.description.len() > 1024 {
        return Err(ApiError::BadRequest(
            "description is longer than 1024 bytes".into(),
        ));
    }
    let tenant = Tenant {
        id: id.clone(),
        description: req.description,
        created_at: state.clock.unix_seconds(),
    };
    let draft = audit(
        &state,
        &cid.0,
        &admin.actor,
        "tenant.create",
        id.as_str(),
        Some(id.as_str()),
    );
    let created = state.store.create_tenant(tenant, draft).await.api(&cid)?;
    tracing::info!(tenant = %created.id, actor = %admin.actor, "tenant created");
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// `GET /admin/v1/tenants/{name}`.
pub async fn show_tenant(
    state: St,
    _admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = state.store.fetch_tenant(&name).await.api(&cid)?;
    tenant
        .map(|t| Json(t).into_response())
        .ok_or_else(|| ApiError::NotFound(format!("tenant {name:?}")))
}

/// `DELETE /admin/v1/tenants/{name}`.
pub async fn delete_tenant(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let draft = audit(
        &state,
        &cid.0,
        &admin.actor,
        "tenant.delete",
        &name,
        Some(&name),
    );
    state.store.delete_tenant(&name, draft).await.api(&cid)?;
    tracing::info!(tenant = %name, actor = %admin.actor, "tenant deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}
