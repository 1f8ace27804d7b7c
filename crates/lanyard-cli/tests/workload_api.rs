//! The node agent and the SPIFFE Workload API end to end: `lanyard dev`
//! (server + built-in agent) as a process, the `spiffe` crate from crates.io
//! as the client (the library SPIFFE users run), and `lanyard agent` as a
//! second process on a join token.

// Tests and benchmarks fail by panicking and index fixtures they built.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use spiffe::WorkloadApiClient;

#[path = "workload_api/interop.rs"]
mod interop;
mod support;

use support::{dev_with, eventually, lanyard, ok_json, uid, Proc, TestResult, BIN};

fn dev(dir: &Path, extra: &[&str]) -> Result<(Proc, Value), Box<dyn std::error::Error>> {
    dev_with(dir, extra, &[])
}

fn dev_start_again(dir: &Path) -> Result<(Proc, Value), Box<dyn std::error::Error>> {
    dev(dir, &["--svid-ttl", "8s"])
}

async fn client(socket: &str) -> Result<WorkloadApiClient, Box<dyn std::error::Error>> {
    Ok(WorkloadApiClient::connect_to(format!("unix:{socket}")).await?)
}

/// A raw tonic channel over the socket (to send what SPIFFE libraries never
/// send: no security header, unknown methods).
async fn raw_channel(
    socket: &str,
) -> Result<tonic::transport::Channel, Box<dyn std::error::Error>> {
    let p = PathBuf::from(socket);
    Ok(tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let p = p.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(p).await?,
                ))
            }
        }))
        .await?)
}

