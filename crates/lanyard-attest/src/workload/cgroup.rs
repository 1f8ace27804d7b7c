//! `/proc/PID/cgroup` -> (pod UID, container ID).
//!
//! Shapes handled (cgroup v1 lines `ID:controllers:/path`, v2 `0::/path`;
//! paths may start with `/..` segments when read from another cgroup
//! namespace, or with a `/docker/ID/` prefix on kind-style nested nodes):
//!
//! | driver | path |
//! |---|---|
//! | cgroupfs | `/kubepods/burstable/pod<UID>/<ID>`, `/kubepods/pod<UID>/<ID>` (guaranteed) |
//! | systemd | `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<UID with _>.slice/<RUNTIME>-<ID>.scope` |
//!
//! with `<RUNTIME>-` one of `cri-containerd-`, `docker-`, `crio-`,
//! `containerd-` (or none) and `<ID>` 64 hex digits. cri-o's
//! `crio-conmon-<ID>.scope` is the monitor, not the container: a process
//! there has a pod but no container. UIDs are returned with `-`.

use crate::workload::WorkloadAttestError;

/// Where a process sits in Kubernetes, from its cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodContainer {
    /// The pod UID (`metadata.uid`), lowercase, with `-`.
    pub pod_uid: String,
    /// The container ID (64 lowercase hex digits) as in the pod status's
    /// `containerID` after `runtime://`; `None` when the process is in the
    /// pod's cgroup but not in a container's.
    pub container_id: Option<String>,
}

/// Parses `/proc/PID/cgroup` text. `Ok(None)`: not in a Kubernetes pod.
///
/// # Errors
/// [`WorkloadAttestError::AmbiguousCgroup`] when lines disagree on the pod
/// or container (`pid` names the process in the message).
pub fn parse_cgroup(pid: i32, text: &str) -> Result<Option<PodContainer>, WorkloadAttestError> {
    let mut found: Option<PodContainer> = None;
    for line in text.lines() {
        // The path is everything after the second ':' (it may contain ':').
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        let Some(here) = parse_path(path) else {
            continue;
        };
        match &mut found {
            None => found = Some(here),
            Some(prev) if prev.pod_uid != here.pod_uid => {
                return Err(ambiguous(pid, prev, &here));
            }
            Some(prev) => match (&prev.container_id, &here.container_id) {
                (Some(a), Some(b)) if a != b => return Err(ambiguous(pid, prev, &here)),
                // A v1 controller that is only pod-level (rare) must not hide
                // the container another controller names.
                (None, Some(_)) => *prev = here,
                _ => {}
            },
        }
    }
    Ok(found)
}

fn ambiguous(pid: i32, a: &PodContainer, b: &PodContainer) -> WorkloadAttestError {
    let show =
        |p: &PodContainer| format!("{}/{}", p.pod_uid, p.container_id.as_deref().unwrap_or("-"));
    WorkloadAttestError::AmbiguousCgroup {
        pid,
        first: show(a),
        second: show(b),
    }
}

/// The pod and container in one cgroup path, if it is under `kubepods`.
fn parse_path(path: &str) -> Option<PodContainer> {
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let mut under_kubepods = false;
    let mut pod_uid = None;
    for seg in segments.by_ref() {
        // The cgroupfs `pod<UID>` only counts below a kubepods root, so an
        // unrelated `pod…` directory elsewhere is not taken for a pod.
        if let Some(uid) = pod_segment(seg, under_kubepods) {
            pod_uid = Some(uid);
            break;
        }
        under_kubepods |= seg == "kubepods" || seg == "kubepods.slice";
    }
    let pod_uid = pod_uid?;
    let container_id = segments.next().and_then(container_segment);
    Some(PodContainer {
        pod_uid,
        container_id,
    })
}

/// `pod<UID>` (cgroupfs, below kubepods) or `[kubelet-]kubepods[-QOS]-pod<UID_>.slice`
/// (systemd).
fn pod_segment(seg: &str, under_kubepods: bool) -> Option<String> {
    let raw = if let Some(slice) = seg.strip_suffix(".slice") {
        let (_, uid) = slice.rsplit_once("-pod")?;
        slice.contains("kubepods").then_some(uid)?
    } else if under_kubepods {
        seg.strip_prefix("pod")?
    } else {
        return None;
    };
    normalize_uid(raw)
}

