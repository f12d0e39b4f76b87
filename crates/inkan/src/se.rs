//! `inkan se`: run an emulated chip, or drive a chip through the host driver.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args as ClapArgs, Subcommand, ValueEnum};
use inkan_se::chip::server;
use inkan_se::driver::key_mode;
use inkan_se::transport::{self, Address, Transport};
use inkan_se::{AesKey, BusyModel, Chip, ChipBus, Curve, Driver, HostKeys, Personality};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arguments of `inkan se`.
#[derive(ClapArgs)]
#[command(after_help = "\
Examples:
  inkan se init --state chip.json --personality a120
  inkan se serve --state chip.json --listen unix:/tmp/se.sock &
  inkan se --connect unix:/tmp/se.sock echo 68656c6c6f
  inkan se --connect unix:/tmp/se.sock keygen 1 --curve p256 > slot1.pem
  inkan se --connect unix:/tmp/se.sock sign 1 --file firmware.bin | xxd -r -p > sig.der
  openssl dgst -sha256 -verify slot1.pem -signature sig.der firmware.bin
  inkan se --connect unix:/tmp/se.sock pair --with-mac-key 00..0f --with-cipher-key 10..1f
  inkan se --connect unix:/tmp/se.sock --mac-key 00..0f --cipher-key 10..1f read 1")]
