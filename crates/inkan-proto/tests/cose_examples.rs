//! COSE interop: the cose-wg examples for COSE_Sign1 and COSE_Encrypt0 with
//! the algorithms inkan uses (ES256 and ES384 for manifests and signed
//! readings, EdDSA for suite 0, AES-CCM-16-64-128 for OSCORE), decoded with
//! coset, the to-be-signed and AAD bytes compared with the published
//! intermediates, signatures verified (EdDSA re-made byte for byte),
//! ciphertexts decrypted and re-made with the given IV. The ES256 cases
//! also go through inkan's own COSE code (the `sign1` reader and the
//! device's verification), and a document inkan's `sign1` makes with the
//! example's key verifies the examples' way. `fail` cases must be refused
//! at decode or verification; cases of a layout or algorithm inkan does
//! not use are counted as skipped with the reason. The examples come from
//! `vectors/cose-examples`, or from `INKAN_COSE_EXAMPLES_DIR`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use coset::{CborSerializable, CoseEncrypt0, CoseSign1, TaggedCborSerializable};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    std::env::var_os("INKAN_COSE_EXAMPLES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../vectors/cose-examples")
        })
}

fn files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// base64url as the examples write it: no padding, and some keys with
/// non-zero trailing bits (accepted, as JOSE tools do).
fn b64(s: &str) -> Vec<u8> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine.decode(s).unwrap()
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

/// A key component as the examples give it: base64url (`x`) or hex
/// (`x_hex`); None when neither is there.
fn component(key: &Value, name: &str) -> Option<Vec<u8>> {
    if let Some(s) = key[name].as_str() {
        return Some(b64(s));
    }
    key[format!("{name}_hex")]
        .as_str()
        .map(|h| hex::decode(h).unwrap())
}

fn ec_point(key: &Value) -> Option<Vec<u8>> {
    let mut point = vec![4];
    point.extend(component(key, "x")?);
    point.extend(component(key, "y")?);
    Some(point)
}

#[derive(Debug, PartialEq)]
enum Verdict {
    Accepted,
    Refused(String),
    Skipped(String),
}

fn alg_of(h: &coset::Header) -> Option<i64> {
    match &h.alg {
        Some(coset::RegisteredLabelWithPrivate::Assigned(a)) => Some(*a as i64),
        Some(coset::RegisteredLabelWithPrivate::PrivateUse(a)) => Some(*a),
        _ => None,
    }
}

/// Decodes a Sign1 (tagged 18, or untagged), checks the to-be-signed bytes
/// and the signature.
fn sign1(case: &Value) -> Verdict {
    let input = &case["input"]["sign0"];
    let bytes = unhex(&case["output"]["cbor"]);
    let msg = if bytes.first() == Some(&0x84) {
        CoseSign1::from_slice(&bytes)
    } else {
        CoseSign1::from_tagged_slice(&bytes)
    };
    let mut msg = match msg {
        Ok(m) => m,
        Err(e) => return Verdict::Refused(format!("decode: {e:?}")),
    };
    // An empty protected map may arrive as a bstr holding A0; it is signed
    // as the zero-length bstr (RFC 9052 §3), so normalise before hashing.
    if msg.protected.header.is_empty() {
        msg.protected.original_data = None;
    }
    let external = input["external"]
        .as_str()
        .map(|s| hex::decode(s).unwrap())
        .unwrap_or_default();
    let tbs = msg.tbs_data(&external);
    // The intermediates describe the message before a fail case's edits:
    // compare them for every case meant to pass.
    if let Some(want) = case["intermediates"]["ToBeSign_hex"].as_str() {
        if !case["fail"].as_bool().unwrap_or(false) {
            assert_eq!(hex::encode_upper(&tbs), want, "to-be-signed bytes");
        }
    }
    let alg = alg_of(&msg.protected.header).or_else(|| alg_of(&msg.unprotected));
    let key = &input["key"];
    let sig = &msg.signature;
    match alg {
        Some(-7) => {
            use p256::ecdsa::signature::Verifier;
            let Some(point) = ec_point(key) else {
                return Verdict::Skipped("no public key in the example".into());
            };
            let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();
            match p256::ecdsa::Signature::from_slice(sig) {
                Ok(s) if vk.verify(&tbs, &s).is_ok() => Verdict::Accepted,
                _ => Verdict::Refused("ES256 signature does not verify".into()),
            }
        }
        Some(-35) => {
            use p384::ecdsa::signature::Verifier;
            let Some(point) = ec_point(key) else {
                return Verdict::Skipped("no public key in the example".into());
            };
            let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();
            match p384::ecdsa::Signature::from_slice(sig) {
                Ok(s) if vk.verify(&tbs, &s).is_ok() => Verdict::Accepted,
                _ => Verdict::Refused("ES384 signature does not verify".into()),
            }
        }
        Some(-8) if key["crv"] != "Ed25519" => {
            Verdict::Skipped(format!("EdDSA on {}: inkan uses Ed25519 only", key["crv"]))
        }
        Some(-8) => {
            use ed25519_dalek::Signer;
            let Some(pk) = component(key, "x").and_then(|x| <[u8; 32]>::try_from(x).ok()) else {
                return Verdict::Skipped("no Ed25519 public key in the example".into());
            };
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&pk).unwrap();
            let Ok(s) = <[u8; 64]>::try_from(sig.as_slice()) else {
                return Verdict::Refused("EdDSA signature length".into());
            };
            if vk
                .verify_strict(&tbs, &ed25519_dalek::Signature::from_bytes(&s))
                .is_err()
            {
                return Verdict::Refused("EdDSA signature does not verify".into());
            }
            // EdDSA is deterministic: the same key re-makes the same bytes.
            if let Some(seed) = component(key, "d").and_then(|d| <[u8; 32]>::try_from(d).ok()) {
                let again = ed25519_dalek::SigningKey::from_bytes(&seed).sign(&tbs);
                assert_eq!(again.to_bytes().as_slice(), sig.as_slice(), "EdDSA re-made");
            }
            Verdict::Accepted
        }
        Some(other) => Verdict::Skipped(format!("algorithm {other} is not one inkan uses")),
        None => Verdict::Refused("no algorithm".into()),
    }
}

