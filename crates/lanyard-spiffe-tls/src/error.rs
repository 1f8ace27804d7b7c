//! Errors: building configs and sources ([`Error`]), and refusing a peer
//! during a handshake ([`PeerRejected`]).

use std::error::Error as StdError;
use std::fmt;

use lanyard_core::{SpiffeId, SpiffeIdError, TrustDomain};

/// Why a config, SVID, bundle or source could not be built or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An SVID has no certificates.
    #[error("the SVID's certificate chain is empty; it needs the leaf first, then intermediates")]
    EmptyChain,
    /// A bundle has no root certificates.
    #[error("the trust bundle for {trust_domain} has no root certificates")]
    EmptyBundle {
        /// The bundle's trust domain.
        trust_domain: TrustDomain,
    },
    /// A certificate is not usable.
    #[error("{what} is not a usable certificate: {reason}")]
    BadCertificate {
        /// Which certificate (e.g. "the SVID's leaf").
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// PEM input does not parse.
    #[error("{what} is not valid PEM: {reason}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// Why (from the PEM parser; never the content).
        reason: String,
    },
    /// A leaf's SPIFFE ID is missing or malformed.
    #[error("the SVID's leaf certificate: {0}")]
    BadLeaf(#[source] RejectReason),
    /// The Workload API source has no SVID or bundles (not connected yet,
    /// shut down, or the agent has no entry for this workload).
    #[error("the Workload API source is unavailable: {0}; check SPIFFE_ENDPOINT_SOCKET and that an entry matches this workload")]
    SourceUnavailable(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A peer certificate refused during a handshake. It travels inside
/// `rustls::Error::InvalidCertificate(CertificateError::Other(..))`.
///
/// Its `Debug` is its `Display` text, because rustls shows `Other` errors
/// with `Debug`: the operator then reads "invalid peer certificate:
/// Other(OtherError(peer spiffe://… refused: …))".
#[derive(Clone)]
pub struct PeerRejected {
    /// The SPIFFE ID the peer's certificate claims, if it has a valid one.
    /// Before the chain verifies this is only a claim.
    pub peer: Option<SpiffeId>,
    /// Why it was refused.
    pub reason: RejectReason,
}

/// Why a peer certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RejectReason {
    /// The certificate is not parseable X.509.
    #[error("the certificate does not parse as X.509")]
    Unparseable,
    /// X.509-SVID §4.1 / §5: exactly one URI SAN.
    #[error("the certificate has {count} URI SANs; an X.509-SVID has exactly one, its SPIFFE ID")]
    UriSanCount {
        /// How many URI SANs it has.
        count: usize,
    },
    /// The URI SAN is not a workload SPIFFE ID.
    #[error("the URI SAN is not a valid SPIFFE ID: {0}")]
    BadSpiffeId(#[source] SpiffeIdError),
    /// X.509-SVID §4.1: a leaf has `CA:false` and no `keyCertSign`/`cRLSign`.
    #[error("the leaf certificate is a CA certificate (CA:true, keyCertSign or cRLSign)")]
    LeafIsCa,
    /// No bundle is known for the peer's trust domain.
    #[error("no trust bundle for trust domain {0}; it is neither ours nor federated with us")]
    UnknownTrustDomain(TrustDomain),
    /// The bundle could not be read from the source.
    #[error("the trust bundle could not be read: {0}")]
    BundleUnavailable(String),
    /// The certificate's validity ended.
    #[error("the certificate has expired")]
    Expired,
    /// The certificate's validity has not begun.
    #[error("the certificate is not valid yet")]
    NotYetValid,
    /// The chain does not lead to a root of the peer's trust bundle (no
    /// issuer found, or a same-named issuer whose key did not sign it).
    #[error("the chain is not signed by the trust bundle of its trust domain")]
    NotSignedByBundle,
    /// Any other chain verification failure.
    #[error("the certificate chain does not verify: {0}")]
    Chain(String),
    /// The chain verified, but the authorizer does not allow this ID.
    #[error("the SPIFFE ID is not authorised (allowed: {allowed})")]
    NotAuthorized {
        /// What the authorizer allows, for the operator.
        allowed: String,
    },
}

impl RejectReason {
    /// A stable code for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Unparseable => "unparseable",
            Self::UriSanCount { .. } => "uri_san_count",
            Self::BadSpiffeId(_) => "bad_spiffe_id",
            Self::LeafIsCa => "leaf_is_ca",
            Self::UnknownTrustDomain(_) => "unknown_trust_domain",
            Self::BundleUnavailable(_) => "bundle_unavailable",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::NotSignedByBundle => "not_signed_by_bundle",
            Self::Chain(_) => "chain",
            Self::NotAuthorized { .. } => "not_authorized",
        }
    }
}

impl PeerRejected {
    /// Finds a [`PeerRejected`] in an error from a handshake: a
    /// `rustls::Error`, an `std::io::Error` wrapping one (as tokio-rustls
    /// returns), or anything whose `source()` chain holds one.
    pub fn find<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a PeerRejected> {
        let mut next = Some(err);
        while let Some(e) = next {
            if let Some(found) = e.downcast_ref::<PeerRejected>() {
                return Some(found);
            }
            if let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) =
                e.downcast_ref::<rustls::Error>()
            {
                return other.0.downcast_ref::<PeerRejected>();
            }
            next = match e
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
            {
                Some(inner) => Some(inner as &(dyn StdError + 'static)),
                None => e.source(),
            };
        }
        None
    }

    pub(crate) fn into_rustls(self) -> rustls::Error {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
            std::sync::Arc::new(self),
        )))
    }
}

impl fmt::Display for PeerRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.peer {
            Some(id) => write!(f, "peer {id} refused: {}", self.reason),
            None => write!(f, "peer refused: {}", self.reason),
        }
    }
}

impl fmt::Debug for PeerRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl StdError for PeerRejected {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.reason)
    }
}
