//! SpinApps: spin-operator-shaped pods are mutated like any pod, and the
//! SpinApp validating webhook refuses what cannot work.

use lanyard_k8s::mutate::azure::reserved_volume_name;
use serde_json::{json, Value};

use crate::support::{
    in_process, pod_review, response_of, review, RunningWebhook, StubApiServer, TestResult,
};

const CONFIG: &str = "[webhook.azure]\ntenant_id = \"tenantID\"\n";

fn yaml(text: &str) -> Result<Value, Box<dyn std::error::Error>> {
    Ok(serde_saphyr::from_str(text)?)
}

fn sa(name: &str, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": "apps", "annotations": annotations}})
}

/// The pod the ReplicaSet controller makes from a Deployment's template:
/// no name yet (generateName), the template's labels plus pod-template-hash.
fn pod_of(deployment: &Value) -> Value {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": deployment["spec"]["template"]["metadata"].clone(),
        "spec": deployment["spec"]["template"]["spec"].clone()});
    let name = deployment["metadata"]["name"].as_str().unwrap_or("");
    pod["metadata"]["generateName"] = json!(format!("{name}-5d8f7c9b4-"));
    pod["metadata"]["namespace"] = deployment["metadata"]["namespace"].clone();
    pod["metadata"]["labels"]["pod-template-hash"] = json!("5d8f7c9b4");
    pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "name": format!("{name}-5d8f7c9b4"), "uid": "11111111-2222-3333-4444-555555555555", "controller": true}]);
    pod
}

#[tokio::test]
async fn a_spin_operator_pod_is_mutated_like_any_pod() -> TestResult {
    let deployment = yaml(include_str!("../fixtures/spinapp-deployment.yaml"))?;
    let pod = pod_of(&deployment);
    assert_eq!(
        pod["metadata"]["labels"]["core.spinkube.dev/app-name"],
        json!("wid-spinapp")
    );
    let hook = in_process(
        CONFIG,
        &[sa(
            "workload-identity-sa",
            json!({"azure.workload.identity/client-id": "00000000-0000-0000-0000-00000000c1d0"}),
        )],
    )?;
    let reviewed = hook.review_pod(&pod_review(&pod, "apps")).await?;
    assert!(reviewed.allowed, "{}", reviewed.message);
    let mut result = pod.clone();
    lanyard_k8s::patch::apply(&mut result, &reviewed.patch)?;
    let c = &result["spec"]["containers"][0];
    let env: Vec<&str> = c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(
        env,
        [
            "SPIN_HTTP_LISTEN_ADDR",
            "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID",
            "AZURE_FEDERATED_TOKEN_FILE",
            "AZURE_AUTHORITY_HOST"
        ]
    );
    assert_eq!(
        c["env"][1]["value"],
        json!("00000000-0000-0000-0000-00000000c1d0")
    );
    // spin-operator's own mount and volume are kept, ours come after.
    let volume = reserved_volume_name("wid-spinapp-5d8f7c9b4- (prefix)");
    assert_eq!(c["volumeMounts"][0]["name"], json!("spin-runtime-config"));
    assert_eq!(
        c["volumeMounts"][1],
        json!({"name": volume, "mountPath": "/var/run/secrets/azure/wi", "readOnly": true})
    );
    assert_eq!(
        result["spec"]["volumes"][0]["name"],
        json!("spin-runtime-config")
    );
    assert_eq!(result["spec"]["volumes"][1]["name"], json!(volume));
    // The runtime class and everything else spin-operator set is untouched.
    assert_eq!(
        result["spec"]["runtimeClassName"],
        json!("wasmtime-spin-v2")
    );
    assert!(
        reviewed.patch.iter().all(|op| op["op"] == "add"),
        "{:?}",
        reviewed.patch
    );
    Ok(())
}

fn spinapp(sa: Option<&str>, labels: Value) -> Result<Value, Box<dyn std::error::Error>> {
    let mut app = yaml(include_str!("../fixtures/spinapp.yaml"))?;
    match sa {
        Some(s) => app["spec"]["serviceAccountName"] = json!(s),
        None => {
            if let Some(spec) = app["spec"].as_object_mut() {
                spec.remove("serviceAccountName");
            }
        }
    }
    app["spec"]["podLabels"] = labels;
    Ok(app)
}

