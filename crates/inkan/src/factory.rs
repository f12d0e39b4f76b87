//! `inkan factory`: CA hierarchy, families, personalization batches,
//! manifests and revocation lists.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args as ClapArgs, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use inkan_factory::personalize::BatchConfig;
use inkan_factory::{Anchors, Factory, InitOptions, KeyStore, Personalizer, Secrets};
use inkan_pki::cert::IssuedCert;
use inkan_pki::{CertPolicy, KeyCurve};
use inkan_se::transport::{self, Address};
use inkan_se::{Chip, Driver, InProcess, Personality};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

/// Arguments of `inkan factory`.
#[derive(ClapArgs)]
#[command(after_help = "\
Examples:
  export INKAN_CA_PASSPHRASE='a long passphrase'
  inkan factory --dir ./factory init --org 'Example Devices'
  inkan factory --dir ./factory family create thermo
  inkan factory --dir ./factory personalize --family thermo --count 100
  inkan factory --dir ./factory manifest verify factory/batches/thermo-1/manifest.cose")]
pub struct Args {
    /// The factory directory (CA certificates, keys, families, batches).
    #[arg(long, global = true, default_value = "factory")]
    dir: PathBuf,
    /// Read the CA key passphrase from this file (otherwise from
    /// $INKAN_CA_PASSPHRASE).
    #[arg(long, global = true, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum CurveArg {
    /// NIST P-256 (default).
    P256,
    /// NIST P-384.
    P384,
}

impl From<CurveArg> for KeyCurve {
    fn from(c: CurveArg) -> KeyCurve {
        match c {
            CurveArg::P256 => KeyCurve::P256,
            CurveArg::P384 => KeyCurve::P384,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum PersonalityArg {
    /// STSAFE-A110.
    A110,
    /// STSAFE-A120.
    A120,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the root CA, the manifest signer and the trust anchors chips
    /// will pin (development keys are generated for anchors not given).
    #[command(after_help = "\
Examples:
  inkan factory init --org 'Example Devices'
  inkan factory init --org 'Example Devices' --pkcs11-module /usr/lib/softhsm/libsofthsm2.so --token factory-ca
      (CA keys generated inside the token; PIN from $INKAN_PKCS11_PIN)")]
    Init {
        /// Organization name in every certificate.
        #[arg(long)]
        org: String,
        /// Curve of the CA keys.
        #[arg(long, value_enum, default_value = "p256")]
        curve: CurveArg,
        /// Lifetime of device certificates in years.
        #[arg(long, default_value_t = 20)]
        device_years: u32,
        /// Keep CA keys in this PKCS#11 module's token instead of files.
        #[arg(long, requires = "token")]
        pkcs11_module: Option<PathBuf>,
        /// The token label.
        #[arg(long, requires = "pkcs11_module")]
        token: Option<String>,
        /// The cloud's authentication public key (PEM) that chips pin.
        #[arg(long, requires_all = ["command_key", "firmware_key"])]
        cloud_auth: Option<PathBuf>,
        /// The cloud's command-verification public key (PEM).
        #[arg(long)]
        command_key: Option<PathBuf>,
        /// The firmware-signing public key (PEM).
        #[arg(long)]
        firmware_key: Option<PathBuf>,
    },
    /// Families: intermediate CAs that issue device certificates.
    #[command(subcommand)]
    Family(FamilyCmd),
    /// Personalize chips into a batch: emulated chips (--count) or one chip
    /// reached through a transport (--connect). Re-run to resume.
    #[command(after_help = "\
Examples:
  inkan factory personalize --family thermo --count 1000
  inkan factory personalize --family thermo --count 1000 --batch thermo-1    (resume)
  inkan factory personalize --family thermo --connect i2c:/dev/i2c-1")]
    Personalize {
        /// The family.
        #[arg(long)]
        family: String,
        /// Emulated chips to create and personalize (1 to 1000000).
        #[arg(
            long,
            conflicts_with = "connect",
            required_unless_present = "connect",
            value_parser = clap::value_parser!(u32).range(1..=1_000_000)
        )]
        count: Option<u32>,
        /// Personality of emulated chips.
        #[arg(long, value_enum, default_value = "a120")]
        personality: PersonalityArg,
        /// Personalize the chip at this address instead.
        #[arg(long)]
        connect: Option<Address>,
        /// Batch name; a new one is made if omitted. An existing batch resumes.
        #[arg(long)]
        batch: Option<String>,
    },
    /// Batch manifests.
    #[command(subcommand)]
    Manifest(ManifestCmd),
}

#[derive(Subcommand)]
enum FamilyCmd {
    /// Create a family CA under the root.
    #[command(after_help = "Example:\n  inkan factory family create thermo --curve p256")]
    Create {
        /// Family name (a-z, 0-9, '-').
        name: String,
        /// Curve of the family key and its device keys.
        #[arg(long, value_enum, default_value = "p256")]
        curve: CurveArg,
        /// Device keys sign only (no keyAgreement).
        #[arg(long)]
        no_key_agreement: bool,
        /// Device keys are Ed25519 (EDHOC suite 0 with X25519; A120 chips
        /// only). The family CA key stays on --curve.
        #[arg(long)]
        ed25519: bool,
        /// An accessory family: each chip's host keys derive from a
        /// pairing key made for the family (families/NAME/pairing.key),
        /// which genuine hosts hold; any host may challenge the chip.
        #[arg(long)]
        accessory: bool,
        /// Units of use each chip starts with (its one-way usage counter,
        /// zone 6).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000_000))]
        usage_limit: Option<u32>,
    },
    /// List families.
    #[command(after_help = "Example:\n  inkan factory family list")]
    List,
    /// Revoke a device certificate of a family (reissues the family CRL).
    #[command(after_help = "Example:\n  inkan factory family revoke thermo 3f2a...")]
    Revoke {
        /// Family name.
        name: String,
        /// The chip serial, or the certificate serial number (hex), of a
        /// certificate this family issued.
        serial: String,
    },
    /// Print the family's revocation list (PEM, or DER to a file).
    #[command(
        after_help = "Example:\n  inkan factory family crl thermo > thermo.crl.pem\n  inkan factory family crl thermo --der --out thermo.crl"
    )]
    Crl {
        /// Family name.
        name: String,
        /// Write DER instead of PEM.
        #[arg(long, requires = "out")]
        der: bool,
        /// Output file (stdout if omitted).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ManifestCmd {
    /// Verify a manifest's signature against the root and print a summary.
    #[command(
        after_help = "Example:\n  inkan factory manifest verify factory/batches/thermo-1/manifest.cose"
    )]
    Verify {
        /// The manifest file.
        file: PathBuf,
        /// The root certificate (default: the factory's).
        #[arg(long)]
        root: Option<PathBuf>,
    },
}

