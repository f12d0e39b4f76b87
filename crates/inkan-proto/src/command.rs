//! Commands from the cloud to an actuator: a COSE_Sign1 (ES256) signed by
//! the cloud's command key, whose public half is pinned in the device's
//! secure element. The payload names the device it is for, so a command
//! cannot be replayed to another device, carries a random id, so it runs at
//! most once, and an expiry.

use crate::cbor::{self, Decoder};

/// The resource a device polls for its next command.
pub const NEXT_PATH: &str = "commands/next";
/// The resource a device reports a command's outcome to.
pub const RESULT_PATH: &str = "commands/result";

/// The action that takes a device out of service for good: it destroys the
/// secrets in its secure component.
pub const DECOMMISSION: &str = "decommission";

/// The longest a command may stay valid: a device refuses one whose
/// expiry is further than this from its issue time, and the cloud never
/// signs one.
pub const MAX_TTL_SECS: u64 = 30 * 24 * 3600;

/// How far in the future a command's issue time may lie (clock skew).
pub const MAX_SKEW_SECS: u64 = 300;

/// A command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// Random identifier: a device executes an id at most once.
    pub id: [u8; 16],
    /// The chip serial of the device it is for.
    pub device: String,
    /// The device's identity for life (its UEID, or the cloud's id of a
    /// device without one).
    pub ueid: Vec<u8>,
    /// SHA-256 of the device certificate (the credential) it is bound to:
    /// what only that device holds in its secure element's zone 0.
    pub credential: [u8; 32],
    /// What to do.
    pub action: String,
    /// Arguments, opaque to the cloud.
    pub args: Vec<u8>,
    /// Issued at (Unix seconds).
    pub issued: u64,
    /// Not to be executed after (Unix seconds).
    pub expires: u64,
}

/// Why a command is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Not a COSE_Sign1 of the expected shape.
    #[error("malformed command: {0}")]
    Malformed(String),
    /// Signed with another algorithm than ES256.
    #[error("command not signed with ES256")]
    Algorithm,
    /// The signature does not verify with the pinned command key.
    #[error("command signature does not verify with the pinned command key")]
    Signature,
    /// For another device.
    #[error("command addressed to another device ({0})")]
    OtherDevice(String),
    /// Bound to another device identity or credential.
    #[error("command bound to another device identity or credential")]
    OtherCredential,
    /// Valid for longer than [`MAX_TTL_SECS`], or issued in the future.
    #[error("command lifetime out of bounds")]
    Lifetime,
    /// Past its expiry.
    #[error("command expired")]
    Expired,
    /// Already executed.
    #[error("command already executed")]
    Replayed,
}

impl Command {
    fn payload(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64 + self.args.len());
        cbor::array(&mut v, 8);
        cbor::bstr(&mut v, &self.id);
        cbor::tstr(&mut v, &self.device);
        cbor::bstr(&mut v, &self.ueid);
        cbor::bstr(&mut v, &self.credential);
        cbor::tstr(&mut v, &self.action);
        cbor::bstr(&mut v, &self.args);
        cbor::int(&mut v, i64::try_from(self.issued).unwrap_or(i64::MAX));
        cbor::int(&mut v, i64::try_from(self.expires).unwrap_or(i64::MAX));
        v
    }

    fn from_payload(b: &[u8]) -> Result<Command, CommandError> {
        let bad = |e: &dyn std::fmt::Display| CommandError::Malformed(e.to_string());
        let mut d = Decoder::new(b);
        if d.array().map_err(|e| bad(&e))? != 8 {
            return Err(CommandError::Malformed(
                "payload is not an 8-element array".into(),
            ));
        }
        let id: [u8; 16] = d
            .bstr()
            .map_err(|e| bad(&e))?
            .try_into()
            .map_err(|_| CommandError::Malformed("id is not 16 bytes".into()))?;
        let text = |d: &mut Decoder<'_>| -> Result<String, CommandError> {
            String::from_utf8(d.tstr().map_err(|e| bad(&e))?.to_vec()).map_err(|e| bad(&e))
        };
        let device = text(&mut d)?;
        let ueid = d.bstr().map_err(|e| bad(&e))?.to_vec();
        let credential: [u8; 32] = d
            .bstr()
            .map_err(|e| bad(&e))?
            .try_into()
            .map_err(|_| CommandError::Malformed("credential is not 32 bytes".into()))?;
        let action = text(&mut d)?;
        let args = d.bstr().map_err(|e| bad(&e))?.to_vec();
        let time = |d: &mut Decoder<'_>| -> Result<u64, CommandError> {
            u64::try_from(d.int().map_err(|e| bad(&e))?)
                .map_err(|_| CommandError::Malformed("negative time".into()))
        };
        let issued = time(&mut d)?;
        let expires = time(&mut d)?;
        if !d.is_empty() {
            return Err(CommandError::Malformed("bytes after the payload".into()));
        }
        Ok(Command {
            id,
            device,
            ueid,
            credential,
            action,
            args,
            issued,
            expires,
        })
    }

    /// The tagged COSE_Sign1 of this command; `sign` makes the raw `r ‖ s`
    /// ES256 signature over the to-be-signed bytes it is given.
    pub fn sign<E>(&self, sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>) -> Result<Vec<u8>, E> {
        crate::sign1::sign_es256(self.payload(), None, sign)
    }

    /// Parses a signed command without verifying it: returns the command,
    /// the to-be-signed bytes and the raw signature, for the verifier (the
    /// secure element) to check.
    pub fn open(cose: &[u8]) -> Result<(Command, Vec<u8>, Vec<u8>), CommandError> {
        use crate::sign1::{open_es256, OpenError};
        let m = open_es256(cose, None).map_err(|e| match e {
            OpenError::Malformed(m) => CommandError::Malformed(m),
            OpenError::Header => CommandError::Algorithm,
        })?;
        if m.signature.len() != 64 {
            return Err(CommandError::Signature);
        }
        let c = Command::from_payload(&m.payload)?;
        Ok((c, m.tbs, m.signature))
    }
}

