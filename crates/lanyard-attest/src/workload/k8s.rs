//! The Kubernetes part: the caller's pod and container (from its cgroup)
//! resolved through the kubelet's `/pods` (a `v1.PodList` of this node's
//! pods), cached briefly and refreshed on a miss, at most once per
//! `min_refresh_interval`. Lookups are single-flight: one fetch at a time,
//! and callers waiting for it use its result.
//!
//! Tests run against a stub kubelet serving a recorded `PodList`, since no
//! kubelet runs where they do.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lanyard_core::{Clock, Selector};
use serde::Deserialize;
use tokio::io::AsyncReadExt as _;

use crate::fetch::FETCH_TIMEOUT;
use crate::workload::cgroup::PodContainer;
use crate::workload::{selector, KubeletConfig, Notes, WorkloadAttestError};

/// Largest pod list read, in bytes (110 pods with large specs fit).
const MAX_POD_LIST_BYTES: usize = 32 * 1024 * 1024;
/// Largest bearer token file read, in bytes.
const MAX_BEARER_BYTES: u64 = 64 * 1024;

#[derive(Debug)]
pub(crate) struct Kubelet {
    /// `{url}/pods`.
    url: String,
    client: reqwest::Client,
    bearer_file: Option<PathBuf>,
    max_age: Duration,
    min_refresh: Duration,
    clock: Arc<dyn Clock>,
    cache: tokio::sync::Mutex<PodCache>,
}

#[derive(Debug, Default)]
struct PodCache {
    /// By `metadata.uid`.
    pods: Arc<HashMap<String, Pod>>,
    fetched_at: Option<SystemTime>,
    last_attempt: Option<SystemTime>,
}

