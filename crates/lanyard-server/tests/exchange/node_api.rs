//! The node API (`lanyard_server::node`): join tokens and Kubernetes node
//! attestation, node SVID pinning, and issuance for a node's workloads by
//! the same policy as the exchange, over a real TLS socket where the caller
//! matters.

use std::time::Duration;

use lanyard_core::Clock as _;
use serde_json::{json, Value};

use super::{Env, Options};

fn node_csr() -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    Ok(rcgen::CertificateParams::default()
        .serialize_request(&key)?
        .der()
        .to_vec())
}

#[tokio::test]
async fn join_tokens_work_once_and_fail_closed() -> Result<(), Box<dyn std::error::Error>> {
    use lanyard_proto::node::node_server::Node as _;
    use lanyard_proto::node::{attest_request::Method, AttestRequest, SyncRequest};
    let env = Env::start().await?;
    let svc = lanyard_server::node::NodeService::new(
        &env.state,
        lanyard_server::config::NodeApiConfig {
            listen: "127.0.0.1:0".parse()?,
            dns_names: vec!["localhost".into()],
            join_token_max_ttl: Duration::from_secs(3600),
            default_parent: None,
            k8s_agent_service_accounts: Vec::new(),
            idle_timeout: lanyard_server::config::DEFAULT_NODE_IDLE_TIMEOUT,
        },
    );
    let attest = |token: String, csr: Vec<u8>| {
        let svc = svc.clone();
        async move {
            svc.attest(tonic::Request::new(AttestRequest {
                method: Some(Method::JoinToken(token)),
                csr,
            }))
            .await
            .map(tonic::Response::into_inner)
        }
    };
    let created = env
        .admin(
            reqwest::Method::POST,
            "jointokens",
            json!({ "node_id": "vm-1", "ttl_seconds": 60 }),
        )
        .await?;
    let token = created["token"].as_str().ok_or("token")?.to_owned();
    // Too long a TTL and a bad node id are refused at creation.
    assert!(env
        .admin(
            reqwest::Method::POST,
            "jointokens",
            json!({ "node_id": "vm-1", "ttl_seconds": 999_999 })
        )
        .await
        .is_err());
    assert!(env
        .admin(
            reqwest::Method::POST,
            "jointokens",
            json!({ "node_id": "../x" })
        )
        .await
        .is_err());

    // A garbage CSR is refused without spending the token.
    let bad = attest(token.clone(), b"garbage".to_vec()).await;
    assert_eq!(
        bad.err().map(|s| s.code()),
        Some(tonic::Code::InvalidArgument)
    );
    let svid = attest(token.clone(), node_csr()?).await?;
    assert_eq!(svid.spiffe_id, "spiffe://example.org/lanyard/node/vm-1");
    assert_eq!(svid.cert_chain.len(), 2);
    assert!(!svid.x509_roots.is_empty());
    // Used once: never again.
    let again = attest(token.clone(), node_csr()?).await;
    assert_eq!(
        again.err().map(|s| s.code()),
        Some(tonic::Code::PermissionDenied)
    );

    // Expired (fake clock), unknown, malformed, another trust domain.
    let late = env
        .admin(
            reqwest::Method::POST,
            "jointokens",
            json!({ "node_id": "vm-2", "ttl_seconds": 60 }),
        )
        .await?;
    env.clock.advance(Duration::from_secs(61));
    let expired = attest(
        late["token"].as_str().ok_or("token")?.to_owned(),
        node_csr()?,
    )
    .await;
    assert_eq!(
        expired.err().map(|s| s.code()),
        Some(tonic::Code::PermissionDenied)
    );
    let unknown = attest(
        format!("lyj1.000000000000.{}", "ab".repeat(24)),
        node_csr()?,
    )
    .await;
    assert_eq!(
        unknown.err().map(|s| s.code()),
        Some(tonic::Code::PermissionDenied)
    );
    let junk = attest("not-a-token".into(), node_csr()?).await;
    assert_eq!(
        junk.err().map(|s| s.code()),
        Some(tonic::Code::PermissionDenied)
    );
    let now = env.clock.unix_seconds();
    let (foreign, mut row) = lanyard_server::node::new_join_token(
        &lanyard_core::TrustDomain::parse("other.org")?,
        "vm-9",
        Vec::new(),
        now,
        Duration::from_secs(60),
        "test",
    )?;
    row.trust_domain = "other.org".into();
    let draft = lanyard_store::AuditDraft {
        at_ms: now * 1000,
        correlation_id: "c".into(),
        actor: "test".into(),
        action: "jointoken.create".into(),
        subject: "foreign".into(),
        tenant: None,
        decision: lanyard_core::Decision::Allow,
        reason: "test".into(),
        evidence_digest: None,
    };
    env.state.store.create_join_token(row, draft).await?;
    let other_td = attest(foreign, node_csr()?).await;
    assert_eq!(
        other_td.err().map(|s| s.code()),
        Some(tonic::Code::PermissionDenied)
    );

    // Every refusal is in the audit log with its reason.
    let audit = env
        .admin(reqwest::Method::GET, "audit?limit=1000", Value::Null)
        .await?;
    let text = audit.to_string();
    for reason in [
        "join token already used",
        "join token expired",
        "unknown join token",
        "not a Lanyard join token",
        "join token is for trust domain other.org",
    ] {
        assert!(text.contains(reason), "audit lacks {reason:?}");
    }
    // The authenticated methods refuse a caller without a node certificate.
    let anon = svc.sync(tonic::Request::new(SyncRequest::default())).await;
    assert_eq!(
        anon.err().map(|s| s.code()),
        Some(tonic::Code::Unauthenticated)
    );
    Ok(())
}

