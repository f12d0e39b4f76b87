//! `inkan serve` and `inkan device`: the cloud's device endpoint, and a
//! device authenticating to it through its secure element.

use anyhow::{anyhow, bail, Context, Result};
use inkan_cloud::{App, CloudIdentity, Limits, Registry, Store};
use inkan_pki::{CertPolicy, SoftwareKey};
use inkan_se::transport::{self, Address};
use inkan_se::Driver;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Arguments of `inkan serve`.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  inkan serve --cloud-key cloud-auth.key.pem                       (SQLite in ./inkan.db, CoAP on 127.0.0.1:5683)
  inkan serve --db postgres://inkan@127.0.0.1/inkan --cloud-key cloud-auth.key.pem
The cloud key's passphrase comes from $INKAN_CA_PASSPHRASE or --passphrase-file.")]
pub struct ServeArgs {
    /// The store: a SQLite file (created, WAL) or postgres://… .
    #[arg(long, default_value = "inkan.db")]
    db: String,
    /// Device endpoint (CoAP over UDP), loopback by default.
    #[arg(long, default_value = "127.0.0.1:5683")]
    coap: SocketAddr,
    /// Operator API (HTTP/JSON, OpenAPI at /openapi.json), loopback by default.
    #[arg(long, default_value = "127.0.0.1:8080")]
    api: SocketAddr,
    /// Prometheus metrics (`GET /metrics`, no token: bind it to an
    /// internal interface); off unless given.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// The cloud's authentication key (encrypted PKCS#8 PEM, P-256): the
    /// key devices pinned at personalization.
    #[arg(long)]
    cloud_key: PathBuf,
    /// Passphrase file for the cloud key.
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
    /// Seconds an EDHOC exchange may wait for message_3.
    #[arg(long, default_value_t = 30)]
    exchange_ttl: i64,
    /// Most EDHOC exchanges pending at once.
    #[arg(long, default_value_t = 10_000)]
    max_pending: i64,
    /// Seconds a device session (and its OSCORE context) lives.
    #[arg(long, default_value_t = 86_400)]
    session_ttl: i64,
    /// Datagrams per second one source address may send to the device
    /// endpoint (bursts of twice as many); past it, its datagrams are shed
    /// before they are parsed.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    source_rate: u32,
    /// EDHOC message_1s per second taken from addresses that have not
    /// proved they receive; past it each is first answered with a CoAP
    /// Echo to repeat (RFC 9175), which spoofed senders never see. 0 asks
    /// every time.
    #[arg(long, default_value_t = 500)]
    echo_rate: u32,
    /// Days audit entries are kept (older ones are deleted hourly).
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u64).range(1..=36_500))]
    audit_retention_days: u64,
    /// The command key (encrypted PKCS#8 PEM, P-256; same passphrase): the
    /// key whose public half devices pinned in zone 2. Without it the
    /// service issues no commands.
    #[arg(long)]
    command_key: Option<PathBuf>,
    /// The command key inside a PKCS#11 token instead of a file: the
    /// module (PIN in $INKAN_PKCS11_PIN; with --command-token and
    /// --command-key-label).
    #[arg(long, conflicts_with = "command_key", requires_all = ["command_token", "command_key_label"])]
    command_key_pkcs11: Option<PathBuf>,
    /// The token holding the command key (its label).
    #[arg(long, requires = "command_key_pkcs11")]
    command_token: Option<String>,
    /// The command key's CKA_LABEL in the token.
    #[arg(long, requires = "command_key_pkcs11")]
    command_key_label: Option<String>,
    /// The OEM firmware public key (PEM): uploaded firmware manifests must
    /// verify with it.
    #[arg(long)]
    firmware_key_pub: Option<PathBuf>,
    /// The command key before a rotation (a key file): it signs only the
    /// rotate-command-key commands that hand devices the current one.
    #[arg(long)]
    previous_command_key: Option<PathBuf>,
}

/// Loads the cloud identity from an encrypted key file.
pub fn load_identity(key: &std::path::Path, passphrase: &[u8]) -> Result<CloudIdentity> {
    let k = SoftwareKey::load(key, passphrase)?;
    let SoftwareKey::P256(sk) = &k else {
        bail!("the cloud key must be P-256 (EDHOC cipher suite 2)")
    };
    let cert = inkan_pki::cert::issue_root(
        &k,
        "inkan cloud",
        "inkan cloud authentication",
        &CertPolicy::default(),
    )?;
    Ok(CloudIdentity::new(&sk.to_bytes(), &cert.der)?)
}

fn passphrase(file: &Option<PathBuf>) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    match file {
        Some(p) => Ok(zeroize::Zeroizing::new(
            std::fs::read(p)
                .with_context(|| format!("reading {}", p.display()))?
                .trim_ascii_end()
                .to_vec(),
        )),
        None => std::env::var("INKAN_CA_PASSPHRASE")
            .map(|s| zeroize::Zeroizing::new(s.into_bytes()))
            .map_err(|_| {
                anyhow!(
                    "give the cloud key passphrase in $INKAN_CA_PASSPHRASE or --passphrase-file"
                )
            }),
    }
}

