//! Rotation during a live connection: the open connection keeps working,
//! the next handshake presents the new SVID.

use std::sync::Arc;

use lanyard_spiffe_tls::{
    client_config, server_config, Authorizer, StaticSource, X509Material as _,
};

use crate::support::{id, td, Ca, Client, EchoServer};

const SERVER: &str = "spiffe://example.org/server";
const CLIENT: &str = "spiffe://example.org/client";

fn leaf(source: &StaticSource) -> anyhow::Result<Vec<u8>> {
    let svid = source.svid()?;
    Ok(svid
        .cert_chain()
        .first()
        .map(|c| c.to_vec())
        .unwrap_or_default())
}

#[tokio::test]
async fn rotation_during_a_live_connection() -> anyhow::Result<()> {
    let ca = Ca::new("example.org");
    let server_source = Arc::new(StaticSource::new(ca.svid(SERVER), [ca.bundle()]));
    let client_source = Arc::new(StaticSource::new(ca.svid(CLIENT), [ca.bundle()]));
    let server_cfg = server_config(
        server_source.clone(),
        Authorizer::any_in_trust_domain(td("example.org")),
    )?;
    let client_cfg = client_config(client_source.clone(), Authorizer::exact([id(SERVER)]))?;
    let mut server = EchoServer::start(server_cfg).await?;

    let old_server_leaf = leaf(&server_source)?;
    let old_client_leaf = leaf(&client_source)?;
    let mut first = Client::connect(client_cfg.clone(), server.addr).await?;
    let first_seen = server.next_event().await??;
    assert_eq!(first.peer_leaf(), old_server_leaf);
    assert_eq!(first_seen.peer_leaf, old_client_leaf);
    for i in 0..5 {
        first.echo(&format!("before {i}")).await?;
    }

    // Both sides rotate (new keys, new serials, same IDs) while `first` is open.
    server_source.swap_svid(ca.svid(SERVER));
    client_source.swap_svid(ca.svid(CLIENT));
    let new_server_leaf = leaf(&server_source)?;
    let new_client_leaf = leaf(&client_source)?;
    assert_ne!(new_server_leaf, old_server_leaf);
    assert_ne!(new_client_leaf, old_client_leaf);
    for i in 0..5 {
        first.echo(&format!("during {i}")).await?;
    }

    let mut second = Client::connect(client_cfg.clone(), server.addr).await?;
    let second_seen = server.next_event().await??;
    assert_eq!(
        second.peer_leaf(),
        new_server_leaf,
        "client saw the old server SVID"
    );
    assert_eq!(
        second_seen.peer_leaf, new_client_leaf,
        "server saw the old client SVID"
    );
    assert_eq!(second.peer(), Some(id(SERVER)));
    assert_eq!(second_seen.peer, Some(id(CLIENT)));

    // Both connections keep working, interleaved; the first still has the
    // certificate it was opened with.
    for i in 0..5 {
        first.echo(&format!("old {i}")).await?;
        second.echo(&format!("new {i}")).await?;
    }
    assert_eq!(first.peer_leaf(), old_server_leaf);

    // A rotation to a different ID shows up as the peer's URI SAN.
    server_source.swap_svid(ca.svid("spiffe://example.org/server-v2"));
    let strict = client_config(
        client_source.clone(),
        Authorizer::exact([id(SERVER), id("spiffe://example.org/server-v2")]),
    )?;
    let third = Client::connect(strict, server.addr).await?;
    assert_eq!(third.peer(), Some(id("spiffe://example.org/server-v2")));
    first.echo("still here").await?;
    Ok(())
}

#[tokio::test]
async fn bundle_changes_apply_to_the_next_handshake() -> anyhow::Result<()> {
    let ca = Ca::new("example.org");
    let partner = Ca::new("partner.net");
    let partner_client = "spiffe://partner.net/billing";
    let server_source = Arc::new(StaticSource::new(ca.svid(SERVER), [ca.bundle()]));
    let server_cfg = server_config(
        server_source.clone(),
        Authorizer::any_in_trust_domain(td("partner.net")),
    )?;
    let client_cfg = client_config(
        Arc::new(StaticSource::new(
            partner.svid(partner_client),
            [ca.bundle()],
        )),
        Authorizer::exact([id(SERVER)]),
    )?;
    let mut server = EchoServer::start(server_cfg).await?;

    // Not federated yet: refused.
    let refused = match Client::connect(client_cfg.clone(), server.addr).await {
        Ok(mut c) => c.echo("early").await,
        Err(e) => Err(e),
    };
    assert!(refused.is_err());
    assert!(server.next_event().await?.is_err());

    // Federate: accepted, and the connection outlives un-federating.
    server_source.set_bundle(partner.bundle());
    let mut live = Client::connect(client_cfg.clone(), server.addr).await?;
    live.echo("federated").await?;
    assert_eq!(server.next_event().await??.peer, Some(id(partner_client)));
    server_source.remove_bundle(&td("partner.net"));
    live.echo("still open").await?;
    let refused = match Client::connect(client_cfg, server.addr).await {
        Ok(mut c) => c.echo("late").await,
        Err(e) => Err(e),
    };
    assert!(refused.is_err());
    assert!(server.next_event().await?.is_err());
    Ok(())
}

#[tokio::test]
async fn svid_whose_key_does_not_match_is_not_presented() -> anyhow::Result<()> {
    let ca = Ca::new("example.org");
    let good = ca.svid(SERVER);
    let other_key = ca.svid(SERVER);
    let mismatched = lanyard_spiffe_tls::Svid::new(
        good.cert_chain().to_vec(),
        other_key.private_key().clone_key(),
    )?;
    let server_cfg = server_config(
        Arc::new(StaticSource::new(mismatched, [ca.bundle()])),
        Authorizer::any_in_trust_domain(td("example.org")),
    )?;
    let client_cfg = client_config(
        Arc::new(StaticSource::new(ca.svid(CLIENT), [ca.bundle()])),
        Authorizer::exact([id(SERVER)]),
    )?;
    let mut server = EchoServer::start(server_cfg).await?;
    assert!(Client::connect(client_cfg, server.addr).await.is_err());
    assert!(server.next_event().await?.is_err());
    Ok(())
}
