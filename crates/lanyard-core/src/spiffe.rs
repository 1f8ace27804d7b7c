//! SPIFFE trust domains and IDs, as the SPIFFE ID specification (§2) defines them.

use std::fmt;
use std::str::FromStr;

const SCHEME: &str = "spiffe://";
/// SPIFFE ID §2.3: URIs longer than 2048 bytes are refused.
const MAX_ID_LEN: usize = 2048;
/// SPIFFE ID §2.1: the trust domain name is at most 255 characters.
const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Why a string is not a valid trust domain or SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeIdError {
    /// The input does not start with `spiffe://`.
    #[error("a SPIFFE ID starts with \"spiffe://\"")]
    WrongScheme,
    /// The trust domain is empty.
    #[error("the trust domain is empty")]
    EmptyTrustDomain,
    /// The trust domain has a character outside `[a-z0-9.-_]`.
    #[error(
        "the trust domain contains {found:?}; use lowercase letters, digits, '.', '-' and '_'"
    )]
    BadTrustDomainChar {
        /// The first offending character.
        found: char,
    },
    /// A path segment has a character outside `[a-zA-Z0-9.-_]`.
    #[error("the path contains {found:?}; use letters, digits, '.', '-' and '_' between '/'")]
    BadPathChar {
        /// The first offending character.
        found: char,
    },
    /// The path has an empty segment (`//` or a trailing `/`).
    #[error("the path has an empty segment ('//' or a trailing '/')")]
    EmptySegment,
    /// The path has a `.` or `..` segment.
    #[error("the path has a '.' or '..' segment")]
    DotSegment,
    /// The input is longer than the specification allows.
    #[error("{what} is {len} bytes long; the limit is {max}")]
    TooLong {
        /// What was too long.
        what: &'static str,
        /// The observed length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// A SPIFFE trust domain name, e.g. `example.org`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a bare trust domain name (`example.org`) or its SPIFFE ID form
    /// (`spiffe://example.org`).
    ///
    /// # Errors
    /// [`SpiffeIdError`] naming the first rule the input breaks.
    pub fn parse(input: &str) -> Result<Self, SpiffeIdError> {
        let name = input.strip_prefix(SCHEME).unwrap_or(input);
        if name.is_empty() {
            return Err(SpiffeIdError::EmptyTrustDomain);
        }
        if name.len() > MAX_TRUST_DOMAIN_LEN {
            return Err(SpiffeIdError::TooLong {
                what: "the trust domain",
                len: name.len(),
                max: MAX_TRUST_DOMAIN_LEN,
            });
        }
        if let Some(found) = name.chars().find(|c| !is_trust_domain_char(*c)) {
            return Err(SpiffeIdError::BadTrustDomainChar { found });
        }
        Ok(Self(name.to_owned()))
    }

    /// The trust domain name, without scheme.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain's own SPIFFE ID, `spiffe://<name>`, which keys bundles.
    pub fn id_string(&self) -> String {
        format!("{SCHEME}{}", self.0)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A SPIFFE ID for a workload: `spiffe://<trust domain>/<path>`, path non-empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    /// Always starts with `/`, never ends with one.
    path: String,
}

impl SpiffeId {
    /// Parses a workload SPIFFE ID. The path must be non-empty: the bare
    /// trust domain ID names the domain, not a workload.
    ///
    /// # Errors
    /// [`SpiffeIdError`] naming the first rule the input breaks.
    pub fn parse(input: &str) -> Result<Self, SpiffeIdError> {
        if input.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong {
                what: "the SPIFFE ID",
                len: input.len(),
                max: MAX_ID_LEN,
            });
        }
        let rest = input
            .strip_prefix(SCHEME)
            .ok_or(SpiffeIdError::WrongScheme)?;
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let trust_domain = TrustDomain::parse(td)?;
        if path.is_empty() {
            return Err(SpiffeIdError::EmptySegment);
        }
        for segment in path.split('/').skip(1) {
            if segment.is_empty() {
                return Err(SpiffeIdError::EmptySegment);
            }
            if segment == "." || segment == ".." {
                return Err(SpiffeIdError::DotSegment);
            }
            if let Some(found) = segment.chars().find(|c| !is_path_char(*c)) {
                return Err(SpiffeIdError::BadPathChar { found });
            }
        }
        Ok(Self {
            trust_domain,
            path: path.to_owned(),
        })
    }

    /// The trust domain this ID belongs to.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path, starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// An ID from parts the caller has already validated (a trust domain and
    /// a path made only of valid segments). Used by [`crate::naming`].
    pub(crate) fn from_valid_parts(trust_domain: &TrustDomain, path: String) -> Self {
        Self {
            trust_domain: trust_domain.clone(),
            path,
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}{}", self.trust_domain, self.path)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn is_trust_domain_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_valid_ids() {
        for ok in [
            "spiffe://example.org/ns/payments/sa/api",
            "spiffe://a/b",
            "spiffe://td-1.example_x/A.b-c_d/9",
        ] {
            let id = SpiffeId::parse(ok).map(|i| i.to_string());
            assert_eq!(id.as_deref(), Ok(ok));
        }
        let id = SpiffeId::parse("spiffe://example.org/x/y").ok();
        assert_eq!(
            id.as_ref().map(|i| i.trust_domain().as_str()),
            Some("example.org")
        );
        assert_eq!(id.as_ref().map(SpiffeId::path), Some("/x/y"));
    }

    #[test]
    fn refuses_invalid_ids() {
        let cases: &[(&str, SpiffeIdError)] = &[
            ("https://example.org/a", SpiffeIdError::WrongScheme),
            ("SPIFFE://example.org/a", SpiffeIdError::WrongScheme),
            ("spiffe:///a", SpiffeIdError::EmptyTrustDomain),
            (
                "spiffe://Example.org/a",
                SpiffeIdError::BadTrustDomainChar { found: 'E' },
            ),
            (
                "spiffe://example.org:443/a",
                SpiffeIdError::BadTrustDomainChar { found: ':' },
            ),
            (
                "spiffe://user@example.org/a",
                SpiffeIdError::BadTrustDomainChar { found: '@' },
            ),
            ("spiffe://example.org", SpiffeIdError::EmptySegment),
            ("spiffe://example.org/", SpiffeIdError::EmptySegment),
            ("spiffe://example.org/a//b", SpiffeIdError::EmptySegment),
            ("spiffe://example.org/a/", SpiffeIdError::EmptySegment),
            ("spiffe://example.org/a/../b", SpiffeIdError::DotSegment),
            ("spiffe://example.org/./b", SpiffeIdError::DotSegment),
            (
                "spiffe://example.org/a?b=c",
                SpiffeIdError::BadPathChar { found: '?' },
            ),
            (
                "spiffe://example.org/a#f",
                SpiffeIdError::BadPathChar { found: '#' },
            ),
            (
                "spiffe://example.org/a%20b",
                SpiffeIdError::BadPathChar { found: '%' },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                SpiffeId::parse(input).as_ref(),
                Err(want),
                "input {input:?}"
            );
        }
        let long = format!("spiffe://example.org/{}", "a".repeat(2048));
        assert!(matches!(
            SpiffeId::parse(&long),
            Err(SpiffeIdError::TooLong { .. })
        ));
    }

    #[test]
    fn trust_domain_accepts_both_forms() {
        assert_eq!(
            TrustDomain::parse("example.org")
                .map(|t| t.id_string())
                .ok()
                .as_deref(),
            Some("spiffe://example.org")
        );
        assert_eq!(
            TrustDomain::parse("spiffe://example.org").ok(),
            TrustDomain::parse("example.org").ok()
        );
        assert!(TrustDomain::parse("").is_err());
        assert!(TrustDomain::parse("exa mple").is_err());
    }
}
