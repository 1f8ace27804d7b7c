//! [`ChangeStore`] on the one SQL implementation.

use sqlx::Row as _;

use super::{
    entry_cols, entry_conflict, parent_of, RawEntry, SqlStore, AUDIT_ROWS_PER_INSERT, ENTRY_COLUMNS,
};
use crate::audit::chain_hash;
use crate::changes::{ChangeKind, ChangeRecord, ChangeRow, ChangeStore, EntryBatch};
use crate::{AuditDraft, AuditEvent, StoreError, StoreFuture};
use lanyard_core::Entry;

/// Ids per `IN (...)` lookup.
const IDS_PER_QUERY: usize = 500;

impl ChangeStore for SqlStore {
    fn fetch_change_head(&self) -> StoreFuture<'_, (String, i64)> {
        on_pool!(self, |pool| {
            let r = sqlx::query("SELECT epoch, revision FROM change_head WHERE id = 1")
                .fetch_one(pool)
                .await?;
            Ok((r.try_get("epoch")?, r.try_get("revision")?))
        })
    }

    fn list_changes(&self, after: i64, limit: i64) -> StoreFuture<'_, Vec<ChangeRow>> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT revision, kind, key, old_parent, new_parent, deleted FROM changes \
                 WHERE revision > $1 ORDER BY revision LIMIT $2",
            )
            .bind(after)
            .bind(limit.clamp(1, 100_000))
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let kind: String = r.try_get("kind")?;
                out.push(ChangeRow {
                    revision: r.try_get("revision")?,
                    change: ChangeRecord {
                        kind: ChangeKind::parse(&kind).ok_or_else(|| StoreError::Invalid {
                            what: "change kind",
                            detail: kind.clone(),
                        })?,
                        key: r.try_get("key")?,
                        old_parent: r.try_get("old_parent")?,
                        new_parent: r.try_get("new_parent")?,
                        deleted: r.try_get("deleted")?,
                    },
                });
            }
            Ok(out)
        })
    }

    fn fetch_entries<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, Vec<Entry>> {
        on_pool!(self, |pool| {
            let mut out = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(IDS_PER_QUERY) {
                let mut q = sqlx::QueryBuilder::new(format!(
                    "SELECT {ENTRY_COLUMNS} FROM entries WHERE id IN ("
                ));
                let mut sep = q.separated(", ");
                for id in chunk {
                    sep.push_bind(id.clone());
                }
                q.push(")");
                for r in q.build().fetch_all(pool).await? {
                    out.push(entry_row!(r)?);
                }
            }
            Ok(out)
        })
    }

    fn apply_entries(&self, batch: EntryBatch, audits: Vec<AuditDraft>) -> StoreFuture<'_, i64> {
        on_pool!(self, |pool| {
            if batch.is_empty() {
                let r = sqlx::query("SELECT revision FROM change_head WHERE id = 1")
                    .fetch_one(pool)
                    .await?;
                return Ok(r.try_get("revision")?);
            }
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE locks SET n = n + 1 WHERE name = 'entries'")
                .execute(&mut *tx)
                .await?;
            let mut changes = Vec::with_capacity(batch.len());
            for id in &batch.delete {
                let parent = remove_entry!(tx, id.as_str());
                changes.push(ChangeRecord::entry(id, &parent, "", true));
            }
            let at = audits.first().map_or(0, |a| a.at_ms / 1000);
            for entry in &batch.update {
                one_tenant_per_spiffe_id!(tx, entry);
                let old = replace_entry!(tx, entry, at);
                changes.push(ChangeRecord::entry(
                    &entry.id,
                    &old,
                    &parent_of(entry),
                    false,
                ));
            }
            for entry in &batch.create {
                one_tenant_per_spiffe_id!(tx, entry);
                insert_entry!(tx, entry);
                changes.push(ChangeRecord::entry(&entry.id, "", &parent_of(entry), false));
            }
            let revision = log_changes!(tx, changes);
            if !audits.is_empty() {
                append_audit_events!(tx, audits);
            }
            tx.commit().await?;
            Ok(revision)
        })
    }

    fn new_change_epoch<'a>(&'a self, epoch: &'a str, audit: AuditDraft) -> StoreFuture<'a, ()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE change_head SET epoch = $1 WHERE id = 1")
                .bind(epoch)
                .execute(&mut *tx)
                .await?;
            append_audit!(tx, audit);
            tx.commit().await?;
            Ok(())
        })
    }

    fn watch_changes(&self) -> StoreFuture<'_, Option<tokio::sync::mpsc::Receiver<()>>> {
        match self {
            SqlStore::Sqlite(_) => Box::pin(async { Ok(None) }),
            SqlStore::Postgres(pool) => {
                let pool = pool.clone();
                Box::pin(async move {
                    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
                    listener.listen("lanyard_changes").await?;
                    let (tx, rx) = tokio::sync::mpsc::channel(1);
                    tokio::spawn(async move {
                        loop {
                            match listener.recv().await {
                                // A full channel already holds a wake-up.
                                Ok(_) => {
                                    if tx.is_closed() {
                                        return;
                                    }
                                    let _ = tx.try_send(());
                                }
                                // The listener reconnects by itself; wake the
                                // reader so it catches up on what it missed.
                                Err(e) => {
                                    tracing::debug!(error = %e, "change listener lost its connection; reconnecting");
                                    let _ = tx.try_send(());
                                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                                }
                            }
                        }
                    });
                    Ok(Some(rx))
                })
            }
        }
    }
}
