//! `inkan accessory` against a served cartridge chip: made by `inkan
//! factory` as an accessory family with a usage limit, checked genuine by a
//! host pinning the family certificate, used until it runs out (then
//! refused as exhausted), refused as from an unknown root under another
//! pinned certificate and as revoked under the family's CRL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn inkan() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_inkan"));
    c.env("INKAN_CA_PASSPHRASE", "accessory test");
    c
}

fn factory(dir: &Path, args: &[&str]) -> String {
    ok(inkan()
        .arg("factory")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap())
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "inkan failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn refused(out: Output) -> String {
    assert!(
        !out.status.success(),
        "expected a refusal: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn a_host_checks_and_uses_its_cartridge_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let maker = tmp.path().join("maker");
    factory(&maker, &["init", "--org", "Ink Maker"]);
    let out = factory(
        &maker,
        &[
            "family",
            "create",
            "ink",
            "--accessory",
            "--usage-limit",
            "3",
        ],
    );
    assert!(out.contains("pairing key"), "{out}");
    factory(
        &maker,
        &[
            "personalize",
            "--family",
            "ink",
            "--count",
            "1",
            "--batch",
            "c1",
        ],
    );
    let secrets = std::fs::read_dir(maker.join("batches/c1/devices"))
        .unwrap()
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "json"))
        .unwrap()
        .path();
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&secrets).unwrap()).unwrap();
    let state = s["state"].as_str().unwrap().to_string();
    let mut chip = inkan()
        .args(["se", "serve", "--listen"])
        .arg(format!(
            "unix:{}",
            tmp.path().join("cartridge.sock").display()
        ))
        .arg("--state")
        .arg(&state)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(chip.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let se = line.rsplit(" on ").next().unwrap().trim().to_string();
    let family_cert = maker.join("families/ink/family.crt.pem");
    let pairing = maker.join("families/ink/pairing.key");
    let host = |cmd: &str, root: &Path, extra: &[&str]| {
        inkan()
            .args(["accessory", cmd, "--se", &se, "--root"])
            .arg(root)
            .args(extra)
            .output()
            .unwrap()
    };
    let use_units = |n: &str| {
        inkan()
            .args(["accessory", "use", "--se", &se, "--root"])
            .arg(&family_cert)
            .arg("--pairing-key")
            .arg(&pairing)
            .args(["--count", n])
            .output()
            .unwrap()
    };

    let out = ok(host("verify", &family_cert, &[]));
    assert!(
        out.starts_with("genuine") && out.contains("3 unit(s) left"),
        "{out}"
    );
    let out = ok(use_units("2"));
    assert!(out.contains("1 unit(s) left"), "{out}");
    let err = refused(use_units("2"));
    assert!(
        err.contains("refused: exhausted: 1 unit(s) left, 2 asked"),
        "{err}"
    );
    let out = ok(use_units("1"));
    assert!(out.contains("0 unit(s) left"), "{err}");

    // Another maker's certificate pinned: unknown root.
    let other = tmp.path().join("other");
    factory(&other, &["init", "--org", "Someone Else"]);
    factory(&other, &["family", "create", "ink", "--accessory"]);
    let err = refused(host(
        "verify",
        &other.join("families/ink/family.crt.pem"),
        &[],
    ));
    assert!(err.contains("refused: unknown root"), "{err}");

    // Revoked in the family's CRL.
    let serial = s["serial"].as_str().unwrap().to_string();
    factory(&maker, &["family", "revoke", "ink", &serial]);
    let crl = maker.join("families/ink/crl.pem");
    let err = refused(host(
        "verify",
        &family_cert,
        &["--crl", crl.to_str().unwrap()],
    ));
    assert!(err.contains("refused: revoked"), "{err}");
    let _ = chip.kill();
    let _ = chip.wait();
}
