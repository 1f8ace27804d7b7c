//! The one error type of this crate.

/// What went wrong while signing, verifying or handling keys.
///
/// Messages never include key material or whole tokens.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoseError {
    /// The algorithm is not one Lanyard implements (including `none` and HMAC).
    #[error("algorithm {alg:?} is not supported; use ES256 or RS256")]
    UnsupportedAlgorithm {
        /// The algorithm named (truncated).
        alg: String,
    },
    /// The algorithm is implemented but not in the caller's allow-list.
    #[error("algorithm {alg} is not allowed here")]
    AlgorithmNotAllowed {
        /// The algorithm named by the token.
        alg: crate::Algorithm,
    },
    /// The token is larger than [`crate::MAX_COMPACT_LEN`].
    #[error("token is {len} bytes; the limit is {max}")]
    TooLarge {
        /// Observed length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The token is not three base64url parts with a JSON header and payload.
    #[error("token is malformed: {what}")]
    Malformed {
        /// Which part could not be read.
        what: &'static str,
    },
    /// No key with the token's `kid` is known.
    #[error("no key with id {kid:?}")]
    UnknownKeyId {
        /// The key id named by the token (truncated).
        kid: String,
    },
    /// The header's algorithm differs from the key's algorithm.
    #[error("token says {token} but key {kid:?} is {key}")]
    AlgorithmMismatch {
        /// The algorithm in the header.
        token: crate::Algorithm,
        /// The key's algorithm.
        key: crate::Algorithm,
        /// The key id.
        kid: String,
    },
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// A key could not be generated, parsed or used.
    #[error("{what}")]
    Key {
        /// What failed.
        what: &'static str,
    },
    /// Claims could not be serialised.
    #[error("claims could not be serialised")]
    Serialize(#[source] serde_json::Error),
}
