//! The identity policy (INV-10): every decision to issue a token or a
//! certificate is made here, as pure functions of typed inputs.
//!
//! The server's paths differ only in how they attest and match:
//! - RFC 8693 exchange: a verified subject token (and actor token) and the
//!   entry it matched, with the caller's request;
//! - node API `MintJwtSvid`: the node's workload entry, with the node's
//!   certificate as evidence;
//! - node API `SignX509Svids` and sync: the node's workload entries;
//! - broker: the subject's identity, up to [`Policy::authorize`];
//! - `explain`: any of these, as a dry run.
//!
//! Each then asks [`Policy`] and signs exactly what it answers. A step that
//! fails is a [`Denial`]; nothing falls through to a default identity. Every
//! step is recorded in a [`Trace`] for `explain` and audit.
//!
//! Order of the JWT decision: reserved-ID guard → tenant → revocation →
//! delegation (actor revocation, tenant, `may_act`, depth) → audience →
//! scope → TTL → audience profile. See `docs/SECURITY.md` for the table of
//! denials and `policy/tests.rs` for one case per row.

mod trace;

use std::sync::Arc;
use std::time::Duration;

use crate::audience::{validate_audience, SubjectVars};
use crate::naming;
use crate::ttl::MAX_JWT_SVID_TTL;
use crate::{
    ActChain, Denial, DenyReason, Entry, Evidence, JwtSvidClaims, ProfileSet, RevocationSet,
    SpiffeId, TenantId,
};

pub use trace::{Step, Trace};

/// Most audiences one token may carry.
pub const MAX_AUDIENCES: usize = 16;

/// The limits every path applies, from the server's configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The server's issuer URL. A token for Lanyard itself (to exchange
    /// again, along a delegation chain) is always allowed: it can only ever
    /// be narrowed further.
    pub own_audience: String,
    /// JWT-SVID lifetime when neither the request nor the entry says.
    pub jwt_default_ttl: Duration,
    /// Longest JWT-SVID lifetime (`tokens.max_ttl`), whatever the entry says.
    pub jwt_max_ttl: Duration,
    /// Longest delegation chain (`tokens.max_delegation_depth`).
    pub max_delegation_depth: usize,
    /// X.509-SVID lifetime (`ca.svid_ttl`).
    pub x509_ttl: Duration,
    /// Longest X.509-SVID lifetime (`ca.svid_max_ttl`).
    pub x509_max_ttl: Duration,
}

/// What a Lanyard JWT-SVID presented as subject already carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Carried {
    /// Its delegation chain.
    pub act: ActChain,
    /// Its scopes (a delegated token may have fewer than its entry).
    pub scopes: Option<Vec<String>>,
    /// Its RFC 8693 `may_act` actor.
    pub may_act: Option<String>,
}

/// A verified principal: what attestation proved, the entry matching
/// found, and what its token carried when it was one of Lanyard's.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The verified evidence.
    pub evidence: Evidence,
    /// The matched entry.
    pub entry: Arc<Entry>,
    /// Set when the evidence was a Lanyard JWT-SVID.
    pub carried: Option<Carried>,
}

/// What the caller asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct JwtRequest<'a> {
    /// Audiences (at least one).
    pub audiences: &'a [String],
    /// Scopes; the granted ones when `None`.
    pub scope: Option<&'a [String]>,
    /// Lifetime; the entry's or the default when `None`.
    pub ttl: Option<Duration>,
    /// The tenant the caller expects, if it says.
    pub tenant: Option<&'a str>,
}

/// The JWT-SVID to sign: what the policy decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtGrant {
    /// The identity.
    pub spiffe_id: SpiffeId,
    /// The entry behind it.
    pub entry_id: String,
    /// The tenant.
    pub tenant: TenantId,
    /// `sub`: the SPIFFE ID, or the audience profile's rendered subject.
    pub sub: String,
    /// `aud`.
    pub audiences: Vec<String>,
    /// The delegation chain.
    pub act: ActChain,
    /// Scopes granted.
    pub scopes: Vec<String>,
    /// `iat`.
    pub issued_at: i64,
    /// Lifetime.
    pub ttl: Duration,
    /// JOSE algorithm name to sign with.
    pub alg: &'static str,
    /// The audience profile applied.
    pub profile: Option<String>,
}

