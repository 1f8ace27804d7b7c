//! The Helm chart's config files are ones Lanyard accepts: the server,
//! agent and webhook configs in the rendered manifests (deploy/manifests/,
//! which scripts/chart.sh keeps equal to `helm template`) go through the
//! same parsing and validation as `lanyard server|agent|webhook --config`.

use std::collections::BTreeMap;

use serde_json::Value;

fn manifests(name: &str) -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/manifests")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(!text.is_empty(), "{} is missing or empty", path.display());
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap_or_default();
    let docs: Vec<Value> = docs.into_iter().filter(|d| d.is_object()).collect();
    assert!(
        docs.len() > 10,
        "{}: only {} objects",
        path.display(),
        docs.len()
    );
    docs
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or(&Value::Null)
}

fn config<'a>(docs: &'a [Value], cm: &str, key: &str) -> &'a str {
    find(docs, "ConfigMap", cm)["data"][key]
        .as_str()
        .unwrap_or("")
}

fn env_from_secret(container: &Value, name: &str) -> bool {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["name"] == name && e["valueFrom"]["secretKeyRef"]["name"].is_string())
}

fn check(file: &str) -> Result<lanyard_k8s::WebhookConfig, Box<dyn std::error::Error>> {
    let docs = manifests(file);

    // Server: the file plus the two variables its Deployment sets from Secrets.
    let server = config(&docs, "lanyard-server", "server.toml");
    let deployment = find(&docs, "Deployment", "lanyard-server");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert!(
        env_from_secret(container, "LANYARD__STORE__URL"),
        "{file}: store URL from a Secret"
    );
    assert!(
        env_from_secret(container, lanyard_ca::KEK_ENV),
        "{file}: KEK from a Secret"
    );
    let env: BTreeMap<String, String> = [
        (
            "LANYARD__STORE__URL",
            "postgres://lanyard@postgres.db.svc/lanyard",
        ),
        (
            lanyard_ca::KEK_ENV,
            "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ=",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let raw =
        lanyard_server::config::RawConfig::parse(server, &format!("{file} server.toml"), &env)?;
    let validated = raw.validate(&env)?;
    assert!(validated.tls.is_some(), "{file}: the server serves TLS");
    assert!(
        server.contains("k8s_agent_service_accounts = [\"lanyard:lanyard-agent\"]"),
        "{file}: the agent may attest"
    );

    // Agent: parsed as `lanyard agent` parses it; its token file is the
    // DaemonSet's projected token, its socket in the hostPath.
    let agent = config(&docs, "lanyard-agent", "agent.toml");
    crate::cmd::agent::parse_raw(agent, &format!("{file} agent.toml"))?;
    let table: toml::Table = toml::from_str(agent)?;
    let ds = &find(&docs, "DaemonSet", "lanyard-agent")["spec"]["template"]["spec"];
    let mounts = ds["containers"][0]["volumeMounts"].to_string();
    assert!(
        mounts.contains("/var/run/secrets/lanyard.io/node"),
        "{file}: node token mounted"
    );
    assert_eq!(
        table["k8s_token_file"].as_str(),
        Some("/var/run/secrets/lanyard.io/node/token")
    );
    let socket = table["socket"].as_str().unwrap_or("");
    let host_dir = ds["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == "sockets")
        .and_then(|v| v["hostPath"]["path"].as_str())
        .unwrap_or("none");
    assert!(
        socket.starts_with(&format!("{host_dir}/")),
        "{file}: socket {socket} in {host_dir}"
    );

    // Webhook: validated as `lanyard webhook` validates it; pods get the
    // agent's socket directory.
    let webhook = config(&docs, "lanyard-webhook", "webhook.toml");
    let validated = lanyard_k8s::config::RawFile::parse(webhook, &format!("{file} webhook.toml"))?
        .validate()?;
    if let Some(l) = &validated.mutation.lanyard {
        assert_eq!(
            format!("{}/{}", l.socket_host_dir, l.socket_name),
            socket,
            "{file}"
        );
    }
    let wd = &find(&docs, "Deployment", "lanyard-webhook")["spec"]["template"]["spec"];
    assert!(
        wd["containers"][0]["volumeMounts"]
            .to_string()
            .contains("/etc/lanyard/webhook-tls"),
        "{file}: TLS directory mounted where the config points"
    );
    assert!(validated.tls_cert.starts_with("/etc/lanyard/webhook-tls"));
    Ok(validated)
}

#[test]
fn the_charts_default_config_files_validate() -> Result<(), Box<dyn std::error::Error>> {
    let w = check("default.yaml")?;
    assert!(w.mutation.azure.is_none() && w.mutation.aws.is_none() && w.mutation.lanyard.is_some());
    Ok(())
}

#[test]
fn the_charts_azure_example_validates() -> Result<(), Box<dyn std::error::Error>> {
    let w = check("azure.yaml")?;
    let azure = w.mutation.azure.ok_or("azure is on in the example")?;
    assert_eq!(azure.tenant_id, "72f988bf-86f1-41af-91ab-2d7cd011db47");
    Ok(())
}

#[test]
fn the_charts_eks_example_validates() -> Result<(), Box<dyn std::error::Error>> {
    let w = check("eks.yaml")?;
    assert_eq!(
        w.mutation.aws.and_then(|a| a.region).as_deref(),
        Some("eu-west-1")
    );
    Ok(())
}
