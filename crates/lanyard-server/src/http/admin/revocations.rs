//! `/admin/v1/revocations`: identities and evidence refused from now on.

use lanyard_core::RevocationKind;
use lanyard_store::Revocation;
use serde::Deserialize;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use crate::error::ApiError;
use crate::http::admin::{audit, refresh};
use crate::http::extract::{Admin, Body, StoreResultExt as _};
use crate::state::{AppState, CorrelationId};

type St = State<AppState>;

/// `POST /admin/v1/revocations` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    kind: String,
    value: String,
    reason: String,
    #[serde(default)]
    until: Option<i64>,
}

/// `POST /admin/v1/revocations`: takes effect on this replica before the answer.
pub async fn create_revocation(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Body(req): Body<RevokeRequest>,
) -> Result<Response, ApiError> {
    let kind: RevocationKind =
        req.kind
            .parse()
            .map_err(|e: lanyard_core::revocation::UnknownRevocationKind| {
                ApiError::BadRequest(format!("kind: {e}"))
            })?;
    if req.value.is_empty()
        || req.value.len() > lanyard_core::revocation::MAX_VALUE_LEN
        || req.reason.trim().is_empty()
        || req.reason.len() > 1024
        || lanyard_core::text::has_control(&req.value)
        || lanyard_core::text::has_control(&req.reason)
    {
        return Err(ApiError::BadRequest(
            "value (1..=512 bytes) and a reason (1..=1024 bytes) are required, without control characters".into(),
        ));
    }
    let now = state.clock.unix_seconds();
    if req.until.is_some_and(|u| u <= now) {
        return Err(ApiError::BadRequest("until is in the past".into()));
    }
    let tenant = (kind == RevocationKind::Entry)
        .then(|| {
            state
                .registry
                .entries()
                .get(&req.value)
                .map(|e| e.tenant.to_string())
        })
        .flatten();
    let rev = Revocation {
        kind,
        value: req.value,
        reason: req.reason,
        until: req.until,
        created_at: now,
        actor: admin.actor.clone(),
    };
    let draft = audit(
        &state,
        &cid.0,
        &admin.actor,
        "revoke",
        &format!("{} {}", rev.kind, rev.value),
        tenant.as_deref(),
    );
    state
        .store
        .create_revocation(rev.clone(), draft)
        .await
        .api(&cid)?;
    refresh(&state).await;
    // Leases of the revoked identity go now, not at the next reaper tick.
    state.broker.wake();
    tracing::info!(kind = %rev.kind, actor = %admin.actor, "revocation recorded");
    Ok((StatusCode::CREATED, Json(rev)).into_response())
}

/// `GET /admin/v1/revocations`.
pub async fn list_revocations(
    state: St,
    _admin: Admin,
    Extension(cid): Extension<CorrelationId>,
) -> Result<Response, ApiError> {
    let rows = state
        .store
        .list_revocations(state.clock.unix_seconds())
        .await
        .api(&cid)?;
    Ok(Json(serde_json::json!({ "revocations": rows })).into_response())
}
