//! `inkan bench`: measurements printed beside a reference taken in the same
//! run, with the ratio. Targets live here, never in timed tests.

use anyhow::Result;
use inkan_se::chip::InProcess;
use inkan_se::driver::key_mode;
use inkan_se::{AesKey, Chip, Curve, Driver, HostKeys, Personality};
use std::time::{Duration, Instant};

/// Which benchmark to run.
#[derive(clap::Subcommand)]
pub enum Which {
    /// A host checking its accessory offline (certificate, challenge signed
    /// in the chip, units left; and using a unit) beside raw P-256
    /// signature verification.
    Accessory {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
    },
    /// A device downloads a large firmware image block-wise under OSCORE:
    /// the store's reads of every block beside reading the image once, and
    /// the server's CPU for the download.
    #[command(after_help = "Example:\n  inkan bench firmware --mib 31")]
    Firmware {
        /// Image size (MiB).
        #[arg(long, default_value_t = 31)]
        mib: usize,
    },
    /// A flood of EDHOC message_1 from one hostile address at increasing
    /// rates while legitimate devices authenticate and the API is polled:
    /// the service's memory, the devices' success and latency, the API's
    /// worst latency, recovery; beside the same measured without a flood.
    #[command(after_help = "Example:\n  inkan bench flood --rates 1000,3000,10000 --seconds 5")]
    Flood {
        /// Flood rates (message_1 per second).
        #[arg(long, value_delimiter = ',', default_value = "1000,3000,10000")]
        rates: Vec<u64>,
        /// Seconds per rate.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Legitimate devices authenticating meanwhile.
        #[arg(long, default_value_t = 8)]
        devices: usize,
    },
    /// The secure element: signatures per second through the driver and the
    /// in-process transport, next to raw P-256 signing; memory per chip.
    #[command(
        after_help = "Example:\n  inkan bench se\n  inkan bench se --seconds 5 --chips 10000"
    )]
    Se {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Emulated chips held at rest for the memory figure.
        #[arg(long, default_value_t = 10_000)]
        chips: usize,
    },
    /// The factory: chips personalized per second (in-memory chips and
    /// chips with an NVM file each), where the time goes, next to the raw
    /// cryptography a chip needs measured in the same run.
    #[command(after_help = "Example:\n  inkan bench factory --chips 200")]
    Factory {
        /// Chips per measurement.
        #[arg(long, default_value_t = 100)]
        chips: usize,
    },
    /// Device authentication against a running `inkan serve` (a separate
    /// process on SQLite): handshakes per second, latency, the server's CPU
    /// per handshake next to the raw cost of the responder's cryptography;
    /// and manifest import rate next to raw inserts.
    Auth(AuthArgs),
    /// The TLS peer of `bench auth` in its own process (internal).
    #[command(hide = true)]
    TlsPeerServe {
        /// Root certificate (DER) client chains must reach.
        #[arg(long)]
        root: std::path::PathBuf,
        /// Server certificate (DER).
        #[arg(long)]
        cert: std::path::PathBuf,
        /// Server key (PKCS#8 DER).
        #[arg(long)]
        key: std::path::PathBuf,
    },
    /// Readings ingested over OSCORE per second (64-byte readings, batches
    /// of 100, stored before the acknowledgement) beside raw inserts of the
    /// same rows into the same store, with the ratio.
    /// The boot check of a 1 MiB image on a personalized chip, split into
    /// hashing and the chip's signature check, beside raw SHA-256 of the
    /// image and a software ES256 verification of the manifest.
    #[command(after_help = "Example:\n  inkan bench boot --rounds 50")]
    Boot {
        /// Boot checks to average over.
        #[arg(long, default_value_t = 50)]
        rounds: u32,
    },
    #[command(after_help = "Example:\n  inkan bench telemetry --devices 8 --batches 100")]
    Telemetry {
        /// Devices sending at the same time.
        #[arg(long, default_value_t = 8)]
        devices: usize,
        /// Batches per device.
        #[arg(long, default_value_t = 100)]
        batches: usize,
        /// Readings per batch.
        #[arg(long, default_value_t = 100)]
        batch_size: usize,
        /// Commands for the round-trip latency.
        #[arg(long, default_value_t = 200)]
        commands: usize,
    },
}

