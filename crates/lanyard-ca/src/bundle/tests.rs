use std::time::{Duration, SystemTime};

use lanyard_core::TrustDomain;
use lanyard_jose::{Algorithm, SigningKey};

use super::*;
use crate::x509::generate_root;

fn td(s: &str) -> TrustDomain {
    TrustDomain::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

fn root(of: &str) -> Vec<u8> {
    generate_root(&td(of), SystemTime::now(), Duration::from_secs(3600))
        .unwrap_or_else(|e| panic!("{e}"))
        .cert_der
}

fn jwt_key(kid_hint: &str) -> serde_json::Value {
    let (k, _) = SigningKey::generate(Algorithm::Es256).unwrap_or_else(|e| panic!("{e}"));
    let mut v = serde_json::to_value(k.public_jwk()).unwrap_or_else(|e| panic!("{e}"));
    v["use"] = "jwt-svid".into();
    v["kid"] = kid_hint.into();
    v
}

/// What `spire-server bundle show -format spiffe` prints: 4-space
/// indentation, x509-svid keys first, then jwt-svid keys with `kid`.
fn spire_style(ca: &[u8], jwt: &serde_json::Value, seq: u64) -> Vec<u8> {
    let x509 = x509_jwk(ca).unwrap_or_else(|| panic!("root as JWK"));
    let doc = serde_json::json!({
        "keys": [x509, jwt],
        "spiffe_refresh_hint": 300,
        "spiffe_sequence": seq,
    });
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    serde::Serialize::serialize(&doc, &mut ser).unwrap_or_else(|e| panic!("{e}"));
    out
}

fn parse(of: &str, doc: &[u8]) -> Result<Bundle, BundleError> {
    Bundle::parse(&td(of), doc)
}

#[test]
fn a_spire_style_bundle_round_trips() {
    let ca = root("other.org");
    let jwt = jwt_key("k1");
    let b = parse("other.org", &spire_style(&ca, &jwt, 7)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(b.x509_authorities, vec![ca.clone()]);
    assert_eq!(b.jwt_authorities.len(), 1);
    assert_eq!(b.sequence, Some(7));
    assert_eq!(b.refresh_hint, Some(300));
    assert_eq!(b.verifying_keys().len(), 1);
    // What we serve parses back to the same keys.
    let again = serde_json::to_vec(&b.to_spiffe_json()).unwrap_or_else(|e| panic!("{e}"));
    let b2 = parse("other.org", &again).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(b, b2);
    let served = b.to_spiffe_json();
    let keys = served["keys"].as_array().cloned().unwrap_or_default();
    assert!(keys[0].get("kid").is_none(), "x509-svid keys carry no kid");
    assert_eq!(keys[0]["x5c"].as_array().map(Vec::len), Some(1));
    assert_eq!(keys[1]["kid"], "k1");
    // PEM: the X.509 authorities only.
    let pem = parse("other.org", b.to_pem().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pem.x509_authorities, vec![ca]);
    assert!(pem.jwt_authorities.is_empty() && pem.sequence.is_none());
}

#[test]
fn unknown_kinds_are_ignored_and_broken_keys_refuse_the_bundle() {
    let ca = root("other.org");
    let x509 = x509_jwk(&ca).unwrap_or_else(|| panic!("jwk"));
    let good = jwt_key("k1");
    let doc = |keys: Vec<serde_json::Value>| {
        serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap_or_default()
    };
    // Unknown kty, missing use, unknown use: ignored (spec §4.2).
    let ignored = parse(
        "other.org",
        &doc(vec![
            serde_json::json!({"kty": "OKP", "use": "jwt-svid", "kid": "x"}),
            serde_json::json!({"kty": "EC", "kid": "nouse"}),
            serde_json::json!({"kty": "EC", "use": "enc", "kid": "e"}),
            good.clone(),
        ]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ignored.jwt_authorities.len(), 1);

    let mut no_kid = good.clone();
    no_kid.as_object_mut().map(|o| o.remove("kid"));
    let mut bad_point = good.clone();
    bad_point["x"] = "AAAA".into();
    let mut x509_kid = x509.clone();
    x509_kid["kid"] = "k".into();
    let mut not_cert = x509.clone();
    not_cert["x5c"] = serde_json::json!(["AAAA"]);
    let mut no_x5c = x509.clone();
    no_x5c["x5c"] = serde_json::json!([]);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (doc(vec![no_kid]), "must have a kid"),
        (doc(vec![bad_point]), "key 0"),
        (doc(vec![good.clone(), good.clone()]), "same kid"),
        (doc(vec![x509_kid]), "must not have a kid"),
        (doc(vec![not_cert]), "does not parse"),
        (doc(vec![no_x5c]), "x5c"),
        (doc(vec![]), "empty bundle"),
        (b"{\"keys\": 5}".to_vec(), "\"keys\""),
        (b"{}".to_vec(), "\"keys\""),
        (b"{\"trust_domains\": {}}".to_vec(), "bundle map"),
        (
            b"{\"keys\": [], \"spiffe_sequence\": -1}".to_vec(),
            "spiffe_sequence",
        ),
        (b"not json".to_vec(), "SPIFFE bundle JSON"),
        (b"{\"keys\": [".to_vec(), "invalid JSON"),
        (vec![b' '; MAX_BUNDLE_BYTES + 1], "larger"),
    ];
    for (d, words) in cases {
        match parse("other.org", &d) {
            Ok(b) => panic!("accepted {:?} as {b:?}", String::from_utf8_lossy(&d)),
            Err(e) => assert!(e.to_string().contains(words), "{e} lacks {words:?}"),
        }
    }
}

#[test]
fn a_ca_of_another_trust_domain_refuses_the_bundle() {
    let mine = root("example.org");
    let doc = spire_style(&mine, &jwt_key("k"), 1);
    match parse("other.org", &doc) {
        Err(BundleError::WrongTrustDomain { expected, found }) => {
            assert_eq!(
                (expected.as_str(), found.as_str()),
                ("other.org", "\"example.org\"")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(parse("example.org", &doc).is_ok());
    // A leaf certificate is not an authority.
    let leaf = rcgen::CertificateParams::new(vec!["x.test".to_owned()])
        .and_then(|p| {
            let k = rcgen::KeyPair::generate()?;
            p.self_signed(&k)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let pem = pem_certs(&[leaf.der().to_vec()]);
    let e = parse("other.org", pem.as_bytes())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("not a CA"), "{e}");
}
