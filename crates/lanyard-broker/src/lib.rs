//! Dynamic credential backends for Lanyard's broker.
//!
//! A JWT-SVID holder asks the server for a credential its entry grants; the
//! server records a lease and asks a [`Broker`] to make the credential real
//! (today: a PostgreSQL login role with `VALID UNTIL`, [`postgres`]). This
//! crate does only the backend half: templates ([`template`]), generated
//! names and passwords ([`generate`]), and running SQL. Leases, grants,
//! audit and the reaper live in the server; this crate has no store and no
//! clock.
//!
//! # Security
//! - Names and passwords come from the operating system's CSPRNG over a
//!   character set that needs no escaping inside `"…"` or `'…'`, and the
//!   templates are checked at `role add` so each placeholder sits inside the
//!   quotes it needs ([`template::Template::parse`]).
//! - Passwords are [`Secret`]s: `Debug` prints `***`, memory is zeroed on
//!   drop, and the PostgreSQL driver's statement logging is switched off for
//!   broker connections so rendered SQL (which carries the password) never
//!   reaches a log.
//!
//! Start reading at [`Broker`], then [`postgres::PostgresBroker`].

#![warn(missing_docs)]

pub mod generate;
pub mod postgres;
pub mod scram;
pub mod template;

use std::future::Future;
use std::pin::Pin;

use zeroize::Zeroizing;

pub use postgres::{PostgresBroker, PostgresTarget};
pub use template::{RoleTemplates, Template};

/// A boxed future returned by [`Broker`] methods (object-safe trait).
pub type BrokerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BrokerError>> + Send + 'a>>;

/// A backend that creates, extends and removes short-lived credentials.
pub trait Broker: Send + Sync + std::fmt::Debug {
    /// Creates a new credential valid until `expires_at` (Unix seconds) by
    /// running the role's creation template.
    fn issue<'a>(
        &'a self,
        role: &'a RoleTemplates,
        expires_at: i64,
    ) -> BrokerFuture<'a, Credential> {
        Box::pin(async move {
            let username = generate::username(&role.role)?;
            self.issue_as(role, &username, expires_at).await
        })
    }

    /// [`Broker::issue`] with a login name chosen beforehand
    /// ([`generate::username`]), so the caller can record its intent to
    /// create it (and remove it after a crash) before it exists.
    fn issue_as<'a>(
        &'a self,
        role: &'a RoleTemplates,
        username: &'a str,
        expires_at: i64,
    ) -> BrokerFuture<'a, Credential>;

    /// Moves an issued credential's expiry to `expires_at` (renewal).
    fn extend<'a>(&'a self, username: &'a str, expires_at: i64) -> BrokerFuture<'a, ()>;

    /// Removes an issued credential: runs the role's revocation template,
    /// ends the user's sessions and drops it. Idempotent: a user that is
    /// already gone is not an error.
    fn revoke<'a>(&'a self, role: &'a RoleTemplates, username: &'a str) -> BrokerFuture<'a, ()>;

    /// Replaces the admin connection's password with a new generated one and
    /// returns it (the caller stores it; after this only Lanyard knows it).
    fn rotate_root(&self) -> BrokerFuture<'_, Secret>;

    /// Sets the admin connection's password back to `previous` (used when the
    /// new one could not be stored after [`Broker::rotate_root`]).
    fn restore_root<'a>(&'a self, previous: &'a Secret) -> BrokerFuture<'a, ()>;
}

/// A credential just issued.
#[derive(Debug)]
pub struct Credential {
    /// The generated login name.
    pub username: String,
    /// The generated password.
    pub password: Secret,
}

/// A secret string: `Debug` prints `***`, memory is zeroed on drop, and it
/// never serializes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: String) -> Self {
        Self(Zeroizing::new(s))
    }

    /// The secret text; call only where it must leave the process (the
    /// caller's response, a connection, sealing).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// What can go wrong in a backend. Messages never contain a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// A template is unusable; `detail` says why and how to fix it.
    #[error("{what} template: {detail}")]
    Template {
        /// Which template (`creation`, `revocation`).
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// The backend URL is unusable.
    #[error("backend URL {url}: {detail}")]
    Url {
        /// The URL with any password removed.
        url: String,
        /// Why.
        detail: String,
    },
    /// The operating system's random generator failed.
    #[error("the random generator failed")]
    Random,
    /// The backend refused or failed a statement, or could not be reached.
    /// `step` says which; the source is the driver's error (statement text
    /// is never included).
    #[error("backend {step} failed: {source}")]
    Backend {
        /// What was being done (`create role`, `revoke`, `connect`, …).
        step: &'static str,
        /// The driver error.
        #[source]
        source: sqlx::Error,
    },
}

impl BrokerError {
    /// Whether the failure is probably temporary (connection refused or
    /// lost, pool timeout), so the caller should retry with backoff.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Backend {
                source: sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::WorkerCrashed,
                ..
            }
        )
    }
}
