//! The driver against the emulated chip, both personalities: every command
//! family end to end, access conditions, secure channel, life cycle.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use inkan_se::chip::{BusyModel, InProcess};
use inkan_se::driver::key_mode;
use inkan_se::wire::codes::{command_ac, life_cycle, zone_ac};
use inkan_se::{
    AesKey, Chip, CommandCode, Curve, Driver, DriverConfig, DriverError, HostKeys, Personality,
    Status,
};
use sha2::Digest;
use std::time::Duration;

const BOTH: [Personality; 2] = [Personality::A110, Personality::A120];

fn driver(p: Personality) -> Driver<InProcess> {
    Driver::new(InProcess::new(Chip::new(p, [1, 2, 3, 4, 5, 6, 7, 8, 9]))).unwrap()
}

fn host_keys(p: Personality) -> HostKeys {
    let n = if p == Personality::A110 { 16 } else { 32 };
    HostKeys {
        mac: AesKey::from_slice(&vec![0x11; n]).unwrap(),
        cipher: AesKey::from_slice(&vec![0x22; n]).unwrap(),
    }
}

fn status(e: DriverError) -> Status {
    e.status()
        .unwrap_or_else(|| panic!("expected a chip status, got {e}"))
}

#[test]
fn identifies_personality_and_serial() {
    for p in BOTH {
        let mut d = driver(p);
        assert_eq!(d.personality(), p);
        assert_eq!(d.serial(), Some(&[1, 2, 3, 4, 5, 6, 7, 8, 9][..]));
        let pd = d.product_data().unwrap();
        assert_eq!(pd.mask_id, p.mask_id());
        assert_eq!(d.life_cycle().unwrap(), life_cycle::BORN);
    }
}

#[test]
fn echo_random_and_limits() {
    for p in BOTH {
        let mut d = driver(p);
        assert_eq!(d.echo(b"inkan").unwrap(), b"inkan");
        let a = d.random(255).unwrap();
        let b = d.random(255).unwrap();
        assert_eq!(a.len(), 255);
        assert_ne!(a, b);
        assert_eq!(status(d.random(0).unwrap_err()), Status::VALUE_OUT_OF_RANGE);
        // An echo as large as the frame allows, and one byte more.
        let max = p.max_frame() - 1 - 2 - 4;
        assert_eq!(d.echo(&vec![0x5A; max]).unwrap().len(), max);
        assert!(matches!(
            d.echo(&vec![0x5A; p.max_frame()]),
            Err(DriverError::FrameTooLong { .. })
        ));
    }
}

#[test]
fn sign_verify_ecdh_on_both_curves() {
    for p in BOTH {
        let mut d = driver(p);
        for curve in [Curve::P256, Curve::P384] {
            let public = d
                .generate_key(
                    1,
                    curve,
                    0,
                    key_mode::SIGN_DIGEST | key_mode::KEY_ESTABLISHMENT | key_mode::CHANGE_RIGHT,
                )
                .unwrap();
            assert_eq!(public.len(), 1 + 2 * curve.coordinate_len());
            let digest = sha2::Sha384::digest(b"payload");
            let digest = &digest[..if curve == Curve::P256 { 32 } else { 48 }];
            let sig = d.sign(1, digest).unwrap();
            assert!(d.verify(curve, &public, digest, &sig).unwrap());
            let mut bad = sig.clone();
            bad[5] ^= 1;
            assert!(!d.verify(curve, &public, digest, &bad).unwrap());
            // ECDH between the slot key and an ephemeral key, both in the chip:
            // the two secrets agree.
            let eph = d.generate_ephemeral_key(curve).unwrap();
            let s1 = d.establish_key(0xFF, curve, &public).unwrap();
            let s2 = d.establish_key(1, curve, &eph).unwrap();
            assert_eq!(*s1, *s2);
            // The ephemeral slot is single use.
            assert_eq!(
                status(d.establish_key(0xFF, curve, &public).unwrap_err()),
                Status::KEY_NOT_FOUND
            );
        }
    }
}

