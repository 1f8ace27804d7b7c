//! The one SQL implementation of [`Store`], run on SQLite or PostgreSQL.
//!
//! The `on_pool!` macro expands each method body once per backend, so the
//! same statements are type-checked against both drivers. A transaction that
//! writes takes its serialisation point first (an `UPDATE` of `locks` or
//! `audit_head`): PostgreSQL queues writers on that row, and SQLite takes its
//! write lock up front instead of failing to upgrade a read lock later.

use futures_util::TryStreamExt as _;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::Row as _;

use lanyard_core::{
    AudienceProfile, Decision, Entry, Selector, SpiffeId, SubjectTemplate, TenantId,
};

use crate::audit::chain_hash;
use crate::changes::{ChangeKind, ChangeRecord};
use crate::{
    AdminTokenRow, AuditDraft, AuditEvent, AuditQuery, Backend, CaChange, CaPlanner, IssuerRow,
    JoinTokenRow, KeyChange, KeyPlanner, NodeRow, Revocation, SigningKeyRow, Store, StoreError,
    StoreFuture, Tenant, X509CaRow,
};

/// Rows per multi-row audit INSERT (12 parameters each; well under SQLite's
/// and PostgreSQL's parameter limits).
const AUDIT_ROWS_PER_INSERT: usize = 64;

#[derive(Debug)]
pub(crate) enum SqlStore {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

macro_rules! on_pool {
    ($self:ident, |$pool:ident| $body:expr) => {
        match $self {
            SqlStore::Sqlite($pool) => Box::pin(async move { $body }),
            SqlStore::Postgres($pool) => Box::pin(async move { $body }),
        }
    };
}

/// Inside transaction `$tx`: with a fence, refuses ([`StoreError::Fenced`])
/// unless its holder still holds the job, and keeps the job's row locked
/// until the commit (a claim by another replica waits for it).
macro_rules! check_fence {
    ($tx:ident, $fence:expr) => {{
        let fence: Option<&crate::Fence> = $fence;
        if let Some(f) = fence {
            let held = sqlx::query(
                "UPDATE job_leaders SET until = until WHERE name = $1 AND holder = $2 AND until > $3",
            )
            .bind(&f.job)
            .bind(&f.holder)
            .bind(f.now)
            .execute(&mut *$tx)
            .await?;
            if held.rows_affected() != 1 {
                return Err(StoreError::Fenced { job: f.job.clone() });
            }
        }
    }};
}

/// Appends `$drafts` (a non-empty `Vec<AuditDraft>`) to the audit chain
/// inside transaction `$tx`; evaluates to the events. Three statements
/// whatever the count: claim a range of sequence numbers (this also takes the
/// chain's lock), multi-row INSERTs, move the head hash.
macro_rules! append_audit_events {
    ($tx:ident, $drafts:expr) => {{
        let drafts: Vec<AuditDraft> = $drafts;
        let n = i64::try_from(drafts.len()).unwrap_or(i64::MAX);
        let head = sqlx::query("UPDATE audit_head SET seq = seq + $1 WHERE id = 1 RETURNING seq, hash")
            .bind(n)
            .fetch_one(&mut *$tx)
            .await?;
        let last_seq: i64 = head.try_get("seq")?;
        let mut prev: String = head.try_get("hash")?;
        let mut events = Vec::with_capacity(drafts.len());
        for (seq, draft) in (last_seq - n + 1..).zip(drafts) {
            let hash = chain_hash(&prev, seq, &draft);
            events.push(AuditEvent { seq, draft, prev_hash: std::mem::replace(&mut prev, hash.clone()), hash });
        }
        for chunk in events.chunks(AUDIT_ROWS_PER_INSERT) {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO audit_events (seq, at_ms, correlation_id, actor, action, subject, tenant, decision, reason, evidence_digest, prev_hash, hash) ",
            );
            insert.push_values(chunk, |mut row, e| {
                row.push_bind(e.seq)
                    .push_bind(e.draft.at_ms)
                    .push_bind(e.draft.correlation_id.clone())
                    .push_bind(e.draft.actor.clone())
                    .push_bind(e.draft.action.clone())
                    .push_bind(e.draft.subject.clone())
                    .push_bind(e.draft.tenant.clone())
                    .push_bind(e.draft.decision.as_str())
                    .push_bind(e.draft.reason.clone())
                    .push_bind(e.draft.evidence_digest.clone())
                    .push_bind(e.prev_hash.clone())
                    .push_bind(e.hash.clone());
            });
            insert.build().execute(&mut *$tx).await?;
        }
        sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1").bind(&prev).execute(&mut *$tx).await?;
        events
    }};
}

/// Appends one event inside `$tx`; evaluates to it.
macro_rules! append_audit {
    ($tx:ident, $draft:expr) => {{
        let mut events = append_audit_events!($tx, vec![$draft]);
        events.pop().ok_or(StoreError::Invalid {
            what: "audit append",
            detail: "no event returned".into(),
        })?
    }};
}

/// Reads every signing key through `$exec`; evaluates to `Result<Vec<SigningKeyRow>, StoreError>`.
const NODE_COLUMNS: &str = "id, spiffe_id, attestation, selectors, svid_serial, svid_serial_next, svid_expires_at, created_at, last_seen";

/// Builds a [`NodeRow`] from a row of [`NODE_COLUMNS`].
macro_rules! node_row {
    ($r:ident) => {{
        let selectors: String = $r.try_get("selectors")?;
        NodeRow {
            id: $r.try_get("id")?,
            spiffe_id: $r.try_get("spiffe_id")?,
            attestation: $r.try_get("attestation")?,
            selectors: serde_json::from_str(&selectors).map_err(|e| StoreError::Invalid {
                what: "node selectors",
                detail: e.to_string(),
            })?,
            svid_serial: $r.try_get("svid_serial")?,
            svid_serial_next: $r.try_get("svid_serial_next")?,
            svid_expires_at: $r.try_get("svid_expires_at")?,
            created_at: $r.try_get("created_at")?,
            last_seen: $r.try_get("last_seen")?,
        }
    }};
}

