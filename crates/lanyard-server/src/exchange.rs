//! RFC 8693 token exchange, read forward:
//!
//! 1. **parse** the form ([`form::parse_form`]);
//! 2. **attest** each token: Lanyard's own JWT-SVIDs by [`verify::own_token`],
//!    anything else by the trusted issuers (`lanyard_attest`);
//! 3. **match** the evidence to its entry (`EntryIndex::match_evidence`, the
//!    one matcher);
//! 4. **decide** with the core policy (`lanyard_core::policy`);
//! 5. **sign and audit** with the one issuance path ([`crate::issuer`]).
//!
//! `explain` runs 1–4 as a dry run; the broker's RFC 8693 path runs 1–3 and
//! the policy's subject and actor checks, then asks the broker.

pub mod form;
pub mod verify;

use std::sync::Arc;

use lanyard_core::policy::{Carried, JwtGrant, JwtRequest, Principal, Step, Trace};
use lanyard_core::{ActChain, Clock, Decision, Denial, DenyReason};

use crate::issuer::{AuditContext, IssueError, IssuedJwt, Issuer};
use crate::keys::KeyManager;
use crate::registry::{Registry, Snapshot};
use crate::state::Settings;

pub use form::{
    parse_form, ExchangeRequest, ASSERTION_JWT_BEARER, GRANT_CLIENT_CREDENTIALS,
    GRANT_TOKEN_EXCHANGE, TYPE_ACCESS_TOKEN, TYPE_ID_TOKEN, TYPE_JWT, TYPE_POSTGRES_CREDENTIALS,
};

/// What audit records about a decision, allow or deny, as far as it got.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Subject identity, once known.
    pub subject: Option<String>,
    /// Tenant, once known.
    pub tenant: Option<String>,
    /// SHA-256 of the subject token.
    pub digest: Option<String>,
    /// The caller's SPIFFE ID when it is a workload of a federated trust
    /// domain (recorded as the event's actor).
    pub foreign: Option<String>,
}

/// Why an exchange issued nothing.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The policy (or attestation) denied; audited.
    #[error(transparent)]
    Denied(Denial),
    /// The decision could not be audited, or no key could sign.
    #[error(transparent)]
    Unavailable(IssueError),
}

/// What `explain` found.
#[derive(Debug)]
pub struct Explained {
    /// Allow or deny.
    pub decision: Decision,
    /// One line: what would be issued, or the denial.
    pub reason: String,
    /// Every step.
    pub steps: Vec<Step>,
}

/// Which token of a request is being attested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Subject,
    Actor,
}

impl Role {
    fn steps(self) -> (&'static str, &'static str) {
        match self {
            Self::Subject => ("attestation", "entry"),
            Self::Actor => ("actor attestation", "actor entry"),
        }
    }
}

/// The token-exchange service: attests, matches, asks the policy, issues.
#[derive(Debug)]
pub struct ExchangeService {
    registry: Arc<Registry>,
    keys: Arc<KeyManager>,
    issuer: Arc<Issuer>,
    clock: Arc<dyn Clock>,
    settings: Arc<Settings>,
}

impl ExchangeService {
    /// The service over these dependencies.
    pub fn new(
        registry: Arc<Registry>,
        keys: Arc<KeyManager>,
        issuer: Arc<Issuer>,
        clock: Arc<dyn Clock>,
        settings: Arc<Settings>,
    ) -> Self {
        Self {
            registry,
            keys,
            issuer,
            clock,
            settings,
        }
    }

    fn snapshot(&self) -> Snapshot {
        self.registry
            .snapshot(&self.settings, self.clock.unix_seconds())
    }

    pub(crate) fn snapshot_now(&self) -> Snapshot {
        self.snapshot()
    }

    pub(crate) fn issuer_url(&self) -> &str {
        &self.settings.issuer
    }

    pub(crate) fn keys(&self) -> &KeyManager {
        &self.keys
    }

    /// Decides, signs and audits one exchange. Every outcome is audited
    /// before this returns; nothing is issued without its event.
    ///
    /// # Errors
    /// [`ExchangeError::Denied`] (audited) or [`ExchangeError::Unavailable`].
    pub async fn exchange(
        &self,
        req: &ExchangeRequest,
        correlation_id: &str,
    ) -> Result<IssuedJwt, ExchangeError> {
        let mut trace = Trace::for_audit();
        let mut facts = Facts::default();
        let decided = self.decide(req, &mut trace, &mut facts).await;
        let actor = facts
            .foreign
            .clone()
            .or_else(|| facts.subject.clone())
            .unwrap_or_else(|| "unauthenticated".into());
        let ctx = AuditContext {
            correlation_id,
            actor: &actor,
            action: "token.exchange",
            evidence_digest: facts.digest.as_deref(),
        };
        match decided {
            Ok(grant) => self
                .issuer
                .issue_jwt(grant, ctx)
                .await
                .map_err(ExchangeError::Unavailable),
            Err(d) => {
                self.deny(ctx, &facts, &trace, &d)
                    .await
                    .map_err(ExchangeError::Unavailable)?;
                Err(ExchangeError::Denied(d))
            }
        }
    }