#[tokio::test]
async fn kubernetes_nodes_attest_with_an_allowed_service_account(
) -> Result<(), Box<dyn std::error::Error>> {
    use lanyard_proto::node::node_server::Node as _;
    use lanyard_proto::node::{attest_request::Method, AttestRequest};
    let env = Env::start().await?;
    let svc = lanyard_server::node::NodeService::new(
        &env.state,
        lanyard_server::config::NodeApiConfig {
            listen: "127.0.0.1:0".parse()?,
            dns_names: vec!["localhost".into()],
            join_token_max_ttl: Duration::from_secs(3600),
            default_parent: None,
            k8s_agent_service_accounts: vec!["lanyard:agent".into()],
            idle_timeout: lanyard_server::config::DEFAULT_NODE_IDLE_TIMEOUT,
        },
    );
    let attest = |token: String| {
        let svc = svc.clone();
        async move {
            svc.attest(tonic::Request::new(AttestRequest {
                method: Some(Method::K8sPsat(token)),
                csr: node_csr().unwrap_or_default(),
            }))
            .await
            .map(tonic::Response::into_inner)
        }
    };
    let on_node = |c: &mut Value| {
        c["kubernetes.io"]["node"] = json!({"name": "node-1", "uid": "node-uid-1"});
    };
    let ok = attest(env.k8s_token("lanyard", "agent", on_node)).await?;
    assert_eq!(
        ok.spiffe_id,
        "spiffe://example.org/lanyard/node/k8s-k8s-node-1"
    );
    // Another service account of the cluster may not claim to be a node.
    let other = attest(env.k8s_token("payments", "api", on_node)).await;
    assert_eq!(
        other.err().map(|s| s.code()),
        Some(tonic::Code::PermissionDenied)
    );
    // A token without a node binding is refused.
    let unbound = attest(env.k8s_token("lanyard", "agent", |_| {})).await;
    assert_eq!(
        unbound.err().map(|s| s.code()),
        Some(tonic::Code::PermissionDenied)
    );
    // Revoking the node's SPIFFE ID refuses it at once.
    env.admin(
        reqwest::Method::POST,
        "revocations",
        json!({"kind": "spiffe-id", "value": "spiffe://example.org/lanyard/node/k8s-k8s-node-1", "reason": "test"}),
    )
    .await?;
    let revoked = attest(env.k8s_token("lanyard", "agent", on_node)).await;
    assert_eq!(
        revoked.err().map(|s| s.code()),
        Some(tonic::Code::PermissionDenied)
    );
    Ok(())
}

