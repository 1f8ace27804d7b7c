//! Where SVIDs and bundles come from: the [`X509Material`] trait, its value
//! types [`Svid`] and [`Bundle`], and the in-memory [`StaticSource`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use lanyard_core::{SpiffeId, TrustDomain};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use crate::error::Error;
use crate::verify::leaf_spiffe_id;

/// A source of the workload's current X.509-SVID and of trust bundles.
///
/// The TLS configs call it at every handshake, so implementations return
/// whatever is current (cheaply: an `Arc` clone, or a small conversion).
pub trait X509Material: fmt::Debug + Send + Sync {
    /// The workload's current SVID.
    ///
    /// # Errors
    /// [`Error::SourceUnavailable`] (or another [`Error`]) when there is none;
    /// the handshake then fails.
    fn svid(&self) -> Result<Arc<Svid>, Error>;

    /// The X.509 trust bundle of `trust_domain` (own or federated), or
    /// `None` if the source has no bundle for it.
    ///
    /// # Errors
    /// When the source cannot answer at all; the handshake then fails.
    fn bundle(&self, trust_domain: &TrustDomain) -> Result<Option<Arc<Bundle>>, Error>;
}

/// An X.509-SVID with its private key: a leaf (whose one URI SAN is the
/// SPIFFE ID), then intermediates, and the leaf's PKCS#8 key.
pub struct Svid {
    spiffe_id: SpiffeId,
    cert_chain: Vec<CertificateDer<'static>>,
    private_key: PrivatePkcs8KeyDer<'static>,
}

impl Svid {
    /// An SVID from its chain (leaf first) and its PKCS#8 private key (DER).
    /// Whether the key matches the leaf is checked when it is first used.
    ///
    /// # Errors
    /// [`Error::EmptyChain`]; [`Error::BadLeaf`] if the leaf does not parse or
    /// does not carry exactly one valid SPIFFE ID.
    pub fn new(
        cert_chain: Vec<CertificateDer<'static>>,
        private_key: PrivatePkcs8KeyDer<'static>,
    ) -> Result<Self, Error> {
        let leaf = cert_chain.first().ok_or(Error::EmptyChain)?;
        let spiffe_id = leaf_spiffe_id(leaf.as_ref()).map_err(Error::BadLeaf)?;
        Ok(Self {
            spiffe_id,
            cert_chain,
            private_key,
        })
    }

    /// The SVID from DER bytes: leaf, intermediates, PKCS#8 key.
    ///
    /// # Errors
    /// As [`Svid::new`].
    pub fn from_der(cert_chain: Vec<Vec<u8>>, private_key_pkcs8: Vec<u8>) -> Result<Self, Error> {
        Self::new(
            cert_chain.into_iter().map(CertificateDer::from).collect(),
            PrivatePkcs8KeyDer::from(private_key_pkcs8),
        )
    }

    /// The SVID from PEM files as SPIFFE tooling writes them: the
    /// certificates (`CERTIFICATE` blocks, leaf first) and the key (one
    /// PKCS#8 `PRIVATE KEY` block).
    ///
    /// # Errors
    /// [`Error::Pem`] naming which input is bad (never its content); then
    /// as [`Svid::new`].
    pub fn from_pem(cert_chain_pem: &[u8], private_key_pem: &[u8]) -> Result<Self, Error> {
        let chain = CertificateDer::pem_slice_iter(cert_chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Pem {
                what: "the SVID certificates",
                reason: e.to_string(),
            })?;
        // The parser's message may quote bytes of the input: not for a key.
        let key = PrivatePkcs8KeyDer::from_pem_slice(private_key_pem).map_err(|e| Error::Pem {
            what: "the SVID private key",
            reason: match e {
                rustls::pki_types::pem::Error::NoItemsFound => "no PKCS#8 \"PRIVATE KEY\" block",
                _ => "the PKCS#8 \"PRIVATE KEY\" block does not decode",
            }
            .to_owned(),
        })?;
        Self::new(chain, key)
    }

