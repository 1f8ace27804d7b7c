//! Node attestation (one-time join tokens, Kubernetes projected tokens of
//! the agent DaemonSet) and node SVID renewal.
//!
//! Join tokens are single use: the server keeps only a SHA-256 of the token
//! and marks it used with one conditional UPDATE, so two agents racing with
//! the same token cannot both win. Every path checks the node's revocation
//! before it signs, signs a node certificate (`SvidKind::Node`, which the CA
//! refuses for any other ID), and records the new SVID's serial: the only
//! node certificates the node API accepts afterwards.

use std::time::Duration;

use lanyard_ca::x509::SvidKind;
use lanyard_core::naming;
use lanyard_core::policy::X509Grant;
use lanyard_core::{Decision, RevocationKind, SpiffeId, TrustDomain};
use lanyard_proto::node::{attest_request, AttestRequest, NodeSvid};
use lanyard_store::{JoinTokenRow, NodeRow};
use tonic::Status;

use super::{NodeService, PeerNode};
use crate::issuer::serial_hex;

/// Prefix of join tokens: `lyj1.<id>.<secret>`.
pub const JOIN_TOKEN_PREFIX: &str = "lyj1";

/// SHA-256 of a join token, hex (what the store keeps).
pub fn join_token_hash(token: &str) -> String {
    lanyard_core::hex::encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref(),
    )
}

/// A new join token for node `node_id` and its row. `ttl` must already be
/// within the configured maximum.
///
/// # Errors
/// A message naming the bad node id, or saying the random number
/// generator failed.
pub fn new_join_token(
    td: &TrustDomain,
    node_id: &str,
    selectors: Vec<String>,
    now: i64,
    ttl: Duration,
    created_by: &str,
) -> Result<(String, JoinTokenRow), String> {
    naming::node_id(td, node_id).map_err(|e| e.to_string())?;
    let mut secret = [0u8; 24];
    aws_lc_rs::rand::fill(&mut secret).map_err(|_| "random number generator failed".to_owned())?;
    let mut id = [0u8; 6];
    aws_lc_rs::rand::fill(&mut id).map_err(|_| "random number generator failed".to_owned())?;
    let id = lanyard_core::hex::encode(&id);
    let token = format!(
        "{JOIN_TOKEN_PREFIX}.{id}.{}",
        lanyard_core::hex::encode(&secret)
    );
    let row = JoinTokenRow {
        id,
        token_hash: join_token_hash(&token),
        node_id: node_id.to_owned(),
        trust_domain: td.to_string(),
        selectors,
        created_at: now,
        expires_at: now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
        used_at: None,
        created_by: created_by.to_owned(),
    };
    Ok((token, row))
}

/// How a node SVID came to be, for its row.
enum How {
    JoinToken(Vec<String>),
    K8sPsat(Vec<String>),
    Renewal,
}

impl NodeService {
    pub(super) async fn attest_node(&self, req: AttestRequest) -> Result<NodeSvid, Status> {
        match req.method {
            Some(attest_request::Method::JoinToken(t)) => {
                self.attest_join_token(t.trim_ascii(), &req.csr).await
            }
            Some(attest_request::Method::K8sPsat(t)) => {
                self.attest_k8s(t.trim_ascii(), &req.csr).await
            }
            None => Err(Status::invalid_argument("give join_token or k8s_psat")),
        }
    }

    pub(super) async fn renew(&self, peer: &PeerNode, csr: &[u8]) -> Result<NodeSvid, Status> {
        let (svid, serial) = self.sign_node(&peer.node_id, csr)?;
        self.record_node(
            &peer.node_id,
            &peer.spiffe_id,
            How::Renewal,
            &svid,
            serial.clone(),
        )
        .await?;
        self.audit(
            "node.renew",
            &peer.spiffe_id.to_string(),
            Decision::Allow,
            &format!("renewed with the current node SVID; new serial {serial}"),
        )
        .await?;
        Ok(svid)
    }

