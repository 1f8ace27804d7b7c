//! The token request form (RFC 8693 §2.1, and the RFC 7523 client-assertion
//! form Azure-style SDKs send): parsed and checked for shape only. Pure, and
//! fuzzed (`fuzz/fuzz_targets/token_request.rs`).

use std::collections::BTreeSet;
use std::time::Duration;

use lanyard_core::{Denial, DenyReason};

/// RFC 8693 §2.1 grant type.
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 6749 §4.4 with an RFC 7523 client assertion (Azure-style SDKs).
pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
/// RFC 7523 client assertion type.
pub const ASSERTION_JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// RFC 8693 §3 token types.
pub const TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// An OIDC ID token.
pub const TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
/// An OAuth access token.
pub const TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// Lanyard's requested token type for brokered PostgreSQL credentials; the
/// broker role (`backend/role`) is the `resource` (or `audience`).
pub const TYPE_POSTGRES_CREDENTIALS: &str = "urn:lanyard:params:token-type:postgres-credentials";

/// Most audiences one request may ask for.
const MAX_AUDIENCES: usize = 16;
/// Longest single parameter value other than tokens.
const MAX_PARAM: usize = 1024;

/// What the caller asked for, parsed and checked for shape.
#[derive(Debug, Clone, Default)]
pub struct ExchangeRequest {
    /// The subject token (or client assertion).
    pub subject_token: String,
    /// The actor token, for delegation.
    pub actor_token: Option<String>,
    /// Requested audiences (`audience` and `resource`).
    pub audiences: Vec<String>,
    /// Requested scopes (space-separated `scope`).
    pub scope: Option<Vec<String>>,
    /// Issue with `issued_token_type` access_token (`Bearer`) rather than jwt.
    pub as_access_token: bool,
    /// The tenant the caller expects.
    pub tenant: Option<String>,
    /// Requested lifetime (`expires_in`, seconds; a Lanyard extension).
    pub ttl: Option<Duration>,
    /// Brokered credentials for this role (`backend/role`) instead of a token.
    pub broker_role: Option<String>,
}