/// Options of `inkan bench auth`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  inkan bench auth --devices 2000 --concurrency 32\n  inkan bench auth --devices 1000 --registered 1000,1000000   (registry-size scaling)"
)]
pub struct AuthArgs {
    /// Distinct emulated devices (each personalized, each authenticating).
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Devices authenticating at the same time.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Manifest entries for the import figure.
    #[arg(long, default_value_t = 10_000)]
    manifest: usize,
    /// Registry sizes to run at, comma-separated: devices registered in
    /// the store besides those authenticating (filled with synthetic
    /// devices of the same family). Default: just the authenticating ones.
    #[arg(long, value_delimiter = ',')]
    registered: Vec<usize>,
}

/// Runs a benchmark.
pub fn run(w: Which) -> Result<()> {
    match w {
        Which::Se { seconds, chips } => se(Duration::from_secs_f64(seconds), chips),
        Which::Factory { chips } => factory(chips),
        Which::Boot { rounds } => boot(rounds),
        Which::Telemetry {
            devices,
            batches,
            batch_size,
            commands,
        } => crate::bench_telemetry::run(devices, batches, batch_size, commands),
        Which::Firmware { mib } => crate::bench_firmware::run(mib),
        Which::Accessory { seconds } => crate::bench_accessory::run(seconds),
        Which::Flood {
            rates,
            seconds,
            devices,
        } => crate::bench_flood::run(&rates, seconds, devices),
        Which::TlsPeerServe { root, cert, key } => crate::bench_tls::serve_peer(&root, &cert, &key),
        Which::Auth(a) => {
            crate::bench_auth::run(a.devices, a.concurrency, a.manifest, &a.registered)
        }
    }
}

