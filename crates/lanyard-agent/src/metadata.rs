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

// The error is the ready HTTP answer; these run once per request.
#[allow(clippy::result_large_err)]
fn guard(headers: &HeaderMap) -> Result<(), Response> {
    if headers.contains_key("x-forwarded-for") || headers.contains_key("forwarded") {
        return Err(error(StatusCode::FORBIDDEN, "proxied requests are refused"));
    }
    let ok = headers
        .get("metadata")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !ok {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "the header `Metadata: true` is required",
        ));
    }
    Ok(())
}

#[allow(clippy::result_large_err)]
fn identity(m: &Meta) -> Result<Arc<crate::Identity>, Response> {
    let view = m.agent.view();
    if !view.serving {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node has no identity (not attested or revoked)",
        ));
    }
    view.identities
        .values()
        .find(|i| i.entry.spiffe_id.to_string() == m.spiffe_id && i.expires_at > m.agent.now())
        .cloned()
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                "no identity for this node's metadata entry yet",
            )
        })
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
        Ok(jwt) => Json(serde_json::json!({
            "spiffe_id": m.spiffe_id,
            "token": &*jwt.token,
            "expires_at": jwt.expires_at,
        }))
        .into_response(),
        Err(crate::AgentError::Refused(reason)) => error(StatusCode::FORBIDDEN, &reason),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the server is unreachable"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    use super::*;

    fn agent(dir: &std::path::Path) -> Result<Arc<Agent>, Box<dyn std::error::Error>> {
        let config = crate::AgentConfig {
            server_addr: "127.0.0.1:9".into(),
            server_name: Some("localhost".into()),
            trust_domain: "example.org".into(),
            bootstrap_roots: Vec::new(),
            bootstrap: crate::Bootstrap::Stored,
            state_dir: dir.to_owned(),
            socket_path: dir.join("s.sock"),
            sync_interval: std::time::Duration::from_secs(1),
            attest: crate::attest::AttestConfig::default(),
            files: Vec::new(),
            metadata_listen: None,
            admin_socket_path: None,
            delegates: crate::delegated::Delegates::default(),
        };
        Ok(Agent::new(config, Arc::new(lanyard_core::SystemClock))?)
    }

    async fn status(
        app: &Router,
        req: Request<Body>,
    ) -> Result<StatusCode, Box<dyn std::error::Error>> {
        Ok(app.clone().oneshot(req).await?.status())
    }

    #[tokio::test]
    async fn header_required_proxies_refused_nothing_before_attestation(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let app = router(agent(dir.path())?, "spiffe://example.org/vm".into());
        let get = |h: &[(&str, &str)]| {
            let mut b = Request::get("/v1/identity/x509");
            for (k, v) in h {
                b = b.header(*k, *v);
            }
            b.body(Body::empty())
        };
        assert_eq!(status(&app, get(&[])?).await?, StatusCode::BAD_REQUEST);
        assert_eq!(
            status(&app, get(&[("Metadata", "false")])?).await?,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(
                &app,
                get(&[("Metadata", "true"), ("X-Forwarded-For", "1.2.3.4")])?
            )
            .await?,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status(
                &app,
                get(&[("Metadata", "true"), ("Forwarded", "for=1.2.3.4")])?
            )
            .await?,
            StatusCode::FORBIDDEN
        );
        // Not attested yet: nothing to hand out.
        assert_eq!(
            status(&app, get(&[("Metadata", "true")])?).await?,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let jwt = Request::get("/v1/identity/jwt")
            .header("Metadata", "true")
            .body(Body::empty())?;
        assert_eq!(
            status(&app, jwt).await?,
            StatusCode::BAD_REQUEST,
            "audience is required"
        );
        Ok(())
    }
}
