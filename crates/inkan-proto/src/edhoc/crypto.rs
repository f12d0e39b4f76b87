//! The key operations EDHOC needs, behind traits so that a secure element
//! can do the initiator's: an ephemeral key used for exactly one ECDH, and
//! a signature key. A responder in software takes all of its cryptography
//! from one [`Provider`]: [`RustCrypto`] here (pure Rust, the device side's
//! crates); the cloud plugs in its own (aws-lc-rs). Both run the same
//! conformance traces.

use super::{EdhocError, Suite};
use zeroize::Zeroizing;

/// An ephemeral Diffie-Hellman key, used once.
pub trait EphemeralKey: Send {
    /// The public key as sent: the X25519 key, or the P-256 x-coordinate.
    fn public(&self) -> Vec<u8>;
    /// ECDH with the peer's public key as sent; the key is consumed.
    fn agree(self: Box<Self>, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, EdhocError>;
}

/// A signature key: EdDSA over the message (suite 0), or ES256 — SHA-256
/// then ECDSA, raw `r ‖ s` (suite 2).
pub trait SignatureKey {
    /// Signs a COSE Sig_structure.
    fn sign(&mut self, msg: &[u8]) -> Result<Vec<u8>, EdhocError>;
}

/// Where a software responder gets its cryptography: fresh and given
/// ephemeral keys, signature keys from their private bytes, and signature
/// verification, for both suites.
pub trait Provider: Send + Sync {
    /// The provider's name (for benchmarks and logs).
    fn name(&self) -> &'static str;
    /// A fresh ephemeral key for the suite (an error only when the
    /// system's randomness fails).
    fn ephemeral(&self, suite: Suite) -> Result<Box<dyn EphemeralKey>, EdhocError>;
    /// An ephemeral key from its private bytes (conformance traces).
    fn ephemeral_from_bytes(
        &self,
        suite: Suite,
        private: &[u8],
    ) -> Result<Box<dyn EphemeralKey>, EdhocError>;
    /// A signature key from its private bytes (Ed25519 seed or P-256
    /// scalar).
    fn signer(
        &self,
        suite: Suite,
        private: &[u8],
    ) -> Result<Box<dyn SignatureKey + Send>, EdhocError>;
    /// Verifies a COSE signature made with the suite's algorithm.
    fn verify(&self, suite: Suite, public_key: &[u8], msg: &[u8], sig: &[u8]) -> bool;
}

/// The pure-Rust provider (RustCrypto p256, x25519-dalek, ed25519-dalek).
#[derive(Clone, Copy, Debug, Default)]
pub struct RustCrypto;

impl Provider for RustCrypto {
    fn name(&self) -> &'static str {
        "RustCrypto"
    }

    fn ephemeral(&self, suite: Suite) -> Result<Box<dyn EphemeralKey>, EdhocError> {
        Ok(Box::new(SoftwareEphemeral::generate(suite)))
    }

    fn ephemeral_from_bytes(
        &self,
        suite: Suite,
        private: &[u8],
    ) -> Result<Box<dyn EphemeralKey>, EdhocError> {
        Ok(Box::new(SoftwareEphemeral::from_bytes(suite, private)?))
    }

    fn signer(
        &self,
        suite: Suite,
        private: &[u8],
    ) -> Result<Box<dyn SignatureKey + Send>, EdhocError> {
        Ok(Box::new(SoftwareSigner::from_bytes(suite, private)?))
    }

    fn verify(&self, suite: Suite, public_key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
        verify(suite, public_key, msg, sig)
    }
}

/// A P-256 point from its x-coordinate (the compact representation of
/// RFC 9528 §3.7; either y gives the same ECDH x-coordinate), as SEC1
/// uncompressed bytes. `None` if x is not on the curve.
pub fn p256_point_from_x(x: &[u8]) -> Option<Vec<u8>> {
    if x.len() != 32 {
        return None;
    }
    let mut c = [0u8; 33];
    c[0] = 0x02;
    c[1..].copy_from_slice(x);
    let pk = p256::PublicKey::from_sec1_bytes(&c).ok()?;
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    Some(pk.to_encoded_point(false).as_bytes().to_vec())
}

/// A software ephemeral key.
pub enum SoftwareEphemeral {
    /// X25519.
    X25519(x25519_dalek::StaticSecret),
    /// P-256.
    P256(p256::SecretKey),
}

impl SoftwareEphemeral {
    /// A fresh key for the suite.
    pub fn generate(suite: Suite) -> SoftwareEphemeral {
        match suite {
            Suite::X25519EdDsa => SoftwareEphemeral::X25519(
                x25519_dalek::StaticSecret::random_from_rng(rand_core::OsRng),
            ),
            Suite::P256Es256 => {
                SoftwareEphemeral::P256(p256::SecretKey::random(&mut rand_core::OsRng))
            }
        }
    }