/// Appends `$changes` (a non-empty `Vec<ChangeRecord>`) to the change log
/// inside `$tx`: one `UPDATE` of the head (the log's lock: writers queue on
/// it, so revisions are gap-free and in commit order) and multi-row INSERTs.
/// Evaluates to the last revision.
macro_rules! log_changes {
    ($tx:ident, $changes:expr) => {{
        let changes: Vec<$crate::ChangeRecord> = $changes;
        let n = i64::try_from(changes.len()).unwrap_or(i64::MAX);
        let head = sqlx::query(
            "UPDATE change_head SET revision = revision + $1 WHERE id = 1 RETURNING revision",
        )
        .bind(n)
        .fetch_one(&mut *$tx)
        .await?;
        let last: i64 = head.try_get("revision")?;
        for (chunk_start, chunk) in (0..)
            .step_by(AUDIT_ROWS_PER_INSERT)
            .zip(changes.chunks(AUDIT_ROWS_PER_INSERT))
        {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO changes (revision, kind, key, old_parent, new_parent, deleted) ",
            );
            let first = last - n + 1 + chunk_start;
            insert.push_values(chunk.iter().zip(first..), |mut row, (c, rev)| {
                row.push_bind(rev)
                    .push_bind(c.kind.as_str())
                    .push_bind(c.key.clone())
                    .push_bind(c.old_parent.clone())
                    .push_bind(c.new_parent.clone())
                    .push_bind(c.deleted);
            });
            insert.build().execute(&mut *$tx).await?;
        }
        last
    }};
}

/// Inserts entry `$entry` (columns from `entry_cols`) inside `$tx`.
macro_rules! insert_entry {
    ($tx:ident, $entry:expr) => {{
        let entry: &Entry = $entry;
        let c = entry_cols(entry);
        sqlx::query(
            "INSERT INTO entries (id, tenant, spiffe_id, issuer, selectors, selector_key, audiences, ttl_secs, max_ttl_secs, scopes, may_act, admin, created_at, updated_at, parent, dns_names, role, grants, token_reviewer, federates_with) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $14, $15, $16, $17, $18, $19)",
        )
        .bind(&entry.id)
        .bind(entry.tenant.as_str())
        .bind(entry.spiffe_id.to_string())
        .bind(entry.issuer.as_deref().unwrap_or(""))
        .bind(&c.selectors)
        .bind(&c.selector_key)
        .bind(&c.audiences)
        .bind(c.ttl)
        .bind(c.max_ttl)
        .bind(&c.scopes)
        .bind(&c.may_act)
        .bind(entry.admin)
        .bind(entry.created_at)
        .bind(&c.parent)
        .bind(&c.dns_names)
        .bind(entry.role.as_deref())
        .bind(&c.grants)
        .bind(entry.token_reviewer)
        .bind(&c.federates_with)
        .execute(&mut *$tx)
        .await
        .map_err(|e| entry_conflict(e, entry))?;
    }};
}

/// Replaces entry `$entry` inside `$tx`; evaluates to its previous parent,
/// or returns [`StoreError::NotFound`].
macro_rules! replace_entry {
    ($tx:ident, $entry:expr, $updated_at:expr) => {{
        let entry: &Entry = $entry;
        let c = entry_cols(entry);
        let old = sqlx::query("SELECT parent FROM entries WHERE id = $1")
            .bind(&entry.id)
            .fetch_optional(&mut *$tx)
            .await?;
        let Some(old) = old else {
            return Err(StoreError::NotFound {
                what: format!("entry {}", entry.id),
            });
        };
        let old_parent: String = old.try_get("parent")?;
        sqlx::query(
            "UPDATE entries SET tenant = $2, spiffe_id = $3, issuer = $4, selectors = $5, selector_key = $6, audiences = $7, \
             ttl_secs = $8, max_ttl_secs = $9, scopes = $10, may_act = $11, admin = $12, updated_at = $13, parent = $14, dns_names = $15, role = $16, grants = $17, token_reviewer = $18, federates_with = $19 WHERE id = $1",
        )
        .bind(&entry.id)
        .bind(entry.tenant.as_str())
        .bind(entry.spiffe_id.to_string())
        .bind(entry.issuer.as_deref().unwrap_or(""))
        .bind(&c.selectors)
        .bind(&c.selector_key)
        .bind(&c.audiences)
        .bind(c.ttl)
        .bind(c.max_ttl)
        .bind(&c.scopes)
        .bind(&c.may_act)
        .bind(entry.admin)
        .bind($updated_at)
        .bind(&c.parent)
        .bind(&c.dns_names)
        .bind(entry.role.as_deref())
        .bind(&c.grants)
        .bind(entry.token_reviewer)
        .bind(&c.federates_with)
        .execute(&mut *$tx)
        .await
        .map_err(|e| entry_conflict(e, entry))?;
        old_parent
    }};
}

/// Deletes entry `$id` inside `$tx`; evaluates to its parent, or returns
/// [`StoreError::NotFound`].
macro_rules! remove_entry {
    ($tx:ident, $id:expr) => {{
        let id: &str = $id;
        let row = sqlx::query("DELETE FROM entries WHERE id = $1 RETURNING parent")
            .bind(id)
            .fetch_optional(&mut *$tx)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::InUse {
                    what: format!("entry {id} is still named by an audience profile; delete the profile first"),
                },
                _ => StoreError::Database(e),
            })?;
        let Some(row) = row else {
            return Err(StoreError::NotFound {
                what: format!("entry {id}"),
            });
        };
        let parent: String = row.try_get("parent")?;
        parent
    }};
}