/// The same ES256 example through inkan's own COSE code: opened with
/// `inkan_proto::sign1::open_es256` (the commands' and transfers' reader)
/// and verified with the device side's `edhoc::crypto::verify`; and,
/// with the example's private key, a document made by inkan's
/// `sign1::sign_es256` verified the examples' way (coset and p256).
fn sign1_through_inkan(case: &Value) -> Verdict {
    use inkan_proto::edhoc::{crypto, Suite};
    let input = &case["input"]["sign0"];
    let bytes = unhex(&case["output"]["cbor"]);
    if bytes.first() == Some(&0x84) {
        return Verdict::Skipped("untagged: inkan's documents are tagged COSE_Sign1".into());
    }
    if input["external"].as_str().is_some_and(|e| !e.is_empty()) {
        return Verdict::Skipped("external AAD: inkan's documents use none".into());
    }
    let Some(point) = ec_point(&input["key"]) else {
        return Verdict::Skipped("no public key in the example".into());
    };
    if let Ok(m) = CoseSign1::from_tagged_slice(&bytes) {
        if m.protected.header.alg.is_none() {
            return Verdict::Skipped(
                "algorithm only in the unprotected header: inkan requires it protected".into(),
            );
        }
        if m.protected.header.content_type.is_some() {
            return Verdict::Skipped(
                "a content type inkan's command documents do not carry".into(),
            );
        }
    }
    let opened = match inkan_proto::sign1::open_es256(&bytes, None) {
        Ok(o) => o,
        Err(e) => return Verdict::Refused(format!("inkan's reader: {e:?}")),
    };
    if !case["fail"].as_bool().unwrap_or(false) {
        if let Some(want) = case["intermediates"]["ToBeSign_hex"].as_str() {
            assert_eq!(
                hex::encode_upper(&opened.tbs),
                want,
                "inkan's to-be-signed bytes"
            );
        }
    }
    if !crypto::verify(Suite::P256Es256, &point, &opened.tbs, &opened.signature) {
        return Verdict::Refused("ES256 signature does not verify (inkan)".into());
    }
    // The other way: what inkan makes, the examples' verification takes.
    if let Some(d) = component(&input["key"], "d") {
        use p256::ecdsa::signature::{Signer, Verifier};
        let sk = p256::ecdsa::SigningKey::from_slice(&d).unwrap();
        let made = inkan_proto::sign1::sign_es256(opened.payload.clone(), None, |tbs| {
            let s: p256::ecdsa::Signature = sk.sign(tbs);
            Ok::<_, ()>(s.to_bytes().to_vec())
        })
        .unwrap();
        let msg = CoseSign1::from_tagged_slice(&made).unwrap();
        let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();
        let s = p256::ecdsa::Signature::from_slice(&msg.signature).unwrap();
        assert!(
            vk.verify(&msg.tbs_data(&[]), &s).is_ok(),
            "a document inkan signed does not verify the examples' way"
        );
    }
    Verdict::Accepted
}