pub struct Args {
    /// The chip to talk to: unix:PATH, tcp:127.0.0.1:PORT, or i2c:/dev/i2c-N[@0x20]
    /// for a real STSAFE-A on Linux.
    #[arg(long, global = true, value_name = "ADDR")]
    connect: Option<Address>,
    /// Host MAC key (hex, 16 or 32 bytes): open a host session, so commands
    /// are MAC'd (and encrypted where the chip requires it).
    #[arg(long, global = true, value_name = "HEX", requires = "cipher_key")]
    mac_key: Option<String>,
    /// Host cipher key (hex, same size as the MAC key).
    #[arg(long, global = true, value_name = "HEX", requires = "mac_key")]
    cipher_key: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum PersonalityArg {
    /// STSAFE-A110: 3-byte MAC counter, 507-byte frames.
    A110,
    /// STSAFE-A120: 4-byte MAC counter, 752-byte frames, extended commands.
    A120,
}

impl From<PersonalityArg> for Personality {
    fn from(p: PersonalityArg) -> Personality {
        match p {
            PersonalityArg::A110 => Personality::A110,
            PersonalityArg::A120 => Personality::A120,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum CurveArg {
    /// NIST P-256.
    P256,
    /// NIST P-384.
    P384,
}

impl From<CurveArg> for Curve {
    fn from(c: CurveArg) -> Curve {
        match c {
            CurveArg::P256 => Curve::P256,
            CurveArg::P384 => Curve::P384,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum QueryArg {
    /// Product data: mask id, personality, serial number.
    Product,
    /// Data partition: zones, sizes, access conditions, counters.
    Partition,
    /// Private key table.
    Keys,
    /// Host key slot and MAC counter.
    HostKey,
    /// Command access conditions and encryption flags.
    Commands,
    /// Life-cycle state.
    Lifecycle,
    /// Local-envelope key table.
    EnvelopeKeys,
}

#[derive(Clone, Copy, ValueEnum)]
enum UsageArg {
    /// Sign host digests.
    Sign,
    /// Key establishment (ECDH).
    Ecdh,
    /// Both.
    Both,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a factory-fresh chip state file.
    #[command(after_help = "Example:\n  inkan se init --state chip.json --personality a110")]
    Init {
        /// The chip's state file (its NVM); must not exist yet.
        #[arg(long)]
        state: PathBuf,
        /// Which chip to emulate.
        #[arg(long, value_enum, default_value = "a120")]
        personality: PersonalityArg,
        /// Serial number (9 bytes hex); random if omitted.
        #[arg(long, value_name = "HEX")]
        serial: Option<String>,
    },
    /// Run an emulated chip on a Unix socket or loopback TCP port.
    #[command(after_help = "\
Example:
  inkan se serve --state chip.json --listen unix:/tmp/se.sock
  inkan se serve --state chip.json --personality a110 --listen tcp:127.0.0.1:7020 --busy nominal

A missing state file is an error, unless --init asks for a new chip.
The socket framing is documented in
inkan-se's transport::socket module (a few lines of Python can drive it).")]
    Serve {
        /// The chip's state file (see `inkan se init`).
        #[arg(long)]
        state: PathBuf,
        /// Create the state file (with --personality) when it is missing.
        #[arg(long)]
        init: bool,
        /// Personality for a new state file.
        #[arg(long, value_enum, default_value = "a120")]
        personality: PersonalityArg,
        /// Where to listen: unix:PATH or tcp:127.0.0.1:PORT (loopback only).
        #[arg(long, value_name = "ADDR")]
        listen: Address,
        /// Busy behaviour: instant, nominal (real per-command times), or a
        /// fixed number of milliseconds per command.
        #[arg(long, default_value = "instant")]
        busy: String,
    },
    /// Send bytes and print what comes back.
    #[command(after_help = "Example:\n  inkan se --connect unix:/tmp/se.sock echo 68656c6c6f")]
    Echo {
        /// Hex bytes.
        data: String,
    },
    /// Print random bytes from the chip.
    #[command(after_help = "Example:\n  inkan se --connect unix:/tmp/se.sock random 16")]
    Random {
        /// How many (1 to 255).
        #[arg(default_value_t = 32)]
        count: u8,
    },
    /// Query an attribute and print it.
    #[command(
        after_help = "Example:\n  inkan se --connect unix:/tmp/se.sock query partition\n  inkan se --connect unix:/tmp/se.sock query keys"
    )]
    Query {
        /// What to query.
        #[arg(value_enum)]
        what: QueryArg,
    },
    /// Read a zone (hex). Counter zones print the counter first.
    #[command(
        after_help = "Example:\n  inkan se --connect unix:/tmp/se.sock read 0 --len 64\n  inkan se --connect unix:/tmp/se.sock read 5          (a counter zone)"
    )]
    Read {
        /// Zone index.
        zone: u8,
        /// Start offset.
        #[arg(long, default_value_t = 0)]
        offset: u16,
        /// Bytes to read; the rest of the zone if omitted.
        #[arg(long)]
        len: Option<u16>,
    },
    /// Write hex data into a zone.
    #[command(
        after_help = "Example:\n  inkan se --connect unix:/tmp/se.sock update 7 cafe --offset 16\n  inkan se --connect unix:/tmp/se.sock update 0 @device-cert.der"
    )]
    Update {
        /// Zone index.
        zone: u8,
        /// Hex data, or @FILE for a file's bytes.
        data: String,
        /// Start offset.
        #[arg(long, default_value_t = 0)]
        offset: u16,
    },
    /// Decrement a one-way counter zone; prints the new value.
    #[command(after_help = "Example:\n  inkan se --connect unix:/tmp/se.sock decrement 5 1")]
    Decrement {
        /// Zone index.
        zone: u8,
        /// Amount.
        amount: u32,
    },
    /// Generate a key pair in a slot; prints the public key as PEM.
    #[command(
        after_help = "Example:\n  inkan se --connect unix:/tmp/se.sock keygen 1 --curve p384 --usage sign > slot1.pem\n  inkan se --connect unix:/tmp/se.sock keygen 0 --usage sign --fixed > device.pem"
    )]
    Keygen {
        /// Slot (0..1 on an A110, 0..4 on an A120).
        slot: u8,
        /// Curve.
        #[arg(long, value_enum, default_value = "p256")]
        curve: CurveArg,
        /// What the key may do.
        #[arg(long, value_enum, default_value = "both")]
        usage: UsageArg,
        /// Maximum number of uses (0 = unlimited).
        #[arg(long, default_value_t = 0)]
        usage_limit: u16,
        /// Forbid ever replacing this key.
        #[arg(long)]
        fixed: bool,
    },
    /// Sign a digest (hex) or a file's SHA-256/384 with a slot's key; prints
    /// the DER signature as hex (r||s with --raw).
    #[command(
        after_help = "Example:\n  inkan se --connect unix:/tmp/se.sock sign 1 --file image.bin | xxd -r -p > sig.der\n  inkan se --connect unix:/tmp/se.sock sign 1 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 --raw"
    )]
    Sign {
        /// Slot.
        slot: u8,
        /// Digest as hex.
        #[arg(required_unless_present = "file")]
        digest: Option<String>,
        /// Hash this file instead (SHA-256 for P-256 keys, SHA-384 for P-384).
        #[arg(long, conflicts_with = "digest")]
        file: Option<PathBuf>,
        /// Print hex r||s instead of DER.
        #[arg(long)]
        raw: bool,
    },
    /// Have the chip verify a signature; prints "valid" or "invalid".
    #[command(
        after_help = "Example:\n  inkan se --connect unix:/tmp/se.sock verify --pubkey slot1.pem --sig $(xxd -p -c0 sig.der) --file image.bin\n(exit status 2 when the signature is invalid)"
    )]
    Verify {
        /// The public key (PEM file).
        #[arg(long)]
        pubkey: PathBuf,
        /// The signature: hex, DER or r||s.
        #[arg(long)]
        sig: String,
        /// Digest as hex.
        #[arg(required_unless_present = "file")]
        digest: Option<String>,
        /// Hash this file instead.
        #[arg(long, conflicts_with = "digest")]
        file: Option<PathBuf>,
    },
    /// ECDH between a slot's key and a peer public key (PEM); prints the secret.
    #[command(
        after_help = "Example:\n  inkan se --connect unix:/tmp/se.sock ecdh 1 --peer cloud.pem"
    )]
    Ecdh {
        /// Slot (255 for the ephemeral slot).
        slot: u8,
        /// The peer's public key (PEM file).
        #[arg(long)]
        peer: PathBuf,
    },
    /// Generate a local-envelope key.
    #[command(
        after_help = "Example:\n  inkan se --connect unix:/tmp/se.sock envelope-key 0 --aes256"
    )]
    EnvelopeKey {
        /// Envelope slot (0 or 1).
        slot: u8,
        /// AES-256 instead of AES-128.
        #[arg(long)]
        aes256: bool,
    },
    /// Wrap hex data (multiple of 8 bytes, 16 to 480) under an envelope key.
    #[command(
        after_help = "Example:\n  inkan se --connect unix:/tmp/se.sock wrap 0 00112233445566778899aabbccddeeff"
    )]
    Wrap {
        /// Envelope slot.
        slot: u8,
        /// Hex data.
        data: String,
    },
    /// Unwrap an envelope (hex).
    #[command(
        after_help = "Example:\n  inkan se --connect unix:/tmp/se.sock unwrap 0 <hex printed by wrap>"
    )]
    Unwrap {
        /// Envelope slot.
        slot: u8,
        /// Hex envelope.
        data: String,
    },
    /// Pair host MAC and cipher keys with the chip (do this in a trusted place).
    #[command(
        after_help = "Example:\n  inkan se --connect unix:/tmp/se.sock pair --with-mac-key 000102030405060708090a0b0c0d0e0f --with-cipher-key 101112131415161718191a1b1c1d1e1f"
    )]
    Pair {
        /// MAC key (hex, 16 bytes on an A110, 16 or 32 on an A120).
        #[arg(long = "with-mac-key", value_name = "HEX")]
        with_mac_key: Option<String>,
        /// Cipher key (hex, same size).
        #[arg(long = "with-cipher-key", value_name = "HEX")]
        with_cipher_key: Option<String>,
    },
}

