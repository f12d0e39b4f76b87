//! The whole story through the command line: a factory personalizes a chip,
//! `inkan se serve` puts it on a socket, `inkan serve` runs the cloud,
//! `inkan cloud` registers the family over the operator API, and
//! `inkan device connect` authenticates the chip; then the operator revokes
//! it and the next connection is refused. And `inkan device run` streams
//! readings while the service is killed: nothing acknowledged is lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

fn inkan(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_inkan"));
    c.current_dir(dir).env("INKAN_CA_PASSPHRASE", "cli test");
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

fn free_port(udp: bool) -> u16 {
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
}

fn wait_banner(child: &mut Child) {
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("serv"), "unexpected banner {line:?}");
}

/// A factory in `d` with one family and one personalized emulated chip,
/// served by `inkan se serve` on a Unix socket: the server, the socket and
/// the chip's device secrets file.
fn one_chip_on_a_socket(d: &Path, org: &str, family: &str) -> (Child, PathBuf, PathBuf) {
    one_chip_of(d, org, family, &[])
}

/// The same, the family created with `create` arguments added.
fn one_chip_of(d: &Path, org: &str, family: &str, create: &[&str]) -> (Child, PathBuf, PathBuf) {
    let mut create_args = vec!["factory", "family", "create", family];
    create_args.extend_from_slice(create);
    for args in [
        vec!["factory", "init", "--org", org],
        create_args,
        vec![
            "factory",
            "personalize",
            "--family",
            family,
            "--count",
            "1",
            "--batch",
            "b1",
        ],
    ] {
        ok(inkan(d).args(&args).output().unwrap());
    }
    // The first chip state (or device secrets) file, not a chip's seal.
    let first = |dir: &str| {
        std::fs::read_dir(d.join("factory/batches/b1").join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "json"))
            .unwrap()
    };
    let (chip, secrets) = (first("chips"), first("devices"));
    let sock = d.join("se.sock");
    let mut se = inkan(d)
        .args([
            "se",
            "serve",
            "--listen",
            &format!("unix:{}", sock.display()),
            "--state",
        ])
        .arg(&chip)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_banner(&mut se);
    (se, sock, secrets)
}

