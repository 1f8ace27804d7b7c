//! The fail-closed table of `docs/SECURITY.md`, one case per policy row,
//! decided by the pure policy: no server, no store, no keys.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::audience::{AudienceProfile, SubjectTemplate};
use crate::revocation::{RevocationKey, RevocationKind, RevocationRule};
use crate::{Entry, Evidence, ProfileSet, RevocationSet, Selector, SpiffeId, TenantId};

const NOW: i64 = 1_000_000;
const ISSUER: &str = "https://lanyard.example.org";

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn entry(eid: &str, spiffe_id: &str, tenant_name: &str) -> Entry {
    Entry {
        id: eid.into(),
        spiffe_id: id(spiffe_id),
        tenant: tenant(tenant_name),
        issuer: Some("k8s".into()),
        parent: None,
        dns_names: Vec::new(),
        selectors: vec![Selector::parse("k8s:ns:pay").unwrap_or_else(|e| panic!("{e}"))],
        audiences: Vec::new(),
        ttl: None,
        max_ttl: None,
        scopes: vec!["read".into(), "write".into()],
        may_act: Vec::new(),
        admin: false,
        token_reviewer: false,
        grants: Vec::new(),
        role: None,
        federates_with: Vec::new(),
        created_at: 0,
    }
}

fn evidence(tenant_name: Option<&str>) -> Evidence {
    Evidence {
        issuer: "k8s".into(),
        tenant: tenant_name.map(tenant),
        subject: "system:serviceaccount:pay:api".into(),
        selectors: Vec::new(),
        jti: Some("ext-jti".into()),
        expires_at: NOW + 3600,
        digest: "d".into(),
        revocation_keys: vec![
            RevocationKey::new(RevocationKind::K8sSaUid, "sa-uid"),
            RevocationKey::new(RevocationKind::K8sPodUid, "pod-uid"),
            RevocationKey::new(RevocationKind::Jti, "ext-jti"),
            RevocationKey::new(
                RevocationKind::Subject,
                "https://k8s:system:serviceaccount:pay:api",
            ),
        ],
    }
}

fn principal(e: Entry, ev: Evidence) -> Principal {
    Principal {
        evidence: ev,
        entry: Arc::new(e),
        carried: None,
    }
}

fn subject() -> Principal {
    let mut e = entry("e-api", "spiffe://example.org/ns/pay/sa/api", "pay");
    e.may_act = vec!["spiffe://example.org/agents/*".into()];
    principal(e, evidence(Some("pay")))
}

fn actor(name: &str, tenant_name: &str) -> Principal {
    principal(
        entry(
            &format!("e-{name}"),
            &format!("spiffe://example.org/agents/{name}"),
            tenant_name,
        ),
        evidence(Some(tenant_name)),
    )
}

fn limits() -> Limits {
    Limits {
        own_audience: ISSUER.into(),
        jwt_default_ttl: Duration::from_secs(300),
        jwt_max_ttl: Duration::from_secs(3600),
        max_delegation_depth: 2,
        x509_ttl: Duration::from_secs(3600),
        x509_max_ttl: Duration::from_secs(86400),
    }
}

fn revoked(kind: RevocationKind, value: &str) -> RevocationSet {
    RevocationSet::new([RevocationRule {
        key: RevocationKey::new(kind, value),
        until: None,
        reason: "compromised".into(),
    }])
}

fn profiles() -> ProfileSet {
    let profile =
        |pid: &str, aud: &str, alg: Option<&str>, template: Option<&str>| AudienceProfile {
            id: pid.into(),
            audience: aud.into(),
            tenant: Some(tenant("pay")),
            entry: None,
            algorithm: alg.map(str::to_owned),
            subject_template: template
                .map(|t| SubjectTemplate::parse(t).unwrap_or_else(|e| panic!("{t}: {e}"))),
            created_at: 0,
        };
    ProfileSet::new(vec![
        profile(
            "p-role",
            "api://role",
            None,
            Some("tenant/{tenant}/role/{role}"),
        ),
        profile("p-rs", "api://rs", Some("RS256"), None),
        profile("p-ps", "api://ps", Some("PS256"), None),
    ])
}

struct Case {
    row: &'static str,
    subject: Principal,
    actor: Option<Principal>,
    audiences: Vec<String>,
    scope: Option<Vec<String>>,
    tenant: Option<&'static str>,
    ttl: Option<Duration>,
    revocations: RevocationSet,
    want: DenyReason,
}

