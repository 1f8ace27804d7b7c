//! Lanyard's store: one [`Store`] trait, two real backends.
//!
//! - SQLite (embedded, bundled, the default: `sqlite:///path/lanyard.db`)
//! - PostgreSQL (several server replicas: `postgres://…`)
//!
//! Both run the same SQL (numbered `$N` parameters, `RETURNING`, `ON
//! CONFLICT`) from one implementation in [`sql`], so they cannot drift; only
//! the migrations differ, by column types. The conformance suite in
//! `tests/` runs unchanged against both.
//!
//! Every admin change is written in the same transaction as its audit event,
//! and the audit log is a hash chain ([`audit`]) that the database itself
//! keeps append-only (triggers refuse `UPDATE` and `DELETE`).
//!
//! Open a store with [`open`].

#![warn(missing_docs)]

pub mod audit;
pub mod changes;
pub mod checkpoint;
mod error;
mod federation;
mod lease;
mod model;
mod open;
mod sql;

use std::future::Future;
use std::pin::Pin;

use lanyard_core::{AudienceProfile, Entry};

pub use audit::{AuditDraft, AuditEvent};
pub use changes::{ChangeKind, ChangeRecord, ChangeRow, ChangeStore, EntryBatch};
pub use checkpoint::{AuditKeyRow, AuditStore, CheckpointRow};
pub use error::StoreError;
pub use federation::{FederatedRow, FederationStore};
pub use lease::{
    BrokerBackendRow, BrokerRoleRow, BrokerStore, Fence, LeaseQuery, LeaseRow, LeaseState,
};
pub use model::{
    AdminTokenRow, AuditQuery, CaChange, IssuerRow, JoinTokenRow, KeyChange, NodeRow, Revocation,
    SigningKeyRow, Tenant, X509CaRow,
};
pub use open::{open, open_with, redact_url, Backend, OpenMode};

/// A boxed future returned by [`Store`] methods, so the trait stays object-safe.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Plans signing-key changes from the current rows, inside the key lock.
pub type KeyPlanner<'a> = &'a (dyn Fn(&[SigningKeyRow]) -> Result<(Vec<KeyChange>, Vec<AuditDraft>), String>
         + Send
         + Sync);

/// Plans X.509 CA changes from the current rows, inside the CA lock.
pub type CaPlanner<'a> =
    &'a (dyn Fn(&[X509CaRow]) -> Result<(Vec<CaChange>, Vec<AuditDraft>), String> + Send + Sync);

