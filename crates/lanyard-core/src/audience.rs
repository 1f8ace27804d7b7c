//! Audience profiles: how tokens for one audience (a cloud, OpenBao) look.
//!
//! By default a token's `sub` is the workload's SPIFFE ID and it is signed
//! with the server's first algorithm. An [`AudienceProfile`] changes that for
//! one audience, for every tenant (algorithm only), for one tenant, or for
//! one entry:
//!
//! - `algorithm`: e.g. `RS256` for Azure Entra, which accepts nothing else.
//! - `subject_template`: e.g. `tenant/{tenant}/role/{role}`, so that one
//!   federated credential on the cloud side (which matches `iss` + `sub` +
//!   `aud` exactly) covers every workload of a role. Entra allows only 20
//!   federated credentials per identity; one per pod does not scale.
//!
//! # Tenant separation
//! A templated subject can never be shared by two tenants:
//! - a template must contain `{tenant}` exactly once, as a whole segment
//!   (after a literal prefix that is empty or ends in `/` or `:`, and
//!   followed by `/`, `:` or the end), with only literal text before it;
//! - a template may only be set on a tenant- or entry-scoped profile (never
//!   on one for every tenant), so the mapping is always explicit;
//! - every templated profile of one audience must use the same literal
//!   prefix (the store refuses another), so the tenant sits at the same
//!   place in every subject of that audience; tenant names cannot contain
//!   `/` or `:`, so different tenants give different subjects;
//! - no templated subject starts with `spiffe:`, so none equals a default
//!   (SPIFFE ID) subject;
//! - [`SubjectTemplate::render`] checks the rendered subject again and
//!   refuses one whose tenant is not where the template says.
//!
//! Variables come from a fixed set ([`Variable`]); an entry supplies `role`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::{SpiffeId, TenantId};

/// Longest template accepted.
pub const MAX_TEMPLATE_LEN: usize = 256;
/// Longest rendered subject: Azure Entra's limit for a federated
/// credential's subject (GCP's `google.subject` is shorter: 127 bytes).
pub const MAX_SUBJECT_LEN: usize = 600;
/// Longest audience accepted.
pub const MAX_AUDIENCE_LEN: usize = 512;
/// Longest entry role.
pub const MAX_ROLE_LEN: usize = 64;

/// A template variable. The set is fixed: nothing else can reach a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variable {
    /// `{tenant}`: the entry's tenant (required, exactly once).
    Tenant,
    /// `{role}`: the entry's `role` (an entry without one is refused).
    Role,
    /// `{trust_domain}`: the SPIFFE trust domain.
    TrustDomain,
    /// `{spiffe_path}`: the SPIFFE ID's path without its leading `/`.
    SpiffePath,
    /// `{entry}`: the entry id.
    Entry,
}

impl Variable {
    /// Every variable, for error messages and docs.
    pub const ALL: [Variable; 5] = [
        Variable::Tenant,
        Variable::Role,
        Variable::TrustDomain,
        Variable::SpiffePath,
        Variable::Entry,
    ];

    /// The name between braces.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::Role => "role",
            Self::TrustDomain => "trust_domain",
            Self::SpiffePath => "spiffe_path",
            Self::Entry => "entry",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == name)
    }
}

