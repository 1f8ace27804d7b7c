//! What the token path reads on every request, kept in memory and swapped
//! atomically: the entry index, revocations and trusted issuers.
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
use lanyard_core::{Clock, EntryIndex};
use lanyard_store::{Store, StoreError};
use tokio::sync::Mutex;

/// How often other replicas' changes are picked up.
pub const POLL: Duration = Duration::from_secs(1);

/// Revocations in force, by (kind, value).
#[derive(Debug, Default)]
pub struct RevocationSet {
    by_key: HashMap<(String, String), (Option<i64>, String)>,
}

impl RevocationSet {
    /// The reason `kind`/`value` is revoked at `now`, if it is.
    pub fn check(&self, kind: &str, value: &str, now: i64) -> Option<&str> {
        // Allocation-free lookup would need a borrowed key type; revocation
        // checks are a handful per request, so the two small Strings are fine.
        match self.by_key.get(&(kind.to_owned(), value.to_owned())) {
            Some((until, reason)) if until.is_none_or(|u| u > now) => Some(reason.as_str()),
            _ => None,
        }
    }

    /// Number of revocations loaded.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether none are loaded.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    entries: i64,
    revocations: i64,
    issuers: i64,
}

/// The in-memory view of entries, revocations and issuers.
#[derive(Debug)]
pub struct Registry {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    entries: ArcSwap<EntryIndex>,
    revocations: ArcSwap<RevocationSet>,
    attestor: ArcSwap<Attestor>,
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
            seen: Mutex::new(None),
            generations: std::sync::atomic::AtomicI64::new(0),
        };
        registry.refresh().await?;
        Ok(registry)
    }

    /// The entry index.
    pub fn entries(&self) -> Arc<EntryIndex> {
        self.entries.load_full()
    }

    /// Revocations in force.
    pub fn revocations(&self) -> Arc<RevocationSet> {
        self.revocations.load_full()
    }

    /// The sum of the entry, revocation and issuer generations last loaded
    /// (grows on every change; part of the node API's sync revision).
    pub fn generation_sum(&self) -> i64 {
        self.generations.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The attestor for trusted issuers.
    pub fn attestor(&self) -> Arc<Attestor> {
        self.attestor.load_full()
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
            let by_key = rows
                .into_iter()
                .map(|r| ((r.kind, r.value), (r.until, r.reason)))
                .collect();
            self.revocations.store(Arc::new(RevocationSet { by_key }));
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
        *seen = Some(now);
        self.generations.store(
            now.entries + now.revocations + now.issuers,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(())
    }
}
