//! `lanyard webhook render`: one pod through [`Webhook::review_pod`], the
//! webhook's own code path, with the service account from a file.
//!
//! The object may be a Pod or a workload with a pod template; the pod is
//! then built as its controller would (no name yet, `generateName` set),
//! which matters for Azure v1.6's hashed volume name.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value};

use crate::accounts::ServiceAccounts;
use crate::config::{FailureMode, MutationConfig};
use crate::metrics::Metrics;
use crate::mutate::Mutator;
use crate::{patch, Webhook};

/// What `render` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Rendered {
    /// Whether the pod would be admitted.
    pub allowed: bool,
    /// Why it was refused, or what was done.
    pub message: String,
    /// The JSON patch the webhook answers with.
    pub patch: Vec<Value>,
    /// The pod as the API server would store it (the patch applied).
    pub pod: Value,
    /// Admission warnings (`kubectl` prints them).
    pub warnings: Vec<String>,
    /// The pod before mutation (for the text diff; not printed as JSON).
    #[serde(skip)]
    pub original: Value,
}

/// Why an input cannot be rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// The object is neither a Pod nor a workload with a pod template.
    #[error("{0}")]
    NotAPod(String),
    /// The service account file is not a ServiceAccount.
    #[error("the service account is not a v1 ServiceAccount: {0}")]
    BadServiceAccount(String),
    /// The webhook refused the review itself (should not happen for a pod).
    #[error("{0}")]
    Review(String),
}

/// The pod `object` stands for: itself, or its pod template.
///
/// # Errors
/// [`RenderError::NotAPod`] naming the kind and what is accepted.
pub fn pod_of(object: &Value) -> Result<Value, RenderError> {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    let template = match kind {
        "Pod" | "" => return Ok(object.clone()),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" | "ReplicationController" => {
            object.pointer("/spec/template")
        }
        "CronJob" => object.pointer("/spec/jobTemplate/spec/template"),
        other => {
            return Err(RenderError::NotAPod(format!(
                "the file holds a {other}; give a Pod or a Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or CronJob"
            )))
        }
    };
    let template =
        template.ok_or_else(|| RenderError::NotAPod(format!("the {kind} has no pod template")))?;
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("workload");
    let mut metadata = template
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(m) = metadata.as_object_mut() {
        // Deployments' pods are named <rs>-<hash>; the hash is unknown here,
        // so the name stays unset as at admission and generateName shows the workload.
        m.insert("generateName".into(), json!(format!("{name}-")));
        if let Some(ns) = object.pointer("/metadata/namespace") {
            m.insert("namespace".into(), ns.clone());
        }
    }
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    }))
}

/// Runs the webhook on one pod.
///
/// `native_sidecar` is where Azure's proxy sidecar goes when the config does
/// not say (`render` assumes a current cluster, ≥ 1.32).
///
/// # Errors
/// [`RenderError`] for inputs that are not a pod or service account.
pub async fn render(
    object: &Value,
    service_account: Option<&Value>,
    namespace: Option<&str>,
    config: MutationConfig,
) -> Result<Rendered, RenderError> {
    let pod = pod_of(object)?;
    let accounts = match service_account {
        Some(sa) => vec![serde_json::from_value(sa.clone())
            .map_err(|e| RenderError::BadServiceAccount(e.to_string()))?],
        None => Vec::new(),
    };
    let native = config
        .azure
        .as_ref()
        .and_then(|a| a.native_sidecar)
        .unwrap_or(true);
    let webhook = Webhook::new(
        Mutator::new(config, native),
        ServiceAccounts::Fixed(accounts),
        FailureMode::Deny,
        Arc::new(Metrics::new()),
    );
    let namespace = namespace
        .map(str::to_owned)
        .or_else(|| {
            pod.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "default".to_owned());
    let review = json!({
        "apiVersion": crate::admission::API_VERSION,
        "kind": "AdmissionReview",
        "request": {
            "uid": "lanyard-webhook-render",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "object": &pod,
        }
    });
    let body = serde_json::to_vec(&review).map_err(|e| RenderError::Review(e.to_string()))?;
    let reviewed = webhook
        .review_pod(&body)
        .await
        .map_err(|e| RenderError::Review(e.to_string()))?;
    let mut result = pod.clone();
    patch::apply(&mut result, &reviewed.patch)
        .map_err(|e| RenderError::Review(format!("the webhook's patch does not apply: {e}")))?;
    Ok(Rendered {
        allowed: reviewed.allowed,
        message: reviewed.message,
        patch: reviewed.patch,
        pod: result,
        warnings: reviewed.warnings,
        original: pod,
    })
}
