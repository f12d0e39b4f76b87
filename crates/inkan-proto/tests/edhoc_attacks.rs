//! Both roles against each other for every supported suite, and the ways a
//! hostile or broken peer is refused, each with its specific error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use inkan_proto::cbor;
use inkan_proto::edhoc::crypto::{SoftwareEphemeral, SoftwareSigner};
use inkan_proto::edhoc::{
    parse_error_message, ConnId, Credential, EdhocError, IdCred, Initiator,
    InitiatorAwaitingMessage2, Responder, ResponderAwaitingMessage3, Suite,
};

const SUITES: [Suite; 2] = [Suite::X25519EdDsa, Suite::P256Es256];

struct Party {
    key: SoftwareSigner,
    cred: Credential,
    id: IdCred,
}

fn party(suite: Suite, name: &[u8]) -> Party {
    let key = SoftwareSigner::generate(suite);
    let cred = Credential {
        cred: cbor::bstr_vec(name),
        public_key: key.public_key(),
    };
    Party {
        key,
        cred,
        id: IdCred::kid(name),
    }
}

fn start(suite: Suite) -> (InitiatorAwaitingMessage2, Vec<u8>) {
    Initiator::start(
        suite,
        ConnId(vec![0x0e]),
        &[],
        Box::new(SoftwareEphemeral::generate(suite)),
    )
}

fn respond(suite: Suite, m1: &[u8], r: &mut Party) -> (ResponderAwaitingMessage3, Vec<u8>) {
    Responder::process_message_1(m1, &SUITES)
        .unwrap()
        .prepare_message_2(
            ConnId(vec![0x41, 0x42]),
            &r.id,
            &r.cred,
            &[],
            Box::new(SoftwareEphemeral::generate(suite)),
            &mut r.key,
        )
        .unwrap()
}

#[test]
fn both_roles_agree_for_every_suite_with_ead() {
    for suite in SUITES {
        let (mut i, mut r) = (party(suite, b"device-1"), party(suite, b"cloud"));
        let (ist, m1) = Initiator::start(
            suite,
            ConnId(b"long connection id".to_vec()),
            &[],
            Box::new(SoftwareEphemeral::generate(suite)),
        );
        let r1 = Responder::process_message_1(&m1, &SUITES).unwrap();
        let ead2 = [0x18, 0x2a, 0x41, 0x07];
        let (rst, m2) = r1
            .prepare_message_2(
                ConnId(vec![0x05]),
                &r.id,
                &r.cred,
                &ead2,
                Box::new(SoftwareEphemeral::generate(suite)),
                &mut r.key,
            )
            .unwrap();
        let p2 = ist.process_message_2(&m2).unwrap();
        assert_eq!(p2.ead_2(), ead2);
        let (idone, m3) = p2
            .verify(&r.cred)
            .unwrap()
            .prepare_message_3(&i.id, &i.cred.cred, &[], &mut i.key)
            .unwrap();
        // The responder's state survives a round trip through storage (another replica).
        let rst = ResponderAwaitingMessage3::from_bytes(&rst.to_bytes()).unwrap();
        let p3 = rst.process_message_3(&m3).unwrap();
        assert_eq!(p3.id_cred_i(), &i.id);
        let rdone = p3.verify(&i.cred).unwrap();
        idone
            .process_message_4(&rdone.message_4(&[]).unwrap())
            .unwrap();
        assert_eq!(
            idone.session().prk_out(),
            rdone.session().prk_out(),
            "{suite:?}"
        );
        assert_eq!(
            *idone.session().oscore_master_salt().unwrap(),
            *rdone.session().oscore_master_salt().unwrap()
        );
    }
}

#[test]
fn responder_impersonation_is_caught_by_the_initiator() {
    for suite in SUITES {
        let mut real = party(suite, b"cloud");
        let mut rogue = party(suite, b"cloud");
        let (i, m1) = start(suite);
        // The rogue answers as "cloud", with its own key.
        let (_, m2) = respond(suite, &m1, &mut rogue);
        let p2 = i.process_message_2(&m2).unwrap();
        // The device checks against the pinned (real) credential.
        assert_eq!(
            p2.verify(&real.cred).unwrap_err(),
            EdhocError::BadSignature(2)
        );
        let _ = &mut real;
    }
}

