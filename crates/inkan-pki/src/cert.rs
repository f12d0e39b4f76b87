//! Issuing certificates: a self-signed root, family CAs (intermediates with
//! pathLen 0), IEEE 802.1AR DevID device certificates and the manifest
//! signer's certificate. The TBS structure is built here and signed through
//! [`CaSigner`], so a token-held CA key issues exactly like a file-held one.

use crate::signer::{self, CaSigner, KeyCurve};
use crate::PkiError;
use const_oid::db::rfc4519;
use const_oid::db::rfc5280::ID_KP_CLIENT_AUTH;
use const_oid::{AssociatedOid, ObjectIdentifier};
use der::asn1::{Any, BitString, OctetString, PrintableStringRef, SetOfVec, Utf8StringRef};
use der::{Decode, Encode};
use sha2::Digest;
use spki::AlgorithmIdentifierOwned;
use std::time::{Duration, SystemTime};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

const YEAR: u64 = 365 * 24 * 3600 + 6 * 3600;

/// Validity policy, in whole years from issuance. Issued certificates never
/// outlive their issuer: `notAfter` is clamped to the issuer's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CertPolicy {
    /// Root CA lifetime.
    pub root_years: u32,
    /// Family CA lifetime.
    pub family_years: u32,
    /// Device certificate lifetime.
    pub device_years: u32,
    /// How far `notBefore` is set in the past, to absorb clock skew.
    pub backdate_secs: u64,
}

impl Default for CertPolicy {
    fn default() -> Self {
        CertPolicy {
            root_years: 30,
            family_years: 25,
            device_years: 20,
            backdate_secs: 3600,
        }
    }
}

/// What goes into a device certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceProfile {
    /// The chip's serial number, hex: the subject's serialNumber, unique.
    pub serial: String,
    /// The organization (subject O).
    pub organization: String,
    /// The family name (subject OU).
    pub family: String,
    /// Add keyAgreement to the key usage (the key also does ECDH).
    pub key_agreement: bool,
    /// The device's identity for life, carried in the subjectAltName
    /// (see [`crate::ueid`]).
    pub ueid: Option<crate::Ueid>,
}

/// A certificate and its DER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCert {
    /// DER encoding.
    pub der: Vec<u8>,
    /// Parsed form.
    pub cert: Certificate,
}

impl IssuedCert {
    /// Parses DER.
    pub fn from_der(der: &[u8]) -> Result<IssuedCert, PkiError> {
        let cert = Certificate::from_der(der).map_err(|e| PkiError::malformed("certificate", e))?;
        Ok(IssuedCert {
            der: der.to_vec(),
            cert,
        })
    }

    /// Parses PEM or DER (the first certificate).
    pub fn from_pem_or_der(bytes: &[u8]) -> Result<IssuedCert, PkiError> {
        let ders = crate::pem_or_der("CERTIFICATE", bytes)?;
        let first = ders
            .first()
            .ok_or_else(|| PkiError::malformed("certificate", "empty"))?;
        IssuedCert::from_der(first)
    }

    /// PEM form.
    pub fn to_pem(&self) -> String {
        crate::pem("CERTIFICATE", &self.der)
    }

    /// The subject as an RFC 4514 string.
    pub fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    /// The serial number, hex.
    pub fn serial_hex(&self) -> String {
        hex::encode(self.cert.tbs_certificate.serial_number.as_bytes())
    }

    /// The public key as a SEC1 point.
    pub fn public_point(&self) -> Vec<u8> {
        self.cert
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes()
            .to_vec()
    }

    /// Whether the subject key is Ed25519.
    pub fn is_ed25519(&self) -> bool {
        self.cert
            .tbs_certificate
            .subject_public_key_info
            .algorithm
            .oid
            == signer::ED25519
    }

    /// The key's curve, if it is one inkan uses.
    pub fn curve(&self) -> Option<KeyCurve> {
        KeyCurve::of_point(&self.public_point())
    }

    /// SHA-256 of the DER: the certificate's fingerprint.
    pub fn fingerprint(&self) -> [u8; 32] {
        sha2::Sha256::digest(&self.der).into()
    }

    /// notBefore and notAfter.
    pub fn validity(&self) -> (SystemTime, SystemTime) {
        let v = &self.cert.tbs_certificate.validity;
        (v.not_before.to_system_time(), v.not_after.to_system_time())
    }

    /// The subject's serialNumber attribute, if any.
    pub fn subject_serial_number(&self) -> Option<String> {
        attribute(&self.cert.tbs_certificate.subject, rfc4519::SERIAL_NUMBER)
    }

