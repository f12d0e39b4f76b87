//! OSCORE against RFC 8613 Appendix C: key derivation (C.1-C.3) and the
//! protected requests and responses (C.4-C.8) byte for byte, in both
//! directions; then the attacks: a flipped bit, a replay, another
//! context, a forged kid. The vectors are read from `vectors/rfc8613`, or
//! from the directory in `INKAN_OSCORE_VECTORS_DIR`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use coap_lite::Packet;
use inkan_proto::oscore::{ContextParams, OscoreError, RequestBinding, SecurityContext};
use serde_json::Value;
use std::path::PathBuf;

fn vectors() -> Value {
    let dir = std::env::var_os("INKAN_OSCORE_VECTORS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../vectors/rfc8613"));
    let path = dir.join("appendix-c.json");
    serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

fn h(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn params(kd: &Value) -> ContextParams {
    ContextParams {
        master_secret: zeroize::Zeroizing::new(h(&kd["master_secret"])),
        master_salt: h(&kd["master_salt"]),
        id_context: kd["id_context"].as_str().map(|s| hex::decode(s).unwrap()),
        sender_id: h(&kd["sender_id"]),
        recipient_id: h(&kd["recipient_id"]),
    }
}

fn context(v: &Value, name: &str) -> SecurityContext {
    let kd = v["key_derivation"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .unwrap_or_else(|| panic!("no context {name}"));
    SecurityContext::derive(&params(kd)).unwrap()
}

/// The peer of a context: "C.1.1 client" <-> "C.1.2 server".
fn peer(name: &str) -> String {
    if let Some(p) = name.strip_suffix(".1 client") {
        format!("{p}.2 server")
    } else {
        format!("{}.1 client", name.strip_suffix(".2 server").unwrap())
    }
}

#[test]
fn key_derivation_c1_to_c3() {
    let v = vectors();
    let mut n = 0;
    for kd in v["key_derivation"].as_array().unwrap() {
        let c = SecurityContext::derive(&params(kd)).unwrap();
        let name = kd["name"].as_str().unwrap();
        assert_eq!(c.sender_key(), h(&kd["sender_key"]), "{name}: sender key");
        assert_eq!(
            c.recipient_key(),
            h(&kd["recipient_key"]),
            "{name}: recipient key"
        );
        assert_eq!(c.common_iv(), h(&kd["common_iv"]), "{name}: common IV");
        assert_eq!(
            c.nonce(c.sender_id(), &[0]).to_vec(),
            h(&kd["sender_nonce_piv0"]),
            "{name}: sender nonce"
        );
        assert_eq!(
            c.nonce(c.recipient_id(), &[0]).to_vec(),
            h(&kd["recipient_nonce_piv0"]),
            "{name}: recipient nonce"
        );
        n += 1;
    }
    assert_eq!(n, 6);
}

fn binding_of(v: &Value, request_name: &str) -> RequestBinding {
    let m = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == request_name)
        .unwrap();
    let client = context(v, m["context"].as_str().unwrap());
    RequestBinding {
        kid: client.sender_id().to_vec(),
        piv: inkan_proto::oscore::encode_piv(m["sender_sequence"].as_u64().unwrap()),
    }
}

#[test]
fn protected_messages_c4_to_c8_both_ways() {
    let v = vectors();
    let mut n = 0;
    for m in v["messages"].as_array().unwrap() {
        let name = m["name"].as_str().unwrap();
        let ctx_name = m["context"].as_str().unwrap();
        let mut sender = context(&v, ctx_name);
        let mut receiver = context(&v, &peer(ctx_name));
        sender.set_sender_sequence(m["sender_sequence"].as_u64().unwrap());
        let plain = Packet::from_bytes(&h(&m["unprotected"])).unwrap();
        if m["kind"] == "request" {
            let (protected, _) = sender.protect_request(&plain).unwrap();
            assert_eq!(
                hex::encode(protected.to_bytes().unwrap()),
                m["protected"].as_str().unwrap(),
                "{name}: protect"
            );
            let received = Packet::from_bytes(&h(&m["protected"])).unwrap();
            let (back, binding) = receiver.unprotect_request(&received).unwrap();
            assert_eq!(
                back.to_bytes().unwrap(),
                h(&m["unprotected"]),
                "{name}: unprotect"
            );
            assert_eq!(binding.piv, vec![20]);
            // The same request again: a replay.
            assert_eq!(
                receiver.unprotect_request(&received).unwrap_err(),
                OscoreError::Replay(20),
                "{name}: replay"
            );
        } else {
            let binding = binding_of(&v, m["request"].as_str().unwrap());
            let fresh = m["fresh_piv"].as_bool().unwrap();
            let protected = sender.protect_response(&plain, &binding, fresh).unwrap();
            assert_eq!(
                hex::encode(protected.to_bytes().unwrap()),
                m["protected"].as_str().unwrap(),
                "{name}: protect"
            );
            let received = Packet::from_bytes(&h(&m["protected"])).unwrap();
            let back = receiver.unprotect_response(&received, &binding).unwrap();
            assert_eq!(
                back.to_bytes().unwrap(),
                h(&m["unprotected"]),
                "{name}: unprotect"
            );
        }
        n += 1;
    }
    assert_eq!(n, 5);
}

/// Every way a protected request can be wrong is refused with its own
/// error, and none moves the replay window.
#[test]
fn attacks_on_protected_requests() {
    let v = vectors();
    let m = &v["messages"][0];
    let protected = h(&m["protected"]);
    // Flip each bit of the ciphertext and tag in turn.
    let header_len = protected.iter().position(|b| *b == 0xFF).unwrap() + 1;
    for i in header_len..protected.len() {
        for bit in 0..8 {
            let mut server = context(&v, "C.1.2 server");
            let mut bad = protected.clone();
            bad[i] ^= 1 << bit;
            let p = Packet::from_bytes(&bad).unwrap();
            assert_eq!(
                server.unprotect_request(&p).unwrap_err(),
                OscoreError::Decryption
            );
            assert_eq!(server.replay, Default::default());
        }
    }
    // Under another context (C.2's server holds other keys and kid 00).
    let mut other = context(&v, "C.2.2 server");
    let p = Packet::from_bytes(&protected).unwrap();
    assert_eq!(
        other.unprotect_request(&p).unwrap_err(),
        OscoreError::UnknownKid
    );
    // A forged kid claiming C.2's client, under C.1's keys: the kid is
    // known to C.2's server but the tag does not verify.
    let mut c1 = context(&v, "C.1.1 client");
    let mut forged = Packet::from_bytes(&h(&m["unprotected"])).unwrap();
    c1.set_sender_sequence(5);
    let (mut q, _) = c1.protect_request(&forged).unwrap();
    q.clear_option(coap_lite::CoapOption::Oscore);
    q.add_option(coap_lite::CoapOption::Oscore, vec![0x09, 0x05, 0x00]);
    assert_eq!(
        other.unprotect_request(&q).unwrap_err(),
        OscoreError::Decryption
    );
    // Not protected at all.
    forged.clear_option(coap_lite::CoapOption::Oscore);
    let mut server = context(&v, "C.1.2 server");
    assert_eq!(
        server.unprotect_request(&forged).unwrap_err(),
        OscoreError::NotProtected
    );
    // Malformed OSCORE options.
    for opt in [
        vec![0x20],
        vec![0x06, 1, 2, 3, 4, 5, 6],
        vec![0x03, 0x01],
        vec![0x10],
    ] {
        let mut p = Packet::from_bytes(&protected).unwrap();
        p.clear_option(coap_lite::CoapOption::Oscore);
        p.add_option(coap_lite::CoapOption::Oscore, opt.clone());
        assert!(
            matches!(
                server.unprotect_request(&p),
                Err(OscoreError::Malformed(_)) | Err(OscoreError::UnknownKid)
            ),
            "{opt:?}"
        );
    }
}

/// The replay window: in-order, out-of-order within the window, duplicates
/// and values older than the window.
#[test]
fn replay_window() {
    let mut w = inkan_proto::oscore::ReplayWindow::default();
    for piv in [0, 1, 2, 5, 4, 40] {
        w.check(piv).unwrap();
        w.accept(piv);
    }
    for piv in [0, 1, 2, 4, 5, 40] {
        assert!(w.check(piv).is_err(), "{piv} replayed");
    }
    // 3 was never seen but is now 37 behind: older than the window.
    assert_eq!(w.check(3), Err(OscoreError::Replay(3)));
    // 39 was never seen and is inside the window.
    w.check(39).unwrap();
    w.check(41).unwrap();
}

/// Two contexts derived from one EDHOC session (RFC 9528 Appendix A.1)
/// talk to each other: the initiator's Sender ID is C_R.
#[test]
fn contexts_from_an_edhoc_session() {
    use inkan_proto::edhoc::crypto::{SoftwareEphemeral, SoftwareSigner};
    use inkan_proto::edhoc::{ConnId, Credential, IdCred, Initiator, Responder, Suite};
    let suite = Suite::P256Es256;
    let mut ik = SoftwareSigner::generate(suite);
    let mut rk = SoftwareSigner::generate(suite);
    let icred = Credential {
        cred: vec![0xA1, 0x01, 0x02],
        public_key: ik.public_key(),
    };
    let rcred = Credential {
        cred: vec![0xA1, 0x01, 0x03],
        public_key: rk.public_key(),
    };
    let (i, m1) = Initiator::start(
        suite,
        ConnId(vec![0x37]),
        &[],
        Box::new(SoftwareEphemeral::generate(suite)),
    );
    let r1 = Responder::process_message_1(&m1, &[suite]).unwrap();
    let (r2, m2) = r1
        .prepare_message_2(
            ConnId(vec![0x27]),
            &IdCred::kid(&[0x32]),
            &rcred,
            &[],
            Box::new(SoftwareEphemeral::generate(suite)),
            &mut rk,
        )
        .unwrap();
    let p2 = i.process_message_2(&m2).unwrap();
    let v2 = p2.verify(&rcred).unwrap();
    let (done_i, m3) = v2
        .prepare_message_3(&IdCred::kid(&[0x2B]), &icred.cred, &[], &mut ik)
        .unwrap();
    let done_r = r2.process_message_3(&m3).unwrap().verify(&icred).unwrap();
    let c_i = ConnId(vec![0x37]);
    let c_r = ConnId(vec![0x27]);
    let mut dev = SecurityContext::derive(
        &ContextParams::from_edhoc(done_i.session(), true, &c_i, &c_r).unwrap(),
    )
    .unwrap();
    let mut cloud = SecurityContext::derive(
        &ContextParams::from_edhoc(done_r.session(), false, &c_i, &c_r).unwrap(),
    )
    .unwrap();
    assert_eq!(dev.sender_id(), &[0x27]);
    assert_eq!(cloud.sender_id(), &[0x37]);
    let mut req = Packet::new();
    req.header.code = coap_lite::MessageClass::Request(coap_lite::RequestType::Post);
    req.add_option(coap_lite::CoapOption::UriPath, b"telemetry".to_vec());
    req.payload = b"21.5 C".to_vec();
    let (p, b) = dev.protect_request(&req).unwrap();
    assert!(
        !p.payload.windows(6).any(|w| w == b"21.5 C"),
        "payload in clear"
    );
    assert!(
        p.get_option(coap_lite::CoapOption::UriPath).is_none(),
        "path in clear"
    );
    let (got, b2) = cloud.unprotect_request(&p).unwrap();
    assert_eq!(got.payload, b"21.5 C");
    assert_eq!(b, b2);
    let mut rsp = Packet::new();
    rsp.header.code = coap_lite::MessageClass::Response(coap_lite::ResponseType::Changed);
    rsp.payload = b"stored".to_vec();
    let pr = cloud.protect_response(&rsp, &b2, false).unwrap();
    assert_eq!(dev.unprotect_response(&pr, &b).unwrap().payload, b"stored");
}
