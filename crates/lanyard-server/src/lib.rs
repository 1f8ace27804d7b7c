//! The Lanyard identity server: the OIDC issuer (discovery, JWKS), the
//! RFC 8693 token endpoint, the SPIFFE bundle, the gRPC node API for agents,
//! the credential broker, the admin API, health and metrics.
//!
//! Read it forward. [`state`] holds what every part shares and imports no
//! route. Services decide and issue: [`exchange`] (attest → match → decide
//! → sign → audit), [`node`] (node attestation, entry sync, SVIDs for a
//! node's workloads), [`broker`] (leases, reaper); every decision is the
//! core policy's (`lanyard_core::policy`) and every credential is signed by
//! [`issuer`], the one issuance path, which audits it. The surfaces are
//! [`http`] (axum router, one module per surface, one OAuth error renderer)
//! and [`node`] (tonic). [`serve`](Server) builds it all and runs the
//! listeners ([`net`]: connection limits and timeouts) and background jobs
//! (key and CA rotation, registry refresh, lease reaper, audit checkpoints).

#![warn(missing_docs)]

pub mod admin_token;
pub mod audit_writer;
pub mod broker;
pub mod ca;
pub mod checkpoint;
pub mod config;
pub mod correlation;
pub mod error;
pub mod exchange;
pub mod federation;
pub mod http;
pub mod issuer;
pub mod jobs;
pub mod keys;
pub mod metrics;
pub mod net;
pub mod node;
pub mod registry;
pub mod rekey;
pub mod review;
mod serve;
pub mod state;

pub use error::{ApiError, ServerError};
pub use serve::{env_map, shutdown_signal, Server, StoreInit};