#[tokio::test]
async fn the_intermediate_rotates_on_schedule_under_a_stable_root(
) -> Result<(), Box<dyn std::error::Error>> {
    let env = Env::start().await?;
    let ca = env.state.ca.clone();
    let states = || async {
        let list = ca.list().await?;
        Ok::<_, Box<dyn std::error::Error>>(
            list.iter()
                .map(|c| (c.id.clone(), c.role.clone(), c.state.clone()))
                .collect::<Vec<_>>(),
        )
    };
    let before = states().await?;
    let of = |v: &[(String, String, String)], role: &str, state: &str| {
        v.iter()
            .filter(|c| c.1 == role && c.2 == state)
            .map(|c| c.0.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(of(&before, "root", "active").len(), 1);
    assert_eq!(of(&before, "intermediate", "active").len(), 1);
    // The next intermediate exists before it signs.
    let next = of(&before, "intermediate", "next");
    assert_eq!(next.len(), 1, "{before:?}");
    let root_before = env.state.ca.current().roots.clone();
    let old_int = env.state.ca.current().authority.intermediate_der().to_vec();
    env.clock.advance(Duration::from_secs(24 * 3600 + 60));
    ca.tick().await?;
    let after = states().await?;
    assert_eq!(
        of(&after, "intermediate", "active"),
        next,
        "the prepared one took over"
    );
    assert_eq!(
        of(&after, "intermediate", "previous").len(),
        1,
        "the old one stays until its SVIDs expire"
    );
    assert_eq!(
        env.state.ca.current().roots,
        root_before,
        "the root and the bundle do not change"
    );
    let new_int = env.state.ca.current().authority.intermediate_der().to_vec();
    assert_ne!(new_int, old_int);
    assert!(lanyard_ca::x509::signed_by(&new_int, &root_before[0]));
    // Both rotations are audited.
    let audit = env
        .admin(reqwest::Method::GET, "audit?limit=1000", Value::Null)
        .await?
        .to_string();
    assert!(audit.contains("ca.intermediate.activate") && audit.contains("ca.intermediate.retire"));
    Ok(())
}

/// A node API on a real TLS socket, stopped on drop.
struct NodeApi {
    addr: std::net::SocketAddr,
    roots: Vec<Vec<u8>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl NodeApi {
    async fn start(env: &Env, k8s_agents: Vec<String>) -> Result<Self, Box<dyn std::error::Error>> {
        Self::start_on(&env.state, k8s_agents).await
    }

    /// The node API of one replica.
    async fn start_on(
        state: &lanyard_server::state::AppState,
        k8s_agents: Vec<String>,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let cfg = lanyard_server::config::NodeApiConfig {
            listen: "127.0.0.1:0".parse()?,
            dns_names: vec!["localhost".into()],
            join_token_max_ttl: Duration::from_secs(3600),
            default_parent: None,
            k8s_agent_service_accounts: k8s_agents,
            idle_timeout: lanyard_server::config::DEFAULT_NODE_IDLE_TIMEOUT,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(lanyard_server::node::serve(
            state.clone(),
            cfg,
            listener,
            async move {
                let _ = rx.await;
            },
        ));
        Ok(Self {
            addr,
            roots: state.ca.current().roots.clone(),
            _stop: tx,
        })
    }

    /// A client presenting `cert` (none for `Attest`).
    async fn client(
        &self,
        cert: Option<&NodeCert>,
    ) -> Result<
        lanyard_proto::node::node_client::NodeClient<tonic::transport::Channel>,
        Box<dyn std::error::Error>,
    > {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        let mut roots = rustls::RootCertStore::empty();
        for r in &self.roots {
            roots.add(CertificateDer::from(r.clone()))?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots);
        let mut config = match cert {
            Some(c) => builder.with_client_auth_cert(
                c.chain.iter().cloned().map(CertificateDer::from).collect(),
                PrivateKeyDer::Pkcs8(c.key.clone().into()),
            )?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let addr = self.addr;
        let svc = tower::service_fn(move |_uri: tonic::transport::Uri| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        });
        let channel = tonic::transport::Endpoint::from_static("http://lanyard-node-api")
            .connect_with_connector(svc)
            .await?;
        Ok(lanyard_proto::node::node_client::NodeClient::new(channel))
    }
}

/// A certificate chain and its PKCS#8 key.
#[derive(Clone)]
struct NodeCert {
    chain: Vec<Vec<u8>>,
    key: Vec<u8>,
}

fn key_and_csr() -> Result<(Vec<u8>, Vec<u8>), Box<dyn std::error::Error>> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)?
        .der()
        .to_vec();
    Ok((key.serialize_der(), csr))
}

/// Attests node `node_id` with a fresh join token over TLS.
async fn join(
    env: &Env,
    api: &NodeApi,
    node_id: &str,
) -> Result<NodeCert, Box<dyn std::error::Error>> {
    use lanyard_proto::node::{attest_request::Method, AttestRequest};
    let created = env
        .admin(
            reqwest::Method::POST,
            "jointokens",
            json!({ "node_id": node_id, "ttl_seconds": 60 }),
        )
        .await?;
    let token = created["token"].as_str().ok_or("token")?.to_owned();
    let (key, csr) = key_and_csr()?;
    let svid = api
        .client(None)
        .await?
        .attest(AttestRequest {
            method: Some(Method::JoinToken(format!("{token}\n"))),
            csr,
        })
        .await?
        .into_inner();
    Ok(NodeCert {
        chain: svid.cert_chain,
        key,
    })
}

async fn tls_env() -> Result<Env, Box<dyn std::error::Error>> {
    // Real time: the TLS peers check certificates against the system clock.
    Env::start_with(Options {
        clock: lanyard_testkit::FakeClock::at(std::time::SystemTime::now()),
        ..Options::default()
    })
    .await
}

fn code<T>(r: Result<T, tonic::Status>) -> Option<tonic::Code> {
    r.err().map(|s| s.code())
}

// issue 9: a stolen older node SVID stayed usable until it expired; the
// node API accepted any certificate naming a node ID.
#[tokio::test]
async fn only_the_nodes_current_svid_is_accepted() -> Result<(), Box<dyn std::error::Error>> {
    use lanyard_proto::node::{RenewNodeRequest, SyncRequest};
    let env = tls_env().await?;
    let api = NodeApi::start(&env, Vec::new()).await?;
    let first = join(&env, &api, "vm-1").await?;
    let sync = |c: &NodeCert| {
        let c = c.clone();
        let api = &api;
        async move {
            api.client(Some(&c))
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?
                .sync(SyncRequest::default())
                .await
        }
    };
    assert!(sync(&first).await.is_ok());
    // Renewal: the new SVID is pending, the old one still works until the
    // new one is used (the agent may not have received the answer).
    let (key, csr) = key_and_csr()?;
    let renewed = api
        .client(Some(&first))
        .await?
        .renew_node(RenewNodeRequest { csr })
        .await?
        .into_inner();
    let second = NodeCert {
        chain: renewed.cert_chain,
        key,
    };
    assert!(
        sync(&first).await.is_ok(),
        "old SVID until the new one is used"
    );
    assert!(sync(&second).await.is_ok());
    // Now the old one is refused for good.
    assert_eq!(
        code(sync(&first).await),
        Some(tonic::Code::PermissionDenied)
    );
    assert!(sync(&second).await.is_ok());
    // Re-attesting the node makes every earlier SVID of it stale at once.
    let third = join(&env, &api, "vm-1").await?;
    assert_eq!(
        code(sync(&second).await),
        Some(tonic::Code::PermissionDenied)
    );
    assert!(sync(&third).await.is_ok());
    // A workload X.509-SVID of the same CA is not a node SVID.
    env.admin(
        reqwest::Method::POST,
        "entries",
        json!({"spiffe_id": "spiffe://example.org/w", "tenant": "payments",
               "parent": "spiffe://example.org/lanyard/node/vm-1", "selectors": ["unix:uid:1000"]}),
    )
    .await?;
    let entry_id = env
        .admin(reqwest::Method::GET, "entries", Value::Null)
        .await?["entries"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|e| e["spiffe_id"] == "spiffe://example.org/w")
        })
        .and_then(|e| e["id"].as_str().map(str::to_owned))
        .ok_or("entry")?;
    let (wkey, wcsr) = key_and_csr()?;
    let w = api
        .client(Some(&third))
        .await?
        .sign_x509_svids(lanyard_proto::node::SignX509SvidsRequest {
            requests: vec![lanyard_proto::node::SvidRequest {
                entry_id,
                csr: wcsr,
            }],
        })
        .await?
        .into_inner();
    let workload = NodeCert {
        chain: w
            .svids
            .first()
            .map(|s| s.cert_chain.clone())
            .ok_or("svid")?,
        key: wkey,
    };
    assert_eq!(
        code(sync(&workload).await),
        Some(tonic::Code::PermissionDenied)
    );
    let audit = env
        .admin(reqwest::Method::GET, "audit?limit=1000", Value::Null)
        .await?
        .to_string();
    assert!(audit.contains("stale_node_svid"), "the refusal is audited");
    assert!(audit.contains("client certificate is not a node SVID"));
    Ok(())
}

