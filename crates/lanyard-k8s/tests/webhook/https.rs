//! The real webhook over real HTTPS, reading service accounts with the real
//! kube client from the stub Kubernetes API server (see `support.rs`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};

use crate::cases::{azwi_cases, azwi_toml, check_azwi, check_eks, eks_cases, eks_toml, Case};
use crate::support::{
    client, eventually, pod_review, response_of, self_signed, RunningWebhook, StubApiServer,
    TestResult,
};

fn azure_pod(name: &str, sa: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "ns1", "labels": {"azure.workload.identity/use": "true"}},
        "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "app"}]}})
}

fn sa(name: &str, client_id: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": "ns1", "annotations": {"azure.workload.identity/client-id": client_id}}})
}

type Checker = fn(&Case, &Value) -> Result<Value, String>;

const AZURE: &str = "[webhook.azure]\ntenant_id = \"tenantID\"\n";

#[tokio::test]
async fn upstream_cases_over_https_against_the_stub_api_server() -> TestResult {
    let stub = StubApiServer::start().await?;
    let mut hooks: HashMap<String, RunningWebhook> = HashMap::new();
    let mut failures = Vec::new();
    let all: Vec<(Case, String, Checker)> = azwi_cases()
        .into_iter()
        .map(|c| {
            let t = azwi_toml(&c);
            (
                c,
                t,
                check_azwi as fn(&Case, &Value) -> Result<Value, String>,
            )
        })
        .chain(eks_cases().into_iter().map(|c| {
            let t = eks_toml(&c);
            (
                c,
                t,
                check_eks as fn(&Case, &Value) -> Result<Value, String>,
            )
        }))
        .collect();
    for (case, toml, check) in &all {
        stub.state.clear();
        if let Some(sa) = &case.service_account {
            stub.state.put(sa);
        }
        // No cache: each case puts its own service accounts under the same names.
        let toml = format!("service_account_cache_ttl = \"0s\"\n{toml}");
        if !hooks.contains_key(&toml) {
            hooks.insert(toml.clone(), RunningWebhook::start(&stub, &toml).await?);
        }
        let hook = hooks.get(&toml).ok_or("webhook")?;
        let ns = case
            .pod
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        let (code, body) = hook
            .post("/mutate-v1-pod", pod_review(&case.pod, ns))
            .await?;
        if code != 200 {
            failures.push(format!("{}: HTTP {code} {body}", case.name));
            continue;
        }
        let answer: Value = serde_json::from_str(&body)?;
        if answer["response"]["uid"] != json!("705ab4f5-6393-11e8-b7cc-42010a800002") {
            failures.push(format!("{}: uid not echoed", case.name));
        }
        if let Err(e) = check(case, &answer) {
            failures.push(format!("{}: {e}", case.name));
        }
    }
    for (_, h) in hooks {
        h.stop().await?;
    }
    stub.stop();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed over HTTPS:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
    Ok(())
}

// issue 11 / aws/amazon-eks-pod-identity-webhook#174: a service account
// created just before its pod must not be missed.
#[tokio::test]
async fn a_miss_reads_through_to_the_api_and_hits_are_cached() -> TestResult {
    let stub = StubApiServer::start().await?;
    let hook = RunningWebhook::start(&stub, AZURE).await?;
    let review = pod_review(&azure_pod("p", "late"), "ns1");

    let (_, body) = hook.post("/mutate-v1-pod", review.clone()).await?;
    let (response, _) = response_of(&serde_json::from_str(&body)?)?;
    assert_eq!(response["allowed"], json!(false));
    assert_eq!(
        response["status"]["message"],
        json!("serviceaccounts \"late\" not found")
    );
    assert_eq!(response["status"]["code"], json!(400));

    stub.state.put(&sa("late", "client-1"));
    let before = stub.state.gets.load(Ordering::SeqCst);
    let (_, body) = hook.post("/mutate-v1-pod", review.clone()).await?;
    let (response, patch) = response_of(&serde_json::from_str(&body)?)?;
    assert_eq!(response["allowed"], json!(true), "{response}");
    assert!(patch
        .iter()
        .any(|op| op["value"]["value"] == json!("client-1")
            || op["value"].to_string().contains("client-1")));
    assert_eq!(
        stub.state.gets.load(Ordering::SeqCst),
        before + 1,
        "the miss was read from the API once"
    );

    // The next pod of the same account is served from the cache.
    let (_, body) = hook.post("/mutate-v1-pod", review).await?;
    let (response, _) = response_of(&serde_json::from_str(&body)?)?;
    assert_eq!(response["allowed"], json!(true));
    assert_eq!(
        stub.state.gets.load(Ordering::SeqCst),
        before + 1,
        "a hit does not call the API"
    );

    let metrics = client(&hook.ca_pem)?
        .get(format!("{}/metrics", hook.url))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("lanyard_webhook_service_account_lookups_total{result=\"cache_hit\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lanyard_webhook_admissions_total{webhook=\"pod\",result=\"denied\"} 1"),
        "{metrics}"
    );
    hook.stop().await?;
    stub.stop();
    Ok(())
}

