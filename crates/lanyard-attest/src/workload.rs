//! Workload attestation from the kernel: the peer credentials of a Workload
//! API caller (`SO_PEERCRED`: pid, uid, gid) in, sorted selectors out.
//!
//! The node agent reads the caller's credentials with tokio's
//! `UnixStream::peer_cred()`, fills a [`PeerCred`] and calls
//! [`WorkloadAttestor::attest`]. What it finds:
//!
//! | selector | from |
//! |---|---|
//! | `unix:uid:N`, `unix:gid:N` | the peer credentials (effective uid/gid at `connect()`) |
//! | `unix:user:NAME`, `unix:group:NAME` | the passwd / group files (no libc, no NSS: only the files) |
//! | `unix:supplementary_gid:N`, `unix:supplementary_group:NAME` | `Groups:` of `/proc/PID/status` (as SPIRE's unix attestor) |
//! | `unix:path:/abs/exe` | `readlink /proc/PID/exe`; omitted when the binary was deleted or replaced on disk |
//! | `unix:sha256:HEX` | SHA-256 of the binary read through `/proc/PID/exe` (the file the process runs, even if the path now names another one), up to [`WorkloadAttestConfig::max_binary_size`]; cached by (device, inode, size, mtime, ctime) |
//! | `k8s:ns`, `k8s:sa`, `k8s:pod-uid`, `k8s:pod-name`, `k8s:pod-label:KEY:VALUE`, `k8s:node-name`, `k8s:container-name`, `k8s:container-image` | with [`KubeletConfig`] only: the pod and container named by `/proc/PID/cgroup`, resolved through the kubelet's `/pods` |
//!
//! # Security
//! - The uid in `/proc/PID/status` (effective) must equal the peer
//!   credentials' uid, or the call is refused.
//! - **Pid reuse.** The process start time (field 22 of `/proc/PID/stat`) is
//!   read before and after every other `/proc` read; if it changed or the
//!   process is gone, the call is refused ([`WorkloadAttestError::PidReused`],
//!   [`WorkloadAttestError::ProcessGone`]). That guarantees every fact came
//!   from *one* process. What it cannot guarantee: that this process is the
//!   one that connected. The kernel records the pid at `connect()`; if the
//!   caller exits and its pid is reused *before the first read*, the new
//!   process is attested. The uid check narrows this to a same-uid reuse.
//!   Closing it needs a pidfd (`SO_PEERPIDFD`, Linux 6.5), which std and
//!   tokio do not expose without `unsafe`/libc; the agent should attest right
//!   after `accept()` to keep the window short.
//! - Missing facts only remove selectors (an entry needing them then does not
//!   match); they never add one. Every omission is in
//!   [`WorkloadAttestation::diagnostics`].
//! - On Kubernetes, a process whose container is not yet in its pod's status
//!   gets a retryable error, not pod-level selectors alone.
//! - Nothing here logs environments or command lines; diagnostics name files
//!   and errors only.
//!
//! The agent must see the callers' pid namespace (`hostPID: true` on a
//! DaemonSet) and, to read other users' `/proc/PID/exe`, run as root or with
//! `CAP_SYS_PTRACE`; otherwise path and digest are omitted (and said so).

mod cgroup;
mod error;
mod k8s;
mod process;
mod unix;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lanyard_core::{Clock, Selector, SystemClock};
use serde::Serialize;

pub use cgroup::{parse_cgroup, PodContainer};
pub use error::WorkloadAttestError;
pub use process::parse_start_time;

use crate::workload::k8s::Kubelet;
use crate::workload::unix::Unix;

/// Default cap on the size of a binary that is hashed: 256 MiB.
pub const DEFAULT_MAX_BINARY_SIZE: u64 = 256 * 1024 * 1024;
/// How long a fetched kubelet pod list answers lookups: 10 s. Pod UIDs and
/// container IDs never change meaning, so age only affects labels.
pub const DEFAULT_POD_CACHE_MAX_AGE: Duration = Duration::from_secs(10);
/// Least time between two kubelet fetches caused by misses: 500 ms, so a
/// crowd of new containers does not hammer the kubelet.
pub const DEFAULT_MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(500);

