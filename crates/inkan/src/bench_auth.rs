//! `inkan bench auth`: thousands of distinct emulated devices authenticate
//! concurrently against `inkan serve` running as a separate process, so its
//! CPU time can be read from /proc and divided by the handshakes.

use crate::measure::{cpu_seconds, percentile};
use anyhow::{bail, Context, Result};
use inkan_factory::personalize::BatchConfig;
use inkan_factory::{Factory, InitOptions, KeyStore, Personalizer, Secrets};
use inkan_pki::{CertPolicy, KeyCurve};
use inkan_se::{Chip, Driver, InProcess, Personality};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A shared emulated chip behind its driver.
pub type Chip0 = Arc<Mutex<Driver<InProcess>>>;

/// A factory in a temporary directory with a P-256 family "bench" and
/// `devices` personalized in-memory chips (keys born in each chip), each
/// with its host session open.
pub fn fleet(devices: usize) -> Result<(tempfile::TempDir, Factory, Vec<Chip0>)> {
    let dir = tempfile::tempdir()?;
    let secrets = Secrets {
        passphrase: Some(zeroize::Zeroizing::new(b"bench".to_vec())),
        pin: None,
    };
    let f = Factory::init(
        &dir.path().join("factory"),
        InitOptions {
            organization: "bench".into(),
            curve: KeyCurve::P256,
            policy: CertPolicy::default(),
            keys: KeyStore::File,
            anchors: None,
        },
        secrets,
    )?;
    f.create_family("bench", KeyCurve::P256, true)?;
    let t = Instant::now();
    let cfg = BatchConfig {
        family: "bench".into(),
        count: 0,
        personality: Personality::A120,
    };
    let mut p = Personalizer::open(&f, "bench", "bench-1", &cfg)?;
    let mut fleet = Vec::with_capacity(devices);
    for _ in 0..devices {
        let mut d = Driver::new(InProcess::new(Chip::new_random(Personality::A120)))?;
        p.personalize(&mut d, None)?;
        let serial = hex::encode_upper(d.serial().unwrap_or_default());
        d.open_session(
            p.device_secrets(&serial)?
                .host_keys()
                .context("host keys")?,
        )?;
        fleet.push(Arc::new(Mutex::new(d)));
    }
    println!(
        "  personalized {devices} chips in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok((dir, f, fleet))
}

/// Registers the family "bench" in the store at `db` (proof of possession);
/// returns the tenant and family ids.
pub async fn register_bench_family(f: &Factory, db: &str) -> Result<(String, String)> {
    let store = inkan_cloud::Store::open(db).await?;
    let reg = inkan_cloud::Registry::new(store);
    let tenant = reg.store.ensure_tenant("bench").await?;
    let (_, fam) = f.family("bench")?;
    let key = f.signer("family-bench")?;
    let proof = inkan_pki::signer::sign_raw(
        &*key,
        &inkan_cloud::registry::pop_challenge(&tenant, &fam.der),
    )?;
    let id = reg
        .register_family(&tenant, "bench", &fam.der, &proof)
        .await?;
    Ok((tenant, id))
}

/// `inkan serve` running in its own process for a benchmark: its device
/// endpoint and operator API on free loopback ports. Killed when dropped.
pub struct Served {
    /// The process.
    pub child: std::process::Child,
    /// The device endpoint.
    pub coap: std::net::SocketAddr,
    /// The operator API's base URL.
    pub api: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `inkan serve` on the store `db` in its own process, both
/// endpoints on free loopback ports, with `extra` arguments.
pub fn spawn_serve(f: &Factory, db: &str, extra: &[&str]) -> Result<Served> {
    let coap = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    let api = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let log = tempfile::NamedTempFile::new()?;
    let child = std::process::Command::new(std::env::current_exe()?)
        .args(["serve", "--db", db])
        .args(["--coap", &coap.to_string(), "--api", &api.to_string()])
        .arg("--cloud-key")
        .arg(f.dir().join("keys/dev-cloud-auth.key.pem"))
        .args(extra)
        .env("INKAN_CA_PASSPHRASE", "bench")
        .stderr(log.reopen()?)
        .spawn()?;
    let mut served = Served {
        child,
        coap,
        api: format!("http://{api}"),
    };
    // Ready when the operator API accepts (it starts after the device
    // endpoint is bound); a service that exits is reported with its words.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = served.child.try_wait()? {
            let said = std::fs::read_to_string(log.path()).unwrap_or_default();
            bail!(
                "inkan serve exited ({status}) before it was ready: {}",
                said.trim()
            );
        }
        if std::net::TcpStream::connect_timeout(&api, Duration::from_millis(100)).is_ok() {
            return Ok(served);
        }
        if Instant::now() > deadline {
            bail!("inkan serve was not ready within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One measured round.
struct Round {
    registered: usize,
    name: &'static str,
    rate: f64,
    p50: Duration,
    p99: Duration,
    cpu: f64,
}

/// Runs the benchmark.
pub fn run(
    devices: usize,
    concurrency: usize,
    manifest_entries: usize,
    registered: &[usize],
) -> Result<()> {
    let sizes: Vec<usize> = if registered.is_empty() {
        vec![devices]
    } else {
        registered.to_vec()
    };
    if let Some(s) = sizes.iter().find(|s| **s < devices) {
        bail!("--registered {s} is smaller than --devices {devices}");
    }
    println!("inkan bench auth: {devices} distinct devices, {concurrency} at a time; inkan serve on SQLite in its own process");
    let (dir, f, fleet) = fleet(devices)?;
    let rt = tokio::runtime::Runtime::new()?;
    let mut rows = Vec::new();
    for (k, size) in sizes.iter().enumerate() {
        let db = dir.path().join(format!("cloud-{k}.db"));
        rows.extend(rounds(&f, &rt, &fleet, concurrency, &db, *size)?);
        let _ = std::fs::remove_file(&db);
    }

    // Reference: one responder handshake's cryptography done the fastest
    // known way (aws-lc-rs directly): an ephemeral key, ECDH, one ES256
    // signature, one ES256 verification.
    let raw = raw_responder_crypto(2000)?;
    // The peer a user would pick instead: rustls TLS 1.3 with client
    // certificates over the same chain, as many handshakes, as many at once.
    let peer = crate::bench_tls::measure(&f, "bench", devices, concurrency)?;
    println!();
    println!(
        "{:>10}  {:<44} {:>8} {:>8} {:>8} {:>14} {:>7} {:>7}",
        "registered", "", "auth/s", "p50 ms", "p99 ms", "server CPU/hs", "÷ raw", "÷ peer"
    );
    println!(
        "{:>10}  {:<44} {:>8} {:>8} {:>8} {:>11.3} ms {:>7} {:>7.2}",
        "",
        "raw responder crypto, aws-lc-rs (reference)",
        "",
        "",
        "",
        raw * 1000.0,
        "1.00",
        raw / peer.cpu
    );
    println!(
        "{:>10}  {:<44} {:>8.0} {:>8.2} {:>8.2} {:>11.3} ms {:>7.2} {:>7}",
        "",
        "rustls 0.23 + aws-lc-rs, TLS 1.3 mTLS (peer)",
        peer.rate,
        peer.p50.as_secs_f64() * 1000.0,
        peer.p99.as_secs_f64() * 1000.0,
        peer.cpu * 1000.0,
        peer.cpu / raw,
        "1.00"
    );
    for r in &rows {
        println!(
            "{:>10}  {:<44} {:>8.0} {:>8.2} {:>8.2} {:>11.3} ms {:>7.2} {:>7.2}",
            r.registered,
            r.name,
            r.rate,
            r.p50.as_secs_f64() * 1000.0,
            r.p99.as_secs_f64() * 1000.0,
            r.cpu * 1000.0,
            r.cpu / raw,
            r.cpu / peer.cpu
        );
    }
    if let (Some(lo), Some(hi)) = (sizes.iter().min(), sizes.iter().max()) {
        if lo != hi {
            println!();
            for name in [FIRST, RETURNING] {
                let at = |n: usize| rows.iter().find(|r| r.registered == n && r.name == name);
                if let (Some(a), Some(b)) = (at(*lo), at(*hi)) {
                    println!(
                        "{name}: CPU per handshake at {hi} registered / at {lo}: {:.2}; p50 latency {:.2}",
                        b.cpu / a.cpu,
                        b.p50.as_secs_f64() / a.p50.as_secs_f64()
                    );
                }
            }
        }
    }
    manifest_import(&f, &rt, manifest_entries, dir.path())
}

const FIRST: &str = "first contact (enrolment through the family)";
const RETURNING: &str = "returning devices (verified-chain cache)";

/// A fresh store with `registered` devices (the fleet's enrol on first
/// contact; the rest are synthetic devices of the family), `inkan serve`
/// on it, and the two rounds.
fn rounds(
    f: &Factory,
    rt: &tokio::runtime::Runtime,
    fleet: &[Arc<Mutex<Driver<InProcess>>>],
    concurrency: usize,
    db: &std::path::Path,
    registered: usize,
) -> Result<Vec<Round>> {
    let db_s = db.to_string_lossy().to_string();
    let filler = registered - fleet.len();
    rt.block_on(async {
        let (tenant, fam_id) = register_bench_family(f, &db_s).await?;
        let reg = inkan_cloud::Registry::new(inkan_cloud::Store::open(&db_s).await?);
        let (_, fam) = f.family("bench")?;
        if filler > 0 {
            let t = Instant::now();
            // Synthetic devices: unique serials and fingerprints, a
            // certificate-sized blob (they never authenticate).
            let blob = fam.der.clone();
            let point = fam.public_point();
            let mut tx = reg.store.pool.begin().await?;
            let mut i = 0usize;
            while i < filler {
                let n = (filler - i).min(10_000);
                let serials: Vec<String> = (i..i + n).map(|k| format!("F{k:017X}")).collect();
                let rows: Vec<_> = serials
                    .iter()
                    .map(|s| inkan_cloud::store::NewDevice {
                        id: inkan_pki::Ueid::random().to_hex(),
                        serial: s,
                        certificate: &blob,
                        fingerprint: inkan_cloud::registry::fingerprint(s.as_bytes()),
                        public_key: &point,
                    })
                    .collect();
                inkan_cloud::Store::insert_devices(
                    &mut tx,
                    inkan_cloud::store::Entry {
                        tenant: &tenant,
                        family_id: Some(&fam_id),
                        state: inkan_cloud::lifecycle::DeviceState::Manufactured,
                        enrolled_by: "manifest",
                        proof: inkan_cloud::lifecycle::Proof::Family,
                        actor: "bench",
                    },
                    &rows,
                )
                .await?;
                i += n;
            }
            tx.commit().await?;
            println!(
                "  registry filled with {filler} synthetic devices in {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }
        anyhow::Ok(())
    })?;
    let server = spawn_serve(f, &db_s, &["--max-pending", "100000"])?;
    let addr = server.coap;
    let result = (|| -> Result<Vec<Round>> {
        let rt_args = inkan_device::Retransmission {
            ack_timeout: Duration::from_secs(2),
            max_retransmit: 4,
        };
        let mut rows = Vec::new();
        for name in [FIRST, RETURNING] {
            let cpu0 = cpu_seconds(server.child.id())?;
            let t = Instant::now();
            let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let lat = Arc::new(Mutex::new(Vec::with_capacity(fleet.len())));
            let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            std::thread::scope(|s| {
                for _ in 0..concurrency {
                    let (next, lat, failures) = (next.clone(), lat.clone(), failures.clone());
                    s.spawn(move || loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= fleet.len() {
                            break;
                        }
                        let t = Instant::now();
                        match inkan_device::connect(fleet[i].clone(), addr, rt_args) {
                            Ok(_) => {
                                if let Ok(mut l) = lat.lock() {
                                    l.push(t.elapsed());
                                }
                            }
                            Err(_) => {
                                failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    });
                }
            });
            let wall = t.elapsed().as_secs_f64();
            let cpu = cpu_seconds(server.child.id())? - cpu0;
            let mut l = lat.lock().map_err(|_| anyhow::anyhow!("lock"))?.clone();
            l.sort();
            let n = l.len();
            let fails = failures.load(std::sync::atomic::Ordering::Relaxed);
            if fails > 0 {
                bail!("{fails} handshakes failed in round {name}");
            }
            rows.push(Round {
                registered,
                name,
                rate: n as f64 / wall,
                p50: percentile(&l, 500),
                p99: percentile(&l, 990),
                cpu: cpu / n as f64,
            });
        }
        Ok(rows)
    })();
    drop(server);
    result
}

/// The fastest known way to do one responder handshake's cryptography:
/// aws-lc-rs called directly (not through inkan's provider): a P-256
/// ephemeral key, ECDH with the device's key, one ES256 signature and one
/// ES256 verification.
fn raw_responder_crypto(n: usize) -> Result<f64> {
    use aws_lc_rs::{agreement, rand::SystemRandom, signature};
    use signature::KeyPair;
    let rng = SystemRandom::new();
    let fail = |what: &str| anyhow::anyhow!("aws-lc-rs: {what}");
    let sk = signature::EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
        .map_err(|_| fail("key"))?;
    let device = signature::EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
        .map_err(|_| fail("key"))?;
    let peer = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng)
        .and_then(|k| k.compute_public_key())
        .map_err(|_| fail("peer"))?;
    let msg = [0x42u8; 400];
    let sig = device.sign(&rng, &msg).map_err(|_| fail("sign"))?;
    let device_pub = device.public_key().as_ref().to_vec();
    let t = Instant::now();
    for _ in 0..n {
        let e = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng)
            .map_err(|_| fail("ephemeral"))?;
        let _ = e.compute_public_key().map_err(|_| fail("public"))?;
        agreement::agree_ephemeral(
            e,
            agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, peer.as_ref()),
            (),
            |_| Ok(()),
        )
        .map_err(|_| fail("ECDH"))?;
        let _ = sk.sign(&rng, &msg).map_err(|_| fail("sign"))?;
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &device_pub)
            .verify(&msg, sig.as_ref())
            .map_err(|_| fail("verify"))?;
    }
    Ok(t.elapsed().as_secs_f64() / n as f64)
}

fn manifest_import(
    f: &Factory,
    rt: &tokio::runtime::Runtime,
    n: usize,
    dir: &std::path::Path,
) -> Result<()> {
    use inkan_pki::manifest::{Manifest, ManifestEntry};
    use inkan_pki::{CaSigner, DeviceProfile, SoftwareKey};
    let (_, fam) = f.family("bench")?;
    let fam_key = f.signer("family-bench")?;
    let dev_key = SoftwareKey::generate(KeyCurve::P256);
    let point = dev_key.public_point();
    let mut entries = Vec::with_capacity(n);
    for i in 0..n {
        let serial = format!("{i:018X}");
        let profile = DeviceProfile {
            serial: serial.clone(),
            organization: "bench".into(),
            family: "bench".into(),
            key_agreement: true,
            ueid: Some(inkan_pki::Ueid::random()),
        };
        let c = inkan_pki::cert::issue_device(
            &*fam_key,
            &fam,
            &point,
            &profile,
            &CertPolicy::default(),
        )?;
        let ueid = c.ueid().map(|u| u.as_bytes().to_vec().into());
        entries.push(ManifestEntry {
            serial,
            certificate: c.der.into(),
            public_key: point.clone().into(),
            family: "bench".into(),
            time: 0,
            ueid,
        });
    }
    let m = Manifest {
        version: 1,
        batch: "import".into(),
        family: "bench".into(),
        family_certificate: fam.der.clone().into(),
        created: 0,
        entries,
    };
    let bytes = inkan_pki::manifest::sign(
        &m,
        &*f.signer("manifest-signer")?,
        &f.manifest_signer_cert()?,
    )?;
    let root = f.root()?;
    let (import, raw) = rt.block_on(async {
        let import_db = dir.join("import.db").to_string_lossy().into_owned();
        // Importing a manifest needs the family registered (with proof of
        // possession) in the importing tenant.
        let (tenant, _) = register_bench_family(f, &import_db).await?;
        let reg = inkan_cloud::Registry::new(inkan_cloud::Store::open(&import_db).await?);
        let t = Instant::now();
        let count = reg.import_manifest(&tenant, &bytes, &root.der).await?;
        let import = count as f64 / t.elapsed().as_secs_f64();
        // Reference: the same rows inserted raw, with the same multi-row
        // statements in one transaction, into a fresh store of the same kind.
        let b = inkan_cloud::Store::open(&dir.join("raw.db").to_string_lossy()).await?;
        let tenant_b = b.ensure_tenant("bench").await?;
        let t = Instant::now();
        let rows: Vec<_> = m
            .entries
            .iter()
            .map(|e| inkan_cloud::store::NewDevice {
                id: e
                    .ueid
                    .as_ref()
                    .map(hex::encode)
                    .unwrap_or_else(|| inkan_pki::Ueid::random().to_hex()),
                serial: &e.serial,
                certificate: &e.certificate,
                fingerprint: inkan_cloud::registry::fingerprint(&e.certificate),
                public_key: &e.public_key,
            })
            .collect();
        let mut tx = b.pool.begin().await?;
        inkan_cloud::Store::insert_devices(
            &mut tx,
            inkan_cloud::store::Entry {
                tenant: &tenant_b,
                family_id: None,
                state: inkan_cloud::lifecycle::DeviceState::Manufactured,
                enrolled_by: "manifest",
                proof: inkan_cloud::lifecycle::Proof::Family,
                actor: "bench",
            },
            &rows,
        )
        .await?;
        tx.commit().await?;
        let raw = m.entries.len() as f64 / t.elapsed().as_secs_f64();
        anyhow::Ok((import, raw))
    })?;
    println!();
    println!("manifest import ({n} devices, SQLite): {import:.0} devices/s, raw inserts of the same rows {raw:.0}/s, ratio {:.2}", import / raw);
    Ok(())
}
