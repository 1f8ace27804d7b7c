//! Envoy's Secret Discovery Service on the Workload API socket, as SPIRE's
//! agent serves it, so Envoy (and Istio-style meshes) configured for SPIRE
//! work unchanged: `envoy.service.secret.v3.SecretDiscoveryService`
//! `StreamSecrets` (state-of-the-world xDS) and `FetchSecrets`.
//!
//! Resource names, SPIRE's conventions:
//!
//! | name | secret |
//! |---|---|
//! | the caller's SPIFFE ID | `tls_certificate`: that SVID's PEM chain and PKCS#8 key |
//! | `default` | `tls_certificate` of the caller's first (most specific) SVID |
//! | `ROOTCA` | `validation_context.trusted_ca`: the trust domain's roots (PEM) |
//! | `ALL` | `validation_context.custom_validator_config`: Envoy's SPIFFE validator with every bundle, federated ones included |
//! | `spiffe://TD` or `TD` | `validation_context.trusted_ca` of that trust domain |
//! | none at all | every SVID of the caller and every bundle |
//!
//! Callers are attested like Workload API callers (kernel credentials; an
//! entry must match; no security header, as Envoy sends none). On a stream
//! the agent answers each new request and pushes a new response whenever
//! what the names resolve to changes (rotation); each response has a new
//! `version_info` and `nonce`. Per the xDS protocol a request carrying the
//! last nonce is an ACK (same `version_info`) or NACK (`error_detail`, logged)
//! and gets no response unless its names changed; a request with a stale
//! nonce is ignored. Names the caller is not entitled to end the stream with
//! `InvalidArgument` (as SPIRE does); a matched entry whose SVID is not
//! signed yet is waited for.

use std::sync::Arc;

use lanyard_core::Selector;
use lanyard_proto::envoy::config::core::v3::{data_source, DataSource, TypedExtensionConfig};
use lanyard_proto::envoy::extensions::transport_sockets::tls::v3::{
    secret, spiffe_cert_validator_config, CertificateValidationContext, Secret,
    SpiffeCertValidatorConfig, TlsCertificate,
};
use lanyard_proto::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use lanyard_proto::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use prost::Message as _;
use tonic::{Request, Response, Status, Streaming};

use crate::files::pem;
use crate::socket::MAX_REQUEST_BYTES;
use crate::workload_api::{async_stream, identify, matched_entries, Streamed};
use crate::{Agent, Identity, View};

/// The type of every resource SDS serves.
pub const SECRET_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// The name for "the caller's default SVID".
pub const DEFAULT_SVID_NAME: &str = "default";
/// The name for "the trust domain's bundle".
pub const DEFAULT_BUNDLE_NAME: &str = "ROOTCA";
/// The name for "every bundle, federated ones included".
pub const ALL_BUNDLES_NAME: &str = "ALL";
/// Envoy's SPIFFE certificate validator extension.
pub const SPIFFE_VALIDATOR_NAME: &str = "envoy.tls.cert_validator.spiffe";
const SPIFFE_VALIDATOR_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig";
/// Most resource names in one request, and the longest name.
pub const MAX_RESOURCE_NAMES: usize = 64;
/// The longest resource name, in bytes.
pub const MAX_RESOURCE_NAME_LEN: usize = 2_048;

/// The SDS service.
#[derive(Debug, Clone)]
pub struct Sds {
    agent: Arc<Agent>,
}