/// A pod UID: a UUID with `-` or `_` (systemd escapes `-`), or 32 hex
/// digits (static pods' config hash).
fn normalize_uid(raw: &str) -> Option<String> {
    let uid = raw.replace('_', "-").to_ascii_lowercase();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let parts: Vec<&str> = uid.split('-').collect();
    let ok = match parts.as_slice() {
        [a, b, c, d, e] => hex(a, 8) && hex(b, 4) && hex(c, 4) && hex(d, 4) && hex(e, 12),
        [one] => hex(one, 32),
        _ => false,
    };
    ok.then_some(uid)
}

/// `<ID>`, `<RUNTIME>-<ID>.scope`; never cri-o's `crio-conmon-<ID>.scope`.
fn container_segment(seg: &str) -> Option<String> {
    let base = seg.strip_suffix(".scope").unwrap_or(seg);
    if base.starts_with("crio-conmon-") {
        return None;
    }
    let id = ["cri-containerd-", "docker-", "crio-", "containerd-"]
        .iter()
        .find_map(|p| base.strip_prefix(p))
        .unwrap_or(base);
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
    const UID: &str = "2c48913c-b29f-11e7-9350-020968147796";

    fn parse(text: &str) -> Option<(String, Option<String>)> {
        parse_cgroup(1, text)
            .ok()
            .flatten()
            .map(|p| (p.pod_uid, p.container_id))
    }

    #[test]
    fn shapes() {
        let uid_ = UID.replace('-', "_");
        let want = Some((UID.to_owned(), Some(CID.to_owned())));
        for text in [
            format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{CID}.scope\n"),
            format!("0::/kubepods.slice/kubepods-pod{uid_}.slice/crio-{CID}.scope\n"),
            format!("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/docker-{CID}.scope\n"),
            format!("12:memory:/kubepods/burstable/pod{UID}/{CID}\n11:cpu,cpuacct:/kubepods/burstable/pod{UID}/{CID}\n1:name=systemd:/kubepods/burstable/pod{UID}/{CID}\n"),
            format!("4:pids:/kubepods/pod{UID}/{CID}\n"),
            format!("0::/../../kubepods-besteffort-pod{uid_}.slice/cri-containerd-{CID}.scope\n"),
            format!("0::/docker/{CID}/kubepods/besteffort/pod{UID}/{CID}\n"),
        ] {
            assert_eq!(parse(&text), want, "{text}");
        }
    }

    #[test]
    fn not_a_pod_and_pod_level() {
        assert_eq!(
            parse("0::/user.slice/user-1000.slice/session-2.scope\n"),
            None
        );
        assert_eq!(
            parse(&format!("0::/system.slice/docker-{CID}.scope\n")),
            None
        );
        assert_eq!(parse("0::/\n"), None);
        assert_eq!(parse(&format!("0::/srv/pod{UID}/{CID}\n")), None);
        assert_eq!(parse(""), None);
        let uid_ = UID.replace('-', "_");
        assert_eq!(
            parse(&format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/crio-conmon-{CID}.scope\n")),
            Some((UID.to_owned(), None))
        );
        // A short or non-hex id is not a container.
        assert_eq!(
            parse(&format!("0::/kubepods/pod{UID}/abc123\n")),
            Some((UID.to_owned(), None))
        );
        // Not a UID.
        assert_eq!(parse(&format!("0::/kubepods/podnot-a-uid/{CID}\n")), None);
        // Static pod: 32 hex digits.
        let hash = "6b1e0c8f2ad4c5e3f3b9a1d2c4e5f6a7";
        assert_eq!(
            parse(&format!("0::/kubepods/burstable/pod{hash}/{CID}\n")),
            Some((hash.to_owned(), Some(CID.to_owned())))
        );
    }

    #[test]
    fn disagreeing_lines_are_refused() {
        let other = CID.replace('0', "9");
        let text =
            format!("12:memory:/kubepods/pod{UID}/{CID}\n11:cpu:/kubepods/pod{UID}/{other}\n");
        assert!(matches!(
            parse_cgroup(7, &text),
            Err(WorkloadAttestError::AmbiguousCgroup { pid: 7, .. })
        ));
        let other_pod = "11111111-2222-3333-4444-555555555555";
        let text =
            format!("12:memory:/kubepods/pod{UID}/{CID}\n11:cpu:/kubepods/pod{other_pod}/{CID}\n");
        assert!(parse_cgroup(7, &text).is_err());
        // A pod-level line next to a container line: the container wins.
        let text = format!("12:memory:/kubepods/pod{UID}\n11:cpu:/kubepods/pod{UID}/{CID}\n");
        assert_eq!(parse(&text), Some((UID.to_owned(), Some(CID.to_owned()))));
    }
}
