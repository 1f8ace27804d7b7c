//! What a node's agent asks for its workloads: its entry set (sync),
//! X.509-SVIDs and JWT-SVIDs. Each decision is the core policy's, made over
//! the node's own entries only, and each credential goes through the one
//! issuance path.

use std::sync::Arc;

use lanyard_ca::x509::SvidKind;
use lanyard_core::policy::{JwtRequest, Principal, Trace};
use lanyard_core::{Denial, Entry, Evidence, RevocationKey, RevocationKind};
use lanyard_proto::node::{
    Entry as PbEntry, MintJwtSvidRequest, MintJwtSvidResponse, SignX509SvidsRequest,
    SignX509SvidsResponse, SyncRequest, SyncResponse, X509Svid as PbX509Svid,
};
use tonic::Status;

use super::{NodeService, PeerNode, SYNC_INTERVAL};
use crate::issuer::{AuditContext, IssueError};

/// Longest SVID batch one call may ask for.
const MAX_BATCH: usize = 1000;

/// Entries per full-resync page.
pub const SYNC_PAGE: usize = 1000;

/// Where a full resync continues: `EPOCH|REVISION|LAST_ID`.
fn page_token(epoch: &str, revision: i64, last_id: &str) -> String {
    format!("{epoch}|{revision}|{last_id}")
}

fn parse_page_token<'a>(token: &'a str, epoch: &str) -> Option<(i64, &'a str)> {
    let mut parts = token.splitn(3, '|');
    let (e, r, id) = (parts.next()?, parts.next()?, parts.next()?);
    (e == epoch).then_some(())?;
    Some((r.parse().ok()?, id))
}

impl NodeService {
    /// The epoch agents see: the store's, and the limits that shape the
    /// entries sent (so changed limits reach every agent as a resync).
    fn sync_epoch(&self, store_epoch: &str) -> String {
        let l = &self.settings.limits;
        format!(
            "{store_epoch}.{}.{}.{}.{}",
            l.jwt_default_ttl.as_secs(),
            l.jwt_max_ttl.as_secs(),
            l.x509_ttl.as_secs(),
            l.x509_max_ttl.as_secs()
        )
    }

    /// Moves whenever the trust bundle does.
    fn bundle_revision(&self) -> i64 {
        self.ca.current().generation.max(0)
            + self.keys.current().generation
            + self.registry.federated().generation
    }

