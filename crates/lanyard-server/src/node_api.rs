//! The gRPC node API that `lanyard agent` talks to (`proto/node.proto`).
//!
//! Always TLS: the server presents its own X.509-SVID
//! (`spiffe://TD/lanyard/server`, DNS names from `[node_api] dns_names`),
//! which agents verify against the trust bundle and by that SPIFFE ID. A
//! client certificate is optional at the TLS layer (the first `Attest` has
//! none) and, when present, must chain to the trust domain's roots; every
//! method but `Attest` then requires a node SVID
//! (`spiffe://TD/lanyard/node/ID`) whose node is not revoked.
//!
//! Join tokens are single use: the server keeps only a SHA-256 of the token
//! and marks it used with one conditional UPDATE, so two agents racing with
//! the same token cannot both win. Every attestation, renewal and signing
//! decision is audited.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use lanyard_core::{Decision, SpiffeId, TrustDomain};
use lanyard_proto::node::node_server::{Node, NodeServer};
use lanyard_proto::node::{
    attest_request, AttestRequest, Entry as PbEntry, MintJwtSvidRequest, MintJwtSvidResponse,
    NodeSvid, RenewNodeRequest, SignX509SvidsRequest, SignX509SvidsResponse, SyncRequest,
    SyncResponse, X509Svid as PbX509Svid,
};
use lanyard_store::{AuditDraft, JoinTokenRow, NodeRow};
use tonic::{Request, Response, Status};

use crate::app::AppState;
use crate::config::NodeApiConfig;
use crate::ServerError;

/// Prefix of join tokens: `lyj1.<id>.<secret>`.
pub const JOIN_TOKEN_PREFIX: &str = "lyj1";
/// How often agents are told to sync.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(2);
/// Longest SVID batch one call may ask for.
const MAX_BATCH: usize = 1000;
/// Largest message the node API accepts.
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// The SPIFFE ID of node `node_id`: `spiffe://TD/lanyard/node/ID`.
///
/// # Errors
/// A message naming the bad node id.
pub fn node_spiffe_id(td: &TrustDomain, node_id: &str) -> Result<SpiffeId, String> {
    let ok = !node_id.is_empty()
        && node_id.len() <= 128
        && node_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        return Err(format!(
            "node id {:?} must be 1-128 characters of letters, digits, '-', '_' and '.'",
            node_id.chars().take(64).collect::<String>()
        ));
    }
    SpiffeId::parse(&format!("{}/lanyard/node/{node_id}", td.id_string()))
        .map_err(|e| e.to_string())
}

/// The server's own SPIFFE ID on the node API.
pub fn server_spiffe_id(td: &TrustDomain) -> Result<SpiffeId, String> {
    SpiffeId::parse(&format!("{}/lanyard/server", td.id_string())).map_err(|e| e.to_string())
}

/// SHA-256 of a join token, hex (what the store keeps).
pub fn join_token_hash(token: &str) -> String {
    lanyard_core::hex::encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref(),
    )
}

/// A new join token and its row.
///
/// # Errors
/// When the random number generator fails.
pub fn new_join_token(
    td: &TrustDomain,
    node_id: &str,
    selectors: Vec<String>,
    now: i64,
    ttl: Duration,
    created_by: &str,
) -> Result<(String, JoinTokenRow), String> {
    node_spiffe_id(td, node_id)?;
    let mut secret = [0u8; 24];
    aws_lc_rs::rand::fill(&mut secret).map_err(|_| "random number generator failed".to_owned())?;
    let mut id = [0u8; 6];
    aws_lc_rs::rand::fill(&mut id).map_err(|_| "random number generator failed".to_owned())?;
    let id = lanyard_core::hex::encode(&id);
    let token = format!(
        "{JOIN_TOKEN_PREFIX}.{id}.{}",
        lanyard_core::hex::encode(&secret)
    );
    let row = JoinTokenRow {
        id,
        token_hash: join_token_hash(&token),
        node_id: node_id.to_owned(),
        trust_domain: td.to_string(),
        selectors,
        created_at: now,
        expires_at: now + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
        used_at: None,
        created_by: created_by.to_owned(),
    };
    Ok((token, row))
}

