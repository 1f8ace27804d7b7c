//! Cost of signing (and verifying) one JWT-SVID-shaped token, next to the raw
//! signature cost of aws-lc-rs, so we know how far the token path is from the
//! limit. Run: `cargo bench -p lanyard-jose --bench sign`.

// Tests and benchmarks fail by panicking and index fixtures they built.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair as _, RsaKeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256,
};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use lanyard_jose::{encode_jwt, verify_compact, Algorithm, SigningKey};
use serde::Serialize;

/// The claims Lanyard puts in a delegated JWT-SVID.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: [&'a str; 1],
    exp: i64,
    iat: i64,
    jti: &'a str,
    tenant: &'a str,
}

const CLAIMS: Claims<'static> = Claims {
    iss: "https://lanyard.example.org",
    sub: "spiffe://example.org/ns/payments/sa/api",
    aud: ["api://AzureADTokenExchange"],
    exp: 1_767_225_900,
    iat: 1_767_225_600,
    jti: "2f6c1a3e9b0d4c7f8e5a1b2c3d4e5f60",
    tenant: "payments",
};

fn bench(c: &mut Criterion) {
    let rng = SystemRandom::new();
    // A signing input of the same length as a real token's header.payload.
    let token_es = {
        let (k, _) = SigningKey::generate(Algorithm::Es256).expect("keygen");
        encode_jwt(&k, &CLAIMS).expect("sign")
    };
    let input_len = token_es
        .rsplit_once('.')
        .map_or(0, |(signed, _)| signed.len());
    let input = vec![b'a'; input_len];

    let mut group = c.benchmark_group("jwt_svid");
    for alg in [Algorithm::Es256, Algorithm::Rs256] {
        let (key, _) = SigningKey::generate(alg).expect("keygen");
        let verifier = [key.verifying_key().expect("verifier")];
        let token = encode_jwt(&key, &CLAIMS).expect("sign");
        group.bench_function(format!("sign/{alg}"), |b| {
            b.iter(|| encode_jwt(&key, black_box(&CLAIMS)).expect("sign"))
        });
        group.bench_function(format!("verify/{alg}"), |b| {
            b.iter(|| {
                verify_compact(black_box(&token), &verifier, &Algorithm::ALL).expect("verify")
            })
        });
    }
    group.finish();

    let mut raw = c.benchmark_group("raw_aws_lc_rs");
    let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("keygen");
    let ec_sig = ec.sign(&rng, &input).expect("sign");
    let ec_pub =
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, ec.public_key().as_ref().to_vec());
    raw.bench_function("sign/ES256", |b| {
        b.iter(|| ec.sign(&rng, black_box(&input)).expect("sign"))
    });
    raw.bench_function("verify/ES256", |b| {
        b.iter(|| {
            ec_pub
                .verify(black_box(&input), ec_sig.as_ref())
                .expect("verify")
        })
    });
    let rsa = RsaKeyPair::generate(KeySize::Rsa2048).expect("keygen");
    let mut rsa_sig = vec![0; rsa.public_modulus_len()];
    rsa.sign(&RSA_PKCS1_SHA256, &rng, &input, &mut rsa_sig)
        .expect("sign");
    let rsa_pub = UnparsedPublicKey::new(
        &RSA_PKCS1_2048_8192_SHA256,
        rsa.public_key().as_ref().to_vec(),
    );
    raw.bench_function("sign/RS256", |b| {
        b.iter(|| {
            let mut sig = vec![0; rsa.public_modulus_len()];
            rsa.sign(&RSA_PKCS1_SHA256, &rng, black_box(&input), &mut sig)
                .expect("sign");
            sig
        })
    });
    raw.bench_function("verify/RS256", |b| {
        b.iter(|| rsa_pub.verify(black_box(&input), &rsa_sig).expect("verify"))
    });
    raw.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
