//! SPIRE's Delegated Identity API on the agent's admin socket
//! (`spire.api.agent.delegatedidentity.v1.DelegatedIdentity`): an
//! authorized delegate (a CSI driver, a node-level proxy) obtains the
//! X.509-SVIDs, JWT-SVIDs and bundles of *another* workload on the node,
//! named by its selectors or by its pid.
//!
//! # Security
//! - The API is served only on the admin socket (`admin_socket`, mode 0770),
//!   never on the Workload API socket, as SPIRE does.
//! - The caller is attested from the kernel like any Workload API caller.
//!   It is a delegate when one of its entries' SPIFFE IDs is listed in
//!   [`Delegates::spiffe_ids`] or its selectors include every selector of
//!   one of [`Delegates::selector_sets`]; everyone else gets
//!   `PermissionDenied`. With no delegates configured, nobody is one.
//! - The workload named gets exactly what it would get itself: its
//!   selectors are matched against this node's entries like a caller's.
//!   By pid, the workload is attested from /proc (the delegate must make
//!   sure the pid is not recycled during the call, as SPIRE documents).
//! - Every decision, grant or denial, goes to the [`AuditSink`].

use std::sync::Arc;

use lanyard_core::{Decision, Entry, Selector, SpiffeId};
use lanyard_proto::spire::api::agent::delegatedidentity::v1::delegated_identity_server::{
    DelegatedIdentity, DelegatedIdentityServer,
};
use lanyard_proto::spire::api::agent::delegatedidentity::v1::{
    FetchJwtsviDsByPidRequest, FetchJwtsviDsRequest, FetchJwtsviDsResponse,
    SubscribeToJwtBundlesRequest, SubscribeToJwtBundlesResponse, SubscribeToX509BundlesRequest,
    SubscribeToX509BundlesResponse, SubscribeToX509sviDsByPidRequest, SubscribeToX509sviDsRequest,
    SubscribeToX509sviDsResponse, X509svidWithKey,
};
use lanyard_proto::spire::api::types;
use tonic::{Request, Response, Status};

use crate::attest::PeerCred;
use crate::audit::{AuditEvent, AuditSink};
use crate::socket::{CallerConn, MAX_REQUEST_BYTES};
use crate::workload_api::{
    async_stream, bundle_stream, concat, matched_entries, Streamed, MAX_AUDIENCES, MAX_AUDIENCE_LEN,
};
use crate::{Agent, View};

/// Most selectors naming one workload.
pub const MAX_SELECTORS: usize = 64;

/// Who may use the Delegated Identity API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delegates {
    /// A caller holding an entry with one of these SPIFFE IDs is a delegate.
    pub spiffe_ids: Vec<SpiffeId>,
    /// A caller whose attested selectors include all of one set is a delegate.
    pub selector_sets: Vec<Vec<Selector>>,
}

impl Delegates {
    /// True when nobody is authorized.
    pub fn is_empty(&self) -> bool {
        self.spiffe_ids.is_empty() && self.selector_sets.is_empty()
    }

    /// Why a caller with `selectors` and `entries` is a delegate, if it is.
    fn authorize(&self, selectors: &[Selector], entries: &[Arc<Entry>]) -> Option<String> {
        if let Some(e) = entries
            .iter()
            .find(|e| self.spiffe_ids.contains(&e.spiffe_id))
        {
            return Some(format!("spiffe_id:{}", e.spiffe_id));
        }
        self.selector_sets
            .iter()
            .find(|set| !set.is_empty() && set.iter().all(|s| selectors.binary_search(s).is_ok()))
            .map(|set| {
                let names: Vec<String> = set.iter().map(ToString::to_string).collect();
                format!("selectors:{names:?}")
            })
    }
}

/// The Delegated Identity service.
#[derive(Debug, Clone)]
pub struct DelegatedIdentityApi {
    agent: Arc<Agent>,
    audit: Arc<dyn AuditSink>,
}

impl DelegatedIdentityApi {
    /// The service for `agent`, decisions to `audit`, requests limited to
    /// [`MAX_REQUEST_BYTES`].
    pub fn new(agent: Arc<Agent>, audit: Arc<dyn AuditSink>) -> DelegatedIdentityServer<Self> {
        DelegatedIdentityServer::new(Self { agent, audit })
            .max_decoding_message_size(MAX_REQUEST_BYTES)
    }
}

/// The workload a delegate asks about.
enum Named {
    Selectors(Vec<types::Selector>),
    Pid(i32),
    /// Bundle subscriptions name no workload.
    Nothing,
}

struct Grant {
    selectors: Vec<Selector>,
    event: AuditEvent,
}

