//! The one issuance path (INV-10): every JWT-SVID and X.509-SVID the server
//! hands out is signed here, from a grant the core policy made, and its
//! audit event is durable before the credential is returned.
//!
//! The RFC 8693 exchange, the node API (`MintJwtSvid`, `SignX509Svids`, node
//! attestation and renewal, the server's own certificate) all end here, so
//! a signing or audit rule cannot differ between paths.

use std::sync::Arc;

use lanyard_ca::x509::{SvidKind, X509Error, X509Svid, X509SvidParams};
use lanyard_core::policy::{JwtGrant, X509Grant};
use lanyard_core::{Clock, Decision, Denial, DenyReason};
use lanyard_jose::Algorithm;
use lanyard_store::AuditDraft;

use crate::audit_writer::AuditWriter;
use crate::ca::CaManager;
use crate::keys::KeyManager;
use crate::state::Settings;

/// Who asked, for the audit event.
#[derive(Debug, Clone, Copy)]
pub struct AuditContext<'a> {
    /// The request's correlation id.
    pub correlation_id: &'a str,
    /// Who acted (a SPIFFE ID, `node-api:<node>`, `admin:<id>`).
    pub actor: &'a str,
    /// What was done, e.g. `token.exchange`, `svid.x509.sign`.
    pub action: &'a str,
    /// SHA-256 of the evidence presented.
    pub evidence_digest: Option<&'a str>,
}

/// A signed JWT-SVID.
#[derive(Debug, Clone)]
pub struct IssuedJwt {
    /// The compact JWS.
    pub token: String,
    /// Its `jti`.
    pub jti: String,
    /// What was decided.
    pub grant: JwtGrant,
}

