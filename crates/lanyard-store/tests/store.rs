//! The store conformance suite: every test runs unchanged on SQLite and, when
//! `LANYARD_TEST_POSTGRES_URL` is set, on a fresh PostgreSQL database.

// Tests and benchmarks fail by panicking and index fixtures they built.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use lanyard_core::{Decision, KeyState, TenantId};
use lanyard_store::audit::{verify_chain, GENESIS_HASH};
use lanyard_store::{
    AdminTokenRow, AuditDraft, BrokerBackendRow, BrokerRoleRow, CaChange, JoinTokenRow, KeyChange,
    LeaseQuery, LeaseRow, LeaseState, NodeRow, SigningKeyRow, Store, StoreError, Tenant, X509CaRow,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Runs `suite` against SQLite, then PostgreSQL when available.
macro_rules! conformance {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() -> super::TestResult {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}", dir.path().join("lanyard.db").display());
                super::$name(&url).await
            }

            #[tokio::test]
            async fn postgres() -> super::TestResult {
                match lanyard_testkit::fresh_postgres(concat!(stringify!($name), "::postgres"))
                    .await
                {
                    Some(url) => super::$name(&url).await,
                    None => Ok(()),
                }
            }
        }
    };
}

fn draft(action: &str, subject: &str) -> AuditDraft {
    AuditDraft {
        at_ms: 1_000,
        correlation_id: format!("corr-{subject}"),
        actor: "admin:test".into(),
        action: action.into(),
        subject: subject.into(),
        tenant: None,
        decision: Decision::Allow,
        reason: "ok".into(),
        evidence_digest: None,
    }
}

fn tenant(name: &str) -> Result<Tenant, lanyard_core::TenantIdError> {
    Ok(Tenant {
        id: TenantId::parse(name)?,
        description: format!("{name} tenant"),
        created_at: 42,
    })
}

async fn verify_all(store: &Arc<dyn Store>) -> Result<i64, Box<dyn std::error::Error>> {
    let events = store.list_audit(0, 100_000).await?;
    verify_chain(0, GENESIS_HASH, &events)?;
    Ok(events.len() as i64)
}

conformance!(tenants_round_trip_and_are_audited);
async fn tenants_round_trip_and_are_audited(url: &str) -> TestResult {
    let store = lanyard_store::open(url).await?;
    store
        .create_tenant(tenant("payments")?, draft("tenant.create", "payments"))
        .await?;
    store
        .create_tenant(tenant("analytics")?, draft("tenant.create", "analytics"))
        .await?;
    let dup = store
        .create_tenant(tenant("payments")?, draft("tenant.create", "payments"))
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict { .. })), "{dup:?}");
    let names: Vec<_> = store
        .list_tenants()
        .await?
        .into_iter()
        .map(|t| t.id.to_string())
        .collect();
    assert_eq!(names, ["analytics", "payments"]);
    assert_eq!(
        store.fetch_tenant("payments").await?,
        Some(tenant("payments")?)
    );
    assert_eq!(store.fetch_tenant("nope").await?, None);
    store
        .delete_tenant("analytics", draft("tenant.delete", "analytics"))
        .await?;
    let missing = store
        .delete_tenant("analytics", draft("tenant.delete", "analytics"))
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "{missing:?}"
    );
    // Two creates and one delete succeeded; the failed ones wrote no audit event.
    let events = store.list_audit(0, 100).await?;
    let actions: Vec<_> = events
        .iter()
        .map(|e| (e.draft.action.as_str(), e.draft.subject.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("tenant.create", "payments"),
            ("tenant.create", "analytics"),
            ("tenant.delete", "analytics")
        ]
    );
    verify_all(&store).await?;
    Ok(())
}

conformance!(reopening_keeps_everything);
async fn reopening_keeps_everything(url: &str) -> TestResult {
    {
        let store = lanyard_store::open(url).await?;
        store
            .create_tenant(tenant("dev")?, draft("tenant.create", "dev"))
            .await?;
    }
    let again = lanyard_store::open(url).await?;
    assert_eq!(again.list_tenants().await?.len(), 1);
    assert_eq!(verify_all(&again).await?, 1);
    Ok(())
}

conformance!(audit_chain_survives_concurrent_appends);
async fn audit_chain_survives_concurrent_appends(url: &str) -> TestResult {
    let store = lanyard_store::open(url).await?;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .append_audit(draft("test.append", &format!("s{i}")))
                .await
        }));
    }
    for t in tasks {
        t.await??;
    }
    assert_eq!(verify_all(&store).await?, 40);
    let page: Vec<i64> = store
        .list_audit(10, 5)
        .await?
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(page, [11, 12, 13, 14, 15]);
    Ok(())
}

conformance!(audit_rows_cannot_be_edited_or_deleted);
async fn audit_rows_cannot_be_edited_or_deleted(url: &str) -> TestResult {
    let store = lanyard_store::open(url).await?;
    store.append_audit(draft("test.append", "x")).await?;
    drop(store);
    let update = "UPDATE audit_events SET reason = 'forged'";
    let delete = "DELETE FROM audit_events";
    if url.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(url).await?;
        assert!(sqlx::query(update).execute(&pool).await.is_err());
        assert!(sqlx::query(delete).execute(&pool).await.is_err());
    } else {
        let pool = sqlx::PgPool::connect(url).await?;
        assert!(sqlx::query(update).execute(&pool).await.is_err());
        assert!(sqlx::query(delete).execute(&pool).await.is_err());
    }
    let store = lanyard_store::open(url).await?;
    assert_eq!(
        store
            .list_audit(0, 10)
            .await?
            .first()
            .map(|e| e.draft.reason.clone()),
        Some("ok".into())
    );
    Ok(())
}

fn key_row(kid: &str, state: KeyState) -> SigningKeyRow {
    SigningKeyRow {
        kid: kid.into(),
        alg: "ES256".into(),
        state,
        created_at: 10,
        activate_at: 20,
        retire_at: None,
        sealed_private: vec![1, 2, 3, 0, 255],
        kek_fingerprint: "fp".into(),
    }
}