fn parse_hex(s: &str, what: &str) -> Result<Vec<u8>> {
    if let Some(path) = s.strip_prefix('@') {
        return std::fs::read(path).with_context(|| format!("reading {what} from {path}"));
    }
    let clean: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    hex::decode(&clean).map_err(|e| anyhow!("{what} is not valid hex ({e}): {s:?}"))
}

fn host_keys(mac: &str, cipher: &str) -> Result<HostKeys> {
    let m = zeroize::Zeroizing::new(parse_hex(mac, "MAC key")?);
    let c = zeroize::Zeroizing::new(parse_hex(cipher, "cipher key")?);
    Ok(HostKeys {
        mac: AesKey::from_slice(&m)
            .ok_or_else(|| anyhow!("the MAC key must be 16 or 32 bytes, got {}", m.len()))?,
        cipher: AesKey::from_slice(&c)
            .ok_or_else(|| anyhow!("the cipher key must be 16 or 32 bytes, got {}", c.len()))?,
    })
}

fn parse_busy(s: &str) -> Result<BusyModel> {
    Ok(match s {
        "instant" => BusyModel::Instant,
        "nominal" => BusyModel::Nominal,
        ms => BusyModel::Fixed(Duration::from_millis(ms.parse().map_err(|_| {
            anyhow!("--busy takes instant, nominal or a number of milliseconds, not {ms:?}")
        })?)),
    })
}