    /// The UEID a DevID certificate carries in its subjectAltName, if any
    /// (see [`crate::ueid`]). A malformed one reads as none.
    pub fn ueid(&self) -> Option<crate::Ueid> {
        use x509_cert::ext::pkix::name::GeneralName;
        let (_, san) = self
            .cert
            .tbs_certificate
            .get::<x509_cert::ext::pkix::SubjectAltName>()
            .ok()??;
        san.0.iter().find_map(|g| match g {
            GeneralName::OtherName(o) if o.type_id == ID_ON_HARDWARE_MODULE_NAME => {
                let v = o.value.to_der().ok()?;
                hardware_module_ueid(&v)
            }
            _ => None,
        })
    }

    /// The subject's OU attribute (the family name in device certificates).
    pub fn subject_org_unit(&self) -> Option<String> {
        attribute(&self.cert.tbs_certificate.subject, rfc4519::OU)
    }

    /// The subject key identifier.
    pub fn subject_key_id(&self) -> Option<Vec<u8>> {
        let (_, ski) = self
            .cert
            .tbs_certificate
            .get::<SubjectKeyIdentifier>()
            .ok()??;
        Some(ski.0.as_bytes().to_vec())
    }

    /// Checks this is a CA certificate that may issue: basicConstraints CA
    /// and keyCertSign.
    pub fn require_ca(&self) -> Result<(), PkiError> {
        let tbs = &self.cert.tbs_certificate;
        let not_ca = |reason| PkiError::NotACa {
            subject: self.subject(),
            reason,
        };
        match tbs.get::<BasicConstraints>() {
            Ok(Some((_, bc))) if bc.ca => {}
            Ok(_) => return Err(not_ca("basicConstraints does not say CA")),
            Err(_) => return Err(not_ca("basicConstraints does not parse")),
        }
        match tbs.get::<KeyUsage>() {
            Ok(Some((_, ku))) if ku.0.contains(KeyUsages::KeyCertSign) => Ok(()),
            _ => Err(not_ca("keyUsage lacks keyCertSign")),
        }
    }

    /// Checks the certificate is valid at `now`.
    pub fn require_valid_at(&self, now: SystemTime) -> Result<(), PkiError> {
        let (nb, na) = self.validity();
        if now < nb || now > na {
            let v = &self.cert.tbs_certificate.validity;
            return Err(PkiError::CaNotValidNow {
                subject: self.subject(),
                not_before: v.not_before.to_string(),
                not_after: v.not_after.to_string(),
            });
        }
        Ok(())
    }
}

fn attribute(name: &Name, oid: ObjectIdentifier) -> Option<String> {
    name.0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|a| a.oid == oid)
        .and_then(|a| {
            Utf8StringRef::try_from(&a.value)
                .map(|s| s.as_str().to_string())
                .or_else(|_| PrintableStringRef::try_from(&a.value).map(|s| s.as_str().to_string()))
                .ok()
        })
}

/// Builds a distinguished name. `serialNumber` and `C` are PrintableString
/// (X.520), the rest UTF8String.
pub fn name(attrs: &[(ObjectIdentifier, &str)]) -> Result<Name, PkiError> {
    let mut rdns = Vec::new();
    for (oid, value) in attrs {
        let any = if *oid == rfc4519::SERIAL_NUMBER || *oid == rfc4519::C {
            Any::encode_from(
                &PrintableStringRef::new(value).map_err(|e| PkiError::malformed("name", e))?,
            )
        } else {
            Any::encode_from(
                &Utf8StringRef::new(value).map_err(|e| PkiError::malformed("name", e))?,
            )
        }
        .map_err(|e| PkiError::encode("name", e))?;
        let atv = AttributeTypeAndValue {
            oid: *oid,
            value: any,
        };
        let set = SetOfVec::try_from(vec![atv]).map_err(|e| PkiError::encode("name", e))?;
        rdns.push(RelativeDistinguishedName(set));
    }
    Ok(RdnSequence(rdns))
}

/// RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
pub(crate) fn time(t: SystemTime) -> Result<Time, PkiError> {
    match der::asn1::UtcTime::from_system_time(t) {
        Ok(u) => Ok(Time::UtcTime(u)),
        Err(_) => der::asn1::GeneralizedTime::from_system_time(t)
            .map(Time::GeneralTime)
            .map_err(|e| PkiError::encode("time", e)),
    }
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut b = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    b[0] = (b[0] & 0x7F) | 0x01;
    SerialNumber::new(&b).map_err(|e| PkiError::encode("serial number", e))
}

