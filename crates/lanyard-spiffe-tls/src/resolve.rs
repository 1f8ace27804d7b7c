//! Presenting our own SVID: read from the source at every handshake.

use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::PrivateKeyDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use crate::error::Error;
use crate::source::{Svid, X509Material};

/// Resolves the current SVID for both sides. The parsed signing key is
/// cached per leaf certificate, so a handshake only parses a key after a
/// rotation.
#[derive(Debug)]
pub(crate) struct SvidResolver {
    source: Arc<dyn X509Material>,
    provider: Arc<CryptoProvider>,
    cache: Mutex<Option<Cached>>,
}

#[derive(Debug)]
struct Cached {
    svid: Arc<Svid>,
    key: Arc<CertifiedKey>,
}

impl SvidResolver {
    pub(crate) fn new(source: Arc<dyn X509Material>, provider: Arc<CryptoProvider>) -> Self {
        Self {
            source,
            provider,
            cache: Mutex::new(None),
        }
    }

    /// The certified key for the current SVID; `None` (the handshake then
    /// fails) when the source has none or its key does not fit.
    fn current(&self) -> Option<Arc<CertifiedKey>> {
        match self.try_current() {
            Ok(key) => Some(key),
            Err(e) => {
                tracing::warn!(error = %e, "no usable SVID to present");
                None
            }
        }
    }

    fn try_current(&self) -> Result<Arc<CertifiedKey>, Error> {
        let svid = self.source.svid()?;
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cached) = cache.as_ref() {
            if Arc::ptr_eq(&cached.svid, &svid) || cached.svid.cert_chain() == svid.cert_chain() {
                return Ok(cached.key.clone());
            }
        }
        let key = Arc::new(CertifiedKey::from_der(
            svid.cert_chain().to_vec(),
            PrivateKeyDer::Pkcs8(svid.private_key().clone_key()),
            &self.provider,
        )?);
        tracing::debug!(spiffe_id = %svid.spiffe_id(), "presenting a new SVID");
        *cache = Some(Cached {
            svid,
            key: key.clone(),
        });
        Ok(key)
    }
}

impl ResolvesServerCert for SvidResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl ResolvesClientCert for SvidResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        true
    }
}
