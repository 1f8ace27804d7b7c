//! `admission.k8s.io/v1` AdmissionReview in, AdmissionReview out: the one
//! code path behind both `lanyard webhook` and `lanyard webhook render`.
//!
//! A body that is not an AdmissionReview at all (not JSON, wrong
//! `apiVersion`/`kind`, no `request.uid`) gets [`BadReview`] (HTTP 400): there
//! is nothing to answer. Everything else gets a review response: allowed
//! (with a JSON patch when the pod changed, and warnings `kubectl` shows) or
//! denied with a message that names the bad input and the fix.

use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::accounts::ServiceAccounts;
use crate::config::FailureMode;
use crate::metrics::Metrics;
use crate::mutate::{Denial, Mutator};
use crate::{patch, spinapp};

/// The only AdmissionReview version served.
pub const API_VERSION: &str = "admission.k8s.io/v1";
/// Longest `request.uid` echoed back (the API server sends a UUID).
const MAX_UID_LEN: usize = 256;
/// Most warnings returned; a pod with a thousand typos gets a summary line.
const MAX_WARNINGS: usize = 16;
/// Longest warning returned (kubectl shows each on one line).
const MAX_WARNING_LEN: usize = 512;

/// Bounds what goes back to the API server, whatever the input.
fn bound(mut warnings: Vec<String>) -> Vec<String> {
    let extra = warnings.len().saturating_sub(MAX_WARNINGS);
    warnings.truncate(MAX_WARNINGS);
    for w in &mut warnings {
        if w.len() > MAX_WARNING_LEN {
            let mut end = MAX_WARNING_LEN;
            while !w.is_char_boundary(end) {
                end -= 1;
            }
            w.truncate(end);
            w.push('…');
        }
    }
    if extra > 0 {
        warnings.push(format!("… and {extra} more warnings"));
    }
    warnings
}

/// A body that is not an AdmissionReview the webhook can answer.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BadReview {
    /// Not JSON, or not the AdmissionReview shape.
    #[error("the body is not an AdmissionReview: {0}")]
    Malformed(String),
    /// Another `apiVersion` or `kind`.
    #[error("expected apiVersion admission.k8s.io/v1, kind AdmissionReview; got apiVersion {api_version:?}, kind {kind:?} (set admissionReviewVersions: [\"v1\"] in the webhook configuration)")]
    WrongVersion {
        /// What was sent.
        api_version: String,
        /// What was sent.
        kind: String,
    },
    /// No `request`, or no usable `request.uid`.
    #[error(
        "the AdmissionReview has no request.uid (or one longer than 256 characters) to answer"
    )]
    NoUid,
}

/// The answer to one review, before it is written as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Reviewed {
    /// `request.uid`.
    pub uid: String,
    /// Whether the object is admitted.
    pub allowed: bool,
    /// HTTP-style code of a denial (400 bad input, 500 webhook trouble).
    pub code: Option<u16>,
    /// The denial's message, or a short note on an admission.
    pub message: String,
    /// RFC 6902 operations (empty: unchanged).
    pub patch: Vec<Value>,
    /// Admission warnings.
    pub warnings: Vec<String>,
    /// The object as it was sent (for `render` to apply the patch to).
    pub object: Value,
}

impl Reviewed {
    fn allowed(uid: String) -> Self {
        Self {
            uid,
            allowed: true,
            code: None,
            message: String::new(),
            patch: Vec::new(),
            warnings: Vec::new(),
            object: Value::Null,
        }
    }

