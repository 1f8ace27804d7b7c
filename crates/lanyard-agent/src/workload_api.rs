//! The SPIFFE Workload API on a Unix socket, as the SPIFFE specification
//! defines it: `FetchX509SVID`, `FetchX509Bundles` and `FetchJWTBundles` are
//! server streams whose every message carries the full state;
//! `FetchJWTSVID` and `ValidateJWTSVID` are unary. Certificates, keys and
//! bundles are DER (keys PKCS#8); bundles are keyed by `spiffe://TD`.
//!
//! Every call must carry the metadata `workload.spiffe.io: true`
//! (`InvalidArgument` otherwise). The caller is attested from the kernel
//! (peer credentials of the socket); a caller no entry matches gets
//! `PermissionDenied`, and the agent logs the selectors it found and the
//! entries that nearly matched. Methods this server does not define (the
//! WIT-SVID ones) answer `Unimplemented`.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use lanyard_core::{Entry, Selector};
use lanyard_proto::workload::spiffe_workload_api_server::{
    SpiffeWorkloadApi, SpiffeWorkloadApiServer,
};
use lanyard_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse,
    ValidateJwtsvidRequest, ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse,
    X509svid, X509svidRequest, X509svidResponse,
};
use tonic::{Request, Response, Status};

use crate::attest::PeerCred;
use crate::socket::{CallerConn, MAX_REQUEST_BYTES};
use crate::{Agent, View};

/// The metadata key every Workload API call must carry.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";
/// Most audiences in one JWT-SVID request, and the longest one.
pub const MAX_AUDIENCES: usize = 16;
/// The longest audience, in bytes.
pub const MAX_AUDIENCE_LEN: usize = 512;

pub(crate) type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The Workload API service.
#[derive(Debug, Clone)]
pub struct WorkloadApi {
    agent: Arc<Agent>,
}

impl WorkloadApi {
    /// The service for `agent`, requests limited to [`MAX_REQUEST_BYTES`].
    pub fn new(agent: Arc<Agent>) -> SpiffeWorkloadApiServer<Self> {
        SpiffeWorkloadApiServer::new(Self { agent }).max_decoding_message_size(MAX_REQUEST_BYTES)
    }
}

/// Why a caller got what it got, for logs and `lanyard explain --pid`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CallerReport {
    /// The selectors attested.
    pub selectors: Vec<String>,
    /// SPIFFE IDs matched.
    pub matched: Vec<String>,
    /// Entries of this node that nearly matched, with the selectors missing.
    pub near: Vec<(String, Vec<String>)>,
}

/// Matches `selectors` against the view: every entry whose selectors the
/// caller has, most specific first.
pub fn match_caller(view: &View, selectors: &[Selector]) -> (Vec<Arc<Entry>>, CallerReport) {
    let Some(node) = &view.node else {
        return (
            Vec::new(),
            CallerReport {
                selectors: selectors.iter().map(ToString::to_string).collect(),
                matched: Vec::new(),
                near: Vec::new(),
            },
        );
    };
    let m = view.index.find_workload(node, selectors);
    let report = CallerReport {
        selectors: selectors.iter().map(ToString::to_string).collect(),
        matched: m.matched.iter().map(|e| e.spiffe_id.to_string()).collect(),
        near: m
            .near
            .iter()
            .map(|(e, missing)| {
                (
                    e.spiffe_id.to_string(),
                    missing.iter().map(ToString::to_string).collect(),
                )
            })
            .collect(),
    };
    (m.matched, report)
}

/// The entries `selectors` match in `view`, most specific first (no report).
pub(crate) fn matched_entries(view: &View, selectors: &[Selector]) -> Vec<Arc<Entry>> {
    match &view.node {
        Some(node) => view.index.find_workload(node, selectors).matched,
        None => Vec::new(),
    }
}

/// An attested caller and what it is entitled to in `view`.
#[derive(Debug)]
pub(crate) struct Caller {
    pub cred: PeerCred,
    pub selectors: Arc<[Selector]>,
    pub matched: Arc<[Arc<Entry>]>,
    pub view: Arc<View>,
}

