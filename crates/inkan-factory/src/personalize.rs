//! Personalizing one chip after another, through the host driver, so the
//! same code runs against the emulator and a real STSAFE-A:
//!
//! 1. the device key is generated in slot 0; only the public key leaves
//!    (after a crash it is recovered from two signatures, never re-made);
//! 2. a DevID certificate is issued under the family CA and journalled
//!    (fsync) before anything else happens;
//! 3. host MAC keys are saved for the device, then paired, and a host
//!    session is opened: every following command is MAC'd;
//! 4. the certificate goes to zone 0 and the trust anchors to zones 1–3,
//!    each read back;
//! 5. access conditions are tightened and the life cycle locked;
//! 6. the result is checked: locked state, zone contents, and a fresh
//!    challenge signed by the chip verifies against the certificate.

use crate::journal::{Event, Journal};
use crate::{zones, Anchors, Factory, FactoryError, FamilyConfig};
use inkan_pki::cert::{self, DeviceProfile, IssuedCert};
use inkan_pki::manifest::{self, Manifest, ManifestEntry};
use inkan_pki::{CaSigner, KeyCurve};
use inkan_se::driver::key_mode;
use inkan_se::transport::Transport;
use inkan_se::wire::codes::{command_ac, life_cycle, zone_ac};
use inkan_se::wire::{CommandCode, ExtendedCode};
use inkan_se::{AesKey, Curve, Driver, HostKeys, Personality};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};
use zeroize::Zeroizing;

/// Where the time of a batch went.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepTimes {
    /// Key generation in the chip.
    pub keygen: Duration,
    /// Certificate issuance (signing with the family key) and journalling.
    pub issue: Duration,
    /// Pairing, writes and read-backs.
    pub write: Duration,
    /// Access conditions, lock and final checks.
    pub lock_verify: Duration,
    /// Chips personalized.
    pub chips: usize,
}

/// What happened to one chip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChipOutcome {
    /// Personalized now.
    Personalized {
        /// Chip serial.
        serial: String,
    },
    /// Already done by this batch earlier.
    AlreadyDone {
        /// Chip serial.
        serial: String,
    },
}

/// A finished batch.
#[derive(Clone, Debug)]
pub struct BatchReport {
    /// Chips in the manifest.
    pub chips: usize,
    /// The signed manifest file.
    pub manifest: PathBuf,
}

/// Batch settings (`batch.json`), checked on resume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchConfig {
    /// The family.
    pub family: String,
    /// Emulated chips to create (0 for a batch over real chips).
    pub count: usize,
    /// Personality of emulated chips.
    pub personality: Personality,
}

/// The device-side secrets a personalized chip's host needs (host MAC
/// keys), and where an emulated chip's NVM lives.
#[derive(Clone, Serialize, Deserialize)]
pub struct DeviceSecrets {
    /// Chip serial.
    pub serial: String,
    /// The emulated chip's state file, if any.
    pub state: Option<PathBuf>,
    /// Host keys (hex).
    pub host_mac: String,
    /// Host cipher key (hex).
    pub host_cipher: String,
}

impl DeviceSecrets {
    /// The host keys.
    pub fn host_keys(&self) -> Option<HostKeys> {
        let m = Zeroizing::new(hex::decode(&self.host_mac).ok()?);
        let c = Zeroizing::new(hex::decode(&self.host_cipher).ok()?);
        Some(HostKeys {
            mac: AesKey::from_slice(&m)?,
            cipher: AesKey::from_slice(&c)?,
        })
    }
}

/// Personalizes chips into one batch of one family.
pub struct Personalizer<'f> {
    factory: &'f Factory,
    family: FamilyConfig,
    family_cert: IssuedCert,
    family_key: Box<dyn CaSigner>,
    anchors: Anchors,
    batch: String,
    dir: PathBuf,
    journal: Journal,
    others: HashMap<String, String>,
    /// Time spent per step.
    pub times: StepTimes,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn chip_curve(c: KeyCurve) -> Curve {
    match c {
        KeyCurve::P256 => Curve::P256,
        KeyCurve::P384 => Curve::P384,
    }
}

