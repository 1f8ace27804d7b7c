use std::time::{Duration, SystemTime};

use lanyard_core::{SpiffeId, TrustDomain};
use rcgen::{CertificateParams, KeyPair};
use x509_parser::prelude::{FromDer as _, GeneralName, ParsedExtension, X509Certificate};

use super::*;

const HOUR: Duration = Duration::from_secs(3600);

fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap_or_else(|e| panic!("{e}"))
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

fn authority() -> Authority {
    Authority::generate(&td(), now(), 365 * 24 * HOUR, 30 * 24 * HOUR)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn csr_for(key: &KeyPair) -> Vec<u8> {
    // The CSR asks for a DNS SAN and a subject: both must be ignored.
    let params =
        CertificateParams::new(vec!["evil.example".to_owned()]).unwrap_or_else(|e| panic!("{e}"));
    params
        .serialize_request(key)
        .unwrap_or_else(|e| panic!("{e}"))
        .der()
        .to_vec()
}

fn p256() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap_or_else(|e| panic!("{e}"))
}

fn sign(
    ca: &Authority,
    spiffe: &SpiffeId,
    csr: &[u8],
    dns: &[String],
    ttl: Duration,
) -> Result<X509Svid, X509Error> {
    ca.sign_svid(&X509SvidParams {
        spiffe_id: spiffe,
        csr_der: csr,
        dns_names: dns,
        kind: SvidKind::Workload,
        ttl,
        now: now(),
    })
}

fn verify_signed_by(child: &[u8], parent: &[u8]) -> bool {
    let (Ok((_, c)), Ok((_, p))) = (
        X509Certificate::from_der(child),
        X509Certificate::from_der(parent),
    ) else {
        return false;
    };
    let key = p.public_key().subject_public_key.data.to_vec();
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, key)
        .verify(c.tbs_certificate.as_ref(), &c.signature_value.data)
        .is_ok()
}

#[test]
fn svid_follows_the_x509_svid_rules() -> Result<(), X509Error> {
    let ca = authority();
    let spiffe = id("spiffe://example.org/ns/payments/sa/api");
    let svid = sign(
        &ca,
        &spiffe,
        &csr_for(&p256()),
        &["api.payments.svc".into()],
        HOUR,
    )?;
    let (_, cert) =
        X509Certificate::from_der(&svid.cert_der).map_err(|_| X509Error::Invariant("parse"))?;
    let mut uris = Vec::new();
    let mut dns = Vec::new();
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for n in &san.general_names {
                    match n {
                        GeneralName::URI(u) => uris.push(u.to_string()),
                        GeneralName::DNSName(d) => dns.push(d.to_string()),
                        _ => {}
                    }
                }
            }
            ParsedExtension::KeyUsage(ku) => {
                assert!(ext.critical, "key usage is critical");
                assert!(ku.digital_signature() && !ku.key_cert_sign() && !ku.crl_sign());
            }
            ParsedExtension::ExtendedKeyUsage(eku) => assert!(eku.server_auth && eku.client_auth),
            ParsedExtension::BasicConstraints(bc) => assert!(!bc.ca),
            _ => {}
        }
    }
    assert_eq!(uris, ["spiffe://example.org/ns/payments/sa/api"]);
    assert_eq!(dns, ["api.payments.svc"], "the CSR's own SANs are ignored");
    assert_eq!(
        cert.validity().not_before.timestamp(),
        lanyard_core::clock::unix_seconds(now() - BACKDATE)
    );
    assert_eq!(
        cert.validity().not_after.timestamp(),
        lanyard_core::clock::unix_seconds(now() + HOUR)
    );
    assert_eq!(svid.expires_at, now() + HOUR);
    assert!(cert.raw_serial().len() >= 16, "128-bit serial");
    assert!(
        verify_signed_by(&svid.cert_der, ca.intermediate_der()),
        "signed by the intermediate"
    );
    assert!(
        verify_signed_by(ca.intermediate_der(), ca.root_der()),
        "intermediate signed by the root"
    );
    assert_eq!(svid.chain_der, vec![ca.intermediate_der().to_vec()]);
    // Two SVIDs never share a serial.
    let other = sign(&ca, &spiffe, &csr_for(&p256()), &[], HOUR)?;
    let (_, other) =
        X509Certificate::from_der(&other.cert_der).map_err(|_| X509Error::Invariant("parse"))?;
    assert_ne!(other.raw_serial(), cert.raw_serial());
    Ok(())
}

