//! Test CA, SVIDs and a TLS echo server on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context as _};
use lanyard_ca::x509::{Authority, X509SvidParams};
use lanyard_spiffe_tls::{Bundle, SpiffeId, Svid, TrustDomain};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Every network step of a test is bounded by this.
pub const STEP: Duration = Duration::from_secs(10);
/// Size of one echo message.
pub const MSG: usize = 16;

pub fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

pub fn td(s: &str) -> TrustDomain {
    TrustDomain::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// A trust domain's CA, created a day ago so it can also sign SVIDs that
/// have already expired.
pub struct Ca {
    authority: Authority,
}

impl Ca {
    pub fn new(trust_domain: &str) -> Self {
        let day = Duration::from_secs(24 * 3600);
        let authority = Authority::generate(
            &td(trust_domain),
            SystemTime::now() - day,
            30 * day,
            20 * day,
        )
        .unwrap_or_else(|e| panic!("CA for {trust_domain}: {e}"));
        Self { authority }
    }

    /// An SVID valid from now for an hour.
    pub fn svid(&self, spiffe_id: &str) -> Svid {
        self.svid_with(spiffe_id, SystemTime::now(), Duration::from_secs(3600), &[])
    }

    /// An SVID issued at `now` for `ttl`, with extra DNS SANs.
    pub fn svid_with(
        &self,
        spiffe_id: &str,
        now: SystemTime,
        ttl: Duration,
        dns_names: &[String],
    ) -> Svid {
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap_or_else(|e| panic!("key: {e}"));
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .unwrap_or_else(|e| panic!("csr: {e}"));
        let signed = self
            .authority
            .sign_svid(&X509SvidParams {
                spiffe_id: &id(spiffe_id),
                csr_der: csr.der(),
                dns_names,
                kind: lanyard_ca::x509::SvidKind::Workload,
                ttl,
                now,
            })
            .unwrap_or_else(|e| panic!("sign {spiffe_id}: {e}"));
        let mut chain = vec![signed.cert_der];
        chain.extend(signed.chain_der);
        Svid::from_der(chain, key.serialize_der()).unwrap_or_else(|e| panic!("svid: {e}"))
    }

    pub fn bundle(&self) -> Bundle {
        Bundle::new(
            self.authority.trust_domain().clone(),
            vec![self.authority.root_der().to_vec().into()],
        )
        .unwrap_or_else(|e| panic!("bundle: {e}"))
    }

    pub fn root_der(&self) -> Vec<u8> {
        self.authority.root_der().to_vec()
    }
}

/// What the server saw for one connection.
#[derive(Debug)]
pub struct Accepted {
    pub peer: Option<SpiffeId>,
    pub peer_leaf: Vec<u8>,
}

/// A TLS echo server: each connection's handshake outcome goes to
/// `events`; then it echoes `MSG`-byte messages until the client closes.
pub struct EchoServer {
    pub addr: SocketAddr,
    pub events: mpsc::UnboundedReceiver<Result<Accepted, std::io::Error>>,
    task: JoinHandle<()>,
}

impl EchoServer {
    pub async fn start(config: rustls::ServerConfig) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let conn = tls.get_ref().1;
                    let accepted = Accepted {
                        peer: lanyard_spiffe_tls::peer_spiffe_id(conn),
                        peer_leaf: conn
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| c.to_vec())
                            .unwrap_or_default(),
                    };
                    let _ = tx.send(Ok(accepted));
                    let mut buf = [0u8; MSG];
                    while tls.read_exact(&mut buf).await.is_ok() {
                        if tls.write_all(&buf).await.is_err() || tls.flush().await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Ok(Self { addr, events, task })
    }

    /// The next connection's handshake outcome.
    pub async fn next_event(&mut self) -> anyhow::Result<Result<Accepted, std::io::Error>> {
        tokio::time::timeout(STEP, self.events.recv())
            .await
            .context("server saw no connection in time")?
            .ok_or_else(|| anyhow!("server stopped"))
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client connection after its handshake.
pub struct Client {
    pub tls: tokio_rustls::client::TlsStream<TcpStream>,
}

impl Client {
    /// Connects and handshakes. The server name is arbitrary: it is not checked.
    pub async fn connect(
        config: rustls::ClientConfig,
        addr: SocketAddr,
    ) -> Result<Self, std::io::Error> {
        let connector = TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("not-checked.invalid")
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let tls = tokio::time::timeout(STEP, connector.connect(name, tcp))
            .await
            .map_err(|_| std::io::Error::other("handshake timed out"))??;
        Ok(Self { tls })
    }

    pub fn peer(&self) -> Option<SpiffeId> {
        lanyard_spiffe_tls::peer_spiffe_id(self.tls.get_ref().1)
    }

    pub fn peer_leaf(&self) -> Vec<u8> {
        self.tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default()
    }

    /// Sends one message and checks it comes back.
    pub async fn echo(&mut self, text: &str) -> Result<(), std::io::Error> {
        let mut msg = [b'.'; MSG];
        for (slot, byte) in msg.iter_mut().zip(text.bytes()) {
            *slot = byte;
        }
        let round = async {
            self.tls.write_all(&msg).await?;
            self.tls.flush().await?;
            let mut back = [0u8; MSG];
            self.tls.read_exact(&mut back).await?;
            if back != msg {
                return Err(std::io::Error::other("echo differs"));
            }
            Ok(())
        };
        tokio::time::timeout(STEP, round)
            .await
            .map_err(|_| std::io::Error::other("echo timed out"))?
    }
}
