//! Issued chains: validated by inkan's validator, by `openssl verify
//! -x509_strict -purpose sslclient`, and linted by pkilint; and the attacks
//! on validation each fail with their specific error.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cloned_ref_to_slice_refs
)]

use inkan_pki::cert::{self, IssuedCert};
use inkan_pki::crl::{self, Revoked};
use inkan_pki::validate::RequiredEku;
use inkan_pki::{
    CaSigner, CertPolicy, DeviceProfile, DeviceValidator, KeyCurve, PkiError, SoftwareKey,
    ValidationError,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

struct Chain {
    root_key: SoftwareKey,
    root: IssuedCert,
    family_key: SoftwareKey,
    family: IssuedCert,
    device_key: SoftwareKey,
    device: IssuedCert,
}

fn chain(curve: KeyCurve, key_agreement: bool) -> Chain {
    chain_of("inkan test devices", curve, key_agreement)
}

fn chain_of(org: &str, curve: KeyCurve, key_agreement: bool) -> Chain {
    let policy = CertPolicy::default();
    let root_key = SoftwareKey::generate(curve);
    let root = cert::issue_root(&root_key, org, &format!("{org} root"), &policy).unwrap();
    let family_key = SoftwareKey::generate(curve);
    let family = cert::issue_family(
        &root_key,
        &root,
        &family_key.public_point(),
        org,
        "thermo",
        &policy,
    )
    .unwrap();
    let device_key = SoftwareKey::generate(curve);
    let profile = DeviceProfile {
        serial: "0A46010203040506FF".into(),
        organization: org.into(),
        family: "thermo".into(),
        key_agreement,
        ueid: Some(inkan_pki::Ueid::random()),
    };
    let device = cert::issue_device(
        &family_key,
        &family,
        &device_key.public_point(),
        &profile,
        &policy,
    )
    .unwrap();
    Chain {
        root_key,
        root,
        family_key,
        family,
        device_key,
        device,
    }
}

fn write(dir: &Path, name: &str, c: &IssuedCert) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, c.to_pem()).unwrap();
    p
}

/// The pkilint installed by scripts/test.sh in the repository's `.venv`.
fn pkilint() -> PathBuf {
    let p = std::env::var_os("INKAN_PKILINT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/lint_pkix_cert")
        });
    assert!(
        p.exists(),
        "pkilint not found at {}: run scripts/test.sh, which installs it in .venv",
        p.display()
    );
    p
}

