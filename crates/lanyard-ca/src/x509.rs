//! The X.509 CA: a self-signed root and a signing intermediate for a trust
//! domain, and CSR → X.509-SVID per the SPIFFE X.509-SVID specification.
//!
//! An SVID has exactly one URI SAN (the SPIFFE ID, never taken from the CSR),
//! optional DNS SANs, a critical key usage with `digitalSignature` only,
//! `serverAuth` + `clientAuth`, `CA:false`, a 128-bit random serial and a
//! `notBefore` backdated by [`BACKDATE`] for clock skew. CA certificates
//! carry `keyCertSign` + `cRLSign` and the trust domain's URI SAN. The CSR's
//! signature is verified and weak keys (RSA under 2048 bits, curves other
//! than P-256/P-384) are refused. After signing, the certificate is parsed
//! back and checked against those rules (sign, then validate what was
//! signed), so a bug in the builder cannot hand out a CA-capable SVID.
//!
//! [`CaMaterial`] is a CA certificate with its key, as generated or loaded
//! from the store (sealed like the JWT keys) or from an upstream CA's PEM
//! files; [`Authority`] signs with one intermediate.

use std::time::{Duration, SystemTime};

use aws_lc_rs::signature::{
    self, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1,
    RSA_PKCS1_2048_8192_SHA256,
};
use lanyard_core::naming::{self, Reserved};
use lanyard_core::{SpiffeId, TrustDomain};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SignatureAlgorithm,
    PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256,
};
use x509_parser::prelude::{FromDer as _, GeneralName, ParsedExtension, X509Certificate};
use x509_parser::public_key::PublicKey;

/// `notBefore` is this far in the past, for peers whose clocks lag.
pub const BACKDATE: Duration = Duration::from_secs(30);
/// Largest CSR accepted.
pub const MAX_CSR_LEN: usize = 16 * 1024;

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const OID_ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";
const OID_RSA_SHA256: &str = "1.2.840.113549.1.1.11";

/// Why a CSR or certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum X509Error {
    /// The CSR is not DER, too large, or has trailing bytes.
    #[error("the CSR is not a DER PKCS#10 request: {0}")]
    BadCsr(&'static str),
    /// The CSR's signature does not verify with its own key.
    #[error("the CSR's signature does not verify")]
    BadCsrSignature,
    /// The key type or size is not accepted.
    #[error("the CSR's key is not accepted: {0}")]
    WeakKey(String),
    /// A DNS name is not a valid DNS name.
    #[error("DNS name {0:?} is not valid")]
    BadDnsName(String),
    /// The TTL is zero or beyond the CA's own validity.
    #[error("TTL must be above zero and end before the signing CA expires")]
    BadTtl,
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(String),
    /// A CA certificate or key (stored or configured) is unusable.
    #[error("CA certificate or key: {0}")]
    BadCa(&'static str),
    /// The signed certificate does not meet the X.509-SVID rules (a bug).
    #[error("signed certificate breaks the X.509-SVID rules: {0}")]
    Invariant(&'static str),
    /// The SPIFFE ID does not fit the kind of certificate asked for: a
    /// workload SVID for an ID under `spiffe://TD/lanyard/` (INV-8), or a
    /// node or server certificate for any other ID.
    #[error("{spiffe_id} cannot be signed as a {kind} certificate: IDs under spiffe://TD/lanyard/ are only for the server and its nodes")]
    WrongKind {
        /// The ID asked for.
        spiffe_id: String,
        /// The kind asked for.
        kind: SvidKind,
    },
}

/// Whose certificate is signed. Reserved IDs (`spiffe://TD/lanyard/…`) are
/// only ever signed as `Node` or `Server`, and those kinds only for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvidKind {
    /// A workload's X.509-SVID (any ID outside the reserved prefix).
    Workload,
    /// A node agent's SVID, `spiffe://TD/lanyard/node/ID`.
    Node,
    /// The server's own certificate, `spiffe://TD/lanyard/server`.
    Server,
}

impl std::fmt::Display for SvidKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Workload => "workload",
            Self::Node => "node",
            Self::Server => "server",
        })
    }
}

