//! `/admin/v1`: tenants, keys, audit. Every call needs an admin bearer token;
//! every change is audited in the same transaction as the change.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use lanyard_core::{Decision, TenantId};
use lanyard_jose::Algorithm;
use lanyard_store::{AuditDraft, Tenant};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::app::{AppState, CorrelationId, St};
use crate::correlation::unix_millis;
use crate::error::ApiError;

/// An authenticated admin caller.
#[derive(Debug, Clone)]
pub struct Admin {
    /// `admin:<token id>`, as audit events name it.
    pub actor: String,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized)?;
        match crate::admin_token::verify(&*state.store, presented.trim()).await {
            Ok(Some(id)) => Ok(Self {
                actor: format!("admin:{id}"),
            }),
            Ok(None) => {
                tracing::info!("admin call refused: bad token");
                Err(ApiError::Unauthorized)
            }
            Err(e) => {
                tracing::error!(error = %e, "admin token lookup failed");
                Err(ApiError::Unavailable)
            }
        }
    }
}

/// JSON body whose rejections become [`ApiError`]s naming the problem.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(reject(&rejection, state.settings.max_request_bytes)),
        }
    }
}

fn reject(r: &JsonRejection, limit: usize) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge { limit };
    }
    // axum's text names the field and the JSON position, never echoes the body.
    ApiError::BadRequest(r.body_text())
}

fn audit(
    state: &AppState,
    cid: &str,
    actor: &str,
    action: &str,
    subject: &str,
    tenant: Option<&str>,
) -> AuditDraft {
    AuditDraft {
        at_ms: unix_millis(state.clock.now()),
        correlation_id: cid.to_owned(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        subject: subject.to_owned(),
        tenant: tenant.map(str::to_owned),
        decision: Decision::Allow,
        reason: "admin request".into(),
        evidence_digest: None,
    }
}

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
    let tenants = state
        .store
        .list_tenants()
        .await
        .map_err(|e| ApiError::from_store(e, &cid.0))?;
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
    let created = state
        .store
        .create_tenant(tenant, draft)
        .await
        .map_err(|e| ApiError::from_store(e, &cid.0))?;
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
    let tenant = state
        .store
        .fetch_tenant(&name)
        .await
        .map_err(|e| ApiError::from_store(e, &cid.0))?;
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
    state
        .store
        .delete_tenant(&name, draft)
        .await
        .map_err(|e| ApiError::from_store(e, &cid.0))?;
    tracing::info!(tenant = %name, actor = %admin.actor, "tenant deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// One key as the admin API shows it: metadata, never key material.
#[derive(Debug, Serialize)]
struct KeyView {
    kid: String,
    alg: String,
    state: String,
    created_at: i64,
    activate_at: i64,
    retire_at: Option<i64>,
}

/// `GET /admin/v1/keys`.
pub async fn list_keys(state: St, _admin: Admin) -> Result<Response, ApiError> {
    use lanyard_core::clock::unix_seconds;
    let published = state.keys.current();
    let keys: Vec<KeyView> = published
        .ring
        .keys()
        .iter()
        .map(|k| KeyView {
            kid: k.kid.clone(),
            alg: k.alg.to_string(),
            state: k.state.to_string(),
            created_at: unix_seconds(k.created_at),
            activate_at: unix_seconds(k.activate_at),
            retire_at: k.retire_at.map(unix_seconds),
        })
        .collect();
    let policy = state.keys.policy();
    Ok(Json(serde_json::json!({
        "keys": keys,
        "rotation_period_seconds": policy.rotation_period.as_secs(),
        "publish_lead_seconds": policy.publish_lead.as_secs(),
    }))
    .into_response())
}

/// `POST /admin/v1/keys/rotate` body.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateKeys {
    alg: Option<String>,
}

/// `POST /admin/v1/keys/rotate`.
pub async fn rotate_keys(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Body(req): Body<RotateKeys>,
) -> Result<Response, ApiError> {
    let alg = match req.alg {
        Some(name) => name
            .parse::<Algorithm>()
            .map_err(|e| ApiError::BadRequest(format!("alg: {e}")))?,
        None => state
            .keys
            .algorithms()
            .first()
            .copied()
            .unwrap_or(Algorithm::Es256),
    };
    match state.keys.rotate(alg, &admin.actor, &cid.0).await {
        Ok(scheduled) => Ok(Json(scheduled).into_response()),
        Err(crate::ServerError::NotEnabled { alg }) => Err(ApiError::BadRequest(format!(
            "algorithm {alg} is not enabled on this server (keys.algorithms)"
        ))),
        Err(e) => {
            tracing::error!(correlation_id = %cid.0, error = %e, "key rotation failed");
            Err(ApiError::Internal)
        }
    }
}

/// `GET /admin/v1/audit` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[serde(default)]
    after: i64,
    limit: Option<i64>,
}

/// `GET /admin/v1/audit?after=SEQ&limit=N`.
pub async fn list_audit(
    state: St,
    _admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let events = state
        .store
        .list_audit(q.after, limit)
        .await
        .map_err(|e| ApiError::from_store(e, &cid.0))?;
    Ok(Json(serde_json::json!({ "events": events })).into_response())
}