    /// Refuses a revoked node (before anything is signed or spent).
    async fn check_node_revoked(
        &self,
        node: &SpiffeId,
        subject: &str,
        safe: Status,
    ) -> Result<(), Status> {
        if let Some(reason) = self.registry.revocations().check(
            RevocationKind::SpiffeId,
            &node.to_string(),
            self.now(),
        ) {
            return Err(self
                .deny(
                    "node.attest",
                    subject,
                    &format!("node revoked ({reason})"),
                    safe,
                )
                .await);
        }
        Ok(())
    }

    async fn attest_join_token(&self, token: &str, csr: &[u8]) -> Result<NodeSvid, Status> {
        let safe = Status::permission_denied("join token refused");
        let shown = token
            .split('.')
            .nth(1)
            .unwrap_or("?")
            .chars()
            .filter(char::is_ascii_hexdigit)
            .take(16)
            .collect::<String>();
        let subject = format!("jointoken:{shown}");
        if token.len() > 256 || !token.starts_with(JOIN_TOKEN_PREFIX) {
            return Err(self
                .deny("node.attest", &subject, "not a Lanyard join token", safe)
                .await);
        }
        let hash = join_token_hash(token);
        let row = self
            .store
            .fetch_join_token(&hash)
            .await
            .map_err(|_| Status::unavailable("store unavailable"))?;
        let now = self.now();
        let Some(row) = row else {
            return Err(self
                .deny("node.attest", &subject, "unknown join token", safe)
                .await);
        };
        if row.used_at.is_some() {
            return Err(self
                .deny("node.attest", &subject, "join token already used", safe)
                .await);
        }
        if row.expires_at <= now {
            return Err(self
                .deny("node.attest", &subject, "join token expired", safe)
                .await);
        }
        if row.trust_domain != self.settings.trust_domain.to_string() {
            return Err(self
                .deny(
                    "node.attest",
                    &subject,
                    &format!("join token is for trust domain {}", row.trust_domain),
                    safe,
                )
                .await);
        }
        let node = naming::node_id(&self.settings.trust_domain, &row.node_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.check_node_revoked(&node, &subject, safe.clone())
            .await?;
        // Check the CSR before spending the token.
        let (svid, serial) = self.sign_node(&row.node_id, csr)?;
        let won = self
            .store
            .consume_join_token(&hash, now)
            .await
            .map_err(|_| Status::unavailable("store unavailable"))?;
        if !won {
            return Err(self
                .deny("node.attest", &subject, "join token already used", safe)
                .await);
        }
        self.record_node(
            &row.node_id,
            &node,
            How::JoinToken(row.selectors.clone()),
            &svid,
            serial.clone(),
        )
        .await?;
        self.audit(
            "node.attest",
            &node.to_string(),
            Decision::Allow,
            &format!("join token {} (used once); serial {serial}", row.id),
        )
        .await?;
        Ok(svid)
    }

    async fn attest_k8s(&self, token: &str, csr: &[u8]) -> Result<NodeSvid, Status> {
        let safe = Status::permission_denied("node attestation refused");
        let digest = lanyard_attest::digest_hex(token.as_bytes());
        let subject = format!("k8s-psat:{}", digest.get(..16).unwrap_or(""));
        let evidence = match self.registry.attestor().verify(token).await {
            Ok(e) => e,
            Err(d) => {
                return Err(self
                    .deny("node.attest", &subject, &d.to_string(), safe)
                    .await)
            }
        };
        // The agent's own token may be revoked too (its pod, its service account).
        if let Err(d) = self.registry.revocations().check_keys(
            evidence
                .revocation_keys
                .iter()
                .map(|k| (k.kind, k.value.as_str())),
            self.now(),
        ) {
            return Err(self
                .deny("node.attest", &subject, &d.to_string(), safe)
                .await);
        }
        let value = |key: &str| {
            evidence
                .selectors
                .iter()
                .find(|s| s.kind() == "k8s" && s.key() == key)
                .map(|s| s.value().to_owned())
        };
        let (Some(ns), Some(sa)) = (value("ns"), value("sa")) else {
            return Err(self
                .deny(
                    "node.attest",
                    &subject,
                    "not a Kubernetes service-account token",
                    safe,
                )
                .await);
        };
        let allowed = format!("{ns}:{sa}");
        if !self
            .cfg
            .k8s_agent_service_accounts
            .iter()
            .any(|a| a == &allowed)
        {
            return Err(self
                .deny(
                    "node.attest",
                    &subject,
                    &format!(
                        "service account {allowed} is not in node_api.k8s_agent_service_accounts"
                    ),
                    safe,
                )
                .await);
        }
        let Some(node_name) = value("node-name") else {
            return Err(self
                .deny(
                    "node.attest",
                    &subject,
                    "the token names no node (needs a projected token bound to a pod)",
                    safe,
                )
                .await);
        };
        let node_id = format!("k8s-{}-{}", evidence.issuer, node_name);
        let node = naming::node_id(&self.settings.trust_domain, &node_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        // issue 9: revocation is checked before anything is signed.
        self.check_node_revoked(&node, &subject, safe).await?;
        let (svid, serial) = self.sign_node(&node_id, csr)?;
        let selectors = evidence.selectors.iter().map(ToString::to_string).collect();
        self.record_node(
            &node_id,
            &node,
            How::K8sPsat(selectors),
            &svid,
            serial.clone(),
        )
        .await?;
        self.audit(
            "node.attest",
            &node.to_string(),
            Decision::Allow,
            &format!("kubernetes token of {allowed} on {node_name}; serial {serial}"),
        )
        .await?;
        Ok(svid)
    }

    /// Signs node `node_id`'s SVID (a node certificate, nothing else).
    fn sign_node(&self, node_id: &str, csr: &[u8]) -> Result<(NodeSvid, String), Status> {
        let id = naming::node_id(&self.settings.trust_domain, node_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let ttl = self.ca.node_svid_ttl();
        let grant = X509Grant {
            spiffe_id: id.clone(),
            dns_names: Vec::new(),
            ttl,
        };
        let svid = self
            .issuer
            .sign_x509(&grant, SvidKind::Node, csr)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let serial = serial_hex(&svid.cert_der);
        let mut chain = vec![svid.cert_der];
        chain.extend(svid.chain_der);
        Ok((
            NodeSvid {
                node_id: node_id.to_owned(),
                spiffe_id: id.to_string(),
                cert_chain: chain,
                expires_at: lanyard_core::clock::unix_seconds(svid.expires_at),
                x509_roots: self.ca.current().roots.clone(),
            },
            serial,
        ))
    }

    /// Records the node and its new SVID's serial. Attestation makes the
    /// serial current at once (an earlier SVID of the node stops working);
    /// renewal makes it pending, current at its first use.
    async fn record_node(
        &self,
        node_id: &str,
        id: &SpiffeId,
        how: How,
        svid: &NodeSvid,
        serial: String,
    ) -> Result<(), Status> {
        let now = self.now();
        let unavailable = |_| Status::unavailable("store unavailable");
        let existing = self.store.fetch_node(node_id).await.map_err(unavailable)?;
        let (attestation, selectors, current, next) = match how {
            How::JoinToken(sel) => ("join_token".to_owned(), sel, serial, String::new()),
            How::K8sPsat(sel) => ("k8s_psat".to_owned(), sel, serial, String::new()),
            How::Renewal => {
                let Some(n) = &existing else {
                    return Err(Status::permission_denied("unknown node; re-attest it"));
                };
                (
                    n.attestation.clone(),
                    n.selectors.clone(),
                    n.svid_serial.clone(),
                    serial,
                )
            }
        };
        let row = NodeRow {
            id: node_id.to_owned(),
            spiffe_id: id.to_string(),
            attestation,
            selectors,
            svid_serial: current,
            svid_serial_next: next,
            svid_expires_at: svid.expires_at,
            created_at: existing.as_ref().map_or(now, |n| n.created_at),
            last_seen: now,
        };
        self.store
            .upsert_node(row.clone())
            .await
            .map_err(unavailable)?;
        self.registry.note_node(&row);
        Ok(())
    }
}