    /// Answers a sync from the in-memory view: unchanged, a delta since the
    /// agent's cursor, or a page of a full resync. Never reads the store,
    /// except to catch up when the agent has seen a newer revision than
    /// this replica (it synced with another one).
    pub(super) async fn sync_node(&self, peer: &PeerNode, req: &SyncRequest) -> SyncResponse {
        let mut head = self.registry.head();
        let mut epoch = self.sync_epoch(&head.epoch);
        if req.epoch == epoch && req.cursor > head.revision {
            if let Err(e) = self.registry.refresh().await {
                tracing::warn!(error = %e, "catching up for a node's sync failed");
            }
            head = self.registry.head();
            epoch = self.sync_epoch(&head.epoch);
        }
        let bundle_revision = self.bundle_revision();
        let interval = i64::try_from(SYNC_INTERVAL.as_secs()).unwrap_or(2);
        let node = peer.spiffe_id.to_string();
        let mut resp = SyncResponse {
            revision: head.revision,
            epoch: epoch.clone(),
            sync_interval_seconds: interval,
            bundle_revision,
            ..SyncResponse::default()
        };
        let snap = self.registry.snapshot(&self.settings, self.now());
        let policy = snap.policy();
        let served = |e: &Entry| -> Option<PbEntry> {
            if e.parent.as_ref() != Some(&peer.spiffe_id) {
                return None;
            }
            // Only what the policy would sign now; the TTLs are the ones it
            // would choose (so lowered limits reach agents at once).
            let x509 = policy.decide_x509(e, &peer.spiffe_id).ok()?;
            let jwt = policy.jwt_ttl(e, None, peer.expires_at).ok()?;
            Some(PbEntry {
                id: e.id.clone(),
                spiffe_id: e.spiffe_id.to_string(),
                tenant: e.tenant.to_string(),
                selectors: e.selectors.iter().map(ToString::to_string).collect(),
                dns_names: x509.dns_names,
                x509_ttl_seconds: i64::try_from(x509.ttl.as_secs()).unwrap_or(3600),
                jwt_ttl_seconds: i64::try_from(jwt.as_secs()).unwrap_or(300),
                audiences: e.audiences.clone(),
                federates_with: e.federates_with.clone(),
            })
        };
        let with_bundle = |resp: &mut SyncResponse| {
            resp.bundle_included = true;
            resp.trust_domain = self.settings.trust_domain.to_string();
            resp.x509_roots = self.ca.current().roots.clone();
            resp.jwt_bundle = self.keys.current().jwks_json.clone();
            resp.federated_bundles = self
                .registry
                .federated()
                .domains
                .values()
                .filter_map(|d| {
                    let b = d.bundle.as_ref()?;
                    Some(lanyard_proto::node::FederatedBundle {
                        trust_domain: d.trust_domain.to_string(),
                        x509_roots: b.x509_authorities.clone(),
                        jwt_bundle: d.jwks_json.clone(),
                    })
                })
                .collect();
        };

        // A page of a full resync: at the revision it started at, entries
        // after the last one sent, by id.
        let (start, after) = match parse_page_token(&req.page_token, &epoch) {
            Some((revision, last)) if revision <= head.revision => (Some(revision), last),
            _ => (None, ""),
        };
        let delta = match start {
            Some(_) => None,
            None if req.epoch != epoch => None,
            None if req.cursor >= head.revision => {
                // Nothing new (or this replica is behind the agent, which
                // then keeps its cursor).
                if req.known_bundle == bundle_revision {
                    resp.unchanged = true;
                    return resp;
                }
                resp.revision = req.cursor.max(head.revision);
                resp.delta = true;
                with_bundle(&mut resp);
                return resp;
            }
            // Too many changes for one answer: a paged resync instead.
            None => self
                .registry
                .changes_for(&node, req.cursor, head.revision)
                .filter(|d| !d.everything && d.entries.len() <= SYNC_PAGE),
        };
        if let Some(delta) = delta {
            resp.delta = true;
            for id in &delta.entries {
                match snap.entries.get(id).and_then(|e| served(e)) {
                    Some(pb) => resp.entries.push(pb),
                    None => resp.deleted_entry_ids.push(id.clone()),
                }
            }
            if req.known_bundle != bundle_revision {
                with_bundle(&mut resp);
            }
            return resp;
        }
        let revision = start.unwrap_or(head.revision);
        let mut mine = snap.entries.for_parent(&node);
        mine.retain(|e| e.id.as_str() > after);
        mine.sort_by(|a, b| a.id.cmp(&b.id));
        if mine.len() > SYNC_PAGE {
            mine.truncate(SYNC_PAGE);
            if let Some(last) = mine.last() {
                resp.next_page_token = page_token(&epoch, revision, &last.id);
            }
        }
        resp.revision = revision;
        resp.entries = mine.iter().filter_map(|e| served(e)).collect();
        with_bundle(&mut resp);
        resp
    }