impl JwtGrant {
    /// `exp`.
    pub fn expires_at(&self) -> i64 {
        self.issued_at
            .saturating_add(i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX))
    }

    /// `subject <- actor <- …`, for audit.
    pub fn chain(&self) -> String {
        self.act.describe(&self.spiffe_id.to_string())
    }

    /// The claims to sign, with the server's `iss` and a fresh `jti`.
    pub fn claims(&self, iss: &str, jti: String) -> JwtSvidClaims {
        JwtSvidClaims {
            iss: iss.to_owned(),
            sub: self.sub.clone(),
            aud: self.audiences.clone(),
            exp: self.expires_at(),
            iat: self.issued_at,
            jti,
            tenant: self.tenant.to_string(),
            act: self.act.clone(),
            scope: (!self.scopes.is_empty()).then(|| self.scopes.join(" ")),
            may_act: None,
        }
    }
}

/// The X.509-SVID to sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509Grant {
    /// The identity (the certificate's one URI SAN).
    pub spiffe_id: SpiffeId,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// Lifetime.
    pub ttl: Duration,
}

/// The policy, over one snapshot of limits, revocations and profiles.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// Limits.
    pub limits: &'a Limits,
    /// Revocations in force.
    pub revocations: &'a RevocationSet,
    /// Audience profiles.
    pub profiles: &'a ProfileSet,
    /// JOSE names of the algorithms the server has keys for; the first is
    /// the default.
    pub algorithms: &'a [&'static str],
    /// Now, Unix seconds.
    pub now: i64,
}

