//! Token parsing and claim checks, and claims → selectors.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use lanyard_core::{Denial, DenyReason, Evidence, Selector, TenantId};
use lanyard_jose::{Algorithm, Header, JoseError, MAX_COMPACT_LEN};
use serde_json::{Map, Value};

use crate::{IssuerConfig, IssuerKind, TenantBinding, CLOCK_SKEW_SECS};

/// A token split and decoded but not verified: only for routing.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The JOSE header.
    pub header: Header,
    /// The claims object.
    pub claims: Map<String, Value>,
}

/// Splits and decodes a compact JWT without verifying it. Size is checked
/// first; every failure is a [`Denial`], never a panic.
///
/// # Errors
/// `TooLarge` or `Malformed`.
pub fn parse_unverified(token: &str) -> Result<Parsed, Denial> {
    if token.len() > MAX_COMPACT_LEN {
        return Err(Denial::new(
            DenyReason::TooLarge,
            format!(
                "token is {} bytes; the limit is {MAX_COMPACT_LEN}",
                token.len()
            ),
        ));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Denial::new(
            DenyReason::Malformed,
            "not three dot-separated parts",
        ));
    };
    let header_bytes = B64
        .decode(h)
        .map_err(|_| Denial::new(DenyReason::Malformed, "header is not base64url"))?;
    let header: Header = serde_json::from_slice(&header_bytes)
        .map_err(|_| Denial::new(DenyReason::Malformed, "header is not a JOSE header"))?;
    let payload = B64
        .decode(p)
        .map_err(|_| Denial::new(DenyReason::Malformed, "payload is not base64url"))?;
    let claims: Map<String, Value> = serde_json::from_slice(&payload)
        .map_err(|_| Denial::new(DenyReason::Malformed, "payload is not a JSON object"))?;
    Ok(Parsed { header, claims })
}

