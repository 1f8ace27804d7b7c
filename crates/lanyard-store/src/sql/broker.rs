//! [`BrokerStore`] on the one SQL implementation.

use sqlx::Row as _;

use super::{conflict, SqlStore, AUDIT_ROWS_PER_INSERT};
use crate::audit::chain_hash;
use crate::{
    AuditDraft, AuditEvent, BrokerBackendRow, BrokerRoleRow, BrokerStore, LeaseQuery, LeaseRow,
    LeaseState, StoreError, StoreFuture,
};

const LEASE_COLUMNS: &str = "id, backend, role, tenant, spiffe_id, entry_id, username, revocation_keys, correlation_id, state, \
     created_at, expires_at, max_expires_at, attempts, next_attempt_at, last_error, revoke_reason, revoked_at";

/// Reads one lease row; evaluates to `Result<LeaseRow, StoreError>`.
macro_rules! lease_row {
    ($r:expr) => {{
        let r = $r;
        let state: String = r.try_get("state")?;
        let keys: String = r.try_get("revocation_keys")?;
        Ok::<_, StoreError>(LeaseRow {
            id: r.try_get("id")?,
            backend: r.try_get("backend")?,
            role: r.try_get("role")?,
            tenant: r.try_get("tenant")?,
            spiffe_id: r.try_get("spiffe_id")?,
            entry_id: r.try_get("entry_id")?,
            username: r.try_get("username")?,
            revocation_keys: serde_json::from_str(&keys).map_err(|e| StoreError::Invalid {
                what: "lease revocation keys",
                detail: e.to_string(),
            })?,
            correlation_id: r.try_get("correlation_id")?,
            state: LeaseState::parse(&state).map_err(|detail| StoreError::Invalid {
                what: "lease state",
                detail,
            })?,
            created_at: r.try_get("created_at")?,
            expires_at: r.try_get("expires_at")?,
            max_expires_at: r.try_get("max_expires_at")?,
            attempts: r.try_get("attempts")?,
            next_attempt_at: r.try_get("next_attempt_at")?,
            last_error: r.try_get("last_error")?,
            revoke_reason: r.try_get("revoke_reason")?,
            revoked_at: r.try_get("revoked_at")?,
        })
    }};
}

fn keys_json(lease: &LeaseRow) -> String {
    serde_json::to_string(&lease.revocation_keys).unwrap_or_else(|_| "[]".into())
}