impl Sds {
    /// The service for `agent`, requests limited to [`MAX_REQUEST_BYTES`].
    pub fn new(agent: Arc<Agent>) -> SecretDiscoveryServiceServer<Self> {
        SecretDiscoveryServiceServer::new(Self { agent })
            .max_decoding_message_size(MAX_REQUEST_BYTES)
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for Sds {
    type StreamSecretsStream = Streamed<DiscoveryResponse>;

    async fn stream_secrets(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let caller = identify(&self.agent, &req, "StreamSecrets").await?;
        let agent = self.agent.clone();
        let mut inbound = req.into_inner();
        let selectors = caller.selectors;
        let pid = caller.cred.pid;
        let stream = async_stream(move |tx| async move {
            let mut changes = agent.subscribe();
            let mut xds = XdsState::default();
            loop {
                let update = tokio::select! {
                    msg = inbound.message() => match msg {
                        Ok(Some(r)) => Event::Request(Box::new(r)),
                        Ok(None) => return,
                        Err(status) => {
                            let _ = tx.send(Err(status)).await;
                            return;
                        }
                    },
                    r = changes.changed() => {
                        if r.is_err() { return }
                        Event::Changed
                    },
                    () = tx.closed() => return,
                };
                let must_answer = match update {
                    Event::Request(r) => match xds.request(*r, pid) {
                        Ok(answer) => answer,
                        Err(status) => {
                            let _ = tx.send(Err(status)).await;
                            return;
                        }
                    },
                    Event::Changed => false,
                };
                let Some(names) = xds.names.clone() else {
                    continue;
                };
                let view = agent.view();
                if !view.serving {
                    let _ = tx
                        .send(Err(Status::permission_denied("no identity issued")))
                        .await;
                    return;
                }
                match resolve(&view, &selectors, &names, agent.now()) {
                    Ok(Some(secrets)) => {
                        if must_answer || xds.last_sent.as_ref() != Some(&secrets) {
                            let resp = xds.respond(secrets);
                            if tx.send(Ok(resp)).await.is_err() {
                                return;
                            }
                        }
                    }
                    // An entry matched but its SVID is not signed yet.
                    Ok(None) => {}
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn fetch_secrets(
        &self,
        req: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let caller = identify(&self.agent, &req, "FetchSecrets").await?;
        let r = req.into_inner();
        check_request(&r)?;
        let secrets = resolve(
            &caller.view,
            &caller.selectors,
            &r.resource_names,
            self.agent.now(),
        )?
        .ok_or_else(|| Status::unavailable("the SVID is not signed yet; try again"))?;
        Ok(Response::new(DiscoveryResponse {
            version_info: caller.view.generation.to_string(),
            resources: secrets.iter().map(to_any).collect(),
            canary: false,
            type_url: SECRET_TYPE_URL.into(),
            nonce: String::new(),
        }))
    }
}

enum Event {
    Request(Box<DiscoveryRequest>),
    Changed,
}

/// One stream's xDS bookkeeping.
#[derive(Debug, Default)]
struct XdsState {
    /// The names of the last request taken (None before the first).
    names: Option<Vec<String>>,
    last_nonce: String,
    version: u64,
    last_sent: Option<Vec<Secret>>,
}

impl XdsState {
    /// Takes a request; `Ok(true)` when it must be answered now.
    fn request(&mut self, r: DiscoveryRequest, pid: Option<i32>) -> Result<bool, Status> {
        check_request(&r)?;
        if let Some(err) = &r.error_detail {
            let message: String = err.message.chars().take(256).collect();
            tracing::warn!(pid = ?pid, code = err.code, message, version = %r.version_info, "Envoy rejected the secrets (NACK)");
        }
        if !self.last_nonce.is_empty() {
            if r.response_nonce != self.last_nonce {
                tracing::debug!(pid = ?pid, "stale SDS nonce; request ignored");
                return Ok(false);
            }
            if self.names.as_deref() == Some(r.resource_names.as_slice()) {
                // ACK (or NACK) of what was sent: nothing new to say.
                return Ok(false);
            }
        }
        self.names = Some(r.resource_names);
        Ok(true)
    }

    fn respond(&mut self, secrets: Vec<Secret>) -> DiscoveryResponse {
        self.version += 1;
        self.last_nonce = format!("{:x}", self.version);
        let resp = DiscoveryResponse {
            version_info: self.version.to_string(),
            resources: secrets.iter().map(to_any).collect(),
            canary: false,
            type_url: SECRET_TYPE_URL.into(),
            nonce: self.last_nonce.clone(),
        };
        self.last_sent = Some(secrets);
        resp
    }
}

fn check_request(r: &DiscoveryRequest) -> Result<(), Status> {
    if !r.type_url.is_empty() && r.type_url != SECRET_TYPE_URL {
        return Err(Status::invalid_argument(format!(
            "this server serves only {SECRET_TYPE_URL}"
        )));
    }
    if r.resource_names.len() > MAX_RESOURCE_NAMES
        || r.resource_names
            .iter()
            .any(|n| n.len() > MAX_RESOURCE_NAME_LEN)
    {
        return Err(Status::invalid_argument(
            "at most 64 resource names of at most 2048 bytes",
        ));
    }
    Ok(())
}

fn to_any(s: &Secret) -> prost_types::Any {
    prost_types::Any {
        type_url: SECRET_TYPE_URL.into(),
        value: s.encode_to_vec(),
    }
}

/// The secrets `names` resolve to for a caller with `selectors`; `Ok(None)`
/// while a matched entry's SVID is still being signed.
///
/// # Errors
/// `InvalidArgument` naming what the caller asked for and does not hold.
fn resolve(
    view: &View,
    selectors: &[Selector],
    names: &[String],
    now: i64,
) -> Result<Option<Vec<Secret>>, Status> {
    let matched = matched_entries(view, selectors);
    let identities: Vec<&Arc<Identity>> = matched
        .iter()
        .filter_map(|e| view.identities.get(&e.id))
        .filter(|i| i.expires_at > now)
        .collect();
    if identities.is_empty() {
        return Ok(None);
    }
    // Federated trust domains only where the caller's entries say so.
    let allowed = View::federated_ids(&matched);
    let mut out = Vec::new();
    if names.is_empty() {
        out.extend(
            identities
                .iter()
                .map(|i| tls_certificate(&i.entry.spiffe_id.to_string(), i)),
        );
        out.extend(
            view.x509_bundles_for(&allowed)
                .map(|(td, roots)| trusted_ca(td, roots)),
        );
        return Ok(Some(out));
    }
    let mut missing = Vec::new();
    for name in names {
        let secret = match name.as_str() {
            DEFAULT_SVID_NAME => identities.first().map(|i| tls_certificate(name, i)),
            DEFAULT_BUNDLE_NAME => Some(trusted_ca(name, &view.roots)),
            ALL_BUNDLES_NAME => Some(all_bundles(view, &allowed)),
            _ => identities
                .iter()
                .find(|i| i.entry.spiffe_id.to_string() == *name)
                .map(|i| tls_certificate(name, i))
                .or_else(|| {
                    view.x509_bundles_for(&allowed)
                        .find(|(td, _)| {
                            *td == name.as_str()
                                || td.strip_prefix("spiffe://") == Some(name.as_str())
                        })
                        .map(|(_, roots)| trusted_ca(name, roots))
                }),
        };
        match secret {
            Some(s) => out.push(s),
            None => missing.push(name.chars().take(128).collect::<String>()),
        }
    }
    if !missing.is_empty() {
        return Err(Status::invalid_argument(format!(
            "unable to retrieve all requested identities, missing {missing:?}"
        )));
    }
    Ok(Some(out))
}

fn inline(bytes: Vec<u8>) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(bytes)),
    })
}

fn tls_certificate(name: &str, identity: &Identity) -> Secret {
    Secret {
        name: name.to_owned(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(pem("CERTIFICATE", &identity.chain).into_bytes()),
            private_key: inline(pem("PRIVATE KEY", &[identity.key_pkcs8.to_vec()]).into_bytes()),
        })),
    }
}

fn trusted_ca(name: &str, roots: &[Vec<u8>]) -> Secret {
    Secret {
        name: name.to_owned(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: inline(pem("CERTIFICATE", roots).into_bytes()),
                custom_validator_config: None,
            },
        )),
    }
}

