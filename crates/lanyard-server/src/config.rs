//! Server configuration: TOML file + `LANYARD__…` environment overrides →
//! [`RawConfig`] (strings, serde) → [`ServerConfig`] (parsed, validated).
//!
//! Overrides use `__` between path parts: `LANYARD__SERVER__LISTEN=0.0.0.0:8443`
//! sets `[server] listen`. Values are read as TOML when they parse as a TOML
//! value (`true`, `8`, `["ES256","RS256"]`) and as strings otherwise. Unknown
//! keys, in the file or the environment, are errors that name the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lanyard_ca::RotationPolicy;
use lanyard_core::ttl::{parse_duration, DEFAULT_JWT_SVID_TTL, MAX_JWT_SVID_TTL};
use lanyard_core::TrustDomain;
use lanyard_jose::Algorithm;
use serde::Deserialize;

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "LANYARD__";
/// Default request body limit: admin and token requests are small.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024;

/// A configuration error naming the key and the bad value (secrets redacted).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML does not parse or does not fit the schema (unknown key, wrong type).
    #[error("config {origin}: {message}")]
    Syntax {
        /// File path or "environment".
        origin: String,
        /// The parser's message, which names the key.
        message: String,
    },
    /// A value is present but invalid.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// Dotted key, e.g. `server.listen`.
        key: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// Most verified tokens `tokens.verified_cache_entries` may keep.
pub const MAX_VERIFIED_CACHE_ENTRIES: usize = 1_000_000;

/// The file's shape. Every table refuses unknown keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// SPIFFE trust domain, e.g. `example.org`.
    pub trust_domain: Option<String>,
    /// Public issuer URL (`iss`), e.g. `https://lanyard.example.org`.
    pub issuer: Option<String>,
    /// `[server]`.
    #[serde(default)]
    pub server: RawServer,
    /// `[store]`.
    #[serde(default)]
    pub store: RawStore,
    /// `[keys]`.
    #[serde(default)]
    pub keys: RawKeys,
    /// `[tokens]`.
    #[serde(default)]
    pub tokens: RawTokens,
    /// `[ca]`.
    #[serde(default)]
    pub ca: RawCa,
    /// `[node_api]`.
    #[serde(default)]
    pub node_api: RawNodeApi,
    /// `[audit]`.
    #[serde(default)]
    pub audit: RawAudit,
    /// `[federation]`.
    #[serde(default)]
    pub federation: RawFederation,
}

/// `[federation]`: SPIFFE federation with other trust domains.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFederation {
    /// Shortest interval between two refreshes of one relationship,
    /// whatever the peer's hint (30s).
    pub refresh_floor: Option<String>,
    /// PEM roots trusted for `https_web` bundle endpoints besides the
    /// platform's (a private CA).
    pub web_roots: Option<PathBuf>,
    /// `[federation.bundle_endpoint]`: serve this trust domain's bundle.
    #[serde(default)]
    pub bundle_endpoint: RawBundleEndpoint,
}

/// `[federation.bundle_endpoint]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBundleEndpoint {
    /// Listen address; unset or `""` serves no bundle endpoint.
    pub listen: Option<String>,
    /// `https_spiffe` (default: TLS with the server's X.509-SVID) or
    /// `https_web` (TLS with `cert` and `key`).
    pub profile: Option<String>,
    /// `https_web`: PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// `https_web`: PEM private key.
    pub key: Option<PathBuf>,
    /// `spiffe_refresh_hint` served to peers (5m).
    pub refresh_hint: Option<String>,
}

/// `[audit]`: signed checkpoints of the audit log.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// How often a checkpoint is signed (60s).
    pub checkpoint_interval: Option<String>,
    /// Append each checkpoint to this file (keep it off the database's disk,
    /// or ship it elsewhere).
    pub checkpoint_file: Option<PathBuf>,
    /// Also print each checkpoint as a JSON line on stdout.
    pub checkpoint_stdout: Option<bool>,
}

