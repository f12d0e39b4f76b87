//! A factory whose CA keys live in a PKCS#11 token (SoftHSM2): init,
//! family, personalization and manifest, with no CA private key on disk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use inkan_factory::personalize::BatchConfig;
use inkan_factory::{Factory, InitOptions, KeyStore, Personalizer, Secrets};
use inkan_pki::{CertPolicy, KeyCurve};
use inkan_se::{Chip, Driver, InProcess, Personality};
use std::process::Command;

#[test]
fn a_factory_with_token_held_keys() {
    let module = std::path::PathBuf::from("/usr/lib/softhsm/libsofthsm2.so");
    assert!(
        module.exists(),
        "SoftHSM2 is not installed: run scripts/test.sh (it installs softhsm2)"
    );
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let out = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "factory",
            "--so-pin",
            "11112222",
            "--pin",
            "424242",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

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
                module,
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
    for path in p.emulated_chips(2, Personality::A120).unwrap() {
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
