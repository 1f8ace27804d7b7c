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
}

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
        Ok(ServerConfig {
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
        })
    }
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
