//! Personalization end to end over emulated chips: what lands in each chip,
//! chains checked by inkan's validator and by openssl, a challenge signed
//! by a personalized chip verified by openssl, resumption, and bad input.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cloned_ref_to_slice_refs
)]

use inkan_factory::personalize::{BatchConfig, DeviceSecrets};
use inkan_factory::{journal, Factory, FactoryError, InitOptions, KeyStore, Personalizer, Secrets};
use inkan_pki::cert::IssuedCert;
use inkan_pki::validate::RequiredEku;
use inkan_pki::{CertPolicy, DeviceValidator, KeyCurve, PkiError};
use inkan_se::wire::codes::life_cycle;
use inkan_se::{Chip, Driver, InProcess, Personality, Status};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

fn secrets() -> Secrets {
    Secrets {
        passphrase: Some(zeroize::Zeroizing::new(b"test passphrase".to_vec())),
        pin: None,
    }
}

fn factory(dir: &Path, policy: CertPolicy) -> Factory {
    Factory::init(
        &dir.join("factory"),
        InitOptions {
            organization: "inkan test".into(),
            curve: KeyCurve::P256,
            policy,
            keys: KeyStore::File,
            anchors: None,
        },
        secrets(),
    )
    .unwrap()
}

fn batch<'f>(
    f: &'f Factory,
    family: &str,
    name: &str,
    count: usize,
    p: Personality,
) -> Result<(Personalizer<'f>, Vec<std::path::PathBuf>), FactoryError> {
    let cfg = BatchConfig {
        family: family.into(),
        count,
        personality: p,
    };
    let pz = Personalizer::open(f, family, name, &cfg)?;
    let chips = inkan_se::chip::blank_chips(&pz.dir().join("chips"), count, p).unwrap();
    Ok((pz, chips))
}

fn run(pz: &mut Personalizer<'_>, chips: &[std::path::PathBuf]) -> Result<(), FactoryError> {
    for c in chips {
        let mut d = Driver::new(InProcess::new(Chip::open(c).unwrap())).unwrap();
        pz.personalize(&mut d, Some(c))?;
    }
    Ok(())
}