fn case(row: &'static str, want: DenyReason) -> Case {
    Case {
        row,
        subject: subject(),
        actor: None,
        audiences: vec!["api://x".into()],
        scope: None,
        tenant: None,
        ttl: None,
        revocations: RevocationSet::default(),
        want,
    }
}

fn run(c: &Case) -> Result<JwtGrant, Denial> {
    let limits = limits();
    let profiles = profiles();
    let policy = Policy {
        limits: &limits,
        revocations: &c.revocations,
        profiles: &profiles,
        algorithms: &["ES256", "RS256"],
        now: NOW,
    };
    let req = JwtRequest {
        audiences: &c.audiences,
        scope: c.scope.as_deref(),
        ttl: c.ttl,
        tenant: c.tenant,
    };
    policy.decide_jwt(&c.subject, c.actor.as_ref(), &req, &mut Trace::for_audit())
}

fn with_carried(mut p: Principal, carried: Carried) -> Principal {
    p.carried = Some(carried);
    p
}

#[test]
fn fail_closed_table() {
    use DenyReason as R;
    let mut cases = Vec::new();

    let mut c = case(
        "issuer binds the tenant to a claim the token lacks",
        R::MissingTenant,
    );
    c.subject.evidence.tenant = None;
    cases.push(c);

    let mut c = case(
        "the issuer's tenant differs from the entry's",
        R::TenantMismatch,
    );
    c.subject.evidence.tenant = Some(tenant("acme"));
    cases.push(c);

    let mut c = case(
        "requested tenant differs from the identity's",
        R::TenantMismatch,
    );
    c.tenant = Some("acme");
    cases.push(c);

    for (kind, value) in [
        (RevocationKind::Jti, "ext-jti"),
        (
            RevocationKind::SpiffeId,
            "spiffe://example.org/ns/pay/sa/api",
        ),
        (RevocationKind::K8sSaUid, "sa-uid"),
        (RevocationKind::K8sPodUid, "pod-uid"),
        (RevocationKind::Entry, "e-api"),
        (
            RevocationKind::Subject,
            "https://k8s:system:serviceaccount:pay:api",
        ),
    ] {
        let mut c = case(
            "revoked jti, SPIFFE ID, sa uid, pod uid, entry or issuer:subject",
            R::Revoked,
        );
        c.revocations = revoked(kind, value);
        cases.push(c);
    }

    let mut c = case("audience the entry does not allow", R::AudienceNotAllowed);
    Arc::make_mut(&mut c.subject.entry).audiences = vec!["api://only".into()];
    cases.push(c);

    let mut c = case("audience with control characters", R::InvalidRequest);
    c.audiences = vec!["api://x\u{1b}".into()];
    cases.push(c);

    let mut c = case("more than 16 audiences", R::InvalidRequest);
    c.audiences = (0..17).map(|i| format!("api://{i}")).collect();
    cases.push(c);

    let mut c = case(
        "profile template needs {role} the entry lacks",
        R::AudienceProfile,
    );
    c.audiences = vec!["api://role".into()];
    cases.push(c);

    let mut c = case("profile algorithm without a key", R::AudienceProfile);
    c.audiences = vec!["api://ps".into()];
    cases.push(c);

    let mut c = case(
        "profiled audience requested with another",
        R::AudienceProfile,
    );
    c.audiences = vec!["api://rs".into(), "api://x".into()];
    cases.push(c);

    let mut c = case("actor not in the subject's may_act", R::ActorNotAllowed);
    c.actor = Some(principal(
        entry("e-evil", "spiffe://example.org/evil", "pay"),
        evidence(Some("pay")),
    ));
    cases.push(c);

    let mut c = case("actor in another tenant", R::TenantMismatch);
    c.actor = Some(actor("bot", "acme"));
    cases.push(c);

    let mut c = case(
        "actor whose issuer binds another tenant than its entry",
        R::TenantMismatch,
    );
    let mut a = actor("bot", "pay");
    a.evidence.tenant = Some(tenant("acme"));
    c.actor = Some(a);
    cases.push(c);

    let mut c = case("revoked actor", R::Revoked);
    c.actor = Some(actor("bot", "pay"));
    c.revocations = revoked(RevocationKind::SpiffeId, "spiffe://example.org/agents/bot");
    cases.push(c);

    let mut c = case("actor token that is itself delegated", R::ActorNotAllowed);
    c.actor = Some(with_carried(
        actor("bot", "pay"),
        Carried {
            act: ActChain::from_actors(vec![id("spiffe://example.org/agents/other")]),
            ..Carried::default()
        },
    ));
    cases.push(c);

    let mut c = case(
        "chain deeper than tokens.max_delegation_depth",
        R::ChainTooDeep,
    );
    c.subject = with_carried(
        subject(),
        Carried {
            act: ActChain::from_actors(vec![
                id("spiffe://example.org/agents/b"),
                id("spiffe://example.org/agents/a"),
            ]),
            ..Carried::default()
        },
    );
    c.actor = Some(actor("bot", "pay"));
    cases.push(c);

    let mut c = case(
        "audience the actor's entry does not allow",
        R::AudienceNotAllowed,
    );
    let mut a = actor("bot", "pay");
    Arc::make_mut(&mut a.entry).audiences = vec!["api://other".into()];
    c.actor = Some(a);
    cases.push(c);

    let mut c = case("scope beyond the entry's", R::ScopeWidening);
    c.scope = Some(vec!["admin".into()]);
    cases.push(c);

    let mut c = case(
        "scope beyond what the presented delegated token carried",
        R::ScopeWidening,
    );
    c.subject = with_carried(
        subject(),
        Carried {
            scopes: Some(vec!["read".into()]),
            ..Carried::default()
        },
    );
    c.scope = Some(vec!["write".into()]);
    cases.push(c);

    let mut c = case("evidence with no lifetime left", R::Expired);
    c.subject.evidence.expires_at = NOW;
    cases.push(c);

    let mut c = case("an entry naming a reserved ID (INV-8)", R::ReservedId);
    Arc::make_mut(&mut c.subject.entry).spiffe_id = id("spiffe://example.org/lanyard/node/dev");
    cases.push(c);

    for c in &cases {
        let got = run(c).err().map(|d| d.reason);
        assert_eq!(got, Some(c.want), "row {:?}", c.row);
    }
    // Every case is a one-field change from a request that is granted.
    assert!(run(&case("baseline", R::Revoked)).is_ok());
}