/// `ALL`: Envoy's SPIFFE validator with one bundle per trust domain.
fn all_bundles(view: &View, allowed: &std::collections::BTreeSet<String>) -> Secret {
    let config = SpiffeCertValidatorConfig {
        trust_domains: view
            .x509_bundles_for(allowed)
            .map(|(td, roots)| spiffe_cert_validator_config::TrustDomain {
                name: td.strip_prefix("spiffe://").unwrap_or(td).to_owned(),
                trust_bundle: inline(pem("CERTIFICATE", roots).into_bytes()),
            })
            .collect(),
    };
    Secret {
        name: ALL_BUNDLES_NAME.into(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: None,
                custom_validator_config: Some(TypedExtensionConfig {
                    name: SPIFFE_VALIDATOR_NAME.into(),
                    typed_config: Some(prost_types::Any {
                        type_url: SPIFFE_VALIDATOR_TYPE_URL.into(),
                        value: config.encode_to_vec(),
                    }),
                }),
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(names: &[&str], nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            response_nonce: nonce.into(),
            type_url: SECRET_TYPE_URL.into(),
            ..Default::default()
        }
    }

    #[test]
    fn xds_acks_stale_nonces_and_name_changes() {
        let mut x = XdsState::default();
        assert_eq!(x.request(req(&["default"], ""), None).ok(), Some(true));
        let resp = x.respond(Vec::new());
        assert_eq!(resp.version_info, "1");
        // ACK of that response: nothing to send.
        assert_eq!(
            x.request(req(&["default"], &resp.nonce), None).ok(),
            Some(false)
        );
        // A stale nonce is ignored, even with other names.
        assert_eq!(x.request(req(&["ROOTCA"], "old"), None).ok(), Some(false));
        assert_eq!(x.names.as_deref(), Some(&["default".to_string()][..]));
        // New names with the current nonce: answered.
        assert_eq!(
            x.request(req(&["default", "ROOTCA"], &resp.nonce), None)
                .ok(),
            Some(true)
        );
        let second = x.respond(Vec::new());
        assert_ne!(second.nonce, resp.nonce);
        assert_eq!(second.version_info, "2");
        // A NACK (error_detail) of the current response: logged, no answer.
        let mut nack = req(&["default", "ROOTCA"], &second.nonce);
        nack.error_detail = Some(lanyard_proto::google::rpc::Status {
            code: 3,
            message: "bad key".into(),
            details: Vec::new(),
        });
        assert_eq!(x.request(nack, None).ok(), Some(false));
    }

    #[test]
    fn bad_requests_are_refused() {
        let mut x = XdsState::default();
        let mut wrong = req(&["default"], "");
        wrong.type_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster".into();
        assert_eq!(
            x.request(wrong, None).err().map(|s| s.code()),
            Some(tonic::Code::InvalidArgument)
        );
        let many: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            x.request(req(&refs, ""), None).err().map(|s| s.code()),
            Some(tonic::Code::InvalidArgument)
        );
    }
}
