//! The CA key behind one interface: an in-memory software key (saved as an
//! encrypted PKCS#8 file for development), or a key in a PKCS#11 token
//! ([`crate::pkcs11`]). Every signer takes a digest and returns raw `r ‖ s`;
//! the DER form certificates need is derived here.

use crate::PkiError;
use const_oid::ObjectIdentifier;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use rand_core::OsRng;
use sha2::Digest;
use zeroize::Zeroizing;

/// ecdsa-with-SHA256 (RFC 5758).
pub const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
/// ecdsa-with-SHA384 (RFC 5758).
pub const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
/// id-ecPublicKey.
pub const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// secp256r1.
pub const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// secp384r1.
pub const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// id-Ed25519 (RFC 8410): the algorithm of an Ed25519 public key.
pub const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// Whether `point` is an Ed25519 public key (32 bytes, a valid point).
pub fn is_ed25519_key(point: &[u8]) -> bool {
    <[u8; 32]>::try_from(point)
        .ok()
        .is_some_and(|k| ed25519_dalek::VerifyingKey::from_bytes(&k).is_ok())
}

/// The curves inkan issues and signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum KeyCurve {
    /// NIST P-256 with SHA-256 (the default).
    P256,
    /// NIST P-384 with SHA-384.
    P384,
}

impl KeyCurve {
    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            KeyCurve::P256 => "p256",
            KeyCurve::P384 => "p384",
        }
    }

    /// Parses a CLI name.
    pub fn from_name(s: &str) -> Option<KeyCurve> {
        match s.to_ascii_lowercase().as_str() {
            "p256" | "p-256" => Some(KeyCurve::P256),
            "p384" | "p-384" => Some(KeyCurve::P384),
            _ => None,
        }
    }

    /// The hash that goes with the curve.
    pub fn digest(self, msg: &[u8]) -> Vec<u8> {
        match self {
            KeyCurve::P256 => sha2::Sha256::digest(msg).to_vec(),
            KeyCurve::P384 => sha2::Sha384::digest(msg).to_vec(),
        }
    }

    /// The X.509 signature algorithm.
    pub fn signature_oid(self) -> ObjectIdentifier {
        match self {
            KeyCurve::P256 => ECDSA_SHA256,
            KeyCurve::P384 => ECDSA_SHA384,
        }
    }

    /// The named-curve OID.
    pub fn curve_oid(self) -> ObjectIdentifier {
        match self {
            KeyCurve::P256 => SECP256R1,
            KeyCurve::P384 => SECP384R1,
        }
    }

    /// Bytes of one coordinate or scalar.
    pub fn field_len(self) -> usize {
        match self {
            KeyCurve::P256 => 32,
            KeyCurve::P384 => 48,
        }
    }

    /// The COSE algorithm (ES256 / ES384).
    pub fn cose_alg(self) -> coset::iana::Algorithm {
        match self {
            KeyCurve::P256 => coset::iana::Algorithm::ES256,
            KeyCurve::P384 => coset::iana::Algorithm::ES384,
        }
    }

    /// The curve of a SEC1 uncompressed point, by its length.
    pub fn of_point(point: &[u8]) -> Option<KeyCurve> {
        match (point.first(), point.len()) {
            (Some(4), 65) => Some(KeyCurve::P256),
            (Some(4), 97) => Some(KeyCurve::P384),
            _ => None,
        }
    }
}

/// A key that signs for a CA, a manifest or a firmware release.
pub trait CaSigner: Send + Sync {
    /// The key's curve.
    fn curve(&self) -> KeyCurve;
    /// The public key as a SEC1 uncompressed point.
    fn public_point(&self) -> Vec<u8>;
    /// ECDSA over a digest; raw `r ‖ s`.
    fn sign_digest(&self, digest: &[u8]) -> Result<Vec<u8>, PkiError>;
}

/// Hashes `msg` with the signer's hash and signs; raw `r ‖ s` (COSE form).
pub fn sign_raw(signer: &dyn CaSigner, msg: &[u8]) -> Result<Vec<u8>, PkiError> {
    signer.sign_digest(&signer.curve().digest(msg))
}

/// Hashes and signs; DER `Ecdsa-Sig-Value` (X.509 form).
pub fn sign_der(signer: &dyn CaSigner, msg: &[u8]) -> Result<Vec<u8>, PkiError> {
    let raw = sign_raw(signer, msg)?;
    raw_to_der(signer.curve(), &raw)
}

