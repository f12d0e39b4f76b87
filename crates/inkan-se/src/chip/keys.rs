//! Private keys held in the chip's slots, and the elliptic-curve operations
//! the chip performs with them. A private key never leaves this module in
//! any response: only public keys, signatures and ECDH secrets do.

use crate::wire::Curve;
use crate::wire::Status;
use ecdsa::signature::hazmat::{PrehashVerifier, RandomizedPrehashSigner};
use rand_core::OsRng;
use zeroize::Zeroizing;

/// A private key in a slot. The signing keys zeroize themselves on drop.
#[derive(Clone)]
pub enum PrivateKey {
    /// NIST P-256.
    P256(p256::ecdsa::SigningKey),
    /// NIST P-384.
    P384(p384::ecdsa::SigningKey),
    /// Ed25519 (A120): signs whole messages (pure EdDSA, RFC 8032).
    Ed25519(ed25519_dalek::SigningKey),
    /// X25519 (A120): key establishment only.
    X25519(x25519_dalek::StaticSecret),
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({:?}, ..)", self.curve())
    }
}

impl PrivateKey {
    /// Generates a fresh key from the OS random source.
    pub fn generate(curve: Curve) -> Result<PrivateKey, Status> {
        match curve {
            Curve::P256 => Ok(PrivateKey::P256(p256::ecdsa::SigningKey::random(
                &mut OsRng,
            ))),
            Curve::P384 => Ok(PrivateKey::P384(p384::ecdsa::SigningKey::random(
                &mut OsRng,
            ))),
            Curve::Ed25519 => Ok(PrivateKey::Ed25519(ed25519_dalek::SigningKey::generate(
                &mut OsRng,
            ))),
            Curve::X25519 => Ok(PrivateKey::X25519(
                x25519_dalek::StaticSecret::random_from_rng(OsRng),
            )),
            _ => Err(Status::WRONG_KEY_TYPE),
        }
    }

