//! The validating webhook for SpinApps (`spinapps.core.spinkube.dev/v1alpha1`).
//!
//! The SKIP's `spec.workloadIdentity` never shipped; what ships is
//! `spec.serviceAccountName` and `spec.podLabels`, which spin-operator copies
//! onto the Deployment's pod template (the pods are then mutated by the pod
//! webhook like any other). A SpinApp that asks for workload identity through
//! `podLabels` (`azure.workload.identity/use: "true"` or `lanyard.io/use:
//! "true"`) is refused here when:
//! - its service account (`spec.serviceAccountName`, else `default`, as
//!   spin-operator does) does not exist, or
//! - for Azure, that account has no (or an empty) `azure.workload.identity/client-id`.
//!
//! Without this, the first sign of the mistake is a pod that spin-operator's
//! Deployment cannot create, or one that starts without an identity.

use serde_json::Value;

use crate::accounts::ServiceAccounts;
use crate::config::FailureMode;
use crate::mutate::azure::CLIENT_ID_ANNOTATION;
use crate::mutate::{sa_annotation, Denial, AZURE_USE_LABEL, LANYARD_USE_LABEL};
use crate::pod;

/// The SpinApp API group.
pub const GROUP: &str = "core.spinkube.dev";
/// The SpinApp API version.
pub const VERSION: &str = "v1alpha1";
/// The label spin-operator puts on a SpinApp's Deployment and pods.
pub const APP_NAME_LABEL: &str = "core.spinkube.dev/app-name";

/// Checks one SpinApp; `Ok` carries admission warnings.
///
/// # Errors
/// A [`Denial`] that says what to fix.
pub async fn validate(
    app: &Value,
    namespace: &str,
    accounts: &ServiceAccounts,
    on_api_error: FailureMode,
) -> Result<Vec<String>, Denial> {
    let name = pod::str_at(app, "/metadata/name").unwrap_or("");
    let labels = app.pointer("/spec/podLabels");
    let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
    let azure = label(AZURE_USE_LABEL) == Some("true");
    let lanyard = label(LANYARD_USE_LABEL) == Some("true");
    let mut warnings = Vec::new();
    for key in [AZURE_USE_LABEL, LANYARD_USE_LABEL] {
        if let Some(v) = label(key).filter(|v| *v != "true") {
            warnings.push(format!(
                "spec.podLabels[{key:?}] is {v:?}, not \"true\": the SpinApp's pods get no workload identity from it"
            ));
        }
    }
    if !azure && !lanyard {
        return Ok(warnings);
    }
    let sa_name = match pod::str_at(app, "/spec/serviceAccountName") {
        Some(s) if !s.is_empty() => s,
        _ => "default",
    };
    let wants = if azure {
        format!("Azure workload identity (spec.podLabels[{AZURE_USE_LABEL:?}] = \"true\")")
    } else {
        format!("Lanyard workload identity (spec.podLabels[{LANYARD_USE_LABEL:?}] = \"true\")")
    };
    let account = match accounts.fetch(namespace, sa_name).await {
        Ok(a) => a,
        Err(e) => match on_api_error {
            FailureMode::Deny => {
                tracing::error!(namespace, spinapp = name, error = %e, "service account unreadable; SpinApp denied (on_api_error = deny)");
                return Err(Denial {
                    code: 500,
                    message: format!("{e}; the SpinApp is refused because the webhook's on_api_error is \"deny\""),
                });
            }
            FailureMode::Allow => {
                tracing::error!(namespace, spinapp = name, error = %e, "service account unreadable; SpinApp admitted unchecked (on_api_error = allow)");
                warnings.push(format!("{e}; the SpinApp was not checked"));
                return Ok(warnings);
            }
        },
    };
    let Some(account) = account else {
        let which = if sa_name == "default"
            && pod::str_at(app, "/spec/serviceAccountName").is_none()
        {
            "spec.serviceAccountName is not set, so its pods run as \"default\", which".to_owned()
        } else {
            format!("spec.serviceAccountName {sa_name:?}")
        };
        let create = if azure {
            format!("create it with the annotation {CLIENT_ID_ANNOTATION}: <the managed identity's client id>")
        } else {
            "create it".to_owned()
        };
        return Err(Denial::bad(format!(
            "SpinApp {namespace}/{name} asks for {wants}, but {which} does not exist in namespace {namespace}: {create} (kubectl create serviceaccount {sa_name} -n {namespace}), or set spec.serviceAccountName to an existing service account"
        )));
    };
    if azure
        && sa_annotation(&account, CLIENT_ID_ANNOTATION)
            .unwrap_or("")
            .is_empty()
    {
        return Err(Denial::bad(format!(
            "SpinApp {namespace}/{name} asks for {wants}, but service account {namespace}/{sa_name} has no {CLIENT_ID_ANNOTATION} annotation, so its pods would get no AZURE_CLIENT_ID: run kubectl annotate serviceaccount {sa_name} -n {namespace} {CLIENT_ID_ANNOTATION}=<the managed identity's client id>"
        )));
    }
    Ok(warnings)
}