#[test]
fn ca_certificates_are_spiffe_ca_certificates() {
    let ca = authority();
    for (der, pathlen) in [(ca.root_der(), None), (ca.intermediate_der(), Some(0))] {
        let (_, cert) = X509Certificate::from_der(der).unwrap_or_else(|e| panic!("{e}"));
        let mut saw = (false, false, false);
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::BasicConstraints(bc) => {
                    assert!(bc.ca);
                    assert_eq!(bc.path_len_constraint, pathlen);
                    saw.0 = true;
                }
                ParsedExtension::KeyUsage(ku) => {
                    assert!(ku.key_cert_sign() && ku.crl_sign());
                    saw.1 = true;
                }
                ParsedExtension::SubjectAlternativeName(san) => {
                    assert!(san
                        .general_names
                        .iter()
                        .any(|n| matches!(n, GeneralName::URI("spiffe://example.org"))));
                    saw.2 = true;
                }
                _ => {}
            }
        }
        assert_eq!(saw, (true, true, true));
    }
}

#[test]
fn p384_and_rsa_2048_keys_are_accepted() -> Result<(), Box<dyn std::error::Error>> {
    let ca = authority();
    let spiffe = id("spiffe://example.org/a");
    let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?;
    sign(&ca, &spiffe, &csr_for(&p384), &[], HOUR)?;
    let (_, rsa_der) = lanyard_jose::SigningKey::generate(lanyard_jose::Algorithm::Rs256)?;
    let rsa = KeyPair::try_from(rsa_der.expose())?;
    sign(&ca, &spiffe, &csr_for(&rsa), &[], HOUR)?;
    Ok(())
}

#[test]
fn bad_requests_are_refused() {
    let ca = authority();
    let spiffe = id("spiffe://example.org/a");
    let good = csr_for(&p256());
    let mut tampered = good.clone();
    if let Some(last) = tampered.last_mut() {
        *last ^= 0x01;
    }
    let mut trailing = good.clone();
    trailing.push(0);
    let cases: Vec<(&str, Result<X509Svid, X509Error>, &str)> = vec![
        (
            "garbage",
            sign(&ca, &spiffe, b"not a csr", &[], HOUR),
            "BadCsr",
        ),
        ("empty", sign(&ca, &spiffe, &[], &[], HOUR), "BadCsr"),
        (
            "too large",
            sign(&ca, &spiffe, &vec![0x30; MAX_CSR_LEN + 1], &[], HOUR),
            "BadCsr",
        ),
        (
            "trailing bytes",
            sign(&ca, &spiffe, &trailing, &[], HOUR),
            "BadCsr",
        ),
        (
            "tampered signature",
            sign(&ca, &spiffe, &tampered, &[], HOUR),
            "BadCsrSignature",
        ),
        (
            "other trust domain",
            sign(&ca, &id("spiffe://other.org/a"), &good, &[], HOUR),
            "Invariant",
        ),
        (
            "zero ttl",
            sign(&ca, &spiffe, &good, &[], Duration::ZERO),
            "BadTtl",
        ),
        (
            "outlives the CA",
            sign(&ca, &spiffe, &good, &[], 31 * 24 * HOUR),
            "BadTtl",
        ),
        (
            "bad DNS name",
            sign(&ca, &spiffe, &good, &["bad name".into()], HOUR),
            "BadDnsName",
        ),
        (
            "empty DNS name",
            sign(&ca, &spiffe, &good, &[String::new()], HOUR),
            "BadDnsName",
        ),
    ];
    for (name, got, want) in cases {
        let got = got.map(|_| ()).map_err(|e| format!("{e:?}"));
        assert!(
            matches!(&got, Err(e) if e.starts_with(want)),
            "{name}: {got:?}"
        );
    }
}

/// DER TLV with a definite length.
fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = body.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(body);
    out
}