/// `[ca]`: the X.509 CA.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCa {
    /// Default X.509-SVID lifetime (1h).
    pub svid_ttl: Option<String>,
    /// Lifetime of a node's (agent's) own SVID (1h, or svid_max_ttl if lower).
    pub node_svid_ttl: Option<String>,
    /// Longest X.509-SVID lifetime (24h).
    pub svid_max_ttl: Option<String>,
    /// Lifetime of a self-signed root (1 year).
    pub root_ttl: Option<String>,
    /// How long each signing intermediate signs before the next takes over (24h).
    pub intermediate_rotation: Option<String>,
    /// How long the next intermediate exists before it signs (1h).
    pub intermediate_publish_lead: Option<String>,
    /// Upstream CA: PEM with the issuing CA certificate first, then any intermediates.
    pub upstream_cert: Option<PathBuf>,
    /// Upstream CA: its PKCS#8 PEM key (0600).
    pub upstream_key: Option<PathBuf>,
    /// Upstream CA: the PEM roots relying parties trust.
    pub upstream_bundle: Option<PathBuf>,
}

/// `[node_api]`: the gRPC API node agents use.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNodeApi {
    /// Listen address (TLS, always); `""` disables it. Default 127.0.0.1:8081.
    pub listen: Option<String>,
    /// DNS names on the server's node-API certificate (default `localhost`).
    pub dns_names: Option<Vec<String>>,
    /// Longest join token lifetime (24h).
    pub join_token_max_ttl: Option<String>,
    /// A node id whose agent serves entries made without a parent that have
    /// only `unix:` selectors (set by `lanyard dev`).
    pub default_parent_node: Option<String>,
    /// Kubernetes service accounts (`namespace:name`) whose projected tokens
    /// may attest a node (the agent DaemonSet's), e.g. `["lanyard:agent"]`.
    pub k8s_agent_service_accounts: Option<Vec<String>>,
    /// Close connections whose peer sends nothing for this long (75s).
    pub idle_timeout: Option<String>,
}

/// `[server]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Listen address.
    pub listen: Option<String>,
    /// PEM certificate chain.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP (loopback only).
    pub insecure_plain_http: Option<bool>,
    /// Request body limit in bytes.
    pub max_request_bytes: Option<usize>,
    /// Most connections served at once (default 4096, or 3/4 of the open
    /// files limit when lower).
    pub max_connections: Option<usize>,
    /// Longest wait for a request's headers, and longest keep-alive idle (15s).
    pub header_timeout: Option<String>,
    /// Longest wait for a request's body (15s).
    pub body_timeout: Option<String>,
    /// Longest time a request may take to be answered (20s); a store that
    /// hangs costs callers this long and a 503.
    pub request_timeout: Option<String>,
}

/// `[store]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// `sqlite:///path` or `postgres://…`.
    pub url: Option<String>,
}

/// `[keys]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeys {
    /// File holding the key-encryption key (0600).
    pub kek_file: Option<PathBuf>,
    /// Signing algorithms to keep keys for.
    pub algorithms: Option<Vec<String>>,
    /// How long a key signs.
    pub rotation_period: Option<String>,
    /// How long the next key is published before it signs.
    pub publish_lead: Option<String>,
}

/// `[tokens]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokens {
    /// Default JWT-SVID lifetime.
    pub default_ttl: Option<String>,
    /// Longest JWT-SVID lifetime anyone may ask for.
    pub max_ttl: Option<String>,
    /// Longest delegation chain (actors), default 3.
    pub max_delegation_depth: Option<usize>,
    /// How many verified subject tokens are remembered until they expire
    /// (default 10,000; 0 turns the cache off).
    pub verified_cache_entries: Option<usize>,
}

/// Where the key-encryption key comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum KekSource {
    /// A file (0600).
    File(PathBuf),
    /// Base64 text from the `LANYARD_KEK` environment variable.
    Env(String),
}

impl std::fmt::Debug for KekSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "File({})", p.display()),
            Self::Env(_) => f.write_str("Env(***)"),
        }
    }
}

