//! lanyard-attest through its public API: the fail-closed table, selectors
//! per issuer kind, remote keys (cache, refresh, rate limit, single flight,
//! grace) against a JWKS server on loopback, TokenReview against a stub API
//! server, configuration, explain, and property tests. Time is a
//! `FakeClock`; nothing sleeps.

// Tests and benchmarks fail by panicking and index fixtures they built.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod config;
mod explain;
mod fail_closed;
mod kinds;
mod props;
mod remote;
mod token_review;
mod verified_cache;
mod workload;

use std::sync::Arc;

use lanyard_attest::{Attestor, IssuerConfig, IssuerKind, KeySource, TenantBinding};
use lanyard_core::{Clock, Denial, DenyReason, Evidence, TenantId};
use lanyard_jose::{Algorithm, Jwks};
use lanyard_testkit::tokens::TestIssuer;
use lanyard_testkit::FakeClock;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

pub const K8S_ISS: &str = "https://k8s.test";
pub const AUD: &str = "lanyard";

/// A configuration with the test defaults: audience `lanyard`, tenant
/// `payments`, ES256 only.
pub fn config(name: &str, kind: IssuerKind, iss: &str, keys: KeySource) -> IssuerConfig {
    let mut c = IssuerConfig::new(
        name,
        kind,
        iss,
        keys,
        AUD,
        TenantBinding::Fixed(tenant("payments")),
    );
    c.algorithms = vec![Algorithm::Es256];
    c
}

pub fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap_or_else(|e| panic!("test tenant {name:?}: {e}"))
}

pub fn inline(jwks: Jwks) -> KeySource {
    KeySource::JwksInline(jwks)
}

pub fn attestor(configs: Vec<IssuerConfig>, clock: &FakeClock) -> Attestor {
    let clock: Arc<dyn Clock> = Arc::new(clock.clone());
    Attestor::new(configs, clock, reqwest::Client::new())
        .unwrap_or_else(|e| panic!("test attestor: {e}"))
}

/// The denial reason, or `None` for evidence.
pub fn reason(r: &Result<Evidence, Denial>) -> Option<DenyReason> {
    r.as_ref().err().map(|d| d.reason)
}

pub fn selectors(ev: &Evidence) -> Vec<String> {
    ev.selectors.iter().map(ToString::to_string).collect()
}

/// A Kubernetes issuer `k8s` with inline keys and the fake clock.
pub fn k8s_setup() -> (FakeClock, TestIssuer, Attestor) {
    let clock = FakeClock::new();
    let issuer = TestIssuer::new(K8S_ISS, Algorithm::Es256);
    let a = attestor(
        vec![config(
            "k8s",
            IssuerKind::Kubernetes,
            K8S_ISS,
            inline(issuer.jwks()),
        )],
        &clock,
    );
    (clock, issuer, a)
}

/// An RS256 issuer `old-cluster` for legacy (secret-based) service-account
/// tokens, accepted through `insecure_allow_legacy_tokens`, with the fake clock.
pub fn legacy_setup() -> (FakeClock, TestIssuer, Attestor) {
    let clock = FakeClock::new();
    let issuer = TestIssuer::new(lanyard_attest::LEGACY_K8S_ISSUER, Algorithm::Rs256);
    let mut cfg = config(
        "old-cluster",
        IssuerKind::Kubernetes,
        lanyard_attest::LEGACY_K8S_ISSUER,
        inline(issuer.jwks()),
    );
    cfg.algorithms = vec![Algorithm::Rs256];
    cfg.insecure_allow_legacy_tokens = true;
    let a = attestor(vec![cfg], &clock);
    (clock, issuer, a)
}

#[test]
fn attestor_and_its_futures_are_send_and_sync() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let (_, _, a) = k8s_setup();
    send_sync(&a);
    send(&a.verify("x"));
    send(&a.explain("x"));
}
