//! [`AuditStore`] on the one SQL implementation.

use sqlx::Row as _;

use super::{SqlStore, AUDIT_ROWS_PER_INSERT};
use crate::audit::chain_hash;
use crate::checkpoint::{AuditKeyRow, AuditStore, CheckpointRow};
use crate::{AuditDraft, AuditEvent, StoreError, StoreFuture};

const KEY_COLUMNS: &str = "kid, created_at, public_jwk, sealed_private, kek_fingerprint";

macro_rules! key_row {
    ($r:ident) => {
        AuditKeyRow {
            kid: $r.try_get("kid")?,
            created_at: $r.try_get("created_at")?,
            public_jwk: $r.try_get("public_jwk")?,
            sealed_private: $r.try_get("sealed_private")?,
            kek_fingerprint: $r.try_get("kek_fingerprint")?,
        }
    };
}

impl AuditStore for SqlStore {
    fn fetch_audit_head(&self) -> StoreFuture<'_, (i64, String)> {
        on_pool!(self, |pool| {
            let r = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
                .fetch_one(pool)
                .await?;
            Ok((r.try_get("seq")?, r.try_get("hash")?))
        })
    }

    fn list_audit_keys(&self) -> StoreFuture<'_, Vec<AuditKeyRow>> {
        on_pool!(self, |pool| {
            let sql = format!("SELECT {KEY_COLUMNS} FROM audit_keys ORDER BY created_at, kid");
            let rows = sqlx::query(&sql).fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push(key_row!(r));
            }
            Ok(out)
        })
    }

    fn create_audit_key(
        &self,
        key: AuditKeyRow,
        audit: AuditDraft,
    ) -> StoreFuture<'_, Vec<AuditKeyRow>> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE locks SET n = n + 1 WHERE name = 'audit_keys'")
                .execute(&mut *tx)
                .await?;
            let existing: i64 = sqlx::query("SELECT count(*) AS n FROM audit_keys")
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
            if existing == 0 {
                sqlx::query(
                    "INSERT INTO audit_keys (kid, created_at, public_jwk, sealed_private, kek_fingerprint) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&key.kid)
                .bind(key.created_at)
                .bind(&key.public_jwk)
                .bind(&key.sealed_private)
                .bind(&key.kek_fingerprint)
                .execute(&mut *tx)
                .await?;
                append_audit!(tx, audit);
            }
            let sql = format!("SELECT {KEY_COLUMNS} FROM audit_keys ORDER BY created_at, kid");
            let rows = sqlx::query(&sql).fetch_all(&mut *tx).await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push(key_row!(r));
            }
            tx.commit().await?;
            Ok(out)
        })
    }

    fn reseal_audit_key(&self, key: AuditKeyRow, audit: AuditDraft) -> StoreFuture<'_, ()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE locks SET n = n + 1 WHERE name = 'audit_keys'")
                .execute(&mut *tx)
                .await?;
            let done = sqlx::query(
                "UPDATE audit_keys SET sealed_private = $2, kek_fingerprint = $3 WHERE kid = $1",
            )
            .bind(&key.kid)
            .bind(&key.sealed_private)
            .bind(&key.kek_fingerprint)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound {
                    what: format!("audit key {}", key.kid),
                });
            }
            append_audit!(tx, audit);
            tx.commit().await?;
            Ok(())
        })
    }

    fn create_audit_checkpoint_fenced<'a>(
        &'a self,
        c: CheckpointRow,
        fence: Option<&'a crate::Fence>,
    ) -> StoreFuture<'a, ()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            check_fence!(tx, fence);
            sqlx::query(
                "INSERT INTO audit_checkpoints (seq, hash, at_ms, kid, jws) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (seq, at_ms) DO NOTHING",
            )
            .bind(c.seq)
            .bind(&c.hash)
            .bind(c.at_ms)
            .bind(&c.kid)
            .bind(&c.jws)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn list_audit_checkpoints(&self, limit: i64) -> StoreFuture<'_, Vec<CheckpointRow>> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT seq, hash, at_ms, kid, jws FROM audit_checkpoints ORDER BY at_ms DESC, seq DESC LIMIT $1",
            )
            .bind(limit.clamp(1, 1000))
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push(CheckpointRow {
                    seq: r.try_get("seq")?,
                    hash: r.try_get("hash")?,
                    at_ms: r.try_get("at_ms")?,
                    kid: r.try_get("kid")?,
                    jws: r.try_get("jws")?,
                });
            }
            Ok(out)
        })
    }

    fn audit_is_append_only(&self) -> StoreFuture<'_, bool> {
        match self {
            SqlStore::Sqlite(pool) => Box::pin(async move {
                let n: i64 = sqlx::query(
                    "SELECT count(*) AS n FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_events' \
                     AND name IN ('audit_events_no_update', 'audit_events_no_delete')",
                )
                .fetch_one(pool)
                .await?
                .try_get("n")?;
                Ok(n == 2)
            }),
            SqlStore::Postgres(pool) => Box::pin(async move {
                // The trigger must exist and be enabled ('O' = origin, 'A' = always).
                let n: i64 = sqlx::query(
                    "SELECT count(*) AS n FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
                     WHERE c.relname = 'audit_events' AND t.tgname = 'audit_events_append_only' \
                     AND t.tgenabled IN ('O', 'A') AND NOT t.tgisinternal",
                )
                .fetch_one(pool)
                .await?
                .try_get("n")?;
                Ok(n == 1)
            }),
        }
    }
}