#[test]
fn issued_chains_pass_webpki_openssl_and_pkilint() {
    let dir = tempfile::tempdir().unwrap();
    for (curve, ka) in [
        (KeyCurve::P256, true),
        (KeyCurve::P256, false),
        (KeyCurve::P384, true),
    ] {
        let c = chain(curve, ka);
        // The identity for life travels in the subjectAltName.
        let ueid = c
            .device
            .ueid()
            .expect("the device certificate names its UEID");
        assert_eq!(ueid.as_bytes().len(), 17);
        assert_eq!(ueid.as_bytes()[0], inkan_pki::ueid::TYPE_RAND);
        assert!(c.family.ueid().is_none());
        let v = DeviceValidator::new(&[c.root.der.clone()], RequiredEku::ClientAuth).unwrap();
        let ok = v
            .validate(&c.device.der, &[c.family.der.clone()], SystemTime::now())
            .unwrap();
        assert_eq!(ok.issuer_der.as_deref(), Some(c.family.der.as_slice()));
        assert_eq!(
            c.device.subject_serial_number().as_deref(),
            Some("0A46010203040506FF")
        );
        assert_eq!(c.device.subject_org_unit().as_deref(), Some("thermo"));

        let root = write(dir.path(), "root.pem", &c.root);
        let family = write(dir.path(), "family.pem", &c.family);
        let device = write(dir.path(), "device.pem", &c.device);
        let out = Command::new("openssl")
            .args(["verify", "-x509_strict", "-purpose", "sslclient", "-CAfile"])
            .arg(&root)
            .arg("-untrusted")
            .arg(&family)
            .arg(&device)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl verify ({curve:?}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        for (what, p) in [("root", &root), ("family", &family), ("device", &device)] {
            let out = Command::new(pkilint())
                .args(["lint", "-s", "ERROR"])
                .arg(p)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "pkilint found errors in the {what} certificate ({curve:?}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}

#[test]
fn attacks_on_validation_fail_with_their_specific_error() {
    let c = chain(KeyCurve::P256, true);
    let now = SystemTime::now();
    let v = DeviceValidator::new(&[c.root.der.clone()], RequiredEku::ClientAuth).unwrap();
    let inter = [c.family.der.clone()];

    // Unknown CA: another maker's chain.
    let other = chain_of("someone else", KeyCurve::P256, true);
    assert_eq!(
        v.validate(&other.device.der, &[other.family.der.clone()], now),
        Err(ValidationError::UnknownIssuer)
    );
    // An impostor CA with the same names as ours: its signatures do not verify.
    let impostor = chain(KeyCurve::P256, true);
    assert_eq!(
        v.validate(&impostor.device.der, &[impostor.family.der.clone()], now),
        Err(ValidationError::BadSignature)
    );
    // Missing intermediate.
    assert_eq!(
        v.validate(&c.device.der, &[], now),
        Err(ValidationError::UnknownIssuer)
    );
    // A forged certificate: same content, signature altered.
    let mut forged = c.device.der.clone();
    let n = forged.len();
    forged[n - 3] ^= 0x01;
    assert_eq!(
        v.validate(&forged, &inter, now),
        Err(ValidationError::BadSignature)
    );
    // Expired and not yet valid.
    let later = now + Duration::from_secs(40 * 365 * 24 * 3600);
    assert_eq!(
        v.validate(&c.device.der, &inter, later),
        Err(ValidationError::Expired)
    );
    let before = now - Duration::from_secs(10 * 24 * 3600);
    assert_eq!(
        v.validate(&c.device.der, &inter, before),
        Err(ValidationError::NotYetValid)
    );
    // Wrong EKU: a validator that requires serverAuth.
    let server = DeviceValidator::new(&[c.root.der.clone()], RequiredEku::ServerAuth).unwrap();
    assert_eq!(
        server.validate(&c.device.der, &inter, now),
        Err(ValidationError::WrongEku)
    );
    // A CA certificate presented as the device certificate.
    assert!(matches!(
        v.validate(&c.family.der, &[], now),
        Err(ValidationError::Role(_))
    ));
    // Revoked by the family CRL (signed by the family CA).
    let revoked = Revoked {
        serial: c
            .device
            .cert
            .tbs_certificate
            .serial_number
            .as_bytes()
            .to_vec(),
        time: now,
    };
    let crl = crl::issue_crl(
        &c.family_key,
        &c.family,
        &[revoked],
        1,
        Duration::from_secs(86400),
    )
    .unwrap();
    let mut with_crl =
        DeviceValidator::new(&[c.root.der.clone()], RequiredEku::ClientAuth).unwrap();
    with_crl.add_crl(&crl.der).unwrap();
    assert_eq!(
        with_crl.validate(&c.device.der, &inter, now),
        Err(ValidationError::Revoked)
    );
    // ...while another device of the family still passes.
    let d2 = cert::issue_device(
        &c.family_key,
        &c.family,
        &SoftwareKey::generate(KeyCurve::P256).public_point(),
        &DeviceProfile {
            serial: "BEEF".into(),
            organization: "o".into(),
            family: "thermo".into(),
            key_agreement: false,
            ueid: None,
        },
        &CertPolicy::default(),
    )
    .unwrap();
    with_crl.validate(&d2.der, &inter, now).unwrap();
    // A device certificate cannot act as a CA (pathLen 0 / end entity).
    let rogue_key = SoftwareKey::generate(KeyCurve::P256);
    assert!(matches!(
        cert::issue_device(
            &c.device_key,
            &c.device,
            &rogue_key.public_point(),
            &DeviceProfile {
                serial: "01".into(),
                organization: "o".into(),
                family: "f".into(),
                key_agreement: false,
                ueid: None
            },
            &CertPolicy::default()
        ),
        Err(PkiError::NotACa { .. })
    ));
    let _ = &c.root_key;
}

#[test]
fn crl_exports_and_is_accepted_by_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let c = chain(KeyCurve::P256, true);
    let now = SystemTime::now();
    let revoked = Revoked {
        serial: c
            .device
            .cert
            .tbs_certificate
            .serial_number
            .as_bytes()
            .to_vec(),
        time: now,
    };
    let crl = crl::issue_crl(
        &c.family_key,
        &c.family,
        &[revoked],
        7,
        Duration::from_secs(86400),
    )
    .unwrap();
    assert_eq!(
        crl.revoked_serials().unwrap(),
        vec![c
            .device
            .cert
            .tbs_certificate
            .serial_number
            .as_bytes()
            .to_vec()]
    );
    let crl_path = dir.path().join("family.crl.pem");
    std::fs::write(&crl_path, crl.to_pem()).unwrap();
    let root = write(dir.path(), "root.pem", &c.root);
    let family = write(dir.path(), "family.pem", &c.family);
    let device = write(dir.path(), "device.pem", &c.device);
    let out = Command::new("openssl")
        .args(["crl", "-noout", "-text", "-in"])
        .arg(&crl_path)
        .arg("-CAfile")
        .arg(&family)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("verify OK")
            && text.contains("X509v3 CRL Number")
            && text.contains(&c.device.serial_hex().to_uppercase()),
        "{text}"
    );
    // openssl itself refuses the revoked device with the CRL.
    let chain_file = dir.path().join("ca.pem");
    std::fs::write(
        &chain_file,
        format!("{}{}", c.root.to_pem(), c.family.to_pem()),
    )
    .unwrap();
    let out = Command::new("openssl")
        .args(["verify", "-crl_check", "-purpose", "sslclient", "-CAfile"])
        .arg(&chain_file)
        .arg("-CRLfile")
        .arg(&crl_path)
        .arg(&device)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("revoked")
            || String::from_utf8_lossy(&out.stderr).contains("revoked")
    );
    let _ = root;
}

#[test]
fn issuing_needs_a_valid_ca_and_its_own_key() {
    let c = chain(KeyCurve::P256, true);
    let policy = CertPolicy::default();
    // Another key cannot issue under the family certificate.
    let wrong = SoftwareKey::generate(KeyCurve::P256);
    let profile = DeviceProfile {
        serial: "AA".into(),
        organization: "o".into(),
        family: "f".into(),
        key_agreement: false,
        ueid: None,
    };
    assert!(matches!(
        cert::issue_device(&wrong, &c.family, &wrong.public_point(), &profile, &policy),
        Err(PkiError::KeyMismatch { .. })
    ));
    // A certificate that is not a CA cannot issue.
    assert!(matches!(
        cert::issue_family(
            &c.device_key,
            &c.device,
            &wrong.public_point(),
            "o",
            "f",
            &policy
        ),
        Err(PkiError::NotACa { .. })
    ));
    // An expired CA cannot issue.
    let short = CertPolicy {
        root_years: 0,
        backdate_secs: 10,
        ..policy
    };
    let old_root = cert::issue_root(&wrong, "o", "short-lived root", &short).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert!(matches!(
        cert::issue_family(&wrong, &old_root, &wrong.public_point(), "o", "f", &policy),
        Err(PkiError::CaNotValidNow { .. })
    ));
    // Serial numbers must be plain alphanumerics.
    let bad = DeviceProfile {
        serial: "12,CN=evil".into(),
        ..profile
    };
    assert!(matches!(
        cert::issue_device(
            &c.family_key,
            &c.family,
            &wrong.public_point(),
            &bad,
            &policy
        ),
        Err(PkiError::Malformed { .. })
    ));
}

#[test]
fn encrypted_key_files_round_trip_and_refuse_a_wrong_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    for curve in [KeyCurve::P256, KeyCurve::P384] {
        let k = SoftwareKey::generate(curve);
        let p = dir.path().join(format!("{}.key", curve.name()));
        k.save(&p, b"correct horse").unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        assert_eq!(
            SoftwareKey::load(&p, b"correct horse")
                .unwrap()
                .public_point(),
            k.public_point()
        );
        assert!(matches!(
            SoftwareKey::load(&p, b"wrong"),
            Err(PkiError::Decrypt)
        ));
        // Never overwritten.
        assert!(k.save(&p, b"x").is_err());
    }
}