conformance!(signing_key_changes_apply_atomically);
async fn signing_key_changes_apply_atomically(url: &str) -> TestResult {
    let store = lanyard_store::open(url).await?;
    let applied = store
        .update_signing_keys(&|current| {
            assert!(current.is_empty());
            Ok((
                vec![
                    KeyChange::Insert(key_row("a", KeyState::Active)),
                    KeyChange::Insert(key_row("b", KeyState::Next)),
                ],
                vec![draft("key.create", "a"), draft("key.create", "b")],
            ))
        })
        .await?;
    assert_eq!(applied.len(), 2);
    let generation = store.signing_keys_generation().await?;
    store.update_signing_keys(&|_| Ok((vec![], vec![]))).await?;
    assert_eq!(
        store.signing_keys_generation().await?,
        generation,
        "no change, same generation"
    );
    store
        .update_signing_keys(&|current| {
            assert_eq!(current.len(), 2);
            Ok((
                vec![
                    KeyChange::SetState {
                        kid: "a".into(),
                        state: KeyState::Previous,
                        retire_at: Some(99),
                    },
                    KeyChange::SetState {
                        kid: "b".into(),
                        state: KeyState::Active,
                        retire_at: None,
                    },
                    KeyChange::SetActivation {
                        kid: "b".into(),
                        activate_at: 30,
                    },
                ],
                vec![draft("key.rotate", "b")],
            ))
        })
        .await?;
    assert!(
        store.signing_keys_generation().await? > generation,
        "a change moves the generation"
    );
    let keys = store.list_signing_keys().await?;
    assert_eq!(keys.len(), 2);
    let a = keys.iter().find(|k| k.kid == "a").ok_or("a missing")?;
    assert_eq!(
        (a.state, a.retire_at, a.sealed_private.as_slice()),
        (KeyState::Previous, Some(99), &[1u8, 2, 3, 0, 255][..])
    );
    let b = keys.iter().find(|k| k.kid == "b").ok_or("b missing")?;
    assert_eq!((b.state, b.activate_at), (KeyState::Active, 30));

    // A planner that fails, or a change that fails half-way, leaves nothing behind.
    let refused = store.update_signing_keys(&|_| Err("refused".into())).await;
    assert!(matches!(refused, Err(StoreError::Planner(_))));
    let half = store
        .update_signing_keys(&|_| {
            Ok((
                vec![
                    KeyChange::Delete { kid: "a".into() },
                    KeyChange::Insert(key_row("b", KeyState::Next)),
                ],
                vec![draft("key.delete", "a")],
            ))
        })
        .await;
    assert!(matches!(half, Err(StoreError::Conflict { .. })), "{half:?}");
    assert_eq!(store.list_signing_keys().await?, keys, "rolled back");
    assert_eq!(verify_all(&store).await?, 3);
    Ok(())
}

