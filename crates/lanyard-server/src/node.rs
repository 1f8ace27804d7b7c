//! The gRPC node API that `lanyard agent` talks to (`proto/node.proto`).
//!
//! Always TLS: the server presents its own X.509-SVID
//! (`spiffe://TD/lanyard/server`, DNS names from `[node_api] dns_names`),
//! which agents verify against the trust bundle and by that SPIFFE ID. A
//! client certificate is optional at the TLS layer (the first `Attest` has
//! none) and, when present, must chain to the trust domain's roots; every
//! method but `Attest` then requires a node SVID (`spiffe://TD/lanyard/node/ID`)
//! that is the node's current one (its serial is recorded at attestation and
//! renewal, as SPIRE does) and whose node is not revoked.
//!
//! Read forward: [`attest`] (join tokens, Kubernetes tokens, renewal) and
//! [`svid`] (sync, X.509 and JWT issuance for the node's workloads) decide
//! with the core policy and sign through [`crate::issuer`]; [`tls`] keeps the
//! server's own certificate fresh. Every decision is audited.

pub mod attest;
pub mod svid;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use lanyard_core::naming;
use lanyard_core::{Clock, Decision, RevocationKind, SpiffeId};
use lanyard_proto::node::node_server::{Node, NodeServer};
use lanyard_proto::node::{
    AttestRequest, MintJwtSvidRequest, MintJwtSvidResponse, NodeSvid, RenewNodeRequest,
    SignX509SvidsRequest, SignX509SvidsResponse, SyncRequest, SyncResponse,
};
use lanyard_store::Store;
use tonic::{Request, Response, Status};

use crate::ca::CaManager;
use crate::config::NodeApiConfig;
use crate::issuer::{serial_hex, AuditContext, Issuer};
use crate::keys::KeyManager;
use crate::registry::Registry;
use crate::state::{AppState, Settings};
use crate::ServerError;

pub use attest::{join_token_hash, new_join_token, JOIN_TOKEN_PREFIX};

/// How often agents are told to sync.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(2);
/// Largest message the node API accepts.
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

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
    let service = NodeService::new(&state, cfg);
    let tls = Arc::new(tls::NodeTls::new(service.clone())?);
    tracing::info!(addr = ?listener.local_addr().ok(), "node API listening (TLS)");
    let limits = crate::net::ListenLimits {
        header_timeout: service.cfg.idle_timeout,
        handshake_timeout: service.cfg.idle_timeout.min(Duration::from_secs(10)),
        ..crate::net::ListenLimits::default()
    };
    let incoming = crate::net::tls_incoming(listener, limits, move || {
        let tls = tls.clone();
        async move { tls.config().await }
    });
    let result = tonic::transport::Server::builder()
        // Idle agents cost nothing but a socket; dead ones are found by
        // keepalive pings and dropped.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .timeout(Duration::from_secs(30))
        .concurrency_limit_per_connection(64)
        .add_service(NodeServer::new(service).max_decoding_message_size(MAX_MESSAGE))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| ServerError::Io {
            what: "serving the node API".into(),
            source: std::io::Error::other(e),
        });
    result
}

/// The node API's handlers, with only what they use.
#[derive(Debug, Clone)]
pub struct NodeService {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    issuer: Arc<Issuer>,
    ca: Arc<CaManager>,
    keys: Arc<KeyManager>,
    clock: Arc<dyn Clock>,
    settings: Arc<Settings>,
    cfg: NodeApiConfig,
}

type TlsInfo = tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>;

/// The node calling, authenticated by its current node SVID.
#[derive(Debug, Clone)]
pub(crate) struct PeerNode {
    pub(crate) node_id: String,
    pub(crate) spiffe_id: SpiffeId,
    /// The node SVID's `notAfter`: nothing issued for its workloads outlives it.
    pub(crate) expires_at: i64,
    /// SHA-256 of the node SVID, the evidence of a node-API decision.
    pub(crate) digest: String,
}

impl NodeService {
    /// The handlers over `state` (what [`serve`] runs behind TLS).
    pub fn new(state: &AppState, cfg: NodeApiConfig) -> Self {
        Self {
            store: state.store.clone(),
            registry: state.registry.clone(),
            issuer: state.issuer.clone(),
            ca: state.ca.clone(),
            keys: state.keys.clone(),
            clock: state.clock.clone(),
            settings: state.settings.clone(),
            cfg,
        }
    }

    fn now(&self) -> i64 {
        self.clock.unix_seconds()
    }

    /// Appends an event for a node-API decision.
    async fn audit(
        &self,
        action: &str,
        subject: &str,
        decision: Decision,
        reason: &str,
    ) -> Result<(), Status> {
        let cid = crate::correlation::new_id();
        let actor = format!("node-api:{subject}");
        self.issuer
            .record(
                AuditContext {
                    correlation_id: &cid,
                    actor: &actor,
                    action,
                    evidence_digest: None,
                },
                subject.to_owned(),
                None,
                decision,
                reason.to_owned(),
            )
            .await
            .map_err(|_| Status::unavailable("audit log unavailable; nothing was issued"))
    }

