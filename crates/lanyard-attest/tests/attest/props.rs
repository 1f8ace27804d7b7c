//! Property tests: whatever arrives, `verify` answers without panicking,
//! and nothing but a token signed by a trusted key is ever accepted.

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use lanyard_attest::{parse_unverified, Attestor, IssuerKind};
use lanyard_core::Clock;
use lanyard_jose::Algorithm;
use lanyard_testkit::tokens::TestIssuer;
use lanyard_testkit::FakeClock;
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::{config, inline, K8S_ISS};

struct Fixture {
    clock: FakeClock,
    issuer: TestIssuer,
    attestor: Attestor,
    runtime: tokio::runtime::Runtime,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let clock = FakeClock::new();
        let issuer = TestIssuer::new(K8S_ISS, Algorithm::Es256);
        let mut oidc = config(
            "idp",
            IssuerKind::Oidc,
            "https://idp.test",
            inline(issuer.jwks()),
        );
        oidc.audience = "lanyard".into();
        let attestor = crate::attestor(
            vec![
                config(
                    "k8s",
                    IssuerKind::Kubernetes,
                    K8S_ISS,
                    inline(issuer.jwks()),
                ),
                oidc,
            ],
            &clock,
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("test runtime: {e}"));
        Fixture {
            clock,
            issuer,
            attestor,
            runtime,
        }
    })
}

fn verify(token: &str) -> Result<lanyard_core::Evidence, lanyard_core::Denial> {
    let f = fixture();
    f.runtime.block_on(f.attestor.verify(token))
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z._/-]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_are_refused(s in "\\PC{0,400}") {
        prop_assert!(parse_unverified(&s).is_err() || s.matches('.').count() == 2);
        prop_assert!(verify(&s).is_err());
    }

    #[test]
    fn arbitrary_bytes_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let s = String::from_utf8_lossy(&bytes);
        prop_assert!(verify(&s).is_err());
    }

    #[test]
    fn dotted_base64url_garbage_is_refused(
        a in "[A-Za-z0-9_-]{0,80}",
        b in "[A-Za-z0-9_-]{0,300}",
        c in "[A-Za-z0-9_-]{0,120}",
    ) {
        let token = format!("{a}.{b}.{c}");
        prop_assert!(verify(&token).is_err());
    }

    #[test]
    fn unsigned_json_is_refused(header in json_value(), claims in json_value(), sig in prop::collection::vec(any::<u8>(), 0..80)) {
        let token = format!("{}.{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()), B64.encode(&sig));
        prop_assert!(verify(&token).is_err());
    }

    #[test]
    fn forged_headers_over_real_claims_are_refused(alg in "[A-Za-z0-9]{0,8}", sig in prop::collection::vec(any::<u8>(), 0..300)) {
        let f = fixture();
        let claims = f.issuer.k8s_claims(f.clock.unix_seconds(), "payments", "api");
        let header = json!({"alg": alg, "kid": f.issuer.key().kid()});
        let token = lanyard_testkit::tokens::raw_token(&header, &claims, &sig);
        prop_assert!(verify(&token).is_err());
    }

    /// Signed by the trusted key but with arbitrary claims: never a panic;
    /// when accepted, the evidence is well formed.
    #[test]
    fn signed_arbitrary_claims_never_panic(extra in json_value(), pick in 0usize..4, iss_k8s in any::<bool>()) {
        let f = fixture();
        let now = f.clock.unix_seconds();
        let mut claims = if iss_k8s {
            f.issuer.k8s_claims(now, "payments", "api")
        } else {
            json!({"iss": "https://idp.test", "aud": "lanyard", "sub": "s", "iat": now, "exp": now + 60})
        };
        let names = ["kubernetes.io", "sub", "aud", "exp"];
        if let (Some(o), Some(name)) = (claims.as_object_mut(), names.get(pick)) {
            o.insert((*name).to_owned(), extra.clone());
            if let Value::Object(more) = &extra {
                for (k, v) in more {
                    o.entry(k.clone()).or_insert(v.clone());
                }
            }
        }
        let token = f.issuer.sign(&claims);
        if let Ok(ev) = verify(&token) {
            let mut sorted = ev.selectors.clone();
            sorted.sort();
            sorted.dedup();
            prop_assert_eq!(&sorted, &ev.selectors);
            prop_assert_eq!(ev.digest.len(), 64);
            prop_assert!(!ev.subject.is_empty());
        }
    }
}
