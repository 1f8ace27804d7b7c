//! Tokens verified earlier, remembered until they expire.
//!
//! A pod presents the same projected token many times during its life; each
//! presentation used to pay a full signature verification. A token that
//! verified is remembered under its SHA-256, with the evidence it produced
//! and the key set that verified it. A later presentation of the very same
//! bytes is answered from here only when
//! - the token has not expired (`now < exp`, stricter than a fresh
//!   verification, which allows [`crate::CLOCK_SKEW_SECS`] of skew), and
//! - the issuer's key set is still the one that verified it (a refreshed or
//!   rotated JWKS is a new set: the next presentation is verified afresh).
//!
//! Revocation is not decided here: the server's policy checks the
//! evidence's revocation keys on every use, cached or not. A new issuer
//! configuration builds a new [`crate::Attestor`] and so an empty cache.
//! Only signature-verified tokens with an `exp` are remembered: never a
//! TokenReview answer (the API server must vouch for every use, e.g. for a
//! deleted pod) and never an allowed legacy token (no `exp`). Denials are
//! never remembered.
//!
//! The map is split into shards, each behind its own mutex held only for a
//! lookup or an insert, so no lock is shared by all requests. Its size is
//! bounded: a full shard first drops expired tokens, then arbitrary ones,
//! down to three quarters of its share.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lanyard_core::Evidence;

use crate::keys::KeySet;
use crate::Keys;

const SHARDS: usize = 16;

/// SHA-256 of a token's bytes.
pub(crate) type Digest = [u8; 32];

/// What a verification left to remember.
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    pub evidence: Evidence,
    /// The token's `kid`, to look its key set up again.
    pub kid: String,
    /// The issuer's keys, to find the current set.
    pub keys: Keys,
    /// The set that verified the token.
    pub verified_with: Arc<KeySet>,
}

#[derive(Debug)]
pub(crate) struct VerifiedCache {
    shards: Vec<Mutex<HashMap<Digest, Cached>>>,
    per_shard: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// How an [`crate::Attestor`]'s verified-token cache has been used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VerifiedCacheStats {
    /// Presentations answered from the cache.
    pub hits: u64,
    /// Presentations verified afresh (unknown, expired, or keys changed).
    pub misses: u64,
    /// Tokens remembered now.
    pub entries: usize,
    /// At most this many are remembered (`0`: the cache is off).
    pub capacity: usize,
}

impl VerifiedCache {
    /// A cache for about `entries` tokens; `0` remembers nothing.
    pub(crate) fn new(entries: usize) -> Self {
        let per_shard = entries.div_ceil(SHARDS);
        let shards = if per_shard == 0 { 0 } else { SHARDS };
        Self {
            shards: (0..shards).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub(crate) fn count(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> VerifiedCacheStats {
        VerifiedCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self
                .shards
                .iter()
                .filter_map(|s| s.lock().ok().map(|s| s.len()))
                .sum(),
            capacity: self.capacity(),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.per_shard * self.shards.len()
    }

    fn shard(&self, digest: &Digest) -> Option<&Mutex<HashMap<Digest, Cached>>> {
        let n = self.shards.len();
        if n == 0 {
            return None;
        }
        self.shards.get(usize::from(digest[0]) % n)
    }

    /// The remembered verification of `digest`, if any (not yet checked
    /// for expiry or keys: the caller does that). A poisoned shard is a miss.
    pub(crate) fn get(&self, digest: &Digest) -> Option<Cached> {
        self.shard(digest)?.lock().ok()?.get(digest).cloned()
    }

    pub(crate) fn remove(&self, digest: &Digest) {
        if let Some(mut shard) = self.shard(digest).and_then(|s| s.lock().ok()) {
            shard.remove(digest);
        }
    }

    pub(crate) fn insert(&self, digest: Digest, cached: Cached, now: i64) {
        let per_shard = self.per_shard;
        let Some(mut shard) = self.shard(&digest).and_then(|s| s.lock().ok()) else {
            return;
        };
        if shard.len() >= per_shard && !shard.contains_key(&digest) {
            shard.retain(|_, c| c.evidence.expires_at > now);
            // Room for this one and a quarter more, so the scan is rare.
            let keep = per_shard.saturating_sub((per_shard / 4).max(1));
            if shard.len() > keep {
                let excess: Vec<Digest> = shard.keys().take(shard.len() - keep).copied().collect();
                for d in excess {
                    shard.remove(&d);
                }
            }
        }
        shard.insert(digest, cached);
    }
}
