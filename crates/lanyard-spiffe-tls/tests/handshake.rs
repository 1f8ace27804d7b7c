//! Who is let in and who is refused, on both sides of a real handshake.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lanyard_spiffe_tls::{
    client_config, server_config, Authorizer, Bundle, PeerRejected, RejectReason, StaticSource,
    Svid,
};

use crate::support::{id, td, Ca, Client, EchoServer};

const SERVER: &str = "spiffe://example.org/server";
const CLIENT: &str = "spiffe://example.org/client";

fn source(svid: Svid, bundles: Vec<Bundle>) -> Arc<StaticSource> {
    Arc::new(StaticSource::new(svid, bundles))
}

#[tokio::test]
async fn mutual_auth_succeeds_for_authorised_ids() -> anyhow::Result<()> {
    let ca = Ca::new("example.org");
    let server_cfg = server_config(
        source(ca.svid(SERVER), vec![ca.bundle()]),
        Authorizer::any_in_trust_domain(td("example.org")),
    )?;
    let client_cfg = client_config(
        source(ca.svid(CLIENT), vec![ca.bundle()]),
        Authorizer::exact([id(SERVER)]),
    )?;
    let mut server = EchoServer::start(server_cfg).await?;
    // The server name is nonsense on purpose: SPIFFE checks the URI SAN.
    let mut client = Client::connect(client_cfg, server.addr).await?;
    client.echo("hello").await?;
    assert_eq!(client.peer(), Some(id(SERVER)));
    assert_eq!(
        client.tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let accepted = server.next_event().await??;
    assert_eq!(accepted.peer, Some(id(CLIENT)));
    Ok(())
}

#[tokio::test]
async fn federated_peer_is_verified_against_its_own_trust_domain_bundle() -> anyhow::Result<()> {
    let ours = Ca::new("example.org");
    let theirs = Ca::new("partner.net");
    let foreign_client = "spiffe://partner.net/billing";
    let server_cfg = server_config(
        source(ours.svid(SERVER), vec![ours.bundle(), theirs.bundle()]),
        Authorizer::one_of([
            Authorizer::any_in_trust_domain(td("example.org")),
            Authorizer::exact([id(foreign_client)]),
        ]),
    )?;
    // The foreign client trusts our bundle for our trust domain only.
    let client_cfg = client_config(
        source(
            theirs.svid(foreign_client),
            vec![theirs.bundle(), ours.bundle()],
        ),
        Authorizer::any_in_trust_domain(td("example.org")),
    )?;
    let mut server = EchoServer::start(server_cfg).await?;
    let mut client = Client::connect(client_cfg, server.addr).await?;
    client.echo("federated").await?;
    assert_eq!(client.peer(), Some(id(SERVER)));
    assert_eq!(server.next_event().await??.peer, Some(id(foreign_client)));
    Ok(())
}

/// name, client SVID, server authorizer, server bundles, refused ID, reason.
type Refusal = (
    &'static str,
    Svid,
    Authorizer,
    Vec<Bundle>,
    &'static str,
    RejectReason,
);

/// Each client below is refused by the server; the server's error names
/// the client's SPIFFE ID and the reason, and the client cannot talk.
#[tokio::test]
async fn server_refuses_bad_clients() -> anyhow::Result<()> {
    let ca = Ca::new("example.org");
    let rogue = Ca::new("example.org");
    let other = Ca::new("other.org");
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let only_someone = Authorizer::exact([id("spiffe://example.org/someone")]);
    let any_ours = Authorizer::any_in_trust_domain(td("example.org"));
    let cases: Vec<Refusal> = vec![
        (
            "authorizer refuses the ID",
            ca.svid(CLIENT),
            only_someone,
            vec![ca.bundle()],
            CLIENT,
            RejectReason::NotAuthorized {
                allowed: "exactly spiffe://example.org/someone".into(),
            },
        ),
        (
            "chain from another CA claiming our trust domain",
            rogue.svid(CLIENT),
            any_ours.clone(),
            vec![ca.bundle()],
            CLIENT,
            RejectReason::NotSignedByBundle,
        ),
        (
            "trust domain without a bundle",
            other.svid("spiffe://other.org/client"),
            Authorizer::one_of([
                any_ours.clone(),
                Authorizer::any_in_trust_domain(td("other.org")),
            ]),
            vec![ca.bundle()],
            "spiffe://other.org/client",
            RejectReason::UnknownTrustDomain(td("other.org")),
        ),
        (
            "chain from another trust domain's CA, bundle known, ID not allowed",
            other.svid("spiffe://other.org/client"),
            any_ours.clone(),
            vec![ca.bundle(), other.bundle()],
            "spiffe://other.org/client",
            RejectReason::NotAuthorized {
                allowed: "any ID in trust domain example.org".into(),
            },
        ),
        (
            "other trust domain's SVID checked against a wrong bundle for it",
            other.svid("spiffe://other.org/client"),
            Authorizer::any_in_trust_domain(td("other.org")),
            vec![
                ca.bundle(),
                Bundle::new(td("other.org"), vec![ca.root_der().into()])?,
            ],
            "spiffe://other.org/client",
            RejectReason::NotSignedByBundle,
        ),
        (
            "expired SVID",
            ca.svid_with(CLIENT, now - 3 * hour, hour, &[]),
            any_ours.clone(),
            vec![ca.bundle()],
            CLIENT,
            RejectReason::Expired,
        ),
        (
            "SVID not valid yet",
            ca.svid_with(CLIENT, now + 2 * hour, hour, &[]),
            any_ours,
            vec![ca.bundle()],
            CLIENT,
            RejectReason::NotYetValid,
        ),
    ];
    for (name, client_svid, authorizer, bundles, peer, want) in cases {
        let server_cfg = server_config(source(ca.svid(SERVER), bundles), authorizer)?;
        let client_cfg = client_config(
            source(client_svid, vec![ca.bundle()]),
            Authorizer::exact([id(SERVER)]),
        )?;
        let mut server = EchoServer::start(server_cfg).await?;
        // TLS 1.3: the client may finish its side before the server's
        // verdict arrives, so the refusal shows on the first exchange.
        let client_result = match Client::connect(client_cfg, server.addr).await {
            Ok(mut c) => c.echo("let me in").await,
            Err(e) => Err(e),
        };
        assert!(client_result.is_err(), "{name}: the client could talk");
        let server_err = match server.next_event().await? {
            Ok(accepted) => panic!("{name}: server accepted {:?}", accepted.peer),
            Err(e) => e,
        };
        let rejected = PeerRejected::find(&server_err)
            .unwrap_or_else(|| panic!("{name}: not a SPIFFE refusal: {server_err}"));
        assert_eq!(rejected.reason, want, "{name}");
        assert_eq!(rejected.peer, Some(id(peer)), "{name}");
        let message = server_err.to_string();
        assert!(
            message.contains(peer),
            "{name}: {message} does not name {peer}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn client_refuses_servers_it_does_not_authorise() -> anyhow::Result<()> {
    let ca = Ca::new("example.org");
    let rogue = Ca::new("example.org");
    let cases = [
        (
            "authorizer refuses the server's ID",
            ca.svid(SERVER),
            RejectReason::NotAuthorized {
                allowed: "exactly spiffe://example.org/expected-server".into(),
            },
        ),
        (
            "server chain from another CA",
            rogue.svid(SERVER),
            RejectReason::NotSignedByBundle,
        ),
    ];
    for (name, server_svid, want) in cases {
        let server_cfg = server_config(
            source(server_svid, vec![ca.bundle()]),
            Authorizer::any_in_trust_domain(td("example.org")),
        )?;
        let client_cfg = client_config(
            source(ca.svid(CLIENT), vec![ca.bundle()]),
            Authorizer::exact([id("spiffe://example.org/expected-server")]),
        )?;
        let mut server = EchoServer::start(server_cfg).await?;
        let err = match Client::connect(client_cfg, server.addr).await {
            Ok(c) => panic!("{name}: client accepted {:?}", c.peer()),
            Err(e) => e,
        };
        let rejected = PeerRejected::find(&err)
            .unwrap_or_else(|| panic!("{name}: not a SPIFFE refusal: {err}"));
        assert_eq!(rejected.reason, want, "{name}");
        assert_eq!(rejected.peer, Some(id(SERVER)), "{name}");
        assert!(err.to_string().contains(SERVER), "{name}: {err}");
        // The server learns only that the client refused its certificate.
        let server_err = server.next_event().await?.err();
        assert!(
            matches!(
                server_err
                    .as_ref()
                    .and_then(|e| e.get_ref())
                    .and_then(|e| e.downcast_ref()),
                Some(rustls::Error::AlertReceived(
                    rustls::AlertDescription::CertificateUnknown
                ))
            ),
            "{name}: server saw {server_err:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn client_without_a_certificate_is_refused() -> anyhow::Result<()> {
    let ca = Ca::new("example.org");
    // The server also gets a DNS SAN so that a plain WebPKI client can
    // verify it: only the client side is under test here.
    let server_svid = ca.svid_with(
        SERVER,
        SystemTime::now(),
        Duration::from_secs(3600),
        &["localhost".to_owned()],
    );
    let server_cfg = server_config(
        source(server_svid, vec![ca.bundle()]),
        Authorizer::any_in_trust_domain(td("example.org")),
    )?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.root_der().into())?;
    let plain = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut server = EchoServer::start(server_cfg).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(plain));
    let tcp = tokio::net::TcpStream::connect(server.addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let client_result = match connector.connect(name, tcp).await {
        Ok(tls) => Client { tls }.echo("anonymous").await,
        Err(e) => Err(e),
    };
    assert!(client_result.is_err(), "an anonymous client could talk");
    let server_err = server
        .next_event()
        .await?
        .err()
        .ok_or_else(|| anyhow::anyhow!("server accepted an anonymous client"))?;
    assert!(
        matches!(
            server_err.get_ref().and_then(|e| e.downcast_ref()),
            Some(rustls::Error::NoCertificatesPresented)
        ),
        "server saw {server_err:?}"
    );
    Ok(())
}
