//! `inkan demo`: the whole story, end to end, on embedded defaults. Today it
//! covers the secure element; each capability adds its chapter.

use anyhow::{ensure, Context, Result};
use inkan_se::chip::server;
use inkan_se::driver::key_mode;
use inkan_se::transport::{socket::SocketTransport, Address};
use inkan_se::wire::codes::{command_ac, life_cycle, zone_ac};
use inkan_se::{
    AesKey, BusyModel, Chip, ChipBus, CommandCode, Curve, Driver, HostKeys, Personality, Status,
};
use sha2::Digest;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `inkan demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Keep the demo's files (chip state, socket) in this directory instead
    /// of a temporary one.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
}

fn step(n: &mut u32, title: &str) {
    *n += 1;
    println!("\n[{n}] {title}");
}

/// Runs the demo.
pub fn run(a: Args) -> Result<()> {
    let started = Instant::now();
    let tmp = tempfile::tempdir()?;
    let dir = match &a.keep {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => tmp.path().to_path_buf(),
    };
    let mut n = 0;
    let mut refused = 0;
    println!("inkan demo: a device's secure element, from factory-fresh to locked");
    println!("working directory: {}", dir.display());

    step(
        &mut n,
        "An emulated STSAFE-A120 starts, its NVM in a file, on a Unix socket",
    );
    let state = dir.join("chip.json");
    if state.exists() {
        std::fs::remove_file(&state)?;
    }
    let chip = Chip::create(&state, Personality::A120, inkan_se::chip::random_serial())?;
    let sock = dir.join("se.sock");
    let addr = server::spawn(
        &Address::Unix(sock.clone()),
        ChipBus::new(chip, BusyModel::Instant),
    )?;
    println!("    listening on {addr}");

    step(
        &mut n,
        "The host driver connects and identifies the chip (Query product data)",
    );
    let mut se = Driver::new(SocketTransport::unix(&sock)?)?;
    let serial = hex::encode(se.serial().unwrap_or_default());
    println!(
        "    personality {}, serial {serial}",
        se.personality().name()
    );
    println!(
        "    echo: {:?}",
        String::from_utf8_lossy(&se.echo(b"hello, chip")?)
    );

    step(
        &mut n,
        "A device key is generated inside the chip (slot 0); only the public key leaves",
    );
    let public = se.generate_key(
        0,
        Curve::P256,
        0,
        key_mode::SIGN_DIGEST | key_mode::KEY_ESTABLISHMENT | key_mode::GENERATE_NEVER,
    )?;
    print!(
        "{}",
        indent(&crate::se::point_to_pem(Curve::P256, &public)?)
    );

    step(
        &mut n,
        "The chip signs a fresh challenge; the host verifies with the public key",
    );
    let challenge = se.random(32)?;
    let digest = sha2::Sha256::digest(&challenge);
    let sig = se.sign_with_curve(0, Curve::P256, &digest)?;
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&public)?;
    let ok = ecdsa_ok(&vk, &digest, &sig);
    println!(
        "    challenge {}…, signature {}…, host verification: {}",
        &hex::encode(&challenge)[..16],
        &hex::encode(&sig)[..16],
        if ok { "valid" } else { "INVALID" }
    );
    ensure!(ok, "the chip's signature did not verify");
    println!(
        "    the chip's own Verify Signature agrees: {}",
        se.verify(Curve::P256, &public, &digest, &sig)?
    );

    step(
        &mut n,
        "Host keys are paired and sensitive commands now need the host MAC",
    );
    let keys = HostKeys {
        mac: AesKey::from_slice(&se.random(32)?).context("mac key")?,
        cipher: AesKey::from_slice(&se.random(32)?).context("cipher key")?,
    };
    se.pair_host_keys(&keys)?;
    for code in [
        CommandCode::GENERATE_SIGNATURE,
        CommandCode::ESTABLISH_KEY,
        CommandCode::WRAP_LOCAL_ENVELOPE,
        CommandCode::UNWRAP_LOCAL_ENVELOPE,
    ] {
        se.set_command_ac(code, None, command_ac::HOST)?;
    }
    se.set_command_encryption(CommandCode::UNWRAP_LOCAL_ENVELOPE, None, 0b01)?;
    se.set_command_encryption(CommandCode::WRAP_LOCAL_ENVELOPE, None, 0b10)?;
    match se.sign_with_curve(0, Curve::P256, &digest) {
        Err(e) if e.status() == Some(Status::ACCESS_CONDITION_NOT_SATISFIED) => {
            refused += 1;
            println!("    sign without the host MAC: refused ({e})")
        }
        other => anyhow::bail!("sign without the MAC should be refused, got {other:?}"),
    }
    se.open_session(keys.clone())?;
    let sig = se.sign_with_curve(0, Curve::P256, &digest)?;
    ensure!(
        ecdsa_ok(&vk, &digest, &sig),
        "MAC'd signature did not verify"
    );
    println!(
        "    sign in a host session (C-MAC + R-MAC): valid; MAC counter now {}",
        se.host_key_slot()?.counter
    );

    step(
        &mut n,
        "An attacker without the host keys is refused (invalid C-MAC)",
    );
    let mut rogue = Driver::new(SocketTransport::unix(&sock)?)?;
    rogue.open_session(HostKeys {
        mac: AesKey::Aes256([0x66; 32]),
        cipher: AesKey::Aes256([0x66; 32]),
    })?;
    match rogue.sign_with_curve(0, Curve::P256, &digest) {
        Err(e) if e.status() == Some(Status::INVALID_CMAC) => {
            refused += 1;
            println!("    rogue host: {e}")
        }
        other => anyhow::bail!("the rogue host should be refused, got {other:?}"),
    }
    se.resync();

    step(
        &mut n,
        "Credentials are stored: a zone for data, a local envelope for a secret",
    );
    se.update_zone(4, 0, b"wifi-psk=correct horse battery")?;
    se.set_zone_access(
        4,
        Some((zone_ac::HOST, false)),
        Some((zone_ac::HOST, false)),
    )?;
    println!(
        "    zone 4 now needs the host MAC to read or write: {:?}",
        String::from_utf8_lossy(&se.read_zone(4, 0, 30)?)
    );
    se.generate_envelope_key(0, true)?;
    let secret = se.random(32)?;
    let envelope = se.wrap(0, &secret)?;
    ensure!(*se.unwrap(0, &envelope)? == secret, "unwrap mismatch");
    println!(
        "    32-byte secret wrapped into a {}-byte envelope for host flash, unwrapped intact",
        envelope.len()
    );

    step(
        &mut n,
        "A one-way counter only goes down (the firmware security version will use it)",
    );
    let c1 = se.decrement(5, 1, 0, b"v1")?;
    match se.decrement(5, u32::MAX, 0, &[]) {
        Err(e) if e.status() == Some(Status::COUNTER_LIMIT_EXCEEDED) => {
            refused += 1;
            println!("    counter {c1}; going below zero refused ({e})")
        }
        other => anyhow::bail!("counter underflow should be refused, got {other:?}"),
    }

    step(&mut n, "The chip is locked; its configuration is frozen");
    se.set_password(b"demo-password-16")?;
    se.verify_password(b"demo-password-16")?;
    se.set_life_cycle(life_cycle::OPERATIONAL)?;
    se.lock()?;
    match se.generate_key(0, Curve::P256, 0, 0) {
        Err(e) if e.status() == Some(Status::INVALID_LIFE_CYCLE_STATE) => {
            refused += 1;
            println!("    replacing the device key: refused ({e})")
        }
        other => anyhow::bail!("a locked chip must refuse key generation, got {other:?}"),
    }

    step(
        &mut n,
        "Power cycle: the NVM file is reopened, nothing lost",
    );
    let reopened = Chip::open(&state)?;
    let nvm = reopened.nvm();
    ensure!(
        nvm.life_cycle == life_cycle::OPERATIONAL_LOCKED,
        "life cycle lost"
    );
    ensure!(nvm.zones[5].counter == c1, "counter lost");
    println!(
        "    life cycle 0x{:02x}, counter {}, key in slot 0: {}",
        nvm.life_cycle,
        nvm.zones[5].counter,
        nvm.slots[0].key.is_some()
    );

    println!("\nsummary: chip {serial} set up and locked, 2 challenges signed and verified, {refused} attacks or misuses refused; {:.2} s", started.elapsed().as_secs_f64());
    drop(tmp);
    Ok(())
}

fn ecdsa_ok(vk: &p256::ecdsa::VerifyingKey, digest: &[u8], sig: &[u8]) -> bool {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    p256::ecdsa::Signature::from_slice(sig).is_ok_and(|s| vk.verify_prehash(digest, &s).is_ok())
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}
