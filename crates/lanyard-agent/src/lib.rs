//! The Lanyard node agent.
//!
//! It attests its node to the server once (join token or Kubernetes
//! projected token; [`node_client`]), then keeps, in memory, the entries the
//! server says this node serves and an X.509-SVID for each (keys generated
//! here, never sent anywhere), rotating each at half its lifetime. Workloads
//! get them through the SPIFFE Workload API on a Unix socket
//! ([`workload_api`]), attested from the kernel's view of the caller
//! ([`attest`]); optionally as files ([`files`]) and, for the node itself, on
//! a metadata endpoint ([`metadata`]).
//!
//! Fail closed: a node the server refuses (revoked) drops every SVID it holds
//! at the next sync and answers `PermissionDenied`; while the server is
//! merely unreachable the cached SVIDs keep being served until they expire.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod attest;
pub mod audit;
pub mod delegated;
pub mod files;
pub mod h2_front;
pub mod metadata;
pub mod node_client;
pub mod sds;
pub mod socket;
pub mod workload_api;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use lanyard_core::{Clock, Entry, EntryIndex, Selector, SpiffeId, TenantId};
use lanyard_jose::{Jwks, VerifyingKey};
use lanyard_proto::node::{MintJwtSvidRequest, SignX509SvidsRequest, SvidRequest, SyncRequest};
use tokio::sync::watch;

pub use node_client::{Bootstrap, NodeClient};

/// What can go wrong in the agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// Bad configuration.
    #[error("agent configuration: {0}")]
    Config(String),
    /// I/O.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// Node identity trouble.
    #[error("node identity: {0}")]
    Node(String),
    /// The server refused (revoked, unknown, bad token).
    #[error("the server refused: {0}")]
    Refused(String),
    /// The server is unreachable or failed.
    #[error("the server is unavailable: {0}")]
    Unavailable(String),
}

impl AgentError {
    fn from_status(s: tonic::Status) -> Self {
        match s.code() {
            tonic::Code::PermissionDenied
            | tonic::Code::Unauthenticated
            | tonic::Code::InvalidArgument => Self::Refused(s.message().to_owned()),
            _ => Self::Unavailable(format!("{}: {}", s.code(), s.message())),
        }
    }
}

/// A workload identity held by the agent.
pub struct Identity {
    /// The entry.
    pub entry: Arc<Entry>,
    /// The SVID's key, PKCS#8.
    pub key_pkcs8: zeroize::Zeroizing<Vec<u8>>,
    /// Leaf first, then intermediates (DER).
    pub chain: Vec<Vec<u8>>,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("spiffe_id", &self.entry.spiffe_id.to_string())
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Identity {
    fn renew_at(&self) -> i64 {
        self.issued_at + (self.expires_at - self.issued_at) / 2
    }
}

/// The trust bundle of a federated trust domain, as the agent holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FederatedBundle {
    /// X.509 roots (DER).
    pub x509_roots: Vec<Vec<u8>>,
    /// JWT-SVID keys as JWKS JSON.
    pub jwt_bundle: Vec<u8>,
}

/// Everything the Workload API serves, swapped as a whole.
#[derive(Debug, Default)]
pub struct View {
    /// Moves on every publish; caches keyed by it go stale with the view.
    pub generation: u64,
    /// This node's SPIFFE ID.
    pub node: Option<SpiffeId>,
    /// `spiffe://TD`.
    pub trust_domain_id: String,
    /// The server's change-log epoch of `revision`.
    pub epoch: String,
    /// The change-log revision this node's entries are at. Within an
    /// epoch it never goes back: a replica that is behind is ignored.
    pub revision: i64,
    /// The server's bundle revision of `roots` and `jwt_bundle`.
    pub bundle_revision: i64,
    /// This node's entries.
    pub index: Arc<EntryIndex>,
    /// X.509-SVIDs by entry id.
    pub identities: HashMap<String, Arc<Identity>>,
    /// X.509 roots (DER).
    pub roots: Vec<Vec<u8>>,
    /// JWT-SVID keys as JWKS JSON.
    pub jwt_bundle: Vec<u8>,
    /// The same, parsed once.
    pub jwt_keys: Arc<Vec<VerifyingKey>>,
    /// Bundles of federated trust domains by `spiffe://TD`, as the server
    /// sent them. A workload receives only those its entries federate with
    /// ([`View::x509_bundles_for`]); delegates receive all.
    pub federated: Arc<BTreeMap<String, FederatedBundle>>,
    /// False once the server refused this node: nothing is served.
    pub serving: bool,
}

