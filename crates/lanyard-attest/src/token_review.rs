//! Kubernetes TokenReview: the cluster's API server decides whether a token
//! is valid (signature, expiry, and whether its pod and secret still exist).
//!
//! Request and response follow `authentication.k8s.io/v1`. Only a review
//! that says `authenticated: true`, confirms the configured audience and
//! names a service account (`system:serviceaccount:NS:NAME`) is accepted.
//! The tests run against a stub TokenReview server, since no Kubernetes API
//! server runs where they do.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use lanyard_core::{Denial, DenyReason};
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncReadExt as _;

use crate::config::{shown, IssuerConfig, KeySource};
use crate::fetch::FETCH_TIMEOUT;
use crate::kinds::K8sIdentity;

/// Largest TokenReview response read, in bytes.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// Largest bearer token file read, in bytes.
const MAX_BEARER_BYTES: u64 = 64 * 1024;
/// The bearer token file is re-read after this long (kubelet rotates it).
const BEARER_REREAD_SECS: i64 = 60;

/// A secret that never prints.
struct Bearer(String);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(***)")
    }
}

#[derive(Debug)]
struct CachedBearer {
    read_at: i64,
    token: Bearer,
}

/// One issuer's TokenReview client, built once with the attestor.
#[derive(Debug)]
pub(crate) struct Reviewer {
    url: String,
    bearer_file: Option<PathBuf>,
    bearer: ArcSwapOption<CachedBearer>,
    /// The client, or why none could be built (an unreadable CA file):
    /// then every token of the issuer is refused as `IssuerUnavailable`.
    client: Result<reqwest::Client, String>,
}

/// The API server's verdict, reduced to what Lanyard uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reviewed {
    pub username: String,
    pub identity: K8sIdentity,
}

#[derive(Debug, Deserialize)]
struct ReviewResponse {
    status: Option<ReviewStatus>,
}

#[derive(Debug, Deserialize)]
struct ReviewStatus {
    #[serde(default)]
    authenticated: Option<bool>,
    #[serde(default)]
    audiences: Option<Vec<String>>,
    #[serde(default)]
    user: Option<UserInfo>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct UserInfo {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    extra: Option<HashMap<String, Vec<String>>>,
}

impl Reviewer {
    /// Builds the client: the shared one, or one trusting only `ca_file`'s
    /// certificates. A CA file that cannot be used is logged and leaves the
    /// issuer unavailable rather than failing the whole issuer set.
    pub(crate) fn new(config: &IssuerConfig, shared: &reqwest::Client) -> Self {
        let (url, bearer_file, ca_file) = match &config.keys {
            KeySource::TokenReview {
                url,
                bearer_token_file,
                ca_file,
            } => (url.clone(), bearer_token_file.clone(), ca_file.clone()),
            _ => (String::new(), None, None),
        };
        let client = match &ca_file {
            None => Ok(shared.clone()),
            Some(path) => client_with_ca(path).inspect_err(|e| {
                tracing::error!(issuer = %config.name, error = %e, "TokenReview CA unusable; the issuer's tokens are refused");
            }),
        };
        Self {
            url,
            bearer_file,
            bearer: ArcSwapOption::empty(),
            client,
        }
    }

