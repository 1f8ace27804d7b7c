//! Workload attestation: the kernel's view of a Workload API caller
//! (SO_PEERCRED via tokio's `peer_cred`) turned into selectors.
//!
//! Selectors: `unix:uid:N`, `unix:gid:N`, and with a pid `unix:path:/exe`.
//! (The full set, with user names, binary digests and Kubernetes pods, comes
//! from `lanyard_attest::workload` when it is wired in.)

use std::path::PathBuf;

use lanyard_core::Selector;

/// Attestation settings.
#[derive(Debug, Clone)]
pub struct AttestConfig {
    /// Where /proc is (tests point it elsewhere).
    pub proc_root: PathBuf,
}

impl Default for AttestConfig {
    fn default() -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
        }
    }
}

/// The caller as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Process id (absent on some platforms).
    pub pid: Option<i32>,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Turns peer credentials into selectors.
#[derive(Debug, Clone)]
pub struct WorkloadAttestor {
    config: AttestConfig,
}

impl WorkloadAttestor {
    /// A new attestor.
    pub fn new(config: AttestConfig) -> Self {
        Self { config }
    }

    /// The caller's selectors, sorted.
    ///
    /// # Errors
    /// A message when the process vanished or cannot be read (fail closed).
    pub async fn attest(&self, cred: PeerCred) -> Result<Vec<Selector>, String> {
        let mut out = vec![
            Selector::new("unix", "uid", &cred.uid.to_string()).map_err(|e| e.to_string())?,
            Selector::new("unix", "gid", &cred.gid.to_string()).map_err(|e| e.to_string())?,
        ];
        if let Some(pid) = cred.pid {
            let exe = self.config.proc_root.join(pid.to_string()).join("exe");
            match tokio::fs::read_link(&exe).await {
                Ok(path) => {
                    let path = path.to_string_lossy().into_owned();
                    if let Ok(s) = Selector::new("unix", "path", &path) {
                        out.push(s);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(format!("process {pid} is gone"));
                }
                // Another user's process without privilege: no path selector.
                Err(_) => {}
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}