async fn raw_call(
    socket: &str,
    path: &'static str,
    header: bool,
) -> Result<tonic::Code, Box<dyn std::error::Error>> {
    let mut grpc = tonic::client::Grpc::new(raw_channel(socket).await?);
    grpc.ready().await?;
    let mut req = tonic::Request::new(lanyard_proto::workload::X509svidRequest {});
    if header {
        req.metadata_mut().insert(
            "workload.spiffe.io",
            tonic::metadata::MetadataValue::from_static("true"),
        );
    }
    let codec = tonic_prost::ProstCodec::<
        lanyard_proto::workload::X509svidRequest,
        lanyard_proto::workload::X509svidResponse,
    >::default();
    let res = grpc
        .server_streaming(
            req,
            tonic::codegen::http::uri::PathAndQuery::from_static(path),
            codec,
        )
        .await;
    Ok(match res {
        Ok(mut stream) => match stream.get_mut().message().await {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        },
        Err(s) => s.code(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spiffe_clients_get_svids_from_lanyard_dev() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let (dev, info) = dev(d, &["--svid-ttl", "8s"])?;
    let socket = info["workload_socket"]
        .as_str()
        .ok_or("workload_socket")?
        .to_owned();

    // No entry yet: PermissionDenied, and the security header is enforced.
    let c = client(&socket).await?;
    let denied = c.fetch_x509_svid().await;
    assert!(denied.is_err(), "no entry must mean no SVID");
    assert_eq!(
        raw_call(&socket, "/SpiffeWorkloadAPI/FetchX509SVID", true).await?,
        tonic::Code::PermissionDenied
    );
    assert_eq!(
        raw_call(&socket, "/SpiffeWorkloadAPI/FetchX509SVID", false).await?,
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        raw_call(&socket, "/SpiffeWorkloadAPI/FetchWITSVID", true).await?,
        tonic::Code::Unimplemented
    );

    // `explain --pid` names the selectors and the near miss.
    let me = uid()?;
    let other = ok_json(&lanyard(
        d,
        &[
            "--output",
            "json",
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://example.org/never",
            "--tenant",
            "dev",
            "--selector",
            &format!("unix:uid:{me}"),
            "--selector",
            "unix:path:/nonexistent/binary",
        ],
    )?)?;
    let pid = std::process::id().to_string();
    let explain = lanyard(d, &["--output", "json", "explain", "--pid", &pid])?;
    assert_eq!(explain.status.code(), Some(1), "nothing matches yet");
    let ex: Value = serde_json::from_slice(&explain.stdout)?;
    assert!(
        ex["selectors"].as_array().is_some_and(|s| s
            .iter()
            .any(|v| v == &Value::from(format!("unix:uid:{me}")))),
        "{ex}"
    );
    assert_eq!(
        ex["near_misses"][0]["spiffe_id"],
        "spiffe://example.org/never"
    );
    assert_eq!(
        ex["near_misses"][0]["missing"][0],
        "unix:path:/nonexistent/binary"
    );
    lanyard(d, &["entry", "delete", other["id"].as_str().ok_or("id")?])?;

    // An entry for this uid: no --parent needed under lanyard dev.
    ok_json(&lanyard(
        d,
        &[
            "--output",
            "json",
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://example.org/tests/me",
            "--tenant",
            "dev",
            "--selector",
            &format!("unix:uid:{me}"),
            "--dns-name",
            "me.internal",
        ],
    )?)?;
    let svid = eventually(Duration::from_secs(15), || {
        let c = c.clone();
        async move { c.fetch_x509_svid().await.ok() }
    })
    .await
    .ok_or("no X.509-SVID within 15s")?;
    assert_eq!(
        svid.spiffe_id().to_string(),
        "spiffe://example.org/tests/me"
    );
    assert_eq!(svid.cert_chain().len(), 2, "leaf + intermediate");
    let bundles = c.fetch_x509_bundles().await?;
    let td = spiffe::TrustDomain::new("example.org")?;
    assert!(
        bundles.get(&td).is_some(),
        "bundle keyed by the trust domain"
    );
    // The bundle served over HTTP carries the same root, as an x509-svid key.
    let http_bundle: Value = reqwest::get(info["bundle_endpoint"].as_str().ok_or("bundle")?)
        .await?
        .json()
        .await?;
    assert!(http_bundle["keys"].as_array().is_some_and(|k| k
        .iter()
        .any(|k| k["use"] == "x509-svid" && k["x5c"].is_array() && k.get("kid").is_none())));

    // JWT-SVID: fetch, validate through the agent, refuse the wrong audience.
    let jwt = c.fetch_jwt_svid(["api://orders"], None).await?;
    assert_eq!(jwt.spiffe_id().to_string(), "spiffe://example.org/tests/me");
    let validated = c.validate_jwt_token("api://orders", jwt.token()).await?;
    assert_eq!(
        validated.spiffe_id().to_string(),
        "spiffe://example.org/tests/me"
    );
    assert!(c
        .validate_jwt_token("api://elsewhere", jwt.token())
        .await
        .is_err());
    let jwt_bundles = c.fetch_jwt_bundles().await?;
    assert!(jwt_bundles.get(&td).is_some());

    // Rotation: the stream pushes a new SVID (8s TTL, renewed at half-life).
    let source = spiffe::X509Source::builder()
        .endpoint(format!("unix:{socket}"))
        .build()
        .await?;
    let first = source.svid()?;
    let first_leaf = first.cert_chain().first().ok_or("leaf")?.as_ref().to_vec();
    let rotated = eventually(Duration::from_secs(20), || {
        let s = source.svid().ok();
        let old = first_leaf.clone();
        async move {
            s.filter(|s| {
                s.cert_chain()
                    .first()
                    .is_some_and(|c| c.as_ref() != old.as_slice())
            })
        }
    })
    .await;
    let rotated = rotated.ok_or("the X509Source saw no rotated SVID within 20s")?;

    // A restart mid-stream: the source keeps its last SVID meanwhile, then
    // reconnects to the restarted agent (same socket, stored node SVID) and
    // receives the next one.
    assert!(dev.stop()?.success());
    let before_restart = rotated
        .cert_chain()
        .first()
        .ok_or("leaf")?
        .as_ref()
        .to_vec();
    assert!(
        source.svid().is_ok(),
        "the cached SVID is still there while the agent is down"
    );
    let (dev, _) = dev_start_again(d)?;
    let after = eventually(Duration::from_secs(30), || {
        let s = source.svid().ok();
        let old = before_restart.clone();
        async move {
            s.filter(|s| {
                s.cert_chain()
                    .first()
                    .is_some_and(|c| c.as_ref() != old.as_slice())
            })
        }
    })
    .await;
    assert!(
        after.is_some(),
        "the source got a new SVID after the restart"
    );

    // `lanyard svid fetch --write` writes usable files.
    let out_dir = d.join("files");
    let w = lanyard(
        d,
        &["svid", "fetch", "--write", &out_dir.display().to_string()],
    )?;
    assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(out_dir.join("svid.key"))?
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(
        std::fs::read_to_string(out_dir.join("svid.pem"))?
            .matches("BEGIN CERTIFICATE")
            .count()
            == 2
    );

    // Revoking the node stops SVIDs within 5 seconds.
    let node = info["node_spiffe_id"].as_str().ok_or("node")?;
    ok_json(&lanyard(
        d,
        &[
            "--output",
            "json",
            "revoke",
            "--spiffe-id",
            node,
            "--reason",
            "test: node compromised",
        ],
    )?)?;
    let started = Instant::now();
    let stopped = eventually(Duration::from_secs(5), || {
        let c = c.clone();
        async move { c.fetch_x509_svid().await.is_err().then_some(()) }
    })
    .await;
    assert!(
        stopped.is_some(),
        "still issuing {:?} after the node was revoked",
        started.elapsed()
    );
    drop(source);
    assert!(dev.stop()?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_agent_joins_once_with_its_token() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let (dev, info) = dev(d, &[])?;
    let created = ok_json(&lanyard(
        d,
        &[
            "--output",
            "json",
            "jointoken",
            "create",
            "--node-id",
            "vm-1",
            "--ttl",
            "10m",
        ],
    )?)?;
    let token = created["token"].as_str().ok_or("token")?.to_owned();
    assert!(token.starts_with("lyj1."));
    // The cloud-init form carries the bundle and the agent config.
    let ci = lanyard(
        d,
        &[
            "jointoken",
            "create",
            "--node-id",
            "vm-2",
            "--cloud-init",
            "--server-address",
            "127.0.0.1:1",
        ],
    )?;
    let ci = String::from_utf8(ci.stdout)?;
    assert!(
        ci.starts_with("#cloud-config")
            && ci.contains("BEGIN CERTIFICATE")
            && ci.contains("join_token_file")
    );

    let bundle = d.join("bundle.pem");
    std::fs::write(&bundle, created["trust_bundle_pem"].as_str().ok_or("pem")?)?;
    let me = uid()?;
    ok_json(&lanyard(
        d,
        &[
            "--output",
            "json",
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://example.org/vm-1/app",
            "--tenant",
            "dev",
            "--selector",
            &format!("unix:uid:{me}"),
            "--parent",
            "spiffe://example.org/lanyard/node/vm-1",
        ],
    )?)?;
    let agent_config =
        |name: &str,
         token: &str|
         -> Result<(PathBuf, PathBuf, PathBuf, u16), Box<dyn std::error::Error>> {
            let state = d.join(format!("{name}-state"));
            let socket = d.join(format!("{name}.sock"));
            let files = d.join(format!("{name}-files"));
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let cfg = d.join(format!("{name}.toml"));
            std::fs::write(
            &cfg,
            format!(
                "server_address = \"{}\"\nserver_name = \"localhost\"\ntrust_domain = \"example.org\"\ntrust_bundle = \"{}\"\njoin_token = \"{token}\"\nstate_dir = \"{}\"\nsocket = \"{}\"\nsync_interval = \"1s\"\n[[files]]\nspiffe_id = \"spiffe://example.org/vm-1/app\"\ndir = \"{}\"\njwt_audience = \"api://AzureADTokenExchange\"\n[metadata]\nlisten = \"127.0.0.1:{port}\"\nspiffe_id = \"spiffe://example.org/vm-1/app\"\n",
                info["node_api"].as_str().unwrap_or_default(),
                bundle.display(),
                state.display(),
                socket.display(),
                files.display()
            ),
        )?;
            Ok((cfg, socket, files, port))
        };
    let (cfg, socket, files, port) = agent_config("vm1", &token)?;
    let agent = Proc(
        Command::new(BIN)
            .args(["agent", "--config", &cfg.display().to_string()])
            .env("LANYARD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let socket_s = socket.display().to_string();
    let svid = eventually(Duration::from_secs(30), || {
        let s = socket_s.clone();
        async move {
            let c = client(&s).await.ok()?;
            c.fetch_x509_svid().await.ok()
        }
    })
    .await
    .ok_or("the VM agent served no SVID within 30s")?;
    assert_eq!(
        svid.spiffe_id().to_string(),
        "spiffe://example.org/vm-1/app"
    );

    // Files: written atomically, key 0600, token for the configured audience.
    let token_file = files.join("token.jwt");
    let written = eventually(Duration::from_secs(10), || {
        let f = token_file.clone();
        async move { std::fs::read_to_string(f).ok() }
    })
    .await
    .ok_or("no token file")?;
    assert_eq!(written.split('.').count(), 3);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(files.join("svid.key"))?
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // Metadata endpoint: header required, proxies refused, then the identity.
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/v1/identity/x509");
    assert_eq!(http.get(&url).send().await?.status(), 400);
    assert_eq!(
        http.get(&url)
            .header("Metadata", "true")
            .header("X-Forwarded-For", "10.0.0.1")
            .send()
            .await?
            .status(),
        403
    );
    let doc: Value = http
        .get(&url)
        .header("Metadata", "true")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(doc["spiffe_id"], "spiffe://example.org/vm-1/app");
    assert!(doc["key_pem"]
        .as_str()
        .is_some_and(|k| k.contains("PRIVATE KEY")));
    let jwt: Value = http
        .get(format!(
            "http://127.0.0.1:{port}/v1/identity/jwt?audience=api://x"
        ))
        .header("Metadata", "true")
        .send()
        .await?
        .json()
        .await?;
    assert!(jwt["token"]
        .as_str()
        .is_some_and(|t| t.split('.').count() == 3));

    // The node is listed; the agent restarts on its stored SVID, without the token.
    let nodes = ok_json(&lanyard(d, &["--output", "json", "node", "list"])?)?;
    assert!(nodes["nodes"].as_array().is_some_and(|n| n
        .iter()
        .any(|n| n["id"] == "vm-1" && n["attestation"] == "join_token")));

    // The same token again, on a fresh machine: refused, and audited.
    let (cfg2, _, _, _) = agent_config("vm1-again", &token)?;
    let again = Command::new(BIN)
        .args(["agent", "--config", &cfg2.display().to_string()])
        .env("LANYARD_LOG", "warn")
        .output()?;
    assert!(!again.status.success(), "a used join token must be refused");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("refused"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let audit = lanyard(d, &["audit", "export"])?;
    let text = String::from_utf8_lossy(&audit.stdout);
    assert!(
        text.contains("join token already used"),
        "the refusal is audited"
    );

    // The server goes away: the agent keeps serving the SVIDs it holds.
    assert!(dev.stop()?.success());
    let c = client(&socket_s).await?;
    let cached = c.fetch_x509_svid().await?;
    assert_eq!(
        cached.spiffe_id().to_string(),
        "spiffe://example.org/vm-1/app"
    );
    agent.stop()?;
    Ok(())
}

/// INV-6: two workloads talk mTLS with X.509-SVIDs the built-in agent of
/// `lanyard dev` hands out, through `lanyard-spiffe-tls` and the `spiffe`
/// crate's X509Source, and a connection stays up across a rotation while
/// new handshakes present the new SVID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_talk_mtls_through_a_rotation() -> TestResult {
    use lanyard_spiffe_tls::{
        client_config, server_config, Authorizer, SpiffeId, SpiffeIdPicker, X509Material,
    };
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let (dev, info) = dev(d, &["--svid-ttl", "6s"])?;
    let socket = info["workload_socket"].as_str().ok_or("socket")?.to_owned();
    let me = uid()?;
    // This test process gets both identities (the second entry is more
    // specific); each side picks its own from the Workload API.
    let exe = std::fs::read_link("/proc/self/exe")?.display().to_string();
    let server_id = "spiffe://example.org/demo/server";
    let client_id = "spiffe://example.org/demo/client";
    ok_json(&lanyard(
        d,
        &[
            "--output",
            "json",
            "entry",
            "create",
            "--spiffe-id",
            server_id,
            "--tenant",
            "dev",
            "--selector",
            &format!("unix:uid:{me}"),
        ],
    )?)?;
    ok_json(&lanyard(
        d,
        &[
            "--output",
            "json",
            "entry",
            "create",
            "--spiffe-id",
            client_id,
            "--tenant",
            "dev",
            "--selector",
            &format!("unix:uid:{me}"),
            "--selector",
            &format!("unix:path:{exe}"),
        ],
    )?)?;
    let source = |id: &'static str| {
        let socket = socket.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let built = spiffe::X509Source::builder()
                    .endpoint(format!("unix:{socket}"))
                    .picker(SpiffeIdPicker::new(SpiffeId::parse(id)?))
                    .build()
                    .await;
                match built {
                    Ok(s) => {
                        return Ok::<Arc<dyn X509Material>, Box<dyn std::error::Error>>(Arc::new(s))
                    }
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    };
    let server_src = source(server_id).await?;
    let client_src = source(client_id).await?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(
        server_src,
        Authorizer::exact([SpiffeId::parse(client_id)?]),
    )?));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(
        client_src,
        Authorizer::exact([SpiffeId::parse(server_id)?]),
    )?));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 16];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0
                        || tls
                            .write_all(buf.get(..n).unwrap_or_default())
                            .await
                            .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    let connect = || {
        let connector = connector.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = rustls::pki_types::ServerName::try_from("ignored.invalid")?;
            let tls = connector.connect(name, tcp).await?;
            let leaf = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref().to_vec())
                .ok_or("no peer certificate")?;
            let peer = lanyard_spiffe_tls::peer_spiffe_id(tls.get_ref().1).map(|id| id.to_string());
            Ok::<_, Box<dyn std::error::Error>>((tls, leaf, peer))
        }
    };
    let (mut long, first_leaf, peer) = connect().await?;
    assert_eq!(peer.as_deref(), Some(server_id));
    assert!(echo(&mut long, 0).await?);
    // Within 20s the server's SVID rotates (6s TTL, renewed at half-life);
    // the long connection keeps echoing all along.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut rotated = false;
    let mut round = 1u8;
    while Instant::now() < deadline && !rotated {
        assert!(
            echo(&mut long, round).await?,
            "the long-lived connection broke"
        );
        let (_, leaf, peer) = connect().await?;
        assert_eq!(peer.as_deref(), Some(server_id));
        rotated = leaf != first_leaf;
        round = round.wrapping_add(1);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        rotated,
        "no new handshake presented a rotated SVID within 20s"
    );
    assert!(
        echo(&mut long, 200).await?,
        "the connection made before the rotation still works"
    );
    assert!(dev.stop()?.success());
    Ok(())
}

async fn echo(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    round: u8,
) -> Result<bool, std::io::Error> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let msg = [round; 8];
    tls.write_all(&msg).await?;
    let mut back = [0u8; 8];
    tls.read_exact(&mut back).await?;
    Ok(back == msg)
}
