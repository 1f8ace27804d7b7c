//! What the token path reads on every request, kept in memory and swapped
//! atomically: the entry index, revocations, trusted issuers, audience
//! profiles and the nodes' current SVID serials.
//!
//! The store's change log (issue 13) drives it: a refresh reads the changes
//! since the revision last applied and touches only what they name (the
//! changed entries are fetched by id and laid over the index; revocations,
//! issuers or profiles are reloaded when one of them changed), so a change
//! costs the same at 100 and at 100,000 entries. A new epoch (a store
//! recreated or restored) or a gap too long to replay reloads everything.
//! The replica that made a change refreshes at once; the others are woken
//! by PostgreSQL `LISTEN/NOTIFY` and, as a backstop, poll every [`POLL`].
//! The recent changes stay in memory ([`RING`]) so agent syncs are answered
//! as deltas without a store query.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use lanyard_attest::{Attestor, IssuerConfig};
use lanyard_core::policy::Policy;
use lanyard_core::revocation::{RevocationKey, RevocationRule};
use lanyard_core::{Clock, EntryIndex, ProfileSet, RevocationSet};
use lanyard_store::{ChangeKind, ChangeRow, NodeRow, Store, StoreError};

use crate::federation::FederatedSet;
use crate::state::Settings;
use tokio::sync::Mutex;

/// How often the store is checked for other replicas' changes when no
/// wake-up arrives.
pub const POLL: Duration = Duration::from_secs(1);

/// Recent changes kept for agent deltas.
pub const RING: usize = 65_536;

/// Changes read per store query while catching up.
const PAGE: i64 = 5_000;

/// More changes than this behind: reload everything instead of replaying.
const REPLAY_MAX: usize = 50_000;

/// The change-log position the in-memory view is at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    /// The store's epoch.
    pub epoch: String,
    /// The last change applied.
    pub revision: i64,
}

