//! The cloud's EDHOC cryptography on aws-lc-rs (the responder's hot path:
//! its ephemeral key and ECDH, its signature, the device's signature
//! checked), behind [`inkan_proto::edhoc::crypto::Provider`] so the same
//! conformance traces run through it and through the pure-Rust provider.

use inkan_proto::edhoc::crypto::{EphemeralKey, Provider, SignatureKey};
use inkan_proto::edhoc::{EdhocError, Suite};
use zeroize::Zeroizing;

use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey};
use aws_lc_rs::signature;

/// The aws-lc-rs provider.
#[derive(Clone, Copy, Debug, Default)]
pub struct AwsLc;

fn algorithm(suite: Suite) -> &'static agreement::Algorithm {
    match suite {
        Suite::X25519EdDsa => &agreement::X25519,
        Suite::P256Es256 => &agreement::ECDH_P256,
    }
}

/// An ephemeral key in aws-lc-rs.
struct Ephemeral {
    suite: Suite,
    key: PrivateKey,
}

impl EphemeralKey for Ephemeral {
    fn public(&self) -> Vec<u8> {
        let Ok(p) = self.key.compute_public_key() else {
            return Vec::new();
        };
        let p = p.as_ref();
        match self.suite {
            Suite::X25519EdDsa => p.to_vec(),
            // EDHOC sends a P-256 key as its x-coordinate (RFC 9528 §3.7).
            Suite::P256Es256 => p.get(1..33).map(<[u8]>::to_vec).unwrap_or_default(),
        }
    }

    fn agree(self: Box<Self>, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, EdhocError> {
        let peer = match self.suite {
            Suite::X25519EdDsa => {
                if peer.len() != 32 {
                    return Err(EdhocError::InvalidEphemeralKey);
                }
                peer.to_vec()
            }
            // Either y gives the same x-coordinate of the shared point: the
            // compressed form with an even y is as good as any.
            Suite::P256Es256 => {
                if peer.len() != 32 {
                    return Err(EdhocError::InvalidEphemeralKey);
                }
                let mut c = Vec::with_capacity(33);
                c.push(0x02);
                c.extend_from_slice(peer);
                c
            }
        };
        let shared = agreement::agree(
            &self.key,
            UnparsedPublicKey::new(algorithm(self.suite), &peer),
            EdhocError::InvalidEphemeralKey,
            |s| Ok(Zeroizing::new(s.to_vec())),
        )?;
        // An all-zero X25519 result means a low-order peer point (for
        // P-256 a zero x-coordinate is a shared secret like any other).
        if self.suite == Suite::X25519EdDsa && shared.iter().all(|b| *b == 0) {
            return Err(EdhocError::InvalidEphemeralKey);
        }
        Ok(shared)
    }
}

/// A signature key in aws-lc-rs.
enum Signer {
    Ed25519(signature::Ed25519KeyPair),
    P256(signature::EcdsaKeyPair),
}

impl SignatureKey for Signer {
    fn sign(&mut self, msg: &[u8]) -> Result<Vec<u8>, EdhocError> {
        match self {
            Signer::Ed25519(k) => Ok(k.sign(msg).as_ref().to_vec()),
            Signer::P256(k) => k
                .sign(&aws_lc_rs::rand::SystemRandom::new(), msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| EdhocError::Key("ES256 signing failed".into())),
        }
    }
}

impl Provider for AwsLc {
    fn name(&self) -> &'static str {
        "aws-lc-rs"
    }

    fn ephemeral(&self, suite: Suite) -> Result<Box<dyn EphemeralKey>, EdhocError> {
        let key = PrivateKey::generate(algorithm(suite))
            .map_err(|_| EdhocError::Key("ephemeral key generation failed".into()))?;
        Ok(Box::new(Ephemeral { suite, key }))
    }

    fn ephemeral_from_bytes(
        &self,
        suite: Suite,
        private: &[u8],
    ) -> Result<Box<dyn EphemeralKey>, EdhocError> {
        let key = PrivateKey::from_private_key(algorithm(suite), private)
            .map_err(|_| EdhocError::Key("invalid ephemeral private key".into()))?;
        Ok(Box::new(Ephemeral { suite, key }))
    }

    fn signer(
        &self,
        suite: Suite,
        private: &[u8],
    ) -> Result<Box<dyn SignatureKey + Send>, EdhocError> {
        Ok(Box::new(match suite {
            Suite::X25519EdDsa => Signer::Ed25519(
                signature::Ed25519KeyPair::from_seed_unchecked(private)
                    .map_err(|_| EdhocError::Key("invalid Ed25519 seed".into()))?,
            ),
            Suite::P256Es256 => {
                // aws-lc-rs takes the scalar with its public point.
                let sk = p256::SecretKey::from_slice(private)
                    .map_err(|_| EdhocError::Key("invalid P-256 scalar".into()))?;
                use p256::elliptic_curve::sec1::ToEncodedPoint;
                let point = sk.public_key().to_encoded_point(false);
                let pair = signature::EcdsaKeyPair::from_private_key_and_public_key(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    private,
                    point.as_bytes(),
                )
                .map_err(|_| EdhocError::Key("invalid P-256 key".into()))?;
                Signer::P256(pair)
            }
        }))
    }

    fn verify(&self, suite: Suite, public_key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
        let alg: &dyn signature::VerificationAlgorithm = match suite {
            Suite::X25519EdDsa => &signature::ED25519,
            Suite::P256Es256 => &signature::ECDSA_P256_SHA256_FIXED,
        };
        signature::UnparsedPublicKey::new(alg, public_key)
            .verify(msg, sig)
            .is_ok()
    }
}
