//! `spiffe::X509Source` as the SVID source: a real Workload API stream over
//! gRPC on a Unix socket, served by a minimal test agent (the real agent
//! lives in `lanyard dev`; this one hands out SVIDs from the test CA and
//! streams a new response on rotation, as the SPIFFE Workload API does).

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::Stream;
use lanyard_proto::workload::spiffe_workload_api_server::{
    SpiffeWorkloadApi, SpiffeWorkloadApiServer,
};
use lanyard_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest,
    ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svid, X509svidRequest,
    X509svidResponse,
};
use lanyard_spiffe_tls::{
    client_config, server_config, Authorizer, Svid, TrustDomain, X509Material,
};
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

use crate::support::{id, td, Ca, Client, EchoServer};

const SERVER: &str = "spiffe://example.org/server";
const CLIENT: &str = "spiffe://example.org/client";

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Streams the current `X509SVIDResponse`, and again on every change.
struct TestAgent {
    current: watch::Receiver<X509svidResponse>,
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for TestAgent {
    type FetchX509SVIDStream = BoxStream<X509svidResponse>;
    type FetchX509BundlesStream = BoxStream<X509BundlesResponse>;
    type FetchJWTBundlesStream = BoxStream<JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        // Workload API §5.1: the security header is required.
        if request
            .metadata()
            .get("workload.spiffe.io")
            .and_then(|v| v.to_str().ok())
            != Some("true")
        {
            return Err(Status::invalid_argument("security header missing"));
        }
        let stream = futures_util::stream::unfold(
            (self.current.clone(), true),
            |(mut rx, first)| async move {
                if !first {
                    rx.changed().await.ok()?;
                }
                let next = rx.borrow_and_update().clone();
                Some((Ok(next), (rx, false)))
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn fetch_x509_bundles(
        &self,
        _: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        Err(Status::unimplemented("not in the test agent"))
    }

    async fn fetch_jwtsvid(
        &self,
        _: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        Err(Status::unimplemented("not in the test agent"))
    }

    async fn fetch_jwt_bundles(
        &self,
        _: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        Err(Status::unimplemented("not in the test agent"))
    }

    async fn validate_jwtsvid(
        &self,
        _: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        Err(Status::unimplemented("not in the test agent"))
    }
}

/// A test agent on a Unix socket; `rotate` streams a new response.
pub struct Agent {
    socket: PathBuf,
    tx: watch::Sender<X509svidResponse>,
    task: JoinHandle<()>,
}

impl Agent {
    pub async fn start(dir: &Path, name: &str, first: X509svidResponse) -> anyhow::Result<Self> {
        let socket = dir.join(name);
        let listener = UnixListener::bind(&socket)?;
        let (tx, current) = watch::channel(first);
        let incoming = futures_util::stream::unfold(listener, |listener| async move {
            let next = listener.accept().await.map(|(stream, _)| stream);
            Some((next, listener))
        });
        let service = SpiffeWorkloadApiServer::new(TestAgent { current });
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        Ok(Self { socket, tx, task })
    }

    pub fn endpoint(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    pub fn rotate(&self, next: X509svidResponse) {
        self.tx.send_replace(next);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The agent's answer: `svids` (the first is the default) with `ca`'s
/// bundle, plus federated bundles.
pub fn response(svids: &[&Svid], ca: &Ca, federated: &[(&TrustDomain, &Ca)]) -> X509svidResponse {
    X509svidResponse {
        svids: svids
            .iter()
            .map(|svid| X509svid {
                spiffe_id: svid.spiffe_id().to_string(),
                x509_svid: svid.cert_chain().iter().flat_map(|c| c.to_vec()).collect(),
                x509_svid_key: svid.private_key().secret_pkcs8_der().to_vec(),
                bundle: ca.root_der(),
                hint: String::new(),
            })
            .collect(),
        crl: Vec::new(),
        federated_bundles: federated
            .iter()
            .map(|(td, ca)| (td.id_string(), ca.root_der()))
            .collect(),
    }
}

pub fn leaf(svid: &Svid) -> Vec<u8> {
    svid.cert_chain()
        .first()
        .map(|c| c.to_vec())
        .unwrap_or_default()
}

async fn source(agent: &Agent) -> anyhow::Result<Arc<spiffe::X509Source>> {
    let source = spiffe::X509Source::builder()
        .endpoint(agent.endpoint())
        .initial_sync_timeout(Duration::from_secs(10))
        .build()
        .await
        .context("X509Source against the test agent")?;
    Ok(Arc::new(source))
}

/// Polls until `source` presents `want` as its leaf, within 10 s.
async fn wait_for_leaf(source: &spiffe::X509Source, want: &[u8]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let current = X509Material::svid(source)?;
        if leaf(&current) == want {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the source never saw the rotated SVID"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn x509_source_feeds_mtls_and_rotation() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("example.org");
    let partner = Ca::new("partner.net");
    let partner_td = td("partner.net");
    let server_svid = ca.svid(SERVER);
    let client_svid = ca.svid(CLIENT);
    let server_agent = Agent::start(
        dir.path(),
        "server.sock",
        response(&[&server_svid], &ca, &[(&partner_td, &partner)]),
    )
    .await?;
    let client_agent = Agent::start(
        dir.path(),
        "client.sock",
        response(&[&client_svid], &ca, &[]),
    )
    .await?;
    let server_source = source(&server_agent).await?;
    let client_source = source(&client_agent).await?;

    // The federated bundle arrives through the same stream.
    let federated = X509Material::bundle(server_source.as_ref(), &partner_td)?
        .context("no partner.net bundle")?;
    assert_eq!(federated.roots().len(), 1);
    assert!(X509Material::bundle(client_source.as_ref(), &partner_td)?.is_none());

    let server_cfg = server_config(
        server_source.clone(),
        Authorizer::any_in_trust_domain(td("example.org")),
    )?;
    let client_cfg = client_config(client_source.clone(), Authorizer::exact([id(SERVER)]))?;
    let mut server = EchoServer::start(server_cfg).await?;

    let mut long = Client::connect(client_cfg.clone(), server.addr).await?;
    long.echo("first").await?;
    assert_eq!(long.peer_leaf(), leaf(&server_svid));
    let seen = server.next_event().await??;
    assert_eq!(seen.peer, Some(id(CLIENT)));
    assert_eq!(seen.peer_leaf, leaf(&client_svid));

    // The agent rotates both SVIDs; the sources follow the stream.
    let server_svid2 = ca.svid(SERVER);
    let client_svid2 = ca.svid(CLIENT);
    server_agent.rotate(response(&[&server_svid2], &ca, &[(&partner_td, &partner)]));
    client_agent.rotate(response(&[&client_svid2], &ca, &[]));
    wait_for_leaf(&server_source, &leaf(&server_svid2)).await?;
    wait_for_leaf(&client_source, &leaf(&client_svid2)).await?;
    long.echo("after rotation").await?;

    let mut fresh = Client::connect(client_cfg, server.addr).await?;
    fresh.echo("fresh").await?;
    assert_eq!(fresh.peer_leaf(), leaf(&server_svid2));
    let seen = server.next_event().await??;
    assert_eq!(seen.peer_leaf, leaf(&client_svid2));
    long.echo("old connection still works").await?;
    assert_eq!(long.peer_leaf(), leaf(&server_svid));

    server_source.shutdown().await;
    client_source.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn picker_chooses_by_spiffe_id_and_fails_closed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("example.org");
    let (a, b) = (ca.svid(CLIENT), ca.svid(SERVER));
    let agent = Agent::start(dir.path(), "agent.sock", response(&[&a, &b], &ca, &[])).await?;
    let build = |want: &str| {
        spiffe::X509Source::builder()
            .endpoint(agent.endpoint())
            .initial_sync_timeout(Duration::from_secs(3))
            .picker(lanyard_spiffe_tls::SpiffeIdPicker::new(id(want)))
            .build()
    };
    let picked = build(SERVER).await?;
    let svid = X509Material::svid(&picked)?;
    assert_eq!(leaf(&svid), leaf(&b));
    picked.shutdown().await;
    assert!(
        build("spiffe://example.org/nobody").await.is_err(),
        "a source without the wanted SVID must not start"
    );
    Ok(())
}