/// Runs `inkan serve`.
pub fn serve(a: ServeArgs) -> Result<()> {
    if !a.coap.ip().is_loopback() {
        eprintln!(
            "warning: the device endpoint listens on {} (not loopback)",
            a.coap
        );
    }
    let pass = passphrase(&a.passphrase_file)?;
    let identity = load_identity(&a.cloud_key, &pass)?;
    let load_key = |p: &std::path::Path| -> Result<SoftwareKey> {
        let k = SoftwareKey::load(p, &pass)
            .with_context(|| format!("loading the command key {}", p.display()))?;
        if !matches!(k, SoftwareKey::P256(_)) {
            bail!("the command key must be P-256 (ES256)");
        }
        Ok(k)
    };
    let command_key: Option<Box<dyn inkan_pki::CaSigner>> = match (
        a.command_key.as_deref(),
        &a.command_key_pkcs11,
        &a.command_token,
        &a.command_key_label,
    ) {
        (Some(p), ..) => Some(Box::new(load_key(p)?)),
        (None, Some(module), Some(token), Some(label)) => {
            let pin = std::env::var("INKAN_PKCS11_PIN")
                .map_err(|_| anyhow!("give the token PIN in $INKAN_PKCS11_PIN"))?;
            Some(Box::new(
                inkan_pki::pkcs11::Pkcs11Signer::open(&inkan_pki::pkcs11::TokenKey {
                    module: module.clone(),
                    token: token.clone(),
                    pin,
                    label: label.clone(),
                })
                .with_context(|| format!("opening the command key {label:?} in token {token:?}"))?,
            ))
        }
        _ => None,
    };
    if command_key
        .as_ref()
        .is_some_and(|k| k.curve() != inkan_pki::KeyCurve::P256)
    {
        bail!("the command key must be P-256 (ES256)");
    }
    if a.previous_command_key.is_some() && command_key.is_none() {
        bail!("--previous-command-key needs the current command key (--command-key or --command-key-pkcs11)");
    }
    let previous_key = a
        .previous_command_key
        .as_deref()
        .map(load_key)
        .transpose()?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let store = Store::open(&a.db)
            .await
            .with_context(|| format!("opening the store {}", a.db))?;
        let mut service = App::new(
            Registry::new(store),
            identity,
            Limits {
                ttl_secs: a.exchange_ttl,
                max_pending: a.max_pending,
                session_ttl_secs: a.session_ttl,
                source_rate: a.source_rate,
                echo_rate: a.echo_rate,
            },
        );
        if let Some(k) = command_key {
            service = service.with_command_key(k);
        }
        if let Some(k) = previous_key {
            service = service.with_previous_command_key(Box::new(k));
        }
        if let Some(p) = &a.firmware_key_pub {
            let der = inkan_pki::pem_or_der(
                "PUBLIC KEY",
                &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
            )?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("{} holds no public key", p.display()))?;
            service = service.with_firmware_key(inkan_pki::signer::point_of_spki(&der)?);
        }
        let service = service.with_audit_retention(std::time::Duration::from_secs(
            a.audit_retention_days.saturating_mul(24 * 3600),
        ));
        let auth = Arc::new(service);
        let sock = tokio::net::UdpSocket::bind(a.coap)
            .await
            .with_context(|| format!("binding {}", a.coap))?;
        let api = std::net::TcpListener::bind(a.api)
            .with_context(|| format!("binding {}", a.api))?;
        api.set_nonblocking(true)?;
        let metrics = match a.metrics {
            Some(m) => {
                let l = std::net::TcpListener::bind(m)
                    .with_context(|| format!("binding {m}"))?;
                l.set_nonblocking(true)?;
                Some(l)
            }
            None => None,
        };
        eprintln!(
            "inkan serve: store {}, device endpoint coap://{}/.well-known/edhoc, operator API http://{}",
            a.db,
            sock.local_addr()?,
            api.local_addr()?
        );
        if let Some(m) = &metrics {
            eprintln!("inkan serve: metrics http://{}/metrics", m.local_addr()?);
        }
        // The operator API runs on its own runtime and thread: a flood of
        // datagrams on the device endpoint cannot starve it.
        let api_app = auth.clone();
        let (api_done, api_failed) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("inkan-api".into())
            .spawn(move || {
                let r = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .and_then(|rt| {
                        rt.block_on(async {
                            let l = tokio::net::TcpListener::from_std(api)?;
                            if let Some(m) = metrics {
                                let m = tokio::net::TcpListener::from_std(m)?;
                                tokio::spawn(inkan_cloud::metrics::serve(m, api_app.clone()));
                            }
                            inkan_cloud::api::serve(l, api_app).await
                        })
                    });
                let _ = api_done.send(r);
            })?;
        tokio::select! {
            r = inkan_cloud::server::serve(sock, auth) => r?,
            r = api_failed => r.map_err(|_| anyhow!("the API thread ended"))??,
        }
        Ok(())
    })
}