    /// Audits a denial and returns the caller's status. If the denial cannot
    /// be audited the caller gets `Unavailable` instead: nothing unaudited.
    async fn deny(&self, action: &str, subject: &str, reason: &str, status: Status) -> Status {
        tracing::warn!(action, subject, reason, "node API denied");
        match self.audit(action, subject, Decision::Deny, reason).await {
            Ok(()) => status,
            Err(unavailable) => unavailable,
        }
    }

    /// The calling node: its client certificate (verified by TLS against
    /// the roots) must carry a node SPIFFE ID of this trust domain, be the
    /// node's current SVID, and the node must not be revoked.
    pub(crate) async fn peer_node<T>(&self, req: &Request<T>) -> Result<PeerNode, Status> {
        let leaf = req
            .extensions()
            .get::<TlsInfo>()
            .and_then(TlsInfo::peer_certs)
            .and_then(|certs| certs.first().map(|c| c.as_ref().to_vec()))
            .ok_or_else(|| {
                Status::unauthenticated("a node X.509-SVID client certificate is required")
            })?;
        let id = lanyard_ca::x509::spiffe_id_of(&leaf)
            .ok_or_else(|| Status::unauthenticated("the client certificate has no SPIFFE ID"))?;
        let shown = id.to_string();
        let Some(node_id) = naming::node_of(&id, &self.settings.trust_domain).map(str::to_owned)
        else {
            return Err(self
                .deny(
                    "node.call",
                    &shown,
                    "client certificate is not a node SVID",
                    Status::permission_denied("not a node SVID"),
                )
                .await);
        };
        if let Some(reason) =
            self.registry
                .revocations()
                .check(RevocationKind::SpiffeId, &shown, self.now())
        {
            return Err(self
                .deny(
                    "node.call",
                    &shown,
                    &format!("node revoked ({reason})"),
                    Status::permission_denied("this node is revoked"),
                )
                .await);
        }
        let serial = serial_hex(&leaf);
        if !self.current_serial(&node_id, &serial).await? {
            return Err(self
                .deny(
                    "node.call",
                    &shown,
                    &format!("{}: certificate serial {serial} is not the node's current SVID (an older or unknown node certificate)", lanyard_core::DenyReason::StaleNodeSvid),
                    Status::permission_denied("this is not the node's current SVID; re-attest the node"),
                )
                .await);
        }
        let expires_at = x509_parser::parse_x509_certificate(&leaf)
            .map(|(_, c)| c.validity().not_after.timestamp())
            .unwrap_or(0);
        Ok(PeerNode {
            node_id,
            spiffe_id: id,
            expires_at,
            digest: lanyard_attest::digest_hex(&leaf),
        })
    }

    /// Whether `serial` is node `node_id`'s current SVID, promoting a
    /// renewal's SVID at its first use. Reads the store when this replica's
    /// view disagrees (another replica may have renewed the node).
    async fn current_serial(&self, node_id: &str, serial: &str) -> Result<bool, Status> {
        if serial.is_empty() {
            return Ok(false);
        }
        let cached = self.registry.node_serials(node_id);
        if cached.as_ref().is_some_and(|s| s.current == serial) {
            return Ok(true);
        }
        let unavailable = |_| Status::unavailable("store unavailable");
        let Some(row) = self.store.fetch_node(node_id).await.map_err(unavailable)? else {
            return Ok(false);
        };
        if row.svid_serial == serial {
            self.registry.note_node(&row);
            return Ok(true);
        }
        if row.svid_serial_next == serial
            && self
                .store
                .promote_node_serial(node_id, serial)
                .await
                .map_err(unavailable)?
        {
            let mut row = row;
            row.svid_serial = std::mem::take(&mut row.svid_serial_next);
            self.registry.note_node(&row);
            tracing::debug!(node = node_id, serial, "node uses its renewed SVID");
            return Ok(true);
        }
        Ok(false)
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn attest(&self, req: Request<AttestRequest>) -> Result<Response<NodeSvid>, Status> {
        self.attest_node(req.into_inner()).await.map(Response::new)
    }

    async fn renew_node(
        &self,
        req: Request<RenewNodeRequest>,
    ) -> Result<Response<NodeSvid>, Status> {
        let peer = self.peer_node(&req).await?;
        self.renew(&peer, &req.get_ref().csr)
            .await
            .map(Response::new)
    }

    async fn sync(&self, req: Request<SyncRequest>) -> Result<Response<SyncResponse>, Status> {
        let peer = self.peer_node(&req).await?;
        Ok(Response::new(self.sync_node(&peer, req.get_ref()).await))
    }

    async fn sign_x509_svids(
        &self,
        req: Request<SignX509SvidsRequest>,
    ) -> Result<Response<SignX509SvidsResponse>, Status> {
        let peer = self.peer_node(&req).await?;
        self.sign_x509(&peer, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn mint_jwt_svid(
        &self,
        req: Request<MintJwtSvidRequest>,
    ) -> Result<Response<MintJwtSvidResponse>, Status> {
        let peer = self.peer_node(&req).await?;
        self.mint_jwt(&peer, req.into_inner())
            .await
            .map(Response::new)
    }
}