#[test]
fn ephemeral_key_cannot_sign_and_reset_erases_it() {
    let mut d = driver(Personality::A120);
    let _ = d.generate_ephemeral_key(Curve::P256).unwrap();
    assert_eq!(
        status(d.sign_with_curve(0xFF, Curve::P256, &[0; 32]).unwrap_err()),
        Status::WRONG_KEY_USAGE
    );
    d.reset().unwrap();
    let peer = d.generate_key(2, Curve::P256, 0, 0).unwrap();
    assert_eq!(
        status(d.establish_key(0xFF, Curve::P256, &peer).unwrap_err()),
        Status::KEY_NOT_FOUND
    );
    // Generate ECDHE also fills the ephemeral slot.
    let e = d.generate_ecdhe(Curve::P256).unwrap();
    let s1 = d.establish_key(0xFF, Curve::P256, &peer).unwrap();
    let s2 = d.establish_key(2, Curve::P256, &e).unwrap();
    assert_eq!(*s1, *s2);
}

#[test]
fn key_usage_limits_and_modes() {
    let mut d = driver(Personality::A120);
    d.generate_key(1, Curve::P256, 2, key_mode::SIGN_DIGEST)
        .unwrap();
    d.sign(1, &[1; 32]).unwrap();
    d.sign(1, &[2; 32]).unwrap();
    assert_eq!(
        status(d.sign(1, &[3; 32]).unwrap_err()),
        Status::KEY_BLOCKED
    );
    // Signing-only key: no ECDH.
    let peer = d.generate_key(2, Curve::P256, 0, 0).unwrap();
    assert_eq!(
        status(d.establish_key(1, Curve::P256, &peer).unwrap_err()),
        Status::WRONG_KEY_USAGE
    );
    // ECDH-only key: no signing.
    d.generate_key(3, Curve::P256, 0, key_mode::KEY_ESTABLISHMENT)
        .unwrap();
    assert_eq!(
        status(d.sign(3, &[1; 32]).unwrap_err()),
        Status::WRONG_KEY_USAGE
    );
    // Mode without change right: cannot be changed by regeneration.
    assert_eq!(
        status(
            d.generate_key(3, Curve::P256, 0, key_mode::SIGN_DIGEST)
                .unwrap_err()
        ),
        Status::WRONG_MODE_OF_OPERATION
    );
    // A slot fixed for good: Generate Key is never allowed again.
    d.generate_key(
        4,
        Curve::P256,
        0,
        key_mode::SIGN_DIGEST | key_mode::GENERATE_NEVER,
    )
    .unwrap();
    assert_eq!(
        status(
            d.generate_key(
                4,
                Curve::P256,
                0,
                key_mode::SIGN_DIGEST | key_mode::GENERATE_NEVER
            )
            .unwrap_err()
        ),
        Status::COMMAND_NOT_AUTHORIZED
    );
    // Empty slot, unknown slot, wrong digest size.
    assert_eq!(
        status(d.sign_with_curve(0, Curve::P256, &[1; 32]).unwrap_err()),
        Status::KEY_NOT_FOUND
    );
    assert_eq!(
        status(d.generate_key(9, Curve::P256, 0, 0).unwrap_err()),
        Status::VALUE_OUT_OF_RANGE
    );
    assert_eq!(
        status(d.sign(2, &[1; 31]).unwrap_err()),
        Status::INCONSISTENT_COMMAND_DATA
    );
    // Unsupported curve.
    assert_eq!(
        status(d.generate_key(2, Curve::BrainpoolP256, 0, 0).unwrap_err()),
        Status::WRONG_KEY_TYPE
    );
}