// issue 9: entries for spiffe://TD/lanyard/... were accepted, so a workload
// could hold a node's (or the server's) identity.
#[tokio::test]
async fn reserved_ids_cannot_be_registered() -> Result<(), Box<dyn std::error::Error>> {
    let env = tls_env().await?;
    for id in [
        "spiffe://example.org/lanyard/node/dev",
        "spiffe://example.org/lanyard/server",
        "spiffe://example.org/lanyard/anything",
    ] {
        let r = env
            .admin(
                reqwest::Method::POST,
                "entries",
                json!({"spiffe_id": id, "tenant": "payments", "issuer": "k8s",
                       "selectors": ["k8s:ns:evil"]}),
            )
            .await;
        let msg = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("400")
                && msg.contains("reserved")
                && msg.contains("spiffe://example.org/lanyard/"),
            "{id}: {msg}"
        );
    }
    // A parent must be a node ID.
    let r = env
        .admin(
            reqwest::Method::POST,
            "entries",
            json!({"spiffe_id": "spiffe://example.org/w", "tenant": "payments",
                   "parent": "spiffe://example.org/ns/x", "selectors": ["unix:uid:0"]}),
        )
        .await;
    assert!(
        r.err()
            .is_some_and(|e| e.to_string().contains("not a node")),
        "parent must be a node"
    );
    // An entry's tenant must be its issuer's fixed tenant (issuer k8s binds payments).
    let r = env
        .admin(
            reqwest::Method::POST,
            "entries",
            json!({"spiffe_id": "spiffe://example.org/x", "tenant": "agents-co", "issuer": "k8s",
                   "selectors": ["k8s:ns:x"]}),
        )
        .await;
    assert!(
        r.err().is_some_and(|e| e
            .to_string()
            .contains("binds every token to tenant payments")),
        "issuer tenant binding checked at creation"
    );
    Ok(())
}

