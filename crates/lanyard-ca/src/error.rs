//! The one error type of this crate.

use std::path::PathBuf;

/// What went wrong handling keys. Messages name files and key ids, never key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The key-encryption key file could not be read or written.
    #[error("key-encryption key file {path}: {source}")]
    KekIo {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The key-encryption key file is readable by group or others.
    #[error("key-encryption key file {path} has mode {mode:o}; it must not be readable by group or others (chmod 600 {path})")]
    KekPermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key-encryption key is not 32 bytes, raw or base64.
    #[error("key-encryption key from {source_name} is not 32 bytes (raw, or base64 of 32 bytes); generate one with `head -c 32 /dev/urandom | base64`")]
    KekFormat {
        /// Where it came from (file path or variable name).
        source_name: String,
    },
    /// A stored key was sealed by a different key-encryption key.
    #[error("signing key {kid} was sealed with key-encryption key {sealed_with}, but the configured one is {configured}; configure the original key-encryption key (nothing was changed)")]
    WrongKek {
        /// The stored key's id.
        kid: String,
        /// Fingerprint of the KEK that sealed it.
        sealed_with: String,
        /// Fingerprint of the configured KEK.
        configured: String,
    },
    /// A sealed key does not decrypt, or decrypts to something that is not its key.
    #[error("signing key {kid} does not decrypt or does not match its id; the stored row is corrupt or was tampered with")]
    CorruptKey {
        /// The stored key's id.
        kid: String,
    },
    /// A cryptographic operation failed.
    #[error(transparent)]
    Jose(#[from] lanyard_jose::JoseError),
    /// The operating system's random number generator failed.
    #[error("random number generator failed")]
    Random,
}
