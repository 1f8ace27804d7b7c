//! `POST /apis/authentication.k8s.io/v1/tokenreviews`: Kubernetes'
//! TokenReview, in exactly its JSON shape, so integrators that validate
//! tokens by TokenReview (OpenBao's `auth/kubernetes`) trust Lanyard
//! unchanged. The review itself is [`crate::review`].
//!
//! Answers as the Kubernetes API server does: `201` with the echoed `spec`
//! and always a `status`; a token that does not authenticate is
//! `authenticated: false` with `status.error` (never a 401); `401`/`403`
//! with a `Status` object only for a bad *caller*; `400` for an empty
//! `spec.token`. Callers authenticate with an admin token, a JWT-SVID for
//! audience `<issuer>/tokenreview` whose entry has `token_reviewer`, or the
//! reviewed token itself (self-review, what OpenBao does outside a pod with
//! no reviewer JWT configured). Every review is audited.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use lanyard_core::Decision;
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq as _;

use crate::issuer::AuditContext;
use crate::review::REVIEWER_AUDIENCE_SUFFIX;
use crate::state::{AppState, CorrelationId};

/// The path Kubernetes clients post TokenReviews to.
pub const PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

#[derive(Debug, Deserialize)]
struct ReviewRequest {
    #[serde(rename = "apiVersion", default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    spec: Spec,
}

#[derive(Debug, Deserialize, serde::Serialize)]
struct Spec {
    #[serde(default)]
    token: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    audiences: Vec<String>,
}

/// A Kubernetes `Status` (metav1) for caller errors.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    (
        code,
        Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
        })),
    )
        .into_response()
}

/// Who may call.
enum Caller {
    Admin(String),
    Reviewer(String),
    SelfReview,
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`.
pub async fn review(
    State(state): State<AppState>,
    Extension(cid): Extension<CorrelationId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return status(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                &format!(
                    "the TokenReview is larger than server.max_request_bytes ({} bytes)",
                    state.settings.max_request_bytes
                ),
            )
        }
        Err(_) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the request body could not be read",
            )
        }
    };
    let req: ReviewRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!(
                    "not a TokenReview: {}",
                    lanyard_core::text::escape_control(&e.to_string())
                ),
            )
        }
    };
    if req.kind.as_deref().is_some_and(|k| k != "TokenReview")
        || req
            .api_version
            .as_deref()
            .is_some_and(|v| v != "authentication.k8s.io/v1")
    {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "expected kind TokenReview, apiVersion authentication.k8s.io/v1",
        );
    }
    let token = req.spec.token.trim_ascii().to_owned();
    if token.is_empty() {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "token is required");
    }
    if req.spec.audiences.len() > lanyard_core::policy::MAX_AUDIENCES
        || req
            .spec
            .audiences
            .iter()
            .any(|a| a.len() > 512 || lanyard_core::text::has_control(a))
    {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "at most 16 audiences of at most 512 printable bytes",
        );
    }
    let caller = match authenticate(&state, &headers, &token).await {
        Ok(c) => c,
        Err((resp, why)) => {
            let recorded = state
                .issuer
                .record(
                    AuditContext {
                        correlation_id: &cid.0,
                        actor: "unauthenticated",
                        action: "token.review",
                        evidence_digest: None,
                    },
                    "-".into(),
                    None,
                    Decision::Deny,
                    format!("caller refused: {why}"),
                )
                .await;
            return match recorded {
                Ok(()) => resp,
                Err(_) => status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "try again",
                ),
            };
        }
    };
    let actor = match &caller {
        Caller::Admin(a) | Caller::Reviewer(a) => a.clone(),
        Caller::SelfReview => "self-review".to_owned(),
    };
    let result = state.exchange.review(&token, &req.spec.audiences).await;
    let (decision, reason, subject, tenant, digest) = match &result {
        Ok(r) => (
            Decision::Allow,
            format!("authenticated {} for {:?}", r.user.username, r.audiences),
            r.user.username.clone(),
            Some(r.tenant.clone()),
            Some(r.digest.clone()),
        ),
        Err(d) => (
            Decision::Deny,
            d.to_string(),
            "-".to_owned(),
            None,
            Some(lanyard_attest::digest_hex(token.as_bytes())),
        ),
    };
    let recorded = state
        .issuer
        .record(
            AuditContext {
                correlation_id: &cid.0,
                actor: &actor,
                action: "token.review",
                evidence_digest: digest.as_deref(),
            },
            subject,
            tenant,
            decision,
            reason,
        )
        .await;
    if recorded.is_err() {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the review could not be audited; try again",
        );
    }
    let spec = json!({"token": token, "audiences": req.spec.audiences});
    let status_obj = match result {
        Ok(r) => json!({
            "authenticated": true,
            "user": r.user,
            "audiences": r.audiences,
        }),
        Err(d) => {
            tracing::info!(correlation_id = %cid.0, reason = d.reason.as_str(), detail = %d.detail, "token review: not authenticated");
            json!({
                "authenticated": false,
                "user": {},
                "error": format!("{} ({}); correlation id {}", crate::http::oauth::safe_text(d.reason), d.reason.as_str(), cid.0),
            })
        }
    };
    (
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "metadata": {"creationTimestamp": Value::Null},
            "spec": spec,
            "status": status_obj,
        })),
    )
        .into_response()
}

/// The caller: an admin token, a token-reviewer JWT-SVID, or the reviewed
/// token itself. Failed caller authentications are audited.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    token: &str,
) -> Result<Caller, (Response, String)> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(bearer) = bearer else {
        return Err((
            status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized"),
            "no bearer token".into(),
        ));
    };
    if bool::from(bearer.as_bytes().ct_eq(token.as_bytes())) {
        return Ok(Caller::SelfReview);
    }
    match crate::admin_token::verify(&*state.store, bearer).await {
        Ok(Some(id)) => return Ok(Caller::Admin(format!("admin:{id}"))),
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "admin token lookup failed");
            return Err((
                status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "try again",
                ),
                "store unavailable".into(),
            ));
        }
    }
    let audience = format!("{}{REVIEWER_AUDIENCE_SUFFIX}", state.settings.issuer);
    match state.exchange.verify_bearer(bearer, &audience) {
        Ok(p) if p.entry.token_reviewer => Ok(Caller::Reviewer(p.entry.spiffe_id.to_string())),
        Ok(p) => {
            let why = format!(
                "{} may not review tokens (its entry needs --token-reviewer)",
                p.entry.spiffe_id
            );
            Err((status(StatusCode::FORBIDDEN, "Forbidden", &why), why))
        }
        Err(d) => Err((
            status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized"),
            format!("bearer is no admin token and no token-reviewer JWT-SVID: {d}"),
        )),
    }
}
