//! Writing identity documents to files (seed 000's "file system mount"), for
//! SDKs that read a token file (`AZURE_FEDERATED_TOKEN_FILE`,
//! `AWS_WEB_IDENTITY_TOKEN_FILE`) or PEM files.
//!
//! Every write is atomic (a temporary file in the same directory, fsync,
//! rename), so a reader never sees half a file; when a write fails (full
//! disk, permissions) the previous files stay and the error is logged.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;

use crate::Agent;

/// One workload's files.
#[derive(Debug, Clone)]
pub struct FileTarget {
    /// The SPIFFE ID whose SVIDs are written (must be one of this node's entries).
    pub spiffe_id: String,
    /// Directory for `svid.pem`, `svid.key`, `bundle.pem` and `token.jwt`.
    pub dir: PathBuf,
    /// Audience of the JWT-SVID in `token.jwt`; no token file when `None`.
    pub jwt_audience: Option<String>,
}

/// Writes `data` to `path` atomically with `mode`.
///
/// # Errors
/// I/O errors; the previous file is left in place.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// PEM encoding of DER blocks.
pub fn pem(label: &str, ders: &[Vec<u8>]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = String::new();
    for der in ders {
        out.push_str(&format!("-----BEGIN {label}-----\n"));
        let text = b64.encode(der);
        let mut rest = text.as_str();
        while !rest.is_empty() {
            let (line, tail) = rest.split_at(rest.len().min(64));
            out.push_str(line);
            out.push('\n');
            rest = tail;
        }
        out.push_str(&format!("-----END {label}-----\n"));
    }
    out
}

/// Writes one target's files from the current view. Returns when each was
/// last written (the leaf's expiry), or an error naming the file.
///
/// # Errors
/// A message naming what could not be written; old files stay.
pub async fn write_target(agent: &Agent, target: &FileTarget) -> Result<i64, String> {
    let view = agent.view();
    let identity = view
        .identities
        .values()
        .find(|i| i.entry.spiffe_id.to_string() == target.spiffe_id)
        .cloned()
        .ok_or_else(|| {
            format!(
                "no SVID for {} on this node (is there an entry with this node as parent?)",
                target.spiffe_id
            )
        })?;
    std::fs::create_dir_all(&target.dir)
        .map_err(|e| format!("creating {}: {e}", target.dir.display()))?;
    let put = |name: &str, data: &[u8], mode: u32| {
        let path = target.dir.join(name);
        write_atomic(&path, data, mode).map_err(|e| format!("writing {}: {e}", path.display()))
    };
    put(
        "svid.pem",
        pem("CERTIFICATE", &identity.chain).as_bytes(),
        0o644,
    )?;
    put(
        "svid.key",
        pem("PRIVATE KEY", &[identity.key_pkcs8.to_vec()]).as_bytes(),
        0o600,
    )?;
    put(
        "bundle.pem",
        pem("CERTIFICATE", &view.roots).as_bytes(),
        0o644,
    )?;
    if let Some(aud) = &target.jwt_audience {
        let token = agent
            .jwt_svid(&identity.entry, std::slice::from_ref(aud))
            .await
            .map_err(|e| format!("JWT-SVID for {}: {e}", target.spiffe_id))?;
        put("token.jwt", token.token.as_bytes(), 0o600)?;
    }
    Ok(identity.expires_at)
}

/// Keeps every target written: on each view change, and every few seconds
/// for the JWT (refreshed at half its life by the agent's cache).
pub async fn run(
    agent: Arc<Agent>,
    targets: Vec<FileTarget>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    if targets.is_empty() {
        return;
    }
    let mut changes = agent.subscribe();
    let mut written: Vec<Option<(String, Vec<u8>)>> = vec![None; targets.len()];
    loop {
        let view = agent.view();
        for (i, t) in targets.iter().enumerate() {
            let leaf = view
                .identities
                .values()
                .find(|id| id.entry.spiffe_id.to_string() == t.spiffe_id)
                .and_then(|id| id.chain.first().cloned());
            let due = t.jwt_audience.is_some()
                || leaf.as_ref().is_some_and(|l| {
                    written
                        .get(i)
                        .and_then(|w| w.as_ref())
                        .is_none_or(|(_, old)| old != l)
                });
            if !due {
                continue;
            }
            match write_target(&agent, t).await {
                Ok(_) => {
                    if let (Some(slot), Some(leaf)) = (written.get_mut(i), leaf) {
                        *slot = Some((t.spiffe_id.clone(), leaf));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, dir = %t.dir.display(), "writing identity files failed; the previous files stay")
                }
            }
        }
        tokio::select! {
            _ = changes.changed() => {}
            () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_atomic_and_a_failed_write_keeps_the_old_file(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("svid.key");
        write_atomic(&path, b"old", 0o600)?;
        assert_eq!(std::fs::read(&path)?, b"old");
        assert_eq!(
            std::fs::metadata(&path)?.permissions().mode() & 0o777,
            0o600
        );
        // Make the next write fail the way a full disk does (before the
        // rename): the temporary file cannot be created.
        let blocker = dir
            .path()
            .join(format!(".svid.key.tmp-{}", std::process::id()));
        std::fs::create_dir(&blocker)?;
        assert!(write_atomic(&path, b"new", 0o600).is_err());
        assert_eq!(std::fs::read(&path)?, b"old", "the previous file stays");
        std::fs::remove_dir(&blocker)?;
        write_atomic(&path, b"new", 0o600)?;
        assert_eq!(std::fs::read(&path)?, b"new");
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        Ok(())
    }

    #[test]
    fn pem_blocks_wrap_at_64_columns() {
        let text = pem("CERTIFICATE", &[vec![0u8; 100], vec![1u8; 3]]);
        assert_eq!(text.matches("-----BEGIN CERTIFICATE-----").count(), 2);
        assert!(text
            .lines()
            .all(|l| l.len() <= 64 || l.starts_with("-----")));
    }
}