    /// Builds a key from its big-endian scalar (manufacturing and persistence).
    pub fn from_scalar(curve: Curve, scalar: &[u8]) -> Result<PrivateKey, Status> {
        match curve {
            Curve::P256 => p256::ecdsa::SigningKey::from_slice(scalar)
                .map(PrivateKey::P256)
                .map_err(|_| Status::INVALID_PRIVATE_KEY),
            Curve::P384 => p384::ecdsa::SigningKey::from_slice(scalar)
                .map(PrivateKey::P384)
                .map_err(|_| Status::INVALID_PRIVATE_KEY),
            Curve::Ed25519 => <[u8; 32]>::try_from(scalar)
                .map(|seed| PrivateKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&seed)))
                .map_err(|_| Status::INVALID_PRIVATE_KEY),
            Curve::X25519 => <[u8; 32]>::try_from(scalar)
                .map(|k| PrivateKey::X25519(x25519_dalek::StaticSecret::from(k)))
                .map_err(|_| Status::INVALID_PRIVATE_KEY),
            _ => Err(Status::WRONG_KEY_TYPE),
        }
    }

    /// The scalar, for the chip's own NVM image only.
    pub(crate) fn scalar(&self) -> Zeroizing<Vec<u8>> {
        match self {
            PrivateKey::P256(k) => Zeroizing::new(k.to_bytes().to_vec()),
            PrivateKey::P384(k) => Zeroizing::new(k.to_bytes().to_vec()),
            PrivateKey::Ed25519(k) => Zeroizing::new(k.to_bytes().to_vec()),
            PrivateKey::X25519(k) => Zeroizing::new(k.to_bytes().to_vec()),
        }
    }

    /// The curve.
    pub fn curve(&self) -> Curve {
        match self {
            PrivateKey::P256(_) => Curve::P256,
            PrivateKey::P384(_) => Curve::P384,
            PrivateKey::Ed25519(_) => Curve::Ed25519,
            PrivateKey::X25519(_) => Curve::X25519,
        }
    }

    /// The public key: a SEC1 uncompressed point, or the raw 32 bytes for
    /// Ed25519 and X25519.
    pub fn public_point(&self) -> Vec<u8> {
        match self {
            PrivateKey::P256(k) => k
                .verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
            PrivateKey::P384(k) => k
                .verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
            PrivateKey::Ed25519(k) => k.verifying_key().to_bytes().to_vec(),
            PrivateKey::X25519(k) => x25519_dalek::PublicKey::from(k).as_bytes().to_vec(),
        }
    }

    /// Whether the key signs whole messages (EdDSA) rather than digests.
    pub fn signs_messages(&self) -> bool {
        matches!(self, PrivateKey::Ed25519(_))
    }

    /// ECDSA over a digest computed by the host (hedged: RFC 6979 nonce mixed
    /// with fresh randomness). Returns raw `r ‖ s`.
    pub fn sign_digest(&self, digest: &[u8]) -> Result<Vec<u8>, Status> {
        match self {
            PrivateKey::P256(k) => {
                let sig: p256::ecdsa::Signature = k
                    .sign_prehash_with_rng(&mut OsRng, digest)
                    .map_err(|_| Status::INCONSISTENT_COMMAND_DATA)?;
                Ok(sig.to_bytes().to_vec())
            }
            PrivateKey::P384(k) => {
                let sig: p384::ecdsa::Signature = k
                    .sign_prehash_with_rng(&mut OsRng, digest)
                    .map_err(|_| Status::INCONSISTENT_COMMAND_DATA)?;
                Ok(sig.to_bytes().to_vec())
            }
            // Ed25519 signs the message itself (the chip's "message" field).
            PrivateKey::Ed25519(k) => {
                use ed25519_dalek::Signer;
                Ok(k.sign(digest).to_bytes().to_vec())
            }
            PrivateKey::X25519(_) => Err(Status::WRONG_KEY_USAGE),
        }
    }

    /// ECDH with a peer point (SEC1 uncompressed). Returns the X coordinate.
    /// A point that is not on the curve (or is the identity) is refused with
    /// "invalid public key": the invalid-curve attack stops here.
    pub fn ecdh(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, Status> {
        match self {
            PrivateKey::P256(k) => {
                let pk = p256::PublicKey::from_sec1_bytes(peer)
                    .map_err(|_| Status::INVALID_PUBLIC_KEY)?;
                let s = p256::ecdh::diffie_hellman(k.as_nonzero_scalar(), pk.as_affine());
                Ok(Zeroizing::new(s.raw_secret_bytes().to_vec()))
            }
            PrivateKey::P384(k) => {
                let pk = p384::PublicKey::from_sec1_bytes(peer)
                    .map_err(|_| Status::INVALID_PUBLIC_KEY)?;
                let s = p384::ecdh::diffie_hellman(k.as_nonzero_scalar(), pk.as_affine());
                Ok(Zeroizing::new(s.raw_secret_bytes().to_vec()))
            }
            PrivateKey::X25519(k) => {
                let peer = <[u8; 32]>::try_from(peer).map_err(|_| Status::INVALID_PUBLIC_KEY)?;
                let s = k.diffie_hellman(&x25519_dalek::PublicKey::from(peer));
                // A low-order peer point yields the all-zero secret (RFC
                // 7748 §6.1): refused like an invalid point.
                if !s.was_contributory() {
                    return Err(Status::INVALID_PUBLIC_KEY);
                }
                Ok(Zeroizing::new(s.as_bytes().to_vec()))
            }
            PrivateKey::Ed25519(_) => Err(Status::WRONG_KEY_USAGE),
        }
    }
}

/// Verifies an ECDSA signature (raw `r ‖ s`) over a digest with a public key
/// given as a SEC1 point. `Err(INVALID_PUBLIC_KEY)` when the key is not a
/// valid point; `Ok(false)` for a signature that does not verify (including
/// r or s out of range).
pub fn verify_digest(
    curve: Curve,
    point: &[u8],
    digest: &[u8],
    sig: &[u8],
) -> Result<bool, Status> {
    match curve {
        Curve::P256 => {
            let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map_err(|_| Status::INVALID_PUBLIC_KEY)?;
            let Ok(sig) = p256::ecdsa::Signature::from_slice(sig) else {
                return Ok(false);
            };
            Ok(vk.verify_prehash(digest, &sig).is_ok())
        }
        Curve::P384 => {
            let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map_err(|_| Status::INVALID_PUBLIC_KEY)?;
            let Ok(sig) = p384::ecdsa::Signature::from_slice(sig) else {
                return Ok(false);
            };
            Ok(vk.verify_prehash(digest, &sig).is_ok())
        }
        // Pure Ed25519 over the message, with the strict checks (canonical
        // S, no small-order key or R).
        Curve::Ed25519 => {
            let key = <[u8; 32]>::try_from(point).map_err(|_| Status::INVALID_PUBLIC_KEY)?;
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&key)
                .map_err(|_| Status::INVALID_PUBLIC_KEY)?;
            let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else {
                return Ok(false);
            };
            Ok(vk.verify_strict(digest, &sig).is_ok())
        }
        _ => Err(Status::WRONG_KEY_TYPE),
    }
}

/// Digest lengths the chip accepts for signing and verification: SHA-256,
/// SHA-384 and SHA-512 outputs (a 64-byte digest is truncated to the curve
/// order as ECDSA specifies).
pub fn digest_len_ok(len: usize) -> bool {
    matches!(len, 32 | 48 | 64)
}