    pub(super) async fn sign_x509(
        &self,
        peer: &PeerNode,
        req: SignX509SvidsRequest,
    ) -> Result<SignX509SvidsResponse, Status> {
        if req.requests.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_BATCH} SVIDs per call"
            )));
        }
        let snap = self.registry.snapshot(&self.settings, self.now());
        let policy = snap.policy();
        let actor = format!("node-api:{}", peer.spiffe_id);
        let cid = crate::correlation::new_id();
        let mut svids = Vec::with_capacity(req.requests.len());
        for r in req.requests {
            let entry = self
                .node_entry(&snap.entries, peer, &r.entry_id, "svid.x509.sign")
                .await?;
            let grant = match policy.decide_x509(&entry, &peer.spiffe_id) {
                Ok(g) => g,
                Err(d) => return Err(self.refuse("svid.x509.sign", &entry, &d).await),
            };
            let svid = self
                .issuer
                .issue_x509(
                    &grant,
                    SvidKind::Workload,
                    &r.csr,
                    AuditContext {
                        correlation_id: &cid,
                        actor: &actor,
                        action: "svid.x509.sign",
                        evidence_digest: Some(&peer.digest),
                    },
                    format!("entry {} via node {}", entry.id, peer.spiffe_id),
                )
                .await
                .map_err(|e| issue_status(&entry, &e))?;
            let mut chain = vec![svid.cert_der];
            chain.extend(svid.chain_der);
            svids.push(PbX509Svid {
                entry_id: entry.id.clone(),
                cert_chain: chain,
                expires_at: lanyard_core::clock::unix_seconds(svid.expires_at),
            });
        }
        Ok(SignX509SvidsResponse { svids })
    }

    pub(super) async fn mint_jwt(
        &self,
        peer: &PeerNode,
        req: MintJwtSvidRequest,
    ) -> Result<MintJwtSvidResponse, Status> {
        let snap = self.registry.snapshot(&self.settings, self.now());
        let entry = self
            .node_entry(&snap.entries, peer, &req.entry_id, "svid.jwt.mint")
            .await?;
        let principal = node_principal(peer, entry.clone());
        let request = JwtRequest {
            audiences: &req.audiences,
            ..JwtRequest::default()
        };
        let mut trace = Trace::for_audit();
        let grant = match snap
            .policy()
            .decide_jwt(&principal, None, &request, &mut trace)
        {
            Ok(g) => g,
            Err(d) => return Err(self.refuse("svid.jwt.mint", &entry, &d).await),
        };
        let cid = crate::correlation::new_id();
        let actor = format!("node-api:{}", peer.spiffe_id);
        let issued = self
            .issuer
            .issue_jwt(
                grant,
                AuditContext {
                    correlation_id: &cid,
                    actor: &actor,
                    action: "svid.jwt.mint",
                    evidence_digest: Some(&peer.digest),
                },
            )
            .await
            .map_err(|e| issue_status(&entry, &e))?;
        Ok(MintJwtSvidResponse {
            expires_at: issued.grant.expires_at(),
            token: issued.token,
        })
    }

    /// Entry `id`, if it is one of this node's (the node names its
    /// workloads' entries; the server checks they are its own).
    async fn node_entry(
        &self,
        index: &lanyard_core::EntryIndex,
        peer: &PeerNode,
        id: &str,
        action: &str,
    ) -> Result<Arc<Entry>, Status> {
        let found = index
            .get(id)
            .filter(|e| e.parent.as_ref() == Some(&peer.spiffe_id));
        match found {
            Some(e) => Ok(e.clone()),
            None => {
                let reason = format!(
                    "not_served_by_node: entry {} is not served by node {}",
                    lanyard_core::text::shown(id, 64),
                    peer.spiffe_id
                );
                Err(self
                    .deny(
                        action,
                        &peer.spiffe_id.to_string(),
                        &reason,
                        Status::permission_denied("that entry is not served by this node"),
                    )
                    .await)
            }
        }
    }

    /// Audits a policy denial for one of the node's entries.
    async fn refuse(&self, action: &str, entry: &Entry, d: &Denial) -> Status {
        self.deny(
            action,
            &entry.spiffe_id.to_string(),
            &d.to_string(),
            Status::permission_denied(format!("{} for {}", d.reason.as_str(), entry.spiffe_id)),
        )
        .await
    }
}

/// The evidence of a node-API decision: the node's verified certificate.
/// The workload was attested by that node's agent, so the entry's tenant is
/// the evidence's; nothing issued outlives the node SVID.
fn node_principal(peer: &PeerNode, entry: Arc<Entry>) -> Principal {
    Principal {
        evidence: Evidence {
            issuer: format!("node:{}", peer.node_id),
            tenant: Some(entry.tenant.clone()),
            subject: peer.spiffe_id.to_string(),
            selectors: Vec::new(),
            jti: None,
            expires_at: peer.expires_at,
            digest: peer.digest.clone(),
            revocation_keys: vec![RevocationKey::new(
                RevocationKind::SpiffeId,
                peer.spiffe_id.to_string(),
            )],
        },
        entry,
        carried: None,
    }
}

fn issue_status(entry: &Entry, e: &IssueError) -> Status {
    match e {
        IssueError::Csr(err) => {
            Status::invalid_argument(format!("entry {}: CSR refused: {err}", entry.id))
        }
        IssueError::Unavailable(what) => Status::unavailable(format!("{what}; nothing was issued")),
    }
}
