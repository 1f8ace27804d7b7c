//! [`FederationStore`] on the one SQL implementation.

use sqlx::Row as _;

use super::{SqlStore, AUDIT_ROWS_PER_INSERT};
use crate::audit::chain_hash;
use crate::changes::{ChangeKind, ChangeRecord};
use crate::{AuditDraft, AuditEvent, FederatedRow, FederationStore, StoreError, StoreFuture};

const COLUMNS: &str =
    "trust_domain, tenant, endpoint, bundle, sequence, status, created_at, updated_at";

macro_rules! federated_row {
    ($r:expr) => {{
        let r = $r;
        Ok::<_, StoreError>(FederatedRow {
            trust_domain: r.try_get("trust_domain")?,
            tenant: r.try_get("tenant")?,
            endpoint: r.try_get("endpoint")?,
            bundle: r.try_get("bundle")?,
            sequence: r.try_get("sequence")?,
            status: r.try_get("status")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }};
}

impl FederationStore for SqlStore {
    fn list_federated(&self) -> StoreFuture<'_, Vec<FederatedRow>> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM federated_domains ORDER BY trust_domain"
            ))
            .fetch_all(pool)
            .await?;
            rows.into_iter().map(|r| federated_row!(r)).collect()
        })
    }

    fn fetch_federated<'a>(
        &'a self,
        trust_domain: &'a str,
    ) -> StoreFuture<'a, Option<FederatedRow>> {
        on_pool!(self, |pool| {
            let row = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM federated_domains WHERE trust_domain = $1"
            ))
            .bind(trust_domain)
            .fetch_optional(pool)
            .await?;
            row.map(|r| federated_row!(r)).transpose()
        })
    }

    fn create_federation(&self, row: FederatedRow, audit: AuditDraft) -> StoreFuture<'_, ()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE locks SET n = n + 1 WHERE name = 'federation'")
                .execute(&mut *tx)
                .await?;
            let existing = sqlx::query(
                "SELECT endpoint, bundle, sequence, tenant FROM federated_domains WHERE trust_domain = $1",
            )
            .bind(&row.trust_domain)
            .fetch_optional(&mut *tx)
            .await?;
            match existing {
                None => {
                    sqlx::query(
                        "INSERT INTO federated_domains (trust_domain, tenant, endpoint, bundle, sequence, status, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                    )
                    .bind(&row.trust_domain)
                    .bind(&row.tenant)
                    .bind(&row.endpoint)
                    .bind(&row.bundle)
                    .bind(row.sequence)
                    .bind(&row.status)
                    .bind(row.created_at)
                    .execute(&mut *tx)
                    .await?;
                }
                Some(r) => {
                    let endpoint: String = r.try_get("endpoint")?;
                    if !endpoint.is_empty() {
                        return Err(StoreError::Conflict {
                            what: format!("a federation relationship with {}", row.trust_domain),
                        });
                    }
                    // A bundle set by hand bootstraps the relationship unless
                    // the relationship brings its own.
                    let (bundle, sequence) = if row.bundle.is_empty() {
                        (
                            r.try_get::<String, _>("bundle")?,
                            r.try_get::<i64, _>("sequence")?,
                        )
                    } else {
                        (row.bundle.clone(), row.sequence)
                    };
                    let tenant = if row.tenant.is_empty() {
                        r.try_get::<String, _>("tenant")?
                    } else {
                        row.tenant.clone()
                    };
                    sqlx::query(
                        "UPDATE federated_domains SET endpoint = $2, bundle = $3, sequence = $4, tenant = $5, status = $6, updated_at = $7 WHERE trust_domain = $1",
                    )
                    .bind(&row.trust_domain)
                    .bind(&row.endpoint)
                    .bind(&bundle)
                    .bind(sequence)
                    .bind(&tenant)
                    .bind(&row.status)
                    .bind(row.created_at)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            log_changes!(
                tx,
                vec![ChangeRecord::of(ChangeKind::Bundle, &row.trust_domain)]
            );
            append_audit!(tx, audit);
            tx.commit().await?;
            Ok(())
        })
    }

    fn put_bundle<'a>(
        &'a self,
        trust_domain: &'a str,
        bundle: &'a str,
        sequence: i64,
        tenant: Option<&'a str>,
        expect_sequence: Option<i64>,
        now: i64,
        audit: AuditDraft,
    ) -> StoreFuture<'a, bool> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE locks SET n = n + 1 WHERE name = 'federation'")
                .execute(&mut *tx)
                .await?;
            let current =
                sqlx::query("SELECT sequence FROM federated_domains WHERE trust_domain = $1")
                    .bind(trust_domain)
                    .fetch_optional(&mut *tx)
                    .await?;
            match (current, expect_sequence) {
                (Some(r), Some(want)) if r.try_get::<i64, _>("sequence")? != want => {
                    return Ok(false)
                }
                (None, Some(_)) => return Ok(false),
                (Some(_), _) => {
                    sqlx::query(
                        "UPDATE federated_domains SET bundle = $2, sequence = $3, tenant = COALESCE($4, tenant), updated_at = $5 WHERE trust_domain = $1",
                    )
                    .bind(trust_domain)
                    .bind(bundle)
                    .bind(sequence)
                    .bind(tenant)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                (None, None) => {
                    sqlx::query(
                        "INSERT INTO federated_domains (trust_domain, tenant, endpoint, bundle, sequence, status, created_at, updated_at) \
                         VALUES ($1, $2, '', $3, $4, '{}', $5, $5)",
                    )
                    .bind(trust_domain)
                    .bind(tenant.unwrap_or(""))
                    .bind(bundle)
                    .bind(sequence)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            log_changes!(tx, vec![ChangeRecord::of(ChangeKind::Bundle, trust_domain)]);
            append_audit!(tx, audit);
            tx.commit().await?;
            Ok(true)
        })
    }

    fn set_federation_status<'a>(
        &'a self,
        trust_domain: &'a str,
        status: &'a str,
        audit: Option<AuditDraft>,
    ) -> StoreFuture<'a, ()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE federated_domains SET status = $2 WHERE trust_domain = $1")
                .bind(trust_domain)
                .bind(status)
                .execute(&mut *tx)
                .await?;
            if let Some(audit) = audit {
                append_audit!(tx, audit);
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn delete_federated<'a>(
        &'a self,
        trust_domain: &'a str,
        audit: AuditDraft,
    ) -> StoreFuture<'a, ()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE locks SET n = n + 1 WHERE name = 'entries'")
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE locks SET n = n + 1 WHERE name = 'federation'")
                .execute(&mut *tx)
                .await?;
            // Entries naming the trust domain keep it: deleting under them
            // would leave entries that silently stop working.
            let quoted = format!("%\"{trust_domain}\"%");
            let mapped = format!("spiffe:id:spiffe://{trust_domain}/%");
            let users = sqlx::query(
                "SELECT id FROM entries WHERE federates_with LIKE $1 OR selector_key LIKE $2 ORDER BY id LIMIT 5",
            )
            .bind(&quoted)
            .bind(&mapped)
            .fetch_all(&mut *tx)
            .await?;
            if !users.is_empty() {
                let ids = users
                    .iter()
                    .map(|r| r.try_get::<String, _>("id"))
                    .collect::<Result<Vec<_>, _>>()?;
                return Err(StoreError::InUse {
                    what: format!(
                        "trust domain {trust_domain} is still named by entries {} (federates_with or a spiffe:id selector); update or delete them first",
                        ids.join(", ")
                    ),
                });
            }
            let done = sqlx::query("DELETE FROM federated_domains WHERE trust_domain = $1")
                .bind(trust_domain)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound {
                    what: format!("federated trust domain {trust_domain}"),
                });
            }
            log_changes!(tx, vec![ChangeRecord::of(ChangeKind::Bundle, trust_domain)]);
            append_audit!(tx, audit);
            tx.commit().await?;
            Ok(())
        })
    }
}
