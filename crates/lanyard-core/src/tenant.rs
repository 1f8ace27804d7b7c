//! Tenants: the explicit owner of every entry, token and lease (INV-5).

use std::fmt;
use std::str::FromStr;

/// A tenant name: a DNS label (RFC 1123), 1 to 63 characters of lowercase
/// ASCII letters, digits and `-`, neither starting nor ending with `-`.
///
/// The DNS-label shape keeps tenant names safe to embed in SPIFFE ID paths,
/// Kubernetes labels, token claims and SQL without quoting surprises.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

/// Why a string is not a valid [`TenantId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TenantIdError {
    /// The name is empty.
    #[error("tenant name is empty")]
    Empty,
    /// The name is longer than 63 characters.
    #[error("tenant name is {len} characters long; the limit is 63")]
    TooLong {
        /// The observed length.
        len: usize,
    },
    /// The name contains a character outside `[a-z0-9-]`.
    #[error("tenant name contains {found:?}; use lowercase letters, digits and '-' only")]
    InvalidCharacter {
        /// The first offending character.
        found: char,
    },
    /// The name starts or ends with `-`.
    #[error("tenant name must start and end with a letter or digit")]
    EdgeHyphen,
}

impl TenantId {
    /// The longest tenant name accepted.
    pub const MAX_LEN: usize = 63;

    /// Validates `name` as a tenant name.
    ///
    /// # Errors
    /// [`TenantIdError`] naming the first rule the name breaks.
    pub fn parse(name: &str) -> Result<Self, TenantIdError> {
        validate_dns_label(name)?;
        Ok(Self(name.to_owned()))
    }

    /// The tenant name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate_dns_label(name: &str) -> Result<(), TenantIdError> {
    if name.is_empty() {
        return Err(TenantIdError::Empty);
    }
    if name.len() > TenantId::MAX_LEN {
        return Err(TenantIdError::TooLong { len: name.len() });
    }
    if let Some(found) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(TenantIdError::InvalidCharacter { found });
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(TenantIdError::EdgeHyphen);
    }
    Ok(())
}

impl FromStr for TenantId {
    type Err = TenantIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["dev", "a", "payments-eu-1", "0team", &"a".repeat(63)] {
            assert_eq!(
                TenantId::parse(ok).map(|t| t.to_string()),
                Ok(ok.to_owned())
            );
        }
    }

    #[test]
    fn refuses_everything_else_with_the_rule_broken() {
        let cases: &[(&str, TenantIdError)] = &[
            ("", TenantIdError::Empty),
            (&"a".repeat(64), TenantIdError::TooLong { len: 64 }),
            ("Payments", TenantIdError::InvalidCharacter { found: 'P' }),
            ("a_b", TenantIdError::InvalidCharacter { found: '_' }),
            ("a.b", TenantIdError::InvalidCharacter { found: '.' }),
            (
                "tenant/../x",
                TenantIdError::InvalidCharacter { found: '/' },
            ),
            ("é", TenantIdError::InvalidCharacter { found: 'é' }),
            ("-a", TenantIdError::EdgeHyphen),
            ("a-", TenantIdError::EdgeHyphen),
        ];
        for (input, want) in cases {
            assert_eq!(
                TenantId::parse(input).as_ref(),
                Err(want),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn deserialize_validates() {
        let ok: Result<TenantId, _> = serde_json::from_str("\"dev\"");
        assert!(ok.is_ok());
        let bad: Result<TenantId, _> = serde_json::from_str("\"Not Valid\"");
        assert!(bad.is_err());
    }
}
