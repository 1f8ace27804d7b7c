//! Mutual TLS between workloads with X.509-SVIDs (INV-6): rustls client and
//! server configs that present the workload's current SVID and authenticate
//! the peer by its SPIFFE ID.
//!
//! Start with [`server_config`] and [`client_config`]. Each takes
//! - an [`X509Material`]: where the current SVID and the trust bundles come
//!   from. [`spiffe::X509Source`] implements it (the standard Workload API
//!   client, which follows `SPIFFE_ENDPOINT_SOCKET` and keeps the latest SVID
//!   and bundles), and so does [`StaticSource`] (in memory, with
//!   [`StaticSource::swap_svid`] for callers that manage files, and tests);
//!   [`SpiffeIdPicker`] chooses one SVID when the agent hands out several;
//! - an [`Authorizer`]: which peer SPIFFE IDs are allowed
//!   ([`Authorizer::any_in_trust_domain`], [`Authorizer::exact`],
//!   [`Authorizer::one_of`], [`Authorizer::predicate`]).
//!
//! After the handshake, [`peer_spiffe_id`] names the authenticated peer.
//!
//! # What the configs do
//! - The own certificate is read from the source at every handshake, so a
//!   rotated SVID is presented on the next connection without a restart;
//!   connections already open keep the keys they negotiated.
//! - The peer's leaf must carry exactly one URI SAN, a valid `spiffe://` ID
//!   with a path, and must not be a CA (X.509-SVID §4.1, §5). Its chain is
//!   verified with rustls-webpki against the bundle of *the peer's own trust
//!   domain* (taken from that URI SAN), so federated trust domains work once
//!   the source holds their bundles. Only then is the [`Authorizer`] asked.
//! - **No DNS or IP name check.** SPIFFE authenticates by URI SAN, so the
//!   `ServerName` a client passes to `connect` is ignored: any value (e.g.
//!   `"localhost"`) will do. Authorisation is the [`Authorizer`]'s job.
//! - TLS 1.3 only, with the aws-lc-rs provider. Session resumption is off,
//!   so every connection is a full handshake that re-verifies the peer
//!   against the current bundles and presents the current SVID.
//! - A refused peer fails the handshake with
//!   `rustls::Error::InvalidCertificate(CertificateError::Other(..))` holding
//!   a [`PeerRejected`], whose message names the refused SPIFFE ID (an ID is
//!   not a secret) and the reason; [`PeerRejected::find`] digs it out of an
//!   I/O error. The peer only sees a `certificate_unknown` alert.
//!
//! # Not here
//! JWT-SVIDs, revocation lists (SVIDs are short-lived instead), TLS 1.2.

#![warn(missing_docs)]

mod authorize;
mod error;
mod resolve;
mod source;
mod verify;
mod workload_api;

use std::sync::Arc;

use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::server::NoServerSessionStorage;
use rustls::{ClientConfig, CommonState, ServerConfig};

pub use authorize::Authorizer;
pub use error::{Error, PeerRejected, RejectReason};
pub use lanyard_core::{SpiffeId, TrustDomain};
pub use source::{Bundle, StaticSource, Svid, X509Material};
pub use workload_api::SpiffeIdPicker;

use resolve::SvidResolver;
use verify::SpiffeVerifier;

/// A rustls server config that presents `source`'s current SVID and
/// requires a client certificate whose SPIFFE ID `authorizer` allows.
///
/// # Security
/// The client's chain is verified against the bundle of its own trust
/// domain in `source`; clients without a certificate are refused.
///
/// # Errors
/// [`Error::Rustls`] if the provider cannot do TLS 1.3 (it always can).
pub fn server_config(
    source: Arc<dyn X509Material>,
    authorizer: Authorizer,
) -> Result<ServerConfig, Error> {
    let provider = provider();
    let verifier = SpiffeVerifier::new(source.clone(), authorizer, &provider);
    let resolver = SvidResolver::new(source, provider.clone());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(resolver));
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// A rustls client config that presents `source`'s current SVID and accepts
/// only a server whose SPIFFE ID `authorizer` allows.
///
/// # Security
/// The `ServerName` given to `connect` is not checked (SPIFFE authenticates
/// by URI SAN); the server's chain is verified against the bundle of its own
/// trust domain and its ID against `authorizer`.
///
/// # Errors
/// [`Error::Rustls`] if the provider cannot do TLS 1.3 (it always can).
pub fn client_config(
    source: Arc<dyn X509Material>,
    authorizer: Authorizer,
) -> Result<ClientConfig, Error> {
    let provider = provider();
    let verifier = SpiffeVerifier::new(source.clone(), authorizer, &provider);
    let resolver = SvidResolver::new(source, provider.clone());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(resolver));
    config.resumption = Resumption::disabled();
    Ok(config)
}

/// A rustls client config that presents no certificate and accepts only a
/// server whose X.509-SVID chains to its trust domain's bundle in `bundles`
/// and whose SPIFFE ID `authorizer` allows: the client side of the SPIFFE
/// Federation spec's `https_spiffe` profile (a bundle endpoint must not
/// require client authentication). `bundles.svid()` is never called.
///
/// TLS 1.2 and 1.3 (the spec asks for Mozilla's "intermediate" profile, and
/// bundle endpoints such as SPIRE's serve both).
///
/// # Errors
/// [`Error::Rustls`] if the provider cannot do TLS (it always can).
pub fn server_auth_client_config(
    bundles: Arc<dyn X509Material>,
    authorizer: Authorizer,
) -> Result<ClientConfig, Error> {
    let provider = provider();
    let verifier = SpiffeVerifier::new(bundles, authorizer, &provider);
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    Ok(config)
}

/// The SPIFFE ID of the peer of an established connection (the URI SAN of
/// its leaf certificate), or `None` before the handshake finished.
///
/// With configs from this crate the ID has been verified and authorised by
/// the time the handshake completes.
pub fn peer_spiffe_id(conn: &CommonState) -> Option<SpiffeId> {
    let leaf = conn.peer_certificates()?.first()?;
    verify::leaf_spiffe_id(leaf.as_ref()).ok()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}