#[test]
fn zones_read_update_chunked_and_bounded() {
    for p in BOTH {
        let mut d = driver(p);
        let zones = d.partition().unwrap();
        assert_eq!(zones.len(), 8);
        let z0 = zones[0].size as usize;
        let data: Vec<u8> = (0..z0).map(|i| (i * 7 % 251) as u8).collect();
        d.update_zone(0, 0, &data).unwrap();
        assert_eq!(d.read_zone(0, 0, z0).unwrap(), data);
        assert_eq!(d.read_zone(0, 100, 10).unwrap(), &data[100..110]);
        let mut p = vec![0x00, 0x00];
        p.extend_from_slice(&(z0 as u16 - 4).to_be_bytes());
        assert_eq!(
            status(d.update_zone(0, z0 as u16 - 4, &[0; 5]).unwrap_err()),
            Status::BOUNDARY_EXCEEDED
        );
        assert_eq!(
            status(d.read_zone(0, z0 as u16, 1).unwrap_err()),
            Status::BOUNDARY_EXCEEDED
        );
        assert_eq!(
            status(d.read_zone(42, 0, 1).unwrap_err()),
            Status::ENTRY_NOT_FOUND
        );
        assert_eq!(
            status(d.update_zone(5, 0, &[1]).unwrap_err()),
            Status::WRONG_ZONE_TYPE
        );
    }
}

#[test]
fn counters_only_go_down() {
    let mut d = driver(Personality::A110);
    let (c0, _) = d.read_counter(5, 0, 0).unwrap();
    assert_eq!(c0, 0xFFFF_FFFF);
    assert_eq!(d.decrement(5, 10, 0, b"v10").unwrap(), 0xFFFF_FFF5);
    let (c, data) = d.read_counter(5, 0, 3).unwrap();
    assert_eq!((c, data.as_slice()), (0xFFFF_FFF5, &b"v10"[..]));
    assert_eq!(
        status(d.decrement(5, 0xFFFF_FFF6, 0, &[]).unwrap_err()),
        Status::COUNTER_LIMIT_EXCEEDED
    );
    assert_eq!(d.read_counter(5, 0, 0).unwrap().0, 0xFFFF_FFF5);
    assert_eq!(d.decrement(5, 0xFFFF_FFF5, 0, &[]).unwrap(), 0);
    assert_eq!(
        status(d.decrement(5, 1, 0, &[]).unwrap_err()),
        Status::COUNTER_LIMIT_EXCEEDED
    );
    assert_eq!(
        status(d.decrement(1, 1, 0, &[]).unwrap_err()),
        Status::WRONG_ZONE_TYPE
    );
}

#[test]
fn zone_access_conditions_only_tighten() {
    let p = Personality::A120;
    let mut d = driver(p);
    d.pair_host_keys(&host_keys(p)).unwrap();
    d.set_zone_access(1, Some((zone_ac::HOST, true)), Some((zone_ac::HOST, false)))
        .unwrap();
    // Without the host MAC the zone is closed.
    assert_eq!(
        status(d.read_zone(1, 0, 4).unwrap_err()),
        Status::ACCESS_CONDITION_NOT_SATISFIED
    );
    assert_eq!(
        status(d.update_zone(1, 0, &[1]).unwrap_err()),
        Status::ACCESS_CONDITION_NOT_SATISFIED
    );
    d.open_session(host_keys(p)).unwrap();
    d.update_zone(1, 0, b"anchor").unwrap();
    assert_eq!(d.read_zone(1, 0, 6).unwrap(), b"anchor");
    // Loosening is refused; the update AC lost its change right.
    assert_eq!(
        status(
            d.set_zone_access(1, Some((zone_ac::ALWAYS, true)), None)
                .unwrap_err()
        ),
        Status::ACCESS_CONDITION_NOT_SATISFIED
    );
    assert_eq!(
        status(
            d.set_zone_access(1, None, Some((zone_ac::NEVER, false)))
                .unwrap_err()
        ),
        Status::ACCESS_CONDITION_NOT_SATISFIED
    );
    d.set_zone_access(1, Some((zone_ac::NEVER, false)), None)
        .unwrap();
    assert_eq!(
        status(d.read_zone(1, 0, 1).unwrap_err()),
        Status::ACCESS_CONDITION_NOT_SATISFIED
    );
    let z = &d.partition().unwrap()[1];
    assert_eq!(
        (
            z.read_ac,
            z.read_ac_change_right,
            z.update_ac,
            z.update_ac_change_right
        ),
        (7, false, 1, false)
    );
    // Counter zones tighten through Decrement.
    d.set_zone_access(5, None, Some((zone_ac::HOST, false)))
        .unwrap();
    d.close_session();
    assert_eq!(
        status(d.decrement(5, 1, 0, &[]).unwrap_err()),
        Status::ACCESS_CONDITION_NOT_SATISFIED
    );
}