impl Policy<'_> {
    /// The first checks of every path that acts for `subject`: its entry is
    /// not a reserved identity, its tenant is explicit and agrees with the
    /// evidence and the request, and nothing about it is revoked. The
    /// broker's credential path stops here (its grant check is the broker's).
    ///
    /// # Errors
    /// [`DenyReason::ReservedId`], [`DenyReason::MissingTenant`],
    /// [`DenyReason::TenantMismatch`], [`DenyReason::Revoked`].
    pub fn authorize(
        &self,
        subject: &Principal,
        requested_tenant: Option<&str>,
        trace: &mut Trace,
    ) -> Result<TenantId, Denial> {
        trace.record("identity", not_reserved(&subject.entry), |()| {
            format!("{} is a workload identity", subject.entry.spiffe_id)
        })?;
        let tenant = trace.record(
            "tenant",
            check_tenant(&subject.evidence, &subject.entry, requested_tenant),
            |t| format!("{t}: issuer, entry and request agree"),
        )?;
        trace.record(
            "revocation",
            self.revocations.check_identity(
                &subject.entry,
                &subject.evidence.revocation_keys,
                self.now,
            ),
            |()| "nothing revoked for the subject".into(),
        )?;
        Ok(tenant)
    }

    /// Decides a JWT-SVID for `subject` (acted for by `actor`, if any).
    ///
    /// # Security
    /// Delegation only narrows: the actor must be allowed by the subject
    /// (entry `may_act` or the token's `may_act` claim), be in the same
    /// tenant, and the chain stays within the configured depth; audiences
    /// must be allowed by both entries, scopes by the subject's entry and
    /// the token it presented. The lifetime never exceeds the entry's and
    /// the server's maxima, nor the evidence's own expiry.
    ///
    /// # Errors
    /// The first failing step's [`Denial`].
    pub fn decide_jwt(
        &self,
        subject: &Principal,
        actor: Option<&Principal>,
        req: &JwtRequest<'_>,
        trace: &mut Trace,
    ) -> Result<JwtGrant, Denial> {
        let tenant = self.authorize(subject, req.tenant, trace)?;
        let carried = subject.carried.clone().unwrap_or_default();
        let act = match actor {
            None => carried.act.clone(),
            Some(actor) => trace.record(
                "delegation",
                self.delegate(subject, &carried, actor),
                |act| {
                    format!(
                        "{} (depth {})",
                        act.describe(&subject.entry.spiffe_id.to_string()),
                        act.depth()
                    )
                },
            )?,
        };
        let audiences = trace.record(
            "audience",
            self.audiences(
                &subject.entry,
                actor.map(|a| a.entry.as_ref()),
                req.audiences,
            ),
            |a| format!("{a:?} allowed"),
        )?;
        let scopes = trace.record(
            "scope",
            narrow_scopes(&subject.entry, carried.scopes.as_deref(), req.scope),
            |s| format!("{s:?}"),
        )?;
        let ttl = trace.record(
            "ttl",
            self.jwt_ttl(&subject.entry, req.ttl, subject.evidence.expires_at),
            |t| format!("{}s", t.as_secs()),
        )?;
        let shape = trace.record(
            "profile",
            self.shape(&subject.entry, &audiences),
            |s| match &s.profile {
                Some(id) => format!("audience profile {id}: {} with sub {}", s.alg, s.sub),
                None => format!("no audience profile: {} with sub = SPIFFE ID", s.alg),
            },
        )?;
        Ok(JwtGrant {
            spiffe_id: subject.entry.spiffe_id.clone(),
            entry_id: subject.entry.id.clone(),
            tenant,
            sub: shape.sub,
            audiences,
            act,
            scopes,
            issued_at: self.now,
            ttl,
            alg: shape.alg,
            profile: shape.profile,
        })
    }

    /// Decides an X.509-SVID for `entry`, asked for by the agent of `node`.
    ///
    /// # Errors
    /// [`DenyReason::NotServedByNode`], [`DenyReason::ReservedId`],
    /// [`DenyReason::Revoked`].
    pub fn decide_x509(&self, entry: &Entry, node: &SpiffeId) -> Result<X509Grant, Denial> {
        served_by(entry, node)?;
        not_reserved(entry)?;
        self.revocations.check_identity(entry, &[], self.now)?;
        Ok(X509Grant {
            spiffe_id: entry.spiffe_id.clone(),
            dns_names: entry.dns_names.clone(),
            ttl: self.limits.x509_ttl.min(self.limits.x509_max_ttl),
        })
    }

    /// The JWT-SVID lifetime for `entry`: the request's (else the entry's,
    /// else the default), capped by the entry's maximum, `tokens.max_ttl`
    /// and the 24 h ceiling, and never past `evidence_expires_at`. Limits
    /// lowered after the entry was made apply at once.
    ///
    /// # Errors
    /// [`DenyReason::Expired`] when no lifetime is left.
    pub fn jwt_ttl(
        &self,
        entry: &Entry,
        requested: Option<Duration>,
        evidence_expires_at: i64,
    ) -> Result<Duration, Denial> {
        let server_max = self.limits.jwt_max_ttl.min(MAX_JWT_SVID_TTL);
        let ceiling = entry.max_ttl.unwrap_or(server_max).min(server_max);
        let wanted = requested
            .or(entry.ttl)
            .unwrap_or(self.limits.jwt_default_ttl);
        let left = u64::try_from(evidence_expires_at.saturating_sub(self.now)).unwrap_or(0);
        let ttl = wanted.min(ceiling).min(Duration::from_secs(left));
        if ttl.is_zero() {
            return Err(Denial::new(
                DenyReason::Expired,
                "no lifetime left: the evidence expires now",
            ));
        }
        Ok(ttl)
    }

    /// Whether `actor` may act for `subject` (which carried `carried`), and
    /// the chain that results. [`Policy::decide_jwt`] calls it; so does the
    /// broker, whose credentials are not tokens but are delegated alike.
    ///
    /// # Errors
    /// [`DenyReason::ActorNotAllowed`], [`DenyReason::TenantMismatch`],
    /// [`DenyReason::Revoked`], [`DenyReason::ChainTooDeep`],
    /// [`DenyReason::ReservedId`], [`DenyReason::MissingTenant`].
    pub fn delegate(
        &self,
        subject: &Principal,
        carried: &Carried,
        actor: &Principal,
    ) -> Result<ActChain, Denial> {
        let actor_id = &actor.entry.spiffe_id;
        not_reserved(&actor.entry)?;
        if actor.carried.as_ref().is_some_and(|c| !c.act.is_empty()) {
            return Err(Denial::new(
                DenyReason::ActorNotAllowed,
                format!("the actor token of {actor_id} is itself delegated; an actor acts with its own token"),
            ));
        }
        let actor_tenant = check_tenant(&actor.evidence, &actor.entry, None)?;
        self.revocations
            .check_identity(&actor.entry, &actor.evidence.revocation_keys, self.now)?;
        if actor_tenant != subject.entry.tenant {
            return Err(Denial::new(
                DenyReason::TenantMismatch,
                format!(
                    "actor {actor_id} is in tenant {actor_tenant}, subject in {}",
                    subject.entry.tenant
                ),
            ));
        }
        let id = actor_id.to_string();
        let by_entry = subject.entry.allows_actor(&id);
        let by_claim = carried.may_act.as_deref() == Some(id.as_str());
        if !by_entry && !by_claim {
            return Err(Denial::new(
                DenyReason::ActorNotAllowed,
                format!("{id} is not in may_act of {}", subject.entry.spiffe_id),
            ));
        }
        carried
            .act
            .extend(actor_id.clone(), self.limits.max_delegation_depth)
    }

    /// Every requested audience must be well formed and allowed by the
    /// subject's entry and the actor's (an empty list allows any); the
    /// server's own audience is always allowed.
    fn audiences(
        &self,
        subject: &Entry,
        actor: Option<&Entry>,
        requested: &[String],
    ) -> Result<Vec<String>, Denial> {
        if requested.is_empty() || requested.len() > MAX_AUDIENCES {
            return Err(Denial::new(
                DenyReason::InvalidRequest,
                format!("give 1 to {MAX_AUDIENCES} audiences"),
            ));
        }
        let mut out: Vec<String> = Vec::with_capacity(requested.len());
        for aud in requested {
            if validate_audience(aud).is_err() {
                return Err(Denial::new(
                    DenyReason::InvalidRequest,
                    format!(
                        "audience {} is not printable ASCII of at most 512 bytes",
                        crate::text::shown(aud, 64)
                    ),
                ));
            }
            let allowed = |e: &Entry| e.audiences.is_empty() || e.audiences.contains(aud);
            if *aud != self.limits.own_audience && (!allowed(subject) || !actor.is_none_or(allowed))
            {
                return Err(Denial::new(
                    DenyReason::AudienceNotAllowed,
                    format!(
                        "audience {} is not allowed for {}",
                        crate::text::shown(aud, 64),
                        subject.spiffe_id
                    ),
                ));
            }
            if !out.contains(aud) {
                out.push(aud.clone());
            }
        }
        Ok(out)
    }

    /// The audience profile of the requested audience, if it has one: the
    /// most specific of entry, tenant and every-tenant profiles.
    ///
    /// # Security
    /// A profiled audience must be requested alone, so one token never
    /// carries a cloud-specific subject to another audience; a subject
    /// template renders only from the entry (never the request) and is
    /// checked to carry the tenant where the template says.
    fn shape(&self, entry: &Entry, audiences: &[String]) -> Result<Shape, Denial> {
        let default_alg = self.algorithms.first().copied().ok_or_else(|| {
            Denial::new(DenyReason::IssuerUnavailable, "no signing algorithm loaded")
        })?;
        let found = audiences.iter().find_map(|a| {
            self.profiles
                .find(a, &entry.tenant, &entry.id)
                .map(|p| (a, p))
        });
        let Some((aud, profile)) = found else {
            return Ok(Shape {
                alg: default_alg,
                sub: entry.spiffe_id.to_string(),
                profile: None,
            });
        };
        let refuse = |detail: String| Denial::new(DenyReason::AudienceProfile, detail);
        if audiences.len() > 1 {
            return Err(refuse(format!(
                "audience {} has audience profile {}; request it alone",
                crate::text::shown(aud, 64),
                profile.id
            )));
        }
        let alg = match profile.algorithm.as_deref() {
            None => default_alg,
            Some(name) => self
                .algorithms
                .iter()
                .copied()
                .find(|a| *a == name)
                .ok_or_else(|| {
                    refuse(format!(
                        "profile {} signs with {}, which this server has no key for; add it to keys.algorithms",
                        profile.id,
                        crate::text::shown(name, 16)
                    ))
                })?,
        };
        let sub = match &profile.subject_template {
            None => entry.spiffe_id.to_string(),
            Some(template) => template
                .render(&SubjectVars {
                    tenant: &entry.tenant,
                    role: entry.role.as_deref(),
                    spiffe_id: &entry.spiffe_id,
                    entry: &entry.id,
                })
                .map_err(|e| refuse(format!("profile {}: {e}", profile.id)))?,
        };
        Ok(Shape {
            alg,
            sub,
            profile: Some(profile.id.clone()),
        })
    }
}

