//! Errors: [`ServerError`] for start-up and jobs, [`ApiError`] for responses.
//!
//! `ApiError` is the one place that maps an error to an HTTP status and an
//! OAuth-style JSON body (`error`, `error_description`). Internal causes are
//! logged with the correlation id by the handler that saw them and never
//! written into the response.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use lanyard_jose::Algorithm;
use lanyard_store::StoreError;

/// Start-up and background-job failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Key handling failed (wrong KEK, corrupt key).
    #[error(transparent)]
    Keys(#[from] lanyard_ca::CaError),
    /// A stored key row is unusable.
    #[error("stored signing key is unusable: {0}")]
    StoredKey(String),
    /// An algorithm has no keys because it is not enabled.
    #[error("algorithm {alg} is not enabled; add it to keys.algorithms")]
    NotEnabled {
        /// The algorithm asked for.
        alg: Algorithm,
    },
    /// TLS files could not be loaded.
    #[error("loading TLS certificate {cert} / key {key}: {source}")]
    Tls {
        /// Certificate path.
        cert: String,
        /// Key path.
        key: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The audit log is no longer append-only in the database.
    #[error("the audit table's append-only triggers are missing or disabled, so the database no longer refuses edits and deletions of audit events; restore them (they are in the store's first migration) and run `lanyard audit verify` before starting the server")]
    AuditNotAppendOnly,
    /// The federation bundle endpoint cannot be set up.
    #[error("federation bundle endpoint: {0}")]
    Federation(String),
    /// Binding or serving failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// An error answered to an HTTP caller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No or bad credentials.
    #[error("a valid admin bearer token is required")]
    Unauthorized,
    /// The request is malformed; the message names the field.
    #[error("{0}")]
    BadRequest(String),
    /// The named thing does not exist.
    #[error("{0} does not exist")]
    NotFound(String),
    /// The change conflicts with what exists; the message says how.
    #[error("{0}")]
    Conflict(String),
    /// The body exceeds the limit.
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The service cannot answer now (store down, no keys).
    #[error("service unavailable: the store cannot be reached (or the signing keys are not loaded); nothing was issued or changed. Retry shortly")]
    Unavailable,
    /// Something failed inside; details are in the log under the correlation id.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable `error` code of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::BadRequest(_) => "invalid_request",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge { .. } => "request_too_large",
            Self::Unavailable => "temporarily_unavailable",
            Self::Internal => "server_error",
        }
    }

    /// Maps a store error: existence errors go to the caller, the rest is
    /// logged and answered as internal.
    pub fn from_store(e: StoreError, correlation_id: &str) -> Self {
        match e {
            StoreError::Conflict { what } => Self::Conflict(format!("{what} already exists")),
            StoreError::InUse { what } => Self::Conflict(what),
            StoreError::NotFound { what } => Self::NotFound(what),
            other if other.is_unavailable() => {
                tracing::warn!(correlation_id, error = %other, "store unavailable; answering 503");
                Self::Unavailable
            }
            other => {
                tracing::error!(correlation_id, error = %other, "store error");
                Self::Internal
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            serde_json::json!({ "error": self.code(), "error_description": self.to_string() });
        let mut resp = (self.status(), axum::Json(body)).into_response();
        if matches!(self, Self::Unauthorized) {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"lanyard-admin\""),
            );
        }
        resp
    }
}