impl View {
    /// The trust domain's X.509 roots, then every federated one, keyed by
    /// `spiffe://TD`.
    pub fn x509_bundles(&self) -> impl Iterator<Item = (&str, &[Vec<u8>])> {
        std::iter::once((self.trust_domain_id.as_str(), self.roots.as_slice())).chain(
            self.federated
                .iter()
                .map(|(td, b)| (td.as_str(), b.x509_roots.as_slice())),
        )
    }

    /// `spiffe://TD` of every federated trust domain `entries` federate with.
    pub fn federated_ids<'e>(
        entries: impl IntoIterator<Item = &'e Arc<Entry>>,
    ) -> std::collections::BTreeSet<String> {
        entries
            .into_iter()
            .flat_map(|e| e.federates_with.iter())
            .map(|td| format!("spiffe://{td}"))
            .collect()
    }

    /// The trust domain's X.509 roots, then those federated trust domains
    /// in `allowed` (from [`View::federated_ids`]).
    pub fn x509_bundles_for<'a>(
        &'a self,
        allowed: &'a std::collections::BTreeSet<String>,
    ) -> impl Iterator<Item = (&'a str, &'a [Vec<u8>])> {
        self.x509_bundles()
            .filter(move |(td, _)| *td == self.trust_domain_id || allowed.contains(*td))
    }

    /// [`View::x509_bundles_for`] for JWKS documents.
    pub fn jwt_bundles_for<'a>(
        &'a self,
        allowed: &'a std::collections::BTreeSet<String>,
    ) -> impl Iterator<Item = (&'a str, &'a [u8])> {
        self.jwt_bundles()
            .filter(move |(td, _)| *td == self.trust_domain_id || allowed.contains(*td))
    }

    /// The same for JWKS documents.
    pub fn jwt_bundles(&self) -> impl Iterator<Item = (&str, &[u8])> {
        std::iter::once((self.trust_domain_id.as_str(), self.jwt_bundle.as_slice())).chain(
            self.federated
                .iter()
                .map(|(td, b)| (td.as_str(), b.jwt_bundle.as_slice())),
        )
    }
}

/// Most pages one full resync may take.
const MAX_SYNC_PAGES: usize = 1000;

/// What one sync brought.
#[derive(Debug)]
struct Synced {
    epoch: String,
    revision: i64,
    entries: SyncedEntries,
    bundle: Option<SyncedBundle>,
}

#[derive(Debug)]
enum SyncedEntries {
    /// Changes on top of the current set.
    Delta {
        upserts: Vec<lanyard_proto::node::Entry>,
        deletes: Vec<String>,
    },
    /// The whole set.
    All(Vec<lanyard_proto::node::Entry>),
}

#[derive(Debug)]
struct SyncedBundle {
    trust_domain: String,
    x509_roots: Vec<Vec<u8>>,
    jwt_bundle: Vec<u8>,
    revision: i64,
    federated: BTreeMap<String, FederatedBundle>,
}

/// The federated bundles of a sync, keyed by `spiffe://TD`; a bundle that
/// names no valid trust domain, or this agent's own, is dropped.
fn federated_from_pb(
    bundles: &[lanyard_proto::node::FederatedBundle],
    own: &str,
) -> BTreeMap<String, FederatedBundle> {
    bundles
        .iter()
        .filter(|b| b.trust_domain != own)
        .filter_map(|b| {
            let td = lanyard_core::TrustDomain::parse(&b.trust_domain).ok()?;
            Some((
                td.id_string(),
                FederatedBundle {
                    x509_roots: b.x509_roots.clone(),
                    jwt_bundle: b.jwt_bundle.clone(),
                },
            ))
        })
        .collect()
}

/// Agent settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Node API address, `host:port`.
    pub server_addr: String,
    /// Name checked on the server's certificate (default: the host of `server_addr`).
    pub server_name: Option<String>,
    /// Trust domain name.
    pub trust_domain: String,
    /// Roots to trust for the server before the first sync (DER).
    pub bootstrap_roots: Vec<Vec<u8>>,
    /// How to attest the first time.
    pub bootstrap: Bootstrap,
    /// Where the node SVID is kept (0700 directory).
    pub state_dir: PathBuf,
    /// Workload API socket path.
    pub socket_path: PathBuf,
    /// How often to sync when the server does not say.
    pub sync_interval: Duration,
    /// Workload attestation.
    pub attest: attest::AttestConfig,
    /// Files to keep written.
    pub files: Vec<files::FileTarget>,
    /// Metadata endpoint address, if any.
    pub metadata_listen: Option<std::net::SocketAddr>,
    /// The admin socket (Delegated Identity API), if any.
    pub admin_socket_path: Option<PathBuf>,
    /// Who may use the Delegated Identity API.
    pub delegates: delegated::Delegates,
}

