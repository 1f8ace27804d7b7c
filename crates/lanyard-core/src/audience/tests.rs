use super::*;

fn tenant(t: &str) -> TenantId {
    TenantId::parse(t).unwrap_or_else(|e| panic!("test tenant {t}: {e}"))
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap_or_else(|e| panic!("test id {s}: {e}"))
}

fn render(tpl: &str, t: &str, role: Option<&str>) -> Result<String, ProfileError> {
    let template = SubjectTemplate::parse(tpl)?;
    let t = tenant(t);
    let spiffe = id("spiffe://example.org/ns/payments/sa/api");
    template.render(&SubjectVars {
        tenant: &t,
        role,
        spiffe_id: &spiffe,
        entry: "e1",
    })
}

#[test]
fn renders_every_variable() {
    assert_eq!(
        render("tenant/{tenant}/role/{role}", "payments", Some("reader")),
        Ok("tenant/payments/role/reader".into())
    );
    assert_eq!(
        render(
            "{tenant}:{trust_domain}:{spiffe_path}:{entry}",
            "payments",
            None
        ),
        Ok("payments:example.org:ns/payments/sa/api:e1".into())
    );
    assert_eq!(render("{tenant}", "a", None), Ok("a".into()));
}

#[test]
fn refuses_bad_templates_by_rule() {
    let cases: &[(&str, ProfileError)] = &[
        ("", ProfileError::TemplateLength),
        (
            "tenant/{tenant} x",
            ProfileError::TemplateCharacter { found: ' ' },
        ),
        ("tenant/{tenant", ProfileError::UnbalancedBrace),
        ("tenant/{tenant}}", ProfileError::UnbalancedBrace),
        ("tenant/{te{nant}", ProfileError::UnbalancedBrace),
        ("role/{role}", ProfileError::TenantCount { count: 0 }),
        ("{tenant}/{tenant}", ProfileError::TenantCount { count: 2 }),
        // Not a whole segment: another tenant's name could complete it.
        ("t-{tenant}/x", ProfileError::TenantNotSegment),
        ("{tenant}-x", ProfileError::TenantNotSegment),
        ("{tenant}{role}", ProfileError::TenantNotSegment),
        // Only literal text before the tenant.
        ("{role}/{tenant}", ProfileError::TenantNotSegment),
        (
            "spiffe://example.org/{tenant}",
            ProfileError::SpiffeLookalike,
        ),
        ("SPIFFE:{tenant}", ProfileError::SpiffeLookalike),
    ];
    for (tpl, want) in cases {
        assert_eq!(SubjectTemplate::parse(tpl).as_ref(), Err(want), "{tpl:?}");
    }
    let long = format!("{}/{{tenant}}", "a".repeat(MAX_TEMPLATE_LEN));
    assert_eq!(
        SubjectTemplate::parse(&long),
        Err(ProfileError::TemplateLength)
    );
    match SubjectTemplate::parse("x/{tenant}/{namespace}") {
        Err(ProfileError::UnknownVariable { name, known }) => {
            assert_eq!(name, "namespace");
            assert!(known.contains("{role}") && known.contains("{spiffe_path}"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn render_refuses_missing_or_bad_role_and_long_subjects() {
    assert_eq!(
        render("tenant/{tenant}/role/{role}", "payments", None),
        Err(ProfileError::MissingRole { entry: "e1".into() })
    );
    assert!(matches!(
        render("tenant/{tenant}/role/{role}", "payments", Some("a/b")),
        Err(ProfileError::Role { .. })
    ));
    let prefix = format!("{}/", "p".repeat(200));
    let spiffe = id(&format!(
        "spiffe://example.org/{}",
        ["x".repeat(200), "y".repeat(200)].join("/")
    ));
    let t = tenant("payments");
    let template = SubjectTemplate::parse(&format!("{prefix}{{tenant}}/{{spiffe_path}}"));
    let got = template.map(|tpl| {
        tpl.render(&SubjectVars {
            tenant: &t,
            role: None,
            spiffe_id: &spiffe,
            entry: "e1",
        })
    });
    assert!(
        matches!(got, Ok(Err(ProfileError::SubjectTooLong { .. }))),
        "{got:?}"
    );
}

#[test]
fn two_tenants_never_share_a_rendered_subject() {
    // Same template, every pair of distinct tenants from a set built to
    // collide if the tenant were not delimited (a / a-b / ab, roles b / -b).
    let templates = [
        "tenant/{tenant}/role/{role}",
        "{tenant}/{role}",
        "x:{tenant}:{role}",
        "{tenant}:{spiffe_path}",
    ];
    let tenants = ["a", "ab", "a-b", "b"];
    let roles = ["b", "-b", "ab", "b.c"];
    for tpl in templates {
        let mut seen: HashMap<String, String> = HashMap::new();
        for t in tenants {
            for r in roles {
                let sub = render(tpl, t, Some(r)).unwrap_or_else(|e| panic!("{tpl} {t} {r}: {e}"));
                if let Some(other) = seen.insert(sub.clone(), t.to_owned()) {
                    assert_eq!(other, t, "{tpl}: tenants {other} and {t} share {sub}");
                }
            }
        }
    }
}

#[test]
fn roles_and_audiences_are_checked() {
    for ok in ["reader", "db.admin", "a_b-c", &"r".repeat(MAX_ROLE_LEN)] {
        assert_eq!(validate_role(ok), Ok(()), "{ok}");
    }
    for bad in [
        "",
        "a b",
        "a/b",
        "a:b",
        "{tenant}",
        &"r".repeat(MAX_ROLE_LEN + 1),
    ] {
        assert!(validate_role(bad).is_err(), "{bad:?}");
    }
    assert_eq!(validate_audience("api://AzureADTokenExchange"), Ok(()));
    for bad in ["", "a b", "a\nb", &"a".repeat(MAX_AUDIENCE_LEN + 1)] {
        assert_eq!(
            validate_audience(bad),
            Err(ProfileError::Audience),
            "{bad:?}"
        );
    }
}

fn profile(aud: &str, t: Option<&str>, e: Option<&str>, alg: &str) -> AudienceProfile {
    AudienceProfile {
        id: format!("{aud}-{t:?}-{e:?}"),
        audience: aud.into(),
        tenant: t.map(tenant),
        entry: e.map(str::to_owned),
        algorithm: Some(alg.into()),
        subject_template: None,
        created_at: 0,
    }
}

#[test]
fn the_most_specific_profile_wins_and_others_never_leak() {
    let set = ProfileSet::new(vec![
        profile("aud", None, None, "global"),
        profile("aud", Some("payments"), None, "tenant"),
        profile("aud", Some("payments"), Some("e1"), "entry"),
        profile("aud", Some("other"), None, "other"),
    ]);
    let alg = |t: &str, e: &str| {
        set.find("aud", &tenant(t), e)
            .and_then(|p| p.algorithm.clone())
    };
    assert_eq!(alg("payments", "e1").as_deref(), Some("entry"));
    assert_eq!(alg("payments", "e2").as_deref(), Some("tenant"));
    assert_eq!(alg("third", "e1").as_deref(), Some("global"));
    // An entry-scoped profile of one tenant never applies to another tenant's
    // entry with the same id.
    assert_eq!(alg("other", "e1").as_deref(), Some("other"));
    assert!(set.find("nope", &tenant("payments"), "e1").is_none());
    assert_eq!(set.iter().count(), 4);
}

#[test]
fn profile_scope_rules() {
    let mut p = profile("aud", None, None, "RS256");
    assert_eq!(p.check(), Ok(()));
    p.subject_template = SubjectTemplate::parse("tenant/{tenant}").ok();
    assert!(p.check().is_err_and(|e| e.contains("--tenant")));
    p.tenant = Some(tenant("payments"));
    assert_eq!(p.check(), Ok(()));
    p.algorithm = None;
    assert_eq!(p.check(), Ok(()));
    p.subject_template = None;
    assert!(p.check().is_err());
    let mut e = profile("aud", None, Some("e1"), "RS256");
    assert!(e.check().is_err());
    e.tenant = Some(tenant("payments"));
    assert_eq!(e.check(), Ok(()));
    assert_eq!(e.scope(), "entry e1 (tenant payments)");
}
