//! JWS, JWT and JWK for Lanyard: compact signing, verification against an
//! algorithm allow-list, and public JWK sets.
//!
//! The cryptography is aws-lc-rs; what lives here is the small amount of JOSE
//! framing around it (RFC 7515 compact serialisation, RFC 7517 keys, RFC 7638
//! thumbprints) and the security decisions: which algorithms are allowed, that
//! a JWK never carries private parts, that a key is parsed once and reused.
//!
//! Deliberately absent: `none`, HMAC (a public key must never verify as a MAC
//! secret), JWE, and any algorithm chosen by the token rather than the key.
//!
//! Start with [`SigningKey`] (generate, load from PKCS#8, sign) and
//! [`verify_compact`].

#![warn(missing_docs)]

mod alg;
mod error;
mod jwk;
mod jws;
mod key;

pub use alg::Algorithm;
pub use error::JoseError;
pub use jwk::{Jwk, Jwks};
pub use jws::{encode_jwt, verify_compact, Header, VerifiedJws, MAX_COMPACT_LEN};
pub use key::{Pkcs8Der, SigningKey, VerifyingKey};