#[test]
fn a_batch_lands_in_every_chip_and_verifies_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let f = factory(dir.path(), CertPolicy::default());
    f.create_family("thermo", KeyCurve::P256, true).unwrap();
    f.create_family("valve", KeyCurve::P384, false).unwrap();
    let root = f.root().unwrap();
    let anchors = f.anchors().unwrap();
    for (family, p) in [("thermo", Personality::A120), ("valve", Personality::A110)] {
        let (mut pz, chips) = batch(&f, family, &format!("{family}-1"), 3, p).unwrap();
        run(&mut pz, &chips).unwrap();
        let report = pz.finish().unwrap();
        assert_eq!(report.chips, 3);
        let m = inkan_pki::manifest::verify(
            &std::fs::read(&report.manifest).unwrap(),
            &root,
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(m.entries.len(), 3);
        let (_, fam) = f.family(family).unwrap();
        let validator = DeviceValidator::new(&[root.der.clone()], RequiredEku::ClientAuth).unwrap();

        for (chip_path, entry) in chips.iter().zip(&m.entries) {
            // The NVM: locked, certificate and anchors in their zones, the
            // certificate's key is the chip's own.
            let chip = Chip::open(chip_path).unwrap();
            let nvm = chip.nvm();
            assert_eq!(nvm.life_cycle, life_cycle::OPERATIONAL_LOCKED);
            assert_eq!(hex::encode_upper(chip.serial()), entry.serial);
            let cert = IssuedCert::from_der(&entry.certificate).unwrap();
            assert_eq!(&nvm.zones[0].data[..cert.der.len()], cert.der.as_slice());
            assert_eq!(
                &nvm.zones[1].data[..anchors.cloud_auth.len()],
                anchors.cloud_auth.as_slice()
            );
            assert_eq!(
                &nvm.zones[2].data[..anchors.command.len()],
                anchors.command.as_slice()
            );
            assert_eq!(
                &nvm.zones[3].data[..anchors.firmware.len()],
                anchors.firmware.as_slice()
            );
            assert_eq!(
                cert.subject_serial_number().as_deref(),
                Some(entry.serial.as_str())
            );
            validator
                .validate(&cert.der, &[fam.der.clone()], SystemTime::now())
                .unwrap();

            // The chip signs a fresh challenge through a host session; openssl
            // verifies it with the certificate's key.
            let secrets: DeviceSecrets = pz.device_secrets(&entry.serial).unwrap();
            let mut d = Driver::new(InProcess::new(chip)).unwrap();
            // Without the host keys, the device key cannot be used.
            let curve = if family == "valve" {
                inkan_se::Curve::P384
            } else {
                inkan_se::Curve::P256
            };
            let n = curve.coordinate_len();
            let err = d.sign_with_curve(0, curve, &vec![1; n]).unwrap_err();
            assert_eq!(err.status(), Some(Status::ACCESS_CONDITION_NOT_SATISFIED));
            d.open_session(secrets.host_keys().unwrap()).unwrap();
            let challenge = b"fresh challenge from the verifier";
            let digest = if n == 32 {
                sha2_256(challenge)
            } else {
                sha2_384(challenge)
            };
            let sig = d.sign_with_curve(0, curve, &digest).unwrap();
            let sig_der = inkan_pki::signer::raw_to_der(
                if n == 32 {
                    KeyCurve::P256
                } else {
                    KeyCurve::P384
                },
                &sig,
            )
            .unwrap();
            let t = tempfile::tempdir().unwrap();
            std::fs::write(t.path().join("c.pem"), cert.to_pem()).unwrap();
            std::fs::write(t.path().join("msg"), challenge).unwrap();
            std::fs::write(t.path().join("sig"), &sig_der).unwrap();
            let out = Command::new("openssl")
                .args(["x509", "-pubkey", "-noout", "-in"])
                .arg(t.path().join("c.pem"))
                .output()
                .unwrap();
            std::fs::write(t.path().join("pub.pem"), &out.stdout).unwrap();
            let out = Command::new("openssl")
                .args([
                    "dgst",
                    if n == 32 { "-sha256" } else { "-sha384" },
                    "-verify",
                ])
                .arg(t.path().join("pub.pem"))
                .arg("-signature")
                .arg(t.path().join("sig"))
                .arg(t.path().join("msg"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // The locked chip refuses a new device key even in the session.
            assert!(d.generate_key(0, curve, 0, 0).is_err());
        }

        // openssl agrees with the chain (root, family, first device).
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("root.pem"), root.to_pem()).unwrap();
        std::fs::write(t.path().join("fam.pem"), fam.to_pem()).unwrap();
        std::fs::write(
            t.path().join("dev.pem"),
            IssuedCert::from_der(&m.entries[0].certificate)
                .unwrap()
                .to_pem(),
        )
        .unwrap();
        let out = Command::new("openssl")
            .args(["verify", "-x509_strict", "-purpose", "sslclient", "-CAfile"])
            .arg(t.path().join("root.pem"))
            .arg("-untrusted")
            .arg(t.path().join("fam.pem"))
            .arg(t.path().join("dev.pem"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn sha2_256(m: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(m).to_vec()
}

fn sha2_384(m: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha384::digest(m).to_vec()
}

#[test]
fn an_interrupted_batch_resumes_without_reissuing() {
    let dir = tempfile::tempdir().unwrap();
    let f = factory(dir.path(), CertPolicy::default());
    f.create_family("thermo", KeyCurve::P256, true).unwrap();
    let (mut pz, chips) = batch(&f, "thermo", "b", 4, Personality::A120).unwrap();
    // Two chips done, then a third interrupted right after its key was
    // generated and its certificate issued (the process "dies").
    run(&mut pz, &chips[..2]).unwrap();
    {
        let mut d = Driver::new(InProcess::new(Chip::open(&chips[2]).unwrap())).unwrap();
        // Generate the key as step 1 would, then stop before the journal.
        d.generate_key(
            0,
            inkan_se::Curve::P256,
            0,
            inkan_se::driver::key_mode::SIGN_DIGEST | inkan_se::driver::key_mode::GENERATE_NEVER,
        )
        .unwrap();
    }
    drop(pz);
    let (mut pz, chips2) = batch(&f, "thermo", "b", 4, Personality::A120).unwrap();
    assert_eq!(chips2, chips);
    assert_eq!(pz.done(), 2);
    run(&mut pz, &chips).unwrap();
    let report = pz.finish().unwrap();
    assert_eq!(report.chips, 4);
    // Exactly one certificate per chip in the journal, each matching the chip.
    let (state, _) = journal::replay(&pz.dir().join("journal.jsonl")).unwrap();
    assert_eq!((state.issued.len(), state.done.len()), (4, 4));
    let text = std::fs::read_to_string(pz.dir().join("journal.jsonl")).unwrap();
    assert_eq!(
        text.matches("\"event\":\"issued\"").count(),
        4,
        "a chip got two certificates"
    );
    // A crash after the last chip was locked but before its Done line
    // reached the journal: the resumed batch finds the chip locked with its
    // own certificate, re-checks it and finishes without reissuing.
    let journal_path = pz.dir().join("journal.jsonl");
    drop(pz);
    let lines: Vec<&str> = text.lines().collect();
    let last_done = lines
        .iter()
        .rposition(|l| l.contains("\"event\":\"done\""))
        .unwrap();
    let trimmed: String = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != last_done)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    std::fs::write(&journal_path, &trimmed).unwrap();
    let (mut pz, _) = batch(&f, "thermo", "b", 4, Personality::A120).unwrap();
    assert_eq!(pz.done(), 3);
    run(&mut pz, &chips).unwrap();
    assert_eq!(pz.done(), 4);
    let text = std::fs::read_to_string(&journal_path).unwrap();
    assert_eq!(text.matches("\"event\":\"issued\"").count(), 4);

    run(&mut pz, &chips).unwrap();
    assert_eq!(
        std::fs::read_to_string(pz.dir().join("journal.jsonl")).unwrap(),
        text
    );
}

#[test]
fn bad_input_is_refused_and_nothing_is_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let f = factory(dir.path(), CertPolicy::default());
    f.create_family("thermo", KeyCurve::P256, true).unwrap();

    // Unknown family: no batch directory appears.
    assert!(matches!(
        batch(&f, "nope", "b0", 1, Personality::A120),
        Err(FactoryError::UnknownFamily(_))
    ));
    assert!(!f.batch_dir("b0").exists());
    // Bad names.
    assert!(matches!(
        f.create_family("Bad Name", KeyCurve::P256, true),
        Err(FactoryError::BadName { .. })
    ));
    assert!(matches!(
        f.create_family("thermo", KeyCurve::P256, true),
        Err(FactoryError::FamilyExists(_))
    ));
    assert_eq!(f.families().unwrap(), vec!["thermo".to_string()]);
    // init twice.
    assert!(matches!(
        Factory::init(
            f.dir(),
            InitOptions {
                organization: "x".into(),
                curve: KeyCurve::P256,
                policy: CertPolicy::default(),
                keys: KeyStore::File,
                anchors: None
            },
            secrets()
        ),
        Err(FactoryError::AlreadyInitialized(_))
    ));
    // A wrong passphrase.
    let wrong = Factory::open(
        f.dir(),
        Secrets {
            passphrase: Some(zeroize::Zeroizing::new(b"nope".to_vec())),
            pin: None,
        },
    )
    .unwrap();
    assert!(matches!(
        batch(&wrong, "thermo", "bw", 1, Personality::A120),
        Err(FactoryError::Pki(PkiError::Decrypt))
    ));

    // A duplicate serial: a chip with a serial another batch already certified.
    let (mut pz, chips) = batch(&f, "thermo", "b1", 1, Personality::A120).unwrap();
    run(&mut pz, &chips).unwrap();
    let serial: [u8; 9] = Chip::open(&chips[0]).unwrap().serial().try_into().unwrap();
    let clone = dir.path().join("clone.json");
    Chip::create(&clone, Personality::A120, serial).unwrap();
    let (mut pz2, _) = batch(&f, "thermo", "b2", 0, Personality::A120).unwrap();
    let mut d = Driver::new(InProcess::new(Chip::open(&clone).unwrap())).unwrap();
    assert!(matches!(
        pz2.personalize(&mut d, None),
        Err(FactoryError::DuplicateSerial { .. })
    ));
    // Nothing was issued for it, and the clone was not touched.
    assert_eq!(
        journal::replay(&pz2.dir().join("journal.jsonl"))
            .unwrap()
            .0
            .issued
            .len(),
        0
    );
    assert_eq!(
        Chip::open(&clone).unwrap().nvm().life_cycle,
        life_cycle::BORN
    );

    // A chip already locked by someone else.
    let locked = dir.path().join("locked.json");
    Chip::create(&locked, Personality::A120, [0x42; 9]).unwrap();
    {
        let mut d = Driver::new(InProcess::new(Chip::open(&locked).unwrap())).unwrap();
        d.set_password(&[9; 16]).unwrap();
        d.verify_password(&[9; 16]).unwrap();
        d.lock().unwrap();
    }
    let mut d = Driver::new(InProcess::new(Chip::open(&locked).unwrap())).unwrap();
    assert!(matches!(
        pz2.personalize(&mut d, None),
        Err(FactoryError::ChipLocked(_))
    ));
    assert_eq!(
        journal::replay(&pz2.dir().join("journal.jsonl"))
            .unwrap()
            .0
            .issued
            .len(),
        0
    );

    // A "family" certificate that is not a CA: nothing is issued under it.
    let fam_dir = f.dir().join("families/thermo");
    let original = std::fs::read(fam_dir.join("family.crt.pem")).unwrap();
    let device_cert = IssuedCert::from_der(
        &inkan_pki::manifest::verify(
            &std::fs::read(pz.finish().unwrap().manifest).unwrap(),
            &f.root().unwrap(),
            SystemTime::now(),
        )
        .unwrap()
        .entries[0]
            .certificate,
    )
    .unwrap();
    std::fs::write(fam_dir.join("family.crt.pem"), device_cert.to_pem()).unwrap();
    assert!(matches!(
        batch(&f, "thermo", "b3", 1, Personality::A120),
        Err(FactoryError::Pki(PkiError::NotACa { .. }))
    ));
    assert!(!f.batch_dir("b3").exists());
    std::fs::write(fam_dir.join("family.crt.pem"), original).unwrap();
}

#[test]
fn an_expired_family_issues_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let f = factory(
        dir.path(),
        CertPolicy {
            family_years: 0,
            backdate_secs: 5,
            ..CertPolicy::default()
        },
    );
    f.create_family("shortlived", KeyCurve::P256, true).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert!(matches!(
        batch(&f, "shortlived", "b", 1, Personality::A120),
        Err(FactoryError::Pki(PkiError::CaNotValidNow { .. }))
    ));
    assert!(!f.batch_dir("b").exists());
}

#[test]
fn revocation_reaches_the_family_crl() {
    let dir = tempfile::tempdir().unwrap();
    let f = factory(dir.path(), CertPolicy::default());
    let fam = f.create_family("thermo", KeyCurve::P256, true).unwrap();
    assert!(f
        .crl("thermo")
        .unwrap()
        .revoked_serials()
        .unwrap()
        .is_empty());
    let (mut pz, chips) = batch(&f, "thermo", "b", 2, Personality::A110).unwrap();
    run(&mut pz, &chips).unwrap();
    let m = inkan_pki::manifest::verify(
        &std::fs::read(pz.finish().unwrap().manifest).unwrap(),
        &f.root().unwrap(),
        SystemTime::now(),
    )
    .unwrap();
    let victim = IssuedCert::from_der(&m.entries[0].certificate).unwrap();
    let (crl, revoked) = f.revoke("thermo", &victim.serial_hex()).unwrap();
    assert_eq!(revoked, victim.serial_hex());
    assert_eq!(crl.revoked_serials().unwrap().len(), 1);
    let mut v = DeviceValidator::new(&[f.root().unwrap().der], RequiredEku::ClientAuth).unwrap();
    v.add_crl(&f.crl("thermo").unwrap().der).unwrap();
    assert_eq!(
        v.validate(&victim.der, &[fam.der.clone()], SystemTime::now()),
        Err(inkan_pki::ValidationError::Revoked)
    );
    let other = IssuedCert::from_der(&m.entries[1].certificate).unwrap();
    v.validate(&other.der, &[fam.der.clone()], SystemTime::now())
        .unwrap();
    // Named by its chip serial: the same certificate, listed once.
    let (crl, revoked) = f.revoke("thermo", &m.entries[0].serial).unwrap();
    assert_eq!(revoked, victim.serial_hex());
    assert_eq!(crl.revoked_serials().unwrap().len(), 1);
    // Anything the family did not issue is refused, and the CRL unchanged:
    // not hex, a made-up serial, a serial of nothing.
    for bogus in ["zz", "00", "DEADBEEF", ""] {
        assert!(
            matches!(
                f.revoke("thermo", bogus),
                Err(FactoryError::NotIssued { .. })
            ),
            "{bogus:?} accepted"
        );
    }
    assert_eq!(f.crl("thermo").unwrap().revoked_serials().unwrap().len(), 1);
}