/// A CA certificate and its private key, as generated or stored.
#[derive(Clone)]
pub struct CaMaterial {
    /// The CA certificate, DER.
    pub cert_der: Vec<u8>,
    key_pkcs8: zeroize::Zeroizing<Vec<u8>>,
    /// `notAfter`.
    pub not_after: SystemTime,
}

impl std::fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaMaterial")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl CaMaterial {
    /// From a stored certificate and its PKCS#8 key (checked to belong together).
    ///
    /// # Errors
    /// [`X509Error::BadCa`] if either does not parse or they do not match.
    pub fn from_parts(cert_der: Vec<u8>, key_pkcs8: Vec<u8>) -> Result<Self, X509Error> {
        let key_pkcs8 = zeroize::Zeroizing::new(key_pkcs8);
        let key = KeyPair::try_from(key_pkcs8.as_slice())
            .map_err(|_| X509Error::BadCa("the private key is not a PKCS#8 P-256/P-384/RSA key"))?;
        let (_, cert) = X509Certificate::from_der(&cert_der)
            .map_err(|_| X509Error::BadCa("the certificate does not parse"))?;
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(X509Error::BadCa(
                "the private key does not match the certificate",
            ));
        }
        if !cert.is_ca() {
            return Err(X509Error::BadCa(
                "the certificate is not a CA (basicConstraints CA:false)",
            ));
        }
        let not_after = SystemTime::UNIX_EPOCH
            + Duration::from_secs(
                u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0),
            );
        Ok(Self {
            cert_der,
            key_pkcs8,
            not_after,
        })
    }

    /// The private key, PKCS#8 DER (to be sealed before storing).
    pub fn key_pkcs8(&self) -> &[u8] {
        &self.key_pkcs8
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, X509Error> {
        let key = KeyPair::try_from(self.key_pkcs8.as_slice())
            .map_err(|_| X509Error::BadCa("the private key does not parse"))?;
        Issuer::from_ca_cert_der(&self.cert_der.as_slice().into(), key)
            .map_err(|_| X509Error::BadCa("the certificate does not parse"))
    }
}

/// A new self-signed P-256 root for `trust_domain`, valid for `ttl`.
///
/// # Errors
/// [`X509Error::Generate`].
pub fn generate_root(
    trust_domain: &TrustDomain,
    now: SystemTime,
    ttl: Duration,
) -> Result<CaMaterial, X509Error> {
    let gen = |e: rcgen::Error| X509Error::Generate(e.to_string());
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen)?;
    let params = ca_params(
        trust_domain,
        "root",
        now,
        ttl,
        BasicConstraints::Unconstrained,
    )?;
    let cert = params.self_signed(&key).map_err(gen)?;
    Ok(CaMaterial {
        cert_der: cert.der().to_vec(),
        key_pkcs8: zeroize::Zeroizing::new(key.serialize_der()),
        not_after: now + ttl,
    })
}

/// A new P-256 signing intermediate for `trust_domain`, signed by `parent`,
/// valid for `ttl` (never beyond the parent).
///
/// # Errors
/// [`X509Error::Generate`], [`X509Error::BadCa`] if `parent` does not load.
pub fn generate_intermediate(
    trust_domain: &TrustDomain,
    parent: &CaMaterial,
    now: SystemTime,
    ttl: Duration,
) -> Result<CaMaterial, X509Error> {
    let gen = |e: rcgen::Error| X509Error::Generate(e.to_string());
    let issuer = parent.issuer()?;
    let not_after = (now + ttl).min(parent.not_after);
    if not_after <= now {
        return Err(X509Error::BadTtl);
    }
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen)?;
    let params = ca_params(
        trust_domain,
        "intermediate",
        now,
        not_after.duration_since(now).unwrap_or_default(),
        BasicConstraints::Constrained(0),
    )?;
    let cert = params.signed_by(&key, &issuer).map_err(gen)?;
    Ok(CaMaterial {
        cert_der: cert.der().to_vec(),
        key_pkcs8: zeroize::Zeroizing::new(key.serialize_der()),
        not_after,
    })
}