#[test]
fn factory_cloud_and_device_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // The chip on a socket, the cloud on loopback.
    // A gate counts its operations: 5 units of use, one per command run.
    let (mut se, sock, secrets) = one_chip_of(d, "CLI Org", "gate", &["--usage-limit", "5"]);
    let (coap, api) = (free_port(true), free_port(false));
    let db = d.join("cloud.db");
    let mut cloud = inkan(d)
        .args([
            "serve",
            "--db",
            db.to_str().unwrap(),
            "--coap",
            &format!("127.0.0.1:{coap}"),
            "--api",
            &format!("127.0.0.1:{api}"),
        ])
        .arg("--cloud-key")
        .arg(d.join("factory/keys/dev-cloud-auth.key.pem"))
        .arg("--command-key")
        .arg(d.join("factory/keys/dev-cloud-command.key.pem"))
        .arg("--firmware-key-pub")
        .arg(d.join("factory/anchors/firmware.pub.pem"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_banner(&mut cloud);
    let api_url = format!("http://127.0.0.1:{api}");

    let boot = ok(inkan(d)
        .args([
            "cloud",
            "bootstrap",
            "--db",
            db.to_str().unwrap(),
            "--tenant",
            "acme",
        ])
        .output()
        .unwrap());
    let token = boot
        .split("admin token (shown once): ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    let cloud_cmd = |args: &[&str]| {
        inkan(d)
            .args(["cloud", "--api", &api_url, "--token", &token])
            .args(args)
            .output()
            .unwrap()
    };

    let fam = ok(cloud_cmd(&[
        "family",
        "register",
        "--name",
        "gate",
        "--cert",
        d.join("factory/families/gate/family.crt.pem")
            .to_str()
            .unwrap(),
        "--key",
        d.join("factory/keys/family-gate.key.pem").to_str().unwrap(),
    ]));
    assert!(fam.contains("\"status\": \"active\""), "{fam}");

    let connect = || {
        inkan(d)
            .args([
                "device",
                "connect",
                "--se",
                &format!("unix:{}", sock.display()),
                "--cloud",
                &format!("coap://127.0.0.1:{coap}"),
            ])
            .arg("--device-secrets")
            .arg(&secrets)
            .output()
            .unwrap()
    };
    let out = ok(connect());
    assert!(out.contains("authenticated: device"), "{out}");

    let devices: serde_json::Value = serde_json::from_str(&ok(cloud_cmd(&["devices"]))).unwrap();
    assert_eq!(devices.as_array().unwrap().len(), 1);
    assert_eq!(devices[0]["enrolled_by"], "family");
    let id = devices[0]["id"].as_str().unwrap().to_string();

    // A command to the valve: signed by the service, verified by the chip.
    let sent = ok(cloud_cmd(&["command", "--device", &id, "--action", "open"]));
    assert!(sent.contains("\"queued\""), "{sent}");
    let run = ok(inkan(d)
        .args([
            "device",
            "run",
            "--se",
            &format!("unix:{}", sock.display()),
            "--cloud",
            &format!("coap://127.0.0.1:{coap}"),
            "--count",
            "1",
            "--batch",
            "3",
            "--interval-ms",
            "0",
        ])
        .arg("--device-secrets")
        .arg(&secrets)
        .output()
        .unwrap());
    assert!(run.contains("batch 1: 3 readings stored"), "{run}");
    assert!(run.contains("open: succeeded (valve open)"), "{run}");
    assert!(run.contains("usage reported: 5 unit(s) left"), "{run}");
    assert!(run.contains("usage: 4 unit(s) left"), "{run}");
    // The unit used is reported at the next batch; the operator sees it,
    // and sets an alert level for the family.
    ok(inkan(d)
        .args([
            "device",
            "run",
            "--se",
            &format!("unix:{}", sock.display()),
            "--cloud",
            &format!("coap://127.0.0.1:{coap}"),
            "--count",
            "1",
            "--batch",
            "1",
            "--interval-ms",
            "0",
        ])
        .arg("--device-secrets")
        .arg(&secrets)
        .output()
        .unwrap());
    let usage: serde_json::Value =
        serde_json::from_str(&ok(cloud_cmd(&["device", "usage", &id]))).unwrap();
    assert_eq!(usage["remaining"], 4, "{usage}");
    assert_eq!(usage["first_remaining"], 5, "{usage}");
    // The command ids run are on disk by default, so a restart never runs
    // a re-delivered command twice.
    let ran = std::fs::read_to_string(secrets.with_extension("executed")).unwrap();
    assert_eq!(ran.lines().count(), 1, "{ran}");
    let cmds = ok(cloud_cmd(&["commands", "--device", &id]));
    assert!(cmds.contains("\"succeeded\""), "{cmds}");
    let readings = ok(cloud_cmd(&["readings", "--format", "csv"]));
    // A header, 3 + 1 readings, and the two usage reports.
    assert_eq!(readings.lines().count(), 7, "{readings}");

    // A firmware update through a campaign, taken by `device run`.
    for (name, fill, sv) in [("v1", 1u8, "1"), ("v2", 2u8, "2")] {
        std::fs::write(d.join(format!("{name}.bin")), vec![fill; 5000]).unwrap();
        ok(inkan(d)
            .args(["firmware", "sign", &format!("{name}.bin"), "--key"])
            .arg(d.join("factory/keys/dev-firmware.key.pem"))
            .args([
                "--class",
                "gate",
                "--version",
                &format!("{sv}.0"),
                "--security-version",
                sv,
            ])
            .args(["--out", &format!("{name}.manifest")])
            .output()
            .unwrap());
    }
    let fam_id = {
        let fams: serde_json::Value =
            serde_json::from_str(&ok(cloud_cmd(&["family", "list"]))).unwrap();
        fams[0]["id"].as_str().unwrap().to_string()
    };
    let fam_usage: serde_json::Value = serde_json::from_str(&ok(cloud_cmd(&[
        "family",
        "usage",
        &fam_id,
        "--alert-below",
        "3",
    ])))
    .unwrap();
    assert_eq!(fam_usage["alert_below"], 3, "{fam_usage}");
    assert_eq!(fam_usage["used"], 1, "{fam_usage}");
    let up: serde_json::Value = serde_json::from_str(&ok(cloud_cmd(&[
        "firmware-upload",
        "--family",
        &fam_id,
        "--image",
        d.join("v2.bin").to_str().unwrap(),
        "--manifest",
        d.join("v2.manifest").to_str().unwrap(),
    ])))
    .unwrap();
    let fw = up["id"].as_str().unwrap().to_string();
    let camp: serde_json::Value =
        serde_json::from_str(&ok(cloud_cmd(&["campaign", "--firmware", &fw]))).unwrap();
    let run = ok(inkan(d)
        .args([
            "device",
            "run",
            "--se",
            &format!("unix:{}", sock.display()),
            "--cloud",
            &format!("coap://127.0.0.1:{coap}"),
            "--count",
            "1",
            "--batch",
            "1",
            "--interval-ms",
            "0",
            "--slots",
        ])
        .arg(d.join("slots"))
        .arg("--image")
        .arg(d.join("v1.bin"))
        .arg("--manifest")
        .arg(d.join("v1.manifest"))
        .arg("--device-secrets")
        .arg(&secrets)
        .output()
        .unwrap());
    assert!(
        run.contains("firmware updated: security version 2 confirmed"),
        "{run}"
    );
    let status = ok(cloud_cmd(&[
        "campaign-status",
        camp["id"].as_str().unwrap(),
    ]));
    assert!(status.contains("\"completed\""), "{status}");
    let devices = ok(cloud_cmd(&["devices"]));
    assert!(
        devices.contains("\"firmware_version\": \"2.0\""),
        "{devices}"
    );

    ok(cloud_cmd(&["device", "revoke", &id]));
    let refused = connect();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("device revoked"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let audit = ok(cloud_cmd(&["audit", "--limit", "100"]));
    assert!(
        audit.contains("device-revoke") && audit.contains("enroll"),
        "{audit}"
    );
    // A bad token is refused with a clear message.
    let bad = inkan(d)
        .args(["cloud", "--api", &api_url, "--token", "ink_x_y", "devices"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("401"));

    se.kill().unwrap();
    cloud.kill().unwrap();
    let _ = (se.wait(), cloud.wait());
}

/// A fresh database: a SQLite file in `dir`, or a new database in the
/// throwaway PostgreSQL cluster scripts/test.sh starts.
fn fresh_db(postgres: bool, dir: &Path) -> String {
    if !postgres {
        return dir.join("crash.db").to_str().unwrap().to_string();
    }
    let admin = std::env::var("INKAN_TEST_POSTGRES")
        .expect("INKAN_TEST_POSTGRES is not set: run scripts/test.sh, which starts a throwaway PostgreSQL cluster");
    let name = format!(
        "inkan_crash_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
    });
    format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
}

fn spawn_serve(d: &Path, db: &str, coap: u16, api: u16) -> Child {
    let mut c = inkan(d)
        .args([
            "serve",
            "--db",
            db,
            "--coap",
            &format!("127.0.0.1:{coap}"),
            "--api",
            &format!("127.0.0.1:{api}"),
        ])
        .arg("--cloud-key")
        .arg(d.join("factory/keys/dev-cloud-auth.key.pem"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_banner(&mut c);
    c
}

/// `inkan device run` streams readings; `inkan serve` is killed with
/// SIGKILL in the middle. Every batch the device saw acknowledged is in
/// the store after a restart (at most the batch in flight is stored
/// without its acknowledgement having arrived).
fn readings_acknowledged_before_a_kill_9_survive(postgres: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (mut se, sock, secrets) = one_chip_on_a_socket(d, "Crash Org", "meter");
    let db = fresh_db(postgres, d);
    let boot = ok(inkan(d)
        .args(["cloud", "bootstrap", "--db", &db, "--tenant", "acme"])
        .output()
        .unwrap());
    let token = boot
        .split("admin token (shown once): ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    let (coap, api) = (free_port(true), free_port(false));
    let mut cloud = spawn_serve(d, &db, coap, api);
    let api_url = format!("http://127.0.0.1:{api}");
    let cloud_cmd = |args: &[&str]| {
        inkan(d)
            .args(["cloud", "--api", &api_url, "--token", &token])
            .args(args)
            .output()
            .unwrap()
    };
    ok(cloud_cmd(&[
        "family",
        "register",
        "--name",
        "meter",
        "--cert",
        d.join("factory/families/meter/family.crt.pem")
            .to_str()
            .unwrap(),
        "--key",
        d.join("factory/keys/family-meter.key.pem")
            .to_str()
            .unwrap(),
    ]));

    let mut run = inkan(d)
        .args([
            "device",
            "run",
            "--se",
            &format!("unix:{}", sock.display()),
            "--cloud",
            &format!("coap://127.0.0.1:{coap}"),
            "--interval-ms",
            "2",
            "--batch",
            "10",
        ])
        .arg("--device-secrets")
        .arg(&secrets)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = run.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Kill the service at a moment that depends on the clock: after 5 to
    // 24 acknowledged batches.
    let kill_after = 5 + usize::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
            % 20,
    )
    .unwrap();
    let mut acked = 0;
    while acked < kill_after {
        let line = rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
        if line.contains("readings stored") {
            acked += 1;
        }
    }
    cloud.kill().unwrap();
    cloud.wait().unwrap();
    // Acknowledgements already on their way still count.
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(500)) {
        if line.contains("readings stored") {
            acked += 1;
        }
    }
    run.kill().unwrap();
    run.wait().unwrap();

    let mut cloud = spawn_serve(d, &db, coap, api);
    let csv = ok(cloud_cmd(&["readings", "--format", "csv"]));
    let stored = csv.lines().count() - 1;
    assert!(
        stored >= acked * 10 && stored <= (acked + 1) * 10,
        "{acked} batches acknowledged, {stored} readings stored"
    );
    cloud.kill().unwrap();
    cloud.wait().unwrap();
    se.kill().unwrap();
    se.wait().unwrap();
}

#[test]
fn readings_survive_kill_9_on_sqlite() {
    readings_acknowledged_before_a_kill_9_survive(false);
}

#[test]
fn readings_survive_kill_9_on_postgres() {
    readings_acknowledged_before_a_kill_9_survive(true);
}

/// The OEM signs a manifest, checks it, and a device boots it through its
/// chip (then records its security version); a tampered image and a
/// downgrade are refused with their reasons.
#[test]
fn firmware_signed_checked_and_booted_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (mut se, sock, secrets) = one_chip_on_a_socket(d, "FW Org", "pump");
    let image: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(d.join("app.bin"), &image).unwrap();
    let sign = |img: &str, sv: &str, out: &str| {
        ok(inkan(d)
            .args(["firmware", "sign", img, "--key"])
            .arg(d.join("factory/keys/dev-firmware.key.pem"))
            .args([
                "--class",
                "pump",
                "--version",
                "2.0",
                "--security-version",
                sv,
            ])
            .args(["--out", out])
            .output()
            .unwrap())
    };
    sign("app.bin", "5", "app.manifest");
    let verified = ok(inkan(d)
        .args(["firmware", "verify", "app.bin", "app.manifest", "--key-pub"])
        .arg(d.join("factory/anchors/firmware.pub.pem"))
        .output()
        .unwrap());
    assert!(verified.contains("security version 5"), "{verified}");
    let boot = |img: &str, manifest: &str, confirm: bool| {
        let mut c = inkan(d);
        c.args([
            "device",
            "boot",
            "--se",
            &format!("unix:{}", sock.display()),
        ])
        .arg("--device-secrets")
        .arg(&secrets)
        .args(["--image", img, "--manifest", manifest]);
        if confirm {
            c.arg("--confirm");
        }
        c.output().unwrap()
    };
    let out = ok(boot("app.bin", "app.manifest", true));
    assert!(out.contains("boot check passed"), "{out}");
    assert!(out.contains("records security version 5"), "{out}");
    // A tampered image.
    let mut bad = image.clone();
    bad[5] ^= 1;
    std::fs::write(d.join("bad.bin"), &bad).unwrap();
    let out = boot("bad.bin", "app.manifest", false);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tampered"));
    // A correctly signed downgrade.
    std::fs::write(d.join("old.bin"), &image[..50_000]).unwrap();
    sign("old.bin", "4", "old.manifest");
    let out = boot("old.bin", "old.manifest", false);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("downgrade refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    se.kill().unwrap();
    se.wait().unwrap();
}

/// A maker hands its device to an operator with a signed transfer, through
/// the CLI with two tenants and two tokens: the operator's device
/// authenticates and sends readings without being reflashed, the maker no
/// longer lists, reads or acts on it; then the operator decommissions it
/// and the device, at its next contact, destroys its secrets.
#[test]
fn a_device_handed_from_maker_to_operator_then_decommissioned() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (mut se, sock, secrets) = one_chip_on_a_socket(d, "Maker Org", "lamp");
    let (coap, api) = (free_port(true), free_port(false));
    let db = d.join("cloud.db");
    let mut cloud = inkan(d)
        .args([
            "serve",
            "--db",
            db.to_str().unwrap(),
            "--coap",
            &format!("127.0.0.1:{coap}"),
            "--api",
            &format!("127.0.0.1:{api}"),
        ])
        .arg("--cloud-key")
        .arg(d.join("factory/keys/dev-cloud-auth.key.pem"))
        .arg("--command-key")
        .arg(d.join("factory/keys/dev-cloud-command.key.pem"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_banner(&mut cloud);
    let api_url = format!("http://127.0.0.1:{api}");
    let token_of = |tenant: &str| {
        ok(inkan(d)
            .args(["cloud", "bootstrap", "--db", db.to_str().unwrap()])
            .args(["--tenant", tenant])
            .output()
            .unwrap())
        .split("admin token (shown once): ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string()
    };
    let (maker, operator) = (token_of("maker"), token_of("operator"));
    // Tokens through the CLI: a short-lived viewer token, listed, revoked.
    let viewer: serde_json::Value = serde_json::from_str(&ok(inkan(d)
        .args(["cloud", "--api", &api_url, "--token", &maker])
        .args(["token", "create", "--role", "viewer", "--ttl", "600"])
        .output()
        .unwrap()))
    .unwrap();
    let viewer = viewer["token"].as_str().unwrap().to_string();
    let viewer_id = viewer
        .trim_start_matches("ink_")
        .split_once('_')
        .unwrap()
        .0
        .to_string();
    let listed = ok(inkan(d)
        .args([
            "cloud", "--api", &api_url, "--token", &maker, "token", "list",
        ])
        .output()
        .unwrap());
    assert!(listed.contains(&viewer_id), "{listed}");
    ok(inkan(d)
        .args(["cloud", "--api", &api_url, "--token", &viewer, "devices"])
        .output()
        .unwrap());
    ok(inkan(d)
        .args([
            "cloud", "--api", &api_url, "--token", &maker, "token", "revoke", &viewer_id,
        ])
        .output()
        .unwrap());
    let refused = inkan(d)
        .args(["cloud", "--api", &api_url, "--token", &viewer, "devices"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));
    let as_ = |token: &str, args: &[&str]| {
        inkan(d)
            .args(["cloud", "--api", &api_url, "--token", token])
            .args(args)
            .output()
            .unwrap()
    };
    ok(as_(
        &maker,
        &[
            "family",
            "register",
            "--name",
            "lamp",
            "--cert",
            d.join("factory/families/lamp/family.crt.pem")
                .to_str()
                .unwrap(),
            "--key",
            d.join("factory/keys/family-lamp.key.pem").to_str().unwrap(),
        ],
    ));
    let device = |extra: &[&str]| {
        inkan(d)
            .args(["device"])
            .args(extra)
            .args(["--se", &format!("unix:{}", sock.display())])
            .args(["--cloud", &format!("coap://127.0.0.1:{coap}")])
            .arg("--device-secrets")
            .arg(&secrets)
            .output()
            .unwrap()
    };
    ok(device(&["connect"]));
    let listed: serde_json::Value = serde_json::from_str(&ok(as_(&maker, &["devices"]))).unwrap();
    let id = listed[0]["id"].as_str().unwrap().to_string();
    assert!(
        id.starts_with("01") && id.len() == 34,
        "the id is a UEID: {id}"
    );

    // The maker offers it to the operator; the operator claims it.
    let out = ok(as_(
        &maker,
        &[
            "transfer",
            "offer",
            "--to",
            "operator",
            "--devices",
            &id,
            "--out",
            "t.cose",
        ],
    ));
    assert!(out.contains("\"to\": \"operator\""), "{out}");
    // A tampered copy is refused; the real one claimed once.
    let doc = std::fs::read(d.join("t.cose")).unwrap();
    let mut bad = doc.clone();
    let n = bad.len();
    bad[n - 10] ^= 0x40;
    std::fs::write(d.join("bad.cose"), bad).unwrap();
    assert!(!as_(&operator, &["transfer", "claim", "bad.cose"])
        .status
        .success());
    let claimed = ok(as_(&operator, &["transfer", "claim", "t.cose"]));
    assert!(claimed.contains(&id), "{claimed}");
    let again = as_(&operator, &["transfer", "claim", "t.cose"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already claimed"));

    // The maker sees nothing of it any more.
    assert_eq!(ok(as_(&maker, &["devices"])).trim(), "[]");
    for args in [
        vec!["device", "show", &id],
        vec!["device", "history", &id],
        vec!["device", "suspend", &id],
    ] {
        let out = as_(&maker, &args);
        assert!(!out.status.success(), "the maker could {args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    }
    // The device, not reflashed, works for its new owner.
    let run = ok(device(&[
        "run",
        "--count",
        "1",
        "--batch",
        "2",
        "--interval-ms",
        "0",
    ]));
    assert!(run.contains("batch 1: 2 readings stored"), "{run}");
    let shown = ok(as_(&operator, &["device", "show", &id]));
    assert!(shown.contains("\"status\": \"active\""), "{shown}");
    let readings = ok(as_(&operator, &["readings", "--format", "csv"]));
    assert_eq!(readings.lines().count(), 3, "{readings}");

    // Decommissioned while the device is away; told at its next contact.
    let out = ok(as_(
        &operator,
        &["device", "decommission", &id, "--reason", "end of life"],
    ));
    assert!(out.contains("erase_command"), "{out}");
    let run = ok(device(&["run", "--count", "5", "--interval-ms", "0"]));
    assert!(
        run.contains("this device was decommissioned: its secure element destroyed its secrets"),
        "{run}"
    );
    // It can never authenticate again: its chip no longer signs.
    let again = device(&["connect"]);
    assert!(!again.status.success());
    let history = ok(as_(&operator, &["device", "history", &id]));
    for kind in ["\"transfer\"", "\"decommission\"", "\"secrets-erased\""] {
        assert!(history.contains(kind), "{kind} missing from {history}");
    }
    let _ = cloud.kill();
    let _ = se.kill();
    let _ = cloud.wait();
    let _ = se.wait();
}

/// `inkan device run` started while the service is down (or restarting)
/// keeps trying with backoff, says so on stderr, and authenticates once the
/// service is back.
#[test]
fn device_run_waits_for_the_service_and_authenticates_when_it_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (mut se, sock, secrets) = one_chip_on_a_socket(d, "Retry Org", "gate");
    let (coap, api) = (free_port(true), free_port(false));
    let db = d.join("cloud.db");
    let serve = || {
        let mut c = inkan(d)
            .args([
                "serve",
                "--db",
                db.to_str().unwrap(),
                "--coap",
                &format!("127.0.0.1:{coap}"),
                "--api",
                &format!("127.0.0.1:{api}"),
            ])
            .arg("--cloud-key")
            .arg(d.join("factory/keys/dev-cloud-auth.key.pem"))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_banner(&mut c);
        c
    };
    let mut cloud = serve();
    let token = ok(inkan(d)
        .args(["cloud", "bootstrap", "--db", db.to_str().unwrap()])
        .args(["--tenant", "acme"])
        .output()
        .unwrap())
    .split("admin token (shown once): ")
    .nth(1)
    .unwrap()
    .trim()
    .to_string();
    ok(inkan(d)
        .args([
            "cloud",
            "--api",
            &format!("http://127.0.0.1:{api}"),
            "--token",
            &token,
        ])
        .args(["family", "register", "--name", "gate", "--cert"])
        .arg(d.join("factory/families/gate/family.crt.pem"))
        .arg("--key")
        .arg(d.join("factory/keys/family-gate.key.pem"))
        .output()
        .unwrap());
    // The service goes away; the device starts; the service comes back.
    cloud.kill().unwrap();
    cloud.wait().unwrap();
    let run = inkan(d)
        .args([
            "device",
            "run",
            "--count",
            "1",
            "--batch",
            "2",
            "--interval-ms",
            "0",
        ])
        .args(["--se", &format!("unix:{}", sock.display())])
        .args(["--cloud", &format!("coap://127.0.0.1:{coap}")])
        .arg("--device-secrets")
        .arg(&secrets)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let mut cloud = serve();
    let out = run.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("the cloud is unreachable"), "{stderr}");
    assert!(stderr.contains("authenticating again in"), "{stderr}");
    assert!(stdout.contains("batch 1: 2 readings stored"), "{stdout}");
    let _ = cloud.kill();
    let _ = se.kill();
    let _ = cloud.wait();
    let _ = se.wait();
}

/// Out-of-range and malformed input is refused at once with a clear
/// message: no abort, no 30-second wait, nothing written.
#[test]
fn cli_input_is_bounded_and_store_failures_are_named_quickly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let fails_with = |args: &[&str], want: &str| {
        let t = std::time::Instant::now();
        let out = inkan(d).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            matches!(out.status.code(), Some(1 | 2)),
            "{args:?} ended with {:?}: {err}",
            out.status
        );
        assert!(err.contains(want), "{args:?}: expected {want:?} in {err}");
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "{args:?} took {:?}",
            t.elapsed()
        );
    };
    ok(inkan(d)
        .args(["factory", "init", "--org", "Bounds Org"])
        .output()
        .unwrap());
    ok(inkan(d)
        .args(["factory", "family", "create", "gate"])
        .output()
        .unwrap());
    for count in ["1000000000000", "0", "1.5"] {
        fails_with(
            &[
                "factory",
                "personalize",
                "--family",
                "gate",
                "--count",
                count,
            ],
            "--count",
        );
    }
    assert!(
        !d.join("factory/batches").exists()
            || std::fs::read_dir(d.join("factory/batches"))
                .unwrap()
                .count()
                == 0
    );
    let db = d.join("cloud.db");
    let db_s = db.to_str().unwrap();
    for tenant in ["", "a b", &"x".repeat(65)] {
        fails_with(
            &["cloud", "bootstrap", "--db", db_s, "--tenant", tenant],
            "not a tenant name",
        );
    }
    for limit in ["-5", "0", "100000"] {
        fails_with(
            &[
                "cloud",
                "--token",
                "ink_x_y",
                "devices",
                &format!("--limit={limit}"),
            ],
            "--limit",
        );
    }
    // A file that is not a database, and a PostgreSQL nobody listens on.
    std::fs::write(d.join("junk.db"), vec![0x42u8; 4096]).unwrap();
    fails_with(
        &[
            "cloud",
            "bootstrap",
            "--db",
            d.join("junk.db").to_str().unwrap(),
            "--tenant",
            "acme",
        ],
        "cannot open the store",
    );
    let port = free_port(false);
    fails_with(
        &[
            "cloud",
            "bootstrap",
            "--db",
            &format!("postgres://inkan:secret@127.0.0.1:{port}/inkan"),
            "--tenant",
            "acme",
        ],
        &format!("cannot open the store postgres://inkan@127.0.0.1:{port}/inkan"),
    );
}
