use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose, SanType};

use super::*;

fn cert(sans: &[&str], is_ca: IsCa, key_usages: Vec<KeyUsagePurpose>) -> Vec<u8> {
    let mut p = CertificateParams::default();
    p.subject_alt_names = sans
        .iter()
        .map(|s| match s.strip_prefix("dns:") {
            Some(dns) => SanType::DnsName((*dns).try_into().unwrap_or_else(|e| panic!("{e}"))),
            None => SanType::URI((*s).try_into().unwrap_or_else(|e| panic!("{e}"))),
        })
        .collect();
    p.is_ca = is_ca;
    p.key_usages = key_usages;
    let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    p.self_signed(&key)
        .unwrap_or_else(|e| panic!("{e}"))
        .der()
        .to_vec()
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

/// X.509-SVID §4.1 and §5 leaf rules, each bad leaf next to its reason.
#[test]
fn leaf_rules() {
    let signing = || vec![KeyUsagePurpose::DigitalSignature];
    let ok = "spiffe://example.org/web";
    let cases: Vec<(&str, Vec<u8>, Result<SpiffeId, RejectReason>)> = vec![
        (
            "valid leaf",
            cert(&[ok, "dns:web.example.org"], IsCa::ExplicitNoCa, signing()),
            Ok(id(ok)),
        ),
        (
            "no URI SAN",
            cert(&["dns:web.example.org"], IsCa::ExplicitNoCa, signing()),
            Err(RejectReason::UriSanCount { count: 0 }),
        ),
        (
            "two URI SANs",
            cert(
                &[ok, "spiffe://example.org/db"],
                IsCa::ExplicitNoCa,
                signing(),
            ),
            Err(RejectReason::UriSanCount { count: 2 }),
        ),
        (
            "not a spiffe URI",
            cert(&["https://example.org/web"], IsCa::ExplicitNoCa, signing()),
            Err(RejectReason::BadSpiffeId(
                lanyard_core::SpiffeIdError::WrongScheme,
            )),
        ),
        (
            "trust domain ID, no path",
            cert(&["spiffe://example.org"], IsCa::ExplicitNoCa, signing()),
            Err(RejectReason::BadSpiffeId(
                lanyard_core::SpiffeIdError::EmptySegment,
            )),
        ),
        (
            "CA:true",
            cert(&[ok], IsCa::Ca(BasicConstraints::Unconstrained), signing()),
            Err(RejectReason::LeafIsCa),
        ),
        (
            "keyCertSign without CA:true",
            cert(
                &[ok],
                IsCa::ExplicitNoCa,
                vec![KeyUsagePurpose::KeyCertSign],
            ),
            Err(RejectReason::LeafIsCa),
        ),
        (
            "cRLSign",
            cert(
                &[ok],
                IsCa::NoCa,
                vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign],
            ),
            Err(RejectReason::LeafIsCa),
        ),
        (
            "garbage",
            b"not a certificate".to_vec(),
            Err(RejectReason::Unparseable),
        ),
        ("empty", Vec::new(), Err(RejectReason::Unparseable)),
    ];
    for (name, der, want) in cases {
        assert_eq!(leaf_spiffe_id(&der), want, "{name}");
    }
}

#[test]
fn trailing_bytes_are_refused() {
    let mut der = cert(
        &["spiffe://example.org/web"],
        IsCa::ExplicitNoCa,
        vec![KeyUsagePurpose::DigitalSignature],
    );
    der.push(0);
    assert_eq!(leaf_spiffe_id(&der), Err(RejectReason::Unparseable));
}