#[derive(Debug, Deserialize)]
struct PodList {
    #[serde(default)]
    items: Vec<Pod>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Pod {
    metadata: Metadata,
    spec: Spec,
    status: Status,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Metadata {
    name: String,
    namespace: String,
    uid: String,
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Spec {
    service_account_name: String,
    node_name: String,
    containers: Vec<ContainerSpec>,
    init_containers: Vec<ContainerSpec>,
    ephemeral_containers: Vec<ContainerSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ContainerSpec {
    name: String,
    image: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Status {
    container_statuses: Vec<ContainerStatus>,
    init_container_statuses: Vec<ContainerStatus>,
    ephemeral_container_statuses: Vec<ContainerStatus>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ContainerStatus {
    name: String,
    image: String,
    /// `runtime://ID`, empty until the container was created.
    #[serde(rename = "containerID")]
    container_id: String,
}

enum Lookup<'a> {
    Found(&'a Pod, &'a ContainerStatus),
    NoPod,
    NoContainer(&'a Pod),
}

impl Kubelet {
    pub(crate) fn new(
        config: &KubeletConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, WorkloadAttestError> {
        let base = config.url.trim_end_matches('/');
        let https = base.starts_with("https://");
        if !https && !base.starts_with("http://") {
            return Err(WorkloadAttestError::Config {
                field: "k8s.url",
                message: format!(
                    "{:?} is not an http(s) URL; use e.g. https://127.0.0.1:10250",
                    config.url.chars().take(100).collect::<String>()
                ),
            });
        }
        if !https {
            tracing::warn!(url = %base, "kubelet over plain HTTP (read-only port): pod data is not authenticated");
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(FETCH_TIMEOUT)
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("lanyard-attest/", env!("CARGO_PKG_VERSION")));
        if config.danger_insecure_kubelet_skip_verify {
            tracing::warn!(url = %base, "danger_insecure_kubelet_skip_verify: the kubelet's certificate is not verified");
            builder = builder.tls_danger_accept_invalid_certs(true);
        } else if let Some(ca) = &config.ca_file {
            let bad = |message: String| WorkloadAttestError::Config {
                field: "k8s.ca_file",
                message,
            };
            let pem =
                std::fs::read(ca).map_err(|e| bad(format!("reading {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| bad(format!("{}: {e}", ca.display())))?;
            if certs.is_empty() {
                return Err(bad(format!("{} holds no PEM certificate", ca.display())));
            }
            builder = builder.tls_certs_only(certs);
        }
        let client = builder.build().map_err(|e| WorkloadAttestError::Config {
            field: "k8s",
            message: format!("building the kubelet client: {e}"),
        })?;
        Ok(Self {
            url: format!("{base}/pods"),
            client,
            bearer_file: config.bearer_token_file.clone(),
            max_age: config.pod_cache_max_age,
            min_refresh: config.min_refresh_interval,
            clock,
            cache: tokio::sync::Mutex::new(PodCache::default()),
        })
    }

    /// The k8s selectors of the process at `at`.
    pub(crate) async fn attest(
        &self,
        at: &PodContainer,
        notes: &mut Notes,
    ) -> Result<Vec<Selector>, WorkloadAttestError> {
        let Some(cid) = &at.container_id else {
            notes.omitted(
                "k8s",
                format!(
                    "in pod {}'s cgroup but in no container's (a pause or monitor process?): no k8s selectors",
                    at.pod_uid
                ),
            );
            return Ok(Vec::new());
        };
        let mut cache = self.cache.lock().await;
        let now = self.clock.now();
        let fresh = cache.fetched_at.is_some_and(|t| age(now, t) < self.max_age);
        let hit = fresh && matches!(find(&cache.pods, &at.pod_uid, cid), Lookup::Found(..));
        if !hit {
            let may_fetch = cache
                .last_attempt
                .is_none_or(|t| age(now, t) >= self.min_refresh);
            if may_fetch {
                cache.last_attempt = Some(now);
                match self.fetch().await {
                    Ok(pods) => {
                        notes.info(
                            "k8s",
                            format!("fetched {} pod(s) from {}", pods.len(), self.url),
                        );
                        cache.pods = Arc::new(pods);
                        cache.fetched_at = Some(now);
                    }
                    // A fresh list that lacks the pod answers below (not
                    // found); a stale one must not be used.
                    Err(e) if fresh => {
                        notes.omitted("k8s", format!("refreshing the pod list: {e}"))
                    }
                    Err(e) => return Err(e),
                }
            } else if !fresh {
                return Err(WorkloadAttestError::KubeletUnavailable {
                    url: self.url.clone(),
                    reason: "the pod list is stale and the last fetch was under min_refresh_interval ago".into(),
                });
            }
        }
        match find(&cache.pods, &at.pod_uid, cid) {
            Lookup::Found(pod, status) => Ok(selectors(pod, status, notes)),
            Lookup::NoPod => Err(WorkloadAttestError::PodNotFound {
                pod_uid: at.pod_uid.clone(),
            }),
            Lookup::NoContainer(pod) => Err(WorkloadAttestError::ContainerNotFound {
                namespace: pod.metadata.namespace.clone(),
                pod_name: pod.metadata.name.clone(),
                container_id: cid.clone(),
            }),
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, Pod>, WorkloadAttestError> {
        let unavailable = |reason: String| WorkloadAttestError::KubeletUnavailable {
            url: self.url.clone(),
            reason,
        };
        let mut req = self
            .client
            .get(&self.url)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(path) = &self.bearer_file {
            let mut token = String::new();
            tokio::fs::File::open(path)
                .await
                .map_err(|e| {
                    unavailable(format!("reading bearer token file {}: {e}", path.display()))
                })?
                .take(MAX_BEARER_BYTES)
                .read_to_string(&mut token)
                .await
                .map_err(|e| {
                    unavailable(format!("reading bearer token file {}: {e}", path.display()))
                })?;
            let token = token.trim();
            if token.is_empty() {
                return Err(unavailable(format!(
                    "bearer token file {} is empty",
                    path.display()
                )));
            }
            req = req.bearer_auth(token);
        }
        let mut resp = req.send().await.map_err(|e| unavailable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(unavailable(format!("HTTP {}", resp.status().as_u16())));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| unavailable(e.to_string()))? {
            if bytes.len().saturating_add(chunk.len()) > MAX_POD_LIST_BYTES {
                return Err(unavailable("the pod list is over 32 MiB".into()));
            }
            bytes.extend_from_slice(&chunk);
        }
        let list: PodList = serde_json::from_slice(&bytes)
            .map_err(|e| unavailable(format!("the answer is not a PodList: {e}")))?;
        Ok(list
            .items
            .into_iter()
            .filter(|p| !p.metadata.uid.is_empty())
            .map(|p| (p.metadata.uid.to_ascii_lowercase(), p))
            .collect())
    }
}

/// `now - then`; a clock that went back counts as "very old", so the cache
/// is refreshed rather than trusted.
fn age(now: SystemTime, then: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or(Duration::MAX)
}

fn find<'a>(pods: &'a HashMap<String, Pod>, pod_uid: &str, cid: &str) -> Lookup<'a> {
    let Some(pod) = pods.get(pod_uid) else {
        return Lookup::NoPod;
    };
    let s = &pod.status;
    s.container_statuses
        .iter()
        .chain(&s.init_container_statuses)
        .chain(&s.ephemeral_container_statuses)
        .find(|c| {
            c.container_id
                .split_once("://")
                .is_some_and(|(_, id)| id.eq_ignore_ascii_case(cid))
        })
        .map_or(Lookup::NoContainer(pod), |c| Lookup::Found(pod, c))
}

fn selectors(pod: &Pod, status: &ContainerStatus, notes: &mut Notes) -> Vec<Selector> {
    let mut out = Vec::new();
    let mut put = |key: &str, value: &str, notes: &mut Notes| {
        if value.is_empty() {
            notes.omitted("k8s", format!("k8s:{key} omitted: empty in the pod"));
        } else {
            selector(&mut out, notes, "k8s", key, value);
        }
    };
    let m = &pod.metadata;
    put("ns", &m.namespace, notes);
    put("sa", &pod.spec.service_account_name, notes);
    put("pod-uid", &m.uid, notes);
    put("pod-name", &m.name, notes);
    put("node-name", &pod.spec.node_name, notes);
    for (k, v) in &m.labels {
        put("pod-label", &format!("{k}:{v}"), notes);
    }
    put("container-name", &status.name, notes);
    put("container-image", &status.image, notes);
    // The spec's image as written (`nginx:1.25`) when the runtime reports
    // it resolved (`docker.io/library/nginx:1.25`): both are true.
    let spec = &pod.spec;
    if let Some(c) = spec
        .containers
        .iter()
        .chain(&spec.init_containers)
        .chain(&spec.ephemeral_containers)
        .find(|c| c.name == status.name)
    {
        if c.image != status.image && !c.image.is_empty() {
            put("container-image", &c.image, notes);
        }
    }
    notes.info(
        "k8s",
        format!("pod {}/{} container {}", m.namespace, m.name, status.name),
    );
    out
}
