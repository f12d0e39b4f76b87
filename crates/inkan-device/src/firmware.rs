//! The boot check: before a device runs an image, its secure element
//! verifies the firmware manifest against the OEM key pinned in zone 3, the
//! manifest must be for this device's class (its family), its security
//! version at least the one the chip's one-way counter records (zone 5),
//! and the image must hash to the manifest's digest.

use crate::{read_der, read_identity, DeviceError, SharedDriver};
use inkan_pki::firmware::FirmwareManifest;
use inkan_pki::KeyCurve;
use inkan_se::transport::Transport;
use inkan_se::Curve;
use sha2::Digest;
use std::time::{Duration, Instant};

/// Zone of the pinned firmware key.
pub const FIRMWARE_KEY_ZONE: u8 = 3;
/// The one-way counter zone holding the confirmed security version: the
/// counter only goes down, and `u32::MAX - counter` is the version.
pub const FW_COUNTER_ZONE: u8 = 5;

/// Why a device refuses to boot (or install) an image.
#[derive(Debug, thiserror::Error)]
pub enum BootRefused {
    /// The manifest does not parse.
    #[error("malformed firmware manifest: {0}")]
    Manifest(String),
    /// The chip says the signature is not the pinned firmware key's.
    #[error(
        "manifest signature does not verify with the firmware key pinned in the secure element"
    )]
    Signature,
    /// For another device class.
    #[error("manifest for class {manifest:?}, this device is {device:?}")]
    Class {
        /// The manifest's class.
        manifest: String,
        /// The device's family.
        device: String,
    },
    /// Below the confirmed security version.
    #[error("security version {manifest} is below the device's {device} (downgrade refused)")]
    Downgrade {
        /// The manifest's security version.
        manifest: u32,
        /// The version the chip's counter records.
        device: u32,
    },
    /// The image is not the one the manifest describes.
    #[error(
        "image size {found} differs from the manifest's {expected} (truncated or padded image)"
    )]
    Size {
        /// The manifest's size.
        expected: u64,
        /// The image's.
        found: u64,
    },
    /// The image hashes to something else.
    #[error("image digest does not match the manifest (tampered or corrupt image)")]
    Digest,
    /// The chip or its zones.
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// A check that passed, with where its time went.
#[derive(Debug, Clone)]
pub struct BootOk {
    /// The manifest.
    pub manifest: FirmwareManifest,
    /// The security version the chip recorded before.
    pub device_security_version: u32,
    /// Hashing the image on the host.
    pub hash_time: Duration,
    /// The chip's signature check (digest of the manifest and Verify
    /// Signature).
    pub verify_time: Duration,
}

fn chip<E: Into<DeviceError>>(e: E) -> BootRefused {
    BootRefused::Device(e.into())
}

/// The security version the chip's one-way counter records.
pub fn security_version<T: Transport>(d: &mut inkan_se::Driver<T>) -> Result<u32, DeviceError> {
    let (counter, _) = d.read_counter(FW_COUNTER_ZONE, 0, 0)?;
    Ok(u32::MAX - counter)
}

/// Checks `image` against the signed `manifest` with the chip.
pub fn boot_check<T: Transport>(
    driver: &SharedDriver<T>,
    image: &[u8],
    manifest: &[u8],
) -> Result<BootOk, BootRefused> {
    let opened =
        inkan_pki::firmware::open(manifest).map_err(|e| BootRefused::Manifest(e.to_string()))?;
    let mut d = driver.lock().map_err(|_| {
        BootRefused::Device(DeviceError::Zone {
            zone: FIRMWARE_KEY_ZONE,
            reason: "driver lock poisoned",
        })
    })?;
    // 1. The signature, by the chip, against the pinned key.
    let t = Instant::now();
    let spki = read_der(&mut d, FIRMWARE_KEY_ZONE)?;
    let point = inkan_pki::signer::point_of_spki(&spki).map_err(|_| DeviceError::Zone {
        zone: FIRMWARE_KEY_ZONE,
        reason: "not a P-256 or P-384 public key",
    })?;
    let (curve, digest) = match KeyCurve::of_point(&point) {
        Some(KeyCurve::P256) => (Curve::P256, sha2::Sha256::digest(&opened.tbs).to_vec()),
        Some(KeyCurve::P384) => (Curve::P384, sha2::Sha384::digest(&opened.tbs).to_vec()),
        None => return Err(BootRefused::Signature),
    };
    if Some(opened.curve) != KeyCurve::of_point(&point)
        || !d
            .verify(curve, &point, &digest, &opened.signature)
            .map_err(chip)?
    {
        return Err(BootRefused::Signature);
    }
    let verify_time = t.elapsed();
    let m = opened.manifest;
    // 2. For this device's class.
    let cert = read_identity(&mut d)?.certificate;
    let family = inkan_pki::IssuedCert::from_der(&cert)
        .ok()
        .and_then(|c| c.subject_org_unit())
        .unwrap_or_default();
    if m.class != family {
        return Err(BootRefused::Class {
            manifest: m.class,
            device: family,
        });
    }
    // 3. Never below the confirmed security version.
    let current = security_version(&mut d)?;
    if m.security_version < current {
        return Err(BootRefused::Downgrade {
            manifest: m.security_version,
            device: current,
        });
    }
    drop(d);
    // 4. The image itself.
    let t = Instant::now();
    if image.len() as u64 != m.size {
        return Err(BootRefused::Size {
            expected: m.size,
            found: image.len() as u64,
        });
    }
    let h = sha2::Sha256::digest(image);
    let hash_time = t.elapsed();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        h.as_slice(),
        m.digest.as_slice(),
    )) {
        return Err(BootRefused::Digest);
    }
    Ok(BootOk {
        manifest: m,
        device_security_version: current,
        hash_time,
        verify_time,
    })
}

/// Confirms a booted image: advances the chip's one-way counter to its
/// security version (never backwards). Returns the recorded version.
pub fn confirm<T: Transport>(
    driver: &SharedDriver<T>,
    security_version: u32,
) -> Result<u32, DeviceError> {
    let mut d = driver.lock().map_err(|_| DeviceError::Zone {
        zone: FW_COUNTER_ZONE,
        reason: "driver lock poisoned",
    })?;
    let current = self::security_version(&mut d)?;
    if security_version > current {
        d.decrement(FW_COUNTER_ZONE, security_version - current, 0, &[])?;
    }
    self::security_version(&mut d)
}
