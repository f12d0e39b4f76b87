//! The telemetry payload a device POSTs to `/telemetry` under OSCORE: a
//! CBOR array of readings, each `[time_ms, channel, value]` with the value
//! an opaque byte string of at most [`MAX_VALUE`] bytes.

use crate::cbor::{self, CborError, Decoder};

/// Most readings in one batch.
pub const MAX_BATCH: usize = 1000;
/// Largest reading value.
pub const MAX_VALUE: usize = 64;
/// The resource readings are posted to.
pub const PATH: &str = "telemetry";
/// The channel on which a device reports the units of use its chip's
/// usage counter has left (the value: 4 bytes, big-endian). The cloud
/// takes it only in batches signed in the chip, and never rising.
pub const USAGE_CHANNEL: u32 = 0xFFFF_0001;

/// One reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    /// Milliseconds since the Unix epoch, by the device's clock.
    pub time_ms: u64,
    /// Which sensor channel.
    pub channel: u32,
    /// The measurement, encoded by the device (at most 64 bytes).
    pub value: Vec<u8>,
}

/// Why a batch is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Not the expected CBOR.
    #[error("malformed batch: {0}")]
    Cbor(#[from] CborError),
    /// The shape is wrong.
    #[error("malformed batch: {0}")]
    Shape(&'static str),
    /// Too many readings or too large a value.
    #[error("batch too large: {0}")]
    TooLarge(&'static str),
}

/// The latest reading time accepted: the last millisecond of year 9999
/// (what every store and export can order and page).
pub const MAX_TIME_MS: u64 = 253_402_300_799_999;

/// Encodes a batch.
pub fn encode_batch(readings: &[Reading]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + readings.len() * 80);
    cbor::array(&mut out, readings.len());
    for r in readings {
        cbor::array(&mut out, 3);
        cbor::int(&mut out, i64::try_from(r.time_ms).unwrap_or(i64::MAX));
        cbor::int(&mut out, i64::from(r.channel));
        cbor::bstr(&mut out, &r.value);
    }
    out
}

/// Decodes a batch, strictly: exactly one array of well-formed readings and
/// nothing after it.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<Reading>, BatchError> {
    let mut d = Decoder::new(bytes);
    let n = d.array()?;
    if n == 0 {
        return Err(BatchError::Shape("empty batch"));
    }
    if n > MAX_BATCH {
        return Err(BatchError::TooLarge("more than 1000 readings"));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        if d.array()? != 3 {
            return Err(BatchError::Shape("a reading is [time_ms, channel, value]"));
        }
        let time_ms = u64::try_from(d.int()?).map_err(|_| BatchError::Shape("negative time"))?;
        if time_ms > MAX_TIME_MS {
            return Err(BatchError::Shape("a time after year 9999"));
        }
        let channel =
            u32::try_from(d.int()?).map_err(|_| BatchError::Shape("channel out of range"))?;
        let value = d.bstr()?;
        if value.len() > MAX_VALUE {
            return Err(BatchError::TooLarge("a value longer than 64 bytes"));
        }
        out.push(Reading {
            time_ms,
            channel,
            value: value.to_vec(),
        });
    }
    if !d.is_empty() {
        return Err(BatchError::Shape("bytes after the batch"));
    }
    Ok(out)
}

/// A batch signed by the device key: a COSE_Sign1 (tag 18) carrying the
/// encoded batch, ES256 (P-256 devices) or EdDSA (Ed25519 devices). `sign`
/// returns the raw signature over the to-be-signed bytes it is given.
pub fn sign_batch<E>(
    batch: &[u8],
    ed25519: bool,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
) -> Result<Vec<u8>, E> {
    use coset::{CoseSign1Builder, HeaderBuilder, TaggedCborSerializable};
    let alg = if ed25519 {
        coset::iana::Algorithm::EdDSA
    } else {
        coset::iana::Algorithm::ES256
    };
    let unsigned = CoseSign1Builder::new()
        .protected(HeaderBuilder::new().algorithm(alg).build())
        .payload(batch.to_vec())
        .build();
    let signature = sign(&unsigned.tbs_data(&[]))?;
    Ok(coset::CoseSign1 {
        signature,
        ..unsigned
    }
    .to_tagged_vec()
    .unwrap_or_default())
}

/// A signed batch opened (not verified): the batch bytes, the
/// to-be-signed bytes, the signature, and whether it is EdDSA.
pub struct SignedBatch {
    /// The encoded batch.
    pub batch: Vec<u8>,
    /// What was signed.
    pub tbs: Vec<u8>,
    /// The raw signature.
    pub signature: Vec<u8>,
    /// EdDSA (else ES256).
    pub ed25519: bool,
}

/// Whether a telemetry payload is a signed batch (a tagged COSE_Sign1).
pub fn is_signed(payload: &[u8]) -> bool {
    payload.first() == Some(&0xD2)
}

/// Opens a signed batch.
pub fn open_signed(payload: &[u8]) -> Result<SignedBatch, BatchError> {
    use coset::TaggedCborSerializable;
    let m = coset::CoseSign1::from_tagged_slice(payload)
        .map_err(|_| BatchError::Shape("signed batch is not a COSE_Sign1"))?;
    let ed25519 = match m.protected.header.alg {
        Some(coset::RegisteredLabelWithPrivate::Assigned(coset::iana::Algorithm::ES256)) => false,
        Some(coset::RegisteredLabelWithPrivate::Assigned(coset::iana::Algorithm::EdDSA)) => true,
        _ => {
            return Err(BatchError::Shape(
                "signed batch: algorithm not ES256 or EdDSA",
            ))
        }
    };
    let batch = m
        .payload
        .clone()
        .ok_or(BatchError::Shape("signed batch without its payload"))?;
    Ok(SignedBatch {
        tbs: m.tbs_data(&[]),
        signature: m.signature,
        batch,
        ed25519,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let b = vec![
            Reading {
                time_ms: 1_700_000_000_000,
                channel: 3,
                value: vec![7; 64],
            },
            Reading {
                time_ms: 0,
                channel: 0,
                value: vec![],
            },
        ];
        assert_eq!(decode_batch(&encode_batch(&b)), Ok(b.clone()));
        let mut long = b.clone();
        long[0].value = vec![0; 65];
        assert!(matches!(
            decode_batch(&encode_batch(&long)),
            Err(BatchError::TooLarge(_))
        ));
        let mut trailing = encode_batch(&b);
        trailing.push(0);
        assert!(matches!(decode_batch(&trailing), Err(BatchError::Shape(_))));
        assert!(decode_batch(&[0x80]).is_err());
        assert!(decode_batch(&[0x81, 0x82, 0x00, 0x00]).is_err());
        assert!(decode_batch(&[0x81, 0x83, 0x20, 0x00, 0x40]).is_err());
        assert!(decode_batch(&[0x9f]).is_err());
        // Times a store cannot order: refused.
        let mut late = b.clone();
        late[0].time_ms = MAX_TIME_MS + 1;
        assert!(matches!(
            decode_batch(&encode_batch(&late)),
            Err(BatchError::Shape(_))
        ));
        late[0].time_ms = MAX_TIME_MS;
        assert!(decode_batch(&encode_batch(&late)).is_ok());
    }
}
