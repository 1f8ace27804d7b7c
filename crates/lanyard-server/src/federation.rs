//! SPIFFE federation (issue 12): the trust domains this server trusts
//! besides its own, how their bundles are fetched and checked, and the
//! bundle endpoint that serves ours.
//!
//! - [`FederatedSet`]: every federated trust domain in memory (bundle,
//!   parsed JWT keys, tenant binding, relationship), loaded by the
//!   [`crate::registry::Registry`] when a `bundle` change is logged, so
//!   every replica serves the same set.
//! - [`refresh`]: fetching a peer's bundle endpoint (`https_spiffe` or
//!   `https_web`), the checks a new bundle must pass, and the job that
//!   refreshes each relationship at the peer's refresh hint.
//! - [`endpoint`]: our own bundle endpoint, on its own listener.
//!
//! Bundles of different trust domains are never merged: each is kept, and
//! used to verify, only for its own trust domain.

pub mod endpoint;
pub mod refresh;

use std::collections::BTreeMap;
use std::sync::Arc;

use lanyard_ca::bundle::Bundle;
use lanyard_core::entry::validate::Federated;
use lanyard_core::{SpiffeId, TenantId, TrustDomain};
use lanyard_jose::VerifyingKey;
use lanyard_store::{FederatedRow, Store, StoreError};
use serde::{Deserialize, Serialize};

/// How a federation relationship fetches the peer's bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// The bundle endpoint URL (`https://`, no userinfo).
    pub url: String,
    /// The SPIFFE Federation profile.
    pub profile: Profile,
    /// `https_spiffe`: the SPIFFE ID the endpoint's SVID must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_spiffe_id: Option<String>,
}

/// The two bundle endpoint profiles of the SPIFFE Federation spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// TLS with the endpoint's X.509-SVID, verified against the bundle of
    /// its trust domain.
    HttpsSpiffe,
    /// TLS with a Web PKI certificate, verified against the local roots.
    HttpsWeb,
}

impl Profile {
    /// The spec's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HttpsSpiffe => "https_spiffe",
            Self::HttpsWeb => "https_web",
        }
    }
}