/// The TLS side of the node API: the server's SVID and the roots client
/// certificates must chain to, rebuilt when the CA changes or the SVID is
/// past half its life.
#[derive(Debug)]
struct NodeTls {
    current: ArcSwap<TlsState>,
    renew: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct TlsState {
    config: Arc<rustls::ServerConfig>,
    renew_at: SystemTime,
    ca_generation: i64,
}

impl NodeTls {
    fn build(state: &AppState, cfg: &NodeApiConfig) -> Result<TlsState, String> {
        let now = state.clock.now();
        let ca = state.ca.current();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| e.to_string())?;
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .map_err(|e| e.to_string())?;
        let id = server_spiffe_id(&state.settings.trust_domain)?;
        let (ttl, _) = state.ca.svid_ttls();
        let svid = ca
            .authority
            .sign_svid(&lanyard_ca::x509::X509SvidParams {
                spiffe_id: &id,
                csr_der: csr.der(),
                dns_names: &cfg.dns_names,
                ttl,
                now,
            })
            .map_err(|e| e.to_string())?;
        let mut chain = vec![rustls::pki_types::CertificateDer::from(svid.cert_der)];
        chain.extend(
            svid.chain_der
                .into_iter()
                .map(rustls::pki_types::CertificateDer::from),
        );
        let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for r in &ca.roots {
            roots
                .add(rustls::pki_types::CertificateDer::from(r.clone()))
                .map_err(|e| e.to_string())?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| e.to_string())?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key_der)
            .map_err(|e| e.to_string())?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(TlsState {
            config: Arc::new(config),
            renew_at: now + ttl / 2,
            ca_generation: ca.generation,
        })
    }

    async fn config(&self, state: &AppState, cfg: &NodeApiConfig) -> Arc<rustls::ServerConfig> {
        let cur = self.current.load_full();
        let stale =
            state.clock.now() >= cur.renew_at || state.ca.current().generation != cur.ca_generation;
        if !stale {
            return cur.config.clone();
        }
        let _guard = self.renew.lock().await;
        match Self::build(state, cfg) {
            Ok(next) => {
                let config = next.config.clone();
                self.current.store(Arc::new(next));
                config
            }
            Err(e) => {
                tracing::error!(error = %e, "renewing the node API certificate failed; keeping the current one");
                cur.config.clone()
            }
        }
    }
}

/// Serves the node API on `listener` until `shutdown`.
///
/// # Errors
/// [`ServerError`] when the first certificate cannot be made or serving fails.
pub async fn serve(
    state: AppState,
    cfg: NodeApiConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let tls = Arc::new(NodeTls {
        current: ArcSwap::from_pointee(
            NodeTls::build(&state, &cfg).map_err(ServerError::StoredKey)?,
        ),
        renew: tokio::sync::Mutex::new(()),
    });
    let addr = listener.local_addr().ok();
    tracing::info!(addr = ?addr, "node API listening (TLS)");
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let accept_state = state.clone();
    let accept_cfg = cfg.clone();
    let acceptor = tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            // gRPC writes small frames and waits for the answer: with Nagle's
            // algorithm on, each call stalls on the peer's delayed ACK (about
            // 90 ms per SignX509Svids call before this; issue 4 benchmark).
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(%peer, error = %e, "node API: TCP_NODELAY not set");
            }
            let tls = tls.clone();
            let tx = tx.clone();
            let st = accept_state.clone();
            let c = accept_cfg.clone();
            tokio::spawn(async move {
                let config = tls.config(&st, &c).await;
                let accept = tokio_rustls::TlsAcceptor::from(config).accept(tcp);
                match tokio::time::timeout(Duration::from_secs(10), accept).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(stream).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "node API TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(%peer, "node API TLS handshake timed out"),
                }
            });
        }
    });
    let incoming = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|s| (Ok::<_, std::io::Error>(s), rx))
    });
    let service =
        NodeServer::new(NodeService { state, cfg }).max_decoding_message_size(MAX_MESSAGE);
    let result = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| ServerError::Io {
            what: "serving the node API".into(),
            source: std::io::Error::other(e),
        });
    acceptor.abort();
    result
}

