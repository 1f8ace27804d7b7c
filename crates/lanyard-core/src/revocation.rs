//! Revocation: what can be revoked, and the set in force.
//!
//! A revocation names one identifier of a [`RevocationKind`] (a token's
//! `jti`, a SPIFFE ID, a Kubernetes service-account or pod uid, an entry, an
//! external `issuer:subject`), optionally until a time. Evidence carries the
//! identifiers it names ([`crate::Evidence::revocation_keys`]); every
//! issuance path checks them, plus the entry's id and SPIFFE ID, with
//! [`RevocationSet::check_identity`].

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use crate::{Denial, DenyReason, Entry};

/// Longest revoked value.
pub const MAX_VALUE_LEN: usize = 512;

/// What kind of identifier a revocation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RevocationKind {
    /// A token id (`jti`), Lanyard's or an external issuer's.
    Jti,
    /// A SPIFFE ID: every token and SVID for it, and anything it acted in.
    SpiffeId,
    /// A Kubernetes service account, by uid.
    K8sSaUid,
    /// A Kubernetes pod, by uid.
    K8sPodUid,
    /// A registration entry, by id.
    Entry,
    /// An external subject, `issuer-url:sub`.
    Subject,
}

impl RevocationKind {
    /// Every kind, in the order `lanyard revoke --help` lists them.
    pub const ALL: [RevocationKind; 6] = [
        Self::Jti,
        Self::SpiffeId,
        Self::K8sSaUid,
        Self::K8sPodUid,
        Self::Entry,
        Self::Subject,
    ];

    /// The stable name stored in the database and used on the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jti => "jti",
            Self::SpiffeId => "spiffe-id",
            Self::K8sSaUid => "k8s-sa-uid",
            Self::K8sPodUid => "k8s-pod-uid",
            Self::Entry => "entry",
            Self::Subject => "subject",
        }
    }
}

impl fmt::Display for RevocationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name is not a revocation kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("revocation kind {shown:?} is not one of jti, spiffe-id, k8s-sa-uid, k8s-pod-uid, entry, subject")]
pub struct UnknownRevocationKind {
    /// The name, bounded.
    pub shown: String,
}

impl FromStr for RevocationKind {
    type Err = UnknownRevocationKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownRevocationKind {
                shown: s.chars().filter(|c| !c.is_control()).take(32).collect(),
            })
    }
}

/// One revocable identifier: a kind and a value.
///
/// Serialised as the two-element array `["kind", "value"]` (how leases keep
/// the keys of the identity behind them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RevocationKey {
    /// The kind.
    pub kind: RevocationKind,
    /// The value, e.g. a uid or SPIFFE ID.
    pub value: String,
}

impl RevocationKey {
    /// A key.
    pub fn new(kind: RevocationKind, value: impl Into<String>) -> Self {
        Self {
            kind,
            value: value.into(),
        }
    }
}

impl serde::Serialize for RevocationKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.kind.as_str(), &self.value).serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for RevocationKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (kind, value) = <(String, String)>::deserialize(d)?;
        let kind = kind.parse().map_err(serde::de::Error::custom)?;
        Ok(Self { kind, value })
    }
}

/// A revocation in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationRule {
    /// What is revoked.
    pub key: RevocationKey,
    /// Unix seconds it ends at; forever when `None`.
    pub until: Option<i64>,
    /// The operator's reason (audited, never sent to callers).
    pub reason: String,
}

/// The revocations in force, indexed for allocation-free lookups.
#[derive(Debug, Default)]
pub struct RevocationSet {
    by_kind: HashMap<RevocationKind, HashMap<String, (Option<i64>, String)>>,
    len: usize,
}

impl RevocationSet {
    /// Indexes `rules`; for a key given twice the last one wins.
    pub fn new(rules: impl IntoIterator<Item = RevocationRule>) -> Self {
        let mut by_kind: HashMap<RevocationKind, HashMap<String, (Option<i64>, String)>> =
            HashMap::new();
        for r in rules {
            by_kind
                .entry(r.key.kind)
                .or_default()
                .insert(r.key.value, (r.until, r.reason));
        }
        let len = by_kind.values().map(HashMap::len).sum();
        Self { by_kind, len }
    }

