//! The unix part: uid/gid and names, supplementary groups, executable path
//! and digest, all under the pid-reuse guard; the cgroup is read inside
//! the same guard for the Kubernetes part.

use std::collections::HashMap;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use lanyard_core::Selector;

use crate::workload::cgroup::{parse_cgroup, PodContainer};
use crate::workload::process::Proc;
use crate::workload::{selector, Notes, PeerCred, WorkloadAttestConfig, WorkloadAttestError};

/// Largest passwd or group file read, in bytes.
const MAX_ACCOUNTS_FILE: u64 = 16 * 1024 * 1024;
/// Digests remembered; the cache is emptied when it is full.
const MAX_CACHED_DIGESTS: usize = 4096;
/// Suffix the kernel gives `/proc/PID/exe` when the file was unlinked.
const DELETED: &str = " (deleted)";

#[derive(Debug)]
pub(crate) struct Unix {
    proc_root: PathBuf,
    max_binary_size: u64,
    users: Accounts,
    groups: Accounts,
    digests: Mutex<HashMap<FileKey, Arc<str>>>,
}

/// Identifies file contents without reading them: a running executable
/// cannot be written (ETXTBSY), and any change to it moves ctime, which no
/// user can set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileKey {
    fn of(m: &std::fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

impl Unix {
    pub(crate) fn new(config: &WorkloadAttestConfig) -> Self {
        Self {
            proc_root: config.proc_root.clone(),
            max_binary_size: config.max_binary_size,
            users: Accounts::new(config.passwd_file.clone()),
            groups: Accounts::new(config.group_file.clone()),
            digests: Mutex::new(HashMap::new()),
        }
    }

    /// The unix selectors of `cred`, and (when `want_cgroup`) where the
    /// process sits in Kubernetes. Blocking.
    pub(crate) fn attest(
        &self,
        cred: &PeerCred,
        want_cgroup: bool,
        notes: &mut Notes,
    ) -> Result<(Vec<Selector>, Option<PodContainer>), WorkloadAttestError> {
        let mut out = Vec::new();
        selector(&mut out, notes, "unix", "uid", &cred.uid.to_string());
        selector(&mut out, notes, "unix", "gid", &cred.gid.to_string());
        match self.users.name(cred.uid) {
            Ok(Some(name)) => selector(&mut out, notes, "unix", "user", &name),
            Ok(None) => notes.omitted(
                "unix",
                format!(
                    "unix:user omitted: uid {} is not in {}",
                    cred.uid,
                    self.users.path.display()
                ),
            ),
            Err(e) => notes.omitted("unix", format!("unix:user omitted: {e}")),
        }
        self.group(&mut out, notes, "group", cred.gid);
        let Some(pid) = cred.pid else {
            notes.omitted(
                "unix",
                "the kernel reported no pid: only uid and gid selectors (no path, digest, groups or pod)",
            );
            return Ok((out, None));
        };
        let proc = Proc::new(&self.proc_root, pid);
        let before = proc.start_time()?;
        let status = proc.status()?;
        if status.euid != cred.uid {
            return Err(WorkloadAttestError::UidMismatch {
                pid,
                peer_uid: cred.uid,
                proc_uid: status.euid,
            });
        }
        for gid in &status.groups {
            selector(
                &mut out,
                notes,
                "unix",
                "supplementary_gid",
                &gid.to_string(),
            );
            self.group(&mut out, notes, "supplementary_group", *gid);
        }
        self.exe(&proc, &mut out, notes);
        let pod = if want_cgroup {
            parse_cgroup(pid, &proc.read("cgroup")?)?
        } else {
            None
        };
        let after = proc.start_time()?;
        if before != after {
            return Err(WorkloadAttestError::PidReused { pid, before, after });
        }
        notes.info(
            "unix",
            format!(
                "pid {pid} (start time {before}) read consistently; uid {} matches /proc",
                cred.uid
            ),
        );
        Ok((out, pod))
    }

    fn group(&self, out: &mut Vec<Selector>, notes: &mut Notes, key: &str, gid: u32) {
        match self.groups.name(gid) {
            Ok(Some(name)) => selector(out, notes, "unix", key, &name),
            Ok(None) => notes.omitted(
                "unix",
                format!(
                    "unix:{key} omitted: gid {gid} is not in {}",
                    self.groups.path.display()
                ),
            ),
            Err(e) => notes.omitted("unix", format!("unix:{key} omitted: {e}")),
        }
    }

    /// `unix:path` and `unix:sha256` through `/proc/PID/exe`.
    fn exe(&self, proc: &Proc, out: &mut Vec<Selector>, notes: &mut Notes) {
        let link = proc.path("exe");
        match std::fs::read_link(&link) {
            Ok(target) => match target.to_str() {
                Some(t) if t.ends_with(DELETED) => notes.omitted(
                    "unix",
                    "unix:path omitted: the binary was deleted or replaced on disk since it started",
                ),
                Some(t) if target.is_absolute() => selector(out, notes, "unix", "path", t),
                Some(_) => notes.omitted("unix", "unix:path omitted: the exe link is not an absolute path"),
                None => notes.omitted("unix", "unix:path omitted: the path is not UTF-8"),
            },
            Err(e) => {
                notes.omitted(
                    "unix",
                    format!("unix:path and unix:sha256 omitted: reading {}: {e} (the agent needs root or CAP_SYS_PTRACE for other users' processes)", link.display()),
                );
                return;
            }
        }
        match self.digest(&link) {
            Ok(hex) => selector(out, notes, "unix", "sha256", &hex),
            Err(why) => notes.omitted("unix", format!("unix:sha256 omitted: {why}")),
        }
    }

    /// The binary's SHA-256, from the cache when its key is known.
    /// `Err` says why there is none (for the diagnostic).
    fn digest(&self, link: &Path) -> Result<Arc<str>, String> {
        let read_err = |e: std::io::Error| format!("reading {}: {e}", link.display());
        let mut file = std::fs::File::open(link).map_err(read_err)?;
        let key = FileKey::of(&file.metadata().map_err(read_err)?);
        if let Some(hex) = self.cache().get(&key) {
            return Ok(hex.clone());
        }
        if key.size > self.max_binary_size {
            return Err(format!(
                "the binary is {} bytes, over max_binary_size {}",
                key.size, self.max_binary_size
            ));
        }
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        let mut total: u64 = 0;
        loop {
            let n = file.read(&mut buf).map_err(read_err)?;
            let Some(chunk) = buf.get(..n) else { break };
            if n == 0 {
                break;
            }
            total = total.saturating_add(n as u64);
            if total > self.max_binary_size {
                return Err(format!(
                    "the binary grew over max_binary_size {}",
                    self.max_binary_size
                ));
            }
            ctx.update(chunk);
        }
        let after = FileKey::of(&file.metadata().map_err(read_err)?);
        if after != key || total != key.size {
            return Err("the binary changed while it was hashed".into());
        }
        let hex: Arc<str> = lanyard_core::hex::encode(ctx.finish().as_ref()).into();
        let mut cache = self.cache();
        if cache.len() >= MAX_CACHED_DIGESTS {
            cache.clear();
        }
        cache.insert(key, hex.clone());
        Ok(hex)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<FileKey, Arc<str>>> {
        // A panic while holding it cannot leave a wrong digest in the map:
        // entries are inserted whole.
        self.digests.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A passwd- or group-format file (`name:x:id:…`), parsed once per change.
#[derive(Debug)]
struct Accounts {
    path: PathBuf,
    cached: Mutex<Option<Loaded>>,
}

/// A parsed file and the metadata it was parsed at.
#[derive(Debug)]
struct Loaded {
    stamp: FileStamp,
    names: Arc<HashMap<u32, String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Accounts {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            cached: Mutex::new(None),
        }
    }

    /// The name of `id` (the first line with it, as `getpwuid` answers).
    fn name(&self, id: u32) -> Result<Option<String>, String> {
        let err = |e: std::io::Error| format!("reading {}: {e}", self.path.display());
        let m = std::fs::metadata(&self.path).map_err(err)?;
        let stamp = FileStamp {
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        };
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        let map = match &*cached {
            Some(loaded) if loaded.stamp == stamp => loaded.names.clone(),
            _ => {
                if stamp.size > MAX_ACCOUNTS_FILE {
                    return Err(format!("{} is over 16 MiB", self.path.display()));
                }
                let mut text = String::new();
                std::fs::File::open(&self.path)
                    .and_then(|f| f.take(MAX_ACCOUNTS_FILE).read_to_string(&mut text))
                    .map_err(err)?;
                let map = Arc::new(parse_accounts(&text));
                *cached = Some(Loaded {
                    stamp,
                    names: map.clone(),
                });
                map
            }
        };
        Ok(map.get(&id).cloned())
    }
}

/// `name:password:id:…` lines to id -> name; the first name for an id wins.
/// Comments, blank and malformed lines are skipped.
fn parse_accounts(text: &str) -> HashMap<u32, String> {
    let mut map = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(id)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let Ok(id) = id.parse::<u32>() else { continue };
        if !name.is_empty() {
            map.entry(id).or_insert_with(|| name.to_owned());
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_first_name_wins_and_junk_is_skipped() {
        let text = "# comment\nroot:x:0:0:root:/root:/bin/bash\n\ntoor:x:0:0::/:/bin/sh\nbad line\nnobody:x:65534:65534::/:/sbin/nologin\nweird:x:notanumber:0\n:x:7:7\n";
        let m = parse_accounts(text);
        assert_eq!(m.get(&0).map(String::as_str), Some("root"));
        assert_eq!(m.get(&65534).map(String::as_str), Some("nobody"));
        assert_eq!(m.get(&7), None);
        assert_eq!(m.len(), 2);
        let groups = parse_accounts("docker:x:999:alice,bob\nwheel:*:10:\n");
        assert_eq!(groups.get(&999).map(String::as_str), Some("docker"));
        assert_eq!(groups.get(&10).map(String::as_str), Some("wheel"));
    }

    #[test]
    fn accounts_reread_after_a_change() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("passwd");
        std::fs::write(&path, "alice:x:1000:1000::/:/bin/sh\n")?;
        let a = Accounts::new(path.clone());
        assert_eq!(a.name(1000)?.as_deref(), Some("alice"));
        std::fs::write(&path, "bob:x:1000:1000::/home/bob:/bin/sh\n")?;
        assert_eq!(a.name(1000)?.as_deref(), Some("bob"));
        std::fs::remove_file(&path)?;
        assert!(a.name(1000).is_err());
        Ok(())
    }
}
