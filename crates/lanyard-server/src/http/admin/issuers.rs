//! `/admin/v1/issuers`: trusted issuers (Kubernetes clusters, CI, OIDC).

use lanyard_attest::{IssuerConfig, TenantBinding};
use lanyard_store::IssuerRow;
use serde_json::Value;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use crate::error::ApiError;
use crate::http::admin::{audit, refresh, require_tenant};
use crate::http::extract::{Admin, Body, StoreResultExt as _};
use crate::state::{AppState, CorrelationId};

type St = State<AppState>;

/// `GET /admin/v1/issuers`.
pub async fn list_issuers(
    state: St,
    _admin: Admin,
    Extension(cid): Extension<CorrelationId>,
) -> Result<Response, ApiError> {
    let rows = state.store.list_issuers().await.api(&cid)?;
    let issuers: Vec<Value> = rows
        .iter()
        .filter_map(|r| serde_json::from_str(&r.config).ok())
        .collect();
    Ok(Json(serde_json::json!({ "issuers": issuers })).into_response())
}

/// `GET /admin/v1/issuers/{name}`.
pub async fn show_issuer(
    state: St,
    _admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let rows = state.store.list_issuers().await.api(&cid)?;
    let row = rows
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("issuer {name:?}")))?;
    let config: Value = serde_json::from_str(&row.config).map_err(|_| ApiError::Internal)?;
    Ok(Json(config).into_response())
}

/// `POST /admin/v1/issuers`: body is the issuer configuration.
pub async fn create_issuer(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Body(config): Body<IssuerConfig>,
) -> Result<Response, ApiError> {
    config
        .validate()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // Check the whole set as it would be (unique names, no two issuers with
    // the same iss and audience) before storing anything.
    let rows = state.store.list_issuers().await.api(&cid)?;
    let mut set: Vec<IssuerConfig> = rows
        .iter()
        .filter_map(|r| serde_json::from_str(&r.config).ok())
        .collect();
    set.push(config.clone());
    match lanyard_attest::validate_set(&set) {
        Err(lanyard_attest::AttestError::DuplicateName { .. }) => {
            return Err(ApiError::Conflict(format!(
                "issuer {:?} already exists",
                config.name
            )))
        }
        Err(e) => return Err(ApiError::BadRequest(e.to_string())),
        Ok(()) => {}
    }
    if let TenantBinding::Fixed(t) = &config.tenant {
        require_tenant(&state, t.as_str(), &cid.0).await?;
    }
    let json = serde_json::to_string(&config).map_err(|_| ApiError::Internal)?;
    let row = IssuerRow {
        name: config.name.clone(),
        config: json,
        created_at: state.clock.unix_seconds(),
    };
    let draft = audit(
        &state,
        &cid.0,
        &admin.actor,
        "issuer.create",
        &config.name,
        None,
    );
    state.store.create_issuer(row, draft).await.api(&cid)?;
    refresh(&state).await;
    tracing::info!(issuer = %config.name, actor = %admin.actor, "trusted issuer added");
    Ok((StatusCode::CREATED, Json(config)).into_response())
}

/// `DELETE /admin/v1/issuers/{name}`.
pub async fn delete_issuer(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let draft = audit(&state, &cid.0, &admin.actor, "issuer.delete", &name, None);
    state.store.delete_issuer(&name, draft).await.api(&cid)?;
    refresh(&state).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
