//! Declarative entries (`lanyard entry apply -f FILE`): a file lists the
//! entries a scope should have; [`plan`] compares it with the index and says
//! what to create, update and (with `--prune`) delete. Pure: the server
//! validates each [`EntrySpec`] (which needs the store) and applies the plan.
//!
//! An entry in the file is the same entry as a stored one when it names the
//! same `id`, or, without an `id`, when it has the same issuer, parent and
//! selectors (what makes two entries ambiguous, so at most one stored entry
//! has them). Applying the same file twice therefore changes nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::validate::{EntryDraft, EntryError};
use crate::text::shown;
use crate::{Entry, EntryIndex, TenantId};

/// Most entries one apply may carry.
pub const MAX_APPLY: usize = 200_000;

/// One entry of an apply file: the fields `lanyard entry list --output json`
/// prints (`created_at` is accepted and ignored; `ttl_seconds` and
/// `max_ttl_seconds`, the create flags' names, are accepted as well).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntrySpec {
    /// The stored entry this is (optional: matched by issuer, parent and
    /// selectors otherwise).
    #[serde(default)]
    pub id: Option<String>,
    /// The SPIFFE ID granted.
    pub spiffe_id: String,
    /// Owner tenant (defaults to `--tenant`).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Only evidence from this trusted issuer matches.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The node whose agent serves the identity.
    #[serde(default)]
    pub parent: Option<String>,
    /// DNS SANs.
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// Selectors, all required.
    pub selectors: Vec<String>,
    /// Audiences.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Default token TTL, seconds.
    #[serde(default, alias = "ttl_seconds")]
    pub ttl: Option<u64>,
    /// Longest token TTL, seconds.
    #[serde(default, alias = "max_ttl_seconds")]
    pub max_ttl: Option<u64>,
    /// Scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Actors allowed to act for this identity.
    #[serde(default)]
    pub may_act: Vec<String>,
    /// May call the admin API.
    #[serde(default)]
    pub admin: bool,
    /// May call the TokenReview endpoint.
    #[serde(default)]
    pub token_reviewer: bool,
    /// Broker roles.
    #[serde(default)]
    pub grants: Vec<String>,
    /// `{role}` for audience profiles.
    #[serde(default)]
    pub role: Option<String>,
    /// Federated trust domains whose bundles the workload receives.
    #[serde(default)]
    pub federates_with: Vec<String>,
    /// Ignored (set by the server).
    #[serde(default)]
    pub created_at: Option<i64>,
}

/// Why an apply file is refused: the entry (by position, from 1) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry #{position}{}: {message}", id.as_deref().map(|i| format!(" (id {i})")).unwrap_or_default())]
pub struct ApplyError {
    /// Position in the file, from 1.
    pub position: usize,
    /// Its id, when it has one.
    pub id: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// Whether an entry id is acceptable: 1 to 64 of `[A-Za-z0-9_.-]`.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl EntrySpec {
    /// The draft to validate, with `tenant` filling in a missing tenant
    /// (and refusing another one).
    ///
    /// # Errors
    /// A bad id, a missing tenant, or a tenant outside `scope`.
    pub fn into_draft(
        self,
        scope: Option<&TenantId>,
    ) -> Result<(Option<String>, EntryDraft), EntryError> {
        let bad = |field, message: String| EntryError { field, message };
        if let Some(id) = &self.id {
            if !valid_id(id) {
                return Err(bad(
                    "id",
                    format!(
                        "{} is not an entry id: 1 to 64 letters, digits, '_', '-' or '.'",
                        shown(id, 64)
                    ),
                ));
            }
        }
        let tenant = match (self.tenant, scope) {
            (Some(t), Some(s)) if t != s.as_str() => {
                return Err(bad(
                    "tenant",
                    format!(
                        "{} is outside --tenant {s}; remove the field or apply it with another --tenant",
                        shown(&t, 64)
                    ),
                ))
            }
            (Some(t), _) => t,
            (None, Some(s)) => s.to_string(),
            (None, None) => {
                return Err(bad(
                    "tenant",
                    "missing: give each entry a tenant, or pass --tenant".into(),
                ))
            }
        };
        Ok((
            self.id,
            EntryDraft {
                spiffe_id: self.spiffe_id,
                tenant,
                issuer: self.issuer,
                parent: self.parent,
                dns_names: self.dns_names,
                selectors: self.selectors,
                audiences: self.audiences,
                ttl_seconds: self.ttl,
                max_ttl_seconds: self.max_ttl,
                scopes: self.scopes,
                may_act: self.may_act,
                admin: self.admin,
                token_reviewer: self.token_reviewer,
                grants: self.grants,
                role: self.role,
                federates_with: self.federates_with,
            },
        ))
    }
}