/// Why a template, a role, an audience or a rendered subject was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// The template is empty or too long.
    #[error("subject template must be 1 to {MAX_TEMPLATE_LEN} bytes")]
    TemplateLength,
    /// A character outside printable ASCII (or a space).
    #[error("subject template contains {found:?}; use printable ASCII without spaces")]
    TemplateCharacter {
        /// The first offending character.
        found: char,
    },
    /// `{` without `}` or a stray `}`.
    #[error("subject template has an unbalanced brace; variables look like {{tenant}}")]
    UnbalancedBrace,
    /// A variable outside the fixed set.
    #[error("subject template variable {{{name}}} is unknown; use one of {known}")]
    UnknownVariable {
        /// The name found (bounded).
        name: String,
        /// The allowed names.
        known: String,
    },
    /// `{tenant}` is missing or repeated.
    #[error("subject template must contain {{tenant}} exactly once (found {count}), so two tenants can never share a subject")]
    TenantCount {
        /// How many times it appears.
        count: usize,
    },
    /// `{tenant}` is not a whole segment after a literal prefix.
    #[error("{{tenant}} must be a whole segment after literal text only: start the template with it or put it after '/' or ':', and follow it with '/', ':' or nothing (e.g. tenant/{{tenant}}/role/{{role}})")]
    TenantNotSegment,
    /// The template would produce a SPIFFE-ID-looking subject.
    #[error(
        "a templated subject must not start with \"spiffe:\"; SPIFFE IDs are the default subjects"
    )]
    SpiffeLookalike,
    /// A role name breaks the rules.
    #[error(
        "role {role:?} must be 1 to {MAX_ROLE_LEN} characters of letters, digits, '.', '_' or '-'"
    )]
    Role {
        /// The offending role (bounded).
        role: String,
    },
    /// An audience breaks the rules.
    #[error("audience must be 1 to {MAX_AUDIENCE_LEN} bytes of printable ASCII without spaces")]
    Audience,
    /// Rendering needs `{role}` and the entry has none.
    #[error("the subject template uses {{role}} but entry {entry} has no role; set one with `lanyard entry update {entry} --role NAME`")]
    MissingRole {
        /// The entry id.
        entry: String,
    },
    /// The rendered subject is too long.
    #[error("the rendered subject is {len} bytes; the limit is {MAX_SUBJECT_LEN}")]
    SubjectTooLong {
        /// Its length.
        len: usize,
    },
    /// The rendered subject does not carry the tenant where it must.
    #[error(
        "the rendered subject does not carry tenant {tenant} after prefix {prefix:?}; refusing it"
    )]
    TenantNotInSubject {
        /// The tenant.
        tenant: String,
        /// The template's prefix.
        prefix: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(Variable),
}

/// A validated subject template. See the module docs for the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectTemplate {
    raw: String,
    parts: Vec<Part>,
    prefix: String,
}

/// What a template can draw on, all from the entry and the server.
#[derive(Debug, Clone, Copy)]
pub struct SubjectVars<'a> {
    /// The entry's tenant.
    pub tenant: &'a TenantId,
    /// The entry's role, if any.
    pub role: Option<&'a str>,
    /// The entry's SPIFFE ID.
    pub spiffe_id: &'a SpiffeId,
    /// The entry id.
    pub entry: &'a str,
}