/// Why nothing was issued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// The CSR (or the grant's DNS names) cannot be signed.
    #[error("CSR refused: {0}")]
    Csr(#[source] X509Error),
    /// No key, the signer failed, or the audit event could not be written.
    #[error("{0}; nothing was issued")]
    Unavailable(&'static str),
}

impl IssueError {
    /// As a denial, for paths that report denials.
    pub fn denial(&self) -> Denial {
        match self {
            Self::Csr(e) => Denial::new(DenyReason::InvalidRequest, format!("CSR refused: {e}")),
            Self::Unavailable(what) => Denial::new(DenyReason::IssuerUnavailable, *what),
        }
    }
}

/// The server's own TLS certificate and key, from [`Issuer::server_svid`].
#[derive(Debug)]
pub struct ServerSvid {
    /// Leaf first, then intermediates.
    pub chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: rustls::pki_types::PrivateKeyDer<'static>,
    /// Half-life: when to sign the next one.
    pub renew_at: std::time::SystemTime,
    /// The CA generation it was signed under.
    pub ca_generation: i64,
}

/// Signs grants and audits them.
#[derive(Debug)]
pub struct Issuer {
    keys: Arc<KeyManager>,
    ca: Arc<CaManager>,
    audit: AuditWriter,
    clock: Arc<dyn Clock>,
    settings: Arc<Settings>,
}

impl Issuer {
    /// The issuer over these keys, CA and audit writer.
    pub fn new(
        keys: Arc<KeyManager>,
        ca: Arc<CaManager>,
        audit: AuditWriter,
        clock: Arc<dyn Clock>,
        settings: Arc<Settings>,
    ) -> Self {
        Self {
            keys,
            ca,
            audit,
            clock,
            settings,
        }
    }

    /// Signs `grant` with a fresh `jti` and appends its audit event; returns
    /// the token only once the event is durable.
    ///
    /// # Errors
    /// [`IssueError::Unavailable`].
    pub async fn issue_jwt(
        &self,
        grant: JwtGrant,
        ctx: AuditContext<'_>,
    ) -> Result<IssuedJwt, IssueError> {
        let jti = crate::correlation::try_new_id().ok_or(IssueError::Unavailable(
            "the random number generator failed",
        ))?;
        let alg: Algorithm = grant
            .alg
            .parse()
            .map_err(|_| IssueError::Unavailable("the grant names an unknown algorithm"))?;
        let published = self.keys.current();
        let signer = published
            .ring
            .signer(alg)
            .ok_or(IssueError::Unavailable("no signing key loaded"))?;
        let claims = grant.claims(&self.settings.issuer, jti.clone());
        let token = lanyard_jose::encode_jwt(signer, &claims)
            .map_err(|_| IssueError::Unavailable("signing failed"))?;
        let mut reason = format!("issued jti={jti} ttl={}s", grant.ttl.as_secs());
        if let Some(profile) = &grant.profile {
            reason.push_str(&format!(" profile={profile} sub={}", grant.sub));
        }
        self.record(
            ctx,
            grant.chain(),
            Some(grant.tenant.to_string()),
            Decision::Allow,
            reason,
        )
        .await?;
        Ok(IssuedJwt { token, jti, grant })
    }

    /// Signs an X.509-SVID for `grant` over the key in `csr` and appends its
    /// audit event.
    ///
    /// # Errors
    /// [`IssueError::Csr`], [`IssueError::Unavailable`].
    pub async fn issue_x509(
        &self,
        grant: &X509Grant,
        kind: SvidKind,
        csr: &[u8],
        ctx: AuditContext<'_>,
        detail: String,
    ) -> Result<X509Svid, IssueError> {
        let svid = self.sign_x509(grant, kind, csr)?;
        self.record(
            ctx,
            grant.spiffe_id.to_string(),
            None,
            Decision::Allow,
            format!("serial {} {detail}", serial_hex(&svid.cert_der)),
        )
        .await?;
        Ok(svid)
    }

    /// The server's own X.509-SVID (`spiffe://TD/lanyard/server`) over a
    /// fresh P-256 key, with `dns_names`: what its TLS listeners present
    /// (the node API, the federation bundle endpoint). Renew it at
    /// [`ServerSvid::renew_at`] or when the CA generation moves.
    ///
    /// # Errors
    /// Key generation or signing failed (the message says which).
    pub fn server_svid(&self, dns_names: Vec<String>) -> Result<ServerSvid, String> {
        let now = self.clock.now();
        let ca_generation = self.ca.current().generation;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| e.to_string())?;
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .map_err(|e| e.to_string())?;
        let (ttl, _) = self.ca.svid_ttls();
        let grant = X509Grant {
            spiffe_id: lanyard_core::naming::server_id(&self.settings.trust_domain),
            dns_names,
            ttl,
        };
        let svid = self
            .sign_x509(&grant, SvidKind::Server, csr.der())
            .map_err(|e| e.to_string())?;
        let mut chain = vec![rustls::pki_types::CertificateDer::from(svid.cert_der)];
        chain.extend(
            svid.chain_der
                .into_iter()
                .map(rustls::pki_types::CertificateDer::from),
        );
        Ok(ServerSvid {
            chain,
            key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            renew_at: now + ttl / 2,
            ca_generation,
        })
    }

    /// Signs an X.509-SVID without an audit event of its own: for the
    /// server's own TLS certificate, and for node SVIDs whose attestation
    /// event the caller writes with the serial.
    ///
    /// # Errors
    /// [`IssueError::Csr`].
    pub fn sign_x509(
        &self,
        grant: &X509Grant,
        kind: SvidKind,
        csr: &[u8],
    ) -> Result<X509Svid, IssueError> {
        let ca = self.ca.current();
        ca.authority
            .sign_svid(&X509SvidParams {
                spiffe_id: &grant.spiffe_id,
                csr_der: csr,
                dns_names: &grant.dns_names,
                kind,
                ttl: grant.ttl,
                now: self.clock.now(),
            })
            .map_err(IssueError::Csr)
    }

    /// Appends a denial (or any other decision) event.
    ///
    /// # Errors
    /// [`IssueError::Unavailable`] when the event could not be written.
    pub async fn record(
        &self,
        ctx: AuditContext<'_>,
        subject: String,
        tenant: Option<String>,
        decision: Decision,
        reason: String,
    ) -> Result<(), IssueError> {
        let draft = AuditDraft {
            at_ms: crate::correlation::unix_millis(self.clock.now()),
            correlation_id: ctx.correlation_id.to_owned(),
            actor: ctx.actor.to_owned(),
            action: ctx.action.to_owned(),
            subject,
            tenant,
            decision,
            reason,
            evidence_digest: ctx.evidence_digest.map(str::to_owned),
        };
        self.audit
            .append(draft)
            .await
            .map(|_| ())
            .map_err(|_| IssueError::Unavailable("the decision could not be audited"))
    }
}

/// A certificate's serial number, hex (empty if it does not parse).
pub fn serial_hex(der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| lanyard_core::hex::encode(c.raw_serial()))
        .unwrap_or_default()
}
