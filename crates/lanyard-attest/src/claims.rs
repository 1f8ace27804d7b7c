//! The checks every token passes whatever its kind: algorithm, `iss`,
//! `aud`, `exp`/`nbf`/`iat` with bounded skew, and maximum lifetime.

use lanyard_core::{Denial, DenyReason};
use lanyard_jose::{Algorithm, Header, JoseError};
use serde_json::{Map, Value};

use crate::config::{shown, IssuerConfig, IssuerKind, LEGACY_K8S_ISSUER};
use crate::CLOCK_SKEW_SECS;

/// The header's algorithm, when the issuer allows it. `none`, HMAC and
/// anything else Lanyard does not implement are refused here, before any
/// key is looked at.
pub(crate) fn check_algorithm(header: &Header, config: &IssuerConfig) -> Result<Algorithm, Denial> {
    let alg: Algorithm = header.alg.parse().map_err(|_| {
        Denial::new(
            DenyReason::AlgorithmNotAllowed,
            format!(
                "algorithm {:?} is never accepted (only ES256 and RS256 exist here)",
                header
                    .alg
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(16)
                    .collect::<String>()
            ),
        )
    })?;
    if !config.algorithms.contains(&alg) {
        return Err(Denial::new(
            DenyReason::AlgorithmNotAllowed,
            format!("issuer {} does not allow {alg}", config.name),
        ));
    }
    Ok(alg)
}

/// The denial for a failed `lanyard_jose::verify_compact` (every verifier of
/// a JWS uses this one mapping).
pub fn jose_denial(e: &JoseError) -> Denial {
    let reason = match e {
        JoseError::UnsupportedAlgorithm { .. }
        | JoseError::AlgorithmNotAllowed { .. }
        | JoseError::AlgorithmMismatch { .. } => DenyReason::AlgorithmNotAllowed,
        JoseError::TooLarge { .. } => DenyReason::TooLarge,
        JoseError::UnknownKeyId { .. } => DenyReason::UnknownKey,
        JoseError::BadSignature => DenyReason::BadSignature,
        _ => DenyReason::Malformed,
    };
    // JoseError's messages carry no key material and only truncated kids.
    Denial::new(reason, e.to_string())
}

/// Whether a token routed to a Kubernetes issuer is a legacy secret-based
/// service-account token.
pub(crate) fn is_legacy_k8s(claims: &Map<String, Value>) -> bool {
    claims.get("iss").and_then(Value::as_str) == Some(LEGACY_K8S_ISSUER)
        || claims
            .keys()
            .any(|k| k.starts_with("kubernetes.io/serviceaccount/"))
}

/// Refuses legacy Kubernetes tokens unless the issuer allows them; returns
/// whether the token is one (and allowed).
pub(crate) fn check_legacy(
    config: &IssuerConfig,
    claims: &Map<String, Value>,
) -> Result<bool, Denial> {
    if config.kind != IssuerKind::Kubernetes || !is_legacy_k8s(claims) {
        return Ok(false);
    }
    if !config.insecure_allow_legacy_tokens {
        return Err(legacy_denial());
    }
    Ok(true)
}

pub(crate) fn legacy_denial() -> Denial {
    Denial::new(
        DenyReason::LegacyToken,
        "legacy secret-based service-account token (no audience, no expiry); mount a projected token with the issuer's audience",
    )
}

/// The validity window of a token that passed [`check_claims`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Validity {
    /// `exp`, or for an allowed legacy token without one, `now` plus
    /// [`crate::LEGACY_EVIDENCE_SECS`].
    pub expires_at: i64,
    /// `exp - min(iat, nbf)`, when known.
    pub lifetime: Option<i64>,
}

