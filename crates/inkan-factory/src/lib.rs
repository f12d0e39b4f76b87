#![doc = include_str!("../README.md")]

pub mod journal;
pub mod personalize;

use inkan_pki::cert::{self, IssuedCert};
use inkan_pki::pkcs11::{Pkcs11Signer, TokenKey};
use inkan_pki::{crl, CaSigner, CertPolicy, KeyCurve, PkiError, SoftwareKey};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub use personalize::{BatchReport, ChipOutcome, Personalizer, StepTimes};

/// A factory failure. Every variant names the thing at fault.
#[derive(Debug, thiserror::Error)]
pub enum FactoryError {
    /// The chip cannot hold the family's kind of device key.
    #[error("chip {serial}: a {personality:?} has no {key} keys (the family needs them)")]
    ChipLacksKey {
        /// The chip serial.
        serial: String,
        /// Its personality.
        personality: inkan_se::Personality,
        /// The key kind.
        key: &'static str,
    },
    /// Reading or writing a factory file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A factory file is damaged.
    #[error("{path} is damaged: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `init` on a directory that already holds a factory.
    #[error("{0} already holds a factory")]
    AlreadyInitialized(PathBuf),
    /// No factory in the directory.
    #[error("{0} holds no factory: run `inkan factory init` first")]
    NotInitialized(PathBuf),
    /// A serial the family never issued a certificate for.
    #[error("family {family:?} issued no certificate with chip or certificate serial {serial:?}")]
    NotIssued {
        /// The family.
        family: String,
        /// What was given.
        serial: String,
    },
    /// The family does not exist.
    #[error("unknown family {0:?} (see `inkan factory family list`)")]
    UnknownFamily(String),
    /// The family already exists.
    #[error("family {0:?} already exists")]
    FamilyExists(String),
    /// An invalid name.
    #[error("invalid {what} {name:?}: use 1 to 32 characters a-z, 0-9 and '-'")]
    BadName {
        /// What kind of name.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A chip serial already has a certificate from another batch.
    #[error("chip {serial} already has a certificate from batch {batch}: duplicate serial")]
    DuplicateSerial {
        /// The serial.
        serial: String,
        /// The batch that issued it.
        batch: String,
    },
    /// The chip is locked and this batch did not personalize it.
    #[error("chip {0} is already locked (personalized elsewhere?): refusing to touch it")]
    ChipLocked(String),
    /// The chip's key does not match the certificate issued for it.
    #[error("chip {0}: its slot 0 key does not match the certificate issued for it")]
    ChipKeyMismatch(String),
    /// A step's read-back differed from what was written.
    #[error("chip {serial}: read-back of {what} does not match what was written")]
    ReadBack {
        /// The chip.
        serial: String,
        /// What was checked.
        what: &'static str,
    },
    /// The chip refused a command or the bus failed.
    #[error("chip {serial}: {source}")]
    Chip {
        /// The chip.
        serial: String,
        /// The driver error.
        source: inkan_se::DriverError,
    },
    /// A batch exists with other parameters.
    #[error("batch {batch} exists with {what}: resume it with the same parameters")]
    BatchMismatch {
        /// The batch.
        batch: String,
        /// What differs.
        what: String,
    },
    /// A PKI operation failed (CA not a CA, expired, wrong key...).
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// A secret (passphrase, PIN) is missing.
    #[error("missing secret: {0}")]
    MissingSecret(&'static str),
}

impl FactoryError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> FactoryError {
        FactoryError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Where the factory's CA keys live.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KeyStore {
    /// Encrypted PKCS#8 files in the factory directory (development).
    File,
    /// A PKCS#11 token; keys are found by label.
    Pkcs11 {
        /// The module path.
        module: PathBuf,
        /// The token label.
        token: String,
    },
}

/// The factory's settings (`factory.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactoryConfig {
    /// Organization name in every certificate.
    pub organization: String,
    /// Curve of the CA keys.
    pub curve: KeyCurve,
    /// Validity policy.
    pub policy: CertPolicy,
    /// Where CA keys live.
    pub keys: KeyStore,
    /// Whether the trust anchors were generated for development.
    pub development_anchors: bool,
}

/// A family's settings (`families/NAME/family.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyConfig {
    /// The family name.
    pub name: String,
    /// Device key curve.
    pub curve: KeyCurve,
    /// Whether device keys also do ECDH (keyAgreement in the certificate).
    pub key_agreement: bool,
    /// Device keys are Ed25519 (EDHOC suite 0; A120 chips only); the
    /// family CA still signs with `curve`.
    #[serde(default)]
    pub ed25519: bool,
    /// Accessories: units of use each chip starts with, kept in its usage
    /// counter zone (one-way, decremented under the host MAC).
    #[serde(default)]
    pub usage_limit: Option<u32>,
    /// Accessories: each chip's host keys derive from the family's pairing
    /// key and the chip serial, so a host holding the pairing key can open
    /// a MAC'd session with any of them (`HostKeys::from_pairing`).
    #[serde(default)]
    pub paired_hosts: bool,
    /// The last CRL number issued.
    pub crl_number: u64,
    /// Revoked certificate serials (hex) and when.
    pub revoked: Vec<(String, u64)>,
}

