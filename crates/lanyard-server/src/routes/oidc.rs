//! The OIDC issuer surface: discovery, JWKS, SPIFFE bundle, token endpoint.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::app::St;

/// Where the OIDC JWKS is served.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// Where RFC 8693 token exchange is served.
pub const TOKEN_PATH: &str = "/oauth2/token";
/// RFC 8693 §2.1 grant type.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

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
        grant_types_supported: vec![TOKEN_EXCHANGE_GRANT],
        response_types_supported: vec!["id_token"],
        subject_types_supported: vec!["public"],
        id_token_signing_alg_values_supported: state
            .keys
            .algorithms()
            .iter()
            .map(|a| a.as_str())
            .collect(),
        token_endpoint_auth_methods_supported: vec!["none"],
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
    let published = state.keys.current();
    json_bytes(
        published.bundle_json.clone(),
        "application/json",
        state.settings.jwks_max_age.as_secs(),
    )
}

/// `POST /oauth2/token`: answers RFC 6749 §5.2 `unsupported_grant_type`
/// until token exchange is implemented.
pub async fn token() -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({
            "error": "unsupported_grant_type",
            "error_description": "token exchange is not available in this version of Lanyard",
        })),
    )
        .into_response()
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
