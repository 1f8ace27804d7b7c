//! SPIFFE trust bundles (SPIFFE Trust Domain and Bundle §4, X509-SVID §6,
//! JWT-SVID §6): read what another trust domain publishes, check it, and
//! write ours.
//!
//! A bundle is a JWK Set: `x509-svid` keys carry one CA certificate in
//! `x5c` (and no `kid`), `jwt-svid` keys carry a `kid`. JWKs of an unknown
//! `kty` or `use` are ignored, as the spec says; a key of a known kind that
//! does not parse refuses the whole bundle, because accepting half of a
//! bundle would silently drop keys the peer signs with.
//!
//! A bundle never names its trust domain, so the caller says which one it
//! is for. A CA certificate whose URI SAN names another trust domain refuses
//! the bundle: bundles of different trust domains are never merged.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use lanyard_core::TrustDomain;
use lanyard_jose::{Jwk, VerifyingKey};
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

/// Largest bundle document read (SPIRE's bundles with a few CAs are a few KiB).
pub const MAX_BUNDLE_BYTES: usize = 256 * 1024;
/// Most keys in one bundle.
pub const MAX_BUNDLE_KEYS: usize = 256;

/// A trust domain's bundle, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// Whose bundle this is (said by the caller, never read from it).
    pub trust_domain: TrustDomain,
    /// X.509 authorities (CA certificates, DER).
    pub x509_authorities: Vec<Vec<u8>>,
    /// JWT authorities, as published (each has a `kid` and parses).
    pub jwt_authorities: Vec<Jwk>,
    /// `spiffe_sequence`, when set.
    pub sequence: Option<u64>,
    /// `spiffe_refresh_hint` in seconds, when set.
    pub refresh_hint: Option<i64>,
}

/// Why a document is not a usable bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Larger than [`MAX_BUNDLE_BYTES`].
    #[error("the bundle is larger than {MAX_BUNDLE_BYTES} bytes")]
    TooLarge,
    /// Neither SPIFFE JSON nor PEM certificates.
    #[error("not a SPIFFE bundle: {0}")]
    Format(String),
    /// A key of a known kind that does not parse.
    #[error("key {index} of the bundle: {message}")]
    Key {
        /// Position in `keys`, from 0.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// No key at all: it would revoke every identity of the trust domain.
    #[error("the bundle has no usable key; an empty bundle would make every SVID of {0} invalid, so it is refused (delete the bundle to stop trusting {0})")]
    Empty(String),
    /// A CA certificate of another trust domain.
    #[error("a CA certificate in the bundle names trust domain {found}, not {expected}; bundles of different trust domains are never merged")]
    WrongTrustDomain {
        /// The trust domain the bundle was read as.
        expected: String,
        /// The one the certificate names.
        found: String,
    },
}

fn key_err(index: usize, message: impl Into<String>) -> BundleError {
    BundleError::Key {
        index,
        message: message.into(),
    }
}

impl Bundle {
    /// Reads a bundle of `trust_domain`: SPIFFE JSON (a JWK Set, as a
    /// bundle endpoint serves it and `spire-server bundle show -format
    /// spiffe` prints it) or PEM certificates (X.509 authorities only).
    ///
    /// # Errors
    /// [`BundleError`] saying what is wrong; never echoes key material.
    pub fn parse(trust_domain: &TrustDomain, doc: &[u8]) -> Result<Self, BundleError> {
        if doc.len() > MAX_BUNDLE_BYTES {
            return Err(BundleError::TooLarge);
        }
        let trimmed = doc.trim_ascii_start();
        let bundle = if trimmed.starts_with(b"{") {
            Self::parse_json(trust_domain, trimmed)?
        } else if trimmed.starts_with(b"-----BEGIN") {
            Self::parse_pem(trust_domain, trimmed)?
        } else {
            return Err(BundleError::Format(
                "expected SPIFFE bundle JSON (a JWK Set) or PEM certificates".into(),
            ));
        };
        if bundle.x509_authorities.is_empty() && bundle.jwt_authorities.is_empty() {
            return Err(BundleError::Empty(trust_domain.to_string()));
        }
        Ok(bundle)
    }

    fn parse_pem(trust_domain: &TrustDomain, doc: &[u8]) -> Result<Self, BundleError> {
        let mut x509 = Vec::new();
        for (index, p) in x509_parser::pem::Pem::iter_from_buffer(doc).enumerate() {
            let p =
                p.map_err(|_| BundleError::Format(format!("PEM block {index} does not parse")))?;
            if p.label != "CERTIFICATE" {
                continue;
            }
            if x509.len() >= MAX_BUNDLE_KEYS {
                return Err(BundleError::Format(format!(
                    "more than {MAX_BUNDLE_KEYS} certificates"
                )));
            }
            check_ca(trust_domain, index, &p.contents)?;
            x509.push(p.contents);
        }
        Ok(Self {
            trust_domain: trust_domain.clone(),
            x509_authorities: x509,
            jwt_authorities: Vec::new(),
            sequence: None,
            refresh_hint: None,
        })
    }

