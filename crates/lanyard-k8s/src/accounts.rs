//! Where service accounts come from: the Kubernetes API behind a small
//! read-through cache, or (for `lanyard webhook render`) one account from a
//! file.
//!
//! The cache keeps accounts that were *found* for `service_account_cache_ttl`
//! (10 s) and never caches a miss: a service account created a moment before
//! its pod is read from the API on the pod's admission, which is the race
//! EKS's informer-only cache loses (aws/amazon-eks-pod-identity-webhook#174).
//! Azure's webhook falls back to the API the same way. The price is one API
//! GET per miss; misses are rare (the pod would fail admission anyway).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::Api;

use crate::config::KubeSettings;
use crate::metrics::Metrics;

/// The service account could not be read (the answer is then the configured
/// failure mode).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("cannot read service account {namespace}/{name} from the Kubernetes API: {message}")]
pub struct LookupError {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// What happened and what to check.
    pub message: String,
}

/// A source of service accounts.
#[derive(Debug, Clone)]
pub enum ServiceAccounts {
    /// The Kubernetes API, through the cache.
    Kube(KubeServiceAccounts),
    /// A fixed set (render: the `--service-account` file, or none).
    Fixed(Vec<ServiceAccount>),
}

impl ServiceAccounts {
    /// The service account `namespace/name`, `None` when it does not exist.
    ///
    /// # Errors
    /// [`LookupError`] when the API could not be read (unreachable, timeout,
    /// forbidden, bad answer).
    pub async fn fetch(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ServiceAccount>, LookupError> {
        match self {
            Self::Kube(k) => k.fetch(namespace, name).await,
            Self::Fixed(list) => Ok(list
                .iter()
                .find(|sa| {
                    sa.metadata.name.as_deref() == Some(name)
                        && sa
                            .metadata
                            .namespace
                            .as_deref()
                            .is_none_or(|ns| ns.is_empty() || ns == namespace)
                })
                .cloned()),
        }
    }
}

/// Cached accounts by (namespace, name), with the time they were read.
type Cache = HashMap<(String, String), (Instant, ServiceAccount)>;

/// Service accounts from the API with a read-through cache.
#[derive(Clone)]
pub struct KubeServiceAccounts {
    client: kube::Client,
    timeout: Duration,
    ttl: Duration,
    max: usize,
    cache: Arc<Mutex<Cache>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for KubeServiceAccounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeServiceAccounts")
            .field("timeout", &self.timeout)
            .field("ttl", &self.ttl)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl KubeServiceAccounts {
    /// Wraps a client.
    pub fn new(client: kube::Client, settings: &KubeSettings, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            timeout: settings.timeout,
            ttl: settings.cache_ttl,
            max: settings.cache_size,
            cache: Arc::new(Mutex::new(HashMap::new())),
            metrics,
        }
    }

    async fn fetch(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ServiceAccount>, LookupError> {
        let key = (namespace.to_owned(), name.to_owned());
        if let Some(sa) = self.cached(&key) {
            self.metrics.lookup("cache_hit");
            return Ok(Some(sa));
        }
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let err = |message: String| LookupError {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            message,
        };
        let result = tokio::time::timeout(self.timeout, api.get_opt(name)).await;
        match result {
            Err(_) => {
                self.metrics.lookup("error");
                Err(err(format!(
                    "no answer within {} (webhook.api_timeout); is the API server reachable from the webhook's pod?",
                    humantime::format_duration(self.timeout)
                )))
            }
            Ok(Err(e)) => {
                self.metrics.lookup("error");
                Err(err(describe(&e, namespace)))
            }
            Ok(Ok(None)) => {
                self.metrics.lookup("not_found");
                self.forget(&key);
                Ok(None)
            }
            Ok(Ok(Some(sa))) => {
                self.metrics.lookup("api_hit");
                self.remember(key, sa.clone());
                Ok(Some(sa))
            }
        }
    }

    fn cached(&self, key: &(String, String)) -> Option<ServiceAccount> {
        if self.ttl.is_zero() {
            return None;
        }
        let cache = self.cache.lock().ok()?;
        let (at, sa) = cache.get(key)?;
        (at.elapsed() < self.ttl).then(|| sa.clone())
    }

    fn remember(&self, key: (String, String), sa: ServiceAccount) {
        if self.ttl.is_zero() || self.max == 0 {
            return;
        }
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= self.max {
                // Drop what expired; if that is not enough, start over. A
                // full cache only costs API reads.
                let ttl = self.ttl;
                cache.retain(|_, (at, _)| at.elapsed() < ttl);
                if cache.len() >= self.max {
                    cache.clear();
                }
            }
            cache.insert(key, (Instant::now(), sa));
        }
    }

    fn forget(&self, key: &(String, String)) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(key);
        }
    }
}

/// An API error as a sentence that says what to check.
fn describe(e: &kube::Error, namespace: &str) -> String {
    match e {
        kube::Error::Api(status) if status.code == 401 => format!(
            "401 Unauthorized: the webhook's credentials were refused ({})",
            status.message
        ),
        kube::Error::Api(status) if status.code == 403 => format!(
            "403 Forbidden: the webhook's service account may not get serviceaccounts in namespace {namespace}; grant get on serviceaccounts (the chart's ClusterRole does) ({})",
            status.message
        ),
        kube::Error::Api(status) => format!("the API server answered {}: {}", status.code, status.message),
        other => format!("{other}"),
    }
}
