//! The one renderer of RFC 6749 §5.2 errors, for the token endpoint and the
//! broker. The description says what kind of problem it was, never the
//! operator detail (which may name entries or other tenants); the detail is
//! in the audit event under the correlation id.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use lanyard_core::{Denial, DenyReason};

/// An OAuth-style error answer.
#[derive(Debug, Clone)]
pub struct OAuthError {
    /// HTTP status.
    pub status: StatusCode,
    /// The `error` code.
    pub code: &'static str,
    /// The `error_description`, safe for the caller.
    pub description: String,
    /// The request's correlation id.
    pub correlation_id: String,
    /// `WWW-Authenticate` (for bearer-token endpoints).
    pub www_authenticate: Option<&'static str>,
}

impl OAuthError {
    /// The answer for a denial.
    pub fn denial(d: &Denial, correlation_id: &str) -> Self {
        use DenyReason as R;
        let (status, code) = match d.reason {
            R::InvalidRequest | R::TooLarge | R::RequestTooLarge => {
                (StatusCode::BAD_REQUEST, "invalid_request")
            }
            R::UnsupportedTokenType => (StatusCode::BAD_REQUEST, "unsupported_grant_type"),
            R::AudienceNotAllowed | R::AudienceProfile => {
                (StatusCode::BAD_REQUEST, "invalid_target")
            }
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
        Self {
            status,
            code,
            description,
            correlation_id: correlation_id.to_owned(),
            www_authenticate: None,
        }
    }

    /// 503: nothing was issued because the decision could not be audited.
    pub fn unaudited(correlation_id: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the decision could not be audited; nothing was issued",
            correlation_id,
        )
    }

    /// Any other error.
    pub fn new(
        status: StatusCode,
        code: &'static str,
        description: impl Into<String>,
        correlation_id: &str,
    ) -> Self {
        Self {
            status,
            code,
            description: description.into(),
            correlation_id: correlation_id.to_owned(),
            www_authenticate: None,
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": self.code,
            "error_description": format!("{}; correlation id {}", self.description, self.correlation_id),
            "correlation_id": self.correlation_id,
        });
        let mut resp = (
            self.status,
            [(header::CACHE_CONTROL, "no-store")],
            Json(body),
        )
            .into_response();
        if let Some(v) = self.www_authenticate {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(v));
        }
        resp
    }
}

/// What a denial means, in words safe for any caller.
pub fn safe_text(r: DenyReason) -> &'static str {
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
        R::RequestTooLarge => "the request is larger than the server accepts",
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
        R::ReservedId => "the identity is reserved for the Lanyard server and its nodes",
        _ => "the request was refused",
    }
}
