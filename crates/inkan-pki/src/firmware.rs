//! Firmware manifests (SUIT-inspired): what an image is, for which device
//! class, its version and monotonic security version, and its SHA-256
//! digest and size, as a COSE_Sign1 signed by the OEM's firmware key. The
//! firmware key's public half is pinned in each device's secure element
//! (zone 3), which verifies the signature before the device boots or
//! installs the image.

use crate::signer::{self, CaSigner, KeyCurve};
use crate::PkiError;
use coset::{CoseSign1, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable};
use sha2::Digest;

/// Content type of the payload.
pub const CONTENT_TYPE: &str = "application/inkan-firmware+cbor";

/// A firmware manifest.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FirmwareManifest {
    /// Format version (1).
    pub version: u32,
    /// Who made it.
    pub vendor: String,
    /// The device class (the family name) it is for.
    pub class: String,
    /// Human version string.
    pub firmware_version: String,
    /// Monotonic security version: a device never goes below the highest
    /// it has confirmed (its one-way counter).
    pub security_version: u32,
    /// SHA-256 of the image.
    pub digest: serde_bytes::ByteBuf,
    /// Image size in bytes.
    pub size: u64,
}

impl FirmwareManifest {
    /// A manifest describing `image`.
    pub fn describe(
        image: &[u8],
        vendor: &str,
        class: &str,
        firmware_version: &str,
        security_version: u32,
    ) -> FirmwareManifest {
        FirmwareManifest {
            version: 1,
            vendor: vendor.into(),
            class: class.into(),
            firmware_version: firmware_version.into(),
            security_version,
            digest: serde_bytes::ByteBuf::from(sha2::Sha256::digest(image).to_vec()),
            size: image.len() as u64,
        }
    }
}

/// A signed manifest opened but not verified: its content, the to-be-signed
/// bytes, the raw signature and the curve it claims.
#[derive(Clone, Debug)]
pub struct OpenedManifest {
    /// The manifest.
    pub manifest: FirmwareManifest,
    /// What was signed (the COSE Sig_structure).
    pub tbs: Vec<u8>,
    /// Raw `r ‖ s`.
    pub signature: Vec<u8>,
    /// ES256 (P-256) or ES384 (P-384).
    pub curve: KeyCurve,
}

/// Signs a manifest with the firmware key (a file or a PKCS#11 token).
pub fn sign(m: &FirmwareManifest, key: &dyn CaSigner) -> Result<Vec<u8>, PkiError> {
    let mut payload = Vec::new();
    ciborium::into_writer(m, &mut payload).map_err(|e| PkiError::encode("manifest", e))?;
    let protected = HeaderBuilder::new()
        .algorithm(key.curve().cose_alg())
        .content_type(CONTENT_TYPE.into())
        .build();
    let sign1 = CoseSign1Builder::new()
        .protected(protected)
        .payload(payload)
        .try_create_signature(&[], |tbs| signer::sign_raw(key, tbs))?
        .build();
    sign1
        .to_tagged_vec()
        .map_err(|e| PkiError::encode("COSE_Sign1", e))
}

/// Parses a signed manifest without checking its signature (for a
/// verifier elsewhere: the secure element).
pub fn open(bytes: &[u8]) -> Result<OpenedManifest, PkiError> {
    let s = CoseSign1::from_tagged_slice(bytes)
        .map_err(|e| PkiError::malformed("firmware manifest", format!("{e:?}")))?;
    let curve = match s.protected.header.alg {
        Some(coset::RegisteredLabelWithPrivate::Assigned(coset::iana::Algorithm::ES256)) => {
            KeyCurve::P256
        }
        Some(coset::RegisteredLabelWithPrivate::Assigned(coset::iana::Algorithm::ES384)) => {
            KeyCurve::P384
        }
        _ => {
            return Err(PkiError::malformed(
                "firmware manifest",
                "not signed with ES256 or ES384",
            ))
        }
    };
    let payload = s
        .payload
        .as_deref()
        .ok_or_else(|| PkiError::malformed("firmware manifest", "detached payload"))?;
    let manifest: FirmwareManifest =
        ciborium::from_reader(payload).map_err(|e| PkiError::malformed("firmware manifest", e))?;
    if manifest.version != 1 || manifest.digest.len() != 32 {
        return Err(PkiError::malformed(
            "firmware manifest",
            "unknown version or digest length",
        ));
    }
    Ok(OpenedManifest {
        tbs: s.tbs_data(&[]),
        signature: s.signature,
        manifest,
        curve,
    })
}

/// Verifies a signed manifest with the firmware public key (SEC1 point).
pub fn verify(bytes: &[u8], key_point: &[u8]) -> Result<FirmwareManifest, PkiError> {
    let o = open(bytes)?;
    if KeyCurve::of_point(key_point) != Some(o.curve)
        || !signer::verify_raw(key_point, &o.tbs, &o.signature)
    {
        return Err(PkiError::BadSignature(
            "firmware manifest not signed by the firmware key",
        ));
    }
    Ok(o.manifest)
}
