//! The webhook's configuration: TOML text → [`RawFile`] (strings, serde,
//! unknown keys refused) → [`WebhookConfig`] (parsed, validated; every error
//! names its key).
//!
//! ```toml
//! [webhook]
//! listen = "0.0.0.0:9443"
//! tls_cert = "/etc/lanyard/webhook/tls.crt"
//! tls_key = "/etc/lanyard/webhook/tls.key"
//! [webhook.azure]
//! tenant_id = "..."              # AZURE_TENANT_ID when the service account has no tenant-id annotation
//! cloud = "AzurePublicCloud"     # AzureUSGovernmentCloud, AzureChinaCloud, AzureGermanCloud
//! token_layout = "v1.6"          # or "v1.5"
//! [webhook.aws]
//! region = "eu-west-1"           # AWS_REGION / AWS_DEFAULT_REGION when set
//! [webhook.lanyard]
//! audience = "lanyard"
//! ```
//!
//! A convention is on when its table is present (`[webhook.lanyard]` is on
//! unless `enabled = false`). Defaults are the `DEFAULT_*` constants below;
//! each duration has a maximum.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Default listen address (the port upstream webhooks use behind Service port 443).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9443";
/// How often the TLS files are checked for a new certificate.
pub const DEFAULT_TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// Largest AdmissionReview accepted. An object in etcd is at most 1.5 MiB and
/// a review carries the object (and for updates the old object) once.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// Hard ceiling for `max_request_bytes`.
pub const MAX_MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;
/// Timeout of one Kubernetes API call. The API server gives a webhook 10 s by
/// default, so one slow lookup must leave room to answer.
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest `api_timeout` (an admission webhook may be given at most 30 s).
pub const MAX_API_TIMEOUT: Duration = Duration::from_secs(25);
/// How long a service account read from the API is reused. Misses are never
/// cached: a service account created just before its pod is read from the API.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(10);
/// Longest `service_account_cache_ttl`.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(600);
/// Most service accounts kept in the cache.
pub const DEFAULT_CACHE_SIZE: usize = 10_000;
/// Azure's default token audience (`api://AzureADTokenExchange`).
pub const AZURE_DEFAULT_AUDIENCE: &str = "api://AzureADTokenExchange";
/// Upstream's proxy sidecar image (azure-workload-identity v1.6.0).
pub const AZURE_DEFAULT_PROXY_IMAGE: &str =
    "mcr.microsoft.com/oss/azure/workload-identity/proxy:v1.6.0";
/// Upstream's proxy init image (azure-workload-identity v1.6.0).
pub const AZURE_DEFAULT_PROXY_INIT_IMAGE: &str =
    "mcr.microsoft.com/oss/azure/workload-identity/proxy-init:v1.6.0";
/// EKS's default token audience.
pub const AWS_DEFAULT_AUDIENCE: &str = "sts.amazonaws.com";
/// EKS's default token expiration (24 h, the most EKS allows).
pub const AWS_DEFAULT_TOKEN_EXPIRATION: i64 = 86_400;
/// Lanyard's default token audience.
pub const LANYARD_DEFAULT_AUDIENCE: &str = "lanyard";
/// Lanyard's default projected-token lifetime: 10 minutes, the shortest the
/// kube-apiserver issues. The token only has to reach Lanyard's token endpoint.
pub const LANYARD_DEFAULT_TOKEN_EXPIRATION: Duration = Duration::from_secs(600);
/// Longest Lanyard projected-token lifetime.
pub const LANYARD_MAX_TOKEN_EXPIRATION: Duration = Duration::from_secs(3600);
/// Host directory of the node agent's Workload API socket (the agent
/// DaemonSet's hostPath).
pub const LANYARD_DEFAULT_SOCKET_DIR: &str = "/run/lanyard/agent";
/// File name of the Workload API socket in that directory.
pub const LANYARD_DEFAULT_SOCKET_NAME: &str = "workload.sock";

