//! What every handler extracts: the admin caller ([`Admin`]), a JSON body
//! whose rejections name the problem ([`Body`]), and the store-error
//! mapping ([`StoreResultExt`]).

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::Json;
use lanyard_core::Decision;
use lanyard_store::{AuditDraft, StoreError};
use serde::de::DeserializeOwned;

use crate::correlation::unix_millis;
use crate::error::ApiError;
use crate::state::{AppState, CorrelationId};

/// An authenticated admin caller.
#[derive(Debug, Clone)]
pub struct Admin {
    /// `admin:<token id>`, as audit events name it.
    pub actor: String,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    /// # Security
    /// Every failed authentication is audited (not only logged), with the
    /// token's public id when it has the admin-token shape, never the token.
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(presented) = presented else {
            refuse(state, parts, "-", "no admin bearer token").await?;
            return Err(ApiError::Unauthorized);
        };
        match crate::admin_token::verify(&*state.store, presented).await {
            Ok(Some(id)) => Ok(Self {
                actor: format!("admin:{id}"),
            }),
            Ok(None) => {
                tracing::info!("admin call refused: bad token");
                let id = presented
                    .split('.')
                    .nth(1)
                    .filter(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
                    .map_or_else(|| "-".to_owned(), |id| format!("admin:{id}"));
                refuse(state, parts, &id, "bad admin token").await?;
                Err(ApiError::Unauthorized)
            }
            Err(e) => {
                tracing::error!(error = %e, "admin token lookup failed");
                Err(ApiError::Unavailable)
            }
        }
    }
}

async fn refuse(
    state: &AppState,
    parts: &Parts,
    subject: &str,
    reason: &str,
) -> Result<(), ApiError> {
    let cid = parts
        .extensions
        .get::<CorrelationId>()
        .map_or_else(crate::correlation::new_id, |c| c.0.clone());
    let path: String = parts.uri.path().chars().take(128).collect();
    let draft = AuditDraft {
        at_ms: unix_millis(state.clock.now()),
        correlation_id: cid,
        actor: "unauthenticated".into(),
        action: "admin.authenticate".into(),
        subject: subject.to_owned(),
        tenant: None,
        decision: Decision::Deny,
        reason: format!(
            "{reason} ({} {})",
            parts.method,
            lanyard_core::text::shown(&path, 128)
        ),
        evidence_digest: None,
    };
    state
        .audit
        .append(draft)
        .await
        .map(|_| ())
        .map_err(|_| ApiError::Unavailable)
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

/// Maps store results to [`ApiError`]s: existence errors go to the caller,
/// the rest is logged under the correlation id and answered as internal.
pub trait StoreResultExt<T> {
    /// The mapping.
    ///
    /// # Errors
    /// The mapped error.
    fn api(self, cid: &CorrelationId) -> Result<T, ApiError>;
}

impl<T> StoreResultExt<T> for Result<T, StoreError> {
    fn api(self, cid: &CorrelationId) -> Result<T, ApiError> {
        self.map_err(|e| ApiError::from_store(e, &cid.0))
    }
}
