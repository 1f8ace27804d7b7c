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
//! # The per-connection fast path
//! The peer credentials (pid, uid, gid) are fixed for a connection's life,
//! so its later calls within the same [`ATTESTATION_CACHE_TTL`] re-check
//! only what can change, and cheaply ([`ConnSlot`]): that the process at
//! the pid still runs the same executable (device and inode of
//! `/proc/PID/exe`, one `statx`, as on the slow path), and *then* that the
//! attested process is still alive, through a `/proc/PID/comm` handle
//! opened when it was attested (a procfs handle stays bound to its process:
//! once that process is gone and reaped, reads fail with `ESRCH`, even if
//! the pid was reused; one `pread`). Alive after the `statx` means the
//! `statx` saw that process, so a reused pid or an `exec` of another binary
//! falls back to the slow path, which refuses or re-attests as before. This
//! replaces, per call, reading and parsing `/proc/PID/stat` (about 10 µs)
//! and a cache lookup by a mutex shared by all connections. It costs one
//! file descriptor per connection that has made a call, for the
//! connection's life. The handle is opened after the slow path's checks
//! and kept only if the start time read after opening it is still the one
//! seen at accept, so it names the process that connected.
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
use std::fs::File;
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

/// One connection's last attestation: the per-connection fast path (see
/// the module documentation). Shared by the clones of its
/// [`CallerConn`]; empty until the first call.
#[derive(Debug, Clone, Default)]
pub struct ConnSlot(Arc<Mutex<Option<ConnAttestation>>>);

