//! The Workload API's attestation cost per call: `attest()` of this very
//! process through the real `/proc` (unix selectors, the binary's digest
//! from the cache after the first call), and the cgroup parser.
//!
//! `cargo bench -p lanyard-attest --bench workload_attest`

// Tests and benchmarks fail by panicking and index fixtures they built.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::os::unix::fs::MetadataExt as _;

use criterion::{criterion_group, criterion_main, Criterion};
use lanyard_attest::workload::{parse_cgroup, PeerCred, WorkloadAttestConfig, WorkloadAttestor};

fn attest_self(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
    let me = std::fs::metadata("/proc/self").unwrap_or_else(|e| panic!("/proc/self: {e}"));
    let cred = PeerCred {
        pid: i32::try_from(std::process::id()).ok(),
        uid: me.uid(),
        gid: me.gid(),
    };
    let attestor = WorkloadAttestor::new(WorkloadAttestConfig::default())
        .unwrap_or_else(|e| panic!("attestor: {e}"));
    // Warm the digest cache: the agent hashes a binary once.
    rt.block_on(attestor.attest(&cred))
        .unwrap_or_else(|e| panic!("attest: {e}"));
    c.bench_function("workload_attest/self_cached_digest", |b| {
        b.iter(|| rt.block_on(attestor.attest(black_box(&cred))))
    });
}

fn cgroup(c: &mut Criterion) {
    let text = "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6f0e4a1c_3b2d_4c5e_9f8a_7b6c5d4e3f21.slice/cri-containerd-4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b.scope\n";
    c.bench_function("workload_attest/parse_cgroup_v2", |b| {
        b.iter(|| parse_cgroup(1, black_box(text)))
    });
}

criterion_group!(benches, attest_self, cgroup);
criterion_main!(benches);
