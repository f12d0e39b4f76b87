//! Conformance: RFC 9529 Trace 1 byte for byte in both roles, through the
//! pure-Rust provider (the cloud's aws-lc-rs provider runs the same trace
//! in inkan-cloud's tests).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use inkan_proto::edhoc::conformance::rfc9529_trace_1;
use inkan_proto::edhoc::crypto::RustCrypto;

#[test]
fn trace_1_byte_for_byte_in_both_roles() {
    rfc9529_trace_1(&RustCrypto).unwrap();
}
