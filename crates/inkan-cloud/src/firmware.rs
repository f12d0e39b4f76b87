//! Firmware the cloud hands to devices: uploaded with its OEM-signed
//! manifest (verified against the firmware key and the family before it is
//! accepted). A device of the family gets the manifest and a ticket (the
//! image's key, download path and size) over its OSCORE session; the
//! image itself is encrypted once and served block-wise (RFC 7959) on a
//! plain resource, to addresses that proved they receive (Echo), with no
//! per-block session or store work. A device that held a ticket before
//! it was revoked can still fetch the ciphertext it could already decrypt;
//! what it installs is checked against the signed manifest.

use crate::store::StoreError;
use crate::App;
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use inkan_proto::resources::{FirmwareTicket, IMAGE_BLOCK, IMAGE_BLOCK_SZX, IMAGE_PREFIX};
use std::net::SocketAddr;
use std::sync::Arc;

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

/// A firmware as stored: whose it is, its manifest and its image.
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

/// A firmware as the device endpoint serves it: its image encrypted once
/// under the image's key ([`inkan_proto::resources::image_cipher`]).
pub struct Sealed {
    /// The owning tenant.
    pub tenant_id: String,
    /// The family it is for.
    pub family_id: String,
    /// The signed manifest.
    pub manifest: Vec<u8>,
    /// The encrypted image.
    pub sealed: Vec<u8>,
}

/// Sealed images kept in memory, at most [`CACHE_BYTES`] in all: an image
/// is read from the store and encrypted once, not once per block.
/// Firmware rows never change once uploaded.
#[derive(Default)]
pub struct Cache {
    images: std::collections::HashMap<String, (Arc<Sealed>, std::time::Instant)>,
    bytes: usize,
}

/// Most image bytes kept in memory.
pub const CACHE_BYTES: usize = 256 << 20;

impl Cache {
    fn get(&mut self, id: &str) -> Option<Arc<Sealed>> {
        let (f, used) = self.images.get_mut(id)?;
        *used = std::time::Instant::now();
        Some(f.clone())
    }

    fn put(&mut self, id: &str, f: Arc<Sealed>) {
        let size = f.sealed.len();
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
                self.bytes -= old.sealed.len();
            }
        }
        self.bytes += size;
        if let Some((old, _)) = self
            .images
            .insert(id.to_string(), (f, std::time::Instant::now()))
        {
            self.bytes -= old.sealed.len();
        }
    }
}

/// The key firmware `id`'s image is encrypted under (derived from the
/// cloud key: every replica makes the same).
fn image_key(app: &App, id: &str) -> zeroize::Zeroizing<[u8; 16]> {
    let d = app.identity().derive("image key", &[id.as_bytes()]);
    let mut k = zeroize::Zeroizing::new([0u8; 16]);
    k.copy_from_slice(&d[..16]);
    k
}

/// The token in firmware `id`'s download path: only the cloud makes it,
/// so the plain resource reads nothing for a path it did not hand out.
fn image_token(app: &App, id: &str) -> String {
    hex::encode(&app.identity().derive("image path", &[id.as_bytes()])[..16])
}

/// The firmware from memory, if it is there.
fn cached(app: &App, id: &str) -> Option<Arc<Sealed>> {
    app.firmware_cache.lock().ok().and_then(|mut c| c.get(id))
}

/// The firmware, sealed: from memory, or read from the store once and
/// encrypted.
async fn sealed(app: &App, id: &str) -> Result<Option<Arc<Sealed>>, StoreError> {
    if let Some(f) = cached(app, id) {
        return Ok(Some(f));
    }
    let Some(f) = app.registry.store.firmware(id).await? else {
        return Ok(None);
    };
    let mut image = f.image;
    inkan_proto::resources::image_cipher(&image_key(app, id), 0, &mut image);
    let f = Arc::new(Sealed {
        tenant_id: f.tenant_id,
        family_id: f.family_id,
        manifest: f.manifest,
        sealed: image,
    });
    if let Ok(mut c) = app.firmware_cache.lock() {
        c.put(id, f.clone());
    }
    Ok(Some(f))
}

/// The firmware, if `device` belongs to its tenant and family.
async fn for_device(
    app: &App,
    device: &crate::store::DeviceRow,
    id: &str,
) -> Result<Option<Arc<Sealed>>, StoreError> {
    Ok(sealed(app, id).await?.filter(|f| {
        device.family_id.as_deref() == Some(f.family_id.as_str()) && device.tenant_id == f.tenant_id
    }))
}

/// Firmware `id`'s signed manifest, for a device of its family.
pub async fn manifest_for(
    app: &App,
    device: &crate::store::DeviceRow,
    id: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(for_device(app, device, id)
        .await?
        .map(|f| f.manifest.clone()))
}

/// How a device of firmware `id`'s family fetches and decrypts it.
pub async fn ticket_for(
    app: &App,
    device: &crate::store::DeviceRow,
    id: &str,
) -> Result<Option<FirmwareTicket>, StoreError> {
    Ok(for_device(app, device, id).await?.map(|f| FirmwareTicket {
        path: format!("{IMAGE_PREFIX}/{id}/{}", image_token(app, id)),
        key: image_key(app, id),
        size: f.sealed.len() as u64,
    }))
}