/// Converts raw `r ‖ s` to DER.
pub fn raw_to_der(curve: KeyCurve, raw: &[u8]) -> Result<Vec<u8>, PkiError> {
    Ok(match curve {
        KeyCurve::P256 => p256::ecdsa::Signature::from_slice(raw)
            .map_err(|e| PkiError::malformed("signature", e))?
            .to_der()
            .as_bytes()
            .to_vec(),
        KeyCurve::P384 => p384::ecdsa::Signature::from_slice(raw)
            .map_err(|e| PkiError::malformed("signature", e))?
            .to_der()
            .as_bytes()
            .to_vec(),
    })
}

/// SubjectPublicKeyInfo DER of a SEC1 point.
pub fn spki_der(point: &[u8]) -> Result<Vec<u8>, PkiError> {
    let der = match KeyCurve::of_point(point) {
        Some(KeyCurve::P256) => p256::PublicKey::from_sec1_bytes(point)
            .map_err(|e| PkiError::malformed("public key", e))?
            .to_public_key_der(),
        Some(KeyCurve::P384) => p384::PublicKey::from_sec1_bytes(point)
            .map_err(|e| PkiError::malformed("public key", e))?
            .to_public_key_der(),
        None if is_ed25519_key(point) => {
            return der::Encode::to_der(&spki_of(point)?)
                .map_err(|e| PkiError::encode("public key", e))
        }
        None => {
            return Err(PkiError::malformed(
                "public key",
                "not an uncompressed P-256 or P-384 point",
            ))
        }
    };
    Ok(der
        .map_err(|e| PkiError::encode("public key", e))?
        .as_bytes()
        .to_vec())
}

/// The SEC1 point of a P-256 or P-384 SubjectPublicKeyInfo (DER).
pub fn point_of_spki(spki: &[u8]) -> Result<Vec<u8>, PkiError> {
    use p256::pkcs8::DecodePublicKey;
    if let Ok(k) = p256::PublicKey::from_public_key_der(spki) {
        return Ok(k.to_sec1_bytes().to_vec());
    }
    p384::PublicKey::from_public_key_der(spki)
        .map(|k| k.to_sec1_bytes().to_vec())
        .map_err(|e| PkiError::malformed("public key", e))
}

/// Verifies a raw `r ‖ s` ECDSA signature over `msg` with aws-lc-rs (the
/// verify path of the cloud).
pub fn verify_raw(point: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    use aws_lc_rs::signature::{
        UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ED25519,
    };
    if point.len() == 32 {
        // An Ed25519 key: pure EdDSA over the message.
        return UnparsedPublicKey::new(&ED25519, point)
            .verify(msg, sig)
            .is_ok();
    }
    match KeyCurve::of_point(point) {
        Some(KeyCurve::P256) => UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
            .verify(msg, sig)
            .is_ok(),
        Some(KeyCurve::P384) => UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, point)
            .verify(msg, sig)
            .is_ok(),
        None => false,
    }
}

/// A software key. For development and tests; production CA keys belong in
/// a token ([`crate::pkcs11::Pkcs11Signer`]).
#[derive(Clone)]
pub enum SoftwareKey {
    /// P-256.
    P256(p256::ecdsa::SigningKey),
    /// P-384.
    P384(p384::ecdsa::SigningKey),
}

impl std::fmt::Debug for SoftwareKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SoftwareKey({:?}, ..)", self.curve())
    }
}

impl SoftwareKey {
    /// A fresh key.
    pub fn generate(curve: KeyCurve) -> SoftwareKey {
        match curve {
            KeyCurve::P256 => SoftwareKey::P256(p256::ecdsa::SigningKey::random(&mut OsRng)),
            KeyCurve::P384 => SoftwareKey::P384(p384::ecdsa::SigningKey::random(&mut OsRng)),
        }
    }

    /// Encrypted PKCS#8 PEM (PBES2: scrypt and AES-256-CBC).
    pub fn to_encrypted_pem(&self, passphrase: &[u8]) -> Result<Zeroizing<String>, PkiError> {
        let r = match self {
            SoftwareKey::P256(k) => {
                k.to_pkcs8_encrypted_pem(&mut OsRng, passphrase, der::pem::LineEnding::LF)
            }
            SoftwareKey::P384(k) => {
                k.to_pkcs8_encrypted_pem(&mut OsRng, passphrase, der::pem::LineEnding::LF)
            }
        };
        r.map_err(|e| PkiError::encode("encrypted PKCS#8", e))
    }