/// TLS material for the listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Trust domain.
    pub trust_domain: TrustDomain,
    /// Issuer URL, no trailing slash.
    pub issuer: String,
    /// Listen address.
    pub listen: SocketAddr,
    /// TLS files; `None` only with `insecure_plain_http` on loopback.
    pub tls: Option<TlsFiles>,
    /// Request body limit.
    pub max_request_bytes: usize,
    /// Store URL.
    pub store_url: String,
    /// KEK source.
    pub kek: KekSource,
    /// Algorithms with signing keys (first is the default).
    pub algorithms: Vec<Algorithm>,
    /// Rotation schedule.
    pub rotation: RotationPolicy,
    /// Default JWT-SVID TTL.
    pub jwt_default_ttl: Duration,
    /// Maximum JWT-SVID TTL.
    pub jwt_max_ttl: Duration,
    /// Longest delegation chain.
    pub max_delegation_depth: usize,
    /// Verified subject tokens remembered (`tokens.verified_cache_entries`;
    /// 0: off).
    pub verified_token_cache: usize,
    /// The X.509 CA.
    pub ca: CaConfig,
    /// The node API; `None` when disabled.
    pub node_api: Option<NodeApiConfig>,
    /// Limits of the HTTP listener.
    pub listen_limits: crate::net::ListenLimits,
    /// Audit checkpoints.
    pub audit: AuditConfig,
    /// SPIFFE federation.
    pub federation: FederationConfig,
}

/// The validated `[federation]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationConfig {
    /// Shortest interval between refreshes of one relationship.
    pub refresh_floor: Duration,
    /// Extra PEM roots for `https_web` endpoints.
    pub web_roots: Option<PathBuf>,
    /// The bundle endpoint; `None` when not served.
    pub bundle_endpoint: Option<BundleEndpointConfig>,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            refresh_floor: DEFAULT_FEDERATION_REFRESH_FLOOR,
            web_roots: None,
            bundle_endpoint: None,
        }
    }
}

/// The validated `[federation.bundle_endpoint]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleEndpointConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// The profile.
    pub profile: BundleEndpointProfile,
    /// `spiffe_refresh_hint`.
    pub refresh_hint: Duration,
}

/// How the bundle endpoint does TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleEndpointProfile {
    /// The server's own X.509-SVID.
    HttpsSpiffe,
    /// A configured certificate.
    HttpsWeb {
        /// PEM chain.
        cert: PathBuf,
        /// PEM key.
        key: PathBuf,
    },
}

impl BundleEndpointProfile {
    /// The spec's name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::HttpsSpiffe => "https_spiffe",
            Self::HttpsWeb { .. } => "https_web",
        }
    }
}

/// Default `federation.refresh_floor`.
pub const DEFAULT_FEDERATION_REFRESH_FLOOR: Duration = Duration::from_secs(30);
/// Default `federation.bundle_endpoint.refresh_hint`.
pub const DEFAULT_BUNDLE_REFRESH_HINT: Duration = Duration::from_secs(300);

/// The validated `[audit]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// How often a checkpoint is signed.
    pub checkpoint_interval: Duration,
    /// Where checkpoints are copied.
    pub sink: crate::checkpoint::Sink,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_interval: crate::checkpoint::DEFAULT_INTERVAL,
            sink: crate::checkpoint::Sink::default(),
        }
    }
}

/// The validated `[ca]`.
#[derive(Debug, Clone)]
pub struct CaConfig {
    /// Default X.509-SVID lifetime.
    pub svid_ttl: Duration,
    /// A node's own SVID lifetime: independent of `svid_ttl`, so that short
    /// workload SVIDs do not shorten how long an agent may be cut off from
    /// the servers before its node SVID lapses and it must be joined again.
    pub node_svid_ttl: Duration,
    /// Longest X.509-SVID lifetime.
    pub svid_max_ttl: Duration,
    /// Self-signed root lifetime.
    pub root_ttl: Duration,
    /// Intermediate rotation schedule.
    pub rotation: RotationPolicy,
    /// Upstream CA files (certificate chain, key, bundle).
    pub upstream: Option<(PathBuf, PathBuf, PathBuf)>,
}

impl Default for CaConfig {
    /// 1h SVIDs (24h at most), a one-year root, intermediates rotated daily
    /// and prepared an hour ahead.
    fn default() -> Self {
        let svid_max_ttl = Duration::from_secs(24 * 3600);
        Self {
            svid_ttl: lanyard_core::ttl::DEFAULT_X509_SVID_TTL,
            node_svid_ttl: lanyard_core::ttl::DEFAULT_X509_SVID_TTL,
            svid_max_ttl,
            root_ttl: Duration::from_secs(365 * 24 * 3600),
            rotation: RotationPolicy {
                rotation_period: Duration::from_secs(24 * 3600),
                publish_lead: Duration::from_secs(3600),
                retain_after: svid_max_ttl + CLOCK_SKEW,
            },
            upstream: None,
        }
    }
}