fn spin_review(app: &Value) -> Vec<u8> {
    review(
        app,
        "apps",
        ("core.spinkube.dev", "v1alpha1", "SpinApp"),
        "spin-uid",
    )
}

#[tokio::test]
async fn the_spinapp_webhook_refuses_what_cannot_work() -> TestResult {
    let azure = json!({"azure.workload.identity/use": "true"});
    let with_id = sa(
        "workload-identity-sa",
        json!({"azure.workload.identity/client-id": "c1"}),
    );
    let without_id = sa(
        "no-id",
        json!({"azure.workload.identity/client_id": "typo"}),
    );
    let hook = in_process(CONFIG, &[with_id, without_id])?;
    // (service account, podLabels, allowed, message fragments)
    let table: Vec<(Option<&str>, Value, bool, Vec<&str>)> = vec![
        (Some("workload-identity-sa"), azure.clone(), true, vec![]),
        (
            Some("missing-sa"),
            azure.clone(),
            false,
            vec![
                "SpinApp apps/wid-spinapp asks for Azure workload identity",
                "spec.serviceAccountName \"missing-sa\" does not exist in namespace apps",
                "azure.workload.identity/client-id",
                "kubectl create serviceaccount missing-sa -n apps",
            ],
        ),
        (
            None,
            azure.clone(),
            false,
            vec!["spec.serviceAccountName is not set, so its pods run as \"default\", which does not exist"],
        ),
        (
            Some("no-id"),
            azure.clone(),
            false,
            vec![
                "service account apps/no-id has no azure.workload.identity/client-id annotation",
                "kubectl annotate serviceaccount no-id -n apps azure.workload.identity/client-id=",
            ],
        ),
        (Some("no-id"), json!({"lanyard.io/use": "true"}), true, vec![]),
        (Some("missing-sa"), json!({"lanyard.io/use": "true"}), false, vec!["asks for Lanyard workload identity", "does not exist"]),
        (Some("missing-sa"), json!({"app": "x"}), true, vec![]),
        (Some("missing-sa"), json!({"azure.workload.identity/use": "True"}), true, vec![]),
    ];
    for (sa, labels, allowed, fragments) in table {
        let app = spinapp(sa, labels.clone())?;
        let r = hook.review_spinapp(&spin_review(&app)).await?;
        assert_eq!(r.allowed, allowed, "{sa:?} {labels}: {}", r.message);
        for f in fragments {
            assert!(
                r.message.contains(f),
                "{sa:?} {labels}: {:?} lacks {f:?}",
                r.message
            );
        }
        if labels == json!({"azure.workload.identity/use": "True"}) {
            assert!(
                r.warnings.iter().any(|w| w.contains("not \"true\"")),
                "{:?}",
                r.warnings
            );
        }
        assert!(r.patch.is_empty(), "a validating webhook never patches");
    }
    Ok(())
}

#[tokio::test]
async fn the_spinapp_webhook_over_https() -> TestResult {
    let stub = StubApiServer::start().await?;
    let hook = RunningWebhook::start(&stub, CONFIG).await?;
    let app = spinapp(
        Some("workload-identity-sa"),
        json!({"azure.workload.identity/use": "true"}),
    )?;
    let (code, text) = hook.post("/validate-spinapp", spin_review(&app)).await?;
    assert_eq!(code, 200);
    let (response, _) = response_of(&serde_json::from_str(&text)?)?;
    assert_eq!(response["allowed"], json!(false));
    assert_eq!(response["uid"], json!("spin-uid"));
    stub.state.put(&sa(
        "workload-identity-sa",
        json!({"azure.workload.identity/client-id": "c1"}),
    ));
    let (_, text) = hook.post("/validate-spinapp", spin_review(&app)).await?;
    let (response, _) = response_of(&serde_json::from_str(&text)?)?;
    assert_eq!(response["allowed"], json!(true), "{response}");
    hook.stop().await?;
    stub.stop();
    Ok(())
}