/// Key identifier: the leftmost 160 bits of the SHA-256 of the public key
/// (RFC 7093 §2 method 1).
pub fn key_id(point: &[u8]) -> Vec<u8> {
    sha2::Sha256::digest(point)[..20].to_vec()
}

/// id-on-hardwareModuleName (RFC 4108).
pub const ID_ON_HARDWARE_MODULE_NAME: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.8.4");

/// Length of the UEID hwType OID's content octets.
const HW_TYPE_LEN: u8 = 20;

/// The DER of `HardwareModuleName ::= SEQUENCE { hwType OBJECT IDENTIFIER,
/// hwSerialNum OCTET STRING }` naming a UEID.
fn hardware_module_name(ueid: &crate::Ueid) -> Result<Any, PkiError> {
    let oid = crate::ueid::HW_TYPE_UEID;
    let serial = OctetString::new(ueid.as_bytes())
        .and_then(|o| o.to_der())
        .map_err(|e| PkiError::encode("hwSerialNum", e))?;
    let mut body = vec![0x06, HW_TYPE_LEN];
    body.extend_from_slice(&oid);
    body.extend_from_slice(&serial);
    let mut seq = vec![0x30];
    der::Length::try_from(body.len())
        .and_then(|l| l.encode_to_vec(&mut seq))
        .map_err(|e| PkiError::encode("HardwareModuleName", e))?;
    seq.extend_from_slice(&body);
    Any::from_der(&seq).map_err(|e| PkiError::encode("HardwareModuleName", e))
}

/// The UEID in a HardwareModuleName's DER, if its hwType is the UEID type.
fn hardware_module_ueid(der: &[u8]) -> Option<crate::Ueid> {
    let any = Any::from_der(der).ok()?;
    if der::Tagged::tag(&any) != der::Tag::Sequence {
        return None;
    }
    let body = any.value();
    let oid = crate::ueid::HW_TYPE_UEID;
    let rest = body.strip_prefix(&[0x06, HW_TYPE_LEN][..])?;
    let rest = rest.strip_prefix(&oid[..])?;
    let serial = OctetString::from_der(rest).ok()?;
    crate::Ueid::from_bytes(serial.as_bytes()).ok()
}

fn ext<T: AssociatedOid + Encode>(critical: bool, value: &T) -> Result<Extension, PkiError> {
    Ok(Extension {
        extn_id: T::OID,
        critical,
        extn_value: OctetString::new(
            value
                .to_der()
                .map_err(|e| PkiError::encode("extension", e))?,
        )
        .map_err(|e| PkiError::encode("extension", e))?,
    })
}

struct Tbs {
    issuer: Name,
    subject: Name,
    not_before: SystemTime,
    not_after: SystemTime,
    point: Vec<u8>,
    extensions: Vec<Extension>,
}

fn sign(tbs: Tbs, signer: &dyn CaSigner) -> Result<IssuedCert, PkiError> {
    let alg = AlgorithmIdentifierOwned {
        oid: signer.curve().signature_oid(),
        parameters: None,
    };
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: random_serial()?,
        signature: alg.clone(),
        issuer: tbs.issuer,
        validity: Validity {
            not_before: time(tbs.not_before)?,
            not_after: time(tbs.not_after)?,
        },
        subject: tbs.subject,
        subject_public_key_info: signer::spki_of(&tbs.point)?,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(tbs.extensions),
    };
    let tbs_der = tbs
        .to_der()
        .map_err(|e| PkiError::encode("TBSCertificate", e))?;
    let sig = signer::sign_der(signer, &tbs_der)?;
    let cert = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: alg,
        signature: BitString::from_bytes(&sig).map_err(|e| PkiError::encode("signature", e))?,
    };
    let der = cert
        .to_der()
        .map_err(|e| PkiError::encode("certificate", e))?;
    Ok(IssuedCert { der, cert })
}

/// Checks that `signer` may issue under `ca` now and returns the validity
/// window for a child certificate of `years`.
fn child_window(
    ca: &IssuedCert,
    signer: &dyn CaSigner,
    years: u32,
    policy: &CertPolicy,
) -> Result<(SystemTime, SystemTime), PkiError> {
    ca.require_ca()?;
    let now = SystemTime::now();
    ca.require_valid_at(now)?;
    if signer.public_point() != ca.public_point() {
        return Err(PkiError::KeyMismatch {
            subject: ca.subject(),
        });
    }
    let (ca_nb, ca_na) = ca.validity();
    let nb = (now - Duration::from_secs(policy.backdate_secs)).max(ca_nb);
    let na = (now + Duration::from_secs(u64::from(years) * YEAR)).min(ca_na);
    Ok((nb, na))
}

