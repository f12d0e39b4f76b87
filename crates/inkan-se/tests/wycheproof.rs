//! Wycheproof vectors through the chip: ECDSA P-256/P-384 through Verify
//! Signature, ECDH P-256/P-384 through Establish Key (invalid-curve points
//! must be refused), and AES-CMAC and AES-KW through the very functions the
//! chip's secure channel and local envelopes use.
//!
//! Vectors are read from `INKAN_WYCHEPROOF_DIR`, defaulting to the
//! repository's `vectors/wycheproof`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use inkan_se::channel::AesKey;
use inkan_se::chip::envelope;
use inkan_se::wire::crc::crc16;
use inkan_se::wire::encoding::put_len;
use inkan_se::wire::{Curve, ResponseFrame, Status};
use inkan_se::{Chip, Personality};
use serde_json::Value;
use sha2::Digest;
use std::path::PathBuf;

fn dir() -> PathBuf {
    std::env::var_os("INKAN_WYCHEPROOF_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../vectors/wycheproof")
        })
}

fn load(name: &str) -> Value {
    let p = dir().join(name);
    let text =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

fn h(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

#[derive(Default)]
struct Tally {
    name: &'static str,
    pass: usize,
    fail: Vec<String>,
    skip: Vec<String>,
}

impl Tally {
    /// Applies the verdict rules to one case: `got` is the output, or None
    /// when the operation was refused.
    fn judge(&mut self, t: &Value, got: Option<Vec<u8>>, expected: Option<&[u8]>) {
        let result = t["result"].as_str().unwrap();
        let ok = match (result, &got) {
            ("valid", Some(out)) => expected.is_none_or(|e| e == out.as_slice()),
            ("valid", None) => false,
            ("invalid", got) => got.is_none(),
            (_, Some(out)) => expected.is_none_or(|e| e == out.as_slice()),
            (_, None) => true,
        };
        if ok {
            self.pass += 1;
        } else {
            self.fail.push(format!(
                "tcId {} ({result}, flags {})",
                t["tcId"], t["flags"]
            ));
        }
    }

    fn skip(&mut self, t: &Value, why: &str) {
        self.skip.push(format!("tcId {}: {why}", t["tcId"]));
    }

    fn finish(self) {
        println!(
            "{}: {} pass, {} fail, {} skip",
            self.name,
            self.pass,
            self.fail.len(),
            self.skip.len()
        );
        let mut reasons = std::collections::BTreeMap::<&str, Vec<&str>>::new();
        for s in &self.skip {
            let (id, why) = s.split_once(": ").unwrap_or((s, ""));
            reasons.entry(why).or_default().push(id);
        }
        for (why, ids) in reasons {
            println!("  skipped {} ({why}): {}", ids.len(), ids.join(", "));
        }
        for f in &self.fail {
            println!("  FAILED {f}");
        }
        assert!(
            self.fail.is_empty(),
            "{}: {} failures",
            self.name,
            self.fail.len()
        );
        assert!(self.pass > 0, "{}: no case ran", self.name);
    }
}

fn curve_of(name: &str) -> Curve {
    match name {
        "secp256r1" => Curve::P256,
        "secp384r1" => Curve::P384,
        other => panic!("unexpected curve {other}"),
    }
}

/// Sends a command body (header + payload) to the chip and returns the
/// response data if the status is OK.
fn exchange(chip: &mut Chip, body: &[u8]) -> Option<Vec<u8>> {
    let mut frame = body.to_vec();
    frame.extend_from_slice(&crc16(body).to_be_bytes());
    let rsp = ResponseFrame::decode(&chip.process(&frame).response, false).unwrap();
    (rsp.status == Status::OK).then_some(rsp.data)
}

/// The chip's point encoding for an uncompressed point; anything else is
/// sent as its first byte followed by a length-prefixed rest, for the chip
/// to refuse.
fn encode_point(curve: Curve, p: &[u8], out: &mut Vec<u8>) {
    let n = curve.coordinate_len();
    if p.len() == 1 + 2 * n && p[0] == 0x04 {
        inkan_se::wire::encoding::encode_public_key(curve, p, out);
    } else if let Some((&first, rest)) = p.split_first() {
        out.push(first);
        put_len(out, rest.len());
        out.extend_from_slice(rest);
    }
}

fn ecdsa(file: &str, name: &'static str) {
    let doc = load(file);
    let mut tally = Tally {
        name,
        ..Tally::default()
    };
    let mut chip = Chip::new(Personality::A120, [0; 9]);
    for g in doc["testGroups"].as_array().unwrap() {
        let curve = curve_of(g["publicKey"]["curve"].as_str().unwrap());
        let public = h(&g["publicKey"]["uncompressed"]);
        for t in g["tests"].as_array().unwrap() {
            let msg = h(&t["msg"]);
            let digest = match g["sha"].as_str().unwrap() {
                "SHA-256" => sha2::Sha256::digest(&msg).to_vec(),
                "SHA-384" => sha2::Sha384::digest(&msg).to_vec(),
                other => panic!("unexpected hash {other}"),
            };
            let sig = h(&t["sig"]);
            let (r, s) = sig.split_at(sig.len() / 2);
            let mut body = vec![0x17, 0x00];
            curve.encode(&mut body);
            encode_point(curve, &public, &mut body);
            put_len(&mut body, r.len());
            body.extend_from_slice(r);
            put_len(&mut body, s.len());
            body.extend_from_slice(s);
            put_len(&mut body, digest.len());
            body.extend_from_slice(&digest);
            let accepted = exchange(&mut chip, &body).filter(|d| d == &[1]);
            tally.judge(t, accepted.map(|_| Vec::new()), None);
        }
    }
    tally.finish();
}

#[test]
fn ecdsa_p256_through_verify_signature() {
    ecdsa(
        "ecdsa_secp256r1_sha256_p1363_test.json",
        "ECDSA P-256 (chip Verify Signature)",
    );
}

#[test]
fn ecdsa_p384_through_verify_signature() {
    ecdsa(
        "ecdsa_secp384r1_sha384_p1363_test.json",
        "ECDSA P-384 (chip Verify Signature)",
    );
}

fn ecdh(file: &str, name: &'static str) {
    let doc = load(file);
    let mut tally = Tally {
        name,
        ..Tally::default()
    };
    for g in doc["testGroups"].as_array().unwrap() {
        let curve = curve_of(g["curve"].as_str().unwrap());
        let n = curve.coordinate_len();
        for t in g["tests"].as_array().unwrap() {
            // Two's-complement big integer: strip sign bytes, pad to the field size.
            let mut scalar = h(&t["private"]);
            while scalar.len() > n && scalar[0] == 0 {
                scalar.remove(0);
            }
            if scalar.len() > n {
                tally.skip(t, "private key wider than the curve");
                continue;
            }
            let mut padded = vec![0u8; n - scalar.len()];
            padded.extend_from_slice(&scalar);
            // A fresh chip per case, its slot 1 provisioned at "manufacture"
            // with the case's private key.
            let mut chip = Chip::new(Personality::A120, [0; 9]);
            chip.manufacture_key(1, curve, &padded).unwrap();
            let mut body = vec![0x18, 0x01];
            encode_point(curve, &h(&t["public"]), &mut body);
            let got = exchange(&mut chip, &body).map(|d| {
                assert_eq!(usize::from(u16::from_be_bytes([d[0], d[1]])), d.len() - 2);
                d[2..].to_vec()
            });
            tally.judge(t, got, Some(&h(&t["shared"])));
        }
    }
    tally.finish();
}

#[test]
fn ecdh_p256_through_establish_key() {
    ecdh(
        "ecdh_secp256r1_ecpoint_test.json",
        "ECDH P-256 (chip Establish Key)",
    );
}

#[test]
fn ecdh_p384_through_establish_key() {
    ecdh(
        "ecdh_secp384r1_ecpoint_test.json",
        "ECDH P-384 (chip Establish Key)",
    );
}

#[test]
fn aes_cmac_through_the_channel_code() {
    let doc = load("aes_cmac_test.json");
    let mut tally = Tally {
        name: "AES-CMAC (host secure channel)",
        ..Tally::default()
    };
    for g in doc["testGroups"].as_array().unwrap() {
        let tag_len = usize::try_from(g["tagSize"].as_u64().unwrap() / 8).unwrap();
        for t in g["tests"].as_array().unwrap() {
            let key_bytes = h(&t["key"]);
            if key_bytes.len() == 24 {
                tally.skip(t, "AES-192: the chip's keys are AES-128 or AES-256 only");
                continue;
            }
            let Some(key) = AesKey::from_slice(&key_bytes) else {
                // Not an AES key size at all: refusing it is the right answer.
                tally.judge(t, None, None);
                continue;
            };
            let mac = key.cmac(&[&h(&t["msg"])]);
            let expected = h(&t["tag"]);
            let matches = expected.len() == tag_len && mac[..tag_len] == expected[..];
            tally.judge(t, matches.then(Vec::new), None);
        }
    }
    tally.finish();
}

#[test]
fn aes_kw_through_the_envelope_code() {
    let doc = load("aes_wrap_test.json");
    let mut tally = Tally {
        name: "AES-KW (local envelope)",
        ..Tally::default()
    };
    for g in doc["testGroups"].as_array().unwrap() {
        for t in g["tests"].as_array().unwrap() {
            let key_bytes = h(&t["key"]);
            if key_bytes.len() == 24 {
                tally.skip(t, "AES-192: envelope keys are AES-128 or AES-256 only");
                continue;
            }
            let Some(key) = AesKey::from_slice(&key_bytes) else {
                // Not an AES key size at all: refusing it is the right answer.
                tally.judge(t, None, None);
                continue;
            };
            let msg = h(&t["msg"]);
            let ct = h(&t["ct"]);
            let unwrapped = envelope::unwrap(&key, &ct).ok().map(|z| z.to_vec());
            let verdict = match &unwrapped {
                Some(m) if *m == msg => envelope::wrap(&key, &msg)
                    .ok()
                    .filter(|c| *c == ct)
                    .map(|_| m.clone()),
                other => other.clone(),
            };
            tally.judge(t, verdict, Some(&msg));
        }
    }
    tally.finish();
}