    /// Reads an encrypted PKCS#8 PEM.
    pub fn from_encrypted_pem(pem: &str, passphrase: &[u8]) -> Result<SoftwareKey, PkiError> {
        if !pem.contains("ENCRYPTED PRIVATE KEY") {
            return Err(PkiError::malformed(
                "key file",
                "not an encrypted PKCS#8 PEM (ENCRYPTED PRIVATE KEY)",
            ));
        }
        if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_encrypted_pem(pem, passphrase) {
            return Ok(SoftwareKey::P256(k));
        }
        if let Ok(k) = p384::ecdsa::SigningKey::from_pkcs8_encrypted_pem(pem, passphrase) {
            return Ok(SoftwareKey::P384(k));
        }
        Err(PkiError::Decrypt)
    }

    /// Writes the key encrypted to `path` (mode 0600), never overwriting.
    pub fn save(&self, path: &std::path::Path, passphrase: &[u8]) -> Result<(), PkiError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let pem = self.to_encrypted_pem(passphrase)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| PkiError::encode("key file", format!("{}: {e}", path.display())))?;
        f.write_all(pem.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| PkiError::encode("key file", format!("{}: {e}", path.display())))
    }

    /// Reads a key saved by [`SoftwareKey::save`].
    pub fn load(path: &std::path::Path, passphrase: &[u8]) -> Result<SoftwareKey, PkiError> {
        let pem =
            Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                PkiError::malformed("key file", format!("{}: {e}", path.display()))
            })?);
        SoftwareKey::from_encrypted_pem(&pem, passphrase)
    }
}

impl CaSigner for SoftwareKey {
    fn curve(&self) -> KeyCurve {
        match self {
            SoftwareKey::P256(_) => KeyCurve::P256,
            SoftwareKey::P384(_) => KeyCurve::P384,
        }
    }

    fn public_point(&self) -> Vec<u8> {
        match self {
            SoftwareKey::P256(k) => k
                .verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
            SoftwareKey::P384(k) => k
                .verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
        }
    }

    fn sign_digest(&self, digest: &[u8]) -> Result<Vec<u8>, PkiError> {
        use ecdsa::signature::hazmat::RandomizedPrehashSigner;
        match self {
            SoftwareKey::P256(k) => {
                let s: p256::ecdsa::Signature = k
                    .sign_prehash_with_rng(&mut OsRng, digest)
                    .map_err(|e| PkiError::encode("signature", e))?;
                Ok(s.to_bytes().to_vec())
            }
            SoftwareKey::P384(k) => {
                let s: p384::ecdsa::Signature = k
                    .sign_prehash_with_rng(&mut OsRng, digest)
                    .map_err(|e| PkiError::encode("signature", e))?;
                Ok(s.to_bytes().to_vec())
            }
        }
    }
}

/// The SubjectPublicKeyInfo of a public key: an Ed25519 key (RFC 8410),
/// or a P-256/P-384 point with its named curve.
pub(crate) fn spki_of(point: &[u8]) -> Result<spki::SubjectPublicKeyInfoOwned, PkiError> {
    if is_ed25519_key(point) {
        // RFC 8410 §3: the algorithm alone, parameters absent.
        return Ok(spki::SubjectPublicKeyInfoOwned {
            algorithm: spki::AlgorithmIdentifierOwned {
                oid: ED25519,
                parameters: None,
            },
            subject_public_key: der::asn1::BitString::from_bytes(point)
                .map_err(|e| PkiError::encode("SPKI", e))?,
        });
    }
    let curve = KeyCurve::of_point(point).ok_or_else(|| {
        PkiError::malformed("public key", "not a P-256/P-384 point or an Ed25519 key")
    })?;
    Ok(spki::SubjectPublicKeyInfoOwned {
        algorithm: spki::AlgorithmIdentifierOwned {
            oid: EC_PUBLIC_KEY,
            parameters: Some(
                der::asn1::Any::encode_from(&curve.curve_oid())
                    .map_err(|e| PkiError::encode("SPKI", e))?,
            ),
        },
        subject_public_key: der::asn1::BitString::from_bytes(point)
            .map_err(|e| PkiError::encode("SPKI", e))?,
    })
}
