//! The OIDC issuer surface: discovery, JWKS, SPIFFE bundle, token endpoint.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use lanyard_core::{Decision, Denial, DenyReason};
use lanyard_store::AuditDraft;
use serde::Serialize;

use crate::app::{AppState, CorrelationId, St};
use crate::exchange::{decide, parse_form, Facts, Trace, TYPE_ACCESS_TOKEN, TYPE_JWT};

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
        grant_types_supported: vec![TOKEN_EXCHANGE_GRANT, "client_credentials"],
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
    let published = state.keys.current();
    let ca = state.ca.current();
    // X.509 authorities first, then the JWT keys; the sequence moves when
    // either changes (both counters only grow).
    let mut keys = ca.bundle_keys.clone();
    keys.extend(published.bundle_keys.iter().cloned());
    let doc = serde_json::json!({
        "keys": keys,
        "spiffe_sequence": published.generation + ca.generation.max(0),
        "spiffe_refresh_hint": crate::keys::BUNDLE_REFRESH_HINT_SECS,
    });
    json_bytes(
        serde_json::to_vec(&doc).unwrap_or_default(),
        "application/json",
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
    let mut trace = Trace::for_audit();
    let mut facts = Facts::default();
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|t| {
                t.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    let result = match body {
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(Denial::new(
            DenyReason::TooLarge,
            format!(
                "request body exceeds {} bytes",
                state.settings.max_request_bytes
            ),
        )),
        Err(_) => Err(Denial::new(
            DenyReason::InvalidRequest,
            "request body could not be read",
        )),
        Ok(_) if !form_type => Err(Denial::new(
            DenyReason::InvalidRequest,
            "Content-Type must be application/x-www-form-urlencoded",
        )),
        Ok(bytes) => match parse_form(&bytes) {
            // Brokered credentials: attested like any exchange, answered by the broker.
            Ok(req) if req.broker_role.is_some() => {
                return crate::routes::broker::exchange(&state, &cid.0, &req).await
            }
            Ok(req) => decide(&state, &req, &mut trace, &mut facts).await,
            Err(d) => Err(d),
        },
    };
    let (decision, reason, subject) = match &result {
        Ok(issued) => (
            Decision::Allow,
            match &issued.profile {
                None => format!("issued jti={} ttl={}s", issued.jti, issued.expires_in),
                Some((id, sub)) => format!(
                    "issued jti={} ttl={}s profile={id} sub={sub}",
                    issued.jti, issued.expires_in
                ),
            },
            issued.chain.clone(),
        ),
        // A denial's audit event carries the steps up to it, so `lanyard audit
        // show ID` explains it without the token.
        Err(d) if trace.steps.is_empty() => (
            Decision::Deny,
            d.to_string(),
            facts.subject.clone().unwrap_or_else(|| "-".into()),
        ),
        Err(d) => (
            Decision::Deny,
            format!("{d}\n{}", trace.lines()),
            facts.subject.clone().unwrap_or_else(|| "-".into()),
        ),
    };
    let draft = AuditDraft {
        at_ms: crate::correlation::unix_millis(state.clock.now()),
        correlation_id: cid.0.clone(),
        actor: facts
            .subject
            .clone()
            .unwrap_or_else(|| "unauthenticated".into()),
        action: "token.exchange".into(),
        subject,
        tenant: facts.tenant.clone(),
        decision,
        reason,
        evidence_digest: facts.digest.clone(),
    };
    if state.audit.append(draft).await.is_err() {
        return oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the decision could not be audited; nothing was issued",
            &cid.0,
        );
    }
    match result {
        Ok(issued) => {
            tracing::debug!(correlation_id = %cid.0, jti = %issued.jti, spiffe_id = %issued.spiffe_id, "token issued");
            let (issued_type, token_type) = if issued.as_access_token {
                (TYPE_ACCESS_TOKEN, "Bearer")
            } else {
                (TYPE_JWT, "N_A")
            };
            let mut body = serde_json::json!({
                "access_token": issued.token,
                "issued_token_type": issued_type,
                "token_type": token_type,
                "expires_in": issued.expires_in,
            });
            if !issued.scope.is_empty() {
                body["scope"] = serde_json::json!(issued.scope.join(" "));
            }
            (
                StatusCode::OK,
                [(header::CACHE_CONTROL, "no-store")],
                Json(body),
            )
                .into_response()
        }
        Err(d) => {
            tracing::info!(correlation_id = %cid.0, reason = d.reason.as_str(), detail = %d.detail, "token exchange denied");
            let (status, code, description) = oauth_denial(&d);
            oauth_error(status, code, &description, &cid.0)
        }
    }
}

/// RFC 6749 §5.2 error for a denial. The description says what kind of
/// problem it was, never the operator detail (which may name entries or
/// other tenants).
pub fn oauth_denial(d: &Denial) -> (StatusCode, &'static str, String) {
    use DenyReason as R;
    let (status, code) = match d.reason {
        R::InvalidRequest | R::TooLarge => (StatusCode::BAD_REQUEST, "invalid_request"),
        R::UnsupportedTokenType => (StatusCode::BAD_REQUEST, "unsupported_grant_type"),
        R::AudienceNotAllowed | R::AudienceProfile => (StatusCode::BAD_REQUEST, "invalid_target"),
        R::ScopeWidening => (StatusCode::BAD_REQUEST, "invalid_scope"),
        R::ActorNotAllowed => (StatusCode::BAD_REQUEST, "unauthorized_client"),
        R::IssuerUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable"),
        _ => (StatusCode::BAD_REQUEST, "invalid_grant"),
    };
    let description = match d.reason {
        // Request-shape problems are the caller's own input: say exactly what.
        R::InvalidRequest | R::UnsupportedTokenType => d.detail.clone(),
        other => format!("{} ({})", safe_text(other), other.as_str()),
    };
    (status, code, description)
}

fn safe_text(r: DenyReason) -> &'static str {
    use DenyReason as R;
    match r {
        R::UnknownIssuer => "the token's issuer is not trusted",
        R::WrongAudience => "the token is not for this audience",
        R::Expired => "the token has expired",
        R::NotYetValid => "the token is not valid yet",
        R::LifetimeTooLong => "the token lives longer than the issuer allows",
        R::AlgorithmNotAllowed => "the token's signature algorithm is not allowed",
        R::UnknownKey | R::BadSignature => "the token's signature could not be verified",
        R::Malformed | R::MissingClaim => "the token is malformed or lacks required claims",
        R::TooLarge => "the token is too large",
        R::LegacyToken => "legacy service-account tokens are not accepted; use a projected token",
        R::NoMatchingEntry => "no identity is registered for this workload",
        R::AmbiguousEntry => "more than one identity matches this workload",
        R::MissingTenant => "the token carries no tenant",
        R::TenantMismatch => "tenant mismatch",
        R::AudienceNotAllowed => "the requested audience is not allowed",
        R::Revoked => "the credential or identity has been revoked",
        R::ActorNotAllowed => "the actor may not act for the subject",
        R::ChainTooDeep => "the delegation chain is too deep",
        R::ScopeWidening => "the requested scope exceeds what is granted",
        R::IssuerUnavailable => "the token's issuer cannot be checked right now",
        R::AudienceProfile => "the audience's profile cannot issue a token for this identity",
        _ => "the request was refused",
    }
}

fn oauth_error(status: StatusCode, code: &str, description: &str, cid: &str) -> Response {
    let body = serde_json::json!({
        "error": code,
        "error_description": format!("{description}; correlation id {cid}"),
        "correlation_id": cid,
    });
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
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