/// Inside a transaction holding the entries lock: refuses `$entry` when
/// another entry gives its SPIFFE ID to another tenant (INV-9). The lock
/// serialises entry writers, so two tenants racing for one ID cannot both
/// pass.
macro_rules! one_tenant_per_spiffe_id {
    ($tx:ident, $entry:expr) => {{
        let e: &Entry = &$entry;
        let other = sqlx::query(
            "SELECT tenant FROM entries WHERE spiffe_id = $1 AND tenant <> $2 AND id <> $3 LIMIT 1",
        )
        .bind(e.spiffe_id.to_string())
        .bind(e.tenant.as_str())
        .bind(&e.id)
        .fetch_optional(&mut *$tx)
        .await?;
        if let Some(row) = other {
            let owner: String = row.try_get("tenant")?;
            return Err(StoreError::InUse {
                what: format!(
                    "{} belongs to tenant {owner}; a SPIFFE ID has exactly one tenant (relying parties match iss + sub only), so choose another ID for tenant {}",
                    e.spiffe_id, e.tenant
                ),
            });
        }
    }};
}

macro_rules! fetch_cas {
    ($exec:expr) => {{
        let rows = sqlx::query(
            "SELECT id, role, state, created_at, activate_at, retire_at, not_after, cert_der, sealed_private, kek_fingerprint \
             FROM x509_cas ORDER BY created_at, id",
        )
        .fetch_all($exec)
        .await?;
        rows.into_iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                Ok(X509CaRow {
                    id: r.try_get("id")?,
                    role: r.try_get("role")?,
                    state: state.parse().map_err(|detail| StoreError::Invalid { what: "CA state", detail })?,
                    created_at: r.try_get("created_at")?,
                    activate_at: r.try_get("activate_at")?,
                    retire_at: r.try_get("retire_at")?,
                    not_after: r.try_get("not_after")?,
                    cert_der: r.try_get("cert_der")?,
                    sealed_private: r.try_get("sealed_private")?,
                    kek_fingerprint: r.try_get("kek_fingerprint")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()
    }};
}

macro_rules! join_token_row {
    ($r:expr) => {{
        let r = $r;
        let selectors: String = r.try_get("selectors")?;
        JoinTokenRow {
            id: r.try_get("id")?,
            token_hash: r.try_get("token_hash")?,
            node_id: r.try_get("node_id")?,
            trust_domain: r.try_get("trust_domain")?,
            selectors: serde_json::from_str(&selectors).map_err(|e| StoreError::Invalid {
                what: "join token selectors",
                detail: e.to_string(),
            })?,
            created_at: r.try_get("created_at")?,
            expires_at: r.try_get("expires_at")?,
            used_at: r.try_get("used_at")?,
            created_by: r.try_get("created_by")?,
        }
    }};
}

const JOIN_TOKEN_COLUMNS: &str =
    "id, token_hash, node_id, trust_domain, selectors, created_at, expires_at, used_at, created_by";

macro_rules! fetch_keys {
    ($exec:expr) => {{
        let rows = sqlx::query(
            "SELECT kid, alg, state, created_at, activate_at, retire_at, sealed_private, kek_fingerprint \
             FROM signing_keys ORDER BY created_at, kid",
        )
        .fetch_all($exec)
        .await?;
        rows.into_iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                Ok(SigningKeyRow {
                    kid: r.try_get("kid")?,
                    alg: r.try_get("alg")?,
                    state: state.parse().map_err(|detail| StoreError::Invalid { what: "key state", detail })?,
                    created_at: r.try_get("created_at")?,
                    activate_at: r.try_get("activate_at")?,
                    retire_at: r.try_get("retire_at")?,
                    sealed_private: r.try_get("sealed_private")?,
                    kek_fingerprint: r.try_get("kek_fingerprint")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()
    }};
}

/// Deletes one row by key under a generation lock, with its audit event;
/// `NotFound` when there was none.
macro_rules! delete_audited {
    ($pool:ident, $lock:literal, $sql:literal, $key:expr, $what:expr, $audit:expr) => {{
        delete_audited!($pool, $lock, $sql, $key, $what, $audit, None::<ChangeKind>)
    }};
    ($pool:ident, $lock:literal, $sql:literal, $key:expr, $what:expr, $audit:expr, $change:expr) => {{
        let mut tx = $pool.begin().await?;
        sqlx::query(concat!(
            "UPDATE locks SET n = n + 1 WHERE name = '",
            $lock,
            "'"
        ))
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query($sql)
            .bind($key)
            .execute(&mut *tx)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::InUse {
                    what: format!("{} is still named by an audience profile; delete the profile first", $what),
                },
                _ => StoreError::Database(e),
            })?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { what: $what });
        }
        if let Some(kind) = $change {
            log_changes!(tx, vec![ChangeRecord::of(kind, $key)]);
        }
        append_audit!(tx, $audit);
        tx.commit().await?;
        Ok(())
    }};
}

/// Reads one audit row; evaluates to `Result<AuditEvent, StoreError>`.
macro_rules! audit_row {
    ($r:expr) => {{
        let r = $r;
        let decision: String = r.try_get("decision")?;
        Ok::<_, StoreError>(AuditEvent {
            seq: r.try_get("seq")?,
            draft: AuditDraft {
                at_ms: r.try_get("at_ms")?,
                correlation_id: r.try_get("correlation_id")?,
                actor: r.try_get("actor")?,
                action: r.try_get("action")?,
                subject: r.try_get("subject")?,
                tenant: r.try_get("tenant")?,
                decision: decision_from(&decision)?,
                reason: r.try_get("reason")?,
                evidence_digest: r.try_get("evidence_digest")?,
            },
            prev_hash: r.try_get("prev_hash")?,
            hash: r.try_get("hash")?,
        })
    }};
}

/// Reads one entry row; evaluates to `Result<Entry, StoreError>`.
macro_rules! entry_row {
    ($r:expr) => {{
        let r = $r;
        RawEntry {
            id: r.try_get("id")?,
            tenant: r.try_get("tenant")?,
            spiffe_id: r.try_get("spiffe_id")?,
            issuer: r.try_get("issuer")?,
            parent: r.try_get("parent")?,
            dns_names: r.try_get("dns_names")?,
            selectors: r.try_get("selectors")?,
            audiences: r.try_get("audiences")?,
            ttl_secs: r.try_get("ttl_secs")?,
            max_ttl_secs: r.try_get("max_ttl_secs")?,
            scopes: r.try_get("scopes")?,
            may_act: r.try_get("may_act")?,
            admin: r.try_get("admin")?,
            token_reviewer: r.try_get("token_reviewer")?,
            grants: r.try_get("grants")?,
            federates_with: r.try_get("federates_with")?,
            role: r.try_get("role")?,
            created_at: r.try_get("created_at")?,
        }
        .into_entry()
    }};
}

