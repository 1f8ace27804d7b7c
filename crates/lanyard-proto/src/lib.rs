//! Generated gRPC code for the agent's and server's protocols, from
//! `proto/` (each written from its specification or API reference and
//! wire-compatible with upstream: same packages, names and field numbers):
//!
//! - [`workload`]: the SPIFFE Workload API. The proto has no package, so
//!   the service is `SpiffeWorkloadAPI` and its methods are
//!   `/SpiffeWorkloadAPI/FetchX509SVID` etc., as SPIFFE clients expect.
//! - [`node`]: Lanyard's node API (agent ↔ server).
//! - [`envoy`]: the subset of Envoy's API that SDS needs
//!   (`envoy.service.secret.v3.SecretDiscoveryService`).
//! - [`spire`]: SPIRE's Delegated Identity API
//!   (`spire.api.agent.delegatedidentity.v1.DelegatedIdentity`).

#![allow(missing_docs, clippy::all)]

/// The Workload API messages, server and client.
pub mod workload {
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

/// Lanyard's node API (`proto/node.proto`): agent ↔ server.
pub mod node {
    include!(concat!(env!("OUT_DIR"), "/lanyard.node.v1.rs"));
}

/// Envoy's API, the SDS subset.
pub mod envoy {
    pub mod config {
        pub mod core {
            pub mod v3 {
                include!(concat!(env!("OUT_DIR"), "/envoy.config.core.v3.rs"));
            }
        }
    }
    pub mod service {
        pub mod discovery {
            pub mod v3 {
                include!(concat!(env!("OUT_DIR"), "/envoy.service.discovery.v3.rs"));
            }
        }
        pub mod secret {
            pub mod v3 {
                include!(concat!(env!("OUT_DIR"), "/envoy.service.secret.v3.rs"));
            }
        }
    }
    pub mod extensions {
        pub mod transport_sockets {
            pub mod tls {
                pub mod v3 {
                    include!(concat!(
                        env!("OUT_DIR"),
                        "/envoy.extensions.transport_sockets.tls.v3.rs"
                    ));
                }
            }
        }
    }
}

/// `google.rpc.Status` (xDS NACK details).
pub mod google {
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}

/// SPIRE's API, the Delegated Identity subset.
pub mod spire {
    pub mod api {
        pub mod types {
            include!(concat!(env!("OUT_DIR"), "/spire.api.types.rs"));
        }
        pub mod agent {
            pub mod delegatedidentity {
                pub mod v1 {
                    include!(concat!(
                        env!("OUT_DIR"),
                        "/spire.api.agent.delegatedidentity.v1.rs"
                    ));
                }
            }
        }
    }
}
