//! Workload attestation: the kernel's view of a Workload API caller
//! (`SO_PEERCRED` through tokio's `peer_cred`) turned into selectors by
//! [`lanyard_attest::workload`]: `unix:uid`, `unix:gid`, `unix:user`,
//! `unix:group`, supplementary groups, `unix:path`, `unix:sha256`, and with a
//! kubelet configured the caller's pod (`k8s:ns`, `k8s:sa`, `k8s:pod-uid`,
//! `k8s:pod-label`, `k8s:container-name`, `k8s:container-image`, …), with a
//! guard against pid reuse between the credential read and the /proc reads.
//!
//! # The attestation cache
//! Workload API callers call often (an SDK fetching a JWT-SVID per request);
//! full attestation reads several /proc files, the account databases and a
//! digest cache. [`WorkloadAttestor::attest_conn`] therefore keeps each
//! result for [`ATTESTATION_CACHE_TTL`] under the key (pid, process start
//! time, executable device and inode, peer uid, peer gid), read from /proc
//! on every call: a pid reused by another process has another start time,
//! an `exec` of another binary another inode, so neither can hit an old
//! slot. With it the entries the selectors matched are kept per view
//! generation, so the hot path does not search the entry index either.
//!
//! # Security: pid reuse between `connect()` and attestation
//! The kernel records the pid at `connect()`; the caller may exit, keep
//! the connection open in a child, and its pid be reused before a call.
//! The agent reads the peer's process start time when it accepts the
//! connection ([`crate::socket::CallerConn::peer_start_ticks`]) and every
//! call compares it with the start time of the process now at that pid:
//! another start time is another process, refused (`pid_reused`); a peer
//! already gone at accept is refused too (`process_gone`). What remains
//! is the backlog window between `connect()` and `accept()` (the agent
//! accepts at once) and two processes with the same pid started within
//! one clock tick (10 ms); closing those needs a pidfd (`SO_PEERPIDFD`),
//! which std does not expose yet.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lanyard_attest::workload::{WorkloadAttestError, WorkloadAttestor as Inner};
use lanyard_core::{Entry, Selector};

use crate::socket::CallerConn;

/// How long one attestation answers for the same process: 1 s. Short, so an
/// entry or label change is seen within a second; long enough that a busy
/// caller is attested about once a second instead of on every call.
pub const ATTESTATION_CACHE_TTL: Duration = Duration::from_secs(1);
/// Most processes remembered at once: 4,096 (older slots are dropped first).
pub const ATTESTATION_CACHE_MAX: usize = 4_096;

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
    proc_root: PathBuf,
    cache: Arc<Mutex<HashMap<ProcessKey, Slot>>>,
}

/// What identifies one process image for the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ProcessKey {
    pid: i32,
    start_ticks: u64,
    exe_dev: u64,
    exe_ino: u64,
    uid: u32,
    gid: u32,
}

#[derive(Debug)]
struct Slot {
    selectors: Arc<[Selector]>,
    at: Instant,
    matched: Option<(u64, Arc<[Arc<Entry>]>)>,
}

/// A caller attested by [`WorkloadAttestor::attest_conn`].
#[derive(Debug, Clone)]
pub struct Attested {
    /// The kernel's credentials of the caller.
    pub cred: PeerCred,
    /// Its selectors, sorted.
    pub selectors: Arc<[Selector]>,
    /// The entries these selectors matched in the view of the generation
    /// asked for, if that match is cached.
    pub matched: Option<Arc<[Arc<Entry>]>>,
    key: Option<ProcessKey>,
}

impl WorkloadAttestor {
    /// A new attestor; a bad configuration makes every call fail closed.
    pub fn new(config: AttestConfig) -> Self {
        let proc_root = config.proc_root.clone();
        let cache = Arc::new(Mutex::new(HashMap::new()));
        match Inner::new(config) {
            Ok(inner) => Self {
                inner: Some(inner),
                config_error: None,
                proc_root,
                cache,
            },
            Err(e) => Self {
                inner: None,
                config_error: Some(e.to_string()),
                proc_root,
                cache,
            },
        }
    }