#[test]
fn secure_channel_with_encryption_both_personalities() {
    for p in BOTH {
        let mut d = driver(p);
        let k = host_keys(p);
        d.pair_host_keys(&k).unwrap();
        d.set_command_ac(CommandCode::GENERATE_RANDOM, None, command_ac::HOST)
            .unwrap();
        d.set_command_encryption(CommandCode::GENERATE_RANDOM, None, 0b11)
            .unwrap();
        d.set_command_ac(CommandCode::WRAP_LOCAL_ENVELOPE, None, command_ac::HOST)
            .unwrap();
        d.set_command_encryption(CommandCode::WRAP_LOCAL_ENVELOPE, None, 0b11)
            .unwrap();
        assert_eq!(
            status(d.random(8).unwrap_err()),
            Status::ACCESS_CONDITION_NOT_SATISFIED
        );
        d.open_session(k.clone()).unwrap();
        let before = d.host_key_slot().unwrap().counter;
        for _ in 0..3 {
            assert_eq!(d.random(32).unwrap().len(), 32);
        }
        assert_eq!(d.host_key_slot().unwrap().counter, before + 3);
        d.generate_envelope_key(0, p == Personality::A120).unwrap();
        let secret = [0x42u8; 32];
        let env = d.wrap(0, &secret).unwrap();
        assert_eq!(env.len(), 40);
        assert_eq!(*d.unwrap(0, &env).unwrap(), secret);
        // Loosening a command's AC or dropping encryption is refused.
        assert_eq!(
            status(
                d.set_command_ac(CommandCode::GENERATE_RANDOM, None, command_ac::FREE)
                    .unwrap_err()
            ),
            Status::ACCESS_CONDITION_NOT_SATISFIED
        );
        assert_eq!(
            status(
                d.set_command_encryption(CommandCode::GENERATE_RANDOM, None, 0)
                    .unwrap_err()
            ),
            Status::ACCESS_CONDITION_NOT_SATISFIED
        );
    }
}

#[test]
fn wrong_host_keys_are_refused_and_driver_resyncs() {
    let p = Personality::A120;
    let mut d = driver(p);
    d.pair_host_keys(&host_keys(p)).unwrap();
    let wrong = HostKeys {
        mac: AesKey::Aes256([9; 32]),
        cipher: AesKey::Aes256([9; 32]),
    };
    d.open_session(wrong).unwrap();
    assert_eq!(status(d.echo(b"x").unwrap_err()), Status::INVALID_CMAC);
    d.open_session(host_keys(p)).unwrap();
    assert_eq!(d.echo(b"a").unwrap(), b"a");
}