/// A configuration error naming the key and the bad value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading webhook config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML does not parse or does not fit the schema (the parser's
    /// message names the key).
    #[error("webhook config {origin}: {message}")]
    Syntax {
        /// File path.
        origin: String,
        /// The parser's message.
        message: String,
    },
    /// A value is present but invalid, or a required one is missing.
    #[error("webhook config key `{key}`: {message}")]
    Invalid {
        /// Dotted key, e.g. `webhook.azure.cloud`.
        key: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// The file's shape.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    /// `[webhook]`.
    pub webhook: Option<RawWebhook>,
}

/// `[webhook]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// Listen address (HTTPS).
    pub listen: Option<String>,
    /// PEM certificate chain (reloaded when it changes).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (reloaded when it changes).
    pub tls_key: Option<PathBuf>,
    /// How often the TLS files are checked (default 10s).
    pub tls_reload_interval: Option<String>,
    /// Largest request body in bytes (default 4 MiB).
    pub max_request_bytes: Option<usize>,
    /// A kubeconfig file; default: in-cluster config, else `KUBECONFIG` /
    /// `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// Timeout of one Kubernetes API call (default 5s).
    pub api_timeout: Option<String>,
    /// `deny` (default) or `allow`: the answer when the Kubernetes API cannot
    /// be read for a pod that asks for an identity whose service account is
    /// needed (Azure). Pods that reach the webhook only for the EKS
    /// convention are admitted without it (and logged) either way.
    pub on_api_error: Option<String>,
    /// How long a service account read from the API is reused (default 10s).
    pub service_account_cache_ttl: Option<String>,
    /// Most cached service accounts (default 10000).
    pub service_account_cache_size: Option<usize>,
    /// `[webhook.azure]`.
    pub azure: Option<RawAzure>,
    /// `[webhook.aws]`.
    pub aws: Option<RawAws>,
    /// `[webhook.lanyard]`.
    pub lanyard: Option<RawLanyard>,
}

/// `[webhook.azure]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAzure {
    /// The cluster's default tenant (upstream's required `AZURE_TENANT_ID`).
    pub tenant_id: Option<String>,
    /// Azure cloud name (upstream's `AZURE_ENVIRONMENT`).
    pub cloud: Option<String>,
    /// `v1.6` (default) or `v1.5`.
    pub token_layout: Option<String>,
    /// Token audience (upstream's `--audience`).
    pub audience: Option<String>,
    /// Proxy sidecar image (upstream's `PROXY_IMAGE`).
    pub proxy_image: Option<String>,
    /// Proxy init image (upstream's `PROXY_INIT_IMAGE`).
    pub proxy_init_image: Option<String>,
    /// Put the proxy in initContainers with `restartPolicy: Always`
    /// (Kubernetes ≥ 1.32). Default: asked of the API server at start.
    pub native_sidecar: Option<bool>,
}

/// `[webhook.aws]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAws {
    /// `AWS_REGION` and `AWS_DEFAULT_REGION` (upstream's `--aws-default-region`).
    pub region: Option<String>,
    /// Token audience (upstream's `--token-audience`).
    pub audience: Option<String>,
    /// Token expiration in seconds (upstream's `--token-expiration`).
    pub token_expiration: Option<i64>,
    /// Set `AWS_STS_REGIONAL_ENDPOINTS=regional` (upstream's `--sts-regional-endpoint`).
    pub sts_regional_endpoints: Option<bool>,
}

/// `[webhook.lanyard]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLanyard {
    /// `false` turns the `lanyard.io/use` convention off.
    pub enabled: Option<bool>,
    /// Audience of the projected token (default `lanyard`).
    pub audience: Option<String>,
    /// Lifetime of the projected token (default 10m, at most 1h).
    pub token_expiration: Option<String>,
    /// Host directory holding the agent's socket (default `/run/lanyard/agent`).
    pub socket_host_dir: Option<String>,
    /// Socket file name (default `workload.sock`).
    pub socket_name: Option<String>,
}