/// `inkan device …`.
#[derive(clap::Subcommand)]
pub enum DeviceCmd {
    /// The boot check: the chip verifies the firmware manifest against the
    /// OEM key pinned at the factory; the manifest must be for this
    /// device's family, not below the security version the chip recorded,
    /// and describe this exact image.
    #[command(after_help = "\
Example:
  inkan device boot --se unix:/tmp/se.sock --device-secrets 0A1B….json --image app.bin --manifest app.manifest --confirm")]
    Boot(BootArgs),
    /// Authenticate to the cloud with EDHOC over CoAP, every private-key
    /// operation in the secure element; print the session.
    #[command(after_help = "\
Example:
  inkan device connect --se unix:/tmp/se.sock --cloud coap://127.0.0.1:5683 --device-secrets factory/batches/b1/devices/0A1B….json")]
    Connect {
        /// The secure element: unix:PATH, tcp:127.0.0.1:PORT or i2c:/dev/i2c-N.
        #[arg(long)]
        se: Address,
        /// The cloud's device endpoint.
        #[arg(long, default_value = "coap://127.0.0.1:5683")]
        cloud: String,
        /// The device secrets file the factory wrote (host MAC keys).
        #[arg(long)]
        device_secrets: PathBuf,
    },
    /// Stay connected: authenticate, then send readings from a simulated
    /// sensor under OSCORE at a fixed interval, and poll for commands, which
    /// the chip verifies before a simulated valve runs them (open, close);
    /// authenticate again when the session ends or expires.
    #[command(after_help = "\
Example:
  inkan device run --se unix:/tmp/se.sock --cloud coap://127.0.0.1:5683 --device-secrets 0A1B….json --interval-ms 1000 --batch 10")]
    Run {
        /// The secure element: unix:PATH, tcp:127.0.0.1:PORT or i2c:/dev/i2c-N.
        #[arg(long)]
        se: Address,
        /// The cloud's device endpoint.
        #[arg(long, default_value = "coap://127.0.0.1:5683")]
        cloud: String,
        /// The device secrets file the factory wrote (host MAC keys).
        #[arg(long)]
        device_secrets: PathBuf,
        /// Milliseconds between batches.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Readings per batch.
        #[arg(long, default_value_t = 10)]
        batch: usize,
        /// Stop after this many batches (0: run until killed).
        #[arg(long, default_value_t = 0)]
        count: u64,
        /// File recording the command ids run (each runs at most once,
        /// across restarts too); by default beside the device secrets
        /// (`<secrets>.executed`).
        #[arg(long)]
        executed: Option<PathBuf>,
        /// Sign each batch in the secure element (COSE_Sign1), for families
        /// that keep signatures with their records.
        #[arg(long)]
        sign_readings: bool,
        /// The device's A/B firmware slots (a directory, provisioned with
        /// --image/--manifest on first use): take updates that campaigns
        /// offer, verified by the chip, trial-booted, confirmed.
        #[arg(long, requires_all = ["image", "manifest"])]
        slots: Option<PathBuf>,
        /// The factory image for empty slots.
        #[arg(long)]
        image: Option<PathBuf>,
        /// Its signed manifest.
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
}

/// `inkan device boot`.
#[derive(clap::Args)]
pub struct BootArgs {
    /// The secure element: unix:PATH, tcp:127.0.0.1:PORT or i2c:/dev/i2c-N.
    #[arg(long)]
    se: Address,
    /// The device secrets file the factory wrote (host MAC keys).
    #[arg(long)]
    device_secrets: PathBuf,
    /// The image to boot.
    #[arg(long)]
    image: PathBuf,
    /// Its signed manifest.
    #[arg(long)]
    manifest: PathBuf,
    /// After a successful check, record the image's security version in
    /// the chip's one-way counter (the image booted and works).
    #[arg(long)]
    confirm: bool,
}

/// Runs `inkan device boot`: exits non-zero, with the reason, when the
/// image must not run.
fn boot(a: BootArgs) -> Result<()> {
    let d = Arc::new(Mutex::new(open_device(&a.se, &a.device_secrets)?));
    let image =
        std::fs::read(&a.image).with_context(|| format!("reading {}", a.image.display()))?;
    let manifest =
        std::fs::read(&a.manifest).with_context(|| format!("reading {}", a.manifest.display()))?;
    let ok = inkan_device::firmware::boot_check(&d, &image, &manifest)
        .map_err(|e| anyhow!("boot refused: {e}"))?;
    println!(
        "boot check passed: {} {} (security version {}, device at {}); hashing {:.2} ms, chip signature check {:.2} ms",
        ok.manifest.class,
        ok.manifest.firmware_version,
        ok.manifest.security_version,
        ok.device_security_version,
        ok.hash_time.as_secs_f64() * 1000.0,
        ok.verify_time.as_secs_f64() * 1000.0
    );
    if a.confirm {
        let v = inkan_device::firmware::confirm(&d, ok.manifest.security_version)?;
        println!("confirmed: the chip records security version {v}");
    }
    Ok(())
}

/// A simulated temperature sensor: a slow sine around 21 °C with noise,
/// each reading an 8-byte big-endian IEEE 754 value in milli-degrees.
struct Sensor {
    t0: std::time::Instant,
}

impl Sensor {
    fn read(&self, n: usize) -> Vec<inkan_proto::telemetry::Reading> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        (0..n)
            .map(|i| {
                let t = self.t0.elapsed().as_secs_f64() + i as f64 * 0.001;
                let mut noise = [0u8; 1];
                rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut noise);
                let celsius =
                    21.0 + 2.0 * (t / 60.0).sin() + (f64::from(noise[0]) - 127.5) / 1000.0;
                inkan_proto::telemetry::Reading {
                    time_ms: now_ms + u64::try_from(i).unwrap_or(0),
                    channel: 0,
                    value: celsius.to_be_bytes().to_vec(),
                }
            })
            .collect()
    }
}

/// Parses `coap://host:port`.
pub fn coap_addr(s: &str) -> Result<SocketAddr> {
    let rest = s.strip_prefix("coap://").ok_or_else(|| {
        anyhow!("the cloud address must look like coap://127.0.0.1:5683, not {s:?}")
    })?;
    let rest = rest.trim_end_matches('/');
    rest.parse()
        .map_err(|_| anyhow!("{s:?} is not coap://IP:PORT"))
}

/// Reads a device secrets file and opens the host session with the chip.
fn open_device(
    se: &Address,
    device_secrets: &std::path::Path,
) -> Result<Driver<Box<dyn inkan_se::transport::Transport>>> {
    let secrets: inkan_factory::personalize::DeviceSecrets = serde_json::from_slice(
        &std::fs::read(device_secrets)
            .with_context(|| format!("reading {}", device_secrets.display()))?,
    )
    .with_context(|| format!("{} is not a device secrets file", device_secrets.display()))?;
    let keys = secrets
        .host_keys()
        .ok_or_else(|| anyhow!("{} holds no host keys", device_secrets.display()))?;
    let t = transport::connect(se)
        .with_context(|| format!("connecting to the secure element at {se}"))?;
    let mut d = Driver::new(t)?;
    d.open_session(keys)?;
    Ok(d)
}

/// Waits between attempts to reach the cloud: 0.5 s doubling to 30 s,
/// said on stderr.
#[derive(Default)]
struct Backoff {
    next_ms: u64,
}

impl Backoff {
    fn wait(&mut self, why: &str) {
        self.next_ms = (self.next_ms * 2).clamp(500, 30_000);
        eprintln!(
            "the cloud is unreachable or busy ({why}); authenticating again in {:.1} s",
            self.next_ms as f64 / 1000.0
        );
        std::thread::sleep(std::time::Duration::from_millis(self.next_ms));
    }

    fn reset(&mut self) {
        self.next_ms = 0;
    }
}

/// The cloud answered "busy" (too many pending exchanges): worth asking
/// again later.
fn is_busy(e: &inkan_device::ConnectError) -> bool {
    matches!(e, inkan_device::ConnectError::Refused { detail, .. } if detail == "busy")
}

/// Polls and runs the commands waiting for the device; true when one of
/// them erased its secrets (decommissioning).
fn run_commands<T: inkan_se::transport::Transport>(
    up: &mut inkan_device::Uplink,
    d: &inkan_device::SharedDriver<T>,
    executed: &mut inkan_device::Executed,
    actuator: &mut dyn FnMut(&inkan_proto::command::Command) -> Result<String, String>,
) -> Result<bool, inkan_device::UplinkError> {
    for _ in 0..16 {
        match inkan_device::poll_and_run(up, d, executed, actuator)? {
            inkan_device::Polled::Nothing => break,
            inkan_device::Polled::Ran(c, o, detail) => {
                println!(
                    "command {} {}: {} ({detail})",
                    hex::encode(c.id),
                    c.action,
                    o.state()
                );
                if o != inkan_proto::command::Outcome::Succeeded {
                    continue;
                }
                if c.action == inkan_device::DECOMMISSION {
                    return Ok(true);
                }
                // A command run is a unit of use, counted down in the chip
                // when the device has a usage limit.
                let mut chip = d
                    .lock()
                    .map_err(|_| inkan_device::UplinkError::Coap("driver lock poisoned".into()))?;
                match inkan_device::usage::consume(&mut chip, 1) {
                    Ok(left) => println!("usage: {left} unit(s) left"),
                    Err(inkan_device::usage::UseRefused::Unmetered) => {}
                    Err(e) => println!("usage: {e}"),
                }
            }
            inkan_device::Polled::Refused(e) => println!("command refused: {e}"),
        }
    }
    Ok(false)
}

