//! The EDHOC providers against published vectors: RFC 9529 Trace 1 byte
//! for byte in both roles through the cloud's aws-lc-rs provider; Wycheproof
//! (ECDSA P-256 r‖s, Ed25519, X25519, ECDH P-256 points) through both the
//! aws-lc-rs and the pure-Rust provider, every case run or counted as
//! skipped with its reason; and the two providers agreeing on every
//! signature and key agreement the other makes. Vectors are read from
//! `INKAN_WYCHEPROOF_DIR`, defaulting to the repository's
//! `vectors/wycheproof`.

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
            let kx = x.ephemeral(suite).unwrap();
            let ky = y.ephemeral(suite).unwrap();
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
            p.ephemeral(Suite::P256Es256)
                .unwrap()
                .agree(&not_on_curve)
                .is_err(),
            "{}",
            p.name()
        );
        assert!(p
            .ephemeral(Suite::P256Es256)
            .unwrap()
            .agree(&[1u8; 31])
            .is_err());
        // X25519 low-order point (all zero): a non-contributory result.
        assert!(
            p.ephemeral(Suite::X25519EdDsa)
                .unwrap()
                .agree(&[0u8; 32])
                .is_err(),
            "{}",
            p.name()
        );
    }
}

fn wycheproof(file: &str) -> serde_json::Value {
    let dir = std::env::var_os("INKAN_WYCHEPROOF_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../vectors/wycheproof")
        });
    let path = dir.join(file);
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{}: {e}", path.display());
    }))
    .unwrap()
}

fn hx(v: &serde_json::Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

/// Counts of one file through one provider.
#[derive(Default)]
struct Tally {
    pass: usize,
    fail: Vec<String>,
    skip: std::collections::BTreeMap<&'static str, usize>,
}

impl Tally {
    fn verdict(&mut self, t: &serde_json::Value, got: Result<Vec<u8>, ()>, want: Option<&[u8]>) {
        let id = t["tcId"].as_u64().unwrap();
        let result = t["result"].as_str().unwrap();
        let ok = match (result, &got) {
            ("valid", Ok(out)) => want.is_none_or(|w| w == out.as_slice()),
            ("valid", Err(())) => false,
            ("invalid", r) => r.is_err(),
            // Either outcome, but an output must be the expected one.
            (_, Ok(out)) => want.is_none_or(|w| w == out.as_slice()),
            (_, Err(())) => true,
        };
        if ok {
            self.pass += 1;
        } else {
            self.fail
                .push(format!("tcId {id} ({result}, flags {})", t["flags"]));
        }
    }

    fn report(&self, what: &str) {
        println!(
            "{what}: {} passed, {} failed, {} skipped {:?}",
            self.pass,
            self.fail.len(),
            self.skip.values().sum::<usize>(),
            self.skip
        );
        assert!(self.fail.is_empty(), "{what}: failures {:?}", self.fail);
        assert!(self.pass > 0, "{what}: nothing ran");
    }
}

fn providers() -> [&'static dyn Provider; 2] {
    [&AwsLc, &RustCrypto]
}

#[test]
fn wycheproof_ecdsa_p256_p1363_through_both_providers() {
    let v = wycheproof("ecdsa_secp256r1_sha256_p1363_test.json");
    for p in providers() {
        let mut tally = Tally::default();
        for g in v["testGroups"].as_array().unwrap() {
            let pk = hx(&g["publicKey"]["uncompressed"]);
            for t in g["tests"].as_array().unwrap() {
                let ok = p.verify(Suite::P256Es256, &pk, &hx(&t["msg"]), &hx(&t["sig"]));
                tally.verdict(t, if ok { Ok(Vec::new()) } else { Err(()) }, None);
            }
        }
        tally.report(&format!("ECDSA P-256 r‖s through {}", p.name()));
    }
}

#[test]
fn wycheproof_ed25519_through_both_providers() {
    let v = wycheproof("ed25519_test.json");
    for p in providers() {
        let mut tally = Tally::default();
        for g in v["testGroups"].as_array().unwrap() {
            let pk = hx(&g["publicKey"]["pk"]);
            for t in g["tests"].as_array().unwrap() {
                let ok = p.verify(Suite::X25519EdDsa, &pk, &hx(&t["msg"]), &hx(&t["sig"]));
                tally.verdict(t, if ok { Ok(Vec::new()) } else { Err(()) }, None);
            }
        }
        tally.report(&format!("Ed25519 through {}", p.name()));
    }
}

#[test]
fn wycheproof_x25519_through_both_providers() {
    let v = wycheproof("x25519_test.json");
    for p in providers() {
        let mut tally = Tally::default();
        for g in v["testGroups"].as_array().unwrap() {
            for t in g["tests"].as_array().unwrap() {
                let got = p
                    .ephemeral_from_bytes(Suite::X25519EdDsa, &hx(&t["private"]))
                    .map_err(|_| ())
                    .and_then(|k| k.agree(&hx(&t["public"])).map_err(|_| ()))
                    .map(|s| s.to_vec());
                tally.verdict(t, got, Some(&hx(&t["shared"])));
            }
        }
        tally.report(&format!("X25519 through {}", p.name()));
    }
}

/// EDHOC carries a P-256 ephemeral key as its x-coordinate alone (RFC 9528
/// §3.7): the receiver rebuilds a point on the curve, so a point's y — where
/// an invalid-curve point differs — is never received. Each case is run on
/// its x; an invalid case whose x is not on the curve (or is not 32 bytes)
/// must still be refused; an invalid case whose x lies on the curve is
/// counted as skipped with that reason.
#[test]
fn wycheproof_ecdh_p256_points_through_both_providers() {
    let v = wycheproof("ecdh_secp256r1_ecpoint_test.json");
    for p in providers() {
        let mut tally = Tally::default();
        for g in v["testGroups"].as_array().unwrap() {
            for t in g["tests"].as_array().unwrap() {
                let public = hx(&t["public"]);
                // The x-coordinate of a SEC1 point: uncompressed (04‖x‖y) or
                // compressed (02/03‖x); anything else as it is.
                let x = match public.first() {
                    Some(0x04) if public.len() == 65 => public[1..33].to_vec(),
                    Some(0x02 | 0x03) if public.len() == 33 => public[1..].to_vec(),
                    _ => public.clone(),
                };
                let x_on_curve = inkan_proto::edhoc::crypto::p256_point_from_x(&x).is_some();
                if t["result"] == "invalid" && x_on_curve {
                    *tally
                        .skip
                        .entry("invalid only in y, which EDHOC never receives")
                        .or_default() += 1;
                    continue;
                }
                let mut private = hx(&t["private"]);
                // A big integer in two's-complement hex: drop sign bytes,
                // then give it the scalar's 32 bytes.
                while private.len() > 32 && private[0] == 0 {
                    private.remove(0);
                }
                while private.len() < 32 {
                    private.insert(0, 0);
                }
                let got = p
                    .ephemeral_from_bytes(Suite::P256Es256, &private)
                    .map_err(|_| ())
                    .and_then(|k| k.agree(&x).map_err(|_| ()))
                    .map(|s| s.to_vec());
                tally.verdict(t, got, Some(&hx(&t["shared"])));
            }
        }
        tally.report(&format!("ECDH P-256 points (as x) through {}", p.name()));
    }
}