    /// Audits a denial, with the steps that led to it (so `lanyard audit
    /// show ID` explains it without the token).
    ///
    /// # Errors
    /// [`IssueError::Unavailable`] when the event could not be written.
    pub async fn deny(
        &self,
        ctx: AuditContext<'_>,
        facts: &Facts,
        trace: &Trace,
        d: &Denial,
    ) -> Result<(), IssueError> {
        let reason = if trace.steps.is_empty() {
            d.to_string()
        } else {
            format!("{d}\n{}", trace.lines())
        };
        self.issuer
            .record(
                ctx,
                facts.subject.clone().unwrap_or_else(|| "-".into()),
                facts.tenant.clone(),
                Decision::Deny,
                reason,
            )
            .await
    }

    /// The whole decision, up to the grant to sign. A dry run when `trace`
    /// is recording (`explain`): candidate entries are listed too.
    ///
    /// # Errors
    /// The first [`Denial`].
    pub async fn decide(
        &self,
        req: &ExchangeRequest,
        trace: &mut Trace,
        facts: &mut Facts,
    ) -> Result<JwtGrant, Denial> {
        let snap = self.snapshot();
        let subject = self.subject(&snap, req, trace, facts).await?;
        let actor = match &req.actor_token {
            Some(token) => Some(self.principal(&snap, token, Role::Actor, trace).await?),
            None => None,
        };
        let request = JwtRequest {
            audiences: &req.audiences,
            scope: req.scope.as_deref(),
            ttl: req.ttl,
            tenant: req.tenant.as_deref(),
        };
        snap.policy()
            .decide_jwt(&subject, actor.as_ref(), &request, trace)
    }

    /// Attests and matches the subject token, then runs the policy's
    /// subject checks (reserved ID, tenant, revocation) and, with an actor
    /// token, its delegation checks: the broker's RFC 8693 path.
    ///
    /// # Errors
    /// The first [`Denial`].
    pub async fn authenticate(
        &self,
        req: &ExchangeRequest,
        trace: &mut Trace,
        facts: &mut Facts,
    ) -> Result<(Principal, ActChain), Denial> {
        let snap = self.snapshot();
        let subject = self.subject(&snap, req, trace, facts).await?;
        let policy = snap.policy();
        policy.authorize(&subject, req.tenant.as_deref(), trace)?;
        let carried = subject.carried.clone().unwrap_or_default();
        let chain = match &req.actor_token {
            None => carried.act.clone(),
            Some(token) => {
                let actor = self.principal(&snap, token, Role::Actor, trace).await?;
                trace.record(
                    "delegation",
                    policy.delegate(&subject, &carried, &actor),
                    |c| c.describe(&subject.entry.spiffe_id.to_string()),
                )?
            }
        };
        Ok((subject, chain))
    }

    /// `explain`: the whole decision as a dry run, audited (never issues).
    ///
    /// # Errors
    /// [`IssueError::Unavailable`] when the event could not be written.
    pub async fn explain(
        &self,
        req: &ExchangeRequest,
        correlation_id: &str,
        admin: &str,
    ) -> Result<Explained, IssueError> {
        let mut trace = Trace::recording();
        let mut facts = Facts::default();
        let result = self.decide(req, &mut trace, &mut facts).await;
        let (decision, reason) = match &result {
            Ok(g) => {
                trace.ok("issue", || {
                    format!(
                        "would issue a {} JWT-SVID for {} ({}s); nothing was issued",
                        g.alg,
                        g.sub,
                        g.ttl.as_secs()
                    )
                });
                (
                    Decision::Allow,
                    format!("would issue {} for tenant {}", g.spiffe_id, g.tenant),
                )
            }
            Err(d) => (Decision::Deny, d.to_string()),
        };
        self.issuer
            .record(
                AuditContext {
                    correlation_id,
                    actor: admin,
                    action: "explain",
                    evidence_digest: facts.digest.as_deref(),
                },
                facts.subject.clone().unwrap_or_else(|| "-".into()),
                facts.tenant.clone(),
                Decision::Allow,
                format!("{decision}: {reason}"),
            )
            .await?;
        Ok(Explained {
            decision,
            reason,
            steps: trace.steps,
        })
    }

