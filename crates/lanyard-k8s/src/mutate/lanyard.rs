//! Lanyard's own convention, for pods labelled `lanyard.io/use: "true"`.
//!
//! Every container not listed in `lanyard.io/skip-containers` (`;` or `,`
//! separated) gets:
//! - the projected service-account token for audience `lanyard` (configurable)
//!   at `/var/run/secrets/lanyard.io/serviceaccount/token`, 10 minutes by
//!   default: the subject token of Lanyard's token exchange (flow 1), and
//!   `LANYARD_TOKEN_FILE` pointing at it;
//! - the node agent's Workload API socket directory (the agent DaemonSet's
//!   hostPath, read-only) at `/run/lanyard/agent`, and
//!   `SPIFFE_ENDPOINT_SOCKET=unix:///run/lanyard/agent/workload.sock`, the
//!   variable every SPIFFE library reads (flow 2).
//!
//! Existing variables are never replaced; volumes and mounts are replaced by
//! name only when they differ, so re-admission changes nothing.

use serde_json::{json, Value};

use super::Denial;
use crate::config::LanyardConfig;
use crate::pod;

/// Pod annotation: containers to leave alone.
pub const SKIP_CONTAINERS_ANNOTATION: &str = "lanyard.io/skip-containers";
/// Token volume name.
pub const TOKEN_VOLUME: &str = "lanyard-token";
/// Token mount path.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/lanyard.io/serviceaccount";
/// Socket volume name.
pub const SOCKET_VOLUME: &str = "lanyard-agent-socket";
/// Where the socket directory is mounted in containers.
pub const SOCKET_MOUNT_PATH: &str = "/run/lanyard/agent";

/// Mutates `pod` for Lanyard.
///
/// # Errors
/// None today; the signature leaves room for refusals like the other conventions.
pub fn mutate(
    pod: &mut Value,
    cfg: &LanyardConfig,
    _warnings: &mut [String],
) -> Result<(), Denial> {
    let skip: std::collections::HashSet<String> = pod::annotation(pod, SKIP_CONTAINERS_ANNOTATION)
        .map(|s| {
            s.split([';', ','])
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let token_file = format!("{TOKEN_MOUNT_PATH}/token");
    let socket = format!("unix://{SOCKET_MOUNT_PATH}/{}", cfg.socket_name);
    let env = [
        ("SPIFFE_ENDPOINT_SOCKET", socket.as_str()),
        ("LANYARD_TOKEN_FILE", token_file.as_str()),
    ];
    let mounts = [
        json!({"name": TOKEN_VOLUME, "mountPath": TOKEN_MOUNT_PATH, "readOnly": true}),
        json!({"name": SOCKET_VOLUME, "mountPath": SOCKET_MOUNT_PATH, "readOnly": true}),
    ];
    for list in pod::CONTAINER_LISTS {
        let Some(containers) = pod::containers_mut(pod, list) else {
            continue;
        };
        for c in containers.iter_mut() {
            if skip.contains(pod::name(c)) {
                continue;
            }
            for (name, value) in env {
                if !pod::has_env(c, name) {
                    pod::push_env(c, name, value);
                }
            }
            for m in &mounts {
                pod::upsert_mount(c, m.clone());
            }
        }
    }
    if let Some(volumes) = pod::volumes_mut(pod) {
        pod::upsert_by_name(
            volumes,
            json!({
                "name": TOKEN_VOLUME,
                "projected": {"sources": [{"serviceAccountToken": {
                    "path": "token",
                    "expirationSeconds": cfg.token_expiration,
                    "audience": cfg.audience,
                }}]},
            }),
        );
        pod::upsert_by_name(
            volumes,
            json!({
                "name": SOCKET_VOLUME,
                // DirectoryOrCreate: a pod scheduled before the agent has
                // started still starts; SPIFFE clients retry until the socket appears.
                "hostPath": {"path": cfg.socket_host_dir, "type": "DirectoryOrCreate"},
            }),
        );
    }
    Ok(())
}