#[test]
fn grants_narrow_and_name_the_chain() {
    let mut c = case("delegation allowed by may_act", DenyReason::Revoked);
    c.actor = Some(actor("bot", "pay"));
    c.scope = Some(vec!["read".into()]);
    c.audiences = vec![ISSUER.into(), "api://x".into(), "api://x".into()];
    let g = run(&c).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(g.scopes, vec!["read".to_owned()]);
    assert_eq!(g.audiences, vec![ISSUER.to_owned(), "api://x".to_owned()]);
    assert_eq!(
        g.chain(),
        "spiffe://example.org/ns/pay/sa/api <- spiffe://example.org/agents/bot"
    );
    let claims = g.claims(ISSUER, "j".into());
    assert_eq!(claims.sub, "spiffe://example.org/ns/pay/sa/api");
    assert_eq!(claims.act.depth(), 1);
    assert_eq!(claims.tenant, "pay");

    // The server's own audience is allowed even when the entry lists others.
    let mut c = case("own audience", DenyReason::Revoked);
    Arc::make_mut(&mut c.subject.entry).audiences = vec!["api://only".into()];
    c.audiences = vec![ISSUER.into()];
    assert!(run(&c).is_ok());

    // A may_act claim in a presented Lanyard token allows that actor.
    let mut c = case("may_act claim", DenyReason::Revoked);
    Arc::make_mut(&mut c.subject.entry).may_act.clear();
    c.subject = with_carried(
        c.subject,
        Carried {
            may_act: Some("spiffe://example.org/agents/bot".into()),
            ..Carried::default()
        },
    );
    c.actor = Some(actor("bot", "pay"));
    assert!(run(&c).is_ok());

    // An RS256 profile signs with RS256; a role template renders the role.
    let mut c = case("profile", DenyReason::Revoked);
    c.audiences = vec!["api://rs".into()];
    assert_eq!(run(&c).map(|g| g.alg).ok(), Some("RS256"));
    let mut c = case("template", DenyReason::Revoked);
    Arc::make_mut(&mut c.subject.entry).role = Some("payer".into());
    c.audiences = vec!["api://role".into()];
    let g = run(&c).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(g.sub, "tenant/pay/role/payer");
    assert_eq!(g.profile.as_deref(), Some("p-role"));
}