    /// The AdmissionReview response document.
    pub fn to_review(&self) -> Value {
        let mut response = serde_json::Map::new();
        response.insert("uid".into(), json!(self.uid));
        response.insert("allowed".into(), json!(self.allowed));
        if let Some(code) = self.code {
            response.insert(
                "status".into(),
                json!({"status": "Failure", "code": code, "message": self.message}),
            );
        }
        if !self.patch.is_empty() {
            let bytes = serde_json::to_vec(&self.patch).unwrap_or_default();
            response.insert("patchType".into(), json!("JSONPatch"));
            response.insert(
                "patch".into(),
                json!(base64::engine::general_purpose::STANDARD.encode(bytes)),
            );
        }
        if !self.warnings.is_empty() {
            response.insert("warnings".into(), json!(self.warnings));
        }
        json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response})
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawReview {
    api_version: Option<String>,
    kind: Option<String>,
    request: Option<RawRequest>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRequest {
    uid: Option<String>,
    kind: Option<Gvk>,
    namespace: Option<String>,
    operation: Option<String>,
    object: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct Gvk {
    #[serde(default)]
    group: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    kind: String,
}

/// One parsed request.
struct Request {
    uid: String,
    kind: Gvk,
    namespace: Option<String>,
    operation: String,
    object: Value,
}

impl Request {
    /// `request.namespace` (as upstream: pods of controllers have none in
    /// their metadata), else the object's, else `default`.
    fn namespace(&self) -> String {
        self.namespace
            .clone()
            .or_else(|| crate::pod::str_at(&self.object, "/metadata/namespace").map(str::to_owned))
            .unwrap_or_else(|| "default".to_owned())
    }
}

fn parse(body: &[u8]) -> Result<Request, BadReview> {
    let raw: RawReview =
        serde_json::from_slice(body).map_err(|e| BadReview::Malformed(e.to_string()))?;
    let (api_version, kind) = (
        raw.api_version.unwrap_or_default(),
        raw.kind.unwrap_or_default(),
    );
    if api_version != API_VERSION || kind != "AdmissionReview" {
        return Err(BadReview::WrongVersion { api_version, kind });
    }
    let req = raw.request.ok_or(BadReview::NoUid)?;
    let uid = req
        .uid
        .filter(|u| !u.is_empty() && u.len() <= MAX_UID_LEN)
        .ok_or(BadReview::NoUid)?;
    Ok(Request {
        uid,
        kind: req.kind.unwrap_or_default(),
        namespace: req.namespace.filter(|n| !n.is_empty()),
        operation: req.operation.unwrap_or_default(),
        object: req.object.unwrap_or(Value::Null),
    })
}

/// Why a pod was (not) changed, for `render` and the logs.
fn explain(plan: &crate::mutate::Plan, account: Option<&ServiceAccount>, ops: usize) -> String {
    let role_arn = account
        .and_then(|sa| crate::mutate::sa_annotation(sa, crate::mutate::eks::ROLE_ARN_ANNOTATION))
        .is_some_and(|a| !a.is_empty());
    let mut applied = Vec::new();
    if plan.azure {
        applied.push("azure");
    }
    if plan.aws && role_arn {
        applied.push("eks");
    }
    if plan.lanyard {
        applied.push("lanyard");
    }
    if ops > 0 {
        return format!(
            "mutated ({}): {ops} JSON patch operations",
            applied.join(", ")
        );
    }
    if !applied.is_empty() {
        return format!(
            "unchanged: the pod already has what {} gives it",
            applied.join(", ")
        );
    }
    let mut why = format!(
        "unchanged: no convention applies: the pod has no {}: \"true\" or {}: \"true\" label",
        crate::mutate::AZURE_USE_LABEL,
        crate::mutate::LANYARD_USE_LABEL
    );
    if plan.aws {
        match account {
            None => why.push_str(&format!(
                ", and its service account {:?} was not found, so eks.amazonaws.com/role-arn cannot apply",
                plan.service_account
            )),
            Some(_) => why.push_str(&format!(
                ", and its service account {:?} has no eks.amazonaws.com/role-arn annotation",
                plan.service_account
            )),
        }
    }
    why
}

/// The webhook: mutation rules, where service accounts come from, and what
/// to do when they cannot be read.
#[derive(Debug, Clone)]
pub struct Webhook {
    mutator: Mutator,
    accounts: ServiceAccounts,
    on_api_error: FailureMode,
    metrics: Arc<Metrics>,
}

impl Webhook {
    /// Assembles a webhook.
    pub fn new(
        mutator: Mutator,
        accounts: ServiceAccounts,
        on_api_error: FailureMode,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            mutator,
            accounts,
            on_api_error,
            metrics,
        }
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Answers a pod AdmissionReview (`POST /mutate-v1-pod`).
    ///
    /// # Errors
    /// [`BadReview`] when the body is not an answerable AdmissionReview.
    pub async fn review_pod(&self, body: &[u8]) -> Result<Reviewed, BadReview> {
        let started = Instant::now();
        let req = self.parse_counted("pod", body, started)?;
        let (reviewed, result) = self.pod(req).await;
        Ok(self.finish("pod", reviewed, result, started))
    }

    /// Answers a SpinApp AdmissionReview (`POST /validate-spinapp`).
    ///
    /// # Errors
    /// [`BadReview`] when the body is not an answerable AdmissionReview.
    pub async fn review_spinapp(&self, body: &[u8]) -> Result<Reviewed, BadReview> {
        let started = Instant::now();
        let req = self.parse_counted("spinapp", body, started)?;
        let (reviewed, result) = self.spinapp(req).await;
        Ok(self.finish("spinapp", reviewed, result, started))
    }

    fn parse_counted(
        &self,
        webhook: &'static str,
        body: &[u8],
        started: Instant,
    ) -> Result<Request, BadReview> {
        parse(body).inspect_err(|_| {
            self.metrics
                .admission(webhook, "bad_request", started.elapsed())
        })
    }

    fn finish(
        &self,
        webhook: &'static str,
        mut r: Reviewed,
        result: &'static str,
        started: Instant,
    ) -> Reviewed {
        r.warnings = bound(std::mem::take(&mut r.warnings));
        self.metrics.admission(webhook, result, started.elapsed());
        r
    }

    async fn pod(&self, req: Request) -> (Reviewed, &'static str) {
        let namespace = req.namespace();
        let mut out = Reviewed::allowed(req.uid);
        let deny = |mut out: Reviewed, d: Denial| {
            out.allowed = false;
            out.code = Some(d.code);
            out.message = d.message;
            (out, "denied")
        };
        let (group, version, kind) = (&req.kind.group, &req.kind.version, &req.kind.kind);
        if !(group.is_empty() && version == "v1" && kind == "Pod") {
            return deny(
                out,
                Denial::bad(format!(
                    "this webhook mutates v1 Pods; the review is for {}{version} {kind:?}: fix the rules of the MutatingWebhookConfiguration (resources: [pods], apiGroups: [\"\"], apiVersions: [v1])",
                    if group.is_empty() { String::new() } else { format!("{group}/") }
                )),
            );
        }
        if req.operation != "CREATE" {
            out.message = format!("operation {:?} is not mutated (only CREATE)", req.operation);
            return (out, "unchanged");
        }
        if let Err(e) = Pod::deserialize(&req.object) {
            return deny(
                out,
                Denial::bad(format!("request.object is not a valid v1 Pod: {e}")),
            );
        }
        let pod_name = crate::mutate::azure::pod_name_for_hash(&req.object);
        out.object = req.object;
        let mut plan = self.mutator.plan(&out.object);
        out.warnings.extend(plan.warnings.iter().cloned());
        let account = if plan.needs_service_account() {
            match self.accounts.fetch(&namespace, &plan.service_account).await {
                Ok(sa) => sa,
                // Only EKS wanted the account: the pod did not ask for an
                // identity by label, and every pod of the cluster reaches
                // this entry, so an API outage must not block them all. As
                // the EKS webhook, admit without that convention (logged).
                Err(e) if !plan.azure => {
                    tracing::error!(namespace = %namespace, pod = %pod_name, error = %e, "service account unreadable; EKS convention not applied");
                    out.warnings.push(format!(
                        "{e}; the EKS convention (eks.amazonaws.com/role-arn) was not applied"
                    ));
                    plan.aws = false;
                    None
                }
                Err(e) => match self.on_api_error {
                    FailureMode::Deny => {
                        tracing::error!(namespace = %namespace, pod = %pod_name, error = %e, "service account unreadable; pod denied (on_api_error = deny)");
                        return deny(
                            out,
                            Denial {
                                code: 500,
                                message: format!("{e}; the pod is refused because the webhook's on_api_error is \"deny\""),
                            },
                        );
                    }
                    FailureMode::Allow => {
                        tracing::error!(namespace = %namespace, pod = %pod_name, error = %e, "service account unreadable; pod admitted unchanged (on_api_error = allow)");
                        out.warnings.push(format!(
                            "{e}; the pod is admitted WITHOUT workload identity because the webhook's on_api_error is \"allow\": delete it once the webhook can read the API"
                        ));
                        return (out, "allowed_on_api_error");
                    }
                },
            }
        } else {
            None
        };
        let mut mutated = out.object.clone();
        let mut warnings = Vec::new();
        if let Err(d) = self
            .mutator
            .apply(&mut mutated, &plan, account.as_ref(), &mut warnings)
        {
            tracing::info!(namespace = %namespace, pod = %pod_name, reason = %d.message, "pod denied");
            out.warnings.extend(warnings);
            return deny(out, d);
        }
        out.warnings.extend(warnings);
        out.patch = patch::diff(&out.object, &mutated);
        out.message = explain(&plan, account.as_ref(), out.patch.len());
        let result = if out.patch.is_empty() {
            "unchanged"
        } else {
            "mutated"
        };
        tracing::debug!(namespace = %namespace, pod = %pod_name, operations = out.patch.len(), azure = plan.azure, aws = plan.aws, lanyard = plan.lanyard, "pod admitted");
        (out, result)
    }

    async fn spinapp(&self, req: Request) -> (Reviewed, &'static str) {
        let namespace = req.namespace();
        let mut out = Reviewed::allowed(req.uid);
        let verdict = if req.kind.group != spinapp::GROUP || req.kind.kind != "SpinApp" {
            Err(Denial::bad(format!(
                "this webhook validates {}/{} SpinApps; the review is for {}/{} {:?}: fix the rules of the ValidatingWebhookConfiguration",
                spinapp::GROUP, spinapp::VERSION, req.kind.group, req.kind.version, req.kind.kind
            )))
        } else if req.operation != "CREATE" && req.operation != "UPDATE" {
            Ok(Vec::new())
        } else {
            spinapp::validate(&req.object, &namespace, &self.accounts, self.on_api_error).await
        };
        let result = match verdict {
            Ok(warnings) => {
                out.warnings = warnings;
                "unchanged"
            }
            Err(d) => {
                out.allowed = false;
                out.code = Some(d.code);
                out.message = d.message;
                "denied"
            }
        };
        out.object = req.object;
        (out, result)
    }
}
