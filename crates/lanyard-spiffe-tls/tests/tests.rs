//! Integration tests: real TLS 1.3 over TCP on 127.0.0.1, real SVIDs from
//! `lanyard_ca::x509::Authority`.

// Tests and benchmarks fail by panicking and index fixtures they built.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod example_pair;
mod handshake;
mod pem;
mod rotation;
mod support;
mod workload_api;
