//! Kubernetes TokenReview: the API server validates the token.
//!
//! Tested against a stub TokenReview server, since no Kubernetes API server
//! runs on the build machine; the request and response shapes follow
//! `authentication.k8s.io/v1`.

use std::time::Duration;

use lanyard_core::{Denial, DenyReason};
use serde_json::{json, Value};

use crate::claims::k8s_claims_from_review;
use crate::{IssuerConfig, KeySource};

const MAX_RESPONSE: usize = 256 * 1024;
/// TokenReview does not return the token's expiry; evidence from it is
/// treated as valid for this long (bounding the JWT-SVID lifetime).
const REVIEWED_VALIDITY_SECS: i64 = 600;

/// Asks the API server about `token`; returns claims shaped like a projected token's.
pub(crate) async fn review(
    http: &reqwest::Client,
    config: &IssuerConfig,
    token: &str,
    now: i64,
) -> Result<Value, Denial> {
    let KeySource::TokenReview {
        url,
        bearer_token_file,
        ca_file,
    } = &config.keys
    else {
        return Err(Denial::new(
            DenyReason::IssuerUnavailable,
            "not a TokenReview issuer",
        ));
    };
    let unavailable = |why: String| {
        Denial::new(
            DenyReason::IssuerUnavailable,
            format!("TokenReview at {url}: {why}"),
        )
    };
    let client = match ca_file {
        Some(ca) => {
            let pem = std::fs::read(ca)
                .map_err(|e| unavailable(format!("reading CA {}: {e}", ca.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| unavailable(format!("CA {}: {e}", ca.display())))?;
            reqwest::Client::builder()
                .add_root_certificate(cert)
                .build()
                .map_err(|e| unavailable(e.to_string()))?
        }
        None => http.clone(),
    };
    let body = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token, "audiences": [config.audience]},
    });
    let mut req = client.post(url).timeout(Duration::from_secs(5)).json(&body);
    if let Some(file) = bearer_token_file {
        let bearer = std::fs::read_to_string(file)
            .map_err(|e| unavailable(format!("reading bearer token {}: {e}", file.display())))?;
        req = req.bearer_auth(bearer.trim());
    }
    let resp = req.send().await.map_err(|e| unavailable(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(unavailable(format!("HTTP {}", resp.status().as_u16())));
    }
    let bytes = resp.bytes().await.map_err(|e| unavailable(e.to_string()))?;
    if bytes.len() > MAX_RESPONSE {
        return Err(unavailable("response too large".into()));
    }
    let review: Value =
        serde_json::from_slice(&bytes).map_err(|_| unavailable("response is not JSON".into()))?;
    let status = review
        .get("status")
        .ok_or_else(|| unavailable("response has no status".into()))?;
    if status.get("authenticated").and_then(Value::as_bool) != Some(true) {
        let why = status
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("not authenticated");
        return Err(Denial::new(
            DenyReason::BadSignature,
            format!(
                "TokenReview refused the token: {}",
                why.chars().take(200).collect::<String>()
            ),
        ));
    }
    let audiences: Vec<&str> = status
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !audiences.contains(&config.audience.as_str()) {
        return Err(Denial::new(
            DenyReason::WrongAudience,
            format!("TokenReview did not confirm audience {:?}", config.audience),
        ));
    }
    let user = status
        .get("user")
        .ok_or_else(|| Denial::new(DenyReason::MissingClaim, "TokenReview returned no user"))?;
    // The API server vouched for the token; its own exp is unknown here.
    let exp = now + REVIEWED_VALIDITY_SECS;
    k8s_claims_from_review(user, &config.issuer, &config.audience, exp)
}