/// Two hosts on one chip (a bus both can drive): when the other host's
/// MAC'd commands move the chip's counter, this driver's cached counter is
/// stale, its next protected command is refused by the chip, and the one
/// after it goes through because the driver re-queried the counter.
#[test]
fn a_stale_counter_is_refused_then_the_driver_resynchronises() {
    use std::sync::{Arc, Mutex};
    struct SharedBus(Arc<Mutex<InProcess>>);
    impl inkan_se::transport::Transport for SharedBus {
        fn write(&mut self, b: &[u8]) -> Result<(), inkan_se::transport::BusError> {
            self.0.lock().unwrap().write(b)
        }
        fn read(&mut self, n: usize) -> Result<Vec<u8>, inkan_se::transport::BusError> {
            self.0.lock().unwrap().read(n)
        }
    }
    for p in BOTH {
        let chip = Arc::new(Mutex::new(InProcess::new(Chip::new(p, [7; 9]))));
        let mut a = Driver::new(SharedBus(chip.clone())).unwrap();
        a.pair_host_keys(&host_keys(p)).unwrap();
        a.open_session(host_keys(p)).unwrap();
        assert_eq!(a.echo(b"1").unwrap(), b"1");
        // The other host opens its session now, and moves the chip's
        // counter on.
        let mut b = Driver::new(SharedBus(chip.clone())).unwrap();
        b.open_session(host_keys(p)).unwrap();
        assert_eq!(b.echo(b"2").unwrap(), b"2");
        assert_eq!(b.echo(b"3").unwrap(), b"3");
        // This driver's counter is stale: refused.
        let e = a.echo(b"4").unwrap_err();
        assert!(
            matches!(status(e), Status::INVALID_CMAC),
            "{p:?}: a stale counter must be refused"
        );
        // It re-queries the counter and goes on.
        assert_eq!(a.echo(b"5").unwrap(), b"5", "{p:?}");
    }
}

#[test]
fn password_lock_and_unlock() {
    let mut d = driver(Personality::A110);
    let pw = *b"0123456789abcdef";
    d.set_password(&pw).unwrap();
    // Locking needs the verified password.
    assert_eq!(
        status(d.lock().unwrap_err()),
        Status::ACCESS_CONDITION_NOT_SATISFIED
    );
    assert_eq!(d.verify_password(b"wrong-password!!").unwrap(), (false, 2));
    assert_eq!(d.verify_password(&pw).unwrap(), (true, 3));
    d.set_life_cycle(life_cycle::OPERATIONAL).unwrap();
    d.lock().unwrap();
    assert_eq!(d.life_cycle().unwrap(), life_cycle::OPERATIONAL_LOCKED);
    // Locked: configuration is frozen.
    assert_eq!(
        status(d.generate_key(1, Curve::P256, 0, 0).unwrap_err()),
        Status::INVALID_LIFE_CYCLE_STATE
    );
    assert_eq!(
        status(
            d.set_command_ac(CommandCode::ECHO, None, command_ac::HOST)
                .unwrap_err()
        ),
        Status::INVALID_LIFE_CYCLE_STATE
    );
    assert_eq!(
        status(d.pair_host_keys(&host_keys(Personality::A110)).unwrap_err()),
        Status::INVALID_LIFE_CYCLE_STATE
    );
    // Data zones still follow their own access conditions.
    d.update_zone(7, 0, b"ok").unwrap();
    // A reset forgets the password verification; unlocking needs it again.
    d.reset().unwrap();
    assert_eq!(
        status(d.unlock().unwrap_err()),
        Status::ACCESS_CONDITION_NOT_SATISFIED
    );
    d.verify_password(&pw).unwrap();
    d.unlock().unwrap();
    assert_eq!(d.life_cycle().unwrap(), life_cycle::OPERATIONAL);
}

#[test]
fn password_blocks_after_three_failures() {
    let mut d = driver(Personality::A120);
    d.set_password(&[7; 16]).unwrap();
    for left in [2, 1, 0] {
        assert_eq!(d.verify_password(&[0; 16]).unwrap(), (false, left));
    }
    assert_eq!(
        status(d.verify_password(&[7; 16]).unwrap_err()),
        Status::PASSWORD_BLOCKED
    );
}

#[test]
fn terminated_chip_answers_only_echo_and_query() {
    let mut d = driver(Personality::A120);
    d.pair_host_keys(&host_keys(Personality::A120)).unwrap();
    d.open_session(host_keys(Personality::A120)).unwrap();
    d.set_life_cycle(life_cycle::TERMINATED).unwrap();
    d.close_session();
    assert_eq!(d.echo(b"still here").unwrap(), b"still here");
    assert_eq!(d.life_cycle().unwrap(), life_cycle::TERMINATED);
    assert_eq!(
        status(d.random(4).unwrap_err()),
        Status::INVALID_LIFE_CYCLE_STATE
    );
}