/// Runs `inkan device`.
pub fn device(c: DeviceCmd) -> Result<()> {
    match c {
        DeviceCmd::Boot(a) => boot(a)?,
        DeviceCmd::Run {
            se,
            cloud,
            device_secrets,
            interval_ms,
            batch,
            count,
            executed,
            sign_readings,
            slots,
            image,
            manifest,
        } => {
            let mut firmware = match (&slots, &image, &manifest) {
                (Some(dir), Some(img), Some(man)) => {
                    let mut sl = inkan_device::firmware::slots::Slots::open(dir);
                    if !dir.join("slot-a").exists() {
                        sl.provision(
                            &std::fs::read(img)
                                .with_context(|| format!("reading {}", img.display()))?,
                            &std::fs::read(man)
                                .with_context(|| format!("reading {}", man.display()))?,
                        )
                        .map_err(|e| anyhow!("provisioning the slots: {e}"))?;
                    }
                    Some((sl, dir.join("download")))
                }
                _ => None,
            };
            let cloud = coap_addr(&cloud)?;
            let d = Arc::new(Mutex::new(open_device(&se, &device_secrets)?));
            if let Some((sl, _)) = &mut firmware {
                let b = sl.boot(&d).map_err(|e| anyhow!("boot: {e}"))?;
                println!(
                    "booted slot {:?} (security version {}{})",
                    b.slot,
                    b.security_version,
                    if b.trial { ", trial" } else { "" }
                );
            }
            // Commands run are recorded on disk (by default beside the
            // device secrets), so a command delivered again after a restart
            // never runs twice.
            let executed = executed.unwrap_or_else(|| device_secrets.with_extension("executed"));
            let mut executed = inkan_device::Executed::open(Some(&executed))?;
            let mut valve_open = false;
            let mut actuator = |c: &inkan_proto::command::Command| -> Result<String, String> {
                match c.action.as_str() {
                    "open" => valve_open = true,
                    "close" => valve_open = false,
                    other => return Err(format!("the valve has no action {other:?}")),
                }
                Ok(format!(
                    "valve {}",
                    if valve_open { "open" } else { "closed" }
                ))
            };
            let rt = inkan_device::Retransmission::default();
            let sensor = Sensor {
                t0: std::time::Instant::now(),
            };
            let mut sent = 0u64;
            let mut uplink: Option<inkan_device::Uplink> = None;
            let mut backoff = Backoff::default();
            let mut decommissioned = false;
            while count == 0 || sent < count {
                let up = match &mut uplink {
                    Some(u) => u,
                    None => {
                        let c = match inkan_device::connect(d.clone(), cloud, rt) {
                            Ok(c) => c,
                            // The service is down or restarting: wait and
                            // authenticate again.
                            Err(
                                e @ (inkan_device::ConnectError::Io(_)
                                | inkan_device::ConnectError::Timeout(_)),
                            ) => {
                                backoff.wait(&e.to_string());
                                continue;
                            }
                            Err(e) if is_busy(&e) => {
                                backoff.wait(&e.to_string());
                                continue;
                            }
                            Err(e) => return Err(e.into()),
                        };
                        backoff.reset();
                        println!(
                            "authenticated: device {} (suite {}), OSCORE context derived",
                            c.serial,
                            c.suite.id()
                        );
                        uplink.insert(inkan_device::Uplink::new(&c, cloud, rt)?)
                    }
                };
                if decommissioned {
                    // Told at this contact: only the erase order is left.
                    run_commands(up, &d, &mut executed, &mut actuator)?;
                    println!(
                        "this device was decommissioned: its secure element destroyed its secrets"
                    );
                    return Ok(());
                }
                let readings = sensor.read(batch);
                let sent_batch = if sign_readings {
                    up.send_signed(&readings, &d)
                } else {
                    up.send(&readings)
                };
                let polled = sent_batch.and_then(|n| {
                    sent += 1;
                    println!("batch {sent}: {n} readings stored");
                    // The units of use left, signed by the chip.
                    if let Some(left) = up.report_usage(&d)? {
                        println!("usage reported: {left} unit(s) left");
                    }
                    // An update a campaign offers.
                    if let Some((sl, work)) = &mut firmware {
                        std::fs::create_dir_all(&*work)?;
                        match inkan_device::firmware::update_once(
                            up,
                            &d,
                            sl,
                            work,
                            &mut |_| Ok(()),
                        )? {
                            inkan_device::firmware::UpdateOutcome::Nothing => {}
                            inkan_device::firmware::UpdateOutcome::Updated(v) => {
                                println!("firmware updated: security version {v} confirmed")
                            }
                            inkan_device::firmware::UpdateOutcome::Failed(why) => {
                                println!("firmware update failed: {why}")
                            }
                        }
                    }
                    // Commands waiting for this device, verified by the chip.
                    if run_commands(up, &d, &mut executed, &mut actuator)? {
                        return Err(inkan_device::UplinkError::Refused {
                            code: "erased".into(),
                            detail: String::new(),
                        });
                    }
                    Ok(n)
                });
                match polled {
                    Ok(_) => {}
                    Err(inkan_device::UplinkError::Refused { code, .. }) if code == "erased" => {
                        println!(
                            "this device was decommissioned: its secure element destroyed its secrets"
                        );
                        return Ok(());
                    }
                    // Decommissioned while away: fetch the erase order.
                    Err(inkan_device::UplinkError::Refused { code, detail })
                        if code == "4.03" && detail.contains("decommissioned") =>
                    {
                        decommissioned = true;
                        continue;
                    }
                    Err(
                        e @ (inkan_device::UplinkError::Io(_)
                        | inkan_device::UplinkError::Timeout(_)),
                    ) => {
                        backoff.wait(&e.to_string());
                        uplink = None;
                        continue;
                    }
                    // The session ended or expired: authenticate again.
                    Err(inkan_device::UplinkError::Refused { code, detail }) if code == "4.01" => {
                        println!("the cloud refused the session ({detail}); authenticating again");
                        uplink = None;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
                std::thread::sleep(std::time::Duration::from_millis(interval_ms));
            }
        }
        DeviceCmd::Connect {
            se,
            cloud,
            device_secrets,
        } => {
            let cloud = coap_addr(&cloud)?;
            let d = Arc::new(Mutex::new(open_device(&se, &device_secrets)?));
            // A busy cloud (too many pending exchanges) is asked again, with
            // backoff, a few times.
            let mut backoff = Backoff::default();
            let mut attempts = 0;
            let c = loop {
                match inkan_device::connect(
                    d.clone(),
                    cloud,
                    inkan_device::Retransmission::default(),
                ) {
                    Err(e @ inkan_device::ConnectError::Refused { .. })
                        if is_busy(&e) && attempts < 5 =>
                    {
                        attempts += 1;
                        backoff.wait(&e.to_string());
                    }
                    r => break r?,
                }
            };
            println!(
                "authenticated: device {} to {cloud} (EDHOC method 0, cipher suite {})",
                c.serial,
                c.suite.id()
            );
            println!(
                "  C_I {}  C_R {}",
                hex::encode(&c.c_i.0),
                hex::encode(&c.c_r.0)
            );
            println!(
                "  OSCORE: Sender ID {} (C_R), Recipient ID {} (C_I), master salt {}",
                hex::encode(&c.c_r.0),
                hex::encode(&c.c_i.0),
                hex::encode(&*c.session.oscore_master_salt()?)
            );
        }
    }
    Ok(())
}

/// `inkan cloud …`: operator commands. `bootstrap` works on the store
/// directly (on the server); the others go through the operator API.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  inkan cloud bootstrap --db inkan.db --tenant acme            (prints an admin token, once)
  export INKAN_TOKEN=ink_…
  inkan cloud devices
  inkan cloud device <id> suspend
  inkan cloud family register --name thermo --cert factory/families/thermo/family.crt.pem \\
        --key factory/keys/family-thermo.key.pem                 (key passphrase in $INKAN_CA_PASSPHRASE)
  inkan cloud manifest import factory/batches/thermo-1/manifest.cose --root factory/root.crt.pem
  inkan cloud audit")]
pub struct CloudArgs {
    /// The operator API.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    api: String,
    /// Bearer token (or $INKAN_TOKEN).
    #[arg(long, global = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: CloudCmd,
}

#[derive(clap::Subcommand)]
enum CloudCmd {
    /// Create a tenant and an admin token directly in the store.
    #[command(after_help = "Example:\n  inkan cloud bootstrap --db inkan.db --tenant acme")]
    Bootstrap {
        /// The store (as for `inkan serve`).
        #[arg(long, default_value = "inkan.db")]
        db: String,
        /// Tenant name (1 to 64 letters, digits, '-', '_' or '.').
        #[arg(long, value_parser = tenant_name)]
        tenant: String,
    },
    /// List the tenant's devices.
    #[command(after_help = "Example:\n  inkan cloud devices --limit 50")]
    Devices {
        /// Page size (1 to 1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=1000))]
        limit: i64,
    },
    /// One device: show it, its history and credentials, act on its
    /// lifecycle, decommission it.
    #[command(subcommand)]
    Device(DeviceCloudCmd),
    /// Transfers of ownership between tenants.
    #[command(subcommand)]
    Transfer(TransferCmd),
    /// API tokens of the tenant: create (with a lifetime), list, revoke.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Families.
    #[command(subcommand)]
    Family(FamilyCmd),
    /// Manifests.
    #[command(subcommand)]
    Manifest(ManifestCmd),
    /// The tenant's audit log.
    #[command(after_help = "Example:\n  inkan cloud audit --limit 20")]
    Audit {
        /// Entries (1 to 1000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=1000))]
        limit: i64,
    },
    /// Send a command to a device or to every device of a family; it is
    /// signed with the service's command key and delivered when the device
    /// polls.
    #[command(
        after_help = "Examples:\n  inkan cloud command --device 51ab… --action open --ttl 300\n  inkan cloud command --family 9f3c… --action rotate-command-key"
    )]
    Command {
        /// One device (id).
        #[arg(long, conflicts_with = "family", required_unless_present = "family")]
        device: Option<String>,
        /// Every active device of a family (id).
        #[arg(long)]
        family: Option<String>,
        /// The action.
        #[arg(long)]
        action: String,
        /// Arguments, hex.
        #[arg(long)]
        args: Option<String>,
        /// Seconds until it expires.
        #[arg(long, default_value_t = 300)]
        ttl: i64,
    },
    /// Upload a firmware image and its OEM-signed manifest for a family (the
    /// service checks the signature, the family and the image).
    #[command(
        after_help = "Example:\n  inkan cloud firmware-upload --family 9f3c… --image app.bin --manifest app.manifest"
    )]
    FirmwareUpload {
        /// The family (id).
        #[arg(long)]
        family: String,
        /// The image.
        #[arg(long)]
        image: PathBuf,
        /// Its signed manifest.
        #[arg(long)]
        manifest: PathBuf,
    },
    /// Start an update campaign for an uploaded firmware: the whole family,
    /// some devices or a percentage, in stages, with a failure threshold.
    #[command(
        after_help = "Examples:\n  inkan cloud campaign --firmware 7c1e… --stages 10,50,100 --failure-threshold 20\n  inkan cloud campaign --firmware 7c1e… --percent 25"
    )]
    Campaign {
        /// The firmware (id).
        #[arg(long)]
        firmware: String,
        /// Only these devices (ids, comma-separated).
        #[arg(long, value_delimiter = ',', conflicts_with = "percent")]
        devices: Option<Vec<String>>,
        /// This percentage of the family.
        #[arg(long)]
        percent: Option<u8>,
        /// Cumulative stage percentages, ending at 100.
        #[arg(long, value_delimiter = ',', default_value = "100")]
        stages: Vec<u8>,
        /// Stop above this failure percentage of a stage.
        #[arg(long, default_value_t = 20)]
        failure_threshold: u8,
    },
    /// A campaign's state and its devices' progress.
    #[command(after_help = "Example:\n  inkan cloud campaign-status 3a9f…")]
    CampaignStatus {
        /// Campaign id.
        id: String,
    },
    /// The tenant's commands and their states.
    #[command(after_help = "Example:\n  inkan cloud commands --device 51ab…")]
    Commands {
        /// Only this device (id).
        #[arg(long)]
        device: Option<String>,
    },
    /// Readings of the tenant's devices, by device time; every page, as
    /// JSON lines or CSV (an export), or one JSON page.
    #[command(
        after_help = "Examples:\n  inkan cloud readings --device 51ab… --from 1700000000000 --format csv > thermo.csv\n  inkan cloud readings --family 9f3c… --format jsonl > family.jsonl"
    )]
    Readings {
        /// Only this device (id).
        #[arg(long)]
        device: Option<String>,
        /// Only devices of this family (id).
        #[arg(long)]
        family: Option<String>,
        /// From this device time (ms since the epoch).
        #[arg(long)]
        from: Option<i64>,
        /// Until this device time (ms, exclusive).
        #[arg(long)]
        to: Option<i64>,
        /// json (one page), jsonl or csv (every page).
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// Page size (1 to 1000).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..=1000))]
        limit: i64,
    },
}

