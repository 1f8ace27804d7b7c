//! The signature algorithms Lanyard signs and verifies with.

use std::fmt;
use std::str::FromStr;

use crate::JoseError;

/// A JWS algorithm (RFC 7518 §3.1) from the families the JWT-SVID
/// specification allows. There is no `none` and no HMAC, by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// ECDSA P-256 with SHA-256: the default; small keys, fast signing.
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 over a 2048-bit key: for consumers that
    /// accept nothing else (Azure Entra federated credentials).
    Rs256,
}

impl Algorithm {
    /// Every algorithm Lanyard knows, in preference order.
    pub const ALL: [Algorithm; 2] = [Algorithm::Es256, Algorithm::Rs256];

    /// The JOSE name, e.g. `ES256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = JoseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ES256" => Ok(Self::Es256),
            "RS256" => Ok(Self::Rs256),
            other => Err(JoseError::UnsupportedAlgorithm {
                alg: truncate(other),
            }),
        }
    }
}

/// Keeps attacker-chosen strings short in errors and logs.
pub(crate) fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}
