//! Cost of signing one X.509-SVID from a CSR (`Authority::sign_svid`: parse
//! the CSR, verify its signature, build and sign the certificate, parse it
//! back and check it) next to the raw cost of the two signature operations
//! it cannot avoid, one ECDSA P-256 verify and one ECDSA P-256 sign with
//! aws-lc-rs, so the ratio to that floor is known (issue 4).
//! Run: `cargo bench -p lanyard-ca --bench sign_svid`.

// Tests and benchmarks fail by panicking and index fixtures they built.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING,
};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use lanyard_ca::x509::{Authority, X509SvidParams};
use lanyard_core::{SpiffeId, TrustDomain};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::{FromDer as _, X509Certificate};

/// Distinct CSRs, used round robin, so no cache of any kind can help.
const CSRS: usize = 1000;

/// A fresh P-256 key in a CSR with the URI SAN a SPIFFE workload would ask for.
fn csr(i: usize) -> Vec<u8> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen");
    let mut p = rcgen::CertificateParams::default();
    p.subject_alt_names = vec![rcgen::SanType::URI(
        format!("spiffe://example.org/bench/x509/{i}")
            .try_into()
            .expect("ia5"),
    )];
    p.serialize_request(&key).expect("csr").der().to_vec()
}

fn bench(c: &mut Criterion) {
    let td = TrustDomain::parse("example.org").expect("td");
    let id = SpiffeId::parse("spiffe://example.org/ns/payments/sa/api").expect("id");
    let now = SystemTime::now();
    let day = Duration::from_secs(24 * 3600);
    let ca = Authority::generate(&td, now, 365 * day, 30 * day).expect("ca");
    let csrs: Vec<Vec<u8>> = (0..CSRS).map(csr).collect();
    let params = |der: &'static [u8]| X509SvidParams {
        spiffe_id: &id,
        csr_der: der,
        dns_names: &[],
        kind: lanyard_ca::x509::SvidKind::Workload,
        ttl: Duration::from_secs(3600),
        now,
    };
    let csrs: &'static [Vec<u8>] = Box::leak(csrs.into_boxed_slice());
    let leaf = ca.sign_svid(&params(&csrs[0])).expect("sign").cert_der;

    // The pieces of the raw floor: the CSR's own signature, and a signature
    // over a to-be-signed certificate of the real SVID's length.
    let parsed: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = csrs
        .iter()
        .map(|der| {
            let (_, r) = X509CertificationRequest::from_der(der).expect("csr parses");
            (
                r.certification_request_info.raw.to_vec(),
                r.certification_request_info
                    .subject_pki
                    .subject_public_key
                    .data
                    .to_vec(),
                r.signature_value.data.to_vec(),
            )
        })
        .collect();
    let (_, leaf_cert) = X509Certificate::from_der(&leaf).expect("leaf parses");
    let tbs = leaf_cert.tbs_certificate.as_ref().to_vec();
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("key");
    let signer =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).expect("key");

    let mut group = c.benchmark_group("x509_svid");
    let mut i = 0usize;
    group.bench_function("sign_svid", |b| {
        b.iter(|| {
            i = (i + 1) % CSRS;
            ca.sign_svid(black_box(&params(&csrs[i]))).expect("sign")
        })
    });
    let mut i = 0usize;
    group.bench_function("raw/verify_csr+sign_tbs", |b| {
        b.iter(|| {
            i = (i + 1) % CSRS;
            let (info, key, sig) = &parsed[i];
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, key)
                .verify(black_box(info), sig)
                .expect("verify");
            signer.sign(&rng, black_box(&tbs)).expect("sign")
        })
    });
    let mut i = 0usize;
    group.bench_function("raw/verify_csr", |b| {
        b.iter(|| {
            i = (i + 1) % CSRS;
            let (info, key, sig) = &parsed[i];
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, key)
                .verify(black_box(info), sig)
                .expect("verify")
        })
    });
    group.bench_function("raw/sign_tbs", |b| {
        b.iter(|| signer.sign(&rng, black_box(&tbs)).expect("sign"))
    });
    // Parsing, which sign_svid does twice (the CSR, and the SVID it checks).
    let mut i = 0usize;
    group.bench_function("parts/parse_csr", |b| {
        b.iter(|| {
            i = (i + 1) % CSRS;
            X509CertificationRequest::from_der(black_box(&csrs[i])).expect("parse")
        })
    });
    group.bench_function("parts/parse_svid_extensions", |b| {
        b.iter(|| {
            let (_, cert) = X509Certificate::from_der(black_box(&leaf)).expect("parse");
            cert.extensions()
                .iter()
                .filter(|e| !e.parsed_extension().unsupported())
                .count()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
