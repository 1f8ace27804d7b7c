//! `Attestor::explain`: the steps, in order, ending at the first denial.

use lanyard_attest::Outcome;
use lanyard_core::{Clock, DenyReason};
use serde_json::json;

use crate::TestResult;

#[tokio::test]
async fn explain_lists_each_step() -> TestResult {
    let (clock, k8s, a) = crate::k8s_setup();
    let now = clock.unix_seconds();
    let token = k8s.sign(&k8s.k8s_claims(now, "payments", "api"));
    let (steps, result) = a.explain(&token).await;
    let ev = result?;
    assert_eq!(
        Some(ev),
        a.verify(&token).await.ok(),
        "explain decides like verify"
    );
    let names: Vec<&str> = steps.iter().map(|s| s.step).collect();
    assert_eq!(
        names,
        [
            "parse",
            "issuer",
            "legacy",
            "algorithm",
            "keys",
            "signature",
            "claims",
            "identity",
            "tenant"
        ]
    );
    assert!(
        steps.iter().all(|s| s.outcome == Outcome::Passed),
        "{steps:?}"
    );
    let detail = |name: &str| {
        steps
            .iter()
            .find(|s| s.step == name)
            .map(|s| s.detail.clone())
            .unwrap_or_default()
    };
    assert!(
        detail("identity").contains("k8s:ns:payments"),
        "{}",
        detail("identity")
    );
    assert!(detail("keys").contains("inline"), "{}", detail("keys"));
    assert!(detail("tenant").contains("payments"));
    let sig = token.rsplit('.').next().unwrap_or_default();
    for s in &steps {
        assert!(
            !s.detail.contains(sig),
            "step {} leaks the signature",
            s.step
        );
    }
    // Serialised for the admin API / CLI.
    let v = serde_json::to_value(&steps)?;
    assert_eq!(v[0]["outcome"], "passed");

    let mut c = k8s.k8s_claims(now, "payments", "api");
    c["aud"] = json!("elsewhere");
    let (steps, result) = a.explain(&k8s.sign(&c)).await;
    assert_eq!(
        result.err().map(|d| d.reason),
        Some(DenyReason::WrongAudience)
    );
    let last = steps.last().ok_or("no steps")?;
    assert_eq!(
        (last.step, last.outcome),
        ("claims", Outcome::Denied(DenyReason::WrongAudience))
    );
    assert_eq!(serde_json::to_value(last)?["outcome"], "wrong_audience");
    Ok(())
}
