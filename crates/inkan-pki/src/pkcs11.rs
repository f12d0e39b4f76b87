//! A CA key held in a PKCS#11 token (SoftHSM2 in tests, an HSM in
//! production). The token hashes nothing: inkan hashes on the host and asks
//! for CKM_ECDSA over the digest, which every token here supports.

use crate::signer::{CaSigner, KeyCurve};
use crate::PkiError;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use der::{Decode, Encode};
use std::path::Path;
use std::sync::Mutex;

fn tok(e: impl std::fmt::Display) -> PkiError {
    PkiError::Token(e.to_string())
}

/// Where a key lives in a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenKey {
    /// The PKCS#11 module (e.g. `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: std::path::PathBuf,
    /// The token label (the slot is found by it: slot ids change).
    pub token: String,
    /// The user PIN.
    pub pin: String,
    /// CKA_LABEL of the key pair.
    pub label: String,
}

/// A signer backed by a token key. Sessions are not `Sync`; one session is
/// kept behind a mutex.
pub struct Pkcs11Signer {
    session: Mutex<Session>,
    key: ObjectHandle,
    curve: KeyCurve,
    point: Vec<u8>,
    _ctx: Pkcs11,
}

impl std::fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pkcs11Signer({:?})", self.curve)
    }
}

/// One initialised context per module for the whole process: PKCS#11
/// allows a single C_Initialize per library.
fn context(module: &Path) -> Result<Pkcs11, PkiError> {
    static CONTEXTS: std::sync::OnceLock<
        Mutex<std::collections::HashMap<std::path::PathBuf, Pkcs11>>,
    > = std::sync::OnceLock::new();
    let mut map = CONTEXTS
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| PkiError::Token("context table poisoned".into()))?;
    if let Some(ctx) = map.get(module) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(module).map_err(tok)?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(tok)?;
    map.insert(module.to_path_buf(), ctx.clone());
    Ok(ctx)
}

fn open(k: &TokenKey) -> Result<(Pkcs11, Session), PkiError> {
    let ctx = context(Path::new(&k.module))?;
    let slot = ctx
        .get_slots_with_token()
        .map_err(tok)?
        .into_iter()
        .find(|s| {
            ctx.get_token_info(*s)
                .map(|i| i.label().trim() == k.token)
                .unwrap_or(false)
        })
        .ok_or_else(|| PkiError::Token(format!("no token labelled {:?}", k.token)))?;
    let session = ctx.open_rw_session(slot).map_err(tok)?;
    match session.login(
        UserType::User,
        Some(&AuthPin::new(k.pin.clone().into_boxed_str())),
    ) {
        Ok(()) => {}
        Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => return Err(tok(e)),
    }
    Ok((ctx, session))
}

fn find(
    session: &Session,
    class: ObjectClass,
    label: &str,
) -> Result<Option<ObjectHandle>, PkiError> {
    let found = session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(tok)?;
    Ok(found.into_iter().next())
}

fn public_point(session: &Session, label: &str) -> Result<(KeyCurve, Vec<u8>), PkiError> {
    let pubkey = find(session, ObjectClass::PUBLIC_KEY, label)?
        .ok_or_else(|| PkiError::Token(format!("no public key labelled {label:?}")))?;
    let attrs = session
        .get_attributes(pubkey, &[AttributeType::EcPoint])
        .map_err(tok)?;
    let raw = attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcPoint(p) => Some(p),
            _ => None,
        })
        .ok_or_else(|| PkiError::Token("the public key has no CKA_EC_POINT".into()))?;
    // CKA_EC_POINT is a DER OCTET STRING around the point on most tokens.
    let point = match der::asn1::OctetString::from_der(&raw) {
        Ok(os) => os.as_bytes().to_vec(),
        Err(_) => raw,
    };
    let curve = KeyCurve::of_point(&point)
        .ok_or_else(|| PkiError::Token("the token key is not P-256/P-384".into()))?;
    Ok((curve, point))
}

