#![doc = include_str!("../README.md")]

pub mod cert;
pub mod crl;
mod error;
pub mod firmware;
pub mod manifest;
pub mod pkcs11;
pub mod signer;
pub mod ueid;
pub mod validate;

pub use cert::{CertPolicy, DeviceProfile, IssuedCert};
pub use error::PkiError;
pub use signer::{CaSigner, KeyCurve, SoftwareKey};
pub use ueid::Ueid;
pub use validate::{DeviceValidator, ValidatedDevice, ValidationError};

/// PEM-encodes DER under a label.
pub fn pem(label: &str, der: &[u8]) -> String {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der).unwrap_or_default()
}

/// Decodes every PEM block labelled `label` in `bytes`, or takes `bytes` as
/// one DER object if it is not PEM text.
pub fn pem_or_der(label: &str, bytes: &[u8]) -> Result<Vec<Vec<u8>>, PkiError> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) if t.contains("-----BEGIN ") => t,
        _ => return Ok(vec![bytes.to_vec()]),
    };
    let mut out = Vec::new();
    for block in text.split("-----BEGIN ").skip(1) {
        let Some(end) = block.find("-----END ") else {
            return Err(PkiError::malformed(
                "PEM",
                "a BEGIN line without its END line",
            ));
        };
        let tail = &block[end..];
        let end_line = tail.find('\n').map_or(tail.len(), |i| i + 1);
        let doc = format!("-----BEGIN {}", &block[..end + end_line]);
        let (found, der) = der::pem::decode_vec(doc.as_bytes())
            .map_err(|e| PkiError::malformed("PEM block", e))?;
        if found == label {
            out.push(der);
        }
    }
    if out.is_empty() {
        return Err(PkiError::malformed(
            "PEM",
            format!("no {label} block found"),
        ));
    }
    Ok(out)
}