/// An upstream CA loaded from PEM files, so an enterprise PKI sits above
/// Lanyard: Lanyard's rotating intermediates are signed by `signer`.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The upstream certificate (and key) that signs Lanyard's intermediates.
    pub signer: CaMaterial,
    /// Certificates between `signer` and a root, sent with every SVID.
    pub chain_above: Vec<Vec<u8>>,
    /// The roots relying parties trust (the X.509 part of the bundle).
    pub roots: Vec<Vec<u8>>,
}

/// Loads an upstream CA: `chain_pem` holds the signing CA certificate first,
/// then any intermediates up to a root; `key_pem` its PKCS#8 key;
/// `roots_pem` the trusted roots. The chain must verify up to one of them.
///
/// # Errors
/// [`X509Error::BadCa`] naming what is wrong.
pub fn load_upstream(
    chain_pem: &str,
    key_pem: &str,
    roots_pem: &str,
) -> Result<Upstream, X509Error> {
    let chain = pem_certs(chain_pem)?;
    let roots = pem_certs(roots_pem)?;
    let Some((signer_der, above)) = chain.split_first() else {
        return Err(X509Error::BadCa(
            "the upstream certificate file holds no CERTIFICATE",
        ));
    };
    if roots.is_empty() {
        return Err(X509Error::BadCa(
            "the upstream bundle file holds no CERTIFICATE",
        ));
    }
    let key = x509_parser::pem::Pem::iter_from_buffer(key_pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .filter(|p| p.label == "PRIVATE KEY")
        .ok_or(X509Error::BadCa(
            "the upstream key file must hold one PKCS#8 'PRIVATE KEY' (convert with `openssl pkcs8 -topk8 -nocrypt`)",
        ))?;
    let signer = CaMaterial::from_parts(signer_der.clone(), key.contents)?;
    // signer -> above... -> some root.
    let mut path: Vec<&Vec<u8>> = vec![signer_der];
    path.extend(above.iter());
    for pair in path.windows(2) {
        if let [child, parent] = pair {
            if !signed_by(child, parent) {
                return Err(X509Error::BadCa(
                    "the upstream chain is out of order or broken",
                ));
            }
        }
    }
    let top = path.last().copied().unwrap_or(signer_der);
    if !roots.iter().any(|r| r == top || signed_by(top, r)) {
        return Err(X509Error::BadCa(
            "the upstream chain does not lead to a root in the bundle file",
        ));
    }
    let chain_above = above
        .iter()
        .filter(|c| !roots.contains(c))
        .cloned()
        .collect();
    Ok(Upstream {
        signer,
        chain_above,
        roots,
    })
}

fn pem_certs(pem: &str) -> Result<Vec<Vec<u8>>, X509Error> {
    let mut out = Vec::new();
    for p in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let p = p.map_err(|_| X509Error::BadCa("a PEM block does not parse"))?;
        if p.label == "CERTIFICATE" {
            out.push(p.contents);
        }
    }
    Ok(out)
}

/// The SPIFFE ID in a certificate's URI SAN, when it has exactly one URI
/// SAN and that is a valid SPIFFE ID (the X.509-SVID rule).
pub fn spiffe_id_of(der: &[u8]) -> Option<SpiffeId> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut uris = san.value.general_names.iter().filter_map(|g| match g {
        GeneralName::URI(u) => Some(*u),
        _ => None,
    });
    let first = uris.next()?;
    if uris.next().is_some() {
        return None;
    }
    SpiffeId::parse(first).ok()
}

/// Whether `child`'s signature verifies with `parent`'s key.
pub fn signed_by(child: &[u8], parent: &[u8]) -> bool {
    let (Ok((_, c)), Ok((_, p))) = (
        X509Certificate::from_der(child),
        X509Certificate::from_der(parent),
    ) else {
        return false;
    };
    c.verify_signature(Some(p.public_key())).is_ok()
}

