//! The PostgreSQL backend: login roles with `VALID UNTIL`.
//!
//! Lanyard connects as an admin role (`CREATEROLE`, and `ADMIN OPTION` on
//! the roles it grants) whose password it keeps sealed at rest and can
//! rotate so that only Lanyard knows it. Every credential is one `CREATE
//! ROLE` (the role's creation template) in a transaction; revoking runs the
//! revocation template, ends the user's sessions and drops the role.
//!
//! The connection pool is opened lazily, small (PostgreSQL's `CREATE ROLE`
//! serialises on the catalog anyway), and with the driver's statement
//! logging off: rendered SQL carries passwords.

use std::str::FromStr;
use std::time::Duration;

use log::LevelFilter;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions as _, Executor as _, Row as _};

use crate::template::{expiration, RoleTemplates};
use crate::{generate, Broker, BrokerError, BrokerFuture, Credential, Secret};

/// How long to wait for a backend connection before reporting it down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a PostgreSQL backend is and how to log in, password apart.
#[derive(Debug, Clone)]
pub struct PostgresTarget {
    /// `postgres://user@host:port/db?params`, never with a password.
    pub url: String,
    /// The admin role's password.
    pub password: Secret,
}

impl PostgresTarget {
    /// Splits `postgres://user:password@host/db?…` into the URL without the
    /// password and the (percent-decoded) password.
    ///
    /// # Errors
    /// [`BrokerError::Url`] (with the password removed from the message) if
    /// it is not a PostgreSQL URL, names no user, or has no password.
    pub fn parse(url: &str) -> Result<Self, BrokerError> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| BrokerError::Url {
            url: "(unparsable)".into(),
            detail: "expected postgres://USER:PASSWORD@HOST[:PORT]/DATABASE".into(),
        })?;
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let (userinfo, host) = authority.rsplit_once('@').unwrap_or(("", authority));
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let shown = format!("{scheme}://{user}@{host}{tail}");
        let err = |detail: &str| BrokerError::Url {
            url: shown.clone(),
            detail: detail.into(),
        };
        if scheme != "postgres" && scheme != "postgresql" {
            return Err(err("the scheme must be postgres://"));
        }
        if user.is_empty() || host.is_empty() {
            return Err(err(
                "name the admin user and host: postgres://USER:PASSWORD@HOST/DATABASE",
            ));
        }
        if password.is_empty() {
            return Err(err("the admin user's password is missing (postgres://USER:PASSWORD@HOST/DATABASE); Lanyard stores it sealed"));
        }
        let password = percent_decode(password)
            .ok_or_else(|| err("the password is not valid percent-encoding"))?;
        PgConnectOptions::from_str(&shown).map_err(|e| BrokerError::Url {
            url: shown.clone(),
            detail: e.to_string(),
        })?;
        Ok(Self {
            url: shown,
            password,
        })
    }

    fn options(&self) -> Result<PgConnectOptions, BrokerError> {
        Ok(PgConnectOptions::from_str(&self.url)
            .map_err(|e| BrokerError::Url {
                url: self.url.clone(),
                detail: e.to_string(),
            })?
            .password(self.password.expose())
            .application_name("lanyard-broker")
            .log_statements(LevelFilter::Off)
            .log_slow_statements(LevelFilter::Off, Duration::from_secs(3600)))
    }
}

fn percent_decode(s: &str) -> Option<Secret> {
    let bytes = s.as_bytes();
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(bytes.len()));
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    let text = std::str::from_utf8(&out).ok()?.to_owned();
    Some(Secret::new(text))
}

/// A PostgreSQL backend.
#[derive(Debug, Clone)]
pub struct PostgresBroker {
    pool: PgPool,
    /// Passwords with their SCRAM verifiers, made ahead of time.
    prepared: std::sync::Arc<crate::scram::PreparedPool>,
}

impl PostgresBroker {
    /// A backend for `target`, with at most `max_connections` connections
    /// (opened on first use).
    ///
    /// # Errors
    /// [`BrokerError::Url`] if the URL does not parse.
    pub fn new(target: &PostgresTarget, max_connections: u32) -> Result<Self, BrokerError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_lazy_with(target.options()?);
        Ok(Self {
            pool,
            prepared: std::sync::Arc::default(),
        })
    }

    /// Closes the pool (after a root rotation the old password is dead).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Checks that the admin login works and may create roles.
    ///
    /// # Errors
    /// [`BrokerError::Backend`] if it cannot log in, or
    /// [`BrokerError::Url`]-style detail when the role lacks `CREATEROLE`.
    pub async fn check(&self) -> Result<(), BrokerError> {
        let row = sqlx::query(
            "SELECT rolcreaterole OR rolsuper AS ok FROM pg_roles WHERE rolname = current_user",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(backend("connect"))?;
        let ok: bool = row.try_get("ok").map_err(backend("connect"))?;
        if ok {
            Ok(())
        } else {
            Err(BrokerError::Template {
                what: "backend",
                detail: "the admin user lacks CREATEROLE; ALTER ROLE … CREATEROLE first".into(),
            })
        }
    }
}

fn backend(step: &'static str) -> impl Fn(sqlx::Error) -> BrokerError {
    move |source| BrokerError::Backend { step, source }
}

/// A generated name, checked again before it is spliced into SQL.
fn safe_name(name: &str) -> Result<&str, BrokerError> {
    let ok = !name.is_empty()
        && name.len() <= generate::MAX_NAME_LEN
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
    if ok {
        Ok(name)
    } else {
        Err(BrokerError::Template {
            what: "render",
            detail: "the user name is not one Lanyard generated".into(),
        })
    }
}