    fn parse_json(trust_domain: &TrustDomain, doc: &[u8]) -> Result<Self, BundleError> {
        let v: serde_json::Value = serde_json::from_slice(doc).map_err(|e| {
            BundleError::Format(format!(
                "invalid JSON at line {} column {}",
                e.line(),
                e.column()
            ))
        })?;
        let obj = v
            .as_object()
            .ok_or_else(|| BundleError::Format("the document is not a JSON object".into()))?;
        if obj.contains_key("trust_domains") {
            return Err(BundleError::Format(
                "this is a bundle map of several trust domains; give one trust domain's bundle"
                    .into(),
            ));
        }
        let keys = obj
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or_else(|| BundleError::Format("\"keys\" must be present and an array".into()))?;
        if keys.len() > MAX_BUNDLE_KEYS {
            return Err(BundleError::Format(format!(
                "more than {MAX_BUNDLE_KEYS} keys"
            )));
        }
        let sequence = match obj.get("spiffe_sequence") {
            None | Some(serde_json::Value::Null) => None,
            Some(s) => Some(s.as_u64().ok_or_else(|| {
                BundleError::Format("spiffe_sequence must be a non-negative integer".into())
            })?),
        };
        let refresh_hint = match obj.get("spiffe_refresh_hint") {
            None | Some(serde_json::Value::Null) => None,
            Some(s) => Some(s.as_i64().ok_or_else(|| {
                BundleError::Format("spiffe_refresh_hint must be an integer (seconds)".into())
            })?),
        };
        let mut x509 = Vec::new();
        let mut jwt: Vec<Jwk> = Vec::new();
        for (index, key) in keys.iter().enumerate() {
            let Some(k) = key.as_object() else {
                return Err(key_err(index, "is not a JSON object"));
            };
            let kty = k.get("kty").and_then(|v| v.as_str());
            if !matches!(kty, Some("EC" | "RSA")) {
                // Unknown key types are ignored (Trust Domain and Bundle §4.2.1).
                continue;
            }
            match k.get("use").and_then(|v| v.as_str()) {
                Some("x509-svid") => {
                    if k.contains_key("kid") {
                        return Err(key_err(index, "an x509-svid key must not have a kid"));
                    }
                    let first = k
                        .get("x5c")
                        .and_then(|v| v.as_array())
                        .and_then(|a| a.first())
                        .and_then(|c| c.as_str())
                        .ok_or_else(|| {
                            key_err(index, "an x509-svid key needs x5c with one certificate")
                        })?;
                    let der = STANDARD
                        .decode(first)
                        .map_err(|_| key_err(index, "x5c is not base64"))?;
                    check_ca(trust_domain, index, &der)?;
                    x509.push(der);
                }
                Some("jwt-svid") => {
                    let jwk: Jwk = serde_json::from_value(key.clone())
                        .map_err(|_| key_err(index, "is not a JWK"))?;
                    let kid = jwk
                        .kid
                        .as_deref()
                        .ok_or_else(|| key_err(index, "a jwt-svid key must have a kid"))?;
                    if kid.is_empty() || kid.len() > 256 {
                        return Err(key_err(index, "kid must be 1 to 256 characters"));
                    }
                    if jwt.iter().any(|j| j.kid.as_deref() == Some(kid)) {
                        return Err(key_err(index, "two jwt-svid keys have the same kid"));
                    }
                    VerifyingKey::from_jwk(&jwk).map_err(|e| key_err(index, e.to_string()))?;
                    jwt.push(jwk);
                }
                // Unknown or missing `use`: ignored (§4.2.2).
                _ => {}
            }
        }
        Ok(Self {
            trust_domain: trust_domain.clone(),
            x509_authorities: x509,
            jwt_authorities: jwt,
            sequence,
            refresh_hint,
        })
    }

    /// The JWT authorities parsed for verification.
    pub fn verifying_keys(&self) -> Vec<VerifyingKey> {
        self.jwt_authorities
            .iter()
            .filter_map(|j| VerifyingKey::from_jwk(j).ok())
            .collect()
    }

