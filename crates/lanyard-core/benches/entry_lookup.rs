//! Entry lookup with 100,000 entries: criterion for the typical cost, plus an
//! explicit p99 over 100,000 lookups of random workloads (criterion reports
//! central figures only). Run: `cargo bench -p lanyard-core --bench entry_lookup`.

// Tests and benchmarks fail by panicking and index fixtures they built.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Instant;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use lanyard_core::{EntryIndex, Evidence, Selector, SpiffeId, TenantId};

const ENTRIES: usize = 100_000;

fn entries() -> Vec<lanyard_core::Entry> {
    // 1,000 namespaces x 100 service accounts, all in one cluster: every
    // entry shares `k8s:cluster:prod`, 100 share each namespace.
    (0..ENTRIES)
        .map(|i| {
            let mut selectors = vec![
                Selector::new("k8s", "ns", &format!("ns{}", i / 100)).expect("valid"),
                Selector::new("k8s", "sa", &format!("sa{}", i % 100)).expect("valid"),
                Selector::new("k8s", "cluster", "prod").expect("valid"),
            ];
            selectors.sort();
            lanyard_core::Entry {
                id: format!("e{i}"),
                spiffe_id: SpiffeId::parse(&format!(
                    "spiffe://example.org/ns/ns{}/sa/sa{}",
                    i / 100,
                    i % 100
                ))
                .expect("valid"),
                tenant: TenantId::parse("t").expect("valid"),
                issuer: None,
                parent: None,
                dns_names: Vec::new(),
                selectors,
                audiences: vec![],
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
            }
        })
        .collect()
}

/// Evidence as a Kubernetes token gives it: 7 selectors.
fn evidence(i: usize) -> Evidence {
    let mut selectors: Vec<Selector> = [
        ("ns", format!("ns{}", i / 100)),
        ("sa", format!("sa{}", i % 100)),
        ("cluster", "prod".into()),
        ("sa-uid", format!("uid-{i}")),
        ("pod-name", format!("pod-{i}")),
        ("pod-uid", format!("pod-uid-{i}")),
        ("node-name", "node-1".into()),
    ]
    .iter()
    .map(|(k, v)| Selector::new("k8s", k, v).expect("valid"))
    .collect();
    selectors.sort();
    Evidence {
        issuer: "k8s".into(),
        tenant: None,
        subject: String::new(),
        selectors,
        jti: None,
        expires_at: 0,
        digest: String::new(),
        revocation_keys: vec![],
    }
}

fn bench(c: &mut Criterion) {
    let built = Instant::now();
    let index = EntryIndex::new(entries());
    eprintln!("index of {ENTRIES} entries built in {:?}", built.elapsed());
    let probes: Vec<Evidence> = (0..1000).map(|i| evidence((i * 7919) % ENTRIES)).collect();
    let mut n = 0usize;
    c.bench_function("entry_lookup/100k", |b| {
        b.iter(|| {
            n = (n + 1) % probes.len();
            index.find(black_box(&probes[n])).expect("match")
        })
    });

    // p99 over 100,000 lookups of distinct workloads.
    let mut samples: Vec<u128> = (0..ENTRIES)
        .map(|i| {
            let ev = evidence((i * 7919) % ENTRIES);
            let t = Instant::now();
            black_box(index.find(&ev).expect("match"));
            t.elapsed().as_nanos()
        })
        .collect();
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    eprintln!(
        "entry_lookup/100k over {} lookups: p50 {:.2} µs, p99 {:.2} µs, max {:.2} µs",
        samples.len(),
        pct(0.50) as f64 / 1000.0,
        pct(0.99) as f64 / 1000.0,
        *samples.last().unwrap_or(&0) as f64 / 1000.0
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
