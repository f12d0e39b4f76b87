//! The `inkan se` command line against a served chip: client commands over
//! TCP and Unix sockets, a signature checked by `openssl`, clear errors for
//! bad input, and crash consistency of the chip's NVM under kill -9.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn inkan() -> Command {
    Command::new(env!("CARGO_BIN_EXE_inkan"))
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "inkan failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Starts `inkan se serve` and returns it with the address it bound.
fn serve(state: &Path, listen: &str, personality: &str) -> (Child, String) {
    let mut child = inkan()
        .args([
            "se",
            "serve",
            "--init",
            "--personality",
            personality,
            "--listen",
            listen,
            "--state",
        ])
        .arg(state)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.rsplit(" on ").next().unwrap().trim().to_string();
    assert!(
        addr.starts_with("unix:") || addr.starts_with("tcp:"),
        "unexpected banner {line:?}"
    );
    (child, addr)
}

fn client(addr: &str, args: &[&str]) -> Output {
    inkan()
        .args(["se", "--connect", addr])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn client_commands_over_tcp_and_openssl_verifies_the_chip() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("chip.json");
    ok(inkan()
        .args([
            "se",
            "init",
            "--personality",
            "a110",
            "--serial",
            "0102030405060708aa",
            "--state",
        ])
        .arg(&state)
        .output()
        .unwrap());
    let (mut server, addr) = serve(&state, "tcp:127.0.0.1:0", "a110");

    assert_eq!(
        ok(client(&addr, &["echo", "68656c6c6f"])).trim(),
        "68656c6c6f"
    );
    assert_eq!(ok(client(&addr, &["random", "16"])).trim().len(), 32);
    let product = ok(client(&addr, &["query", "product"]));
    assert!(
        product.contains("a110") && product.contains("0102030405060708aa"),
        "{product}"
    );

    let pem = ok(client(
        &addr,
        &["keygen", "1", "--curve", "p256", "--usage", "sign"],
    ));
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    let pub_path = dir.path().join("slot1.pem");
    std::fs::write(&pub_path, &pem).unwrap();
    let msg = dir.path().join("firmware.bin");
    std::fs::write(&msg, b"an image the chip signs").unwrap();
    let sig_hex = ok(client(
        &addr,
        &["sign", "1", "--file", msg.to_str().unwrap()],
    ));
    let sig_path = dir.path().join("sig.der");
    std::fs::write(&sig_path, hex::decode(sig_hex.trim()).unwrap()).unwrap();

    let verify = |file: &Path| {
        Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(&pub_path)
            .arg("-signature")
            .arg(&sig_path)
            .arg(file)
            .output()
            .unwrap()
    };
    let good = verify(&msg);
    assert!(
        good.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(String::from_utf8_lossy(&good.stdout).contains("Verified OK"));
    let other = dir.path().join("other.bin");
    std::fs::write(&other, b"an image the chip did not sign").unwrap();
    assert!(
        !verify(&other).status.success(),
        "openssl must reject another message"
    );

    // The chip's own verification agrees, and refuses the wrong message.
    let sig = sig_hex.trim().to_string();
    assert_eq!(
        ok(client(
            &addr,
            &[
                "verify",
                "--pubkey",
                pub_path.to_str().unwrap(),
                "--sig",
                &sig,
                "--file",
                msg.to_str().unwrap()
            ]
        ))
        .trim(),
        "valid"
    );
    let bad = client(
        &addr,
        &[
            "verify",
            "--pubkey",
            pub_path.to_str().unwrap(),
            "--sig",
            &sig,
            "--file",
            other.to_str().unwrap(),
        ],
    );
    assert_eq!(bad.status.code(), Some(2));

    // Zones, counters, envelopes, pairing and a MAC'd session.
    ok(client(&addr, &["update", "7", "cafe"]));
    assert!(ok(client(&addr, &["read", "7", "--len", "2"])).starts_with("cafe"));
    assert_eq!(
        ok(client(&addr, &["decrement", "5", "3"])).trim(),
        "4294967292"
    );
    ok(client(&addr, &["envelope-key", "0"]));
    let env = ok(client(
        &addr,
        &["wrap", "0", "00112233445566778899aabbccddeeff"],
    ));
    assert_eq!(
        ok(client(&addr, &["unwrap", "0", env.trim()])).trim(),
        "00112233445566778899aabbccddeeff"
    );
    let (m, c) = (
        "000102030405060708090a0b0c0d0e0f",
        "101112131415161718191a1b1c1d1e1f",
    );
    ok(client(
        &addr,
        &["pair", "--with-mac-key", m, "--with-cipher-key", c],
    ));
    assert_eq!(
        ok(client(
            &addr,
            &["--mac-key", m, "--cipher-key", c, "echo", "00"]
        ))
        .trim(),
        "00"
    );
    let wrong = client(&addr, &["--mac-key", c, "--cipher-key", m, "echo", "00"]);
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("invalid C-MAC"));
    assert!(ok(client(&addr, &["query", "host-key"])).contains("counter 1"));
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn bad_cli_input_gets_a_clear_error() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["se", "--connect", "tcp:10.1.2.3:7000", "echo", "00"],
            "not on loopback",
        ),
        (
            &["se", "--connect", "serial:/dev/ttyS0", "echo", "00"],
            "must start with unix:, tcp: or i2c:",
        ),
        (
            &[
                "se",
                "--connect",
                "unix:/nonexistent/inkan.sock",
                "echo",
                "00",
            ],
            "connecting to unix:/nonexistent/inkan.sock",
        ),
        (&["se", "echo", "00"], "needs --connect"),
        (
            &["se", "init", "--state", "/tmp/x.json", "--serial", "0102"],
            "serial must be 9 bytes",
        ),
        (
            &[
                "se",
                "serve",
                "--state",
                "/tmp/x.json",
                "--listen",
                "tcp:127.0.0.1:0",
                "--busy",
                "soon",
            ],
            "--busy takes",
        ),
    ];
    for (args, want) in cases {
        let out = inkan().args(*args).output().unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: expected {want:?} in {err:?}");
    }
    // A bad hex argument against a live chip.
    let dir = tempfile::tempdir().unwrap();
    let sock = format!("unix:{}", dir.path().join("se.sock").display());
    let (mut server, addr) = serve(&dir.path().join("c.json"), &sock, "a120");
    let out = client(&addr, &["echo", "zz"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid hex"));
    let out = client(
        &addr,
        &["pair", "--with-mac-key", "00", "--with-cipher-key", "00"],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("16 or 32 bytes"));
    // A second server of the same chip, or on the same socket, is refused
    // while the first runs: it would write the same NVM, or steal its
    // clients.
    let second = |state: &Path, listen: &str| {
        inkan()
            .args([
                "se",
                "serve",
                "--init",
                "--personality",
                "a120",
                "--listen",
                listen,
                "--state",
            ])
            .arg(state)
            .output()
            .unwrap()
    };
    let out = second(&dir.path().join("c.json"), "tcp:127.0.0.1:0");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already served by another process"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = second(&dir.path().join("other.json"), &sock);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another server already listens"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The first still answers.
    assert!(client(&addr, &["echo", "0102"]).status.success());
    server.kill().unwrap();
    server.wait().unwrap();
    // Once it is gone, the state and the socket can be served again.
    let (mut again, addr) = serve(&dir.path().join("c.json"), &sock, "a120");
    assert!(client(&addr, &["echo", "0102"]).status.success());
    again.kill().unwrap();
    again.wait().unwrap();
    // A state file that is not a chip image.
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, b"{\"not\": \"a chip\"}").unwrap();
    let out = inkan()
        .args(["se", "serve", "--listen", "tcp:127.0.0.1:0", "--state"])
        .arg(&junk)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("altered or rolled back"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A missing state file is an error, not a blank chip, unless --init.
    let out = inkan()
        .args(["se", "serve", "--listen", "tcp:127.0.0.1:0", "--state"])
        .arg(dir.path().join("nothing.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no chip state at"));
    assert!(!dir.path().join("nothing.json").exists());
}

/// Decrements a counter as fast as possible while the server is killed with
/// SIGKILL at random moments. After every restart the image must load, and
/// the counter must equal the last acknowledged value or one below it (the
/// command in flight either landed whole or not at all). It never goes back.
#[test]
fn kill_9_never_tears_the_state_and_counters_never_go_back() {
    use inkan_se::transport::socket::SocketTransport;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("chip.json");
    let sock = dir.path().join("se.sock");
    let listen = format!("unix:{}", sock.display());
    // Both counter zones: 5 (firmware security version) and 6 (usage),
    // alternately, each with the last value acknowledged to the host.
    let mut acked: [Option<u32>; 2] = [None, None];
    let mut seed = 0x2545F4914F6CDD1Du64;
    for round in 0..12 {
        let (mut server, _) = serve(&state, &listen, "a120");
        let image = inkan_se::Chip::open(&state).expect("image must load after kill -9");
        for (k, zone) in [5usize, 6].into_iter().enumerate() {
            let counter = image.nvm().zones[zone].counter;
            if let Some(a) = acked[k] {
                assert!(
                    counter == a || counter == a - 1,
                    "round {round}: zone {zone} counter {counter}, last acknowledged {a}"
                );
            }
        }
        let k = round % 2;
        let zone = [5u8, 6][k];
        let mut d = inkan_se::Driver::new(SocketTransport::unix(&sock).unwrap()).unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // The countdown to the kill starts once the first decrement of the
        // round is acknowledged, so a loaded machine still gets a round with
        // work in flight.
        let delay = Duration::from_millis(20 + seed % 80);
        let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let go = started.clone();
        let killer = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !go.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(delay);
            server.kill().unwrap();
            server.wait().unwrap();
        });
        let mut n = 0;
        while let Ok(v) = d.decrement(zone, 1, 0, &u32::try_from(round).unwrap().to_be_bytes()) {
            started.store(true, std::sync::atomic::Ordering::SeqCst);
            if let Some(a) = acked[k] {
                assert!(v < a, "zone {zone}: counter went back: {v} after {a}");
            }
            acked[k] = Some(v);
            n += 1;
        }
        killer.join().unwrap();
        assert!(
            n > 0,
            "round {round}: no decrement completed before the kill"
        );
    }
    let image = inkan_se::Chip::open(&state).unwrap();
    for (k, zone) in [5usize, 6].into_iter().enumerate() {
        let a = acked[k].unwrap();
        let c = image.nvm().zones[zone].counter;
        assert!(c == a || c == a - 1, "zone {zone}: {c} after {a}");
    }
}