/// `iss` exact, `aud` contains the configured audience, `exp` present and
/// not past, `nbf`/`iat` not in the future, lifetime within the maximum.
/// `legacy` (an allowed legacy token) waives the audience and expiry
/// requirements, which such tokens cannot meet.
pub(crate) fn check_claims(
    config: &IssuerConfig,
    claims: &Map<String, Value>,
    now: i64,
    legacy: bool,
) -> Result<Validity, Denial> {
    match claims.get("iss") {
        Some(Value::String(iss)) if *iss == config.issuer => {}
        _ => {
            return Err(Denial::new(
                DenyReason::UnknownIssuer,
                format!("iss is not exactly {:?}", config.issuer),
            ))
        }
    }
    if !legacy {
        check_audience(claims, &config.audience)?;
    }
    let exp = numeric_date(claims, "exp")?;
    let nbf = numeric_date(claims, "nbf")?;
    let iat = numeric_date(claims, "iat")?;
    let exp = match exp {
        Some(exp) => exp,
        None if legacy => now.saturating_add(crate::LEGACY_EVIDENCE_SECS),
        None => return Err(Denial::new(DenyReason::MissingClaim, "exp is required")),
    };
    if exp.saturating_add(CLOCK_SKEW_SECS) < now {
        return Err(Denial::new(
            DenyReason::Expired,
            format!(
                "expired {}s ago (skew allowed: {CLOCK_SKEW_SECS}s)",
                now.saturating_sub(exp)
            ),
        ));
    }
    for (name, t) in [("nbf", nbf), ("iat", iat)] {
        if let Some(t) = t {
            if t.saturating_sub(CLOCK_SKEW_SECS) > now {
                return Err(Denial::new(
                    DenyReason::NotYetValid,
                    format!(
                        "{name} is {}s in the future (skew allowed: {CLOCK_SKEW_SECS}s)",
                        t.saturating_sub(now)
                    ),
                ));
            }
        }
    }
    let start = match (iat, nbf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let lifetime = start.map(|s| exp.saturating_sub(s));
    // Without iat or nbf, what is left of the token must fit instead.
    let measured = lifetime.unwrap_or_else(|| exp.saturating_sub(now));
    if measured < 0 {
        return Err(Denial::new(DenyReason::Malformed, "exp is before iat/nbf"));
    }
    if u64::try_from(measured).unwrap_or(u64::MAX) > config.max_token_lifetime_secs {
        return Err(Denial::new(
            DenyReason::LifetimeTooLong,
            format!(
                "token lives {measured}s; issuer {} allows at most {}s",
                config.name, config.max_token_lifetime_secs
            ),
        ));
    }
    Ok(Validity {
        expires_at: exp,
        lifetime,
    })
}

/// `aud` (a string or an array of strings) must contain `audience`.
pub(crate) fn check_audience(claims: &Map<String, Value>, audience: &str) -> Result<(), Denial> {
    let found = match claims.get("aud") {
        None | Some(Value::Null) => {
            return Err(Denial::new(DenyReason::MissingClaim, "aud is required"))
        }
        Some(Value::String(s)) => s == audience,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(audience)),
        Some(_) => {
            return Err(Denial::new(
                DenyReason::Malformed,
                "aud is neither a string nor an array",
            ))
        }
    };
    if found {
        Ok(())
    } else {
        Err(Denial::new(
            DenyReason::WrongAudience,
            format!("aud does not contain {audience:?}"),
        ))
    }
}

/// Whether the token's `aud` contains `audience` (for choosing between
/// issuers that share an `iss`).
pub(crate) fn has_audience(claims: &Map<String, Value>, audience: &str) -> bool {
    match claims.get("aud") {
        Some(Value::String(s)) => s == audience,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(audience)),
        _ => false,
    }
}

/// A NumericDate claim (RFC 7519 §2): whole or fractional seconds,
/// truncated, saturating at the `i64` range.
pub(crate) fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, Denial> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else if n.as_u64().is_some() {
                Ok(Some(i64::MAX))
            } else {
                // Finite by construction (JSON has no NaN or infinity); the
                // cast saturates.
                #[allow(clippy::cast_possible_truncation)]
                Ok(n.as_f64().map(|f| f.floor() as i64))
            }
        }
        Some(_) => Err(Denial::new(
            DenyReason::Malformed,
            format!("{name} is not a number of seconds"),
        )),
    }
}

/// A string claim: `Ok(None)` when absent, `Malformed` when not a string.
pub(crate) fn opt_str<'a>(
    claims: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, Denial> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Denial::new(
            DenyReason::Malformed,
            format!("{} is not a string", shown(name)),
        )),
    }
}
