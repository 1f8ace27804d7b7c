//! The upstream conformance cases (`tests/cases/azwi-cases.json`, in the
//! format of the reference's §1.9, and `tests/cases/eks-cases.json` from
//! §2.4), run against `Webhook::review_pod`: the code path of both the
//! HTTPS webhook and `lanyard webhook render`. `https.rs` runs the same
//! cases over HTTPS against the stub API server.

use serde_json::{json, Value};

use crate::support::{in_process, pod_review, response_of, TestResult};

/// One case of either file.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub pod: Value,
    pub service_account: Option<Value>,
    pub config: Value,
    pub expect: Value,
}

fn load(text: &str) -> Vec<Case> {
    let all: Vec<Value> = serde_json::from_str(text).unwrap_or_default();
    all.into_iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap_or("").to_owned(),
            pod: c["pod"].clone(),
            service_account: Some(c["serviceAccount"].clone()).filter(|v| !v.is_null()),
            config: c["config"].clone(),
            expect: c["expect"].clone(),
        })
        .collect()
}

pub fn azwi_cases() -> Vec<Case> {
    load(include_str!("../cases/azwi-cases.json"))
}

pub fn eks_cases() -> Vec<Case> {
    load(include_str!("../cases/eks-cases.json"))
}

/// The `[webhook.*]` tables a case's config stands for.
pub fn azwi_toml(case: &Case) -> String {
    let c = &case.config;
    let layout = match c["convention"].as_str() {
        Some("azwi-v1.5.1") => "v1.5",
        _ => "v1.6",
    };
    let minor: u32 = c["kubernetesVersion"]
        .as_str()
        .and_then(|v| v.strip_prefix("1."))
        .and_then(|m| m.parse().ok())
        .unwrap_or(33);
    format!(
        "[webhook.azure]\ntenant_id = {}\ncloud = {}\ntoken_layout = \"{layout}\"\nnative_sidecar = {}\n",
        c["webhookTenantID"],
        c.get("azureEnvironment").cloned().unwrap_or(json!("AzurePublicCloud")),
        minor >= 32
    )
}

pub fn eks_toml(case: &Case) -> String {
    let mut t = "[webhook.aws]\n".to_owned();
    if let Some(r) = case.config["region"].as_str() {
        t.push_str(&format!("region = \"{r}\"\n"));
    }
    if let Some(b) = case.config["stsRegionalEndpoints"].as_bool() {
        t.push_str(&format!("sts_regional_endpoints = {b}\n"));
    }
    t
}

/// Checks an AdmissionReview answer against an azwi case; `Ok(mutated pod)`.
pub fn check_azwi(case: &Case, answer: &Value) -> Result<Value, String> {
    check(case, answer, |result, case| {
        for list in ["containers", "initContainers"] {
            if let Some(want) = case.expect.get(list) {
                check_containers(&case.pod, result, list, want, azwi_container)?;
            }
        }
        Ok(())
    })
}

/// Checks an AdmissionReview answer against an EKS case.
pub fn check_eks(case: &Case, answer: &Value) -> Result<Value, String> {
    check(case, answer, |result, case| {
        for list in ["containers", "initContainers"] {
            if let Some(want) = case.expect.get(list) {
                check_containers(&case.pod, result, list, want, eks_container)?;
            }
        }
        Ok(())
    })
}

fn check(
    case: &Case,
    answer: &Value,
    lists: impl Fn(&Value, &Case) -> Result<(), String>,
) -> Result<Value, String> {
    let (response, patch) = response_of(answer).map_err(|e| e.to_string())?;
    let e = &case.expect;
    let allowed = response["allowed"].as_bool().unwrap_or(false);
    if e["allowed"] == json!(false) {
        if allowed {
            return Err("allowed, expected a denial".into());
        }
        let code = response
            .pointer("/status/code")
            .cloned()
            .unwrap_or(Value::Null);
        if code != e["httpCode"] {
            return Err(format!("code {code}, expected {}", e["httpCode"]));
        }
        let msg = response
            .pointer("/status/message")
            .and_then(Value::as_str)
            .unwrap_or("");
        let want = e["errorContains"].as_str().unwrap_or("");
        if !msg.contains(want) {
            return Err(format!("message {msg:?} does not contain {want:?}"));
        }
        if !patch.is_empty() {
            return Err("a denial carries a patch".into());
        }
        return Ok(Value::Null);
    }
    if !allowed {
        return Err(format!("denied: {}", response["status"]));
    }
    if patch.iter().any(|op| op["op"] == "remove") {
        return Err(format!("remove operations in {patch:?}"));
    }
    let mut result = case.pod.clone();
    lanyard_k8s::patch::apply(&mut result, &patch).map_err(|e| e.to_string())?;
    if e["mutated"] == json!(false) {
        if !patch.is_empty() {
            return Err(format!("expected no change, got {patch:?}"));
        }
        return Ok(result);
    }
    if patch.is_empty() {
        return Err("expected a mutation, got no patch".into());
    }
    if let Some(want) = e.get("volumes") {
        let got = result
            .pointer("/spec/volumes")
            .cloned()
            .unwrap_or(json!([]));
        if &got != want {
            return Err(format!("volumes {got}, expected {want}"));
        }
    }
    lists(&result, case)?;
    Ok(result)
}

