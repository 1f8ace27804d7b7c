//! Bulk-loads registration entries straight into a store, for the memory
//! benchmark in `bench/entries/rss.sh`.
//!
//! `cargo run --release -p lanyard-server --example load_entries -- STORE_URL COUNT TENANT`

use lanyard_core::{Decision, Entry, Selector, SpiffeId, TenantId};
use lanyard_store::AuditDraft;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: load_entries STORE_URL COUNT TENANT")?;
    let count: usize = args.next().ok_or("COUNT missing")?.parse()?;
    let tenant = TenantId::parse(&args.next().ok_or("TENANT missing")?)?;
    let store = lanyard_store::open(&url).await?;
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let (store, tenant) = (store.clone(), tenant.clone());
        tasks.spawn(async move {
            for i in (worker..count).step_by(8) {
                let (ns, sa) = (i / 100, i % 100);
                let mut selectors = vec![
                    Selector::parse(&format!("k8s:ns:bulk{ns}"))?,
                    Selector::parse(&format!("k8s:sa:sa{sa}"))?,
                ];
                selectors.sort();
                let entry = Entry {
                    id: format!("bulk{i:06}"),
                    spiffe_id: SpiffeId::parse(&format!(
                        "spiffe://example.org/ns/bulk{ns}/sa/sa{sa}"
                    ))?,
                    tenant: tenant.clone(),
                    issuer: None,
                    parent: None,
                    dns_names: Vec::new(),
                    selectors,
                    audiences: vec!["api://bench".into()],
                    ttl: None,
                    max_ttl: None,
                    scopes: vec![],
                    may_act: vec![],
                    admin: false,
                    token_reviewer: false,
                    grants: Vec::new(),
                    role: None,
                    federates_with: Vec::new(),
                    created_at: 0,
                };
                let audit = AuditDraft {
                    at_ms: 0,
                    correlation_id: format!("bulk-{i}"),
                    actor: "bench:load_entries".into(),
                    action: "entry.create".into(),
                    subject: entry.id.clone(),
                    tenant: Some(tenant.to_string()),
                    decision: Decision::Allow,
                    reason: "bulk load".into(),
                    evidence_digest: None,
                };
                store.create_entry(entry, audit).await?;
                if i % 10_000 == 0 {
                    eprintln!("load_entries: {i}/{count}");
                }
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done?.map_err(|e| e.to_string())?;
    }
    eprintln!("load_entries: {count} entries in {:?}", started.elapsed());
    Ok(())
}