/// Kernel attestation (cached, see [`crate::attest`]) and entry match for
/// the caller of `req`; shared by the Workload API and SDS. A caller no
/// entry matches is `PermissionDenied`, logged with its selectors and near
/// misses.
pub(crate) async fn identify<T>(
    agent: &Agent,
    req: &Request<T>,
    method: &'static str,
) -> Result<Caller, Status> {
    let conn = req
        .extensions()
        .get::<CallerConn>()
        .cloned()
        .ok_or_else(|| {
            Status::permission_denied("the caller's peer credentials are unavailable")
        })?;
    let view = agent.view();
    let attested = agent
        .attestor()
        .attest_conn(&conn, view.generation)
        .await
        .map_err(|e| {
            let pid = conn.peer.and_then(|p| p.pid);
            tracing::warn!(method, pid = ?pid, code = e.code, reason = %e.reason, "workload attestation failed");
            if e.retryable {
                Status::unavailable(e.caller_message)
            } else {
                Status::permission_denied(e.caller_message)
            }
        })?;
    let cred = attested.cred;
    if !view.serving {
        tracing::warn!(method, pid = ?cred.pid, uid = cred.uid, "no SVIDs: this node is not attested or was refused by the server");
        return Err(Status::permission_denied("no identity issued"));
    }
    let matched = match attested.matched.clone() {
        Some(m) => m,
        None => {
            let m: Arc<[Arc<Entry>]> = matched_entries(&view, &attested.selectors).into();
            agent
                .attestor()
                .store_match(&attested, view.generation, m.clone());
            m
        }
    };
    if matched.is_empty() {
        let (_, report) = match_caller(&view, &attested.selectors);
        tracing::warn!(
            method,
            pid = ?cred.pid,
            uid = cred.uid,
            selectors = ?report.selectors,
            near_misses = ?report.near,
            "no identity issued: no entry of this node matches the caller"
        );
        return Err(Status::permission_denied("no identity issued"));
    }
    Ok(Caller {
        cred,
        selectors: attested.selectors,
        matched,
        view,
    })
}

impl WorkloadApi {
    fn check_header<T>(req: &Request<T>) -> Result<(), Status> {
        let ok = req
            .metadata()
            .get(SECURITY_HEADER)
            .is_some_and(|v| v.as_bytes() == b"true");
        if ok {
            Ok(())
        } else {
            Err(Status::invalid_argument(
                "security header missing from request",
            ))
        }
    }

    /// Header check, then [`identify`].
    async fn caller<T>(&self, req: &Request<T>, method: &'static str) -> Result<Caller, Status> {
        Self::check_header(req)?;
        identify(&self.agent, req, method).await
    }
}

pub(crate) fn concat(ders: &[Vec<u8>]) -> Vec<u8> {
    ders.iter().flatten().copied().collect()
}