// issue 9: MintJwtSvid had its own TTL and audience rules (no entry max, no
// tokens.max_ttl, no own-audience exemption, 512-byte audiences).
#[tokio::test]
async fn node_workloads_get_tokens_by_the_exchanges_rules() -> Result<(), Box<dyn std::error::Error>>
{
    use lanyard_proto::node::{MintJwtSvidRequest, SignX509SvidsRequest, SvidRequest};
    let env = tls_env().await?;
    let api = NodeApi::start(&env, Vec::new()).await?;
    let n1 = join(&env, &api, "n1").await?;
    let n2 = join(&env, &api, "n2").await?;
    let mk = |spiffe: &str, parent: &str, uid: &str, extra: Value| {
        let mut e = json!({"spiffe_id": spiffe, "tenant": "payments",
            "parent": format!("spiffe://example.org/lanyard/node/{parent}"),
            "selectors": [format!("unix:uid:{uid}")]});
        if let (Some(o), Some(x)) = (e.as_object_mut(), extra.as_object()) {
            o.extend(x.clone());
        }
        e
    };
    let capped = env
        .admin(
            reqwest::Method::POST,
            "entries",
            mk(
                "spiffe://example.org/capped",
                "n1",
                "1",
                json!({"max_ttl_seconds": 120}),
            ),
        )
        .await?["id"]
        .as_str()
        .ok_or("id")?
        .to_owned();
    let narrow = env
        .admin(
            reqwest::Method::POST,
            "entries",
            mk(
                "spiffe://example.org/narrow",
                "n1",
                "2",
                json!({"audiences": ["api://a"]}),
            ),
        )
        .await?["id"]
        .as_str()
        .ok_or("id")?
        .to_owned();
    let other_node = env
        .admin(
            reqwest::Method::POST,
            "entries",
            mk("spiffe://example.org/on-n2", "n2", "3", json!({})),
        )
        .await?["id"]
        .as_str()
        .ok_or("id")?
        .to_owned();
    let mint = |cert: &NodeCert, entry: &str, aud: &[&str]| {
        let cert = cert.clone();
        let req = MintJwtSvidRequest {
            entry_id: entry.to_owned(),
            audiences: aud.iter().map(|a| (*a).to_owned()).collect(),
        };
        let api = &api;
        async move {
            api.client(Some(&cert))
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?
                .mint_jwt_svid(req)
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let t = mint(&n1, &capped, &["api://x"]).await?;
    let c = super::claims_of(&t.token);
    assert_eq!(
        c["exp"].as_i64().zip(c["iat"].as_i64()).map(|(e, i)| e - i),
        Some(120),
        "the entry max_ttl caps the 300s default"
    );
    assert_eq!(c["aud"], json!(["api://x"]));
    assert_eq!(c["tenant"], "payments");
    // The entry's audience list, with the server's own audience always allowed.
    assert_eq!(
        code(mint(&n1, &narrow, &["api://b"]).await),
        Some(tonic::Code::PermissionDenied)
    );
    assert!(mint(&n1, &narrow, &["api://a"]).await.is_ok());
    assert!(mint(&n1, &narrow, &[env.base.as_str()]).await.is_ok());
    // Same audience shape limits as the exchange.
    let long = format!("api://{}", "a".repeat(600));
    assert_eq!(
        code(mint(&n1, &capped, &[long.as_str()]).await),
        Some(tonic::Code::PermissionDenied)
    );
    assert_eq!(
        code(mint(&n1, &capped, &[]).await),
        Some(tonic::Code::PermissionDenied)
    );
    // Another node's entry: refused, for JWTs and X.509 alike.
    assert_eq!(
        code(mint(&n1, &other_node, &["api://x"]).await),
        Some(tonic::Code::PermissionDenied)
    );
    let (_, csr) = key_and_csr()?;
    let cross = api
        .client(Some(&n1))
        .await?
        .sign_x509_svids(SignX509SvidsRequest {
            requests: vec![SvidRequest {
                entry_id: other_node.clone(),
                csr: csr.clone(),
            }],
        })
        .await;
    assert_eq!(code(cross), Some(tonic::Code::PermissionDenied));
    assert!(mint(&n2, &other_node, &["api://x"]).await.is_ok());
    // A revoked entry: refused before anything is signed.
    env.admin(
        reqwest::Method::POST,
        "revocations",
        json!({"kind": "entry", "value": other_node, "reason": "test"}),
    )
    .await?;
    assert_eq!(
        code(mint(&n2, &other_node, &["api://x"]).await),
        Some(tonic::Code::PermissionDenied)
    );
    let audit = env
        .admin(reqwest::Method::GET, "audit?limit=1000", Value::Null)
        .await?
        .to_string();
    for reason in ["audience_not_allowed", "not_served_by_node", "revoked"] {
        assert!(audit.contains(reason), "audit lacks {reason}");
    }
    Ok(())
}

// issue 9: a lowered tokens.max_ttl applies to entries made before it.
#[tokio::test]
async fn a_lowered_token_limit_applies_to_existing_entries(
) -> Result<(), Box<dyn std::error::Error>> {
    use lanyard_proto::node::MintJwtSvidRequest;
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    let kek = dir.path().join("kek");
    lanyard_ca::Kek::generate_file(&kek)?;
    let first = Env::start_with(Options {
        store_url: Some(url.clone()),
        clock: lanyard_testkit::FakeClock::at(std::time::SystemTime::now()),
        kek_file: Some(kek.clone()),
        ..Options::default()
    })
    .await?;
    let api = NodeApi::start(&first, Vec::new()).await?;
    let node = join(&first, &api, "n1").await?;
    let id = first
        .admin(
            reqwest::Method::POST,
            "entries",
            json!({"spiffe_id": "spiffe://example.org/long", "tenant": "payments",
                   "parent": "spiffe://example.org/lanyard/node/n1",
                   "selectors": ["unix:uid:5"], "ttl_seconds": 1800}),
        )
        .await?["id"]
        .as_str()
        .ok_or("id")?
        .to_owned();
    drop(api);
    // The same store, restarted with tokens.max_ttl = 60s.
    let lowered = Env::start_with(Options {
        store_url: Some(url),
        clock: lanyard_testkit::FakeClock::at(std::time::SystemTime::now()),
        jwt_max_ttl: Some(Duration::from_secs(60)),
        kek_file: Some(kek),
        ..Options::default()
    })
    .await?;
    let api = NodeApi::start(&lowered, Vec::new()).await?;
    let t = api
        .client(Some(&node))
        .await?
        .mint_jwt_svid(MintJwtSvidRequest {
            entry_id: id,
            audiences: vec!["api://x".into()],
        })
        .await?
        .into_inner();
    let c = super::claims_of(&t.token);
    assert_eq!(
        c["exp"].as_i64().zip(c["iat"].as_i64()).map(|(e, i)| e - i),
        Some(60)
    );
    Ok(())
}

/// `POST /admin/v1/entries/apply` (NDJSON answer); returns the last line.
async fn apply(env: &Env, entries: Value) -> Result<Value, Box<dyn std::error::Error>> {
    let text = env
        .http
        .post(format!("{}/admin/v1/entries/apply", env.base))
        .bearer_auth(&env.admin)
        .json(&json!({ "entries": entries, "tenant": "payments" }))
        .send()
        .await?
        .text()
        .await?;
    let last: Value = serde_json::from_str(text.lines().last().ok_or("empty answer")?)?;
    if last.get("done").is_none() {
        return Err(format!("apply failed: {text}").into());
    }
    Ok(last)
}

fn node_entries(node: &str, from: usize, n: usize) -> Value {
    (from..from + n)
        .map(|i| {
            json!({
                "spiffe_id": format!("spiffe://example.org/{node}/w{i}"),
                "parent": format!("spiffe://example.org/lanyard/node/{node}"),
                "selectors": [format!("unix:uid:{i}")],
            })
        })
        .collect()
}

/// Every page of a full resync from `req` on, checking each page's shape.
async fn full_resync(
    client: &mut lanyard_proto::node::node_client::NodeClient<tonic::transport::Channel>,
    mut req: lanyard_proto::node::SyncRequest,
) -> Result<(i64, Vec<String>, usize), Box<dyn std::error::Error>> {
    let mut ids = Vec::new();
    let mut pages = 0;
    loop {
        let r = client.sync(req.clone()).await?.into_inner();
        assert!(!r.delta && !r.unchanged, "{r:?}");
        assert!(r.bundle_included && !r.x509_roots.is_empty());
        assert!(r.entries.len() <= lanyard_server::node::svid::SYNC_PAGE);
        ids.extend(r.entries.into_iter().map(|e| e.id));
        pages += 1;
        if r.next_page_token.is_empty() {
            return Ok((r.revision, ids, pages));
        }
        req.page_token = r.next_page_token;
    }
}

// issue 13: an agent gets only what changed for its node since its cursor,
// tombstones for what it no longer serves, a paged resync when its cursor is
// useless, and nothing at all when nothing changed.
#[tokio::test]
async fn sync_sends_deltas_pages_and_never_goes_back() -> Result<(), Box<dyn std::error::Error>> {
    use lanyard_proto::node::SyncRequest;
    let env = tls_env().await?;
    let api = NodeApi::start(&env, Vec::new()).await?;
    let vm1 = join(&env, &api, "vm-1").await?;
    let vm2 = join(&env, &api, "vm-2").await?;
    let mut c1 = api.client(Some(&vm1)).await?;
    let mut c2 = api.client(Some(&vm2)).await?;

    let first = c1.sync(SyncRequest::default()).await?.into_inner();
    assert!(!first.delta && first.bundle_included && first.entries.is_empty());
    let (epoch, bundle) = (first.epoch.clone(), first.bundle_revision);
    let at = |cursor: i64| SyncRequest {
        epoch: epoch.clone(),
        cursor,
        known_bundle: bundle,
        ..SyncRequest::default()
    };
    let r = c1.sync(at(first.revision)).await?.into_inner();
    assert!(
        r.unchanged && r.entries.is_empty() && r.x509_roots.is_empty(),
        "{r:?}"
    );

    // 2,500 entries for vm-1, one for vm-2.
    apply(&env, node_entries("vm-1", 0, 2500)).await?;
    apply(&env, node_entries("vm-2", 5000, 1)).await?;
    // vm-2 gets its one entry as a delta, nothing of vm-1's.
    let r = c2.sync(at(first.revision)).await?.into_inner();
    assert!(r.delta && !r.bundle_included, "{r:?}");
    assert_eq!(r.entries.len(), 1);
    assert_eq!(r.entries[0].spiffe_id, "spiffe://example.org/vm-2/w5000");
    let r2 = r.revision;
    // vm-1's change is larger than a page: a full resync in three pages.
    let (r1, ids, pages) = full_resync(&mut c1, at(first.revision)).await?;
    assert_eq!((ids.len(), pages), (2500, 3));
    assert_eq!(
        ids.iter().collect::<std::collections::HashSet<_>>().len(),
        2500
    );
    assert_eq!(r1, r2);
    assert!(c1.sync(at(r1)).await?.into_inner().unchanged);

    // Update one, delete one, move one to vm-2, and change vm-2 only.
    let listed = env
        .admin(reqwest::Method::GET, "entries", Value::Null)
        .await?;
    let find = |sid: &str| {
        listed["entries"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["spiffe_id"] == sid).cloned())
            .ok_or_else(|| format!("no entry {sid}"))
    };
    let (upd, del, mv) = (
        find("spiffe://example.org/vm-1/w1")?,
        find("spiffe://example.org/vm-1/w2")?,
        find("spiffe://example.org/vm-1/w3")?,
    );
    let id = |e: &Value| e["id"].as_str().unwrap_or("").to_owned();
    env.admin(
        reqwest::Method::PUT,
        &format!("entries/{}", id(&upd)),
        json!({"spiffe_id": "spiffe://example.org/vm-1/w1", "tenant": "payments",
               "parent": "spiffe://example.org/lanyard/node/vm-1",
               "selectors": ["unix:uid:1"], "dns_names": ["w1.example.org"]}),
    )
    .await?;
    env.admin(
        reqwest::Method::DELETE,
        &format!("entries/{}", id(&del)),
        Value::Null,
    )
    .await?;
    env.admin(
        reqwest::Method::PUT,
        &format!("entries/{}", id(&mv)),
        json!({"spiffe_id": "spiffe://example.org/vm-1/w3", "tenant": "payments",
               "parent": "spiffe://example.org/lanyard/node/vm-2", "selectors": ["unix:uid:3"]}),
    )
    .await?;
    apply(&env, node_entries("vm-2", 6000, 1)).await?;
    let r = c1.sync(at(r1)).await?.into_inner();
    assert!(r.delta, "{r:?}");
    assert_eq!(r.entries.len(), 1);
    assert_eq!(r.entries[0].id, id(&upd));
    assert_eq!(r.entries[0].dns_names, ["w1.example.org"]);
    let mut gone = r.deleted_entry_ids.clone();
    gone.sort();
    let mut want = vec![id(&del), id(&mv)];
    want.sort();
    assert_eq!(gone, want, "tombstones for the deleted and the moved entry");
    let r1b = r.revision;
    let r = c2.sync(at(r2)).await?.into_inner();
    assert!(r.delta && r.deleted_entry_ids.is_empty());
    let mut got: Vec<&str> = r.entries.iter().map(|e| e.spiffe_id.as_str()).collect();
    got.sort_unstable();
    assert_eq!(
        got,
        [
            "spiffe://example.org/vm-1/w3",
            "spiffe://example.org/vm-2/w6000"
        ]
    );

    // A revocation changes what every node may serve: a full resync.
    env.admin(
        reqwest::Method::POST,
        "revocations",
        json!({"kind": "spiffe-id", "value": "spiffe://example.org/vm-1/w4", "reason": "test"}),
    )
    .await?;
    let (_, ids, _) = full_resync(&mut c1, at(r1b)).await?;
    assert_eq!(ids.len(), 2497, "the revoked entry is no longer served");

    // Another epoch, a bad page token: a full resync from the start.
    let other = SyncRequest {
        epoch: "another".into(),
        cursor: r1b,
        ..SyncRequest::default()
    };
    assert_eq!(full_resync(&mut c1, other).await?.1.len(), 2497);
    let forged = SyncRequest {
        page_token: "another|x|\u{0}".into(),
        ..at(r1b)
    };
    let r = c1.sync(forged).await?.into_inner();
    // The first page again (one entry of it may be the revoked one).
    assert!(!r.delta && !r.next_page_token.is_empty(), "{r:?}");
    assert!(r.entries.len() + 1 >= lanyard_server::node::svid::SYNC_PAGE);
    // A cursor from the future (another replica ahead): nothing to apply,
    // and the answer never moves the agent back.
    let r = c1.sync(at(r1b + 1_000_000)).await?.into_inner();
    assert!(r.unchanged && r.entries.is_empty(), "{r:?}");
    Ok(())
}

// issue 13: an agent that synced with a replica ahead of this one is not
// sent back: the lagging replica catches up from the change log first.
#[tokio::test]
async fn a_lagging_replica_catches_up_before_answering() -> Result<(), Box<dyn std::error::Error>> {
    use lanyard_proto::node::SyncRequest;
    let Some(url) = lanyard_testkit::fresh_postgres("a_lagging_replica_catches_up").await else {
        return Ok(());
    };
    let a = Env::start_with(Options {
        clock: lanyard_testkit::FakeClock::at(std::time::SystemTime::now()),
        store_url: Some(url),
        ..Options::default()
    })
    .await?;
    let api_a = NodeApi::start(&a, Vec::new()).await?;
    // Replica B: same store, no poller (it refreshes only when asked).
    let mut cfg = a.config.clone();
    cfg.listen = "127.0.0.1:0".parse()?;
    let b = lanyard_server::Server::build(cfg, std::sync::Arc::new(a.clock.clone())).await?;
    let api_b = NodeApi::start_on(b.state(), Vec::new()).await?;
    let vm = join(&a, &api_a, "vm-1").await?;
    b.state().registry.refresh().await?;
    apply(&a, node_entries("vm-1", 0, 3)).await?;
    let seen = api_a
        .client(Some(&vm))
        .await?
        .sync(SyncRequest::default())
        .await?
        .into_inner();
    assert_eq!(seen.entries.len(), 3);
    assert!(
        b.state().registry.head().revision < seen.revision,
        "B is behind"
    );
    let r = api_b
        .client(Some(&vm))
        .await?
        .sync(SyncRequest {
            epoch: seen.epoch.clone(),
            cursor: seen.revision,
            known_bundle: seen.bundle_revision,
            ..SyncRequest::default()
        })
        .await?
        .into_inner();
    assert!(r.unchanged, "{r:?}");
    assert_eq!(
        b.state().registry.head().revision,
        seen.revision,
        "B caught up"
    );
    Ok(())
}