/// How a family's chips are personalized beyond their identity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FamilyProfile {
    /// An accessory: host keys from the family's pairing key, signature
    /// free to any host's challenge.
    pub accessory: bool,
    /// Units of use each chip starts with.
    pub usage_limit: Option<u32>,
}

/// The secrets that unlock CA keys.
#[derive(Clone)]
pub struct Secrets {
    /// Passphrase of the encrypted key files.
    pub passphrase: Option<zeroize::Zeroizing<Vec<u8>>>,
    /// User PIN of the PKCS#11 token.
    pub pin: Option<zeroize::Zeroizing<String>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

/// The public keys every chip pins at personalization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anchors {
    /// The cloud's authentication key (zone 1): the device checks the cloud
    /// against it.
    pub cloud_auth: Vec<u8>,
    /// The cloud's command-verification key (zone 2).
    pub command: Vec<u8>,
    /// The firmware-signing key (zone 3).
    pub firmware: Vec<u8>,
}

/// Names of the three anchors, as files under `anchors/`.
pub const ANCHOR_NAMES: [&str; 3] = ["cloud-auth", "cloud-command", "firmware"];

/// Zone numbers (see inkan-se's partition map).
pub mod zones {
    /// The device certificate.
    pub const CERTIFICATE: u8 = 0;
    /// The cloud authentication key.
    pub const CLOUD_AUTH: u8 = 1;
    /// The cloud command key.
    pub const COMMAND: u8 = 2;
    /// The firmware-signing key.
    pub const FIRMWARE: u8 = 3;
    /// General protected storage.
    pub const STORAGE: u8 = 4;
    /// Firmware security-version counter.
    pub const FW_COUNTER: u8 = 5;
    /// Usage counter: the units of use an accessory has left.
    pub const USAGE: u8 = 6;
}

/// Reads a pairing key file (64 hex digits).
pub fn read_pairing_key(path: &Path) -> Result<zeroize::Zeroizing<[u8; 32]>, FactoryError> {
    let text = zeroize::Zeroizing::new(read(path)?);
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim_ascii(), &mut *key).map_err(|_| FactoryError::Corrupt {
        path: path.to_path_buf(),
        reason: "not a pairing key (64 hex digits)".into(),
    })?;
    Ok(key)
}

fn check_name(what: &'static str, name: &str) -> Result<(), FactoryError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(FactoryError::BadName {
            what,
            name: name.into(),
        })
    }
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FactoryError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| FactoryError::io(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| FactoryError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| FactoryError::io(path, e))
}

fn read(path: &Path) -> Result<Vec<u8>, FactoryError> {
    std::fs::read(path).map_err(|e| FactoryError::io(path, e))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, FactoryError> {
    serde_json::from_slice(&read(path)?).map_err(|e| FactoryError::Corrupt {
        path: path.into(),
        reason: e.to_string(),
    })
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap_or_default()
}

/// A factory: its directory, settings and the secrets to use its keys.
#[derive(Debug)]
pub struct Factory {
    dir: PathBuf,
    /// Settings.
    pub config: FactoryConfig,
    secrets: Secrets,
}

/// Parameters of `Factory::init`.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Organization name.
    pub organization: String,
    /// CA curve.
    pub curve: KeyCurve,
    /// Validity policy.
    pub policy: CertPolicy,
    /// Key storage.
    pub keys: KeyStore,
    /// Trust anchors (SPKI DER of the three keys); generated for development
    /// when absent.
    pub anchors: Option<Anchors>,
}