#[derive(clap::Subcommand)]
enum DeviceCloudCmd {
    /// The device.
    #[command(after_help = "Example:\n  inkan cloud device show 01a3f9…")]
    Show {
        /// Device id (its UEID).
        id: String,
    },
    /// Its lifecycle transitions, credentials, sessions, commands and
    /// firmware updates, in time order.
    #[command(after_help = "Example:\n  inkan cloud device history 01a3f9…")]
    History {
        /// Device id.
        id: String,
    },
    /// The units of use its chip last reported left (signed by the chip).
    #[command(after_help = "Example:\n  inkan cloud device usage 01a3f9…")]
    Usage {
        /// Device id.
        id: String,
    },
    /// Its credentials (certificates) and their states.
    #[command(after_help = "Example:\n  inkan cloud device credentials 01a3f9…")]
    Credentials {
        /// Device id.
        id: String,
    },
    /// Add a certificate the device's family issued for it (renewal, or a
    /// new key): the device keeps its id.
    #[command(
        after_help = "Example:\n  inkan cloud device add-credential 01a3f9… --cert renewed.crt.pem"
    )]
    AddCredential {
        /// Device id.
        id: String,
        /// The certificate (PEM).
        #[arg(long)]
        cert: PathBuf,
    },
    /// Retire one of its credentials: refused from now on.
    #[command(after_help = "Example:\n  inkan cloud device retire-credential 01a3f9… 5c2e…")]
    RetireCredential {
        /// Device id.
        id: String,
        /// Credential id.
        credential: String,
    },
    /// Claim a manufactured device.
    #[command(after_help = "Example:\n  inkan cloud device claim 01a3f9…")]
    Claim {
        /// Device id.
        id: String,
    },
    /// Suspend it (refused until resumed).
    #[command(after_help = "Example:\n  inkan cloud device suspend 01a3f9…")]
    Suspend {
        /// Device id.
        id: String,
    },
    /// Resume a suspended device.
    #[command(after_help = "Example:\n  inkan cloud device resume 01a3f9…")]
    Resume {
        /// Device id.
        id: String,
    },
    /// Revoke it for good.
    #[command(after_help = "Example:\n  inkan cloud device revoke 01a3f9…")]
    Revoke {
        /// Device id.
        id: String,
    },
    /// Take it out of service: credentials revoked, sessions ended, and the
    /// device told (a signed command its chip verifies) to destroy its
    /// secrets, at once or at its next contact.
    #[command(
        after_help = "Example:\n  inkan cloud device decommission 01a3f9… --purge-readings --reason \"end of life\""
    )]
    Decommission {
        /// Device id.
        id: String,
        /// Delete its readings too (kept by default).
        #[arg(long)]
        purge_readings: bool,
        /// Why (kept in its history).
        #[arg(long, default_value = "operator request")]
        reason: String,
    },
}

