use serde_json::json;

use super::azure::{pod_name_for_hash, reserved_volume_name, token_expiration};
use super::*;

fn sa(annotations: serde_json::Value) -> ServiceAccount {
    serde_json::from_value(
        json!({"metadata": {"name": "sa", "namespace": "ns", "annotations": annotations}}),
    )
    .unwrap_or_default()
}

#[test]
fn reserved_volume_name_is_63_characters_from_the_pod_name() {
    let n = reserved_volume_name("pod");
    assert_eq!(n.len(), 63);
    // The exact digest is pinned by the case file (computed there with Python's hashlib).
    assert!(n.starts_with("azure-workload-identity-reserved-"), "{n}");
    assert_ne!(n, reserved_volume_name("pod2"));
    assert_eq!(
        pod_name_for_hash(&json!({"metadata": {"generateName": "web-"}})),
        "web- (prefix)"
    );
    assert_eq!(
        pod_name_for_hash(&json!({"metadata": {"name": "a", "generateName": "web-"}})),
        "a"
    );
}

#[test]
fn token_expiration_table() {
    let none = json!({});
    let pod = |v: &str| json!({"metadata": {"annotations": {"azure.workload.identity/service-account-token-expiration": v}}});
    let sa_with =
        |v: &str| sa(json!({"azure.workload.identity/service-account-token-expiration": v}));
    assert_eq!(token_expiration(&none, &sa(json!({}))), Ok(3600));
    assert_eq!(token_expiration(&none, &sa_with("4800")), Ok(4800));
    assert_eq!(token_expiration(&pod("4000"), &sa_with("4800")), Ok(4000));
    assert_eq!(token_expiration(&pod("86400"), &sa(json!({}))), Ok(86400));
    assert_eq!(
        token_expiration(&pod(""), &sa_with("5000")),
        Ok(5000),
        "an empty pod value falls through"
    );
    for bad in [
        "3599",
        "86401",
        "3600s",
        " 3600",
        "1e4",
        "99999999999999999999",
        "-3600",
    ] {
        let d = token_expiration(&pod(bad), &sa(json!({})));
        assert!(matches!(&d, Err(Denial { code: 400, .. })), "{bad}: {d:?}");
    }
}

#[test]
fn plan_reads_labels_exactly_and_defaults_the_service_account() {
    let m = Mutator::new(
        MutationConfig::render_default().unwrap_or(MutationConfig {
            azure: None,
            aws: None,
            lanyard: None,
        }),
        true,
    );
    let p = m.plan(
        &json!({"metadata": {"labels": {"azure.workload.identity/use": "true"}}, "spec": {}}),
    );
    assert!(p.azure && p.needs_service_account());
    assert_eq!(p.service_account, "default");
    let p = m.plan(&json!({"metadata": {"labels": {"azure.workload.identity/use": "TRUE"}}, "spec": {"serviceAccountName": "x"}}));
    assert!(!p.azure);
    assert_eq!(p.service_account, "x");
    assert_eq!(p.warnings.len(), 1);
}
