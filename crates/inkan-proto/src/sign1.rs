//! ES256 COSE_Sign1 (RFC 9052) as the cloud signs its documents for
//! devices and tenants (commands, transfers): built around a payload with
//! the signature made by a caller's signer (a key file, a token, the
//! cloud key), and opened into payload, to-be-signed bytes and signature
//! for a verifier (the secure element, the cloud).

use coset::{CoseSign1, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable};

/// A COSE_Sign1 that does not open as expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// Not a tagged COSE_Sign1 with an attached payload.
    Malformed(String),
    /// Another algorithm than ES256, or another content type.
    Header,
}

/// An opened COSE_Sign1: what was signed and the signature, unverified.
pub struct Opened {
    /// The payload.
    pub payload: Vec<u8>,
    /// The Sig_structure the signature covers.
    pub tbs: Vec<u8>,
    /// The raw `r ‖ s` signature.
    pub signature: Vec<u8>,
}

/// The tagged COSE_Sign1 (ES256, with `content_type` when given) of
/// `payload`; `sign` makes the raw `r ‖ s` signature over the to-be-signed
/// bytes.
pub fn sign_es256<E>(
    payload: Vec<u8>,
    content_type: Option<&str>,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
) -> Result<Vec<u8>, E> {
    let mut header = HeaderBuilder::new().algorithm(coset::iana::Algorithm::ES256);
    if let Some(ct) = content_type {
        header = header.content_type(ct.to_string());
    }
    let unsigned = CoseSign1Builder::new()
        .protected(header.build())
        .payload(payload)
        .build();
    let signature = sign(&unsigned.tbs_data(&[]))?;
    Ok(CoseSign1 {
        signature,
        ..unsigned
    }
    .to_tagged_vec()
    .unwrap_or_default())
}

/// Opens a tagged ES256 COSE_Sign1 whose content type is `content_type`
/// (none when None), without verifying it.
pub fn open_es256(cose: &[u8], content_type: Option<&str>) -> Result<Opened, OpenError> {
    let m =
        CoseSign1::from_tagged_slice(cose).map_err(|e| OpenError::Malformed(format!("{e:?}")))?;
    let h = &m.protected.header;
    let ct = content_type.map(|c| coset::ContentType::Text(c.to_string()));
    if h.alg
        != Some(coset::RegisteredLabelWithPrivate::Assigned(
            coset::iana::Algorithm::ES256,
        ))
        || h.content_type != ct
    {
        return Err(OpenError::Header);
    }
    let tbs = m.tbs_data(&[]);
    let payload = m
        .payload
        .ok_or_else(|| OpenError::Malformed("detached payload".into()))?;
    Ok(Opened {
        payload,
        tbs,
        signature: m.signature,
    })
}
