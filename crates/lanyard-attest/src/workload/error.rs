//! Why a caller could not be attested.

use std::path::PathBuf;

/// Why [`crate::workload::WorkloadAttestor::attest`] refused a caller, or
/// why an attestor could not be built.
///
/// The `Display` text is for the operator (agent log, `lanyard explain`);
/// callers of the Workload API get [`WorkloadAttestError::caller_message`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadAttestError {
    /// The process exited before or while it was attested.
    #[error("process {pid} is gone (it exited before its /proc entries could be read)")]
    ProcessGone {
        /// The caller's pid.
        pid: i32,
    },
    /// The process start time changed between the first and the last
    /// `/proc` read: the pid now names another process.
    #[error("process {pid} changed while it was attested (start time {before} then {after} clock ticks): its pid was reused; refused")]
    PidReused {
        /// The caller's pid.
        pid: i32,
        /// Start time at the first read.
        before: u64,
        /// Start time at the last read.
        after: u64,
    },
    /// `/proc/PID/status` names another effective uid than the socket's
    /// peer credentials (the process changed uid, or the pid was reused).
    #[error("process {pid} runs as uid {proc_uid} but connected as uid {peer_uid}; refused")]
    UidMismatch {
        /// The caller's pid.
        pid: i32,
        /// The uid from the peer credentials.
        peer_uid: u32,
        /// The effective uid in `/proc/PID/status`.
        proc_uid: u32,
    },
    /// A required `/proc` file could not be read.
    #[error("reading {}: {source}", path.display())]
    ProcRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A required `/proc` file is not in the kernel's format.
    #[error("{}: {reason}", path.display())]
    ProcParse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: &'static str,
    },
    /// `/proc/PID/cgroup` places the process in two different pods or
    /// containers.
    #[error("process {pid}: /proc/{pid}/cgroup names two different pods or containers ({first} and {second}); refused")]
    AmbiguousCgroup {
        /// The caller's pid.
        pid: i32,
        /// One placement, `pod UID/container ID`.
        first: String,
        /// The other.
        second: String,
    },
    /// The kubelet could not be asked, or its answer was unusable.
    /// Retryable.
    #[error("kubelet at {url}: {reason}")]
    KubeletUnavailable {
        /// The kubelet's `/pods` URL.
        url: String,
        /// What went wrong (no token text).
        reason: String,
    },
    /// The caller's pod is not in the kubelet's pod list (yet). Retryable.
    #[error("pod {pod_uid} (from the caller's cgroup) is not in the kubelet's pod list yet; retry shortly")]
    PodNotFound {
        /// The pod UID from the cgroup.
        pod_uid: String,
    },
    /// The caller's container is not (yet) in its pod's status: attesting
    /// would give pod selectors without container ones. Retryable.
    #[error("container {container_id} is not in the status of pod {namespace}/{pod_name} yet (starting?); retry shortly")]
    ContainerNotFound {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        pod_name: String,
        /// The container ID from the cgroup.
        container_id: String,
    },
    /// The configuration is unusable.
    #[error("workload attestation config: {field}: {message}")]
    Config {
        /// The setting, e.g. `k8s.ca_file`.
        field: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The blocking task reading `/proc` panicked or was cancelled.
    #[error("the workload attestation task failed")]
    TaskFailed,
}

impl WorkloadAttestError {
    /// Whether the same caller may succeed shortly (its container is
    /// starting, the kubelet is unreachable): the agent can retry or tell
    /// the caller to.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::KubeletUnavailable { .. }
                | Self::PodNotFound { .. }
                | Self::ContainerNotFound { .. }
        )
    }

    /// A stable code for logs, metrics and audit events, e.g.
    /// `pid_reused`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ProcessGone { .. } => "process_gone",
            Self::PidReused { .. } => "pid_reused",
            Self::UidMismatch { .. } => "uid_mismatch",
            Self::ProcRead { .. } => "proc_unreadable",
            Self::ProcParse { .. } => "proc_malformed",
            Self::AmbiguousCgroup { .. } => "ambiguous_cgroup",
            Self::KubeletUnavailable { .. } => "kubelet_unavailable",
            Self::PodNotFound { .. } => "pod_not_found",
            Self::ContainerNotFound { .. } => "container_not_found",
            Self::Config { .. } => "config",
            Self::TaskFailed => "task_failed",
        }
    }

    /// A message safe to return to the caller: no paths, pids or
    /// internals.
    pub fn caller_message(&self) -> &'static str {
        if self.is_retryable() {
            "workload attestation is not complete yet; retry shortly"
        } else {
            "workload attestation failed; no identity issued"
        }
    }
}