/// What a plain request to the image resource asks for.
enum ImageRequest {
    /// Not a GET of `fw/{id}/{token}`.
    Other,
    /// A path the cloud did not make.
    UnknownPath,
    /// The address has not proved it receives.
    Unverified(Vec<u8>),
    /// Block `num` of firmware `id`.
    Block(String, u32),
}

fn classify(app: &App, p: &Packet, peer: SocketAddr) -> ImageRequest {
    if p.header.code != MessageClass::Request(RequestType::Get) {
        return ImageRequest::Other;
    }
    let Some(path) = p.get_option(CoapOption::UriPath) else {
        return ImageRequest::Other;
    };
    let segs: Vec<&[u8]> = path.iter().map(Vec::as_slice).collect();
    let [prefix, id, token] = segs.as_slice() else {
        return if segs.first() == Some(&IMAGE_PREFIX.as_bytes()) {
            ImageRequest::UnknownPath
        } else {
            ImageRequest::Other
        };
    };
    if *prefix != IMAGE_PREFIX.as_bytes() {
        return ImageRequest::Other;
    }
    let Ok(id) = std::str::from_utf8(id) else {
        return ImageRequest::UnknownPath;
    };
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        *token,
        image_token(app, id).as_bytes(),
    )) {
        return ImageRequest::UnknownPath;
    }
    if !app.echo_verifies(peer, inkan_proto::coap::echo_of(p)) {
        return ImageRequest::Unverified(app.echo_for(peer));
    }
    let num = p
        .get_first_option(CoapOption::Block2)
        .and_then(|v| inkan_proto::coap::parse_block(v))
        .map_or(0, |b| b.0);
    ImageRequest::Block(id.to_string(), num)
}

fn answer(
    p: &Packet,
    code: ResponseType,
    options: Vec<(CoapOption, Vec<u8>)>,
    payload: &[u8],
) -> Vec<u8> {
    let mut r = inkan_proto::coap::response_to(p, code);
    for (o, v) in options {
        r.add_option(o, v);
    }
    r.payload = payload.to_vec();
    r.to_bytes().unwrap_or_default()
}

/// Block `num` of a sealed image (RFC 7959 Block2, Size2 on the first
/// block), or 4.02 past its end.
fn block(p: &Packet, f: &Sealed, num: u32) -> Vec<u8> {
    let total = f.sealed.len();
    let start = (num as usize).saturating_mul(IMAGE_BLOCK);
    if start >= total && !(num == 0 && total == 0) {
        return answer(p, ResponseType::BadOption, Vec::new(), b"no such block");
    }
    let end = start.saturating_add(IMAGE_BLOCK).min(total);
    let mut options = vec![(
        CoapOption::Block2,
        inkan_proto::coap::block_value(num, end < total, IMAGE_BLOCK_SZX),
    )];
    if num == 0 {
        let t = u32::try_from(total).unwrap_or(u32::MAX).to_be_bytes();
        let skip = t.iter().take_while(|x| **x == 0).count();
        options.push((CoapOption::Size2, t[skip..].to_vec()));
    }
    answer(p, ResponseType::Content, options, &f.sealed[start..end])
}

/// The answer to a plain image request from memory, when it needs nothing
/// else (a valid path, a verified address, the image in memory): the
/// device endpoint's fast path, with no task, store or session. None for
/// anything else, which [`image_request`] answers.
pub fn image_from_memory(app: &App, bytes: &[u8], peer: SocketAddr) -> Option<Vec<u8>> {
    // Only a GET (code 0.01) can be one: others are not parsed here.
    if bytes.get(1) != Some(&1) {
        return None;
    }
    let p = Packet::from_bytes(bytes).ok()?;
    if !matches!(
        p.header.get_type(),
        MessageType::Confirmable | MessageType::NonConfirmable
    ) {
        return None;
    }
    let ImageRequest::Block(id, num) = classify(app, &p, peer) else {
        return None;
    };
    let f = cached(app, &id)?;
    Some(block(&p, &f, num))
}

/// The answer to a plain request that is no OSCORE or EDHOC request: an
/// image block, an Echo to repeat, or a refusal (counted with the other
/// refusals of unauthenticated traffic).
pub async fn image_request(app: &App, p: &Packet, peer: SocketAddr) -> Vec<u8> {
    match classify(app, p, peer) {
        ImageRequest::Other => answer(p, ResponseType::NotFound, Vec::new(), b""),
        ImageRequest::UnknownPath => {
            app.refused_unauthenticated("firmware image", &peer.to_string(), "unknown image path")
                .await;
            answer(p, ResponseType::NotFound, Vec::new(), b"")
        }
        ImageRequest::Unverified(echo) => answer(
            p,
            ResponseType::Unauthorized,
            vec![(CoapOption::Unknown(inkan_proto::coap::ECHO), echo)],
            b"",
        ),
        ImageRequest::Block(id, num) => match sealed(app, &id).await {
            Ok(Some(f)) => block(p, &f, num),
            Ok(None) => answer(p, ResponseType::NotFound, Vec::new(), b""),
            Err(_) => answer(p, ResponseType::ServiceUnavailable, Vec::new(), b""),
        },
    }
}
