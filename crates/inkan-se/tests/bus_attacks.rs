//! Attacks on the bus between host and chip. Each asserts the specific way
//! the attack fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use inkan_se::chip::InProcess;
use inkan_se::transport::{BusError, Transport};
use inkan_se::wire::codes::command_ac;
use inkan_se::wire::crc::{crc16, crc16_parts};
use inkan_se::{
    AesKey, Chip, CommandCode, Curve, Driver, DriverError, HostKeys, Personality, Status,
};
use std::sync::{Arc, Mutex};

/// A man in the middle on the bus: records every command, and can alter the
/// next command or response (fixing up the CRC so only the MAC can tell).
#[derive(Default)]
struct Mitm {
    sent: Vec<Vec<u8>>,
    tamper_command_at: Option<usize>,
    tamper_response: bool,
    drop_response: bool,
}

struct Tap {
    inner: InProcess,
    mitm: Arc<Mutex<Mitm>>,
}

impl Transport for Tap {
    fn write(&mut self, bytes: &[u8]) -> Result<(), BusError> {
        let mut b = bytes.to_vec();
        let mut m = self.mitm.lock().unwrap();
        if let Some(at) = m.tamper_command_at.take() {
            b[at] ^= 0x01;
            let n = b.len();
            let crc = crc16(&b[..n - 2]);
            b[n - 2..].copy_from_slice(&crc.to_be_bytes());
        }
        m.sent.push(b.clone());
        drop(m);
        self.inner.write(&b)
    }

    fn read(&mut self, len: usize) -> Result<Vec<u8>, BusError> {
        let mut b = self.inner.read(len)?;
        let mut m = self.mitm.lock().unwrap();
        if m.drop_response {
            m.drop_response = false;
            return Err(BusError::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "line noise",
            )));
        }
        if len > 5 && m.tamper_response {
            m.tamper_response = false;
            b[3] ^= 0x80;
            let total = 3 + usize::from(u16::from_be_bytes([b[1], b[2]]));
            let crc = crc16_parts(&[&b[..1], &b[3..total - 2]]);
            b[total - 2..total].copy_from_slice(&crc.to_be_bytes());
        }
        Ok(b)
    }
}

fn keys() -> HostKeys {
    HostKeys {
        mac: AesKey::Aes256([0x31; 32]),
        cipher: AesKey::Aes256([0x32; 32]),
    }
}

fn setup() -> (Driver<Tap>, Arc<Mutex<Mitm>>) {
    let mitm = Arc::new(Mutex::new(Mitm::default()));
    let tap = Tap {
        inner: InProcess::new(Chip::new(Personality::A120, [3; 9])),
        mitm: mitm.clone(),
    };
    let mut d = Driver::new(tap).unwrap();
    d.pair_host_keys(&keys()).unwrap();
    d.update_zone(4, 0, b"balance=100").unwrap();
    d.set_command_ac(CommandCode::UPDATE, None, command_ac::HOST)
        .unwrap();
    d.open_session(keys()).unwrap();
    (d, mitm)
}

#[test]
fn tampered_command_is_refused_with_invalid_cmac() {
    let (mut d, mitm) = setup();
    // Flip a bit of the data of a MAC'd Update (byte 5 is the first data byte).
    mitm.lock().unwrap().tamper_command_at = Some(5);
    let err = d.update_zone(4, 0, b"balance=999").unwrap_err();
    assert_eq!(err.status(), Some(Status::INVALID_CMAC));
    assert_eq!(d.read_zone(4, 0, 11).unwrap(), b"balance=100");
}

#[test]
fn command_without_mac_is_refused_where_the_ac_needs_it() {
    let (mut d, _) = setup();
    d.close_session();
    let err = d.update_zone(4, 0, b"balance=999").unwrap_err();
    assert_eq!(err.status(), Some(Status::ACCESS_CONDITION_NOT_SATISFIED));
    assert_eq!(d.read_zone(4, 0, 11).unwrap(), b"balance=100");
}

#[test]
fn replayed_frame_is_refused() {
    let (mut d, mitm) = setup();
    d.update_zone(4, 0, b"balance=050").unwrap();
    let recorded = mitm.lock().unwrap().sent.last().unwrap().clone();
    d.update_zone(4, 0, b"balance=100").unwrap();
    // Replay the earlier, validly MAC'd frame straight onto the bus.
    let rsp = d.raw_exchange(&recorded).unwrap();
    assert_eq!(rsp.status, Status::INVALID_CMAC);
    assert_eq!(d.read_zone(4, 0, 11).unwrap(), b"balance=100");
}

#[test]
fn tampered_response_is_caught_by_the_driver() {
    let (mut d, mitm) = setup();
    mitm.lock().unwrap().tamper_response = true;
    let err = d.read_zone(4, 0, 11).unwrap_err();
    assert!(
        matches!(err, DriverError::ResponseMac(CommandCode::READ)),
        "{err}"
    );
    // The driver resynchronises and carries on.
    assert_eq!(d.read_zone(4, 0, 11).unwrap(), b"balance=100");
}

#[test]
fn tampered_response_without_crc_fixup_is_a_bad_crc() {
    let mut t = InProcess::new(Chip::new(Personality::A110, [0; 9]));
    let frame = inkan_se::wire::CommandFrame {
        header: inkan_se::wire::CommandHeader::new(CommandCode::ECHO),
        payload: b"abc".to_vec(),
        cmac: None,
    }
    .encode();
    t.write(&frame).unwrap();
    let mut rsp = t.read(8).unwrap();
    rsp[4] ^= 1;
    assert!(matches!(
        inkan_se::wire::ResponseFrame::decode(&rsp, false),
        Err(inkan_se::wire::WireError::BadCrc { .. })
    ));
}

#[test]
fn no_command_returns_a_private_key() {
    // Sweep every command code and query tag: no response contains the
    // scalar of the key in slot 0.
    let scalar = [0x5Cu8; 32];
    let mut chip = Chip::new(Personality::A120, [0; 9]);
    chip.manufacture_key(0, Curve::P256, &scalar).unwrap();
    let mut t = InProcess::new(chip);
    for code in 0u8..0x20 {
        for arg in 0u8..=0xFF {
            let frame = inkan_se::wire::CommandFrame {
                header: inkan_se::wire::CommandHeader {
                    flags: 0,
                    code: CommandCode(code),
                    extended: (code == 0x1F).then_some(inkan_se::wire::ExtendedCode(arg)),
                },
                payload: vec![arg, 0, 0, 0, 0, 0x20],
                cmac: None,
            }
            .encode();
            t.write(&frame).unwrap();
            let rsp = t.read(760).unwrap();
            assert!(
                !rsp.windows(8).any(|w| w == &scalar[..8]),
                "command 0x{code:02X} arg 0x{arg:02X} leaked key material"
            );
        }
    }
}

#[test]
fn lost_response_is_followed_by_counter_resynchronisation() {
    let (mut d, mitm) = setup();
    // The chip executes the MAC'd update (its counter moves on) but the
    // response is lost on the way back.
    mitm.lock().unwrap().drop_response = true;
    assert!(matches!(
        d.update_zone(4, 0, b"balance=070"),
        Err(DriverError::Bus(_))
    ));
    // The driver re-queries the counter before the next protected command.
    assert_eq!(d.read_zone(4, 0, 11).unwrap(), b"balance=070");
    d.update_zone(4, 0, b"balance=080").unwrap();
    assert_eq!(d.read_zone(4, 0, 11).unwrap(), b"balance=080");
}
