//! Malformed frames: each gets its specific status, nothing panics, and a
//! refused command leaves the chip's NVM exactly as it was.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use inkan_se::chip::Processed;
use inkan_se::wire::crc::crc16;
use inkan_se::wire::{
    CommandCode, CommandFrame, CommandHeader, ExtendedCode, ResponseFrame, Status,
};
use inkan_se::{Chip, Curve, Personality};
use proptest::prelude::*;

fn with_crc(body: &[u8]) -> Vec<u8> {
    let mut v = body.to_vec();
    v.extend_from_slice(&crc16(body).to_be_bytes());
    v
}

fn snapshot(chip: &Chip) -> String {
    serde_json::to_string(chip.nvm()).unwrap()
}

fn chip(p: Personality) -> Chip {
    let mut c = Chip::new(p, [9; 9]);
    c.manufacture_key(0, Curve::P256, &[0x42; 32]).unwrap();
    c
}

fn status_of(p: &Processed) -> Status {
    ResponseFrame::decode(&p.response, false).unwrap().status
}

fn expect(chip: &mut Chip, frame: &[u8], want: Status, what: &str) {
    let before = snapshot(chip);
    let p = chip.process(frame);
    assert_eq!(status_of(&p), want, "{what}");
    let rsp = ResponseFrame::decode(&p.response, false).unwrap();
    assert!(rsp.data.is_empty(), "{what}: an error carries no data");
    assert_eq!(snapshot(chip), before, "{what}: state changed");
}

#[test]
fn each_malformation_gets_its_status() {
    for p in [Personality::A110, Personality::A120] {
        let mut c = chip(p);
        expect(&mut c, &[], Status::COMMUNICATION_ERROR, "empty frame");
        expect(
            &mut c,
            &[0x14, 0x11],
            Status::COMMUNICATION_ERROR,
            "truncated: no room for a CRC",
        );
        expect(
            &mut c,
            &[0x14, 0x11, 0xFC, 0xBF],
            Status::COMMUNICATION_ERROR,
            "bad CRC",
        );
        let mut big = vec![0x00];
        big.resize(p.max_frame() + 1, 0xAB);
        expect(
            &mut c,
            &with_crc(&big),
            Status::BUFFER_LENGTH_EXCEEDED,
            "oversized",
        );
        expect(
            &mut c,
            &with_crc(&[0x12, 0x00]),
            Status::UNSUPPORTED_COMMAND_CODE,
            "unknown command (put key)",
        );
        expect(
            &mut c,
            &with_crc(&[0x1F, 0x42]),
            Status::UNSUPPORTED_COMMAND_CODE,
            "unknown extended command",
        );
        expect(
            &mut c,
            &with_crc(&[0x1F]),
            Status::INCONSISTENT_COMMAND_DATA,
            "extended prefix without code",
        );
        expect(
            &mut c,
            &with_crc(&[0x05, 0x00, 0x00, 0x00]),
            Status::INCONSISTENT_COMMAND_DATA,
            "read: truncated payload",
        );
        expect(
            &mut c,
            &with_crc(&[0x14, 0x11, 0x00]),
            Status::INCONSISTENT_COMMAND_DATA,
            "query: trailing byte",
        );
        expect(
            &mut c,
            &with_crc(&[0x14, 0x99]),
            Status::VALUE_OUT_OF_RANGE,
            "query: unknown tag",
        );
        expect(
            &mut c,
            &with_crc(&[0x02, 0x01, 0x10]),
            Status::VALUE_OUT_OF_RANGE,
            "random: bad subject",
        );
        expect(
            &mut c,
            &with_crc(&[0x06, 0x00, 0x00, 0xFF, 0xFF, 0x01]),
            Status::BOUNDARY_EXCEEDED,
            "update beyond zone",
        );
        expect(
            &mut c,
            &with_crc(&[0x06, 0x00, 0x33, 0x00, 0x00, 0x01]),
            Status::ENTRY_NOT_FOUND,
            "update: no such zone",
        );
        expect(
            &mut c,
            &with_crc(&[0x06, 0x20, 0x00, 0x00, 0x00, 0x01]),
            Status::VALUE_OUT_OF_RANGE,
            "update: reserved option bit",
        );
        expect(
            &mut c,
            &with_crc(&[0x16, 0x00, 0x00, 0x20, 0x01]),
            Status::INCONSISTENT_COMMAND_DATA,
            "sign: digest shorter than its length",
        );
        expect(
            &mut c,
            &with_crc(&[0x16, 0x00, 0x00, 0x03, 1, 2, 3]),
            Status::INCONSISTENT_COMMAND_DATA,
            "sign: wrong digest size",
        );
        let mut gk = vec![
            0x11, 0x13, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x2B, 0x65, 0x99,
        ];
        expect(
            &mut c,
            &with_crc(&gk),
            Status::VALUE_OUT_OF_RANGE,
            "generate key: unknown curve",
        );
        gk.truncate(8);
        expect(
            &mut c,
            &with_crc(&gk),
            Status::INCONSISTENT_COMMAND_DATA,
            "generate key: truncated curve",
        );
        // Establish key with a point off the curve.
        let mut ek = vec![0x18, 0x00, 0x04, 0x00, 0x20];
        ek.extend_from_slice(&[1; 32]);
        ek.extend_from_slice(&[0x00, 0x20]);
        ek.extend_from_slice(&[2; 32]);
        expect(
            &mut c,
            &with_crc(&ek),
            Status::INVALID_PUBLIC_KEY,
            "ECDH: invalid point",
        );
        // A C-MAC without paired host keys.
        expect(
            &mut c,
            &with_crc(&[0xE0, 1, 2, 3, 4, 5]),
            Status::SESSION_ERROR,
            "C-MAC without host keys",
        );
        expect(
            &mut c,
            &with_crc(&[0x40, 1]),
            Status::SESSION_ERROR,
            "R-MAC asked without C-MAC",
        );
        expect(
            &mut c,
            &with_crc(&[0x80]),
            Status::INCONSISTENT_COMMAND_DATA,
            "C-MAC flagged, no room for it",
        );
    }
}