/// A caller's credentials as the kernel reported them (`SO_PEERCRED`).
///
/// Plain data: the agent fills it from tokio's `UCred` with
/// `PeerCred::from(stream.peer_cred()?)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// The caller's pid at `connect()`, when the platform reports it.
    pub pid: Option<i32>,
    /// The caller's effective uid at `connect()`.
    pub uid: u32,
    /// The caller's effective gid at `connect()`.
    pub gid: u32,
}

impl From<tokio::net::unix::UCred> for PeerCred {
    fn from(c: tokio::net::unix::UCred) -> Self {
        Self {
            pid: c.pid(),
            uid: c.uid(),
            gid: c.gid(),
        }
    }
}

/// Configuration of a [`WorkloadAttestor`]. [`Default`] is the host's
/// `/proc`, `/etc/passwd`, `/etc/group`, no Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadAttestConfig {
    /// Where procfs is mounted (`/proc`); tests point it at a directory.
    pub proc_root: PathBuf,
    /// The passwd file for `unix:user` (`/etc/passwd`).
    pub passwd_file: PathBuf,
    /// The group file for `unix:group` (`/etc/group`).
    pub group_file: PathBuf,
    /// Larger binaries are not hashed (no `unix:sha256`, a diagnostic says
    /// why); default [`DEFAULT_MAX_BINARY_SIZE`].
    pub max_binary_size: u64,
    /// Resolve callers' pods through the kubelet; `None`: unix only.
    pub k8s: Option<KubeletConfig>,
}

impl Default for WorkloadAttestConfig {
    fn default() -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            passwd_file: PathBuf::from("/etc/passwd"),
            group_file: PathBuf::from("/etc/group"),
            max_binary_size: DEFAULT_MAX_BINARY_SIZE,
            k8s: None,
        }
    }
}

/// How to reach the kubelet's `/pods` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletConfig {
    /// The kubelet's base URL: `https://127.0.0.1:10250` (authenticated
    /// port) or `http://127.0.0.1:10255` (read-only port, if enabled);
    /// `/pods` is appended.
    pub url: String,
    /// PEM CA bundle that signed the kubelet's serving certificate; only
    /// these roots are trusted. `None`: the system roots.
    pub ca_file: Option<PathBuf>,
    /// File holding a bearer token for the kubelet (the agent's projected
    /// service-account token); re-read on every fetch, so rotation works.
    pub bearer_token_file: Option<PathBuf>,
    /// Skip verifying the kubelet's certificate (many kubelets serve a
    /// self-signed one). Off by default; logs a warning when on.
    pub danger_insecure_kubelet_skip_verify: bool,
    /// How long a fetched pod list is used: [`DEFAULT_POD_CACHE_MAX_AGE`].
    pub pod_cache_max_age: Duration,
    /// Least time between fetches: [`DEFAULT_MIN_REFRESH_INTERVAL`].
    pub min_refresh_interval: Duration,
}

impl KubeletConfig {
    /// A configuration for `url` with the defaults above.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ca_file: None,
            bearer_token_file: None,
            danger_insecure_kubelet_skip_verify: false,
            pod_cache_max_age: DEFAULT_POD_CACHE_MAX_AGE,
            min_refresh_interval: DEFAULT_MIN_REFRESH_INTERVAL,
        }
    }
}

/// What attestation found about one caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkloadAttestation {
    /// Sorted, without duplicates.
    pub selectors: Vec<Selector>,
    /// What ran and what could not be found, and why (for `lanyard explain
    /// --pid` and the agent's debug log). Never environments or command
    /// lines.
    pub diagnostics: Vec<Diagnostic>,
}

/// One note about an attestation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// `unix` or `k8s`.
    pub plugin: &'static str,
    /// Whether this note explains missing selectors.
    pub level: DiagnosticLevel,
    /// For the operator, e.g. `unix:sha256 omitted: the binary is 300 MiB,
    /// over max_binary_size 256 MiB`.
    pub message: String,
}

/// How much a [`Diagnostic`] matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiagnosticLevel {
    /// What ran and what it found.
    Info,
    /// Some selectors could not be produced; entries needing them do not
    /// match this caller.
    Omitted,
}

/// Collects diagnostics as attestation goes.
#[derive(Debug, Default)]
pub(crate) struct Notes(Vec<Diagnostic>);