/// Everything Lanyard persists, grouped by entity. Verbs: create, fetch,
/// list, update, delete, count, append.
pub trait Store:
    BrokerStore + AuditStore + ChangeStore + FederationStore + Send + Sync + std::fmt::Debug
{
    /// Which backend this is.
    fn backend(&self) -> Backend;

    /// A cheap round trip, for readiness.
    fn ping(&self) -> StoreFuture<'_, ()>;

    /// Creates a tenant and appends `audit` in the same transaction.
    /// [`StoreError::Conflict`] if it exists.
    fn create_tenant(&self, tenant: Tenant, audit: AuditDraft) -> StoreFuture<'_, Tenant>;

    /// All tenants, by name.
    fn list_tenants(&self) -> StoreFuture<'_, Vec<Tenant>>;

    /// One tenant.
    fn fetch_tenant<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Tenant>>;

    /// Deletes a tenant and appends `audit`. [`StoreError::NotFound`] if absent.
    fn delete_tenant<'a>(&'a self, id: &'a str, audit: AuditDraft) -> StoreFuture<'a, ()>;

    /// Every stored signing key.
    fn list_signing_keys(&self) -> StoreFuture<'_, Vec<SigningKeyRow>>;

    /// Runs `planner` on the current keys while holding the key lock (so
    /// replicas never plan concurrently), applies its changes and appends its
    /// audit events, all in one transaction. Returns the changes applied.
    fn update_signing_keys<'a>(
        &'a self,
        planner: KeyPlanner<'a>,
    ) -> StoreFuture<'a, Vec<KeyChange>> {
        self.update_signing_keys_fenced(planner, None)
    }

    /// [`Store::update_signing_keys`] by the rotation job, fenced.
    fn update_signing_keys_fenced<'a>(
        &'a self,
        planner: KeyPlanner<'a>,
        fence: Option<&'a Fence>,
    ) -> StoreFuture<'a, Vec<KeyChange>>;

    /// A counter that increases whenever the signing keys change (the SPIFFE
    /// bundle's `spiffe_sequence`).
    fn signing_keys_generation(&self) -> StoreFuture<'_, i64>;

    /// Every stored X.509 CA.
    fn list_x509_cas(&self) -> StoreFuture<'_, Vec<X509CaRow>>;

    /// Like [`Store::update_signing_keys`], for the X.509 CAs.
    fn update_x509_cas<'a>(&'a self, planner: CaPlanner<'a>) -> StoreFuture<'a, Vec<CaChange>> {
        self.update_x509_cas_fenced(planner, None)
    }

    /// [`Store::update_x509_cas`] by the rotation job, fenced.
    fn update_x509_cas_fenced<'a>(
        &'a self,
        planner: CaPlanner<'a>,
        fence: Option<&'a Fence>,
    ) -> StoreFuture<'a, Vec<CaChange>>;

    /// Stores a join token and appends `audit`.
    fn create_join_token(&self, token: JoinTokenRow, audit: AuditDraft) -> StoreFuture<'_, ()>;

    /// One join token by the hash of its secret.
    fn fetch_join_token<'a>(&'a self, token_hash: &'a str)
        -> StoreFuture<'a, Option<JoinTokenRow>>;

    /// Marks a join token used at `now` if it is unused and unexpired; false
    /// when another caller used it first (or it expired meanwhile).
    fn consume_join_token<'a>(&'a self, token_hash: &'a str, now: i64) -> StoreFuture<'a, bool>;

    /// Every join token, newest first.
    fn list_join_tokens(&self) -> StoreFuture<'_, Vec<JoinTokenRow>>;

    /// Inserts or replaces a node (by id).
    fn upsert_node(&self, node: NodeRow) -> StoreFuture<'_, ()>;

    /// One node.
    fn fetch_node<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<NodeRow>>;

    /// Makes the pending SVID `serial` of node `id` its current one (and
    /// forgets the previous); false when `serial` is not the pending one.
    fn promote_node_serial<'a>(&'a self, id: &'a str, serial: &'a str) -> StoreFuture<'a, bool>;

    /// Every node.
    fn list_nodes(&self) -> StoreFuture<'_, Vec<NodeRow>>;

    /// Stores an admin token (hashed secret) and appends `audit`.
    fn create_admin_token(&self, token: AdminTokenRow, audit: AuditDraft) -> StoreFuture<'_, ()>;

    /// One admin token by id.
    fn fetch_admin_token<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<AdminTokenRow>>;

    /// How many admin tokens exist.
    fn count_admin_tokens(&self) -> StoreFuture<'_, i64>;

    /// Stores a new trusted issuer. [`StoreError::Conflict`] if the name exists.
    fn create_issuer(&self, issuer: IssuerRow, audit: AuditDraft) -> StoreFuture<'_, ()>;

    /// All trusted issuers, by name.
    fn list_issuers(&self) -> StoreFuture<'_, Vec<IssuerRow>>;

    /// Deletes an issuer. [`StoreError::NotFound`] if absent.
    fn delete_issuer<'a>(&'a self, name: &'a str, audit: AuditDraft) -> StoreFuture<'a, ()>;

    /// Stores a new entry. [`StoreError::Conflict`] if one with the same id,
    /// or the same issuer and selector set, exists; [`StoreError::InUse`] if
    /// another tenant's entry already grants its SPIFFE ID (INV-9).
    fn create_entry(&self, entry: Entry, audit: AuditDraft) -> StoreFuture<'_, ()>;

    /// Replaces an entry (same id). [`StoreError::NotFound`] if absent.
    fn update_entry(&self, entry: Entry, audit: AuditDraft) -> StoreFuture<'_, ()>;

    /// All entries.
    fn list_entries(&self) -> StoreFuture<'_, Vec<Entry>>;

    /// Deletes an entry. [`StoreError::NotFound`] if absent.
    fn delete_entry<'a>(&'a self, id: &'a str, audit: AuditDraft) -> StoreFuture<'a, ()>;

    /// Records (or replaces) a revocation.
    fn create_revocation(&self, revocation: Revocation, audit: AuditDraft) -> StoreFuture<'_, ()>;

    /// Revocations still in force at `now` (Unix seconds).
    fn list_revocations(&self, now: i64) -> StoreFuture<'_, Vec<Revocation>>;

    /// Stores an audience profile. [`StoreError::Conflict`] if one exists
    /// for the same audience and scope, or if another templated profile of
    /// the same audience puts `{tenant}` after a different prefix (which
    /// could let two tenants share a subject).
    fn create_audience_profile(
        &self,
        profile: AudienceProfile,
        audit: AuditDraft,
    ) -> StoreFuture<'_, ()>;

    /// All audience profiles, oldest first.
    fn list_audience_profiles(&self) -> StoreFuture<'_, Vec<AudienceProfile>>;

    /// Deletes an audience profile. [`StoreError::NotFound`] if absent.
    fn delete_audience_profile<'a>(&'a self, id: &'a str, audit: AuditDraft)
        -> StoreFuture<'a, ()>;

    /// A counter that increases whenever the named table set changes:
    /// `signing_keys`, `issuers`, `entries`, `revocations`,
    /// `audience_profiles`. Replicas poll it.
    fn generation<'a>(&'a self, name: &'a str) -> StoreFuture<'a, i64>;

    /// Appends many audit events in one transaction (group commit).
    fn append_audit_batch(&self, drafts: Vec<AuditDraft>) -> StoreFuture<'_, Vec<AuditEvent>>;

    /// Audit events matching `query`, oldest first.
    fn query_audit(&self, query: AuditQuery) -> StoreFuture<'_, Vec<AuditEvent>>;

    /// Appends one audit event to the chain.
    fn append_audit(&self, draft: AuditDraft) -> StoreFuture<'_, AuditEvent>;

    /// Audit events with `seq > after`, oldest first, at most `limit`.
    fn list_audit(&self, after: i64, limit: i64) -> StoreFuture<'_, Vec<AuditEvent>>;
}
