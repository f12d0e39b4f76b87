//! The device resources inside OSCORE, defined once for the device and the
//! cloud: their paths, how a request maps to one, and the messages of the
//! firmware update resources. (Telemetry batches and commands have their
//! own modules: [`crate::telemetry`], [`crate::command`].)
//!
//! Firmware images travel outside OSCORE: an image is encrypted once
//! (AES-128-CTR under a key of its own) and its blocks are served as they
//! are, with no per-block session work; the device gets the key, the
//! image's download path and its size in a [`FirmwareTicket`] over OSCORE
//! and checks the decrypted image against the signed manifest. The
//! download path carries a token only the cloud can make, and the cloud
//! sends blocks only to an address that proved it receives (CoAP Echo,
//! RFC 9175), so the plain resource is no traffic amplifier.

use crate::cbor::{self, Decoder};

/// `POST telemetry`: a batch of readings (plain or signed in the chip).
pub const TELEMETRY: &str = crate::telemetry::PATH;
/// `POST commands/next`: the device's next command, if any.
pub const COMMANDS_NEXT: &str = crate::command::NEXT_PATH;
/// `POST commands/result`: what became of a command.
pub const COMMANDS_RESULT: &str = crate::command::RESULT_PATH;
/// `POST firmware/next`: the update a campaign offers the device, if any.
pub const FIRMWARE_NEXT: &str = "firmware/next";
/// `POST firmware/report`: the device's progress in a campaign.
pub const FIRMWARE_REPORT: &str = "firmware/report";

/// A device resource, as a request names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    /// `POST telemetry`.
    Telemetry,
    /// `POST commands/next`.
    CommandsNext,
    /// `POST commands/result`.
    CommandsResult,
    /// `POST firmware/next`.
    FirmwareNext,
    /// `POST firmware/report`.
    FirmwareReport,
    /// `GET firmware/{id}/ticket`: how to fetch and decrypt the image.
    FirmwareTicket(String),
    /// `GET firmware/{id}/manifest`: its signed manifest.
    FirmwareManifest(String),
}

/// A request's method, as far as the resources care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// Anything else.
    Other,
}

impl Resource {
    /// The resource a request's method and Uri-Path segments name.
    pub fn route(method: Method, path: &[String]) -> Option<Resource> {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        let joined = p.join("/");
        match (method, p.as_slice()) {
            (Method::Post, _) if joined == TELEMETRY => Some(Resource::Telemetry),
            (Method::Post, _) if joined == COMMANDS_NEXT => Some(Resource::CommandsNext),
            (Method::Post, _) if joined == COMMANDS_RESULT => Some(Resource::CommandsResult),
            (Method::Post, _) if joined == FIRMWARE_NEXT => Some(Resource::FirmwareNext),
            (Method::Post, _) if joined == FIRMWARE_REPORT => Some(Resource::FirmwareReport),
            (Method::Get, ["firmware", id, "ticket"]) => {
                Some(Resource::FirmwareTicket((*id).to_string()))
            }
            (Method::Get, ["firmware", id, "manifest"]) => {
                Some(Resource::FirmwareManifest((*id).to_string()))
            }
            _ => None,
        }
    }

    /// The Uri-Path of the resource.
    pub fn path(&self) -> String {
        match self {
            Resource::Telemetry => TELEMETRY.into(),
            Resource::CommandsNext => COMMANDS_NEXT.into(),
            Resource::CommandsResult => COMMANDS_RESULT.into(),
            Resource::FirmwareNext => FIRMWARE_NEXT.into(),
            Resource::FirmwareReport => FIRMWARE_REPORT.into(),
            Resource::FirmwareTicket(id) => format!("firmware/{id}/ticket"),
            Resource::FirmwareManifest(id) => format!("firmware/{id}/manifest"),
        }
    }

    /// The method the resource takes.
    pub fn method(&self) -> Method {
        match self {
            Resource::FirmwareTicket(_) | Resource::FirmwareManifest(_) => Method::Get,
            _ => Method::Post,
        }
    }
}