    /// Attests the caller of a connection, from the cache when the same
    /// process image was attested less than [`ATTESTATION_CACHE_TTL`] ago;
    /// `generation` asks for the entries matched in that view generation.
    ///
    /// # Errors
    /// [`AttestFailure`]: no peer credentials, the process is gone, it
    /// started after the connection was accepted (`pid_reused`), or full
    /// attestation failed.
    ///
    /// # Security
    /// See the module documentation on pid reuse.
    pub async fn attest_conn(
        &self,
        conn: &CallerConn,
        generation: u64,
    ) -> Result<Attested, AttestFailure> {
        let cred = conn.peer.ok_or(AttestFailure {
            reason: "the kernel reported no peer credentials".into(),
            code: "no_peer_credentials",
            caller_message: "the caller's peer credentials are unavailable",
            retryable: false,
        })?;
        let Some(pid) = cred.pid else {
            let selectors = self.attest(cred).await?;
            return Ok(Attested {
                cred,
                selectors: selectors.into(),
                matched: None,
                key: None,
            });
        };
        let Some(connected_start) = conn.peer_start_ticks else {
            return Err(AttestFailure::from(WorkloadAttestError::ProcessGone {
                pid,
            }));
        };
        let key = self.process_key(&cred, pid)?;
        if let Some(key) = key {
            check_same_process(pid, connected_start, key.start_ticks)?;
        }
        if let Some(key) = key {
            if let Ok(cache) = self.cache.lock() {
                if let Some(slot) = cache.get(&key) {
                    if slot.at.elapsed() < ATTESTATION_CACHE_TTL {
                        let matched = slot
                            .matched
                            .as_ref()
                            .filter(|(g, _)| *g == generation)
                            .map(|(_, m)| m.clone());
                        return Ok(Attested {
                            cred,
                            selectors: slot.selectors.clone(),
                            matched,
                            key: Some(key),
                        });
                    }
                }
            }
        } else {
            // No key (exe unreadable): still refuse another process at that pid.
            let now = self.start_ticks(pid).unwrap_or(0);
            check_same_process(pid, connected_start, now)?;
        }
        let selectors: Arc<[Selector]> = self.attest(cred).await?.into();
        // The process read by the attestor must be the one the key names.
        if let Some(key) = key {
            if self.process_key(&cred, pid)? != Some(key) {
                return Err(AttestFailure::from(WorkloadAttestError::PidReused {
                    pid,
                    before: key.start_ticks,
                    after: self.start_ticks(pid).unwrap_or(0),
                }));
            }
            if let Ok(mut cache) = self.cache.lock() {
                if cache.len() >= ATTESTATION_CACHE_MAX {
                    cache.retain(|_, s| s.at.elapsed() < ATTESTATION_CACHE_TTL);
                    if cache.len() >= ATTESTATION_CACHE_MAX {
                        cache.clear();
                    }
                }
                cache.insert(
                    key,
                    Slot {
                        selectors: selectors.clone(),
                        at: Instant::now(),
                        matched: None,
                    },
                );
            }
        }
        Ok(Attested {
            cred,
            selectors,
            matched: None,
            key,
        })
    }

    /// Remembers the entries `attested` matched in view `generation`.
    pub fn store_match(&self, attested: &Attested, generation: u64, matched: Arc<[Arc<Entry>]>) {
        let Some(key) = attested.key else { return };
        if let Ok(mut cache) = self.cache.lock() {
            if let Some(slot) = cache.get_mut(&key) {
                slot.matched = Some((generation, matched));
            }
        }
    }

    /// Forgets every cached attestation (tests; a configuration change).
    pub fn clear_cache(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
    }

    fn start_ticks(&self, pid: i32) -> Option<u64> {
        let stat =
            std::fs::read_to_string(self.proc_root.join(pid.to_string()).join("stat")).ok()?;
        lanyard_attest::workload::parse_start_time(&stat)
    }

    /// The cache key of `pid` now; `Ok(None)` when the executable cannot be
    /// looked at (no caching then).
    fn process_key(&self, cred: &PeerCred, pid: i32) -> Result<Option<ProcessKey>, AttestFailure> {
        use std::os::unix::fs::MetadataExt as _;
        let dir = self.proc_root.join(pid.to_string());
        let Some(start_ticks) = self.start_ticks(pid) else {
            if dir.exists() {
                return Ok(None);
            }
            return Err(AttestFailure::from(WorkloadAttestError::ProcessGone {
                pid,
            }));
        };
        let Ok(exe) = std::fs::metadata(dir.join("exe")) else {
            return Ok(None);
        };
        Ok(Some(ProcessKey {
            pid,
            start_ticks,
            exe_dev: exe.dev(),
            exe_ino: exe.ino(),
            uid: cred.uid,
            gid: cred.gid,
        }))
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

    /// The caller's selectors, sorted, without the cache.
    ///
    /// # Errors
    /// As [`WorkloadAttestor::attest_full`].
    pub async fn attest(&self, cred: PeerCred) -> Result<Vec<Selector>, AttestFailure> {
        Ok(self.attest_full(cred).await?.selectors)
    }
}

/// Refuses a process whose start time is not the one recorded when its
/// connection was accepted.
fn check_same_process(pid: i32, connected: u64, now: u64) -> Result<(), AttestFailure> {
    if connected != now {
        return Err(AttestFailure {
            reason: format!(
                "pid {pid} started at tick {now}, but the process that connected started at tick {connected}: the pid was reused"
            ),
            code: "pid_reused",
            caller_message: "the calling process could not be attested",
            retryable: false,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_same_process;

    #[test]
    fn another_process_at_the_callers_pid_is_refused() {
        assert!(check_same_process(7, 100, 100).is_ok());
        let e = check_same_process(7, 100, 150).err();
        assert_eq!(e.map(|e| e.code), Some("pid_reused"));
    }
}