    /// The reason `value` of `kind` is revoked at `now`, if it is.
    pub fn check(&self, kind: RevocationKind, value: &str, now: i64) -> Option<&str> {
        match self.by_kind.get(&kind)?.get(value) {
            Some((until, reason)) if until.is_none_or(|u| u > now) => Some(reason.as_str()),
            _ => None,
        }
    }

    /// The first of `keys` revoked at `now`, as a [`DenyReason::Revoked`]
    /// denial naming it.
    ///
    /// # Errors
    /// The denial.
    pub fn check_keys<'a>(
        &self,
        keys: impl IntoIterator<Item = (RevocationKind, &'a str)>,
        now: i64,
    ) -> Result<(), Denial> {
        for (kind, value) in keys {
            if let Some(reason) = self.check(kind, value, now) {
                return Err(Denial::new(
                    DenyReason::Revoked,
                    format!("{kind} {value} is revoked ({reason})"),
                ));
            }
        }
        Ok(())
    }

    /// Checks an identity: its entry (by id), the entry's SPIFFE ID, and
    /// every key the evidence names.
    ///
    /// # Errors
    /// A [`DenyReason::Revoked`] denial naming the first revoked key.
    pub fn check_identity(
        &self,
        entry: &Entry,
        evidence_keys: &[RevocationKey],
        now: i64,
    ) -> Result<(), Denial> {
        if self.len == 0 {
            return Ok(());
        }
        let spiffe_id = entry.spiffe_id.to_string();
        let own = [
            (RevocationKind::Entry, entry.id.as_str()),
            (RevocationKind::SpiffeId, spiffe_id.as_str()),
        ];
        self.check_keys(
            own.into_iter()
                .chain(evidence_keys.iter().map(|k| (k.kind, k.value.as_str()))),
            now,
        )
    }

    /// Number of revocations loaded.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none are loaded.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: RevocationKind, value: &str, until: Option<i64>) -> RevocationRule {
        RevocationRule {
            key: RevocationKey::new(kind, value),
            until,
            reason: "test".into(),
        }
    }

    #[test]
    fn kinds_round_trip_and_unknown_is_refused() {
        for k in RevocationKind::ALL {
            assert_eq!(k.as_str().parse::<RevocationKind>(), Ok(k));
        }
        assert!("pod".parse::<RevocationKind>().is_err());
        assert!("SPIFFE-ID".parse::<RevocationKind>().is_err());
    }

    #[test]
    fn keys_serialise_as_pairs() {
        let key = RevocationKey::new(RevocationKind::K8sPodUid, "u1");
        let json = serde_json::to_string(&key).unwrap_or_default();
        assert_eq!(json, r#"["k8s-pod-uid","u1"]"#);
        let back: Result<RevocationKey, _> = serde_json::from_str(&json);
        assert_eq!(back.ok(), Some(key));
        assert!(serde_json::from_str::<RevocationKey>(r#"["nope","u1"]"#).is_err());
    }

    #[test]
    fn expiry_and_kind_are_respected() {
        let set = RevocationSet::new([
            rule(RevocationKind::Jti, "j1", None),
            rule(RevocationKind::K8sPodUid, "p1", Some(100)),
        ]);
        assert_eq!(set.len(), 2);
        assert!(set.check(RevocationKind::Jti, "j1", 0).is_some());
        assert!(
            set.check(RevocationKind::Entry, "j1", 0).is_none(),
            "kinds never mix"
        );
        assert!(set.check(RevocationKind::K8sPodUid, "p1", 99).is_some());
        assert!(
            set.check(RevocationKind::K8sPodUid, "p1", 100).is_none(),
            "ends at until"
        );
        let d = set
            .check_keys([(RevocationKind::Jti, "x"), (RevocationKind::Jti, "j1")], 0)
            .err();
        assert_eq!(d.map(|d| d.reason), Some(DenyReason::Revoked));
    }
}
