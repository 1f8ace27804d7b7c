//! RFC 8693 token exchange: the decision, step by step.
//!
//! attest the subject token → match its entry → check tenant → check
//! revocation → (delegation: attest the actor, check `may_act`, depth,
//! tenant) → check audience and scope → choose the TTL → apply the
//! audience's profile (algorithm, subject template) → sign a JWT-SVID →
//! audit. Every step can deny with a [`Denial`]; nothing falls through to a
//! default identity. [`decide`] records each step in a [`Trace`] when asked,
//! which is what `lanyard explain` prints.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use lanyard_core::audience::SubjectVars;
use lanyard_core::{Denial, DenyReason, Entry, Evidence, Selector, TenantId};
use lanyard_jose::Algorithm;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::app::AppState;

/// RFC 8693 §2.1 grant type.
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 6749 §4.4 with an RFC 7523 client assertion (Azure-style SDKs).
pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
/// RFC 7523 client assertion type.
pub const ASSERTION_JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// RFC 8693 §3 token types.
pub const TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// An OIDC ID token.
pub const TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
/// An OAuth access token.
pub const TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// Lanyard's requested token type for brokered PostgreSQL credentials; the
/// broker role (`backend/role`) is the `resource` (or `audience`).
pub const TYPE_POSTGRES_CREDENTIALS: &str = "urn:lanyard:params:token-type:postgres-credentials";

/// Clock skew tolerated on Lanyard's own tokens.
const SKEW: i64 = 60;
/// Most audiences one request may ask for.
const MAX_AUDIENCES: usize = 16;
/// Longest single parameter value other than tokens.
const MAX_PARAM: usize = 1024;

/// What the caller asked for, parsed and checked for shape.
#[derive(Debug, Clone, Default)]
pub struct ExchangeRequest {
    /// The subject token (or client assertion).
    pub subject_token: String,
    /// The actor token, for delegation.
    pub actor_token: Option<String>,
    /// Requested audiences (`audience` and `resource`).
    pub audiences: Vec<String>,
    /// Requested scopes (space-separated `scope`).
    pub scope: Option<Vec<String>>,
    /// Issue with `issued_token_type` access_token (`Bearer`) rather than jwt.
    pub as_access_token: bool,
    /// The tenant the caller expects.
    pub tenant: Option<String>,
    /// Requested lifetime (`expires_in`, seconds; a Lanyard extension).
    pub ttl: Option<Duration>,
    /// Brokered credentials for this role (`backend/role`) instead of a token.
    pub broker_role: Option<String>,
}

