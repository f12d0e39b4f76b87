//! Firmware the cloud hands to devices: uploaded with its OEM-signed
//! manifest (verified against the firmware key and the family before it is
//! accepted), served block-wise (RFC 7959) over each device's OSCORE
//! session, only to devices of its family.

use crate::store::StoreError;
use crate::App;

/// Block size served (SZX 6: 1024 bytes).
pub const BLOCK_SZX: u8 = 6;
/// Bytes per block.
pub const BLOCK_SIZE: usize = 1024;

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The service has no firmware key to check manifests with.
    #[error("this service has no firmware key (inkan serve --firmware-key-pub)")]
    NoKey,
    /// The manifest is not signed by the firmware key, or malformed.
    #[error("manifest refused: {0}")]
    Manifest(String),
    /// The manifest is for another family.
    #[error("manifest for class {manifest:?}, not family {family:?}")]
    Family {
        /// The manifest's class.
        manifest: String,
        /// The family it was uploaded to.
        family: String,
    },
    /// The image is not the one the manifest describes.
    #[error("the image does not match the manifest (size or SHA-256)")]
    Image,
    /// No such family in the tenant.
    #[error("no such family in this tenant")]
    UnknownFamily,
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Verifies and stores a firmware for a family; returns its id.
pub async fn upload(
    auth: &App,
    tenant_id: &str,
    family_id: &str,
    manifest: &[u8],
    image: &[u8],
) -> Result<String, UploadError> {
    let key = auth.firmware_key().ok_or(UploadError::NoKey)?;
    let m = inkan_pki::firmware::verify(manifest, key)
        .map_err(|e| UploadError::Manifest(e.to_string()))?;
    let store = &auth.registry.store;
    let fam = store
        .family_in(tenant_id, family_id)
        .await?
        .ok_or(UploadError::UnknownFamily)?;
    if m.class != fam.name {
        return Err(UploadError::Family {
            manifest: m.class,
            family: fam.name,
        });
    }
    let digest = <sha2::Sha256 as sha2::Digest>::digest(image);
    if image.len() as u64 != m.size || digest.as_slice() != m.digest.as_slice() {
        return Err(UploadError::Image);
    }
    let id = crate::store::new_id();
    store
        .insert_firmware(
            &id,
            tenant_id,
            family_id,
            &m.firmware_version,
            i64::from(m.security_version),
            manifest,
            image,
        )
        .await?;
    store
        .audit(
            Some(tenant_id),
            "firmware-upload",
            &fam.name,
            "ok",
            &format!(
                "{} (security version {}) as {id}",
                m.firmware_version, m.security_version
            ),
        )
        .await?;
    Ok(id)
}

/// A firmware's manifest and one block of its image, if `device_id`'s
/// family is the firmware's: (manifest, total size, block bytes).
pub async fn block_for(
    auth: &App,
    device_id: &str,
    firmware_id: &str,
    num: u32,
) -> Result<Option<(Vec<u8>, usize, Vec<u8>)>, StoreError> {
    let block = i64::try_from(BLOCK_SIZE).unwrap_or(1024);
    let start = i64::from(num).saturating_mul(block);
    let found = auth
        .registry
        .store
        .firmware_slice(device_id, firmware_id, start, block)
        .await?;
    Ok(found.map(|(manifest, size, part)| (manifest, usize::try_from(size).unwrap_or(0), part)))
}

/// Encodes a Block2 option value (RFC 7959 §2.2).
pub fn block_value(num: u32, more: bool, szx: u8) -> Vec<u8> {
    let v = (num << 4) | (u32::from(more) << 3) | u32::from(szx & 7);
    let b = v.to_be_bytes();
    let skip = b.iter().take_while(|x| **x == 0).count();
    b[skip..].to_vec()
}

/// Decodes a Block2 option value: (num, more, szx).
pub fn parse_block(v: &[u8]) -> Option<(u32, bool, u8)> {
    if v.len() > 3 {
        return None;
    }
    let n = v.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b));
    Some((n >> 4, n & 8 != 0, u8::try_from(n & 7).ok()?))
}
