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

/// A firmware as served: whose it is, its manifest and its image.
pub struct Served {
    /// The owning tenant.
    pub tenant_id: String,
    /// The family it is for.
    pub family_id: String,
    /// The signed manifest.
    pub manifest: Vec<u8>,
    /// The image.
    pub image: Vec<u8>,
}

/// Images kept in memory for block-wise downloads, at most
/// [`CACHE_BYTES`] in all: an image is read from the store once, not once
/// per block. Firmware rows never change once uploaded.
#[derive(Default)]
pub struct Cache {
    images: std::collections::HashMap<String, (std::sync::Arc<Served>, std::time::Instant)>,
    bytes: usize,
}

/// Most image bytes kept in memory.
pub const CACHE_BYTES: usize = 256 << 20;

impl Cache {
    fn get(&mut self, id: &str) -> Option<std::sync::Arc<Served>> {
        let (f, used) = self.images.get_mut(id)?;
        *used = std::time::Instant::now();
        Some(f.clone())
    }

    fn put(&mut self, id: &str, f: std::sync::Arc<Served>) {
        let size = f.image.len();
        if size > CACHE_BYTES {
            return;
        }
        while self.bytes + size > CACHE_BYTES {
            // Evict the least recently used.
            let Some(oldest) = self
                .images
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((old, _)) = self.images.remove(&oldest) {
                self.bytes -= old.image.len();
            }
        }
        self.bytes += size;
        self.images
            .insert(id.to_string(), (f, std::time::Instant::now()));
    }
}

/// A firmware's manifest and one block of its image, if `device` belongs
/// to the firmware's tenant and family: (manifest, total size, block).
pub async fn block_for(
    auth: &App,
    device: &crate::store::DeviceRow,
    firmware_id: &str,
    num: u32,
) -> Result<Option<(Vec<u8>, usize, Vec<u8>)>, StoreError> {
    let cached = auth
        .firmware_cache
        .lock()
        .ok()
        .and_then(|mut c| c.get(firmware_id));
    let f = match cached {
        Some(f) => f,
        None => {
            let Some(f) = auth.registry.store.firmware(firmware_id).await? else {
                return Ok(None);
            };
            let f = std::sync::Arc::new(f);
            if let Ok(mut c) = auth.firmware_cache.lock() {
                c.put(firmware_id, f.clone());
            }
            f
        }
    };
    if device.family_id.as_deref() != Some(f.family_id.as_str()) || device.tenant_id != f.tenant_id
    {
        return Ok(None);
    }
    let start = (num as usize).saturating_mul(BLOCK_SIZE).min(f.image.len());
    let end = start.saturating_add(BLOCK_SIZE).min(f.image.len());
    Ok(Some((
        f.manifest.clone(),
        f.image.len(),
        f.image[start..end].to_vec(),
    )))
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
