//! `inkan bench accessory`: a host checking an emulated cartridge chip
//! offline — the certificate against the pinned family certificate, a
//! fresh challenge signed in the chip, the units left — and using a unit
//! (a MAC'd read and decrement); beside raw P-256 signature verification
//! (RustCrypto, the host side's crate) measured in the same run.

use anyhow::{Context, Result};
use inkan_device::accessory::{self, Trust};
use inkan_factory::personalize::BatchConfig;
use inkan_factory::{Factory, FamilyProfile, InitOptions, KeyStore, Personalizer, Secrets};
use inkan_pki::{CertPolicy, KeyCurve};
use inkan_se::{Chip, Driver, InProcess, Personality};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn per_second(time: Duration, mut op: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..5 {
        op()?;
    }
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < time {
        op()?;
        n += 1;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Runs the benchmark for `seconds` per figure.
pub fn run(seconds: f64) -> Result<()> {
    let time = Duration::from_secs_f64(seconds);
    println!("inkan bench accessory: a host checks an emulated A120 cartridge offline (chip state in a file, in process)");
    let dir = tempfile::tempdir()?;
    let f = Factory::init(
        &dir.path().join("factory"),
        InitOptions {
            organization: "bench accessory".into(),
            curve: KeyCurve::P256,
            policy: CertPolicy::default(),
            keys: KeyStore::File,
            anchors: None,
        },
        Secrets {
            passphrase: Some(zeroize::Zeroizing::new(b"bench".to_vec())),
            pin: None,
        },
    )?;
    f.create_family("ink", KeyCurve::P256, false)?;
    f.configure_family(
        "ink",
        FamilyProfile {
            accessory: true,
            usage_limit: Some(1_000_000_000),
        },
    )?;
    let cfg = BatchConfig {
        family: "ink".into(),
        count: 1,
        personality: Personality::A120,
    };
    let mut p = Personalizer::open(&f, "ink", "b", &cfg)?;
    let path = inkan_se::chip::blank_chips(&p.dir().join("chips"), 1, Personality::A120)?
        .into_iter()
        .next()
        .context("a chip")?;
    {
        let mut d = Driver::new(InProcess::new(Chip::open(&path)?))?;
        p.personalize(&mut d, Some(&path))?;
    }
    let (_, family) = f.family("ink")?;
    let pairing = f.pairing_key("ink")?;
    let trust = Trust::new(std::slice::from_ref(&family.der), &[], &[])
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let host = Arc::new(Mutex::new(Driver::new(InProcess::new(Chip::open(&path)?))?));

    let checks = per_second(time, || {
        accessory::verify(&host, &trust)?;
        Ok(())
    })?;
    let uses = per_second(time, || {
        accessory::verify(&host, &trust)?;
        accessory::use_units(&host, &pairing, 1)?;
        Ok(())
    })?;

    // Reference: raw P-256 verification of one signature.
    use p256::ecdsa::signature::{Signer, Verifier};
    let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let msg = [0x5au8; 60];
    let sig: p256::ecdsa::Signature = key.sign(&msg);
    let vk = *key.verifying_key();
    let raw = per_second(time, || {
        anyhow::ensure!(vk.verify(&msg, &sig).is_ok(), "verification failed");
        Ok(())
    })?;
    println!(
        "  reference, raw P-256 signature verification (p256): {raw:.0}/s ({:.1} µs)",
        1e6 / raw
    );
    println!(
        "  offline check (certificate path, challenge signed in the chip and verified, units read): {checks:.0}/s ({:.1} µs), {:.2}× the raw verification's time",
        1e6 / checks,
        raw / checks
    );
    println!(
        "  check and use one unit (MAC'd session, read, decrement in the chip's NVM file): {uses:.0}/s ({:.1} µs), {:.2}× the raw verification's time",
        1e6 / uses,
        raw / uses
    );
    Ok(())
}
