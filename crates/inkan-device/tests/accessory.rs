//! A host checks its accessory offline: a genuine cartridge passes and is
//! used until it runs out; a clone carrying a genuine cartridge's
//! certificate, a cartridge from an unknown root and a revoked one are each
//! refused with their reason; the usage counter only goes down, only under
//! the host keys of the family's pairing key, and survives a restart of
//! the chip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use inkan_device::accessory::{use_units, verify, Refused, Trust, USAGE_ZONE};
use inkan_device::usage::UseRefused;
use inkan_device::SharedDriver;
use inkan_factory::personalize::BatchConfig;
use inkan_factory::{Factory, InitOptions, KeyStore, Personalizer, Secrets};
use inkan_pki::{CertPolicy, KeyCurve};
use inkan_se::{Chip, Driver, InProcess, Personality};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

fn factory(dir: &Path, org: &str) -> Factory {
    Factory::init(
        dir,
        InitOptions {
            organization: org.into(),
            curve: KeyCurve::P256,
            policy: CertPolicy::default(),
            keys: KeyStore::File,
            anchors: None,
        },
        Secrets {
            passphrase: Some(zeroize::Zeroizing::new(b"pw".to_vec())),
            pin: None,
        },
    )
    .unwrap()
}

/// `n` accessories of `family` with `limit` units each: their chip state
/// files (the factory's session is closed; a host opens its own).
fn cartridges(f: &Factory, family: &str, n: usize, limit: Option<u32>) -> Vec<PathBuf> {
    f.create_family(family, KeyCurve::P256, false).unwrap();
    f.configure_family(
        family,
        inkan_factory::FamilyProfile {
            accessory: true,
            usage_limit: limit,
        },
    )
    .unwrap();
    let cfg = BatchConfig {
        family: family.into(),
        count: n,
        personality: Personality::A120,
    };
    let mut p = Personalizer::open(f, family, &format!("{family}-b"), &cfg).unwrap();
    let paths = inkan_se::chip::blank_chips(&p.dir().join("chips"), n, Personality::A120).unwrap();
    for path in &paths {
        let mut d = Driver::new(InProcess::new(Chip::open(path).unwrap())).unwrap();
        p.personalize(&mut d, Some(path)).unwrap();
    }
    paths
}

/// The host's view of a chip: a fresh driver, no session.
fn plug(path: &Path) -> SharedDriver<InProcess> {
    Arc::new(Mutex::new(
        Driver::new(InProcess::new(Chip::open(path).unwrap())).unwrap(),
    ))
}

fn counter<T: inkan_se::transport::Transport>(d: &SharedDriver<T>) -> u32 {
    d.lock().unwrap().read_counter(USAGE_ZONE, 0, 0).unwrap().0
}

#[test]
fn a_host_tells_genuine_from_clone_unknown_revoked_and_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let f = factory(&dir.path().join("maker"), "cartridge maker");
    let paths = cartridges(&f, "ink", 2, Some(5));
    let (_, family_cert) = f.family("ink").unwrap();
    let pairing = f.pairing_key("ink").unwrap();
    let trust = Trust::new(std::slice::from_ref(&family_cert.der), &[], &[]).unwrap();

    // Genuine, with its five units.
    let a = plug(&paths[0]);
    let g = verify(&a, &trust).unwrap();
    assert_eq!(g.remaining, Some(5));
    // Pinning the root instead, with the family certificate as the
    // intermediate: the same answer.
    let by_root = Trust::new(
        &[f.root().unwrap().der],
        std::slice::from_ref(&family_cert.der),
        &[],
    )
    .unwrap();
    assert_eq!(verify(&a, &by_root).unwrap().serial, g.serial);

    // Used until it runs out; asking for more than is left uses nothing.
    assert_eq!(use_units(&a, &pairing, 2).unwrap(), 3);
    assert!(matches!(
        use_units(&a, &pairing, 4),
        Err(Refused::Use(UseRefused::Exhausted {
            remaining: 3,
            asked: 4
        }))
    ));
    assert_eq!(counter(&a), 3);
    assert_eq!(use_units(&a, &pairing, 3).unwrap(), 0);
    assert_eq!(verify(&a, &trust).unwrap().remaining, Some(0));
    assert!(matches!(
        use_units(&a, &pairing, 1),
        Err(Refused::Use(UseRefused::Exhausted { remaining: 0, .. }))
    ));

    // The counter outside the host keys: a decrement without a session,
    // or under another pairing key's keys, is refused by the chip; an
    // update of the zone does not raise it; nothing moves it up across a
    // restart of the chip.
    let b = plug(&paths[1]);
    assert!(b.lock().unwrap().decrement(USAGE_ZONE, 1, 0, &[]).is_err());
    assert_eq!(counter(&b), 5);
    let wrong = [0x5au8; 32];
    assert!(matches!(
        use_units(&b, &wrong, 1),
        Err(Refused::Use(UseRefused::Chip(_)))
    ));
    assert_eq!(counter(&b), 5);
    let _ = b.lock().unwrap().update_zone(USAGE_ZONE, 0, &[0xff; 8]);
    assert_eq!(counter(&b), 5);
    assert_eq!(use_units(&b, &pairing, 1).unwrap(), 4);
    drop(b);
    let b = plug(&paths[1]);
    assert_eq!(counter(&b), 4, "the decrement survives a restart");
    assert_eq!(verify(&b, &trust).unwrap().remaining, Some(4));

    // A clone: a blank chip carrying a genuine cartridge's certificate
    // (copied from its zone 0) with a key of its own.
    let genuine_cert = a.lock().unwrap().read_zone(0, 0, 1536).unwrap();
    let blank = inkan_se::chip::blank_chips(&dir.path().join("clones"), 1, Personality::A120)
        .unwrap()
        .remove(0);
    let clone = plug(&blank);
    {
        let mut d = clone.lock().unwrap();
        d.update_zone(0, 0, &genuine_cert).unwrap();
        d.generate_key(0, inkan_se::Curve::P256, 0, 0).unwrap();
    }
    assert!(matches!(verify(&clone, &trust), Err(Refused::Clone)));

    // From another maker's root.
    let other = factory(&dir.path().join("other"), "someone else");
    let foreign = cartridges(&other, "ink", 1, Some(5));
    assert!(matches!(
        verify(&plug(&foreign[0]), &trust),
        Err(Refused::UnknownRoot(_))
    ));

    // Revoked by the family's CRL.
    let (crl, _) = f.revoke("ink", &g.serial).unwrap();
    let with_crl = Trust::new(std::slice::from_ref(&family_cert.der), &[], &[crl.der]).unwrap();
    assert!(matches!(verify(&a, &with_crl), Err(Refused::Revoked)));
    assert!(verify(&plug(&paths[1]), &with_crl).is_ok());
}

