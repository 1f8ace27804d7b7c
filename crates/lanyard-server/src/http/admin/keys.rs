//! `/admin/v1/keys` and `/admin/v1/ca`: signing keys and X.509 CAs (metadata
//! only, never key material), and key rotation.

use lanyard_jose::Algorithm;
use serde::{Deserialize, Serialize};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use crate::error::ApiError;
use crate::http::extract::{Admin, Body};
use crate::state::{AppState, CorrelationId};

type St = State<AppState>;

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
    /// The active key is compromised: delete it now, the next key signs now.
    #[serde(default)]
    compromised: bool,
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
    let result = if req.compromised {
        state
            .keys
            .replace_compromised(alg, &admin.actor, &cid.0)
            .await
    } else {
        state.keys.rotate(alg, &admin.actor, &cid.0).await
    };
    match result {
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

/// `GET /admin/v1/ca`: the X.509 CAs (roots and intermediates).
pub async fn list_cas(
    state: St,
    _admin: Admin,
    Extension(cid): Extension<CorrelationId>,
) -> Result<Response, ApiError> {
    let cas = state.ca.list().await.map_err(|e| {
        tracing::error!(correlation_id = %cid.0, error = %e, "listing CAs failed");
        ApiError::Internal
    })?;
    Ok(Json(serde_json::json!({ "cas": cas })).into_response())
}