#[derive(Debug)]
struct ConnAttestation {
    key: ProcessKey,
    selectors: Arc<[Selector]>,
    /// When the process was fully attested (the TTL is not extended here).
    at: Instant,
    matched: Option<(u64, Arc<[Arc<Entry>]>)>,
    /// `/proc/PID/exe`.
    exe: PathBuf,
    /// `/proc/PID/comm` of the attested process: readable while it lives.
    alive: File,
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
    conn: Option<ConnSlot>,
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
                conn: None,
            });
        };
        let Some(connected_start) = conn.peer_start_ticks else {
            return Err(AttestFailure::from(WorkloadAttestError::ProcessGone {
                pid,
            }));
        };
        if let Some(hit) = conn_fast_path(conn, cred, generation) {
            return Ok(hit);
        }
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
                        let (selectors, at, all) =
                            (slot.selectors.clone(), slot.at, slot.matched.clone());
                        drop(cache);
                        self.fill_conn_slot(conn, key, selectors.clone(), at, all);
                        return Ok(Attested {
                            cred,
                            selectors,
                            matched,
                            key: Some(key),
                            conn: Some(conn.slot.clone()),
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
            self.fill_conn_slot(conn, key, selectors.clone(), Instant::now(), None);
        }
        Ok(Attested {
            cred,
            selectors,
            matched: None,
            key,
            conn: key.map(|_| conn.slot.clone()),
        })
    }

    /// Keeps a checked attestation in the connection's slot with a handle
    /// on the process, if that handle names the process that was checked.
    fn fill_conn_slot(
        &self,
        conn: &CallerConn,
        key: ProcessKey,
        selectors: Arc<[Selector]>,
        at: Instant,
        matched: Option<(u64, Arc<[Arc<Entry>]>)>,
    ) {
        let dir = self.proc_root.join(key.pid.to_string());
        let Ok(alive) = File::open(dir.join("comm")) else {
            return;
        };
        // Opened for whichever process held the pid then: keep it only if
        // that is still (or was, and is now gone: reads will fail) the one
        // with the start time checked against the accept-time one.
        if self.start_ticks(key.pid) != Some(key.start_ticks) {
            return;
        }
        if let Ok(mut slot) = conn.slot.0.lock() {
            *slot = Some(ConnAttestation {
                key,
                selectors,
                at,
                matched,
                exe: dir.join("exe"),
                alive,
            });
        }
    }

    /// Remembers the entries `attested` matched in view `generation`.
    pub fn store_match(&self, attested: &Attested, generation: u64, matched: Arc<[Arc<Entry>]>) {
        let Some(key) = attested.key else { return };
        if let Some(conn) = &attested.conn {
            if let Ok(mut slot) = conn.0.lock() {
                if let Some(slot) = slot.as_mut().filter(|s| s.key == key) {
                    slot.matched = Some((generation, matched.clone()));
                }
            }
        }
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

/// The connection's last attestation if it still holds: within the TTL,
/// the same executable at the pid, and the attested process still alive
/// (checked in that order; see the module documentation). `None` sends the
/// caller down the slow path.
///
/// # Security
/// Liveness is checked after the executable: a process alive then was
/// alive during the `statx`, so the `statx` looked at it.
fn conn_fast_path(conn: &CallerConn, cred: PeerCred, generation: u64) -> Option<Attested> {
    use std::os::unix::fs::{FileExt as _, MetadataExt as _};
    let guard = conn.slot.0.lock().ok()?;
    let slot = guard.as_ref()?;
    if slot.at.elapsed() >= ATTESTATION_CACHE_TTL {
        return None;
    }
    let exe = std::fs::metadata(&slot.exe).ok()?;
    if (exe.dev(), exe.ino()) != (slot.key.exe_dev, slot.key.exe_ino) {
        return None;
    }
    slot.alive.read_at(&mut [0u8; 64], 0).ok()?;
    Some(Attested {
        cred,
        selectors: slot.selectors.clone(),
        matched: slot
            .matched
            .as_ref()
            .filter(|(g, _)| *g == generation)
            .map(|(_, m)| m.clone()),
        key: Some(slot.key),
        conn: Some(conn.slot.clone()),
    })
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
    use std::path::Path;

    use super::*;

    #[test]
    fn another_process_at_the_callers_pid_is_refused() {
        assert!(check_same_process(7, 100, 100).is_ok());
        let e = check_same_process(7, 100, 150).err();
        assert_eq!(e.map(|e| e.code), Some("pid_reused"));
    }

    const PID: i32 = 4242;
    const START: u64 = 5_000_123;

    fn stat_line(start: u64) -> String {
        format!("{PID} (prog) S 1 {PID} {PID} 0 -1 4194560 812 0 0 0 12 4 0 0 20 0 3 0 {start} 24576000 1520 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n")
    }

    /// A fake proc root whose process [`PID`] is backed, for liveness, by a
    /// real child: its `comm` is a link to the child's.
    fn fake_proc(root: &Path, child: u32) -> std::io::Result<AttestConfig> {
        let p = root.join("proc").join(PID.to_string());
        std::fs::create_dir_all(&p)?;
        std::fs::write(p.join("stat"), stat_line(START))?;
        std::fs::write(
            p.join("status"),
            format!("Name:\tprog\nTgid:\t{PID}\nPid:\t{PID}\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\nGroups:\t\n"),
        )?;
        std::fs::write(p.join("cgroup"), "0::/\n")?;
        for name in ["first", "second"] {
            std::fs::write(root.join(name), format!("pretend binary {name}\n"))?;
        }
        std::os::unix::fs::symlink(root.join("first"), p.join("exe"))?;
        std::os::unix::fs::symlink(format!("/proc/{child}/comm"), p.join("comm"))?;
        std::fs::write(
            root.join("passwd"),
            "alice:x:1000:1000::/home/alice:/bin/sh\n",
        )?;
        std::fs::write(root.join("group"), "alice:x:1000:\n")?;
        Ok(AttestConfig {
            proc_root: root.join("proc"),
            passwd_file: root.join("passwd"),
            group_file: root.join("group"),
            ..AttestConfig::default()
        })
    }

    fn paths(a: &Attested) -> Vec<String> {
        a.selectors
            .iter()
            .map(ToString::to_string)
            .filter(|s| s.starts_with("unix:path:"))
            .collect()
    }

    #[tokio::test]
    async fn the_connection_fast_path_still_sees_exec_and_pid_reuse(
    ) -> Result<(), Box<dyn std::error::Error>> {
        // issue 10 (speed): later calls on a connection skip /proc/PID/stat,
        // but an exec of another binary and a reused pid are still caught.
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        let mut child = std::process::Command::new("sleep").arg("30").spawn()?;
        let config = fake_proc(root, child.id())?;
        let attestor = WorkloadAttestor::new(config);
        let conn = CallerConn::new(
            Some(PeerCred {
                pid: Some(PID),
                uid: 1000,
                gid: 1000,
            }),
            Some(START),
        );
        let first = attestor.attest_conn(&conn, 1).await.map_err(|e| e.reason)?;
        assert!(conn.slot.0.lock().is_ok_and(|s| s.is_some()), "slot filled");
        let again = attestor.attest_conn(&conn, 1).await.map_err(|e| e.reason)?;
        assert_eq!(again.selectors, first.selectors);

        // exec: the same pid, another executable.
        let exe = root.join("proc").join(PID.to_string()).join("exe");
        std::fs::remove_file(&exe)?;
        std::os::unix::fs::symlink(root.join("second"), &exe)?;
        let after_exec = attestor.attest_conn(&conn, 1).await.map_err(|e| e.reason)?;
        assert_ne!(paths(&after_exec), paths(&first));
        assert!(
            paths(&after_exec)[0].ends_with("/second"),
            "{:?}",
            paths(&after_exec)
        );

        // The process dies and another takes its pid (another start time),
        // still within the TTL of the connection's slot.
        child.kill()?;
        child.wait()?;
        std::fs::write(
            root.join("proc").join(PID.to_string()).join("stat"),
            stat_line(START + 7),
        )?;
        let reused = attestor.attest_conn(&conn, 1).await;
        assert_eq!(reused.err().map(|e| e.code), Some("pid_reused"));
        Ok(())
    }
}
