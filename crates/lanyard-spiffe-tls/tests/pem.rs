//! SVIDs and bundles loaded from PEM, as callers that manage files do.

use base64::Engine as _;
use lanyard_spiffe_tls::{Bundle, Error, Svid};

use crate::support::{id, td, Ca};

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let body: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        body.join("\n")
    )
}

#[test]
fn svid_and_bundle_from_pem() -> anyhow::Result<()> {
    let ca = Ca::new("example.org");
    let svid = ca.svid("spiffe://example.org/files");
    let chain_pem: String = svid
        .cert_chain()
        .iter()
        .map(|c| pem("CERTIFICATE", c))
        .collect();
    let key_pem = pem("PRIVATE KEY", svid.private_key().secret_pkcs8_der());
    let loaded = Svid::from_pem(chain_pem.as_bytes(), key_pem.as_bytes())?;
    assert_eq!(loaded.spiffe_id(), &id("spiffe://example.org/files"));
    assert_eq!(loaded.cert_chain(), svid.cert_chain());
    assert_eq!(
        loaded.private_key().secret_pkcs8_der(),
        svid.private_key().secret_pkcs8_der()
    );
    let bundle = Bundle::from_pem(
        td("example.org"),
        pem("CERTIFICATE", &ca.root_der()).as_bytes(),
    )?;
    assert_eq!(bundle.roots().len(), 1);
    Ok(())
}

#[test]
fn bad_pem_is_refused_without_echoing_the_key() -> anyhow::Result<()> {
    let ca = Ca::new("example.org");
    let svid = ca.svid("spiffe://example.org/files");
    let chain_pem = pem("CERTIFICATE", &svid.cert_chain()[0]);
    let secret = "-----BEGIN PRIVATE KEY-----\nSECRET!!\n-----END PRIVATE KEY-----\n";
    let err = Svid::from_pem(chain_pem.as_bytes(), secret.as_bytes())
        .err()
        .ok_or_else(|| anyhow::anyhow!("a broken key was accepted"))?;
    assert!(matches!(err, Error::Pem { .. }), "{err}");
    assert!(!err.to_string().contains("SECRET"), "{err}");
    assert!(matches!(
        Svid::from_pem(chain_pem.as_bytes(), b"no key here"),
        Err(Error::Pem { .. })
    ));
    assert!(matches!(
        Svid::from_pem(
            b"",
            pem("PRIVATE KEY", svid.private_key().secret_pkcs8_der()).as_bytes()
        ),
        Err(Error::EmptyChain)
    ));
    assert!(matches!(
        Bundle::from_pem(td("example.org"), b""),
        Err(Error::EmptyBundle { .. })
    ));
    Ok(())
}