#[derive(clap::Subcommand)]
enum TokenCmd {
    /// A new token (shown once).
    #[command(after_help = "Example:\n  inkan cloud token create --role viewer --ttl 86400")]
    Create {
        /// viewer, operator or admin.
        #[arg(long)]
        role: String,
        /// Seconds it stays valid (until revoked when omitted).
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..=31_622_400))]
        ttl: Option<i64>,
    },
    /// The tenant's tokens (never their secrets).
    #[command(after_help = "Example:\n  inkan cloud token list")]
    List,
    /// Revoke a token: refused from now on.
    #[command(after_help = "Example:\n  inkan cloud token revoke 3f9c…")]
    Revoke {
        /// Token id (the part after `ink_`).
        id: String,
    },
}

#[derive(clap::Subcommand)]
enum TransferCmd {
    /// Offer devices to another tenant: writes the signed transfer document
    /// the buyer claims.
    #[command(
        after_help = "Example:\n  inkan cloud transfer offer --to operator --devices 01a3…,01b7… --out batch.transfer"
    )]
    Offer {
        /// The buyer's tenant name.
        #[arg(long)]
        to: String,
        /// The devices (ids, comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        devices: Vec<String>,
        /// Seconds the buyer has to claim it (at most 30 days).
        #[arg(long, default_value_t = 7 * 24 * 3600)]
        ttl: u64,
        /// Where to write the document.
        #[arg(long)]
        out: PathBuf,
    },
    /// Claim a transfer addressed to this tenant.
    #[command(after_help = "Example:\n  inkan cloud transfer claim batch.transfer")]
    Claim {
        /// The transfer document.
        file: PathBuf,
    },
}

