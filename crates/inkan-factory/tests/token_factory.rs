//! A factory whose CA keys live in a PKCS#11 token (SoftHSM2): init,
//! family, personalization and manifest, with no CA private key on disk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use inkan_factory::personalize::BatchConfig;
use inkan_factory::{Factory, InitOptions, KeyStore, Personalizer, Secrets};
use inkan_pki::{CertPolicy, KeyCurve};
use inkan_se::{Chip, Driver, InProcess, Personality};

#[test]
fn a_factory_with_token_held_keys() {
    let dir = tempfile::tempdir().unwrap();
    // Before this test binary loads the module.
    inkan_pki::pkcs11::softhsm::init_token(dir.path(), "factory", "11112222", "424242").unwrap();

    let secrets = Secrets {
        passphrase: None,
        pin: Some(zeroize::Zeroizing::new("424242".into())),
    };
    let f = Factory::init(
        &dir.path().join("factory"),
        InitOptions {
            organization: "token factory".into(),
            curve: KeyCurve::P384,
            policy: CertPolicy::default(),
            keys: KeyStore::Pkcs11 {
                module: inkan_pki::pkcs11::softhsm::MODULE.into(),
                token: "factory".into(),
            },
            anchors: None,
        },
        secrets,
    )
    .unwrap();
    f.create_family("thermo", KeyCurve::P256, true).unwrap();
    let cfg = BatchConfig {
        family: "thermo".into(),
        count: 2,
        personality: Personality::A120,
    };
    let mut p = Personalizer::open(&f, "thermo", "t1", &cfg).unwrap();
    for path in inkan_se::chip::blank_chips(&p.dir().join("chips"), 2, Personality::A120).unwrap() {
        let mut d = Driver::new(InProcess::new(Chip::open(&path).unwrap())).unwrap();
        p.personalize(&mut d, Some(&path)).unwrap();
    }
    let report = p.finish().unwrap();
    let m = inkan_pki::manifest::verify(
        &std::fs::read(report.manifest).unwrap(),
        &f.root().unwrap(),
        std::time::SystemTime::now(),
    )
    .unwrap();
    assert_eq!(m.entries.len(), 2);
    // No private key file was written.
    assert!(
        !f.dir().join("keys").exists(),
        "CA keys must stay in the token"
    );
}
