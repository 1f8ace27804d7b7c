//! The agent's side of the node API: TLS that checks the server's SPIFFE ID
//! against the trust bundle, the node SVID as client certificate (read at
//! every handshake, so a renewal needs no restart), and the node SVID kept on
//! disk so a restarted agent never needs its (already used) join token again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use base64::Engine as _;
use lanyard_proto::node::node_client::NodeClient as PbClient;
use lanyard_proto::node::{attest_request, AttestRequest, NodeSvid, RenewNodeRequest};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};

use crate::AgentError;

/// How the node proves itself the first time.
#[derive(Clone)]
pub enum Bootstrap {
    /// A one-time join token.
    JoinToken(String),
    /// A file holding a Kubernetes projected service-account token.
    K8sTokenFile(PathBuf),
    /// None: a stored node SVID must exist.
    Stored,
}

impl std::fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::JoinToken(_) => f.write_str("JoinToken(***)"),
            Self::K8sTokenFile(p) => write!(f, "K8sTokenFile({})", p.display()),
            Self::Stored => f.write_str("Stored"),
        }
    }
}

/// The node's identity as kept on disk (0600).
#[derive(Clone, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// Node id.
    pub node_id: String,
    /// Node SPIFFE ID.
    pub spiffe_id: String,
    /// Chain, leaf first, base64 DER.
    pub chain: Vec<String>,
    /// Key, base64 PKCS#8.
    pub key: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// Unix seconds.
    pub issued_at: i64,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("spiffe_id", &self.spiffe_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl NodeIdentity {
    fn from_svid(svid: NodeSvid, key_pkcs8: &[u8], now: i64) -> Self {
        let b64 = base64::engine::general_purpose::STANDARD;
        Self {
            node_id: svid.node_id,
            spiffe_id: svid.spiffe_id,
            chain: svid.cert_chain.iter().map(|c| b64.encode(c)).collect(),
            key: b64.encode(key_pkcs8),
            expires_at: svid.expires_at,
            issued_at: now,
        }
    }

    fn certified_key(&self) -> Result<Arc<CertifiedKey>, AgentError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let chain = self
            .chain
            .iter()
            .map(|c| b64.decode(c).map(CertificateDer::from))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| AgentError::Node("stored node SVID is not base64".into()))?;
        let key = b64
            .decode(&self.key)
            .map_err(|_| AgentError::Node("stored node key is not base64".into()))?;
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let signing = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(key.into()))
            .map_err(|e| AgentError::Node(format!("node key: {e}")))?;
        Ok(Arc::new(CertifiedKey::new(chain, signing)))
    }

    /// When to renew: half-way through the SVID's life.
    pub fn renew_at(&self) -> i64 {
        self.issued_at + (self.expires_at - self.issued_at) / 2
    }
}

/// Connects to the server's node API.
#[derive(Debug, Clone)]
pub struct NodeClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    addr: String,
    server_name: ServerName<'static>,
    expected_server: String,
    roots: ArcSwap<Vec<Vec<u8>>>,
    identity: ArcSwap<Option<NodeIdentity>>,
    client_key: ArcSwap<Option<Arc<CertifiedKey>>>,
    state_file: PathBuf,
    channel: ArcSwap<Option<Channel>>,
}

impl NodeClient {
    /// A client for the node API at `addr` (`host:port`), trusting `roots`
    /// (DER) and expecting the server's SPIFFE ID `spiffe://TD/lanyard/server`.
    /// A node SVID stored in `state_dir` is loaded when present.
    ///
    /// # Errors
    /// [`AgentError`] for a bad address or an unreadable stored identity.
    pub fn new(
        addr: &str,
        server_name: Option<&str>,
        trust_domain: &str,
        roots: Vec<Vec<u8>>,
        state_dir: &Path,
    ) -> Result<Self, AgentError> {
        let host = server_name
            .unwrap_or_else(|| addr.rsplit_once(':').map_or(addr, |(h, _)| h))
            .trim_matches(['[', ']']);
        let server_name = ServerName::try_from(host.to_owned()).map_err(|_| {
            AgentError::Config(format!("server address {addr:?} has no valid host"))
        })?;
        let state_file = state_dir.join("node-svid.json");
        let identity = match std::fs::read(&state_file) {
            Ok(bytes) => Some(
                serde_json::from_slice::<NodeIdentity>(&bytes)
                    .map_err(|e| AgentError::Node(format!("{}: {e}", state_file.display())))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(AgentError::Io(
                    format!("reading {}", state_file.display()),
                    e,
                ))
            }
        };
        let client_key = identity
            .as_ref()
            .map(NodeIdentity::certified_key)
            .transpose()?;
        Ok(Self {
            inner: Arc::new(Inner {
                addr: addr.to_owned(),
                server_name,
                expected_server: format!("spiffe://{trust_domain}/lanyard/server"),
                roots: ArcSwap::from_pointee(roots),
                identity: ArcSwap::from_pointee(identity),
                client_key: ArcSwap::from_pointee(client_key),
                state_file,
                channel: ArcSwap::from_pointee(None),
            }),
        })
    }

    /// The node identity, if attested.
    pub fn identity(&self) -> Option<NodeIdentity> {
        self.inner.identity.load().as_ref().clone()
    }

    /// Replaces the trusted roots (from a sync); new connections use them.
    pub fn set_roots(&self, roots: Vec<Vec<u8>>) {
        if **self.inner.roots.load() != roots {
            self.inner.roots.store(Arc::new(roots));
        }
    }

