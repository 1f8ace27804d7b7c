//! Wire compatibility: names and field numbers are what SPIFFE clients send.

// Tests and benchmarks fail by panicking and index fixtures they built.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use lanyard_proto::workload::{JwtsvidRequest, X509svid, X509svidResponse};
use prost::Message as _;

#[test]
fn service_name_has_no_package() {
    assert_eq!(
        lanyard_proto::workload::spiffe_workload_api_server::SERVICE_NAME,
        "SpiffeWorkloadAPI"
    );
}

#[test]
fn field_numbers_match_the_specification() {
    // JWTSVIDRequest{audience: ["a"], spiffe_id: "b"}: field 1 and field 2, length-delimited.
    let req = JwtsvidRequest {
        audience: vec!["a".into()],
        spiffe_id: "b".into(),
    };
    assert_eq!(req.encode_to_vec(), [0x0a, 0x01, b'a', 0x12, 0x01, b'b']);
    // X509SVID fields 1..=5.
    let svid = X509svid {
        spiffe_id: "i".into(),
        x509_svid: vec![1],
        x509_svid_key: vec![2],
        bundle: vec![3],
        hint: "h".into(),
    };
    assert_eq!(
        svid.encode_to_vec(),
        [0x0a, 1, b'i', 0x12, 1, 1, 0x1a, 1, 2, 0x22, 1, 3, 0x2a, 1, b'h']
    );
    // X509SVIDResponse: svids = 1, federated_bundles = 3 (a map entry message).
    let mut resp = X509svidResponse {
        svids: vec![svid.clone()],
        ..Default::default()
    };
    resp.federated_bundles
        .insert("spiffe://other.org".into(), vec![9]);
    let bytes = resp.encode_to_vec();
    assert_eq!(bytes.first(), Some(&0x0a));
    let only_federated = X509svidResponse {
        federated_bundles: resp.federated_bundles.clone(),
        ..Default::default()
    };
    assert_eq!(
        only_federated.encode_to_vec().first(),
        Some(&0x1a),
        "federated_bundles is field 3"
    );
    assert_eq!(X509svidResponse::decode(bytes.as_slice()).ok(), Some(resp));
}