#[test]
fn rsa_keys_under_2048_bits_are_weak() {
    let spki_with_modulus_bits = |bits: usize| {
        let mut n = vec![0x00, 0xc0];
        n.resize(bits / 8 + 1, 0x01);
        let rsa_public_key = tlv(
            0x30,
            &[tlv(0x02, &n), tlv(0x02, &[0x01, 0x00, 0x01])].concat(),
        );
        let alg = tlv(
            0x30,
            &[
                tlv(
                    0x06,
                    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
                ),
                vec![0x05, 0x00],
            ]
            .concat(),
        );
        let bit_string = tlv(0x03, &[&[0x00][..], &rsa_public_key].concat());
        tlv(0x30, &[alg, bit_string].concat())
    };
    for (bits, ok) in [(1024, false), (2040, false), (2048, true), (4096, true)] {
        let der = spki_with_modulus_bits(bits);
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&der)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(check_rsa_strength(&spki).is_ok(), ok, "{bits} bits");
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[test]
fn stored_material_loads_and_keeps_signing_the_same_chain() -> Result<(), X509Error> {
    let root = generate_root(&td(), now(), 365 * 24 * HOUR)?;
    let int = generate_intermediate(&td(), &root, now(), 48 * HOUR)?;
    assert!(signed_by(&int.cert_der, &root.cert_der));
    // As if read back from the store.
    let loaded = CaMaterial::from_parts(int.cert_der.clone(), int.key_pkcs8().to_vec())?;
    let ca = Authority::new(&td(), &loaded, Vec::new(), vec![root.cert_der.clone()])?;
    let svid = sign(
        &ca,
        &id("spiffe://example.org/w"),
        &csr_for(&p256()),
        &[],
        HOUR,
    )?;
    assert_eq!(svid.chain_der, vec![int.cert_der.clone()]);
    assert!(signed_by(&svid.cert_der, &int.cert_der));
    assert!(!signed_by(&svid.cert_der, &root.cert_der));
    // An intermediate never outlives its root.
    let short_root = generate_root(&td(), now(), HOUR)?;
    let capped = generate_intermediate(&td(), &short_root, now(), 48 * HOUR)?;
    assert_eq!(capped.not_after, now() + HOUR);
    // An SVID never outlives the intermediate.
    let ca = Authority::new(&td(), &capped, Vec::new(), vec![short_root.cert_der])?;
    assert_eq!(
        sign(
            &ca,
            &id("spiffe://example.org/w"),
            &csr_for(&p256()),
            &[],
            2 * HOUR
        ),
        Err(X509Error::BadTtl)
    );
    Ok(())
}

#[test]
fn mismatched_or_non_ca_material_is_refused() -> Result<(), X509Error> {
    let a = generate_root(&td(), now(), HOUR)?;
    let b = generate_root(&td(), now(), HOUR)?;
    assert!(matches!(
        CaMaterial::from_parts(a.cert_der.clone(), b.key_pkcs8().to_vec()),
        Err(X509Error::BadCa(m)) if m.contains("does not match")
    ));
    assert!(matches!(
        CaMaterial::from_parts(a.cert_der.clone(), b"junk".to_vec()),
        Err(X509Error::BadCa(_))
    ));
    let ca = authority();
    let key = p256();
    let leaf = sign(
        &ca,
        &id("spiffe://example.org/w"),
        &csr_for(&key),
        &[],
        HOUR,
    )?;
    assert!(matches!(
        CaMaterial::from_parts(leaf.cert_der, key.serialize_der()),
        Err(X509Error::BadCa(m)) if m.contains("not a CA")
    ));
    Ok(())
}

#[test]
fn an_upstream_ca_signs_lanyards_intermediates() -> Result<(), X509Error> {
    // An "enterprise" root and issuing CA, made here as the PEM files an operator would have.
    let corp = TrustDomain::parse("corp.example").unwrap_or_else(|e| panic!("{e}"));
    let corp_root = generate_root(&corp, now(), 10 * 365 * 24 * HOUR)?;
    // The issuing CA must be allowed to sign a CA below it (pathLen 1).
    let issuing_key =
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap_or_else(|e| panic!("{e}"));
    let root_issuer = rcgen::Issuer::from_ca_cert_der(
        &corp_root.cert_der.as_slice().into(),
        KeyPair::try_from(corp_root.key_pkcs8()).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let issuing_cert = ca_params(
        &corp,
        "issuing",
        now(),
        365 * 24 * HOUR,
        BasicConstraints::Constrained(1),
    )?
    .signed_by(&issuing_key, &root_issuer)
    .unwrap_or_else(|e| panic!("{e}"));
    let chain_pem = pem("CERTIFICATE", issuing_cert.der());
    let key_pem = pem("PRIVATE KEY", &issuing_key.serialize_der());
    let roots_pem = pem("CERTIFICATE", &corp_root.cert_der);

    let up = load_upstream(&chain_pem, &key_pem, &roots_pem)?;
    assert_eq!(up.roots, vec![corp_root.cert_der.clone()]);
    let int = generate_intermediate(&td(), &up.signer, now(), 48 * HOUR)?;
    let mut above = vec![up.signer.cert_der.clone()];
    above.extend(up.chain_above.clone());
    let ca = Authority::new(&td(), &int, above, up.roots.clone())?;
    let svid = sign(
        &ca,
        &id("spiffe://example.org/w"),
        &csr_for(&p256()),
        &[],
        HOUR,
    )?;
    // leaf -> ours -> upstream issuing -> corp root
    assert_eq!(svid.chain_der.len(), 2);
    assert!(signed_by(&svid.cert_der, &int.cert_der));
    assert!(signed_by(&int.cert_der, issuing_cert.der()));
    assert!(signed_by(issuing_cert.der(), &corp_root.cert_der));
    assert_eq!(ca.roots(), std::slice::from_ref(&corp_root.cert_der));

    // Wrong key, no root that the chain leads to, no certificate at all.
    let other_key = pem("PRIVATE KEY", &p256().serialize_der());
    assert!(load_upstream(&chain_pem, &other_key, &roots_pem).is_err());
    let stranger = generate_root(&corp, now(), HOUR)?;
    assert!(matches!(
        load_upstream(&chain_pem, &key_pem, &pem("CERTIFICATE", &stranger.cert_der)),
        Err(X509Error::BadCa(m)) if m.contains("does not lead")
    ));
    assert!(load_upstream("", &key_pem, &roots_pem).is_err());
    assert!(matches!(
        load_upstream(&chain_pem, "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n", &roots_pem),
        Err(X509Error::BadCa(m)) if m.contains("PKCS#8")
    ));
    Ok(())
}

#[test]
fn the_spiffe_id_of_an_svid_is_its_one_uri_san() -> Result<(), X509Error> {
    let ca = authority();
    let me = id("spiffe://example.org/w");
    let svid = sign(
        &ca,
        &me,
        &csr_for(&p256()),
        &["api.internal".to_owned()],
        HOUR,
    )?;
    assert_eq!(spiffe_id_of(&svid.cert_der), Some(me));
    assert_eq!(spiffe_id_of(b"not a certificate"), None);
    Ok(())
}

// issue 9: a workload entry for spiffe://TD/lanyard/node/X was signed like
// any other, so a workload could act as a node (or as the server).
#[test]
fn reserved_ids_are_signed_only_as_what_they_name() {
    let ca = authority();
    let csr = csr_for(&p256());
    let sign_as = |spiffe: &str, kind: SvidKind| {
        ca.sign_svid(&X509SvidParams {
            spiffe_id: &id(spiffe),
            csr_der: &csr,
            dns_names: &[],
            kind,
            ttl: Duration::from_secs(600),
            now: now(),
        })
        .map(|_| ())
    };
    let wrong = |r: Result<(), X509Error>| matches!(r, Err(X509Error::WrongKind { .. }));
    for (spiffe, kind) in [
        ("spiffe://example.org/lanyard/node/dev", SvidKind::Workload),
        ("spiffe://example.org/lanyard/server", SvidKind::Workload),
        ("spiffe://example.org/lanyard/other", SvidKind::Workload),
        ("spiffe://example.org/lanyard/other", SvidKind::Node),
        ("spiffe://example.org/lanyard/server", SvidKind::Node),
        ("spiffe://example.org/lanyard/node/dev", SvidKind::Server),
        ("spiffe://example.org/ns/a", SvidKind::Node),
        ("spiffe://example.org/ns/a", SvidKind::Server),
    ] {
        assert!(wrong(sign_as(spiffe, kind)), "{spiffe} as {kind}");
    }
    assert!(sign_as("spiffe://example.org/lanyard/node/dev", SvidKind::Node).is_ok());
    assert!(sign_as("spiffe://example.org/lanyard/server", SvidKind::Server).is_ok());
    assert!(sign_as("spiffe://example.org/ns/a", SvidKind::Workload).is_ok());
}