fn ca_key_usage() -> KeyUsage {
    KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign)
}

/// A self-signed root CA.
pub fn issue_root(
    signer: &dyn CaSigner,
    organization: &str,
    common_name: &str,
    policy: &CertPolicy,
) -> Result<IssuedCert, PkiError> {
    let subject = name(&[
        (rfc4519::C, "JP"),
        (rfc4519::O, organization),
        (rfc4519::CN, common_name),
    ])?;
    let point = signer.public_point();
    let now = SystemTime::now();
    sign(
        Tbs {
            issuer: subject.clone(),
            subject,
            not_before: now - Duration::from_secs(policy.backdate_secs),
            not_after: now + Duration::from_secs(u64::from(policy.root_years) * YEAR),
            extensions: vec![
                ext(
                    true,
                    &BasicConstraints {
                        ca: true,
                        path_len_constraint: None,
                    },
                )?,
                ext(true, &ca_key_usage())?,
                ext(
                    false,
                    &SubjectKeyIdentifier(
                        OctetString::new(key_id(&point)).map_err(|e| PkiError::encode("SKI", e))?,
                    ),
                )?,
            ],
            point,
        },
        signer,
    )
}

fn aki(issuer: &IssuedCert) -> Result<Extension, PkiError> {
    let id = issuer
        .subject_key_id()
        .unwrap_or_else(|| key_id(&issuer.public_point()));
    ext(
        false,
        &AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(id).map_err(|e| PkiError::encode("AKI", e))?),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        },
    )
}

fn ski(point: &[u8]) -> Result<Extension, PkiError> {
    ext(
        false,
        &SubjectKeyIdentifier(
            OctetString::new(key_id(point)).map_err(|e| PkiError::encode("SKI", e))?,
        ),
    )
}

/// A family CA under the root: an intermediate that may only issue device
/// certificates (pathLen 0).
pub fn issue_family(
    root_signer: &dyn CaSigner,
    root: &IssuedCert,
    family_point: &[u8],
    organization: &str,
    family: &str,
    policy: &CertPolicy,
) -> Result<IssuedCert, PkiError> {
    let (nb, na) = child_window(root, root_signer, policy.family_years, policy)?;
    sign(
        Tbs {
            issuer: root.cert.tbs_certificate.subject.clone(),
            subject: name(&[
                (rfc4519::C, "JP"),
                (rfc4519::O, organization),
                (rfc4519::CN, &format!("{family} family CA")),
            ])?,
            not_before: nb,
            not_after: na,
            point: family_point.to_vec(),
            extensions: vec![
                ext(
                    true,
                    &BasicConstraints {
                        ca: true,
                        path_len_constraint: Some(0),
                    },
                )?,
                ext(true, &ca_key_usage())?,
                ski(family_point)?,
                aki(root)?,
            ],
        },
        root_signer,
    )
}

/// A device certificate following the IEEE 802.1AR DevID profile: the
/// subject carries the chip serial as serialNumber; key usage
/// digitalSignature (and keyAgreement when the key does ECDH); EKU
/// clientAuth; SKI and AKI.
pub fn issue_device(
    family_signer: &dyn CaSigner,
    family_ca: &IssuedCert,
    device_point: &[u8],
    profile: &DeviceProfile,
    policy: &CertPolicy,
) -> Result<IssuedCert, PkiError> {
    let (nb, na) = child_window(family_ca, family_signer, policy.device_years, policy)?;
    if profile.serial.is_empty() || !profile.serial.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(PkiError::malformed(
            "device serial",
            format!("{:?} is not an alphanumeric serial", profile.serial),
        ));
    }
    let mut ku = KeyUsages::DigitalSignature.into();
    // An Ed25519 key only signs (RFC 8410 §5): no keyAgreement.
    if profile.key_agreement && !signer::is_ed25519_key(device_point) {
        ku |= KeyUsages::KeyAgreement;
    }
    sign(
        Tbs {
            issuer: family_ca.cert.tbs_certificate.subject.clone(),
            subject: name(&[
                (rfc4519::O, &profile.organization),
                (rfc4519::OU, &profile.family),
                (
                    rfc4519::CN,
                    &format!("{}-{}", profile.family, profile.serial),
                ),
                (rfc4519::SERIAL_NUMBER, &profile.serial),
            ])?,
            not_before: nb,
            not_after: na,
            point: device_point.to_vec(),
            extensions: {
                let mut e = vec![
                    ext(true, &KeyUsage(ku))?,
                    ext(false, &ExtendedKeyUsage(vec![ID_KP_CLIENT_AUTH]))?,
                    ski(device_point)?,
                    aki(family_ca)?,
                ];
                if let Some(u) = &profile.ueid {
                    use x509_cert::ext::pkix::name::{GeneralName, OtherName};
                    e.push(ext(
                        false,
                        &x509_cert::ext::pkix::SubjectAltName(vec![GeneralName::OtherName(
                            OtherName {
                                type_id: ID_ON_HARDWARE_MODULE_NAME,
                                value: hardware_module_name(u)?,
                            },
                        )]),
                    )?);
                }
                e
            },
        },
        family_signer,
    )
}

