//! The credential broker: backends and roles loaded from the store, leases,
//! and the reaper.
//!
//! A lease is created only after the backend made the credential, in one
//! audited store transaction; if that write fails the credential is removed
//! again at once. Leases end three ways, all through [`BrokerService::tick`]
//! or [`BrokerService::revoke`]: expiry, a revocation of the identity behind
//! them (any of the lease's revocation keys), or an explicit revoke. A lease
//! that must end goes to `revoking` first (audited), then the backend drops
//! the user; when the backend is down the attempt is retried with
//! exponential backoff ([`backoff`]) and the lease stays listed as pending,
//! never forgotten. Only one replica reaps at a time (a job claim in the
//! store that its holder renews every tick).
//!
//! Every lease event carries the correlation id of the request that created
//! the lease, so `lanyard audit show <id>` tells the whole story.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use lanyard_broker::template::Use;
use lanyard_broker::{
    Broker, BrokerError, Credential, PostgresBroker, PostgresTarget, RoleTemplates, Template,
};
use lanyard_core::{Clock, Decision, Entry, RevocationKey, RevocationSet};
use lanyard_store::{
    AuditDraft, BrokerBackendRow, BrokerRoleRow, LeaseQuery, LeaseRow, LeaseState, Store,
    StoreError,
};
use serde::Serialize;
use tokio::sync::{Mutex, Notify};

use crate::keys::KeyManager;
use crate::registry::Registry;

/// Default lease TTL when a role names none (INV-2: 15 minutes).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15 * 60);
/// Default longest lease life, renewals included.
pub const DEFAULT_LEASE_MAX_TTL: Duration = Duration::from_secs(60 * 60);
/// No role may let a lease live longer than this.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// How often the reaper runs (and how late a revocation of an identity can
/// reach its leases, plus the registry's poll).
pub const REAP_EVERY: Duration = Duration::from_secs(1);
/// Connections per backend pool. PostgreSQL serialises `CREATE ROLE` on the
/// catalog, so more connections add contention, not throughput.
pub const BACKEND_CONNECTIONS: u32 = 4;
/// Leases handled per reaper step.
const REAP_BATCH: i64 = 500;
/// How long a reaper claim lasts without renewal.
const CLAIM_SECS: i64 = 15;
/// How long a lease written ahead of its login may stay unconfirmed before
/// the reaper drops the login (an issuance takes milliseconds).
const PENDING_GRACE: i64 = 60;

/// Retry delay after `attempts` failed revocations: 2, 4, 8 … seconds, at
/// most 5 minutes.
pub fn backoff(attempts: i64) -> i64 {
    let exp = u32::try_from(attempts.clamp(1, 9)).unwrap_or(9);
    (1_i64 << exp).min(300)
}

/// `backend/role` name rule (shared with entry validation).
pub use lanyard_core::entry::validate::valid_name;

/// Why the broker refused or failed. The caller sees [`Refusal::caller_text`];
/// operators see `Display`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The input is malformed; the message names it.
    #[error("{0}")]
    BadRequest(String),
    /// The identity's entry does not grant this role.
    #[error("{0}")]
    NotGranted(String),
    /// No such backend, role or lease (for this caller).
    #[error("{0} does not exist")]
    NotFound(String),
    /// Conflicts with what exists.
    #[error("{0}")]
    Conflict(String),
    /// The backend failed; retry later.
    #[error("backend {backend}: {source}")]
    Backend {
        /// Backend name.
        backend: String,
        /// Why.
        #[source]
        source: BrokerError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The decision could not be audited; nothing was issued.
    #[error("the decision could not be audited")]
    Audit,
    /// The identity behind the lease has been revoked.
    #[error("revoked: {0}")]
    Revoked(String),
}

/// The caller's entry must grant `grant` (checked again at every renewal).
fn check_grant_of(caller: &Caller, grant: &str) -> Result<(), Refusal> {
    if caller.entry.grants.iter().any(|g| g == grant) {
        Ok(())
    } else {
        Err(Refusal::NotGranted(format!(
            "entry {} ({}) does not grant broker role {}",
            caller.entry.id,
            caller.entry.spiffe_id,
            grant.chars().take(128).collect::<String>()
        )))
    }
}