const ENTRY_COLUMNS: &str =
    "id, tenant, spiffe_id, issuer, parent, dns_names, selectors, audiences, ttl_secs, max_ttl_secs, scopes, may_act, admin, token_reviewer, role, grants, federates_with, created_at";

struct RawEntry {
    id: String,
    tenant: String,
    spiffe_id: String,
    issuer: String,
    parent: String,
    dns_names: String,
    selectors: String,
    audiences: String,
    ttl_secs: Option<i64>,
    max_ttl_secs: Option<i64>,
    scopes: String,
    may_act: String,
    admin: bool,
    token_reviewer: bool,
    grants: String,
    federates_with: String,
    role: Option<String>,
    created_at: i64,
}

impl RawEntry {
    fn into_entry(self) -> Result<Entry, StoreError> {
        let invalid = |what: &'static str| move |e: String| StoreError::Invalid { what, detail: e };
        let list = |what: &'static str, text: &str| -> Result<Vec<String>, StoreError> {
            serde_json::from_str(text).map_err(|e| invalid(what)(e.to_string()))
        };
        let secs = |v: Option<i64>| {
            v.map(|s| std::time::Duration::from_secs(u64::try_from(s).unwrap_or(0)))
        };
        let selectors = list("entry selectors", &self.selectors)?
            .iter()
            .map(|s| Selector::parse(s).map_err(|e| invalid("entry selector")(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Entry {
            spiffe_id: SpiffeId::parse(&self.spiffe_id)
                .map_err(|e| invalid("entry SPIFFE ID")(e.to_string()))?,
            tenant: TenantId::parse(&self.tenant)
                .map_err(|e| invalid("entry tenant")(e.to_string()))?,
            issuer: (!self.issuer.is_empty()).then_some(self.issuer),
            parent: if self.parent.is_empty() {
                None
            } else {
                Some(
                    SpiffeId::parse(&self.parent)
                        .map_err(|e| invalid("entry parent")(e.to_string()))?,
                )
            },
            dns_names: list("entry dns_names", &self.dns_names)?,
            selectors,
            audiences: list("entry audiences", &self.audiences)?,
            ttl: secs(self.ttl_secs),
            max_ttl: secs(self.max_ttl_secs),
            scopes: list("entry scopes", &self.scopes)?,
            may_act: list("entry may_act", &self.may_act)?,
            admin: self.admin,
            token_reviewer: self.token_reviewer,
            grants: list("entry grants", &self.grants)?,
            role: self.role,
            federates_with: list("entry federates_with", &self.federates_with)?,
            created_at: self.created_at,
            id: self.id,
        })
    }
}

/// Column values for an entry, in [`ENTRY_COLUMNS`] order (plus selector_key).
struct EntryCols {
    selectors: String,
    selector_key: String,
    audiences: String,
    scopes: String,
    may_act: String,
    grants: String,
    dns_names: String,
    federates_with: String,
    parent: String,
    ttl: Option<i64>,
    max_ttl: Option<i64>,
}

fn entry_cols(e: &Entry) -> EntryCols {
    let strings: Vec<String> = e.selectors.iter().map(ToString::to_string).collect();
    let json = |v: &[String]| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
    let secs =
        |d: Option<std::time::Duration>| d.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    EntryCols {
        selector_key: strings.join("\n"),
        selectors: json(&strings),
        audiences: json(&e.audiences),
        scopes: json(&e.scopes),
        may_act: json(&e.may_act),
        grants: json(&e.grants),
        dns_names: json(&e.dns_names),
        federates_with: json(&e.federates_with),
        parent: e
            .parent
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        ttl: secs(e.ttl),
        max_ttl: secs(e.max_ttl),
    }
}

/// An entry's parent as the change log records it ('' = none).
fn parent_of(e: &Entry) -> String {
    e.parent
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default()
}

fn entry_conflict(e: sqlx::Error, entry: &Entry) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict {
            what: format!(
                "an entry with id {} or with the same issuer and selectors",
                entry.id
            ),
        },
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound {
            what: format!("tenant {:?}", entry.tenant.as_str()),
        },
        _ => StoreError::Database(e),
    }
}

fn conflict(e: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict { what: what() }
        }
        _ => StoreError::Database(e),
    }
}

fn tenant_from(id: String, description: String, created_at: i64) -> Result<Tenant, StoreError> {
    let id = TenantId::parse(&id).map_err(|e| StoreError::Invalid {
        what: "tenant id",
        detail: e.to_string(),
    })?;
    Ok(Tenant {
        id,
        description,
        created_at,
    })
}

fn decision_from(s: &str) -> Result<Decision, StoreError> {
    match s {
        "allow" => Ok(Decision::Allow),
        "deny" => Ok(Decision::Deny),
        other => Err(StoreError::Invalid {
            what: "audit decision",
            detail: format!("{other:?}"),
        }),
    }
}

