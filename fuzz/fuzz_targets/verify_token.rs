//! Fuzzes token handling from untrusted bytes.
//!
//! The first byte picks the mode:
//! - even: the rest is a token. `parse_unverified` (the synchronous entry
//!   point `verify` starts with) must answer without panicking, and the full
//!   `Attestor::verify` must refuse it (nothing here is signed by the trusted
//!   key, so acceptance would be a forgery).
//! - odd: the rest is a claims payload, signed with the trusted key, so the
//!   claim checks and selector derivation see arbitrary JSON. They must not
//!   panic; acceptance is allowed, but the evidence must be well formed.

#![no_main]

use std::sync::{Arc, OnceLock};

use lanyard_attest::{
    parse_unverified, Attestor, IssuerConfig, IssuerKind, KeySource, TenantBinding,
};
use lanyard_core::{Clock, TenantId};
use lanyard_jose::{Algorithm, Jwks, SigningKey};
use libfuzzer_sys::fuzz_target;

/// A clock stopped at 2026-01-01T00:00:00Z, so runs are reproducible and
/// seed tokens with `iat` = 1767225600 stay valid.
#[derive(Debug)]
struct Fixed;

impl Clock for Fixed {
    fn now(&self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600)
    }
}

struct Fixture {
    key: SigningKey,
    attestor: Attestor,
    runtime: tokio::runtime::Runtime,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let (key, _) = SigningKey::generate(Algorithm::Es256).expect("key generation");
        let jwks = Jwks {
            keys: vec![key.public_jwk()],
        };
        let tenant = TenantBinding::Fixed(TenantId::parse("fuzz").expect("valid tenant"));
        let configs = [
            ("k8s", IssuerKind::Kubernetes, "https://k8s.fuzz"),
            ("gha", IssuerKind::GithubActions, "https://gha.fuzz"),
            ("gitlab", IssuerKind::Gitlab, "https://gitlab.fuzz"),
            ("oidc", IssuerKind::Oidc, "https://oidc.fuzz"),
        ]
        .into_iter()
        .map(|(name, kind, iss)| {
            IssuerConfig::new(
                name,
                kind,
                iss,
                KeySource::JwksInline(jwks.clone()),
                "lanyard",
                tenant.clone(),
            )
        })
        .collect();
        let clock: Arc<dyn Clock> = Arc::new(Fixed);
        let attestor =
            Attestor::new(configs, clock, reqwest::Client::new()).expect("valid configuration");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        Fixture {
            key,
            attestor,
            runtime,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    if mode % 2 == 0 {
        let token = String::from_utf8_lossy(rest);
        let _ = parse_unverified(&token);
        let result = f.runtime.block_on(f.attestor.verify(&token));
        assert!(result.is_err(), "an unsigned input was accepted");
    } else if let Ok(claims) = serde_json::from_slice::<serde_json::Value>(rest) {
        let Ok(token) = lanyard_jose::encode_jwt(&f.key, &claims) else {
            return;
        };
        if let Ok(ev) = f.runtime.block_on(f.attestor.verify(&token)) {
            assert!(!ev.subject.is_empty());
            assert!(ev
                .selectors
                .windows(2)
                .all(|w| matches!(w, [a, b] if a < b)));
            assert_eq!(ev.digest.len(), 64);
        }
    }
});