#[test]
fn ttl_never_exceeds_any_maximum() {
    // (entry ttl, entry max, requested, evidence left, expected)
    type Case = (Option<u64>, Option<u64>, Option<u64>, i64, u64);
    let cases: [Case; 7] = [
        (None, None, None, 3600, 300),
        (Some(600), None, None, 3600, 600),
        (None, Some(120), Some(900), 3600, 120),
        (None, None, Some(86_400), 86_400, 3600),
        (Some(600), None, Some(60), 3600, 60),
        (None, None, Some(900), 30, 30),
        // issue 9: an entry TTL above a tokens.max_ttl lowered later is capped.
        (Some(7200), Some(7200), None, 86_400, 3600),
    ];
    for (ttl, max, req, left, want) in cases {
        let mut c = case("ttl", DenyReason::Revoked);
        let e = Arc::make_mut(&mut c.subject.entry);
        e.ttl = ttl.map(Duration::from_secs);
        e.max_ttl = max.map(Duration::from_secs);
        c.ttl = req.map(Duration::from_secs);
        c.subject.evidence.expires_at = NOW + left;
        let g = run(&c).unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(g.ttl.as_secs(), want, "{ttl:?} {max:?} {req:?} {left}");
        assert_eq!(g.expires_at(), NOW + i64::try_from(want).unwrap_or(0));
    }
}

fn x509(rev: &RevocationSet, e: &Entry, node: &SpiffeId) -> Result<X509Grant, Denial> {
    let limits = limits();
    let profiles = ProfileSet::default();
    Policy {
        limits: &limits,
        revocations: rev,
        profiles: &profiles,
        algorithms: &["ES256"],
        now: NOW,
    }
    .decide_x509(e, node)
}

#[test]
fn x509_is_only_for_the_entry_of_the_calling_node() {
    let node = id("spiffe://example.org/lanyard/node/n1");
    let mut e = entry("e1", "spiffe://example.org/w", "pay");
    e.parent = Some(node.clone());
    e.dns_names = vec!["w.example.org".into()];
    let none = RevocationSet::default();
    let g = x509(&none, &e, &node);
    assert_eq!(g.as_ref().map(|g| g.ttl.as_secs()).ok(), Some(3600));
    assert_eq!(
        g.map(|g| g.dns_names).ok(),
        Some(vec!["w.example.org".to_owned()])
    );
    let other = id("spiffe://example.org/lanyard/node/n2");
    let reason = |r: Result<X509Grant, Denial>| r.err().map(|d| d.reason);
    assert_eq!(
        reason(x509(&none, &e, &other)),
        Some(DenyReason::NotServedByNode)
    );
    let rev = revoked(RevocationKind::Entry, "e1");
    assert_eq!(reason(x509(&rev, &e, &node)), Some(DenyReason::Revoked));
    let mut reserved = e.clone();
    reserved.spiffe_id = id("spiffe://example.org/lanyard/server");
    assert_eq!(
        reason(x509(&none, &reserved, &node)),
        Some(DenyReason::ReservedId)
    );
}

#[test]
fn the_trace_names_every_step_up_to_a_denial() {
    let mut c = case("trace", DenyReason::Revoked);
    c.scope = Some(vec!["admin".into()]);
    let limits = limits();
    let profiles = profiles();
    let policy = Policy {
        limits: &limits,
        revocations: &c.revocations,
        profiles: &profiles,
        algorithms: &["ES256"],
        now: NOW,
    };
    let mut trace = Trace::recording();
    let req = JwtRequest {
        audiences: &c.audiences,
        scope: c.scope.as_deref(),
        ..JwtRequest::default()
    };
    assert!(policy
        .decide_jwt(&c.subject, None, &req, &mut trace)
        .is_err());
    let steps: Vec<(&str, bool)> = trace.steps.iter().map(|s| (s.step, s.ok)).collect();
    assert_eq!(
        steps,
        [
            ("identity", true),
            ("tenant", true),
            ("revocation", true),
            ("audience", true),
            ("scope", false)
        ]
    );
    assert!(trace.lines().contains("FAIL scope: scope_widening"));
}