/// A desired entry, validated, with whether the file named its id.
#[derive(Debug, Clone)]
pub struct Desired {
    /// The entry (a fresh id when the file named none).
    pub entry: Entry,
    /// Whether `entry.id` came from the file.
    pub named: bool,
}

/// Which stored entries `--prune` may delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PruneScope {
    /// Nothing is deleted.
    None,
    /// Entries of these tenants that the file does not list.
    Tenants(HashSet<TenantId>),
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A new entry.
    Create(Entry),
    /// A stored entry changes (same id and creation time).
    Update {
        /// As stored.
        before: Arc<Entry>,
        /// As it will be.
        after: Entry,
    },
    /// A stored entry the file no longer lists.
    Delete(Arc<Entry>),
    /// Already as the file says.
    Unchanged(Arc<Entry>),
}

impl Step {
    /// `create`, `update`, `delete` or `unchanged`.
    pub fn action(&self) -> &'static str {
        match self {
            Self::Create(_) => "create",
            Self::Update { .. } => "update",
            Self::Delete(_) => "delete",
            Self::Unchanged(_) => "unchanged",
        }
    }

    /// The entry as it is after the step (as stored for a deletion).
    pub fn entry(&self) -> &Entry {
        match self {
            Self::Create(e) | Self::Update { after: e, .. } => e,
            Self::Delete(e) | Self::Unchanged(e) => e,
        }
    }
}

/// What an apply does, in file order, deletions last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The steps.
    pub steps: Vec<Step>,
}

impl Plan {
    /// How many steps have `action`.
    pub fn count(&self, action: &str) -> usize {
        self.steps.iter().filter(|s| s.action() == action).count()
    }

    /// Whether it changes nothing.
    pub fn is_noop(&self) -> bool {
        self.steps.iter().all(|s| matches!(s, Step::Unchanged(_)))
    }
}

/// The same entry but for its id and creation time.
fn same(a: &Entry, b: &Entry) -> bool {
    let mut b = b.clone();
    b.id.clone_from(&a.id);
    b.created_at = a.created_at;
    *a == b
}

