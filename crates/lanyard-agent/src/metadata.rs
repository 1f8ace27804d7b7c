//! The metadata endpoint (seed 000's "metadata service"): the VM's identity
//! over plain HTTP on a local address, the way cloud instance metadata
//! services hand out credentials.
//!
//! - `GET /v1/identity/x509` → `{spiffe_id, svid_pem, key_pem, bundle_pem, expires_at}`
//! - `GET /v1/identity/jwt?audience=A` → `{spiffe_id, token, expires_at}`
//!
//! The identity served is the configured entry of this node (normally the
//! VM's own workload identity), never the agent's node SVID. Requests must
//! carry `Metadata: true` and must not carry `X-Forwarded-For` (a proxied
//! request is someone else's; SSRF defence as cloud metadata services do).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::files::pem;
use crate::Agent;

#[derive(Clone)]
struct Meta {
    agent: Arc<Agent>,
    spiffe_id: String,
}

/// The metadata router serving `spiffe_id`'s documents.
pub fn router(agent: Arc<Agent>, spiffe_id: String) -> Router {
    Router::new()
        .route("/v1/identity/x509", get(x509))
        .route("/v1/identity/jwt", get(jwt))
        .with_state(Meta { agent, spiffe_id })
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn guard(headers: &HeaderMap) -> Result<(), Response> {
    if headers.contains_key("x-forwarded-for") || headers.contains_key("forwarded") {
        return Err(error(StatusCode::FORBIDDEN, "proxied requests are refused"));
    }
    let ok = headers
        .get("metadata")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !ok {
        return Err(error(StatusCode::BAD_REQUEST, "the header `Metadata: true` is required"));
    }
    Ok(())
}

fn identity(m: &Meta) -> Result<Arc<crate::Identity>, Response> {
    let view = m.agent.view();
    if !view.serving {
        return Err(error(StatusCode::SERVICE_UNAVAILABLE, "this node has no identity (not attested or revoked)"));
    }
    view.identities
        .values()
        .find(|i| i.entry.spiffe_id.to_string() == m.spiffe_id && i.expires_at > m.agent.now())
        .cloned()
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "no identity for this node's metadata entry yet"))
}

async fn x509(State(m): State<Meta>, headers: HeaderMap) -> Response {
    if let Err(r) = guard(&headers) {
        return r;
    }
    let id = match identity(&m) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let roots = m.agent.view().roots.clone();
    Json(serde_json::json!({
        "spiffe_id": m.spiffe_id,
        "svid_pem": pem("CERTIFICATE", &id.chain),
        "key_pem": pem("PRIVATE KEY", &[id.key_pkcs8.to_vec()]),
        "bundle_pem": pem("CERTIFICATE", &roots),
        "expires_at": id.expires_at,
    }))
    .into_response()
}

#[derive(Deserialize)]
struct JwtQuery {
    audience: Option<String>,
}

async fn jwt(State(m): State<Meta>, headers: HeaderMap, Query(q): Query<JwtQuery>) -> Response {
    if let Err(r) = guard(&headers) {
        return r;
    }
    let Some(audience) = q.audience.filter(|a| !a.is_empty() && a.len() <= 512) else {
        return error(StatusCode::BAD_REQUEST, "give ?audience=A");
    };
    let id = match identity(&m) {
        Ok(i) => i,
        Err(r) => return r,
    };
    match m.agent.jwt_svid(&id.entry, &[audience]).await {
        Ok(token) => {
            let exp = crate::unverified_claims(&token).and_then(|c| c.get("exp").and_then(serde_json::Value::as_i64)).unwrap_or(0);
            Json(serde_json::json!({ "spiffe_id": m.spiffe_id, "token": token, "expires_at": exp })).into_response()
        }
        Err(crate::AgentError::Refused(reason)) => error(StatusCode::FORBIDDEN, &reason),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the server is unreachable"),
    }
}