fn secrets(a: &Args) -> Result<Secrets> {
    let passphrase = match &a.passphrase_file {
        Some(p) => Some(zeroize::Zeroizing::new(
            std::fs::read(p)
                .with_context(|| format!("reading {}", p.display()))?
                .trim_ascii_end()
                .to_vec(),
        )),
        None => std::env::var("INKAN_CA_PASSPHRASE")
            .ok()
            .map(|s| zeroize::Zeroizing::new(s.into_bytes())),
    };
    let pin = std::env::var("INKAN_PKCS11_PIN")
        .ok()
        .map(zeroize::Zeroizing::new);
    Ok(Secrets { passphrase, pin })
}

fn read_spki(p: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(inkan_pki::pem_or_der("PUBLIC KEY", &bytes)?.remove(0))
}

/// Progress bar on stderr with rate and ETA.
pub fn progress(len: u64) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "  {bar:30.cyan/blue} {pos}/{len} chips  {per_sec}  ETA {eta}  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb
}

/// Personalizes `count` emulated chips of `family` into `batch`; returns
/// the report and the step times.
pub fn personalize_emulated(
    f: &Factory,
    family: &str,
    batch: &str,
    count: usize,
    personality: Personality,
    pb: &ProgressBar,
) -> Result<(inkan_factory::BatchReport, inkan_factory::StepTimes)> {
    let cfg = BatchConfig {
        family: family.into(),
        count,
        personality,
    };
    let mut p = Personalizer::open(f, family, batch, &cfg)?;
    let chips = inkan_se::chip::blank_chips(&p.dir().join("chips"), count, personality)?;
    pb.set_length(chips.len() as u64);
    for path in &chips {
        let chip = Chip::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut d = Driver::new(InProcess::new(chip))?;
        p.personalize(&mut d, Some(path))?;
        pb.inc(1);
    }
    pb.finish();
    Ok((p.finish()?, p.times))
}

