//! `/admin/v1/jointokens` and `/admin/v1/nodes`: one-time node bootstrap
//! tokens and the attested nodes.

use std::time::Duration;

use lanyard_core::Selector;
use serde::Deserialize;

const MAX_LIST: usize = 64;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use crate::error::ApiError;
use crate::http::admin::audit;
use crate::http::extract::{Admin, Body, StoreResultExt as _};
use crate::state::{AppState, CorrelationId};

type St = State<AppState>;

/// `POST /admin/v1/jointokens` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinTokenRequest {
    node_id: String,
    #[serde(default)]
    ttl_seconds: Option<u64>,
    #[serde(default)]
    selectors: Vec<String>,
}

/// `POST /admin/v1/jointokens`: a one-time node bootstrap token. The token
/// is in this answer only; the store keeps its SHA-256.
pub async fn create_join_token(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Body(req): Body<JoinTokenRequest>,
) -> Result<Response, ApiError> {
    let max = state.settings.join_token_max_ttl;
    let ttl = Duration::from_secs(req.ttl_seconds.unwrap_or(600));
    if ttl.is_zero() || ttl > max {
        return Err(ApiError::BadRequest(format!(
            "ttl must be above zero and at most node_api.join_token_max_ttl ({}s)",
            max.as_secs()
        )));
    }
    if req.selectors.len() > MAX_LIST {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_LIST} selectors"
        )));
    }
    for s in &req.selectors {
        Selector::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    }
    let td = &state.settings.trust_domain;
    let now = state.clock.unix_seconds();
    let (token, row) =
        crate::node::new_join_token(td, &req.node_id, req.selectors, now, ttl, &admin.actor)
            .map_err(ApiError::BadRequest)?;
    let spiffe_id = lanyard_core::naming::node_id(td, &row.node_id)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let draft = audit(
        &state,
        &cid.0,
        &admin.actor,
        "jointoken.create",
        &format!("jointoken {} for {spiffe_id}", row.id),
        None,
    );
    state
        .store
        .create_join_token(row.clone(), draft)
        .await
        .api(&cid)?;
    let roots: Vec<String> = state
        .ca
        .current()
        .roots
        .iter()
        .map(|r| pem_cert(r))
        .collect();
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "id": row.id,
            "token": token,
            "node_id": row.node_id,
            "spiffe_id": spiffe_id.to_string(),
            "expires_at": row.expires_at,
            "trust_domain": td.to_string(),
            "trust_bundle_pem": roots.concat(),
        })),
    )
        .into_response())
}

fn pem_cert(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// `GET /admin/v1/jointokens` (hashes are never shown).
pub async fn list_join_tokens(
    state: St,
    _admin: Admin,
    Extension(cid): Extension<CorrelationId>,
) -> Result<Response, ApiError> {
    let rows = state.store.list_join_tokens().await.api(&cid)?;
    Ok(Json(serde_json::json!({ "join_tokens": rows })).into_response())
}

/// `GET /admin/v1/nodes`.
pub async fn list_nodes(
    state: St,
    _admin: Admin,
    Extension(cid): Extension<CorrelationId>,
) -> Result<Response, ApiError> {
    let rows = state.store.list_nodes().await.api(&cid)?;
    Ok(Json(serde_json::json!({ "nodes": rows })).into_response())
}