#[derive(clap::Subcommand)]
enum FamilyCmd {
    /// Register a family CA, proving possession of its key.
    #[command(
        after_help = "Example:\n  inkan cloud family register --name thermo --cert family.crt.pem --key family.key.pem"
    )]
    Register {
        /// Family name.
        #[arg(long)]
        name: String,
        /// The family certificate (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// The family key (encrypted PKCS#8; passphrase in $INKAN_CA_PASSPHRASE).
        #[arg(long)]
        key: PathBuf,
    },
    /// List families.
    #[command(after_help = "Example:\n  inkan cloud family list")]
    List,
    /// Act on a family: suspend, reinstate, revoke.
    #[command(after_help = "Example:\n  inkan cloud family act 51ab… revoke")]
    Act {
        /// Family id.
        id: String,
        /// suspend, reinstate or revoke.
        action: String,
    },
    /// Show a family's revocation list: devices revoked in the cloud and
    /// certificates listed by imported CRLs.
    #[command(after_help = "Example:\n  inkan cloud family revocations 51ab…")]
    Revocations {
        /// Family id.
        id: String,
    },
    /// Its devices' usage (units left, fewest first, and used in all);
    /// with --alert-below, first sets the level below which a report
    /// raises an alert in the audit log (0 clears it).
    #[command(after_help = "Example:\n  inkan cloud family usage 51ab… --alert-below 50")]
    Usage {
        /// Family id.
        id: String,
        /// Alert level (units left); 0 clears it.
        #[arg(long)]
        alert_below: Option<u32>,
    },
    /// Require (or stop requiring) readings signed by the devices' chips.
    #[command(after_help = "Example:\n  inkan cloud family signed-readings 51ab… --required true")]
    SignedReadings {
        /// Family id.
        id: String,
        /// true or false.
        #[arg(long, action = clap::ArgAction::Set)]
        required: bool,
    },
    /// Import a CRL signed by the family CA (from `inkan factory family
    /// crl`): the devices it lists are revoked; an older CRL is refused.
    #[command(
        after_help = "Example:\n  inkan factory family crl thermo > thermo.crl.pem\n  inkan cloud family import-crl 51ab… thermo.crl.pem"
    )]
    ImportCrl {
        /// Family id.
        id: String,
        /// The CRL (PEM).
        crl: PathBuf,
    },
}

#[derive(clap::Subcommand)]
enum ManifestCmd {
    /// Import a signed factory manifest.
    #[command(
        after_help = "Example:\n  inkan cloud manifest import manifest.cose --root root.crt.pem"
    )]
    Import {
        /// The manifest.
        file: PathBuf,
        /// The factory root certificate (PEM).
        #[arg(long)]
        root: PathBuf,
    },
}

fn call(r: Result<ureq::Response, ureq::Error>) -> Result<serde_json::Value> {
    match r {
        Ok(r) => Ok(r.into_json()?),
        Err(ureq::Error::Status(code, r)) => {
            let body: serde_json::Value = r.into_json().unwrap_or_default();
            bail!(
                "the API answered {code}: {}",
                body["error"].as_str().unwrap_or("(no detail)")
            )
        }
        Err(e) => bail!("cannot reach the API: {e}"),
    }
}

/// A tenant name: 1 to 64 letters, digits, '-', '_' or '.'.
fn tenant_name(s: &str) -> std::result::Result<String, String> {
    inkan_cloud::store::check_tenant_name(s).map(|()| s.to_string())
}

