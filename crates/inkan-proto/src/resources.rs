//! The device resources inside OSCORE, defined once for the device and the
//! cloud: their paths, how a request maps to one, and the messages of the
//! firmware update resources. (Telemetry batches and commands have their
//! own modules: [`crate::telemetry`], [`crate::command`].)

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
    /// `GET firmware/{id}`: the image, block-wise (RFC 7959 Block2).
    FirmwareImage(String),
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
            // `next` and `report` name the update resources, never an image.
            (Method::Get, ["firmware", id]) if !matches!(*id, "next" | "report") => {
                Some(Resource::FirmwareImage((*id).to_string()))
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
            Resource::FirmwareImage(id) => format!("firmware/{id}"),
            Resource::FirmwareManifest(id) => format!("firmware/{id}/manifest"),
        }
    }

    /// The method the resource takes.
    pub fn method(&self) -> Method {
        match self {
            Resource::FirmwareImage(_) | Resource::FirmwareManifest(_) => Method::Get,
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
    fn routes_and_paths_agree() {
        for r in [
            Resource::Telemetry,
            Resource::CommandsNext,
            Resource::CommandsResult,
            Resource::FirmwareNext,
            Resource::FirmwareReport,
            Resource::FirmwareImage("ab12".into()),
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
        for cut in 0..o.encode().len() {
            assert!(FirmwareOffer::decode(&o.encode()[..cut]).is_err());
        }
    }
}