/// What changed for one node between two revisions.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NodeDelta {
    /// Entries that were, or now are, this node's (their current state
    /// decides whether each is an upsert or a deletion).
    pub entries: Vec<String>,
    /// Something every decision reads changed (a revocation, issuer or
    /// profile): the node's whole set must be re-evaluated.
    pub everything: bool,
    /// Keys, CAs or federated bundles changed.
    pub bundle: bool,
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
    /// Federated trust domains.
    pub federated: Arc<FederatedSet>,
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
    federated: ArcSwap<FederatedSet>,
    nodes: ArcSwap<HashMap<String, NodeSerials>>,
    head: ArcSwap<Head>,
    /// Changes after `ring_start`, oldest first.
    ring: RwLock<VecDeque<ChangeRow>>,
    /// Serialises refreshes; holds the node-table generation last loaded.
    refreshing: Mutex<Option<i64>>,
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
        verified_token_cache: usize,
    ) -> Result<Self, StoreError> {
        let attestor = Attestor::new(Vec::new(), clock.clone(), http)
            .map_err(|e| StoreError::Invalid {
                what: "issuer set",
                detail: e.to_string(),
            })?
            .with_verified_cache(verified_token_cache);
        let registry = Self {
            store,
            clock,
            entries: ArcSwap::from_pointee(EntryIndex::default()),
            revocations: ArcSwap::from_pointee(RevocationSet::default()),
            attestor: ArcSwap::from_pointee(attestor),
            profiles: ArcSwap::from_pointee(ProfileSet::default()),
            federated: ArcSwap::from_pointee(FederatedSet::default()),
            nodes: ArcSwap::from_pointee(HashMap::new()),
            head: ArcSwap::from_pointee(Head::default()),
            ring: RwLock::new(VecDeque::new()),
            refreshing: Mutex::new(None),
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
            federated: self.federated(),
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

    /// The change-log position of the view.
    pub fn head(&self) -> Arc<Head> {
        self.head.load_full()
    }

    /// What changed for node `parent` after revision `after` up to the
    /// view's head, or `None` when those changes are no longer in memory
    /// (the agent then resyncs in full). Reads no store.
    pub fn changes_for(&self, parent: &str, after: i64, upto: i64) -> Option<NodeDelta> {
        let ring = self.ring.read().ok()?;
        let first = ring.front().map_or(upto + 1, |r| r.revision);
        // The ring must hold every revision after `after`.
        if after + 1 < first && after < upto {
            return None;
        }
        let from = ring.partition_point(|r| r.revision <= after);
        let mut delta = NodeDelta::default();
        let mut seen = HashSet::new();
        for row in ring.range(from..) {
            if row.revision > upto {
                break;
            }
            let c = &row.change;
            match c.kind {
                ChangeKind::Entry => {
                    if (c.old_parent == parent || c.new_parent == parent) && seen.insert(&c.key) {
                        delta.entries.push(c.key.clone());
                    }
                }
                ChangeKind::Revocation | ChangeKind::Issuer | ChangeKind::Profile => {
                    delta.everything = true;
                }
                ChangeKind::Keys | ChangeKind::Ca | ChangeKind::Bundle => delta.bundle = true,
            }
        }
        Some(delta)
    }

    /// The attestor for trusted issuers.
    pub fn attestor(&self) -> Arc<Attestor> {
        self.attestor.load_full()
    }

    /// Audience profiles.
    pub fn profiles(&self) -> Arc<ProfileSet> {
        self.profiles.load_full()
    }

    /// Federated trust domains.
    pub fn federated(&self) -> Arc<FederatedSet> {
        self.federated.load_full()
    }

    /// Brings the view up to the store's change log.
    ///
    /// # Errors
    /// Store errors; the previous view stays in place.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let mut nodes_seen = self.refreshing.lock().await;
        let nodes_generation = self.store.generation("nodes").await?;
        if *nodes_seen != Some(nodes_generation) {
            self.load_nodes().await?;
            *nodes_seen = Some(nodes_generation);
        }
        let (epoch, revision) = self.store.fetch_change_head().await?;
        let head = self.head();
        if head.epoch != epoch || revision < head.revision {
            if !head.epoch.is_empty() {
                tracing::warn!(
                    was = %head.epoch, now = %epoch, revision,
                    "the store's change log is another one (recreated or restored); reloading everything"
                );
            }
            return self.reload(epoch, revision).await;
        }
        let mut after = head.revision;
        let mut rows: Vec<ChangeRow> = Vec::new();
        while after < revision {
            let page = self.store.list_changes(after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.revision;
            rows.extend(page);
            if rows.len() > REPLAY_MAX {
                return self.reload(epoch, revision).await;
            }
        }
        let Some(last) = rows.last().map(|r| r.revision) else {
            return Ok(());
        };
        // Gap-free by construction (one counter row, locked in the change's
        // transaction); anything else is a broken log, not a change.
        let gapless = rows
            .iter()
            .zip(head.revision + 1..)
            .all(|(r, want)| r.revision == want);
        if !gapless {
            tracing::error!(
                from = head.revision,
                "the change log has a gap; reloading everything"
            );
            return self.reload(epoch, revision).await;
        }
        self.apply(&rows).await?;
        self.push_ring(rows);
        self.head.store(Arc::new(Head {
            epoch,
            revision: last,
        }));
        Ok(())
    }

    /// Applies logged changes to the in-memory parts they name.
    async fn apply(&self, rows: &[ChangeRow]) -> Result<(), StoreError> {
        let mut ids: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        let (mut revocations, mut issuers, mut profiles, mut bundles) =
            (false, false, false, false);
        for row in rows {
            match row.change.kind {
                ChangeKind::Entry => {
                    if seen.insert(row.change.key.as_str()) {
                        ids.push(row.change.key.clone());
                    }
                }
                ChangeKind::Revocation => revocations = true,
                ChangeKind::Issuer => issuers = true,
                ChangeKind::Profile => profiles = true,
                ChangeKind::Bundle => bundles = true,
                // Served by the key and CA managers, which follow their own tables.
                ChangeKind::Keys | ChangeKind::Ca => {}
            }
        }
        // Everything a decision reads besides entries first, so a sync that
        // sees the new head also sees what it implies.
        if revocations {
            self.load_revocations().await?;
        }
        if issuers {
            self.load_issuers().await?;
        }
        if profiles {
            self.load_profiles().await?;
        }
        if bundles {
            self.load_federated().await?;
        }
        if !ids.is_empty() {
            let mut upserts = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(1000) {
                upserts.extend(self.store.fetch_entries(chunk).await?);
            }
            let present: HashSet<&str> = upserts.iter().map(|e| e.id.as_str()).collect();
            let deletes: Vec<String> = ids
                .iter()
                .filter(|id| !present.contains(id.as_str()))
                .cloned()
                .collect();
            let next = self.entries.load().with_changes(upserts, &deletes);
            self.entries.store(Arc::new(next));
        }
        Ok(())
    }

    /// Reloads everything at change-log position `(epoch, revision)` (read
    /// before the data, so the view is at least that new).
    async fn reload(&self, epoch: String, revision: i64) -> Result<(), StoreError> {
        self.load_revocations().await?;
        self.load_issuers().await?;
        self.load_profiles().await?;
        self.load_federated().await?;
        let entries = self.store.list_entries().await?;
        self.entries.store(Arc::new(EntryIndex::new(entries)));
        // The recent changes, so agents that synced before (with another
        // replica, or before a restart) still get deltas. Each is already
        // in the data just loaded.
        let since = revision.saturating_sub(i64::try_from(RING).unwrap_or(i64::MAX));
        let mut recent = Vec::new();
        let mut after = since;
        while after < revision {
            let page = self.store.list_changes(after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.revision;
            recent.extend(page.into_iter().filter(|r| r.revision <= revision));
        }
        let gapless = recent
            .iter()
            .zip(since + 1..)
            .all(|(r, want)| r.revision == want);
        if let Ok(mut ring) = self.ring.write() {
            ring.clear();
            if gapless {
                ring.extend(recent);
            }
        }
        self.head.store(Arc::new(Head { epoch, revision }));
        Ok(())
    }

    fn push_ring(&self, rows: Vec<ChangeRow>) {
        if let Ok(mut ring) = self.ring.write() {
            ring.extend(rows);
            let excess = ring.len().saturating_sub(RING);
            ring.drain(..excess);
        }
    }

    async fn load_revocations(&self) -> Result<(), StoreError> {
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
        Ok(())
    }

    async fn load_issuers(&self) -> Result<(), StoreError> {
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
        Ok(())
    }

    async fn load_federated(&self) -> Result<(), StoreError> {
        let set = FederatedSet::load(&*self.store).await?;
        self.federated.store(Arc::new(set));
        Ok(())
    }

    async fn load_profiles(&self) -> Result<(), StoreError> {
        let profiles = self.store.list_audience_profiles().await?;
        self.profiles.store(Arc::new(ProfileSet::new(profiles)));
        Ok(())
    }

    async fn load_nodes(&self) -> Result<(), StoreError> {
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
        Ok(())
    }
}
