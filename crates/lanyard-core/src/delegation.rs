//! Delegation chains (RFC 8693 §4.1 `act`), typed.
//!
//! A delegated token's `sub` is the principal; its `act` claim names the
//! current actor, whose own `act` names the actor before it, and so on. The
//! chain is kept here as a list, most recent actor first, and written back
//! as nested objects. Each actor is a SPIFFE ID: Lanyard only lets workloads
//! with an identity act.

use std::fmt;

use crate::{Denial, DenyReason, SpiffeId};

/// Deepest `act` nesting read from a token; deeper is malformed. Policy
/// limits (`tokens.max_delegation_depth`, at most 10) are far below it.
pub const MAX_PARSED_DEPTH: usize = 32;

/// The actors of a delegated token, most recent first. Empty: not delegated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActChain(Vec<SpiffeId>);

impl ActChain {
    /// No delegation.
    pub fn none() -> Self {
        Self(Vec::new())
    }

    /// A chain from actors, most recent first.
    pub fn from_actors(actors: Vec<SpiffeId>) -> Self {
        Self(actors)
    }

    /// Number of actors.
    pub fn depth(&self) -> usize {
        self.0.len()
    }

    /// Whether there is no actor.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The actors, most recent first.
    pub fn actors(&self) -> &[SpiffeId] {
        &self.0
    }

    /// This chain with `actor` acting on top of it.
    ///
    /// # Errors
    /// [`DenyReason::ChainTooDeep`] when the result would have more than
    /// `max_depth` actors.
    pub fn extend(&self, actor: SpiffeId, max_depth: usize) -> Result<Self, Denial> {
        let depth = self.0.len().saturating_add(1);
        if depth > max_depth {
            return Err(Denial::new(
                DenyReason::ChainTooDeep,
                format!("chain depth {depth} exceeds {max_depth}"),
            ));
        }
        let mut actors = Vec::with_capacity(depth);
        actors.push(actor);
        actors.extend(self.0.iter().cloned());
        Ok(Self(actors))
    }

    /// `subject <- actor <- earlier actor`, as audit records it.
    pub fn describe(&self, subject: &str) -> String {
        let mut out = subject.to_owned();
        for a in &self.0 {
            out.push_str(" <- ");
            out.push_str(&a.to_string());
        }
        out
    }
}

impl fmt::Display for ActChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" <- ")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

/// The wire shape: `{"sub": "...", "act": {...}}`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Act {
    sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    act: Option<Box<Act>>,
}

impl serde::Serialize for ActChain {
    /// Serialises the outermost actor; an empty chain is `null` (claims skip it).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut nested: Option<Box<Act>> = None;
        for a in self.0.iter().rev() {
            nested = Some(Box::new(Act {
                sub: a.to_string(),
                act: nested,
            }));
        }
        nested.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for ActChain {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut cur = Option::<Box<Act>>::deserialize(d)?;
        let mut actors = Vec::new();
        while let Some(act) = cur {
            if actors.len() >= MAX_PARSED_DEPTH {
                return Err(serde::de::Error::custom("act chain is too deep"));
            }
            let id = SpiffeId::parse(&act.sub).map_err(|e| {
                serde::de::Error::custom(format!("act.sub is not a SPIFFE ID: {e}"))
            })?;
            actors.push(id);
            cur = act.act;
        }
        Ok(Self(actors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn nests_most_recent_outermost_and_round_trips() {
        let chain = ActChain::none()
            .extend(id("spiffe://td/a"), 3)
            .and_then(|c| c.extend(id("spiffe://td/b"), 3))
            .unwrap_or_default();
        assert_eq!(chain.depth(), 2);
        let json = serde_json::to_value(&chain).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({"sub": "spiffe://td/b", "act": {"sub": "spiffe://td/a"}})
        );
        let back: ActChain = serde_json::from_value(json).unwrap_or_default();
        assert_eq!(back, chain);
        assert_eq!(
            chain.describe("spiffe://td/s"),
            "spiffe://td/s <- spiffe://td/b <- spiffe://td/a"
        );
    }

    #[test]
    fn depth_is_bounded_when_extending_and_parsing() {
        let one = ActChain::none()
            .extend(id("spiffe://td/a"), 1)
            .unwrap_or_default();
        let err = one.extend(id("spiffe://td/b"), 1).err().map(|d| d.reason);
        assert_eq!(err, Some(DenyReason::ChainTooDeep));
        let mut deep = serde_json::json!({"sub": "spiffe://td/x"});
        for _ in 0..MAX_PARSED_DEPTH {
            deep = serde_json::json!({"sub": "spiffe://td/x", "act": deep});
        }
        assert!(serde_json::from_value::<ActChain>(deep).is_err());
        assert!(
            serde_json::from_value::<ActChain>(serde_json::json!({"sub": "not an id"})).is_err()
        );
        assert!(serde_json::from_value::<ActChain>(serde_json::json!({"act": {}})).is_err());
    }
}
