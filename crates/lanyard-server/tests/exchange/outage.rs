//! The store going away or hanging under a running server (issue 13): every
//! request that must be audited answers 503 (fast when the database is gone,
//! within `server.request_timeout` when it hangs), `/readyz` goes red,
//! nothing is issued without its audit event, and the server recovers by
//! itself when the database is back. The fault sits in a TCP proxy between
//! the server and a real PostgreSQL.

use std::time::Duration;

use lanyard_testkit::proxy::{Link, Proxy};
use serde_json::Value;

use super::{base_form, Env, Options};

#[tokio::test]
async fn a_lost_or_hung_store_answers_503_and_recovers_by_itself(
) -> Result<(), Box<dyn std::error::Error>> {
    let Some(url) = lanyard_testkit::fresh_postgres("a_lost_or_hung_store_answers_503").await
    else {
        return Ok(());
    };
    // postgres://user@HOST:PORT/db -> the same through the proxy.
    let hostport = url
        .split_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(hp, _)| hp.to_owned())
        .ok_or("unexpected PostgreSQL URL")?;
    let proxy = Proxy::start(hostport.parse()?).await?;
    let via = url.replacen(&hostport, &proxy.addr().to_string(), 1);
    let env = Env::start_with(Options {
        store_url: Some(via),
        request_timeout: Some(Duration::from_secs(2)),
        ..Options::default()
    })
    .await?;
    let token = env.k8s_token("payments", "api", |_| {});
    let ready = || async {
        Ok::<u16, reqwest::Error>(
            env.http
                .get(format!("{}/readyz", env.base))
                .send()
                .await?
                .status()
                .as_u16(),
        )
    };
    let mut issued = Vec::new();
    let exchange = || {
        let env = &env;
        let token = token.clone();
        async move {
            let (status, body, _) = env.exchange(&base_form(&token, "api://x")).await?;
            Ok::<_, Box<dyn std::error::Error>>((status, body))
        }
    };
    let (status, body) = exchange().await?;
    assert_eq!(status, 200, "{body}");
    issued.push(body);
    assert_eq!(ready().await?, 200);

    // Gone: refused connections. 503 with a reason, never a token.
    proxy.set(Link::Down);
    for _ in 0..3 {
        let (status, body) = exchange().await?;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"], "temporarily_unavailable");
        assert!(body["error_description"]
            .as_str()
            .unwrap_or("")
            .contains("nothing was issued"));
    }
    assert_eq!(ready().await?, 503);

    // Hung: connections open, nothing answers. The request still ends,
    // with 503, after the request timeout.
    proxy.set(Link::Frozen);
    let (status, body) = exchange().await?;
    assert_eq!(status, 503, "{body}");
    assert_eq!(ready().await?, 503);

    // Back: the server recovers without a restart (bounded wait for the
    // pool to replace its broken connections).
    proxy.set(Link::Up);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = exchange().await?;
        if status == 200 {
            issued.push(body);
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ready().await?, 200);

    // Every token a caller received has its audit event, and the chain is whole.
    let audit = env
        .admin(reqwest::Method::GET, "audit?limit=1000", Value::Null)
        .await?
        .to_string();
    for body in &issued {
        let claims =
            lanyard_testkit::tokens::claims_of(body["access_token"].as_str().ok_or("token")?);
        let jti = claims["jti"].as_str().ok_or("jti")?;
        assert!(
            audit.contains(&format!("jti={jti}")),
            "no audit event for {jti}"
        );
    }
    let verified = env
        .admin(reqwest::Method::GET, "audit/verify", Value::Null)
        .await?;
    assert_eq!(verified["ok"], true, "{verified}");
    Ok(())
}
