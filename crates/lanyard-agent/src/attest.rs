//! Workload attestation: the kernel's view of a Workload API caller
//! (`SO_PEERCRED` through tokio's `peer_cred`) turned into selectors by
//! [`lanyard_attest::workload`]: `unix:uid`, `unix:gid`, `unix:user`,
//! `unix:group`, supplementary groups, `unix:path`, `unix:sha256`, and with a
//! kubelet configured the caller's pod (`k8s:ns`, `k8s:sa`, `k8s:pod-uid`,
//! `k8s:pod-label`, `k8s:container-name`, `k8s:container-image`, …), with a
//! guard against pid reuse between the credential read and the /proc reads.

use lanyard_attest::workload::{WorkloadAttestError, WorkloadAttestor as Inner};
use lanyard_core::Selector;

pub use lanyard_attest::workload::{
    KubeletConfig, PeerCred, WorkloadAttestConfig as AttestConfig, WorkloadAttestation,
};

/// Why a caller could not be attested: the operator's reason (logged), the
/// stable code, and whether trying again may help.
#[derive(Debug)]
pub struct AttestFailure {
    /// Full reason, for the log.
    pub reason: String,
    /// Stable code, e.g. `pid_reused`.
    pub code: &'static str,
    /// What the caller may be told.
    pub caller_message: &'static str,
    /// A later call may succeed (e.g. the container is not in the pod status yet).
    pub retryable: bool,
}

impl From<WorkloadAttestError> for AttestFailure {
    fn from(e: WorkloadAttestError) -> Self {
        Self {
            reason: e.to_string(),
            code: e.code(),
            caller_message: e.caller_message(),
            retryable: e.is_retryable(),
        }
    }
}

/// Turns peer credentials into selectors.
#[derive(Debug, Clone)]
pub struct WorkloadAttestor {
    inner: Option<Inner>,
    config_error: Option<String>,
}

impl WorkloadAttestor {
    /// A new attestor; a bad configuration makes every call fail closed.
    pub fn new(config: AttestConfig) -> Self {
        match Inner::new(config) {
            Ok(inner) => Self {
                inner: Some(inner),
                config_error: None,
            },
            Err(e) => Self {
                inner: None,
                config_error: Some(e.to_string()),
            },
        }
    }

    /// The caller's selectors (sorted) with diagnostics.
    ///
    /// # Errors
    /// [`AttestFailure`]: the process vanished, its pid was reused, its uid
    /// does not match, its pod cannot be resolved (fail closed).
    pub async fn attest_full(&self, cred: PeerCred) -> Result<WorkloadAttestation, AttestFailure> {
        match &self.inner {
            Some(inner) => Ok(inner.attest(&cred).await?),
            None => Err(AttestFailure {
                reason: format!(
                    "workload attestation is misconfigured: {}",
                    self.config_error.as_deref().unwrap_or("?")
                ),
                code: "misconfigured",
                caller_message: "workload attestation is unavailable",
                retryable: false,
            }),
        }
    }

    /// The caller's selectors, sorted.
    ///
    /// # Errors
    /// As [`WorkloadAttestor::attest_full`].
    pub async fn attest(&self, cred: PeerCred) -> Result<Vec<Selector>, AttestFailure> {
        Ok(self.attest_full(cred).await?.selectors)
    }
}
