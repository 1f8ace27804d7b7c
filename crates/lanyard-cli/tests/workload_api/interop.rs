//! Issue 10: SPIFFE clients nobody here wrote (Python grpcio on gRPC
//! C-core, Node's @grpc/grpc-js, Envoy's SDS API from PyPI's xds-protos), a
//! raw HTTP/2 client with every `:authority` seen in the wild, bad input,
//! and SPIRE's Delegated Identity API, all against a real `lanyard dev` over
//! its real sockets.
//!
//! The Python and Node clients come from the registries through
//! scripts/test.sh, which sets LANYARD_TEST_PYTHON (a venv with grpcio,
//! grpcio-tools, xds-protos, hpack) and LANYARD_TEST_NODE_MODULES; a test
//! whose variable is absent prints SKIPPED and returns.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{client, dev, eventually, lanyard, ok_json, raw_channel, uid, Proc, TestResult, BIN};

const ME: &str = "spiffe://example.org/tests/interop";

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn proto_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../lanyard-proto/proto")
}

/// The tool an env var points at, or a loud skip.
fn tool(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            eprintln!("SKIPPED {test}: {var} is not set (scripts/test.sh installs the clients and sets it)");
            None
        }
    }
}

/// Runs a driver, bounded in time; its one JSON line.
fn run_json(cmd: &mut Command) -> Result<Value, Box<dyn std::error::Error>> {
    let out = Command::new("timeout")
        .arg("120")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "{:?} failed: {}{}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let text = String::from_utf8(out.stdout)?;
    let line = text.lines().last().ok_or("no output")?;
    Ok(serde_json::from_str(line)?)
}

fn python(py: &str, script: &str, args: &[&str]) -> Result<Value, Box<dyn std::error::Error>> {
    run_json(Command::new(py).arg(clients_dir().join(script)).args(args))
}

/// `lanyard dev` with an entry for this test's uid, served once the
/// `spiffe` crate gets an SVID.
async fn dev_with_entry(
    d: &Path,
    extra: &[&str],
) -> Result<(Proc, String), Box<dyn std::error::Error>> {
    let (dev, info) = dev(d, extra)?;
    let socket = info["workload_socket"].as_str().ok_or("socket")?.to_owned();
    ok_json(&lanyard(
        d,
        &[
            "--output",
            "json",
            "entry",
            "create",
            "--spiffe-id",
            ME,
            "--tenant",
            "dev",
            "--selector",
            &format!("unix:uid:{}", uid()?),
        ],
    )?)?;
    let c = client(&socket).await?;
    eventually(Duration::from_secs(20), || {
        let c = c.clone();
        async move { c.fetch_x509_svid().await.ok() }
    })
    .await
    .ok_or("no X.509-SVID within 20s")?;
    Ok((dev, socket))
}

