//! The OIDC issuer surface: discovery, JWKS, SPIFFE bundle, token endpoint,
//! and the audit checkpoint keys.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use lanyard_core::policy::Trace;
use lanyard_core::{Denial, DenyReason};
use serde::Serialize;

use crate::exchange::{parse_form, ExchangeError, Facts, TYPE_ACCESS_TOKEN, TYPE_JWT};
use crate::http::oauth::OAuthError;
use crate::issuer::AuditContext;
use crate::state::{AppState, CorrelationId};

type St = State<AppState>;

/// Where the OIDC JWKS is served.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// Where RFC 8693 token exchange is served.
pub const TOKEN_PATH: &str = "/oauth2/token";
/// Where the audit checkpoint keys are published.
pub const AUDIT_KEYS_PATH: &str = "/.well-known/lanyard-audit-keys.json";

/// OpenID Connect Discovery 1.0 §3 provider metadata.
#[derive(Debug, Serialize)]
pub struct Discovery {
    issuer: String,
    authorization_endpoint: &'static str,
    jwks_uri: String,
    token_endpoint: String,
    grant_types_supported: Vec<&'static str>,
    response_types_supported: Vec<&'static str>,
    subject_types_supported: Vec<&'static str>,
    id_token_signing_alg_values_supported: Vec<&'static str>,
    token_endpoint_auth_methods_supported: Vec<&'static str>,
    claims_supported: Vec<&'static str>,
}

/// `GET /.well-known/openid-configuration`.
pub async fn discovery(state: St) -> Response {
    let issuer = &state.settings.issuer;
    let doc = Discovery {
        issuer: issuer.clone(),
        // Required by OIDC Discovery §3 though Lanyard has no interactive
        // login; a URN, as Kubernetes' service-account issuer publishes.
        authorization_endpoint: "urn:lanyard:programmatic_authorization",
        jwks_uri: format!("{issuer}{JWKS_PATH}"),
        token_endpoint: format!("{issuer}{TOKEN_PATH}"),
        grant_types_supported: vec![crate::exchange::GRANT_TOKEN_EXCHANGE, "client_credentials"],
        response_types_supported: vec!["id_token"],
        subject_types_supported: vec!["public"],
        id_token_signing_alg_values_supported: state
            .keys
            .algorithms()
            .iter()
            .map(|a| a.as_str())
            .collect(),
        token_endpoint_auth_methods_supported: vec!["none", "private_key_jwt"],
        claims_supported: vec!["iss", "sub", "aud", "exp", "iat", "jti", "tenant", "act"],
    };
    with_cache(
        Json(doc).into_response(),
        state.settings.jwks_max_age.as_secs(),
    )
}

/// `GET /.well-known/jwks.json`: public keys only (active, next, previous).
pub async fn jwks(state: St) -> Response {
    let published = state.keys.current();
    json_bytes(
        published.jwks_json.clone(),
        "application/jwk-set+json",
        state.settings.jwks_max_age.as_secs(),
    )
}

/// `GET /bundle`: the SPIFFE trust bundle (JWT-SVID keys; X.509 roots join
/// with the CA).
pub async fn bundle(state: St) -> Response {
    // The same document the federation bundle endpoint serves.
    let doc = crate::federation::endpoint::bundle_document(
        &state,
        i64::try_from(crate::keys::BUNDLE_REFRESH_HINT_SECS).unwrap_or(300),
    );
    json_bytes(
        serde_json::to_vec(&doc).unwrap_or_default(),
        "application/json",
        state.settings.jwks_max_age.as_secs(),
    )
}

/// `GET /.well-known/lanyard-audit-keys.json`: the public keys that sign
/// audit checkpoints (`lanyard audit verify --checkpoint` needs only these).
pub async fn audit_keys(state: St) -> Response {
    json_bytes(
        state.checkpoints.public_jwks(),
        "application/jwk-set+json",
        state.settings.jwks_max_age.as_secs(),
    )
}

/// `POST /oauth2/token`: RFC 8693 token exchange (and the RFC 7523
/// client-assertion form). Every decision, allow or deny, is audited before
/// the answer; if the audit event cannot be written, nothing is issued.
pub async fn token(
    State(state): State<AppState>,
    Extension(cid): Extension<CorrelationId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|t| {
                t.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    let parsed = match body {
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(Denial::new(
            DenyReason::RequestTooLarge,
            format!(
                "request body exceeds server.max_request_bytes ({} bytes)",
                state.settings.max_request_bytes
            ),
        )),
        Err(_) => Err(Denial::new(
            DenyReason::InvalidRequest,
            "request body could not be read (sent too slowly, or cut short)",
        )),
        Ok(_) if !form_type => Err(Denial::new(
            DenyReason::InvalidRequest,
            "Content-Type must be application/x-www-form-urlencoded",
        )),
        Ok(bytes) => parse_form(&bytes),
    };
    let req = match parsed {
        Ok(req) => req,
        Err(d) => {
            // Refused before any token was looked at: audit the request itself.
            let ctx = AuditContext {
                correlation_id: &cid.0,
                actor: "unauthenticated",
                action: "token.exchange",
                evidence_digest: None,
            };
            let recorded = state
                .exchange
                .deny(ctx, &Facts::default(), &Trace::for_audit(), &d)
                .await;
            return match recorded {
                Ok(()) => denied(&cid.0, &d),
                Err(_) => OAuthError::unaudited(&cid.0).into_response(),
            };
        }
    };
    // Brokered credentials: attested like any exchange, answered by the broker.
    if req.broker_role.is_some() {
        return crate::http::broker::exchange(&state, &cid.0, &req).await;
    }
    match state.exchange.exchange(&req, &cid.0).await {
        Ok(issued) => {
            tracing::debug!(correlation_id = %cid.0, jti = %issued.jti, spiffe_id = %issued.grant.spiffe_id, "token issued");
            let (issued_type, token_type) = if req.as_access_token {
                (TYPE_ACCESS_TOKEN, "Bearer")
            } else {
                (TYPE_JWT, "N_A")
            };
            let mut body = serde_json::json!({
                "access_token": issued.token,
                "issued_token_type": issued_type,
                "token_type": token_type,
                "expires_in": issued.grant.ttl.as_secs(),
            });
            if let (false, Some(o)) = (issued.grant.scopes.is_empty(), body.as_object_mut()) {
                o.insert("scope".into(), issued.grant.scopes.join(" ").into());
            }
            (
                StatusCode::OK,
                [(header::CACHE_CONTROL, "no-store")],
                Json(body),
            )
                .into_response()
        }
        Err(ExchangeError::Denied(d)) => denied(&cid.0, &d),
        Err(ExchangeError::Unavailable(e)) => {
            tracing::error!(correlation_id = %cid.0, error = %e, "token exchange could not complete");
            OAuthError::unaudited(&cid.0).into_response()
        }
    }
}

fn denied(cid: &str, d: &Denial) -> Response {
    tracing::info!(correlation_id = %cid, reason = d.reason.as_str(), detail = %d.detail, "token exchange denied");
    OAuthError::denial(d, cid).into_response()
}

fn json_bytes(body: Vec<u8>, content_type: &'static str, max_age: u64) -> Response {
    let resp = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    with_cache(resp, max_age)
}

/// Relying parties cache keys for at most `max_age`, which is shorter than
/// the time a next key is published before it signs.
fn with_cache(mut resp: Response, max_age: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        resp.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    resp
}