impl Factory {
    /// The factory directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The passphrase of the key files, if any (development tooling).
    pub fn passphrase(&self) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        self.secrets.passphrase.clone()
    }

    fn key_path(&self, name: &str) -> PathBuf {
        self.dir.join("keys").join(format!("{name}.key.pem"))
    }

    fn key_passphrase(&self) -> Result<&[u8], FactoryError> {
        self.secrets
            .passphrase
            .as_deref()
            .map(|p| p.as_slice())
            .ok_or(FactoryError::MissingSecret("CA key passphrase"))
    }

    /// Creates a signer for a named CA key.
    fn new_key(&self, name: &str, curve: KeyCurve) -> Result<Box<dyn CaSigner>, FactoryError> {
        match &self.config.keys {
            KeyStore::File => {
                let pass = self.key_passphrase()?;
                let k = SoftwareKey::generate(curve);
                std::fs::create_dir_all(self.dir.join("keys"))
                    .map_err(|e| FactoryError::io(&self.dir, e))?;
                k.save(&self.key_path(name), pass)?;
                Ok(Box::new(k))
            }
            KeyStore::Pkcs11 { .. } => Ok(Box::new(Pkcs11Signer::generate(
                &self.token_key(name)?,
                curve,
            )?)),
        }
    }

    fn token_key(&self, name: &str) -> Result<TokenKey, FactoryError> {
        let KeyStore::Pkcs11 { module, token } = &self.config.keys else {
            return Err(FactoryError::MissingSecret("token configuration"));
        };
        let pin = self
            .secrets
            .pin
            .as_ref()
            .ok_or(FactoryError::MissingSecret("PKCS#11 user PIN"))?;
        Ok(TokenKey {
            module: module.clone(),
            token: token.clone(),
            pin: pin.to_string(),
            label: name.into(),
        })
    }

    /// Opens a named CA key.
    pub fn signer(&self, name: &str) -> Result<Box<dyn CaSigner>, FactoryError> {
        match &self.config.keys {
            KeyStore::File => {
                let pass = self.key_passphrase()?;
                Ok(Box::new(SoftwareKey::load(&self.key_path(name), pass)?))
            }
            KeyStore::Pkcs11 { .. } => Ok(Box::new(Pkcs11Signer::open(&self.token_key(name)?)?)),
        }
    }

    /// Initialises a factory in `dir`: the root CA, the manifest signer
    /// certified under it, and the trust anchors chips will pin.
    pub fn init(dir: &Path, opts: InitOptions, secrets: Secrets) -> Result<Factory, FactoryError> {
        if dir.join("factory.json").exists() {
            return Err(FactoryError::AlreadyInitialized(dir.into()));
        }
        if opts.organization.trim().is_empty() {
            return Err(FactoryError::BadName {
                what: "organization",
                name: opts.organization,
            });
        }
        // Build everything in a staging directory, then rename it into place:
        // a failure leaves nothing half-written.
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| FactoryError::io(parent, e))?;
        let staging = parent.join(format!(
            ".{}.staging",
            dir.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("factory")
        ));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(staging.join("anchors"))
            .map_err(|e| FactoryError::io(&staging, e))?;
        let f = Factory {
            dir: staging.clone(),
            config: FactoryConfig {
                organization: opts.organization.clone(),
                curve: opts.curve,
                policy: opts.policy,
                keys: opts.keys,
                development_anchors: opts.anchors.is_none(),
            },
            secrets,
        };
        let result = (|| {
            let root_key = f.new_key("root", opts.curve)?;
            let root = cert::issue_root(
                &*root_key,
                &opts.organization,
                &format!("{} root CA", opts.organization),
                &f.config.policy,
            )?;
            write_atomic(&staging.join("root.crt.pem"), root.to_pem().as_bytes())?;
            let mkey = f.new_key("manifest-signer", opts.curve)?;
            let mcert = cert::issue_signer(
                &*root_key,
                &root,
                &mkey.public_point(),
                &opts.organization,
                &format!("{} manifest signer", opts.organization),
                &f.config.policy,
            )?;
            write_atomic(
                &staging.join("manifest-signer.crt.pem"),
                mcert.to_pem().as_bytes(),
            )?;
            let anchors = match &opts.anchors {
                Some(a) => a.clone(),
                None => {
                    let mut spkis = Vec::new();
                    for name in ANCHOR_NAMES {
                        let k = f.new_key(&format!("dev-{name}"), KeyCurve::P256)?;
                        spkis.push(inkan_pki::signer::spki_der(&k.public_point())?);
                    }
                    Anchors {
                        cloud_auth: spkis[0].clone(),
                        command: spkis[1].clone(),
                        firmware: spkis[2].clone(),
                    }
                }
            };
            for (name, der) in
                ANCHOR_NAMES
                    .iter()
                    .zip([&anchors.cloud_auth, &anchors.command, &anchors.firmware])
            {
                write_atomic(
                    &staging.join("anchors").join(format!("{name}.pub.pem")),
                    inkan_pki::pem("PUBLIC KEY", der).as_bytes(),
                )?;
            }
            write_atomic(&staging.join("factory.json"), &to_json(&f.config))
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        if dir.exists() {
            // An empty directory given by the user is replaced.
            std::fs::remove_dir(dir).map_err(|e| FactoryError::io(dir, e))?;
        }
        std::fs::rename(&staging, dir).map_err(|e| FactoryError::io(dir, e))?;
        Factory::open(dir, f.secrets)
    }

    /// Opens an existing factory.
    pub fn open(dir: &Path, secrets: Secrets) -> Result<Factory, FactoryError> {
        let cfg = dir.join("factory.json");
        if !cfg.exists() {
            return Err(FactoryError::NotInitialized(dir.into()));
        }
        Ok(Factory {
            dir: dir.into(),
            config: read_json(&cfg)?,
            secrets,
        })
    }

    /// The root certificate.
    pub fn root(&self) -> Result<IssuedCert, FactoryError> {
        Ok(IssuedCert::from_pem_or_der(&read(
            &self.dir.join("root.crt.pem"),
        )?)?)
    }

    /// The manifest signer's certificate.
    pub fn manifest_signer_cert(&self) -> Result<IssuedCert, FactoryError> {
        Ok(IssuedCert::from_pem_or_der(&read(
            &self.dir.join("manifest-signer.crt.pem"),
        )?)?)
    }

    /// The anchors chips pin.
    pub fn anchors(&self) -> Result<Anchors, FactoryError> {
        let mut v = Vec::new();
        for name in ANCHOR_NAMES {
            let p = self.dir.join("anchors").join(format!("{name}.pub.pem"));
            let der = inkan_pki::pem_or_der("PUBLIC KEY", &read(&p)?)?;
            v.push(der.into_iter().next().unwrap_or_default());
        }
        Ok(Anchors {
            cloud_auth: v[0].clone(),
            command: v[1].clone(),
            firmware: v[2].clone(),
        })
    }

    fn family_dir(&self, name: &str) -> PathBuf {
        self.dir.join("families").join(name)
    }

    /// Creates a family CA under the root.
    pub fn create_family(
        &self,
        name: &str,
        curve: KeyCurve,
        key_agreement: bool,
    ) -> Result<IssuedCert, FactoryError> {
        self.create_family_with(name, curve, key_agreement, false)
    }

    /// Creates a family whose devices get Ed25519 keys (`ed25519`: EDHOC
    /// suite 0, A120 chips only) or ECDSA keys on `curve`.
    pub fn create_family_with(
        &self,
        name: &str,
        curve: KeyCurve,
        key_agreement: bool,
        ed25519: bool,
    ) -> Result<IssuedCert, FactoryError> {
        check_name("family name", name)?;
        let dir = self.family_dir(name);
        if dir.exists() {
            return Err(FactoryError::FamilyExists(name.into()));
        }
        let root = self.root()?;
        let root_key = self.signer("root")?;
        // Check the root can issue before any key is made.
        root.require_ca()?;
        root.require_valid_at(SystemTime::now())?;
        let staging = self.dir.join("families").join(format!(".{name}.staging"));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(|e| FactoryError::io(&staging, e))?;
        let result = (|| {
            let key = self.new_key(&format!("family-{name}"), curve)?;
            let fam = cert::issue_family(
                &*root_key,
                &root,
                &key.public_point(),
                &self.config.organization,
                name,
                &self.config.policy,
            )?;
            write_atomic(&staging.join("family.crt.pem"), fam.to_pem().as_bytes())?;
            let crl = crl::issue_crl(&*key, &fam, &[], 1, Duration::from_secs(7 * 24 * 3600))?;
            write_atomic(&staging.join("crl.pem"), crl.to_pem().as_bytes())?;
            let cfg = FamilyConfig {
                name: name.into(),
                curve,
                key_agreement: key_agreement && !ed25519,
                ed25519,
                usage_limit: None,
                paired_hosts: false,
                crl_number: 1,
                revoked: Vec::new(),
            };
            write_atomic(&staging.join("family.json"), &to_json(&cfg))?;
            Ok(fam)
        })();
        match result {
            Ok(fam) => {
                std::fs::rename(&staging, &dir).map_err(|e| FactoryError::io(&dir, e))?;
                Ok(fam)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                if let KeyStore::File = self.config.keys {
                    let _ = std::fs::remove_file(self.key_path(&format!("family-{name}")));
                }
                Err(e)
            }
        }
    }

    /// Sets how a family's chips are personalized, before any is: each
    /// starts with `profile.usage_limit` units of use (when given) in its
    /// usage counter; an accessory's host keys derive from the family's
    /// pairing key, made here (32 random bytes, `families/<name>/
    /// pairing.key`, mode 0600), which the makers of genuine hosts hold.
    /// Fails if chips were personalized already (the family has batches).
    pub fn configure_family(&self, name: &str, profile: FamilyProfile) -> Result<(), FactoryError> {
        let FamilyProfile {
            accessory,
            usage_limit,
        } = profile;
        let (mut cfg, _) = self.family(name)?;
        let dir = self.family_dir(name);
        if std::fs::read_dir(self.dir.join("batches"))
            .map(|rd| {
                rd.flatten().any(|e| {
                    read_json::<serde_json::Value>(&e.path().join("batch.json"))
                        .is_ok_and(|b| b["family"] == name)
                })
            })
            .unwrap_or(false)
        {
            return Err(FactoryError::Corrupt {
                path: dir,
                reason: "the family already has personalized chips".into(),
            });
        }
        let key_path = dir.join("pairing.key");
        if accessory && !key_path.exists() {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let key = zeroize::Zeroizing::new(hex::encode(crate::personalize::random::<32>()));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key_path)
                .map_err(|e| FactoryError::io(&key_path, e))?;
            f.write_all(key.as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| FactoryError::io(&key_path, e))?;
        }
        cfg.usage_limit = usage_limit;
        cfg.paired_hosts = accessory;
        write_atomic(&dir.join("family.json"), &to_json(&cfg))
    }

    /// The pairing key of an accessory family (hosts derive each chip's
    /// host keys from it).
    pub fn pairing_key(&self, name: &str) -> Result<zeroize::Zeroizing<[u8; 32]>, FactoryError> {
        let path = self.family_dir(name).join("pairing.key");
        read_pairing_key(&path)
    }

    /// A family's settings and certificate.
    pub fn family(&self, name: &str) -> Result<(FamilyConfig, IssuedCert), FactoryError> {
        check_name("family name", name).map_err(|_| FactoryError::UnknownFamily(name.into()))?;
        let dir = self.family_dir(name);
        if !dir.join("family.json").exists() {
            return Err(FactoryError::UnknownFamily(name.into()));
        }
        Ok((
            read_json(&dir.join("family.json"))?,
            IssuedCert::from_pem_or_der(&read(&dir.join("family.crt.pem"))?)?,
        ))
    }

    /// Every family's name.
    pub fn families(&self) -> Result<Vec<String>, FactoryError> {
        let d = self.dir.join("families");
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().to_string();
                if !n.starts_with('.') {
                    out.push(n);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// The certificates a family issued, from its batches' journals:
    /// (chip serial, certificate).
    pub fn issued_by(&self, family: &str) -> Result<Vec<(String, IssuedCert)>, FactoryError> {
        let (_, fam) = self.family(family)?;
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.dir.join("batches")) {
            for e in rd.flatten() {
                let j = e.path().join("journal.jsonl");
                if !j.exists() {
                    continue;
                }
                for (chip, ev) in journal::replay(&j)?.0.issued {
                    let journal::Event::Issued { certificate, .. } = ev else {
                        continue;
                    };
                    let Ok(c) = hex::decode(&certificate)
                        .map_err(|_| ())
                        .and_then(|der| IssuedCert::from_der(&der).map_err(|_| ()))
                    else {
                        continue;
                    };
                    if inkan_pki::cert::verify_issued_by(&c, &fam).is_ok() {
                        out.push((chip, c));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Revokes a device certificate the family issued, named by its chip
    /// serial or its certificate serial (hex), and reissues the family CRL.
    /// Returns the CRL and the certificate serial revoked; anything the
    /// family did not issue is refused.
    pub fn revoke(&self, family: &str, serial: &str) -> Result<(crl::Crl, String), FactoryError> {
        let (mut cfg, fam) = self.family(family)?;
        let want = serial.trim().to_ascii_lowercase();
        let issued = self.issued_by(family)?;
        let found = issued
            .iter()
            .find(|(chip, c)| chip.to_ascii_lowercase() == want || c.serial_hex() == want)
            .ok_or_else(|| FactoryError::NotIssued {
                family: family.to_string(),
                serial: serial.to_string(),
            })?;
        let cert_serial_hex = found.1.serial_hex();
        let serial = hex::decode(&cert_serial_hex).map_err(|_| PkiError::Malformed {
            what: "certificate serial",
            reason: format!("{cert_serial_hex:?} is not hex"),
        })?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        // Kept in canonical lower-case hex, so one serial is listed once.
        let canonical = hex::encode(&serial);
        if !cfg.revoked.iter().any(|(s, _)| *s == canonical) {
            cfg.revoked.push((canonical, now));
        }
        let key = self.signer(&format!("family-{family}"))?;
        let revoked: Vec<crl::Revoked> = cfg
            .revoked
            .iter()
            .filter_map(|(s, t)| {
                Some(crl::Revoked {
                    serial: hex::decode(s).ok()?,
                    time: SystemTime::UNIX_EPOCH + Duration::from_secs(*t),
                })
            })
            .collect();
        cfg.crl_number += 1;
        let crl = crl::issue_crl(
            &*key,
            &fam,
            &revoked,
            cfg.crl_number,
            Duration::from_secs(7 * 24 * 3600),
        )?;
        let dir = self.family_dir(family);
        write_atomic(&dir.join("crl.pem"), crl.to_pem().as_bytes())?;
        write_atomic(&dir.join("family.json"), &to_json(&cfg))?;
        Ok((crl, cert_serial_hex))
    }

    /// The family's current CRL.
    pub fn crl(&self, family: &str) -> Result<crl::Crl, FactoryError> {
        self.family(family)?;
        let der =
            inkan_pki::pem_or_der("X509 CRL", &read(&self.family_dir(family).join("crl.pem"))?)?;
        Ok(crl::Crl::from_der(
            der.first().map(Vec::as_slice).unwrap_or_default(),
        )?)
    }

    /// The directory of a batch.
    pub fn batch_dir(&self, batch: &str) -> PathBuf {
        self.dir.join("batches").join(batch)
    }

    /// Serial → batch of every certificate this factory issued.
    pub fn issued_serials(
        &self,
    ) -> Result<std::collections::HashMap<String, String>, FactoryError> {
        let mut out = std::collections::HashMap::new();
        if let Ok(rd) = std::fs::read_dir(self.dir.join("batches")) {
            for e in rd.flatten() {
                let batch = e.file_name().to_string_lossy().to_string();
                let j = e.path().join("journal.jsonl");
                if j.exists() {
                    for serial in journal::replay(&j)?.0.issued.keys() {
                        out.insert(serial.clone(), batch.clone());
                    }
                }
            }
        }
        Ok(out)
    }
}
