//! Transfers of ownership: a COSE_Sign1 (ES256) by which the cloud, at the
//! request of a device's current owner, hands named devices to another
//! tenant until an expiry. The buyer's tenant claims it once; the cloud
//! checks its own signature, the addressee, the expiry, that each device
//! still belongs to the seller, and that the document was never claimed.

use crate::cbor::{self, Decoder};

/// The COSE content type that tells a transfer from other documents the
/// same key signs.
pub const CONTENT_TYPE: &str = "application/inkan-transfer+cbor";

/// The most devices one transfer names.
pub const MAX_DEVICES: usize = 10_000;

/// A transfer of ownership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// Random identifier: a transfer is claimed at most once.
    pub id: [u8; 16],
    /// The seller's tenant name.
    pub from: String,
    /// The buyer's tenant name.
    pub to: String,
    /// The devices (their ids: UEIDs).
    pub devices: Vec<Vec<u8>>,
    /// Issued at (Unix seconds).
    pub issued: u64,
    /// Not to be claimed after (Unix seconds).
    pub expires: u64,
}

/// Why a transfer document is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// Not a transfer of the expected shape.
    #[error("malformed transfer: {0}")]
    Malformed(String),
    /// The signature does not verify with the cloud's key.
    #[error("the transfer's signature does not verify")]
    Signature,
}

impl Transfer {
    fn payload(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64 + 20 * self.devices.len());
        cbor::array(&mut v, 6);
        cbor::bstr(&mut v, &self.id);
        cbor::tstr(&mut v, &self.from);
        cbor::tstr(&mut v, &self.to);
        cbor::array(&mut v, self.devices.len());
        for d in &self.devices {
            cbor::bstr(&mut v, d);
        }
        cbor::int(&mut v, i64::try_from(self.issued).unwrap_or(i64::MAX));
        cbor::int(&mut v, i64::try_from(self.expires).unwrap_or(i64::MAX));
        v
    }

    fn from_payload(b: &[u8]) -> Result<Transfer, TransferError> {
        let bad = |e: &dyn std::fmt::Display| TransferError::Malformed(e.to_string());
        let mut d = Decoder::new(b);
        if d.array().map_err(|e| bad(&e))? != 6 {
            return Err(TransferError::Malformed("not a 6-element array".into()));
        }
        let id: [u8; 16] = d
            .bstr()
            .map_err(|e| bad(&e))?
            .try_into()
            .map_err(|_| TransferError::Malformed("id is not 16 bytes".into()))?;
        let text = |d: &mut Decoder<'_>| -> Result<String, TransferError> {
            String::from_utf8(d.tstr().map_err(|e| bad(&e))?.to_vec()).map_err(|e| bad(&e))
        };
        let from = text(&mut d)?;
        let to = text(&mut d)?;
        let n = d.array().map_err(|e| bad(&e))?;
        if n == 0 || n > MAX_DEVICES {
            return Err(TransferError::Malformed(format!(
                "{n} devices: a transfer names 1 to {MAX_DEVICES}"
            )));
        }
        let mut devices = Vec::with_capacity(n);
        for _ in 0..n {
            let id = d.bstr().map_err(|e| bad(&e))?;
            if id.is_empty() || id.len() > 33 {
                return Err(TransferError::Malformed(
                    "a device id of 1 to 33 bytes".into(),
                ));
            }
            devices.push(id.to_vec());
        }
        let time = |d: &mut Decoder<'_>| -> Result<u64, TransferError> {
            u64::try_from(d.int().map_err(|e| bad(&e))?)
                .map_err(|_| TransferError::Malformed("negative time".into()))
        };
        let issued = time(&mut d)?;
        let expires = time(&mut d)?;
        if !d.is_empty() {
            return Err(TransferError::Malformed("bytes after the payload".into()));
        }
        Ok(Transfer {
            id,
            from,
            to,
            devices,
            issued,
            expires,
        })
    }

    /// The tagged COSE_Sign1; `sign` makes the raw `r ‖ s` ES256
    /// signature over the to-be-signed bytes.
    pub fn sign<E>(&self, sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>) -> Result<Vec<u8>, E> {
        crate::sign1::sign_es256(self.payload(), Some(CONTENT_TYPE), sign)
    }

    /// Checks a transfer's signature with `verify(tbs, sig)`, then parses
    /// it.
    pub fn open(
        cose: &[u8],
        verify: impl FnOnce(&[u8], &[u8]) -> bool,
    ) -> Result<Transfer, TransferError> {
        use crate::sign1::{open_es256, OpenError};
        let m = open_es256(cose, Some(CONTENT_TYPE)).map_err(|e| match e {
            OpenError::Malformed(m) => TransferError::Malformed(m),
            OpenError::Header => TransferError::Malformed("not an ES256 transfer document".into()),
        })?;
        if !verify(&m.tbs, &m.signature) {
            return Err(TransferError::Signature);
        }
        Transfer::from_payload(&m.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Transfer {
        Transfer {
            id: [4; 16],
            from: "maker".into(),
            to: "buyer".into(),
            devices: vec![vec![1; 17], vec![2; 17]],
            issued: 100,
            expires: 200,
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let t = sample();
        let mut tbs = Vec::new();
        let cose = t
            .sign(|b| {
                tbs = b.to_vec();
                Ok::<_, ()>(vec![7; 64])
            })
            .unwrap();
        let back = Transfer::open(&cose, |b, s| b == tbs.as_slice() && s == [7; 64]).unwrap();
        assert_eq!(back, t);
        assert_eq!(
            Transfer::open(&cose, |_, _| false),
            Err(TransferError::Signature)
        );
        for cut in [1, cose.len() / 2, cose.len() - 1] {
            assert!(matches!(
                Transfer::open(&cose[..cut], |_, _| true),
                Err(TransferError::Malformed(_))
            ));
        }
        // No devices, or too long an id.
        for devices in [vec![], vec![vec![0; 40]]] {
            let bad = Transfer {
                devices,
                ..sample()
            }
            .sign(|_| Ok::<_, ()>(vec![7; 64]))
            .unwrap();
            assert!(matches!(
                Transfer::open(&bad, |_, _| true),
                Err(TransferError::Malformed(_))
            ));
        }
    }
}