#[test]
fn initiator_impersonation_and_cloned_credentials_are_caught() {
    for suite in SUITES {
        let (mut dev, mut cloud) = (party(suite, b"device"), party(suite, b"cloud"));
        let mut thief = party(suite, b"device");
        let (i, m1) = start(suite);
        let (rst, m2) = respond(suite, &m1, &mut cloud);
        let i = i
            .process_message_2(&m2)
            .unwrap()
            .verify(&cloud.cred)
            .unwrap();
        // The thief presents the device's credential but signs with its own key.
        let (_, m3) = i
            .prepare_message_3(&dev.id, &dev.cred.cred, &[], &mut thief.key)
            .unwrap();
        let p3 = rst.process_message_3(&m3).unwrap();
        assert_eq!(
            p3.verify(&dev.cred).unwrap_err(),
            EdhocError::BadSignature(3)
        );
        let _ = &mut dev;
    }
}

#[test]
fn spliced_and_tampered_messages_fail_decryption() {
    for suite in SUITES {
        let (mut dev, mut cloud) = (party(suite, b"device"), party(suite, b"cloud"));
        // Two exchanges; message_3 of the first sent into the second.
        let (i1, m1a) = start(suite);
        let (r1, m2a) = respond(suite, &m1a, &mut cloud);
        let (_, m3a) = i1
            .process_message_2(&m2a)
            .unwrap()
            .verify(&cloud.cred)
            .unwrap()
            .prepare_message_3(&dev.id, &dev.cred.cred, &[], &mut dev.key)
            .unwrap();
        let (_, m1b) = start(suite);
        let (r2, _) = respond(suite, &m1b, &mut cloud);
        assert_eq!(
            r2.process_message_3(&m3a).unwrap_err(),
            EdhocError::Decryption(3)
        );
        // A flipped bit in message_3.
        let mut t = m3a.clone();
        let n = t.len();
        t[n - 5] ^= 0x10;
        assert_eq!(
            r1.clone().process_message_3(&t).unwrap_err(),
            EdhocError::Decryption(3)
        );
        // A replay of message_3 into its own, already completed, exchange is
        // the caller's to refuse (the state is consumed); into a fresh state
        // with other keys it fails to decrypt, as above.
        assert!(r1.process_message_3(&m3a).is_ok());

        // A flipped bit in message_2's ciphertext: the plaintext garbles, so
        // parsing or the signature fails.
        let (i, m1) = start(suite);
        let (_, mut m2) = respond(suite, &m1, &mut cloud);
        let n = m2.len();
        m2[n - 10] ^= 0x01;
        match i.process_message_2(&m2) {
            Ok(p) => assert_eq!(
                p.verify(&cloud.cred).unwrap_err(),
                EdhocError::BadSignature(2)
            ),
            Err(e) => assert!(matches!(e, EdhocError::Malformed(_)), "{e:?}"),
        }
    }
}

#[test]
fn malformed_and_oversized_cbor_is_refused() {
    let suite = Suite::P256Es256;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "empty"),
        (vec![0x00], "method only"),
        (vec![0x00, 0x02, 0x58], "truncated bstr"),
        (vec![0x00, 0x02, 0x41, 0x01, 0x0e], "G_X of the wrong size"),
        (vec![0x00, 0x9f, 0x02, 0xff], "indefinite-length array"),
        (vec![0x00, 0x18, 0x02], "non-canonical int"),
        (vec![0x01, 0x02], "method 1"),
        (
            [vec![0x00, 0x02, 0x59, 0xff, 0xff]].concat(),
            "length beyond the input",
        ),
    ];
    for (m, what) in cases {
        let e = Responder::process_message_1(&m, &SUITES).unwrap_err();
        assert!(
            matches!(
                e,
                EdhocError::Malformed(_)
                    | EdhocError::Cbor(_)
                    | EdhocError::UnsupportedMethod(1)
                    | EdhocError::InvalidEphemeralKey
            ),
            "{what}: {e:?}"
        );
    }
    let big = vec![0u8; 5000];
    assert_eq!(
        Responder::process_message_1(&big, &SUITES).unwrap_err(),
        EdhocError::TooLong(5000)
    );
    // A message_2 that is not a bstr, or with trailing data.
    let (i, _) = start(suite);
    assert!(matches!(
        i.process_message_2(&[0x82, 0x01, 0x02]).unwrap_err(),
        EdhocError::Cbor(_)
    ));
    let (i, _) = start(suite);
    assert!(matches!(
        i.process_message_2(&[0x41, 0x00, 0x00]).unwrap_err(),
        EdhocError::Malformed(_)
    ));
    // An invalid P-256 x-coordinate for G_Y.
    let (i, _) = start(suite);
    let mut bad = vec![0x58, 0x30];
    bad.extend_from_slice(&[0xFF; 48]);
    assert_eq!(
        i.process_message_2(&bad).unwrap_err(),
        EdhocError::InvalidEphemeralKey
    );
}

