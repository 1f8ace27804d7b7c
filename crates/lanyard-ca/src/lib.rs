//! Key handling for Lanyard: signing keys sealed at rest, their rotation
//! schedule, and the in-memory key ring the token path signs with.
//!
//! - [`Kek`]: the key-encryption key (AES-256-GCM) that seals every private
//!   key before it reaches the store. It comes from a 0600 file or an
//!   environment variable and is never logged.
//! - [`rotation`]: a pure planner. Given the stored keys, the time and a
//!   [`RotationPolicy`], it says which keys to create, promote, demote and
//!   delete, so that the next key is published in the JWKS for at least
//!   `publish_lead` before it signs, and a previous key stays published until
//!   every token it signed has expired.
//! - [`KeyRing`]: decrypted, parsed keys ready to sign (parsed once, never per
//!   request) plus the public JWKS, built from stored keys.
//!
//! - [`bundle`]: SPIFFE trust bundles of other trust domains: read, check, write.
//! - [`x509`]: the X.509 CA (root, intermediate, CSR → X.509-SVID with the
//!   X.509-SVID specification's constraints, validated after signing).

#![warn(missing_docs)]

pub mod bundle;
mod error;
mod kek;
mod keyring;
pub mod rotation;
pub mod x509;

pub use error::CaError;
pub use kek::{Kek, KEK_ENV};
pub use keyring::{KeyRing, SealedKey};
pub use rotation::{KeyAction, KeyMeta, RotationPolicy};
