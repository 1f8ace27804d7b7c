//! Workload attestation from peer credentials: this very process through the
//! real `/proc`; fake proc trees (a temp directory with `stat`, `status`,
//! `cgroup` and an `exe` symlink to a real file) for uid mismatch, pid
//! reuse and vanished processes; recorded cgroup files of real-world
//! shapes; and a stub kubelet over HTTPS on 127.0.0.1 serving a recorded
//! `PodList` (a stub because no kubelet runs where these tests do).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use lanyard_attest::workload::{
    parse_cgroup, KubeletConfig, PeerCred, WorkloadAttestConfig, WorkloadAttestError,
    WorkloadAttestor,
};
use lanyard_testkit::FakeClock;

use crate::TestResult;

const PID: i32 = 4242;
const POD_API: &str = "6f0e4a1c-3b2d-4c5e-9f8a-7b6c5d4e3f21";
const CID_API: &str = "4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b";
const CID_ENVOY: &str = "5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c";
const POD_WORKER: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const CID_WORKER: &str = "7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d";
const KUBELET_TOKEN: &str = "kubelet-test-token";

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/workload")
        .join(rel)
}

fn sha256sum(path: &Path) -> Result<String, Box<dyn std::error::Error>> {
    // An independent implementation: coreutils, reading the file by path.
    let out = std::process::Command::new("sha256sum").arg(path).output()?;
    let text = String::from_utf8(out.stdout)?;
    Ok(text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

fn strings(sels: &[lanyard_core::Selector]) -> Vec<String> {
    sels.iter().map(ToString::to_string).collect()
}

/// The `stat` line of a process whose name has spaces and parentheses.
fn stat_line(pid: i32, start: u64) -> String {
    format!("{pid} (my (odd) prog) S 1 {pid} {pid} 0 -1 4194560 812 0 0 0 12 4 0 0 20 0 3 0 {start} 24576000 1520 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n")
}

/// A fake proc root with process [`PID`] (uid 1000, gid 1000, groups 29 and
/// 998), an `exe` symlink to a real file, passwd and group files.
struct FakeProc {
    dir: tempfile::TempDir,
    exe: PathBuf,
}

impl FakeProc {
    fn new(euid: u32, cgroup: &str) -> Result<Self, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("proc").join(PID.to_string());
        std::fs::create_dir_all(&p)?;
        std::fs::write(p.join("stat"), stat_line(PID, 5_000_123))?;
        std::fs::write(
            p.join("status"),
            format!("Name:\tprog\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t{PID}\nPid:\t{PID}\nUid:\t1000\t{euid}\t{euid}\t{euid}\nGid:\t1000\t1000\t1000\t1000\nGroups:\t29 998 \n"),
        )?;
        std::fs::write(p.join("cgroup"), cgroup)?;
        let exe = dir.path().join("bin").join("payments-api");
        std::fs::create_dir_all(exe.parent().unwrap_or(dir.path()))?;
        std::fs::write(&exe, b"\x7fELF pretend binary of the payments api\n")?;
        std::os::unix::fs::symlink(&exe, p.join("exe"))?;
        std::fs::write(
            dir.path().join("passwd"),
            "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        )?;
        std::fs::write(
            dir.path().join("group"),
            "root:x:0:\naudio:x:29:alice\nalice:x:1000:\ndocker:x:998:alice\n",
        )?;
        Ok(Self { dir, exe })
    }

    fn pid_dir(&self) -> PathBuf {
        self.dir.path().join("proc").join(PID.to_string())
    }

    fn config(&self) -> WorkloadAttestConfig {
        WorkloadAttestConfig {
            proc_root: self.dir.path().join("proc"),
            passwd_file: self.dir.path().join("passwd"),
            group_file: self.dir.path().join("group"),
            ..WorkloadAttestConfig::default()
        }
    }
}

fn alice() -> PeerCred {
    PeerCred {
        pid: Some(PID),
        uid: 1000,
        gid: 1000,
    }
}

#[tokio::test]
async fn this_process_through_the_real_proc() -> TestResult {
    use std::os::unix::fs::MetadataExt as _;
    // /proc/self is owned by the process's effective uid and gid.
    let me = std::fs::metadata("/proc/self")?;
    let cred = PeerCred {
        pid: Some(i32::try_from(std::process::id())?),
        uid: me.uid(),
        gid: me.gid(),
    };
    let exe = std::fs::canonicalize(std::env::current_exe()?)?;
    let digest = sha256sum(&exe)?;
    assert_eq!(digest.len(), 64);
    let a = WorkloadAttestor::new(WorkloadAttestConfig::default())?;
    let got = strings(&a.attest(&cred).await?.selectors);
    for want in [
        format!("unix:uid:{}", me.uid()),
        format!("unix:gid:{}", me.gid()),
        format!("unix:path:{}", exe.display()),
        format!("unix:sha256:{digest}"),
    ] {
        assert!(got.contains(&want), "{want} not in {got:?}");
    }
    assert!(!got.iter().any(|s| s.starts_with("k8s:")), "{got:?}");
    // Again (the digest now comes from the cache): the same answer.
    assert_eq!(strings(&a.attest(&cred).await?.selectors), got);
    // Another uid than the process has is refused.
    let liar = PeerCred {
        uid: me.uid().wrapping_add(1),
        ..cred
    };
    assert!(matches!(
        a.attest(&liar).await,
        Err(WorkloadAttestError::UidMismatch { .. })
    ));
    Ok(())
}

#[tokio::test]
async fn peer_credentials_of_a_real_unix_socket() -> TestResult {
    // Both ends are this process: what the agent does on accept().
    let (ours, _theirs) = tokio::net::UnixStream::pair()?;
    let cred = PeerCred::from(ours.peer_cred()?);
    assert_eq!(cred.pid, Some(i32::try_from(std::process::id())?));
    let a = WorkloadAttestor::new(WorkloadAttestConfig::default())?;
    let got = strings(&a.attest(&cred).await?.selectors);
    let exe = std::fs::canonicalize(std::env::current_exe()?)?;
    assert!(got.contains(&format!("unix:uid:{}", cred.uid)), "{got:?}");
    assert!(
        got.contains(&format!("unix:path:{}", exe.display())),
        "{got:?}"
    );
    Ok(())
}

#[tokio::test]
async fn fake_proc_gives_every_unix_selector() -> TestResult {
    let fake = FakeProc::new(1000, "0::/user.slice/user-1000.slice/session-3.scope\n")?;
    let digest = sha256sum(&fake.exe)?;
    let a = WorkloadAttestor::new(fake.config())?;
    let att = a.attest(&alice()).await?;
    let want = [
        "unix:gid:1000".to_owned(),
        "unix:group:alice".to_owned(),
        format!("unix:path:{}", fake.exe.display()),
        format!("unix:sha256:{digest}"),
        "unix:supplementary_gid:29".to_owned(),
        "unix:supplementary_gid:998".to_owned(),
        "unix:supplementary_group:audio".to_owned(),
        "unix:supplementary_group:docker".to_owned(),
        "unix:uid:1000".to_owned(),
        "unix:user:alice".to_owned(),
    ];
    assert_eq!(strings(&att.selectors), want);

    // A uid missing from passwd: no user selector, and a diagnostic says why.
    let bob = PeerCred {
        uid: 1001,
        gid: 1000,
        pid: Some(PID),
    };
    std::fs::write(
        fake.pid_dir().join("status"),
        "Uid:\t1001\t1001\t1001\t1001\nGroups:\t\n",
    )?;
    let att = a.attest(&bob).await?;
    let got = strings(&att.selectors);
    assert!(got.contains(&"unix:uid:1001".to_owned()));
    assert!(!got.iter().any(|s| s.starts_with("unix:user:")), "{got:?}");
    assert!(att
        .diagnostics
        .iter()
        .any(|d| d.message.contains("uid 1001 is not in")));

    // No pid from the kernel: uid and gid facts only.
    let no_pid = PeerCred {
        pid: None,
        ..alice()
    };
    let att = a.attest(&no_pid).await?;
    assert_eq!(
        strings(&att.selectors),
        [
            "unix:gid:1000",
            "unix:group:alice",
            "unix:uid:1000",
            "unix:user:alice"
        ]
    );
    Ok(())
}

#[tokio::test]
async fn binary_over_the_size_cap_is_not_hashed() -> TestResult {
    let fake = FakeProc::new(1000, "0::/\n")?;
    let mut config = fake.config();
    config.max_binary_size = 8;
    let att = WorkloadAttestor::new(config)?.attest(&alice()).await?;
    let got = strings(&att.selectors);
    assert!(
        !got.iter().any(|s| s.starts_with("unix:sha256:")),
        "{got:?}"
    );
    assert!(got.iter().any(|s| s.starts_with("unix:path:")), "{got:?}");
    assert!(att
        .diagnostics
        .iter()
        .any(|d| d.message.contains("over max_binary_size 8")));
    Ok(())
}

#[tokio::test]
async fn replaced_binary_keeps_its_digest_but_loses_its_path() -> TestResult {
    let fake = FakeProc::new(1000, "0::/\n")?;
    let a = WorkloadAttestor::new(fake.config())?;
    let before = a.attest(&alice()).await?;
    // The kernel shows "(deleted)" after an unlinked binary's path.
    let link = fake.pid_dir().join("exe");
    std::fs::remove_file(&link)?;
    let mut deleted = fake.exe.as_os_str().to_owned();
    deleted.push(" (deleted)");
    std::fs::rename(&fake.exe, &deleted)?;
    std::os::unix::fs::symlink(&deleted, &link)?;
    let after = a.attest(&alice()).await?;
    let sha = |s: &[lanyard_core::Selector]| {
        strings(s)
            .into_iter()
            .find(|x| x.starts_with("unix:sha256:"))
    };
    assert!(sha(&before.selectors).is_some());
    assert_eq!(sha(&after.selectors), sha(&before.selectors));
    assert!(!strings(&after.selectors)
        .iter()
        .any(|s| s.starts_with("unix:path:")));
    Ok(())
}

#[tokio::test]
async fn uid_mismatch_and_vanished_processes_are_refused() -> TestResult {
    // The process runs as 0 now but connected as 1000.
    let fake = FakeProc::new(0, "0::/\n")?;
    let a = WorkloadAttestor::new(fake.config())?;
    let err = a.attest(&alice()).await.err();
    assert!(
        matches!(
            err,
            Some(WorkloadAttestError::UidMismatch {
                pid: PID,
                peer_uid: 1000,
                proc_uid: 0
            })
        ),
        "{err:?}"
    );
    assert!(!err.is_some_and(|e| e.is_retryable()));

    // Gone before the first read, and gone half-way (stat but no status).
    let gone = PeerCred {
        pid: Some(PID + 1),
        ..alice()
    };
    assert!(matches!(
        a.attest(&gone).await,
        Err(WorkloadAttestError::ProcessGone { .. })
    ));
    std::fs::remove_file(fake.pid_dir().join("status"))?;
    assert!(matches!(
        a.attest(&alice()).await,
        Err(WorkloadAttestError::ProcessGone { pid: PID })
    ));
    // A stat file not in the kernel's format.
    std::fs::write(fake.pid_dir().join("stat"), "4242 (prog S 1\n")?;
    assert!(matches!(
        a.attest(&alice()).await,
        Err(WorkloadAttestError::ProcParse { .. })
    ));
    Ok(())
}

/// Points `exe` at a FIFO: attestation blocks opening it (between the two
/// start-time reads) until this thread opens the writing end, then runs
/// `during` and closes, so `during` happens exactly inside the window.
fn exe_fifo(fake: &FakeProc, during: impl FnOnce() + Send + 'static) -> TestResult {
    let fifo = fake.dir.path().join("exe.fifo");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status()?;
    assert!(status.success(), "mkfifo");
    let link = fake.pid_dir().join("exe");
    std::fs::remove_file(&link)?;
    std::os::unix::fs::symlink(&fifo, &link)?;
    std::thread::spawn(move || {
        if let Ok(mut w) = std::fs::OpenOptions::new().write(true).open(&fifo) {
            during();
            let _ = w.write_all(b"x");
        }
    });
    Ok(())
}

#[tokio::test]
async fn pid_reuse_between_reads_is_refused() -> TestResult {
    // Control: the same setup with an unchanged start time attests.
    let fake = FakeProc::new(1000, "0::/\n")?;
    exe_fifo(&fake, || {})?;
    let a = WorkloadAttestor::new(fake.config())?;
    let ok = a.attest(&alice()).await?;
    assert!(strings(&ok.selectors).contains(&"unix:uid:1000".to_owned()));

    // The process exits and another one gets its pid while it is read.
    let fake = FakeProc::new(1000, "0::/\n")?;
    let stat = fake.pid_dir().join("stat");
    exe_fifo(&fake, move || {
        let _ = std::fs::write(&stat, stat_line(PID, 5_000_999));
    })?;
    let a = WorkloadAttestor::new(fake.config())?;
    let err = a.attest(&alice()).await.err();
    assert!(
        matches!(
            err,
            Some(WorkloadAttestError::PidReused {
                pid: PID,
                before: 5_000_123,
                after: 5_000_999
            })
        ),
        "{err:?}"
    );
    assert_eq!(
        err.map(|e| e.caller_message()),
        Some("workload attestation failed; no identity issued")
    );

    // Or it exits and nothing takes its place.
    let fake = FakeProc::new(1000, "0::/\n")?;
    let dir = fake.pid_dir();
    exe_fifo(&fake, move || {
        let _ = std::fs::remove_file(dir.join("stat"));
    })?;
    let a = WorkloadAttestor::new(fake.config())?;
    assert!(matches!(
        a.attest(&alice()).await,
        Err(WorkloadAttestError::ProcessGone { pid: PID })
    ));
    Ok(())
}

#[test]
fn recorded_cgroup_files() -> TestResult {
    let container = Some((POD_API.to_owned(), Some(CID_API.to_owned())));
    type Placement = Option<(String, Option<String>)>;
    let table: [(&str, Placement); 9] = [
        ("v2-systemd-containerd-burstable.txt", container.clone()),
        ("v2-systemd-crio-guaranteed.txt", container.clone()),
        ("v2-cgroupns-relative.txt", container.clone()),
        ("v1-cgroupfs-docker.txt", container.clone()),
        ("v1-systemd-docker.txt", container.clone()),
        ("kind-nested-containerd.txt", container.clone()),
        // cri-o's monitor: in the pod, in no container.
        ("v2-crio-conmon.txt", Some((POD_API.to_owned(), None))),
        ("v2-host-session.txt", None),
        ("v1-host-docker.txt", None),
    ];
    for (file, want) in table {
        let text = std::fs::read_to_string(testdata(&format!("cgroup/{file}")))?;
        let got = parse_cgroup(1, &text)?.map(|p| (p.pod_uid, p.container_id));
        assert_eq!(got, want, "{file}");
    }
    Ok(())
}

/// A stub kubelet: `GET /pods` with the bearer token answers the current
/// pod list; it counts calls.
struct Kubelet {
    url: String,
    ca: PathBuf,
    token: PathBuf,
    calls: Arc<AtomicUsize>,
    pods: Arc<Mutex<serde_json::Value>>,
    _dir: tempfile::TempDir,
}

async fn kubelet() -> Result<Kubelet, Box<dyn std::error::Error>> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let pods: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(testdata("podlist.json"))?)?;
    let pods = Arc::new(Mutex::new(pods));
    let calls = Arc::new(AtomicUsize::new(0));
    let (c, p) = (calls.clone(), pods.clone());
    let app = axum::Router::new().route(
        "/pods",
        axum::routing::get(move |headers: HeaderMap| async move {
            c.fetch_add(1, Ordering::SeqCst);
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if auth != format!("Bearer {KUBELET_TOKEN}") {
                return Err(StatusCode::UNAUTHORIZED);
            }
            let body = p.lock().map(|v| v.clone()).unwrap_or_default();
            Ok(axum::Json(body))
        }),
    );
    let (cert, key) = lanyard_testkit::self_signed_tls();
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
        cert.clone().into_bytes(),
        key.into_bytes(),
    )
    .await?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        axum_server::from_tcp_rustls(listener, tls)
            .serve(app.into_make_service())
            .await
    });
    let dir = tempfile::tempdir()?;
    let (ca, token) = (dir.path().join("ca.crt"), dir.path().join("token"));
    std::fs::write(&ca, cert)?;
    std::fs::write(&token, format!("{KUBELET_TOKEN}\n"))?;
    Ok(Kubelet {
        url: format!("https://127.0.0.1:{}", addr.port()),
        ca,
        token,
        calls,
        pods,
        _dir: dir,
    })
}