/// Compares `desired` (in file order) with `index`.
///
/// # Security
/// A file scoped to tenants (`--tenant`) never touches an entry of another
/// tenant: naming one by id, or matching one by selectors, is refused.
///
/// # Errors
/// Two file entries that are the same entry, an id naming an entry of
/// another tenant than the file entry's, or a file entry whose selectors
/// collide with a stored entry it does not name.
pub fn plan(
    index: &EntryIndex,
    desired: Vec<Desired>,
    prune: &PruneScope,
) -> Result<Plan, ApplyError> {
    let mut steps = Vec::with_capacity(desired.len());
    let mut claimed: HashSet<String> = HashSet::new();
    let mut keys: HashMap<(Option<String>, Option<String>, Vec<String>), usize> = HashMap::new();
    for (i, d) in desired.into_iter().enumerate() {
        let position = i + 1;
        let fail = |message: String| ApplyError {
            position,
            id: d.named.then(|| d.entry.id.clone()),
            message,
        };
        let key = (
            d.entry.issuer.clone(),
            d.entry.parent.as_ref().map(ToString::to_string),
            d.entry.selectors.iter().map(ToString::to_string).collect(),
        );
        if let Some(first) = keys.insert(key, position) {
            return Err(fail(format!(
                "same issuer, parent and selectors as entry #{first}: two entries would match the same workloads"
            )));
        }
        let by_id = d.named.then(|| index.get(&d.entry.id)).flatten();
        let by_key = index.conflict(&d.entry);
        let existing = match (by_id, by_key) {
            (Some(e), Some(other)) if other.id != e.id => {
                return Err(fail(format!(
                    "stored entry {} already has these issuer, parent and selectors; give this entry its id or change the selectors",
                    other.id
                )))
            }
            (None, Some(other)) if d.named => {
                return Err(fail(format!(
                    "stored entry {} already has these issuer, parent and selectors; give this entry its id or change the selectors",
                    other.id
                )))
            }
            (Some(e), _) | (None, Some(e)) => Some(e.clone()),
            (None, None) => None,
        };
        match existing {
            Some(e) => {
                if e.tenant != d.entry.tenant {
                    return Err(fail(format!(
                        "stored entry {} is in tenant {}; an entry's tenant cannot change (delete it and create a new one)",
                        e.id, e.tenant
                    )));
                }
                if !claimed.insert(e.id.clone()) {
                    return Err(fail(format!("stored entry {} is listed twice", e.id)));
                }
                if same(&e, &d.entry) {
                    steps.push(Step::Unchanged(e));
                } else {
                    let mut after = d.entry;
                    after.id.clone_from(&e.id);
                    after.created_at = e.created_at;
                    steps.push(Step::Update { before: e, after });
                }
            }
            None => {
                if !claimed.insert(d.entry.id.clone()) {
                    return Err(fail(format!("id {} is listed twice", d.entry.id)));
                }
                steps.push(Step::Create(d.entry));
            }
        }
    }
    if let PruneScope::Tenants(tenants) = prune {
        let mut gone: Vec<&Arc<Entry>> = index
            .iter()
            .filter(|e| tenants.contains(&e.tenant) && !claimed.contains(&e.id))
            .collect();
        gone.sort_by(|a, b| a.id.cmp(&b.id));
        steps.extend(gone.into_iter().cloned().map(Step::Delete));
    }
    Ok(Plan { steps })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Selector, SpiffeId};

    fn entry(id: &str, tenant: &str, sel: &str, aud: &str) -> Entry {
        Entry {
            id: id.into(),
            spiffe_id: SpiffeId::parse(&format!("spiffe://example.org/{id}")).unwrap(),
            tenant: TenantId::parse(tenant).unwrap(),
            issuer: Some("k8s".into()),
            parent: None,
            dns_names: vec![],
            selectors: vec![Selector::parse(sel).unwrap()],
            audiences: vec![aud.into()],
            ttl: None,
            max_ttl: None,
            scopes: vec![],
            may_act: vec![],
            admin: false,
            token_reviewer: false,
            grants: vec![],
            role: None,
            federates_with: Vec::new(),
            created_at: 7,
        }
    }

    fn desired(e: Entry, named: bool) -> Desired {
        Desired { entry: e, named }
    }

    fn tenants(t: &[&str]) -> PruneScope {
        PruneScope::Tenants(t.iter().map(|t| TenantId::parse(t).unwrap()).collect())
    }

    #[test]
    fn the_same_file_twice_changes_nothing() {
        let stored = EntryIndex::new(vec![entry("a", "pay", "k8s:sa:a", "x")]);
        // Matched by selectors (fresh id, creation time differs).
        let mut same = entry("a", "pay", "k8s:sa:a", "x");
        same.id = "fresh".into();
        same.created_at = 99;
        let p = plan(&stored, vec![desired(same, false)], &tenants(&["pay"])).unwrap();
        assert!(p.is_noop(), "{p:?}");
        assert_eq!(p.count("unchanged"), 1);
        // Matched by id.
        let p = plan(
            &stored,
            vec![desired(entry("a", "pay", "k8s:sa:a", "x"), true)],
            &PruneScope::None,
        )
        .unwrap();
        assert!(p.is_noop());
    }

    #[test]
    fn changes_creations_and_pruning_are_planned() {
        let stored = EntryIndex::new(vec![
            entry("a", "pay", "k8s:sa:a", "x"),
            entry("b", "pay", "k8s:sa:b", "x"),
            entry("c", "ops", "k8s:sa:c", "x"),
        ]);
        let file = vec![
            desired(entry("n1", "pay", "k8s:sa:a", "changed"), false),
            desired(entry("n2", "pay", "k8s:sa:new", "x"), false),
        ];
        let p = plan(&stored, file.clone(), &tenants(&["pay"])).unwrap();
        let actions: Vec<(&str, &str)> = p
            .steps
            .iter()
            .map(|s| (s.action(), s.entry().id.as_str()))
            .collect();
        assert_eq!(
            actions,
            [("update", "a"), ("create", "n2"), ("delete", "b")]
        );
        // The update keeps the stored id and creation time.
        let Step::Update { after, .. } = &p.steps[0] else {
            panic!()
        };
        assert_eq!((after.id.as_str(), after.created_at), ("a", 7));
        // Another tenant's entry is never pruned; without --prune nothing is.
        assert!(p.steps.iter().all(|s| s.entry().id != "c"));
        let p = plan(&stored, file, &PruneScope::None).unwrap();
        assert_eq!(p.count("delete"), 0);
    }

    #[test]
    fn hostile_files_are_refused_by_position() {
        let stored = EntryIndex::new(vec![
            entry("a", "pay", "k8s:sa:a", "x"),
            entry("c", "ops", "k8s:sa:c", "x"),
        ]);
        // Another tenant's entry by id, or by selectors.
        let e = plan(
            &stored,
            vec![desired(entry("c", "pay", "k8s:sa:zz", "x"), true)],
            &PruneScope::None,
        )
        .unwrap_err();
        assert_eq!(e.position, 1);
        assert!(e.message.contains("tenant ops"), "{e}");
        let e = plan(
            &stored,
            vec![desired(entry("n", "pay", "k8s:sa:c", "x"), false)],
            &PruneScope::None,
        )
        .unwrap_err();
        assert!(e.message.contains("tenant ops"), "{e}");
        // Two file entries that are one entry.
        let e = plan(
            &stored,
            vec![
                desired(entry("n1", "pay", "k8s:sa:q", "x"), false),
                desired(entry("n2", "pay", "k8s:sa:q", "y"), false),
            ],
            &PruneScope::None,
        )
        .unwrap_err();
        assert_eq!(e.position, 2);
        assert!(e.message.contains("#1"), "{e}");
        // A named id whose selectors are another stored entry's.
        let e = plan(
            &stored,
            vec![desired(entry("other", "pay", "k8s:sa:a", "x"), true)],
            &PruneScope::None,
        )
        .unwrap_err();
        assert!(e.message.contains("stored entry a"), "{e}");
        // The same id twice.
        let e = plan(
            &stored,
            vec![
                desired(entry("z", "pay", "k8s:sa:1", "x"), true),
                desired(entry("z", "pay", "k8s:sa:2", "x"), true),
            ],
            &PruneScope::None,
        )
        .unwrap_err();
        assert!(e.message.contains("twice"), "{e}");
    }

    #[test]
    fn specs_take_the_scope_tenant_and_refuse_another() {
        let scope = TenantId::parse("pay").unwrap();
        let spec = EntrySpec {
            spiffe_id: "spiffe://example.org/w".into(),
            selectors: vec!["k8s:sa:a".into()],
            ..EntrySpec::default()
        };
        let (_, d) = spec.clone().into_draft(Some(&scope)).unwrap();
        assert_eq!(d.tenant, "pay");
        assert_eq!(spec.clone().into_draft(None).unwrap_err().field, "tenant");
        let other = EntrySpec {
            tenant: Some("ops".into()),
            ..spec.clone()
        };
        assert_eq!(other.into_draft(Some(&scope)).unwrap_err().field, "tenant");
        for id in ["", "a/b", "x\n", &"a".repeat(65)] {
            let s = EntrySpec {
                id: Some(id.to_owned()),
                ..spec.clone()
            };
            assert_eq!(
                s.into_draft(Some(&scope)).unwrap_err().field,
                "id",
                "{id:?}"
            );
        }
        // What `entry list --output json` prints parses back.
        let listed = serde_json::to_value(entry("a", "pay", "k8s:sa:a", "x")).unwrap();
        let parsed: EntrySpec = serde_json::from_value(listed).unwrap();
        assert_eq!(parsed.id.as_deref(), Some("a"));
        assert_eq!(parsed.issuer.as_deref(), Some("k8s"));
    }
}