/// Parses an `application/x-www-form-urlencoded` token request (RFC 8693 §2.1).
///
/// # Errors
/// A [`Denial`] with `InvalidRequest` naming the parameter, or
/// `UnsupportedTokenType`.
pub fn parse_form(body: &[u8]) -> Result<ExchangeRequest, Denial> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|_| {
        Denial::new(
            DenyReason::InvalidRequest,
            "body is not application/x-www-form-urlencoded",
        )
    })?;
    let mut seen = BTreeSet::new();
    let mut req = ExchangeRequest::default();
    let mut grant = None;
    let mut subject_type = None;
    let mut actor_type = None;
    let mut requested_type = None;
    let mut assertion_type = None;
    let mut assertion = None;
    for (name, value) in pairs {
        let repeatable = matches!(name.as_str(), "audience" | "resource");
        if !repeatable && !seen.insert(name.clone()) {
            return Err(Denial::new(
                DenyReason::InvalidRequest,
                format!("parameter {} is given more than once", short(&name)),
            ));
        }
        let is_token = matches!(
            name.as_str(),
            "subject_token" | "actor_token" | "client_assertion"
        );
        if !is_token && value.len() > MAX_PARAM {
            return Err(Denial::new(
                DenyReason::InvalidRequest,
                format!("parameter {} is too long", short(&name)),
            ));
        }
        match name.as_str() {
            "grant_type" => grant = Some(value),
            "subject_token" => req.subject_token = value,
            "subject_token_type" => subject_type = Some(value),
            "actor_token" => req.actor_token = Some(value),
            "actor_token_type" => actor_type = Some(value),
            "audience" | "resource" => {
                if req.audiences.len() >= MAX_AUDIENCES {
                    return Err(Denial::new(
                        DenyReason::InvalidRequest,
                        "too many audiences",
                    ));
                }
                if !value.is_empty() && !req.audiences.contains(&value) {
                    req.audiences.push(value);
                }
            }
            "scope" => {
                req.scope = Some(
                    value
                        .split(' ')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                )
            }
            "requested_token_type" => requested_type = Some(value),
            "tenant" => req.tenant = Some(value),
            "expires_in" => {
                let secs: u64 = value.parse().map_err(|_| {
                    Denial::new(
                        DenyReason::InvalidRequest,
                        "expires_in is not a number of seconds",
                    )
                })?;
                req.ttl = Some(Duration::from_secs(secs));
            }
            "client_assertion_type" => assertion_type = Some(value),
            "client_assertion" => assertion = Some(value),
            // RFC 6749 §3.2.1 / Azure SDKs send these; they carry nothing we trust.
            "client_id" => {}
            _ => {}
        }
    }
    match grant.as_deref() {
        Some(GRANT_TOKEN_EXCHANGE) => {
            if req.subject_token.is_empty() {
                return Err(Denial::new(
                    DenyReason::InvalidRequest,
                    "subject_token is required",
                ));
            }
            match subject_type.as_deref() {
                Some(TYPE_JWT | TYPE_ID_TOKEN | TYPE_ACCESS_TOKEN) => {}
                Some(other) => {
                    return Err(Denial::new(
                        DenyReason::InvalidRequest,
                        format!("subject_token_type {} is not supported", short(other)),
                    ))
                }
                None => {
                    return Err(Denial::new(
                        DenyReason::InvalidRequest,
                        "subject_token_type is required",
                    ))
                }
            }
            match (&req.actor_token, actor_type.as_deref()) {
                (None, None) => {}
                (Some(_), Some(TYPE_JWT | TYPE_ID_TOKEN | TYPE_ACCESS_TOKEN)) => {}
                (Some(_), None) => {
                    return Err(Denial::new(
                        DenyReason::InvalidRequest,
                        "actor_token_type is required with actor_token",
                    ))
                }
                (None, Some(_)) => {
                    return Err(Denial::new(
                        DenyReason::InvalidRequest,
                        "actor_token_type without actor_token",
                    ))
                }
                (Some(_), Some(other)) => {
                    return Err(Denial::new(
                        DenyReason::InvalidRequest,
                        format!("actor_token_type {} is not supported", short(other)),
                    ))
                }
            }
        }
        Some(GRANT_CLIENT_CREDENTIALS) => {
            if assertion_type.as_deref() != Some(ASSERTION_JWT_BEARER) {
                return Err(Denial::new(
                    DenyReason::InvalidRequest,
                    format!(
                        "client_credentials needs client_assertion_type={ASSERTION_JWT_BEARER}"
                    ),
                ));
            }
            req.subject_token = assertion.ok_or_else(|| {
                Denial::new(DenyReason::InvalidRequest, "client_assertion is required")
            })?;
            if req.audiences.is_empty() {
                // Azure-style SDKs name the target as `scope=<resource>/.default`.
                if let Some(scopes) = req.scope.take() {
                    req.audiences = scopes
                        .iter()
                        .map(|s| s.strip_suffix("/.default").unwrap_or(s).to_owned())
                        .collect();
                }
            }
        }
        Some(other) => {
            return Err(Denial::new(
                DenyReason::UnsupportedTokenType,
                format!("grant_type {} is not supported", short(other)),
            ))
        }
        None => {
            return Err(Denial::new(
                DenyReason::InvalidRequest,
                "grant_type is required",
            ))
        }
    }
    req.as_access_token = match requested_type.as_deref() {
        None | Some(TYPE_JWT) => false,
        Some(TYPE_ACCESS_TOKEN) => true,
        Some(TYPE_POSTGRES_CREDENTIALS) => {
            match req.audiences.as_slice() {
                [role] => req.broker_role = Some(role.clone()),
                _ => {
                    return Err(Denial::new(
                        DenyReason::InvalidRequest,
                        "postgres-credentials needs exactly one resource (or audience): the broker role, e.g. appdb/readonly",
                    ))
                }
            }
            false
        }
        Some(other) => {
            return Err(Denial::new(
                DenyReason::InvalidRequest,
                format!("requested_token_type {} is not supported", short(other)),
            ))
        }
    };
    if req.audiences.is_empty() {
        return Err(Denial::new(
            DenyReason::InvalidRequest,
            "audience (or resource) is required: tokens are audience-scoped",
        ));
    }
    Ok(req)
}

/// Bounded, printable echo of caller input for messages.
fn short(s: &str) -> String {
    let s: String = s.chars().filter(|c| !c.is_control()).take(64).collect();
    format!("{s:?}")
}

/// One step of a decision, for `explain`.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Step name.
    pub step: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

/// Collects the decision's steps: all of them for `explain` (which never
/// issues), the short form for the audit event of a real exchange.
#[derive(Debug, Default)]
pub struct Trace {
    /// Explaining: list every candidate entry and never sign.
    explain: bool,
    /// The steps so far.
    pub steps: Vec<Step>,
}

impl Trace {
    /// Records every step and candidate, and makes [`decide`] a dry run.
    pub fn recording() -> Self {
        Self {
            explain: true,
            steps: Vec::new(),
        }
    }

