//! Life cycle of a JWT signing key.

use std::fmt;
use std::str::FromStr;

/// Where a signing key is in its rotation.
///
/// `Next` keys are published in the JWKS before they sign anything, so that
/// relying parties with a cached JWKS already know them; `Active` keys sign;
/// `Previous` keys stay published until every token they signed has expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Published, not yet signing.
    Next,
    /// Published and signing.
    Active,
    /// Published, no longer signing, removed at its retire time.
    Previous,
}

impl KeyState {
    /// The stable lowercase name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Next => "next",
            Self::Active => "active",
            Self::Previous => "previous",
        }
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "next" => Ok(Self::Next),
            "active" => Ok(Self::Active),
            "previous" => Ok(Self::Previous),
            other => Err(format!("unknown key state {other:?}")),
        }
    }
}
