//! The change log (issue 13): every change that agents and replicas cache
//! (entries, revocations, trusted issuers, audience profiles, signing keys,
//! CAs, federated bundles) gets a gap-free revision, in the transaction that
//! makes the change. Replicas refresh their caches from it; agents sync with
//! an `(epoch, revision)` cursor and receive only what changed since.

use lanyard_core::Entry;

use crate::{AuditDraft, StoreFuture};

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A registration entry (key: its id).
    Entry,
    /// A revocation.
    Revocation,
    /// A trusted issuer.
    Issuer,
    /// An audience profile.
    Profile,
    /// The JWT signing keys.
    Keys,
    /// The X.509 CAs.
    Ca,
    /// A federated trust bundle.
    Bundle,
}

impl ChangeKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Entry => "entry",
            Self::Revocation => "revocation",
            Self::Issuer => "issuer",
            Self::Profile => "profile",
            Self::Keys => "keys",
            Self::Ca => "ca",
            Self::Bundle => "bundle",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Entry,
            Self::Revocation,
            Self::Issuer,
            Self::Profile,
            Self::Keys,
            Self::Ca,
            Self::Bundle,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A change to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRecord {
    /// What changed.
    pub kind: ChangeKind,
    /// Which one (an entry id; informational for the other kinds).
    pub key: String,
    /// An entry's node before the change ('' = none).
    pub old_parent: String,
    /// An entry's node after it ('' = none).
    pub new_parent: String,
    /// Whether it was removed.
    pub deleted: bool,
}

impl ChangeRecord {
    /// An entry change.
    pub fn entry(id: &str, old_parent: &str, new_parent: &str, deleted: bool) -> Self {
        Self {
            kind: ChangeKind::Entry,
            key: id.to_owned(),
            old_parent: old_parent.to_owned(),
            new_parent: new_parent.to_owned(),
            deleted,
        }
    }

    /// A change of another kind.
    pub fn of(kind: ChangeKind, key: &str) -> Self {
        Self {
            kind,
            key: key.to_owned(),
            old_parent: String::new(),
            new_parent: String::new(),
            deleted: false,
        }
    }
}

/// A logged change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRow {
    /// Its revision (gap-free, from 1).
    pub revision: i64,
    /// The change.
    pub change: ChangeRecord,
}

/// Entry changes applied in one transaction (`lanyard entry apply`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryBatch {
    /// New entries.
    pub create: Vec<Entry>,
    /// Replaced entries (same id).
    pub update: Vec<Entry>,
    /// Entry ids to delete.
    pub delete: Vec<String>,
}

impl EntryBatch {
    /// Number of changes.
    pub fn len(&self) -> usize {
        self.create.len() + self.update.len() + self.delete.len()
    }

    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The change-log part of the store.
pub trait ChangeStore {
    /// The log's epoch and latest revision.
    fn fetch_change_head(&self) -> StoreFuture<'_, (String, i64)>;

    /// Changes with `revision > after`, oldest first, at most `limit`.
    fn list_changes(&self, after: i64, limit: i64) -> StoreFuture<'_, Vec<ChangeRow>>;

    /// The entries with these ids that exist.
    fn fetch_entries<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, Vec<Entry>>;

    /// Applies `batch` and appends `audits` (one per change) in one
    /// transaction, with the same rules as the single-entry methods (one
    /// tenant per SPIFFE ID, unique selector sets). All or nothing.
    fn apply_entries(&self, batch: EntryBatch, audits: Vec<AuditDraft>) -> StoreFuture<'_, i64>;

    /// Starts a new change-log epoch (`epoch`) and appends `audit`, in one
    /// transaction. After a restore from a backup: agents' cursors name
    /// revisions the restored log may not have, and an agent never takes an
    /// older revision within an epoch; a new epoch makes each resync in full.
    fn new_change_epoch<'a>(&'a self, epoch: &'a str, audit: AuditDraft) -> StoreFuture<'a, ()>;

    /// A channel that receives a message soon after another process
    /// commits a change (PostgreSQL `LISTEN`), or `None` where there is
    /// nobody else (SQLite). A wake-up only: read the log after it.
    fn watch_changes(&self) -> StoreFuture<'_, Option<tokio::sync::mpsc::Receiver<()>>>;
}