/// What to sign.
#[derive(Debug, Clone)]
pub struct X509SvidParams<'a> {
    /// The identity; must be in the CA's trust domain.
    pub spiffe_id: &'a SpiffeId,
    /// The workload's PKCS#10 request (DER); its key is certified, nothing else is taken from it.
    pub csr_der: &'a [u8],
    /// Extra DNS SANs from the entry.
    pub dns_names: &'a [String],
    /// Whose certificate this is; checked against the SPIFFE ID.
    pub kind: SvidKind,
    /// Lifetime.
    pub ttl: Duration,
    /// Now.
    pub now: SystemTime,
}

/// A signed X.509-SVID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509Svid {
    /// The leaf certificate, DER.
    pub cert_der: Vec<u8>,
    /// Intermediates up to (not including) the root, DER.
    pub chain_der: Vec<Vec<u8>>,
    /// `notAfter`.
    pub expires_at: SystemTime,
}

/// A trust domain's CA as it signs: the signing intermediate, the chain
/// above it (up to, not including, a root) and the roots relying parties
/// trust (the X.509 part of the bundle).
pub struct Authority {
    trust_domain: TrustDomain,
    signer: Issuer<'static, KeyPair>,
    signer_not_after: SystemTime,
    chain: Vec<Vec<u8>>,
    roots: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("trust_domain", &self.trust_domain)
            .field("signer_not_after", &self.signer_not_after)
            .field("chain", &self.chain.len())
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// An authority signing with `intermediate`, whose certificate is sent
    /// with every SVID followed by `chain_above` (certificates between it and
    /// a root, e.g. an upstream intermediate); `roots` is the bundle.
    ///
    /// # Errors
    /// [`X509Error::BadCa`] if `intermediate` does not load.
    pub fn new(
        trust_domain: &TrustDomain,
        intermediate: &CaMaterial,
        chain_above: Vec<Vec<u8>>,
        roots: Vec<Vec<u8>>,
    ) -> Result<Self, X509Error> {
        let mut chain = vec![intermediate.cert_der.clone()];
        chain.extend(chain_above);
        Ok(Self {
            trust_domain: trust_domain.clone(),
            signer: intermediate.issuer()?,
            signer_not_after: intermediate.not_after,
            chain,
            roots,
        })
    }

