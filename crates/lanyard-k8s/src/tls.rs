//! The webhook's TLS certificate, reloaded when its files change.
//!
//! cert-manager (or a rotated Secret) replaces `tls.crt`/`tls.key` in the
//! mounted volume; [`ReloadingCert::watch`] reads both files every
//! `tls_reload_interval` and swaps the certificate in when their bytes
//! changed and the new pair loads (chain parses, key matches). A pair that
//! does not load is logged and the old certificate stays in use, so a
//! half-written update never takes the webhook down. New handshakes get the
//! new certificate; open connections keep theirs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::metrics::Metrics;
use crate::Error;

/// A certificate resolver whose certificate can be replaced at any time.
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<Loaded>,
}

struct Loaded {
    certified: Arc<CertifiedKey>,
    cert_bytes: Vec<u8>,
    key_bytes: Vec<u8>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    /// Loads the pair once.
    ///
    /// # Errors
    /// [`Error::Tls`] when the files cannot be read, hold no certificate or
    /// key, or the key does not match the certificate.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, Error> {
        let loaded = read_pair(cert, key)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: ArcSwap::from_pointee(loaded),
        })
    }

    /// Reloads if the files' bytes changed. `Ok(true)`: a new certificate is
    /// in use.
    ///
    /// # Errors
    /// [`Error::Tls`] when the changed files do not load (the old certificate stays).
    pub fn reload(&self) -> Result<bool, Error> {
        let (cert_bytes, key_bytes) = read_files(&self.cert, &self.key)?;
        let now = self.current.load();
        if now.cert_bytes == cert_bytes && now.key_bytes == key_bytes {
            return Ok(false);
        }
        let loaded = parse_pair(&self.cert, &self.key, cert_bytes, key_bytes)?;
        self.current.store(Arc::new(loaded));
        Ok(true)
    }

    /// Checks the files every `interval` until the task is dropped.
    pub async fn watch(self: Arc<Self>, interval: Duration, metrics: Arc<Metrics>) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match self.reload() {
                Ok(false) => {}
                Ok(true) => {
                    metrics.reload("ok");
                    tracing::info!(cert = %self.cert.display(), "webhook TLS certificate reloaded");
                }
                Err(e) => {
                    metrics.reload("error");
                    tracing::error!(error = %e, "webhook TLS files changed but do not load; keeping the current certificate");
                }
            }
        }
    }

    /// A rustls server config (HTTP/1.1) that uses this resolver.
    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions();
        // The provider supports the default versions; fall back to the
        // process default if that ever changes.
        let mut config = match builder {
            Ok(b) => b.with_no_client_auth().with_cert_resolver(self.clone()),
            Err(_) => rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_cert_resolver(self.clone()),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().certified.clone())
    }
}

fn tls_error(cert: &Path, key: &Path, message: impl Into<String>) -> Error {
    Error::Tls {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        message: message.into(),
    }
}

fn read_files(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let c = std::fs::read(cert)
        .map_err(|e| tls_error(cert, key, format!("reading the certificate: {e}")))?;
    let k =
        std::fs::read(key).map_err(|e| tls_error(cert, key, format!("reading the key: {e}")))?;
    Ok((c, k))
}

fn read_pair(cert: &Path, key: &Path) -> Result<Loaded, Error> {
    let (c, k) = read_files(cert, key)?;
    parse_pair(cert, key, c, k)
}

fn parse_pair(
    cert: &Path,
    key: &Path,
    cert_bytes: Vec<u8>,
    key_bytes: Vec<u8>,
) -> Result<Loaded, Error> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| tls_error(cert, key, format!("the certificate file is not PEM: {e}")))?;
    if chain.is_empty() {
        return Err(tls_error(
            cert,
            key,
            "the certificate file holds no CERTIFICATE",
        ));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
        tls_error(
            cert,
            key,
            format!("the key file holds no PEM private key: {e}"),
        )
    })?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let certified = CertifiedKey::from_der(chain, private, &provider).map_err(|e| {
        tls_error(
            cert,
            key,
            format!("the key does not fit the certificate: {e}"),
        )
    })?;
    Ok(Loaded {
        certified: Arc::new(certified),
        cert_bytes,
        key_bytes,
    })
}
