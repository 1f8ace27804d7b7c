//! Selectors: `TYPE:KEY:VALUE` facts about a workload, derived from verified
//! evidence, that registration entries match on.
//!
//! Examples: `k8s:ns:payments`, `k8s:sa:api`, `k8s:pod-label:app:api` (the
//! value may contain `:`), `gha:repository:acme/api`, `gha:ref:refs/heads/main`,
//! `unix:uid:1000`.

use std::fmt;
use std::str::FromStr;

/// Longest selector accepted, in bytes.
pub const MAX_SELECTOR_LEN: usize = 512;

/// A selector. Type and key are lowercase `[a-z0-9_-]`; the value is any
/// printable text without control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    kind: String,
    key: String,
    value: String,
}

/// Why a string is not a selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    /// Fewer than three `:`-separated parts.
    #[error("selector {0:?} is not TYPE:KEY:VALUE (e.g. k8s:ns:payments)")]
    Shape(String),
    /// Type or key has a character outside `[a-z0-9_-]`.
    #[error("selector type and key use lowercase letters, digits, '-' and '_' only (in {0:?})")]
    BadName(String),
    /// The value is empty or has control characters.
    #[error("selector value must be non-empty printable text (in {0:?})")]
    BadValue(String),
    /// Longer than [`MAX_SELECTOR_LEN`].
    #[error("selector is {0} bytes long; the limit is 512")]
    TooLong(usize),
}

impl Selector {
    /// Builds a selector from parts, validating each.
    ///
    /// # Errors
    /// [`SelectorError`] for an invalid part.
    pub fn new(kind: &str, key: &str, value: &str) -> Result<Self, SelectorError> {
        let shown = || {
            format!("{kind}:{key}:{value}")
                .chars()
                .take(80)
                .collect::<String>()
        };
        let len = kind.len() + key.len() + value.len() + 2;
        if len > MAX_SELECTOR_LEN {
            return Err(SelectorError::TooLong(len));
        }
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        };
        if !name_ok(kind) || !name_ok(key) {
            return Err(SelectorError::BadName(shown()));
        }
        if value.is_empty() || value.chars().any(char::is_control) {
            return Err(SelectorError::BadValue(shown()));
        }
        Ok(Self {
            kind: kind.to_owned(),
            key: key.to_owned(),
            value: value.to_owned(),
        })
    }

    /// Parses `TYPE:KEY:VALUE`; everything after the second `:` is the value.
    ///
    /// # Errors
    /// [`SelectorError`].
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        if s.len() > MAX_SELECTOR_LEN {
            return Err(SelectorError::TooLong(s.len()));
        }
        let mut parts = s.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(kind), Some(key), Some(value)) => Self::new(kind, key, value),
            _ => Err(SelectorError::Shape(s.chars().take(80).collect())),
        }
    }

    /// The type, e.g. `k8s`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The key, e.g. `ns`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value, e.g. `payments`.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.key, self.value)
    }
}

impl FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for Selector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Selector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_round_trips() {
        for s in [
            "k8s:ns:payments",
            "k8s:pod-label:app:api",
            "gha:repository:acme/api",
            "gha:ref:refs/heads/main",
            "unix:uid:0",
        ] {
            assert_eq!(Selector::parse(s).map(|x| x.to_string()).as_deref(), Ok(s));
        }
        let label = Selector::parse("k8s:pod-label:app:api").ok();
        assert_eq!(label.as_ref().map(Selector::value), Some("app:api"));
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            "",
            "k8s",
            "k8s:ns",
            "k8s:ns:",
            "K8S:ns:x",
            "k8s:n s:x",
            ":ns:x",
            "k8s::x",
            "k8s:ns:a\nb",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            Selector::parse(&format!("k8s:ns:{}", "a".repeat(600))),
            Err(SelectorError::TooLong(_))
        ));
    }
}
