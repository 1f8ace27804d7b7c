//! Prometheus metrics of the webhook (`/metrics`).
//!
//! - `lanyard_webhook_admissions_total{webhook, result}`: `webhook` is `pod`
//!   or `spinapp`; `result` is `mutated`, `unchanged`, `denied`, `allowed_on_api_error`
//!   or `bad_request`.
//! - `lanyard_webhook_service_account_lookups_total{result}`: `cache_hit`,
//!   `api_hit`, `not_found`, `error`.
//! - `lanyard_webhook_tls_reloads_total{result}`: `ok`, `error`.
//! - `lanyard_webhook_admission_duration_seconds{webhook}`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    webhook: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabel {
    webhook: &'static str,
}

fn duration_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 2.0, 14,
    ))
}

/// The webhook's metrics registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    admissions: Family<AdmissionLabels, Counter>,
    lookups: Family<ResultLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    durations: Family<WebhookLabel, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("lanyard_webhook");
        let admissions = Family::<AdmissionLabels, Counter>::default();
        let lookups = Family::<ResultLabel, Counter>::default();
        let reloads = Family::<ResultLabel, Counter>::default();
        let durations: Family<WebhookLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(duration_histogram);
        registry.register(
            "admissions",
            "AdmissionReviews answered",
            admissions.clone(),
        );
        registry.register(
            "service_account_lookups",
            "Service account reads by outcome",
            lookups.clone(),
        );
        registry.register("tls_reloads", "TLS certificate reloads", reloads.clone());
        registry.register(
            "admission_duration_seconds",
            "Time to answer one AdmissionReview",
            durations.clone(),
        );
        Self {
            registry,
            admissions,
            lookups,
            reloads,
            durations,
        }
    }

    /// Counts one answered review.
    pub fn admission(&self, webhook: &'static str, result: &'static str, took: Duration) {
        self.admissions
            .get_or_create(&AdmissionLabels { webhook, result })
            .inc();
        self.durations
            .get_or_create(&WebhookLabel { webhook })
            .observe(took.as_secs_f64());
    }

    /// Counts one service-account lookup.
    pub fn lookup(&self, result: &'static str) {
        self.lookups.get_or_create(&ResultLabel { result }).inc();
    }

    /// Counts one TLS reload.
    pub fn reload(&self, result: &'static str) {
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