/// A backend as the admin API shows it (no secret).
#[derive(Debug, Clone, Serialize)]
pub struct BackendView {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// URL without password.
    pub url: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last root rotation (or creation).
    pub updated_at: i64,
}

impl From<&BrokerBackendRow> for BackendView {
    fn from(r: &BrokerBackendRow) -> Self {
        Self {
            name: r.name.clone(),
            kind: r.kind.clone(),
            url: r.url.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Who asks for a credential: an identity the server verified.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The identity's entry (as the registry has it now).
    pub entry: Arc<Entry>,
    /// Revocation keys of the identity, the token it presented and every
    /// actor acting for it.
    pub revocation_keys: Vec<RevocationKey>,
    /// `subject <- actor <- …`: who asks, for audit.
    pub chain: String,
}

impl Caller {
    fn owns(&self, lease: &LeaseRow) -> bool {
        lease.spiffe_id == self.entry.spiffe_id.to_string()
            && lease.tenant == self.entry.tenant.as_str()
    }
}

/// A credential with its lease, as answered to the caller.
#[derive(Debug)]
pub struct Issued {
    /// The lease.
    pub lease: LeaseRow,
    /// The credential (the password is only here).
    pub credential: Credential,
}

#[derive(Debug)]
struct LoadedBackend {
    row: BrokerBackendRow,
    broker: Arc<dyn Broker>,
    pg: Option<PostgresBroker>,
}

#[derive(Debug)]
struct LoadedRole {
    row: BrokerRoleRow,
    templates: RoleTemplates,
}

#[derive(Debug, Default)]
struct View {
    backends: HashMap<String, Arc<LoadedBackend>>,
    roles: HashMap<String, Arc<LoadedRole>>,
}

/// The broker: configuration view, lease operations, reaper.
#[derive(Debug)]
pub struct BrokerService {
    store: Arc<dyn Store>,
    keys: Arc<KeyManager>,
    clock: Arc<dyn Clock>,
    audience: String,
    /// The lease reaper's job lease (one replica at a time).
    reaper: crate::jobs::JobLease,
    view: ArcSwap<View>,
    seen: Mutex<Option<i64>>,
    reaping: Mutex<Option<Arc<RevocationSet>>>,
    wake: Notify,
}

impl BrokerService {
    /// Loads backends and roles.
    ///
    /// # Errors
    /// Store errors.
    pub async fn load(
        store: Arc<dyn Store>,
        keys: Arc<KeyManager>,
        clock: Arc<dyn Clock>,
        audience: String,
    ) -> Result<Self, StoreError> {
        let holder = crate::correlation::new_id();
        let reaper = crate::jobs::JobLease::new(
            "broker_reaper",
            &holder,
            CLAIM_SECS,
            store.clone(),
            clock.clone(),
        );
        let service = Self {
            store,
            keys,
            clock,
            audience,
            reaper,
            view: ArcSwap::from_pointee(View::default()),
            seen: Mutex::new(None),
            reaping: Mutex::new(None),
            wake: Notify::new(),
        };
        service.refresh().await?;
        Ok(service)
    }

    /// The audience a bearer JWT-SVID for `/broker/v1` must carry.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Wakes the reaper now (after a revocation).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits until [`Self::wake`] or `every`, whichever comes first.
    pub async fn sleep(&self, every: Duration) {
        let _ = tokio::time::timeout(every, self.wake.notified()).await;
    }

    /// Reloads backends and roles when they changed.
    ///
    /// # Errors
    /// Store errors; the previous view stays.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let mut seen = self.seen.lock().await;
        let generation = self.store.generation("broker").await?;
        if *seen == Some(generation) {
            return Ok(());
        }
        let old = self.view.load_full();
        let mut view = View::default();
        for row in self.store.list_broker_backends().await? {
            if let Some(same) = old
                .backends
                .get(&row.name)
                .filter(|b| b.row.sealed_secret == row.sealed_secret && b.row.url == row.url)
            {
                view.backends.insert(row.name.clone(), Arc::clone(same));
                continue;
            }
            match self.open_backend(&row) {
                Ok(b) => {
                    view.backends.insert(row.name.clone(), Arc::new(b));
                }
                Err(e) => {
                    tracing::error!(backend = %row.name, error = %e, "broker backend unusable; its credentials are refused");
                }
            }
        }
        for row in self.store.list_broker_roles().await? {
            let key = format!("{}/{}", row.backend, row.name);
            match templates(&row) {
                Ok(templates) => {
                    view.roles
                        .insert(key, Arc::new(LoadedRole { row, templates }));
                }
                Err(e) => {
                    tracing::error!(role = %key, error = %e, "stored broker role is unusable; it is refused");
                }
            }
        }
        for (name, b) in &old.backends {
            let replaced = view.backends.get(name).is_none_or(|n| !Arc::ptr_eq(n, b));
            if replaced {
                if let Some(pg) = &b.pg {
                    pg.close().await;
                }
            }
        }
        self.view.store(Arc::new(view));
        *seen = Some(generation);
        Ok(())
    }

    fn open_backend(&self, row: &BrokerBackendRow) -> Result<LoadedBackend, String> {
        if row.kind != "postgres" {
            return Err(format!("unknown backend kind {:?}", row.kind));
        }
        let secret = self
            .keys
            .kek()
            .open(&row.sealed_secret, &secret_aad(&row.name))
            .map_err(|e| e.to_string())?;
        let password = String::from_utf8(secret.to_vec()).map_err(|_| "secret is not UTF-8")?;
        let target = PostgresTarget {
            url: row.url.clone(),
            password: lanyard_broker::Secret::new(password),
        };
        let pg = PostgresBroker::new(&target, BACKEND_CONNECTIONS).map_err(|e| e.to_string())?;
        Ok(LoadedBackend {
            row: row.clone(),
            broker: Arc::new(pg.clone()),
            pg: Some(pg),
        })
    }

    /// Checks an entry's grant: well formed and naming an existing role.
    ///
    /// # Errors
    /// The operator message.
    pub fn check_grant(&self, grant: &str) -> Result<(), String> {
        let Some((backend, role)) = grant.split_once('/') else {
            return Err(format!(
                "grant {grant:?} must be backend/role, e.g. appdb/readonly"
            ));
        };
        if !valid_name(backend) || !valid_name(role) {
            return Err(format!(
                "grant {grant:?} must be backend/role, each lowercase letters, digits, _ or -"
            ));
        }
        if !self.view.load().roles.contains_key(grant) {
            return Err(format!(
                "broker role {grant} does not exist; add it with `lanyard broker role add {grant} …`"
            ));
        }
        Ok(())
    }

    /// Backends, by name.
    pub fn backends(&self) -> Vec<BackendView> {
        let view = self.view.load();
        let mut out: Vec<BackendView> = view
            .backends
            .values()
            .map(|b| BackendView::from(&b.row))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Roles, by backend and name.
    pub fn roles(&self) -> Vec<BrokerRoleRow> {
        let view = self.view.load();
        let mut out: Vec<BrokerRoleRow> = view.roles.values().map(|r| r.row.clone()).collect();
        out.sort_by(|a, b| (&a.backend, &a.name).cmp(&(&b.backend, &b.name)));
        out
    }

    /// Adds a PostgreSQL backend: logs in with `url` first (so a typo is
    /// refused now, not at the first request), then stores the URL without
    /// its password and the password sealed with the KEK.
    ///
    /// # Errors
    /// [`Refusal::BadRequest`] naming the problem, [`Refusal::Conflict`],
    /// [`Refusal::Backend`] if the login fails.
    pub async fn add_backend(
        &self,
        kind: &str,
        name: &str,
        url: &str,
        audit: AuditDraft,
    ) -> Result<BackendView, Refusal> {
        if kind != "postgres" {
            return Err(Refusal::BadRequest(format!(
                "backend kind {:?} is not supported; use postgres",
                kind.chars().take(32).collect::<String>()
            )));
        }
        if !valid_name(name) {
            return Err(Refusal::BadRequest(format!(
                "backend name {:?} must be 1-63 lowercase letters, digits, _ or -",
                name.chars().take(64).collect::<String>()
            )));
        }
        let target = PostgresTarget::parse(url).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        let pg = PostgresBroker::new(&target, 1).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        let checked = pg.check().await;
        pg.close().await;
        checked.map_err(|source| Refusal::Backend {
            backend: name.to_owned(),
            source,
        })?;
        let now = self.clock.unix_seconds();
        let row = BrokerBackendRow {
            name: name.to_owned(),
            kind: kind.to_owned(),
            url: target.url.clone(),
            sealed_secret: self.seal(name, &target.password)?,
            kek_fingerprint: self.keys.kek().fingerprint().to_owned(),
            created_at: now,
            updated_at: now,
        };
        self.store.create_broker_backend(row.clone(), audit).await?;
        self.refresh().await?;
        Ok(BackendView::from(&row))
    }

    /// Rotates a backend's admin password: a new generated password is set
    /// on the server and stored sealed; after this only Lanyard knows it. If
    /// storing fails, the previous password is put back.
    ///
    /// # Errors
    /// [`Refusal::NotFound`], [`Refusal::Backend`], [`Refusal::Store`].
    pub async fn rotate_root(&self, name: &str, audit: AuditDraft) -> Result<BackendView, Refusal> {
        self.refresh().await?;
        let backend = self
            .view
            .load()
            .backends
            .get(name)
            .cloned()
            .ok_or_else(|| Refusal::NotFound(format!("broker backend {name:?}")))?;
        let fail = |source| Refusal::Backend {
            backend: name.to_owned(),
            source,
        };
        let new = backend.broker.rotate_root().await.map_err(fail)?;
        let mut row = backend.row.clone();
        row.sealed_secret = self.seal(name, &new)?;
        row.kek_fingerprint = self.keys.kek().fingerprint().to_owned();
        row.updated_at = self.clock.unix_seconds();
        if let Err(e) = self.store.update_broker_backend(row.clone(), audit).await {
            let old = self
                .keys
                .kek()
                .open(&backend.row.sealed_secret, &secret_aad(name))
                .ok()
                .and_then(|p| String::from_utf8(p.to_vec()).ok())
                .map(lanyard_broker::Secret::new);
            match old {
                Some(old) => {
                    if let Err(re) = backend.broker.restore_root(&old).await {
                        tracing::error!(backend = %name, error = %re, "root rotation could not be stored nor undone; set the admin password by hand and re-add the backend");
                    }
                }
                None => {
                    tracing::error!(backend = %name, "root rotation could not be stored and the old password is unreadable")
                }
            }
            return Err(e.into());
        }
        self.refresh().await?;
        Ok(BackendView::from(&row))
    }

    /// Adds a role under a backend; templates are checked first.
    ///
    /// # Errors
    /// [`Refusal::BadRequest`] naming the template problem, [`Refusal::NotFound`]
    /// (backend), [`Refusal::Conflict`].
    pub async fn add_role(&self, row: BrokerRoleRow, audit: AuditDraft) -> Result<(), Refusal> {
        if !valid_name(&row.backend) || !valid_name(&row.name) {
            return Err(Refusal::BadRequest(
                "role must be backend/role, each 1-63 lowercase letters, digits, _ or -".into(),
            ));
        }
        templates(&row).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        let max = i64::try_from(MAX_LEASE_TTL.as_secs()).unwrap_or(i64::MAX);
        if row.ttl_secs <= 0 || row.max_ttl_secs <= 0 || row.max_ttl_secs > max {
            return Err(Refusal::BadRequest(format!(
                "ttl and max_ttl must be above zero and max_ttl at most {}s",
                MAX_LEASE_TTL.as_secs()
            )));
        }
        if row.ttl_secs > row.max_ttl_secs {
            return Err(Refusal::BadRequest("ttl must not exceed max_ttl".into()));
        }
        self.store.create_broker_role(row, audit).await?;
        self.refresh().await?;
        Ok(())
    }

    fn seal(&self, name: &str, secret: &lanyard_broker::Secret) -> Result<Vec<u8>, Refusal> {
        self.keys
            .kek()
            .seal(secret.expose().as_bytes(), &secret_aad(name))
            .map_err(|e| {
                tracing::error!(error = %e, "sealing a broker secret failed");
                Refusal::Audit
            })
    }

    /// Issues a credential for `grant` to `caller` and records its lease.
    ///
    /// # Errors
    /// [`Refusal::NotGranted`], [`Refusal::NotFound`], [`Refusal::Backend`],
    /// [`Refusal::Store`].
    pub async fn issue(
        &self,
        caller: &Caller,
        grant: &str,
        ttl: Option<Duration>,
        correlation_id: &str,
    ) -> Result<Issued, Refusal> {
        check_grant_of(caller, grant)?;
        let mut view = self.view.load_full();
        if !view.roles.contains_key(grant) {
            // Added on another replica since this one last looked: read
            // through once (only for a grant the caller's entry holds).
            self.refresh().await.map_err(Refusal::Store)?;
            view = self.view.load_full();
        }
        let role = view
            .roles
            .get(grant)
            .cloned()
            .ok_or_else(|| Refusal::NotFound(format!("broker role {grant}")))?;
        let backend = view
            .backends
            .get(&role.row.backend)
            .cloned()
            .ok_or_else(|| Refusal::NotFound(format!("broker backend {}", role.row.backend)))?;
        let now = self.clock.unix_seconds();
        let asked = ttl.map_or(role.row.ttl_secs, |t| {
            i64::try_from(t.as_secs()).unwrap_or(i64::MAX)
        });
        if asked <= 0 {
            return Err(Refusal::BadRequest("ttl must be above zero".into()));
        }
        let max_expires_at = now.saturating_add(role.row.max_ttl_secs);
        let expires_at = now.saturating_add(asked).min(max_expires_at);
        // Write-ahead: the lease exists (as a pending revocation) before
        // the login does, so a crash between the two leaves a lease the
        // reaper finishes by dropping the login, never a login without one.
        let username =
            lanyard_broker::generate::username(&role.templates.role).map_err(|source| {
                Refusal::Backend {
                    backend: backend.row.name.clone(),
                    source,
                }
            })?;
        let mut lease = LeaseRow {
            id: crate::correlation::new_id(),
            backend: role.row.backend.clone(),
            role: role.row.name.clone(),
            tenant: caller.entry.tenant.to_string(),
            spiffe_id: caller.entry.spiffe_id.to_string(),
            entry_id: caller.entry.id.clone(),
            username: username.clone(),
            revocation_keys: caller.revocation_keys.clone(),
            correlation_id: correlation_id.to_owned(),
            state: LeaseState::Revoking,
            created_at: now,
            expires_at,
            max_expires_at,
            attempts: 0,
            next_attempt_at: now.saturating_add(PENDING_GRACE),
            last_error: String::new(),
            revoke_reason: "issuing (dropped unless the issuance completes)".into(),
            revoked_at: None,
        };
        let pending = self.lease_audit(
            &lease,
            "lease.pending",
            Decision::Allow,
            format!("creating {grant} user {username} for {}", caller.chain),
        );
        self.store.create_lease(lease.clone(), pending).await?;
        let credential = match backend
            .broker
            .issue_as(&role.templates, &username, expires_at)
            .await
        {
            Ok(c) => c,
            Err(source) => {
                // Whatever the backend did, the reaper removes it now.
                lease.next_attempt_at = now;
                lease.revoke_reason = "issuance failed".into();
                if let Err(e) = self.store.update_lease(lease.clone(), Vec::new()).await {
                    tracing::warn!(lease = %lease.id, error = %e, "could not hand a failed issuance to the reaper; it takes it at the grace period");
                }
                return Err(Refusal::Backend {
                    backend: backend.row.name.clone(),
                    source,
                });
            }
        };
        lease.state = LeaseState::Active;
        lease.next_attempt_at = 0;
        lease.revoke_reason.clear();
        let draft = self.lease_audit(
            &lease,
            "lease.create",
            Decision::Allow,
            format!(
                "issued {grant} user {} until {expires_at} (max {max_expires_at}) for {}",
                lease.username, caller.chain
            ),
        );
        if let Err(e) = self.store.update_lease(lease.clone(), vec![draft]).await {
            // No lease, no credential: take it back at once (the pending
            // lease stays with the reaper if this fails too).
            if let Err(re) = backend
                .broker
                .revoke(&role.templates, &credential.username)
                .await
            {
                tracing::error!(user = %credential.username, error = %re, "credential without an active lease could not be removed yet; the reaper drops it at the grace period");
            }
            return Err(e.into());
        }
        tracing::debug!(lease = %lease.id, role = %grant, spiffe_id = %lease.spiffe_id, "credential issued");
        Ok(Issued { lease, credential })
    }

    /// Extends a caller's lease by `increment` (default: the role's TTL),
    /// never past its max TTL.
    ///
    /// # Errors
    /// [`Refusal::NotFound`] (also for another identity's lease),
    /// [`Refusal::Revoked`] (checked first, also for a lease the reaper has
    /// already ended), [`Refusal::BadRequest`] (not active),
    /// [`Refusal::NotGranted`], [`Refusal::Backend`].
    ///
    /// # Security
    /// Renewal is a new decision: the caller's entry must still grant the
    /// lease's role, and no revocation key of the lease (the identity and
    /// the token it was issued to) may be revoked (issue 9).
    pub async fn renew(
        &self,
        caller: &Caller,
        id: &str,
        increment: Option<Duration>,
        request_id: &str,
        revocations: &RevocationSet,
    ) -> Result<LeaseRow, Refusal> {
        let mut lease = self.owned_lease(caller, id).await?;
        let now = self.clock.unix_seconds();
        // Revocation first: the reaper may already have moved a revoked
        // identity's lease to `revoking`, and the answer must not depend on
        // whether it got there before this request.
        revocations
            .check_keys(
                lease
                    .revocation_keys
                    .iter()
                    .map(|k| (k.kind, k.value.as_str())),
                now,
            )
            .map_err(|d| Refusal::Revoked(d.detail))?;
        if lease.state != LeaseState::Active || lease.expires_at <= now {
            return Err(Refusal::BadRequest(format!(
                "lease {id} is no longer active; request a new credential"
            )));
        }
        check_grant_of(caller, &format!("{}/{}", lease.backend, lease.role))?;
        let view = self.view.load_full();
        let grant = format!("{}/{}", lease.backend, lease.role);
        let role = view
            .roles
            .get(&grant)
            .cloned()
            .ok_or_else(|| Refusal::NotFound(format!("broker role {grant}")))?;
        let backend = view
            .backends
            .get(&lease.backend)
            .cloned()
            .ok_or_else(|| Refusal::NotFound(format!("broker backend {}", lease.backend)))?;
        let step = increment.map_or(role.row.ttl_secs, |d| {
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
        });
        let expires_at = now.saturating_add(step).min(lease.max_expires_at);
        if expires_at > lease.expires_at {
            backend
                .broker
                .extend(&lease.username, expires_at)
                .await
                .map_err(|source| Refusal::Backend {
                    backend: lease.backend.clone(),
                    source,
                })?;
            lease.expires_at = expires_at;
        }
        let draft = self.lease_audit(
            &lease,
            "lease.renew",
            Decision::Allow,
            format!(
                "renewed until {} (max {}); request {request_id}",
                lease.expires_at, lease.max_expires_at
            ),
        );
        self.store.update_lease(lease.clone(), vec![draft]).await?;
        Ok(lease)
    }

    /// Revokes a caller's own lease.
    ///
    /// # Errors
    /// [`Refusal::NotFound`] (also for another identity's lease), store errors.
    pub async fn revoke_own(
        &self,
        caller: &Caller,
        id: &str,
        request_id: &str,
    ) -> Result<LeaseRow, Refusal> {
        self.owned_lease(caller, id).await?;
        self.revoke(
            id,
            &format!("revoked by {}", caller.entry.spiffe_id),
            request_id,
        )
        .await
    }

    async fn owned_lease(&self, caller: &Caller, id: &str) -> Result<LeaseRow, Refusal> {
        match self.store.fetch_lease(id).await? {
            Some(l) if caller.owns(&l) => Ok(l),
            // Another identity's lease is answered like a missing one.
            _ => Err(Refusal::NotFound(format!(
                "lease {}",
                id.chars().take(64).collect::<String>()
            ))),
        }
    }

    /// Revokes lease `id` now: marks it `revoking` (audited) and asks the
    /// backend; if the backend fails, the reaper retries. Returns the lease
    /// as it stands.
    ///
    /// # Errors
    /// [`Refusal::NotFound`], store errors.
    pub async fn revoke(
        &self,
        id: &str,
        reason: &str,
        request_id: &str,
    ) -> Result<LeaseRow, Refusal> {
        let _one = self.reaping.lock().await;
        let lease = self.store.fetch_lease(id).await?.ok_or_else(|| {
            Refusal::NotFound(format!("lease {}", id.chars().take(64).collect::<String>()))
        })?;
        let lease = match lease.state {
            LeaseState::Revoked => return Ok(lease),
            LeaseState::Active => {
                self.start_revoking(lease, &format!("{reason}; request {request_id}"), None)
                    .await?
            }
            LeaseState::Revoking => lease,
        };
        Ok(self.attempt(lease, None).await?)
    }

    /// One reaper step: if this replica holds the reaper claim, moves
    /// expired leases and leases of revoked identities to `revoking`, then
    /// attempts every revocation that is due.
    ///
    /// # Errors
    /// Store errors (the next tick tries again).
    pub async fn tick(&self, registry: &Registry) -> Result<(), StoreError> {
        let mut last_revocations = self.reaping.lock().await;
        let now = self.clock.unix_seconds();
        if !self.reaper.claim().await? {
            return Ok(());
        }
        let job = &self.reaper;
        let expired = self
            .store
            .list_leases(LeaseQuery {
                state: Some(LeaseState::Active),
                expires_by: Some(now),
                limit: REAP_BATCH,
                ..LeaseQuery::default()
            })
            .await?;
        for lease in expired {
            self.start_revoking(lease, "expired", Some(job)).await?;
        }
        let revocations = registry.revocations();
        let changed = last_revocations
            .as_ref()
            .is_none_or(|seen| !Arc::ptr_eq(seen, &revocations));
        if changed && !revocations.is_empty() {
            let active = self
                .store
                .list_leases(LeaseQuery {
                    state: Some(LeaseState::Active),
                    limit: i64::MAX,
                    ..LeaseQuery::default()
                })
                .await?;
            for lease in active {
                let hit = revocations.check_keys(
                    lease
                        .revocation_keys
                        .iter()
                        .map(|k| (k.kind, k.value.as_str())),
                    now,
                );
                if let Err(d) = hit {
                    let reason = format!("identity revoked: {}", d.detail);
                    self.start_revoking(lease.clone(), &reason, Some(job))
                        .await?;
                }
            }
        }
        *last_revocations = Some(revocations);
        let due = self
            .store
            .list_leases(LeaseQuery {
                state: Some(LeaseState::Revoking),
                attempt_due_by: Some(now),
                limit: REAP_BATCH,
                ..LeaseQuery::default()
            })
            .await?;
        for lease in due {
            // Dropping a role is outside the store: only while the lease is
            // surely still ours (see crate::jobs).
            if !job.held() {
                break;
            }
            self.attempt(lease, Some(job)).await?;
        }
        Ok(())
    }

    async fn start_revoking(
        &self,
        mut lease: LeaseRow,
        reason: &str,
        job: Option<&crate::jobs::JobLease>,
    ) -> Result<LeaseRow, StoreError> {
        lease.state = LeaseState::Revoking;
        lease.revoke_reason = reason.chars().take(1024).collect();
        lease.next_attempt_at = self.clock.unix_seconds();
        let draft = self.lease_audit(
            &lease,
            "lease.revoke",
            Decision::Allow,
            format!("revoking user {}: {}", lease.username, lease.revoke_reason),
        );
        let fence = job.map(crate::jobs::JobLease::fence);
        self.store
            .update_lease_fenced(lease.clone(), vec![draft], fence.as_ref())
            .await?;
        Ok(lease)
    }

    /// One revocation attempt; on failure the lease stays `revoking` with
    /// its next attempt scheduled.
    async fn attempt(
        &self,
        mut lease: LeaseRow,
        job: Option<&crate::jobs::JobLease>,
    ) -> Result<LeaseRow, StoreError> {
        let view = self.view.load_full();
        let grant = format!("{}/{}", lease.backend, lease.role);
        let result = match (view.backends.get(&lease.backend), view.roles.get(&grant)) {
            (Some(b), Some(r)) => b
                .broker
                .revoke(&r.templates, &lease.username)
                .await
                .map_err(|e| e.to_string()),
            _ => Err(format!(
                "broker role {grant} is not configured on this replica"
            )),
        };
        let now = self.clock.unix_seconds();
        let fence = job.map(crate::jobs::JobLease::fence);
        let fence = fence.as_ref();
        match result {
            Ok(()) => {
                lease.state = LeaseState::Revoked;
                lease.revoked_at = Some(now);
                lease.last_error.clear();
                let draft = self.lease_audit(
                    &lease,
                    "lease.revoked",
                    Decision::Allow,
                    format!(
                        "user {} dropped after {} failed attempts: {}",
                        lease.username, lease.attempts, lease.revoke_reason
                    ),
                );
                self.store
                    .update_lease_fenced(lease.clone(), vec![draft], fence)
                    .await?;
                tracing::debug!(lease = %lease.id, "lease revoked");
            }
            Err(e) => {
                lease.attempts += 1;
                lease.next_attempt_at = now + backoff(lease.attempts);
                lease.last_error = e.chars().take(1024).collect();
                tracing::warn!(lease = %lease.id, backend = %lease.backend, attempts = lease.attempts, error = %lease.last_error, "lease revocation failed; will retry");
                self.store
                    .update_lease_fenced(lease.clone(), Vec::new(), fence)
                    .await?;
            }
        }
        Ok(lease)
    }

    fn lease_audit(
        &self,
        lease: &LeaseRow,
        action: &str,
        decision: Decision,
        reason: String,
    ) -> AuditDraft {
        AuditDraft {
            at_ms: crate::correlation::unix_millis(self.clock.now()),
            correlation_id: lease.correlation_id.clone(),
            actor: lease.spiffe_id.clone(),
            action: action.to_owned(),
            subject: format!("lease {} {}/{}", lease.id, lease.backend, lease.role),
            tenant: Some(lease.tenant.clone()),
            decision,
            reason,
            evidence_digest: None,
        }
    }
}

/// Re-seals every broker backend's admin secret from `old` to `new` (part of
/// `lanyard server rekey`), one audited update per backend. Backends already
/// under `new` are skipped, so a rerun after a partial failure finishes the job.
///
/// # Errors
/// The first backend whose secret `old` cannot open, or a store error.
pub async fn reseal_backends(
    store: &dyn Store,
    old: &lanyard_ca::Kek,
    new: &lanyard_ca::Kek,
    actor: &str,
    at_ms: i64,
    correlation_id: &str,
) -> Result<usize, crate::ServerError> {
    let mut n = 0;
    for mut row in store.list_broker_backends().await? {
        if row.kek_fingerprint == new.fingerprint() {
            continue;
        }
        let aad = secret_aad(&row.name);
        let plain = old.open(&row.sealed_secret, &aad)?;
        row.sealed_secret = new.seal(&plain, &aad)?;
        row.kek_fingerprint = new.fingerprint().to_owned();
        let draft = crate::rekey::event(
            actor,
            at_ms,
            correlation_id,
            "broker.backend.reseal",
            &row.name,
            old,
            new,
        );
        store.update_broker_backend(row, draft).await?;
        n += 1;
    }
    Ok(n)
}

fn secret_aad(name: &str) -> String {
    format!("broker-backend:{name}")
}

fn templates(row: &BrokerRoleRow) -> Result<RoleTemplates, BrokerError> {
    Ok(RoleTemplates {
        role: row.name.clone(),
        creation: Template::parse(&row.creation_sql, Use::Creation)?,
        revocation: if row.revocation_sql.trim().is_empty() {
            None
        } else {
            Some(Template::parse(&row.revocation_sql, Use::Revocation)?)
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), 2);
        assert_eq!(backoff(2), 4);
        assert_eq!(backoff(8), 256);
        assert_eq!(backoff(9), 300);
        assert_eq!(backoff(1000), 300);
        assert_eq!(backoff(-5), 2);
    }

    #[test]
    fn names() {
        for ok in ["appdb", "app-db_2", "0x"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "App", "-x", "a/b", "a b", &"a".repeat(64)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
