//! The node API's TLS: the server's own SVID (`spiffe://TD/lanyard/server`),
//! signed as a server certificate through the one issuance path and
//! renewed at half-life or when the CA changes; client certificates must
//! chain to the trust domain's roots (node SVIDs; checked further by
//! `NodeService::peer_node`).

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use super::NodeService;
use crate::ServerError;

#[derive(Debug)]
pub(super) struct NodeTls {
    service: NodeService,
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
    pub(super) fn new(service: NodeService) -> Result<Self, ServerError> {
        let first = build(&service).map_err(ServerError::StoredKey)?;
        Ok(Self {
            service,
            current: ArcSwap::from_pointee(first),
            renew: tokio::sync::Mutex::new(()),
        })
    }

    /// The configuration for the next handshake, renewed when due.
    pub(super) async fn config(&self) -> Arc<rustls::ServerConfig> {
        let cur = self.current.load_full();
        let stale = self.service.clock.now() >= cur.renew_at
            || self.service.ca.current().generation != cur.ca_generation;
        if !stale {
            return cur.config.clone();
        }
        let _guard = self.renew.lock().await;
        match build(&self.service) {
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

fn build(s: &NodeService) -> Result<TlsState, String> {
    let ca = s.ca.current();
    let svid = s.issuer.server_svid(s.cfg.dns_names.clone())?;
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
        .with_single_cert(svid.chain, svid.key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsState {
        config: Arc::new(config),
        renew_at: svid.renew_at,
        ca_generation: svid.ca_generation,
    })
}