/// SEC1 point → SPKI PEM.
pub fn point_to_pem(curve: Curve, point: &[u8]) -> Result<String> {
    Ok(match curve {
        Curve::P256 => {
            p256::PublicKey::from_sec1_bytes(point)?.to_public_key_pem(LineEnding::LF)?
        }
        Curve::P384 => {
            p384::PublicKey::from_sec1_bytes(point)?.to_public_key_pem(LineEnding::LF)?
        }
        c => bail!("no PEM encoding for {}", c.name()),
    })
}

fn pem_to_point(path: &Path) -> Result<(Curve, Vec<u8>)> {
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if let Ok(k) = p256::PublicKey::from_public_key_pem(&pem) {
        return Ok((Curve::P256, k.to_sec1_bytes().to_vec()));
    }
    if let Ok(k) = p384::PublicKey::from_public_key_pem(&pem) {
        return Ok((Curve::P384, k.to_sec1_bytes().to_vec()));
    }
    bail!(
        "{} is not a P-256 or P-384 public key in PEM (SubjectPublicKeyInfo)",
        path.display()
    )
}

fn digest_arg(digest: Option<&str>, file: Option<&Path>, curve: Curve) -> Result<Vec<u8>> {
    match (digest, file) {
        (Some(d), _) => parse_hex(d, "digest"),
        (None, Some(f)) => {
            let data = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            Ok(match curve {
                Curve::P384 => sha2::Sha384::digest(&data).to_vec(),
                _ => sha2::Sha256::digest(&data).to_vec(),
            })
        }
        (None, None) => bail!("give a digest or --file"),
    }
}

fn raw_to_der(curve: Curve, raw: &[u8]) -> Result<Vec<u8>> {
    Ok(match curve {
        Curve::P256 => p256::ecdsa::Signature::from_slice(raw)?
            .to_der()
            .as_bytes()
            .to_vec(),
        Curve::P384 => p384::ecdsa::Signature::from_slice(raw)?
            .to_der()
            .as_bytes()
            .to_vec(),
        c => bail!("no DER signature for {}", c.name()),
    })
}

fn sig_to_raw(curve: Curve, sig: &[u8]) -> Result<Vec<u8>> {
    if sig.len() == 2 * curve.coordinate_len() {
        return Ok(sig.to_vec());
    }
    Ok(match curve {
        Curve::P256 => p256::ecdsa::Signature::from_der(sig)?.to_bytes().to_vec(),
        Curve::P384 => p384::ecdsa::Signature::from_der(sig)?.to_bytes().to_vec(),
        c => bail!("no signature format for {}", c.name()),
    })
}