/// The node API's handlers.
#[derive(Debug, Clone)]
pub struct NodeService {
    state: AppState,
    cfg: NodeApiConfig,
}

impl NodeService {
    /// The handlers over `state` (what [`serve`] runs behind TLS).
    pub fn new(state: AppState, cfg: NodeApiConfig) -> Self {
        Self { state, cfg }
    }
}

type TlsInfo = tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>;

impl NodeService {
    fn now(&self) -> i64 {
        self.state.clock.unix_seconds()
    }

    async fn audit(
        &self,
        action: &str,
        subject: &str,
        decision: Decision,
        reason: &str,
    ) -> Result<(), Status> {
        let draft = AuditDraft {
            at_ms: crate::correlation::unix_millis(self.state.clock.now()),
            correlation_id: crate::correlation::new_id(),
            actor: format!("node-api:{subject}"),
            action: action.to_owned(),
            subject: subject.to_owned(),
            tenant: None,
            decision,
            reason: reason.to_owned(),
            evidence_digest: None,
        };
        self.state
            .audit
            .append(draft)
            .await
            .map(|_| ())
            .map_err(|_| Status::unavailable("audit log unavailable; nothing was issued"))
    }

    async fn deny(&self, action: &str, subject: &str, reason: &str, status: Status) -> Status {
        tracing::warn!(action, subject, reason, "node API denied");
        let _ = self.audit(action, subject, Decision::Deny, reason).await;
        status
    }

    /// The calling node: its client certificate (verified by TLS against the
    /// roots) must carry a node SPIFFE ID that is not revoked.
    async fn peer_node<T>(&self, req: &Request<T>) -> Result<(String, SpiffeId), Status> {
        let certs = req
            .extensions()
            .get::<TlsInfo>()
            .and_then(TlsInfo::peer_certs)
            .ok_or_else(|| {
                Status::unauthenticated("a node X.509-SVID client certificate is required")
            })?;
        let leaf = certs.first().ok_or_else(|| {
            Status::unauthenticated("a node X.509-SVID client certificate is required")
        })?;
        let id = lanyard_ca::x509::spiffe_id_of(leaf)
            .ok_or_else(|| Status::unauthenticated("the client certificate has no SPIFFE ID"))?;
        let prefix = format!(
            "{}/lanyard/node/",
            self.state.settings.trust_domain.id_string()
        );
        let Some(node_id) = id.to_string().strip_prefix(&prefix).map(str::to_owned) else {
            return Err(self
                .deny(
                    "node.call",
                    &id.to_string(),
                    "client certificate is not a node SVID",
                    Status::permission_denied("not a node SVID"),
                )
                .await);
        };
        if let Some(reason) =
            self.state
                .registry
                .revocations()
                .check("spiffe-id", &id.to_string(), self.now())
        {
            return Err(self
                .deny(
                    "node.call",
                    &id.to_string(),
                    &format!("node revoked ({reason})"),
                    Status::permission_denied("this node is revoked"),
                )
                .await);
        }
        Ok((node_id, id))
    }

    fn sign_node(&self, node_id: &str, csr: &[u8]) -> Result<(SpiffeId, NodeSvid, String), Status> {
        let id = node_spiffe_id(&self.state.settings.trust_domain, node_id)
            .map_err(Status::invalid_argument)?;
        let ca = self.state.ca.current();
        let (ttl, _) = self.state.ca.svid_ttls();
        let svid = ca
            .authority
            .sign_svid(&lanyard_ca::x509::X509SvidParams {
                spiffe_id: &id,
                csr_der: csr,
                dns_names: &[],
                ttl,
                now: self.state.clock.now(),
            })
            .map_err(|e| Status::invalid_argument(format!("CSR refused: {e}")))?;
        let serial = serial_hex(&svid.cert_der);
        let mut chain = vec![svid.cert_der];
        chain.extend(svid.chain_der);
        Ok((
            id.clone(),
            NodeSvid {
                node_id: node_id.to_owned(),
                spiffe_id: id.to_string(),
                cert_chain: chain,
                expires_at: lanyard_core::clock::unix_seconds(svid.expires_at),
                x509_roots: ca.roots.clone(),
            },
            serial,
        ))
    }

