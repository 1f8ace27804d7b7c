//! Generated login names and passwords.
//!
//! Both come from the operating system's CSPRNG (aws-lc-rs) over character
//! sets chosen so the values need no escaping in PostgreSQL: a name is
//! `[a-z0-9_]` (a valid unquoted identifier, and safe inside `"…"`), a
//! password is `[A-Za-z0-9]` (safe inside `'…'`, no backslash, no quote).
//! Rejection sampling keeps every character equally likely.

use crate::{BrokerError, Secret};

/// Characters of a generated password: 62 symbols, about 5.95 bits each.
pub const PASSWORD_ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Characters of a generated name's random part.
pub const NAME_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// Length of a generated password: 32 characters, about 190 bits.
pub const PASSWORD_LEN: usize = 32;
/// Length of a name's random part: 16 characters, about 82 bits.
pub const NAME_RANDOM_LEN: usize = 16;
/// PostgreSQL truncates identifiers longer than 63 bytes; names stay below.
pub const MAX_NAME_LEN: usize = 63;

/// A new password.
///
/// # Errors
/// [`BrokerError::Random`] if the CSPRNG fails.
pub fn password() -> Result<Secret, BrokerError> {
    Ok(Secret::new(random_from(PASSWORD_ALPHABET, PASSWORD_LEN)?))
}

/// A new login name `lanyard_<role>_<random>`, where `<role>` is the
/// broker role name reduced to `[a-z0-9_]` and shortened so the whole name
/// fits PostgreSQL's 63-byte identifier limit.
///
/// # Errors
/// [`BrokerError::Random`] if the CSPRNG fails.
pub fn username(role: &str) -> Result<String, BrokerError> {
    let room = MAX_NAME_LEN - "lanyard__".len() - NAME_RANDOM_LEN;
    let hint: String = role
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .take(room)
        .collect();
    Ok(format!(
        "lanyard_{hint}_{}",
        random_from(NAME_ALPHABET, NAME_RANDOM_LEN)?
    ))
}

/// `len` characters drawn uniformly from `alphabet` (at most 256 symbols).
fn random_from(alphabet: &[u8], len: usize) -> Result<String, BrokerError> {
    let n = alphabet.len();
    // Largest multiple of n that fits a byte: bytes at or above it are
    // redrawn, so no character is more likely than another.
    let limit = 256 - (256 % n);
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        aws_lc_rs::rand::fill(&mut buf).map_err(|_| BrokerError::Random)?;
        for b in buf {
            if usize::from(b) < limit && out.len() < len {
                if let Some(c) = alphabet.get(usize::from(b) % n) {
                    out.push(char::from(*c));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_safe_and_distinct() {
        let a = password().unwrap_or_else(|_| Secret::new(String::new()));
        let b = password().unwrap_or_else(|_| Secret::new(String::new()));
        assert_eq!(a.expose().len(), PASSWORD_LEN);
        assert!(a.expose().bytes().all(|c| PASSWORD_ALPHABET.contains(&c)));
        assert_ne!(a, b);
        assert_eq!(format!("{a:?}"), "***");
    }

    #[test]
    fn names_fit_postgres_and_need_no_quoting() {
        for role in ["readonly", "Read-Only \"x\"'; DROP", &"r".repeat(200), ""] {
            let name = username(role).unwrap_or_default();
            assert!(name.len() <= MAX_NAME_LEN, "{name}");
            assert!(name.starts_with("lanyard_"));
            assert!(name
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'));
        }
        assert_ne!(username("x").ok(), username("x").ok());
    }

    #[test]
    fn every_character_is_used() {
        // 64 passwords * 32 chars = 2048 draws over 62 symbols: each symbol
        // is missing with probability about 62 * (61/62)^2048, i.e. never.
        let mut seen = [false; 256];
        for _ in 0..64 {
            for c in password()
                .map(|p| p.expose().to_owned())
                .unwrap_or_default()
                .bytes()
            {
                if let Some(s) = seen.get_mut(usize::from(c)) {
                    *s = true;
                }
            }
        }
        assert!(PASSWORD_ALPHABET
            .iter()
            .all(|c| seen.get(usize::from(*c)) == Some(&true)));
    }
}
