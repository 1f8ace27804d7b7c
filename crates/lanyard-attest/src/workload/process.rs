//! Reading one process's `/proc` entries: start time, status, exe, cgroup.

use std::io::{ErrorKind, Read as _};
use std::path::{Path, PathBuf};

use crate::workload::WorkloadAttestError;

/// Largest `/proc/PID/stat`, `status` or `cgroup` read, in bytes.
const MAX_PROC_FILE: u64 = 64 * 1024;

/// The parts of `/proc/PID/status` attestation uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    /// Effective uid (second field of `Uid:`).
    pub euid: u32,
    /// Supplementary groups (`Groups:`).
    pub groups: Vec<u32>,
}

/// One process's directory under the proc root.
#[derive(Debug)]
pub(crate) struct Proc {
    pub pid: i32,
    pub dir: PathBuf,
}

impl Proc {
    pub(crate) fn new(proc_root: &Path, pid: i32) -> Self {
        Self {
            pid,
            dir: proc_root.join(pid.to_string()),
        }
    }

    pub(crate) fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Reads `file` (at most [`MAX_PROC_FILE`] bytes); a missing process is
    /// [`WorkloadAttestError::ProcessGone`].
    pub(crate) fn read(&self, file: &str) -> Result<String, WorkloadAttestError> {
        let path = self.path(file);
        let gone = |e: &std::io::Error| {
            // ESRCH (3): the process died while the file was open.
            e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(3)
        };
        let mut buf = Vec::new();
        let result = std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_PROC_FILE + 1).read_to_end(&mut buf));
        match result {
            Ok(_) if buf.len() as u64 > MAX_PROC_FILE => Err(WorkloadAttestError::ProcParse {
                path,
                reason: "larger than 64 KiB",
            }),
            Ok(_) => String::from_utf8(buf).map_err(|_| WorkloadAttestError::ProcParse {
                path,
                reason: "not UTF-8",
            }),
            Err(e) if gone(&e) => Err(WorkloadAttestError::ProcessGone { pid: self.pid }),
            Err(source) => Err(WorkloadAttestError::ProcRead { path, source }),
        }
    }

    /// The start time (clock ticks after boot) from `stat`.
    pub(crate) fn start_time(&self) -> Result<u64, WorkloadAttestError> {
        let text = self.read("stat")?;
        parse_start_time(&text).ok_or_else(|| WorkloadAttestError::ProcParse {
            path: self.path("stat"),
            reason: "no start time (field 22) after the command name",
        })
    }

    /// The parsed `status`.
    pub(crate) fn status(&self) -> Result<Status, WorkloadAttestError> {
        let text = self.read("status")?;
        parse_status(&text).map_err(|reason| WorkloadAttestError::ProcParse {
            path: self.path("status"),
            reason,
        })
    }
}

/// Field 22 (`starttime`) of a `/proc/PID/stat` line.
///
/// The command name (field 2) is in parentheses and may itself contain
/// spaces, `(` and `)`, so fields are counted from the *last* `)`.
/// `None` when the line is not in that shape.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    // After the name: field 3 (state) is the first; field 22 the 20th.
    after_comm.split_ascii_whitespace().nth(19)?.parse().ok()
}

fn parse_status(text: &str) -> Result<Status, &'static str> {
    let mut euid = None;
    let mut groups = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Uid:") {
            let mut ids = rest.split_ascii_whitespace();
            let _real = ids.next();
            euid = Some(
                ids.next()
                    .and_then(|s| s.parse::<u32>().ok())
                    .ok_or("the Uid: line has no effective uid")?,
            );
        } else if let Some(rest) = line.strip_prefix("Groups:") {
            groups = Some(
                rest.split_ascii_whitespace()
                    .map(str::parse::<u32>)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| "the Groups: line has a non-numeric gid")?,
            );
        }
    }
    Ok(Status {
        euid: euid.ok_or("no Uid: line")?,
        groups: groups.ok_or("no Groups: line")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_counts_from_the_last_paren() {
        let fields = |comm: &str| {
            format!("1234 ({comm}) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 987654 12345 67 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0")
        };
        for comm in ["bash", "my prog", "a) S 1 2 3", ")(", "x)) 9 9", ""] {
            assert_eq!(
                parse_start_time(&fields(comm)),
                Some(987_654),
                "comm {comm:?}"
            );
        }
        for bad in [
            "",
            "1234 bash S 1",
            "1 (x) S 1 2",
            "1 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 -5",
        ] {
            assert_eq!(parse_start_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn status_effective_uid_and_groups() {
        let text =
            "Name:\tx\nUid:\t1000\t1001\t1002\t1003\nGid:\t50\t51\t52\t53\nGroups:\t4 24 27 \n";
        assert_eq!(
            parse_status(text),
            Ok(Status {
                euid: 1001,
                groups: vec![4, 24, 27]
            })
        );
        let no_groups = "Uid:\t0\t0\t0\t0\nGroups:\t\n";
        assert_eq!(parse_status(no_groups).map(|s| s.groups), Ok(vec![]));
        assert!(parse_status("Uid:\t0\nGroups:\n").is_err());
        assert!(parse_status("Groups:\t1\n").is_err());
        assert!(parse_status("Uid:\t0\t0\t0\t0\n").is_err());
        assert!(parse_status("Uid:\t0\tx\t0\t0\nGroups:\n").is_err());
        assert!(parse_status("Uid:\t0\t0\t0\t0\nGroups:\t1 two\n").is_err());
    }
}