    async fn record_node(
        &self,
        node_id: &str,
        id: &SpiffeId,
        how: &str,
        selectors: Vec<String>,
        svid: &NodeSvid,
        serial: String,
    ) -> Result<(), Status> {
        let now = self.now();
        let existing = self
            .state
            .store
            .list_nodes()
            .await
            .map_err(|_| Status::unavailable("store unavailable"))?
            .into_iter()
            .find(|n| n.id == node_id);
        let row = NodeRow {
            id: node_id.to_owned(),
            spiffe_id: id.to_string(),
            attestation: existing
                .as_ref()
                .map_or_else(|| how.to_owned(), |n| n.attestation.clone()),
            selectors: existing.as_ref().map_or(selectors, |n| n.selectors.clone()),
            svid_serial: serial,
            svid_expires_at: svid.expires_at,
            created_at: existing.as_ref().map_or(now, |n| n.created_at),
            last_seen: now,
        };
        self.state
            .store
            .upsert_node(row)
            .await
            .map_err(|_| Status::unavailable("store unavailable"))
    }

    async fn attest_join_token(&self, token: &str, csr: &[u8]) -> Result<NodeSvid, Status> {
        let safe = Status::permission_denied("join token refused");
        let shown = token
            .split('.')
            .nth(1)
            .unwrap_or("?")
            .chars()
            .take(16)
            .collect::<String>();
        let subject = format!("jointoken:{shown}");
        if token.len() > 256 || !token.starts_with(JOIN_TOKEN_PREFIX) {
            return Err(self
                .deny("node.attest", &subject, "not a Lanyard join token", safe)
                .await);
        }
        let hash = join_token_hash(token);
        let row = self
            .state
            .store
            .fetch_join_token(&hash)
            .await
            .map_err(|_| Status::unavailable("store unavailable"))?;
        let now = self.now();
        let Some(row) = row else {
            return Err(self
                .deny("node.attest", &subject, "unknown join token", safe)
                .await);
        };
        if row.used_at.is_some() {
            return Err(self
                .deny("node.attest", &subject, "join token already used", safe)
                .await);
        }
        if row.expires_at <= now {
            return Err(self
                .deny("node.attest", &subject, "join token expired", safe)
                .await);
        }
        if row.trust_domain != self.state.settings.trust_domain.to_string() {
            return Err(self
                .deny(
                    "node.attest",
                    &subject,
                    &format!("join token is for trust domain {}", row.trust_domain),
                    safe,
                )
                .await);
        }
        let node = node_spiffe_id(&self.state.settings.trust_domain, &row.node_id)
            .map_err(Status::invalid_argument)?;
        if let Some(reason) =
            self.state
                .registry
                .revocations()
                .check("spiffe-id", &node.to_string(), now)
        {
            return Err(self
                .deny(
                    "node.attest",
                    &subject,
                    &format!("node revoked ({reason})"),
                    safe,
                )
                .await);
        }
        // Check the CSR before spending the token.
        let (id, svid, serial) = self.sign_node(&row.node_id, csr)?;
        let won = self
            .state
            .store
            .consume_join_token(&hash, now)
            .await
            .map_err(|_| Status::unavailable("store unavailable"))?;
        if !won {
            return Err(self
                .deny("node.attest", &subject, "join token already used", safe)
                .await);
        }
        self.record_node(
            &row.node_id,
            &id,
            "join_token",
            row.selectors.clone(),
            &svid,
            serial,
        )
        .await?;
        self.audit(
            "node.attest",
            &id.to_string(),
            Decision::Allow,
            &format!("join token {} (used once)", row.id),
        )
        .await?;
        Ok(svid)
    }

