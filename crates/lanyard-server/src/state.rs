//! What every handler and service can reach, built once at start-up.
//!
//! This module imports no route and no service's internals: the HTTP
//! surface ([`crate::http`]) and the gRPC node API ([`crate::node`]) depend
//! on it, never the other way round.

use std::sync::Arc;
use std::time::Duration;

use lanyard_core::policy::Limits;
use lanyard_core::{Clock, TrustDomain};
use lanyard_store::Store;

use crate::audit_writer::AuditWriter;
use crate::broker::BrokerService;
use crate::ca::CaManager;
use crate::checkpoint::Checkpointer;
use crate::exchange::ExchangeService;
use crate::issuer::Issuer;
use crate::keys::KeyManager;
use crate::metrics::Metrics;
use crate::registry::Registry;

/// The server's shared state: one `Arc`, so the clone axum makes for
/// every request is one reference count (it was one per field, 13 atomic
/// increments and decrements per request on the token path).
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// Shares `shared` with every handler and service.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
#[derive(Debug)]
pub struct Shared {
    /// The store.
    pub store: Arc<dyn Store>,
    /// JWT signing keys.
    pub keys: Arc<KeyManager>,
    /// The X.509 CA.
    pub ca: Arc<CaManager>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Settings the handlers read.
    pub settings: Arc<Settings>,
    /// Entries, revocations, trusted issuers, profiles, node credentials.
    pub registry: Arc<Registry>,
    /// Group-committing audit writer for the request path.
    pub audit: AuditWriter,
    /// The one issuance path: signs what the policy decided, audits it.
    pub issuer: Arc<Issuer>,
    /// RFC 8693 token exchange (and `explain`, and the broker's attestation).
    pub exchange: Arc<ExchangeService>,
    /// The credential broker.
    pub broker: Arc<BrokerService>,
    /// Signed audit checkpoints.
    pub checkpoints: Arc<Checkpointer>,
    /// How federation relationships are refreshed.
    pub federation: Arc<FederationSettings>,
}

/// What refreshing federated bundles reads.
#[derive(Debug, Clone, Default)]
pub struct FederationSettings {
    /// Shortest interval between refreshes of one relationship.
    pub refresh_floor: Duration,
    /// Roots trusted for `https_web` bundle endpoints besides the platform's.
    pub web_roots: Vec<reqwest::Certificate>,
}

/// The subset of configuration handlers and services read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Issuer URL.
    pub issuer: String,
    /// Trust domain.
    pub trust_domain: TrustDomain,
    /// Request body limit.
    pub max_request_bytes: usize,
    /// `Cache-Control: max-age` for the JWKS and bundle.
    pub jwks_max_age: Duration,
    /// The policy's limits (TTLs, delegation depth).
    pub limits: Limits,
    /// JOSE names of the algorithms with signing keys; the first is the default.
    pub algorithm_names: Vec<&'static str>,
    /// Parent node of agent entries created without one (`lanyard dev`).
    pub default_parent: Option<lanyard_core::SpiffeId>,
    /// Longest join token lifetime.
    pub join_token_max_ttl: Duration,
}

/// The correlation id of the current request, set by middleware.
#[derive(Debug, Clone)]
pub struct CorrelationId(pub String);