/// The validated configuration of `lanyard webhook`.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// HTTPS listener.
    pub listen: SocketAddr,
    /// Certificate chain file.
    pub tls_cert: PathBuf,
    /// Private key file.
    pub tls_key: PathBuf,
    /// How often the TLS files are checked.
    pub tls_reload_interval: Duration,
    /// Largest request body.
    pub max_request_bytes: usize,
    /// The Kubernetes client.
    pub kube: KubeSettings,
    /// What pods get.
    pub mutation: MutationConfig,
}

/// How the Kubernetes API is reached.
#[derive(Debug, Clone)]
pub struct KubeSettings {
    /// Explicit kubeconfig, or `None` for in-cluster / the default kubeconfig.
    pub kubeconfig: Option<PathBuf>,
    /// Timeout of one API call.
    pub timeout: Duration,
    /// The answer when the API cannot be read.
    pub on_error: FailureMode,
    /// How long a service account is reused.
    pub cache_ttl: Duration,
    /// Most cached service accounts.
    pub cache_size: usize,
}

/// What the webhook answers when it cannot read the Kubernetes API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Refuse the pod (fail closed; the default).
    Deny,
    /// Admit the pod unchanged, with a warning (and an error log).
    Allow,
}

/// The mutation conventions that are on, and their settings.
#[derive(Debug, Clone)]
pub struct MutationConfig {
    /// Azure Workload Identity.
    pub azure: Option<AzureConfig>,
    /// EKS pod identity (IRSA).
    pub aws: Option<AwsConfig>,
    /// Lanyard's own.
    pub lanyard: Option<LanyardConfig>,
}

/// Azure Workload Identity settings.
#[derive(Debug, Clone)]
pub struct AzureConfig {
    /// Default tenant (may be empty only for `render` without a config).
    pub tenant_id: String,
    /// The cloud.
    pub cloud: AzureCloud,
    /// Which upstream file layout.
    pub token_layout: TokenLayout,
    /// Token audience.
    pub audience: String,
    /// Proxy sidecar image.
    pub proxy_image: String,
    /// Proxy init image.
    pub proxy_init_image: String,
    /// `Some` when configured; `None`: the server asks the API server's
    /// version at start (render assumes a current cluster: native).
    pub native_sidecar: Option<bool>,
}

/// An Azure cloud and its `AZURE_AUTHORITY_HOST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AzureCloud {
    /// `AzurePublicCloud`.
    Public,
    /// `AzureUSGovernmentCloud`.
    UsGovernment,
    /// `AzureChinaCloud`.
    China,
    /// `AzureGermanCloud`.
    German,
}

impl AzureCloud {
    /// The accepted names (upstream's go-autorest environment names).
    pub const NAMES: [&'static str; 4] = [
        "AzurePublicCloud",
        "AzureUSGovernmentCloud",
        "AzureChinaCloud",
        "AzureGermanCloud",
    ];

    /// Parses a cloud name; go-autorest compares names case-insensitively.
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            // go-autorest also knows the short names AzureCloud and AzureUSGovernment.
            "AZUREPUBLICCLOUD" | "AZURECLOUD" => Some(Self::Public),
            "AZUREUSGOVERNMENTCLOUD" | "AZUREUSGOVERNMENT" => Some(Self::UsGovernment),
            "AZURECHINACLOUD" => Some(Self::China),
            "AZUREGERMANCLOUD" => Some(Self::German),
            _ => None,
        }
    }

    /// `AZURE_AUTHORITY_HOST` (go-autorest `ActiveDirectoryEndpoint`).
    pub fn authority_host(self) -> &'static str {
        match self {
            Self::Public => "https://login.microsoftonline.com/",
            Self::UsGovernment => "https://login.microsoftonline.us/",
            Self::China => "https://login.chinacloudapi.cn/",
            Self::German => "https://login.microsoftonline.de/",
        }
    }
}

/// Upstream azure-workload-identity's two on-disk layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenLayout {
    /// ≤ v1.5.1: volume `azure-identity-token` at `/var/run/secrets/azure/tokens`.
    V1_5,
    /// v1.6.0: a hashed reserved volume name at `/var/run/secrets/azure/wi`.
    V1_6,
}

