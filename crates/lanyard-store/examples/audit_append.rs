//! Audit group-commit throughput over time, straight against a store.
//!
//! `cargo run --release -p lanyard-store --example audit_append -- STORE_URL BATCHES BATCH_SIZE`
//! Prints events/s for each tenth of the run, so slow-downs as the table and
//! the WAL grow are visible.

use std::time::Instant;

use lanyard_core::Decision;
use lanyard_store::AuditDraft;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: audit_append STORE_URL BATCHES BATCH_SIZE")?;
    let batches: usize = args.next().ok_or("BATCHES missing")?.parse()?;
    let size: usize = args.next().ok_or("BATCH_SIZE missing")?.parse()?;
    let store = lanyard_store::open(&url).await?;
    let tenth = (batches / 10).max(1);
    let mut t = Instant::now();
    let started = Instant::now();
    for b in 0..batches {
        let drafts = (0..size)
            .map(|i| AuditDraft {
                at_ms: 1_767_225_600_000 + (b * size + i) as i64,
                correlation_id: format!("{:032x}", (b * size + i) as u128 * 0x9e37_79b9_7f4a_7c15),
                actor: "spiffe://example.org/ns/bench/sa/api".into(),
                action: "token.exchange".into(),
                subject: "spiffe://example.org/ns/bench/sa/api".into(),
                tenant: Some("dev".into()),
                decision: Decision::Allow,
                reason: "issued jti=0123456789abcdef0123456789abcdef ttl=300s".into(),
                evidence_digest: Some(
                    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
                ),
            })
            .collect();
        store.append_audit_batch(drafts).await?;
        if (b + 1) % tenth == 0 {
            let rate = (tenth * size) as f64 / t.elapsed().as_secs_f64();
            println!("after {:>7} events: {rate:>9.0} events/s", (b + 1) * size);
            t = Instant::now();
        }
    }
    println!(
        "total {} events in {:.2}s",
        batches * size,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