#[test]
fn suite_negotiation_follows_the_rfc() {
    // Selected suite unsupported: error message with our suites.
    let (_, m1) = Initiator::start(
        Suite::X25519EdDsa,
        ConnId(vec![1]),
        &[],
        Box::new(SoftwareEphemeral::generate(Suite::X25519EdDsa)),
    );
    let e = Responder::process_message_1(&m1, &[Suite::P256Es256]).unwrap_err();
    assert_eq!(e, EdhocError::UnsupportedSuite { selected: 0 });
    let err = Responder::error_for(&e, &[Suite::P256Es256]);
    assert_eq!(err, vec![0x02, 0x02]);
    assert_eq!(
        parse_error_message(&err),
        Some(EdhocError::PeerError {
            code: 2,
            detail: "02".into()
        })
    );
    // SUITES_I = [2, 0]: the initiator prefers 2 but selected 0; a responder
    // supporting 2 must refuse.
    let mut m = vec![0x00, 0x82, 0x02, 0x00, 0x58, 0x20];
    m.extend_from_slice(&[9u8; 32]);
    m.push(0x01);
    assert_eq!(
        Responder::process_message_1(&m, &SUITES).unwrap_err(),
        EdhocError::UnsupportedSuite { selected: 0 }
    );
    // ...and a responder supporting only 0 accepts.
    assert!(Responder::process_message_1(&m, &[Suite::X25519EdDsa]).is_ok());
    // The initiator sees the error message as a peer error.
    let (i, _) = start(Suite::P256Es256);
    assert!(matches!(
        i.process_message_2(&err).unwrap_err(),
        EdhocError::PeerError { code: 2, .. }
    ));
}

/// EAD_1 is parsed, not taken on faith: bytes that are not EAD items
/// (trailing junk) are malformed, a critical item the responder does not
/// understand is refused, non-critical items and padding are ignored.
#[test]
fn message_1_trailing_bytes_and_critical_ead_are_refused() {
    let suite = Suite::P256Es256;
    let m1_with = |ead: &[u8]| {
        Initiator::start(
            suite,
            ConnId(vec![0x0e]),
            ead,
            Box::new(SoftwareEphemeral::generate(suite)),
        )
        .1
    };
    // Non-critical item with a value, a bare non-critical label, padding.
    for ok in [
        &[0x05, 0x41, 0x01][..],
        &[0x18, 0x2a][..],
        &[0x00, 0x42, 0, 0][..],
    ] {
        assert!(
            Responder::process_message_1(&m1_with(ok), &[suite]).is_ok(),
            "{ok:02x?}"
        );
    }
    // Critical items: label -5 with a value, label -1 bare.
    for (ead, label) in [(&[0x24, 0x41, 0x01][..], -5), (&[0x20][..], -1)] {
        assert!(matches!(
            Responder::process_message_1(&m1_with(ead), &[suite]),
            Err(EdhocError::CriticalEad(l)) if l == label
        ));
    }
    // Trailing bytes that are not an EAD item: a byte string, a text
    // string, an array.
    for junk in [&[0x41, 0x00][..], &[0x61, 0x61][..], &[0x80][..]] {
        assert!(matches!(
            Responder::process_message_1(&m1_with(junk), &[suite]),
            Err(EdhocError::Malformed(_))
        ));
    }
}