conformance!(admin_tokens_store_hashes);
async fn admin_tokens_store_hashes(url: &str) -> TestResult {
    let store = lanyard_store::open(url).await?;
    assert_eq!(store.count_admin_tokens().await?, 0);
    let row = AdminTokenRow {
        id: "tok1".into(),
        name: "bootstrap".into(),
        secret_hash: vec![9; 32],
        created_at: 5,
    };
    store
        .create_admin_token(row.clone(), draft("admin_token.create", "tok1"))
        .await?;
    assert!(matches!(
        store
            .create_admin_token(row.clone(), draft("admin_token.create", "tok1"))
            .await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(store.fetch_admin_token("tok1").await?, Some(row));
    assert_eq!(store.fetch_admin_token("tok2").await?, None);
    assert_eq!(store.count_admin_tokens().await?, 1);
    Ok(())
}

#[tokio::test]
async fn corrupt_sqlite_file_is_reported_and_left_untouched() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("lanyard.db");
    let garbage = b"this is not a database, but it is somebody's file".repeat(100);
    std::fs::write(&path, &garbage)?;
    let err = lanyard_store::open(&format!("sqlite://{}", path.display()))
        .await
        .err();
    let msg = err.as_ref().map(|e| e.to_string()).unwrap_or_default();
    assert!(matches!(err, Some(StoreError::Corrupt { .. })), "{msg}");
    assert!(msg.contains("nothing was changed"), "{msg}");
    assert_eq!(std::fs::read(&path)?, garbage);
    Ok(())
}

#[tokio::test]
async fn unreachable_postgres_and_unknown_urls_fail_clearly() -> TestResult {
    // Port 1 on loopback: nothing listens there.
    let err = lanyard_store::open("postgres://lanyard:hunter2@127.0.0.1:1/lanyard")
        .await
        .err();
    let msg = err.as_ref().map(|e| e.to_string()).unwrap_or_default();
    assert!(matches!(err, Some(StoreError::Connect { .. })), "{msg}");
    assert!(
        msg.contains("127.0.0.1:1") && !msg.contains("hunter2"),
        "{msg}"
    );
    let err = lanyard_store::open("mysql://x").await.err();
    assert!(matches!(err, Some(StoreError::UnsupportedUrl { .. })));
    Ok(())
}

fn entry(id: &str, selectors: &[&str]) -> Result<lanyard_core::Entry, Box<dyn std::error::Error>> {
    let mut selectors = selectors
        .iter()
        .map(|s| lanyard_core::Selector::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    selectors.sort();
    Ok(lanyard_core::Entry {
        id: id.into(),
        spiffe_id: lanyard_core::SpiffeId::parse(&format!("spiffe://example.org/{id}"))?,
        tenant: TenantId::parse("payments")?,
        issuer: Some("k8s".into()),
        parent: None,
        dns_names: Vec::new(),
        selectors,
        audiences: vec!["api://x".into()],
        ttl: Some(std::time::Duration::from_secs(300)),
        max_ttl: None,
        scopes: vec!["read".into(), "write".into()],
        may_act: vec!["spiffe://example.org/agents/*".into()],
        admin: true,
        token_reviewer: false,
        role: Some("reader".into()),
        federates_with: Vec::new(),
        grants: vec!["appdb/readonly".into()],
        created_at: 7,
    })
}

conformance!(entries_round_trip_conflict_and_tenant_binding);
async fn entries_round_trip_conflict_and_tenant_binding(url: &str) -> TestResult {
    let store = lanyard_store::open(url).await?;
    let e = entry("e1", &["k8s:ns:payments", "k8s:sa:api"])?;
    let missing_tenant = store
        .create_entry(e.clone(), draft("entry.create", "e1"))
        .await;
    assert!(
        matches!(missing_tenant, Err(StoreError::NotFound { .. })),
        "{missing_tenant:?}"
    );
    store
        .create_tenant(tenant("payments")?, draft("tenant.create", "payments"))
        .await?;
    let g0 = store.generation("entries").await?;
    store
        .create_entry(e.clone(), draft("entry.create", "e1"))
        .await?;
    assert!(store.generation("entries").await? > g0);
    assert_eq!(store.list_entries().await?, vec![e.clone()]);
    let same_set = entry("e2", &["k8s:sa:api", "k8s:ns:payments"])?;
    assert!(matches!(
        store
            .create_entry(same_set, draft("entry.create", "e2"))
            .await,
        Err(StoreError::Conflict { .. })
    ));
    let mut changed = e.clone();
    changed.audiences = vec!["api://y".into()];
    changed.admin = false;
    changed.token_reviewer = true;
    changed.role = None;
    changed.grants = vec!["appdb/readonly".into(), "appdb/rw".into()];
    store
        .update_entry(changed.clone(), draft("entry.update", "e1"))
        .await?;
    assert_eq!(store.list_entries().await?, vec![changed]);
    let deleting_tenant = store
        .delete_tenant("payments", draft("tenant.delete", "payments"))
        .await;
    assert!(
        matches!(deleting_tenant, Err(StoreError::InUse { .. })),
        "{deleting_tenant:?}"
    );
    store
        .delete_entry("e1", draft("entry.delete", "e1"))
        .await?;
    assert!(matches!(
        store.delete_entry("e1", draft("entry.delete", "e1")).await,
        Err(StoreError::NotFound { .. })
    ));
    verify_all(&store).await?;
    Ok(())
}

// issue 9: tenant dev could register a SPIFFE ID tenant acme already used;
// their tokens then shared iss + sub, all a cloud federated credential checks.
conformance!(one_spiffe_id_has_one_tenant);
async fn one_spiffe_id_has_one_tenant(url: &str) -> TestResult {
    let store = lanyard_store::open(url).await?;
    for t in ["payments", "acme"] {
        store
            .create_tenant(tenant(t)?, draft("tenant.create", t))
            .await?;
    }
    let mut a = entry("a1", &["k8s:ns:payments"])?;
    a.spiffe_id = lanyard_core::SpiffeId::parse("spiffe://example.org/ns/pay/sa/api")?;
    store
        .create_entry(a.clone(), draft("entry.create", "a1"))
        .await?;
    // The same tenant may grant it again (another cluster, another issuer).
    let mut same = a.clone();
    same.id = "a2".into();
    same.issuer = Some("k8s-2".into());
    store
        .create_entry(same, draft("entry.create", "a2"))
        .await?;
    // Another tenant may not, by create or by update.
    let mut other = a.clone();
    other.id = "b1".into();
    other.issuer = Some("k8s-acme".into());
    other.tenant = TenantId::parse("acme")?;
    let refused = store
        .create_entry(other.clone(), draft("entry.create", "b1"))
        .await;
    assert!(
        matches!(&refused, Err(StoreError::InUse { what }) if what.contains("belongs to tenant payments")),
        "{refused:?}"
    );
    let mut elsewhere = other.clone();
    elsewhere.spiffe_id = lanyard_core::SpiffeId::parse("spiffe://example.org/acme/api")?;
    store
        .create_entry(elsewhere, draft("entry.create", "b1"))
        .await?;
    let moved = store
        .update_entry(other.clone(), draft("entry.update", "b1"))
        .await;
    assert!(matches!(moved, Err(StoreError::InUse { .. })), "{moved:?}");
    // Concurrent creates by two tenants for a fresh ID: exactly one wins.
    for round in 0..5 {
        let id = lanyard_core::SpiffeId::parse(&format!("spiffe://example.org/race/{round}"))?;
        let mut x = a.clone();
        x.id = format!("x{round}");
        x.issuer = Some(format!("race-x-{round}"));
        x.spiffe_id = id.clone();
        let mut y = other.clone();
        y.id = format!("y{round}");
        y.issuer = Some(format!("race-y-{round}"));
        y.spiffe_id = id;
        let (s1, s2) = (store.clone(), store.clone());
        let (rx, ry) = tokio::join!(
            async move { s1.create_entry(x, draft("entry.create", "x")).await },
            async move { s2.create_entry(y, draft("entry.create", "y")).await }
        );
        assert!(rx.is_ok() ^ ry.is_ok(), "round {round}: {rx:?} / {ry:?}");
    }
    verify_all(&store).await?;
    Ok(())
}

conformance!(audit_head_keys_and_checkpoints);
async fn audit_head_keys_and_checkpoints(url: &str) -> TestResult {
    use lanyard_store::{AuditKeyRow, CheckpointRow};
    let store = lanyard_store::open(url).await?;
    assert_eq!(
        store.fetch_audit_head().await?,
        (0, GENESIS_HASH.to_owned())
    );
    let last = store.append_audit(draft("test", "x")).await?;
    assert_eq!(
        store.fetch_audit_head().await?,
        (last.seq, last.hash.clone())
    );
    assert!(store.audit_is_append_only().await?);
    let key = |kid: &str| AuditKeyRow {
        kid: kid.into(),
        created_at: 1,
        public_jwk: "{}".into(),
        sealed_private: vec![1, 2, 3],
        kek_fingerprint: "f1".into(),
    };
    // Two replicas starting together agree on one key.
    let (s1, s2) = (store.clone(), store.clone());
    let (k1, k2) = tokio::join!(
        async move {
            s1.create_audit_key(key("k1"), draft("audit_key.create", "k1"))
                .await
        },
        async move {
            s2.create_audit_key(key("k2"), draft("audit_key.create", "k2"))
                .await
        }
    );
    let (k1, k2) = (k1?, k2?);
    assert_eq!(k1.len(), 1);
    assert_eq!(k1, k2);
    let mut resealed = k1[0].clone();
    resealed.sealed_private = vec![9];
    resealed.kek_fingerprint = "f2".into();
    store
        .reseal_audit_key(resealed.clone(), draft("audit_key.reseal", "k"))
        .await?;
    assert_eq!(store.list_audit_keys().await?, vec![resealed]);
    assert!(store.list_audit_checkpoints(5).await?.is_empty());
    for (seq, at) in [(1, 10), (2, 20)] {
        store
            .create_audit_checkpoint(CheckpointRow {
                seq,
                hash: format!("h{seq}"),
                at_ms: at,
                kid: "k".into(),
                jws: "a.b.c".into(),
            })
            .await?;
    }
    let newest = store.list_audit_checkpoints(1).await?;
    assert_eq!(newest.first().map(|c| c.seq), Some(2));
    verify_all(&store).await?;
    Ok(())
}

// issue 9: a truncated-to-zero database started with new keys, a new CA and
// an audit log restarting at 1; without its triggers the log is not append-only.
#[tokio::test]
async fn an_existing_store_is_never_silently_recreated() -> TestResult {
    use lanyard_store::OpenMode;
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("lanyard.db");
    let url = format!("sqlite://{}", path.display());
    let missing = lanyard_store::open_with(&url, OpenMode::Existing)
        .await
        .err();
    assert!(
        matches!(missing, Some(StoreError::NotInitialised { .. })),
        "{missing:?}"
    );
    assert!(!path.exists(), "nothing created");
    let store = lanyard_store::open_with(&url, OpenMode::Create).await?;
    store.append_audit(draft("test", "x")).await?;
    drop(store);
    assert_eq!(
        std::fs::metadata(&path)?.permissions().mode() & 0o777,
        0o600
    );
    // An existing store opens (and is tightened to 0600 if it was not).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    let store = lanyard_store::open_with(&url, OpenMode::Existing).await?;
    assert_eq!(store.list_audit(0, 10).await?.len(), 1);
    drop(store);
    assert_eq!(
        std::fs::metadata(&path)?.permissions().mode() & 0o777,
        0o600
    );
    // Truncated to zero bytes: refused, and left as it is.
    for f in ["lanyard.db-wal", "lanyard.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(f));
    }
    std::fs::write(&path, b"")?;
    let empty = lanyard_store::open_with(&url, OpenMode::Existing)
        .await
        .err();
    assert!(
        matches!(empty, Some(StoreError::NotInitialised { .. })),
        "{empty:?}"
    );
    assert_eq!(std::fs::metadata(&path)?.len(), 0);
    // A SQLite database that is not Lanyard's is refused too.
    let other = dir.path().join("other.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", other.display())).await?;
    sqlx::query("CREATE TABLE t (x INTEGER)")
        .execute(&pool)
        .await?;
    pool.close().await;
    let foreign =
        lanyard_store::open_with(&format!("sqlite://{}", other.display()), OpenMode::Existing)
            .await
            .err();
    assert!(
        matches!(foreign, Some(StoreError::NotInitialised { .. })),
        "{foreign:?}"
    );
    // Without its append-only triggers the store says so.
    let store = lanyard_store::open(&url.replace("lanyard.db", "t.db")).await?;
    assert!(store.audit_is_append_only().await?);
    drop(store);
    let pool = sqlx::SqlitePool::connect(&url.replace("lanyard.db", "t.db")).await?;
    sqlx::query("DROP TRIGGER audit_events_no_delete")
        .execute(&pool)
        .await?;
    pool.close().await;
    let store = lanyard_store::open(&url.replace("lanyard.db", "t.db")).await?;
    assert!(!store.audit_is_append_only().await?);
    Ok(())
}

conformance!(agent_entries_are_unique_per_parent);
async fn agent_entries_are_unique_per_parent(url: &str) -> TestResult {
    let store = lanyard_store::open(url).await?;
    store
        .create_tenant(tenant("payments")?, draft("tenant.create", "payments"))
        .await?;
    let node =
        |n: &str| lanyard_core::SpiffeId::parse(&format!("spiffe://example.org/lanyard/node/{n}"));
    let mut a = entry("a", &["unix:uid:1000"])?;
    a.issuer = None;
    a.parent = Some(node("n1")?);
    a.dns_names = vec!["api.internal".into()];
    store
        .create_entry(a.clone(), draft("entry.create", "a"))
        .await?;
    // Same selectors under another node: a different workload.
    let mut b = a.clone();
    b.id = "b".into();
    b.parent = Some(node("n2")?);
    store
        .create_entry(b.clone(), draft("entry.create", "b"))
        .await?;
    // Same selectors, same node: a duplicate.
    let mut c = a.clone();
    c.id = "c".into();
    assert!(matches!(
        store.create_entry(c, draft("entry.create", "c")).await,
        Err(StoreError::Conflict { .. })
    ));
    let listed = store.list_entries().await?;
    assert_eq!(listed, vec![a, b]);
    Ok(())
}

fn ca_row(id: &str, state: KeyState) -> X509CaRow {
    X509CaRow {
        id: id.into(),
        role: "intermediate".into(),
        state,
        created_at: 10,
        activate_at: 20,
        retire_at: None,
        not_after: 99,
        cert_der: vec![0x30, 1, 2],
        sealed_private: vec![9; 40],
        kek_fingerprint: "fp".into(),
    }
}

conformance!(x509_ca_changes_apply_under_the_lock);
async fn x509_ca_changes_apply_under_the_lock(url: &str) -> TestResult {
    let store = lanyard_store::open(url).await?;
    let g0 = store.generation("x509_cas").await?;
    let planner = |rows: &[X509CaRow]| -> Result<(Vec<CaChange>, Vec<AuditDraft>), String> {
        if rows.is_empty() {
            Ok((
                vec![
                    CaChange::Insert(ca_row("i1", KeyState::Active)),
                    CaChange::Insert(ca_row("i2", KeyState::Next)),
                ],
                vec![draft("ca.create", "i1")],
            ))
        } else {
            Ok((Vec::new(), Vec::new()))
        }
    };
    assert_eq!(store.update_x509_cas(&planner).await?.len(), 2);
    assert_eq!(
        store.update_x509_cas(&planner).await?.len(),
        0,
        "plan settles"
    );
    assert_eq!(store.generation("x509_cas").await?, g0 + 1);
    let rotate = |_: &[X509CaRow]| -> Result<(Vec<CaChange>, Vec<AuditDraft>), String> {
        Ok((
            vec![
                CaChange::SetState {
                    id: "i1".into(),
                    state: KeyState::Previous,
                    retire_at: Some(50),
                },
                CaChange::SetState {
                    id: "i2".into(),
                    state: KeyState::Active,
                    retire_at: None,
                },
                CaChange::SetActivation {
                    id: "i2".into(),
                    activate_at: 30,
                },
                CaChange::Reseal {
                    id: "i2".into(),
                    sealed_private: vec![7; 40],
                    kek_fingerprint: "fp2".into(),
                },
            ],
            vec![draft("ca.rotate", "i2")],
        ))
    };
    store.update_x509_cas(&rotate).await?;
    let rows = store.list_x509_cas().await?;
    let i2 = rows.iter().find(|r| r.id == "i2").ok_or("i2 missing")?;
    assert_eq!(
        (i2.state, i2.activate_at, i2.kek_fingerprint.as_str()),
        (KeyState::Active, 30, "fp2")
    );
    assert_eq!(i2.cert_der, vec![0x30, 1, 2]);
    // A failing planner changes nothing.
    let failing =
        |_: &[X509CaRow]| -> Result<(Vec<CaChange>, Vec<AuditDraft>), String> { Err("no".into()) };
    assert!(store.update_x509_cas(&failing).await.is_err());
    let delete = |_: &[X509CaRow]| -> Result<(Vec<CaChange>, Vec<AuditDraft>), String> {
        Ok((vec![CaChange::Delete { id: "i1".into() }], Vec::new()))
    };
    store.update_x509_cas(&delete).await?;
    assert_eq!(store.list_x509_cas().await?.len(), 1);
    verify_all(&store).await?;
    Ok(())
}

conformance!(join_tokens_are_used_once);
async fn join_tokens_are_used_once(url: &str) -> TestResult {
    let store = Arc::new(lanyard_store::open(url).await?);
    let token = JoinTokenRow {
        id: "jt1".into(),
        token_hash: "h1".into(),
        node_id: "vm-1".into(),
        trust_domain: "example.org".into(),
        selectors: vec!["lanyard:pool:web".into()],
        created_at: 100,
        expires_at: 700,
        used_at: None,
        created_by: "admin:test".into(),
    };
    store
        .create_join_token(token.clone(), draft("jointoken.create", "jt1"))
        .await?;
    assert_eq!(store.fetch_join_token("h1").await?, Some(token.clone()));
    assert_eq!(store.fetch_join_token("nope").await?, None);
    // Expired at 700: a use at 700 is refused.
    assert!(!store.consume_join_token("h1", 700).await?);
    // Two racing uses: exactly one wins.
    let (s1, s2) = (store.clone(), store.clone());
    let (a, b) = tokio::join!(
        async move { s1.consume_join_token("h1", 200).await },
        async move { s2.consume_join_token("h1", 201).await }
    );
    assert!(a? ^ b?, "exactly one use succeeds");
    assert!(!store.consume_join_token("h1", 300).await?);
    let listed = store.list_join_tokens().await?;
    assert!(listed.first().and_then(|t| t.used_at).is_some());
    verify_all(&store).await?;

    let mut node = NodeRow {
        id: "vm-1".into(),
        spiffe_id: "spiffe://example.org/lanyard/node/vm-1".into(),
        attestation: "join_token".into(),
        selectors: vec!["lanyard:pool:web".into()],
        svid_serial: "aa".into(),
        svid_serial_next: String::new(),
        svid_expires_at: 1000,
        created_at: 200,
        last_seen: 200,
    };
    let g = store.generation("nodes").await?;
    store.upsert_node(node.clone()).await?;
    node.svid_serial = "bb".into();
    node.last_seen = 500;
    store.upsert_node(node.clone()).await?;
    assert_eq!(store.list_nodes().await?, vec![node.clone()]);
    assert!(store.generation("nodes").await? > g);
    // issue 9: a renewal's SVID is pending until first used; only then does
    // it replace the current one, and only the pending serial can be promoted.
    node.svid_serial_next = "cc".into();
    store.upsert_node(node.clone()).await?;
    assert!(!store.promote_node_serial("vm-1", "dd").await?);
    assert!(!store.promote_node_serial("vm-2", "cc").await?);
    let g = store.generation("nodes").await?;
    assert!(store.promote_node_serial("vm-1", "cc").await?);
    assert!(store.generation("nodes").await? > g);
    let now = store.fetch_node("vm-1").await?.ok_or("node")?;
    assert_eq!(
        (now.svid_serial.as_str(), now.svid_serial_next.as_str()),
        ("cc", "")
    );
    assert!(
        !store.promote_node_serial("vm-1", "cc").await?,
        "promoted once"
    );
    assert!(store.fetch_node("nope").await?.is_none());
    Ok(())
}

conformance!(issuers_and_revocations);
async fn issuers_and_revocations(url: &str) -> TestResult {
    let store = lanyard_store::open(url).await?;
    let row = lanyard_store::IssuerRow {
        name: "k8s".into(),
        config: "{\"a\":1}".into(),
        created_at: 3,
    };
    store
        .create_issuer(row.clone(), draft("issuer.create", "k8s"))
        .await?;
    assert!(matches!(
        store
            .create_issuer(row.clone(), draft("issuer.create", "k8s"))
            .await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(store.list_issuers().await?, vec![row]);
    store
        .delete_issuer("k8s", draft("issuer.delete", "k8s"))
        .await?;
    assert!(store.list_issuers().await?.is_empty());

    let rev = |value: &str, until: Option<i64>| lanyard_store::Revocation {
        kind: lanyard_core::RevocationKind::Jti,
        value: value.into(),
        reason: "leaked".into(),
        until,
        created_at: 100,
        actor: "admin:x".into(),
    };
    let g0 = store.generation("revocations").await?;
    store
        .create_revocation(rev("a", None), draft("revoke", "a"))
        .await?;
    store
        .create_revocation(rev("b", Some(150)), draft("revoke", "b"))
        .await?;
    store
        .create_revocation(rev("b", Some(250)), draft("revoke", "b"))
        .await?; // replaces
    assert!(store.generation("revocations").await? >= g0 + 3);
    let in_force: Vec<String> = store
        .list_revocations(200)
        .await?
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(in_force, ["a", "b"]);
    let later: Vec<String> = store
        .list_revocations(300)
        .await?
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(later, ["a"]);
    assert!(store.generation("nope").await.is_err());
    Ok(())
}

conformance!(audit_batches_and_queries);
async fn audit_batches_and_queries(url: &str) -> TestResult {
    let store = lanyard_store::open(url).await?;
    let mut drafts = Vec::new();
    // 150 events: more than one multi-row INSERT.
    for i in 0..150 {
        let mut d = draft("token.exchange", &format!("s{i}"));
        d.at_ms = 1_000 + i;
        drafts.push(d);
    }
    let events = store.append_audit_batch(drafts).await?;
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=150).collect::<Vec<_>>()
    );
    assert_eq!(verify_all(&store).await?, 150);
    assert_eq!(
        store.list_audit(0, 1000).await?,
        events,
        "what was returned is what was stored"
    );
    let q = |after, since_ms, cid: Option<&str>, limit| lanyard_store::AuditQuery {
        after,
        since_ms,
        correlation_id: cid.map(str::to_owned),
        limit,
    };
    assert_eq!(
        store.query_audit(q(0, Some(1_145), None, 100)).await?.len(),
        5
    );
    let by_cid = store.query_audit(q(0, None, Some("corr-s7"), 100)).await?;
    assert_eq!(by_cid.iter().map(|e| e.seq).collect::<Vec<_>>(), [8]);
    assert_eq!(store.query_audit(q(148, None, None, 100)).await?.len(), 2);
    store.append_audit(draft("after.batch", "x")).await?;
    assert_eq!(
        verify_all(&store).await?,
        151,
        "single appends continue the batched chain"
    );
    Ok(())
}

/// PostgreSQL over TLS: `sslmode=verify-full` with the server's CA connects
/// (and the session really is encrypted); with another CA it is refused.
#[tokio::test]
async fn postgres_over_tls_verifies_the_server() -> TestResult {
    let Some(url) = lanyard_testkit::fresh_postgres("postgres_over_tls_verifies_the_server").await
    else {
        return Ok(());
    };
    let Ok(ca) = std::env::var("LANYARD_TEST_POSTGRES_CA") else {
        eprintln!("SKIPPED (PostgreSQL TLS): set LANYARD_TEST_POSTGRES_CA (scripts/test.sh does)");
        return Ok(());
    };
    let tls_url = format!("{url}?sslmode=verify-full&sslrootcert={ca}");
    let store = lanyard_store::open(&tls_url).await?;
    store
        .create_tenant(tenant("tls")?, draft("tenant.create", "tls"))
        .await?;
    let pool = sqlx::PgPool::connect(&tls_url).await?;
    let (ssl,): (bool,) =
        sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await?;
    assert!(ssl, "the connection is encrypted");
    // A CA that did not sign the server's certificate: refused.
    let dir = tempfile::tempdir()?;
    let (other_ca, _) = lanyard_testkit::self_signed_tls();
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, other_ca)?;
    let err = lanyard_store::open(&format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        other.display()
    ))
    .await
    .err();
    assert!(matches!(err, Some(StoreError::Connect { .. })), "{err:?}");
    Ok(())
}