/// EKS settings.
#[derive(Debug, Clone)]
pub struct AwsConfig {
    /// Region for `AWS_REGION` / `AWS_DEFAULT_REGION`, if any.
    pub region: Option<String>,
    /// Default audience.
    pub audience: String,
    /// Default token expiration (seconds).
    pub token_expiration: i64,
    /// Default for `AWS_STS_REGIONAL_ENDPOINTS`.
    pub sts_regional_endpoints: bool,
}

/// Lanyard convention settings.
#[derive(Debug, Clone)]
pub struct LanyardConfig {
    /// Token audience.
    pub audience: String,
    /// Token lifetime (seconds).
    pub token_expiration: i64,
    /// Host directory of the socket.
    pub socket_host_dir: String,
    /// Socket file name.
    pub socket_name: String,
}

impl RawFile {
    /// Parses TOML text (`origin` names it in errors).
    ///
    /// # Errors
    /// [`ConfigError::Syntax`] naming the bad key.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Syntax {
            origin: origin.to_owned(),
            message: e.to_string(),
        })
    }

    /// Validates everything `lanyard webhook` needs.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key.
    pub fn validate(self) -> Result<WebhookConfig, ConfigError> {
        let w = self.webhook.ok_or_else(|| {
            invalid(
                "webhook",
                "missing: the file needs a [webhook] table with listen, tls_cert and tls_key",
            )
        })?;
        let listen_text = w.listen.clone().unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            invalid(
                "webhook.listen",
                format!("{listen_text:?} is not an address:port such as 0.0.0.0:9443"),
            )
        })?;
        let tls_cert = w.tls_cert.clone().ok_or_else(|| {
            invalid(
                "webhook.tls_cert",
                "missing: the API server only calls webhooks over HTTPS; give the PEM certificate file (cert-manager's tls.crt)",
            )
        })?;
        let tls_key = w.tls_key.clone().ok_or_else(|| {
            invalid(
                "webhook.tls_key",
                "missing: give the PEM private key file (cert-manager's tls.key)",
            )
        })?;
        let tls_reload_interval = duration(
            "webhook.tls_reload_interval",
            w.tls_reload_interval.as_deref(),
            DEFAULT_TLS_RELOAD_INTERVAL,
            Duration::from_millis(50),
            Duration::from_secs(3600),
        )?;
        let max_request_bytes = w.max_request_bytes.unwrap_or(DEFAULT_MAX_REQUEST_BYTES);
        if !(64 * 1024..=MAX_MAX_REQUEST_BYTES).contains(&max_request_bytes) {
            return Err(invalid(
                "webhook.max_request_bytes",
                format!("{max_request_bytes} is out of range; use 65536 to {MAX_MAX_REQUEST_BYTES} (default {DEFAULT_MAX_REQUEST_BYTES})"),
            ));
        }
        let timeout = duration(
            "webhook.api_timeout",
            w.api_timeout.as_deref(),
            DEFAULT_API_TIMEOUT,
            Duration::from_millis(100),
            MAX_API_TIMEOUT,
        )?;
        let on_error = match w.on_api_error.as_deref().unwrap_or("deny") {
            "deny" => FailureMode::Deny,
            "allow" => FailureMode::Allow,
            other => {
                return Err(invalid(
                    "webhook.on_api_error",
                    format!("{other:?} is neither \"deny\" (refuse the pod, the default) nor \"allow\" (admit it unchanged)"),
                ))
            }
        };
        let cache_ttl = duration(
            "webhook.service_account_cache_ttl",
            w.service_account_cache_ttl.as_deref(),
            DEFAULT_CACHE_TTL,
            Duration::ZERO,
            MAX_CACHE_TTL,
        )?;
        let cache_size = w.service_account_cache_size.unwrap_or(DEFAULT_CACHE_SIZE);
        if cache_size > 1_000_000 {
            return Err(invalid(
                "webhook.service_account_cache_size",
                format!("{cache_size} is more than 1000000"),
            ));
        }
        let kube = KubeSettings {
            kubeconfig: w.kubeconfig.clone(),
            timeout,
            on_error,
            cache_ttl,
            cache_size,
        };
        let mutation = mutation(&w, true)?;
        Ok(WebhookConfig {
            listen,
            tls_cert,
            tls_key,
            tls_reload_interval,
            max_request_bytes,
            kube,
            mutation,
        })
    }

    /// Validates only what a mutation needs (`lanyard webhook render
    /// --config`): the listener and TLS keys may be absent.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key.
    pub fn mutation(self) -> Result<MutationConfig, ConfigError> {
        mutation(&self.webhook.unwrap_or_default(), true)
    }
}

