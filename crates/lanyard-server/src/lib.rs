//! The Lanyard identity server: the OIDC issuer (discovery, JWKS), the SPIFFE
//! bundle endpoint, the admin API, health and metrics, over axum with TLS by
//! rustls.
//!
//! Start reading at [`Server::build`] (what happens at start-up) and
//! [`app::router`] (every route). Key rotation lives in [`keys`], the config
//! schema in [`config`], the HTTP error mapping in [`error`].
//!
//! Not here yet: token exchange, TokenReview, the broker and the gRPC node
//! API; `/oauth2/token` answers `unsupported_grant_type` until then.

#![warn(missing_docs)]

pub mod admin_token;
pub mod app;
pub mod config;
pub mod correlation;
pub mod error;
pub mod keys;
pub mod metrics;
pub mod routes;
mod serve;

pub use error::{ApiError, ServerError};
pub use serve::{env_map, shutdown_signal, Server};
