//! Lanyard's Kubernetes admission webhooks.
//!
//! - A **mutating pod webhook** that gives pods the files and environment
//!   their SDKs need, following three conventions side by side:
//!   - Azure Workload Identity (pods labelled `azure.workload.identity/use:
//!     "true"`; client and tenant id from the service account), in either of
//!     upstream's two token layouts (v1.5 and v1.6), see [`mutate::azure`];
//!   - the EKS pod identity webhook (service accounts annotated
//!     `eks.amazonaws.com/role-arn`), see [`mutate::eks`];
//!   - Lanyard's own (pods labelled `lanyard.io/use: "true"`): a projected
//!     token for audience `lanyard` and the node agent's Workload API socket,
//!     see [`mutate::lanyard`].
//! - A **validating SpinApp webhook** ([`spinapp`]) that refuses a SpinApp
//!   asking for workload identity through `spec.podLabels` when its service
//!   account is missing or has no client id.
//!
//! Both run the same code whether they answer an `admission.k8s.io/v1`
//! AdmissionReview over HTTPS ([`server`]) or `lanyard webhook render` on a
//! laptop: [`Webhook::review_pod`] is that one code path. Service accounts
//! come from the Kubernetes API through a read-through cache
//! ([`accounts::ServiceAccounts`]) or, for `render`, from a file.
//!
//! What this crate does not do: it never talks to Lanyard's server, issues
//! nothing and stores nothing. The token a pod gets is the kube-apiserver's
//! projected service-account token; Lanyard (or Azure, or AWS) verifies it
//! when the pod presents it.
//!
//! Start reading at [`Webhook`], then [`mutate`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod accounts;
pub mod admission;
pub mod config;
pub mod metrics;
pub mod mutate;
pub mod patch;
mod pod;
pub mod render;
pub mod server;
pub mod spinapp;
pub mod tls;

pub use accounts::ServiceAccounts;
pub use admission::{Reviewed, Webhook};
pub use config::{ConfigError, MutationConfig, WebhookConfig};

/// Errors of the webhook's server side (startup, TLS, the Kubernetes client).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The TLS certificate or key could not be loaded.
    #[error("webhook TLS ({cert}, {key}): {message}")]
    Tls {
        /// Certificate file.
        cert: String,
        /// Key file.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The Kubernetes client could not be configured.
    #[error("Kubernetes client: {message}")]
    KubeConfig {
        /// What is wrong and how to fix it.
        message: String,
    },
    /// Listening or serving failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}