/// Runs `inkan se`.
pub fn run(a: Args) -> Result<()> {
    match a.command {
        Cmd::Init {
            state,
            personality,
            serial,
        } => {
            let serial = match serial {
                Some(s) => {
                    let v = parse_hex(&s, "serial")?;
                    <[u8; 9]>::try_from(v.as_slice())
                        .map_err(|_| anyhow!("the serial must be 9 bytes, got {}", v.len()))?
                }
                None => inkan_se::chip::random_serial(),
            };
            let chip = Chip::create(&state, personality.into(), serial)?;
            println!(
                "created {} chip {} in {}",
                chip.personality().name(),
                hex::encode(chip.serial()),
                state.display()
            );
            Ok(())
        }
        Cmd::Serve {
            state,
            personality,
            listen,
            busy,
            init,
        } => {
            let busy = parse_busy(&busy)?;
            // One server per state file: a second one would write the same
            // NVM behind the first one's back.
            let lock_path = state.with_extension("lock");
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .with_context(|| format!("opening {}", lock_path.display()))?;
            if lock.try_lock().is_err() {
                bail!(
                    "{} is already served by another process (lock {} held)",
                    state.display(),
                    lock_path.display()
                );
            }
            let chip = if state.exists() {
                Chip::open(&state)?
            } else if init {
                Chip::create(&state, personality.into(), inkan_se::chip::random_serial())?
            } else {
                bail!(
                    "no chip state at {}: create one with `inkan se init --state {}` (or pass --init)",
                    state.display(),
                    state.display()
                );
            };
            let l = server::Listener::bind(&listen)
                .with_context(|| format!("listening on {listen}"))?;
            eprintln!(
                "serving {} chip {} from {} on {}",
                chip.personality().name(),
                hex::encode(chip.serial()),
                state.display(),
                l.local_address()?
            );
            server::serve(
                l,
                std::sync::Arc::new(std::sync::Mutex::new(ChipBus::new(chip, busy))),
            )?;
            Ok(())
        }
        cmd => {
            let addr = a.connect.ok_or_else(|| {
                anyhow!("this command needs --connect ADDR (for example unix:/tmp/se.sock)")
            })?;
            let t = transport::connect(&addr).with_context(|| format!("connecting to {addr}"))?;
            let mut d = Driver::new(t).with_context(|| format!("talking to the chip at {addr}"))?;
            if let (Some(m), Some(c)) = (&a.mac_key, &a.cipher_key) {
                d.open_session(host_keys(m, c)?)?;
            }
            client(&mut d, cmd)
        }
    }
}

fn client<T: Transport>(d: &mut Driver<T>, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Echo { data } => println!("{}", hex::encode(d.echo(&parse_hex(&data, "data")?)?)),
        Cmd::Random { count } => println!("{}", hex::encode(d.random(count)?)),
        Cmd::Query { what } => query(d, what)?,
        Cmd::Read { zone, offset, len } => {
            let zones = d.partition()?;
            let z = zones
                .iter()
                .find(|z| z.index == zone)
                .ok_or_else(|| anyhow!("the chip has no zone {zone}"))?;
            let len = len.unwrap_or(z.size.saturating_sub(offset));
            if z.counter_zone {
                let (c, data) = d.read_counter(zone, offset, len)?;
                println!("counter {c}\n{}", hex::encode(data));
            } else {
                println!(
                    "{}",
                    hex::encode(d.read_zone(zone, offset, usize::from(len))?)
                );
            }
        }
        Cmd::Update { zone, data, offset } => {
            let data = parse_hex(&data, "data")?;
            d.update_zone(zone, offset, &data)?;
            println!(
                "wrote {} bytes to zone {zone} at offset {offset}",
                data.len()
            );
        }
        Cmd::Decrement { zone, amount } => println!("{}", d.decrement(zone, amount, 0, &[])?),
        Cmd::Keygen {
            slot,
            curve,
            usage,
            usage_limit,
            fixed,
        } => {
            let mut mode = match usage {
                UsageArg::Sign => key_mode::SIGN_DIGEST,
                UsageArg::Ecdh => key_mode::KEY_ESTABLISHMENT,
                UsageArg::Both => key_mode::SIGN_DIGEST | key_mode::KEY_ESTABLISHMENT,
            };
            if fixed {
                mode |= key_mode::GENERATE_NEVER;
            } else {
                mode |= key_mode::CHANGE_RIGHT;
            }
            let curve: Curve = curve.into();
            let point = d.generate_key(slot, curve, usage_limit, mode)?;
            print!("{}", point_to_pem(curve, &point)?);
        }
        Cmd::Sign {
            slot,
            digest,
            file,
            raw,
        } => {
            let curve = d.slot_curve(slot)?;
            let digest = digest_arg(digest.as_deref(), file.as_deref(), curve)?;
            let sig = d.sign_with_curve(slot, curve, &digest)?;
            if raw {
                println!("{}", hex::encode(sig));
            } else {
                println!("{}", hex::encode(raw_to_der(curve, &sig)?));
            }
        }
        Cmd::Verify {
            pubkey,
            sig,
            digest,
            file,
        } => {
            let (curve, point) = pem_to_point(&pubkey)?;
            let digest = digest_arg(digest.as_deref(), file.as_deref(), curve)?;
            let sig = sig_to_raw(curve, &parse_hex(&sig, "signature")?)?;
            let ok = d.verify(curve, &point, &digest, &sig)?;
            println!("{}", if ok { "valid" } else { "invalid" });
            if !ok {
                std::process::exit(2);
            }
        }
        Cmd::Ecdh { slot, peer } => {
            let (curve, point) = pem_to_point(&peer)?;
            println!("{}", hex::encode(&*d.establish_key(slot, curve, &point)?));
        }
        Cmd::EnvelopeKey { slot, aes256 } => {
            d.generate_envelope_key(slot, aes256)?;
            println!(
                "generated an AES-{} envelope key in slot {slot}",
                if aes256 { 256 } else { 128 }
            );
        }
        Cmd::Wrap { slot, data } => {
            println!("{}", hex::encode(d.wrap(slot, &parse_hex(&data, "data")?)?))
        }
        Cmd::Unwrap { slot, data } => println!(
            "{}",
            hex::encode(&*d.unwrap(slot, &parse_hex(&data, "envelope")?)?)
        ),
        Cmd::Pair {
            with_mac_key,
            with_cipher_key,
        } => {
            let (Some(m), Some(c)) = (with_mac_key, with_cipher_key) else {
                bail!("pair needs --with-mac-key HEX and --with-cipher-key HEX");
            };
            d.pair_host_keys(&host_keys(&m, &c)?)?;
            println!(
                "host keys paired; MAC counter {}",
                d.host_key_slot()?.counter
            );
        }
        Cmd::Init { .. } | Cmd::Serve { .. } => bail!("init and serve do not take --connect"),
    }
    Ok(())
}