fn arb_command() -> impl Strategy<Value = CommandFrame> {
    (
        0u8..0x20,
        any::<u8>(),
        0u8..8,
        proptest::collection::vec(any::<u8>(), 0..300),
        any::<[u8; 4]>(),
    )
        .prop_map(|(code, ext, flags, payload, mac)| {
            let flags = flags << 5;
            CommandFrame {
                header: CommandHeader {
                    flags,
                    code: CommandCode(code),
                    extended: (code == 0x1F).then_some(ExtendedCode(ext)),
                },
                payload,
                cmac: (flags & 0x80 != 0).then_some(mac),
            }
        })
}

fn arb_response() -> impl Strategy<Value = ResponseFrame> {
    (
        0u8..0x20,
        proptest::collection::vec(any::<u8>(), 0..300),
        any::<[u8; 4]>(),
        any::<bool>(),
    )
        .prop_map(|(status, data, mac, with_mac)| ResponseFrame {
            status: Status(status),
            data,
            // R-MACs only ride on successful responses.
            rmac: (with_mac && status == 0).then_some(mac),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn command_frames_round_trip(f in arb_command()) {
        let bytes = f.encode();
        prop_assert_eq!(CommandFrame::decode(&bytes, 4096).unwrap(), f);
    }

    #[test]
    fn response_frames_round_trip(r in arb_response()) {
        let bytes = r.encode();
        prop_assert_eq!(ResponseFrame::decode(&bytes, r.rmac.is_some()).unwrap(), r.clone());
        // Trailing filler after the frame is ignored.
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0xFF; 7]);
        prop_assert_eq!(ResponseFrame::decode(&padded, r.rmac.is_some()).unwrap(), r);
    }

    #[test]
    fn any_single_bit_flip_is_a_crc_error(f in arb_command(), bit in 0usize..8, pos in any::<prop::sample::Index>()) {
        let mut bytes = f.encode();
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        prop_assert!(CommandFrame::decode(&bytes, 4096).is_err());
    }

    #[test]
    fn refused_commands_change_nothing(body in proptest::collection::vec(any::<u8>(), 1..120), a120 in any::<bool>()) {
        let mut c = chip(if a120 { Personality::A120 } else { Personality::A110 });
        let before = snapshot(&c);
        let p = c.process(&with_crc(&body));
        let rsp = ResponseFrame::decode(&p.response, false).unwrap();
        if rsp.status != Status::OK {
            prop_assert_eq!(snapshot(&c), before);
            prop_assert!(rsp.data.is_empty());
        }
    }

    #[test]
    fn fuzz_entry_points_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        inkan_se::fuzz::frame_decoder(&data);
        let mut c = inkan_se::fuzz::fuzz_chip(Personality::A120);
        inkan_se::fuzz::command_dispatcher(&mut c, &data);
    }
}