/// Most JWT-SVIDs cached at once: 100,000 (expired ones are dropped first).
pub const JWT_CACHE_MAX: usize = 100_000;

/// A cached JWT-SVID.
#[derive(Debug, Clone)]
pub struct CachedJwt {
    /// The compact JWT.
    pub token: Arc<str>,
    /// Unix seconds: past this (half its life) a new one is minted.
    pub refresh_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// Unix seconds.
    pub issued_at: i64,
}

/// The running agent's shared state.
#[derive(Debug)]
pub struct Agent {
    config: AgentConfig,
    node: NodeClient,
    view: ArcSwap<View>,
    changed: watch::Sender<u64>,
    /// Keyed by [`jwt_cache_key`] (entry id and audiences).
    jwt_cache: RwLock<HashMap<String, CachedJwt>>,
    clock: Arc<dyn Clock>,
    attestor: attest::WorkloadAttestor,
}

impl Agent {
    /// Builds the agent (no network yet).
    ///
    /// # Errors
    /// [`AgentError`] for bad configuration or an unreadable stored identity.
    pub fn new(config: AgentConfig, clock: Arc<dyn Clock>) -> Result<Arc<Self>, AgentError> {
        std::fs::create_dir_all(&config.state_dir)
            .map_err(|e| AgentError::Io(format!("creating {}", config.state_dir.display()), e))?;
        // The node SVID's key lives here: only the agent's user may look in.
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&config.state_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| {
                    AgentError::Io(format!("restricting {}", config.state_dir.display()), e)
                })?;
        }
        let node = NodeClient::new(
            &config.server_addr,
            config.server_name.as_deref(),
            &config.trust_domain,
            config.bootstrap_roots.clone(),
            &config.state_dir,
        )?;
        let (changed, _) = watch::channel(0);
        let attestor = attest::WorkloadAttestor::new(config.attest.clone());
        Ok(Arc::new(Self {
            view: ArcSwap::from_pointee(View {
                trust_domain_id: format!("spiffe://{}", config.trust_domain),
                ..View::default()
            }),
            config,
            node,
            changed,
            jwt_cache: RwLock::new(HashMap::new()),
            clock,
            attestor,
        }))
    }

    /// The current view: a lock-free load.
    pub fn view(&self) -> Arc<View> {
        self.view.load_full()
    }

    /// Notified whenever the view changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The node identity, once attested.
    pub fn node_identity(&self) -> Option<node_client::NodeIdentity> {
        self.node.identity()
    }

    /// The workload attestor.
    pub fn attestor(&self) -> &attest::WorkloadAttestor {
        &self.attestor
    }

    /// Now, in Unix seconds.
    pub fn now(&self) -> i64 {
        self.clock.unix_seconds()
    }

    /// The agent's configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    fn publish(&self, mut view: View) {
        self.changed.send_modify(|v| {
            *v += 1;
            view.generation = *v;
            self.view.store(Arc::new(view));
        });
    }

    fn clear_jwt_cache(&self) {
        if let Ok(mut c) = self.jwt_cache.write() {
            c.clear();
        }
    }

    /// One round: make sure the node is attested and its SVID fresh, sync
    /// entries and bundle, sign what is missing or past half-life.
    ///
    /// # Errors
    /// [`AgentError::Refused`] when the server refuses this node (the agent
    /// then stops serving), [`AgentError::Unavailable`] when unreachable.
    pub async fn sync_once(&self) -> Result<(), AgentError> {
        let now = self.now();
        let result = self.sync_inner(now).await;
        if let Err(AgentError::Refused(reason)) = &result {
            tracing::error!(reason, "the server refused this node; dropping every SVID");
            let cur = self.view();
            if cur.serving || !cur.identities.is_empty() {
                self.publish(View {
                    trust_domain_id: cur.trust_domain_id.clone(),
                    node: cur.node.clone(),
                    serving: false,
                    ..View::default()
                });
            }
            self.clear_jwt_cache();
        }
        result
    }

    async fn sync_inner(&self, now: i64) -> Result<(), AgentError> {
        self.node
            .ensure_identity(&self.config.bootstrap, now)
            .await?;
        let node_id = self
            .node
            .identity()
            .and_then(|i| SpiffeId::parse(&i.spiffe_id).ok())
            .ok_or_else(|| AgentError::Node("no node identity".into()))?;
        let cur = self.view();
        let resp = self.fetch_sync(&cur).await?;
        let (index, roots, jwt_bundle, jwt_keys, td, epoch, revision, bundle_revision, federated) =
            match resp {
                None => (
                    cur.index.clone(),
                    cur.roots.clone(),
                    cur.jwt_bundle.clone(),
                    cur.jwt_keys.clone(),
                    cur.trust_domain_id.clone(),
                    cur.epoch.clone(),
                    cur.revision,
                    cur.bundle_revision,
                    cur.federated.clone(),
                ),
                Some(sync) => {
                    let index = match sync.entries {
                        SyncedEntries::Delta { upserts, deletes } => {
                            let upserts = upserts
                                .iter()
                                .filter_map(|e| entry_from_pb(e, &node_id))
                                .collect();
                            Arc::new(cur.index.with_changes(upserts, &deletes))
                        }
                        SyncedEntries::All(all) => Arc::new(EntryIndex::new(
                            all.iter()
                                .filter_map(|e| entry_from_pb(e, &node_id))
                                .collect(),
                        )),
                    };
                    match sync.bundle {
                        Some(b) => {
                            self.node.set_roots(b.x509_roots.clone());
                            let keys: Vec<VerifyingKey> =
                                serde_json::from_slice::<Jwks>(&b.jwt_bundle)
                                    .map(|jwks| {
                                        jwks.keys
                                            .iter()
                                            .filter_map(|k| VerifyingKey::from_jwk(k).ok())
                                            .collect()
                                    })
                                    .unwrap_or_default();
                            (
                                index,
                                b.x509_roots,
                                b.jwt_bundle,
                                Arc::new(keys),
                                format!("spiffe://{}", b.trust_domain),
                                sync.epoch,
                                sync.revision,
                                b.revision,
                                Arc::new(b.federated),
                            )
                        }
                        None => (
                            index,
                            cur.roots.clone(),
                            cur.jwt_bundle.clone(),
                            cur.jwt_keys.clone(),
                            cur.trust_domain_id.clone(),
                            sync.epoch,
                            sync.revision,
                            cur.bundle_revision,
                            cur.federated.clone(),
                        ),
                    }
                }
            };
        let synced = revision != cur.revision
            || epoch != cur.epoch
            || bundle_revision != cur.bundle_revision
            || !Arc::ptr_eq(&index, &cur.index);
        // Keep SVIDs still good for entries that still exist; sign the rest.
        let mut identities: HashMap<String, Arc<Identity>> = HashMap::new();
        let mut wanted = Vec::new();
        for e in index.iter() {
            match cur.identities.get(&e.id) {
                Some(id)
                    if now < id.renew_at()
                        && id.entry.spiffe_id == e.spiffe_id
                        && id.entry.dns_names == e.dns_names =>
                {
                    identities.insert(e.id.clone(), id.clone());
                }
                _ => wanted.push(e.clone()),
            }
        }
        let rotated = !wanted.is_empty();
        for chunk in wanted.chunks(500) {
            let mut keys = HashMap::new();
            let mut requests = Vec::with_capacity(chunk.len());
            for e in chunk {
                let (key, csr) = node_client::new_key_and_csr()?;
                keys.insert(e.id.clone(), key);
                requests.push(SvidRequest {
                    entry_id: e.id.clone(),
                    csr,
                });
            }
            let signed = self
                .node
                .grpc()?
                .sign_x509_svids(SignX509SvidsRequest { requests })
                .await
                .map_err(AgentError::from_status)?
                .into_inner();
            for svid in signed.svids {
                let (Some(entry), Some(key)) =
                    (index.get(&svid.entry_id), keys.remove(&svid.entry_id))
                else {
                    continue;
                };
                identities.insert(
                    svid.entry_id.clone(),
                    Arc::new(Identity {
                        entry: entry.clone(),
                        key_pkcs8: key,
                        chain: svid.cert_chain,
                        issued_at: now,
                        expires_at: svid.expires_at,
                    }),
                );
            }
        }
        let changed = rotated || synced || !cur.serving || identities.len() != cur.identities.len();
        if changed {
            if rotated {
                tracing::info!(
                    signed = wanted.len(),
                    total = identities.len(),
                    "workload SVIDs signed"
                );
            }
            if synced {
                self.clear_jwt_cache();
            }
            self.publish(View {
                node: Some(node_id),
                trust_domain_id: td,
                epoch,
                revision,
                bundle_revision,
                index,
                identities,
                roots,
                jwt_bundle,
                jwt_keys,
                federated,
                serving: true,
                generation: 0,
            });
        }
        Ok(())
    }

    /// Asks the server what changed since this view: `None` when nothing
    /// did (or the replica answering is behind this view, which is then
    /// kept: a revision never goes back within an epoch), else a delta or
    /// the whole set (every page of a full resync, applied at once).
    async fn fetch_sync(&self, cur: &View) -> Result<Option<Synced>, AgentError> {
        let mut req = SyncRequest {
            epoch: if cur.serving {
                cur.epoch.clone()
            } else {
                String::new()
            },
            cursor: cur.revision,
            known_bundle: if cur.serving { cur.bundle_revision } else { -1 },
            ..SyncRequest::default()
        };
        let mut all: BTreeMap<String, lanyard_proto::node::Entry> = BTreeMap::new();
        let mut first_revision = None;
        let mut bundle = None;
        // A full resync of a million entries is a thousand pages.
        for _ in 0..MAX_SYNC_PAGES {
            let resp = self
                .node
                .grpc()?
                .sync(req.clone())
                .await
                .map_err(AgentError::from_status)?
                .into_inner();
            let same_epoch = cur.serving && resp.epoch == cur.epoch;
            if resp.unchanged || goes_back(cur, &resp.epoch, resp.revision) {
                if !resp.unchanged {
                    tracing::debug!(
                        seen = cur.revision,
                        offered = resp.revision,
                        "the server replica is behind this agent; keeping the newer view"
                    );
                }
                return Ok(None);
            }
            if resp.bundle_included && !(same_epoch && resp.bundle_revision < cur.bundle_revision) {
                bundle = Some(SyncedBundle {
                    trust_domain: resp.trust_domain.clone(),
                    x509_roots: resp.x509_roots.clone(),
                    jwt_bundle: resp.jwt_bundle.clone(),
                    revision: resp.bundle_revision,
                    federated: federated_from_pb(&resp.federated_bundles, &resp.trust_domain),
                });
            }
            if resp.delta {
                return Ok(Some(Synced {
                    epoch: resp.epoch,
                    revision: resp.revision,
                    entries: SyncedEntries::Delta {
                        upserts: resp.entries,
                        deletes: resp.deleted_entry_ids,
                    },
                    bundle,
                }));
            }
            // A page of a full resync; one that restarted at another
            // revision replaces the pages before it.
            if first_revision.is_some_and(|r| r != resp.revision) {
                all.clear();
            }
            first_revision = Some(resp.revision);
            for e in resp.entries {
                all.insert(e.id.clone(), e);
            }
            if resp.next_page_token.is_empty() {
                if bundle.is_none() && !cur.serving {
                    return Err(AgentError::Node(
                        "the server's full sync carried no trust bundle".into(),
                    ));
                }
                return Ok(Some(Synced {
                    epoch: resp.epoch,
                    revision: resp.revision,
                    entries: SyncedEntries::All(all.into_values().collect()),
                    bundle,
                }));
            }
            req.page_token = resp.next_page_token;
        }
        Err(AgentError::Node(format!(
            "the server's full sync did not end within {MAX_SYNC_PAGES} pages"
        )))
    }

    /// A JWT-SVID for `entry` and `audiences`: cached until half its life,
    /// minted by the server otherwise.
    ///
    /// # Errors
    /// [`AgentError`] when the server refuses or is unreachable.
    pub async fn jwt_svid(
        &self,
        entry: &Entry,
        audiences: &[String],
    ) -> Result<CachedJwt, AgentError> {
        let now = self.now();
        let key = jwt_cache_key(&entry.id, audiences);
        if let Some(hit) = self
            .jwt_cache
            .read()
            .ok()
            .and_then(|c| c.get(&key).filter(|j| now < j.refresh_at).cloned())
        {
            return Ok(hit);
        }
        let minted = self
            .node
            .grpc()?
            .mint_jwt_svid(MintJwtSvidRequest {
                entry_id: entry.id.clone(),
                audiences: audiences.to_vec(),
            })
            .await
            .map_err(AgentError::from_status)?
            .into_inner();
        let jwt = CachedJwt {
            token: Arc::from(minted.token),
            refresh_at: now + (minted.expires_at - now) / 2,
            expires_at: minted.expires_at,
            issued_at: now,
        };
        if let Ok(mut cache) = self.jwt_cache.write() {
            if cache.len() >= JWT_CACHE_MAX {
                cache.retain(|_, j| j.refresh_at > now);
                if cache.len() >= JWT_CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(key, jwt.clone());
        }
        Ok(jwt)
    }

    /// Runs the sync loop until `shutdown` resolves.
    pub async fn run_sync(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut delay = self.config.sync_interval;
        let cap = retry_cap(self.config.sync_interval);
        loop {
            match self.sync_once().await {
                Ok(()) => delay = self.config.sync_interval,
                Err(AgentError::Refused(_)) => delay = self.config.sync_interval,
                Err(e) => {
                    tracing::warn!(error = %e, "sync failed; serving cached SVIDs until they expire");
                    delay = (delay * 2).min(cap);
                }
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The longest wait between sync attempts while the servers are failing:
/// no slower than the normal cadence (or 5 s when that is faster), at most
/// 30 s. A longer back-off made an agent whose link came back wait up to
/// 30 s, long enough for 60 s SVIDs to lapse (found by scripts/faults.sh).
fn retry_cap(sync_interval: Duration) -> Duration {
    sync_interval
        .max(Duration::from_secs(5))
        .min(Duration::from_secs(30))
}

/// The JWT cache key: the entry id, then each audience with its length
/// (so no audience list can collide with another).
fn jwt_cache_key(entry_id: &str, audiences: &[String]) -> String {
    use std::fmt::Write as _;
    let mut key = String::with_capacity(
        entry_id.len() + audiences.iter().map(|a| a.len() + 6).sum::<usize>(),
    );
    key.push_str(entry_id);
    for a in audiences {
        let _ = write!(key, "\n{}:{a}", a.len());
    }
    key
}

/// Whether an answer at `(epoch, revision)` would take `cur` back: within an
/// epoch an agent never accepts an older revision than one it has applied
/// (a replica behind the one it synced with last).
fn goes_back(cur: &View, epoch: &str, revision: i64) -> bool {
    cur.serving && cur.epoch == epoch && revision < cur.revision
}

fn entry_from_pb(e: &lanyard_proto::node::Entry, node: &SpiffeId) -> Option<Entry> {
    let mut selectors = e
        .selectors
        .iter()
        .map(|s| Selector::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    selectors.sort();
    Some(Entry {
        id: e.id.clone(),
        spiffe_id: SpiffeId::parse(&e.spiffe_id).ok()?,
        tenant: TenantId::parse(&e.tenant).ok()?,
        issuer: None,
        parent: Some(node.clone()),
        dns_names: e.dns_names.clone(),
        selectors,
        audiences: e.audiences.clone(),
        ttl: u64::try_from(e.jwt_ttl_seconds)
            .ok()
            .map(Duration::from_secs),
        max_ttl: None,
        scopes: Vec::new(),
        may_act: Vec::new(),
        admin: false,
        token_reviewer: false,
        // Broker grants are used by the server only; agents never see them.
        grants: Vec::new(),
        role: None,
        federates_with: e.federates_with.clone(),
        created_at: 0,
    })
}

/// The claims of a compact JWT, unverified (only for tokens this agent just
/// received from its server, e.g. to read `exp`).
pub fn unverified_claims(token: &str) -> Option<serde_json::Value> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod sync_tests {
    use super::{goes_back, retry_cap, View};
    use std::time::Duration;

    #[test]
    fn retries_are_never_slower_than_the_sync_cadence() {
        let s = Duration::from_secs;
        assert_eq!(retry_cap(s(2)), s(5));
        assert_eq!(retry_cap(s(5)), s(5));
        assert_eq!(retry_cap(s(10)), s(10));
        assert_eq!(retry_cap(s(300)), s(30));
    }

    #[test]
    fn a_revision_never_goes_back_within_an_epoch() {
        let cur = View {
            epoch: "e1".into(),
            revision: 10,
            serving: true,
            ..View::default()
        };
        assert!(goes_back(&cur, "e1", 9));
        assert!(!goes_back(&cur, "e1", 10));
        assert!(!goes_back(&cur, "e1", 11));
        // Another epoch (a restored store) is a new history.
        assert!(!goes_back(&cur, "e2", 1));
        // A refused node holds nothing to protect.
        let refused = View {
            serving: false,
            ..cur
        };
        assert!(!goes_back(&refused, "e1", 1));
    }
}