fn profile(
    id: &str,
    aud: &str,
    tenant: Option<&str>,
    entry: Option<&str>,
    template: Option<&str>,
) -> Result<lanyard_core::AudienceProfile, Box<dyn std::error::Error>> {
    Ok(lanyard_core::AudienceProfile {
        id: id.into(),
        audience: aud.into(),
        tenant: tenant.map(TenantId::parse).transpose()?,
        entry: entry.map(str::to_owned),
        algorithm: Some("RS256".into()),
        subject_template: template
            .map(lanyard_core::SubjectTemplate::parse)
            .transpose()?,
        created_at: 9,
    })
}

conformance!(audience_profiles_are_scoped_unique_and_audited);
async fn audience_profiles_are_scoped_unique_and_audited(url: &str) -> TestResult {
    let store = lanyard_store::open(url).await?;
    for t in ["payments", "shop"] {
        store
            .create_tenant(tenant(t)?, draft("tenant.create", t))
            .await?;
    }
    store
        .create_entry(
            entry("e1", &["k8s:ns:payments"])?,
            draft("entry.create", "e1"),
        )
        .await?;
    let azure = "api://AzureADTokenExchange";
    let global = profile("p1", azure, None, None, None)?;
    let per_tenant = profile(
        "p2",
        azure,
        Some("payments"),
        None,
        Some("tenant/{tenant}/role/{role}"),
    )?;
    let per_entry = profile(
        "p3",
        azure,
        Some("payments"),
        Some("e1"),
        Some("tenant/{tenant}/entry/{entry}"),
    )?;
    let g0 = store.generation("audience_profiles").await?;
    for p in [&global, &per_tenant, &per_entry] {
        store
            .create_audience_profile(p.clone(), draft("audience_profile.create", &p.id))
            .await?;
    }
    assert!(store.generation("audience_profiles").await? > g0);
    assert_eq!(
        store.list_audience_profiles().await?,
        vec![global.clone(), per_tenant.clone(), per_entry.clone()]
    );
    // One profile per audience and scope (NULL scopes included).
    for dup in [
        profile("p4", azure, None, None, None)?,
        profile("p5", azure, Some("payments"), None, Some("tenant/{tenant}"))?,
    ] {
        let got = store
            .create_audience_profile(dup, draft("audience_profile.create", "dup"))
            .await;
        assert!(matches!(got, Err(StoreError::Conflict { .. })), "{got:?}");
    }
    // Another tenant's template for the same audience must put {tenant} at
    // the same place, or subjects of two tenants could collide.
    let moved = store
        .create_audience_profile(
            profile("p6", azure, Some("shop"), None, Some("t/{tenant}/x"))?,
            draft("audience_profile.create", "p6"),
        )
        .await;
    assert!(
        matches!(&moved, Err(StoreError::Conflict { what }) if what.contains("share the text before {tenant}")),
        "{moved:?}"
    );
    store
        .create_audience_profile(
            profile(
                "p7",
                azure,
                Some("shop"),
                None,
                Some("tenant/{tenant}/shop"),
            )?,
            draft("audience_profile.create", "p7"),
        )
        .await?;
    // A different audience may use a different prefix.
    store
        .create_audience_profile(
            profile(
                "p8",
                "sts.amazonaws.com",
                Some("shop"),
                None,
                Some("{tenant}:x"),
            )?,
            draft("audience_profile.create", "p8"),
        )
        .await?;
    // A profile keeps its tenant and entry from being deleted under it.
    let entry_in_use = store.delete_entry("e1", draft("entry.delete", "e1")).await;
    assert!(
        matches!(entry_in_use, Err(StoreError::InUse { .. })),
        "{entry_in_use:?}"
    );
    let unknown_tenant = store
        .create_audience_profile(
            profile("p9", azure, Some("nobody"), None, None)?,
            draft("audience_profile.create", "p9"),
        )
        .await;
    assert!(unknown_tenant.is_err(), "{unknown_tenant:?}");
    store
        .delete_audience_profile("p3", draft("audience_profile.delete", "p3"))
        .await?;
    store
        .delete_entry("e1", draft("entry.delete", "e1"))
        .await?;
    assert!(matches!(
        store
            .delete_audience_profile("p3", draft("audience_profile.delete", "p3"))
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.list_audience_profiles().await?.len(), 4);
    let events = store.list_audit(0, 100).await?;
    assert_eq!(
        events
            .iter()
            .filter(|e| e.draft.action.starts_with("audience_profile."))
            .count(),
        6
    );
    verify_all(&store).await?;
    Ok(())
}

fn lease(id: &str, created_at: i64, expires_at: i64) -> LeaseRow {
    LeaseRow {
        id: id.into(),
        backend: "appdb".into(),
        role: "readonly".into(),
        tenant: "payments".into(),
        spiffe_id: "spiffe://example.org/api".into(),
        entry_id: "e1".into(),
        username: format!("lanyard_readonly_{id}"),
        revocation_keys: vec![
            lanyard_core::RevocationKey::new(lanyard_core::RevocationKind::Entry, "e1"),
            lanyard_core::RevocationKey::new(lanyard_core::RevocationKind::Jti, id),
        ],
        correlation_id: format!("corr-{id}"),
        state: LeaseState::Active,
        created_at,
        expires_at,
        max_expires_at: created_at + 3600,
        attempts: 0,
        next_attempt_at: 0,
        last_error: String::new(),
        revoke_reason: String::new(),
        revoked_at: None,
    }
}

conformance!(broker_backends_roles_and_leases);
async fn broker_backends_roles_and_leases(url: &str) -> TestResult {
    let store = lanyard_store::open(url).await?;
    let role = BrokerRoleRow {
        backend: "appdb".into(),
        name: "readonly".into(),
        creation_sql: "CREATE ROLE \"{{name}}\" PASSWORD '{{password}}'".into(),
        revocation_sql: String::new(),
        ttl_secs: 900,
        max_ttl_secs: 3600,
        created_at: 5,
    };
    let orphan = store
        .create_broker_role(role.clone(), draft("broker.role.create", "appdb/readonly"))
        .await;
    assert!(
        matches!(orphan, Err(StoreError::NotFound { .. })),
        "{orphan:?}"
    );
    let g0 = store.generation("broker").await?;
    let mut backend = BrokerBackendRow {
        name: "appdb".into(),
        kind: "postgres".into(),
        url: "postgres://admin@db/app".into(),
        sealed_secret: vec![1, 2, 3],
        kek_fingerprint: "fp".into(),
        created_at: 5,
        updated_at: 5,
    };
    store
        .create_broker_backend(backend.clone(), draft("broker.backend.create", "appdb"))
        .await?;
    assert!(matches!(
        store
            .create_broker_backend(backend.clone(), draft("broker.backend.create", "appdb"))
            .await,
        Err(StoreError::Conflict { .. })
    ));
    backend.sealed_secret = vec![9; 40];
    backend.updated_at = 6;
    store
        .update_broker_backend(
            backend.clone(),
            draft("broker.backend.rotate-root", "appdb"),
        )
        .await?;
    assert_eq!(store.list_broker_backends().await?, vec![backend]);
    store
        .create_broker_role(role.clone(), draft("broker.role.create", "appdb/readonly"))
        .await?;
    assert_eq!(store.list_broker_roles().await?, vec![role]);
    assert!(store.generation("broker").await? >= g0 + 3);

    store
        .create_lease(lease("l1", 10, 910), draft("lease.create", "l1"))
        .await?;
    store
        .create_lease(lease("l2", 20, 50), draft("lease.create", "l2"))
        .await?;
    assert_eq!(store.fetch_lease("l1").await?, Some(lease("l1", 10, 910)));
    assert_eq!(store.fetch_lease("nope").await?, None);
    let due = |t| LeaseQuery {
        state: Some(LeaseState::Active),
        expires_by: Some(t),
        limit: 100,
        ..LeaseQuery::default()
    };
    let ids = |v: Vec<LeaseRow>| v.into_iter().map(|l| l.id).collect::<Vec<_>>();
    assert_eq!(ids(store.list_leases(due(49)).await?), Vec::<String>::new());
    assert_eq!(ids(store.list_leases(due(50)).await?), vec!["l2"]);

    let mut l2 = lease("l2", 20, 50);
    l2.state = LeaseState::Revoking;
    l2.attempts = 1;
    l2.next_attempt_at = 60;
    l2.last_error = "backend connect failed".into();
    l2.revoke_reason = "expired".into();
    store.update_lease(l2.clone(), Vec::new()).await?;
    let pending = |t| LeaseQuery {
        state: Some(LeaseState::Revoking),
        attempt_due_by: Some(t),
        limit: 100,
        ..LeaseQuery::default()
    };
    assert!(store.list_leases(pending(59)).await?.is_empty());
    assert_eq!(store.list_leases(pending(60)).await?, vec![l2.clone()]);
    l2.state = LeaseState::Revoked;
    l2.revoked_at = Some(61);
    store
        .update_lease(l2.clone(), vec![draft("lease.revoke", "l2")])
        .await?;
    assert_eq!(store.fetch_lease("l2").await?, Some(l2));
    assert!(matches!(
        store.update_lease(lease("l3", 1, 2), Vec::new()).await,
        Err(StoreError::NotFound { .. })
    ));

    // One holder at a time; another takes over after `until`.
    assert!(store.claim_job("broker_reaper", "a", 100, 110).await?);
    assert!(store.claim_job("broker_reaper", "a", 105, 115).await?);
    assert!(!store.claim_job("broker_reaper", "b", 110, 120).await?);
    assert!(store.claim_job("broker_reaper", "b", 115, 125).await?);
    assert!(!store.claim_job("broker_reaper", "a", 116, 126).await?);

    // issue 13: a job's writes are fenced. "a" lost the job to "b": its
    // write is refused and changes nothing; "b"'s goes through.
    let fence = |holder: &str, now| lanyard_store::Fence {
        job: "broker_reaper".into(),
        holder: holder.into(),
        now,
    };
    let mut l1 = lease("l1", 10, 910);
    l1.state = LeaseState::Revoking;
    let head = store.fetch_audit_head().await?;
    assert!(matches!(
        store
            .update_lease_fenced(
                l1.clone(),
                vec![draft("lease.revoke", "l1")],
                Some(&fence("a", 116))
            )
            .await,
        Err(StoreError::Fenced { .. })
    ));
    assert_eq!(store.fetch_lease("l1").await?, Some(lease("l1", 10, 910)));
    assert_eq!(
        store.fetch_audit_head().await?,
        head,
        "no audit event either"
    );
    // Nor may "b" once its own lease has run out.
    assert!(matches!(
        store
            .update_lease_fenced(l1.clone(), Vec::new(), Some(&fence("b", 125)))
            .await,
        Err(StoreError::Fenced { .. })
    ));
    store
        .update_lease_fenced(
            l1.clone(),
            vec![draft("lease.revoke", "l1")],
            Some(&fence("b", 120)),
        )
        .await?;
    assert_eq!(store.fetch_lease("l1").await?, Some(l1));
    // The same fence guards checkpoints and key rotation.
    assert!(store.claim_job("audit_checkpoint", "c", 100, 200).await?);
    let cp = lanyard_store::CheckpointRow {
        seq: 1,
        hash: "h".into(),
        at_ms: 1,
        kid: "k".into(),
        jws: "a.b.c".into(),
    };
    let cp_fence = |holder: &str| lanyard_store::Fence {
        job: "audit_checkpoint".into(),
        holder: holder.into(),
        now: 150,
    };
    assert!(matches!(
        store
            .create_audit_checkpoint_fenced(cp.clone(), Some(&cp_fence("x")))
            .await,
        Err(StoreError::Fenced { .. })
    ));
    assert!(store.list_audit_checkpoints(10).await?.is_empty());
    store
        .create_audit_checkpoint_fenced(cp.clone(), Some(&cp_fence("c")))
        .await?;
    assert_eq!(store.list_audit_checkpoints(10).await?, vec![cp]);
    let planner = |_: &[SigningKeyRow]| Ok((Vec::new(), Vec::new()));
    let rotation = lanyard_store::Fence {
        job: "key_rotation".into(),
        holder: "nobody".into(),
        now: 1,
    };
    assert!(matches!(
        store
            .update_signing_keys_fenced(&planner, Some(&rotation))
            .await,
        Err(StoreError::Fenced { .. })
    ));
    verify_all(&store).await?;
    Ok(())
}

// issue 13: every cached change gets a gap-free revision in its own
// transaction; a batch is all or nothing; other replicas are woken.
conformance!(the_change_log_is_gap_free_and_transactional);
async fn the_change_log_is_gap_free_and_transactional(url: &str) -> TestResult {
    use lanyard_store::{ChangeKind, EntryBatch};
    let store = lanyard_store::open(url).await?;
    let watch = store.watch_changes().await?;
    assert_eq!(watch.is_some(), url.starts_with("postgres"));
    store
        .create_tenant(tenant("payments")?, draft("tenant.create", "payments"))
        .await?;
    let (epoch, start) = store.fetch_change_head().await?;
    assert!(!epoch.is_empty());
    let node =
        |n: &str| lanyard_core::SpiffeId::parse(&format!("spiffe://example.org/lanyard/node/{n}"));
    let mut a = entry("a", &["unix:uid:1"])?;
    a.issuer = None;
    a.parent = Some(node("n1")?);
    store
        .create_entry(a.clone(), draft("entry.create", "a"))
        .await?;
    let mut moved = a.clone();
    moved.parent = Some(node("n2")?);
    store
        .update_entry(moved, draft("entry.update", "a"))
        .await?;
    store.delete_entry("a", draft("entry.delete", "a")).await?;
    store
        .create_revocation(
            lanyard_store::Revocation {
                kind: lanyard_core::RevocationKind::Jti,
                value: "j".into(),
                reason: "r".into(),
                until: None,
                created_at: 1,
                actor: "t".into(),
            },
            draft("revoke", "j"),
        )
        .await?;
    let changes = store.list_changes(start, 100).await?;
    let got: Vec<(i64, ChangeKind, String, String, bool)> = changes
        .iter()
        .map(|c| {
            (
                c.revision,
                c.change.kind,
                c.change.old_parent.clone(),
                c.change.new_parent.clone(),
                c.change.deleted,
            )
        })
        .collect();
    let n1 = "spiffe://example.org/lanyard/node/n1".to_owned();
    let n2 = "spiffe://example.org/lanyard/node/n2".to_owned();
    assert_eq!(
        got,
        vec![
            (
                start + 1,
                ChangeKind::Entry,
                String::new(),
                n1.clone(),
                false
            ),
            (start + 2, ChangeKind::Entry, n1, n2.clone(), false),
            (start + 3, ChangeKind::Entry, n2, String::new(), true),
            (
                start + 4,
                ChangeKind::Revocation,
                String::new(),
                String::new(),
                false
            ),
        ]
    );
    assert_eq!(store.fetch_change_head().await?, (epoch.clone(), start + 4));
    // A batch: all or nothing, one revision per change.
    let mk = |id: &str| -> Result<lanyard_core::Entry, Box<dyn std::error::Error>> {
        let mut e = entry(id, &[&format!("k8s:sa:{id}")])?;
        e.spiffe_id = lanyard_core::SpiffeId::parse(&format!("spiffe://example.org/b/{id}"))?;
        Ok(e)
    };
    let batch = EntryBatch {
        create: vec![mk("b1")?, mk("b2")?, mk("b3")?],
        ..EntryBatch::default()
    };
    let audits = (1..=3)
        .map(|i| draft("entry.create", &format!("b{i}")))
        .collect();
    let rev = store.apply_entries(batch, audits).await?;
    assert_eq!(rev, start + 7);
    let mut b2 = mk("b2")?;
    b2.scopes = vec!["changed".into()];
    let mut dup = mk("b9")?;
    dup.selectors = mk("b1")?.selectors; // same issuer and selector set as b1
    let failing = EntryBatch {
        update: vec![b2],
        delete: vec!["b3".into()],
        create: vec![dup],
    };
    let audits = (0..3).map(|_| draft("entry.apply", "x")).collect();
    assert!(store.apply_entries(failing, audits).await.is_err());
    assert_eq!(
        store.fetch_change_head().await?.1,
        rev,
        "nothing of a failed batch stays"
    );
    let ids = [
        "b1".to_owned(),
        "b2".to_owned(),
        "b3".to_owned(),
        "nope".to_owned(),
    ];
    let fetched = store.fetch_entries(&ids).await?;
    assert_eq!(fetched.len(), 3);
    assert!(fetched
        .iter()
        .all(|e| e.scopes != vec!["changed".to_owned()]));
    // Concurrent writers: gap-free, unique revisions.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = store.clone();
        let e = mk(&format!("c{i}"))?;
        tasks.push(tokio::spawn(async move {
            s.create_entry(e, draft("entry.create", "c")).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let revs: Vec<i64> = store
        .list_changes(rev, 100)
        .await?
        .iter()
        .map(|c| c.revision)
        .collect();
    assert_eq!(revs, ((rev + 1)..=(rev + 8)).collect::<Vec<_>>());
    // Another replica is woken by a change (PostgreSQL).
    if let Some(mut rx) = watch {
        while rx.try_recv().is_ok() {}
        let other = lanyard_store::open(url).await?;
        other
            .create_entry(mk("w")?, draft("entry.create", "w"))
            .await?;
        let woke = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await;
        assert!(matches!(woke, Ok(Some(()))), "no wake-up");
    }
    verify_all(&store).await?;
    Ok(())
}

conformance!(federated_trust_domains_guard_sequence_and_users);
async fn federated_trust_domains_guard_sequence_and_users(url: &str) -> TestResult {
    use lanyard_store::{ChangeKind, FederatedRow};
    let store = lanyard_store::open(url).await?;
    store
        .create_tenant(tenant("payments")?, draft("tenant.create", "payments"))
        .await?;
    let row = |td: &str, endpoint: &str, bundle: &str| FederatedRow {
        trust_domain: td.into(),
        tenant: "payments".into(),
        endpoint: endpoint.into(),
        bundle: bundle.into(),
        sequence: 3,
        status: "{}".into(),
        created_at: 10,
        updated_at: 10,
    };
    let g0 = store.generation("federation").await?;
    let (_, head0) = store.fetch_change_head().await?;
    // A static bundle, then a relationship on top of it keeps the bundle.
    assert!(
        store
            .put_bundle(
                "other.org",
                "{\"keys\":[1]}",
                3,
                Some("payments"),
                None,
                10,
                draft("bundle.set", "other.org")
            )
            .await?
    );
    store
        .create_federation(
            row("other.org", "{\"url\":\"https://x\"}", ""),
            draft("federation.create", "other.org"),
        )
        .await?;
    let got = store.fetch_federated("other.org").await?.ok_or("missing")?;
    assert_eq!(
        (got.bundle.as_str(), got.sequence, got.tenant.as_str()),
        ("{\"keys\":[1]}", 3, "payments")
    );
    assert!(matches!(
        store
            .create_federation(
                row("other.org", "{\"url\":\"https://y\"}", ""),
                draft("federation.create", "other.org")
            )
            .await,
        Err(StoreError::Conflict { .. })
    ));
    // A refresh that read sequence 3 wins once; a racing one that read 2 loses.
    assert!(
        store
            .put_bundle(
                "other.org",
                "{\"keys\":[2]}",
                4,
                None,
                Some(3),
                11,
                draft("federation.bundle.update", "other.org")
            )
            .await?
    );
    assert!(
        !store
            .put_bundle(
                "other.org",
                "{\"keys\":[3]}",
                5,
                None,
                Some(3),
                12,
                draft("federation.bundle.update", "other.org")
            )
            .await?
    );
    let got = store.fetch_federated("other.org").await?.ok_or("missing")?;
    assert_eq!(
        (got.bundle.as_str(), got.sequence, got.tenant.as_str()),
        ("{\"keys\":[2]}", 4, "payments")
    );
    // Status is recorded without a change-log entry; a refusal is audited.
    let (_, before) = store.fetch_change_head().await?;
    let mut refused = draft("federation.bundle.refuse", "other.org");
    refused.decision = Decision::Deny;
    store
        .set_federation_status("other.org", "{\"failures\":1}", Some(refused))
        .await?;
    assert_eq!(store.fetch_change_head().await?.1, before);
    assert_eq!(
        store
            .fetch_federated("other.org")
            .await?
            .ok_or("missing")?
            .status,
        "{\"failures\":1}"
    );
    assert!(store.generation("federation").await? > g0);
    let changes = store.list_changes(head0, 100).await?;
    assert!(
        changes.iter().all(|c| c.change.kind == ChangeKind::Bundle) && changes.len() == 3,
        "{changes:?}"
    );
    // An entry federating with it keeps it; so does a spiffe:id mapping.
    let mut e = entry("e1", &["unix:uid:1"])?;
    e.issuer = None;
    e.parent = Some(lanyard_core::SpiffeId::parse(
        "spiffe://example.org/lanyard/node/n1",
    )?);
    e.federates_with = vec!["other.org".into()];
    store
        .create_entry(e.clone(), draft("entry.create", "e1"))
        .await?;
    assert_eq!(
        store.list_entries().await?[0].federates_with,
        vec!["other.org".to_owned()]
    );
    match store
        .delete_federated("other.org", draft("federation.delete", "other.org"))
        .await
    {
        Err(StoreError::InUse { what }) => assert!(what.contains("e1"), "{what}"),
        other => panic!("{other:?}"),
    }
    store
        .delete_entry("e1", draft("entry.delete", "e1"))
        .await?;
    let mut m = entry("m1", &["spiffe:id:spiffe://other.org/billing"])?;
    m.issuer = None;
    store.create_entry(m, draft("entry.create", "m1")).await?;
    assert!(matches!(
        store
            .delete_federated("other.org", draft("federation.delete", "other.org"))
            .await,
        Err(StoreError::InUse { .. })
    ));
    store
        .delete_entry("m1", draft("entry.delete", "m1"))
        .await?;
    store
        .delete_federated("other.org", draft("federation.delete", "other.org"))
        .await?;
    assert!(store.fetch_federated("other.org").await?.is_none());
    assert!(matches!(
        store
            .delete_federated("other.org", draft("federation.delete", "other.org"))
            .await,
        Err(StoreError::NotFound { .. })
    ));
    verify_all(&store).await?;
    Ok(())
}