#[derive(Debug)]
struct Shape {
    alg: &'static str,
    sub: String,
    profile: Option<String>,
}

/// Evidence, entry and request must agree on the tenant (seed 001): the
/// issuer binds one, it is the entry's, and a request naming one names it.
///
/// # Errors
/// [`DenyReason::MissingTenant`] or [`DenyReason::TenantMismatch`].
pub fn check_tenant(
    evidence: &Evidence,
    entry: &Entry,
    requested: Option<&str>,
) -> Result<TenantId, Denial> {
    let Some(bound) = &evidence.tenant else {
        return Err(Denial::new(
            DenyReason::MissingTenant,
            format!("issuer {} binds no tenant for this token", evidence.issuer),
        ));
    };
    if *bound != entry.tenant {
        return Err(Denial::new(
            DenyReason::TenantMismatch,
            format!(
                "issuer {} binds tenant {bound}, entry {} is in {}",
                evidence.issuer, entry.id, entry.tenant
            ),
        ));
    }
    if let Some(asked) = requested {
        if asked != entry.tenant.as_str() {
            return Err(Denial::new(
                DenyReason::TenantMismatch,
                format!(
                    "request asks for tenant {}, identity is in {}",
                    crate::text::shown(asked, 64),
                    entry.tenant
                ),
            ));
        }
    }
    Ok(entry.tenant.clone())
}