impl Broker for PostgresBroker {
    fn issue_as<'a>(
        &'a self,
        role: &'a RoleTemplates,
        username: &'a str,
        expires_at: i64,
    ) -> BrokerFuture<'a, Credential> {
        Box::pin(async move {
            let username = safe_name(username)?.to_owned();
            // The database receives the SCRAM verifier, never the password
            // (crate::scram): nothing in its logs or pg_stat_activity can
            // replay it, and no key stretching runs on this request's path.
            let prepared = self.prepared.take().await?;
            let password = prepared.password;
            let sql = role.creation.render(
                &username,
                Some(&prepared.verifier),
                Some(&expiration(expires_at)),
            )?;
            let mut tx = self.pool.begin().await.map_err(backend("connect"))?;
            // Simple-query protocol: the template may hold several statements.
            (&mut *tx)
                .execute(sql.as_str())
                .await
                .map_err(backend("creation SQL"))?;
            tx.commit().await.map_err(backend("creation SQL"))?;
            Ok(Credential { username, password })
        })
    }

    fn extend<'a>(&'a self, username: &'a str, expires_at: i64) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            let name = safe_name(username)?;
            let sql = format!(
                "ALTER ROLE \"{name}\" VALID UNTIL '{}'",
                expiration(expires_at)
            );
            (&self.pool)
                .execute(sql.as_str())
                .await
                .map_err(backend("renew"))?;
            Ok(())
        })
    }

    fn revoke<'a>(&'a self, role: &'a RoleTemplates, username: &'a str) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            let name = safe_name(username)?;
            let mut tx = self.pool.begin().await.map_err(backend("connect"))?;
            let exists = sqlx::query("SELECT 1 FROM pg_roles WHERE rolname = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend("revoke"))?
                .is_some();
            if !exists {
                return Ok(());
            }
            // No new logins from here on, whatever the revocation SQL does.
            (&mut *tx)
                .execute(format!("ALTER ROLE \"{name}\" NOLOGIN").as_str())
                .await
                .map_err(backend("revoke"))?;
            if let Some(t) = &role.revocation {
                let sql = t.render(name, None, None)?;
                (&mut *tx)
                    .execute(sql.as_str())
                    .await
                    .map_err(backend("revocation SQL"))?;
            }
            (&mut *tx)
                .execute(format!("DROP ROLE IF EXISTS \"{name}\"").as_str())
                .await
                .map_err(backend("drop role"))?;
            tx.commit().await.map_err(backend("drop role"))?;
            // VALID UNTIL and DROP ROLE stop new logins, not open sessions.
            // Ending them needs pg_signal_backend (or superuser); without it
            // the sessions end when their clients disconnect.
            if let Err(e) = sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            )
            .bind(name)
            .execute(&self.pool)
            .await
            {
                tracing::warn!(user = %name, error = %e, "could not end the revoked user's open sessions; grant pg_signal_backend to the broker's admin role");
            }
            Ok(())
        })
    }

    fn rotate_root(&self) -> BrokerFuture<'_, Secret> {
        Box::pin(async move {
            let password = generate::password()?;
            set_own_password(&self.pool, &password).await?;
            Ok(password)
        })
    }

    fn restore_root<'a>(&'a self, previous: &'a Secret) -> BrokerFuture<'a, ()> {
        Box::pin(async move { set_own_password(&self.pool, previous).await })
    }
}

async fn set_own_password(pool: &PgPool, password: &Secret) -> Result<(), BrokerError> {
    let p = password.expose();
    if p.is_empty() || p.chars().any(char::is_control) {
        return Err(BrokerError::Template {
            what: "rotate-root",
            detail: "the password is empty or has control characters".into(),
        });
    }
    // ALTER ROLE takes no parameters: PostgreSQL itself quotes the literal
    // (format's %L), so any password, generated or the operator's, is safe.
    let mut conn = pool.acquire().await.map_err(backend("connect"))?;
    let row =
        sqlx::query("SELECT format('ALTER ROLE CURRENT_USER WITH PASSWORD %L', $1::text) AS sql")
            .bind(p)
            .fetch_one(&mut *conn)
            .await
            .map_err(backend("rotate-root"))?;
    let sql: zeroize::Zeroizing<String> =
        zeroize::Zeroizing::new(row.try_get("sql").map_err(backend("rotate-root"))?);
    (&mut *conn)
        .execute(sql.as_str())
        .await
        .map_err(backend("rotate-root"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_is_split_and_the_password_never_shown() {
        let t =
            PostgresTarget::parse("postgres://admin:s%40cr%3At@127.0.0.1:5432/app?sslmode=disable");
        let Ok(t) = t else { panic!("parse failed") };
        assert_eq!(t.url, "postgres://admin@127.0.0.1:5432/app?sslmode=disable");
        assert_eq!(t.password.expose(), "s@cr:t");
        for (bad, want) in [
            ("postgres://admin@127.0.0.1/app", "password is missing"),
            ("mysql://admin:hunter2@127.0.0.1/app", "scheme"),
            ("postgres://:hunter2@127.0.0.1/app", "admin user"),
            ("postgres://admin:hunter%2@127.0.0.1/app", "percent"),
            ("hunter2", "expected postgres://"),
        ] {
            let msg = PostgresTarget::parse(bad)
                .map(|_| ())
                .map_err(|e| e.to_string());
            assert!(
                matches!(&msg, Err(m) if m.contains(want) && !m.contains("hunter")),
                "{bad}: {msg:?}"
            );
        }
    }

    #[test]
    fn only_generated_names_are_spliced() {
        assert!(safe_name("lanyard_ro_abc123").is_ok());
        for bad in ["", "a\"b", "Admin", "x; DROP", &"a".repeat(64)] {
            assert!(safe_name(bad).is_err(), "{bad}");
        }
    }
}