    /// Records the steps of a real exchange, for its audit event.
    pub fn for_audit() -> Self {
        Self {
            explain: false,
            steps: Vec::new(),
        }
    }

    /// The steps as text lines, `ok`/`FAIL step: detail`.
    pub fn lines(&self) -> String {
        self.steps
            .iter()
            .map(|s| {
                format!(
                    "{} {}: {}",
                    if s.ok { "ok  " } else { "FAIL" },
                    s.step,
                    s.detail
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn ok(&mut self, step: &'static str, detail: impl FnOnce() -> String) {
        self.steps.push(Step {
            step,
            ok: true,
            detail: detail(),
        });
    }

    fn fail(&mut self, step: &'static str, d: &Denial) {
        self.steps.push(Step {
            step,
            ok: false,
            detail: d.to_string(),
        });
    }
}

/// A verified principal: the evidence, its entry, and any delegation chain
/// it already carries.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    pub(crate) evidence: Evidence,
    pub(crate) entry: Arc<Entry>,
    /// The `act` claim of a Lanyard token presented as subject.
    act: Option<Value>,
    /// The `scope` claim of a Lanyard token presented as subject.
    scopes: Option<Vec<String>>,
    /// RFC 8693 §4.4 `may_act` claim of the subject token.
    may_act: Option<String>,
}

/// What was decided: the token and what audit needs.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The signed JWT-SVID.
    pub token: String,
    /// Lifetime in seconds.
    pub expires_in: u64,
    /// Issued scopes.
    pub scope: Vec<String>,
    /// Whether it is reported as an access token.
    pub as_access_token: bool,
    /// Subject SPIFFE ID.
    pub spiffe_id: String,
    /// Tenant.
    pub tenant: String,
    /// `jti`.
    pub jti: String,
    /// `subject <- actor <- earlier actors`, for audit.
    pub chain: String,
    /// The audience profile applied, if any, and the `sub` it produced.
    pub profile: Option<(String, String)>,
}

/// What audit records about a decision, allow or deny.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Subject identity, once known.
    pub subject: Option<String>,
    /// Tenant, once known.
    pub tenant: Option<String>,
    /// SHA-256 of the subject token.
    pub digest: Option<String>,
}

/// Runs the whole decision. Never issues when any step denies.
///
/// # Errors
/// The first [`Denial`].
pub async fn decide(
    state: &AppState,
    req: &ExchangeRequest,
    trace: &mut Trace,
    facts: &mut Facts,
) -> Result<Issued, Denial> {
    let now = state.clock.unix_seconds();
    let (subject, tenant) = authenticate(state, req, trace, facts).await?;
    let revocations = state.registry.revocations();

    // Delegation (seed 003).
    let mut act = subject.act.clone();
    let mut chain = subject.entry.spiffe_id.to_string();
    let mut actor_entry = None;
    if let Some(actor_token) = &req.actor_token {
        let actor = attest(state, actor_token, "actor", trace).await?;
        check_revoked(&revocations, &actor, now)
            .inspect_err(|d| trace.fail("actor revocation", d))?;
        let actor_id = actor.entry.spiffe_id.to_string();
        if actor.entry.tenant != subject.entry.tenant {
            let d = Denial::new(
                DenyReason::TenantMismatch,
                format!(
                    "actor {actor_id} is in tenant {}, subject in {}",
                    actor.entry.tenant, subject.entry.tenant
                ),
            );
            trace.fail("delegation", &d);
            return Err(d);
        }
        let allowed_by_entry = subject.entry.allows_actor(&actor_id);
        let allowed_by_claim = subject.may_act.as_deref() == Some(actor_id.as_str());
        if !allowed_by_entry && !allowed_by_claim {
            let d = Denial::new(
                DenyReason::ActorNotAllowed,
                format!(
                    "{actor_id} is not in may_act of {}",
                    subject.entry.spiffe_id
                ),
            );
            trace.fail("delegation", &d);
            return Err(d);
        }
        let depth = 1 + act_depth(act.as_ref());
        if depth > state.settings.max_delegation_depth {
            let d = Denial::new(
                DenyReason::ChainTooDeep,
                format!(
                    "chain depth {depth} exceeds {}",
                    state.settings.max_delegation_depth
                ),
            );
            trace.fail("delegation", &d);
            return Err(d);
        }
        chain = format!("{chain} <- {actor_id}{}", act_chain(act.as_ref()));
        act = Some(match act {
            Some(prior) => json!({ "sub": actor_id, "act": prior }),
            None => json!({ "sub": actor_id }),
        });
        trace.ok("delegation", || format!("{chain} (depth {depth})"));
        actor_entry = Some(actor.entry);
    }

    // Audience: only what the subject's entry (and the actor's) allow. A
    // token for Lanyard itself (to exchange again, e.g. along a delegation
    // chain) is always allowed: it can only ever be narrowed further.
    for aud in req
        .audiences
        .iter()
        .filter(|a| **a != state.settings.issuer)
    {
        let by_subject =
            subject.entry.audiences.is_empty() || subject.entry.audiences.contains(aud);
        let by_actor = actor_entry
            .as_ref()
            .is_none_or(|a| a.audiences.is_empty() || a.audiences.contains(aud));
        if !by_subject || !by_actor {
            let d = Denial::new(
                DenyReason::AudienceNotAllowed,
                format!(
                    "audience {} is not allowed for {}",
                    short(aud),
                    subject.entry.spiffe_id
                ),
            );
            trace.fail("audience", &d);
            return Err(d);
        }
    }
    trace.ok("audience", || format!("{:?} allowed", req.audiences));

    // Scope: only narrows.
    let mut granted: Vec<String> = subject.entry.scopes.clone();
    if let Some(token_scopes) = &subject.scopes {
        granted.retain(|s| token_scopes.contains(s));
    }
    let scope = match &req.scope {
        Some(asked) => {
            if let Some(extra) = asked.iter().find(|s| !granted.contains(s)) {
                let d = Denial::new(
                    DenyReason::ScopeWidening,
                    format!("scope {} is not granted", short(extra)),
                );
                trace.fail("scope", &d);
                return Err(d);
            }
            asked.clone()
        }
        None => granted,
    };
    trace.ok("scope", || format!("{scope:?}"));

    // TTL: min(requested, entry, server max), and never beyond the evidence.
    let default_ttl = subject.entry.ttl.unwrap_or(state.settings.jwt_default_ttl);
    let ceiling = subject
        .entry
        .max_ttl
        .unwrap_or(state.settings.jwt_max_ttl)
        .min(state.settings.jwt_max_ttl);
    let mut ttl = req.ttl.unwrap_or(default_ttl).min(ceiling);
    // Never outlive the evidence: a token inside its expiry skew has no
    // lifetime left to lend, and is refused.
    let remaining = u64::try_from(subject.evidence.expires_at.saturating_sub(now)).unwrap_or(0);
    ttl = ttl.min(Duration::from_secs(remaining));
    if ttl.is_zero() {
        let d = Denial::new(DenyReason::Expired, "no lifetime left");
        trace.fail("ttl", &d);
        return Err(d);
    }
    trace.ok("ttl", || format!("{}s", ttl.as_secs()));

    let shape = token_shape(state, &req.audiences, &subject.entry)
        .inspect_err(|d| trace.fail("profile", d))?;
    trace.ok("profile", || match &shape.profile {
        Some(id) => format!(
            "audience profile {id}: {} with sub {}",
            shape.alg, shape.sub
        ),
        None => format!("no audience profile: {} with sub = SPIFFE ID", shape.alg),
    });

    let jti = crate::correlation::new_id();
    let expires_in = ttl.as_secs();
    if trace.explain {
        // Explaining never issues.
        trace.ok("issue", || {
            format!(
                "would issue a JWT-SVID for {} ({expires_in}s); nothing was issued",
                subject.entry.spiffe_id
            )
        });
        return Ok(Issued {
            token: String::new(),
            expires_in,
            scope,
            as_access_token: req.as_access_token,
            spiffe_id: subject.entry.spiffe_id.to_string(),
            tenant: tenant.to_string(),
            jti,
            chain,
            profile: shape.profile.map(|id| (id, shape.sub)),
        });
    }
    let published = state.keys.current();
    let alg = shape.alg;
    let signer = published
        .ring
        .signer(alg)
        .ok_or_else(|| Denial::new(DenyReason::IssuerUnavailable, "no signing key loaded"))?;
    let claims = SvidClaims {
        iss: state.settings.issuer.clone(),
        sub: shape.sub.clone(),
        aud: req.audiences.clone(),
        exp: now + i64::try_from(expires_in).unwrap_or(0),
        iat: now,
        jti: jti.clone(),
        tenant: tenant.to_string(),
        act,
        scope: (!scope.is_empty()).then(|| scope.join(" ")),
        may_act: None,
    };
    let token = lanyard_jose::encode_jwt(signer, &claims)
        .map_err(|_| Denial::new(DenyReason::IssuerUnavailable, "signing failed"))?;
    trace.ok("issue", || {
        format!("{alg} JWT-SVID for {} ({}s)", claims.sub, expires_in)
    });
    Ok(Issued {
        token,
        expires_in,
        scope,
        as_access_token: req.as_access_token,
        spiffe_id: subject.entry.spiffe_id.to_string(),
        tenant: claims.tenant,
        jti,
        chain,
        profile: shape.profile.map(|id| (id, claims.sub)),
    })
}

/// How the token for these audiences is signed and whom it names.
#[derive(Debug)]
pub(crate) struct Shape {
    pub(crate) alg: Algorithm,
    pub(crate) sub: String,
    /// The audience profile applied.
    pub(crate) profile: Option<String>,
}

/// Applies the audience profile of the requested audience, if it has one:
/// the most specific of entry, tenant and every-tenant profiles
/// ([`lanyard_core::ProfileSet::find`]).
///
/// # Security
/// A profiled audience must be requested alone, so one token never carries
/// a cloud-specific subject to another audience. A subject template renders
/// only from the entry's own tenant, role and SPIFFE ID, and the rendered
/// subject is checked to carry the tenant where the template says.
pub(crate) fn token_shape(
    state: &AppState,
    audiences: &[String],
    entry: &Entry,
) -> Result<Shape, Denial> {
    let algorithms = state.keys.algorithms();
    let default_alg = algorithms.first().copied().unwrap_or(Algorithm::Es256);
    let profiles = state.registry.profiles();
    let found = audiences
        .iter()
        .find_map(|a| profiles.find(a, &entry.tenant, &entry.id).map(|p| (a, p)));
    let Some((aud, profile)) = found else {
        return Ok(Shape {
            alg: default_alg,
            sub: entry.spiffe_id.to_string(),
            profile: None,
        });
    };
    if audiences.len() > 1 {
        return Err(Denial::new(
            DenyReason::AudienceProfile,
            format!(
                "audience {} has audience profile {}; request it alone",
                short(aud),
                profile.id
            ),
        ));
    }
    let alg = match profile.algorithm.as_deref() {
        None => default_alg,
        Some(name) => name.parse::<Algorithm>().map_err(|_| {
            Denial::new(
                DenyReason::AudienceProfile,
                format!(
                    "profile {} names unknown algorithm {}",
                    profile.id,
                    short(name)
                ),
            )
        })?,
    };
    if !algorithms.contains(&alg) {
        return Err(Denial::new(
            DenyReason::AudienceProfile,
            format!(
                "profile {} signs with {alg}, which this server has no key for; add it to keys.algorithms",
                profile.id
            ),
        ));
    }
    let sub = match &profile.subject_template {
        None => entry.spiffe_id.to_string(),
        Some(template) => template
            .render(&SubjectVars {
                tenant: &entry.tenant,
                role: entry.role.as_deref(),
                spiffe_id: &entry.spiffe_id,
                entry: &entry.id,
            })
            .map_err(|e| {
                Denial::new(
                    DenyReason::AudienceProfile,
                    format!("profile {}: {e}", profile.id),
                )
            })?,
    };
    Ok(Shape {
        alg,
        sub,
        profile: Some(profile.id.clone()),
    })
}

/// The first steps of every exchange: attest the subject, match its entry,
/// check tenant and revocation. The broker's token-exchange path stops here.
///
/// # Errors
/// The first [`Denial`].
pub(crate) async fn authenticate(
    state: &AppState,
    req: &ExchangeRequest,
    trace: &mut Trace,
    facts: &mut Facts,
) -> Result<(Principal, TenantId), Denial> {
    let now = state.clock.unix_seconds();
    // The evidence carries the token's digest; compute it here only when
    // attestation fails before producing evidence.
    let subject = match attest(state, &req.subject_token, "subject", trace).await {
        Ok(p) => p,
        Err(d) => {
            facts.digest = Some(lanyard_attest::digest_hex(req.subject_token.as_bytes()));
            return Err(d);
        }
    };
    facts.digest = Some(subject.evidence.digest.clone());
    facts.subject = Some(subject.entry.spiffe_id.to_string());
    facts.tenant = Some(subject.entry.tenant.to_string());

    // Tenant (seed 001): evidence, entry and request must all agree.
    let tenant =
        check_tenant(&subject, req.tenant.as_deref()).inspect_err(|d| trace.fail("tenant", d))?;
    trace.ok("tenant", || {
        format!("{tenant}: issuer, entry and request agree")
    });

    let revocations = state.registry.revocations();
    check_revoked(&revocations, &subject, now).inspect_err(|d| trace.fail("revocation", d))?;
    trace.ok("revocation", || "nothing revoked for the subject".into());
    Ok((subject, tenant))
}

/// Verifies a bearer JWT-SVID this server issued for `audience` (the
/// broker's), finds its entry and checks revocation.
///
/// # Security
/// Only Lanyard's own published keys are accepted, the audience must match
/// exactly, and every revocation key of the token and its entry applies.
///
/// # Errors
/// A [`Denial`] saying which check failed.
pub(crate) fn verify_bearer(
    state: &AppState,
    token: &str,
    audience: &str,
) -> Result<Principal, Denial> {
    if peek_issuer(token).as_deref() != Some(state.settings.issuer.as_str()) {
        return Err(Denial::new(
            DenyReason::UnknownIssuer,
            "the bearer token is not a JWT-SVID issued by this server",
        ));
    }
    let p = attest_own(state, token, audience)?;
    check_revoked(
        &state.registry.revocations(),
        &p,
        state.clock.unix_seconds(),
    )?;
    Ok(p)
}

/// The JWT-SVID claims Lanyard issues (JWT-SVID §3 plus `tenant`, `act`, `scope`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SvidClaims {
    /// Issuer URL.
    pub iss: String,
    /// SPIFFE ID.
    pub sub: String,
    /// Audiences.
    #[serde(deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    /// Expiry.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Token id.
    pub jti: String,
    /// Tenant (INV-5).
    pub tenant: String,
    /// RFC 8693 §4.1 actor chain.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub act: Option<Value>,
    /// Space-separated scopes.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub scope: Option<String>,
    /// RFC 8693 §4.4: who may act for this subject.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub may_act: Option<Value>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// Verifies a token as subject or actor: Lanyard's own JWT-SVIDs against the
/// published keys, anything else through the trusted issuers.
async fn attest(
    state: &AppState,
    token: &str,
    role: &'static str,
    trace: &mut Trace,
) -> Result<Principal, Denial> {
    let step_attest: &'static str = if role == "actor" {
        "actor attestation"
    } else {
        "attestation"
    };
    let step_entry: &'static str = if role == "actor" {
        "actor entry"
    } else {
        "entry"
    };
    if peek_issuer(token).as_deref() == Some(state.settings.issuer.as_str()) {
        let p = attest_own(state, token, &state.settings.issuer)
            .inspect_err(|d| trace.fail(step_attest, d))?;
        trace.ok(step_attest, || {
            format!("Lanyard JWT-SVID for {}", p.evidence.subject)
        });
        trace.ok(step_entry, || {
            format!("entry {} grants {}", p.entry.id, p.entry.spiffe_id)
        });
        return Ok(p);
    }
    let attestor = state.registry.attestor();
    let evidence = attestor
        .verify(token)
        .await
        .inspect_err(|d| trace.fail(step_attest, d))?;
    trace.ok(step_attest, || {
        format!(
            "issuer {} verified; selectors [{}]",
            evidence.issuer,
            evidence
                .selectors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    });
    let entries = state.registry.entries();
    let report = entries.find_with(&evidence.issuer, &evidence.selectors, trace.explain);
    if trace.explain {
        for (e, why) in &report.considered {
            trace.steps.push(Step {
                step: "candidate",
                ok: true,
                detail: format!("entry {} ({}): {why}", e.id, e.spiffe_id),
            });
        }
    }
    let entry = report.chosen.inspect_err(|d| trace.fail(step_entry, d))?;
    trace.ok(step_entry, || {
        format!("entry {} grants {}", entry.id, entry.spiffe_id)
    });
    Ok(Principal {
        evidence,
        entry,
        act: None,
        scopes: None,
        may_act: None,
    })
}

