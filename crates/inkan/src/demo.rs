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

    let chip_summary = format!("chip {serial} set up and locked, 2 challenges signed and verified, {refused} attacks or misuses refused");

    println!("\n--- the factory: a family of devices personalized ---");
    let (f, fam) = factory_chapter(&dir, &mut n)?;

    println!("\n--- the cloud: the family registered, every device authenticated ---");
    let auth = cloud_chapter(&dir, &f, &mut n)?;

    println!(
        "\nsummary: {chip_summary}; {fam}; {auth}; {:.2} s",
        started.elapsed().as_secs_f64()
    );
    drop(tmp);
    Ok(())
}

/// The factory chapter: root and family CAs, a batch of emulated chips
/// personalized with keys born inside them, a signed manifest.
fn factory_chapter(dir: &std::path::Path, n: &mut u32) -> Result<(inkan_factory::Factory, String)> {
    use inkan_factory::{Factory, InitOptions, KeyStore, Secrets};
    use inkan_pki::cert::IssuedCert;
    use inkan_pki::validate::RequiredEku;
    use inkan_pki::{CertPolicy, DeviceValidator, KeyCurve};
    use std::time::SystemTime;

    step(n, "The factory creates its root CA, manifest signer and trust anchors (CA keys: encrypted PKCS#8)");
    let fdir = dir.join("factory");
    if fdir.exists() {
        std::fs::remove_dir_all(&fdir)?;
    }
    let mut pass = [0u8; 24];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut pass);
    let secrets = Secrets {
        passphrase: Some(zeroize::Zeroizing::new(hex::encode(pass).into_bytes())),
        pin: None,
    };
    let opts = InitOptions {
        organization: "inkan demo devices".into(),
        curve: KeyCurve::P256,
        policy: CertPolicy::default(),
        keys: KeyStore::File,
        anchors: None,
    };
    let f = Factory::init(&fdir, opts, secrets)?;
    let root = f.root()?;
    println!("    root: {}", root.subject());

    step(
        n,
        "A family CA (pathLen 0) is created for the 'thermo' product line",
    );
    let family = f.create_family("thermo", KeyCurve::P256, true)?;
    println!("    family: {}", family.subject());

    let count = 8;
    step(n, &format!("{count} emulated STSAFE-A120 chips are personalized: key in the chip, DevID certificate, anchors, host keys, lock"));
    let pb = crate::factory::progress(count as u64);
    let (report, times) = crate::factory::personalize_emulated(
        &f,
        "thermo",
        "demo-1",
        count,
        Personality::A120,
        &pb,
    )?;
    let per = |d: std::time::Duration| d.as_secs_f64() * 1000.0 / times.chips.max(1) as f64;
    println!(
        "    {} chips; per chip {:.1} ms keygen, {:.1} ms issuance, {:.1} ms writes, {:.1} ms lock and checks",
        report.chips,
        per(times.keygen),
        per(times.issue),
        per(times.write),
        per(times.lock_verify)
    );

    step(
        n,
        "The batch manifest (COSE_Sign1) verifies against the root; every device chain validates",
    );
    let m =
        inkan_pki::manifest::verify(&std::fs::read(&report.manifest)?, &root, SystemTime::now())?;
    let validator = DeviceValidator::new(std::slice::from_ref(&root.der), RequiredEku::ClientAuth)?;
    for e in &m.entries {
        validator.validate(
            &e.certificate,
            std::slice::from_ref(&family.der),
            SystemTime::now(),
        )?;
    }
    let first = IssuedCert::from_der(&m.entries[0].certificate)?;
    println!(
        "    {} entries, e.g. {} (serialNumber={})",
        m.entries.len(),
        first.subject(),
        first.subject_serial_number().unwrap_or_default()
    );

    step(n, "Two attacks on the factory's output are refused");
    let mut tampered = std::fs::read(&report.manifest)?;
    let mid = tampered.len() / 2;
    tampered[mid] ^= 1;
    match inkan_pki::manifest::verify(&tampered, &root, SystemTime::now()) {
        Err(e) => println!("    a tampered manifest: refused ({e})"),
        Ok(_) => anyhow::bail!("a tampered manifest was accepted"),
    }
    let rogue_key = inkan_pki::SoftwareKey::generate(KeyCurve::P256);
    let rogue_root = inkan_pki::cert::issue_root(
        &rogue_key,
        "inkan demo devices",
        "inkan demo devices root CA",
        &CertPolicy::default(),
    )?;
    let rogue_family = inkan_pki::cert::issue_family(
        &rogue_key,
        &rogue_root,
        &inkan_pki::CaSigner::public_point(&rogue_key),
        "inkan demo devices",
        "thermo",
        &CertPolicy::default(),
    )?;
    let rogue_dev = inkan_pki::cert::issue_device(
        &rogue_key,
        &rogue_family,
        &inkan_pki::CaSigner::public_point(&inkan_pki::SoftwareKey::generate(KeyCurve::P256)),
        &inkan_pki::DeviceProfile {
            serial: first.subject_serial_number().unwrap_or_default(),
            organization: "inkan demo devices".into(),
            family: "thermo".into(),
            key_agreement: true,
            ueid: None,
        },
        &CertPolicy::default(),
    )?;
    match validator.validate(
        &rogue_dev.der,
        std::slice::from_ref(&rogue_family.der),
        SystemTime::now(),
    ) {
        Err(e) => println!("    a cloned identity from a look-alike CA: refused ({e})"),
        Ok(_) => anyhow::bail!("a rogue certificate validated"),
    }
    let summary = format!(
        "{} devices personalized into family thermo, manifest verified",
        m.entries.len()
    );
    Ok((f, summary))
}

