//! The Lanyard identity server: the OIDC issuer (discovery, JWKS), the SPIFFE
//! bundle endpoint, the admin API, health and metrics, over axum with TLS by
//! rustls.
//!
//! Start reading at [`Server::build`] (what happens at start-up) and
//! [`app::router`] (every route). Key rotation lives in [`keys`], the config
//! schema in [`config`], the HTTP error mapping in [`error`].
//!
//! The token path reads forward: [`exchange`] (attest → entry → tenant →
//! revocation → delegation → audience/scope → sign) with [`registry`] (the
//! in-memory entries, revocations, issuers) and [`audit_writer`] (group
//! commit). The credential broker is [`broker`] (leases, reaper) with its
//! routes in [`routes::broker`]. Not here yet: the gRPC node API.

#![warn(missing_docs)]

pub mod admin_token;
pub mod app;
pub mod audit_writer;
pub mod broker;
pub mod ca;
pub mod config;
pub mod correlation;
pub mod error;
pub mod exchange;
pub mod keys;
pub mod metrics;
pub mod node_api;
pub mod registry;
pub mod routes;
mod serve;

pub use error::{ApiError, ServerError};
pub use serve::{env_map, shutdown_signal, Server};
