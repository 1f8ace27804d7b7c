//! Generated gRPC code for the SPIFFE Workload API (`proto/workload.proto`,
//! written from the specification and wire-compatible with upstream).
//!
//! The proto has no package, so the service is `SpiffeWorkloadAPI` and its
//! methods are `/SpiffeWorkloadAPI/FetchX509SVID` etc., as SPIFFE clients
//! expect. Server side: implement [`workload::spiffe_workload_api_server::SpiffeWorkloadApi`].

#![allow(missing_docs, clippy::all)]

/// The Workload API messages, server and client.
pub mod workload {
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

/// Lanyard's node API (`proto/node.proto`): agent ↔ server.
pub mod node {
    include!(concat!(env!("OUT_DIR"), "/lanyard.node.v1.rs"));
}
