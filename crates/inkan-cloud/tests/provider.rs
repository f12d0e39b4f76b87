//! The cloud's aws-lc-rs EDHOC provider against published vectors: RFC 9529
//! Trace 1 byte for byte in both roles, and the two providers agreeing on
//! every signature and key agreement the other makes, with bad points and
//! signatures refused alike.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use inkan_cloud::provider::AwsLc;
use inkan_proto::edhoc::conformance::rfc9529_trace_1;
use inkan_proto::edhoc::crypto::{Provider, RustCrypto};
use inkan_proto::edhoc::Suite;

#[test]
fn rfc9529_trace_1_through_aws_lc() {
    rfc9529_trace_1(&AwsLc).unwrap();
}

#[test]
fn the_providers_agree_and_refuse_alike() {
    let (a, b): (&dyn Provider, &dyn Provider) = (&AwsLc, &RustCrypto);
    for suite in [Suite::P256Es256, Suite::X25519EdDsa] {
        for (x, y) in [(a, b), (b, a)] {
            // Key agreement across providers.
            let kx = x.ephemeral(suite);
            let ky = y.ephemeral(suite);
            let (px, py) = (kx.public(), ky.public());
            assert_eq!(px.len(), 32, "{suite:?}: keys are sent as 32 bytes");
            let sx = kx.agree(&py).unwrap();
            let sy = ky.agree(&px).unwrap();
            assert_eq!(*sx, *sy, "{suite:?}: {} and {}", x.name(), y.name());
            // Signatures across providers, from the same private bytes.
            let private = [0x42u8; 32];
            let msg = b"Sig_structure";
            let sig = x.signer(suite, &private).unwrap().sign(msg).unwrap();
            let public = inkan_proto::edhoc::crypto::SoftwareSigner::from_bytes(suite, &private)
                .unwrap()
                .public_key();
            assert!(y.verify(suite, &public, msg, &sig), "{suite:?}");
            let mut bad = sig.clone();
            bad[10] ^= 1;
            assert!(!x.verify(suite, &public, msg, &bad));
            assert!(!y.verify(suite, &public, msg, &bad));
            assert!(!x.verify(suite, &public, b"other", &sig));
        }
    }
    // Points that are no key: refused by both.
    for p in [a, b] {
        // Not on P-256 (x = 5 has no y on the curve? checked by trying).
        let not_on_curve = (0u8..=255)
            .map(|v| {
                let mut x = [0u8; 32];
                x[31] = v;
                x
            })
            .find(|x| inkan_proto::edhoc::crypto::p256_point_from_x(x).is_none())
            .unwrap();
        assert!(
            p.ephemeral(Suite::P256Es256).agree(&not_on_curve).is_err(),
            "{}",
            p.name()
        );
        assert!(p.ephemeral(Suite::P256Es256).agree(&[1u8; 31]).is_err());
        // X25519 low-order point (all zero): a non-contributory result.
        assert!(
            p.ephemeral(Suite::X25519EdDsa).agree(&[0u8; 32]).is_err(),
            "{}",
            p.name()
        );
    }
}