fn check_containers(
    original: &Value,
    result: &Value,
    list: &str,
    want: &Value,
    one: fn(&Value, &Value) -> Result<(), String>,
) -> Result<(), String> {
    let got = result["spec"][list].as_array().cloned().unwrap_or_default();
    let want = want.as_array().cloned().unwrap_or_default();
    let names = |cs: &[Value]| -> Vec<String> {
        cs.iter()
            .map(|c| c["name"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    if names(&got) != names(&want) {
        return Err(format!(
            "{list}: names {:?}, expected {:?}",
            names(&got),
            names(&want)
        ));
    }
    for (g, w) in got.iter().zip(&want) {
        let name = w["name"].as_str().unwrap_or("");
        if w["unchanged"] == json!(true) {
            let before = original["spec"][list]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["name"] == name))
                .cloned()
                .unwrap_or(Value::Null);
            if g != &before {
                return Err(format!("{list}/{name} changed: {g}"));
            }
            continue;
        }
        one(g, w).map_err(|e| format!("{list}/{name}: {e}"))?;
    }
    Ok(())
}

fn azwi_container(got: &Value, want: &Value) -> Result<(), String> {
    let env = got["env"].as_array().cloned().unwrap_or_default();
    let order: Vec<Value> = env.iter().map(|e| e["name"].clone()).collect();
    if Value::Array(order.clone()) != want["envOrder"] {
        return Err(format!(
            "env order {order:?}, expected {}",
            want["envOrder"]
        ));
    }
    if let Some(map) = want["env"].as_object() {
        for (k, v) in map {
            let e = env
                .iter()
                .find(|e| e["name"] == k.as_str())
                .cloned()
                .unwrap_or(Value::Null);
            let value = e.get("value").cloned().unwrap_or(Value::Null);
            if &value != v {
                return Err(format!("env {k} = {value}, expected {v}"));
            }
        }
    }
    let mounts = got.get("volumeMounts").cloned().unwrap_or(json!([]));
    if mounts != want["volumeMounts"] {
        return Err(format!(
            "volumeMounts {mounts}, expected {}",
            want["volumeMounts"]
        ));
    }
    if let Some(fields) = want.get("fields") {
        for (k, v) in fields.as_object().into_iter().flatten() {
            if k == "env" {
                continue; // checked through envOrder/env
            }
            if got.get(k) != Some(v) {
                return Err(format!("field {k} = {:?}, expected {v}", got.get(k)));
            }
        }
    }
    Ok(())
}

fn eks_container(got: &Value, want: &Value) -> Result<(), String> {
    let env: Vec<Value> = got["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| json!([e["name"], e["value"]]))
        .collect();
    if Value::Array(env.clone()) != want["env"] {
        return Err(format!("env {env:?}, expected {}", want["env"]));
    }
    let mounts = got.get("volumeMounts").cloned().unwrap_or(json!([]));
    if mounts != want["volumeMounts"] {
        return Err(format!(
            "volumeMounts {mounts}, expected {}",
            want["volumeMounts"]
        ));
    }
    Ok(())
}

/// Runs one case in-process, then admits the result again (reinvocation).
async fn run(
    case: &Case,
    toml: &str,
    check: fn(&Case, &Value) -> Result<Value, String>,
) -> Result<(), String> {
    let accounts: Vec<Value> = case.service_account.iter().cloned().collect();
    let hook = in_process(toml, &accounts).map_err(|e| e.to_string())?;
    let ns = case
        .pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let answer = hook
        .review_pod(&pod_review(&case.pod, ns))
        .await
        .map_err(|e| e.to_string())?
        .to_review();
    let result = check(case, &answer)?;
    if result.is_null() {
        return Ok(());
    }
    let again = hook
        .review_pod(&pod_review(&result, ns))
        .await
        .map_err(|e| e.to_string())?
        .to_review();
    let (response, patch) = response_of(&again).map_err(|e| e.to_string())?;
    if response["allowed"] != json!(true) || !patch.is_empty() {
        return Err(format!("re-admission is not a no-op: {response} {patch:?}"));
    }
    Ok(())
}

/// Runs every case of a table; all failures are reported together.
async fn run_table(
    cases: &[Case],
    toml: fn(&Case) -> String,
    check: fn(&Case, &Value) -> Result<Value, String>,
) -> TestResult {
    let mut failures = Vec::new();
    for case in cases {
        if let Err(e) = run(case, &toml(case), check).await {
            failures.push(format!("{}: {e}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    Ok(())
}

#[tokio::test]
async fn azure_workload_identity_cases() -> TestResult {
    let cases = azwi_cases();
    assert!(cases.len() >= 21, "the case file has {} cases", cases.len());
    run_table(&cases, azwi_toml, check_azwi).await
}

#[tokio::test]
async fn eks_pod_identity_cases() -> TestResult {
    let cases = eks_cases();
    assert!(cases.len() >= 8, "the case file has {} cases", cases.len());
    run_table(&cases, eks_toml, check_eks).await
}

/// The harness itself: a wrong expectation must fail (so a passing run
/// means the webhook matched, not that the checker is lenient).
#[tokio::test]
async fn the_checker_catches_a_wrong_expectation() -> TestResult {
    let mut case = azwi_cases().into_iter().next().ok_or("no cases")?;
    case.expect["containers"][0]["envOrder"] = json!(["AZURE_TENANT_ID", "AZURE_CLIENT_ID"]);
    assert!(run(&case, &azwi_toml(&case), check_azwi).await.is_err());
    let mut case = azwi_cases().into_iter().next().ok_or("no cases")?;
    case.expect["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]
        ["expirationSeconds"] = json!(3600);
    assert!(run(&case, &azwi_toml(&case), check_azwi).await.is_err());
    Ok(())
}
