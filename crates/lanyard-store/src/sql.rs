//! The one SQL implementation of [`Store`], run on SQLite or PostgreSQL.
//!
//! The `on_pool!` macro expands each method body once per backend, so the
//! same statements are type-checked against both drivers. A transaction that
//! writes takes its serialisation point first (an `UPDATE` of `locks` or
//! `audit_head`): PostgreSQL queues writers on that row, and SQLite takes its
//! write lock up front instead of failing to upgrade a read lock later.

use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::Row as _;

use lanyard_core::{Decision, TenantId};

use crate::audit::chain_hash;
use crate::{
    AdminTokenRow, AuditDraft, AuditEvent, Backend, KeyChange, KeyPlanner, SigningKeyRow, Store,
    StoreError, StoreFuture, Tenant,
};

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

/// Appends `$draft` to the audit chain inside transaction `$tx`; evaluates to the event.
macro_rules! append_audit {
    ($tx:ident, $draft:expr) => {{
        let draft: AuditDraft = $draft;
        let head = sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash")
            .fetch_one(&mut *$tx)
            .await?;
        let seq: i64 = head.try_get("seq")?;
        let prev_hash: String = head.try_get("hash")?;
        let hash = chain_hash(&prev_hash, seq, &draft);
        sqlx::query(
            "INSERT INTO audit_events (seq, at_ms, correlation_id, actor, action, subject, tenant, decision, reason, evidence_digest, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(seq)
        .bind(draft.at_ms)
        .bind(&draft.correlation_id)
        .bind(&draft.actor)
        .bind(&draft.action)
        .bind(&draft.subject)
        .bind(&draft.tenant)
        .bind(draft.decision.as_str())
        .bind(&draft.reason)
        .bind(&draft.evidence_digest)
        .bind(&prev_hash)
        .bind(&hash)
        .execute(&mut *$tx)
        .await?;
        sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1").bind(&hash).execute(&mut *$tx).await?;
        AuditEvent { seq, draft, prev_hash, hash }
    }};
}

/// Reads every signing key through `$exec`; evaluates to `Result<Vec<SigningKeyRow>, StoreError>`.
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
                .await?;
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

    fn update_signing_keys<'a>(
        &'a self,
        planner: KeyPlanner<'a>,
    ) -> StoreFuture<'a, Vec<KeyChange>> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
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
            rows.into_iter()
                .map(|r| {
                    let decision: String = r.try_get("decision")?;
                    Ok(AuditEvent {
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
                })
                .collect()
        })
    }
}