#[test]
fn hostile_chains_exhaust_the_path_building_budget() {
    // 150 look-alike intermediates: each has the family's name but its own
    // key, so path building must try (and fail) a signature for each. The
    // validator stops at webpki's budget instead of burning CPU.
    let c = chain(KeyCurve::P256, true);
    let policy = CertPolicy::default();
    let mut hostile = Vec::new();
    for _ in 0..150 {
        let k = SoftwareKey::generate(KeyCurve::P256);
        hostile.push(
            cert::issue_family(
                &c.root_key,
                &c.root,
                &k.public_point(),
                "inkan test devices",
                "thermo",
                &policy,
            )
            .unwrap()
            .der,
        );
    }
    let v = DeviceValidator::new(&[c.root.der.clone()], RequiredEku::ClientAuth).unwrap();
    let start = std::time::Instant::now();
    let r = v.validate(&c.device.der, &hostile, SystemTime::now());
    assert_eq!(r, Err(ValidationError::Budget));
    assert!(start.elapsed() < Duration::from_secs(5));
    // With the genuine family among them, validation still succeeds when it
    // comes first.
    let mut with_real = vec![c.family.der.clone()];
    with_real.extend(hostile);
    v.validate(&c.device.der, &with_real, SystemTime::now())
        .unwrap();
}