    /// The JWT authorities as a JWKS document (the Workload API's JWT bundle).
    pub fn jwks_json(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "keys": self.jwt_authorities }))
            .unwrap_or_else(|_| b"{\"keys\":[]}".to_vec())
    }

    /// The bundle in SPIFFE format, with `sequence` and `refresh_hint`
    /// (what a bundle endpoint serves).
    pub fn to_spiffe_json(&self) -> serde_json::Value {
        let mut keys: Vec<serde_json::Value> = self
            .x509_authorities
            .iter()
            .filter_map(|der| x509_jwk(der))
            .collect();
        keys.extend(
            self.jwt_authorities
                .iter()
                .filter_map(|j| serde_json::to_value(j).ok()),
        );
        let mut doc = serde_json::Map::new();
        doc.insert("keys".into(), keys.into());
        if let Some(s) = self.sequence {
            doc.insert("spiffe_sequence".into(), s.into());
        }
        if let Some(h) = self.refresh_hint {
            doc.insert("spiffe_refresh_hint".into(), h.into());
        }
        serde_json::Value::Object(doc)
    }

    /// The bundle as stored: its SPIFFE JSON and `spiffe_sequence` (0 when
    /// it has none, or one beyond `i64`).
    pub fn to_stored(&self) -> (String, i64) {
        let doc = serde_json::to_string(&self.to_spiffe_json()).unwrap_or_default();
        let seq = self
            .sequence
            .and_then(|s| i64::try_from(s).ok())
            .unwrap_or(0);
        (doc, seq)
    }

    /// "sequence N, X X.509 and Y JWT authorities", for audit reasons.
    pub fn summary(&self) -> String {
        format!(
            "sequence {}, {} X.509 and {} JWT authorities",
            self.sequence
                .map_or_else(|| "none".to_owned(), |s| s.to_string()),
            self.x509_authorities.len(),
            self.jwt_authorities.len()
        )
    }

    /// The X.509 authorities as PEM.
    pub fn to_pem(&self) -> String {
        pem_certs(&self.x509_authorities)
    }

    /// Whether the two hold the same keys (sequence and hint aside).
    pub fn same_keys(&self, other: &Self) -> bool {
        self.x509_authorities == other.x509_authorities
            && self.jwt_authorities == other.jwt_authorities
    }
}

/// The `x509-svid` certificates of a SPIFFE bundle document, unchecked
/// (for printing a bundle this server itself serves).
pub fn x509_authorities_of(doc: &serde_json::Value) -> Vec<Vec<u8>> {
    doc.get("keys")
        .and_then(serde_json::Value::as_array)
        .map(|keys| {
            keys.iter()
                .filter(|k| k.get("use").and_then(serde_json::Value::as_str) == Some("x509-svid"))
                .filter_map(|k| k.get("x5c")?.get(0)?.as_str())
                .filter_map(|c| STANDARD.decode(c).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// DER certificates as PEM.
pub fn pem_certs(ders: &[Vec<u8>]) -> String {
    let mut out = String::new();
    for der in ders {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = STANDARD.encode(der);
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

/// A CA certificate of `trust_domain`: it parses, is a CA, and any SPIFFE
/// URI SAN it carries names that trust domain.
fn check_ca(trust_domain: &TrustDomain, index: usize, der: &[u8]) -> Result<(), BundleError> {
    let (rest, cert) = X509Certificate::from_der(der)
        .map_err(|_| key_err(index, "the certificate does not parse"))?;
    if !rest.is_empty() {
        return Err(key_err(index, "trailing bytes after the certificate"));
    }
    if !cert.is_ca() {
        return Err(key_err(
            index,
            "the certificate is not a CA (basicConstraints CA:TRUE)",
        ));
    }
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for g in &san.value.general_names {
            if let GeneralName::URI(uri) = g {
                if let Some(rest) = uri.strip_prefix("spiffe://") {
                    let host = rest.split('/').next().unwrap_or_default();
                    if !host.eq_ignore_ascii_case(trust_domain.as_str()) {
                        return Err(BundleError::WrongTrustDomain {
                            expected: trust_domain.to_string(),
                            found: lanyard_core::text::shown(host, 64),
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

/// A CA certificate as a SPIFFE bundle JWK: the public key parameters,
/// `use: x509-svid` and the certificate in `x5c` (no `kid`).
pub fn x509_jwk(der: &[u8]) -> Option<serde_json::Value> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let spki = cert.public_key();
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let x5c = STANDARD.encode(der);
    match spki.parsed().ok()? {
        x509_parser::public_key::PublicKey::EC(point) => {
            let data = point.data();
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())?;
            let (crv, len) = match curve.as_str() {
                "1.2.840.10045.3.1.7" => ("P-256", 32),
                "1.3.132.0.34" => ("P-384", 48),
                _ => return None,
            };
            let (x, y) = data.get(1..)?.split_at_checked(len)?;
            Some(serde_json::json!({
                "kty": "EC", "crv": crv, "x": b64(x), "y": b64(y),
                "use": "x509-svid", "x5c": [x5c],
            }))
        }
        x509_parser::public_key::PublicKey::RSA(rsa) => Some(serde_json::json!({
            "kty": "RSA",
            "n": b64(rsa.modulus.strip_prefix(&[0]).unwrap_or(rsa.modulus)),
            "e": b64(rsa.exponent.strip_prefix(&[0]).unwrap_or(rsa.exponent)),
            "use": "x509-svid", "x5c": [x5c],
        })),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