impl Notes {
    pub(crate) fn info(&mut self, plugin: &'static str, message: impl Into<String>) {
        self.0.push(Diagnostic {
            plugin,
            level: DiagnosticLevel::Info,
            message: message.into(),
        });
    }

    pub(crate) fn omitted(&mut self, plugin: &'static str, message: impl Into<String>) {
        self.0.push(Diagnostic {
            plugin,
            level: DiagnosticLevel::Omitted,
            message: message.into(),
        });
    }
}

/// Turns peer credentials into selectors. Cheap to share: clone it or put
/// it in an `Arc`; the digest, account and pod caches are shared by clones.
#[derive(Debug, Clone)]
pub struct WorkloadAttestor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    unix: Unix,
    kubelet: Option<Kubelet>,
}

impl WorkloadAttestor {
    /// An attestor for `config`, with the system clock.
    ///
    /// # Errors
    /// [`WorkloadAttestError::Config`] for a kubelet URL that is not
    /// `http(s)://`, or a CA file that cannot be read or holds no
    /// certificate.
    pub fn new(config: WorkloadAttestConfig) -> Result<Self, WorkloadAttestError> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// As [`WorkloadAttestor::new`], with `clock` for the pod cache's age
    /// and refresh rate limit.
    ///
    /// # Errors
    /// As [`WorkloadAttestor::new`].
    pub fn with_clock(
        config: WorkloadAttestConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, WorkloadAttestError> {
        let kubelet = match &config.k8s {
            Some(k) => Some(Kubelet::new(k, clock)?),
            None => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                unix: Unix::new(&config),
                kubelet,
            }),
        })
    }

    /// Attests the caller with credentials `cred`.
    ///
    /// The `/proc` reads and hashing run on tokio's blocking pool; the
    /// kubelet lookup (with Kubernetes configured) is async.
    ///
    /// # Errors
    /// [`WorkloadAttestError`]: the process is gone or its pid was reused,
    /// its uid differs from `cred.uid`, its `/proc` files cannot be read or
    /// parsed, or (Kubernetes) its pod or container cannot be resolved yet
    /// ([`WorkloadAttestError::is_retryable`]). No selectors are returned
    /// with an error.
    ///
    /// # Security
    /// See the module documentation for the pid-reuse guard and what it
    /// leaves open.
    pub async fn attest(
        &self,
        cred: &PeerCred,
    ) -> Result<WorkloadAttestation, WorkloadAttestError> {
        let inner = self.inner.clone();
        let cred = *cred;
        let want_cgroup = inner.kubelet.is_some();
        let (mut selectors, mut notes, pod) = tokio::task::spawn_blocking(move || {
            let mut notes = Notes::default();
            let (selectors, pod) = inner.unix.attest(&cred, want_cgroup, &mut notes)?;
            Ok::<_, WorkloadAttestError>((selectors, notes, pod))
        })
        .await
        .map_err(|_| WorkloadAttestError::TaskFailed)?
        .inspect_err(|e| tracing::debug!(pid = ?cred.pid, uid = cred.uid, code = e.code(), error = %e, "workload attestation refused"))?;
        if let Some(kubelet) = &self.inner.kubelet {
            match pod {
                Some(pod) => selectors.extend(
                    kubelet
                        .attest(&pod, &mut notes)
                        .await
                        .inspect_err(|e| tracing::debug!(pid = ?cred.pid, code = e.code(), error = %e, "workload pod not resolved"))?,
                ),
                None => notes.info("k8s", "not in a Kubernetes pod: no k8s selectors"),
            }
        }
        selectors.sort();
        selectors.dedup();
        tracing::debug!(pid = ?cred.pid, uid = cred.uid, selectors = selectors.len(), "workload attested");
        Ok(WorkloadAttestation {
            selectors,
            diagnostics: notes.0,
        })
    }
}

/// A selector from parts, or a note saying why it was dropped (a value with
/// control characters or over the length limit).
pub(crate) fn selector(
    out: &mut Vec<Selector>,
    notes: &mut Notes,
    plugin: &'static str,
    key: &str,
    value: &str,
) {
    match Selector::new(plugin, key, value) {
        Ok(s) => out.push(s),
        Err(e) => notes.omitted(plugin, format!("{plugin}:{key} omitted: {e}")),
    }
}
