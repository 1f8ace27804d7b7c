//! Generates the gRPC code with protox (a pure-Rust protobuf compiler), so
//! the build needs no system `protoc`.

const PROTOS: &[&str] = &[
    "workload.proto",
    "node.proto",
    "envoy/service/secret/v3/sds.proto",
    "envoy/extensions/transport_sockets/tls/v3/secret.proto",
    "spire/api/agent/delegatedidentity/v1/delegatedidentity.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
