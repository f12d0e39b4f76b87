//! Firmware the cloud hands to devices: uploaded with its OEM-signed
//! manifest (verified against the firmware key and the family before it is
//! accepted), served block-wise (RFC 7959) over each device's OSCORE
//! session, only to devices of its family.

use crate::store::StoreError;
use crate::AuthService;
use sqlx::Row;

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
    auth: &AuthService,
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
    sqlx::query(
        "INSERT INTO firmware (id, tenant_id, family_id, version, security_version, manifest, image, created) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&id)
    .bind(tenant_id)
    .bind(family_id)
    .bind(&m.firmware_version)
    .bind(i64::from(m.security_version))
    .bind(manifest.to_vec())
    .bind(image.to_vec())
    .bind(crate::store::now())
    .execute(&store.pool)
    .await
    .map_err(StoreError::from)?;
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
    auth: &AuthService,
    device_id: &str,
    firmware_id: &str,
    num: u32,
) -> Result<Option<(Vec<u8>, usize, Vec<u8>)>, StoreError> {
    let r = sqlx::query(
        "SELECT f.manifest, f.image FROM firmware f JOIN devices d ON d.family_id = f.family_id \
         AND d.tenant_id = f.tenant_id WHERE f.id = $1 AND d.id = $2",
    )
    .bind(firmware_id)
    .bind(device_id)
    .fetch_optional(&auth.registry.store.pool)
    .await?;
    let Some(r) = r else { return Ok(None) };
    let manifest: Vec<u8> = r.try_get("manifest")?;
    let image: Vec<u8> = r.try_get("image")?;
    let start = (num as usize).saturating_mul(BLOCK_SIZE).min(image.len());
    let end = (start + BLOCK_SIZE).min(image.len());
    Ok(Some((manifest, image.len(), image[start..end].to_vec())))
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