/// The validated `[node_api]`.
#[derive(Debug, Clone)]
pub struct NodeApiConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// DNS names on the server certificate.
    pub dns_names: Vec<String>,
    /// Longest join token lifetime.
    pub join_token_max_ttl: Duration,
    /// Default parent for agent entries.
    pub default_parent: Option<lanyard_core::SpiffeId>,
    /// Service accounts (`ns:name`) allowed to attest nodes.
    pub k8s_agent_service_accounts: Vec<String>,
    /// A connection whose peer sends nothing this long is closed (agents'
    /// keepalive answers count).
    pub idle_timeout: Duration,
}

/// Default idle timeout of node API connections: twice the keepalive ping
/// interval, so a live agent is never cut.
pub const DEFAULT_NODE_IDLE_TIMEOUT: Duration = Duration::from_secs(75);

/// Default longest join token lifetime.
pub const DEFAULT_JOIN_TOKEN_MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// Default delegation depth (seed 003: bounded chains).
pub const DEFAULT_MAX_DELEGATION_DEPTH: usize = 3;

/// Skew allowed on top of the longest token when retaining old keys.
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

impl RawConfig {
    /// Parses TOML text, then applies overrides from `env` (a map, so tests
    /// never touch the process environment).
    ///
    /// # Errors
    /// [`ConfigError::Syntax`] naming the offending key or variable.
    pub fn parse(
        text: &str,
        origin: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        for (var, value) in env.iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)) {
            let path: Vec<String> = var
                .trim_start_matches(ENV_PREFIX)
                .split("__")
                .map(str::to_lowercase)
                .collect();
            let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(value.clone()));
            set_path(&mut table, &path, value).map_err(|message| ConfigError::Syntax {
                origin: format!("environment variable {var}"),
                message,
            })?;
        }
        // Deserialise from text so errors carry the line and the key. With no
        // overrides that is the user's own file, so line numbers match it.
        let has_overrides = env.keys().any(|k| k.starts_with(ENV_PREFIX));
        let (source, origin) = if has_overrides {
            let merged = toml::to_string(&table).map_err(|e| ConfigError::Syntax {
                origin: origin.to_owned(),
                message: e.to_string(),
            })?;
            (
                merged,
                format!("{origin} (with {ENV_PREFIX}* environment overrides applied)"),
            )
        } else {
            (text.to_owned(), origin.to_owned())
        };
        toml::from_str(&source).map_err(|e: toml::de::Error| ConfigError::Syntax {
            origin,
            message: e.to_string(),
        })
    }

    /// Validates every value and fills in defaults.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first bad key.
    pub fn validate(self, env: &BTreeMap<String, String>) -> Result<ServerConfig, ConfigError> {
        let trust_domain = TrustDomain::parse(
            self.trust_domain.as_deref().unwrap_or("example.org"),
        )
        .map_err(|e| ConfigError::Invalid {
            key: "trust_domain",
            message: e.to_string(),
        })?;
        let listen_text = self.server.listen.as_deref().unwrap_or("127.0.0.1:8443");
        let listen: SocketAddr = listen_text.parse().map_err(|_| ConfigError::Invalid {
            key: "server.listen",
            message: format!("{listen_text:?} is not an IP:port address, e.g. 0.0.0.0:8443"),
        })?;
        let plain = self.server.insecure_plain_http.unwrap_or(false);
        let tls = match (self.server.tls_cert, self.server.tls_key, plain) {
            (Some(cert), Some(key), false) => Some(TlsFiles { cert, key }),
            (None, None, true) if listen.ip().is_loopback() => None,
            (_, _, true) if !listen.ip().is_loopback() => {
                return Err(ConfigError::Invalid {
                    key: "server.insecure_plain_http",
                    message: format!("plain HTTP is only allowed on a loopback address, not {listen}; configure server.tls_cert and server.tls_key"),
                })
            }
            (Some(_), Some(_), true) => {
                return Err(ConfigError::Invalid {
                    key: "server.insecure_plain_http",
                    message: "set either TLS files or insecure_plain_http, not both".into(),
                })
            }
            _ => {
                return Err(ConfigError::Invalid {
                    key: "server.tls_cert",
                    message: "TLS needs both server.tls_cert and server.tls_key (PEM files)".into(),
                })
            }
        };
        let issuer = self.issuer.unwrap_or_else(|| {
            let scheme = if tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{listen}")
        });
        let issuer = validate_issuer(&issuer, tls.is_none())?;
        let max_request_bytes = self
            .server
            .max_request_bytes
            .unwrap_or(DEFAULT_MAX_REQUEST_BYTES);
        if !(1024..=16 * 1024 * 1024).contains(&max_request_bytes) {
            return Err(ConfigError::Invalid {
                key: "server.max_request_bytes",
                message: format!("{max_request_bytes} is outside 1024..=16777216"),
            });
        }
        let store_url = self.store.url.ok_or(ConfigError::Invalid {
            key: "store.url",
            message: "missing; use sqlite:///var/lib/lanyard/lanyard.db or postgres://user@host/db"
                .into(),
        })?;
        let kek = match (self.keys.kek_file, env.get(lanyard_ca::KEK_ENV)) {
            (Some(path), _) => KekSource::File(path),
            (None, Some(text)) => KekSource::Env(text.clone()),
            (None, None) => {
                return Err(ConfigError::Invalid {
                    key: "keys.kek_file",
                    message: format!(
                        "missing; point it at a 0600 file with 32 random bytes (base64), or set {}",
                        lanyard_ca::KEK_ENV
                    ),
                })
            }
        };
        let algorithms = match self.keys.algorithms {
            None => vec![Algorithm::Es256],
            Some(names) if names.is_empty() => {
                return Err(ConfigError::Invalid {
                    key: "keys.algorithms",
                    message: "must name at least one algorithm".into(),
                })
            }
            Some(names) => names
                .iter()
                .map(|n| {
                    n.parse::<Algorithm>().map_err(|e| ConfigError::Invalid {
                        key: "keys.algorithms",
                        message: e.to_string(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        let dur = |key: &'static str,
                   v: Option<String>,
                   default: Duration|
         -> Result<Duration, ConfigError> {
            v.map_or(Ok(default), |s| {
                parse_duration(&s).map_err(|message| ConfigError::Invalid { key, message })
            })
        };
        let jwt_default_ttl = dur(
            "tokens.default_ttl",
            self.tokens.default_ttl,
            DEFAULT_JWT_SVID_TTL,
        )?;
        let jwt_max_ttl = dur(
            "tokens.max_ttl",
            self.tokens.max_ttl,
            Duration::from_secs(3600),
        )?;
        if jwt_max_ttl > MAX_JWT_SVID_TTL {
            return Err(ConfigError::Invalid {
                key: "tokens.max_ttl",
                message: "must be at most 24h".into(),
            });
        }
        if jwt_default_ttl > jwt_max_ttl || jwt_default_ttl.is_zero() {
            return Err(ConfigError::Invalid {
                key: "tokens.default_ttl",
                message: "must be above zero and at most tokens.max_ttl".into(),
            });
        }
        let max_delegation_depth = self
            .tokens
            .max_delegation_depth
            .unwrap_or(DEFAULT_MAX_DELEGATION_DEPTH);
        if !(1..=10).contains(&max_delegation_depth) {
            return Err(ConfigError::Invalid {
                key: "tokens.max_delegation_depth",
                message: "must be between 1 and 10".into(),
            });
        }
        let verified_token_cache = self
            .tokens
            .verified_cache_entries
            .unwrap_or(lanyard_attest::DEFAULT_VERIFIED_CACHE_ENTRIES);
        if verified_token_cache > MAX_VERIFIED_CACHE_ENTRIES {
            return Err(ConfigError::Invalid {
                key: "tokens.verified_cache_entries",
                message: format!(
                    "must be at most {MAX_VERIFIED_CACHE_ENTRIES} (each entry holds a token's evidence, ~1 KiB); 0 turns the cache off"
                ),
            });
        }
        let defaults = RotationPolicy::default();
        let rotation_period = dur(
            "keys.rotation_period",
            self.keys.rotation_period,
            defaults.rotation_period,
        )?;
        let publish_lead = dur(
            "keys.publish_lead",
            self.keys.publish_lead,
            defaults.publish_lead,
        )?;
        if publish_lead < Duration::from_secs(60) || publish_lead > rotation_period {
            return Err(ConfigError::Invalid {
                key: "keys.publish_lead",
                message: "must be at least 1m and at most keys.rotation_period".into(),
            });
        }
        let rotation = RotationPolicy {
            rotation_period,
            publish_lead,
            retain_after: jwt_max_ttl + CLOCK_SKEW,
        };
        let ca = validate_ca(self.ca, &dur)?;
        let node_api = match self.node_api.listen.as_deref().unwrap_or("127.0.0.1:8081") {
            "" => None,
            text => {
                let listen: SocketAddr = text.parse().map_err(|_| ConfigError::Invalid {
                    key: "node_api.listen",
                    message: format!("{text:?} is not an IP:port address, e.g. 0.0.0.0:8081 (\"\" disables the node API)"),
                })?;
                let dns_names = self
                    .node_api
                    .dns_names
                    .unwrap_or_else(|| vec!["localhost".into()]);
                let join_token_max_ttl = dur(
                    "node_api.join_token_max_ttl",
                    self.node_api.join_token_max_ttl,
                    DEFAULT_JOIN_TOKEN_MAX_TTL,
                )?;
                let default_parent = match self.node_api.default_parent_node {
                    None => None,
                    Some(node) => Some(
                        lanyard_core::naming::node_id(&trust_domain, &node).map_err(|e| {
                            ConfigError::Invalid {
                                key: "node_api.default_parent_node",
                                message: e.to_string(),
                            }
                        })?,
                    ),
                };
                let k8s_agent_service_accounts =
                    self.node_api.k8s_agent_service_accounts.unwrap_or_default();
                if let Some(bad) = k8s_agent_service_accounts
                    .iter()
                    .find(|s| s.split(':').count() != 2 || s.starts_with(':') || s.ends_with(':'))
                {
                    return Err(ConfigError::Invalid {
                        key: "node_api.k8s_agent_service_accounts",
                        message: format!("{bad:?} is not NAMESPACE:NAME"),
                    });
                }
                let idle_timeout = dur(
                    "node_api.idle_timeout",
                    self.node_api.idle_timeout,
                    DEFAULT_NODE_IDLE_TIMEOUT,
                )?;
                if idle_timeout < Duration::from_secs(1) {
                    return Err(ConfigError::Invalid {
                        key: "node_api.idle_timeout",
                        message: "must be at least 1s".into(),
                    });
                }
                Some(NodeApiConfig {
                    listen,
                    dns_names,
                    join_token_max_ttl,
                    default_parent,
                    k8s_agent_service_accounts,
                    idle_timeout,
                })
            }
        };
        let defaults = crate::net::ListenLimits::default();
        let max_connections = self
            .server
            .max_connections
            .unwrap_or(defaults.max_connections);
        if !(1..=1_000_000).contains(&max_connections) {
            return Err(ConfigError::Invalid {
                key: "server.max_connections",
                message: format!("{max_connections} is outside 1..=1000000"),
            });
        }
        let listen_limits = crate::net::ListenLimits {
            max_connections,
            header_timeout: dur(
                "server.header_timeout",
                self.server.header_timeout,
                defaults.header_timeout,
            )?,
            body_timeout: dur(
                "server.body_timeout",
                self.server.body_timeout,
                defaults.body_timeout,
            )?,
            request_timeout: dur(
                "server.request_timeout",
                self.server.request_timeout,
                defaults.request_timeout,
            )?,
            ..defaults
        };
        for (key, d) in [
            ("server.header_timeout", listen_limits.header_timeout),
            ("server.body_timeout", listen_limits.body_timeout),
            ("server.request_timeout", listen_limits.request_timeout),
        ] {
            if d.is_zero() || d > Duration::from_secs(600) {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be above zero and at most 10m".into(),
                });
            }
        }
        let checkpoint_interval = dur(
            "audit.checkpoint_interval",
            self.audit.checkpoint_interval,
            crate::checkpoint::DEFAULT_INTERVAL,
        )?;
        if checkpoint_interval < Duration::from_secs(1)
            || checkpoint_interval > Duration::from_secs(24 * 3600)
        {
            return Err(ConfigError::Invalid {
                key: "audit.checkpoint_interval",
                message: "must be between 1s and 24h".into(),
            });
        }
        let federation = validate_federation(self.federation, &dur)?;
        let audit = AuditConfig {
            checkpoint_interval,
            sink: crate::checkpoint::Sink {
                file: self.audit.checkpoint_file,
                stdout: self.audit.checkpoint_stdout.unwrap_or(false),
            },
        };
        Ok(ServerConfig {
            listen_limits,
            audit,
            federation,
            ca,
            node_api,
            trust_domain,
            issuer,
            listen,
            tls,
            max_request_bytes,
            store_url,
            kek,
            algorithms,
            rotation,
            jwt_default_ttl,
            jwt_max_ttl,
            max_delegation_depth,
            verified_token_cache,
        })
    }
}

fn validate_ca(
    raw: RawCa,
    dur: &dyn Fn(&'static str, Option<String>, Duration) -> Result<Duration, ConfigError>,
) -> Result<CaConfig, ConfigError> {
    let svid_ttl = dur(
        "ca.svid_ttl",
        raw.svid_ttl,
        lanyard_core::ttl::DEFAULT_X509_SVID_TTL,
    )?;
    let svid_max_ttl = dur(
        "ca.svid_max_ttl",
        raw.svid_max_ttl,
        Duration::from_secs(24 * 3600),
    )?;
    if svid_ttl.is_zero() || svid_ttl > svid_max_ttl {
        return Err(ConfigError::Invalid {
            key: "ca.svid_ttl",
            message: "must be above zero and at most ca.svid_max_ttl".into(),
        });
    }
    let node_svid_ttl = dur(
        "ca.node_svid_ttl",
        raw.node_svid_ttl,
        lanyard_core::ttl::DEFAULT_X509_SVID_TTL.min(svid_max_ttl),
    )?;
    if node_svid_ttl < Duration::from_secs(60) || node_svid_ttl > svid_max_ttl {
        return Err(ConfigError::Invalid {
            key: "ca.node_svid_ttl",
            message: "must be at least 1m and at most ca.svid_max_ttl".into(),
        });
    }
    let root_ttl = dur(
        "ca.root_ttl",
        raw.root_ttl,
        Duration::from_secs(365 * 24 * 3600),
    )?;
    let rotation_period = dur(
        "ca.intermediate_rotation",
        raw.intermediate_rotation,
        Duration::from_secs(24 * 3600),
    )?;
    let publish_lead = dur(
        "ca.intermediate_publish_lead",
        raw.intermediate_publish_lead,
        Duration::from_secs(3600),
    )?;
    if publish_lead > rotation_period || rotation_period < Duration::from_secs(60) {
        return Err(ConfigError::Invalid {
            key: "ca.intermediate_publish_lead",
            message: "must be at most ca.intermediate_rotation (itself at least 1m)".into(),
        });
    }
    // An intermediate signs for `rotation_period` and must outlive every SVID it signed.
    if root_ttl < rotation_period + publish_lead + svid_max_ttl {
        return Err(ConfigError::Invalid {
            key: "ca.root_ttl",
            message: "must cover ca.intermediate_rotation + ca.intermediate_publish_lead + ca.svid_max_ttl".into(),
        });
    }
    let upstream = match (raw.upstream_cert, raw.upstream_key, raw.upstream_bundle) {
        (None, None, None) => None,
        (Some(c), Some(k), Some(b)) => Some((c, k, b)),
        _ => {
            return Err(ConfigError::Invalid {
                key: "ca.upstream_cert",
                message: "an upstream CA needs all of ca.upstream_cert, ca.upstream_key and ca.upstream_bundle".into(),
            })
        }
    };
    Ok(CaConfig {
        svid_ttl,
        node_svid_ttl,
        svid_max_ttl,
        root_ttl,
        rotation: RotationPolicy {
            rotation_period,
            publish_lead,
            retain_after: svid_max_ttl + CLOCK_SKEW,
        },
        upstream,
    })
}

/// Reads, parses and validates a config file with overrides from `env`.
///
/// # Errors
/// [`ConfigError`] naming the file, key or variable at fault.
pub fn load(
    path: &std::path::Path,
    env: &BTreeMap<String, String>,
) -> Result<ServerConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    RawConfig::parse(&text, &path.display().to_string(), env)?.validate(env)
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    match path {
        [] => Err("empty key".into()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => set_path(t, rest, value),
                _ => Err(format!("`{first}` is not a table")),
            }
        }
    }
}

/// The issuer must be an absolute http(s) URL without query, fragment or
/// trailing slash; plain `http` only where TLS is off (loopback).
fn validate_issuer(issuer: &str, plain: bool) -> Result<String, ConfigError> {
    let bad = |message: String| ConfigError::Invalid {
        key: "issuer",
        message,
    };
    let rest = match (
        issuer.strip_prefix("https://"),
        issuer.strip_prefix("http://"),
    ) {
        (Some(rest), _) => rest,
        (None, Some(rest)) if plain => rest,
        _ => {
            return Err(bad(format!(
                "{issuer:?} must start with https:// (http:// only with insecure_plain_http)"
            )))
        }
    };
    if rest.is_empty() || rest.contains(['?', '#', ' ']) || rest.ends_with('/') {
        return Err(bad(format!(
            "{issuer:?} must be a URL with a host, no query, fragment or trailing slash"
        )));
    }
    Ok(issuer.to_owned())
}

#[cfg(test)]
mod tests;

/// `[federation]`.
fn validate_federation(
    raw: RawFederation,
    dur: &dyn Fn(&'static str, Option<String>, Duration) -> Result<Duration, ConfigError>,
) -> Result<FederationConfig, ConfigError> {
    let refresh_floor = dur(
        "federation.refresh_floor",
        raw.refresh_floor,
        DEFAULT_FEDERATION_REFRESH_FLOOR,
    )?;
    if refresh_floor < Duration::from_secs(1) || refresh_floor > Duration::from_secs(86_400) {
        return Err(ConfigError::Invalid {
            key: "federation.refresh_floor",
            message: "must be between 1s and 24h".into(),
        });
    }
    let be = raw.bundle_endpoint;
    let bundle_endpoint = match be.listen.as_deref() {
        None | Some("") => {
            if be.profile.is_some() || be.cert.is_some() || be.key.is_some() {
                return Err(ConfigError::Invalid {
                    key: "federation.bundle_endpoint.listen",
                    message: "set listen (e.g. \"0.0.0.0:8443\") to serve the bundle endpoint"
                        .into(),
                });
            }
            None
        }
        Some(text) => {
            let listen: SocketAddr = text.parse().map_err(|_| ConfigError::Invalid {
                key: "federation.bundle_endpoint.listen",
                message: format!("{text:?} is not an IP:port address, e.g. 0.0.0.0:8443"),
            })?;
            let profile = match (be.profile.as_deref().unwrap_or("https_spiffe"), be.cert, be.key) {
                ("https_spiffe", None, None) => BundleEndpointProfile::HttpsSpiffe,
                ("https_spiffe", _, _) => {
                    return Err(ConfigError::Invalid {
                        key: "federation.bundle_endpoint.cert",
                        message: "https_spiffe serves the server's own X.509-SVID; cert and key apply to profile = \"https_web\"".into(),
                    })
                }
                ("https_web", Some(cert), Some(key)) => BundleEndpointProfile::HttpsWeb { cert, key },
                ("https_web", _, _) => {
                    return Err(ConfigError::Invalid {
                        key: "federation.bundle_endpoint.cert",
                        message: "profile https_web needs cert and key (PEM files of a certificate for the endpoint's host name)".into(),
                    })
                }
                (other, _, _) => {
                    return Err(ConfigError::Invalid {
                        key: "federation.bundle_endpoint.profile",
                        message: format!("{other:?} is not a profile: https_spiffe or https_web"),
                    })
                }
            };
            let refresh_hint = dur(
                "federation.bundle_endpoint.refresh_hint",
                be.refresh_hint,
                DEFAULT_BUNDLE_REFRESH_HINT,
            )?;
            if refresh_hint < Duration::from_secs(1) {
                return Err(ConfigError::Invalid {
                    key: "federation.bundle_endpoint.refresh_hint",
                    message: "must be at least 1s".into(),
                });
            }
            Some(BundleEndpointConfig {
                listen,
                profile,
                refresh_hint,
            })
        }
    };
    Ok(FederationConfig {
        refresh_floor,
        web_roots: raw.web_roots,
        bundle_endpoint,
    })
}
