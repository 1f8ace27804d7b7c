//! Test support for Lanyard's crates: a fake clock, throwaway TLS
//! certificates, fresh PostgreSQL databases and minted tokens
//! ([`tokens`]). A dev-dependency only.

// A dev-dependency only: fixtures fail the test that asked for them.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use lanyard_core::Clock;

pub mod proxy;
pub mod tokens;

/// A clock that moves only when told to.
#[derive(Debug, Clone)]
pub struct FakeClock(Arc<Mutex<SystemTime>>);

impl FakeClock {
    /// A clock stopped at `start`.
    pub fn at(start: SystemTime) -> Self {
        Self(Arc::new(Mutex::new(start)))
    }

    /// A clock stopped at a fixed, recent-looking time (2026-01-01T00:00:00Z).
    pub fn new() -> Self {
        Self::at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t += by;
    }
}

impl Default for FakeClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A self-signed certificate and key (PEM) for `localhost` and `127.0.0.1`.
pub fn self_signed_tls() -> (String, String) {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("rcgen generates a self-signed certificate from constant input");
    (key.cert.pem(), key.signing_key.serialize_pem())
}

/// The environment variable naming a PostgreSQL server for tests
/// (`postgres://user@127.0.0.1:PORT/postgres`); `.ci/run` sets it.
pub const POSTGRES_ENV: &str = "LANYARD_TEST_POSTGRES_URL";

/// A fresh, empty PostgreSQL database on the test server, or `None` (with a
/// message saying the test was skipped) when [`POSTGRES_ENV`] is unset.
pub async fn fresh_postgres(test: &str) -> Option<String> {
    let Ok(base) = std::env::var(POSTGRES_ENV) else {
        eprintln!("SKIPPED (PostgreSQL): {test}: set {POSTGRES_ENV} (scripts/test.sh does) to run it against a real server");
        return None;
    };
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .expect("connect to the test PostgreSQL server");
    // Unique per process, time and call: tests run in parallel processes.
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!(
        "lanyard_t_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let prefix = base.rsplit_once('/').map(|(p, _)| p).unwrap_or(&base);
    Some(format!("{prefix}/{name}"))
}
