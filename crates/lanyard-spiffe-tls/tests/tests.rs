//! Integration tests: real TLS 1.3 over TCP on 127.0.0.1, real SVIDs from
//! `lanyard_ca::x509::Authority`.

mod example_pair;
mod handshake;
mod pem;
mod rotation;
mod support;
mod workload_api;