#[tokio::test]
async fn unreachable_api_server_follows_on_api_error_and_the_webhook_keeps_serving() -> TestResult {
    let stub = StubApiServer::start().await?;
    let deny = RunningWebhook::start(
        &stub,
        &format!("{AZURE}[webhook.aws]\nregion = \"eu-west-1\"\n"),
    )
    .await?;
    let allow = RunningWebhook::start(&stub, &format!("on_api_error = \"allow\"\n{AZURE}")).await?;
    stub.stop();
    let addr = stub.addr;
    assert!(
        eventually(Duration::from_secs(10), || std::net::TcpStream::connect(
            addr
        )
        .is_err())
        .await,
        "the stub API server did not stop"
    );
    let review = pod_review(&azure_pod("p", "sa"), "ns1");

    let (code, body) = deny.post("/mutate-v1-pod", review.clone()).await?;
    assert_eq!(code, 200);
    let (response, patch) = response_of(&serde_json::from_str(&body)?)?;
    assert_eq!(response["allowed"], json!(false));
    assert_eq!(response["status"]["code"], json!(500));
    let msg = response["status"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("cannot read service account ns1/sa from the Kubernetes API"),
        "{msg}"
    );
    assert!(msg.contains("on_api_error is \"deny\""), "{msg}");
    assert!(patch.is_empty());

    let (_, body) = allow.post("/mutate-v1-pod", review).await?;
    let (response, patch) = response_of(&serde_json::from_str(&body)?)?;
    assert_eq!(response["allowed"], json!(true));
    assert!(patch.is_empty(), "allowed unchanged");
    let warning = response["warnings"][0].as_str().unwrap_or("");
    assert!(warning.contains("WITHOUT workload identity"), "{warning}");

    // A pod that reaches the webhook only for EKS (no label) is not blocked
    // by the outage, even with on_api_error = deny; a Lanyard pod still
    // gets Lanyard's convention, which needs no service account.
    let plain = json!({"metadata": {"name": "q", "namespace": "ns1", "labels": {"lanyard.io/use": "true"}},
        "spec": {"serviceAccountName": "sa", "containers": [{"name": "app", "image": "app"}]}});
    let (_, body) = deny
        .post("/mutate-v1-pod", pod_review(&plain, "ns1"))
        .await?;
    let (response, patch) = response_of(&serde_json::from_str(&body)?)?;
    assert_eq!(response["allowed"], json!(true), "{response}");
    assert!(
        patch
            .iter()
            .any(|op| op.to_string().contains("SPIFFE_ENDPOINT_SOCKET")),
        "{patch:?}"
    );
    assert!(
        response["warnings"][0]
            .as_str()
            .unwrap_or("")
            .contains("EKS convention"),
        "{response}"
    );

    // Still serving.
    let health = client(&deny.ca_pem)?
        .get(format!("{}/healthz", deny.url))
        .send()
        .await?;
    assert_eq!(health.status().as_u16(), 200);
    deny.stop().await?;
    allow.stop().await?;
    Ok(())
}

#[tokio::test]
async fn the_tls_certificate_is_reloaded_when_its_files_change() -> TestResult {
    let stub = StubApiServer::start().await?;
    let hook = RunningWebhook::start(&stub, AZURE).await?;
    let ready = client(&hook.ca_pem)?
        .get(format!("{}/readyz", hook.url))
        .send()
        .await?;
    assert_eq!(ready.status().as_u16(), 200);

    // A half-written update (garbage key) is refused; the old certificate stays.
    std::fs::write(hook.dir.path().join("tls.key"), "not a key")?;
    let (new_cert, new_key) = self_signed()?;
    let new_client = client(&new_cert)?;
    let url = format!("{}/healthz", hook.url);
    let old = client(&hook.ca_pem)?;
    let metrics_url = format!("{}/metrics", hook.url);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut refused = false;
    while std::time::Instant::now() < deadline {
        let text = old.get(&metrics_url).send().await?.text().await?;
        if text.contains("lanyard_webhook_tls_reloads_total{result=\"error\"}") {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "the bad key file was never looked at");
    assert!(
        client(&hook.ca_pem)?.get(&url).send().await.is_ok(),
        "a bad key file must not replace the certificate"
    );

    std::fs::write(hook.dir.path().join("tls.crt"), &new_cert)?;
    std::fs::write(hook.dir.path().join("tls.key"), &new_key)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut switched = false;
    while std::time::Instant::now() < deadline {
        if new_client.get(&url).send().await.is_ok() {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(switched, "the new certificate was never served");
    // A fresh client (no TLS session to resume) that trusts only the old
    // certificate can no longer connect.
    assert!(
        client(&hook.ca_pem)?.get(&url).send().await.is_err(),
        "the old certificate is no longer served"
    );
    hook.stop().await?;
    stub.stop();
    Ok(())
}

#[tokio::test]
async fn proxy_placement_follows_the_api_server_version_when_not_configured() -> TestResult {
    let stub = StubApiServer::start().await?;
    stub.state.put(&sa("sa", "c"));
    let hook = RunningWebhook::start(&stub, AZURE).await?;
    let mut pod = azure_pod("p", "sa");
    pod["metadata"]["annotations"] =
        json!({"azure.workload.identity/inject-proxy-sidecar": "true"});
    let (_, body) = hook.post("/mutate-v1-pod", pod_review(&pod, "ns1")).await?;
    let (response, patch) = response_of(&serde_json::from_str(&body)?)?;
    assert_eq!(response["allowed"], json!(true));
    let mut result = pod.clone();
    lanyard_k8s::patch::apply(&mut result, &patch)?;
    // The stub says v1.33: a native sidecar, first in initContainers.
    assert_eq!(
        result["spec"]["initContainers"][0]["name"],
        json!("azwi-proxy")
    );
    assert_eq!(
        result["spec"]["initContainers"][0]["restartPolicy"],
        json!("Always")
    );
    assert_eq!(result["spec"]["containers"][0]["name"], json!("app"));
    hook.stop().await?;
    stub.stop();
    Ok(())
}
