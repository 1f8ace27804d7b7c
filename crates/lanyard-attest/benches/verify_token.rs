//! The cost of attesting one Kubernetes projected token, ES256 and RS256:
//! cold (a token never seen, cache off: parse, signature, claims,
//! selectors, digest) and warm (the same token again, answered by the
//! verified-token cache), beside the bare signature verification of
//! `lanyard_jose` on the same token. Issue 14's "realistic variants".
//!
//! `cargo bench -p lanyard-attest --bench verify_token`

// Tests and benchmarks fail by panicking and index fixtures they built.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use lanyard_attest::{Attestor, IssuerConfig, IssuerKind, KeySource, TenantBinding};
use lanyard_core::{Clock, TenantId};
use lanyard_jose::Algorithm;
use lanyard_testkit::tokens::TestIssuer;
use lanyard_testkit::FakeClock;

const ISS: &str = "https://kubernetes.default.svc.cluster.local";

fn attestor(issuer: &TestIssuer, alg: Algorithm, clock: &FakeClock, cache: usize) -> Attestor {
    let mut config = IssuerConfig::new(
        "k8s",
        IssuerKind::Kubernetes,
        ISS,
        KeySource::JwksInline(issuer.jwks()),
        "lanyard",
        TenantBinding::Fixed(TenantId::parse("dev").unwrap()),
    );
    config.algorithms = vec![alg];
    let clock: Arc<dyn Clock> = Arc::new(clock.clone());
    Attestor::new(vec![config], clock, reqwest::Client::new())
        .unwrap()
        .with_verified_cache(cache)
}

fn verify(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (name, alg) in [("es256", Algorithm::Es256), ("rs256", Algorithm::Rs256)] {
        let clock = FakeClock::new();
        let issuer = TestIssuer::new(ISS, alg);
        let token = issuer.sign(&issuer.k8s_claims(clock.unix_seconds(), "bench", "api"));
        let cold = attestor(&issuer, alg, &clock, 0);
        let warm = attestor(&issuer, alg, &clock, 1000);
        rt.block_on(warm.verify(&token)).unwrap();
        let keys = issuer.jwks();
        let key = lanyard_jose::VerifyingKey::from_jwk(&keys.keys[0]).unwrap();
        c.bench_function(&format!("verify_token/{name}/signature_only"), |b| {
            b.iter(|| lanyard_jose::verify_compact(black_box(&token), [&key], &[alg]).unwrap())
        });
        c.bench_function(&format!("verify_token/{name}/cold"), |b| {
            b.iter(|| rt.block_on(cold.verify(black_box(&token))).unwrap())
        });
        c.bench_function(&format!("verify_token/{name}/warm"), |b| {
            b.iter(|| rt.block_on(warm.verify(black_box(&token))).unwrap())
        });
    }
}

criterion_group!(benches, verify);
criterion_main!(benches);