/// Runs `op` repeatedly for `time`; returns operations per second.
fn rate(time: Duration, mut op: impl FnMut() -> Result<()>) -> Result<f64> {
    // Warm up.
    for _ in 0..20 {
        op()?;
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < time {
        for _ in 0..50 {
            op()?;
        }
        n += 50;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn se(time: Duration, chips: usize) -> Result<()> {
    println!(
        "inkan bench se: {} s per figure, {chips} chips for memory",
        time.as_secs_f64()
    );
    let digest = [0x5Au8; 32];

    // Reference: the chip's own signing operation (the same key type and
    // call the emulated chip runs), done directly: no command, frame,
    // transport or session around it.
    let key = inkan_se::chip::keys::PrivateKey::generate(Curve::P256)
        .map_err(|s| anyhow::anyhow!("key: {s:?}"))?;
    let mut d = Driver::new(InProcess::new(Chip::new(Personality::A120, [1; 9])))?;
    d.generate_key(1, Curve::P256, 0, key_mode::SIGN_DIGEST)?;
    let mut session = Driver::new(InProcess::new(Chip::new(Personality::A120, [2; 9])))?;
    session.generate_key(1, Curve::P256, 0, key_mode::SIGN_DIGEST)?;
    let keys = HostKeys {
        mac: AesKey::Aes256([1; 32]),
        cipher: AesKey::Aes256([2; 32]),
    };
    session.pair_host_keys(&keys)?;
    session.open_session(keys)?;
    // Three rounds, interleaved, so frequency changes and warm-up fall on
    // all three alike; each figure is its median round.
    let slice = time / 3;
    let (mut raws, mut plains, mut macds) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        raws.push(rate(slice, || {
            key.sign_digest(&digest)
                .map_err(|s| anyhow::anyhow!("sign: {s:?}"))?;
            Ok(())
        })?);
        plains.push(rate(slice, || {
            d.sign_with_curve(1, Curve::P256, &digest)?;
            Ok(())
        })?);
        macds.push(rate(slice, || {
            session.sign_with_curve(1, Curve::P256, &digest)?;
            Ok(())
        })?);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (raw, plain, macd) = (median(raws), median(plains), median(macds));

    println!();
    println!(
        "{:<58} {:>12} {:>8}",
        "P-256 signatures (hedged ECDSA over a 32-byte digest)", "per second", "ratio"
    );
    println!(
        "{:<58} {:>12.0} {:>8}",
        "the chip's signing call, direct (reference)", raw, "1.00"
    );
    println!(
        "{:<58} {:>12.0} {:>8.2}",
        "chip via driver, in-process transport",
        plain,
        plain / raw
    );
    println!(
        "{:<58} {:>12.0} {:>8.2}",
        "chip via driver, host session (C-MAC + R-MAC)",
        macd,
        macd / raw
    );

    // Memory per chip at rest: each chip holds a P-256 key in slot 0 and
    // its default 6 KiB data partition.
    let before = crate::alloc::live_bytes();
    let mut fleet = Vec::with_capacity(chips);
    let t0 = Instant::now();
    for i in 0..chips {
        let mut serial = [0u8; 9];
        serial[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let mut d = Driver::new(InProcess::new(Chip::new(Personality::A120, serial)))?;
        d.generate_key(0, Curve::P256, 0, key_mode::SIGN_DIGEST)?;
        fleet.push(d.into_transport().into_chip());
    }
    let made = t0.elapsed();
    let after = crate::alloc::live_bytes();
    let per_chip = after.saturating_sub(before) as f64 / chips as f64;
    let nvm_bytes: usize = fleet[0].nvm().zones.iter().map(|z| z.data.len()).sum();
    let image = serde_json::to_vec(fleet[0].nvm())?.len();
    println!();
    println!(
        "{chips} chips at rest in one process (each: one P-256 key, {nvm_bytes} bytes of zones)"
    );
    println!("  heap per chip {:>10.0} bytes   (reference: the zones alone, {nvm_bytes} bytes; ratio {:.2})", per_chip, per_chip / nvm_bytes as f64);
    println!("  NVM image on disk {image} bytes (JSON); created {chips} chips with key generation in {:.2} s", made.as_secs_f64());
    drop(fleet);
    Ok(())
}

fn factory(n: usize) -> Result<()> {
    use inkan_factory::personalize::BatchConfig;
    use inkan_factory::{Factory, InitOptions, KeyStore, Personalizer, Secrets};
    use inkan_pki::{CaSigner, CertPolicy, KeyCurve, SoftwareKey};
    println!("inkan bench factory: {n} chips per figure (A120, P-256, file-held CA keys)");
    let dir = tempfile::tempdir()?;
    let secrets = Secrets {
        passphrase: Some(zeroize::Zeroizing::new(b"bench".to_vec())),
        pin: None,
    };
    let opts = InitOptions {
        organization: "bench".into(),
        curve: KeyCurve::P256,
        policy: CertPolicy::default(),
        keys: KeyStore::File,
        anchors: None,
    };
    let f = Factory::init(&dir.path().join("factory"), opts, secrets)?;
    f.create_family("bench", KeyCurve::P256, true)?;

    // Reference: the cryptography one chip costs, done directly: key
    // generation, certificate signing (one ECDSA signature over ~400 bytes),
    // two chip signatures and two verifications (recovery-free path).
    let family_key = SoftwareKey::generate(KeyCurve::P256);
    let t = Instant::now();
    for _ in 0..n {
        let k = SoftwareKey::generate(KeyCurve::P256);
        let _ = inkan_pki::signer::sign_raw(&family_key, &[0x30; 400])?;
        let sig = k.sign_digest(&[7; 32])?;
        let _ = inkan_factory::personalize::verify_digest(&k.public_point(), &[7; 32], &sig);
    }
    let raw = n as f64 / t.elapsed().as_secs_f64();

    let mut rows = Vec::new();
    for (label, persistent) in [
        ("in-memory chips", false),
        ("chips with an NVM file each (fsync per command)", true),
    ] {
        let batch = if persistent { "disk" } else { "mem" };
        let cfg = BatchConfig {
            family: "bench".into(),
            count: if persistent { n } else { 0 },
            personality: inkan_se::Personality::A120,
        };
        let mut p = Personalizer::open(&f, "bench", batch, &cfg)?;
        let t = Instant::now();
        if persistent {
            for path in
                inkan_se::chip::blank_chips(&p.dir().join("chips"), n, inkan_se::Personality::A120)?
            {
                let mut d = Driver::new(InProcess::new(Chip::open(&path)?))?;
                p.personalize(&mut d, Some(&path))?;
            }
        } else {
            for _ in 0..n {
                let mut d = Driver::new(InProcess::new(Chip::new_random(Personality::A120)))?;
                p.personalize(&mut d, None)?;
            }
        }
        let rate = n as f64 / t.elapsed().as_secs_f64();
        p.finish()?;
        rows.push((label, rate, p.times));
    }
    println!();
    println!("{:<52} {:>10} {:>8}", "", "chips/s", "ratio");
    println!(
        "{:<52} {:>10.1} {:>8}",
        "raw crypto of one chip (reference)", raw, "1.00"
    );
    for (label, rate, _) in &rows {
        println!("{label:<52} {rate:>10.1} {:>8.3}", rate / raw);
    }
    println!();
    println!("where the time goes, ms per chip: key generation in the chip | issuance + journal | pairing, writes, read-backs | access conditions, lock, checks");
    for (label, _, t) in &rows {
        let per = |d: Duration| d.as_secs_f64() * 1000.0 / t.chips.max(1) as f64;
        println!(
            "  {label:<50} {:>6.2} | {:>6.2} | {:>6.2} | {:>6.2}",
            per(t.keygen),
            per(t.issue),
            per(t.write),
            per(t.lock_verify)
        );
    }
    Ok(())
}

fn boot(rounds: u32) -> Result<()> {
    use sha2::Digest;
    println!("inkan bench boot: a 1 MiB image, {rounds} boot checks on a personalized A120 chip (in process)");
    let (_dir, f, chips) = crate::bench_auth::fleet(1)?;
    let key = inkan_pki::SoftwareKey::load(&f.dir().join("keys/dev-firmware.key.pem"), b"bench")?;
    let mut image = vec![0u8; 1 << 20];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut image);
    let m = inkan_pki::firmware::FirmwareManifest::describe(&image, "bench", "bench", "1.0", 1);
    let signed = inkan_pki::firmware::sign(&m, &key)?;
    let (mut hash, mut verify, mut total) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let t = Instant::now();
        let ok = inkan_device::firmware::boot_check(&chips[0], &image, &signed)?;
        total += t.elapsed();
        hash += ok.hash_time;
        verify += ok.verify_time;
    }
    // References, same run: SHA-256 of the image, and the manifest's ES256
    // signature verified in software.
    let t = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(sha2::Sha256::digest(&image));
    }
    let raw_hash = t.elapsed();
    let opened = inkan_pki::firmware::open(&signed)?;
    let point = inkan_pki::CaSigner::public_point(&key);
    let t = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(inkan_pki::signer::verify_raw(
            &point,
            &opened.tbs,
            &opened.signature,
        ));
    }
    let raw_verify = t.elapsed();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0 / f64::from(rounds);
    println!();
    println!(
        "{:<52} {:>10} {:>14} {:>7}",
        "", "ms", "reference ms", "ratio"
    );
    println!(
        "{:<52} {:>10.3} {:>14.3} {:>7.2}",
        "hashing the image (SHA-256, host)",
        ms(hash),
        ms(raw_hash),
        ms(hash) / ms(raw_hash)
    );
    println!(
        "{:<52} {:>10.3} {:>14.3} {:>7.2}",
        "manifest signature checked by the chip (vs software)",
        ms(verify),
        ms(raw_verify),
        ms(verify) / ms(raw_verify)
    );
    println!(
        "{:<52} {:>10.3} {:>14.3} {:>7.2}",
        "whole boot check (incl. zone reads)",
        ms(total),
        ms(raw_hash) + ms(raw_verify),
        ms(total) / (ms(raw_hash) + ms(raw_verify))
    );
    Ok(())
}