    /// The SPIFFE ID (the leaf's URI SAN).
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// Leaf first, then intermediates.
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.cert_chain
    }

    /// The leaf's private key.
    pub fn private_key(&self) -> &PrivatePkcs8KeyDer<'static> {
        &self.private_key
    }
}

impl fmt::Debug for Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Svid")
            .field("spiffe_id", &self.spiffe_id.to_string())
            .field("certificates", &self.cert_chain.len())
            .field("private_key", &"***")
            .finish()
    }
}

/// The X.509 trust bundle of one trust domain: the root certificates its
/// SVIDs chain to.
#[derive(Clone)]
pub struct Bundle {
    trust_domain: TrustDomain,
    roots: Vec<CertificateDer<'static>>,
}

impl Bundle {
    /// A bundle of `roots` for `trust_domain`.
    ///
    /// # Errors
    /// [`Error::EmptyBundle`]; [`Error::BadCertificate`] if a root cannot be
    /// a trust anchor.
    pub fn new(
        trust_domain: TrustDomain,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, Error> {
        if roots.is_empty() {
            return Err(Error::EmptyBundle { trust_domain });
        }
        for root in &roots {
            webpki::anchor_from_trusted_cert(root).map_err(|e| Error::BadCertificate {
                what: "a trust bundle root",
                reason: e.to_string(),
            })?;
        }
        Ok(Self {
            trust_domain,
            roots,
        })
    }

    /// A bundle from PEM (`CERTIFICATE` blocks), e.g. a `bundle.pem` file.
    ///
    /// # Errors
    /// [`Error::Pem`]; then as [`Bundle::new`].
    pub fn from_pem(trust_domain: TrustDomain, roots_pem: &[u8]) -> Result<Self, Error> {
        let roots = CertificateDer::pem_slice_iter(roots_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Pem {
                what: "the trust bundle",
                reason: e.to_string(),
            })?;
        Self::new(trust_domain, roots)
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The root certificates.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }
}

impl fmt::Debug for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bundle")
            .field("trust_domain", &self.trust_domain.as_str())
            .field("roots", &self.roots.len())
            .finish()
    }
}

/// An [`X509Material`] held in memory: for tests, and for callers that load
/// SVIDs from files (e.g. written by `lanyard svid fetch --write`) and call
/// [`StaticSource::swap_svid`] when they change.
#[derive(Debug)]
pub struct StaticSource {
    svid: RwLock<Arc<Svid>>,
    bundles: RwLock<BTreeMap<TrustDomain, Arc<Bundle>>>,
}

impl StaticSource {
    /// A source with `svid` and `bundles` (one per trust domain; a later
    /// bundle for the same trust domain replaces an earlier one).
    pub fn new(svid: Svid, bundles: impl IntoIterator<Item = Bundle>) -> Self {
        let bundles = bundles
            .into_iter()
            .map(|b| (b.trust_domain.clone(), Arc::new(b)))
            .collect();
        Self {
            svid: RwLock::new(Arc::new(svid)),
            bundles: RwLock::new(bundles),
        }
    }

    /// Replaces the SVID (rotation); returns the previous one. The next
    /// handshake presents the new SVID; open connections are unaffected.
    pub fn swap_svid(&self, svid: Svid) -> Arc<Svid> {
        let mut slot = self.svid.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *slot, Arc::new(svid))
    }

    /// Adds or replaces the bundle of its trust domain; returns the previous one.
    pub fn set_bundle(&self, bundle: Bundle) -> Option<Arc<Bundle>> {
        self.bundles
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(bundle.trust_domain.clone(), Arc::new(bundle))
    }

    /// Removes the bundle of `trust_domain` (its peers are then refused).
    pub fn remove_bundle(&self, trust_domain: &TrustDomain) -> Option<Arc<Bundle>> {
        self.bundles
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(trust_domain)
    }
}

impl X509Material for StaticSource {
    fn svid(&self) -> Result<Arc<Svid>, Error> {
        Ok(self
            .svid
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone())
    }

    fn bundle(&self, trust_domain: &TrustDomain) -> Result<Option<Arc<Bundle>>, Error> {
        Ok(self
            .bundles
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(trust_domain)
            .cloned())
    }
}
