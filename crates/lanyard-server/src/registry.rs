//! What the token path reads on every request, kept in memory and swapped
//! atomically: the entry index, revocations, trusted issuers, audience
//! profiles and the nodes' current SVID serials.
//!
//! Each part is rebuilt from the store when its generation counter moves.
//! The replica that made a change refreshes at once; the others poll every
//! second ([`POLL`]), so a revocation reaches every replica within about a
//! second, well inside the 5-second promise.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use lanyard_attest::{Attestor, IssuerConfig};
use lanyard_core::policy::Policy;
use lanyard_core::revocation::{RevocationKey, RevocationRule};
use lanyard_core::{Clock, EntryIndex, ProfileSet, RevocationSet};
use lanyard_store::{NodeRow, Store, StoreError};

use crate::state::Settings;
use tokio::sync::Mutex;

/// How often other replicas' changes are picked up.
pub const POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    entries: i64,
    revocations: i64,
    issuers: i64,
    profiles: i64,
    nodes: i64,
}

/// The SVID serials the node API accepts from one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSerials {
    /// The node's current SVID.
    pub current: String,
    /// The SVID a renewal issued, not used yet (empty when none).
    pub next: String,
}

/// One consistent view of what a decision reads, taken per request.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Entries.
    pub entries: Arc<EntryIndex>,
    /// Revocations.
    pub revocations: Arc<RevocationSet>,
    /// Audience profiles.
    pub profiles: Arc<ProfileSet>,
    /// Trusted issuers.
    pub attestor: Arc<Attestor>,
    settings: Arc<Settings>,
    now: i64,
}

impl Snapshot {
    /// The policy over this snapshot.
    pub fn policy(&self) -> Policy<'_> {
        Policy {
            limits: &self.settings.limits,
            revocations: &self.revocations,
            profiles: &self.profiles,
            algorithms: &self.settings.algorithm_names,
            now: self.now,
        }
    }

    /// The time the snapshot was taken at, Unix seconds.
    pub fn now(&self) -> i64 {
        self.now
    }
}

/// The in-memory view of entries, revocations and issuers.
#[derive(Debug)]
pub struct Registry {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    entries: ArcSwap<EntryIndex>,
    revocations: ArcSwap<RevocationSet>,
    attestor: ArcSwap<Attestor>,
    profiles: ArcSwap<ProfileSet>,
    nodes: ArcSwap<HashMap<String, NodeSerials>>,
    seen: Mutex<Option<Seen>>,
    generations: std::sync::atomic::AtomicI64,
}

impl Registry {
    /// Loads everything from the store.
    ///
    /// # Errors
    /// Store errors.
    pub async fn load(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        http: reqwest::Client,
    ) -> Result<Self, StoreError> {
        let attestor =
            Attestor::new(Vec::new(), clock.clone(), http).map_err(|e| StoreError::Invalid {
                what: "issuer set",
                detail: e.to_string(),
            })?;
        let registry = Self {
            store,
            clock,
            entries: ArcSwap::from_pointee(EntryIndex::default()),
            revocations: ArcSwap::from_pointee(RevocationSet::default()),
            attestor: ArcSwap::from_pointee(attestor),
            profiles: ArcSwap::from_pointee(ProfileSet::default()),
            nodes: ArcSwap::from_pointee(HashMap::new()),
            seen: Mutex::new(None),
            generations: std::sync::atomic::AtomicI64::new(0),
        };
        registry.refresh().await?;
        Ok(registry)
    }

    /// A consistent view for one decision at `now`.
    pub fn snapshot(&self, settings: &Arc<Settings>, now: i64) -> Snapshot {
        Snapshot {
            entries: self.entries(),
            revocations: self.revocations(),
            profiles: self.profiles(),
            attestor: self.attestor(),
            settings: settings.clone(),
            now,
        }
    }

    /// The SVID serials node `id` may present, as last loaded.
    pub fn node_serials(&self, id: &str) -> Option<NodeSerials> {
        self.nodes.load().get(id).cloned()
    }

    /// Records a node change made on this replica (before the next poll).
    pub fn note_node(&self, row: &NodeRow) {
        let mut next = HashMap::clone(&self.nodes.load());
        next.insert(
            row.id.clone(),
            NodeSerials {
                current: row.svid_serial.clone(),
                next: row.svid_serial_next.clone(),
            },
        );
        self.nodes.store(Arc::new(next));
    }

    /// The entry index.
    pub fn entries(&self) -> Arc<EntryIndex> {
        self.entries.load_full()
    }

    /// Revocations in force.
    pub fn revocations(&self) -> Arc<RevocationSet> {
        self.revocations.load_full()
    }

    /// The sum of the entry, revocation, issuer and profile generations last loaded
    /// (grows on every change; part of the node API's sync revision).
    pub fn generation_sum(&self) -> i64 {
        self.generations.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The attestor for trusted issuers.
    pub fn attestor(&self) -> Arc<Attestor> {
        self.attestor.load_full()
    }

    /// Audience profiles.
    pub fn profiles(&self) -> Arc<ProfileSet> {
        self.profiles.load_full()
    }

    /// Reloads whatever changed since the last refresh.
    ///
    /// # Errors
    /// Store errors; the previous view stays in place.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let mut seen = self.seen.lock().await;
        let now = Seen {
            entries: self.store.generation("entries").await?,
            revocations: self.store.generation("revocations").await?,
            issuers: self.store.generation("issuers").await?,
            profiles: self.store.generation("audience_profiles").await?,
            nodes: self.store.generation("nodes").await?,
        };
        let before = *seen;
        if before.is_none_or(|b| b.entries != now.entries) {
            let entries = self.store.list_entries().await?;
            self.entries.store(Arc::new(EntryIndex::new(entries)));
        }
        if before.is_none_or(|b| b.revocations != now.revocations) {
            // Expiry needs no reload: `check` compares `until` with the time.
            let rows = self
                .store
                .list_revocations(self.clock.unix_seconds())
                .await?;
            let rules = rows.into_iter().map(|r| RevocationRule {
                key: RevocationKey::new(r.kind, r.value),
                until: r.until,
                reason: r.reason,
            });
            self.revocations.store(Arc::new(RevocationSet::new(rules)));
        }
        if before.is_none_or(|b| b.issuers != now.issuers) {
            let mut configs = Vec::new();
            for row in self.store.list_issuers().await? {
                match serde_json::from_str::<IssuerConfig>(&row.config) {
                    Ok(c) => configs.push(c),
                    Err(e) => {
                        tracing::error!(issuer = %row.name, error = %e, "stored issuer config is unreadable; its tokens are refused")
                    }
                }
            }
            match self.attestor.load().with_issuers(configs) {
                Ok(a) => self.attestor.store(Arc::new(a)),
                Err(e) => {
                    tracing::error!(error = %e, "issuer set rejected; keeping the previous one")
                }
            }
        }
        if before.is_none_or(|b| b.profiles != now.profiles) {
            let profiles = self.store.list_audience_profiles().await?;
            self.profiles.store(Arc::new(ProfileSet::new(profiles)));
        }
        if before.is_none_or(|b| b.nodes != now.nodes) {
            let nodes = self
                .store
                .list_nodes()
                .await?
                .into_iter()
                .map(|n| {
                    (
                        n.id,
                        NodeSerials {
                            current: n.svid_serial,
                            next: n.svid_serial_next,
                        },
                    )
                })
                .collect();
            self.nodes.store(Arc::new(nodes));
        }
        *seen = Some(now);
        self.generations.store(
            now.entries + now.revocations + now.issuers + now.profiles,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(())
    }
}
