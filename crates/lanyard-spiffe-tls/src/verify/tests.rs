use super::*;

#[test]
fn garbage_is_unparseable() {
    assert_eq!(leaf_spiffe_id(b"not a certificate"), Err(RejectReason::Unparseable));
    assert_eq!(leaf_spiffe_id(&[]), Err(RejectReason::Unparseable));
}
