//! The SPIFFE IDs Lanyard keeps for itself (INV-8).
//!
//! Everything under `spiffe://TD/lanyard/` belongs to the server and its
//! nodes: `spiffe://TD/lanyard/server` is the server on the node API and the
//! bundle endpoint, `spiffe://TD/lanyard/node/ID` is the agent of node `ID`.
//! No registration entry may name such an ID (SPIRE reserves `/spire/` for
//! the same reason, spiffe/spire#422): a workload holding one could pose as
//! a node on the node API, or as the server to joining agents. The CA signs
//! them only on the server's own attestation paths.

use crate::{SpiffeId, TrustDomain};

/// The reserved path prefix; an ID is reserved when its path is
/// `/lanyard` or starts with `/lanyard/`.
pub const RESERVED_PREFIX: &str = "/lanyard/";

/// The longest node id.
pub const MAX_NODE_ID_LEN: usize = 128;

/// Why a node id cannot name a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeIdError {
    /// Empty, too long, or a character outside `[A-Za-z0-9._-]`, or `.`/`..`.
    #[error(
        "node id {shown:?} must be 1-128 characters of letters, digits, '-', '_' and '.' (not '.' or '..')"
    )]
    Invalid {
        /// The id, bounded and without control characters.
        shown: String,
    },
}

/// What a reserved ID names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserved<'a> {
    /// `spiffe://TD/lanyard/server`.
    Server,
    /// `spiffe://TD/lanyard/node/ID`.
    Node(&'a str),
    /// Anything else under `/lanyard/`: reserved, names nothing (yet).
    Other,
}

/// Whether `id` is under the reserved prefix of its trust domain.
pub fn is_reserved(id: &SpiffeId) -> bool {
    let path = id.path();
    path == "/lanyard" || path.starts_with(RESERVED_PREFIX)
}

/// What a reserved ID of trust domain `td` names; `None` when `id` is not
/// reserved or belongs to another trust domain.
pub fn classify<'a>(id: &'a SpiffeId, td: &TrustDomain) -> Option<Reserved<'a>> {
    if id.trust_domain() != td || !is_reserved(id) {
        return None;
    }
    let path = id.path();
    if path == "/lanyard/server" {
        return Some(Reserved::Server);
    }
    match path.strip_prefix("/lanyard/node/") {
        Some(node) if validate_node_id(node).is_ok() => Some(Reserved::Node(node)),
        _ => Some(Reserved::Other),
    }
}

/// The server's SPIFFE ID, `spiffe://TD/lanyard/server`.
pub fn server_id(td: &TrustDomain) -> SpiffeId {
    SpiffeId::from_valid_parts(td, "/lanyard/server".to_owned())
}

/// The SPIFFE ID of node `node`: `spiffe://TD/lanyard/node/NODE`.
///
/// # Errors
/// [`NodeIdError`] naming the bad node id.
pub fn node_id(td: &TrustDomain, node: &str) -> Result<SpiffeId, NodeIdError> {
    validate_node_id(node)?;
    Ok(SpiffeId::from_valid_parts(
        td,
        format!("/lanyard/node/{node}"),
    ))
}

/// The node id in a node SPIFFE ID of `td`, if `id` is one.
pub fn node_of<'a>(id: &'a SpiffeId, td: &TrustDomain) -> Option<&'a str> {
    match classify(id, td) {
        Some(Reserved::Node(n)) => Some(n),
        _ => None,
    }
}

/// Checks a node id: 1-128 characters of `[A-Za-z0-9._-]`, not `.` or `..`
/// (which are not SPIFFE path segments).
///
/// # Errors
/// [`NodeIdError::Invalid`].
pub fn validate_node_id(node: &str) -> Result<(), NodeIdError> {
    let ok = !node.is_empty()
        && node.len() <= MAX_NODE_ID_LEN
        && node != "."
        && node != ".."
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(NodeIdError::Invalid {
            shown: node.chars().filter(|c| !c.is_control()).take(64).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td(s: &str) -> TrustDomain {
        TrustDomain::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn names_round_trip_through_the_parser() {
        let t = td("example.org");
        let server = server_id(&t);
        assert_eq!(server.to_string(), "spiffe://example.org/lanyard/server");
        assert_eq!(
            SpiffeId::parse(&server.to_string()).ok(),
            Some(server.clone())
        );
        let node = node_id(&t, "vm-1.eu_west").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            node.to_string(),
            "spiffe://example.org/lanyard/node/vm-1.eu_west"
        );
        assert_eq!(SpiffeId::parse(&node.to_string()).ok(), Some(node.clone()));
        assert_eq!(node_of(&node, &t), Some("vm-1.eu_west"));
        assert_eq!(classify(&server, &t), Some(Reserved::Server));
    }

    #[test]
    fn bad_node_ids_are_refused() {
        let t = td("example.org");
        let long = "a".repeat(129);
        for bad in ["", ".", "..", "a/b", "a b", "é", "a\n", long.as_str()] {
            assert!(node_id(&t, bad).is_err(), "{bad:?}");
        }
        let shown = node_id(&t, "x\u{1b}[31m").err().map(|e| e.to_string());
        assert!(
            shown.as_deref().is_some_and(|s| !s.contains('\u{1b}')),
            "{shown:?}"
        );
    }

    #[test]
    fn reserved_covers_the_whole_prefix_and_nothing_else() {
        let t = td("example.org");
        for reserved in [
            "spiffe://example.org/lanyard",
            "spiffe://example.org/lanyard/server",
            "spiffe://example.org/lanyard/node/dev",
            "spiffe://example.org/lanyard/anything/else",
            "spiffe://other.org/lanyard/node/dev",
        ] {
            assert!(is_reserved(&id(reserved)), "{reserved}");
        }
        for free in [
            "spiffe://example.org/lanyardx",
            "spiffe://example.org/lanyard-server",
            "spiffe://example.org/ns/lanyard/node/dev",
            "spiffe://example.org/Lanyard/server",
        ] {
            assert!(!is_reserved(&id(free)), "{free}");
        }
        // Another trust domain's node is not one of ours.
        assert_eq!(
            node_of(&id("spiffe://other.org/lanyard/node/dev"), &t),
            None
        );
        assert_eq!(
            classify(&id("spiffe://example.org/lanyard/node/a/b"), &t),
            Some(Reserved::Other)
        );
    }
}