impl Kubelet {
    fn config(&self) -> KubeletConfig {
        let mut k = KubeletConfig::new(&self.url);
        k.ca_file = Some(self.ca.clone());
        k.bearer_token_file = Some(self.token.clone());
        k.pod_cache_max_age = Duration::from_secs(10);
        k.min_refresh_interval = Duration::from_secs(1);
        k
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn in_pod(pod: &str, cid: &str) -> String {
    format!(
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{cid}.scope\n",
        pod.replace('-', "_")
    )
}

fn attestor_with(fake: &FakeProc, k: KubeletConfig, clock: &FakeClock) -> WorkloadAttestor {
    let mut config = fake.config();
    config.k8s = Some(k);
    WorkloadAttestor::with_clock(config, Arc::new(clock.clone()))
        .unwrap_or_else(|e| panic!("attestor: {e}"))
}

fn k8s_only(sels: &[lanyard_core::Selector]) -> Vec<String> {
    strings(sels)
        .into_iter()
        .filter(|s| s.starts_with("k8s:"))
        .collect()
}

#[tokio::test]
async fn pod_and_container_from_the_kubelet() -> TestResult {
    let kubelet = kubelet().await?;
    let clock = FakeClock::new();
    let cgroup = std::fs::read_to_string(testdata("cgroup/v2-systemd-containerd-burstable.txt"))?;
    let fake = FakeProc::new(1000, &cgroup)?;
    let a = attestor_with(&fake, kubelet.config(), &clock);
    let att = a.attest(&alice()).await?;
    assert_eq!(
        k8s_only(&att.selectors),
        [
            "k8s:container-image:ghcr.io/acme/api:2.4.1",
            "k8s:container-name:api",
            "k8s:node-name:node-1",
            "k8s:ns:payments",
            "k8s:pod-label:app.kubernetes.io/part-of:payments",
            "k8s:pod-label:app:api",
            "k8s:pod-label:pod-template-hash:7d9f8b6c5",
            "k8s:pod-name:api-7d9f8b6c5-x2k4q",
            &format!("k8s:pod-uid:{POD_API}"),
            "k8s:sa:api",
        ]
    );
    assert!(strings(&att.selectors).contains(&"unix:uid:1000".to_owned()));
    assert_eq!(kubelet.calls(), 1);
    // Cached: no second fetch.
    a.attest(&alice()).await?;
    assert_eq!(kubelet.calls(), 1);

    // The sidecar: the runtime's resolved image and the spec's are both facts.
    std::fs::write(fake.pid_dir().join("cgroup"), in_pod(POD_API, CID_ENVOY))?;
    let got = k8s_only(&a.attest(&alice()).await?.selectors);
    assert!(
        got.contains(&"k8s:container-name:envoy".to_owned()),
        "{got:?}"
    );
    assert!(got.contains(&"k8s:container-image:docker.io/envoyproxy/envoy:v1.31.2".to_owned()));
    assert!(got.contains(&"k8s:container-image:envoyproxy/envoy:v1.31.2".to_owned()));
    assert_eq!(kubelet.calls(), 1);

    // After the cache's age the list is fetched again.
    clock.advance(Duration::from_secs(11));
    a.attest(&alice()).await?;
    assert_eq!(kubelet.calls(), 2);

    // A host process (not in a pod): unix selectors, no kubelet call.
    std::fs::write(
        fake.pid_dir().join("cgroup"),
        "0::/system.slice/sshd.service\n",
    )?;
    let att = a.attest(&alice()).await?;
    assert!(k8s_only(&att.selectors).is_empty());
    assert!(strings(&att.selectors).contains(&"unix:user:alice".to_owned()));
    assert_eq!(kubelet.calls(), 2);
    Ok(())
}

#[tokio::test]
async fn a_container_not_yet_in_the_pod_status_gets_a_retryable_error() -> TestResult {
    let kubelet = kubelet().await?;
    let clock = FakeClock::new();
    let fake = FakeProc::new(1000, &in_pod(POD_WORKER, CID_WORKER))?;
    let a = attestor_with(&fake, kubelet.config(), &clock);
    let err = a.attest(&alice()).await.err();
    assert!(
        matches!(&err, Some(WorkloadAttestError::ContainerNotFound { namespace, pod_name, container_id })
            if namespace == "batch" && pod_name == "worker-0" && container_id == CID_WORKER),
        "{err:?}"
    );
    assert!(err.is_some_and(|e| e.is_retryable()));
    assert_eq!(kubelet.calls(), 1);

    // The container starts; within min_refresh_interval the kubelet is not
    // asked again, and the answer stays "retry".
    if let Ok(mut pods) = kubelet.pods.lock() {
        pods["items"][1]["status"]["containerStatuses"][0]["containerID"] =
            format!("containerd://{CID_WORKER}").into();
    }
    assert!(matches!(
        a.attest(&alice()).await,
        Err(WorkloadAttestError::ContainerNotFound { .. })
    ));
    assert_eq!(kubelet.calls(), 1);
    clock.advance(Duration::from_secs(1));
    let got = k8s_only(&a.attest(&alice()).await?.selectors);
    assert!(got.contains(&"k8s:ns:batch".to_owned()), "{got:?}");
    assert!(got.contains(&"k8s:container-name:worker".to_owned()));
    assert_eq!(kubelet.calls(), 2);

    // A pod the kubelet does not know (yet).
    std::fs::write(
        fake.pid_dir().join("cgroup"),
        in_pod("11111111-2222-4333-8444-555555555555", CID_WORKER),
    )?;
    clock.advance(Duration::from_secs(1));
    let err = a.attest(&alice()).await.err();
    assert!(
        matches!(err, Some(WorkloadAttestError::PodNotFound { .. })),
        "{err:?}"
    );
    assert!(err.is_some_and(|e| e.is_retryable()));
    assert_eq!(kubelet.calls(), 3);
    Ok(())
}

#[tokio::test]
async fn kubelet_trust_and_authentication() -> TestResult {
    let kubelet = kubelet().await?;
    let clock = FakeClock::new();
    let fake = FakeProc::new(1000, &in_pod(POD_API, CID_API))?;
    let unavailable = |r: Result<_, WorkloadAttestError>| {
        matches!(r, Err(WorkloadAttestError::KubeletUnavailable { .. }))
    };

    // Without the CA the self-signed certificate is not trusted.
    let mut k = kubelet.config();
    k.ca_file = None;
    assert!(unavailable(
        attestor_with(&fake, k.clone(), &clock)
            .attest(&alice())
            .await
    ));
    // Unless verification is explicitly skipped.
    k.danger_insecure_kubelet_skip_verify = true;
    let got = k8s_only(
        &attestor_with(&fake, k, &clock)
            .attest(&alice())
            .await?
            .selectors,
    );
    assert!(got.contains(&"k8s:sa:api".to_owned()));

    // A wrong bearer token: 401, retryable, and the token is not echoed.
    let wrong = fake.dir.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-token")?;
    let mut k = kubelet.config();
    k.bearer_token_file = Some(wrong);
    let err = attestor_with(&fake, k, &clock).attest(&alice()).await.err();
    let text = err.as_ref().map(ToString::to_string).unwrap_or_default();
    assert!(text.contains("HTTP 401"), "{text}");
    assert!(!text.contains("not-the-token"));
    assert!(err.is_some_and(|e| e.is_retryable()));

    // Configuration errors name the setting.
    let mut k = kubelet.config();
    k.url = "ftp://kubelet".into();
    let mut config = fake.config();
    config.k8s = Some(k);
    assert!(matches!(
        WorkloadAttestor::new(config.clone()),
        Err(WorkloadAttestError::Config {
            field: "k8s.url",
            ..
        })
    ));
    let mut k = kubelet.config();
    k.ca_file = Some(fake.dir.path().join("passwd"));
    config.k8s = Some(k);
    assert!(matches!(
        WorkloadAttestor::new(config),
        Err(WorkloadAttestError::Config {
            field: "k8s.ca_file",
            ..
        })
    ));
    Ok(())
}

proptest::proptest! {
    /// Whatever a process names itself, the start time is found.
    #[test]
    fn start_time_survives_any_command_name(comm in "\\PC{0,16}", start in 0u64..u64::MAX) {
        let line = format!("{PID} ({comm}) S 1 2 3 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0");
        proptest::prop_assert_eq!(lanyard_attest::workload::parse_start_time(&line), Some(start));
    }

    /// Any cgroup text gets an answer, never a panic; a pod UID found is
    /// always in the canonical shape.
    #[test]
    fn cgroup_parser_never_panics(text in "(\\PC{0,40}[:/_.-]{0,3}){0,12}") {
        if let Ok(Some(p)) = parse_cgroup(1, &text) {
            proptest::prop_assert!(p.pod_uid.len() == 36 || p.pod_uid.len() == 32);
            proptest::prop_assert!(p.container_id.is_none_or(|c| c.len() == 64));
        }
    }
}

#[test]
fn error_codes_retryability_and_caller_messages() {
    let table = [
        (
            WorkloadAttestError::ProcessGone { pid: 1 },
            "process_gone",
            false,
        ),
        (
            WorkloadAttestError::PidReused {
                pid: 1,
                before: 1,
                after: 2,
            },
            "pid_reused",
            false,
        ),
        (
            WorkloadAttestError::UidMismatch {
                pid: 1,
                peer_uid: 1,
                proc_uid: 0,
            },
            "uid_mismatch",
            false,
        ),
        (
            WorkloadAttestError::KubeletUnavailable {
                url: "https://127.0.0.1:10250/pods".into(),
                reason: "HTTP 401".into(),
            },
            "kubelet_unavailable",
            true,
        ),
        (
            WorkloadAttestError::PodNotFound {
                pod_uid: POD_API.into(),
            },
            "pod_not_found",
            true,
        ),
        (
            WorkloadAttestError::ContainerNotFound {
                namespace: "batch".into(),
                pod_name: "worker-0".into(),
                container_id: CID_WORKER.into(),
            },
            "container_not_found",
            true,
        ),
    ];
    for (err, code, retryable) in table {
        assert_eq!(err.code(), code);
        assert_eq!(err.is_retryable(), retryable, "{code}");
        // The caller learns nothing about pids, paths or pods.
        let msg = err.caller_message();
        assert!(
            !msg.contains('/') && !msg.chars().any(|c| c.is_ascii_digit()),
            "{msg}"
        );
    }
}