fn ecdsa_ok(vk: &p256::ecdsa::VerifyingKey, digest: &[u8], sig: &[u8]) -> bool {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    p256::ecdsa::Signature::from_slice(sig).is_ok_and(|s| vk.verify_prehash(digest, &s).is_ok())
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

/// The cloud chapter: the service on SQLite, the family registered with
/// proof of possession, every device authenticated with EDHOC over CoAP.
fn cloud_chapter(dir: &std::path::Path, f: &inkan_factory::Factory, n: &mut u32) -> Result<String> {
    use inkan_cloud::{App, Limits, Registry, Store};
    use inkan_factory::personalize::{BatchConfig, DeviceSecrets};
    use std::sync::{Arc, Mutex};

    step(
        n,
        "The cloud service starts on SQLite (WAL), its device endpoint on CoAP/UDP loopback",
    );
    let rt = tokio::runtime::Runtime::new()?;
    let db = dir.join("cloud.db");
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
    }
    let passphrase = f.passphrase().context("factory passphrase")?;
    let identity =
        crate::cloud::load_identity(&f.dir().join("keys/dev-cloud-auth.key.pem"), &passphrase)?;
    let db_s = db.to_string_lossy().to_string();
    let command_key =
        inkan_pki::SoftwareKey::load(&f.dir().join("keys/dev-cloud-command.key.pem"), &passphrase)?;
    let firmware_point = inkan_pki::signer::point_of_spki(
        &inkan_pki::pem_or_der(
            "PUBLIC KEY",
            &std::fs::read(f.dir().join("anchors/firmware.pub.pem"))?,
        )?
        .into_iter()
        .next()
        .context("firmware anchor")?,
    )?;
    let (auth, addr) = rt.block_on(async {
        let store = Store::open(&db_s).await?;
        let auth = Arc::new(
            App::new(Registry::new(store), identity, Limits::default())
                .with_command_key(Box::new(command_key))
                .with_firmware_key(firmware_point),
        );
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let addr = sock.local_addr()?;
        tokio::spawn(inkan_cloud::server::serve(sock, auth.clone()));
        anyhow::Ok((auth, addr))
    })?;
    println!(
        "    store {}, endpoint coap://{addr}/.well-known/edhoc",
        db.display()
    );

    step(
        n,
        "The operator registers the 'thermo' family once, proving possession of its key",
    );
    let tenant = rt.block_on(auth.registry.store.ensure_tenant("demo"))?;
    let (_, family) = f.family("thermo")?;
    let key = f.signer("family-thermo")?;
    let proof = inkan_pki::signer::sign_raw(
        &*key,
        &inkan_cloud::registry::pop_challenge(&tenant, &family.der),
    )?;
    rt.block_on(
        auth.registry
            .register_family(&tenant, "thermo", &family.der, &proof),
    )?;
    println!(
        "    device rows before any authentication: {}",
        rt.block_on(auth.registry.store.device_count())?
    );

    step(n, "Every device authenticates: EDHOC method 0, suite 2, every device key operation in its chip");
    let cfg = BatchConfig {
        family: "thermo".into(),
        count: 8,
        personality: Personality::A120,
    };
    let p = inkan_factory::Personalizer::open(f, "thermo", "demo-1", &cfg)?;
    let mut devices = Vec::new();
    for entry in std::fs::read_dir(p.dir().join("devices"))? {
        let s: DeviceSecrets = serde_json::from_slice(&std::fs::read(entry?.path())?)?;
        devices.push(s);
    }
    devices.sort_by(|a, b| a.serial.cmp(&b.serial));
    type Shared = Arc<Mutex<Driver<inkan_se::InProcess>>>;
    let open = |s: &DeviceSecrets| -> Result<Shared> {
        let path = s.state.clone().context("emulated chip path")?;
        let mut d = Driver::new(inkan_se::InProcess::new(Chip::open(&path)?))?;
        d.open_session(s.host_keys().context("host keys")?)?;
        Ok(Arc::new(Mutex::new(d)))
    };
    let t = Instant::now();
    let mut sessions = Vec::new();
    for s in &devices {
        let c = inkan_device::connect(open(s)?, addr, inkan_device::Retransmission::default())?;
        println!(
            "    {} authenticated (C_R {}), OSCORE keys derived",
            c.serial,
            hex::encode(&c.c_r.0)
        );
        sessions.push(c);
    }
    let ok = devices.len();
    println!(
        "    {ok} devices in {:.0} ms; enrolled through their family: {}",
        t.elapsed().as_secs_f64() * 1000.0,
        rt.block_on(auth.registry.store.device_count())?
    );

    step(
        n,
        "Readings flow under OSCORE (keys from EDHOC): each device sends 5 batches of 20, stored before they are acknowledged",
    );
    let t = Instant::now();
    let mut acked = 0;
    for c in &sessions {
        let mut up = inkan_device::Uplink::new(c, addr, inkan_device::Retransmission::default())?;
        for k in 0..5u64 {
            let batch: Vec<_> = (0..20u64)
                .map(|i| inkan_proto::telemetry::Reading {
                    time_ms: 1_700_000_000_000 + k * 1000 + i,
                    channel: 0,
                    value: (21.0 + (k * 20 + i) as f64 / 100.0).to_be_bytes().to_vec(),
                })
                .collect();
            acked += up.send(&batch)?;
        }
    }
    let stored =
        rt.block_on(
            auth.registry
                .store
                .readings(&tenant, None, None, 0, i64::MAX, None, 100_000),
        )?;
    println!(
        "    {acked} readings acknowledged in {:.0} ms, {} stored; e.g. {} at {} ms: {:.2} °C",
        t.elapsed().as_secs_f64() * 1000.0,
        stored.len(),
        stored[0].serial,
        stored[0].key.time,
        f64::from_be_bytes(stored[0].value.clone().try_into().unwrap_or([0; 8]))
    );
    let mut tampered =
        inkan_device::Uplink::new(&sessions[1], addr, inkan_device::Retransmission::default())?;
    tampered.set_next_sequence(0);
    match tampered.send(&[inkan_proto::telemetry::Reading {
        time_ms: 0,
        channel: 0,
        value: vec![0; 8],
    }]) {
        Err(e) => {
            println!("    a replayed request (a sequence number already used): refused ({e})")
        }
        Ok(_) => anyhow::bail!("a replayed OSCORE request was accepted"),
    }

    step(
        n,
        "A second line, 'lamp', has Ed25519 device keys: its manifest is imported in bulk and its devices use EDHOC suite 0 (X25519 and EdDSA in the chip)",
    );
    let lamp = f.create_family_with("lamp", inkan_pki::KeyCurve::P256, false, true)?;
    let pb = indicatif::ProgressBar::hidden();
    let (lamp_report, _) =
        crate::factory::personalize_emulated(f, "lamp", "demo-lamp", 3, Personality::A120, &pb)?;
    let lamp_key = f.signer("family-lamp")?;
    let lamp_proof = inkan_pki::signer::sign_raw(
        &*lamp_key,
        &inkan_cloud::registry::pop_challenge(&tenant, &lamp.der),
    )?;
    rt.block_on(
        auth.registry
            .register_family(&tenant, "lamp", &lamp.der, &lamp_proof),
    )?;
    let imported = rt.block_on(auth.registry.import_manifest(
        &tenant,
        &std::fs::read(&lamp_report.manifest)?,
        &f.root()?.der,
    ))?;
    println!("    manifest of {imported} lamps imported in one transaction");
    let lamp_batch = inkan_factory::Personalizer::open(
        f,
        "lamp",
        "demo-lamp",
        &BatchConfig {
            family: "lamp".into(),
            count: 3,
            personality: Personality::A120,
        },
    )?;
    let mut lamps = Vec::new();
    for entry in std::fs::read_dir(lamp_batch.dir().join("devices"))? {
        let s: DeviceSecrets = serde_json::from_slice(&std::fs::read(entry?.path())?)?;
        lamps.push(s);
    }
    lamps.sort_by(|a, b| a.serial.cmp(&b.serial));
    for s in &lamps {
        let c = inkan_device::connect(open(s)?, addr, inkan_device::Retransmission::default())?;
        println!(
            "    {} authenticated with suite {} (C_R {})",
            c.serial,
            c.suite.id(),
            hex::encode(&c.c_r.0)
        );
    }

    step(
        n,
        "A command reaches a valve: signed with the cloud's command key, delivered under OSCORE, verified by the device's chip against the key pinned at the factory, run once",
    );
    let target =
        rt.block_on(auth.registry.store.device_by_fingerprint(
            &inkan_cloud::registry::fingerprint(&{
                let d = open(&devices[2])?;
                let mut g = d.lock().map_err(|_| anyhow::anyhow!("driver lock"))?;
                inkan_device::read_identity(&mut g)?.certificate
            }),
        ))?
        .context("device row")?;
    let valve = open(&devices[2])?;
    let mut up =
        inkan_device::Uplink::new(&sessions[2], addr, inkan_device::Retransmission::default())?;
    up.set_next_sequence(1_000);
    let mut executed = inkan_device::Executed::open(None)?;
    let mut actuator = |c: &inkan_proto::command::Command| -> Result<String, String> {
        Ok(format!(
            "valve {}",
            if c.action == "open" {
                "opened"
            } else {
                "closed"
            }
        ))
    };
    let t = Instant::now();
    rt.block_on(inkan_cloud::commands::issue(
        &auth,
        &tenant,
        std::slice::from_ref(&target),
        "open",
        b"",
        300,
    ))?;
    match inkan_device::poll_and_run(&mut up, &valve, &mut executed, &mut actuator)? {
        inkan_device::Polled::Ran(c, o, detail) => println!(
            "    {} ran '{}' ({detail}): {} in {:.1} ms, state recorded in the cloud",
            c.device,
            c.action,
            o.state(),
            t.elapsed().as_secs_f64() * 1000.0
        ),
        other => anyhow::bail!("the command did not run: {other:?}"),
    }
    let rogue_cmd = inkan_proto::command::Command {
        id: [0x5A; 16],
        device: target.serial.clone(),
        ueid: hex::decode(&target.id)?,
        credential: {
            let d = open(&devices[2])?;
            let mut g = d.lock().map_err(|_| anyhow::anyhow!("driver lock"))?;
            sha2::Sha256::digest(inkan_device::read_identity(&mut g)?.certificate).into()
        },
        action: "open".into(),
        args: Vec::new(),
        issued: 0,
        expires: u64::MAX / 2,
    }
    .sign(|tbs| {
        inkan_pki::signer::sign_raw(
            &inkan_pki::SoftwareKey::generate(inkan_pki::KeyCurve::P256),
            tbs,
        )
    })?;
    rt.block_on(auth.registry.store.insert_command(
        &inkan_cloud::store::new_id(),
        &tenant,
        &target.id,
        "open",
        &rogue_cmd,
        inkan_cloud::store::now() + 300,
    ))?;
    match inkan_device::poll_and_run(&mut up, &valve, &mut executed, &mut actuator)? {
        inkan_device::Polled::Refused(e) => {
            println!("    a command signed by another key: refused by the chip ({e})")
        }
        other => anyhow::bail!("a forged command was not refused: {other:?}"),
    }

    step(
        n,
        "Firmware: an update signed with the OEM key is uploaded and rolled out in two stages; each chip verifies it, the device installs it in its inactive slot, trial-boots and confirms it; a correctly signed downgrade is refused",
    );
    let oem =
        inkan_pki::SoftwareKey::load(&f.dir().join("keys/dev-firmware.key.pem"), &passphrase)?;
    let fw = |version: &str, sv: u32, fill: u8| -> Result<(Vec<u8>, Vec<u8>)> {
        let image = vec![fill; 256 * 1024];
        let m = inkan_pki::firmware::FirmwareManifest::describe(
            &image,
            "inkan demo devices",
            "thermo",
            version,
            sv,
        );
        Ok((image.clone(), inkan_pki::firmware::sign(&m, &oem)?))
    };
    let (img1, man1) = fw("1.0.0", 1, 0x11)?;
    let (img2, man2) = fw("1.1.0", 2, 0x22)?;
    // The update goes through the cloud: uploaded (the service checks the
    // OEM signature and the family), then a two-stage campaign.
    let thermo_id = rt
        .block_on(auth.registry.store.families())?
        .into_iter()
        .find(|fm| fm.name == "thermo")
        .context("thermo family")?
        .id;
    let fw_id = rt.block_on(inkan_cloud::firmware::upload(
        &auth, &tenant, &thermo_id, &man2, &img2,
    ))?;
    let campaign = rt.block_on(inkan_cloud::campaigns::create(
        &auth,
        &tenant,
        &fw_id,
        inkan_cloud::campaigns::Target::Family,
        &[25, 100],
        20,
    ))?;
    let mut boards = Vec::new();
    for (k, s) in devices.iter().enumerate() {
        let board = open(s)?;
        let mut slots = inkan_device::firmware::slots::Slots::open(&dir.join(format!("slots-{k}")));
        slots.provision(&img1, &man1)?;
        slots.boot(&board)?;
        let mut up =
            inkan_device::Uplink::new(&sessions[k], addr, inkan_device::Retransmission::default())?;
        up.set_next_sequence(100_000);
        boards.push((board, slots, up, dir.join(format!("work-{k}"))));
    }
    let t = Instant::now();
    let mut updated = 0;
    for round in 0..3 {
        for (board, slots, up, work) in boards.iter_mut() {
            std::fs::create_dir_all(&*work)?;
            if let inkan_device::firmware::UpdateOutcome::Updated(_) =
                inkan_device::firmware::update_once(up, board, slots, work, &mut |_| Ok(()))?
            {
                updated += 1;
            }
        }
        let p = rt
            .block_on(inkan_cloud::campaigns::progress(&auth, &tenant, &campaign))?
            .context("campaign")?;
        println!(
            "    campaign round {}: stage {}/{} {}, devices {:?}",
            round + 1,
            p.stage + 1,
            p.stages,
            p.state,
            p.devices
        );
        if p.state != "running" {
            break;
        }
    }
    println!(
        "    {updated} devices downloaded 1.1.0 block-wise under OSCORE, installed it in their inactive slot, trial-booted and confirmed it ({:.0} ms)",
        t.elapsed().as_secs_f64() * 1000.0
    );
    let (board, slots, _, _) = &mut boards[3];
    match slots.install(board, &img1, &man1) {
        Err(e) => println!(
            "    re-installing 1.0.0 on {} (signed, security version 1): refused ({e})",
            devices[3].serial
        ),
        Ok(_) => anyhow::bail!("a downgrade was installed"),
    }

    step(n, "Two attacks are refused");
    let victim = &devices[0];
    let leaf = {
        let d = open(victim)?;
        let mut guard = d.lock().map_err(|_| anyhow::anyhow!("driver lock"))?;
        inkan_device::read_identity(&mut guard)?.certificate
    };
    let row = rt
        .block_on(
            auth.registry
                .store
                .device_by_fingerprint(&inkan_cloud::registry::fingerprint(&leaf)),
        )?
        .context("device row")?;
    rt.block_on(inkan_cloud::devices::act_as_owner(
        &auth,
        &row.id,
        inkan_cloud::lifecycle::Action::Revoke,
        "demo operator",
    ))?;
    match inkan_device::connect(open(victim)?, addr, inkan_device::Retransmission::default()) {
        Err(e) => println!(
            "    the operator revoked {}; reconnecting: refused ({e})",
            victim.serial
        ),
        Ok(_) => anyhow::bail!("a revoked device authenticated"),
    }
    let rogue_key = inkan_pki::SoftwareKey::generate(inkan_pki::KeyCurve::P256);
    let rogue_file = dir.join("rogue-cloud.key.pem");
    let _ = std::fs::remove_file(&rogue_file);
    rogue_key.save(&rogue_file, b"rogue")?;
    let rogue = crate::cloud::load_identity(&rogue_file, b"rogue")?;
    let rogue_db = dir.join("rogue.db").to_string_lossy().to_string();
    let rogue_addr = rt.block_on(async {
        let store = Store::open(&rogue_db).await?;
        let auth = Arc::new(App::new(Registry::new(store), rogue, Limits::default()));
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let addr = sock.local_addr()?;
        tokio::spawn(inkan_cloud::server::serve(sock, auth));
        anyhow::Ok(addr)
    })?;
    match inkan_device::connect(
        open(&devices[1])?,
        rogue_addr,
        inkan_device::Retransmission::default(),
    ) {
        Err(e) => println!("    a device reaching an impostor cloud: refused by the device ({e})"),
        Ok(_) => anyhow::bail!("a device trusted an impostor cloud"),
    }
    step(
        n,
        "The maker hands three devices to an operator: a transfer signed by the cloud, claimed once by the operator's tenant",
    );
    let operator = rt.block_on(auth.registry.store.ensure_tenant("operator"))?;
    let handed: Vec<String> = devices[2..5]
        .iter()
        .map(|s| -> Result<String> {
            let d = open(s)?;
            let mut g = d.lock().map_err(|_| anyhow::anyhow!("driver lock"))?;
            let cert = inkan_device::read_identity(&mut g)?.certificate;
            Ok(inkan_pki::IssuedCert::from_der(&cert)?
                .ueid()
                .context("a UEID in the certificate")?
                .to_hex())
        })
        .collect::<Result<_>>()?;
    let as_maker = inkan_cloud::devices::Actor {
        tenant_id: &tenant,
        who: "maker admin",
    };
    let as_operator = inkan_cloud::devices::Actor {
        tenant_id: &operator,
        who: "operator admin",
    };
    let doc = rt.block_on(inkan_cloud::devices::offer_transfer(
        &auth, as_maker, "demo", "operator", &handed, 3600,
    ))?;
    let got = rt.block_on(inkan_cloud::devices::claim_transfer(
        &auth,
        as_operator,
        "operator",
        &doc,
    ))?;
    println!(
        "    transfer of {} bytes claimed: {} devices now belong to the operator",
        doc.len(),
        got.len()
    );
    match rt.block_on(inkan_cloud::devices::claim_transfer(
        &auth,
        as_operator,
        "operator",
        &doc,
    )) {
        Err(e) => println!("    the same transfer again: refused ({e})"),
        Ok(_) => anyhow::bail!("a transfer was claimed twice"),
    }
    for (s, id) in devices[2..5].iter().zip(&handed) {
        inkan_device::connect(open(s)?, addr, inkan_device::Retransmission::default())?;
        let owner = rt
            .block_on(auth.registry.store.device(id))?
            .context("device row")?;
        println!(
            "    {} (UEID {id}) authenticates to its new owner, not reflashed: {}",
            s.serial, owner.state
        );
    }
    let maker_sees = rt
        .block_on(auth.registry.store.devices_in(&tenant, 1000, 0))?
        .iter()
        .filter(|d| handed.contains(&d.id))
        .count();
    println!(
        "    the maker now lists {maker_sees} of the 3 handed devices; the operator lists {}",
        rt.block_on(auth.registry.store.devices_in(&operator, 1000, 0))?
            .len()
    );

    step(
        n,
        "The operator decommissions one device: credentials revoked, and at its next contact the chip verifies the erase order and destroys its secrets",
    );
    let gone = &devices[4];
    let r = rt.block_on(inkan_cloud::devices::decommission(
        &auth,
        as_operator,
        &handed[2],
        false,
        "end of service",
    ))?;
    println!(
        "    {} decommissioned; erase order {} queued",
        gone.serial,
        r.erase_command.as_deref().unwrap_or("-")
    );
    let d = open(gone)?;
    let c = inkan_device::connect(d.clone(), addr, inkan_device::Retransmission::default())?;
    let mut up = inkan_device::Uplink::new(&c, addr, inkan_device::Retransmission::default())?;
    let mut executed = inkan_device::Executed::open(None)?;
    let mut nothing =
        |_: &inkan_proto::command::Command| -> Result<String, String> { Err("no actuator".into()) };
    match inkan_device::poll_and_run(&mut up, &d, &mut executed, &mut nothing)? {
        inkan_device::Polled::Ran(c, o, detail) => {
            println!("    {}: {} ({detail})", c.action, o.state())
        }
        other => anyhow::bail!("the erase order did not run: {other:?}"),
    }
    match inkan_device::connect(d, addr, inkan_device::Retransmission::default()) {
        Err(e) => println!("    it tries to authenticate again: impossible ({e})"),
        Ok(_) => anyhow::bail!("a decommissioned device authenticated"),
    }

    let printed = printer_chapter(f, n, &rt, &auth, addr, &tenant)?;

    let audit = rt.block_on(auth.registry.store.audit_tail(100))?;
    let refused = audit.iter().filter(|(_, _, o, _)| o == "refused").count();
    println!(
        "    audit log: {} entries, {refused} refusal(s) recorded",
        audit.len()
    );
    Ok(format!(
        "{ok} devices authenticated with EDHOC suite 2 and {} with suite 0, {acked} readings stored under OSCORE, a command verified by a chip and run, a firmware campaign to every device and a downgrade refused, 5 attacks refused, 3 devices handed to an operator and 1 decommissioned; {printed}",
        lamps.len()
    ))
}

