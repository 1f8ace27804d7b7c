//! Azure Workload Identity's mutation, as azure-workload-identity's webhook
//! does it (`pkg/webhook/webhook.go`, v1.5.1 and v1.6.0).
//!
//! Per mutated container (initContainers too, minus `skip-containers`), the
//! env vars `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`, `AZURE_FEDERATED_TOKEN_FILE`,
//! `AZURE_AUTHORITY_HOST` are appended in that order, each only when the
//! container has no variable of that name and the value is not empty; the
//! token volume is mounted read-only; the pod gets the projected token
//! volume (audience `api://AzureADTokenExchange`, 3600 s unless annotated).
//!
//! Differences from upstream, on purpose:
//! - v1.5 layout: upstream v1.5.1 finds its volume by token *path* and can
//!   append a second volume with the same name, which the API server then
//!   rejects; here both layouts replace by name, as v1.6.0 does.
//! - Replacing by name keeps an existing volume or mount that already says
//!   everything the desired one says, so re-admission yields no patch.
//! - A proxy port outside 1..=65535 is refused here; upstream passes it on
//!   and the API server refuses the pod later.
//! - Warnings (not refusals) for unknown `azure.workload.identity/*` keys,
//!   a missing client id, and an `inject-proxy-sidecar` value other than
//!   `true` (which still injects, as upstream's presence check does).

use std::collections::HashSet;

use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::{json, Value};

use super::{sa_annotation, sa_ref, Denial};
use crate::config::{AzureConfig, TokenLayout};
use crate::pod;

/// `azure.workload.identity/client-id` (service account).
pub const CLIENT_ID_ANNOTATION: &str = "azure.workload.identity/client-id";
/// `azure.workload.identity/tenant-id` (service account).
pub const TENANT_ID_ANNOTATION: &str = "azure.workload.identity/tenant-id";
/// `azure.workload.identity/service-account-token-expiration` (pod, then service account).
pub const EXPIRATION_ANNOTATION: &str = "azure.workload.identity/service-account-token-expiration";
/// `azure.workload.identity/skip-containers` (pod; `;`-separated).
pub const SKIP_CONTAINERS_ANNOTATION: &str = "azure.workload.identity/skip-containers";
/// `azure.workload.identity/inject-proxy-sidecar` (pod; presence is enough).
pub const INJECT_PROXY_ANNOTATION: &str = "azure.workload.identity/inject-proxy-sidecar";
/// `azure.workload.identity/proxy-sidecar-port` (pod).
pub const PROXY_PORT_ANNOTATION: &str = "azure.workload.identity/proxy-sidecar-port";

/// Token expiration bounds and default (seconds).
pub const MIN_EXPIRATION: i64 = 3600;
/// Longest token expiration.
pub const MAX_EXPIRATION: i64 = 86_400;
/// Default token expiration.
pub const DEFAULT_EXPIRATION: i64 = 3600;
/// Default proxy port.
pub const DEFAULT_PROXY_PORT: i32 = 8000;

/// v1.6 volume-name prefix; the sha256 of the pod name fills it to 63 chars.
pub const RESERVED_VOLUME_PREFIX: &str = "azure-workload-identity-reserved-";
const PROXY_INIT_NAME: &str = "azwi-proxy-init";
const PROXY_NAME: &str = "azwi-proxy";

const POD_KEYS: [&str; 5] = [
    "use",
    "skip-containers",
    "service-account-token-expiration",
    "inject-proxy-sidecar",
    "proxy-sidecar-port",
];
const SA_KEYS: [&str; 4] = [
    "use",
    "client-id",
    "tenant-id",
    "service-account-token-expiration",
];

/// Where the token lives in one layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Volume (and mount) name.
    pub volume_name: String,
    /// Mount path in the containers.
    pub mount_path: &'static str,
    /// `serviceAccountToken.path` inside the volume.
    pub token_path: &'static str,
}

impl Layout {
    /// The layout for `pod_name` (v1.6 hashes it into the volume name).
    pub fn new(layout: TokenLayout, pod_name: &str) -> Self {
        match layout {
            TokenLayout::V1_5 => Self {
                volume_name: "azure-identity-token".into(),
                mount_path: "/var/run/secrets/azure/tokens",
                token_path: "azure-identity-token",
            },
            TokenLayout::V1_6 => Self {
                volume_name: reserved_volume_name(pod_name),
                mount_path: "/var/run/secrets/azure/wi",
                token_path: "token/azure-identity-token",
            },
        }
    }

    /// `AZURE_FEDERATED_TOKEN_FILE`.
    pub fn token_file(&self) -> String {
        format!("{}/{}", self.mount_path, self.token_path)
    }
}

/// v1.6's volume name: the prefix plus the first 30 hex digits of
/// sha256(pod name) — 63 characters, the longest a volume name may be.
pub fn reserved_volume_name(pod_name: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, pod_name.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let keep = 63 - RESERVED_VOLUME_PREFIX.len();
    format!(
        "{RESERVED_VOLUME_PREFIX}{}",
        hex.get(..keep).unwrap_or(&hex)
    )
}