#[test]
fn an_accessory_without_a_limit_is_not_metered_and_settings_precede_chips() {
    let dir = tempfile::tempdir().unwrap();
    let f = factory(&dir.path().join("maker"), "pen maker");
    let paths = cartridges(&f, "pen", 1, None);
    let pairing = f.pairing_key("pen").unwrap();
    let d = plug(&paths[0]);
    assert!(matches!(
        use_units(&d, &pairing, 1),
        Err(Refused::Use(UseRefused::Unmetered))
    ));
    // Settings apply before any chip: a family with chips is refused.
    assert!(f
        .configure_family(
            "pen",
            inkan_factory::FamilyProfile {
                accessory: true,
                usage_limit: Some(3),
            }
        )
        .is_err());
}

/// A bus tap between host and chip: records the chip's answers to Read
/// commands while `recording`, and hands the recorded ones back instead of
/// the chip's fresh answers while `replaying` (the chip still gets and
/// runs every command).
#[derive(Default)]
struct Tap {
    last_code: u8,
    recording: bool,
    recorded: Vec<Vec<u8>>,
    replaying: std::collections::VecDeque<Vec<u8>>,
}

struct Tapped {
    inner: InProcess,
    tap: Arc<Mutex<Tap>>,
}

const READ: u8 = 0x05;

impl inkan_se::transport::Transport for Tapped {
    fn write(&mut self, bytes: &[u8]) -> Result<(), inkan_se::transport::BusError> {
        let mut t = self.tap.lock().unwrap();
        t.last_code = bytes.first().map_or(0, |b| b & 0x1f);
        if t.recording && t.last_code == READ {
            t.recorded.clear();
        }
        drop(t);
        self.inner.write(bytes)
    }

    fn read(&mut self, len: usize) -> Result<Vec<u8>, inkan_se::transport::BusError> {
        let got = self.inner.read(len)?;
        let mut t = self.tap.lock().unwrap();
        if t.last_code != READ {
            return Ok(got);
        }
        if t.recording {
            t.recorded.push(got.clone());
        }
        match t.replaying.pop_front() {
            Some(old) if old.len() == len => Ok(old),
            _ => Ok(got),
        }
    }
}

#[test]
fn an_old_counter_read_replayed_on_the_bus_does_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    let f = factory(&dir.path().join("maker"), "cartridge maker");
    let paths = cartridges(&f, "ink", 1, Some(5));
    let pairing = f.pairing_key("ink").unwrap();
    let tap = Arc::new(Mutex::new(Tap::default()));
    let d: SharedDriver<Tapped> = Arc::new(Mutex::new(
        Driver::new(Tapped {
            inner: InProcess::new(Chip::open(&paths[0]).unwrap()),
            tap: tap.clone(),
        })
        .unwrap(),
    ));
    // The tap records the MAC'd read that showed 5 units.
    tap.lock().unwrap().recording = true;
    assert_eq!(use_units(&d, &pairing, 5).unwrap(), 0);
    let mut t = tap.lock().unwrap();
    t.recording = false;
    assert!(!t.recorded.is_empty(), "the read was seen on the bus");
    t.replaying = t.recorded.drain(..).collect();
    drop(t);
    // Replayed to claim 5 units again: its R-MAC was made for an older
    // counter of the session, so the host refuses it and uses nothing.
    match use_units(&d, &pairing, 1) {
        Err(Refused::Use(UseRefused::Chip(e))) => assert!(e.to_string().contains("R-MAC"), "{e}"),
        other => panic!("a replayed counter read was taken: {other:?}"),
    }
    tap.lock().unwrap().replaying.clear();
    assert_eq!(counter(&d), 0);
}