    async fn attest_k8s(&self, token: &str, csr: &[u8]) -> Result<NodeSvid, Status> {
        let safe = Status::permission_denied("node attestation refused");
        let digest = lanyard_attest::digest_hex(token.as_bytes());
        let subject = format!("k8s-psat:{}", digest.get(..16).unwrap_or(""));
        let evidence = match self.state.registry.attestor().verify(token).await {
            Ok(e) => e,
            Err(d) => {
                return Err(self
                    .deny("node.attest", &subject, &d.to_string(), safe)
                    .await)
            }
        };
        let value = |key: &str| {
            evidence
                .selectors
                .iter()
                .find(|s| s.kind() == "k8s" && s.key() == key)
                .map(|s| s.value().to_owned())
        };
        let (Some(ns), Some(sa)) = (value("ns"), value("sa")) else {
            return Err(self
                .deny(
                    "node.attest",
                    &subject,
                    "not a Kubernetes service-account token",
                    safe,
                )
                .await);
        };
        let allowed = format!("{ns}:{sa}");
        if !self
            .cfg
            .k8s_agent_service_accounts
            .iter()
            .any(|a| a == &allowed)
        {
            return Err(self
                .deny(
                    "node.attest",
                    &subject,
                    &format!(
                        "service account {allowed} is not in node_api.k8s_agent_service_accounts"
                    ),
                    safe,
                )
                .await);
        }
        let Some(node_name) = value("node-name") else {
            return Err(self
                .deny(
                    "node.attest",
                    &subject,
                    "the token names no node (needs a projected token bound to a pod)",
                    safe,
                )
                .await);
        };
        let node_id = format!("k8s-{}-{}", evidence.issuer, node_name);
        let (id, svid, serial) = self.sign_node(&node_id, csr)?;
        if let Some(reason) =
            self.state
                .registry
                .revocations()
                .check("spiffe-id", &id.to_string(), self.now())
        {
            return Err(self
                .deny(
                    "node.attest",
                    &subject,
                    &format!("node revoked ({reason})"),
                    safe,
                )
                .await);
        }
        let selectors = evidence.selectors.iter().map(ToString::to_string).collect();
        self.record_node(&node_id, &id, "k8s_psat", selectors, &svid, serial)
            .await?;
        self.audit(
            "node.attest",
            &id.to_string(),
            Decision::Allow,
            &format!("kubernetes token of {allowed} on {node_name}"),
        )
        .await?;
        Ok(svid)
    }

    /// Entry `id` if it is served by `node` and neither it nor its SPIFFE
    /// ID is revoked; otherwise an audited `PermissionDenied`.
    async fn served_entry(
        &self,
        index: &lanyard_core::EntryIndex,
        node: &SpiffeId,
        id: &str,
        action: &str,
    ) -> Result<Arc<lanyard_core::Entry>, Status> {
        let Some(entry) = index.get(id).filter(|e| e.parent.as_ref() == Some(node)) else {
            let reason = format!(
                "entry {} is not served by this node",
                id.chars().take(64).collect::<String>()
            );
            return Err(self
                .deny(
                    action,
                    &node.to_string(),
                    &reason,
                    Status::permission_denied(reason.clone()),
                )
                .await);
        };
        let revocations = self.state.registry.revocations();
        let now = self.now();
        if let Some(reason) = revocations
            .check("entry", &entry.id, now)
            .or_else(|| revocations.check("spiffe-id", &entry.spiffe_id.to_string(), now))
        {
            let reason = format!("{} is revoked ({reason})", entry.spiffe_id);
            return Err(self
                .deny(
                    action,
                    &entry.spiffe_id.to_string(),
                    &reason,
                    Status::permission_denied(reason.clone()),
                )
                .await);
        }
        Ok(entry.clone())
    }