#[test]
fn busy_chip_is_polled_and_slow_chip_times_out() {
    let chip = Chip::new(Personality::A110, [0; 9]);
    let t = InProcess::with_busy(chip, BusyModel::Nominal);
    let mut d = Driver::new(t).unwrap();
    let start = std::time::Instant::now();
    d.generate_key(1, Curve::P256, 0, 0).unwrap();
    // The A110 takes 160 ms to generate a key: the driver waited for it.
    assert!(start.elapsed() >= Duration::from_millis(150));

    let chip = Chip::new(Personality::A120, [0; 9]);
    let t = InProcess::with_busy(chip, BusyModel::Fixed(Duration::from_millis(300)));
    let mut d = Driver::with_config(
        t,
        DriverConfig {
            timeout: Duration::from_millis(50),
            ..DriverConfig::default()
        },
    );
    // Product data query already times out.
    assert!(matches!(d, Err(DriverError::Timeout(_))));
    let chip = Chip::new(Personality::A120, [0; 9]);
    let t = InProcess::with_busy(chip, BusyModel::Fixed(Duration::from_millis(30)));
    d = Driver::with_config(
        t,
        DriverConfig {
            timeout: Duration::from_millis(500),
            ..DriverConfig::default()
        },
    );
    assert!(d.unwrap().echo(b"late").is_ok());
}

#[test]
fn chip_serves_rereads_from_the_first_byte() {
    let mut bus = inkan_se::ChipBus::new(Chip::new(Personality::A120, [0; 9]), BusyModel::Instant);
    let frame = inkan_se::wire::CommandFrame {
        header: inkan_se::wire::CommandHeader::new(CommandCode::ECHO),
        payload: b"0123456789".to_vec(),
        cmac: None,
    }
    .encode();
    bus.write(0x20, &frame).unwrap();
    let head = bus.read(0x20, 5).unwrap();
    assert_eq!(&head[..3], &[0x00, 0x00, 12]);
    let full = bus.read(0x20, 15).unwrap();
    assert_eq!(&full[..5], &head[..]);
    assert_eq!(&full[3..13], b"0123456789");
    let padded = bus.read(0x20, 20).unwrap();
    assert_eq!(&padded[..15], &full[..]);
    assert_eq!(&padded[15..], &[0xFF; 5]);
    // Another address is not acknowledged.
    assert!(bus.read(0x21, 5).is_err());
}

