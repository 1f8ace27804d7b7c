//! What a pod gets: the three conventions, decided and applied in one place.
//!
//! [`Mutator::plan`] reads the pod's labels and says which conventions apply
//! and whether the service account is needed; the caller reads it (from the
//! API, or a file for `render`); [`Mutator::apply`] edits the pod. Order:
//! Azure (proxy containers first, as upstream, so they get the Azure env
//! too), then EKS, then Lanyard. Every step is idempotent: admitting the
//! mutated pod again changes nothing (the API server's
//! `reinvocationPolicy: IfNeeded` does that).

pub mod azure;
pub mod eks;
pub mod lanyard;

use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::Value;

use crate::config::MutationConfig;
use crate::pod;

/// The pod label that opts a pod into Azure Workload Identity.
pub const AZURE_USE_LABEL: &str = "azure.workload.identity/use";
/// The pod label that opts a pod into Lanyard's convention.
pub const LANYARD_USE_LABEL: &str = "lanyard.io/use";

/// A refused pod: the HTTP-style code and the message `kubectl` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// 400 for a bad pod or service account (as upstream), 500 for ours.
    pub code: u16,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Denial {
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self {
            code: 400,
            message: message.into(),
        }
    }
}

/// Which conventions apply to one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The pod is labelled for Azure and Azure is configured.
    pub azure: bool,
    /// EKS is configured (whether it applies depends on the service account).
    pub aws: bool,
    /// The pod is labelled for Lanyard and Lanyard's convention is on.
    pub lanyard: bool,
    /// The pod's service account (`default` when the pod names none).
    pub service_account: String,
    /// Things the user should know (admission warnings).
    pub warnings: Vec<String>,
}

impl Plan {
    /// Whether the service account must be read.
    pub fn needs_service_account(&self) -> bool {
        self.azure || self.aws
    }
}

/// Applies the configured conventions to pods.
#[derive(Debug, Clone)]
pub struct Mutator {
    config: MutationConfig,
    native_sidecar: bool,
}

impl Mutator {
    /// `native_sidecar`: put Azure's proxy sidecar in initContainers with
    /// `restartPolicy: Always` (API server ≥ 1.32), as upstream decides.
    pub fn new(config: MutationConfig, native_sidecar: bool) -> Self {
        Self {
            config,
            native_sidecar,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &MutationConfig {
        &self.config
    }

    /// Decides which conventions apply to `pod`.
    pub fn plan(&self, pod: &Value) -> Plan {
        let mut warnings = Vec::new();
        let azure = use_label(pod, AZURE_USE_LABEL, &mut warnings)
            && match &self.config.azure {
                Some(_) => true,
                None => {
                    warnings.push(format!(
                        "{AZURE_USE_LABEL}=true but this webhook has no [webhook.azure] configuration: the pod gets no Azure identity"
                    ));
                    false
                }
            };
        let lanyard = use_label(pod, LANYARD_USE_LABEL, &mut warnings)
            && match &self.config.lanyard {
                Some(_) => true,
                None => {
                    warnings.push(format!(
                        "{LANYARD_USE_LABEL}=true but [webhook.lanyard] is disabled: the pod gets no Lanyard token or socket"
                    ));
                    false
                }
            };
        if self.config.azure.is_some() {
            azure::warn_unknown_pod_annotations(pod, &mut warnings);
        }
        let service_account = match pod::str_at(pod, "/spec/serviceAccountName") {
            Some(sa) if !sa.is_empty() => sa.to_owned(),
            _ => "default".to_owned(),
        };
        Plan {
            azure,
            aws: self.config.aws.is_some(),
            lanyard,
            service_account,
            warnings,
        }
    }

    /// Applies `plan` to `pod`. `service_account` is `None` when it does not
    /// exist (or was not read because the plan did not need it).
    ///
    /// # Errors
    /// A [`Denial`] when the pod must be refused (missing service account for
    /// Azure, a bad annotation value, a proxy sidecar that cannot be injected).
    pub fn apply(
        &self,
        pod: &mut Value,
        plan: &Plan,
        service_account: Option<&ServiceAccount>,
        warnings: &mut Vec<String>,
    ) -> Result<(), Denial> {
        if let (true, Some(cfg)) = (plan.azure, &self.config.azure) {
            let Some(sa) = service_account else {
                // Upstream's message, word for word (TestHandleError).
                return Err(Denial::bad(format!(
                    "serviceaccounts \"{}\" not found",
                    plan.service_account
                )));
            };
            azure::mutate(pod, sa, cfg, self.native_sidecar, warnings)?;
        }
        if let (true, Some(cfg), Some(sa)) = (plan.aws, &self.config.aws, service_account) {
            eks::mutate(pod, sa, cfg, warnings);
        }
        if let (true, Some(cfg)) = (plan.lanyard, &self.config.lanyard) {
            lanyard::mutate(pod, cfg, warnings)?;
        }
        Ok(())
    }
}

/// Whether the label is exactly `"true"` (the objectSelector's match); any
/// other value is reported, since it looks like an attempt.
fn use_label(pod: &Value, key: &str, warnings: &mut Vec<String>) -> bool {
    match pod::label(pod, key) {
        Some("true") => true,
        Some(other) => {
            warnings.push(format!(
                "label {key}={other:?} is not \"true\" (exactly): the pod is not mutated for it"
            ));
            false
        }
        None => false,
    }
}

/// An annotation of the service account.
pub(crate) fn sa_annotation<'a>(sa: &'a ServiceAccount, key: &str) -> Option<&'a str> {
    sa.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// `namespace/name` of a service account, for messages.
pub(crate) fn sa_ref(sa: &ServiceAccount) -> String {
    format!(
        "{}/{}",
        sa.metadata.namespace.as_deref().unwrap_or(""),
        sa.metadata.name.as_deref().unwrap_or("")
    )
}

#[cfg(test)]
mod tests;
