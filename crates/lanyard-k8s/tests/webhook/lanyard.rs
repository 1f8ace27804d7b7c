//! Lanyard's own convention (`lanyard.io/use: "true"`), alone and next to Azure's.

use lanyard_k8s::Webhook;
use serde_json::{json, Value};

use crate::support::{in_process, pod_review, TestResult};

async fn mutate(
    hook: &Webhook,
    pod: &Value,
) -> Result<(Value, lanyard_k8s::Reviewed), Box<dyn std::error::Error>> {
    let r = hook.review_pod(&pod_review(pod, "payments")).await?;
    let mut result = pod.clone();
    lanyard_k8s::patch::apply(&mut result, &r.patch)?;
    Ok((result, r))
}

fn pod(labels: Value, annotations: Value) -> Value {
    json!({"metadata": {"name": "api-0", "namespace": "payments", "labels": labels, "annotations": annotations},
        "spec": {"serviceAccountName": "api",
            "initContainers": [{"name": "migrate", "image": "m"}],
            "containers": [{"name": "api", "image": "a", "env": [{"name": "SPIFFE_ENDPOINT_SOCKET", "value": "unix:///custom.sock"}]},
                           {"name": "metrics", "image": "m"}]}})
}

#[tokio::test]
async fn lanyard_pods_get_the_token_and_the_workload_api_socket() -> TestResult {
    let hook = in_process(
        "[webhook.lanyard]\naudience = \"lanyard-prod\"\ntoken_expiration = \"15m\"\n",
        &[],
    )?;
    let p = pod(
        json!({"lanyard.io/use": "true"}),
        json!({"lanyard.io/skip-containers": "metrics"}),
    );
    let (result, r) = mutate(&hook, &p).await?;
    assert!(r.allowed);
    assert_eq!(
        result["spec"]["volumes"],
        json!([
            {"name": "lanyard-token", "projected": {"sources": [{"serviceAccountToken": {
                "path": "token", "expirationSeconds": 900, "audience": "lanyard-prod"}}]}},
            {"name": "lanyard-agent-socket", "hostPath": {"path": "/run/lanyard/agent", "type": "DirectoryOrCreate"}},
        ])
    );
    let mounts = json!([
        {"name": "lanyard-token", "mountPath": "/var/run/secrets/lanyard.io/serviceaccount", "readOnly": true},
        {"name": "lanyard-agent-socket", "mountPath": "/run/lanyard/agent", "readOnly": true},
    ]);
    let api = &result["spec"]["containers"][0];
    assert_eq!(api["volumeMounts"], mounts);
    // The existing SPIFFE_ENDPOINT_SOCKET is kept, LANYARD_TOKEN_FILE appended.
    assert_eq!(
        api["env"],
        json!([{"name": "SPIFFE_ENDPOINT_SOCKET", "value": "unix:///custom.sock"},
               {"name": "LANYARD_TOKEN_FILE", "value": "/var/run/secrets/lanyard.io/serviceaccount/token"}])
    );
    let init = &result["spec"]["initContainers"][0];
    assert_eq!(
        init["env"][0],
        json!({"name": "SPIFFE_ENDPOINT_SOCKET", "value": "unix:///run/lanyard/agent/workload.sock"})
    );
    assert_eq!(init["volumeMounts"], mounts);
    assert_eq!(
        result["spec"]["containers"][1], p["spec"]["containers"][1],
        "skipped"
    );
    // Re-admission changes nothing.
    let (_, again) = mutate(&hook, &result).await?;
    assert!(again.patch.is_empty(), "{:?}", again.patch);
    Ok(())
}

#[tokio::test]
async fn lanyard_needs_no_service_account_and_unlabelled_pods_are_untouched() -> TestResult {
    let hook = in_process("", &[])?;
    let (_, r) = mutate(&hook, &pod(json!({"lanyard.io/use": "true"}), json!({}))).await?;
    assert!(r.allowed && !r.patch.is_empty());
    let (_, r) = mutate(&hook, &pod(json!({"app": "x"}), json!({}))).await?;
    assert!(r.allowed && r.patch.is_empty());
    let (_, r) = mutate(&hook, &pod(json!({"lanyard.io/use": "yes"}), json!({}))).await?;
    assert!(r.patch.is_empty());
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("lanyard.io/use=\"yes\" is not \"true\"")),
        "{:?}",
        r.warnings
    );
    let off = in_process("[webhook.lanyard]\nenabled = false\n", &[])?;
    let (_, r) = mutate(&off, &pod(json!({"lanyard.io/use": "true"}), json!({}))).await?;
    assert!(r.patch.is_empty());
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("[webhook.lanyard] is disabled")),
        "{:?}",
        r.warnings
    );
    Ok(())
}

#[tokio::test]
async fn azure_and_lanyard_together_and_azure_not_configured_is_said() -> TestResult {
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "api", "namespace": "payments",
        "annotations": {"azure.workload.identity/client-id": "c"}}});
    let hook = in_process(
        "[webhook.azure]\ntenant_id = \"t\"\n",
        std::slice::from_ref(&sa),
    )?;
    let both = pod(
        json!({"lanyard.io/use": "true", "azure.workload.identity/use": "true"}),
        json!({}),
    );
    let (result, r) = mutate(&hook, &both).await?;
    assert!(r.allowed);
    let names: Vec<&str> = result["spec"]["containers"][1]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID",
            "AZURE_FEDERATED_TOKEN_FILE",
            "AZURE_AUTHORITY_HOST",
            "SPIFFE_ENDPOINT_SOCKET",
            "LANYARD_TOKEN_FILE"
        ]
    );
    let (_, again) = mutate(&hook, &result).await?;
    assert!(again.patch.is_empty());

    let no_azure = in_process("", &[sa])?;
    let (_, r) = mutate(
        &no_azure,
        &pod(json!({"azure.workload.identity/use": "true"}), json!({})),
    )
    .await?;
    assert!(r.allowed && r.patch.is_empty());
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("no [webhook.azure] configuration")),
        "{:?}",
        r.warnings
    );
    Ok(())
}

#[tokio::test]
async fn typos_and_missing_client_ids_are_warned_about() -> TestResult {
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "api", "namespace": "payments",
        "annotations": {"azure.workload.identity/client_id": "c"}}});
    let hook = in_process("[webhook.azure]\ntenant_id = \"t\"\n", &[sa])?;
    let p = pod(
        json!({"azure.workload.identity/use": "true"}),
        json!({"azure.workload.identity/client-id": "on-the-pod"}),
    );
    let (_, r) = mutate(&hook, &p).await?;
    assert!(r.allowed);
    let all = r.warnings.join("\n");
    assert!(
        all.contains("has no azure.workload.identity/client-id annotation"),
        "{all}"
    );
    assert!(
        all.contains(
            "annotation azure.workload.identity/client_id is not one azure-workload-identity reads"
        ),
        "{all}"
    );
    assert!(
        all.contains("read from the service account, not the pod"),
        "{all}"
    );
    Ok(())
}
