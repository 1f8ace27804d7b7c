//! Correlation ids and small time helpers shared by handlers and jobs.

use std::time::SystemTime;

/// The response header carrying the correlation id.
pub const HEADER: &str = "x-correlation-id";

/// A fresh correlation id: 16 random bytes, hex.
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    // The OS RNG failing is not recoverable in any useful way; an all-zero id
    // is still a valid (if unhelpful) correlation id and never a secret.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    lanyard_core::hex::encode(&bytes)
}

/// A fresh random id (16 bytes, hex), or `None` when the random number
/// generator fails: for ids that must be unique, such as a token's `jti`.
pub fn try_new_id() -> Option<String> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    Some(lanyard_core::hex::encode(&bytes))
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
