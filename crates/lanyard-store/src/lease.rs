//! Broker rows: credential backends, broker roles, leases, and the
//! [`BrokerStore`] half of the store trait.

use serde::Serialize;

use crate::{AuditDraft, StoreFuture};

/// A credential backend. The admin secret is sealed with the KEK.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerBackendRow {
    /// Unique name (`appdb`).
    pub name: String,
    /// Backend kind (`postgres`).
    pub kind: String,
    /// Connection URL without its password.
    pub url: String,
    /// The admin password sealed with the KEK (AAD `broker-backend:<name>`).
    pub sealed_secret: Vec<u8>,
    /// Fingerprint of the sealing KEK.
    pub kek_fingerprint: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds (root rotation moves it).
    pub updated_at: i64,
}

impl std::fmt::Debug for BrokerBackendRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerBackendRow")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// A broker role: templates and TTLs, under a backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokerRoleRow {
    /// Backend name.
    pub backend: String,
    /// Role name (`readonly`).
    pub name: String,
    /// Creation SQL template.
    pub creation_sql: String,
    /// Revocation SQL template; empty: only drop the user.
    pub revocation_sql: String,
    /// Default lease TTL, seconds.
    pub ttl_secs: i64,
    /// Longest a lease may live from its creation, renewals included.
    pub max_ttl_secs: i64,
    /// Unix seconds.
    pub created_at: i64,
}

/// Where a lease is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    /// The credential exists and may be used until `expires_at`.
    Active,
    /// The credential must go; the backend has not confirmed it yet (retried
    /// with backoff, listed by `lease list --pending-revocation`).
    Revoking,
    /// The backend dropped the credential.
    Revoked,
}

impl LeaseState {
    /// Stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoking => "revoking",
            Self::Revoked => "revoked",
        }
    }

    /// Parses stored text.
    ///
    /// # Errors
    /// The unknown text.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "active" => Ok(Self::Active),
            "revoking" => Ok(Self::Revoking),
            "revoked" => Ok(Self::Revoked),
            other => Err(format!("{other:?}")),
        }
    }
}

/// A lease on a brokered credential. The password is never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseRow {
    /// Lease id.
    pub id: String,
    /// Backend name.
    pub backend: String,
    /// Broker role name.
    pub role: String,
    /// Tenant of the identity (INV-5).
    pub tenant: String,
    /// The identity the credential was issued to.
    pub spiffe_id: String,
    /// The entry that granted it.
    pub entry_id: String,
    /// The generated user name.
    pub username: String,
    /// Revocation keys of the identity (`kind`, `value`): a revocation of any
    /// of them revokes the lease.
    pub revocation_keys: Vec<lanyard_core::RevocationKey>,
    /// Correlation id of the request that created it; every later audit
    /// event of the lease carries it too.
    pub correlation_id: String,
    /// State.
    pub state: LeaseState,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// Renewals never move `expires_at` past this.
    pub max_expires_at: i64,
    /// Failed revocation attempts so far.
    pub attempts: i64,
    /// When the next revocation attempt is due (Unix seconds).
    pub next_attempt_at: i64,
    /// The last revocation failure (operator text, no secrets).
    pub last_error: String,
    /// Why it is being revoked (`expired`, `revoked by …`, `identity revoked: …`).
    pub revoke_reason: String,
    /// When the backend confirmed the revocation.
    pub revoked_at: Option<i64>,
}

/// Filters for [`BrokerStore::list_leases`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseQuery {
    /// Only leases in this state.
    pub state: Option<LeaseState>,
    /// Only leases with `expires_at <= t`.
    pub expires_by: Option<i64>,
    /// Only revoking leases whose next attempt is due by `t`.
    pub attempt_due_by: Option<i64>,
    /// Only this tenant's.
    pub tenant: Option<String>,
    /// At most this many, oldest first.
    pub limit: i64,
}

/// The broker's part of the store. Verbs as in [`crate::Store`]; changes to
/// backends and roles move the `broker` generation counter.
pub trait BrokerStore {
    /// Stores a backend. [`crate::StoreError::Conflict`] if the name exists.
    fn create_broker_backend(
        &self,
        row: BrokerBackendRow,
        audit: AuditDraft,
    ) -> StoreFuture<'_, ()>;

    /// Replaces a backend's URL and secret (root rotation).
    fn update_broker_backend(
        &self,
        row: BrokerBackendRow,
        audit: AuditDraft,
    ) -> StoreFuture<'_, ()>;

    /// All backends, by name.
    fn list_broker_backends(&self) -> StoreFuture<'_, Vec<BrokerBackendRow>>;

    /// Stores a role. [`crate::StoreError::Conflict`] if it exists,
    /// [`crate::StoreError::NotFound`] if its backend does not.
    fn create_broker_role(&self, row: BrokerRoleRow, audit: AuditDraft) -> StoreFuture<'_, ()>;

    /// All roles, by backend and name.
    fn list_broker_roles(&self) -> StoreFuture<'_, Vec<BrokerRoleRow>>;

    /// Records a new lease and appends `audit`.
    fn create_lease(&self, lease: LeaseRow, audit: AuditDraft) -> StoreFuture<'_, ()>;

    /// Replaces a lease's mutable fields and appends `audit` (may be empty:
    /// retry bookkeeping). [`crate::StoreError::NotFound`] if absent.
    fn update_lease(&self, lease: LeaseRow, audit: Vec<AuditDraft>) -> StoreFuture<'_, ()> {
        self.update_lease_fenced(lease, audit, None)
    }

    /// [`BrokerStore::update_lease`] by a background job: with `fence`, the
    /// transaction first checks that the job's holder still holds it and
    /// fails with [`crate::StoreError::Fenced`] otherwise.
    fn update_lease_fenced<'a>(
        &'a self,
        lease: LeaseRow,
        audit: Vec<AuditDraft>,
        fence: Option<&'a Fence>,
    ) -> StoreFuture<'a, ()>;

    /// One lease.
    fn fetch_lease<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<LeaseRow>>;

    /// Leases matching `query`, oldest first.
    fn list_leases(&self, query: LeaseQuery) -> StoreFuture<'_, Vec<LeaseRow>>;

    /// Claims job `name` for `holder` until `until` if nobody else holds it
    /// at `now` (or `holder` already does). True when `holder` holds it.
    /// Writes of the job then carry a [`Fence`].
    fn claim_job<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
        now: i64,
        until: i64,
    ) -> StoreFuture<'a, bool>;
}

/// A background job's claim, checked inside each transaction the job
/// commits (fencing): the write happens only if `holder` still holds `job`
/// at `now`, and holding it locks the claim until the commit, so another
/// replica cannot take the job over half-way through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The job (`broker_reaper`, `audit_checkpoint`, `key_rotation`, …).
    pub job: String,
    /// This replica's holder id.
    pub holder: String,
    /// The time of the write, Unix seconds.
    pub now: i64,
}
