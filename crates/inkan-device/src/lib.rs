//! The device agent's link between the secure element and the device
//! protocol: EDHOC's ephemeral key lives in the chip's single-use slot, the
//! shared secret comes from the chip's Establish Key, and Signature_3 is
//! made by the chip's Generate Signature over the hash of the
//! Sig_structure. The device's certificate and the cloud key it pins are
//! read from the chip's zones.

use inkan_proto::edhoc::crypto::{p256_point_from_x, EphemeralKey, SignatureKey};
use inkan_proto::edhoc::EdhocError;
use inkan_se::transport::Transport;
use inkan_se::{Curve, Driver};
use sha2::Digest;
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

/// A driver shared by the EDHOC key objects of one exchange.
pub type SharedDriver<T> = Arc<Mutex<Driver<T>>>;

/// The slot of the device key (certified at personalization).
pub const DEVICE_KEY_SLOT: u8 = 0;
/// Zone of the device certificate.
pub const CERT_ZONE: u8 = 0;
/// Zone of the pinned cloud authentication key.
pub const CLOUD_KEY_ZONE: u8 = 1;

fn key_err(e: impl std::fmt::Display) -> EdhocError {
    EdhocError::Key(format!("secure element: {e}"))
}

/// The EDHOC ephemeral key (suite 2), generated in the chip's ephemeral
/// slot; the chip erases it after its one ECDH.
pub struct SeEphemeral<T: Transport> {
    driver: SharedDriver<T>,
    x: Vec<u8>,
}

impl<T: Transport + 'static> SeEphemeral<T> {
    /// Has the chip generate the key; only the public key leaves it.
    pub fn generate(driver: SharedDriver<T>) -> Result<Self, EdhocError> {
        let point = {
            let mut d = driver.lock().map_err(|_| key_err("driver lock poisoned"))?;
            d.generate_ephemeral_key(Curve::P256).map_err(key_err)?
        };
        let x = point
            .get(1..33)
            .ok_or_else(|| key_err("short public key"))?
            .to_vec();
        Ok(SeEphemeral { driver, x })
    }
}

impl<T: Transport + 'static> EphemeralKey for SeEphemeral<T> {
    fn public(&self) -> Vec<u8> {
        self.x.clone()
    }

    fn agree(self: Box<Self>, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, EdhocError> {
        let point = p256_point_from_x(peer).ok_or(EdhocError::InvalidEphemeralKey)?;
        let mut d = self
            .driver
            .lock()
            .map_err(|_| key_err("driver lock poisoned"))?;
        d.establish_key(inkan_se::driver::EPHEMERAL_SLOT, Curve::P256, &point)
            .map_err(|e| {
                if e.status() == Some(inkan_se::Status::INVALID_PUBLIC_KEY) {
                    EdhocError::InvalidEphemeralKey
                } else {
                    key_err(e)
                }
            })
    }
}

/// The device key in slot 0, signing ES256: SHA-256 of the Sig_structure on
/// the host, ECDSA in the chip.
pub struct SeSigner<T: Transport> {
    driver: SharedDriver<T>,
}

impl<T: Transport> SeSigner<T> {
    /// A signer over the chip's device key.
    pub fn new(driver: SharedDriver<T>) -> Self {
        SeSigner { driver }
    }
}

impl<T: Transport> SignatureKey for SeSigner<T> {
    fn sign(&mut self, msg: &[u8]) -> Result<Vec<u8>, EdhocError> {
        let digest = sha2::Sha256::digest(msg);
        let mut d = self
            .driver
            .lock()
            .map_err(|_| key_err("driver lock poisoned"))?;
        d.sign_with_curve(DEVICE_KEY_SLOT, Curve::P256, &digest)
            .map_err(key_err)
    }
}

/// What the device reads from its chip to authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The device certificate (DER), from zone 0.
    pub certificate: Vec<u8>,
    /// The pinned cloud authentication key (SubjectPublicKeyInfo DER), from zone 1.
    pub cloud_key_spki: Vec<u8>,
}

/// Reads a DER object (SEQUENCE with a definite length) from the start of a zone.
fn read_der<T: Transport>(d: &mut Driver<T>, zone: u8) -> Result<Vec<u8>, DeviceError> {
    let head = d.read_zone(zone, 0, 4)?;
    let len = match head.as_slice() {
        [0x30, 0x82, a, b] => 4 + usize::from(u16::from_be_bytes([*a, *b])),
        [0x30, 0x81, a, _] => 3 + usize::from(*a),
        [0x30, n, _, _] if *n < 0x80 => 2 + usize::from(*n),
        _ => {
            return Err(DeviceError::Zone {
                zone,
                reason: "does not start with a DER SEQUENCE",
            })
        }
    };
    Ok(d.read_zone(zone, 0, len)?)
}

/// Reads the device certificate and the pinned cloud key from the chip.
pub fn read_identity<T: Transport>(d: &mut Driver<T>) -> Result<Identity, DeviceError> {
    Ok(Identity {
        certificate: read_der(d, CERT_ZONE)?,
        cloud_key_spki: read_der(d, CLOUD_KEY_ZONE)?,
    })
}

/// A device-side failure.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The chip refused or the bus failed.
    #[error("secure element: {0}")]
    Chip(#[from] inkan_se::DriverError),
    /// A zone does not hold what personalization should have put there.
    #[error("zone {zone}: {reason}")]
    Zone {
        /// The zone.
        zone: u8,
        /// What is wrong.
        reason: &'static str,
    },
}