impl Pkcs11Signer {
    /// Opens an existing key pair.
    pub fn open(k: &TokenKey) -> Result<Pkcs11Signer, PkiError> {
        let (ctx, session) = open(k)?;
        let key = find(&session, ObjectClass::PRIVATE_KEY, &k.label)?.ok_or_else(|| {
            PkiError::Token(format!(
                "no private key labelled {:?} in token {:?}",
                k.label, k.token
            ))
        })?;
        let (curve, point) = public_point(&session, &k.label)?;
        Ok(Pkcs11Signer {
            session: Mutex::new(session),
            key,
            curve,
            point,
            _ctx: ctx,
        })
    }

    /// Generates a key pair inside the token (the private key is sensitive
    /// and not extractable) and opens it.
    pub fn generate(k: &TokenKey, curve: KeyCurve) -> Result<Pkcs11Signer, PkiError> {
        {
            let (_ctx, session) = open(k)?;
            if find(&session, ObjectClass::PRIVATE_KEY, &k.label)?.is_some() {
                return Err(PkiError::Token(format!(
                    "a key labelled {:?} already exists",
                    k.label
                )));
            }
            let params = curve
                .curve_oid()
                .to_der()
                .map_err(|e| PkiError::encode("curve OID", e))?;
            let label = k.label.as_bytes().to_vec();
            session
                .generate_key_pair(
                    &Mechanism::EccKeyPairGen,
                    &[
                        Attribute::Token(true),
                        Attribute::KeyType(KeyType::EC),
                        Attribute::EcParams(params),
                        Attribute::Verify(true),
                        Attribute::Label(label.clone()),
                    ],
                    &[
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::Sign(true),
                        Attribute::Label(label),
                    ],
                )
                .map_err(tok)?;
        }
        Pkcs11Signer::open(k)
    }
}

impl CaSigner for Pkcs11Signer {
    fn curve(&self) -> KeyCurve {
        self.curve
    }

    fn public_point(&self) -> Vec<u8> {
        self.point.clone()
    }

    fn sign_digest(&self, digest: &[u8]) -> Result<Vec<u8>, PkiError> {
        let s = self
            .session
            .lock()
            .map_err(|_| PkiError::Token("session lock poisoned".into()))?;
        let sig = s.sign(&Mechanism::Ecdsa, self.key, digest).map_err(tok)?;
        if sig.len() != 2 * self.curve.field_len() {
            return Err(PkiError::Token(format!(
                "unexpected CKM_ECDSA signature length {}",
                sig.len()
            )));
        }
        Ok(sig)
    }
}

/// SoftHSM2, the software PKCS#11 token used for development and tests.
pub mod softhsm {
    use crate::PkiError;
    use std::path::{Path, PathBuf};

    /// Where Debian installs the module.
    pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

    /// Creates a token store in `dir`, points this process at it
    /// (`SOFTHSM2_CONF`, which must happen before the module is loaded) and
    /// initialises a token `label` with the given PINs. Returns the
    /// configuration file.
    pub fn init_token(
        dir: &Path,
        label: &str,
        so_pin: &str,
        pin: &str,
    ) -> Result<PathBuf, PkiError> {
        if !Path::new(MODULE).exists() {
            return Err(PkiError::Token(format!("SoftHSM2 is not installed ({MODULE}): run scripts/test.sh, which installs softhsm2")));
        }
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).map_err(|e| PkiError::Token(e.to_string()))?;
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .map_err(|e| PkiError::Token(e.to_string()))?;
        std::env::set_var("SOFTHSM2_CONF", &conf);
        let out = std::process::Command::new("softhsm2-util")
            .args([
                "--init-token",
                "--free",
                "--label",
                label,
                "--so-pin",
                so_pin,
                "--pin",
                pin,
            ])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .map_err(|e| PkiError::Token(format!("softhsm2-util: {e}")))?;
        if !out.status.success() {
            return Err(PkiError::Token(format!(
                "softhsm2-util: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(conf)
    }
}