/// A message of the firmware resources that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed {0}")]
pub struct MessageError(pub &'static str);

/// The update a campaign offers: `[campaign id, firmware id]` (an empty
/// payload means none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirmwareOffer {
    /// The campaign.
    pub campaign: String,
    /// The firmware to fetch.
    pub firmware: String,
}

/// A device's progress in a campaign: `[campaign id, state, detail]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirmwareReport {
    /// The campaign.
    pub campaign: String,
    /// downloading, installed, succeeded or failed.
    pub state: String,
    /// Why (a failure's reason).
    pub detail: String,
}

/// First Uri-Path segment of the plain (un-OSCOREd) image download
/// resource `fw/{firmware id}/{token}`.
pub const IMAGE_PREFIX: &str = "fw";
/// Bytes per image block (Block2 SZX 6).
pub const IMAGE_BLOCK: usize = 1024;
/// Block2 size exponent of [`IMAGE_BLOCK`].
pub const IMAGE_BLOCK_SZX: u8 = 6;

/// How to fetch and decrypt a firmware image: `[path, key, size]`.
#[derive(Clone, PartialEq, Eq)]
pub struct FirmwareTicket {
    /// The image's download path (`fw/{id}/{token}`).
    pub path: String,
    /// The image's AES-128-CTR key.
    pub key: zeroize::Zeroizing<[u8; 16]>,
    /// The image's size in bytes.
    pub size: u64,
}

impl std::fmt::Debug for FirmwareTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirmwareTicket")
            .field("path", &self.path)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl FirmwareTicket {
    /// CBOR.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        cbor::array(&mut v, 3);
        cbor::tstr(&mut v, &self.path);
        cbor::bstr(&mut v, &self.key[..]);
        cbor::uint(&mut v, self.size);
        v
    }

    /// From CBOR.
    pub fn decode(b: &[u8]) -> Result<FirmwareTicket, MessageError> {
        let bad = || MessageError("firmware ticket");
        let mut d = Decoder::new(b);
        if d.array().map_err(|_| bad())? != 3 {
            return Err(bad());
        }
        let path = String::from_utf8(d.tstr().map_err(|_| bad())?.to_vec()).map_err(|_| bad())?;
        let key: [u8; 16] = d.bstr().map_err(|_| bad())?.try_into().map_err(|_| bad())?;
        let size = u64::try_from(d.int().map_err(|_| bad())?).map_err(|_| bad())?;
        if !d.is_empty() || path.split('/').next() != Some(IMAGE_PREFIX) {
            return Err(bad());
        }
        Ok(FirmwareTicket {
            path,
            key: zeroize::Zeroizing::new(key),
            size,
        })
    }
}

/// Applies an image's keystream (AES-128-CTR, counter from zero; each key
/// encrypts one image only) to `data` found at byte `offset` of the image:
/// encrypts plaintext and decrypts ciphertext alike.
pub fn image_cipher(key: &[u8; 16], offset: u64, data: &mut [u8]) {
    use aes::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
    let mut c = ctr::Ctr128BE::<aes::Aes128>::new(key.into(), &[0u8; 16].into());
    c.seek(offset);
    c.apply_keystream(data);
}

fn texts<const N: usize>(b: &[u8], what: &'static str) -> Result<[String; N], MessageError> {
    let mut d = Decoder::new(b);
    if d.array().map_err(|_| MessageError(what))? != N {
        return Err(MessageError(what));
    }
    let mut out: [String; N] = std::array::from_fn(|_| String::new());
    for slot in out.iter_mut() {
        let t = d.tstr().map_err(|_| MessageError(what))?;
        *slot = String::from_utf8(t.to_vec()).map_err(|_| MessageError(what))?;
    }
    if !d.is_empty() {
        return Err(MessageError(what));
    }
    Ok(out)
}