/// What happened to a command, as the device reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Executed.
    Succeeded = 0,
    /// Executed and failed.
    Failed = 1,
    /// Refused: expired.
    Expired = 2,
    /// Refused: bad signature, other device, malformed.
    Refused = 3,
}

impl Outcome {
    /// The state name the cloud stores.
    pub fn state(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Expired => "expired",
            Outcome::Refused => "refused",
        }
    }
}

/// Encodes a result report: `[id, outcome, detail]`.
pub fn encode_result(id: &[u8], outcome: Outcome, detail: &str) -> Vec<u8> {
    let mut v = Vec::new();
    cbor::array(&mut v, 3);
    cbor::bstr(&mut v, id);
    cbor::int(&mut v, outcome as i64);
    cbor::tstr(&mut v, detail);
    v
}

/// Decodes a result report.
pub fn decode_result(b: &[u8]) -> Result<(Vec<u8>, Outcome, String), CommandError> {
    let bad = |e: &dyn std::fmt::Display| CommandError::Malformed(e.to_string());
    let mut d = Decoder::new(b);
    if d.array().map_err(|e| bad(&e))? != 3 {
        return Err(CommandError::Malformed(
            "a result is [id, outcome, detail]".into(),
        ));
    }
    let id = d.bstr().map_err(|e| bad(&e))?.to_vec();
    let outcome = match d.int().map_err(|e| bad(&e))? {
        0 => Outcome::Succeeded,
        1 => Outcome::Failed,
        2 => Outcome::Expired,
        3 => Outcome::Refused,
        _ => return Err(CommandError::Malformed("unknown outcome".into())),
    };
    let detail = String::from_utf8(d.tstr().map_err(|e| bad(&e))?.to_vec()).map_err(|e| bad(&e))?;
    if !d.is_empty() {
        return Err(CommandError::Malformed("bytes after the result".into()));
    }
    Ok((id, outcome, detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_open_round_trip_and_tampering() {
        let c = Command {
            id: [7; 16],
            device: "0A1B".into(),
            ueid: vec![1; 17],
            credential: [3; 32],
            action: "open".into(),
            args: vec![1, 2],
            issued: 10,
            expires: 20,
        };
        let mut seen = Vec::new();
        let cose = c
            .sign(|tbs| {
                seen = tbs.to_vec();
                Ok::<_, ()>(vec![9; 64])
            })
            .unwrap();
        let (back, tbs, sig) = Command::open(&cose).unwrap();
        assert_eq!((back, tbs, sig), (c, seen, vec![9; 64]));
        assert!(Command::open(&cose[1..]).is_err());
        assert!(Command::open(&[0xD2, 0x80]).is_err());
        let (id, o, d) =
            decode_result(&encode_result(&[1; 16], Outcome::Failed, "jammed")).unwrap();
        assert_eq!(
            (id, o, d.as_str()),
            (vec![1; 16], Outcome::Failed, "jammed")
        );
    }
}