/// The name upstream hashes: `metadata.name`, or `generateName + " (prefix)"`
/// for pods whose name the API server has not generated yet.
pub fn pod_name_for_hash(pod: &Value) -> String {
    match pod::str_at(pod, "/metadata/name") {
        Some(n) if !n.is_empty() => n.to_owned(),
        _ => format!(
            "{} (prefix)",
            pod::str_at(pod, "/metadata/generateName").unwrap_or("")
        ),
    }
}

/// Mutates `pod` for Azure Workload Identity.
///
/// # Errors
/// As upstream: a bad token expiration or proxy port, or a proxy sidecar on a
/// `hostNetwork` pod.
pub fn mutate(
    pod: &mut Value,
    sa: &ServiceAccount,
    cfg: &AzureConfig,
    native_sidecar: bool,
    warnings: &mut Vec<String>,
) -> Result<(), Denial> {
    if let Some(value) = pod::annotation(pod, INJECT_PROXY_ANNOTATION) {
        if value != "true" {
            warnings.push(format!(
                "{INJECT_PROXY_ANNOTATION}={value:?}: like azure-workload-identity, the proxy sidecar is injected whenever the annotation is present; remove it to opt out"
            ));
        }
        if pod.pointer("/spec/hostNetwork").and_then(Value::as_bool) == Some(true) {
            return Err(Denial::bad(
                "hostNetwork is set to true, cannot inject proxy sidecar",
            ));
        }
        let port = proxy_port(pod)?;
        inject_proxy(pod, cfg, port, native_sidecar);
    }
    let expiration = token_expiration(pod, sa)?;
    let client_id = sa_annotation(sa, CLIENT_ID_ANNOTATION).unwrap_or("");
    if client_id.is_empty() {
        warnings.push(format!(
            "service account {} has no {CLIENT_ID_ANNOTATION} annotation: AZURE_CLIENT_ID is not set, so the SDK's default credential has no identity to use",
            sa_ref(sa)
        ));
    }
    warn_unknown_sa_annotations(sa, warnings);
    // Upstream: the SA annotation wins whenever the key is present, even empty.
    let tenant_id = sa_annotation(sa, TENANT_ID_ANNOTATION).unwrap_or(&cfg.tenant_id);
    let skip = pod::annotation(pod, SKIP_CONTAINERS_ANNOTATION)
        .filter(|s| !s.is_empty())
        .map(|s| pod::split_names(s, ';', true))
        .unwrap_or_default();
    let layout = Layout::new(cfg.token_layout, &pod_name_for_hash(pod));
    let token_file = layout.token_file();
    let env = [
        ("AZURE_CLIENT_ID", client_id),
        ("AZURE_TENANT_ID", tenant_id),
        ("AZURE_FEDERATED_TOKEN_FILE", token_file.as_str()),
        ("AZURE_AUTHORITY_HOST", cfg.cloud.authority_host()),
    ];
    let mount = json!({
        "name": layout.volume_name,
        "mountPath": layout.mount_path,
        "readOnly": true,
    });
    for list in pod::CONTAINER_LISTS {
        mutate_containers(pod, list, &skip, &env, &mount);
    }
    let volume = json!({
        "name": layout.volume_name,
        "projected": {"sources": [{"serviceAccountToken": {
            "path": layout.token_path,
            "expirationSeconds": expiration,
            "audience": cfg.audience,
        }}]},
    });
    if let Some(volumes) = pod::volumes_mut(pod) {
        pod::upsert_by_name(volumes, volume);
    }
    Ok(())
}

fn mutate_containers(
    pod: &mut Value,
    list: &str,
    skip: &HashSet<String>,
    env: &[(&str, &str)],
    mount: &Value,
) {
    let Some(containers) = pod::containers_mut(pod, list) else {
        return;
    };
    for c in containers.iter_mut() {
        if skip.contains(pod::name(c)) {
            continue;
        }
        for (name, value) in env {
            if !value.is_empty() && !pod::has_env(c, name) {
                pod::push_env(c, name, value);
            }
        }
        pod::upsert_mount(c, mount.clone());
    }
}

