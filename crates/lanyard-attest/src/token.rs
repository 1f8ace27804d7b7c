//! Splitting and decoding a compact JWT before anything is trusted.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use lanyard_core::{Denial, DenyReason};
use lanyard_jose::{Header, MAX_COMPACT_LEN};
use serde_json::{Map, Value};

/// A compact JWT split and decoded but **not verified**: its header and
/// claims are whatever the sender wrote. Only good for choosing which
/// issuer's rules apply and for explaining a denial.
#[derive(Debug, Clone, PartialEq)]
pub struct UnverifiedToken {
    /// The JOSE header.
    pub header: Header,
    /// The claims object.
    pub claims: Map<String, Value>,
}

impl UnverifiedToken {
    /// The unverified `iss`, when it is a string.
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }

    /// The claim at an RFC 6901 JSON pointer (`/tenant`,
    /// `/kubernetes.io/namespace`; `~1` escapes `/`, `~0` escapes `~`).
    pub fn pointer(&self, pointer: &str) -> Option<&Value> {
        let rest = pointer.strip_prefix('/')?;
        let (first, tail) = match rest.split_once('/') {
            Some((first, tail)) => (first, Some(tail)),
            None => (rest, None),
        };
        let value = self
            .claims
            .get(&first.replace("~1", "/").replace("~0", "~"))?;
        match tail {
            Some(tail) => value.pointer(&format!("/{tail}")),
            None => Some(value),
        }
    }
}

/// Splits and decodes a compact JWT without verifying it: the size limit
/// ([`MAX_COMPACT_LEN`]) first, before any decoding, then three base64url
/// parts, a JOSE header with `alg`, a JSON object payload and a base64url
/// signature. Total: every input gives a value or a [`Denial`], never a
/// panic (this is the fuzzing entry point).
///
/// # Errors
/// [`DenyReason::TooLarge`] or [`DenyReason::Malformed`].
pub fn parse_unverified(token: &str) -> Result<UnverifiedToken, Denial> {
    if token.len() > MAX_COMPACT_LEN {
        return Err(Denial::new(
            DenyReason::TooLarge,
            format!(
                "token is {} bytes; the limit is {MAX_COMPACT_LEN}",
                token.len()
            ),
        ));
    }
    let malformed = |what: &str| Denial::new(DenyReason::Malformed, what.to_owned());
    if token.is_empty() {
        return Err(malformed("token is empty"));
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(
            "not a compact JWT: expected three dot-separated parts",
        ));
    };
    let header_bytes = B64
        .decode(h64)
        .map_err(|_| malformed("header is not base64url"))?;
    let header: Header = serde_json::from_slice(&header_bytes)
        .map_err(|_| malformed("header is not a JOSE header object with a string alg"))?;
    let payload = B64
        .decode(p64)
        .map_err(|_| malformed("payload is not base64url"))?;
    let claims: Map<String, Value> =
        serde_json::from_slice(&payload).map_err(|_| malformed("payload is not a JSON object"))?;
    B64.decode(s64)
        .map_err(|_| malformed("signature is not base64url"))?;
    Ok(UnverifiedToken { header, claims })
}

/// Lowercase hex SHA-256 of `bytes`: what audit records instead of a token.
pub fn digest_hex(bytes: &[u8]) -> String {
    lanyard_core::hex::encode(&digest(bytes))
}

/// SHA-256 of `bytes`.
pub(crate) fn digest(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    // A SHA-256 digest is always 32 bytes.
    for (o, b) in out.iter_mut().zip(d.as_ref()) {
        *o = *b;
    }
    out
}