impl Store for SqlStore {
    fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(_) => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        on_pool!(self, |pool| {
            sqlx::query("SELECT 1").execute(pool).await?;
            Ok(())
        })
    }

    fn create_tenant(&self, tenant: Tenant, audit: AuditDraft) -> StoreFuture<'_, Tenant> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("INSERT INTO tenants (id, description, created_at) VALUES ($1, $2, $3)")
                .bind(tenant.id.as_str())
                .bind(&tenant.description)
                .bind(tenant.created_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| conflict(e, || format!("tenant {:?}", tenant.id.as_str())))?;
            append_audit!(tx, audit);
            tx.commit().await?;
            Ok(tenant)
        })
    }

    fn list_tenants(&self) -> StoreFuture<'_, Vec<Tenant>> {
        on_pool!(self, |pool| {
            let rows = sqlx::query("SELECT id, description, created_at FROM tenants ORDER BY id")
                .fetch_all(pool)
                .await?;
            rows.into_iter()
                .map(|r| {
                    tenant_from(
                        r.try_get("id")?,
                        r.try_get("description")?,
                        r.try_get("created_at")?,
                    )
                })
                .collect()
        })
    }

    fn fetch_tenant<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Tenant>> {
        on_pool!(self, |pool| {
            let row = sqlx::query("SELECT id, description, created_at FROM tenants WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?;
            row.map(|r| {
                tenant_from(
                    r.try_get("id")?,
                    r.try_get("description")?,
                    r.try_get("created_at")?,
                )
            })
            .transpose()
        })
    }

    fn delete_tenant<'a>(&'a self, id: &'a str, audit: AuditDraft) -> StoreFuture<'a, ()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let done = sqlx::query("DELETE FROM tenants WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(|e| match &e {
                    sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                        StoreError::InUse {
                            what: format!("tenant {id:?} still has entries or audience profiles; delete them first"),
                        }
                    }
                    _ => StoreError::Database(e),
                })?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound {
                    what: format!("tenant {id:?}"),
                });
            }
            append_audit!(tx, audit);
            tx.commit().await?;
            Ok(())
        })
    }

    fn list_signing_keys(&self) -> StoreFuture<'_, Vec<SigningKeyRow>> {
        on_pool!(self, |pool| fetch_keys!(pool))
    }

    fn update_signing_keys_fenced<'a>(
        &'a self,
        planner: KeyPlanner<'a>,
        fence: Option<&'a crate::Fence>,
    ) -> StoreFuture<'a, Vec<KeyChange>> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            check_fence!(tx, fence);
            // A write first, to take the lock; the counter moves only on change.
            sqlx::query("UPDATE locks SET n = n WHERE name = 'signing_keys'")
                .execute(&mut *tx)
                .await?;
            let current = fetch_keys!(&mut *tx)?;
            let (changes, audits) = planner(&current).map_err(StoreError::Planner)?;
            for change in &changes {
                match change {
                    KeyChange::Insert(k) => {
                        sqlx::query(
                            "INSERT INTO signing_keys (kid, alg, state, created_at, activate_at, retire_at, sealed_private, kek_fingerprint) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        )
                        .bind(&k.kid)
                        .bind(&k.alg)
                        .bind(k.state.as_str())
                        .bind(k.created_at)
                        .bind(k.activate_at)
                        .bind(k.retire_at)
                        .bind(&k.sealed_private)
                        .bind(&k.kek_fingerprint)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| conflict(e, || format!("signing key {}", k.kid)))?;
                    }
                    KeyChange::SetState {
                        kid,
                        state,
                        retire_at,
                    } => {
                        sqlx::query(
                            "UPDATE signing_keys SET state = $1, retire_at = $2 WHERE kid = $3",
                        )
                        .bind(state.as_str())
                        .bind(*retire_at)
                        .bind(kid)
                        .execute(&mut *tx)
                        .await?;
                    }
                    KeyChange::Reseal {
                        kid,
                        sealed_private,
                        kek_fingerprint,
                    } => {
                        sqlx::query("UPDATE signing_keys SET sealed_private = $1, kek_fingerprint = $2 WHERE kid = $3")
                            .bind(sealed_private)
                            .bind(kek_fingerprint)
                            .bind(kid)
                            .execute(&mut *tx)
                            .await?;
                    }
                    KeyChange::SetActivation { kid, activate_at } => {
                        sqlx::query("UPDATE signing_keys SET activate_at = $1 WHERE kid = $2")
                            .bind(*activate_at)
                            .bind(kid)
                            .execute(&mut *tx)
                            .await?;
                    }
                    KeyChange::Delete { kid } => {
                        sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
                            .bind(kid)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
            if !changes.is_empty() {
                sqlx::query("UPDATE locks SET n = n + 1 WHERE name = 'signing_keys'")
                    .execute(&mut *tx)
                    .await?;
                log_changes!(tx, vec![ChangeRecord::of(ChangeKind::Keys, "signing_keys")]);
            }
            for audit in audits {
                append_audit!(tx, audit);
            }
            tx.commit().await?;
            Ok(changes)
        })
    }

    fn signing_keys_generation(&self) -> StoreFuture<'_, i64> {
        on_pool!(self, |pool| {
            let row = sqlx::query("SELECT n FROM locks WHERE name = 'signing_keys'")
                .fetch_one(pool)
                .await?;
            Ok(row.try_get("n")?)
        })
    }

    fn list_x509_cas(&self) -> StoreFuture<'_, Vec<X509CaRow>> {
        on_pool!(self, |pool| fetch_cas!(pool))
    }

    fn update_x509_cas_fenced<'a>(
        &'a self,
        planner: CaPlanner<'a>,
        fence: Option<&'a crate::Fence>,
    ) -> StoreFuture<'a, Vec<CaChange>> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            check_fence!(tx, fence);
            sqlx::query("UPDATE locks SET n = n WHERE name = 'x509_cas'")
                .execute(&mut *tx)
                .await?;
            let current = fetch_cas!(&mut *tx)?;
            let (changes, audits) = planner(&current).map_err(StoreError::Planner)?;
            for change in &changes {
                match change {
                    CaChange::Insert(c) => {
                        sqlx::query(
                            "INSERT INTO x509_cas (id, role, state, created_at, activate_at, retire_at, not_after, cert_der, sealed_private, kek_fingerprint) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                        )
                        .bind(&c.id)
                        .bind(&c.role)
                        .bind(c.state.as_str())
                        .bind(c.created_at)
                        .bind(c.activate_at)
                        .bind(c.retire_at)
                        .bind(c.not_after)
                        .bind(&c.cert_der)
                        .bind(&c.sealed_private)
                        .bind(&c.kek_fingerprint)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| conflict(e, || format!("X.509 CA {}", c.id)))?;
                    }
                    CaChange::SetState {
                        id,
                        state,
                        retire_at,
                    } => {
                        sqlx::query("UPDATE x509_cas SET state = $1, retire_at = $2 WHERE id = $3")
                            .bind(state.as_str())
                            .bind(*retire_at)
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    CaChange::SetActivation { id, activate_at } => {
                        sqlx::query("UPDATE x509_cas SET activate_at = $1 WHERE id = $2")
                            .bind(*activate_at)
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    CaChange::Reseal {
                        id,
                        sealed_private,
                        kek_fingerprint,
                    } => {
                        sqlx::query("UPDATE x509_cas SET sealed_private = $1, kek_fingerprint = $2 WHERE id = $3")
                            .bind(sealed_private)
                            .bind(kek_fingerprint)
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    CaChange::Delete { id } => {
                        sqlx::query("DELETE FROM x509_cas WHERE id = $1")
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
            if !changes.is_empty() {
                sqlx::query("UPDATE locks SET n = n + 1 WHERE name = 'x509_cas'")
                    .execute(&mut *tx)
                    .await?;
                log_changes!(tx, vec![ChangeRecord::of(ChangeKind::Ca, "x509_cas")]);
            }
            if !audits.is_empty() {
                append_audit_events!(tx, audits);
            }
            tx.commit().await?;
            Ok(changes)
        })
    }

    fn create_join_token(&self, token: JoinTokenRow, audit: AuditDraft) -> StoreFuture<'_, ()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO join_tokens (id, token_hash, node_id, trust_domain, selectors, created_at, expires_at, used_at, created_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8)",
            )
            .bind(&token.id)
            .bind(&token.token_hash)
            .bind(&token.node_id)
            .bind(&token.trust_domain)
            .bind(serde_json::to_string(&token.selectors).unwrap_or_else(|_| "[]".into()))
            .bind(token.created_at)
            .bind(token.expires_at)
            .bind(&token.created_by)
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict(e, || format!("join token {}", token.id)))?;
            append_audit!(tx, audit);
            tx.commit().await?;
            Ok(())
        })
    }

    fn fetch_join_token<'a>(
        &'a self,
        token_hash: &'a str,
    ) -> StoreFuture<'a, Option<JoinTokenRow>> {
        on_pool!(self, |pool| {
            let sql = format!("SELECT {JOIN_TOKEN_COLUMNS} FROM join_tokens WHERE token_hash = $1");
            let row = sqlx::query(&sql)
                .bind(token_hash)
                .fetch_optional(pool)
                .await?;
            Ok(match row {
                Some(r) => Some(join_token_row!(r)),
                None => None,
            })
        })
    }

    fn consume_join_token<'a>(&'a self, token_hash: &'a str, now: i64) -> StoreFuture<'a, bool> {
        on_pool!(self, |pool| {
            let done = sqlx::query(
                "UPDATE join_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
            )
            .bind(token_hash)
            .bind(now)
            .execute(pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    fn list_join_tokens(&self) -> StoreFuture<'_, Vec<JoinTokenRow>> {
        on_pool!(self, |pool| {
            let sql = format!(
                "SELECT {JOIN_TOKEN_COLUMNS} FROM join_tokens ORDER BY created_at DESC, id"
            );
            let rows = sqlx::query(&sql).fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push(join_token_row!(r));
            }
            Ok(out)
        })
    }

    fn upsert_node(&self, node: NodeRow) -> StoreFuture<'_, ()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE locks SET n = n + 1 WHERE name = 'nodes'")
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO nodes (id, spiffe_id, attestation, selectors, svid_serial, svid_expires_at, created_at, last_seen, svid_serial_next) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (id) DO UPDATE SET attestation = $3, selectors = $4, svid_serial = $5, svid_expires_at = $6, last_seen = $8, svid_serial_next = $9",
            )
            .bind(&node.id)
            .bind(&node.spiffe_id)
            .bind(&node.attestation)
            .bind(serde_json::to_string(&node.selectors).unwrap_or_else(|_| "[]".into()))
            .bind(&node.svid_serial)
            .bind(node.svid_expires_at)
            .bind(node.created_at)
            .bind(node.last_seen)
            .bind(&node.svid_serial_next)
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict(e, || format!("node {}", node.id)))?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn fetch_node<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<NodeRow>> {
        on_pool!(self, |pool| {
            let sql = format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = $1");
            match sqlx::query(&sql).bind(id).fetch_optional(pool).await? {
                Some(r) => Ok(Some(node_row!(r))),
                None => Ok(None),
            }
        })
    }

    fn promote_node_serial<'a>(&'a self, id: &'a str, serial: &'a str) -> StoreFuture<'a, bool> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE locks SET n = n + 1 WHERE name = 'nodes'")
                .execute(&mut *tx)
                .await?;
            let done = sqlx::query(
                "UPDATE nodes SET svid_serial = svid_serial_next, svid_serial_next = '' \
                 WHERE id = $1 AND svid_serial_next = $2 AND svid_serial_next <> ''",
            )
            .bind(id)
            .bind(serial)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(done.rows_affected() == 1)
        })
    }

    fn list_nodes(&self) -> StoreFuture<'_, Vec<NodeRow>> {
        on_pool!(self, |pool| {
            let sql = format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY id");
            let rows = sqlx::query(&sql).fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push(node_row!(r));
            }
            Ok(out)
        })
    }

    fn create_admin_token(&self, token: AdminTokenRow, audit: AuditDraft) -> StoreFuture<'_, ()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("INSERT INTO admin_tokens (id, name, secret_hash, created_at) VALUES ($1, $2, $3, $4)")
                .bind(&token.id)
                .bind(&token.name)
                .bind(&token.secret_hash)
                .bind(token.created_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| conflict(e, || format!("admin token {}", token.id)))?;
            append_audit!(tx, audit);
            tx.commit().await?;
            Ok(())
        })
    }

    fn fetch_admin_token<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<AdminTokenRow>> {
        on_pool!(self, |pool| {
            let row = sqlx::query(
                "SELECT id, name, secret_hash, created_at FROM admin_tokens WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?;
            row.map(|r| {
                Ok(AdminTokenRow {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    secret_hash: r.try_get("secret_hash")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .transpose()
        })
    }

    fn count_admin_tokens(&self) -> StoreFuture<'_, i64> {
        on_pool!(self, |pool| {
            let row = sqlx::query("SELECT count(*) AS n FROM admin_tokens")
                .fetch_one(pool)
                .await?;
            Ok(row.try_get("n")?)
        })
    }

    fn append_audit(&self, draft: AuditDraft) -> StoreFuture<'_, AuditEvent> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let event = append_audit!(tx, draft);
            tx.commit().await?;
            Ok(event)
        })
    }

    fn list_audit(&self, after: i64, limit: i64) -> StoreFuture<'_, Vec<AuditEvent>> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT seq, at_ms, correlation_id, actor, action, subject, tenant, decision, reason, evidence_digest, prev_hash, hash \
                 FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            rows.into_iter().map(|r| audit_row!(r)).collect()
        })
    }

    fn create_issuer(&self, issuer: IssuerRow, audit: AuditDraft) -> StoreFuture<'_, ()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE locks SET n = n + 1 WHERE name = 'issuers'")
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO issuers (name, config, created_at, updated_at) VALUES ($1, $2, $3, $3)")
                .bind(&issuer.name)
                .bind(&issuer.config)
                .bind(issuer.created_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| conflict(e, || format!("issuer {:?}", issuer.name)))?;
            log_changes!(tx, vec![ChangeRecord::of(ChangeKind::Issuer, &issuer.name)]);
            append_audit!(tx, audit);
            tx.commit().await?;
            Ok(())
        })
    }

    fn list_issuers(&self) -> StoreFuture<'_, Vec<IssuerRow>> {
        on_pool!(self, |pool| {
            let rows = sqlx::query("SELECT name, config, created_at FROM issuers ORDER BY name")
                .fetch_all(pool)
                .await?;
            rows.into_iter()
                .map(|r| {
                    Ok(IssuerRow {
                        name: r.try_get("name")?,
                        config: r.try_get("config")?,
                        created_at: r.try_get("created_at")?,
                    })
                })
                .collect()
        })
    }

    fn delete_issuer<'a>(&'a self, name: &'a str, audit: AuditDraft) -> StoreFuture<'a, ()> {
        on_pool!(self, |pool| delete_audited!(
            pool,
            "issuers",
            "DELETE FROM issuers WHERE name = $1",
            name,
            format!("issuer {name:?}"),
            audit,
            Some(ChangeKind::Issuer)
        ))
    }

    fn create_entry(&self, entry: Entry, audit: AuditDraft) -> StoreFuture<'_, ()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE locks SET n = n + 1 WHERE name = 'entries'")
                .execute(&mut *tx)
                .await?;
            one_tenant_per_spiffe_id!(tx, entry);
            insert_entry!(tx, &entry);
            log_changes!(
                tx,
                vec![ChangeRecord::entry(
                    &entry.id,
                    "",
                    &parent_of(&entry),
                    false
                )]
            );
            append_audit!(tx, audit);
            tx.commit().await?;
            Ok(())
        })
    }

    fn update_entry(&self, entry: Entry, audit: AuditDraft) -> StoreFuture<'_, ()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE locks SET n = n + 1 WHERE name = 'entries'")
                .execute(&mut *tx)
                .await?;
            one_tenant_per_spiffe_id!(tx, entry);
            let old_parent = replace_entry!(tx, &entry, audit.at_ms / 1000);
            log_changes!(
                tx,
                vec![ChangeRecord::entry(
                    &entry.id,
                    &old_parent,
                    &parent_of(&entry),
                    false
                )]
            );
            append_audit!(tx, audit);
            tx.commit().await?;
            Ok(())
        })
    }

    fn list_entries(&self) -> StoreFuture<'_, Vec<Entry>> {
        on_pool!(self, |pool| {
            // Streamed: with 100,000 entries, holding every raw row and every
            // parsed entry at once would double the peak memory.
            let sql = format!("SELECT {ENTRY_COLUMNS} FROM entries ORDER BY created_at, id");
            let mut rows = sqlx::query(&sql).fetch(pool);
            let mut entries = Vec::new();
            while let Some(r) = rows.try_next().await? {
                entries.push(entry_row!(r)?);
            }
            Ok(entries)
        })
    }

    fn delete_entry<'a>(&'a self, id: &'a str, audit: AuditDraft) -> StoreFuture<'a, ()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE locks SET n = n + 1 WHERE name = 'entries'")
                .execute(&mut *tx)
                .await?;
            let parent = remove_entry!(tx, id);
            log_changes!(tx, vec![ChangeRecord::entry(id, &parent, "", true)]);
            append_audit!(tx, audit);
            tx.commit().await?;
            Ok(())
        })
    }

    fn create_revocation(&self, revocation: Revocation, audit: AuditDraft) -> StoreFuture<'_, ()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE locks SET n = n + 1 WHERE name = 'revocations'")
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO revocations (kind, value, reason, until, created_at, actor) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (kind, value) DO UPDATE SET reason = excluded.reason, until = excluded.until, \
                 created_at = excluded.created_at, actor = excluded.actor",
            )
            .bind(revocation.kind.as_str())
            .bind(&revocation.value)
            .bind(&revocation.reason)
            .bind(revocation.until)
            .bind(revocation.created_at)
            .bind(&revocation.actor)
            .execute(&mut *tx)
            .await?;
            log_changes!(
                tx,
                vec![ChangeRecord::of(
                    ChangeKind::Revocation,
                    revocation.kind.as_str()
                )]
            );
            append_audit!(tx, audit);
            tx.commit().await?;
            Ok(())
        })
    }

    fn list_revocations(&self, now: i64) -> StoreFuture<'_, Vec<Revocation>> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT kind, value, reason, until, created_at, actor FROM revocations \
                 WHERE until IS NULL OR until > $1 ORDER BY created_at, kind, value",
            )
            .bind(now)
            .fetch_all(pool)
            .await?;
            rows.into_iter()
                .map(|r| {
                    let kind: String = r.try_get("kind")?;
                    Ok(Revocation {
                        kind: kind.parse().map_err(
                            |e: lanyard_core::revocation::UnknownRevocationKind| {
                                StoreError::Invalid {
                                    what: "revocation kind",
                                    detail: e.to_string(),
                                }
                            },
                        )?,
                        value: r.try_get("value")?,
                        reason: r.try_get("reason")?,
                        until: r.try_get("until")?,
                        created_at: r.try_get("created_at")?,
                        actor: r.try_get("actor")?,
                    })
                })
                .collect()
        })
    }

    fn create_audience_profile(
        &self,
        profile: AudienceProfile,
        audit: AuditDraft,
    ) -> StoreFuture<'_, ()> {
        on_pool!(self, |pool| {
            let template = profile.subject_template.as_ref();
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE locks SET n = n + 1 WHERE name = 'audience_profiles'")
                .execute(&mut *tx)
                .await?;
            // Checked under the lock, so two replicas cannot race past it.
            if let Some(t) = template {
                let other = sqlx::query(
                    "SELECT id, subject_prefix FROM audience_profiles \
                     WHERE audience = $1 AND subject_prefix IS NOT NULL AND subject_prefix <> $2 LIMIT 1",
                )
                .bind(&profile.audience)
                .bind(t.tenant_prefix())
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(row) = other {
                    let id: String = row.try_get("id")?;
                    let prefix: String = row.try_get("subject_prefix")?;
                    return Err(StoreError::Conflict {
                        what: format!(
                            "a subject template for audience {:?} that puts {{tenant}} after {prefix:?} (profile {id}; all templates of one audience must share the text before {{tenant}}, so two tenants never share a subject)",
                            profile.audience
                        ),
                    });
                }
            }
            sqlx::query(
                "INSERT INTO audience_profiles (id, audience, tenant, entry_id, algorithm, subject_template, subject_prefix, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&profile.id)
            .bind(&profile.audience)
            .bind(profile.tenant.as_ref().map(TenantId::as_str))
            .bind(profile.entry.as_deref())
            .bind(profile.algorithm.as_deref())
            .bind(template.map(SubjectTemplate::as_str))
            .bind(template.map(SubjectTemplate::tenant_prefix))
            .bind(profile.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                conflict(e, || {
                    format!(
                        "an audience profile for {:?} and {}",
                        profile.audience,
                        profile.scope()
                    )
                })
            })?;
            log_changes!(tx, vec![ChangeRecord::of(ChangeKind::Profile, &profile.id)]);
            append_audit!(tx, audit);
            tx.commit().await?;
            Ok(())
        })
    }

    fn list_audience_profiles(&self) -> StoreFuture<'_, Vec<AudienceProfile>> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT id, audience, tenant, entry_id, algorithm, subject_template, created_at \
                 FROM audience_profiles ORDER BY created_at, id",
            )
            .fetch_all(pool)
            .await?;
            rows.into_iter()
                .map(|r| {
                    let invalid = |what: &'static str| {
                        move |e: String| StoreError::Invalid { what, detail: e }
                    };
                    let tenant: Option<String> = r.try_get("tenant")?;
                    let template: Option<String> = r.try_get("subject_template")?;
                    Ok(AudienceProfile {
                        id: r.try_get("id")?,
                        audience: r.try_get("audience")?,
                        tenant: tenant
                            .map(|t| TenantId::parse(&t))
                            .transpose()
                            .map_err(|e| invalid("profile tenant")(e.to_string()))?,
                        entry: r.try_get("entry_id")?,
                        algorithm: r.try_get("algorithm")?,
                        subject_template: template
                            .map(|t| SubjectTemplate::parse(&t))
                            .transpose()
                            .map_err(|e| invalid("profile subject template")(e.to_string()))?,
                        created_at: r.try_get("created_at")?,
                    })
                })
                .collect()
        })
    }

    fn delete_audience_profile<'a>(
        &'a self,
        id: &'a str,
        audit: AuditDraft,
    ) -> StoreFuture<'a, ()> {
        on_pool!(self, |pool| delete_audited!(
            pool,
            "audience_profiles",
            "DELETE FROM audience_profiles WHERE id = $1",
            id,
            format!("audience profile {id}"),
            audit,
            Some(ChangeKind::Profile)
        ))
    }

    fn generation<'a>(&'a self, name: &'a str) -> StoreFuture<'a, i64> {
        on_pool!(self, |pool| {
            let row = sqlx::query("SELECT n FROM locks WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await?;
            match row {
                Some(r) => Ok(r.try_get("n")?),
                None => Err(StoreError::NotFound {
                    what: format!("generation counter {name:?}"),
                }),
            }
        })
    }

    fn append_audit_batch(&self, drafts: Vec<AuditDraft>) -> StoreFuture<'_, Vec<AuditEvent>> {
        on_pool!(self, |pool| {
            if drafts.is_empty() {
                return Ok(Vec::new());
            }
            let mut tx = pool.begin().await?;
            let events = append_audit_events!(tx, drafts);
            tx.commit().await?;
            Ok(events)
        })
    }

    fn query_audit(&self, query: AuditQuery) -> StoreFuture<'_, Vec<AuditEvent>> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT seq, at_ms, correlation_id, actor, action, subject, tenant, decision, reason, evidence_digest, prev_hash, hash \
                 FROM audit_events WHERE seq > $1 AND at_ms >= $2 AND ($3 = '' OR correlation_id = $3) ORDER BY seq LIMIT $4",
            )
            .bind(query.after)
            .bind(query.since_ms.unwrap_or(i64::MIN))
            .bind(query.correlation_id.as_deref().unwrap_or(""))
            .bind(query.limit)
            .fetch_all(pool)
            .await?;
            rows.into_iter().map(|r| audit_row!(r)).collect()
        })
    }
}

mod audit;
mod broker;
mod changes;
mod federation;
