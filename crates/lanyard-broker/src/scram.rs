//! SCRAM-SHA-256 password verifiers (RFC 5802, RFC 7677) in the form
//! PostgreSQL stores them (`pg_authid.rolpassword`):
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
//!
//! A generated credential's `CREATE ROLE … PASSWORD '…'` carries this
//! verifier, never the password itself. PostgreSQL stores a verifier it is
//! given as it is (it hashes only plaintext), so:
//! - the plaintext password never reaches the database server: not its
//!   statement log (`log_statement = 'all'`), not `pg_stat_activity`, not
//!   `pg_stat_statements`;
//! - the key stretching (4,096 rounds of PBKDF2-HMAC-SHA-256, PostgreSQL's
//!   default `scram_iterations`) runs here, ahead of time, in a small pool
//!   of prepared credentials ([`PreparedPool`]), instead of inside the
//!   database on every request's path.
//!
//! Logins work as before: the client sends the password and PostgreSQL
//! runs SCRAM against the stored verifier (also under an `md5` `pg_hba`
//! line, which PostgreSQL upgrades to SCRAM for such roles). Clients older
//! than libpq 10 cannot do SCRAM.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::{digest, hmac, pbkdf2};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::{generate, BrokerError, Secret};

/// PBKDF2 rounds: PostgreSQL's default (`scram_iterations`).
pub const ITERATIONS: u32 = 4096;
/// Prepared credentials kept ready.
const POOL_TARGET: usize = 8;

/// The verifier PostgreSQL stores for `password` with `salt`.
pub fn verifier(password: &str, salt: &[u8], iterations: NonZeroU32) -> String {
    let mut salted = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password.as_bytes(),
        &mut salted,
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
    let client_key = hmac::sign(&key, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
    let server_key = hmac::sign(&key, b"Server Key");
    zeroize::Zeroize::zeroize(&mut salted);
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key.as_ref()),
        STANDARD.encode(server_key.as_ref())
    )
}

/// Whether `s` has exactly the shape [`verifier`] produces (what the
/// template renderer lets through for `{{password}}` despite its `$`).
pub fn is_verifier(s: &str) -> bool {
    let b64 = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='))
    };
    let Some(rest) = s.strip_prefix("SCRAM-SHA-256$") else {
        return false;
    };
    let Some((params, keys)) = rest.split_once('$') else {
        return false;
    };
    let Some((iterations, salt)) = params.split_once(':') else {
        return false;
    };
    let Some((stored, server)) = keys.split_once(':') else {
        return false;
    };
    !iterations.is_empty()
        && iterations.bytes().all(|c| c.is_ascii_digit())
        && b64(salt)
        && b64(stored)
        && b64(server)
}

/// A generated password and its verifier.
pub(crate) struct Prepared {
    pub password: Secret,
    pub verifier: String,
}

/// A new random password and its verifier (16 random bytes of salt).
fn prepare() -> Result<Prepared, BrokerError> {
    let password = generate::password()?;
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| BrokerError::Random)?;
    let iterations = NonZeroU32::new(ITERATIONS).ok_or(BrokerError::Random)?;
    let verifier = verifier(password.expose(), &salt, iterations);
    Ok(Prepared { password, verifier })
}

/// A few prepared credentials, refilled in the background (a blocking
/// thread: key stretching is CPU work), so a request takes one without
/// waiting for PBKDF2. Each is taken once; they live only in memory
/// (zeroised on drop) and only until taken.
#[derive(Default)]
pub(crate) struct PreparedPool {
    ready: Mutex<Vec<Prepared>>,
    refilling: AtomicBool,
}

impl std::fmt::Debug for PreparedPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedPool").finish_non_exhaustive()
    }
}

impl PreparedPool {
    /// A prepared credential: a ready one, else one made now (on a
    /// blocking thread). Starts a refill either way.
    pub(crate) async fn take(self: &Arc<Self>) -> Result<Prepared, BrokerError> {
        let ready = self.ready.lock().ok().and_then(|mut v| v.pop());
        let prepared = match ready {
            Some(p) => p,
            None => match tokio::runtime::Handle::try_current() {
                Ok(rt) => rt
                    .spawn_blocking(prepare)
                    .await
                    .map_err(|_| BrokerError::Random)??,
                Err(_) => prepare()?,
            },
        };
        self.refill();
        Ok(prepared)
    }

    /// Tops the pool up to its target on a blocking thread, unless a
    /// refill is running (or there is no runtime to run one on).
    fn refill(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = self.clone();
        rt.spawn_blocking(move || {
            loop {
                let short = pool
                    .ready
                    .lock()
                    .map(|v| v.len() < POOL_TARGET)
                    .unwrap_or(false);
                if !short {
                    break;
                }
                let Ok(p) = prepare() else { break };
                match pool.ready.lock() {
                    Ok(mut v) => v.push(p),
                    Err(_) => break,
                }
            }
            pool.refilling.store(false, Ordering::Release);
        });
    }

    #[cfg(test)]
    fn ready(&self) -> usize {
        self.ready.lock().map(|v| v.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed independently with Python's `hashlib.pbkdf2_hmac` and
    /// `hmac` (RFC 7677's password and salt), as PostgreSQL's
    /// `scram_build_secret` lays it out.
    #[test]
    fn verifier_matches_an_independent_implementation() {
        let salt = STANDARD
            .decode("W22ZaJ0SNY7soEsUEjb6gQ==")
            .unwrap_or_default();
        let v = verifier("pencil", &salt, NonZeroU32::MIN.saturating_add(4095));
        assert_eq!(v, EXPECTED_PENCIL);
        assert!(is_verifier(&v));
    }

    const EXPECTED_PENCIL: &str = include_str!("scram_pencil.txt");

    #[test]
    fn only_the_exact_shape_is_a_verifier() {
        for bad in [
            "",
            "pencil",
            "SCRAM-SHA-256$",
            "SCRAM-SHA-256$4096:c2FsdA==",
            "SCRAM-SHA-256$4096:c2FsdA==$a:b:c'",
            "SCRAM-SHA-256$x:c2FsdA==$YQ==:Yg==",
            "SCRAM-SHA-256$4096:c2FsdA==$YQ==:Yg==';DROP ROLE x;--",
            "SCRAM-SHA-256$$4096:c2FsdA==$YQ==:Yg==",
            "md5abcdef",
        ] {
            assert!(!is_verifier(bad), "{bad:?}");
        }
        assert!(is_verifier("SCRAM-SHA-256$4096:c2FsdA==$YQ==:Yg=="));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_hands_out_distinct_credentials_and_refills() -> Result<(), BrokerError> {
        let pool = Arc::new(PreparedPool::default());
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            let p = pool.take().await?;
            assert!(is_verifier(&p.verifier));
            assert!(!p.verifier.contains(p.password.expose()));
            assert!(
                seen.insert(p.password.expose().to_owned()),
                "a password came twice"
            );
        }
        // The refill runs on its own; wait for it by polling its flag
        // (bounded at 10 s), not by sleeping a guessed time.
        for _ in 0..10_000 {
            if !pool.refilling.load(Ordering::Acquire) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert!(pool.ready() > 0 && pool.ready() <= POOL_TARGET);
        Ok(())
    }
}
