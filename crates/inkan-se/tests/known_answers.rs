//! Known-answer tests from the protocol fact sheet (stsafe-protocol.md §1.4,
//! §3.3): CRC, query frames, both C-MAC vectors and the encrypted, R-MAC'd
//! response. These pin the wire format byte for byte.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use inkan_se::channel::{self, subject, AesKey, CounterWidth, HostKeys};
use inkan_se::wire::crc::crc16;
use inkan_se::wire::{CommandCode, CommandFrame, CommandHeader, ResponseFrame, Status, Tag};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).unwrap()
}

fn keys() -> HostKeys {
    HostKeys {
        mac: AesKey::from_slice(&h("000102030405060708090A0B0C0D0E0F")).unwrap(),
        cipher: AesKey::from_slice(&h("101112131415161718191A1B1C1D1E1F")).unwrap(),
    }
}

#[test]
fn crc_check_value_and_single_byte() {
    assert_eq!(crc16(b"123456789"), 0x906E);
    assert_eq!(crc16(&[0x01]).to_be_bytes(), [0xE1, 0xF1]);
}

#[test]
fn query_frames() {
    for (tag, wire) in [
        (Tag::PRODUCT_DATA, "14 11 FC BE"),
        (Tag::COMMAND_AUTHORIZATION, "14 24 9A 90"),
        (Tag::HOST_KEY_SLOT_V2, "14 47 CB 0D"),
        (Tag::HOST_KEY_SLOT, "14 17 99 88"),
    ] {
        let f = CommandFrame {
            header: CommandHeader::new(CommandCode::QUERY),
            payload: vec![tag.0],
            cmac: None,
        };
        assert_eq!(f.encode(), h(wire), "query {tag}");
        assert_eq!(CommandFrame::decode(&h(wire), 507).unwrap(), f);
    }
}

#[test]
fn empty_ok_response() {
    let r = ResponseFrame::ok(Vec::new());
    assert_eq!(r.encode(), h("00 00 02 F0 78"));
    assert_eq!(
        ResponseFrame::decode(&h("00 00 02 F0 78"), false).unwrap(),
        r
    );
}

#[test]
fn cmac_vector_a120() {
    let k = keys();
    let block = channel::subject_block(CounterWidth::V2, 5, subject::CMAC);
    assert_eq!(block.to_vec(), h("00000005 00 80 00000000000000000000"));
    let mut header = CommandHeader::new(CommandCode::GENERATE_RANDOM);
    header.flags = 0xE0;
    let payload = h("00 14");
    let full = k
        .mac
        .cmac(&[&block, &[0x00], &header.to_bytes(), &[0x00, 0x02], &payload]);
    assert_eq!(full.to_vec(), h("244936c68292f58379c79aef40706242"));
    let mac = channel::c_mac(&k, CounterWidth::V2, 5, &header.to_bytes(), &payload);
    assert_eq!(mac, [0x24, 0x49, 0x36, 0xC6]);
    let f = CommandFrame {
        header,
        payload,
        cmac: Some(mac),
    };
    assert_eq!(f.encode(), h("E2 00 14 24 49 36 C6 26 9C"));
}

#[test]
fn cmac_vector_a110() {
    let k = keys();
    assert_eq!(
        channel::subject_block(CounterWidth::V1, 5, subject::CMAC).to_vec(),
        h("000005 00 80 0000000000000000000000")
    );
    let mac = channel::c_mac(&k, CounterWidth::V1, 5, &[0xE2], &h("00 14"));
    assert_eq!(mac, [0x6C, 0x42, 0x4E, 0x25]);
}

#[test]
fn encrypted_rmac_response_a120() {
    let k = keys();
    let plaintext = [0xAAu8; 20];
    assert_eq!(
        channel::iv(&k, CounterWidth::V2, 6, subject::RESPONSE_ENCRYPTION).to_vec(),
        h("01eb125f0269800b5d90797be9bb35f5")
    );
    let ct = channel::encrypt(
        &k,
        CounterWidth::V2,
        6,
        subject::RESPONSE_ENCRYPTION,
        &plaintext,
    );
    assert_eq!(
        ct,
        h("acfdfdcc239177635b5ae05d5b88d69aa92bc974960c461ee875d6a99795bd13")
    );
    let rmac = channel::r_mac(&k, CounterWidth::V2, 6, &[0xE2], &h("00 14"), 0x40, &ct);
    assert_eq!(rmac, [0x4c, 0x55, 0xdc, 0xad]);
    let rsp = ResponseFrame {
        status: Status::OK,
        data: ct.clone(),
        rmac: Some(rmac),
    };
    let wire = rsp.encode();
    assert_eq!(&wire[..3], &[0x40, 0x00, 0x26]);
    assert_eq!(&wire[wire.len() - 2..], &[0x4e, 0xd4]);
    assert_eq!(ResponseFrame::decode(&wire, true).unwrap(), rsp);
    let back =
        channel::decrypt(&k, CounterWidth::V2, 6, subject::RESPONSE_ENCRYPTION, &ct).unwrap();
    assert_eq!(back, plaintext);
}

#[test]
fn aligned_plaintext_gets_a_whole_padding_block() {
    let k = keys();
    let ct = channel::encrypt(
        &k,
        CounterWidth::V2,
        1,
        subject::COMMAND_ENCRYPTION,
        &[0x55; 16],
    );
    assert_eq!(ct.len(), 32);
    let back = channel::decrypt(&k, CounterWidth::V2, 1, subject::COMMAND_ENCRYPTION, &ct).unwrap();
    assert_eq!(back, vec![0x55; 16]);
    // Another counter gives another IV: the first block comes out garbled
    // (integrity is the C-MAC's job, computed over the ciphertext).
    let other =
        channel::decrypt(&k, CounterWidth::V2, 2, subject::COMMAND_ENCRYPTION, &ct).unwrap();
    assert_ne!(other, vec![0x55; 16]);
    // A truncated ciphertext is refused.
    assert!(channel::decrypt(
        &k,
        CounterWidth::V2,
        1,
        subject::COMMAND_ENCRYPTION,
        &ct[..20]
    )
    .is_err());
}