/// Parses an `application/x-www-form-urlencoded` token request (RFC 8693 §2.1).
///
/// # Errors
/// A [`Denial`] with `InvalidRequest` naming the parameter, or
/// `UnsupportedTokenType`.
pub fn parse_form(body: &[u8]) -> Result<ExchangeRequest, Denial> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|_| {
        Denial::new(
            DenyReason::InvalidRequest,
            "body is not application/x-www-form-urlencoded",
        )
    })?;
    let mut seen = BTreeSet::new();
    let mut req = ExchangeRequest::default();
    let mut grant = None;
    let mut subject_type = None;
    let mut actor_type = None;
    let mut requested_type = None;
    let mut assertion_type = None;
    let mut assertion = None;
    for (name, value) in pairs {
        let repeatable = matches!(name.as_str(), "audience" | "resource");
        if !repeatable && !seen.insert(name.clone()) {
            return Err(Denial::new(
                DenyReason::InvalidRequest,
                format!("parameter {} is given more than once", short(&name)),
            ));
        }
        let is_token = matches!(
            name.as_str(),
            "subject_token" | "actor_token" | "client_assertion"
        );
        if !is_token && value.len() > MAX_PARAM {
            return Err(Denial::new(
                DenyReason::InvalidRequest,
                format!("parameter {} is too long", short(&name)),
            ));
        }
        match name.as_str() {
            "grant_type" => grant = Some(value),
            // Tokens read from files often end with a newline: trim ASCII
            // whitespace around them, never inside (issue 9).
            "subject_token" => req.subject_token = value.trim_ascii().to_owned(),
            "subject_token_type" => subject_type = Some(value),
            "actor_token" => req.actor_token = Some(value.trim_ascii().to_owned()),
            "actor_token_type" => actor_type = Some(value),
            "audience" | "resource" => {
                if req.audiences.len() >= MAX_AUDIENCES {
                    return Err(Denial::new(
                        DenyReason::InvalidRequest,
                        "too many audiences",
                    ));
                }
                if !value.is_empty() && !req.audiences.contains(&value) {
                    req.audiences.push(value);
                }
            }
            "scope" => {
                req.scope = Some(
                    value
                        .split(' ')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                )
            }
            "requested_token_type" => requested_type = Some(value),
            "tenant" => req.tenant = Some(value),
            "expires_in" => {
                let secs: u64 = value.parse().map_err(|_| {
                    Denial::new(
                        DenyReason::InvalidRequest,
                        "expires_in is not a number of seconds",
                    )
                })?;
                req.ttl = Some(Duration::from_secs(secs));
            }
            "client_assertion_type" => assertion_type = Some(value),
            "client_assertion" => assertion = Some(value.trim_ascii().to_owned()),
            // RFC 6749 §3.2.1 / Azure SDKs send these; they carry nothing we trust.
            "client_id" => {}
            _ => {}
        }
    }
    match grant.as_deref() {
        Some(GRANT_TOKEN_EXCHANGE) => {
            if req.subject_token.is_empty() {
                return Err(Denial::new(
                    DenyReason::InvalidRequest,
                    "subject_token is required",
                ));
            }
            match subject_type.as_deref() {
                Some(TYPE_JWT | TYPE_ID_TOKEN | TYPE_ACCESS_TOKEN) => {}
                Some(other) => {
                    return Err(Denial::new(
                        DenyReason::InvalidRequest,
                        format!("subject_token_type {} is not supported", short(other)),
                    ))
                }
                None => {
                    return Err(Denial::new(
                        DenyReason::InvalidRequest,
                        "subject_token_type is required",
                    ))
                }
            }
            match (&req.actor_token, actor_type.as_deref()) {
                (None, None) => {}
                (Some(_), Some(TYPE_JWT | TYPE_ID_TOKEN | TYPE_ACCESS_TOKEN)) => {}
                (Some(_), None) => {
                    return Err(Denial::new(
                        DenyReason::InvalidRequest,
                        "actor_token_type is required with actor_token",
                    ))
                }
                (None, Some(_)) => {
                    return Err(Denial::new(
                        DenyReason::InvalidRequest,
                        "actor_token_type without actor_token",
                    ))
                }
                (Some(_), Some(other)) => {
                    return Err(Denial::new(
                        DenyReason::InvalidRequest,
                        format!("actor_token_type {} is not supported", short(other)),
                    ))
                }
            }
        }
        Some(GRANT_CLIENT_CREDENTIALS) => {
            if assertion_type.as_deref() != Some(ASSERTION_JWT_BEARER) {
                return Err(Denial::new(
                    DenyReason::InvalidRequest,
                    format!(
                        "client_credentials needs client_assertion_type={ASSERTION_JWT_BEARER}"
                    ),
                ));
            }
            req.subject_token = assertion.ok_or_else(|| {
                Denial::new(DenyReason::InvalidRequest, "client_assertion is required")
            })?;
            if req.audiences.is_empty() {
                // Azure-style SDKs name the target as `scope=<resource>/.default`.
                if let Some(scopes) = req.scope.take() {
                    req.audiences = scopes
                        .iter()
                        .map(|s| s.strip_suffix("/.default").unwrap_or(s).to_owned())
                        .collect();
                }
            }
        }
        Some(other) => {
            return Err(Denial::new(
                DenyReason::UnsupportedTokenType,
                format!("grant_type {} is not supported", short(other)),
            ))
        }
        None => {
            return Err(Denial::new(
                DenyReason::InvalidRequest,
                "grant_type is required",
            ))
        }
    }
    req.as_access_token = match requested_type.as_deref() {
        None | Some(TYPE_JWT) => false,
        Some(TYPE_ACCESS_TOKEN) => true,
        Some(TYPE_POSTGRES_CREDENTIALS) => {
            match req.audiences.as_slice() {
                [role] => req.broker_role = Some(role.clone()),
                _ => {
                    return Err(Denial::new(
                        DenyReason::InvalidRequest,
                        "postgres-credentials needs exactly one resource (or audience): the broker role, e.g. appdb/readonly",
                    ))
                }
            }
            false
        }
        Some(other) => {
            return Err(Denial::new(
                DenyReason::InvalidRequest,
                format!("requested_token_type {} is not supported", short(other)),
            ))
        }
    };
    if req.audiences.is_empty() {
        return Err(Denial::new(
            DenyReason::InvalidRequest,
            "audience (or resource) is required: tokens are audience-scoped",
        ));
    }
    Ok(req)
}