/// The header's algorithm, if the issuer allows it.
pub(crate) fn check_algorithm(header: &Header, config: &IssuerConfig) -> Result<Algorithm, Denial> {
    let alg: Algorithm = header.alg.parse().map_err(|_| {
        Denial::new(
            DenyReason::AlgorithmNotAllowed,
            format!(
                "algorithm {:?} is never accepted",
                header.alg.chars().take(16).collect::<String>()
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

pub(crate) fn jose_denial(e: &JoseError) -> Denial {
    let reason = match e {
        JoseError::UnsupportedAlgorithm { .. }
        | JoseError::AlgorithmNotAllowed { .. }
        | JoseError::AlgorithmMismatch { .. } => DenyReason::AlgorithmNotAllowed,
        JoseError::TooLarge { .. } => DenyReason::TooLarge,
        JoseError::UnknownKeyId { .. } => DenyReason::UnknownKey,
        JoseError::BadSignature => DenyReason::BadSignature,
        _ => DenyReason::Malformed,
    };
    Denial::new(reason, e.to_string())
}

/// `aud` as a list (a string or an array of strings).
pub(crate) fn audiences(claims: &Map<String, Value>) -> Vec<String> {
    match claims.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

fn int(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, Denial> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| Denial::new(DenyReason::Malformed, format!("{name} is not a number"))),
    }
}

/// `iss`, `aud`, `exp`, `nbf`, `iat`, lifetime.
pub(crate) fn check_times_and_audience(
    claims: &Value,
    config: &IssuerConfig,
    now: i64,
) -> Result<(), Denial> {
    let claims = claims
        .as_object()
        .ok_or_else(|| Denial::new(DenyReason::Malformed, "claims are not an object"))?;
    if claims.get("iss").and_then(Value::as_str) != Some(config.issuer.as_str()) {
        return Err(Denial::new(
            DenyReason::UnknownIssuer,
            "iss does not match the issuer exactly",
        ));
    }
    if !audiences(claims).iter().any(|a| a == &config.audience) {
        return Err(Denial::new(
            DenyReason::WrongAudience,
            format!("aud does not contain {:?}", config.audience),
        ));
    }
    if config.kind == IssuerKind::Kubernetes
        && is_legacy_k8s(claims)
        && !config.insecure_allow_legacy_tokens
    {
        return Err(Denial::new(
            DenyReason::LegacyToken,
            "legacy secret-based service-account token",
        ));
    }
    let exp = int(claims, "exp")?
        .ok_or_else(|| Denial::new(DenyReason::MissingClaim, "exp is required"))?;
    let nbf = int(claims, "nbf")?;
    let iat = int(claims, "iat")?;
    if exp + CLOCK_SKEW_SECS < now {
        return Err(Denial::new(
            DenyReason::Expired,
            format!("expired {}s ago", now - exp),
        ));
    }
    for (name, t) in [("nbf", nbf), ("iat", iat)] {
        if t.is_some_and(|t| t - CLOCK_SKEW_SECS > now) {
            return Err(Denial::new(
                DenyReason::NotYetValid,
                format!("{name} is in the future"),
            ));
        }
    }
    let start = iat.or(nbf).unwrap_or(now);
    let lifetime = exp.saturating_sub(start);
    if u64::try_from(lifetime).unwrap_or(u64::MAX) > config.max_token_lifetime_secs {
        return Err(Denial::new(
            DenyReason::LifetimeTooLong,
            format!(
                "token lives {lifetime}s; issuer {} allows {}s",
                config.name, config.max_token_lifetime_secs
            ),
        ));
    }
    Ok(())
}

fn is_legacy_k8s(claims: &Map<String, Value>) -> bool {
    claims.get("iss").and_then(Value::as_str) == Some("kubernetes/serviceaccount")
        || claims
            .keys()
            .any(|k| k.starts_with("kubernetes.io/serviceaccount/"))
}

/// Selectors, tenant and revocation keys from verified claims.
pub(crate) fn evidence(
    config: &IssuerConfig,
    claims: &Value,
    token: &str,
) -> Result<Evidence, Denial> {
    let obj = claims
        .as_object()
        .ok_or_else(|| Denial::new(DenyReason::Malformed, "claims are not an object"))?;
    let sub = obj
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let jti = obj.get("jti").and_then(Value::as_str).map(str::to_owned);
    let exp = int(obj, "exp")?.unwrap_or(0);
    let ty = config.kind.selector_type();
    let mut selectors = Vec::new();
    let mut revocation_keys = Vec::new();
    let mut push = |key: &str, value: &str| -> Result<(), Denial> {
        let s = Selector::new(ty, key, value)
            .map_err(|e| Denial::new(DenyReason::Malformed, format!("claim {key}: {e}")))?;
        selectors.push(s);
        Ok(())
    };
    match config.kind {
        IssuerKind::Kubernetes => {
            let k8s = k8s_identity(obj)?;
            push("ns", &k8s.namespace)?;
            push("sa", &k8s.sa_name)?;
            push("sa-uid", &k8s.sa_uid)?;
            revocation_keys.push(("k8s-sa-uid".to_owned(), k8s.sa_uid.clone()));
            for (key, v) in [
                ("pod-name", &k8s.pod_name),
                ("pod-uid", &k8s.pod_uid),
                ("node-name", &k8s.node_name),
                ("node-uid", &k8s.node_uid),
            ] {
                if let Some(v) = v {
                    push(key, v)?;
                }
            }
            if let Some(uid) = &k8s.pod_uid {
                revocation_keys.push(("k8s-pod-uid".to_owned(), uid.clone()));
            }
        }
        IssuerKind::GithubActions | IssuerKind::Gitlab => {
            let names: &[&str] = if config.kind == IssuerKind::GithubActions {
                GHA_CLAIMS
            } else {
                GITLAB_CLAIMS
            };
            for name in names {
                if let Some(v) = obj.get(*name).and_then(scalar) {
                    push(name, &v)?;
                }
            }
            if sub.is_empty() {
                return Err(Denial::new(DenyReason::MissingClaim, "sub is required"));
            }
        }
        IssuerKind::Oidc => {
            if sub.is_empty() {
                return Err(Denial::new(DenyReason::MissingClaim, "sub is required"));
            }
            push("sub", &sub)?;
            for (name, v) in obj {
                if ["iss", "aud", "exp", "nbf", "iat", "jti", "sub"].contains(&name.as_str()) {
                    continue;
                }
                let key_ok = !name.is_empty()
                    && name.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                    });
                if let (true, Some(Value::String(s))) = (key_ok, Some(v)) {
                    push(name, s)?;
                }
            }
        }
    }
    selectors.sort();
    selectors.dedup();
    if let Some(j) = &jti {
        revocation_keys.push(("jti".to_owned(), j.clone()));
    }
    revocation_keys.push(("subject".to_owned(), format!("{}:{sub}", config.issuer)));
    let tenant = match &config.tenant {
        TenantBinding::Fixed(t) => Some(t.clone()),
        TenantBinding::Claim(pointer) => claims
            .pointer(pointer)
            .and_then(Value::as_str)
            .and_then(|s| TenantId::parse(s).ok()),
    };
    Ok(Evidence {
        issuer: config.name.clone(),
        tenant,
        subject: sub,
        selectors,
        jti,
        expires_at: exp,
        digest: digest_hex(token.as_bytes()),
        revocation_keys,
    })
}

/// The GitHub Actions claims that become selectors.
const GHA_CLAIMS: &[&str] = &[
    "repository",
    "repository_owner",
    "repository_id",
    "repository_owner_id",
    "ref",
    "ref_type",
    "environment",
    "workflow",
    "workflow_ref",
    "job_workflow_ref",
    "actor",
    "actor_id",
    "event_name",
    "sha",
    "runner_environment",
];

/// The GitLab CI claims that become selectors.
const GITLAB_CLAIMS: &[&str] = &[
    "project_path",
    "project_id",
    "namespace_path",
    "namespace_id",
    "ref",
    "ref_type",
    "ref_protected",
    "environment",
    "environment_protected",
    "pipeline_source",
    "user_login",
    "ci_config_ref_uri",
];

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The `kubernetes.io` claim of a projected token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct K8sIdentity {
    pub namespace: String,
    pub sa_name: String,
    pub sa_uid: String,
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
    pub node_name: Option<String>,
    pub node_uid: Option<String>,
}

fn k8s_identity(obj: &Map<String, Value>) -> Result<K8sIdentity, Denial> {
    let k = obj
        .get("kubernetes.io")
        .ok_or_else(|| Denial::new(DenyReason::MissingClaim, "kubernetes.io claim is required"))?;
    let s = |path: &str| {
        k.pointer(path)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let need = |path: &str| {
        s(path).ok_or_else(|| {
            Denial::new(
                DenyReason::MissingClaim,
                format!("kubernetes.io{path} is required"),
            )
        })
    };
    Ok(K8sIdentity {
        namespace: need("/namespace")?,
        sa_name: need("/serviceaccount/name")?,
        sa_uid: need("/serviceaccount/uid")?,
        pod_name: s("/pod/name"),
        pod_uid: s("/pod/uid"),
        node_name: s("/node/name"),
        node_uid: s("/node/uid"),
    })
}

/// The same k8s identity from TokenReview's user info.
pub(crate) fn k8s_claims_from_review(
    user: &Value,
    issuer: &str,
    audience: &str,
    exp: i64,
) -> Result<Value, Denial> {
    let username = user.get("username").and_then(Value::as_str).unwrap_or("");
    let rest = username
        .strip_prefix("system:serviceaccount:")
        .ok_or_else(|| {
            Denial::new(
                DenyReason::MissingClaim,
                "TokenReview user is not a service account",
            )
        })?;
    let (ns, name) = rest
        .split_once(':')
        .ok_or_else(|| Denial::new(DenyReason::Malformed, "bad service-account username"))?;
    let uid = user.get("uid").and_then(Value::as_str).unwrap_or("");
    let extra = |k: &str| {
        user.pointer(&format!("/extra/authentication.kubernetes.io~1{k}/0"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let mut k8s =
        serde_json::json!({"namespace": ns, "serviceaccount": {"name": name, "uid": uid}});
    if let (Some(n), Some(u)) = (extra("pod-name"), extra("pod-uid")) {
        k8s["pod"] = serde_json::json!({"name": n, "uid": u});
    }
    if let (Some(n), Some(u)) = (extra("node-name"), extra("node-uid")) {
        k8s["node"] = serde_json::json!({"name": n, "uid": u});
    }
    Ok(
        serde_json::json!({"iss": issuer, "aud": [audience], "sub": username, "exp": exp, "kubernetes.io": k8s}),
    )
}

/// Lowercase hex SHA-256.
pub(crate) fn digest_hex(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