/// Verifies a JWT-SVID this server issued and finds the entry behind it.
fn attest_own(state: &AppState, token: &str, audience: &str) -> Result<Principal, Denial> {
    let published = state.keys.current();
    let verified =
        lanyard_jose::verify_compact(token, published.ring.verifiers(), state.keys.algorithms())
            .map_err(|e| jose_denial(&e))?;
    let claims: SvidClaims = serde_json::from_slice(&verified.payload).map_err(|_| {
        Denial::new(
            DenyReason::MissingClaim,
            "Lanyard token lacks JWT-SVID claims",
        )
    })?;
    let now = state.clock.unix_seconds();
    if claims.exp + SKEW < now {
        return Err(Denial::new(
            DenyReason::Expired,
            format!("Lanyard token {} expired", claims.jti),
        ));
    }
    if claims.iat - SKEW > now {
        return Err(Denial::new(
            DenyReason::NotYetValid,
            "Lanyard token issued in the future",
        ));
    }
    if !claims.aud.iter().any(|a| a == audience) {
        return Err(Denial::new(
            DenyReason::WrongAudience,
            format!("a Lanyard token presented here must have audience {audience}"),
        ));
    }
    let tenant = TenantId::parse(&claims.tenant).map_err(|_| {
        Denial::new(
            DenyReason::MissingTenant,
            "Lanyard token has no valid tenant",
        )
    })?;
    let entries = state.registry.entries();
    let matching: Vec<_> = entries
        .by_spiffe_id(&claims.sub)
        .into_iter()
        .filter(|e| e.tenant == tenant)
        .collect();
    let entry = match matching.as_slice() {
        [one] => Arc::clone(one),
        [] => {
            return Err(Denial::new(
                DenyReason::NoMatchingEntry,
                format!("no entry grants {} in tenant {tenant}", claims.sub),
            ))
        }
        _ => {
            return Err(Denial::new(
                DenyReason::AmbiguousEntry,
                format!("several entries grant {} in tenant {tenant}", claims.sub),
            ))
        }
    };
    let mut revocation_keys = vec![("jti".to_owned(), claims.jti.clone())];
    collect_act_subs(claims.act.as_ref(), &mut revocation_keys);
    let selectors = Selector::new("spiffe", "id", &claims.sub)
        .map(|s| vec![s])
        .unwrap_or_default();
    let evidence = Evidence {
        issuer: "lanyard".into(),
        tenant: Some(tenant),
        subject: claims.sub.clone(),
        selectors,
        jti: Some(claims.jti.clone()),
        expires_at: claims.exp,
        digest: lanyard_attest::digest_hex(token.as_bytes()),
        revocation_keys,
    };
    let scopes = claims.scope.as_deref().map(|s| {
        s.split(' ')
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect()
    });
    let may_act = claims
        .may_act
        .as_ref()
        .and_then(|m| m.get("sub"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(Principal {
        evidence,
        entry,
        act: claims.act,
        scopes,
        may_act,
    })
}

fn jose_denial(e: &lanyard_jose::JoseError) -> Denial {
    use lanyard_jose::JoseError as J;
    let reason = match e {
        J::UnsupportedAlgorithm { .. }
        | J::AlgorithmNotAllowed { .. }
        | J::AlgorithmMismatch { .. } => DenyReason::AlgorithmNotAllowed,
        J::TooLarge { .. } => DenyReason::TooLarge,
        J::UnknownKeyId { .. } => DenyReason::UnknownKey,
        J::BadSignature => DenyReason::BadSignature,
        _ => DenyReason::Malformed,
    };
    Denial::new(reason, e.to_string())
}

fn check_tenant(subject: &Principal, requested: Option<&str>) -> Result<TenantId, Denial> {
    let entry_tenant = &subject.entry.tenant;
    let Some(evidence_tenant) = &subject.evidence.tenant else {
        return Err(Denial::new(
            DenyReason::MissingTenant,
            format!(
                "issuer {} binds no tenant for this token",
                subject.evidence.issuer
            ),
        ));
    };
    if evidence_tenant != entry_tenant {
        return Err(Denial::new(
            DenyReason::TenantMismatch,
            format!(
                "issuer {} binds tenant {evidence_tenant}, entry {} is in {entry_tenant}",
                subject.evidence.issuer, subject.entry.id
            ),
        ));
    }
    if let Some(asked) = requested {
        if asked != entry_tenant.as_str() {
            return Err(Denial::new(
                DenyReason::TenantMismatch,
                format!(
                    "request asks for tenant {}, identity is in {entry_tenant}",
                    short(asked)
                ),
            ));
        }
    }
    Ok(entry_tenant.clone())
}

fn check_revoked(
    revocations: &crate::registry::RevocationSet,
    p: &Principal,
    now: i64,
) -> Result<(), Denial> {
    let entry_keys = [
        ("entry", p.entry.id.as_str()),
        ("spiffe-id", &p.evidence.subject),
        ("spiffe-id", &p.entry.spiffe_id.to_string()),
    ];
    let evidence_keys = p
        .evidence
        .revocation_keys
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()));
    for (kind, value) in entry_keys
        .iter()
        .map(|(k, v)| (*k, *v))
        .chain(evidence_keys)
    {
        if let Some(reason) = revocations.check(kind, value, now) {
            return Err(Denial::new(
                DenyReason::Revoked,
                format!("{kind} {value} is revoked ({reason})"),
            ));
        }
    }
    Ok(())
}