impl SubjectTemplate {
    /// Parses and validates a template.
    ///
    /// # Errors
    /// A [`ProfileError`] naming the first rule broken.
    pub fn parse(raw: &str) -> Result<Self, ProfileError> {
        if raw.is_empty() || raw.len() > MAX_TEMPLATE_LEN {
            return Err(ProfileError::TemplateLength);
        }
        if let Some(c) = raw.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(ProfileError::TemplateCharacter { found: c });
        }
        let mut parts = Vec::new();
        let mut rest = raw;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    parts.push(Part::Literal(rest.to_owned()));
                    rest = "";
                }
                Some(i) => {
                    let (lit, tail) = rest.split_at(i);
                    if !lit.is_empty() {
                        parts.push(Part::Literal(lit.to_owned()));
                    }
                    let inner = tail
                        .strip_prefix('{')
                        .ok_or(ProfileError::UnbalancedBrace)?;
                    let end = inner.find('}').ok_or(ProfileError::UnbalancedBrace)?;
                    let (name, after) = inner.split_at(end);
                    if name.contains('{') {
                        return Err(ProfileError::UnbalancedBrace);
                    }
                    let var =
                        Variable::parse(name).ok_or_else(|| ProfileError::UnknownVariable {
                            name: name.chars().take(32).collect(),
                            known: Variable::ALL
                                .iter()
                                .map(|v| format!("{{{}}}", v.as_str()))
                                .collect::<Vec<_>>()
                                .join(", "),
                        })?;
                    parts.push(Part::Var(var));
                    rest = after.strip_prefix('}').unwrap_or(after);
                }
            }
        }
        let count = parts
            .iter()
            .filter(|p| **p == Part::Var(Variable::Tenant))
            .count();
        if count != 1 {
            return Err(ProfileError::TenantCount { count });
        }
        let at = parts
            .iter()
            .position(|p| *p == Part::Var(Variable::Tenant))
            .ok_or(ProfileError::TenantCount { count: 0 })?;
        let (before, after) = parts.split_at(at);
        let prefix = match before {
            [] => String::new(),
            [Part::Literal(l)] => l.clone(),
            _ => return Err(ProfileError::TenantNotSegment),
        };
        if !(prefix.is_empty() || prefix.ends_with(['/', ':'])) {
            return Err(ProfileError::TenantNotSegment);
        }
        match after.get(1) {
            None => {}
            Some(Part::Literal(l)) if l.starts_with(['/', ':']) => {}
            Some(_) => return Err(ProfileError::TenantNotSegment),
        }
        if starts_with_spiffe(&prefix) {
            return Err(ProfileError::SpiffeLookalike);
        }
        Ok(Self {
            raw: raw.to_owned(),
            parts,
            prefix,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The literal text before `{tenant}`. Every templated profile of one
    /// audience must share it.
    pub fn tenant_prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether the template uses `var`.
    pub fn uses(&self, var: Variable) -> bool {
        self.parts.contains(&Part::Var(var))
    }

    /// Renders the subject for one identity, and checks the result again.
    ///
    /// # Errors
    /// [`ProfileError::MissingRole`], [`ProfileError::SubjectTooLong`],
    /// [`ProfileError::TenantNotInSubject`], [`ProfileError::SpiffeLookalike`].
    ///
    /// # Security
    /// The last check is what keeps tenants apart even if a value ever held
    /// a delimiter: the subject must be `prefix + tenant` followed by `/`,
    /// `:` or nothing.
    pub fn render(&self, vars: &SubjectVars<'_>) -> Result<String, ProfileError> {
        let mut out = String::with_capacity(self.raw.len() + 64);
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Var(Variable::Tenant) => out.push_str(vars.tenant.as_str()),
                Part::Var(Variable::Role) => {
                    let role = vars.role.ok_or_else(|| ProfileError::MissingRole {
                        entry: vars.entry.to_owned(),
                    })?;
                    validate_role(role)?;
                    out.push_str(role);
                }
                Part::Var(Variable::TrustDomain) => {
                    out.push_str(vars.spiffe_id.trust_domain().as_str())
                }
                Part::Var(Variable::SpiffePath) => {
                    out.push_str(vars.spiffe_id.path().trim_start_matches('/'))
                }
                Part::Var(Variable::Entry) => out.push_str(vars.entry),
            }
        }
        if out.len() > MAX_SUBJECT_LEN {
            return Err(ProfileError::SubjectTooLong { len: out.len() });
        }
        if starts_with_spiffe(&out) {
            return Err(ProfileError::SpiffeLookalike);
        }
        let tenant_ok = out
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix(vars.tenant.as_str()))
            .is_some_and(|r| r.is_empty() || r.starts_with(['/', ':']));
        if !tenant_ok {
            return Err(ProfileError::TenantNotInSubject {
                tenant: vars.tenant.to_string(),
                prefix: self.prefix.clone(),
            });
        }
        Ok(out)
    }
}

impl fmt::Display for SubjectTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl serde::Serialize for SubjectTemplate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

fn starts_with_spiffe(s: &str) -> bool {
    s.get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("spiffe:"))
}

/// Checks an entry role: 1 to 64 of `[A-Za-z0-9._-]`.
///
/// # Errors
/// [`ProfileError::Role`].
pub fn validate_role(role: &str) -> Result<(), ProfileError> {
    let ok = !role.is_empty()
        && role.len() <= MAX_ROLE_LEN
        && role
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ProfileError::Role {
            role: role.chars().take(MAX_ROLE_LEN + 1).collect(),
        })
    }
}

