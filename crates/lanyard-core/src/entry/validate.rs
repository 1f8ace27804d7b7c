//! Registration entry validation: an [`EntryDraft`] (what an operator
//! wrote, as strings) becomes an [`Entry`] only if every rule holds.
//!
//! The rules that need the store (does the tenant exist, what does the named
//! issuer bind, which broker roles exist, would the selectors collide) are
//! looked up by the caller and passed in as [`EntryContext`]; everything
//! decided here is pure.

use std::time::Duration;

use crate::audience::{validate_audience, validate_role};
use crate::naming;
use crate::text::{has_control, shown};
use crate::{Entry, Selector, SpiffeId, TenantId, TrustDomain};

/// Most values in one list field (selectors, audiences, …).
pub const MAX_LIST: usize = 64;
/// Longest value in a list field.
pub const MAX_VALUE_LEN: usize = 512;

/// An entry as an operator wrote it (the admin API's body, `lanyard entry
/// apply`'s file).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryDraft {
    /// The SPIFFE ID granted.
    pub spiffe_id: String,
    /// Owner tenant.
    pub tenant: String,
    /// Only evidence from this trusted issuer matches.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The node whose agent serves the identity.
    #[serde(default)]
    pub parent: Option<String>,
    /// DNS SANs for X.509-SVIDs.
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// Selectors, all required.
    pub selectors: Vec<String>,
    /// Audiences tokens may be issued for (any when empty).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Default token TTL, seconds.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// Longest token TTL, seconds.
    #[serde(default)]
    pub max_ttl_seconds: Option<u64>,
    /// Scopes granted.
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
    /// Broker roles (`backend/role`).
    #[serde(default)]
    pub grants: Vec<String>,
    /// `{role}` for audience profiles.
    #[serde(default)]
    pub role: Option<String>,
    /// Federated trust domains whose bundles the workload receives.
    #[serde(default)]
    pub federates_with: Vec<String>,
}

/// A trust domain this server holds a bundle of (by federation or set by
/// hand), as entry validation needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Federated {
    /// Its name.
    pub trust_domain: TrustDomain,
    /// The tenant its JWT-SVIDs are bound to in token exchange; `None`
    /// binds none, and its identities cannot be exchanged.
    pub tenant: Option<TenantId>,
}

/// What the trusted issuer an entry names binds, as the store has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuerBinding<'a> {
    /// No trusted issuer has that name.
    Unknown,
    /// The tenant comes from a claim of each token.
    FromClaim,
    /// Every token of the issuer is in this tenant.
    Fixed(&'a TenantId),
}

/// What validation needs from the server and the store.
#[derive(Debug, Clone, Copy)]
pub struct EntryContext<'a> {
    /// The server's trust domain.
    pub trust_domain: &'a TrustDomain,
    /// `tokens.max_ttl`.
    pub jwt_max_ttl: Duration,
    /// Node whose agent serves `unix:`-only entries made without a parent.
    pub default_parent: Option<&'a SpiffeId>,
    /// Whether the draft's tenant exists.
    pub tenant_exists: bool,
    /// The binding of the issuer the draft names (ignored when it names none).
    pub issuer: IssuerBinding<'a>,
    /// The trust domains this server holds a bundle of.
    pub federated: &'a [Federated],
}

/// Why a draft is not a valid entry: the field and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct EntryError {
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong and how to fix it (caller text bounded and escaped).
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> EntryError {
    EntryError {
        field,
        message: message.into(),
    }
}

