//! Peer verification for both sides: SPIFFE ID from the leaf's URI SAN,
//! chain against that trust domain's bundle, then the authorizer.

use std::sync::Arc;

use lanyard_core::SpiffeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use x509_parser::prelude::{FromDer as _, GeneralName, ParsedExtension, X509Certificate};

use crate::authorize::Authorizer;
use crate::error::{PeerRejected, RejectReason};
use crate::source::X509Material;

/// Which side the peer is on; picks the extended key usage to require.
#[derive(Debug, Clone, Copy)]
enum PeerRole {
    Client,
    Server,
}

/// Verifies peer SVIDs; a `ServerCertVerifier` for clients and a
/// `ClientCertVerifier` for servers.
#[derive(Debug)]
pub(crate) struct SpiffeVerifier {
    source: Arc<dyn X509Material>,
    authorizer: Authorizer,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeVerifier {
    pub(crate) fn new(
        source: Arc<dyn X509Material>,
        authorizer: Authorizer,
        provider: &CryptoProvider,
    ) -> Self {
        Self {
            source,
            authorizer,
            algorithms: provider.signature_verification_algorithms,
        }
    }

    /// The whole decision; on success, the peer's verified, authorised ID.
    fn verify_peer(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        role: PeerRole,
    ) -> Result<SpiffeId, PeerRejected> {
        let (peer, is_ca) = parse_leaf(end_entity.as_ref())
            .map_err(|reason| PeerRejected { peer: None, reason })?;
        let reject = |reason| PeerRejected {
            peer: Some(peer.clone()),
            reason,
        };
        if is_ca {
            return Err(reject(RejectReason::LeafIsCa));
        }
        let bundle = self
            .source
            .bundle(peer.trust_domain())
            .map_err(|e| reject(RejectReason::BundleUnavailable(e.to_string())))?
            .ok_or_else(|| {
                reject(RejectReason::UnknownTrustDomain(
                    peer.trust_domain().clone(),
                ))
            })?;
        let anchors = bundle
            .roots()
            .iter()
            .map(webpki::anchor_from_trusted_cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| reject(RejectReason::BundleUnavailable(e.to_string())))?;
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| reject(RejectReason::Chain(e.to_string())))?;
        let usage = match role {
            PeerRole::Client => webpki::KeyUsage::client_auth(),
            PeerRole::Server => webpki::KeyUsage::server_auth(),
        };
        cert.verify_for_usage(
            self.algorithms.all,
            &anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(|e| reject(chain_reason(&e)))?;
        if !self.authorizer.allows(&peer) {
            return Err(reject(RejectReason::NotAuthorized {
                allowed: self.authorizer.to_string(),
            }));
        }
        Ok(peer)
    }

    fn decide(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        role: PeerRole,
    ) -> Result<(), rustls::Error> {
        match self.verify_peer(end_entity, intermediates, now, role) {
            Ok(peer) => {
                tracing::debug!(peer = %peer, role = ?role, "spiffe peer accepted");
                Ok(())
            }
            Err(rejected) => {
                tracing::warn!(
                    peer = rejected.peer.as_ref().map(|p| p.to_string()),
                    role = ?role,
                    reason = rejected.reason.as_str(),
                    detail = %rejected.reason,
                    "spiffe peer refused"
                );
                Err(rejected.into_rustls())
            }
        }
    }
}

impl ServerCertVerifier for SpiffeVerifier {
    /// `server_name` is deliberately unused: SPIFFE authenticates the server
    /// by the URI SAN, and the authorizer decides.
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.decide(end_entity, intermediates, now, PeerRole::Server)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for SpiffeVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No hints: trust domains (and so acceptable roots) are many, and the
    /// client has exactly one SVID to offer anyway.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.decide(end_entity, intermediates, now, PeerRole::Client)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The SPIFFE ID of an X.509-SVID leaf, after the leaf-shape rules of
/// X.509-SVID §4.1 and §5: exactly one URI SAN holding a workload SPIFFE ID,
/// not a CA, no `keyCertSign`/`cRLSign`. The chain is not checked here.
pub(crate) fn leaf_spiffe_id(der: &[u8]) -> Result<SpiffeId, RejectReason> {
    match parse_leaf(der)? {
        (_, true) => Err(RejectReason::LeafIsCa),
        (id, false) => Ok(id),
    }
}

/// The leaf's SPIFFE ID and whether it is CA-capable.
fn parse_leaf(der: &[u8]) -> Result<(SpiffeId, bool), RejectReason> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|_| RejectReason::Unparseable)?;
    if !rest.is_empty() {
        return Err(RejectReason::Unparseable);
    }
    let mut uris = Vec::new();
    let mut is_ca = false;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                uris.extend(san.general_names.iter().filter_map(|g| match g {
                    GeneralName::URI(u) => Some(*u),
                    _ => None,
                }));
            }
            ParsedExtension::BasicConstraints(bc) => is_ca |= bc.ca,
            ParsedExtension::KeyUsage(ku) => is_ca |= ku.key_cert_sign() || ku.crl_sign(),
            ParsedExtension::ParseError { .. } if ext.critical => {
                return Err(RejectReason::Unparseable)
            }
            _ => {}
        }
    }
    let [uri] = uris.as_slice() else {
        return Err(RejectReason::UriSanCount { count: uris.len() });
    };
    let id = SpiffeId::parse(uri).map_err(RejectReason::BadSpiffeId)?;
    Ok((id, is_ca))
}

fn chain_reason(e: &webpki::Error) -> RejectReason {
    match e {
        webpki::Error::CertExpired { .. } => RejectReason::Expired,
        webpki::Error::CertNotValidYet { .. } => RejectReason::NotYetValid,
        // A CA of the same name but another key (a rogue or rotated-away
        // root) shows up as a bad signature: to the operator, both mean the
        // bundle did not sign this chain.
        webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => {
            RejectReason::NotSignedByBundle
        }
        webpki::Error::CaUsedAsEndEntity => RejectReason::LeafIsCa,
        other => RejectReason::Chain(other.to_string()),
    }
}

#[cfg(test)]
mod tests;
