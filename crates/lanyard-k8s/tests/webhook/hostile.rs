//! Bad input over HTTPS: clear answers, no panic, and the webhook keeps
//! serving afterwards.

use serde_json::{json, Value};

use crate::support::{
    client, pod_review, response_of, review, RunningWebhook, StubApiServer, TestResult,
};

#[tokio::test]
async fn malformed_reviews_get_clear_errors_and_the_webhook_keeps_serving() -> TestResult {
    let stub = StubApiServer::start().await?;
    stub.state.put(&json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "sa", "namespace": "ns1", "annotations": {"azure.workload.identity/client-id": "c"}}}));
    let hook = RunningWebhook::start(
        &stub,
        "max_request_bytes = 1048576\n[webhook.azure]\ntenant_id = \"t\"\n",
    )
    .await?;

    // Not an AdmissionReview at all: HTTP 400 with the reason.
    let deep = "[".repeat(100_000);
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not JSON", b"invalid".to_vec(), "not an AdmissionReview"),
        ("empty body", Vec::new(), "not an AdmissionReview"),
        ("deeply nested", deep.into_bytes(), "not an AdmissionReview"),
        (
            "v1beta1",
            serde_json::to_vec(
                &json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "u"}}),
            )?,
            "admissionReviewVersions",
        ),
        (
            "no uid",
            serde_json::to_vec(
                &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}),
            )?,
            "no request.uid",
        ),
        (
            "request is a string",
            serde_json::to_vec(
                &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": "x"}),
            )?,
            "not an AdmissionReview",
        ),
    ];
    for (what, body, want) in bad {
        let (code, text) = hook.post("/mutate-v1-pod", body).await?;
        assert_eq!(code, 400, "{what}: {text}");
        assert!(text.contains(want), "{what}: {text}");
    }

    // Oversized: refused before it is read whole.
    let big = vec![b' '; 2 * 1024 * 1024];
    let (code, _) = hook.post("/mutate-v1-pod", big).await?;
    assert_eq!(code, 413);

    // Answerable reviews with bad content: a denial that says why.
    let deployment =
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}});
    let (code, text) = hook
        .post(
            "/mutate-v1-pod",
            review(&deployment, "ns1", ("apps", "v1", "Deployment"), "u1"),
        )
        .await?;
    assert_eq!(code, 200);
    let (response, _) = response_of(&serde_json::from_str(&text)?)?;
    assert_eq!(response["allowed"], json!(false));
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("mutates v1 Pods"),
        "{response}"
    );

    let not_a_pod = json!({"metadata": {"name": "p", "labels": {"azure.workload.identity/use": "true"}},
        "spec": {"containers": "not a list"}});
    let (_, text) = hook
        .post("/mutate-v1-pod", pod_review(&not_a_pod, "ns1"))
        .await?;
    let (response, _) = response_of(&serde_json::from_str(&text)?)?;
    assert_eq!(response["allowed"], json!(false));
    assert_eq!(response["status"]["code"], json!(400));
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("not a valid v1 Pod"),
        "{response}"
    );

    let (_, text) = hook
        .post("/validate-spinapp", pod_review(&not_a_pod, "ns1"))
        .await?;
    let (response, _) = response_of(&serde_json::from_str(&text)?)?;
    assert_eq!(response["allowed"], json!(false));
    assert!(response["status"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("validates core.spinkube.dev/v1alpha1 SpinApps"));

    // Still serving, and still right.
    let ok = json!({"metadata": {"name": "p", "labels": {"azure.workload.identity/use": "true"}},
        "spec": {"serviceAccountName": "sa", "containers": [{"name": "c", "image": "i"}]}});
    let (_, text) = hook.post("/mutate-v1-pod", pod_review(&ok, "ns1")).await?;
    let (response, patch) = response_of(&serde_json::from_str(&text)?)?;
    assert_eq!(response["allowed"], json!(true));
    assert!(!patch.is_empty());
    let health = client(&hook.ca_pem)?
        .get(format!("{}/healthz", hook.url))
        .send()
        .await?;
    assert_eq!(health.status().as_u16(), 200);
    hook.stop().await?;
    stub.stop();
    Ok(())
}

#[tokio::test]
async fn thousands_of_containers_and_huge_annotations() -> TestResult {
    let stub = StubApiServer::start().await?;
    stub.state.put(&json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "sa", "namespace": "ns1", "annotations": {"azure.workload.identity/client-id": "c"}}}));
    let hook = RunningWebhook::start(&stub, "[webhook.azure]\ntenant_id = \"t\"\n").await?;

    let containers: Vec<Value> = (0..3000)
        .map(|i| json!({"name": format!("c{i}"), "image": "i"}))
        .collect();
    let mut annotations = serde_json::Map::new();
    annotations.insert("big".into(), json!("x".repeat(512 * 1024)));
    for i in 0..500 {
        // Unknown keys each earn a warning; the answer stays bounded.
        annotations.insert(format!("azure.workload.identity/typo-{i}"), json!("1"));
    }
    annotations.insert(
        "azure.workload.identity/skip-containers".into(),
        json!((0..1000)
            .map(|i| format!("c{i}"))
            .collect::<Vec<_>>()
            .join(";")),
    );
    let pod = json!({"metadata": {"name": "p", "labels": {"azure.workload.identity/use": "true"}, "annotations": annotations},
        "spec": {"serviceAccountName": "sa", "containers": containers}});
    let (code, text) = hook.post("/mutate-v1-pod", pod_review(&pod, "ns1")).await?;
    assert_eq!(code, 200);
    let (response, patch) = response_of(&serde_json::from_str(&text)?)?;
    assert_eq!(response["allowed"], json!(true));
    let warnings = response["warnings"].as_array().map(Vec::len).unwrap_or(0);
    assert!(warnings <= 20, "{warnings} warnings");
    let mut result = pod.clone();
    lanyard_k8s::patch::apply(&mut result, &patch)?;
    let cs = result["spec"]["containers"]
        .as_array()
        .ok_or("containers")?;
    assert_eq!(cs.len(), 3000);
    assert!(cs[999].get("env").is_none(), "c999 is skipped");
    assert_eq!(cs[1000]["env"][0]["name"], json!("AZURE_CLIENT_ID"));
    assert_eq!(
        cs[2999]["volumeMounts"][0]["mountPath"],
        json!("/var/run/secrets/azure/wi")
    );
    hook.stop().await?;
    stub.stop();
    Ok(())
}