fn act_depth(act: Option<&Value>) -> usize {
    let mut depth = 0;
    let mut cur = act;
    while let Some(a) = cur {
        depth += 1;
        cur = a.get("act");
    }
    depth
}

fn act_chain(act: Option<&Value>) -> String {
    let mut out = String::new();
    let mut cur = act;
    while let Some(a) = cur {
        out.push_str(" <- ");
        out.push_str(a.get("sub").and_then(Value::as_str).unwrap_or("?"));
        cur = a.get("act");
    }
    out
}

fn collect_act_subs(act: Option<&Value>, keys: &mut Vec<(String, String)>) {
    let mut cur = act;
    while let Some(a) = cur {
        if let Some(sub) = a.get("sub").and_then(Value::as_str) {
            keys.push(("spiffe-id".into(), sub.to_owned()));
        }
        cur = a.get("act");
    }
}

/// The unverified `iss` of a compact JWT, only to route verification.
pub fn peek_issuer(token: &str) -> Option<String> {
    if token.len() > lanyard_jose::MAX_COMPACT_LEN {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let bytes = B64.decode(payload).ok()?;
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    serde_json::from_slice::<Iss>(&bytes).ok()?.iss
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
        serde_urlencoded::to_string(pairs)
            .unwrap_or_default()
            .into_bytes()
    }

    const BASE: &[(&str, &str)] = &[
        ("grant_type", GRANT_TOKEN_EXCHANGE),
        ("subject_token", "t"),
        ("subject_token_type", TYPE_JWT),
        ("audience", "a"),
    ];

    #[test]
    fn parses_a_full_request() {
        let mut p = BASE.to_vec();
        p.extend([
            ("audience", "b"),
            ("resource", "https://r"),
            ("scope", "read  write"),
            ("requested_token_type", TYPE_ACCESS_TOKEN),
        ]);
        let r = parse_form(&form(&p));
        let r = r.as_ref().map_err(|d| d.to_string());
        assert_eq!(
            r.map(|r| (r.audiences.clone(), r.scope.clone(), r.as_access_token)),
            Ok((
                vec!["a".into(), "b".into(), "https://r".into()],
                Some(vec!["read".into(), "write".into()]),
                true
            ))
        );
    }

    #[test]
    fn refuses_bad_shapes_with_the_parameter_named() {
        let with = |extra: &[(&str, &str)], drop: &str| {
            let mut p: Vec<(&str, &str)> =
                BASE.iter().copied().filter(|(k, _)| *k != drop).collect();
            p.extend_from_slice(extra);
            parse_form(&form(&p))
                .err()
                .map(|d| (d.reason, d.detail))
                .unwrap_or((DenyReason::Revoked, "accepted".into()))
        };
        let cases: Vec<((DenyReason, String), DenyReason, &str)> = vec![
            (
                with(&[], "grant_type"),
                DenyReason::InvalidRequest,
                "grant_type",
            ),
            (
                with(&[("grant_type", "password")], "grant_type"),
                DenyReason::UnsupportedTokenType,
                "grant_type",
            ),
            (
                with(&[], "subject_token"),
                DenyReason::InvalidRequest,
                "subject_token",
            ),
            (
                with(&[], "subject_token_type"),
                DenyReason::InvalidRequest,
                "subject_token_type",
            ),
            (
                with(&[("subject_token_type", "urn:x")], "subject_token_type"),
                DenyReason::InvalidRequest,
                "subject_token_type",
            ),
            (
                with(&[], "audience"),
                DenyReason::InvalidRequest,
                "audience",
            ),
            (
                with(&[("subject_token", "u")], ""),
                DenyReason::InvalidRequest,
                "more than once",
            ),
            (
                with(&[("grant_type", GRANT_TOKEN_EXCHANGE)], ""),
                DenyReason::InvalidRequest,
                "more than once",
            ),
            (
                with(
                    &[(
                        "requested_token_type",
                        "urn:ietf:params:oauth:token-type:saml2",
                    )],
                    "",
                ),
                DenyReason::InvalidRequest,
                "requested_token_type",
            ),
            (
                with(&[("actor_token", "x")], ""),
                DenyReason::InvalidRequest,
                "actor_token_type",
            ),
            (
                with(&[("actor_token_type", TYPE_JWT)], ""),
                DenyReason::InvalidRequest,
                "actor_token",
            ),
            (
                with(&[("expires_in", "soon")], ""),
                DenyReason::InvalidRequest,
                "expires_in",
            ),
        ];
        for (got, reason, needle) in cases {
            assert_eq!(got.0, reason, "{needle}: {}", got.1);
            assert!(got.1.contains(needle), "{needle}: {}", got.1);
        }
        assert!(parse_form(b"%%%=\xff").is_err());
    }

    #[test]
    fn client_assertion_form_maps_scope_to_audience() {
        let p = [
            ("grant_type", "client_credentials"),
            ("client_assertion_type", ASSERTION_JWT_BEARER),
            ("client_assertion", "jwt"),
            ("scope", "api://AzureADTokenExchange/.default"),
            ("client_id", "x"),
        ];
        let r = parse_form(&form(&p)).map_err(|d| d.to_string());
        assert_eq!(
            r.map(|r| (r.subject_token, r.audiences)),
            Ok(("jwt".into(), vec!["api://AzureADTokenExchange".into()]))
        );
    }

    #[test]
    fn act_chains_nest_and_count() {
        let act = json!({"sub": "b", "act": {"sub": "a"}});
        assert_eq!(act_depth(Some(&act)), 2);
        assert_eq!(act_chain(Some(&act)), " <- b <- a");
        assert_eq!(act_depth(None), 0);
    }
}