/// Decodes an Encrypt0 (tag 16), checks the AAD, decrypts and re-encrypts
/// with AES-CCM-16-64-128 (COSE algorithm 10).
fn encrypt0(case: &Value) -> Verdict {
    use ccm::aead::{Aead, KeyInit, Payload};
    type AesCcm = ccm::Ccm<aes::Aes128, ccm::consts::U8, ccm::consts::U13>;
    let input = &case["input"]["encrypted"];
    let bytes = unhex(&case["output"]["cbor"]);
    let msg = if bytes.first() == Some(&0x83) {
        CoseEncrypt0::from_slice(&bytes)
    } else {
        CoseEncrypt0::from_tagged_slice(&bytes)
    };
    let msg = match msg {
        Ok(m) => m,
        Err(e) => return Verdict::Refused(format!("decode: {e:?}")),
    };
    let alg = alg_of(&msg.protected.header).or_else(|| alg_of(&msg.unprotected));
    if alg != Some(10) {
        return Verdict::Skipped(format!(
            "algorithm {alg:?} is not AES-CCM-16-64-128, the one inkan uses"
        ));
    }
    let external = input["external"]
        .as_str()
        .map(|s| hex::decode(s).unwrap())
        .unwrap_or_default();
    let aad = coset::enc_structure_data(
        coset::EncryptionContext::CoseEncrypt0,
        msg.protected.clone(),
        &external,
    );
    if !case["fail"].as_bool().unwrap_or(false) {
        assert_eq!(
            hex::encode_upper(&aad),
            case["intermediates"]["AAD_hex"].as_str().unwrap(),
            "AAD bytes"
        );
    }
    // The IV: in the header, or the "unsent" full IV for a partial IV.
    let iv = if msg.unprotected.iv.is_empty() {
        match input["unsent"]["IV_hex"].as_str() {
            Some(h) => hex::decode(h).unwrap(),
            None => return Verdict::Refused("no IV".into()),
        }
    } else {
        msg.unprotected.iv.clone()
    };
    let key = b64(input["recipients"][0]["key"]["k"].as_str().unwrap());
    let cipher = AesCcm::new_from_slice(&key).unwrap();
    let nonce = ccm::Nonce::<ccm::consts::U13>::from_slice(&iv);
    let ct = msg.ciphertext.clone().unwrap_or_default();
    let pt = match cipher.decrypt(
        nonce,
        Payload {
            msg: &ct,
            aad: &aad,
        },
    ) {
        Ok(p) => p,
        Err(_) => return Verdict::Refused("decryption failed".into()),
    };
    assert_eq!(pt, case["input"]["plaintext"].as_str().unwrap().as_bytes());
    let again = cipher
        .encrypt(
            nonce,
            Payload {
                msg: &pt,
                aad: &aad,
            },
        )
        .unwrap();
    assert_eq!(again, ct, "ciphertext re-made with the given IV");
    Verdict::Accepted
}

#[test]
fn cose_wg_examples_sign1_and_encrypt0() {
    let root = dir();
    let (mut pass, mut fail, mut skip) = (0, 0, 0);
    let mut failures = Vec::new();
    let mut inkan_accepted = 0;
    for path in files(&root) {
        let case: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let name = path.strip_prefix(&root).unwrap().display().to_string();
        let mut verdicts = Vec::new();
        if case["input"].get("sign0").is_some() {
            verdicts.push(("", sign1(&case)));
            let es256 = {
                let bytes = unhex(&case["output"]["cbor"]);
                let m =
                    CoseSign1::from_tagged_slice(&bytes).or_else(|_| CoseSign1::from_slice(&bytes));
                m.ok()
                    .and_then(|m| alg_of(&m.protected.header).or_else(|| alg_of(&m.unprotected)))
                    == Some(-7)
            };
            if es256 {
                verdicts.push((" (inkan's sign1)", sign1_through_inkan(&case)));
            }
        } else if case["input"].get("encrypted").is_some() {
            verdicts.push(("", encrypt0(&case)));
        } else {
            continue;
        }
        let must_fail = case["fail"].as_bool().unwrap_or(false);
        for (path_name, verdict) in verdicts {
            if !path_name.is_empty() && verdict == Verdict::Accepted && !must_fail {
                inkan_accepted += 1;
            }
            match (&verdict, must_fail) {
                (Verdict::Accepted, false) | (Verdict::Refused(_), true) => pass += 1,
                (Verdict::Skipped(why), _) => {
                    println!("skip {name}{path_name}: {why}");
                    skip += 1;
                }
                _ => {
                    failures.push(format!(
                        "{name}{path_name}: {verdict:?} (fail expected: {must_fail})"
                    ));
                    fail += 1;
                }
            }
            if let Verdict::Refused(why) = &verdict {
                println!("refused {name}{path_name}: {why}");
            }
        }
    }
    println!("cose-wg examples: {pass} pass, {fail} fail, {skip} skip");
    assert!(failures.is_empty(), "{failures:#?}");
    // Every Sign1 algorithm inkan uses and AES-CCM are exercised, and
    // inkan's own reader takes a published ES256 document.
    assert!(pass >= 15, "only {pass} cases passed");
    assert!(inkan_accepted >= 1, "inkan's sign1 accepted no example");
}