async fn still_serving(socket: &str) -> TestResult {
    let c = client(socket).await?;
    let svid = c.fetch_x509_svid().await?;
    assert_eq!(svid.spiffe_id().to_string(), ME);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_node_and_raw_http2_clients_work_unchanged() -> TestResult {
    let py = tool(
        "LANYARD_TEST_PYTHON",
        "python_node_and_raw_http2_clients_work_unchanged",
    );
    let node = tool(
        "LANYARD_TEST_NODE_MODULES",
        "python_node_and_raw_http2_clients_work_unchanged",
    );
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let (dev, socket) = dev_with_entry(d, &[]).await?;
    let proto = proto_dir().display().to_string();

    if let Some(py) = &py {
        // issue 10: grpcio (C-core) sends %2F...sock as :authority; h2 reset it.
        let r = python(py, "workload_client.py", &[&socket, &proto, ME, "api://py"])?;
        assert_eq!(r["x509_svids"], serde_json::json!([ME]), "{r}");
        assert_eq!(
            r["x509_bundles"],
            serde_json::json!(["spiffe://example.org"])
        );
        assert!(r["jwt_bundle_keys"].as_u64().unwrap_or(0) >= 1);
        assert_eq!(r["jwt_spiffe_id"], ME);
        assert_eq!(r["validated_spiffe_id"], ME);
        assert_eq!(r["validated_aud"], serde_json::json!(["api://py"]));
        assert_eq!(r["wrong_audience"], "INVALID_ARGUMENT");
        assert_eq!(r["no_header"], "INVALID_ARGUMENT");

        // Raw HTTP/2: every :authority seen in the wild, and a header block
        // split over one CONTINUATION frame per byte.
        for (authority, split) in [
            ("localhost", "0"),
            ("@raw", "0"),
            ("@pct", "0"),
            ("@empty", "0"),
            ("@pct", "1"),
        ] {
            let r = python(py, "raw_h2.py", &["call", &socket, authority, split])?;
            assert_eq!(r["status"], "200", "{authority}: {r}");
            assert_eq!(r["grpc_status"], "0", "{authority}: {r}");
            assert_eq!(r["spiffe_ids"], serde_json::json!([ME]), "{authority}: {r}");
            if split == "1" {
                assert!(r["frames"].as_u64().unwrap_or(0) > 100, "{r}");
            }
        }
    }
    if let Some(modules) = &node {
        let r = run_json(
            Command::new("node")
                .arg(clients_dir().join("workload_client.js"))
                .args([socket.as_str(), proto.as_str(), ME, "api://node"])
                .env("NODE_PATH", modules),
        )?;
        assert_eq!(r["x509_svids"], serde_json::json!([ME]), "{r}");
        assert_eq!(
            r["x509_bundles"],
            serde_json::json!(["spiffe://example.org"])
        );
        assert_eq!(r["jwt_spiffe_id"], ME);
        assert_eq!(r["validated_spiffe_id"], ME);
        assert_eq!(r["wrong_audience"], "INVALID_ARGUMENT");
        assert_eq!(r["no_header"], "INVALID_ARGUMENT");
    }

    // issue 10: `svid fetch --spiffe-id X --write DIR` for an X this process
    // does not hold fails and writes nothing.
    let out_dir = d.join("other");
    let w = lanyard(
        d,
        &[
            "svid",
            "fetch",
            "--socket",
            &socket,
            "--spiffe-id",
            "spiffe://example.org/someone-else",
            "--write",
            &out_dir.display().to_string(),
        ],
    )?;
    assert!(!w.status.success(), "must fail when X is not held");
    let err = String::from_utf8_lossy(&w.stderr);
    assert!(
        err.contains("holds no X.509-SVID for spiffe://example.org/someone-else")
            && err.contains(ME),
        "{err}"
    );
    assert!(!out_dir.join("svid.pem").exists(), "nothing written");
    let jwt = lanyard(
        d,
        &[
            "svid",
            "fetch",
            "--socket",
            &socket,
            "--jwt",
            "--audience",
            "a",
            "--spiffe-id",
            "spiffe://example.org/someone-else",
        ],
    )?;
    assert!(!jwt.status.success());
    assert!(String::from_utf8_lossy(&jwt.stderr).contains("holds no JWT-SVID for"));
    let mine = d.join("mine");
    let w = lanyard(
        d,
        &[
            "svid",
            "fetch",
            "--socket",
            &socket,
            "--spiffe-id",
            ME,
            "--write",
            &mine.display().to_string(),
        ],
    )?;
    assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
    assert!(mine.join("svid.pem").exists());
    assert!(dev.stop()?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_sds_gets_the_certificate_rootca_and_a_rotation() -> TestResult {
    let Some(py) = tool(
        "LANYARD_TEST_PYTHON",
        "envoy_sds_gets_the_certificate_rootca_and_a_rotation",
    ) else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let (dev, socket) = dev_with_entry(dir.path(), &["--svid-ttl", "6s"]).await?;
    let r = python(&py, "sds_client.py", &[&socket, ME, "30"])?;
    assert_eq!(r["chain_certs"], 2, "leaf + intermediate: {r}");
    assert_eq!(r["key_pem"], true);
    assert_eq!(r["rootca_certs"], 1);
    assert_eq!(
        r["rotated"], true,
        "a new SVID was pushed on the stream: {r}"
    );
    assert_ne!(r["rotation_version"], r["first_version"]);
    assert_eq!(r["nonce_changed"], true);
    assert_eq!(r["all_validator"], "envoy.tls.cert_validator.spiffe");
    assert_eq!(r["all_trust_domains"], serde_json::json!(["example.org"]));
    assert_eq!(r["default_has_chain"], true);
    assert_eq!(r["fetch_names"], serde_json::json!(["ROOTCA"]));
    assert_eq!(r["not_mine"], "INVALID_ARGUMENT");
    still_serving(&socket).await?;
    assert!(dev.stop()?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_an_error_and_the_agent_keeps_serving() -> TestResult {
    let py = tool(
        "LANYARD_TEST_PYTHON",
        "bad_input_gets_an_error_and_the_agent_keeps_serving",
    );
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let (dev, socket) = dev_with_entry(d, &[]).await?;

    // Thousands of idle streams over a few connections; everyone else is
    // still served meanwhile, and they all go away cleanly.
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut c =
            lanyard_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(
                raw_channel(&socket).await?,
            );
        for _ in 0..500 {
            let mut req = tonic::Request::new(lanyard_proto::workload::X509svidRequest {});
            req.metadata_mut().insert(
                "workload.spiffe.io",
                tonic::metadata::MetadataValue::from_static("true"),
            );
            let mut s = c.fetch_x509svid(req).await?.into_inner();
            assert!(
                s.message().await?.is_some(),
                "each idle stream got its SVID"
            );
            idle.push(s);
        }
    }
    assert_eq!(idle.len(), 2000);
    still_serving(&socket).await?;
    drop(idle);
    still_serving(&socket).await?;

    let Some(py) = py else {
        assert!(dev.stop()?.success());
        return Ok(());
    };
    // Garbage protobuf and an oversized message: a gRPC error, not a hang.
    let r = python(&py, "raw_h2.py", &["garbage", &socket])?;
    assert_eq!(r["grpc_status"], "13", "Internal (decode error): {r}");
    let r = python(&py, "raw_h2.py", &["oversized", &socket])?;
    assert_eq!(r["grpc_status"], "11", "OutOfRange (too large): {r}");
    // A CONTINUATION flood: the connection is closed at 64 KiB.
    let r = python(&py, "raw_h2.py", &["flood", &socket])?;
    assert_eq!(r["closed"], true, "{r}");
    assert!(
        r["sent_bytes"].as_u64().unwrap_or(u64::MAX) < 1 << 20,
        "{r}"
    );
    // Half a frame, then gone.
    python(&py, "raw_h2.py", &["half", &socket])?;
    still_serving(&socket).await?;

    // A caller that disappears mid-stream (SIGKILL with a stream open).
    let mut hang = Command::new(&py)
        .arg(clients_dir().join("workload_client.py"))
        .args([
            socket.as_str(),
            &proto_dir().display().to_string(),
            ME,
            "api://hang",
            "--hang",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut line = String::new();
    {
        use std::io::BufRead as _;
        let out = hang.stdout.take().ok_or("stdout")?;
        std::io::BufReader::new(out).read_line(&mut line)?;
    }
    assert!(
        line.contains(ME),
        "the hanging client got its SVIDs: {line}"
    );
    Command::new("kill")
        .args(["-KILL", &hang.id().to_string()])
        .status()?;
    hang.wait()?;
    still_serving(&socket).await?;

    // The caller's pid reused between connect and call (needs root for
    // ns_last_pid): refused as another process, never served.
    let r = python(&py, "raw_h2.py", &["pidreuse", &socket])?;
    assert!(r.get("error").is_none(), "{r}");
    assert_eq!(r["grpc_status"], "7", "PermissionDenied: {r}");
    assert_eq!(r["spiffe_ids"], serde_json::json!([]));
    still_serving(&socket).await?;
    assert!(dev.stop()?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delegated_identity_api_serves_only_its_delegate() -> TestResult {
    use lanyard_proto::spire::api::agent::delegatedidentity::v1 as di;
    use lanyard_proto::spire::api::types::Selector as PbSelector;
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let delegate = "spiffe://example.org/tests/delegate";
    let log = d.join("dev.log");
    let child = Command::new(BIN)
        .args([
            "--data-dir",
            &d.display().to_string(),
            "--output",
            "json",
            "--log-format",
            "json",
        ])
        .args(["dev", "--listen", "127.0.0.1:0", "--delegate", delegate])
        .env("LANYARD_LOG", "warn,lanyard::audit=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let dev = Proc(child);
    let info = eventually(Duration::from_secs(60), || async {
        std::fs::read_to_string(d.join("dev.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .filter(|v| v["pid"].as_u64() == Some(u64::from(dev.0.id())))
    })
    .await
    .ok_or("lanyard dev did not start")?;
    let admin = info["admin_socket"]
        .as_str()
        .ok_or("admin_socket")?
        .to_owned();
    let me = uid()?;
    let entry = |id: &str, selectors: &[String]| {
        let mut args = vec![
            "--output",
            "json",
            "entry",
            "create",
            "--spiffe-id",
            id,
            "--tenant",
            "dev",
        ];
        for s in selectors {
            args.push("--selector");
            args.push(s);
        }
        ok_json(&lanyard(d, &args)?)
    };
    // The workload: a `sleep` of this uid, told apart by its binary.
    let sleeper = Proc(Command::new("sleep").arg("120").spawn()?);
    let sleep_exe = std::fs::read_link(format!("/proc/{}/exe", sleeper.0.id()))?
        .display()
        .to_string();
    entry(
        "spiffe://example.org/tests/sleeper",
        &[format!("unix:uid:{me}"), format!("unix:path:{sleep_exe}")],
    )?;
    // This test process holds an identity, but not the delegate's.
    entry(ME, &[format!("unix:uid:{me}")])?;
    let by_selectors = || di::SubscribeToX509sviDsRequest {
        selectors: vec![
            PbSelector {
                r#type: "unix".into(),
                value: format!("uid:{me}"),
            },
            PbSelector {
                r#type: "unix".into(),
                value: format!("path:{sleep_exe}"),
            },
        ],
    };
    let connect = || async {
        Ok::<_, Box<dyn std::error::Error>>(
            di::delegated_identity_client::DelegatedIdentityClient::new(raw_channel(&admin).await?),
        )
    };
    let c = connect().await?;
    let denied = eventually(Duration::from_secs(20), || {
        let mut c = c.clone();
        async move {
            match c.subscribe_to_x509svi_ds(by_selectors()).await {
                Err(s) if s.code() == tonic::Code::PermissionDenied => Some(()),
                _ => None,
            }
        }
    })
    .await;
    assert!(
        denied.is_some(),
        "a caller that is not a delegate gets PermissionDenied"
    );

    // Now this process becomes the delegate (an entry with the delegate's ID).
    let exe = std::fs::read_link("/proc/self/exe")?.display().to_string();
    entry(
        delegate,
        &[format!("unix:uid:{me}"), format!("unix:path:{exe}")],
    )?;
    let first = eventually(Duration::from_secs(20), || {
        let mut c = c.clone();
        async move {
            let mut s = c
                .subscribe_to_x509svi_ds(by_selectors())
                .await
                .ok()?
                .into_inner();
            s.message()
                .await
                .ok()
                .flatten()
                .filter(|m| !m.x509_svids.is_empty())
        }
    })
    .await
    .ok_or("the delegate got no SVID for the workload within 20s")?;
    let paths = |m: &di::SubscribeToX509sviDsResponse| -> Vec<String> {
        m.x509_svids
            .iter()
            .filter_map(|s| {
                s.x509_svid
                    .as_ref()?
                    .id
                    .as_ref()
                    .map(|i| format!("{}{}", i.trust_domain, i.path))
            })
            .collect()
    };
    assert!(
        paths(&first).contains(&"example.org/tests/sleeper".to_owned()),
        "{:?}",
        paths(&first)
    );
    assert!(first
        .x509_svids
        .iter()
        .all(|s| s.x509_svid_key.first() == Some(&0x30)));

    let mut c = connect().await?;
    // By pid: the same workload, attested from /proc.
    let mut by_pid = c
        .subscribe_to_x509svi_ds_by_pid(di::SubscribeToX509sviDsByPidRequest {
            pid: i32::try_from(sleeper.0.id())?,
        })
        .await?
        .into_inner();
    let m = by_pid.message().await?.ok_or("no message")?;
    assert!(
        paths(&m).contains(&"example.org/tests/sleeper".to_owned()),
        "{:?}",
        paths(&m)
    );
    // JWT-SVIDs for the workload.
    let jwt = c
        .fetch_jwtsvi_ds(di::FetchJwtsviDsRequest {
            audience: vec!["api://delegated".into()],
            selectors: by_selectors().selectors,
        })
        .await?
        .into_inner();
    // Both of the workload's identities (uid alone, and uid + binary).
    assert_eq!(
        jwt.svids.len(),
        2,
        "{:?}",
        jwt.svids.iter().map(|s| &s.id).collect::<Vec<_>>()
    );
    let sleeper_jwt = jwt
        .svids
        .iter()
        .find(|s| s.id.as_ref().map(|i| i.path.as_str()) == Some("/tests/sleeper"))
        .ok_or("no JWT-SVID for the sleeper")?;
    assert_eq!(sleeper_jwt.token.split('.').count(), 3);
    assert!(sleeper_jwt.expires_at > sleeper_jwt.issued_at);
    // Bundles.
    let b = c
        .subscribe_to_x509_bundles(di::SubscribeToX509BundlesRequest {})
        .await?
        .into_inner()
        .message()
        .await?
        .ok_or("no bundle")?;
    assert!(b.ca_certificates.contains_key("spiffe://example.org"));
    let j = c
        .subscribe_to_jwt_bundles(di::SubscribeToJwtBundlesRequest {})
        .await?
        .into_inner()
        .message()
        .await?
        .ok_or("no JWT bundle")?;
    assert!(j.bundles.contains_key("spiffe://example.org"));
    // Bad requests: no selectors, no audience.
    let empty = c
        .subscribe_to_x509svi_ds(di::SubscribeToX509sviDsRequest {
            selectors: Vec::new(),
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(empty, Some(tonic::Code::InvalidArgument));
    let no_aud = c
        .fetch_jwtsvi_ds(di::FetchJwtsviDsRequest {
            audience: Vec::new(),
            selectors: by_selectors().selectors,
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(no_aud, Some(tonic::Code::InvalidArgument));
    // The Workload API socket does not serve the Delegated Identity API.
    let mut wrong = di::delegated_identity_client::DelegatedIdentityClient::new(
        raw_channel(info["workload_socket"].as_str().ok_or("socket")?).await?,
    );
    let code = wrong
        .subscribe_to_x509_bundles(di::SubscribeToX509BundlesRequest {})
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(code, Some(tonic::Code::Unimplemented));

    // Audited: the denial and the grants, with caller, delegate, selectors.
    let started = Instant::now();
    let events: Vec<Value> = loop {
        let text = std::fs::read_to_string(&log)?;
        let events: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "lanyard::audit")
            .collect();
        if events
            .iter()
            .any(|e| e["fields"]["action"] == "delegated.FetchJWTSVIDs")
            || started.elapsed() > Duration::from_secs(10)
        {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let deny = events
        .iter()
        .find(|e| e["fields"]["decision"] == "deny" && e["fields"]["reason"] == "not_a_delegate")
        .ok_or("no audited denial")?;
    assert!(
        deny["fields"]["caller"]
            .as_str()
            .is_some_and(|c| c.contains(&format!("uid={me}"))),
        "{deny}"
    );
    let grant = events
        .iter()
        .find(|e| {
            e["fields"]["action"] == "delegated.FetchJWTSVIDs" && e["fields"]["decision"] == "allow"
        })
        .ok_or("no audited grant")?;
    assert_eq!(grant["fields"]["delegate"], format!("spiffe_id:{delegate}"));
    assert!(
        grant["fields"]["selectors"]
            .as_str()
            .is_some_and(|s| s.contains(&sleep_exe)),
        "{grant}"
    );
    assert!(
        grant["fields"]["spiffe_ids"]
            .as_str()
            .is_some_and(|s| s.contains("tests/sleeper")),
        "{grant}"
    );
    drop(sleeper);
    assert!(dev.stop()?.success());
    Ok(())
}