    /// A new self-signed root (valid `root_ttl`) and an intermediate (valid
    /// `intermediate_ttl`) for `trust_domain`, both P-256 and in memory only.
    ///
    /// # Errors
    /// [`X509Error::Generate`].
    pub fn generate(
        trust_domain: &TrustDomain,
        now: SystemTime,
        root_ttl: Duration,
        intermediate_ttl: Duration,
    ) -> Result<Self, X509Error> {
        let root = generate_root(trust_domain, now, root_ttl)?;
        let int = generate_intermediate(trust_domain, &root, now, intermediate_ttl)?;
        Self::new(trust_domain, &int, Vec::new(), vec![root.cert_der])
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The first root certificate, DER.
    pub fn root_der(&self) -> &[u8] {
        self.roots.first().map(Vec::as_slice).unwrap_or_default()
    }

    /// Every root in the bundle, DER.
    pub fn roots(&self) -> &[Vec<u8>] {
        &self.roots
    }

    /// The signing intermediate's certificate, DER.
    pub fn intermediate_der(&self) -> &[u8] {
        self.chain.first().map(Vec::as_slice).unwrap_or_default()
    }

    /// When the signing intermediate expires; SVIDs never outlive it.
    pub fn not_after(&self) -> SystemTime {
        self.signer_not_after
    }

    /// Signs an X.509-SVID for the key in `params.csr_der`.
    ///
    /// # Security
    /// Only the CSR's public key is used; its subject, SANs and extensions
    /// are ignored. A reserved ID is signed only as the kind it names
    /// (INV-8). The result is parsed back and checked before it is returned.
    ///
    /// # Errors
    /// [`X509Error`] for a bad or weak CSR, bad DNS names or TTL, or an ID
    /// that does not fit `params.kind`.
    pub fn sign_svid(&self, params: &X509SvidParams<'_>) -> Result<X509Svid, X509Error> {
        if params.spiffe_id.trust_domain() != &self.trust_domain {
            return Err(X509Error::Invariant(
                "SPIFFE ID is outside the CA's trust domain",
            ));
        }
        let fits = matches!(
            (
                naming::classify(params.spiffe_id, &self.trust_domain),
                params.kind,
            ),
            (None, SvidKind::Workload)
                | (Some(Reserved::Node(_)), SvidKind::Node)
                | (Some(Reserved::Server), SvidKind::Server)
        );
        if !fits {
            return Err(X509Error::WrongKind {
                spiffe_id: params.spiffe_id.to_string(),
                kind: params.kind,
            });
        }
        let key = verified_csr_key(params.csr_der)?;
        let not_after = params.now + params.ttl;
        if params.ttl.is_zero() || not_after > self.signer_not_after {
            return Err(X509Error::BadTtl);
        }
        let mut sans = vec![SanType::URI(
            params
                .spiffe_id
                .to_string()
                .try_into()
                .map_err(|_| X509Error::Invariant("SPIFFE ID is not IA5"))?,
        )];
        for dns in params.dns_names {
            let valid = !dns.is_empty()
                && dns.len() <= 253
                && dns.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
                });
            if !valid {
                return Err(X509Error::BadDnsName(dns.chars().take(64).collect()));
            }
            sans.push(SanType::DnsName(
                dns.clone()
                    .try_into()
                    .map_err(|_| X509Error::BadDnsName(dns.clone()))?,
            ));
        }
        let mut p = CertificateParams::default();
        p.not_before = (params.now - BACKDATE).into();
        p.not_after = not_after.into();
        p.serial_number = Some(random_serial()?);
        p.subject_alt_names = sans;
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name
            .push(DnType::OrganizationName, "SPIFFE");
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.use_authority_key_identifier_extension = true;
        let cert = p
            .signed_by(&key, &self.signer)
            .map_err(|e| X509Error::Generate(e.to_string()))?;
        let der = cert.der().to_vec();
        check_svid(&der, params.spiffe_id)?;
        Ok(X509Svid {
            cert_der: der,
            chain_der: self.chain.clone(),
            expires_at: not_after,
        })
    }
}

fn ca_params(
    td: &TrustDomain,
    role: &str,
    now: SystemTime,
    ttl: Duration,
    constraints: BasicConstraints,
) -> Result<CertificateParams, X509Error> {
    let mut p = CertificateParams::default();
    p.not_before = (now - BACKDATE).into();
    p.not_after = (now + ttl).into();
    p.serial_number = Some(random_serial()?);
    p.is_ca = IsCa::Ca(constraints);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.subject_alt_names =
        vec![SanType::URI(td.id_string().try_into().map_err(|_| {
            X509Error::Invariant("trust domain is not IA5")
        })?)];
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name
        .push(DnType::OrganizationName, "Lanyard");
    p.distinguished_name
        .push(DnType::CommonName, format!("{td} {role} CA"));
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

/// 128 random bits, top bit clear so the DER INTEGER stays positive.
fn random_serial() -> Result<SerialNumber, X509Error> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| X509Error::Generate("random number generator failed".into()))?;
    if let Some(first) = bytes.first_mut() {
        *first &= 0x7f;
        *first |= 0x01;
    }
    Ok(SerialNumber::from_slice(&bytes))
}

/// A CSR's public key, after its signature verified and its strength passed.
#[derive(Debug)]
struct CsrKey {
    alg: &'static SignatureAlgorithm,
    bits: Vec<u8>,
}

impl PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.bits
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