impl Endpoint {
    /// Checks the relationship's settings; for `https_spiffe`, the endpoint
    /// SPIFFE ID. Nothing is inferred from anything else (the spec forbids
    /// guessing the profile or trust domain from the URL).
    ///
    /// # Errors
    /// What is wrong and how to fix it.
    pub fn validate(&self) -> Result<Option<SpiffeId>, String> {
        let url = reqwest::Url::parse(&self.url).map_err(|e| {
            format!(
                "bundle endpoint {}: {e}",
                lanyard_core::text::shown(&self.url, 128)
            )
        })?;
        if url.scheme() != "https" {
            return Err(format!(
                "bundle endpoint {}: must be an https:// URL (both profiles are TLS)",
                lanyard_core::text::shown(&self.url, 128)
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("bundle endpoint URL must not carry userinfo (the endpoint needs no authentication)".into());
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("bundle endpoint URL has no host".into());
        }
        match (self.profile, &self.endpoint_spiffe_id) {
            (Profile::HttpsSpiffe, Some(id)) => SpiffeId::parse(id).map(Some).map_err(|e| {
                format!(
                    "endpoint SPIFFE ID {}: {e}",
                    lanyard_core::text::shown(id, 128)
                )
            }),
            (Profile::HttpsSpiffe, None) => Err("profile https_spiffe needs --endpoint-spiffe-id (the SPIFFE ID the bundle endpoint serves with, e.g. spiffe://other.org/spire/server)".into()),
            (Profile::HttpsWeb, Some(_)) => Err("--endpoint-spiffe-id applies to profile https_spiffe only; https_web endpoints are checked against the Web PKI roots".into()),
            (Profile::HttpsWeb, None) => Ok(None),
        }
    }
}

/// How refreshing a relationship went, as `federation list` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Unix seconds of the last attempt.
    #[serde(default)]
    pub last_attempt_at: Option<i64>,
    /// Unix seconds of the last bundle accepted (or found unchanged).
    #[serde(default)]
    pub last_success_at: Option<i64>,
    /// Unix seconds of the next scheduled attempt.
    #[serde(default)]
    pub next_refresh_at: Option<i64>,
    /// Why the last attempt failed (cleared by a success).
    #[serde(default)]
    pub last_error: Option<String>,
    /// Failed attempts in a row.
    #[serde(default)]
    pub failures: u32,
}

/// One federated trust domain, ready to use.
#[derive(Debug)]
pub struct Domain {
    /// Its name.
    pub trust_domain: TrustDomain,
    /// The tenant its JWT-SVIDs are bound to; `None` binds none (they
    /// cannot be exchanged).
    pub tenant: Option<TenantId>,
    /// The relationship, when its bundle is fetched.
    pub endpoint: Option<Endpoint>,
    /// The latest bundle (none yet for a relationship without a bootstrap
    /// bundle that has not been fetched).
    pub bundle: Option<Bundle>,
    /// Its JWT authorities, parsed once.
    pub keys: Vec<VerifyingKey>,
    /// Its JWT authorities as JWKS JSON (the agent's JWT bundle).
    pub jwks_json: Vec<u8>,
    /// The stored sequence.
    pub sequence: i64,
    /// The stored refresh status.
    pub status: Status,
}

impl Domain {
    fn from_row(row: &FederatedRow) -> Result<Self, String> {
        let trust_domain = TrustDomain::parse(&row.trust_domain).map_err(|e| e.to_string())?;
        let tenant = if row.tenant.is_empty() {
            None
        } else {
            Some(TenantId::parse(&row.tenant).map_err(|e| e.to_string())?)
        };
        let endpoint = if row.endpoint.is_empty() {
            None
        } else {
            Some(serde_json::from_str::<Endpoint>(&row.endpoint).map_err(|e| e.to_string())?)
        };
        let bundle = if row.bundle.is_empty() {
            None
        } else {
            Some(Bundle::parse(&trust_domain, row.bundle.as_bytes()).map_err(|e| e.to_string())?)
        };
        let keys = bundle
            .as_ref()
            .map(Bundle::verifying_keys)
            .unwrap_or_default();
        let jwks_json = bundle
            .as_ref()
            .map(Bundle::jwks_json)
            .unwrap_or_else(|| b"{\"keys\":[]}".to_vec());
        Ok(Self {
            trust_domain,
            tenant,
            endpoint,
            bundle,
            keys,
            jwks_json,
            sequence: row.sequence,
            status: serde_json::from_str(&row.status).unwrap_or_default(),
        })
    }
}

/// Every federated trust domain, swapped as a whole.
#[derive(Debug, Default)]
pub struct FederatedSet {
    /// The store's federation counter when loaded (moves with every change;
    /// the same on every replica, so agents can compare it).
    pub generation: i64,
    /// By trust domain.
    pub domains: BTreeMap<TrustDomain, Arc<Domain>>,
}

impl FederatedSet {
    /// Loads every federated trust domain. A row that does not parse any
    /// more is logged and left out (its identities are refused).
    ///
    /// # Errors
    /// Store errors.
    pub async fn load(store: &dyn Store) -> Result<Self, StoreError> {
        let generation = store.generation("federation").await?;
        let mut domains = BTreeMap::new();
        for row in store.list_federated().await? {
            match Domain::from_row(&row) {
                Ok(d) => {
                    domains.insert(d.trust_domain.clone(), Arc::new(d));
                }
                Err(e) => tracing::error!(
                    trust_domain = %row.trust_domain, error = %e,
                    "stored federated trust domain is unreadable; its bundle is not used"
                ),
            }
        }
        Ok(Self {
            generation,
            domains,
        })
    }

    /// One trust domain.
    pub fn get(&self, td: &TrustDomain) -> Option<&Arc<Domain>> {
        self.domains.get(td)
    }

    /// What entry validation needs: every trust domain with a bundle or a
    /// relationship, and its tenant binding.
    pub fn for_entries(&self) -> Vec<Federated> {
        self.domains
            .values()
            .map(|d| Federated {
                trust_domain: d.trust_domain.clone(),
                tenant: d.tenant.clone(),
            })
            .collect()
    }
}