/// Scopes only narrow: the entry's, intersected with what a presented
/// Lanyard token carried; a request may ask for a subset.
///
/// # Errors
/// [`DenyReason::ScopeWidening`] naming the first scope not granted.
pub fn narrow_scopes(
    entry: &Entry,
    carried: Option<&[String]>,
    asked: Option<&[String]>,
) -> Result<Vec<String>, Denial> {
    let mut granted = entry.scopes.clone();
    if let Some(carried) = carried {
        granted.retain(|s| carried.contains(s));
    }
    match asked {
        None => Ok(granted),
        Some(asked) => match asked.iter().find(|s| !granted.contains(s)) {
            Some(extra) => Err(Denial::new(
                DenyReason::ScopeWidening,
                format!("scope {} is not granted", crate::text::shown(extra, 64)),
            )),
            None => {
                let mut out: Vec<String> = Vec::with_capacity(asked.len());
                for s in asked {
                    if !out.contains(s) {
                        out.push(s.clone());
                    }
                }
                Ok(out)
            }
        },
    }
}

/// An agent entry is served only by its own node.
///
/// # Errors
/// [`DenyReason::NotServedByNode`].
pub fn served_by(entry: &Entry, node: &SpiffeId) -> Result<(), Denial> {
    if entry.parent.as_ref() == Some(node) {
        Ok(())
    } else {
        Err(Denial::new(
            DenyReason::NotServedByNode,
            format!("entry {} is not served by node {node}", entry.id),
        ))
    }
}

/// Reserved IDs (INV-8) are never issued to a workload; entries cannot name
/// them, and this guard keeps it so should one reach the store anyway.
///
/// # Errors
/// [`DenyReason::ReservedId`].
pub fn not_reserved(entry: &Entry) -> Result<(), Denial> {
    if naming::is_reserved(&entry.spiffe_id) {
        Err(Denial::new(
            DenyReason::ReservedId,
            format!(
                "{} is reserved for the Lanyard server and its nodes",
                entry.spiffe_id
            ),
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