/// Reads and validates a config file.
///
/// # Errors
/// [`ConfigError`] naming the file or key.
pub fn load(path: &Path) -> Result<WebhookConfig, ConfigError> {
    read(path)?.validate()
}

/// Reads a config file without validating it.
///
/// # Errors
/// [`ConfigError::Read`] or [`ConfigError::Syntax`].
pub fn read(path: &Path) -> Result<RawFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    RawFile::parse(&text, &path.display().to_string())
}

impl MutationConfig {
    /// What `lanyard webhook render` uses without `--config`: every
    /// convention on with upstream's defaults, and no default Azure tenant
    /// (`AZURE_TENANT_ID` then comes only from the service account).
    ///
    /// # Errors
    /// None in practice (the defaults validate; a test says so).
    pub fn render_default() -> Result<Self, ConfigError> {
        let raw = RawWebhook {
            azure: Some(RawAzure::default()),
            aws: Some(RawAws::default()),
            lanyard: Some(RawLanyard::default()),
            ..RawWebhook::default()
        };
        mutation(&raw, false)
    }
}

fn mutation(w: &RawWebhook, require_tenant: bool) -> Result<MutationConfig, ConfigError> {
    let azure = match &w.azure {
        None => None,
        Some(a) => {
            let tenant_id = a.tenant_id.clone().unwrap_or_default();
            if require_tenant && tenant_id.trim().is_empty() {
                return Err(invalid(
                    "webhook.azure.tenant_id",
                    "missing: the Azure tenant (a GUID) that pods get as AZURE_TENANT_ID when their service account has no azure.workload.identity/tenant-id annotation (upstream's required AZURE_TENANT_ID)",
                ));
            }
            let cloud_name = a.cloud.as_deref().unwrap_or("AzurePublicCloud");
            let cloud = AzureCloud::parse(cloud_name).ok_or_else(|| {
                invalid(
                    "webhook.azure.cloud",
                    format!(
                        "{cloud_name:?} is not an Azure cloud; use one of {}",
                        AzureCloud::NAMES.join(", ")
                    ),
                )
            })?;
            let token_layout = match a.token_layout.as_deref().unwrap_or("v1.6") {
                "v1.6" => TokenLayout::V1_6,
                "v1.5" => TokenLayout::V1_5,
                other => {
                    return Err(invalid(
                        "webhook.azure.token_layout",
                        format!("{other:?} is neither \"v1.6\" (volume azure-workload-identity-reserved-<hash> at /var/run/secrets/azure/wi) nor \"v1.5\" (volume azure-identity-token at /var/run/secrets/azure/tokens)"),
                    ))
                }
            };
            Some(AzureConfig {
                tenant_id,
                cloud,
                token_layout,
                audience: non_empty(
                    "webhook.azure.audience",
                    a.audience.as_deref(),
                    AZURE_DEFAULT_AUDIENCE,
                )?,
                proxy_image: non_empty(
                    "webhook.azure.proxy_image",
                    a.proxy_image.as_deref(),
                    AZURE_DEFAULT_PROXY_IMAGE,
                )?,
                proxy_init_image: non_empty(
                    "webhook.azure.proxy_init_image",
                    a.proxy_init_image.as_deref(),
                    AZURE_DEFAULT_PROXY_INIT_IMAGE,
                )?,
                native_sidecar: a.native_sidecar,
            })
        }
    };
    let aws = match &w.aws {
        None => None,
        Some(a) => {
            let region = match a.region.as_deref() {
                None | Some("") => None,
                Some(r)
                    if r.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
                {
                    Some(r.to_owned())
                }
                Some(r) => {
                    return Err(invalid(
                        "webhook.aws.region",
                        format!("{r:?} is not an AWS region name such as eu-west-1"),
                    ))
                }
            };
            let token_expiration = a.token_expiration.unwrap_or(AWS_DEFAULT_TOKEN_EXPIRATION);
            if !(600..=AWS_DEFAULT_TOKEN_EXPIRATION).contains(&token_expiration) {
                return Err(invalid(
                    "webhook.aws.token_expiration",
                    format!("{token_expiration} is out of range; use 600 to 86400 seconds"),
                ));
            }
            Some(AwsConfig {
                region,
                audience: non_empty(
                    "webhook.aws.audience",
                    a.audience.as_deref(),
                    AWS_DEFAULT_AUDIENCE,
                )?,
                token_expiration,
                sts_regional_endpoints: a.sts_regional_endpoints.unwrap_or(false),
            })
        }
    };
    let raw_lanyard = w.lanyard.clone().unwrap_or_default();
    let lanyard = if raw_lanyard.enabled == Some(false) {
        None
    } else {
        let exp = duration(
            "webhook.lanyard.token_expiration",
            raw_lanyard.token_expiration.as_deref(),
            LANYARD_DEFAULT_TOKEN_EXPIRATION,
            Duration::from_secs(600),
            LANYARD_MAX_TOKEN_EXPIRATION,
        )?;
        let socket_host_dir = non_empty(
            "webhook.lanyard.socket_host_dir",
            raw_lanyard.socket_host_dir.as_deref(),
            LANYARD_DEFAULT_SOCKET_DIR,
        )?;
        if !socket_host_dir.starts_with('/') {
            return Err(invalid(
                "webhook.lanyard.socket_host_dir",
                format!("{socket_host_dir:?} is not an absolute path (the agent DaemonSet's hostPath, default {LANYARD_DEFAULT_SOCKET_DIR})"),
            ));
        }
        let socket_name = non_empty(
            "webhook.lanyard.socket_name",
            raw_lanyard.socket_name.as_deref(),
            LANYARD_DEFAULT_SOCKET_NAME,
        )?;
        if socket_name.contains('/') {
            return Err(invalid(
                "webhook.lanyard.socket_name",
                format!("{socket_name:?} must be a file name, without '/'"),
            ));
        }
        Some(LanyardConfig {
            audience: non_empty(
                "webhook.lanyard.audience",
                raw_lanyard.audience.as_deref(),
                LANYARD_DEFAULT_AUDIENCE,
            )?,
            token_expiration: i64::try_from(exp.as_secs()).unwrap_or(600),
            socket_host_dir,
            socket_name,
        })
    };
    Ok(MutationConfig {
        azure,
        aws,
        lanyard,
    })
}

fn non_empty(key: &'static str, value: Option<&str>, default: &str) -> Result<String, ConfigError> {
    match value {
        None => Ok(default.to_owned()),
        Some(v) if v.trim().is_empty() => Err(invalid(
            key,
            format!("is empty; remove the key for the default {default:?}"),
        )),
        Some(v) => Ok(v.to_owned()),
    }
}

fn duration(
    key: &'static str,
    value: Option<&str>,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let Some(text) = value else {
        return Ok(default);
    };
    let d = humantime::parse_duration(text).map_err(|e| {
        invalid(
            key,
            format!("{text:?} is not a duration such as 10s or 5m: {e}"),
        )
    })?;
    if d < min || d > max {
        return Err(invalid(
            key,
            format!(
                "{text} is out of range; use {} to {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests;