fn query<T: Transport>(d: &mut Driver<T>, what: QueryArg) -> Result<()> {
    match what {
        QueryArg::Product => {
            let p = d.product_data()?;
            println!("mask id      {}", hex::encode(p.mask_id));
            println!("personality  {}", p.personality.name());
            println!(
                "serial       {}",
                p.serial
                    .as_deref()
                    .map(hex::encode)
                    .unwrap_or_else(|| "-".into())
            );
            for (t, v) in &p.tlvs {
                println!("tlv 0x{t:02x}     {}", hex::encode(v));
            }
        }
        QueryArg::Partition => {
            println!("zone  type     size  read-ac  update-ac  counter");
            for z in d.partition()? {
                println!(
                    "{:>4}  {:<7} {:>5}  {}{:<7} {}{:<9} {}",
                    z.index,
                    if z.counter_zone { "counter" } else { "data" },
                    z.size,
                    z.read_ac,
                    if z.read_ac_change_right { "+" } else { " " },
                    z.update_ac,
                    if z.update_ac_change_right { "+" } else { " " },
                    z.counter.map(|c| c.to_string()).unwrap_or_default()
                );
            }
            println!("(+ = the access condition may still be tightened)");
        }
        QueryArg::Keys => {
            let (global, slots) = d.key_table()?;
            println!("global usage limit {global}");
            for s in slots {
                println!(
                    "slot {:>3}  {}  mode {:04x}  {}",
                    s.slot,
                    if s.present { "key  " } else { "empty" },
                    s.mode,
                    s.curve.map(|c| c.name()).unwrap_or("")
                );
            }
        }
        QueryArg::HostKey => {
            let s = d.host_key_slot()?;
            println!("paired {}  counter {}", s.present, s.counter);
        }
        QueryArg::Commands => {
            let (right, table) = d.command_table()?;
            println!("change rights {right:02b}");
            for c in table {
                let name = match c.extended {
                    Some(e) => format!("{e}"),
                    None => format!("{}", c.code),
                };
                println!("{name:<40} ac {}  encryption {:02b}", c.ac, c.encryption);
            }
        }
        QueryArg::Lifecycle => println!("0x{:02x}", d.life_cycle()?),
        QueryArg::EnvelopeKeys => {
            for (slot, k) in d.envelope_key_table()? {
                println!(
                    "slot {slot}  {}",
                    match k {
                        Some(0) => "AES-128",
                        Some(_) => "AES-256",
                        None => "empty",
                    }
                );
            }
        }
    }
    Ok(())
}