/// Verifies a raw signature over a digest with a SEC1 point (ECDSA), or
/// over a message with an Ed25519 key.
pub fn verify_digest(point: &[u8], digest: &[u8], sig: &[u8]) -> bool {
    use ecdsa::signature::hazmat::PrehashVerifier;
    if inkan_pki::signer::is_ed25519_key(point) {
        let (Ok(k), Ok(s)) = (<[u8; 32]>::try_from(point), <[u8; 64]>::try_from(sig)) else {
            return false;
        };
        return ed25519_dalek::VerifyingKey::from_bytes(&k).is_ok_and(|vk| {
            vk.verify_strict(digest, &ed25519_dalek::Signature::from_bytes(&s))
                .is_ok()
        });
    }
    match KeyCurve::of_point(point) {
        Some(KeyCurve::P256) => {
            let (Ok(vk), Ok(s)) = (
                p256::ecdsa::VerifyingKey::from_sec1_bytes(point),
                p256::ecdsa::Signature::from_slice(sig),
            ) else {
                return false;
            };
            vk.verify_prehash(digest, &s).is_ok()
        }
        Some(KeyCurve::P384) => {
            let (Ok(vk), Ok(s)) = (
                p384::ecdsa::VerifyingKey::from_sec1_bytes(point),
                p384::ecdsa::Signature::from_slice(sig),
            ) else {
                return false;
            };
            vk.verify_prehash(digest, &s).is_ok()
        }
        None => false,
    }
}

pub(crate) fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    b
}

/// Recovers the public key of slot 0 from two signatures (ECDSA public key
/// recovery: the candidate that also verifies the second signature).
fn recover_public_key<T: Transport>(
    d: &mut Driver<T>,
    curve: KeyCurve,
    serial: &str,
) -> Result<Vec<u8>, FactoryError> {
    let chip = |source| FactoryError::Chip {
        serial: serial.into(),
        source,
    };
    let n = curve.field_len();
    let (d1, d2) = (random::<48>(), random::<48>());
    let s1 = d
        .sign_with_curve(0, chip_curve(curve), &d1[..n])
        .map_err(chip)?;
    let s2 = d
        .sign_with_curve(0, chip_curve(curve), &d2[..n])
        .map_err(chip)?;
    for id in 0u8..4 {
        let Some(rid) = ecdsa::RecoveryId::from_byte(id) else {
            continue;
        };
        let point = match curve {
            KeyCurve::P256 => p256::ecdsa::Signature::from_slice(&s1)
                .ok()
                .and_then(|s| {
                    p256::ecdsa::VerifyingKey::recover_from_prehash(&d1[..n], &s, rid).ok()
                })
                .map(|vk| vk.to_encoded_point(false).as_bytes().to_vec()),
            KeyCurve::P384 => p384::ecdsa::Signature::from_slice(&s1)
                .ok()
                .and_then(|s| {
                    p384::ecdsa::VerifyingKey::recover_from_prehash(&d1[..n], &s, rid).ok()
                })
                .map(|vk| vk.to_encoded_point(false).as_bytes().to_vec()),
        };
        if let Some(p) = point.filter(|p| verify_digest(p, &d2[..n], &s2)) {
            return Ok(p);
        }
    }
    Err(FactoryError::ChipKeyMismatch(serial.into()))
}

/// The command access conditions of a personalized chip.
fn hardened_commands(
    p: Personality,
    accessory: bool,
) -> Vec<(CommandCode, Option<ExtendedCode>, u8, u8)> {
    // An accessory signs any host's challenge (genuineness is checked by
    // hosts that hold no key of it); its counter stays the paired hosts'.
    let signature = if accessory {
        command_ac::FREE
    } else {
        command_ac::HOST
    };
    let mut v = vec![
        (CommandCode::GENERATE_KEY, None, command_ac::HOST, 0),
        (CommandCode::PUT_ATTRIBUTE, None, command_ac::HOST, 0),
        (CommandCode::GENERATE_SIGNATURE, None, signature, 0),
        (CommandCode::ESTABLISH_KEY, None, command_ac::HOST, 0),
        (
            CommandCode::WRAP_LOCAL_ENVELOPE,
            None,
            command_ac::HOST,
            0b10,
        ),
        (
            CommandCode::UNWRAP_LOCAL_ENVELOPE,
            None,
            command_ac::HOST,
            0b01,
        ),
        (CommandCode::DELETE, None, command_ac::HOST, 0),
    ];
    if p == Personality::A120 {
        v.push((
            CommandCode::EXTENDED,
            Some(ExtendedCode::WRITE_HOST_KEY_V2_PLAIN),
            command_ac::NEVER,
            0,
        ));
        v.push((
            CommandCode::EXTENDED,
            Some(ExtendedCode::GENERATE_ECDHE),
            command_ac::HOST,
            0,
        ));
    }
    v
}

