//! `inkan factory` end to end: init, family, a personalization batch killed
//! with SIGKILL at random moments and resumed until done (every chip gets
//! exactly one certificate, none is skipped), manifest verification, a
//! tampered manifest, revocation lists, and clear errors for bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn inkan(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_inkan"));
    c.env("INKAN_CA_PASSPHRASE", "factory test passphrase")
        .arg("factory")
        .arg("--dir")
        .arg(dir.join("factory"));
    c
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

fn err(out: Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn killed_batches_resume_to_exactly_one_certificate_per_chip() {
    let dir = tempfile::tempdir().unwrap();
    ok(inkan(dir.path())
        .args(["init", "--org", "Kill Test"])
        .output()
        .unwrap());
    ok(inkan(dir.path())
        .args(["family", "create", "thermo"])
        .output()
        .unwrap());
    let count = 12;
    let args = [
        "personalize",
        "--family",
        "thermo",
        "--count",
        "12",
        "--batch",
        "k1",
    ];
    let mut seed = 0x9E3779B97F4A7C15u64;
    let mut kills = 0;
    for _ in 0..6 {
        let mut child = inkan(dir.path())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Wait until the batch has made progress in this run (its journal
        // grew), then kill it after a random delay: every round dies with
        // work in flight, however fast or loaded the machine is.
        let journal = dir.path().join("factory/batches/k1/journal.jsonl");
        let len_at_start = std::fs::metadata(&journal).map(|m| m.len()).unwrap_or(0);
        let progress_deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < progress_deadline
            && std::fs::metadata(&journal).map(|m| m.len()).unwrap_or(0) == len_at_start
            && child.try_wait().unwrap().is_none()
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        let deadline = Instant::now() + Duration::from_millis(seed % 120);
        let mut finished = false;
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                finished = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if finished {
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    // Resume to completion.
    let out = ok(inkan(dir.path()).args(args).output().unwrap());
    assert!(
        out.contains(&format!("personalized {count} chips")),
        "{out}"
    );
    assert!(
        kills > 0,
        "the batch finished before any kill: make it bigger"
    );

    // Exactly one certificate issued per chip, and each chip holds it.
    let batch = dir.path().join("factory/batches/k1");
    let journal = std::fs::read_to_string(batch.join("journal.jsonl")).unwrap();
    let mut issued = std::collections::HashMap::new();
    for line in journal.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["event"] == "issued" {
            let prev = issued.insert(
                v["serial"].as_str().unwrap().to_string(),
                v["certificate"].as_str().unwrap().to_string(),
            );
            assert!(
                prev.is_none(),
                "two certificates issued for chip {}",
                v["serial"]
            );
        }
    }
    assert_eq!(issued.len(), count);
    for entry in std::fs::read_dir(batch.join("chips")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "json") {
            continue; // a chip's seal
        }
        let chip = inkan_se::Chip::open(&path).unwrap();
        let serial = hex::encode_upper(chip.serial());
        let cert = hex::decode(&issued[&serial]).unwrap();
        assert_eq!(
            &chip.nvm().zones[0].data[..cert.len()],
            cert.as_slice(),
            "chip {serial}"
        );
        assert_eq!(chip.nvm().life_cycle, 0x83);
    }
    let out = ok(inkan(dir.path())
        .args(["manifest", "verify"])
        .arg(batch.join("manifest.cose"))
        .output()
        .unwrap());
    assert!(out.contains(&format!("{count} devices")), "{out}");
    eprintln!("batch survived {kills} kills");
}

#[test]
fn manifests_crls_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    // Before init.
    assert!(
        err(inkan(dir.path()).args(["family", "list"]).output().unwrap())
            .contains("run `inkan factory init` first")
    );
    // Without a passphrase.
    let out = Command::new(env!("CARGO_BIN_EXE_inkan"))
        .args(["factory", "--dir"])
        .arg(dir.path().join("factory"))
        .args(["init", "--org", "x"])
        .env_remove("INKAN_CA_PASSPHRASE")
        .output()
        .unwrap();
    assert!(err(out).contains("passphrase"));
    assert!(
        !dir.path().join("factory").exists(),
        "a failed init left files behind"
    );

    ok(inkan(dir.path())
        .args(["init", "--org", "Test Org", "--curve", "p384"])
        .output()
        .unwrap());
    assert!(err(inkan(dir.path())
        .args(["init", "--org", "Test Org"])
        .output()
        .unwrap())
    .contains("already holds a factory"));
    ok(inkan(dir.path())
        .args(["family", "create", "valve", "--no-key-agreement"])
        .output()
        .unwrap());
    assert!(err(inkan(dir.path())
        .args(["family", "create", "Valve!"])
        .output()
        .unwrap())
    .contains("invalid family name"));
    assert!(err(inkan(dir.path())
        .args(["personalize", "--family", "pump", "--count", "1"])
        .output()
        .unwrap())
    .contains("unknown family"));
    ok(inkan(dir.path())
        .args([
            "personalize",
            "--family",
            "valve",
            "--count",
            "2",
            "--batch",
            "v1",
            "--personality",
            "a110",
        ])
        .output()
        .unwrap());
    let manifest = dir.path().join("factory/batches/v1/manifest.cose");
    ok(inkan(dir.path())
        .args(["manifest", "verify"])
        .arg(&manifest)
        .output()
        .unwrap());
    // Resuming with other parameters is refused.
    assert!(err(inkan(dir.path())
        .args([
            "personalize",
            "--family",
            "valve",
            "--count",
            "3",
            "--batch",
            "v1"
        ])
        .output()
        .unwrap())
    .contains("resume it with the same parameters"));

    // A tampered manifest is refused.
    let mut bytes = std::fs::read(&manifest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    let tampered = dir.path().join("tampered.cose");
    std::fs::write(&tampered, &bytes).unwrap();
    assert!(err(inkan(dir.path())
        .args(["manifest", "verify"])
        .arg(&tampered)
        .output()
        .unwrap())
    .contains("refused"));

    // CRL export in PEM and DER, and a revocation.
    let pem = ok(inkan(dir.path())
        .args(["family", "crl", "valve"])
        .output()
        .unwrap());
    assert!(pem.starts_with("-----BEGIN X509 CRL-----"));
    let cert_serial = {
        let m = inkan_pki::manifest::verify(
            &std::fs::read(&manifest).unwrap(),
            &inkan_pki::cert::IssuedCert::from_pem_or_der(
                &std::fs::read(dir.path().join("factory/root.crt.pem")).unwrap(),
            )
            .unwrap(),
            std::time::SystemTime::now(),
        )
        .unwrap();
        inkan_pki::cert::IssuedCert::from_der(&m.entries[0].certificate)
            .unwrap()
            .serial_hex()
    };
    // Something the family never issued is refused, with the reason, and
    // nothing is listed.
    for bogus in ["00", "DEADBEEF", "zz"] {
        let out = inkan(dir.path())
            .args(["family", "revoke", "valve", bogus])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bogus} accepted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("issued no certificate"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let said = ok(inkan(dir.path())
        .args(["family", "revoke", "valve", &cert_serial])
        .output()
        .unwrap());
    assert!(
        said.contains(&format!("revoked certificate {cert_serial}")),
        "{said}"
    );
    let der_path = dir.path().join("valve.crl");
    ok(inkan(dir.path())
        .args(["family", "crl", "valve", "--der", "--out"])
        .arg(&der_path)
        .output()
        .unwrap());
    let text = Command::new("openssl")
        .args(["crl", "-inform", "DER", "-noout", "-text", "-in"])
        .arg(&der_path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&text.stdout)
        .to_uppercase()
        .contains(&cert_serial.to_uppercase()));
    let list = ok(inkan(dir.path()).args(["family", "list"]).output().unwrap());
    assert!(
        list.contains("valve") && list.contains("revoked 1"),
        "{list}"
    );
}

/// The real-factory path: the same personalization talks to a chip through
/// a transport (here an emulator served on a Unix socket).
#[test]
fn personalizes_a_chip_reached_through_a_transport() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    ok(inkan(dir.path())
        .args(["init", "--org", "Socket Org"])
        .output()
        .unwrap());
    ok(inkan(dir.path())
        .args(["family", "create", "gate"])
        .output()
        .unwrap());
    let state = dir.path().join("chip.json");
    let sock = dir.path().join("se.sock");
    let mut server = Command::new(env!("CARGO_BIN_EXE_inkan"))
        .args(["se", "serve", "--init", "--personality", "a110", "--state"])
        .arg(&state)
        .arg("--listen")
        .arg(format!("unix:{}", sock.display()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = format!("unix:{}", sock.display());
    let personalize = |batch: &str| {
        inkan(dir.path())
            .args([
                "personalize",
                "--family",
                "gate",
                "--batch",
                batch,
                "--connect",
                &addr,
            ])
            .output()
            .unwrap()
    };
    let out = ok(personalize("line-3"));
    assert!(
        out.contains("Personalized") && out.contains("personalized 1 chips"),
        "{out}"
    );
    // Again: the chip is done in this batch, nothing changes.
    let out = ok(personalize("line-3"));
    assert!(out.contains("AlreadyDone"), "{out}");
    // Another batch sees a locked chip that already has a certificate.
    let e = err(personalize("line-4"));
    assert!(e.contains("duplicate serial"), "{e}");
    server.kill().unwrap();
    server.wait().unwrap();
    let chip = inkan_se::Chip::open(&state).unwrap();
    assert_eq!(chip.nvm().life_cycle, 0x83);
}

/// `inkan … | head`: the reader goes away before the output is written; the
/// program ends quietly instead of panicking.
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = inkan(dir.path())
        .args(["init", "--org", "Pipe Org"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.status.success(), "{err}");
}
