//! The PostgreSQL backend against a real server (`LANYARD_TEST_POSTGRES_URL`,
//! set by scripts/test.sh, whose pg_hba.conf trusts only the `postgres`
//! superuser and asks every other role for its password): issued users log
//! in with exactly the granted privileges, and after revocation, expiry or
//! root rotation the old secrets no longer work.

// Tests and benchmarks fail by panicking and index fixtures they built.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lanyard_broker::template::Use;
use lanyard_broker::{Broker, PostgresBroker, PostgresTarget, RoleTemplates, Template};
use sqlx::{Connection as _, Executor as _, PgConnection};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const CREATION: &str = "CREATE ROLE \"{{name}}\" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';\nGRANT {{GROUP}} TO \"{{name}}\";";
const REVOCATION: &str = "REVOKE {{GROUP}} FROM \"{{name}}\";";

/// A database with a table the group role may read and one it may not, an
/// admin role (CREATEROLE, ADMIN OPTION on the group) with a password.
struct Fixture {
    db_url: String,
    admin_url: String,
    admin: String,
    group: String,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0)
}

async fn fixture(test: &str) -> Result<Option<Fixture>, Box<dyn std::error::Error>> {
    let Some(db_url) = lanyard_testkit::fresh_postgres(test).await else {
        return Ok(None);
    };
    let suffix = lanyard_broker::generate::username("t")?;
    let admin = format!("adm_{suffix}");
    let group = format!("ro_{suffix}");
    let mut su = PgConnection::connect(&db_url).await?;
    su.execute(
        format!(
            "CREATE ROLE \"{admin}\" LOGIN CREATEROLE PASSWORD 'first-pass';\
             CREATE ROLE \"{group}\" NOLOGIN;\
             GRANT \"{group}\" TO \"{admin}\" WITH ADMIN OPTION;\
             CREATE TABLE visible (v int); INSERT INTO visible VALUES (42);\
             CREATE TABLE hidden (v int);\
             GRANT SELECT ON visible TO \"{group}\";\
             REVOKE ALL ON SCHEMA public FROM PUBLIC;\
             GRANT USAGE ON SCHEMA public TO \"{group}\";"
        )
        .as_str(),
    )
    .await?;
    let admin_url = db_url.replacen("://postgres@", &format!("://{admin}:first-pass@"), 1);
    Ok(Some(Fixture {
        db_url,
        admin_url,
        admin,
        group,
    }))
}

fn templates(f: &Fixture) -> Result<RoleTemplates, Box<dyn std::error::Error>> {
    let g = format!("\"{}\"", f.group);
    Ok(RoleTemplates {
        role: "readonly".into(),
        creation: Template::parse(&CREATION.replace("{{GROUP}}", &g), Use::Creation)?,
        revocation: Some(Template::parse(
            &REVOCATION.replace("{{GROUP}}", &g),
            Use::Revocation,
        )?),
    })
}

fn login_url(f: &Fixture, user: &str, password: &str) -> String {
    f.db_url
        .replacen("://postgres@", &format!("://{user}:{password}@"), 1)
}

async fn role_exists(f: &Fixture, user: &str) -> Result<bool, sqlx::Error> {
    let mut su = PgConnection::connect(&f.db_url).await?;
    let row = sqlx::query("SELECT 1 FROM pg_roles WHERE rolname = $1")
        .bind(user)
        .fetch_optional(&mut su)
        .await?;
    Ok(row.is_some())
}

#[tokio::test]
async fn issued_user_logs_in_with_only_the_granted_privileges_until_revoked() -> TestResult {
    let Some(f) = fixture("issued_user_logs_in").await? else {
        return Ok(());
    };
    let broker = PostgresBroker::new(&PostgresTarget::parse(&f.admin_url)?, 2)?;
    broker.check().await?;
    let role = templates(&f)?;
    let cred = broker.issue(&role, now() + 900).await?;
    assert!(cred.username.starts_with("lanyard_readonly_"));

    // The server really asks for passwords (else this test proves nothing).
    let wrong = PgConnection::connect(&login_url(&f, &cred.username, "wrong")).await;
    assert!(
        wrong.is_err(),
        "a wrong password was accepted: the test server must use password auth for non-superusers (scripts/test.sh writes pg_hba.conf)"
    );
    let mut c =
        PgConnection::connect(&login_url(&f, &cred.username, cred.password.expose())).await?;
    let (v,): (i32,) = sqlx::query_as("SELECT v FROM visible")
        .fetch_one(&mut c)
        .await?;
    assert_eq!(v, 42);
    assert!(sqlx::query("SELECT v FROM hidden")
        .fetch_all(&mut c)
        .await
        .is_err());
    assert!(sqlx::query("INSERT INTO visible VALUES (1)")
        .execute(&mut c)
        .await
        .is_err());
    assert!(sqlx::query("CREATE TABLE mine (v int)")
        .execute(&mut c)
        .await
        .is_err());
    c.close().await.ok();

    broker.revoke(&role, &cred.username).await?;
    assert!(!role_exists(&f, &cred.username).await?);
    assert!(
        PgConnection::connect(&login_url(&f, &cred.username, cred.password.expose()))
            .await
            .is_err()
    );
    // Idempotent: revoking a user that is gone succeeds.
    broker.revoke(&role, &cred.username).await?;
    Ok(())
}

#[tokio::test]
async fn an_expired_user_cannot_log_in_and_renewal_extends_it() -> TestResult {
    let Some(f) = fixture("expired_user").await? else {
        return Ok(());
    };
    let broker = PostgresBroker::new(&PostgresTarget::parse(&f.admin_url)?, 2)?;
    let role = templates(&f)?;
    // PostgreSQL's VALID UNTIL is real time: a short real TTL, polled.
    let short = broker.issue(&role, now() + 2).await?;
    let long = broker.issue(&role, now() + 2).await?;
    broker.extend(&long.username, now() + 600).await?;
    let url = login_url(&f, &short.username, short.password.expose());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match PgConnection::connect(&url).await {
            Err(_) => break,
            Ok(c) => {
                c.close().await.ok();
                assert!(
                    Instant::now() < deadline,
                    "still able to log in after VALID UNTIL"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    // The renewed one still logs in after the original expiry passed.
    let c = PgConnection::connect(&login_url(&f, &long.username, long.password.expose())).await?;
    c.close().await.ok();
    Ok(())
}

#[tokio::test]
async fn rotate_root_leaves_only_the_new_password_working() -> TestResult {
    let Some(f) = fixture("rotate_root").await? else {
        return Ok(());
    };
    let target = PostgresTarget::parse(&f.admin_url)?;
    let broker = PostgresBroker::new(&target, 1)?;
    let new = broker.rotate_root().await?;
    broker.close().await;
    assert!(
        PgConnection::connect(&f.admin_url).await.is_err(),
        "old admin password still works"
    );
    let rotated = PostgresTarget {
        url: target.url.clone(),
        password: new.clone(),
    };
    let again = PostgresBroker::new(&rotated, 1)?;
    again.check().await?;
    let cred = again.issue(&templates(&f)?, now() + 60).await?;
    assert!(role_exists(&f, &cred.username).await?);
    again.restore_root(&target.password).await?;
    let c = PgConnection::connect(&f.admin_url).await?;
    c.close().await.ok();
    assert_ne!(f.admin, f.group);
    Ok(())
}