/// Bounded, printable echo of caller input for messages.
fn short(s: &str) -> String {
    lanyard_core::text::shown(s, 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
        serde_urlencoded::to_string(pairs)
            .unwrap_or_default()
            .into_bytes()
    }

    const BASE: &[(&str, &str)] = &[
        ("grant_type", GRANT_TOKEN_EXCHANGE),
        ("subject_token", "t"),
        ("subject_token_type", TYPE_JWT),
        ("audience", "a"),
    ];

    #[test]
    fn parses_a_full_request() {
        let mut p = BASE.to_vec();
        p.extend([
            ("audience", "b"),
            ("resource", "https://r"),
            ("scope", "read  write"),
            ("requested_token_type", TYPE_ACCESS_TOKEN),
        ]);
        let r = parse_form(&form(&p));
        let r = r.as_ref().map_err(|d| d.to_string());
        assert_eq!(
            r.map(|r| (r.audiences.clone(), r.scope.clone(), r.as_access_token)),
            Ok((
                vec!["a".into(), "b".into(), "https://r".into()],
                Some(vec!["read".into(), "write".into()]),
                true
            ))
        );
    }

    #[test]
    fn refuses_bad_shapes_with_the_parameter_named() {
        let with = |extra: &[(&str, &str)], drop: &str| {
            let mut p: Vec<(&str, &str)> =
                BASE.iter().copied().filter(|(k, _)| *k != drop).collect();
            p.extend_from_slice(extra);
            parse_form(&form(&p))
                .err()
                .map(|d| (d.reason, d.detail))
                .unwrap_or((DenyReason::Revoked, "accepted".into()))
        };
        let cases: Vec<((DenyReason, String), DenyReason, &str)> = vec![
            (
                with(&[], "grant_type"),
                DenyReason::InvalidRequest,
                "grant_type",
            ),
            (
                with(&[("grant_type", "password")], "grant_type"),
                DenyReason::UnsupportedTokenType,
                "grant_type",
            ),
            (
                with(&[], "subject_token"),
                DenyReason::InvalidRequest,
                "subject_token",
            ),
            (
                with(&[], "subject_token_type"),
                DenyReason::InvalidRequest,
                "subject_token_type",
            ),
            (
                with(&[("subject_token_type", "urn:x")], "subject_token_type"),
                DenyReason::InvalidRequest,
                "subject_token_type",
            ),
            (
                with(&[], "audience"),
                DenyReason::InvalidRequest,
                "audience",
            ),
            (
                with(&[("subject_token", "u")], ""),
                DenyReason::InvalidRequest,
                "more than once",
            ),
            (
                with(&[("grant_type", GRANT_TOKEN_EXCHANGE)], ""),
                DenyReason::InvalidRequest,
                "more than once",
            ),
            (
                with(
                    &[(
                        "requested_token_type",
                        "urn:ietf:params:oauth:token-type:saml2",
                    )],
                    "",
                ),
                DenyReason::InvalidRequest,
                "requested_token_type",
            ),
            (
                with(&[("actor_token", "x")], ""),
                DenyReason::InvalidRequest,
                "actor_token_type",
            ),
            (
                with(&[("actor_token_type", TYPE_JWT)], ""),
                DenyReason::InvalidRequest,
                "actor_token",
            ),
            (
                with(&[("expires_in", "soon")], ""),
                DenyReason::InvalidRequest,
                "expires_in",
            ),
        ];
        for (got, reason, needle) in cases {
            assert_eq!(got.0, reason, "{needle}: {}", got.1);
            assert!(got.1.contains(needle), "{needle}: {}", got.1);
        }
        assert!(parse_form(b"%%%=\xff").is_err());
    }

    // issue 9: tokens read from files often end with a newline.
    #[test]
    fn whitespace_around_tokens_is_trimmed_never_inside() {
        let mut p = BASE.to_vec();
        p.retain(|(k, _)| *k != "subject_token");
        p.extend([
            ("subject_token", "  a.b.c\r\n"),
            ("actor_token", "\tx.y.z\n"),
            ("actor_token_type", TYPE_JWT),
        ]);
        let r = parse_form(&form(&p)).map_err(|d| d.to_string());
        assert_eq!(
            r.map(|r| (r.subject_token, r.actor_token)),
            Ok(("a.b.c".into(), Some("x.y.z".into())))
        );
        let mut p = BASE.to_vec();
        p.retain(|(k, _)| *k != "subject_token");
        p.push(("subject_token", "a.b \n.c"));
        let r = parse_form(&form(&p)).map(|r| r.subject_token).ok();
        assert_eq!(r.as_deref(), Some("a.b \n.c"), "inside is left alone");
        let mut p = BASE.to_vec();
        p.retain(|(k, _)| *k != "subject_token");
        p.push(("subject_token", " \n "));
        assert!(parse_form(&form(&p)).is_err(), "blank is missing");
    }

    #[test]
    fn client_assertion_form_maps_scope_to_audience() {
        let p = [
            ("grant_type", "client_credentials"),
            ("client_assertion_type", ASSERTION_JWT_BEARER),
            ("client_assertion", "jwt"),
            ("scope", "api://AzureADTokenExchange/.default"),
            ("client_id", "x"),
        ];
        let r = parse_form(&form(&p)).map_err(|d| d.to_string());
        assert_eq!(
            r.map(|r| (r.subject_token, r.audiences)),
            Ok(("jwt".into(), vec!["api://AzureADTokenExchange".into()]))
        );
    }
}
