//! Signed batch manifests: what a factory batch produced, one entry per
//! chip, as a COSE_Sign1 (RFC 9052) whose signer certificate, issued under
//! the root, travels in the protected `x5chain` header (RFC 9360). The cloud
//! imports it to register devices in bulk, after [`verify`] succeeds.

use crate::cert::{verify_issued_by, IssuedCert};
use crate::signer::{self, CaSigner, KeyCurve};
use crate::PkiError;
use coset::{
    CborSerializable, CoseSign1, CoseSign1Builder, HeaderBuilder, Label, TaggedCborSerializable,
};
use serde_bytes::ByteBuf;
use std::time::SystemTime;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};

/// COSE header label of `x5chain` (RFC 9360).
pub const X5CHAIN: i64 = 33;
/// Content type of the payload.
pub const CONTENT_TYPE: &str = "application/inkan-manifest+cbor";

/// One personalized chip.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestEntry {
    /// The chip serial (hex), the certificate's subject serialNumber.
    pub serial: String,
    /// The device certificate, DER.
    pub certificate: ByteBuf,
    /// The device public key, SEC1 uncompressed.
    pub public_key: ByteBuf,
    /// The family name.
    pub family: String,
    /// When the chip was personalized (seconds since the Unix epoch).
    pub time: u64,
    /// The device's identity for life (RFC 9711 UEID), fixed at
    /// personalization; the certificate carries it too.
    #[serde(default)]
    pub ueid: Option<ByteBuf>,
}

/// A batch manifest.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Format version (1).
    pub version: u32,
    /// Batch identifier.
    pub batch: String,
    /// The family the batch belongs to.
    pub family: String,
    /// The family CA certificate, DER (so the importer can build paths).
    pub family_certificate: ByteBuf,
    /// When the manifest was signed (seconds since the Unix epoch).
    pub created: u64,
    /// The chips.
    pub entries: Vec<ManifestEntry>,
}

/// Signs a manifest with the manifest key; returns the tagged COSE_Sign1.
pub fn sign(
    manifest: &Manifest,
    signer: &dyn CaSigner,
    signer_cert: &IssuedCert,
) -> Result<Vec<u8>, PkiError> {
    if signer.public_point() != signer_cert.public_point() {
        return Err(PkiError::KeyMismatch {
            subject: signer_cert.subject(),
        });
    }
    let mut payload = Vec::new();
    ciborium::into_writer(manifest, &mut payload).map_err(|e| PkiError::encode("manifest", e))?;
    let mut protected = HeaderBuilder::new()
        .algorithm(signer.curve().cose_alg())
        .content_type(CONTENT_TYPE.into())
        .build();
    protected.rest.push((
        Label::Int(X5CHAIN),
        coset::cbor::Value::Bytes(signer_cert.der.clone()),
    ));
    let sign1 = CoseSign1Builder::new()
        .protected(protected)
        .payload(payload)
        .try_create_signature(&[], |tbs| signer::sign_raw(signer, tbs))?
        .build();
    sign1
        .to_tagged_vec()
        .map_err(|e| PkiError::encode("COSE_Sign1", e))
}

/// Checks a manifest signature against the root and returns its content.
/// Nothing is returned unless the signer certificate was issued by `root`,
/// is an end-entity with digitalSignature, is valid at `now`, and its key
/// verifies the COSE signature.
pub fn verify(bytes: &[u8], root: &IssuedCert, now: SystemTime) -> Result<Manifest, PkiError> {
    let sign1 = CoseSign1::from_tagged_slice(bytes)
        .or_else(|_| CoseSign1::from_slice(bytes))
        .map_err(|e| PkiError::malformed("manifest (COSE_Sign1)", format!("{e:?}")))?;
    let p = &sign1.protected.header;
    let cert_der = p
        .rest
        .iter()
        .find_map(|(l, v)| match (l, v) {
            (Label::Int(X5CHAIN), coset::cbor::Value::Bytes(b)) => Some(b.clone()),
            _ => None,
        })
        .ok_or_else(|| {
            PkiError::malformed("manifest", "no x5chain certificate in the protected header")
        })?;
    let signer_cert = IssuedCert::from_der(&cert_der)?;
    verify_issued_by(&signer_cert, root)
        .map_err(|_| PkiError::BadSignature("manifest signer not certified by this root"))?;
    signer_cert.require_valid_at(now)?;
    let tbs = &signer_cert.cert.tbs_certificate;
    if matches!(tbs.get::<BasicConstraints>(), Ok(Some((_, bc))) if bc.ca) {
        return Err(PkiError::BadSignature(
            "manifest signer is a CA certificate",
        ));
    }
    if !matches!(tbs.get::<KeyUsage>(), Ok(Some((_, ku))) if ku.0.contains(KeyUsages::DigitalSignature))
    {
        return Err(PkiError::BadSignature(
            "manifest signer lacks digitalSignature",
        ));
    }
    let point = signer_cert.public_point();
    let curve = KeyCurve::of_point(&point).ok_or(PkiError::BadSignature(
        "manifest signer key is not P-256/P-384",
    ))?;
    let alg_ok = matches!(&p.alg, Some(coset::RegisteredLabelWithPrivate::Assigned(a)) if *a == curve.cose_alg());
    if !alg_ok {
        return Err(PkiError::BadSignature(
            "manifest algorithm does not match the signer key",
        ));
    }
    sign1.verify_signature(&[], |sig, data| {
        if signer::verify_raw(&point, data, sig) {
            Ok(())
        } else {
            Err(PkiError::BadSignature("manifest signature"))
        }
    })?;
    let payload = sign1
        .payload
        .as_deref()
        .ok_or_else(|| PkiError::malformed("manifest", "no payload"))?;
    let m: Manifest =
        ciborium::from_reader(payload).map_err(|e| PkiError::malformed("manifest payload", e))?;
    if m.version != 1 {
        return Err(PkiError::malformed(
            "manifest",
            format!("unsupported version {}", m.version),
        ));
    }
    Ok(m)
}