/// An end-entity certificate for a signing key certified directly under
/// the root (the batch-manifest signer): digitalSignature only, no EKU.
pub fn issue_signer(
    root_signer: &dyn CaSigner,
    root: &IssuedCert,
    point: &[u8],
    organization: &str,
    common_name: &str,
    policy: &CertPolicy,
) -> Result<IssuedCert, PkiError> {
    let (nb, na) = child_window(root, root_signer, policy.family_years, policy)?;
    sign(
        Tbs {
            issuer: root.cert.tbs_certificate.subject.clone(),
            subject: name(&[
                (rfc4519::C, "JP"),
                (rfc4519::O, organization),
                (rfc4519::CN, common_name),
            ])?,
            not_before: nb,
            not_after: na,
            point: point.to_vec(),
            extensions: vec![
                ext(true, &KeyUsage(KeyUsages::DigitalSignature.into()))?,
                ski(point)?,
                aki(root)?,
            ],
        },
        root_signer,
    )
}

/// Verifies that `child` was signed by `issuer`'s key (signature only).
pub fn verify_issued_by(child: &IssuedCert, issuer: &IssuedCert) -> Result<(), PkiError> {
    let tbs = child
        .cert
        .tbs_certificate
        .to_der()
        .map_err(|e| PkiError::encode("TBSCertificate", e))?;
    verify_der_signature(
        issuer,
        &child.cert.signature_algorithm.oid,
        &tbs,
        child.cert.signature.raw_bytes(),
    )
    .map_err(|_| PkiError::BadSignature("certificate not signed by the given issuer"))
}

/// Verifies that `child` was signed by the key `point` (a SEC1 P-256 or
/// P-384 point): how a device checks a certificate against a pinned key.
pub fn verify_signed_by_key(child: &IssuedCert, point: &[u8]) -> Result<(), PkiError> {
    let tbs = child
        .cert
        .tbs_certificate
        .to_der()
        .map_err(|e| PkiError::encode("TBSCertificate", e))?;
    verify_with_point(
        point,
        &child.cert.signature_algorithm.oid,
        &tbs,
        child.cert.signature.raw_bytes(),
    )
    .map_err(|_| PkiError::BadSignature("certificate not signed by the given key"))
}

/// Checks a DER ECDSA signature with algorithm `alg` over `signed` with
/// `issuer`'s key (P-256 with SHA-256, or P-384 with SHA-384).
pub(crate) fn verify_der_signature(
    issuer: &IssuedCert,
    alg: &ObjectIdentifier,
    signed: &[u8],
    sig: &[u8],
) -> Result<(), PkiError> {
    verify_with_point(&issuer.public_point(), alg, signed, sig)
}

fn verify_with_point(
    point: &[u8],
    alg: &ObjectIdentifier,
    signed: &[u8],
    sig: &[u8],
) -> Result<(), PkiError> {
    let curve =
        KeyCurve::of_point(point).ok_or(PkiError::BadSignature("issuer key is not P-256/P-384"))?;
    let raw = match curve {
        KeyCurve::P256 => p256::ecdsa::Signature::from_der(sig).map(|s| s.to_bytes().to_vec()),
        KeyCurve::P384 => p384::ecdsa::Signature::from_der(sig).map(|s| s.to_bytes().to_vec()),
    }
    .map_err(|_| PkiError::BadSignature("signature is not DER ECDSA"))?;
    if *alg == curve.signature_oid() && signer::verify_raw(point, signed, &raw) {
        Ok(())
    } else {
        Err(PkiError::BadSignature("signature does not verify"))
    }
}