impl EntryDraft {
    /// Validates the draft as entry `id`, created at `created_at`.
    ///
    /// # Security
    /// Refuses IDs under `spiffe://TD/lanyard/` (INV-8), IDs of another
    /// trust domain, a parent that is not a node ID, an issuer whose fixed
    /// tenant differs from the entry's (INV-9: one tenant per identity),
    /// control characters anywhere, and entries without selectors (which
    /// would match every workload).
    ///
    /// # Errors
    /// [`EntryError`] naming the first bad field.
    pub fn validate(
        self,
        id: String,
        created_at: i64,
        ctx: &EntryContext<'_>,
    ) -> Result<Entry, EntryError> {
        let td = ctx.trust_domain;
        let spiffe_id = SpiffeId::parse(&self.spiffe_id)
            .map_err(|e| bad("spiffe_id", format!("{}: {e}", shown(&self.spiffe_id, 128))))?;
        if spiffe_id.trust_domain() != td {
            return Err(bad(
                "spiffe_id",
                format!("{spiffe_id} is not in this server's trust domain {td}"),
            ));
        }
        if naming::is_reserved(&spiffe_id) {
            return Err(bad(
                "spiffe_id",
                format!(
                    "{spiffe_id} is reserved: IDs under {}{} belong to the Lanyard server and its nodes; choose another path",
                    td.id_string(),
                    naming::RESERVED_PREFIX
                ),
            ));
        }
        let tenant = TenantId::parse(&self.tenant)
            .map_err(|e| bad("tenant", format!("{}: {e}", shown(&self.tenant, 64))))?;
        if !ctx.tenant_exists {
            return Err(bad(
                "tenant",
                format!("tenant {tenant} does not exist; create it with `lanyard tenant create {tenant}`"),
            ));
        }
        if let Some(issuer) = &self.issuer {
            match ctx.issuer {
                IssuerBinding::Unknown => {
                    return Err(bad(
                        "issuer",
                        format!(
                            "{} is not a trusted issuer; add it with `lanyard issuer add`",
                            shown(issuer, 64)
                        ),
                    ))
                }
                IssuerBinding::Fixed(bound) if *bound != tenant => {
                    return Err(bad(
                        "tenant",
                        format!(
                            "issuer {} binds every token to tenant {bound}; an entry for it must be in {bound}, not {tenant}",
                            shown(issuer, 64)
                        ),
                    ))
                }
                IssuerBinding::Fixed(_) | IssuerBinding::FromClaim => {}
            }
        }
        if self.selectors.is_empty() {
            return Err(bad(
                "selectors",
                "at least one selector is required (an entry without selectors would match every workload)",
            ));
        }
        for (field, list) in [
            ("selectors", &self.selectors),
            ("audiences", &self.audiences),
            ("scopes", &self.scopes),
            ("may_act", &self.may_act),
            ("grants", &self.grants),
            ("dns_names", &self.dns_names),
            ("federates_with", &self.federates_with),
        ] {
            if list.len() > MAX_LIST
                || list
                    .iter()
                    .any(|v| v.is_empty() || v.len() > MAX_VALUE_LEN || has_control(v))
            {
                return Err(bad(
                    field,
                    format!("at most {MAX_LIST} non-empty values of at most {MAX_VALUE_LEN} bytes, without control characters"),
                ));
            }
        }
        let mut selectors = self
            .selectors
            .iter()
            .map(|s| Selector::parse(s).map_err(|e| bad("selectors", e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        selectors.sort();
        selectors.dedup();
        for aud in &self.audiences {
            validate_audience(aud)
                .map_err(|e| bad("audiences", format!("{}: {e}", shown(aud, 64))))?;
        }
        for scope in &self.scopes {
            if scope.contains(' ') || !scope.chars().all(|c| c.is_ascii_graphic()) {
                return Err(bad(
                    "scopes",
                    format!(
                        "{} is not a scope: printable ASCII without spaces (RFC 6749 §3.3)",
                        shown(scope, 64)
                    ),
                ));
            }
        }
        for pattern in &self.may_act {
            let base = pattern.strip_suffix("/*").unwrap_or(pattern);
            if SpiffeId::parse(base).is_err()
                && !(pattern.ends_with("/*") && TrustDomain::parse(base).is_ok())
            {
                return Err(bad(
                    "may_act",
                    format!(
                        "{} is not a SPIFFE ID or a SPIFFE ID prefix ending in /*",
                        shown(pattern, 128)
                    ),
                ));
            }
        }
        let max = ctx.jwt_max_ttl;
        let ttl = self.ttl_seconds.map(Duration::from_secs);
        let max_ttl = self.max_ttl_seconds.map(Duration::from_secs);
        for (field, v) in [("ttl", ttl), ("max_ttl", max_ttl)] {
            if v.is_some_and(|d| d.is_zero() || d > max) {
                return Err(bad(
                    field,
                    format!(
                        "must be above zero and at most the server's tokens.max_ttl ({}s)",
                        max.as_secs()
                    ),
                ));
            }
        }
        if let (Some(t), Some(m)) = (ttl, max_ttl) {
            if t > m {
                return Err(bad("ttl", "must not exceed max_ttl"));
            }
        }
        let parent = match &self.parent {
            Some(p) => {
                let parent = SpiffeId::parse(p)
                    .map_err(|e| bad("parent", format!("{}: {e}", shown(p, 128))))?;
                if naming::node_of(&parent, td).is_none() {
                    return Err(bad(
                        "parent",
                        format!(
                            "{parent} is not a node of this trust domain; a parent is {}{}node/NODE_ID (see `lanyard node list`)",
                            td.id_string(),
                            naming::RESERVED_PREFIX
                        ),
                    ));
                }
                Some(parent)
            }
            // Where the server has a default node (`lanyard dev`), an entry
            // made only of kernel-attested `unix:` selectors belongs to its agent.
            None if self.issuer.is_none() && selectors.iter().all(|s| s.kind() == "unix") => {
                ctx.default_parent.cloned()
            }
            None => None,
        };
        if parent.is_some() && self.issuer.is_some() {
            return Err(bad("parent", "an entry is either served by a node agent (parent) or matched in token exchange (issuer), not both"));
        }
        // Two clusters' identical namespaces and service accounts are
        // different workloads: a token-exchange entry for Kubernetes
        // evidence says which cluster it means (issue 11).
        let k8s = selectors.iter().any(|s| s.kind() == "k8s");
        let names_cluster = selectors
            .iter()
            .any(|s| s.kind() == "k8s" && s.key() == "cluster");
        if parent.is_none() && self.issuer.is_none() && k8s && !names_cluster {
            return Err(bad(
                "selectors",
                "say which cluster this Kubernetes identity is in: --issuer NAME (the cluster's issuer) or --selector k8s:cluster:NAME; the same namespace and service account in another cluster is another workload",
            ));
        }
        if parent.is_none() && selectors.iter().any(|s| s.kind() == "unix") {
            return Err(bad("parent", format!("unix: selectors come from a node agent's kernel attestation: give the entry a parent node (--parent {}{}node/ID)", td.id_string(), naming::RESERVED_PREFIX)));
        }
        for dns in &self.dns_names {
            let ok = dns.len() <= 253
                && dns.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !ok {
                return Err(bad(
                    "dns_names",
                    format!("{} is not a DNS name", shown(dns, 64)),
                ));
            }
        }
        if let Some(role) = &self.role {
            validate_role(role).map_err(|e| bad("role", e.to_string()))?;
        }
        foreign_selectors(
            &selectors,
            parent.is_some(),
            self.issuer.is_some(),
            &tenant,
            ctx,
        )?;
        let federates_with = federates_with(self.federates_with, parent.is_some(), ctx)?;
        let mut scopes = self.scopes;
        scopes.sort();
        scopes.dedup();
        let mut grants = self.grants;
        grants.sort();
        grants.dedup();
        for grant in &grants {
            let valid = grant
                .split_once('/')
                .is_some_and(|(b, r)| valid_name(b) && valid_name(r));
            if !valid {
                return Err(bad(
                    "grants",
                    format!(
                        "{} must be backend/role, each lowercase letters, digits, _ or -, e.g. appdb/readonly",
                        shown(grant, 64)
                    ),
                ));
            }
        }
        Ok(Entry {
            id,
            spiffe_id,
            tenant,
            issuer: self.issuer,
            parent,
            dns_names: self.dns_names,
            selectors,
            audiences: self.audiences,
            ttl,
            max_ttl,
            scopes,
            may_act: self.may_act,
            admin: self.admin,
            token_reviewer: self.token_reviewer,
            grants,
            role: self.role,
            federates_with,
            created_at,
        })
    }
}

/// The federated trust domain named `name`, or why it cannot be used.
fn federated<'a>(
    name: &str,
    field: &'static str,
    ctx: &'a EntryContext<'_>,
) -> Result<&'a Federated, EntryError> {
    let td =
        TrustDomain::parse(name).map_err(|e| bad(field, format!("{}: {e}", shown(name, 128))))?;
    if &td == ctx.trust_domain {
        return Err(bad(
            field,
            format!("{td} is this server's own trust domain, not a federated one"),
        ));
    }
    ctx.federated
        .iter()
        .find(|f| f.trust_domain == td)
        .ok_or_else(|| {
            bad(
                field,
                format!(
                    "this server holds no bundle of trust domain {td}; add it with `lanyard federation add --trust-domain {td} ...` or `lanyard bundle set --trust-domain {td} --file BUNDLE`"
                ),
            )
        })
}

/// `federates_with`: trust domains of bundles this server holds, for
/// entries a node agent serves (the Workload API hands out the bundles).
fn federates_with(
    names: Vec<String>,
    has_parent: bool,
    ctx: &EntryContext<'_>,
) -> Result<Vec<String>, EntryError> {
    if names.is_empty() {
        return Ok(names);
    }
    if !has_parent {
        return Err(bad(
            "federates_with",
            "federated bundles are handed out by node agents over the Workload API: give the entry a parent node (--parent)",
        ));
    }
    let mut out = names
        .iter()
        .map(|n| federated(n, "federates_with", ctx).map(|f| f.trust_domain.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

/// `spiffe:id:<foreign ID>` maps a JWT-SVID of a federated trust domain to
/// this entry in token exchange. It must be the entry's only selector (the
/// foreign token proves nothing else), of a trust domain whose bundle this
/// server holds, and the entry must be in the tenant that trust domain is
/// bound to. Lanyard's own JWT-SVIDs are matched by the SPIFFE ID they name
/// and need no such entry.
fn foreign_selectors(
    selectors: &[Selector],
    has_parent: bool,
    has_issuer: bool,
    tenant: &TenantId,
    ctx: &EntryContext<'_>,
) -> Result<(), EntryError> {
    let Some(s) = selectors.iter().find(|s| s.kind() == "spiffe") else {
        return Ok(());
    };
    let value = s.value();
    if s.key() != "id" {
        return Err(bad(
            "selectors",
            format!(
                "{}: the only spiffe selector is spiffe:id:<SPIFFE ID of a federated trust domain>",
                shown(&s.to_string(), 128)
            ),
        ));
    }
    let id = SpiffeId::parse(value)
        .map_err(|e| bad("selectors", format!("spiffe:id:{}: {e}", shown(value, 128))))?;
    let f = federated(id.trust_domain().as_str(), "selectors", ctx).map_err(|e| {
        if id.trust_domain() == ctx.trust_domain {
            bad("selectors", format!("{id} is in this server's trust domain: its Lanyard JWT-SVIDs are matched by the SPIFFE ID they name, without an entry selector"))
        } else {
            e
        }
    })?;
    if selectors.len() != 1 || has_parent || has_issuer {
        return Err(bad(
            "selectors",
            "an entry for a federated identity has exactly one selector, spiffe:id:<foreign SPIFFE ID>, and no parent or issuer",
        ));
    }
    match &f.tenant {
        Some(bound) if bound == tenant => Ok(()),
        Some(bound) => Err(bad(
            "tenant",
            format!(
                "trust domain {} binds its identities to tenant {bound}; an entry for {id} must be in {bound}, not {tenant}",
                f.trust_domain
            ),
        )),
        None => Err(bad(
            "selectors",
            format!(
                "trust domain {} binds no tenant, so its identities cannot be exchanged; set one with `lanyard federation add --tenant` (or `lanyard bundle set --tenant`)",
                f.trust_domain
            ),
        )),
    }
}

/// A broker backend or role name: 1-63 of `[a-z0-9_-]`, starting with a
/// letter or digit.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
        && s.bytes().next().is_some_and(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        TrustDomain::parse("example.org").unwrap_or_else(|e| panic!("{e}"))
    }

    fn draft(spiffe_id: &str) -> EntryDraft {
        EntryDraft {
            spiffe_id: spiffe_id.into(),
            tenant: "dev".into(),
            selectors: vec!["k8s:ns:pay".into()],
            ..EntryDraft::default()
        }
    }

    fn check(d: EntryDraft, ctx: &EntryContext<'_>) -> Result<Entry, EntryError> {
        d.validate("e1".into(), 0, ctx)
    }

    #[test]
    fn the_rules_table() {
        let t = td();
        let acme = TenantId::parse("acme").unwrap_or_else(|e| panic!("{e}"));
        let ctx = EntryContext {
            trust_domain: &t,
            jwt_max_ttl: Duration::from_secs(3600),
            default_parent: None,
            tenant_exists: true,
            issuer: IssuerBinding::FromClaim,
            federated: &[],
        };
        let ok = |d: EntryDraft| check(d, &ctx);
        let with = |f: &dyn Fn(&mut EntryDraft)| {
            let mut d = draft("spiffe://example.org/ns/pay/sa/api");
            d.issuer = Some("k8s".into());
            f(&mut d);
            d
        };
        let pinned = |d: EntryDraft| EntryDraft {
            issuer: Some("k8s".into()),
            ..d
        };
        assert!(ok(pinned(draft("spiffe://example.org/ns/pay/sa/api"))).is_ok());
        let mut by_cluster = draft("spiffe://example.org/c");
        by_cluster.selectors.push("k8s:cluster:west".into());
        assert!(ok(by_cluster).is_ok());
        // (draft, context change, field, words the message must contain)
        let cases: Vec<(EntryDraft, EntryContext<'_>, &str, &str)> = vec![
            // issue 9: a workload could become a node or pose as the server.
            (
                draft("spiffe://example.org/lanyard/node/dev"),
                ctx,
                "spiffe_id",
                "reserved",
            ),
            (
                draft("spiffe://example.org/lanyard/server"),
                ctx,
                "spiffe_id",
                "reserved",
            ),
            (
                draft("spiffe://example.org/lanyard"),
                ctx,
                "spiffe_id",
                "reserved",
            ),
            (
                draft("spiffe://other.org/a"),
                ctx,
                "spiffe_id",
                "trust domain",
            ),
            (
                draft("spiffe://example.org/a/../b"),
                ctx,
                "spiffe_id",
                "'..'",
            ),
            (
                draft("spiffe://example.org/a"),
                EntryContext {
                    tenant_exists: false,
                    ..ctx
                },
                "tenant",
                "lanyard tenant create",
            ),
            (
                with(&|d| d.issuer = Some("prod".into())),
                EntryContext {
                    issuer: IssuerBinding::Unknown,
                    ..ctx
                },
                "issuer",
                "not a trusted issuer",
            ),
            // issue 9: the issuer's bound tenant must be the entry's, at creation.
            (
                with(&|d| d.issuer = Some("prod".into())),
                EntryContext {
                    issuer: IssuerBinding::Fixed(&acme),
                    ..ctx
                },
                "tenant",
                "binds every token to tenant acme",
            ),
            (
                with(&|d| d.selectors.clear()),
                ctx,
                "selectors",
                "at least one",
            ),
            (
                with(&|d| d.selectors = vec!["k8s:ns:a\u{1b}[2J".into()]),
                ctx,
                "selectors",
                "control",
            ),
            (
                with(&|d| d.audiences = vec!["api://x\ny".into()]),
                ctx,
                "audiences",
                "control",
            ),
            (
                with(&|d| d.audiences = vec!["a b".into()]),
                ctx,
                "audiences",
                "a b",
            ),
            (
                with(&|d| d.scopes = vec!["read write".into()]),
                ctx,
                "scopes",
                "without spaces",
            ),
            (
                with(&|d| d.may_act = vec!["agents".into()]),
                ctx,
                "may_act",
                "SPIFFE ID",
            ),
            (
                with(&|d| d.ttl_seconds = Some(7200)),
                ctx,
                "ttl",
                "tokens.max_ttl",
            ),
            (with(&|d| d.ttl_seconds = Some(0)), ctx, "ttl", "above zero"),
            (
                with(&|d| {
                    d.ttl_seconds = Some(600);
                    d.max_ttl_seconds = Some(60)
                }),
                ctx,
                "ttl",
                "max_ttl",
            ),
            // issue 9: a parent must be a node ID.
            (
                with(&|d| d.parent = Some("spiffe://example.org/ns/x".into())),
                ctx,
                "parent",
                "not a node",
            ),
            (
                with(&|d| d.parent = Some("spiffe://other.org/lanyard/node/a".into())),
                ctx,
                "parent",
                "not a node",
            ),
            (
                with(&|d| {
                    d.parent = Some("spiffe://example.org/lanyard/node/a".into());
                    d.issuer = Some("k".into())
                }),
                ctx,
                "parent",
                "not both",
            ),
            (
                with(&|d| d.selectors = vec!["unix:uid:0".into()]),
                ctx,
                "parent",
                "give the entry a parent",
            ),
            (
                with(&|d| d.dns_names = vec!["a..b".into()]),
                ctx,
                "dns_names",
                "not a DNS name",
            ),
            (with(&|d| d.role = Some("a/b".into())), ctx, "role", ""),
            (
                with(&|d| d.grants = vec!["appdb".into()]),
                ctx,
                "grants",
                "backend/role",
            ),
            (
                with(&|d| d.selectors = vec!["k8s:ns:a".into(); 65]),
                ctx,
                "selectors",
                "at most 64",
            ),
        ];
        for (d, c, field, words) in cases {
            let shown = format!("{d:?}");
            let err = check(d, &c).err();
            assert_eq!(
                err.as_ref().map(|e| e.field),
                Some(field),
                "{shown}: {err:?}"
            );
            let msg = err.map(|e| e.message).unwrap_or_default();
            assert!(msg.contains(words), "{shown}: {msg}");
            assert!(
                !has_control(&msg),
                "{shown}: message echoes control characters"
            );
        }
    }

    #[test]
    fn defaults_normalise_and_the_dev_parent_applies() {
        let t = td();
        let node = naming::node_id(&t, "dev").unwrap_or_else(|e| panic!("{e}"));
        let ctx = EntryContext {
            trust_domain: &t,
            jwt_max_ttl: Duration::from_secs(3600),
            default_parent: Some(&node),
            tenant_exists: true,
            issuer: IssuerBinding::FromClaim,
            federated: &[],
        };
        let mut d = draft("spiffe://example.org/me");
        d.selectors = vec!["unix:uid:1000".into(), "unix:uid:1000".into()];
        d.scopes = vec!["b".into(), "a".into(), "b".into()];
        let e = check(d, &ctx).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.parent.as_ref(), Some(&node));
        assert_eq!(e.selectors.len(), 1);
        assert_eq!(e.scopes, vec!["a".to_owned(), "b".to_owned()]);
        // A token-exchange entry never gets the default parent.
        let mut d = draft("spiffe://example.org/me");
        d.issuer = Some("k8s".into());
        d.selectors = vec!["k8s:ns:x".into()];
        assert_eq!(check(d, &ctx).ok().and_then(|e| e.parent), None);
    }

    #[test]
    fn federated_identities_need_a_bundle_one_selector_and_the_bound_tenant() {
        let t = td();
        let pay = TenantId::parse("dev").unwrap_or_else(|e| panic!("{e}"));
        let fed = [
            Federated {
                trust_domain: TrustDomain::parse("other.org").unwrap_or_else(|e| panic!("{e}")),
                tenant: Some(pay),
            },
            Federated {
                trust_domain: TrustDomain::parse("unbound.org").unwrap_or_else(|e| panic!("{e}")),
                tenant: None,
            },
        ];
        let ctx = EntryContext {
            trust_domain: &t,
            jwt_max_ttl: Duration::from_secs(3600),
            default_parent: None,
            tenant_exists: true,
            issuer: IssuerBinding::Unknown,
            federated: &fed,
        };
        let foreign = |sel: &str| EntryDraft {
            spiffe_id: "spiffe://example.org/partner/billing".into(),
            tenant: "dev".into(),
            selectors: vec![sel.into()],
            ..EntryDraft::default()
        };
        let e = check(foreign("spiffe:id:spiffe://other.org/billing"), &ctx)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.selectors.len(), 1);
        let node = "spiffe://example.org/lanyard/node/n1";
        let served = |fw: Vec<&str>| EntryDraft {
            spiffe_id: "spiffe://example.org/web".into(),
            tenant: "dev".into(),
            selectors: vec!["unix:uid:1000".into()],
            parent: Some(node.into()),
            federates_with: fw.into_iter().map(String::from).collect(),
            ..EntryDraft::default()
        };
        let e = check(served(vec!["other.org", "unbound.org", "other.org"]), &ctx)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.federates_with, vec!["other.org", "unbound.org"]);
        let cases: Vec<(EntryDraft, &str, &str)> = vec![
            (
                foreign("spiffe:id:spiffe://nowhere.org/x"),
                "selectors",
                "no bundle of trust domain nowhere.org",
            ),
            (
                foreign("spiffe:id:spiffe://example.org/x"),
                "selectors",
                "in this server's trust domain",
            ),
            (
                foreign("spiffe:id:spiffe://unbound.org/x"),
                "selectors",
                "binds no tenant",
            ),
            (
                foreign("spiffe:sub:spiffe://other.org/x"),
                "selectors",
                "spiffe:id:",
            ),
            (foreign("spiffe:id:not-an-id"), "selectors", "spiffe:id:"),
            (
                EntryDraft {
                    tenant: "acme".into(),
                    ..foreign("spiffe:id:spiffe://other.org/billing")
                },
                "tenant",
                "binds its identities to tenant dev",
            ),
            (
                EntryDraft {
                    selectors: vec![
                        "spiffe:id:spiffe://other.org/billing".into(),
                        "jwt:sub:x".into(),
                    ],
                    ..foreign("x")
                },
                "selectors",
                "exactly one selector",
            ),
            (
                EntryDraft {
                    issuer: Some("k8s".into()),
                    ..foreign("spiffe:id:spiffe://other.org/billing")
                },
                "issuer",
                "not a trusted issuer",
            ),
            (
                served(vec!["nowhere.org"]),
                "federates_with",
                "no bundle of trust domain nowhere.org",
            ),
            (
                served(vec!["example.org"]),
                "federates_with",
                "own trust domain",
            ),
            (served(vec!["not a td"]), "federates_with", "not a td"),
            (
                EntryDraft {
                    parent: None,
                    selectors: vec!["jwt:sub:x".into()],
                    ..served(vec!["other.org"])
                },
                "federates_with",
                "parent",
            ),
        ];
        for (d, field, words) in cases {
            let shown = format!("{d:?}");
            match check(d, &ctx) {
                Ok(_) => panic!("accepted {shown}"),
                Err(e) => {
                    assert_eq!(e.field, field, "{shown}: {e}");
                    assert!(e.message.contains(words), "{shown}: {e}");
                }
            }
        }
    }
}