impl DelegatedIdentityApi {
    /// Attests the caller, checks it is a delegate, resolves the workload
    /// named. Every outcome is audited (grants by the caller of this).
    async fn authorize<T>(
        &self,
        req: &Request<T>,
        action: &'static str,
        named: Named,
    ) -> Result<Grant, Status> {
        let conn = req
            .extensions()
            .get::<CallerConn>()
            .cloned()
            .ok_or_else(|| {
                Status::permission_denied("the caller's peer credentials are unavailable")
            })?;
        let view = self.agent.view();
        let caller = match conn.peer {
            Some(p) => format!("pid={} uid={}", p.pid.unwrap_or(0), p.uid),
            None => "unknown".to_owned(),
        };
        let mut event = AuditEvent {
            action,
            caller,
            delegate: None,
            selectors: Vec::new(),
            spiffe_ids: Vec::new(),
            decision: Decision::Deny,
            reason: "not_a_delegate",
        };
        let attested = match self
            .agent
            .attestor()
            .attest_conn(&conn, view.generation)
            .await
        {
            Ok(a) => a,
            Err(e) => {
                event.reason = e.code;
                self.audit.record(&event);
                return Err(Status::permission_denied(e.caller_message));
            }
        };
        let own = matched_entries(&view, &attested.selectors);
        let Some(delegate) = self
            .agent
            .config()
            .delegates
            .authorize(&attested.selectors, &own)
        else {
            self.audit.record(&event);
            return Err(Status::permission_denied(
                "the caller is not an authorized delegate",
            ));
        };
        event.delegate = Some(delegate);
        let selectors = match named {
            Named::Nothing => Vec::new(),
            Named::Selectors(list) if list.is_empty() => {
                event.reason = "bad_selectors";
                self.audit.record(&event);
                return Err(Status::invalid_argument("selectors must not be empty"));
            }
            Named::Selectors(list) => match parse_selectors(&list) {
                Ok(s) => s,
                Err(status) => {
                    event.reason = "bad_selectors";
                    self.audit.record(&event);
                    return Err(status);
                }
            },
            Named::Pid(pid) => {
                event.selectors.push(format!("pid:{pid}"));
                match self.attest_pid(pid).await {
                    Ok(s) => s,
                    Err((code, status)) => {
                        event.reason = code;
                        self.audit.record(&event);
                        return Err(status);
                    }
                }
            }
        };
        event
            .selectors
            .extend(selectors.iter().map(ToString::to_string));
        if !view.serving {
            event.reason = "node_not_serving";
            self.audit.record(&event);
            return Err(Status::permission_denied("no identity issued"));
        }
        Ok(Grant { selectors, event })
    }

    async fn attest_pid(&self, pid: i32) -> Result<Vec<Selector>, (&'static str, Status)> {
        if pid <= 0 {
            return Err(("bad_pid", Status::invalid_argument("pid must be positive")));
        }
        let Some((uid, gid)) = proc_ids(pid) else {
            return Err((
                "process_gone",
                Status::not_found("no such process on this node"),
            ));
        };
        self.agent
            .attestor()
            .attest(PeerCred {
                pid: Some(pid),
                uid,
                gid,
            })
            .await
            .map_err(|e| (e.code, Status::permission_denied(e.caller_message)))
    }

    fn grant(&self, mut event: AuditEvent, entries: &[Arc<Entry>]) {
        event.spiffe_ids = entries.iter().map(|e| e.spiffe_id.to_string()).collect();
        if entries.is_empty() {
            event.reason = "no_entry_matches";
        } else {
            event.decision = Decision::Allow;
            event.reason = "granted";
        }
        self.audit.record(&event);
    }

