//! The boot check on a personalized chip: an image signed with the OEM
//! firmware key (pinned in zone 3 at the factory) for the device's family
//! boots; a tampered image, a manifest signed by another key, a manifest for
//! another family, a truncated image, and a downgrade below the security
//! version the chip's one-way counter records (even correctly signed, even
//! a replayed older manifest) are each refused with their reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use inkan_device::firmware::{boot_check, confirm, security_version, BootRefused};
use inkan_device::SharedDriver;
use inkan_factory::personalize::BatchConfig;
use inkan_factory::{Factory, InitOptions, KeyStore, Personalizer, Secrets};
use inkan_pki::firmware::{sign, FirmwareManifest};
use inkan_pki::{CertPolicy, KeyCurve, SoftwareKey};
use inkan_se::{Chip, Driver, InProcess, Personality};
use std::sync::{Arc, Mutex};

/// A factory with a "meter" family and `n` personalized A120 chips, each
/// with its host session open; and the OEM firmware key the chips pin.
fn meters(n: usize) -> (tempfile::TempDir, SoftwareKey, Vec<SharedDriver<InProcess>>) {
    let dir = tempfile::tempdir().unwrap();
    let f = Factory::init(
        &dir.path().join("factory"),
        InitOptions {
            organization: "boot test".into(),
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
    .unwrap();
    f.create_family("meter", KeyCurve::P256, true).unwrap();
    let cfg = BatchConfig {
        family: "meter".into(),
        count: n,
        personality: Personality::A120,
    };
    let mut p = Personalizer::open(&f, "meter", "b", &cfg).unwrap();
    let mut drivers = Vec::new();
    for path in inkan_se::chip::blank_chips(&p.dir().join("chips"), n, Personality::A120).unwrap() {
        let mut d = Driver::new(InProcess::new(Chip::open(&path).unwrap())).unwrap();
        p.personalize(&mut d, Some(&path)).unwrap();
        let serial = hex::encode_upper(d.serial().unwrap());
        d.open_session(p.device_secrets(&serial).unwrap().host_keys().unwrap())
            .unwrap();
        drivers.push(Arc::new(Mutex::new(d)));
    }
    let oem = SoftwareKey::load(&f.dir().join("keys/dev-firmware.key.pem"), b"pw").unwrap();
    (dir, oem, drivers)
}

#[test]
fn only_signed_images_for_this_family_boot_and_never_downgrade() {
    let (_dir, oem, mut drivers) = meters(1);
    let driver = drivers.remove(0);

    let image: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 251) as u8).collect();
    let manifest = |img: &[u8], class: &str, sv: u32, key: &SoftwareKey| {
        sign(
            &FirmwareManifest::describe(img, "Boot Org", class, &format!("1.{sv}"), sv),
            key,
        )
        .unwrap()
    };
    // Genuine: boots, and confirming records security version 3.
    let v3 = manifest(&image, "meter", 3, &oem);
    let ok = boot_check(&driver, &image, &v3).unwrap();
    assert_eq!(ok.manifest.security_version, 3);
    assert_eq!(ok.device_security_version, 0);
    assert_eq!(confirm(&driver, 3).unwrap(), 3);
    assert_eq!(
        security_version(&mut driver.lock().unwrap()).unwrap(),
        3,
        "the one-way counter records it"
    );

    // A tampered image (one bit).
    let mut tampered = image.clone();
    tampered[100_000] ^= 0x20;
    assert!(matches!(
        boot_check(&driver, &tampered, &v3),
        Err(BootRefused::Digest)
    ));
    // A truncated image.
    assert!(matches!(
        boot_check(&driver, &image[..image.len() - 1], &v3),
        Err(BootRefused::Size { .. })
    ));
    // A manifest signed by another key.
    let rogue = SoftwareKey::generate(KeyCurve::P256);
    assert!(matches!(
        boot_check(&driver, &image, &manifest(&image, "meter", 4, &rogue)),
        Err(BootRefused::Signature)
    ));
    // A manifest altered after signing (the security version raised).
    let mut altered = v3.clone();
    let at = altered.len() - 80;
    altered[at] ^= 0x01;
    assert!(matches!(
        boot_check(&driver, &image, &altered),
        Err(BootRefused::Signature) | Err(BootRefused::Manifest(_))
    ));
    // For another family.
    assert!(matches!(
        boot_check(&driver, &image, &manifest(&image, "valve", 4, &oem)),
        Err(BootRefused::Class { .. })
    ));
    // A correctly signed older image: a downgrade.
    let old: Vec<u8> = image.iter().rev().copied().collect();
    let v2 = manifest(&old, "meter", 2, &oem);
    match boot_check(&driver, &old, &v2) {
        Err(BootRefused::Downgrade { manifest, device }) => assert_eq!((manifest, device), (2, 3)),
        other => panic!("expected a downgrade refusal, got {other:?}"),
    }
    // Confirming a lower version never moves the counter back.
    assert_eq!(confirm(&driver, 1).unwrap(), 3);
    // Malformed manifests.
    for bad in [vec![], vec![0xD2, 0x84], v3[..v3.len() / 2].to_vec()] {
        assert!(matches!(
            boot_check(&driver, &image, &bad),
            Err(BootRefused::Manifest(_))
        ));
    }
    // The same version again still boots (reinstall).
    boot_check(&driver, &image, &v3).unwrap();
}