/// The X.509 response for `selectors` from `view`; `None` when nothing valid.
fn x509_response(view: &View, selectors: &[Selector], now: i64) -> Option<X509svidResponse> {
    let matched = matched_entries(view, selectors);
    let bundle = concat(&view.roots);
    let svids: Vec<X509svid> = matched
        .iter()
        .filter_map(|e| view.identities.get(&e.id))
        .filter(|i| i.expires_at > now)
        .map(|i| X509svid {
            spiffe_id: i.entry.spiffe_id.to_string(),
            x509_svid: concat(&i.chain),
            x509_svid_key: i.key_pkcs8.to_vec(),
            bundle: bundle.clone(),
            hint: String::new(),
        })
        .collect();
    (view.serving && !svids.is_empty()).then(|| X509svidResponse {
        svids,
        crl: Vec::new(),
        // Only the trust domains the caller's entries federate with.
        federated_bundles: {
            let allowed = View::federated_ids(&matched);
            view.federated
                .iter()
                .filter(|(td, _)| allowed.contains(*td))
                .map(|(td, b)| (td.clone(), concat(&b.x509_roots)))
                .collect()
        },
    })
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = Streamed<X509svidResponse>;
    type FetchX509BundlesStream = Streamed<X509BundlesResponse>;
    type FetchJWTBundlesStream = Streamed<JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        req: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let selectors = self.caller(&req, "FetchX509SVID").await?.selectors;
        let agent = self.agent.clone();
        let mut changes = agent.subscribe();
        let stream = async_stream(move |tx| async move {
            let mut last: Option<X509svidResponse> = None;
            loop {
                let view = agent.view();
                match x509_response(&view, &selectors, agent.now()) {
                    Some(resp) if last.as_ref() != Some(&resp) => {
                        if tx.send(Ok(resp.clone())).await.is_err() {
                            return;
                        }
                        last = Some(resp);
                    }
                    Some(_) => {}
                    None if !view.serving || last.is_some() => {
                        let _ = tx
                            .send(Err(Status::permission_denied("no identity issued")))
                            .await;
                        return;
                    }
                    // Matched but not signed yet: wait for the next change.
                    None => {}
                }
                tokio::select! {
                    r = changes.changed() => if r.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn fetch_x509_bundles(
        &self,
        req: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let selectors = self.caller(&req, "FetchX509Bundles").await?.selectors;
        let stream = bundle_stream(self.agent.clone(), move |view: &View| {
            let allowed = View::federated_ids(&matched_entries(view, &selectors));
            X509BundlesResponse {
                crl: Vec::new(),
                bundles: view
                    .x509_bundles_for(&allowed)
                    .map(|(td, roots)| (td.to_owned(), concat(roots)))
                    .collect(),
            }
        });
        Ok(Response::new(stream))
    }

    async fn fetch_jwtsvid(
        &self,
        req: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        let matched = self.caller(&req, "FetchJWTSVID").await?.matched;
        let r = req.into_inner();
        if r.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if r.audience.len() > MAX_AUDIENCES
            || r.audience
                .iter()
                .any(|a| a.is_empty() || a.len() > MAX_AUDIENCE_LEN)
        {
            return Err(Status::invalid_argument(
                "at most 16 audiences of at most 512 bytes",
            ));
        }
        let wanted: Vec<&Arc<Entry>> = if r.spiffe_id.is_empty() {
            matched.iter().collect()
        } else {
            matched
                .iter()
                .filter(|e| e.spiffe_id.to_string() == r.spiffe_id)
                .collect()
        };
        if wanted.is_empty() {
            return Err(Status::permission_denied("no identity issued"));
        }
        let mut svids = Vec::with_capacity(wanted.len());
        for e in wanted {
            match self.agent.jwt_svid(e, &r.audience).await {
                Ok(jwt) => svids.push(Jwtsvid {
                    spiffe_id: e.spiffe_id.to_string(),
                    svid: String::from(&*jwt.token),
                    hint: String::new(),
                }),
                Err(crate::AgentError::Refused(reason)) => {
                    tracing::warn!(spiffe_id = %e.spiffe_id, reason, "JWT-SVID refused by the server");
                    return Err(Status::permission_denied("no identity issued"));
                }
                Err(err) => {
                    tracing::warn!(spiffe_id = %e.spiffe_id, error = %err, "JWT-SVID unavailable");
                    return Err(Status::unavailable("could not fetch a JWT-SVID; try again"));
                }
            }
        }
        Ok(Response::new(JwtsvidResponse { svids }))
    }

    async fn fetch_jwt_bundles(
        &self,
        req: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        let selectors = self.caller(&req, "FetchJWTBundles").await?.selectors;
        let stream = bundle_stream(self.agent.clone(), move |view: &View| {
            let allowed = View::federated_ids(&matched_entries(view, &selectors));
            JwtBundlesResponse {
                bundles: view
                    .jwt_bundles_for(&allowed)
                    .map(|(td, jwks)| (td.to_owned(), jwks.to_vec()))
                    .collect(),
            }
        });
        Ok(Response::new(stream))
    }

    async fn validate_jwtsvid(
        &self,
        req: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        self.caller(&req, "ValidateJWTSVID").await?;
        let r = req.into_inner();
        if r.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if r.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        let view = self.agent.view();
        let verified = lanyard_jose::verify_compact(
            &r.svid,
            view.jwt_keys.iter(),
            &lanyard_jose::Algorithm::ALL,
        )
        .map_err(|e| Status::invalid_argument(format!("JWT-SVID does not verify: {e}")))?;
        let claims: serde_json::Value = serde_json::from_slice(&verified.payload)
            .map_err(|_| Status::invalid_argument("JWT-SVID payload is not JSON"))?;
        let now = self.agent.now();
        let exp = claims
            .get("exp")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0);
        if exp <= now {
            return Err(Status::invalid_argument("JWT-SVID has expired"));
        }
        let aud_ok = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => a == &r.audience,
            Some(serde_json::Value::Array(list)) => {
                list.iter().any(|a| a.as_str() == Some(r.audience.as_str()))
            }
            _ => false,
        };
        if !aud_ok {
            return Err(Status::invalid_argument(format!(
                "JWT-SVID audience does not include {:?}",
                r.audience
            )));
        }
        let sub = claims
            .get("sub")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if !sub.starts_with(&format!("{}/", view.trust_domain_id)) {
            return Err(Status::invalid_argument(
                "JWT-SVID subject is not in this trust domain",
            ));
        }
        Ok(Response::new(ValidateJwtsvidResponse {
            spiffe_id: sub,
            claims: Some(to_struct(&claims)),
        }))
    }
}

/// A bundle stream: the full bundle set now and after every change, until
/// the node stops serving (then `PermissionDenied`) or the client leaves.
pub(crate) fn bundle_stream<T, F>(agent: Arc<Agent>, build: F) -> Streamed<T>
where
    T: Clone + PartialEq + Send + Sync + 'static,
    F: Fn(&View) -> T + Send + 'static,
{
    let mut changes = agent.subscribe();
    async_stream(move |tx| async move {
        let mut last: Option<T> = None;
        loop {
            let view = agent.view();
            if !view.serving {
                let _ = tx
                    .send(Err(Status::permission_denied("no identity issued")))
                    .await;
                return;
            }
            let resp = build(&view);
            if last.as_ref() != Some(&resp) {
                if tx.send(Ok(resp.clone())).await.is_err() {
                    return;
                }
                last = Some(resp);
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                () = tx.closed() => return,
            }
        }
    })
}

/// A stream fed by a task through a small channel; the task sees when the
/// client goes away (`tx.closed()`).
pub(crate) fn async_stream<T, F, Fut>(f: F) -> Streamed<T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

pub(crate) fn to_struct(v: &serde_json::Value) -> prost_types::Struct {
    let fields = match v {
        serde_json::Value::Object(map) => {
            map.iter().map(|(k, v)| (k.clone(), to_value(v))).collect()
        }
        _ => Default::default(),
    };
    prost_types::Struct { fields }
}

fn to_value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(to_value).collect(),
        }),
        serde_json::Value::Object(_) => Kind::StructValue(to_struct(v)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// Serves the Workload API and Envoy SDS ([`crate::sds`]) on `path` (a
/// stale socket is replaced; the socket is world-connectable, as every
/// workload on the node must reach it) until `shutdown` changes.
///
/// # Errors
/// I/O errors binding the socket or serving.
pub async fn serve(
    agent: Arc<Agent>,
    path: &std::path::Path,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), crate::AgentError> {
    let listener = crate::socket::bind(path, 0o777)?;
    tracing::info!(socket = %path.display(), "Workload API and SDS listening");
    let routes = tonic::service::Routes::new(WorkloadApi::new(agent.clone()))
        .add_service(crate::sds::Sds::new(agent));
    crate::socket::serve(listener, routes, "the Workload API", shutdown).await
}