    /// Asks the API server about `token` for `audience`.
    pub(crate) async fn review(
        &self,
        token: &str,
        audience: &str,
        now: i64,
    ) -> Result<Reviewed, Denial> {
        let unavailable = |why: String| {
            Denial::new(
                DenyReason::IssuerUnavailable,
                format!("TokenReview at {}: {why}", self.url),
            )
        };
        let client = self.client.as_ref().map_err(|e| unavailable(e.clone()))?;
        let body = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [audience]},
        });
        let mut req = client
            .post(&self.url)
            .timeout(FETCH_TIMEOUT)
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&body);
        if let Some(bearer) = self.bearer(now).await.map_err(unavailable)? {
            req = req.bearer_auth(&bearer.token.0);
        }
        let mut resp = req.send().await.map_err(|e| unavailable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(unavailable(format!("HTTP {}", resp.status().as_u16())));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| unavailable(e.to_string()))? {
            if bytes.len().saturating_add(chunk.len()) > MAX_RESPONSE_BYTES {
                return Err(unavailable("response too large".into()));
            }
            bytes.extend_from_slice(&chunk);
        }
        let review: ReviewResponse = serde_json::from_slice(&bytes)
            .map_err(|_| unavailable("response is not a TokenReview".into()))?;
        let status = review
            .status
            .ok_or_else(|| unavailable("response has no status".into()))?;
        if status.authenticated != Some(true) {
            let why = status.error.as_deref().map_or_else(
                || "not authenticated".to_owned(),
                |e| e.chars().filter(|c| !c.is_control()).take(200).collect(),
            );
            return Err(Denial::new(
                DenyReason::BadSignature,
                format!("the API server did not authenticate the token: {why}"),
            ));
        }
        if !status
            .audiences
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|a| a == audience)
        {
            return Err(Denial::new(
                DenyReason::WrongAudience,
                format!("the API server did not confirm audience {audience:?}"),
            ));
        }
        let user = status.user.ok_or_else(|| {
            Denial::new(DenyReason::MissingClaim, "the TokenReview names no user")
        })?;
        identity(user)
    }

    async fn bearer(&self, now: i64) -> Result<Option<Arc<CachedBearer>>, String> {
        let Some(path) = &self.bearer_file else {
            return Ok(None);
        };
        if let Some(cached) = self.bearer.load_full() {
            if now >= cached.read_at && now.saturating_sub(cached.read_at) < BEARER_REREAD_SECS {
                return Ok(Some(cached));
            }
        }
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| format!("reading bearer token file {}: {e}", path.display()))?;
        let mut text = String::new();
        file.take(MAX_BEARER_BYTES)
            .read_to_string(&mut text)
            .await
            .map_err(|e| format!("reading bearer token file {}: {e}", path.display()))?;
        let token = text.trim().to_owned();
        if token.is_empty() {
            return Err(format!("bearer token file {} is empty", path.display()));
        }
        let cached = Arc::new(CachedBearer {
            read_at: now,
            token: Bearer(token),
        });
        self.bearer.store(Some(cached.clone()));
        Ok(Some(cached))
    }
}

fn client_with_ca(path: &PathBuf) -> Result<reqwest::Client, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("reading CA file {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("CA file {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("CA file {} has no certificate", path.display()));
    }
    reqwest::Client::builder()
        .connect_timeout(FETCH_TIMEOUT)
        .timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .tls_certs_only(certs)
        .build()
        .map_err(|e| format!("building the TokenReview client: {e}"))
}

/// `system:serviceaccount:NS:NAME`, uid and the pod/node extras.
fn identity(user: UserInfo) -> Result<Reviewed, Denial> {
    let username = user.username.unwrap_or_default();
    let not_sa = || {
        Denial::new(
            DenyReason::MissingClaim,
            format!(
                "the API server authenticated {:?}, which is not a service account",
                shown(&username)
            ),
        )
    };
    let (namespace, name) = username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains(':'))
        .ok_or_else(not_sa)?;
    let (namespace, name) = (namespace.to_owned(), name.to_owned());
    let sa_uid = user
        .uid
        .filter(|u| !u.is_empty())
        .ok_or_else(|| Denial::new(DenyReason::MissingClaim, "the TokenReview user has no uid"))?;
    let extra = user.extra.unwrap_or_default();
    let get = |k: &str| {
        extra
            .get(&format!("authentication.kubernetes.io/{k}"))
            .and_then(|v| v.first())
            .filter(|v| !v.is_empty())
            .cloned()
    };
    Ok(Reviewed {
        identity: K8sIdentity {
            namespace,
            sa_name: name,
            sa_uid,
            pod_name: get("pod-name"),
            pod_uid: get("pod-uid"),
            node_name: get("node-name"),
            node_uid: get("node-uid"),
        },
        username,
    })
}
