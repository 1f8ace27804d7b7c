//! Prometheus metrics: request counts and latency histograms per route.

use std::time::Instant;

use std::sync::Arc;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FederationLabels {
    trust_domain: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DomainLabels {
    trust_domain: String,
}

/// The server's metric families.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    revision: prometheus_client::metrics::gauge::Gauge,
    lag: prometheus_client::metrics::gauge::Gauge,
    store_up: prometheus_client::metrics::gauge::Gauge,
    federation_refreshes: Family<FederationLabels, Counter>,
    federation_success: Family<DomainLabels, prometheus_client::metrics::gauge::Gauge>,
    verified_cache: Family<CacheLabels, prometheus_client::metrics::gauge::Gauge>,
}

/// `lanyard_verified_token_cache{state}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    state: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~3.3 s: the token path lives in the low buckets.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 16,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("lanyard");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by method and route",
            latency.clone(),
        );
        let revision = prometheus_client::metrics::gauge::Gauge::default();
        let lag = prometheus_client::metrics::gauge::Gauge::default();
        let store_up = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "change_revision",
            "The change-log revision this replica's caches are at",
            revision.clone(),
        );
        registry.register(
            "change_lag",
            "Changes in the store this replica has not applied yet (alert when it stays above 0)",
            lag.clone(),
        );
        registry.register(
            "store_up",
            "1 when the store answered the last scrape, 0 otherwise",
            store_up.clone(),
        );
        let federation_refreshes = Family::<FederationLabels, Counter>::default();
        let federation_success =
            Family::<DomainLabels, prometheus_client::metrics::gauge::Gauge>::default();
        registry.register(
            "federation_refreshes",
            "Federated bundle refreshes by trust domain and result (updated, unchanged, refused, failed)",
            federation_refreshes.clone(),
        );
        registry.register(
            "federation_last_success_timestamp_seconds",
            "Unix time of the last successful refresh of each federated trust domain's bundle",
            federation_success.clone(),
        );
        let verified_cache =
            Family::<CacheLabels, prometheus_client::metrics::gauge::Gauge>::default();
        registry.register(
            "verified_token_cache",
            "Verified subject tokens: hits and misses since the issuer set was last loaded, entries held, capacity (0: off)",
            verified_cache.clone(),
        );
        Self {
            verified_cache,
            federation_refreshes,
            federation_success,
            registry,
            requests,
            latency,
            revision,
            lag,
            store_up,
        }
    }
}

impl Metrics {
    /// Sets the replication gauges (at each scrape): the revision applied,
    /// the store's head (`None` when the store did not answer).
    pub fn set_replication(&self, applied: i64, store_head: Option<i64>) {
        self.revision.set(applied);
        match store_head {
            Some(head) => {
                self.lag.set(head.saturating_sub(applied).max(0));
                self.store_up.set(1);
            }
            None => {
                self.store_up.set(0);
            }
        }
    }

    /// Sets the verified-token cache gauges (at each scrape).
    pub fn set_verified_cache(&self, stats: lanyard_attest::VerifiedCacheStats) {
        let entries = u64::try_from(stats.entries).unwrap_or(u64::MAX);
        let capacity = u64::try_from(stats.capacity).unwrap_or(u64::MAX);
        for (state, value) in [
            ("hits", stats.hits),
            ("misses", stats.misses),
            ("entries", entries),
            ("capacity", capacity),
        ] {
            self.verified_cache
                .get_or_create(&CacheLabels { state })
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
    }

    /// Counts one federated bundle refresh.
    pub fn federation_refresh(
        &self,
        trust_domain: &str,
        outcome: &crate::federation::refresh::Outcome,
        last_success_at: Option<i64>,
    ) {
        let result = serde_json::to_value(outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        self.federation_refreshes
            .get_or_create(&FederationLabels {
                trust_domain: trust_domain.to_owned(),
                result,
            })
            .inc();
        if let Some(at) = last_success_at {
            self.federation_success
                .get_or_create(&DomainLabels {
                    trust_domain: trust_domain.to_owned(),
                })
                .set(at);
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail for these metric types.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Middleware recording one count and one latency sample per request, by
/// matched route (never the raw path, so label cardinality stays bounded).
pub async fn record(metrics: Arc<Metrics>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let resp = next.run(req).await;
    let elapsed = start.elapsed().as_secs_f64();
    let m = &metrics;
    m.requests
        .get_or_create(&RequestLabels {
            method: method.clone(),
            route: route.clone(),
            status: resp.status().as_u16(),
        })
        .inc();
    m.latency
        .get_or_create(&RouteLabels { method, route })
        .observe(elapsed);
    resp
}