/// X25519 and Ed25519 are A120 features: the A110 refuses them; on the A120
/// they reproduce RFC 8032 §7.1 test 1 and RFC 7748 §6.1 through the
/// driver, refuse low-order points, and keep each key to its one use.
#[test]
fn x25519_and_ed25519_on_the_a120_only() {
    let mut old = driver(Personality::A110);
    assert_eq!(
        status(
            old.generate_key(1, Curve::Ed25519, 0, key_mode::SIGN_DIGEST)
                .unwrap_err()
        ),
        Status::WRONG_KEY_TYPE
    );
    assert_eq!(
        status(old.generate_ephemeral_key(Curve::X25519).unwrap_err()),
        Status::WRONG_KEY_TYPE
    );

    let h = |s: &str| hex::decode(s).unwrap();
    let mut chip = Chip::new(Personality::A120, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    chip.manufacture_key(
        1,
        Curve::Ed25519,
        &h("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"),
    )
    .unwrap();
    chip.manufacture_key(
        2,
        Curve::X25519,
        &h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"),
    )
    .unwrap();
    let mut d = Driver::new(InProcess::new(chip)).unwrap();
    assert_eq!(d.slot_curve(1).unwrap(), Curve::Ed25519);

    // RFC 8032 §7.1 test 1: the empty message.
    let sig = d.sign(1, b"").unwrap();
    assert_eq!(
        sig,
        h("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
    );
    let ed_pub = h("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
    assert!(d.verify(Curve::Ed25519, &ed_pub, b"", &sig).unwrap());
    let mut bad = sig.clone();
    bad[40] ^= 1;
    assert!(!d.verify(Curve::Ed25519, &ed_pub, b"", &bad).unwrap());
    // A message longer than any digest is signed whole.
    let msg = vec![0x5A; 300];
    let sig = d.sign(1, &msg).unwrap();
    assert!(d.verify(Curve::Ed25519, &ed_pub, &msg, &sig).unwrap());
    assert!(!d.verify(Curve::Ed25519, &ed_pub, &msg[1..], &sig).unwrap());

    // RFC 7748 §6.1: Alice's key in slot 2, Bob's public key.
    let bob = h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
    let shared = d.establish_key(2, Curve::X25519, &bob).unwrap();
    assert_eq!(
        *shared,
        h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
    );
    // A low-order point would give the all-zero secret: refused.
    assert_eq!(
        status(d.establish_key(2, Curve::X25519, &[0u8; 32]).unwrap_err()),
        Status::INVALID_PUBLIC_KEY
    );
    // Ephemeral X25519 in slot 0xFF agrees with the static key, once.
    let alice_pub = h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
    let eph = d.generate_ephemeral_key(Curve::X25519).unwrap();
    assert_eq!(eph.len(), 32);
    let s1 = d.establish_key(0xFF, Curve::X25519, &alice_pub).unwrap();
    let s2 = d.establish_key(2, Curve::X25519, &eph).unwrap();
    assert_eq!(*s1, *s2);
    assert_eq!(
        status(
            d.establish_key(0xFF, Curve::X25519, &alice_pub)
                .unwrap_err()
        ),
        Status::KEY_NOT_FOUND
    );
    // Each key keeps to its use.
    assert_eq!(
        status(d.sign(2, &[0u8; 32]).unwrap_err()),
        Status::WRONG_KEY_USAGE
    );
    assert_eq!(
        status(d.establish_key(1, Curve::Ed25519, &ed_pub).unwrap_err()),
        Status::WRONG_KEY_USAGE
    );
    // The wrong length of key is caught by the driver before the bus.
    assert!(matches!(
        d.establish_key(2, Curve::X25519, &[4u8; 65]),
        Err(DriverError::InvalidArgument(_))
    ));
}

/// A response fills the whole frame: the chip keeps room for an R-MAC only
/// when the response carries one. Read and Echo at the limit pass, one
/// byte more is refused, for both personalities, with and without a
/// session.
#[test]
fn responses_fill_the_frame_and_an_r_mac_is_reserved_only_when_sent() {
    use inkan_se::wire::{CommandFrame, CommandHeader};
    for p in BOTH {
        let max = p.max_frame();
        let mut d = driver(p);
        // Plain: header, data, CRC.
        let plain = max - 3;
        let read = |d: &mut Driver<InProcess>, len: usize| {
            let mut payload = vec![0x00, 0x00, 0x00, 0x00];
            payload.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
            let frame = CommandFrame {
                header: CommandHeader {
                    flags: 0,
                    code: CommandCode::READ,
                    extended: None,
                },
                payload,
                cmac: None,
            }
            .encode();
            d.raw_exchange(&frame).unwrap()
        };
        let at = read(&mut d, plain);
        assert_eq!((at.status, at.data.len()), (Status::OK, plain), "{p:?}");
        assert_eq!(
            read(&mut d, plain + 1).status,
            Status::BUFFER_LENGTH_EXCEEDED,
            "{p:?}"
        );
        assert_eq!(d.echo(&vec![0x5a; plain]).unwrap().len(), plain, "{p:?}");
        // In a session the response carries an R-MAC: 4 bytes less.
        d.pair_host_keys(&host_keys(p)).unwrap();
        d.open_session(host_keys(p)).unwrap();
        let macd = max - 7;
        assert_eq!(d.echo(&vec![0x5a; macd]).unwrap().len(), macd, "{p:?}");
        assert!(d.echo(&vec![0x5a; macd + 1]).is_err(), "{p:?}");
    }
}
