//! [`X509Material`] for the standard Workload API client,
//! [`spiffe::X509Source`], which watches the agent's stream and always holds
//! the current SVID and bundles.

use std::sync::Arc;

use lanyard_core::{SpiffeId, TrustDomain};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use crate::error::Error;
use crate::source::{Bundle, Svid, X509Material};

impl X509Material for spiffe::X509Source {
    /// The source's default SVID (the first the agent sends, or the one
    /// the source's picker chooses).
    fn svid(&self) -> Result<Arc<Svid>, Error> {
        let svid =
            spiffe::X509Source::svid(self).map_err(|e| Error::SourceUnavailable(e.to_string()))?;
        let chain = svid
            .cert_chain()
            .iter()
            .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
            .collect();
        let key = PrivatePkcs8KeyDer::from(svid.private_key().as_bytes().to_vec());
        Svid::new(chain, key).map(Arc::new)
    }

    fn bundle(&self, trust_domain: &TrustDomain) -> Result<Option<Arc<Bundle>>, Error> {
        let td = spiffe::TrustDomain::new(trust_domain.as_str())
            .map_err(|e| Error::SourceUnavailable(e.to_string()))?;
        let Some(bundle) = self
            .bundle_set()
            .map(|set| set.get(&td))
            .map_err(|e| Error::SourceUnavailable(e.to_string()))?
        else {
            return Ok(None);
        };
        let roots = bundle
            .authorities()
            .iter()
            .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
            .collect();
        Bundle::new(trust_domain.clone(), roots).map(|b| Some(Arc::new(b)))
    }
}

/// An `X509Source` SVID picker that chooses the SVID with one SPIFFE ID,
/// for workloads that the agent gives several (e.g. two processes of one
/// Unix user both matching `unix:uid:<uid>` entries). With no such SVID the
/// source reports "no suitable SVID" instead of presenting another.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use lanyard_spiffe_tls::{SpiffeId, SpiffeIdPicker};
/// let id = SpiffeId::parse("spiffe://example.org/server")?;
/// let source = spiffe::X509Source::builder()
///     .picker(SpiffeIdPicker::new(id))
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SpiffeIdPicker {
    spiffe_id: String,
}

impl SpiffeIdPicker {
    /// Picks the SVID whose SPIFFE ID is `spiffe_id`.
    pub fn new(spiffe_id: SpiffeId) -> Self {
        Self {
            spiffe_id: spiffe_id.to_string(),
        }
    }
}

impl spiffe::x509_source::SvidPicker for SpiffeIdPicker {
    fn pick_svid(&self, svids: &[Arc<spiffe::X509Svid>]) -> Option<usize> {
        svids
            .iter()
            .position(|svid| svid.spiffe_id().to_string() == self.spiffe_id)
    }
}