/// Runs `inkan factory`.
pub fn run(a: Args) -> Result<()> {
    let s = secrets(&a)?;
    match a.command {
        Cmd::Init {
            org,
            curve,
            device_years,
            pkcs11_module,
            token,
            cloud_auth,
            command_key,
            firmware_key,
        } => {
            let keys = match (pkcs11_module, token) {
                (Some(module), Some(token)) => KeyStore::Pkcs11 { module, token },
                _ => KeyStore::File,
            };
            let anchors = match (cloud_auth, command_key, firmware_key) {
                (Some(c), Some(k), Some(w)) => Some(Anchors {
                    cloud_auth: read_spki(&c)?,
                    command: read_spki(&k)?,
                    firmware: read_spki(&w)?,
                }),
                _ => None,
            };
            let policy = CertPolicy {
                device_years,
                ..CertPolicy::default()
            };
            let f = Factory::init(
                &a.dir,
                InitOptions {
                    organization: org,
                    curve: curve.into(),
                    policy,
                    keys,
                    anchors: anchors.clone(),
                },
                s,
            )?;
            let root = f.root()?;
            println!("factory initialised in {}", f.dir().display());
            println!(
                "  root CA      {}  (serial {})",
                root.subject(),
                root.serial_hex()
            );
            println!("  fingerprint  {}", hex::encode(root.fingerprint()));
            if anchors.is_none() {
                println!("  trust anchors: DEVELOPMENT keys generated in {}/keys (give --cloud-auth, --command-key, --firmware-key for production)", f.dir().display());
            }
        }
        Cmd::Family(fc) => {
            let f = Factory::open(&a.dir, s)?;
            match fc {
                FamilyCmd::Create {
                    name,
                    curve,
                    no_key_agreement,
                    ed25519,
                    accessory,
                    usage_limit,
                } => {
                    let c =
                        f.create_family_with(&name, curve.into(), !no_key_agreement, ed25519)?;
                    println!("family {name}: {} (serial {})", c.subject(), c.serial_hex());
                    if accessory || usage_limit.is_some() {
                        f.configure_family(
                            &name,
                            inkan_factory::FamilyProfile {
                                accessory,
                                usage_limit,
                            },
                        )?;
                    }
                    if accessory {
                        println!(
                            "  accessory family: pairing key {} (for genuine hosts)",
                            f.dir()
                                .join("families")
                                .join(&name)
                                .join("pairing.key")
                                .display()
                        );
                    }
                    if let Some(n) = usage_limit {
                        println!("  {n} unit(s) of use per chip");
                    }
                }
                FamilyCmd::List => {
                    for name in f.families()? {
                        let (cfg, cert) = f.family(&name)?;
                        println!(
                            "{name:<20} {:<5} revoked {:<4} {}",
                            cfg.curve.name(),
                            cfg.revoked.len(),
                            cert.subject()
                        );
                    }
                }
                FamilyCmd::Revoke { name, serial } => {
                    let (crl, cert_serial) = f.revoke(&name, &serial)?;
                    println!(
                        "revoked certificate {cert_serial} (given {serial}) in {name}; CRL now lists {} certificate(s)",
                        crl.revoked_serials()?.len()
                    );
                }
                FamilyCmd::Crl { name, der, out } => {
                    let crl = f.crl(&name)?;
                    let bytes = if der {
                        crl.der.clone()
                    } else {
                        crl.to_pem().into_bytes()
                    };
                    match out {
                        Some(p) => std::fs::write(&p, bytes)
                            .with_context(|| format!("writing {}", p.display()))?,
                        None => print!("{}", String::from_utf8_lossy(&bytes)),
                    }
                }
            }
        }
        Cmd::Personalize {
            family,
            count,
            personality,
            connect,
            batch,
        } => {
            let f = Factory::open(&a.dir, s)?;
            let batch = batch.unwrap_or_else(|| {
                format!(
                    "{family}-{}",
                    SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0)
                )
            });
            let personality = match personality {
                PersonalityArg::A110 => Personality::A110,
                PersonalityArg::A120 => Personality::A120,
            };
            eprintln!("batch {batch} (re-run with --batch {batch} to resume)");
            let start = Instant::now();
            let (report, times) = match (count, connect) {
                (Some(n), _) => personalize_emulated(
                    &f,
                    &family,
                    &batch,
                    n as usize,
                    personality,
                    &progress(u64::from(n)),
                )?,
                (None, Some(addr)) => {
                    let cfg = BatchConfig {
                        family: family.clone(),
                        count: 0,
                        personality,
                    };
                    let mut p = Personalizer::open(&f, &family, &batch, &cfg)?;
                    let t = transport::connect(&addr)
                        .with_context(|| format!("connecting to {addr}"))?;
                    let mut d = Driver::new(t)?;
                    let outcome = p.personalize(&mut d, None)?;
                    println!("{outcome:?}");
                    (p.finish()?, p.times)
                }
                (None, None) => bail!("give --count N or --connect ADDR"),
            };
            let secs = start.elapsed().as_secs_f64();
            println!(
                "personalized {} chips in {:.2} s ({:.1} chips/s)",
                report.chips,
                secs,
                report.chips as f64 / secs.max(1e-9)
            );
            if times.chips > 0 {
                let per = |d: std::time::Duration| d.as_secs_f64() * 1000.0 / times.chips as f64;
                println!(
                    "  per chip: key generation {:.1} ms, issuance {:.1} ms, writes {:.1} ms, lock and checks {:.1} ms",
                    per(times.keygen),
                    per(times.issue),
                    per(times.write),
                    per(times.lock_verify)
                );
            }
            println!("manifest: {}", report.manifest.display());
        }
        Cmd::Manifest(ManifestCmd::Verify { file, root }) => {
            let root = match root {
                Some(p) => IssuedCert::from_pem_or_der(
                    &std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
                )?,
                None => Factory::open(&a.dir, s)?.root()?,
            };
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let m = inkan_pki::manifest::verify(&bytes, &root, SystemTime::now())
                .map_err(|e| anyhow!("manifest {} refused: {e}", file.display()))?;
            println!(
                "manifest OK: batch {}, family {}, {} devices, signed under {}",
                m.batch,
                m.family,
                m.entries.len(),
                root.subject()
            );
            for e in m.entries.iter().take(5) {
                println!("  {}  cert {} bytes", e.serial, e.certificate.len());
            }
            if m.entries.len() > 5 {
                println!("  … and {} more", m.entries.len() - 5);
            }
        }
    }
    Ok(())
}