    fn revision(&self) -> i64 {
        // Everything an agent's view depends on; each counter only grows.
        self.state.registry.generation_sum()
            + self.state.ca.current().generation.max(0)
            + self.state.keys.current().generation
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn attest(&self, req: Request<AttestRequest>) -> Result<Response<NodeSvid>, Status> {
        let req = req.into_inner();
        let svid = match req.method {
            Some(attest_request::Method::JoinToken(t)) => {
                self.attest_join_token(&t, &req.csr).await?
            }
            Some(attest_request::Method::K8sPsat(t)) => self.attest_k8s(&t, &req.csr).await?,
            None => return Err(Status::invalid_argument("give join_token or k8s_psat")),
        };
        Ok(Response::new(svid))
    }

    async fn renew_node(
        &self,
        req: Request<RenewNodeRequest>,
    ) -> Result<Response<NodeSvid>, Status> {
        let (node_id, id) = self.peer_node(&req).await?;
        let (_, svid, serial) = self.sign_node(&node_id, &req.get_ref().csr)?;
        self.record_node(&node_id, &id, "renewal", Vec::new(), &svid, serial)
            .await?;
        self.audit(
            "node.renew",
            &id.to_string(),
            Decision::Allow,
            "renewed with the current node SVID",
        )
        .await?;
        Ok(Response::new(svid))
    }

    async fn sync(&self, req: Request<SyncRequest>) -> Result<Response<SyncResponse>, Status> {
        let (_, id) = self.peer_node(&req).await?;
        let revision = self.revision();
        let interval = i64::try_from(SYNC_INTERVAL.as_secs()).unwrap_or(2);
        if req.get_ref().known_revision == revision {
            return Ok(Response::new(SyncResponse {
                revision,
                unchanged: true,
                sync_interval_seconds: interval,
                ..SyncResponse::default()
            }));
        }
        let (x509_ttl, _) = self.state.ca.svid_ttls();
        let now = self.now();
        let revocations = self.state.registry.revocations();
        let entries = self
            .state
            .registry
            .entries()
            .for_parent(&id.to_string())
            .into_iter()
            .filter(|e| {
                revocations.check("entry", &e.id, now).is_none()
                    && revocations
                        .check("spiffe-id", &e.spiffe_id.to_string(), now)
                        .is_none()
            })
            .map(|e| PbEntry {
                id: e.id.clone(),
                spiffe_id: e.spiffe_id.to_string(),
                tenant: e.tenant.to_string(),
                selectors: e.selectors.iter().map(ToString::to_string).collect(),
                dns_names: e.dns_names.clone(),
                x509_ttl_seconds: i64::try_from(x509_ttl.as_secs()).unwrap_or(3600),
                jwt_ttl_seconds: i64::try_from(
                    e.ttl
                        .unwrap_or(self.state.settings.jwt_default_ttl)
                        .as_secs(),
                )
                .unwrap_or(300),
                audiences: e.audiences.clone(),
            })
            .collect();
        let keys = self.state.keys.current();
        Ok(Response::new(SyncResponse {
            revision,
            unchanged: false,
            entries,
            trust_domain: self.state.settings.trust_domain.to_string(),
            x509_roots: self.state.ca.current().roots.clone(),
            jwt_bundle: keys.jwks_json.clone(),
            sync_interval_seconds: interval,
        }))
    }

    async fn sign_x509_svids(
        &self,
        req: Request<SignX509SvidsRequest>,
    ) -> Result<Response<SignX509SvidsResponse>, Status> {
        let (_, node) = self.peer_node(&req).await?;
        let requests = req.into_inner().requests;
        if requests.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_BATCH} SVIDs per call"
            )));
        }
        let index = self.state.registry.entries();
        let ca = self.state.ca.current();
        let (ttl, _) = self.state.ca.svid_ttls();
        let mut svids = Vec::with_capacity(requests.len());
        for r in requests {
            let entry = self
                .served_entry(&index, &node, &r.entry_id, "svid.x509.sign")
                .await?;
            let svid = ca
                .authority
                .sign_svid(&lanyard_ca::x509::X509SvidParams {
                    spiffe_id: &entry.spiffe_id,
                    csr_der: &r.csr,
                    dns_names: &entry.dns_names,
                    ttl,
                    now: self.state.clock.now(),
                })
                .map_err(|e| {
                    Status::invalid_argument(format!("entry {}: CSR refused: {e}", entry.id))
                })?;
            let mut chain = vec![svid.cert_der];
            chain.extend(svid.chain_der);
            svids.push(PbX509Svid {
                entry_id: entry.id.clone(),
                cert_chain: chain,
                expires_at: lanyard_core::clock::unix_seconds(svid.expires_at),
            });
            self.audit(
                "svid.x509.sign",
                &entry.spiffe_id.to_string(),
                Decision::Allow,
                &format!("entry {} via node {node}", entry.id),
            )
            .await?;
        }
        Ok(Response::new(SignX509SvidsResponse { svids }))
    }

    async fn mint_jwt_svid(
        &self,
        req: Request<MintJwtSvidRequest>,
    ) -> Result<Response<MintJwtSvidResponse>, Status> {
        let (_, node) = self.peer_node(&req).await?;
        let r = req.into_inner();
        if r.audiences.is_empty()
            || r.audiences.len() > 16
            || r.audiences.iter().any(|a| a.is_empty() || a.len() > 512)
        {
            return Err(Status::invalid_argument(
                "give 1 to 16 audiences of at most 512 bytes",
            ));
        }
        let index = self.state.registry.entries();
        let entry = self
            .served_entry(&index, &node, &r.entry_id, "svid.jwt.mint")
            .await?;
        let now = self.now();
        if !entry.audiences.is_empty() {
            if let Some(bad) = r.audiences.iter().find(|a| !entry.audiences.contains(a)) {
                let reason = format!("audience {bad:?} is not allowed for {}", entry.spiffe_id);
                return Err(self
                    .deny(
                        "svid.jwt.mint",
                        &entry.spiffe_id.to_string(),
                        &reason,
                        Status::permission_denied(reason.clone()),
                    )
                    .await);
            }
        }
        let ttl = entry.ttl.unwrap_or(self.state.settings.jwt_default_ttl);
        // Audience profiles apply to Workload API tokens too (a file for
        // AZURE_FEDERATED_TOKEN_FILE must be RS256 with the profile's sub).
        let shape = match crate::exchange::token_shape(&self.state, &r.audiences, &entry) {
            Ok(s) => s,
            Err(d) => {
                let reason = d.to_string();
                return Err(self
                    .deny(
                        "svid.jwt.mint",
                        &entry.spiffe_id.to_string(),
                        &reason,
                        Status::permission_denied(d.detail),
                    )
                    .await);
            }
        };
        let published = self.state.keys.current();
        let alg = shape.alg;
        let signer = published
            .ring
            .signer(alg)
            .ok_or_else(|| Status::unavailable("no signing key loaded"))?;
        let exp = now + i64::try_from(ttl.as_secs()).unwrap_or(300);
        let claims = crate::exchange::SvidClaims {
            iss: self.state.settings.issuer.clone(),
            sub: shape.sub,
            aud: r.audiences,
            exp,
            iat: now,
            jti: crate::correlation::new_id(),
            tenant: entry.tenant.to_string(),
            act: None,
            scope: (!entry.scopes.is_empty()).then(|| entry.scopes.join(" ")),
            may_act: None,
        };
        let token = lanyard_jose::encode_jwt(signer, &claims)
            .map_err(|_| Status::internal("signing failed"))?;
        self.audit(
            "svid.jwt.mint",
            &entry.spiffe_id.to_string(),
            Decision::Allow,
            &format!(
                "jti {} for {} via node {node}",
                claims.jti,
                claims.aud.join(",")
            ),
        )
        .await?;
        Ok(Response::new(MintJwtSvidResponse {
            token,
            expires_at: exp,
        }))
    }
}

fn serial_hex(der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| lanyard_core::hex::encode(c.raw_serial()))
        .unwrap_or_default()
}