    fn x509_stream(&self, grant: Grant) -> Streamed<SubscribeToX509sviDsResponse> {
        let matched = matched_entries(&self.agent.view(), &grant.selectors);
        self.grant(grant.event, &matched);
        let agent = self.agent.clone();
        let selectors = grant.selectors;
        async_stream(move |tx| async move {
            let mut changes = agent.subscribe();
            let mut last = None;
            loop {
                let view = agent.view();
                if !view.serving {
                    let _ = tx
                        .send(Err(Status::permission_denied("no identity issued")))
                        .await;
                    return;
                }
                let resp = x509_response(&view, &selectors, agent.now());
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

    async fn jwt_svids(
        &self,
        grant: Grant,
        audience: &[String],
    ) -> Result<FetchJwtsviDsResponse, Status> {
        let view = self.agent.view();
        let matched = matched_entries(&view, &grant.selectors);
        self.grant(grant.event, &matched);
        let mut svids = Vec::with_capacity(matched.len());
        for e in &matched {
            let jwt = self.agent.jwt_svid(e, audience).await.map_err(|err| {
                tracing::warn!(spiffe_id = %e.spiffe_id, error = %err, "delegated JWT-SVID unavailable");
                Status::unavailable("could not fetch a JWT-SVID; try again")
            })?;
            svids.push(types::Jwtsvid {
                token: String::from(&*jwt.token),
                id: Some(spiffe_id_pb(&e.spiffe_id)),
                expires_at: jwt.expires_at,
                issued_at: jwt.issued_at,
                hint: String::new(),
            });
        }
        Ok(FetchJwtsviDsResponse { svids })
    }
}

fn check_audience(audience: &[String]) -> Result<(), Status> {
    if audience.is_empty() {
        return Err(Status::invalid_argument("audience must be specified"));
    }
    if audience.len() > MAX_AUDIENCES
        || audience
            .iter()
            .any(|a| a.is_empty() || a.len() > MAX_AUDIENCE_LEN)
    {
        return Err(Status::invalid_argument(
            "at most 16 audiences of at most 512 bytes",
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl DelegatedIdentity for DelegatedIdentityApi {
    type SubscribeToX509SVIDsStream = Streamed<SubscribeToX509sviDsResponse>;
    type SubscribeToX509SVIDsByPIDStream = Streamed<SubscribeToX509sviDsResponse>;
    type SubscribeToX509BundlesStream = Streamed<SubscribeToX509BundlesResponse>;
    type SubscribeToJWTBundlesStream = Streamed<SubscribeToJwtBundlesResponse>;

    async fn subscribe_to_x509svi_ds(
        &self,
        req: Request<SubscribeToX509sviDsRequest>,
    ) -> Result<Response<Self::SubscribeToX509SVIDsStream>, Status> {
        let named = Named::Selectors(req.get_ref().selectors.clone());
        let grant = self
            .authorize(&req, "delegated.SubscribeToX509SVIDs", named)
            .await?;
        Ok(Response::new(self.x509_stream(grant)))
    }

    async fn subscribe_to_x509svi_ds_by_pid(
        &self,
        req: Request<SubscribeToX509sviDsByPidRequest>,
    ) -> Result<Response<Self::SubscribeToX509SVIDsByPIDStream>, Status> {
        let named = Named::Pid(req.get_ref().pid);
        let grant = self
            .authorize(&req, "delegated.SubscribeToX509SVIDsByPID", named)
            .await?;
        Ok(Response::new(self.x509_stream(grant)))
    }

    async fn subscribe_to_x509_bundles(
        &self,
        req: Request<SubscribeToX509BundlesRequest>,
    ) -> Result<Response<Self::SubscribeToX509BundlesStream>, Status> {
        let grant = self
            .authorize(&req, "delegated.SubscribeToX509Bundles", Named::Nothing)
            .await?;
        let mut event = grant.event;
        event.decision = Decision::Allow;
        event.reason = "granted";
        self.audit.record(&event);
        Ok(Response::new(bundle_stream(
            self.agent.clone(),
            |view: &View| SubscribeToX509BundlesResponse {
                ca_certificates: view
                    .x509_bundles()
                    .map(|(td, roots)| (td.to_owned(), concat(roots)))
                    .collect(),
            },
        )))
    }

    async fn fetch_jwtsvi_ds(
        &self,
        req: Request<FetchJwtsviDsRequest>,
    ) -> Result<Response<FetchJwtsviDsResponse>, Status> {
        check_audience(&req.get_ref().audience)?;
        let named = Named::Selectors(req.get_ref().selectors.clone());
        let grant = self
            .authorize(&req, "delegated.FetchJWTSVIDs", named)
            .await?;
        let resp = self.jwt_svids(grant, &req.get_ref().audience).await?;
        Ok(Response::new(resp))
    }

    async fn fetch_jwtsvi_ds_by_pid(
        &self,
        req: Request<FetchJwtsviDsByPidRequest>,
    ) -> Result<Response<FetchJwtsviDsResponse>, Status> {
        check_audience(&req.get_ref().audience)?;
        let named = Named::Pid(req.get_ref().pid);
        let grant = self
            .authorize(&req, "delegated.FetchJWTSVIDsByPID", named)
            .await?;
        let resp = self.jwt_svids(grant, &req.get_ref().audience).await?;
        Ok(Response::new(resp))
    }

    async fn subscribe_to_jwt_bundles(
        &self,
        req: Request<SubscribeToJwtBundlesRequest>,
    ) -> Result<Response<Self::SubscribeToJWTBundlesStream>, Status> {
        let grant = self
            .authorize(&req, "delegated.SubscribeToJWTBundles", Named::Nothing)
            .await?;
        let mut event = grant.event;
        event.decision = Decision::Allow;
        event.reason = "granted";
        self.audit.record(&event);
        Ok(Response::new(bundle_stream(
            self.agent.clone(),
            |view: &View| SubscribeToJwtBundlesResponse {
                bundles: view
                    .jwt_bundles()
                    .map(|(td, jwks)| (td.to_owned(), jwks.to_vec()))
                    .collect(),
            },
        )))
    }
}

/// SPIRE's (type, value) selectors as Lanyard's `type:key:value`, sorted.
fn parse_selectors(list: &[types::Selector]) -> Result<Vec<Selector>, Status> {
    if list.len() > MAX_SELECTORS {
        return Err(Status::invalid_argument("at most 64 selectors"));
    }
    let mut out = Vec::with_capacity(list.len());
    for s in list {
        let parsed = Selector::parse(&format!("{}:{}", s.r#type, s.value))
            .map_err(|e| Status::invalid_argument(format!("bad selector: {e}")))?;
        out.push(parsed);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn x509_response(view: &View, selectors: &[Selector], now: i64) -> SubscribeToX509sviDsResponse {
    if selectors.is_empty() {
        return SubscribeToX509sviDsResponse::default();
    }
    let x509_svids = matched_entries(view, selectors)
        .iter()
        .filter_map(|e| view.identities.get(&e.id))
        .filter(|i| i.expires_at > now)
        .map(|i| X509svidWithKey {
            x509_svid: Some(types::X509svid {
                cert_chain: i.chain.clone(),
                id: Some(spiffe_id_pb(&i.entry.spiffe_id)),
                expires_at: i.expires_at,
                hint: String::new(),
            }),
            x509_svid_key: i.key_pkcs8.to_vec(),
        })
        .collect();
    SubscribeToX509sviDsResponse {
        x509_svids,
        federates_with: Vec::new(),
    }
}

fn spiffe_id_pb(id: &SpiffeId) -> types::Spiffeid {
    types::Spiffeid {
        trust_domain: id.trust_domain().to_string(),
        path: id.path().to_owned(),
    }
}

/// The effective uid and gid of `pid` from `/proc/PID/status`.
fn proc_ids(pid: i32) -> Option<(u32, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.split_ascii_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("Uid:")?, field("Gid:")?))
}

/// Serves the Delegated Identity API on the admin socket `path` (mode
/// 0770) until `shutdown` changes.
///
/// # Errors
/// I/O errors binding the socket or serving.
pub async fn serve(
    agent: Arc<Agent>,
    audit: Arc<dyn AuditSink>,
    path: &std::path::Path,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), crate::AgentError> {
    let listener = crate::socket::bind(path, 0o770)?;
    if agent.config().delegates.is_empty() {
        tracing::warn!(socket = %path.display(), "admin socket without delegates: every Delegated Identity call is refused");
    }
    tracing::info!(socket = %path.display(), "Delegated Identity API listening");
    let routes = tonic::service::Routes::new(DelegatedIdentityApi::new(agent, audit));
    crate::socket::serve(listener, routes, "the admin socket", shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn delegates_by_selector_set_need_every_selector() {
        let d = Delegates {
            spiffe_ids: Vec::new(),
            selector_sets: vec![vec![sel("unix:uid:0"), sel("unix:path:/usr/bin/csi")]],
        };
        let mut caller = vec![
            sel("unix:uid:0"),
            sel("unix:path:/usr/bin/csi"),
            sel("unix:gid:0"),
        ];
        caller.sort();
        assert!(d.authorize(&caller, &[]).is_some());
        let partial = vec![sel("unix:uid:0")];
        assert!(d.authorize(&partial, &[]).is_none());
        assert!(Delegates::default().authorize(&caller, &[]).is_none());
    }

    #[test]
    fn spire_selectors_become_lanyard_selectors() {
        let list = vec![
            types::Selector {
                r#type: "unix".into(),
                value: "uid:1000".into(),
            },
            types::Selector {
                r#type: "k8s".into(),
                value: "ns:prod".into(),
            },
        ];
        let parsed = parse_selectors(&list).ok();
        assert_eq!(parsed, Some(vec![sel("k8s:ns:prod"), sel("unix:uid:1000")]));
        let bad = vec![types::Selector {
            r#type: "UNIX".into(),
            value: "uid".into(),
        }];
        assert!(parse_selectors(&bad).is_err());
    }
}
