//! [`FederationStore`]: the trust domains this server federates with
//! (issue 12). Every change to what is trusted (a bundle, a tenant binding,
//! a relationship) is audited and logged as a [`crate::ChangeKind::Bundle`]
//! change in the same transaction; refresh status is not (it changes on
//! every attempt and decides nothing).

use serde::Serialize;

use crate::{AuditDraft, StoreFuture};

/// A federated trust domain as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FederatedRow {
    /// The trust domain's name.
    pub trust_domain: String,
    /// The tenant its JWT-SVIDs are bound to ('' = none).
    pub tenant: String,
    /// How to fetch its bundle (JSON; '' for a bundle set by hand).
    pub endpoint: String,
    /// The latest bundle, SPIFFE JSON ('' = none yet).
    pub bundle: String,
    /// That bundle's `spiffe_sequence` (0 when it has none).
    pub sequence: i64,
    /// Refresh status (JSON).
    pub status: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// The federation half of the store trait.
pub trait FederationStore {
    /// Every federated trust domain, by name.
    fn list_federated(&self) -> StoreFuture<'_, Vec<FederatedRow>>;

    /// One federated trust domain.
    fn fetch_federated<'a>(
        &'a self,
        trust_domain: &'a str,
    ) -> StoreFuture<'a, Option<FederatedRow>>;

    /// Creates a federation relationship (`row.endpoint` set, `row.bundle`
    /// the bootstrap bundle or ''). A trust domain that has only a bundle
    /// set by hand gains the endpoint (its bundle bootstraps it).
    /// [`crate::StoreError::Conflict`] if a relationship exists.
    fn create_federation(&self, row: FederatedRow, audit: AuditDraft) -> StoreFuture<'_, ()>;

    /// Stores `bundle` (with `sequence`) for `trust_domain`, creating a
    /// static row if none exists; `tenant` replaces the binding when given.
    /// Only if the stored sequence is still `expect_sequence` (a refresh
    /// racing another writer loses; false then).
    #[allow(clippy::too_many_arguments)]
    fn put_bundle<'a>(
        &'a self,
        trust_domain: &'a str,
        bundle: &'a str,
        sequence: i64,
        tenant: Option<&'a str>,
        expect_sequence: Option<i64>,
        now: i64,
        audit: AuditDraft,
    ) -> StoreFuture<'a, bool>;

    /// Records how a refresh went (no change-log entry); `audit` is
    /// appended when given (a refused bundle).
    fn set_federation_status<'a>(
        &'a self,
        trust_domain: &'a str,
        status: &'a str,
        audit: Option<AuditDraft>,
    ) -> StoreFuture<'a, ()>;

    /// Removes a trust domain: its relationship and bundle.
    /// [`crate::StoreError::NotFound`] if absent; [`crate::StoreError::InUse`]
    /// while an entry federates with it or maps one of its identities.
    fn delete_federated<'a>(
        &'a self,
        trust_domain: &'a str,
        audit: AuditDraft,
    ) -> StoreFuture<'a, ()>;
}