fn verified_csr_key(der: &[u8]) -> Result<CsrKey, X509Error> {
    if der.len() > MAX_CSR_LEN {
        return Err(X509Error::BadCsr("larger than 16 KiB"));
    }
    let (rest, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(der)
        .map_err(|_| X509Error::BadCsr("does not parse"))?;
    if !rest.is_empty() {
        return Err(X509Error::BadCsr("trailing bytes"));
    }
    let info = &csr.certification_request_info;
    let spki = &info.subject_pki;
    let key_bits = spki.subject_public_key.data.to_vec();
    let key_alg = spki.algorithm.algorithm.to_id_string();
    let (rcgen_alg, verify_alg): (
        &'static SignatureAlgorithm,
        &'static dyn signature::VerificationAlgorithm,
    ) = match key_alg.as_str() {
        OID_EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                OID_P256 => (&PKCS_ECDSA_P256_SHA256, &ECDSA_P256_SHA256_ASN1),
                OID_P384 => (&PKCS_ECDSA_P384_SHA384, &ECDSA_P384_SHA384_ASN1),
                _ => {
                    return Err(X509Error::WeakKey(
                        "EC keys must be on P-256 or P-384".into(),
                    ))
                }
            }
        }
        OID_RSA_ENCRYPTION => {
            check_rsa_strength(spki)?;
            (&PKCS_RSA_SHA256, &RSA_PKCS1_2048_8192_SHA256)
        }
        _ => {
            return Err(X509Error::WeakKey(
                "only EC (P-256, P-384) and RSA (>= 2048 bits) keys".into(),
            ))
        }
    };
    // The CSR's signature algorithm must match its key type.
    let sig_alg = csr.signature_algorithm.algorithm.to_id_string();
    let matches = match key_alg.as_str() {
        OID_RSA_ENCRYPTION => sig_alg == OID_RSA_SHA256,
        _ if std::ptr::eq(rcgen_alg, &PKCS_ECDSA_P256_SHA256) => sig_alg == OID_ECDSA_SHA256,
        _ => sig_alg == OID_ECDSA_SHA384,
    };
    if !matches {
        return Err(X509Error::BadCsrSignature);
    }
    UnparsedPublicKey::new(verify_alg, &key_bits)
        .verify(info.raw, &csr.signature_value.data)
        .map_err(|_| X509Error::BadCsrSignature)?;
    Ok(CsrKey {
        alg: rcgen_alg,
        bits: key_bits,
    })
}

fn check_rsa_strength(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<(), X509Error> {
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) if rsa.key_size() >= 2048 => Ok(()),
        Ok(PublicKey::RSA(rsa)) => Err(X509Error::WeakKey(format!(
            "RSA key of {} bits; at least 2048 are required",
            rsa.key_size()
        ))),
        _ => Err(X509Error::WeakKey("RSA key does not parse".into())),
    }
}

/// Parses a signed SVID back and checks the X.509-SVID rules.
fn check_svid(der: &[u8], spiffe_id: &SpiffeId) -> Result<(), X509Error> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|_| X509Error::Invariant("does not parse"))?;
    let mut uris = Vec::new();
    let mut ku_ok = false;
    let mut eku_ok = false;
    let mut not_ca = false;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                uris.extend(san.general_names.iter().filter_map(|g| match g {
                    GeneralName::URI(u) => Some(u.to_string()),
                    _ => None,
                }));
            }
            ParsedExtension::KeyUsage(ku) => {
                ku_ok =
                    ext.critical && ku.digital_signature() && !ku.key_cert_sign() && !ku.crl_sign();
            }
            ParsedExtension::ExtendedKeyUsage(eku) => eku_ok = eku.server_auth && eku.client_auth,
            ParsedExtension::BasicConstraints(bc) => not_ca = !bc.ca,
            _ => {}
        }
    }
    if uris != [spiffe_id.to_string()] {
        return Err(X509Error::Invariant("exactly one URI SAN, the SPIFFE ID"));
    }
    if !ku_ok {
        return Err(X509Error::Invariant(
            "critical key usage with digitalSignature only",
        ));
    }
    if !eku_ok {
        return Err(X509Error::Invariant("serverAuth and clientAuth"));
    }
    if !not_ca {
        return Err(X509Error::Invariant("CA:false"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
