//! HTTP handlers, one module per surface.

pub mod admin;
pub mod broker;
pub mod health;
pub mod oidc;
pub mod profiles;