/// Zone access conditions of a personalized chip: (zone, read, update).
const HARDENED_ZONES: [(u8, u8, u8); 7] = [
    (zones::CERTIFICATE, zone_ac::ALWAYS, zone_ac::HOST),
    (zones::CLOUD_AUTH, zone_ac::ALWAYS, zone_ac::HOST),
    (zones::COMMAND, zone_ac::ALWAYS, zone_ac::HOST),
    (zones::FIRMWARE, zone_ac::ALWAYS, zone_ac::HOST),
    (zones::STORAGE, zone_ac::HOST, zone_ac::HOST),
    (zones::FW_COUNTER, zone_ac::ALWAYS, zone_ac::HOST),
    (zones::USAGE, zone_ac::ALWAYS, zone_ac::HOST),
];

impl<'f> Personalizer<'f> {
    /// Opens (or starts) a batch of `family`.
    pub fn open(
        factory: &'f Factory,
        family: &str,
        batch: &str,
        config: &BatchConfig,
    ) -> Result<Personalizer<'f>, FactoryError> {
        crate::check_name("batch name", batch)?;
        let (family_cfg, family_cert) = factory.family(family)?;
        family_cert.require_ca()?;
        family_cert.require_valid_at(SystemTime::now())?;
        let family_key = factory.signer(&format!("family-{family}"))?;
        let dir = factory.batch_dir(batch);
        let cfg_path = dir.join("batch.json");
        if cfg_path.exists() {
            let existing: BatchConfig = crate::read_json(&cfg_path)?;
            if &existing != config {
                return Err(FactoryError::BatchMismatch {
                    batch: batch.into(),
                    what: format!("{existing:?}"),
                });
            }
        } else {
            std::fs::create_dir_all(dir.join("devices")).map_err(|e| FactoryError::io(&dir, e))?;
            crate::write_atomic(&cfg_path, &crate::to_json(config))?;
        }
        let mut others = factory.issued_serials()?;
        others.retain(|_, b| b != batch);
        Ok(Personalizer {
            anchors: factory.anchors()?,
            journal: Journal::open(&dir.join("journal.jsonl"))?,
            factory,
            family: family_cfg,
            family_cert,
            family_key,
            batch: batch.into(),
            dir,
            others,
            times: StepTimes::default(),
        })
    }

    /// The batch directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Chips already finished in this batch.
    pub fn done(&self) -> usize {
        self.journal.state.done.len()
    }

    fn secrets_path(&self, serial: &str) -> PathBuf {
        self.dir.join("devices").join(format!("{serial}.json"))
    }

    /// The saved device secrets of a chip of this batch.
    pub fn device_secrets(&self, serial: &str) -> Result<DeviceSecrets, FactoryError> {
        crate::read_json(&self.secrets_path(serial))
    }

    fn host_keys_for(
        &self,
        serial: &str,
        personality: Personality,
        state: Option<&Path>,
    ) -> Result<HostKeys, FactoryError> {
        let path = self.secrets_path(serial);
        if path.exists() {
            let s: DeviceSecrets = crate::read_json(&path)?;
            return s.host_keys().ok_or_else(|| FactoryError::Corrupt {
                path,
                reason: "bad host keys".into(),
            });
        }
        let n = if personality == Personality::A110 {
            16
        } else {
            32
        };
        let (m, c) = if self.family.paired_hosts {
            // An accessory: keys any host holding the family's pairing key
            // can derive from the serial.
            let pairing = self.factory.pairing_key(&self.family.name)?;
            let serial_bytes = hex::decode(serial).map_err(|_| FactoryError::Corrupt {
                path: path.clone(),
                reason: "chip serial is not hex".into(),
            })?;
            let k = HostKeys::from_pairing(&pairing, &serial_bytes, n == 32);
            (
                Zeroizing::new(k.mac.as_bytes().to_vec()),
                Zeroizing::new(k.cipher.as_bytes().to_vec()),
            )
        } else {
            (
                Zeroizing::new(random::<32>()[..n].to_vec()),
                Zeroizing::new(random::<32>()[..n].to_vec()),
            )
        };
        let s = DeviceSecrets {
            serial: serial.into(),
            state: state.map(Path::to_path_buf),
            host_mac: hex::encode(&m[..]),
            host_cipher: hex::encode(&c[..]),
        };
        let bytes = Zeroizing::new(crate::to_json(&s));
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| FactoryError::io(&tmp, e))?;
            f.write_all(&bytes)
                .and_then(|()| f.sync_all())
                .map_err(|e| FactoryError::io(&tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| FactoryError::io(&path, e))?;
        }
        s.host_keys().ok_or_else(|| FactoryError::Corrupt {
            path,
            reason: "bad host keys".into(),
        })
    }

    /// Personalizes the chip behind `d`. `state` names an emulated chip's
    /// state file, recorded with the device secrets.
    pub fn personalize<T: Transport>(
        &mut self,
        d: &mut Driver<T>,
        state: Option<&Path>,
    ) -> Result<ChipOutcome, FactoryError> {
        let serial = hex::encode_upper(d.serial().unwrap_or_default());
        let chip = |source| FactoryError::Chip {
            serial: serial.clone(),
            source,
        };
        if self.journal.state.done.contains_key(&serial) {
            return Ok(ChipOutcome::AlreadyDone { serial });
        }
        if let Some(batch) = self.others.get(&serial) {
            return Err(FactoryError::DuplicateSerial {
                serial,
                batch: batch.clone(),
            });
        }
        // A locked chip is refused, unless this batch issued its certificate
        // and was interrupted after locking it: then every step below finds
        // its work done, and only the checks run.
        let lcs = d.life_cycle().map_err(chip)?;
        if lcs & life_cycle::LOCKED != 0 && !self.journal.state.issued.contains_key(&serial) {
            return Err(FactoryError::ChipLocked(serial));
        }
        let curve = self.family.curve;
        let personality = d.personality();

        // 1. The key, born in the chip. A chip that already holds host keys
        //    was paired by an interrupted run: resume its session first.
        let t = Instant::now();
        let paired = d.host_key_slot().map_err(chip)?.present;
        if paired {
            let keys = self.host_keys_for(&serial, personality, state)?;
            d.open_session(keys).map_err(chip)?;
        }
        let (_, slots) = d.key_table().map_err(chip)?;
        let present = slots.iter().any(|s| s.slot == 0 && s.present);
        let journalled_key = match self.journal.state.issued.get(&serial) {
            Some(Event::Issued { public_key, .. }) => hex::decode(public_key).ok(),
            _ => None,
        };
        let point = if self.family.ed25519 {
            // Ed25519: no key recovery from signatures exists. The key is
            // generated with a free generate AC while the chip is
            // unlocked, so a key never certified (a crash before the
            // journal line) is simply made again; locking the chip at the
            // end fixes it for good.
            if personality != Personality::A120 {
                return Err(FactoryError::ChipLacksKey {
                    serial,
                    personality,
                    key: "Ed25519",
                });
            }
            match journalled_key {
                Some(k) if present => k,
                _ => d
                    .generate_key(0, Curve::Ed25519, 0, key_mode::SIGN_DIGEST)
                    .map_err(chip)?,
            }
        } else if present {
            recover_public_key(d, curve, &serial)?
        } else {
            let mut mode = key_mode::SIGN_DIGEST | key_mode::GENERATE_NEVER;
            if self.family.key_agreement {
                mode |= key_mode::KEY_ESTABLISHMENT;
            }
            d.generate_key(0, chip_curve(curve), 0, mode)
                .map_err(chip)?
        };
        self.times.keygen += t.elapsed();

        // 2. The certificate, journalled before it goes anywhere.
        let t = Instant::now();
        let cert = match self.journal.state.issued.get(&serial) {
            Some(Event::Issued { certificate, .. }) => {
                let der = hex::decode(certificate).map_err(|e| FactoryError::Corrupt {
                    path: self.dir.join("journal.jsonl"),
                    reason: e.to_string(),
                })?;
                IssuedCert::from_der(&der)?
            }
            _ => {
                let profile = DeviceProfile {
                    serial: serial.clone(),
                    organization: self.factory.config.organization.clone(),
                    family: self.family.name.clone(),
                    key_agreement: self.family.key_agreement,
                    ueid: Some(inkan_pki::Ueid::random()),
                };
                let c = cert::issue_device(
                    &*self.family_key,
                    &self.family_cert,
                    &point,
                    &profile,
                    &self.factory.config.policy,
                )?;
                self.journal.record(Event::Issued {
                    serial: serial.clone(),
                    certificate: hex::encode(&c.der),
                    public_key: hex::encode(&point),
                })?;
                c
            }
        };
        if cert.public_point() != point {
            return Err(FactoryError::ChipKeyMismatch(serial));
        }
        self.times.issue += t.elapsed();

        // 3. Host keys (saved first), session; 4. writes with read-back.
        let t = Instant::now();
        if !paired {
            let keys = self.host_keys_for(&serial, personality, state)?;
            d.pair_host_keys(&keys).map_err(chip)?;
            d.open_session(keys).map_err(chip)?;
        }
        let writes: [(u8, &[u8], &'static str); 4] = [
            (zones::CERTIFICATE, &cert.der, "zone 0 (certificate)"),
            (
                zones::CLOUD_AUTH,
                &self.anchors.cloud_auth,
                "zone 1 (cloud authentication key)",
            ),
            (
                zones::COMMAND,
                &self.anchors.command,
                "zone 2 (command key)",
            ),
            (
                zones::FIRMWARE,
                &self.anchors.firmware,
                "zone 3 (firmware key)",
            ),
        ];
        for (zone, data, what) in writes {
            if d.read_zone(zone, 0, data.len()).map_err(chip)? != data {
                d.update_zone(zone, 0, data).map_err(chip)?;
                if d.read_zone(zone, 0, data.len()).map_err(chip)? != data {
                    return Err(FactoryError::ReadBack { serial, what });
                }
            }
        }
        if let Some(limit) = self.family.usage_limit {
            // An accessory starts with its units in the one-way usage
            // counter (counters only go down: the factory takes it from
            // its initial value down to the limit, once).
            let (now, _) = d.read_counter(zones::USAGE, 0, 0).map_err(chip)?;
            if now == inkan_se::chip::state::COUNTER_INITIAL {
                d.decrement(zones::USAGE, now - limit, 0, &[])
                    .map_err(chip)?;
            }
            if d.read_counter(zones::USAGE, 0, 0).map_err(chip)?.0 != limit {
                return Err(FactoryError::ReadBack {
                    serial,
                    what: "zone 6 (usage counter)",
                });
            }
        }
        self.times.write += t.elapsed();

        // 5. Access conditions and lock; 6. checks.
        let t = Instant::now();
        let table = d.command_table().map_err(chip)?.1;
        for (code, ext, ac, enc) in hardened_commands(personality, self.family.paired_hosts) {
            let Some(cur) = table.iter().find(|c| c.code == code && c.extended == ext) else {
                continue;
            };
            if cur.ac != ac {
                d.set_command_ac(code, ext, ac).map_err(chip)?;
            }
            if cur.encryption != enc | cur.encryption {
                d.set_command_encryption(code, ext, enc | cur.encryption)
                    .map_err(chip)?;
            }
        }
        if personality == Personality::A120 {
            let ctl = d
                .query(inkan_se::wire::Tag::HOST_KEY_PROVISIONING_CONTROL)
                .map_err(chip)?;
            if ctl.first().copied().unwrap_or(0) != 0 {
                d.set_host_key_provisioning(0).map_err(chip)?;
            }
        }
        let part = d.partition().map_err(chip)?;
        for (zone, read, update) in HARDENED_ZONES {
            let Some(z) = part.iter().find(|z| z.index == zone) else {
                continue;
            };
            let r = (z.read_ac != read || z.read_ac_change_right).then_some((read, false));
            let u = (z.update_ac != update || z.update_ac_change_right).then_some((update, false));
            if r.is_some() || u.is_some() {
                d.set_zone_access(zone, r, u).map_err(chip)?;
            }
        }
        let lcs = d.life_cycle().map_err(chip)?;
        if lcs == life_cycle::BORN {
            d.set_life_cycle(life_cycle::OPERATIONAL).map_err(chip)?;
        }
        if lcs & life_cycle::LOCKED == 0 {
            d.lock().map_err(chip)?;
        }
        if d.life_cycle().map_err(chip)? != life_cycle::OPERATIONAL_LOCKED {
            return Err(FactoryError::ReadBack {
                serial,
                what: "life cycle (locked)",
            });
        }
        let part = d.partition().map_err(chip)?;
        for (zone, read, update) in HARDENED_ZONES {
            let ok = part.iter().any(|z| {
                z.index == zone
                    && z.read_ac == read
                    && z.update_ac == update
                    && !z.read_ac_change_right
                    && !z.update_ac_change_right
            });
            if !ok {
                return Err(FactoryError::ReadBack {
                    serial,
                    what: "zone access conditions",
                });
            }
        }
        if d.read_zone(zones::CERTIFICATE, 0, cert.der.len())
            .map_err(chip)?
            != cert.der
        {
            return Err(FactoryError::ReadBack {
                serial,
                what: "zone 0 (certificate)",
            });
        }
        let challenge = random::<48>();
        let (key_curve, digest) = if self.family.ed25519 {
            (Curve::Ed25519, &challenge[..])
        } else {
            (chip_curve(curve), &challenge[..curve.field_len()])
        };
        let sig = d.sign_with_curve(0, key_curve, digest).map_err(chip)?;
        if !verify_digest(&cert.public_point(), digest, &sig) {
            return Err(FactoryError::ChipKeyMismatch(serial));
        }
        self.journal.record(Event::Done {
            serial: serial.clone(),
            time: now_secs(),
        })?;
        self.times.lock_verify += t.elapsed();
        self.times.chips += 1;
        Ok(ChipOutcome::Personalized { serial })
    }

    /// Signs the batch manifest (every finished chip) with the manifest key
    /// and writes it to `manifest.cose` in the batch directory.
    pub fn finish(&self) -> Result<BatchReport, FactoryError> {
        let mut entries = Vec::new();
        for serial in &self.journal.state.order {
            let (
                Some(time),
                Some(Event::Issued {
                    certificate,
                    public_key,
                    ..
                }),
            ) = (
                self.journal.state.done.get(serial),
                self.journal.state.issued.get(serial),
            )
            else {
                continue;
            };
            let bad = |e: hex::FromHexError| FactoryError::Corrupt {
                path: self.dir.join("journal.jsonl"),
                reason: e.to_string(),
            };
            let certificate = hex::decode(certificate).map_err(bad)?;
            let ueid = IssuedCert::from_der(&certificate)?
                .ueid()
                .map(|u| u.as_bytes().to_vec().into());
            entries.push(ManifestEntry {
                serial: serial.clone(),
                certificate: certificate.into(),
                public_key: hex::decode(public_key).map_err(bad)?.into(),
                family: self.family.name.clone(),
                time: *time,
                ueid,
            });
        }
        let m = Manifest {
            version: 1,
            batch: self.batch.clone(),
            family: self.family.name.clone(),
            family_certificate: self.family_cert.der.clone().into(),
            created: now_secs(),
            entries,
        };
        let key = self.factory.signer("manifest-signer")?;
        let bytes = manifest::sign(&m, &*key, &self.factory.manifest_signer_cert()?)?;
        let path = self.dir.join("manifest.cose");
        crate::write_atomic(&path, &bytes)?;
        Ok(BatchReport {
            chips: m.entries.len(),
            manifest: path,
        })
    }
}