impl FirmwareOffer {
    /// CBOR.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        cbor::array(&mut v, 2);
        cbor::tstr(&mut v, &self.campaign);
        cbor::tstr(&mut v, &self.firmware);
        v
    }

    /// From CBOR.
    pub fn decode(b: &[u8]) -> Result<FirmwareOffer, MessageError> {
        let [campaign, firmware] = texts::<2>(b, "update offer")?;
        Ok(FirmwareOffer { campaign, firmware })
    }
}

impl FirmwareReport {
    /// CBOR.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        cbor::array(&mut v, 3);
        cbor::tstr(&mut v, &self.campaign);
        cbor::tstr(&mut v, &self.state);
        cbor::tstr(&mut v, &self.detail);
        v
    }

    /// From CBOR.
    pub fn decode(b: &[u8]) -> Result<FirmwareReport, MessageError> {
        let [campaign, state, detail] = texts::<3>(b, "update report")?;
        Ok(FirmwareReport {
            campaign,
            state,
            detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_cipher_decrypts_any_block_on_its_own() {
        let key = [9u8; 16];
        let image: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let mut sealed = image.clone();
        image_cipher(&key, 0, &mut sealed);
        assert_ne!(sealed, image);
        for (k, block) in sealed.chunks(IMAGE_BLOCK).enumerate() {
            let mut b = block.to_vec();
            image_cipher(&key, (k * IMAGE_BLOCK) as u64, &mut b);
            assert_eq!(b, image[k * IMAGE_BLOCK..][..b.len()]);
        }
        let mut other = sealed[..16].to_vec();
        image_cipher(&[8u8; 16], 0, &mut other);
        assert_ne!(other, image[..16]);
    }

    #[test]
    fn routes_and_paths_agree() {
        for r in [
            Resource::Telemetry,
            Resource::CommandsNext,
            Resource::CommandsResult,
            Resource::FirmwareNext,
            Resource::FirmwareReport,
            Resource::FirmwareTicket("ab12".into()),
            Resource::FirmwareManifest("ab12".into()),
        ] {
            let path: Vec<String> = r.path().split('/').map(str::to_string).collect();
            assert_eq!(Resource::route(r.method(), &path), Some(r.clone()));
            let other = if r.method() == Method::Get {
                Method::Post
            } else {
                Method::Get
            };
            assert_eq!(Resource::route(other, &path), None, "{r:?}");
        }
        assert_eq!(Resource::route(Method::Post, &["nothing".into()]), None);
        assert_eq!(
            Resource::route(Method::Get, &["firmware".into(), "a".into(), "b".into()]),
            None
        );
    }

    #[test]
    fn messages_round_trip_and_malformed_ones_are_refused() {
        let o = FirmwareOffer {
            campaign: "c".into(),
            firmware: "f".into(),
        };
        assert_eq!(FirmwareOffer::decode(&o.encode()), Ok(o.clone()));
        let r = FirmwareReport {
            campaign: "c".into(),
            state: "failed".into(),
            detail: "why".into(),
        };
        assert_eq!(FirmwareReport::decode(&r.encode()), Ok(r.clone()));
        assert!(FirmwareOffer::decode(&r.encode()).is_err());
        assert!(FirmwareReport::decode(&o.encode()).is_err());
        let mut trailing = o.encode();
        trailing.push(0);
        assert!(FirmwareOffer::decode(&trailing).is_err());
        let t = FirmwareTicket {
            path: "fw/ab/cd".into(),
            key: zeroize::Zeroizing::new([7; 16]),
            size: 5000,
        };
        let back = FirmwareTicket::decode(&t.encode()).unwrap();
        assert_eq!(
            (back.path, *back.key, back.size),
            ("fw/ab/cd".into(), [7; 16], 5000)
        );
        for cut in 0..t.encode().len() {
            assert!(FirmwareTicket::decode(&t.encode()[..cut]).is_err());
        }
        let elsewhere = FirmwareTicket {
            path: "telemetry".into(),
            ..t
        };
        assert!(FirmwareTicket::decode(&elsewhere.encode()).is_err());
        for cut in 0..o.encode().len() {
            assert!(FirmwareOffer::decode(&o.encode()[..cut]).is_err());
        }
    }
}
