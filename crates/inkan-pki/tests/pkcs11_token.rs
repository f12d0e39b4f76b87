//! A CA key inside a real PKCS#11 token (SoftHSM2): generated in the token,
//! never exported, issuing a chain that openssl accepts. One test per binary
//! because SOFTHSM2_CONF is process-wide.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cloned_ref_to_slice_refs
)]

use inkan_pki::cert;
use inkan_pki::pkcs11::{Pkcs11Signer, TokenKey};
use inkan_pki::validate::RequiredEku;
use inkan_pki::{
    CaSigner, CertPolicy, DeviceProfile, DeviceValidator, KeyCurve, PkiError, SoftwareKey,
};
use std::process::Command;

use inkan_pki::pkcs11::softhsm::MODULE;

#[test]
fn token_held_ca_keys_issue_valid_chains() {
    let dir = tempfile::tempdir().unwrap();
    // Before this test binary loads the module.
    inkan_pki::pkcs11::softhsm::init_token(dir.path(), "inkan-ca", "87654321", "123456").unwrap();

    let key = |label: &str| TokenKey {
        module: MODULE.into(),
        token: "inkan-ca".into(),
        pin: "123456".into(),
        label: label.into(),
    };
    // A wrong PIN is refused (tested before any session logs in: PKCS#11
    // login state is shared by all sessions of a process).
    let mut bad = key("root");
    bad.pin = "000000".into();
    assert!(
        matches!(Pkcs11Signer::generate(&bad, KeyCurve::P256), Err(PkiError::Token(m)) if m.contains("PIN"))
    );
    let root_signer = Pkcs11Signer::generate(&key("root"), KeyCurve::P256).unwrap();
    let family_signer = Pkcs11Signer::generate(&key("family-thermo"), KeyCurve::P384).unwrap();
    // The same label twice is refused; an unknown token is a clear error.
    assert!(
        matches!(Pkcs11Signer::generate(&key("root"), KeyCurve::P256), Err(PkiError::Token(m)) if m.contains("already exists"))
    );
    let mut unknown = key("root");
    unknown.token = "nope".into();
    assert!(
        matches!(Pkcs11Signer::open(&unknown), Err(PkiError::Token(m)) if m.contains("no token labelled"))
    );

    let policy = CertPolicy::default();
    let root = cert::issue_root(&root_signer, "inkan token test", "token root", &policy).unwrap();
    let family = cert::issue_family(
        &root_signer,
        &root,
        &family_signer.public_point(),
        "inkan token test",
        "thermo",
        &policy,
    )
    .unwrap();
    // Reopening the token finds the same keys.
    let reopened = Pkcs11Signer::open(&key("family-thermo")).unwrap();
    assert_eq!(reopened.public_point(), family_signer.public_point());
    let device_key = SoftwareKey::generate(KeyCurve::P256);
    let profile = DeviceProfile {
        serial: "0011223344".into(),
        organization: "inkan token test".into(),
        family: "thermo".into(),
        key_agreement: true,
        ueid: None,
    };
    let device = cert::issue_device(
        &reopened,
        &family,
        &device_key.public_point(),
        &profile,
        &policy,
    )
    .unwrap();

    let v = DeviceValidator::new(&[root.der.clone()], RequiredEku::ClientAuth).unwrap();
    v.validate(
        &device.der,
        &[family.der.clone()],
        std::time::SystemTime::now(),
    )
    .unwrap();
    let (r, f, d) = (
        dir.path().join("r.pem"),
        dir.path().join("f.pem"),
        dir.path().join("d.pem"),
    );
    std::fs::write(&r, root.to_pem()).unwrap();
    std::fs::write(&f, family.to_pem()).unwrap();
    std::fs::write(&d, device.to_pem()).unwrap();
    let out = Command::new("openssl")
        .args(["verify", "-x509_strict", "-purpose", "sslclient", "-CAfile"])
        .arg(&r)
        .arg("-untrusted")
        .arg(&f)
        .arg(&d)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