    /// A key from its private bytes (conformance tests reproduce traces).
    pub fn from_bytes(suite: Suite, private: &[u8]) -> Result<SoftwareEphemeral, EdhocError> {
        match suite {
            Suite::X25519EdDsa => {
                let b: [u8; 32] = private
                    .try_into()
                    .map_err(|_| EdhocError::Key("X25519 key must be 32 bytes".into()))?;
                Ok(SoftwareEphemeral::X25519(x25519_dalek::StaticSecret::from(
                    b,
                )))
            }
            Suite::P256Es256 => Ok(SoftwareEphemeral::P256(
                p256::SecretKey::from_slice(private)
                    .map_err(|_| EdhocError::Key("invalid P-256 scalar".into()))?,
            )),
        }
    }
}

impl EphemeralKey for SoftwareEphemeral {
    fn public(&self) -> Vec<u8> {
        match self {
            SoftwareEphemeral::X25519(s) => x25519_dalek::PublicKey::from(s).as_bytes().to_vec(),
            SoftwareEphemeral::P256(s) => {
                use p256::elliptic_curve::sec1::ToEncodedPoint;
                s.public_key()
                    .to_encoded_point(false)
                    .x()
                    .map(|x| x.to_vec())
                    .unwrap_or_default()
            }
        }
    }

    fn agree(self: Box<Self>, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, EdhocError> {
        match *self {
            SoftwareEphemeral::X25519(s) => {
                let p: [u8; 32] = peer
                    .try_into()
                    .map_err(|_| EdhocError::InvalidEphemeralKey)?;
                let shared = s.diffie_hellman(&x25519_dalek::PublicKey::from(p));
                if !shared.was_contributory() {
                    return Err(EdhocError::InvalidEphemeralKey);
                }
                Ok(Zeroizing::new(shared.as_bytes().to_vec()))
            }
            SoftwareEphemeral::P256(s) => {
                let point = p256_point_from_x(peer).ok_or(EdhocError::InvalidEphemeralKey)?;
                let pk = p256::PublicKey::from_sec1_bytes(&point)
                    .map_err(|_| EdhocError::InvalidEphemeralKey)?;
                let shared = p256::ecdh::diffie_hellman(s.to_nonzero_scalar(), pk.as_affine());
                Ok(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
            }
        }
    }
}

/// A software signature key.
pub enum SoftwareSigner {
    /// Ed25519.
    Ed25519(ed25519_dalek::SigningKey),
    /// P-256 (ES256).
    P256(p256::ecdsa::SigningKey),
}

impl SoftwareSigner {
    /// A fresh key for the suite.
    pub fn generate(suite: Suite) -> SoftwareSigner {
        match suite {
            Suite::X25519EdDsa => {
                SoftwareSigner::Ed25519(ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng))
            }
            Suite::P256Es256 => {
                SoftwareSigner::P256(p256::ecdsa::SigningKey::random(&mut rand_core::OsRng))
            }
        }
    }

    /// From private bytes (Ed25519 seed or P-256 scalar).
    pub fn from_bytes(suite: Suite, private: &[u8]) -> Result<SoftwareSigner, EdhocError> {
        match suite {
            Suite::X25519EdDsa => {
                let b: [u8; 32] = private
                    .try_into()
                    .map_err(|_| EdhocError::Key("Ed25519 seed must be 32 bytes".into()))?;
                Ok(SoftwareSigner::Ed25519(
                    ed25519_dalek::SigningKey::from_bytes(&b),
                ))
            }
            Suite::P256Es256 => Ok(SoftwareSigner::P256(
                p256::ecdsa::SigningKey::from_slice(private)
                    .map_err(|_| EdhocError::Key("invalid P-256 scalar".into()))?,
            )),
        }
    }

    /// The public key, as a credential carries it (32 bytes Ed25519 or a
    /// SEC1 uncompressed P-256 point).
    pub fn public_key(&self) -> Vec<u8> {
        match self {
            SoftwareSigner::Ed25519(k) => k.verifying_key().to_bytes().to_vec(),
            SoftwareSigner::P256(k) => k
                .verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
        }
    }
}

impl SignatureKey for SoftwareSigner {
    fn sign(&mut self, msg: &[u8]) -> Result<Vec<u8>, EdhocError> {
        use ecdsa::signature::Signer;
        Ok(match self {
            SoftwareSigner::Ed25519(k) => k.sign(msg).to_bytes().to_vec(),
            SoftwareSigner::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign(msg);
                s.to_bytes().to_vec()
            }
        })
    }
}

/// Verifies a COSE signature made with the suite's algorithm.
pub fn verify(suite: Suite, public_key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    use ecdsa::signature::Verifier;
    match suite {
        Suite::X25519EdDsa => {
            let (Ok(pk), Ok(s)) = (<[u8; 32]>::try_from(public_key), <[u8; 64]>::try_from(sig))
            else {
                return false;
            };
            ed25519_dalek::VerifyingKey::from_bytes(&pk)
                .map(|vk| {
                    vk.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&s))
                        .is_ok()
                })
                .unwrap_or(false)
        }
        Suite::P256Es256 => {
            let (Ok(vk), Ok(s)) = (
                p256::ecdsa::VerifyingKey::from_sec1_bytes(public_key),
                p256::ecdsa::Signature::from_slice(sig),
            ) else {
                return false;
            };
            vk.verify(msg, &s).is_ok()
        }
    }
}
