//! Which authenticated peers are allowed: [`Authorizer`].

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use lanyard_core::{SpiffeId, TrustDomain};

/// Decides whether a peer whose chain verified may talk to us, by its
/// SPIFFE ID. Its `Display` (shown in refusals) says what it allows.
#[derive(Clone)]
pub struct Authorizer(Rule);

#[derive(Clone)]
enum Rule {
    TrustDomain(TrustDomain),
    Exact(BTreeSet<SpiffeId>),
    OneOf(Vec<Authorizer>),
    Predicate {
        description: String,
        allow: Arc<dyn Fn(&SpiffeId) -> bool + Send + Sync>,
    },
}

impl Authorizer {
    /// Allows every ID in `trust_domain`.
    pub fn any_in_trust_domain(trust_domain: TrustDomain) -> Self {
        Self(Rule::TrustDomain(trust_domain))
    }

    /// Allows exactly these IDs (none, if the list is empty).
    pub fn exact(ids: impl IntoIterator<Item = SpiffeId>) -> Self {
        Self(Rule::Exact(ids.into_iter().collect()))
    }

    /// Allows an ID that any of `authorizers` allows (none, if empty).
    pub fn one_of(authorizers: impl IntoIterator<Item = Authorizer>) -> Self {
        Self(Rule::OneOf(authorizers.into_iter().collect()))
    }

    /// Allows an ID for which `allow` returns true. `description` says what
    /// it allows, for the operator reading a refusal (e.g. "paths under
    /// /ns/payments/").
    pub fn predicate(
        description: impl Into<String>,
        allow: impl Fn(&SpiffeId) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self(Rule::Predicate {
            description: description.into(),
            allow: Arc::new(allow),
        })
    }

    /// Whether `peer` is allowed.
    ///
    /// # Security
    /// Call only with an ID whose certificate chain has been verified.
    pub fn allows(&self, peer: &SpiffeId) -> bool {
        match &self.0 {
            Rule::TrustDomain(td) => peer.trust_domain() == td,
            Rule::Exact(ids) => ids.contains(peer),
            Rule::OneOf(all) => all.iter().any(|a| a.allows(peer)),
            Rule::Predicate { allow, .. } => allow(peer),
        }
    }
}

impl fmt::Display for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Rule::TrustDomain(td) => write!(f, "any ID in trust domain {td}"),
            Rule::Exact(ids) if ids.is_empty() => f.write_str("no ID"),
            Rule::Exact(ids) => {
                f.write_str("exactly ")?;
                join(f, ids.iter(), ", ")
            }
            Rule::OneOf(all) if all.is_empty() => f.write_str("no ID"),
            Rule::OneOf(all) => {
                f.write_str("one of (")?;
                join(f, all.iter(), "; ")?;
                f.write_str(")")
            }
            Rule::Predicate { description, .. } => write!(f, "IDs matching {description:?}"),
        }
    }
}

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Authorizer({self})")
    }
}

fn join<T: fmt::Display>(
    f: &mut fmt::Formatter<'_>,
    items: impl Iterator<Item = T>,
    sep: &str,
) -> fmt::Result {
    for (i, item) in items.enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn td(s: &str) -> TrustDomain {
        TrustDomain::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn each_rule_allows_and_refuses() {
        let a = id("spiffe://example.org/a");
        let b = id("spiffe://example.org/b");
        let other = id("spiffe://other.org/a");
        let cases: Vec<(Authorizer, &SpiffeId, bool)> = vec![
            (Authorizer::any_in_trust_domain(td("example.org")), &a, true),
            (
                Authorizer::any_in_trust_domain(td("example.org")),
                &other,
                false,
            ),
            (Authorizer::exact([a.clone()]), &a, true),
            (Authorizer::exact([a.clone()]), &b, false),
            (Authorizer::exact([]), &a, false),
            (Authorizer::one_of([]), &a, false),
            (
                Authorizer::one_of([
                    Authorizer::exact([b.clone()]),
                    Authorizer::any_in_trust_domain(td("other.org")),
                ]),
                &other,
                true,
            ),
            (
                Authorizer::one_of([
                    Authorizer::exact([b.clone()]),
                    Authorizer::any_in_trust_domain(td("other.org")),
                ]),
                &a,
                false,
            ),
            (
                Authorizer::predicate("path /a", |p| p.path() == "/a"),
                &other,
                true,
            ),
            (
                Authorizer::predicate("path /a", |p| p.path() == "/a"),
                &b,
                false,
            ),
        ];
        for (authorizer, peer, want) in cases {
            assert_eq!(authorizer.allows(peer), want, "{authorizer} for {peer}");
        }
    }

    #[test]
    fn display_says_what_is_allowed() {
        let both = Authorizer::one_of([
            Authorizer::exact([id("spiffe://example.org/b"), id("spiffe://example.org/a")]),
            Authorizer::any_in_trust_domain(td("other.org")),
            Authorizer::predicate("payments", |_| true),
        ]);
        assert_eq!(
            both.to_string(),
            "one of (exactly spiffe://example.org/a, spiffe://example.org/b; \
             any ID in trust domain other.org; IDs matching \"payments\")"
        );
        assert_eq!(Authorizer::exact([]).to_string(), "no ID");
    }
}