/// A/B update with a power cut injected before each durable step of
/// install, trial boot and confirmation in turn: after every cut the device
/// still boots a verified image (the old or the new one), and finishing the
/// update from there ends with the new image confirmed.
#[test]
fn a_power_cut_at_any_update_step_leaves_a_bootable_verified_image() {
    use inkan_device::firmware::slots::{Slot, SlotError, Slots};
    let (dir, oem, drivers) = meters(12);
    let v1: Vec<u8> = vec![1; 40_000];
    let v2: Vec<u8> = vec![2; 50_000];
    let m1 = sign(&FirmwareManifest::describe(&v1, "o", "meter", "1", 1), &oem).unwrap();
    let m2 = sign(&FirmwareManifest::describe(&v2, "o", "meter", "2", 2), &oem).unwrap();
    // The whole update without cuts, to count its durable steps.
    let full_flow =
        |slots: &mut Slots, d: &inkan_device::SharedDriver<InProcess>| -> Result<(), SlotError> {
            slots.install(d, &v2, &m2)?;
            let b = slots.boot(d)?;
            assert!(b.trial);
            slots.confirm(d)?;
            Ok(())
        };
    let mut cuts = 0;
    for (k, driver) in drivers.into_iter().enumerate() {
        let sdir = dir.path().join(format!("device-{k}"));
        let mut slots = Slots::open(&sdir);
        slots.provision(&v1, &m1).unwrap();
        assert_eq!(slots.boot(&driver).unwrap().slot, Slot::A);
        // Cut power before the k-th durable step.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let mut n = 0;
        slots.step_hook = Box::new(move |step| {
            log.lock().unwrap().push(step);
            n += 1;
            if n == k + 1 {
                Err(SlotError::PowerCut(step))
            } else {
                Ok(())
            }
        });
        let r = full_flow(&mut slots, &driver);
        slots.step_hook = Box::new(|_| Ok(()));
        match r {
            Err(SlotError::PowerCut(step)) => {
                cuts += 1;
                // Reboot: something verified runs.
                let b = slots.boot(&driver).unwrap();
                assert!(
                    [1, 2].contains(&b.security_version),
                    "cut at {step}: booted {b:?}"
                );
                // Finish (or redo) the update from wherever it stopped.
                let st = slots.state().unwrap();
                if !(st.active == Slot::B && st.pending.is_none()) {
                    if b.trial {
                        slots.confirm(&driver).unwrap();
                    } else {
                        full_flow(&mut slots, &driver).unwrap();
                    }
                }
            }
            Ok(()) => {
                // k is past the last step: the flow had no cut.
                assert!(k >= seen.lock().unwrap().len());
                break;
            }
            Err(e) => panic!("unexpected failure: {e}"),
        }
        let b = slots.boot(&driver).unwrap();
        assert_eq!((b.slot, b.trial, b.security_version), (Slot::B, false, 2));
        assert_eq!(
            security_version(&mut driver.lock().unwrap()).unwrap(),
            2,
            "the counter ends at the new version"
        );
    }
    assert!(cuts >= 5, "only {cuts} cut points exercised");
}

/// An update the chip refuses is never written; an update booted twice
/// without confirmation is reverted.
#[test]
fn refused_updates_are_not_written_and_unconfirmed_ones_revert() {
    use inkan_device::firmware::slots::{Slot, SlotError, Slots};
    let (dir, oem, mut drivers) = meters(1);
    let driver = drivers.remove(0);
    let v1 = vec![1u8; 1000];
    let v2 = vec![2u8; 1000];
    let m1 = sign(&FirmwareManifest::describe(&v1, "o", "meter", "1", 1), &oem).unwrap();
    let m2 = sign(&FirmwareManifest::describe(&v2, "o", "meter", "2", 2), &oem).unwrap();
    let sdir = dir.path().join("slots");
    let mut slots = Slots::open(&sdir);
    slots.provision(&v1, &m1).unwrap();
    // A tampered update: refused, nothing written to slot B.
    let mut bad = v2.clone();
    bad[0] ^= 1;
    assert!(matches!(
        slots.install(&driver, &bad, &m2),
        Err(SlotError::Refused(BootRefused::Digest))
    ));
    assert!(!sdir.join("slot-b/image").exists());
    // Installed, booted once (trial), then booted again unconfirmed: revert.
    slots.install(&driver, &v2, &m2).unwrap();
    assert!(slots.boot(&driver).unwrap().trial);
    let b = slots.boot(&driver).unwrap();
    assert_eq!((b.slot, b.trial), (Slot::A, false));
    assert!(slots.state().unwrap().pending.is_none());
    assert_eq!(security_version(&mut driver.lock().unwrap()).unwrap(), 1);
}