/// Checks an audience value: 1 to 512 bytes of printable ASCII.
///
/// # Errors
/// [`ProfileError::Audience`].
pub fn validate_audience(aud: &str) -> Result<(), ProfileError> {
    if aud.is_empty() || aud.len() > MAX_AUDIENCE_LEN || !aud.chars().all(|c| c.is_ascii_graphic())
    {
        return Err(ProfileError::Audience);
    }
    Ok(())
}

/// How tokens for one audience are issued, for every tenant, one tenant or
/// one entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AudienceProfile {
    /// Stable id (hex).
    pub id: String,
    /// The audience, matched exactly.
    pub audience: String,
    /// Only this tenant's entries; every tenant when `None` (then no template).
    pub tenant: Option<TenantId>,
    /// Only this entry (of `tenant`); every entry of the tenant when `None`.
    pub entry: Option<String>,
    /// JOSE algorithm name to sign with; the server's default when `None`.
    pub algorithm: Option<String>,
    /// Template for `sub`; the SPIFFE ID when `None`.
    pub subject_template: Option<SubjectTemplate>,
    /// Unix seconds.
    pub created_at: i64,
}

impl AudienceProfile {
    /// Checks the scope rules that do not need the store: a template needs a
    /// tenant, an entry scope needs its tenant, and the audience is sane.
    ///
    /// # Errors
    /// A message naming the field and the fix.
    pub fn check(&self) -> Result<(), String> {
        validate_audience(&self.audience).map_err(|e| format!("audience: {e}"))?;
        if self.entry.is_some() && self.tenant.is_none() {
            return Err("an entry-scoped profile names its entry's tenant".into());
        }
        if self.subject_template.is_some() && self.tenant.is_none() {
            return Err("a subject template maps one tenant's (or one entry's) identities; give --tenant or --entry (a profile for every tenant may only set the algorithm)".into());
        }
        if self.algorithm.is_none() && self.subject_template.is_none() {
            return Err(
                "a profile changes the algorithm, the subject template or both; give at least one"
                    .into(),
            );
        }
        Ok(())
    }

    /// `entry <id>`, `tenant <t>` or `every tenant`, for messages.
    pub fn scope(&self) -> String {
        match (&self.tenant, &self.entry) {
            (Some(t), Some(e)) => format!("entry {e} (tenant {t})"),
            (Some(t), None) => format!("tenant {t}"),
            _ => "every tenant".into(),
        }
    }
}

/// Profiles by audience, with the most specific one chosen per identity.
#[derive(Debug, Default)]
pub struct ProfileSet {
    by_audience: HashMap<String, Vec<Arc<AudienceProfile>>>,
}

impl ProfileSet {
    /// Indexes `profiles`.
    pub fn new(profiles: Vec<AudienceProfile>) -> Self {
        let mut by_audience: HashMap<String, Vec<Arc<AudienceProfile>>> = HashMap::new();
        for p in profiles {
            by_audience
                .entry(p.audience.clone())
                .or_default()
                .push(Arc::new(p));
        }
        Self { by_audience }
    }

    /// The profile for `audience` and this identity: the entry's own, else
    /// its tenant's, else the one for every tenant. Profiles never merge.
    pub fn find(
        &self,
        audience: &str,
        tenant: &TenantId,
        entry: &str,
    ) -> Option<&Arc<AudienceProfile>> {
        let list = self.by_audience.get(audience)?;
        let rank = |p: &AudienceProfile| match (&p.tenant, &p.entry) {
            (Some(t), Some(e)) if t == tenant && e == entry => Some(3),
            (Some(t), None) if t == tenant => Some(2),
            (None, None) => Some(1),
            _ => None,
        };
        list.iter()
            .filter_map(|p| rank(p).map(|r| (r, p)))
            .max_by_key(|(r, _)| *r)
            .map(|(_, p)| p)
    }

    /// Every profile.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<AudienceProfile>> {
        self.by_audience.values().flatten()
    }
}

#[cfg(test)]
mod tests;