impl BrokerStore for SqlStore {
    fn create_broker_backend(
        &self,
        row: BrokerBackendRow,
        audit: AuditDraft,
    ) -> StoreFuture<'_, ()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE locks SET n = n + 1 WHERE name = 'broker'")
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO broker_backends (name, kind, url, sealed_secret, kek_fingerprint, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&row.name)
            .bind(&row.kind)
            .bind(&row.url)
            .bind(&row.sealed_secret)
            .bind(&row.kek_fingerprint)
            .bind(row.created_at)
            .bind(row.updated_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict(e, || format!("broker backend {:?}", row.name)))?;
            append_audit!(tx, audit);
            tx.commit().await?;
            Ok(())
        })
    }

    fn update_broker_backend(
        &self,
        row: BrokerBackendRow,
        audit: AuditDraft,
    ) -> StoreFuture<'_, ()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE locks SET n = n + 1 WHERE name = 'broker'")
                .execute(&mut *tx)
                .await?;
            let done = sqlx::query(
                "UPDATE broker_backends SET url = $2, sealed_secret = $3, kek_fingerprint = $4, updated_at = $5 WHERE name = $1",
            )
            .bind(&row.name)
            .bind(&row.url)
            .bind(&row.sealed_secret)
            .bind(&row.kek_fingerprint)
            .bind(row.updated_at)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound {
                    what: format!("broker backend {:?}", row.name),
                });
            }
            append_audit!(tx, audit);
            tx.commit().await?;
            Ok(())
        })
    }

    fn list_broker_backends(&self) -> StoreFuture<'_, Vec<BrokerBackendRow>> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT name, kind, url, sealed_secret, kek_fingerprint, created_at, updated_at FROM broker_backends ORDER BY name",
            )
            .fetch_all(pool)
            .await?;
            rows.into_iter()
                .map(|r| {
                    Ok(BrokerBackendRow {
                        name: r.try_get("name")?,
                        kind: r.try_get("kind")?,
                        url: r.try_get("url")?,
                        sealed_secret: r.try_get("sealed_secret")?,
                        kek_fingerprint: r.try_get("kek_fingerprint")?,
                        created_at: r.try_get("created_at")?,
                        updated_at: r.try_get("updated_at")?,
                    })
                })
                .collect()
        })
    }

    fn create_broker_role(&self, row: BrokerRoleRow, audit: AuditDraft) -> StoreFuture<'_, ()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE locks SET n = n + 1 WHERE name = 'broker'")
                .execute(&mut *tx)
                .await?;
            let backend = sqlx::query("SELECT 1 FROM broker_backends WHERE name = $1")
                .bind(&row.backend)
                .fetch_optional(&mut *tx)
                .await?;
            if backend.is_none() {
                return Err(StoreError::NotFound {
                    what: format!("broker backend {:?}", row.backend),
                });
            }
            sqlx::query(
                "INSERT INTO broker_roles (backend, name, creation_sql, revocation_sql, ttl_secs, max_ttl_secs, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&row.backend)
            .bind(&row.name)
            .bind(&row.creation_sql)
            .bind(&row.revocation_sql)
            .bind(row.ttl_secs)
            .bind(row.max_ttl_secs)
            .bind(row.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict(e, || format!("broker role {}/{}", row.backend, row.name)))?;
            append_audit!(tx, audit);
            tx.commit().await?;
            Ok(())
        })
    }

    fn list_broker_roles(&self) -> StoreFuture<'_, Vec<BrokerRoleRow>> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT backend, name, creation_sql, revocation_sql, ttl_secs, max_ttl_secs, created_at \
                 FROM broker_roles ORDER BY backend, name",
            )
            .fetch_all(pool)
            .await?;
            rows.into_iter()
                .map(|r| {
                    Ok(BrokerRoleRow {
                        backend: r.try_get("backend")?,
                        name: r.try_get("name")?,
                        creation_sql: r.try_get("creation_sql")?,
                        revocation_sql: r.try_get("revocation_sql")?,
                        ttl_secs: r.try_get("ttl_secs")?,
                        max_ttl_secs: r.try_get("max_ttl_secs")?,
                        created_at: r.try_get("created_at")?,
                    })
                })
                .collect()
        })
    }

    fn create_lease(&self, lease: LeaseRow, audit: AuditDraft) -> StoreFuture<'_, ()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(&format!(
                "INSERT INTO leases ({LEASE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
            ))
            .bind(&lease.id)
            .bind(&lease.backend)
            .bind(&lease.role)
            .bind(&lease.tenant)
            .bind(&lease.spiffe_id)
            .bind(&lease.entry_id)
            .bind(&lease.username)
            .bind(keys_json(&lease))
            .bind(&lease.correlation_id)
            .bind(lease.state.as_str())
            .bind(lease.created_at)
            .bind(lease.expires_at)
            .bind(lease.max_expires_at)
            .bind(lease.attempts)
            .bind(lease.next_attempt_at)
            .bind(&lease.last_error)
            .bind(&lease.revoke_reason)
            .bind(lease.revoked_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict(e, || format!("lease {}", lease.id)))?;
            append_audit!(tx, audit);
            tx.commit().await?;
            Ok(())
        })
    }

    fn update_lease_fenced<'a>(
        &'a self,
        lease: LeaseRow,
        audit: Vec<AuditDraft>,
        fence: Option<&'a crate::Fence>,
    ) -> StoreFuture<'a, ()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            check_fence!(tx, fence);
            let done = sqlx::query(
                "UPDATE leases SET state = $2, expires_at = $3, attempts = $4, next_attempt_at = $5, last_error = $6, \
                 revoke_reason = $7, revoked_at = $8 WHERE id = $1",
            )
            .bind(&lease.id)
            .bind(lease.state.as_str())
            .bind(lease.expires_at)
            .bind(lease.attempts)
            .bind(lease.next_attempt_at)
            .bind(&lease.last_error)
            .bind(&lease.revoke_reason)
            .bind(lease.revoked_at)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound {
                    what: format!("lease {}", lease.id),
                });
            }
            if !audit.is_empty() {
                append_audit_events!(tx, audit);
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn fetch_lease<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<LeaseRow>> {
        on_pool!(self, |pool| {
            let row = sqlx::query(&format!("SELECT {LEASE_COLUMNS} FROM leases WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?;
            row.map(|r| lease_row!(r)).transpose()
        })
    }

    fn list_leases(&self, query: LeaseQuery) -> StoreFuture<'_, Vec<LeaseRow>> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(&format!(
                "SELECT {LEASE_COLUMNS} FROM leases WHERE ($1 = '' OR state = $1) AND expires_at <= $2 \
                 AND next_attempt_at <= $3 AND ($4 = '' OR tenant = $4) ORDER BY created_at, id LIMIT $5"
            ))
            .bind(query.state.map(LeaseState::as_str).unwrap_or(""))
            .bind(query.expires_by.unwrap_or(i64::MAX))
            .bind(query.attempt_due_by.unwrap_or(i64::MAX))
            .bind(query.tenant.as_deref().unwrap_or(""))
            .bind(query.limit)
            .fetch_all(pool)
            .await?;
            rows.into_iter().map(|r| lease_row!(r)).collect()
        })
    }

    fn claim_job<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
        now: i64,
        until: i64,
    ) -> StoreFuture<'a, bool> {
        on_pool!(self, |pool| {
            let done = sqlx::query(
                "UPDATE job_leaders SET holder = $2, until = $4 WHERE name = $1 AND (holder = $2 OR until <= $3)",
            )
            .bind(name)
            .bind(holder)
            .bind(now)
            .bind(until)
            .execute(pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }
}