    /// Verifies a bearer JWT-SVID this server issued for `audience` (the
    /// broker's), matches its entry and runs the policy's subject checks.
    ///
    /// # Security
    /// Only Lanyard's own published keys, the exact audience, and every
    /// revocation key of the token and its entry.
    ///
    /// # Errors
    /// A [`Denial`] saying which check failed.
    pub fn verify_bearer(&self, token: &str, audience: &str) -> Result<Principal, Denial> {
        if verify::peek_issuer(token).as_deref() != Some(self.settings.issuer.as_str()) {
            return Err(Denial::new(
                DenyReason::UnknownIssuer,
                "the bearer token is not a JWT-SVID issued by this server",
            ));
        }
        let snap = self.snapshot();
        let (evidence, carried) = verify::own_token(&self.keys, token, audience, snap.now())?;
        let entry = snap.entries.match_evidence(&evidence, false).chosen?;
        let principal = Principal {
            evidence,
            entry,
            carried: Some(carried),
        };
        snap.policy()
            .authorize(&principal, None, &mut Trace::for_audit())?;
        Ok(principal)
    }

    async fn subject(
        &self,
        snap: &Snapshot,
        req: &ExchangeRequest,
        trace: &mut Trace,
        facts: &mut Facts,
    ) -> Result<Principal, Denial> {
        match self
            .principal(snap, &req.subject_token, Role::Subject, trace)
            .await
        {
            Ok(p) => {
                facts.digest = Some(p.evidence.digest.clone());
                facts.subject = Some(p.entry.spiffe_id.to_string());
                facts.tenant = Some(p.entry.tenant.to_string());
                if p.evidence.issuer.starts_with("spiffe://") {
                    facts.foreign = Some(p.evidence.subject.clone());
                }
                Ok(p)
            }
            Err(d) => {
                // Attestation failed before producing evidence, or matching
                // failed after: record the token's digest either way.
                facts.digest = Some(lanyard_attest::digest_hex(req.subject_token.as_bytes()));
                Err(d)
            }
        }
    }

    /// Attest, then match: a token in, a principal out.
    async fn principal(
        &self,
        snap: &Snapshot,
        token: &str,
        role: Role,
        trace: &mut Trace,
    ) -> Result<Principal, Denial> {
        let (step_attest, step_entry) = role.steps();
        let own = verify::peek_issuer(token).as_deref() == Some(self.settings.issuer.as_str());
        // A JWT-SVID whose subject is in a federated trust domain is
        // verified against that trust domain's bundle, and nothing else.
        // (No decode at all on the hot path of a server that federates
        // with nobody.)
        let foreign = if own || snap.federated.domains.is_empty() {
            None
        } else {
            verify::peek_spiffe_trust_domain(token)
                .filter(|td| td != &self.settings.trust_domain)
                .and_then(|td| snap.federated.get(&td).cloned())
        };
        let (evidence, carried) = if own {
            let (ev, carried) = trace.record(
                step_attest,
                verify::own_token(&self.keys, token, &self.settings.issuer, snap.now()),
                |(ev, _)| format!("Lanyard JWT-SVID for {}", ev.subject),
            )?;
            (ev, Some(carried))
        } else if let Some(domain) = foreign {
            let ev = trace.record(
                step_attest,
                verify::foreign_token(&domain, token, &self.settings.issuer, snap.now()),
                |ev| {
                    format!(
                        "JWT-SVID of federated trust domain {} for {}",
                        domain.trust_domain, ev.subject
                    )
                },
            )?;
            (ev, None::<Carried>)
        } else {
            let ev = snap.attestor.verify(token).await;
            let ev = trace.record(step_attest, ev, |ev| {
                format!(
                    "issuer {} verified; selectors [{}]",
                    ev.issuer,
                    ev.selectors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            (ev, None::<Carried>)
        };
        let report = snap.entries.match_evidence(&evidence, trace.explaining());
        for (e, why) in &report.considered {
            trace.steps.push(Step {
                step: "candidate",
                ok: true,
                detail: format!("entry {} ({}): {why}", e.id, e.spiffe_id),
            });
        }
        let entry = trace.record(step_entry, report.chosen, |e| {
            format!("entry {} grants {}", e.id, e.spiffe_id)
        })?;
        Ok(Principal {
            evidence,
            entry,
            carried,
        })
    }
}