/// Pod annotation, then service-account annotation, then 3600; the value
/// must be whole seconds in [3600, 86400] or the pod is refused.
///
/// # Errors
/// A [`Denial`] naming the annotation, where it was read, and the fix.
pub fn token_expiration(pod: &Value, sa: &ServiceAccount) -> Result<i64, Denial> {
    let (text, place) = match pod::annotation(pod, EXPIRATION_ANNOTATION) {
        Some(t) if !t.is_empty() => (t, "pod"),
        _ => match sa_annotation(sa, EXPIRATION_ANNOTATION) {
            Some(t) if !t.is_empty() => (t, "service account"),
            _ => return Ok(DEFAULT_EXPIRATION),
        },
    };
    let value = parse_go_int::<i64>(text).ok_or_else(|| {
        Denial::bad(format!(
            "{EXPIRATION_ANNOTATION} on the {place} is {text:?}: parsing {text:?}: invalid syntax; write whole seconds between {MIN_EXPIRATION} and {MAX_EXPIRATION}, e.g. \"3600\""
        ))
    })?;
    if !(MIN_EXPIRATION..=MAX_EXPIRATION).contains(&value) {
        return Err(Denial::bad(format!(
            "token expiration {value} not valid. Expected value to be between {MIN_EXPIRATION} and {MAX_EXPIRATION} ({EXPIRATION_ANNOTATION} on the {place})"
        )));
    }
    Ok(value)
}

fn proxy_port(pod: &Value) -> Result<i32, Denial> {
    let Some(text) = pod::annotation(pod, PROXY_PORT_ANNOTATION) else {
        return Ok(DEFAULT_PROXY_PORT);
    };
    match parse_go_int::<i32>(text) {
        Some(p) if (1..=65_535).contains(&p) => Ok(p),
        Some(p) => Err(Denial::bad(format!(
            "{PROXY_PORT_ANNOTATION} is {p}: a port must be between 1 and 65535"
        ))),
        None => Err(Denial::bad(format!(
            "failed to parse proxy sidecar port: parsing {text:?}: invalid syntax ({PROXY_PORT_ANNOTATION}; write a port number, default {DEFAULT_PROXY_PORT})"
        ))),
    }
}

/// Go's `strconv.ParseInt(s, 10, bits)`: optional sign, ASCII digits only.
fn parse_go_int<T: std::str::FromStr>(text: &str) -> Option<T> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn inject_proxy(pod: &mut Value, cfg: &AzureConfig, port: i32, native_sidecar: bool) {
    let has = |pod: &Value, list: &str, name: &str| {
        pod::container_names(pod, list).iter().any(|n| n == name)
    };
    if !has(pod, "initContainers", PROXY_INIT_NAME) {
        if let Some(init) = pod::containers_created(pod, "initContainers") {
            init.push(json!({
                "name": PROXY_INIT_NAME,
                "image": cfg.proxy_init_image,
                "imagePullPolicy": "IfNotPresent",
                "securityContext": {
                    "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
                    "privileged": true,
                    "runAsNonRoot": false,
                    "runAsUser": 0,
                },
                "env": [{"name": "PROXY_PORT", "value": port.to_string()}],
            }));
        }
    }
    let list = if native_sidecar {
        "initContainers"
    } else {
        "containers"
    };
    if has(pod, list, PROXY_NAME) {
        return;
    }
    let mut sidecar = json!({
        "name": PROXY_NAME,
        "image": cfg.proxy_image,
        "imagePullPolicy": "IfNotPresent",
        "args": [format!("--proxy-port={port}"), "--log-level=info"],
        "ports": [{"containerPort": port}],
        "lifecycle": {"postStart": {"exec": {"command": [
            "/proxy", format!("--proxy-port={port}"), "--probe", "--log-level=info",
        ]}}},
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "privileged": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
        },
    });
    if native_sidecar {
        if let Some(obj) = sidecar.as_object_mut() {
            obj.insert("restartPolicy".into(), json!("Always"));
        }
    }
    if let Some(cs) = pod::containers_created(pod, list) {
        cs.insert(0, sidecar);
    }
}

/// Unknown `azure.workload.identity/*` pod annotations (typos such as
/// `skip_containers`) are silently ignored upstream; say so.
pub(crate) fn warn_unknown_pod_annotations(pod: &Value, warnings: &mut Vec<String>) {
    let Some(annotations) = pod
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    else {
        return;
    };
    for key in annotations.keys() {
        if let Some(rest) = key.strip_prefix("azure.workload.identity/") {
            if !POD_KEYS.contains(&rest) && !rest.starts_with("use-") {
                let hint = if SA_KEYS.contains(&rest) {
                    " (it is read from the service account, not the pod)"
                } else {
                    ""
                };
                warnings.push(format!(
                    "pod annotation {key} is not one azure-workload-identity reads{hint}; known pod annotations: skip-containers, service-account-token-expiration, inject-proxy-sidecar, proxy-sidecar-port"
                ));
            }
        }
    }
}

fn warn_unknown_sa_annotations(sa: &ServiceAccount, warnings: &mut Vec<String>) {
    let Some(annotations) = sa.metadata.annotations.as_ref() else {
        return;
    };
    for key in annotations.keys() {
        if let Some(rest) = key.strip_prefix("azure.workload.identity/") {
            if !SA_KEYS.contains(&rest) {
                warnings.push(format!(
                    "service account {} annotation {key} is not one azure-workload-identity reads; known: client-id, tenant-id, service-account-token-expiration",
                    sa_ref(sa)
                ));
            }
        }
    }
}