    /// A gRPC client, connecting lazily (reconnects after failures).
    pub fn grpc(&self) -> Result<PbClient<Channel>, AgentError> {
        if let Some(ch) = self.inner.channel.load().as_ref() {
            return Ok(PbClient::new(ch.clone()).max_decoding_message_size(16 * 1024 * 1024));
        }
        let inner = self.inner.clone();
        let connector = tower::service_fn(move |_uri: tonic::transport::Uri| {
            let inner = inner.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(&inner.addr).await?;
                // Small gRPC frames must not wait for a delayed ACK (Nagle).
                tcp.set_nodelay(true)?;
                let config = inner.tls_config().map_err(std::io::Error::other)?;
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(inner.server_name.clone(), tcp)
                    .await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        });
        let channel = Endpoint::from_static("http://lanyard-node-api")
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .connect_with_connector_lazy(connector);
        self.inner.channel.store(Arc::new(Some(channel.clone())));
        Ok(PbClient::new(channel).max_decoding_message_size(16 * 1024 * 1024))
    }

    fn reset_channel(&self) {
        self.inner.channel.store(Arc::new(None));
    }

    /// Attests the node (when no valid stored SVID exists) or renews it when
    /// past half-life. Returns true when the identity changed.
    ///
    /// # Errors
    /// [`AgentError`] from the server (refused token, revoked node) or I/O.
    pub async fn ensure_identity(
        &self,
        bootstrap: &Bootstrap,
        now: i64,
    ) -> Result<bool, AgentError> {
        let current = self.identity();
        match current {
            Some(id) if id.expires_at > now => {
                if now < id.renew_at() {
                    return Ok(false);
                }
                let (key, csr) = new_key_and_csr()?;
                let svid = self
                    .grpc()?
                    .renew_node(RenewNodeRequest { csr })
                    .await
                    .map_err(AgentError::from_status)?
                    .into_inner();
                self.adopt(svid, &key, now)?;
                tracing::info!(node = %self.identity().map(|i| i.spiffe_id).unwrap_or_default(), "node SVID renewed");
                Ok(true)
            }
            _ => {
                let method = match bootstrap {
                    Bootstrap::JoinToken(t) => attest_request::Method::JoinToken(t.clone()),
                    Bootstrap::K8sTokenFile(p) => attest_request::Method::K8sPsat(
                        std::fs::read_to_string(p)
                            .map_err(|e| AgentError::Io(format!("reading {}", p.display()), e))?
                            .trim()
                            .to_owned(),
                    ),
                    Bootstrap::Stored => {
                        return Err(AgentError::Node(
                            "no valid node SVID is stored and no join token or Kubernetes token is configured; create one with `lanyard jointoken create --node-id …`".into(),
                        ))
                    }
                };
                let (key, csr) = new_key_and_csr()?;
                let svid = self
                    .grpc()?
                    .attest(AttestRequest {
                        method: Some(method),
                        csr,
                    })
                    .await
                    .map_err(AgentError::from_status)?
                    .into_inner();
                self.adopt(svid, &key, now)?;
                tracing::info!(node = %self.identity().map(|i| i.spiffe_id).unwrap_or_default(), "node attested");
                Ok(true)
            }
        }
    }

    fn adopt(&self, svid: NodeSvid, key_pkcs8: &[u8], now: i64) -> Result<(), AgentError> {
        if !svid.x509_roots.is_empty() {
            self.set_roots(svid.x509_roots.clone());
        }
        let identity = NodeIdentity::from_svid(svid, key_pkcs8, now);
        let certified = identity.certified_key()?;
        let json =
            serde_json::to_vec_pretty(&identity).map_err(|e| AgentError::Node(e.to_string()))?;
        crate::files::write_atomic(&self.inner.state_file, &json, 0o600).map_err(|e| {
            AgentError::Io(format!("writing {}", self.inner.state_file.display()), e)
        })?;
        self.inner.client_key.store(Arc::new(Some(certified)));
        self.inner.identity.store(Arc::new(Some(identity)));
        // New handshakes present the new certificate.
        self.reset_channel();
        Ok(())
    }
}

impl Inner {
    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for r in self.roots.load().iter() {
            roots
                .add(CertificateDer::from(r.clone()))
                .map_err(|e| e.to_string())?;
        }
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| e.to_string())?;
        let verifier = Arc::new(SpiffeServerVerifier {
            webpki,
            expected: self.expected_server.clone(),
        });
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match self.client_key.load().as_ref() {
            Some(key) => builder.with_client_cert_resolver(Arc::new(StaticResolver(key.clone()))),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Standard chain + host name verification against the bundle, and the
/// certificate must be the server's SVID.
#[derive(Debug)]
struct SpiffeServerVerifier {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    expected: String,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        match lanyard_ca::x509::spiffe_id_of(end_entity).map(|id| id.to_string()) {
            Some(id) if id == self.expected => Ok(ServerCertVerified::assertion()),
            other => Err(rustls::Error::General(format!(
                "the node API presented {}, not {}",
                other.unwrap_or_else(|| "no SPIFFE ID".into()),
                self.expected
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[derive(Debug)]
struct StaticResolver(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for StaticResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A new P-256 key (PKCS#8) and a CSR for it (DER).
///
/// # Errors
/// [`AgentError::Node`] if generation fails.
pub fn new_key_and_csr() -> Result<(zeroize::Zeroizing<Vec<u8>>, Vec<u8>), AgentError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| AgentError::Node(format!("generating a key: {e}")))?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .map_err(|e| AgentError::Node(format!("building a CSR: {e}")))?;
    Ok((
        zeroize::Zeroizing::new(key.serialize_der()),
        csr.der().to_vec(),
    ))
}

/// Seconds since the epoch.
pub fn unix_now(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
