//! `inkan serve` with its command key inside a PKCS#11 token (SoftHSM2):
//! the service opens the key by token and label, and the commands it issues
//! carry signatures that verify with the token's public key; and
//! `inkan firmware sign` signs a manifest with a token key. One test per
//! binary because SOFTHSM2_CONF is process-wide.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use inkan_pki::pkcs11::{Pkcs11Signer, TokenKey};
use inkan_pki::CaSigner;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn serve_signs_commands_with_a_token_key() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    inkan_pki::pkcs11::softhsm::init_token(d, "inkan-cloud", "87654321", "123456").unwrap();
    let key = Pkcs11Signer::generate(
        &TokenKey {
            module: inkan_pki::pkcs11::softhsm::MODULE.into(),
            token: "inkan-cloud".into(),
            pin: "123456".into(),
            label: "command".into(),
        },
        inkan_pki::KeyCurve::P256,
    )
    .unwrap();
    let point = key.public_point();
    drop(key);
    let inkan = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_inkan"));
        c.current_dir(d)
            .env("INKAN_CA_PASSPHRASE", "token test")
            .env("INKAN_PKCS11_PIN", "123456");
        c
    };
    // A cloud key, from a factory.
    let out = inkan()
        .args(["factory", "init", "--org", "Token Org"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = |udp: bool| {
        if udp {
            std::net::UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        } else {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        }
    };
    let (coap, api) = (port(true), port(false));
    let db = d.join("cloud.db");
    let mut serve = inkan()
        .args(["serve", "--db", db.to_str().unwrap()])
        .args(["--coap", &format!("127.0.0.1:{coap}")])
        .args(["--api", &format!("127.0.0.1:{api}")])
        .arg("--cloud-key")
        .arg(d.join("factory/keys/dev-cloud-auth.key.pem"))
        .args(["--command-key-pkcs11", inkan_pki::pkcs11::softhsm::MODULE])
        .args([
            "--command-token",
            "inkan-cloud",
            "--command-key-label",
            "command",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    BufReader::new(serve.stderr.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    assert!(banner.contains("inkan serve"), "{banner}");

    // A device registered individually, a command for it.
    let boot = inkan()
        .args([
            "cloud",
            "bootstrap",
            "--db",
            db.to_str().unwrap(),
            "--tenant",
            "t",
        ])
        .output()
        .unwrap();
    let boot = String::from_utf8(boot.stdout).unwrap();
    let token = boot
        .split("shown once): ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    let dev_key = inkan_pki::SoftwareKey::generate(inkan_pki::KeyCurve::P256);
    let ca = inkan_pki::cert::issue_root(&dev_key, "o", "ca", &Default::default()).unwrap();
    let fam = inkan_pki::cert::issue_family(
        &dev_key,
        &ca,
        &dev_key.public_point(),
        "o",
        "fam",
        &Default::default(),
    )
    .unwrap();
    let leaf = inkan_pki::cert::issue_device(
        &dev_key,
        &fam,
        &inkan_pki::SoftwareKey::generate(inkan_pki::KeyCurve::P256).public_point(),
        &inkan_pki::DeviceProfile {
            serial: "0A0B0C".into(),
            organization: "o".into(),
            family: "fam".into(),
            key_agreement: false,
            ueid: None,
        },
        &Default::default(),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{api}");
    let auth = format!("Bearer {token}");
    // Claiming a device needs its family registered, with proof of
    // possession of the family key.
    let ch: serde_json::Value = ureq::post(&format!("{base}/v1/families/challenge"))
        .set("Authorization", &auth)
        .send_json(serde_json::json!({ "certificate_pem": fam.to_pem() }))
        .unwrap()
        .into_json()
        .unwrap();
    let challenge = hex::decode(ch["challenge_hex"].as_str().unwrap()).unwrap();
    let proof = inkan_pki::signer::sign_raw(&dev_key, &challenge).unwrap();
    ureq::post(&format!("{base}/v1/families"))
        .set("Authorization", &auth)
        .send_json(serde_json::json!({
            "name": "fam",
            "certificate_pem": fam.to_pem(),
            "proof_hex": hex::encode(proof),
        }))
        .unwrap();
    let dev: serde_json::Value = ureq::post(&format!("{base}/v1/devices"))
        .set("Authorization", &auth)
        .send_json(serde_json::json!({ "certificate_pem": leaf.to_pem() }))
        .unwrap()
        .into_json()
        .unwrap();
    let cmds: serde_json::Value = ureq::post(&format!("{base}/v1/commands"))
        .set("Authorization", &auth)
        .send_json(serde_json::json!({ "device": dev["id"], "action": "open" }))
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(cmds[0]["state"], "queued");
    // The stored COSE_Sign1 verifies with the token's key.
    let cose = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = inkan_cloud::Store::open(db.to_str().unwrap())
            .await
            .unwrap();
        let r = sqlx::query("SELECT cose FROM commands")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        sqlx::Row::try_get::<Vec<u8>, _>(&r, "cose").unwrap()
    });
    let (c, tbs, sig) = inkan_proto::command::Command::open(&cose).unwrap();
    assert_eq!(c.device, "0A0B0C");
    assert!(inkan_pki::signer::verify_raw(&point, &tbs, &sig));
    serve.kill().unwrap();
    serve.wait().unwrap();

    // The same token key signs a firmware manifest from the command line;
    // the manifest verifies with the token's public key.
    std::fs::write(d.join("app.bin"), vec![7u8; 3000]).unwrap();
    let out = inkan()
        .args(["firmware", "sign", "app.bin"])
        .args(["--pkcs11-module", inkan_pki::pkcs11::softhsm::MODULE])
        .args(["--token", "inkan-cloud", "--label", "command"])
        .args([
            "--class",
            "fam",
            "--version",
            "1.0",
            "--security-version",
            "1",
        ])
        .args(["--out", "app.manifest"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = inkan_pki::firmware::verify(&std::fs::read(d.join("app.manifest")).unwrap(), &point)
        .unwrap();
    assert_eq!(
        (m.class.as_str(), m.security_version, m.size),
        ("fam", 1, 3000)
    );
}