/// A printer and its cartridges: the host checks each cartridge offline
/// (a clone refused), prints until the genuine one runs out, and reports
/// its own page counter to the cloud in a batch its chip signs.
fn printer_chapter(
    f: &inkan_factory::Factory,
    n: &mut u32,
    rt: &tokio::runtime::Runtime,
    auth: &std::sync::Arc<inkan_cloud::App>,
    addr: std::net::SocketAddr,
    tenant: &str,
) -> Result<String> {
    use inkan_device::accessory::{self, Refused, Trust};
    use inkan_factory::personalize::BatchConfig;
    use inkan_factory::{FamilyProfile, Personalizer};
    use std::sync::{Arc, Mutex};

    step(
        n,
        "The factory makes 'ink' cartridges (an accessory family: 3 prints each, host keys from a pairing key) and a 'printer' with a page counter",
    );
    let mut personalized = Vec::new();
    for (family, profile, count) in [
        (
            "ink",
            FamilyProfile {
                accessory: true,
                usage_limit: Some(3),
            },
            1,
        ),
        (
            "printer",
            FamilyProfile {
                accessory: false,
                usage_limit: Some(10_000),
            },
            1,
        ),
    ] {
        f.create_family(family, inkan_pki::KeyCurve::P256, true)?;
        f.configure_family(family, profile)?;
        let cfg = BatchConfig {
            family: family.into(),
            count,
            personality: Personality::A120,
        };
        let mut p = Personalizer::open(f, family, &format!("{family}-1"), &cfg)?;
        let path =
            inkan_se::chip::blank_chips(&p.dir().join("chips"), 1, Personality::A120)?.remove(0);
        let mut d = Driver::new(inkan_se::InProcess::new(Chip::open(&path)?))?;
        p.personalize(&mut d, Some(&path))?;
        let serial = hex::encode_upper(d.serial().unwrap_or_default());
        personalized.push((path, p.device_secrets(&serial)?));
    }
    let (cartridge_path, _) = &personalized[0];
    let (printer_path, printer_secrets) = &personalized[1];
    let plug = |path: &std::path::Path| -> Result<Arc<Mutex<Driver<inkan_se::InProcess>>>> {
        Ok(Arc::new(Mutex::new(Driver::new(
            inkan_se::InProcess::new(Chip::open(path)?),
        )?)))
    };
    let cartridge = plug(cartridge_path)?;
    let (_, ink_cert) = f.family("ink")?;
    let pairing = f.pairing_key("ink")?;
    let trust = Trust::new(std::slice::from_ref(&ink_cert.der), &[], &[])
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    step(
        n,
        "A counterfeiter copies the genuine cartridge's certificate into a chip of its own",
    );
    let copied = cartridge
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .read_zone(0, 0, 1536)?;
    let clone_path = printer_path
        .parent()
        .context("chip directory")?
        .join("clone");
    std::fs::create_dir_all(&clone_path)?;
    let clone = plug(&inkan_se::chip::blank_chips(&clone_path, 1, Personality::A120)?.remove(0))?;
    {
        let mut d = clone.lock().map_err(|_| anyhow::anyhow!("lock"))?;
        d.update_zone(0, 0, &copied)?;
        d.generate_key(0, inkan_se::Curve::P256, 0, 0)?;
    }

    step(
        n,
        "The printer checks each cartridge offline: certificate, a fresh challenge signed in its chip, units left",
    );
    match accessory::verify(&clone, &trust) {
        Err(e @ Refused::Clone) => println!("    the copy: refused ({e})"),
        other => anyhow::bail!("a clone cartridge was not refused: {other:?}"),
    }
    let g = accessory::verify(&cartridge, &trust)?;
    println!(
        "    the genuine cartridge {}: genuine, {} print(s) left",
        g.serial,
        g.remaining.unwrap_or(0)
    );

    step(
        n,
        "It prints until the cartridge runs out: each print decrements the cartridge's counter (MAC'd with its paired host keys) and the printer's page counter",
    );
    let printer = plug(printer_path)?;
    printer
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .open_session(printer_secrets.host_keys().context("host keys")?)?;
    let mut pages = 0;
    loop {
        match accessory::use_units(&cartridge, &pairing, 1) {
            Ok(left) => {
                let counter = {
                    let mut d = printer.lock().map_err(|_| anyhow::anyhow!("lock"))?;
                    inkan_device::usage::consume(&mut d, 1)?
                };
                pages += 1;
                println!(
                    "    page {pages} printed; cartridge {left} left, printer counter {counter}"
                );
            }
            Err(e @ Refused::Use(inkan_device::usage::UseRefused::Exhausted { .. })) => {
                println!("    page {}: refused ({e})", pages + 1);
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }

    step(
        n,
        "The printer reports its page counter to the cloud in a batch its chip signs; the operator sees it",
    );
    let (_, printer_cert) = f.family("printer")?;
    let key = f.signer("family-printer")?;
    let proof = inkan_pki::signer::sign_raw(
        &*key,
        &inkan_cloud::registry::pop_challenge(tenant, &printer_cert.der),
    )?;
    let family_id =
        rt.block_on(
            auth.registry
                .register_family(tenant, "printer", &printer_cert.der, &proof),
        )?;
    let c = inkan_device::connect(
        printer.clone(),
        addr,
        inkan_device::Retransmission::default(),
    )?;
    let mut up = inkan_device::Uplink::new(&c, addr, inkan_device::Retransmission::default())?;
    let reported = up.report_usage(&printer)?.context("a page counter")?;
    let actor = inkan_cloud::devices::Actor {
        tenant_id: tenant,
        who: "demo",
    };
    let seen = rt.block_on(inkan_cloud::usage::family_usage(auth, actor, &family_id))?;
    println!(
        "    reported {reported} pages left; the cloud shows the printer family: {} device(s), {} page(s) left on the first",
        seen.devices.len(),
        seen.devices.first().map_or(0, |d| d.remaining)
    );
    Ok(format!(
        "a clone cartridge refused offline and a genuine one used for {pages} pages until exhausted, the printer's count seen in the cloud"
    ))
}