/// Runs `inkan cloud`.
pub fn cloud(a: CloudArgs) -> Result<()> {
    if let CloudCmd::Bootstrap { db, tenant } = &a.command {
        let rt = tokio::runtime::Runtime::new()?;
        return rt.block_on(async {
            let store = Store::open(db).await?;
            let t = store.ensure_tenant(tenant).await?;
            let token =
                inkan_cloud::api::create_token(&store, &t, inkan_cloud::api::Role::Admin).await?;
            println!("tenant {tenant} ({t})\nadmin token (shown once): {token}");
            Ok(())
        });
    }
    let token = a
        .token
        .clone()
        .or_else(|| std::env::var("INKAN_TOKEN").ok())
        .ok_or_else(|| anyhow!("give --token or $INKAN_TOKEN"))?;
    let auth = format!("Bearer {token}");
    let get = |path: &str| {
        call(
            ureq::get(&format!("{}{path}", a.api))
                .set("Authorization", &auth)
                .call(),
        )
    };
    let post = |path: &str, body: serde_json::Value| {
        call(
            ureq::post(&format!("{}{path}", a.api))
                .set("Authorization", &auth)
                .send_json(body),
        )
    };
    let out = match a.command {
        CloudCmd::Bootstrap { .. } => bail!("bootstrap runs on the store directly"),
        CloudCmd::Devices { limit } => get(&format!("/v1/devices?limit={limit}"))?,
        CloudCmd::Device(cmd) => {
            let act = |id: &str, action: &str| {
                post(&format!("/v1/devices/{id}/{action}"), serde_json::json!({}))
            };
            match cmd {
                DeviceCloudCmd::Show { id } => get(&format!("/v1/devices/{id}"))?,
                DeviceCloudCmd::History { id } => get(&format!("/v1/devices/{id}/history"))?,
                DeviceCloudCmd::Usage { id } => get(&format!("/v1/devices/{id}/usage"))?,
                DeviceCloudCmd::Credentials { id } => {
                    get(&format!("/v1/devices/{id}/credentials"))?
                }
                DeviceCloudCmd::AddCredential { id, cert } => {
                    let pem = std::fs::read_to_string(&cert)
                        .with_context(|| format!("reading {}", cert.display()))?;
                    post(
                        &format!("/v1/devices/{id}/credentials"),
                        serde_json::json!({ "certificate_pem": pem }),
                    )?
                }
                DeviceCloudCmd::RetireCredential { id, credential } => post(
                    &format!("/v1/devices/{id}/credentials/{credential}/retire"),
                    serde_json::json!({}),
                )?,
                DeviceCloudCmd::Claim { id } => act(&id, "claim")?,
                DeviceCloudCmd::Suspend { id } => act(&id, "suspend")?,
                DeviceCloudCmd::Resume { id } => act(&id, "resume")?,
                DeviceCloudCmd::Revoke { id } => act(&id, "revoke")?,
                DeviceCloudCmd::Decommission {
                    id,
                    purge_readings,
                    reason,
                } => post(
                    &format!("/v1/devices/{id}/decommission"),
                    serde_json::json!({ "purge_readings": purge_readings, "reason": reason }),
                )?,
            }
        }
        CloudCmd::Transfer(TransferCmd::Offer {
            to,
            devices,
            ttl,
            out,
        }) => {
            let r = post(
                "/v1/transfers",
                serde_json::json!({ "to": to, "devices": devices, "ttl_secs": ttl }),
            )?;
            let doc = hex::decode(r["transfer_hex"].as_str().unwrap_or_default())
                .context("the API sent a transfer that is not hex")?;
            std::fs::write(&out, &doc).with_context(|| format!("writing {}", out.display()))?;
            serde_json::json!({ "transfer": out, "devices": devices.len(), "to": to })
        }
        CloudCmd::Token(TokenCmd::Create { role, ttl }) => post(
            "/v1/tokens",
            serde_json::json!({ "role": role, "ttl_secs": ttl }),
        )?,
        CloudCmd::Token(TokenCmd::List) => get("/v1/tokens")?,
        CloudCmd::Token(TokenCmd::Revoke { id }) => {
            post(&format!("/v1/tokens/{id}/revoke"), serde_json::json!({}))?
        }
        CloudCmd::Transfer(TransferCmd::Claim { file }) => {
            let doc =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            post(
                "/v1/transfers/claim",
                serde_json::json!({ "transfer_hex": hex::encode(doc) }),
            )?
        }
        CloudCmd::Family(FamilyCmd::List) => get("/v1/families")?,
        CloudCmd::Family(FamilyCmd::SignedReadings { id, required }) => post(
            &format!("/v1/families/{id}/signed-readings"),
            serde_json::json!({ "required": required }),
        )?,
        CloudCmd::Family(FamilyCmd::Usage { id, alert_below }) => match alert_below {
            Some(level) => call(
                ureq::put(&format!("{}/v1/families/{id}/usage-alert", a.api))
                    .set("Authorization", &auth)
                    .send_json(serde_json::json!({ "below": (level > 0).then_some(level) })),
            )?,
            None => get(&format!("/v1/families/{id}/usage"))?,
        },
        CloudCmd::Family(FamilyCmd::Revocations { id }) => {
            get(&format!("/v1/families/{id}/revocations"))?
        }
        CloudCmd::Family(FamilyCmd::ImportCrl { id, crl }) => {
            let pem = std::fs::read_to_string(&crl)
                .with_context(|| format!("reading {}", crl.display()))?;
            post(
                &format!("/v1/families/{id}/crl"),
                serde_json::json!({ "crl_pem": pem }),
            )?
        }
        CloudCmd::Family(FamilyCmd::Act { id, action }) => post(
            &format!("/v1/families/{id}/{action}"),
            serde_json::json!({}),
        )?,
        CloudCmd::Family(FamilyCmd::Register { name, cert, key }) => {
            let pem = std::fs::read_to_string(&cert)
                .with_context(|| format!("reading {}", cert.display()))?;
            let k = SoftwareKey::load(&key, &passphrase(&None)?)?;
            let ch = post(
                "/v1/families/challenge",
                serde_json::json!({ "certificate_pem": pem }),
            )?;
            let challenge = hex::decode(ch["challenge_hex"].as_str().unwrap_or_default())?;
            let proof = hex::encode(inkan_pki::signer::sign_raw(&k, &challenge)?);
            post(
                "/v1/families",
                serde_json::json!({ "name": name, "certificate_pem": pem, "proof_hex": proof }),
            )?
        }
        CloudCmd::Manifest(ManifestCmd::Import { file, root }) => {
            let m = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let root = std::fs::read_to_string(&root)
                .with_context(|| format!("reading {}", root.display()))?;
            post(
                "/v1/manifests",
                serde_json::json!({ "manifest_hex": hex::encode(m), "root_pem": root }),
            )?
        }
        CloudCmd::Audit { limit } => get(&format!("/v1/audit?limit={limit}"))?,
        CloudCmd::Command {
            device,
            family,
            action,
            args,
            ttl,
        } => post(
            "/v1/commands",
            serde_json::json!({ "device": device, "family": family, "action": action, "args_hex": args, "ttl_secs": ttl }),
        )?,
        CloudCmd::FirmwareUpload {
            family,
            image,
            manifest,
        } => {
            let img =
                std::fs::read(&image).with_context(|| format!("reading {}", image.display()))?;
            let man = std::fs::read(&manifest)
                .with_context(|| format!("reading {}", manifest.display()))?;
            post(
                "/v1/firmware",
                serde_json::json!({ "family": family, "manifest_hex": hex::encode(man), "image_hex": hex::encode(img) }),
            )?
        }
        CloudCmd::Campaign {
            firmware,
            devices,
            percent,
            stages,
            failure_threshold,
        } => post(
            "/v1/campaigns",
            serde_json::json!({ "firmware": firmware, "devices": devices, "percent": percent, "stages": stages, "failure_threshold": failure_threshold }),
        )?,
        CloudCmd::CampaignStatus { id } => get(&format!("/v1/campaigns/{id}"))?,
        CloudCmd::Commands { device } => match device {
            Some(d) => get(&format!("/v1/commands?device={d}"))?,
            None => get("/v1/commands")?,
        },
        CloudCmd::Readings {
            device,
            family,
            from,
            to,
            format,
            limit,
        } => {
            let mut q = format!("/v1/readings?format={format}&limit={limit}");
            for (k, v) in [("device", device), ("family", family)] {
                if let Some(v) = v {
                    q.push_str(&format!("&{k}={v}"));
                }
            }
            for (k, v) in [("from", from), ("to", to)] {
                if let Some(v) = v {
                    q.push_str(&format!("&{k}={v}"));
                }
            }
            if format == "json" {
                get(&q)?
            } else {
                // Every page, streamed out as it comes.
                let mut cursor: Option<String> = None;
                let mut first = true;
                loop {
                    let url = match &cursor {
                        Some(c) => format!("{}{q}&cursor={c}", a.api),
                        None => format!("{}{q}", a.api),
                    };
                    let rsp = match ureq::get(&url).set("Authorization", &auth).call() {
                        Ok(r) => r,
                        Err(e) => {
                            call(Err(e))?;
                            bail!("the API refused the request");
                        }
                    };
                    cursor = rsp.header("x-next-cursor").map(str::to_string);
                    let body = rsp.into_string()?;
                    // The CSV header comes once.
                    let body = if format == "csv" && !first {
                        body.split_once('\n')
                            .map(|(_, r)| r.to_string())
                            .unwrap_or_default()
                    } else {
                        body
                    };
                    print!("{body}");
                    first = false;
                    if cursor.is_none() {
                        return Ok(());
                    }
                }
            }
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
