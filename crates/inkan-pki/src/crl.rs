//! Certificate revocation lists, one per family, signed by the family CA
//! (RFC 5280 §5): version 2, CRL number and authority key identifier.

use crate::cert::{key_id, IssuedCert};
use crate::signer::{self, CaSigner};
use crate::PkiError;
use der::asn1::{BitString, OctetString, Uint};
use der::{Decode, Encode};
use spki::AlgorithmIdentifierOwned;
use std::time::{Duration, SystemTime};
use x509_cert::certificate::Version;
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, CrlNumber};
use x509_cert::ext::Extension;
use x509_cert::serial_number::SerialNumber;

/// One revoked certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revoked {
    /// The certificate's serial number (big-endian bytes).
    pub serial: Vec<u8>,
    /// When it was revoked.
    pub time: SystemTime,
}

/// What a CRL verified against its CA says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedCrl {
    /// The CRL number.
    pub number: u64,
    /// The revoked certificates.
    pub revoked: Vec<Revoked>,
}

/// A signed CRL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crl {
    /// DER encoding.
    pub der: Vec<u8>,
}

impl Crl {
    /// PEM form (`X509 CRL`).
    pub fn to_pem(&self) -> String {
        crate::pem("X509 CRL", &self.der)
    }

    /// Parses a DER CRL.
    pub fn from_der(der: &[u8]) -> Result<Crl, PkiError> {
        CertificateList::from_der(der).map_err(|e| PkiError::malformed("CRL", e))?;
        Ok(Crl { der: der.to_vec() })
    }

    /// Checks that `ca` issued this CRL (issuer name and signature) and
    /// returns its number and entries. The CRL number is mandatory (RFC
    /// 5280 §5.2.3): a reader uses it to refuse an older list.
    pub fn verify(&self, ca: &IssuedCert) -> Result<VerifiedCrl, PkiError> {
        let l = CertificateList::from_der(&self.der).map_err(|e| PkiError::malformed("CRL", e))?;
        extension_policy(&l).map_err(|why| PkiError::malformed("CRL", why))?;
        if l.tbs_cert_list.issuer != ca.cert.tbs_certificate.subject {
            return Err(PkiError::BadSignature("the CRL names another issuer"));
        }
        let tbs = l
            .tbs_cert_list
            .to_der()
            .map_err(|e| PkiError::encode("TBSCertList", e))?;
        crate::cert::verify_der_signature(
            ca,
            &l.signature_algorithm.oid,
            &tbs,
            l.signature.raw_bytes(),
        )
        .map_err(|_| PkiError::BadSignature("CRL not signed by the family key"))?;
        let number = l
            .tbs_cert_list
            .crl_extensions
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .find(|e| e.extn_id == <CrlNumber as const_oid::AssociatedOid>::OID)
            .ok_or_else(|| PkiError::malformed("CRL", "no CRL number"))
            .and_then(|e| {
                CrlNumber::from_der(e.extn_value.as_bytes())
                    .map_err(|e| PkiError::malformed("CRL number", e))
            })?;
        let bytes = number.0.as_bytes();
        if bytes.len() > 8 {
            return Err(PkiError::malformed("CRL number", "wider than 64 bits"));
        }
        let mut be = [0u8; 8];
        be[8 - bytes.len()..].copy_from_slice(bytes);
        let mut revoked = Vec::new();
        for r in l.tbs_cert_list.revoked_certificates.unwrap_or_default() {
            revoked.push(Revoked {
                serial: r.serial_number.as_bytes().to_vec(),
                time: r.revocation_date.to_system_time(),
            });
        }
        Ok(VerifiedCrl {
            number: u64::from_be_bytes(be),
            revoked,
        })
    }

    /// Serial numbers listed as revoked.
    pub fn revoked_serials(&self) -> Result<Vec<Vec<u8>>, PkiError> {
        let l = CertificateList::from_der(&self.der).map_err(|e| PkiError::malformed("CRL", e))?;
        Ok(l.tbs_cert_list
            .revoked_certificates
            .unwrap_or_default()
            .iter()
            .map(|r| r.serial_number.as_bytes().to_vec())
            .collect())
    }
}

fn ext<T: const_oid::AssociatedOid + Encode>(value: &T) -> Result<Extension, PkiError> {
    Ok(Extension {
        extn_id: T::OID,
        critical: false,
        extn_value: OctetString::new(
            value
                .to_der()
                .map_err(|e| PkiError::encode("CRL extension", e))?,
        )
        .map_err(|e| PkiError::encode("CRL extension", e))?,
    })
}

/// What inkan requires of a CRL's extensions, in one place for the cloud's
/// CRL import and the device validator: a CRL number (RFC 5280 §5.2.3),
/// not marked critical (the same section requires it non-critical); and no
/// other critical extension, of the list or of an entry, since inkan
/// processes none of those that may be critical (delta CRLs, issuing
/// distribution points, indirect CRLs): a list whose meaning depends on one
/// is refused rather than half understood.
pub(crate) fn extension_policy(l: &CertificateList) -> Result<(), &'static str> {
    let number_oid = <CrlNumber as const_oid::AssociatedOid>::OID;
    let exts = l.tbs_cert_list.crl_extensions.as_deref().unwrap_or(&[]);
    let number = exts
        .iter()
        .find(|e| e.extn_id == number_oid)
        .ok_or("no CRL number")?;
    if number.critical {
        return Err("the CRL number is marked critical (RFC 5280 5.2.3: non-critical)");
    }
    if exts.iter().any(|e| e.critical) {
        return Err("a critical CRL extension inkan does not process");
    }
    let entries = l
        .tbs_cert_list
        .revoked_certificates
        .as_deref()
        .unwrap_or(&[]);
    if entries
        .iter()
        .flat_map(|r| r.crl_entry_extensions.as_deref().unwrap_or(&[]))
        .any(|e| e.critical)
    {
        return Err("a critical CRL entry extension inkan does not process");
    }
    Ok(())
}

/// Issues a CRL for `ca` listing `revoked`, valid for `validity` from now.
pub fn issue_crl(
    signer: &dyn CaSigner,
    ca: &IssuedCert,
    revoked: &[Revoked],
    crl_number: u64,
    validity: Duration,
) -> Result<Crl, PkiError> {
    ca.require_ca()?;
    if signer.public_point() != ca.public_point() {
        return Err(PkiError::KeyMismatch {
            subject: ca.subject(),
        });
    }
    let now = SystemTime::now();
    let t = crate::cert::time;
    let alg = AlgorithmIdentifierOwned {
        oid: signer.curve().signature_oid(),
        parameters: None,
    };
    let mut entries = Vec::with_capacity(revoked.len());
    for r in revoked {
        entries.push(RevokedCert {
            serial_number: SerialNumber::new(&r.serial)
                .map_err(|e| PkiError::malformed("serial number", e))?,
            revocation_date: t(r.time)?,
            crl_entry_extensions: None,
        });
    }
    let ski = ca
        .subject_key_id()
        .unwrap_or_else(|| key_id(&ca.public_point()));
    let tbs = TbsCertList {
        version: Version::V2,
        signature: alg.clone(),
        issuer: ca.cert.tbs_certificate.subject.clone(),
        this_update: t(now)?,
        next_update: Some(t(now + validity)?),
        revoked_certificates: (!entries.is_empty()).then_some(entries),
        crl_extensions: Some(vec![
            ext(&CrlNumber(
                Uint::new(&crl_number.to_be_bytes())
                    .map_err(|e| PkiError::encode("CRL number", e))?,
            ))?,
            ext(&AuthorityKeyIdentifier {
                key_identifier: Some(
                    OctetString::new(ski).map_err(|e| PkiError::encode("AKI", e))?,
                ),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            })?,
        ]),
    };
    let tbs_der = tbs
        .to_der()
        .map_err(|e| PkiError::encode("TBSCertList", e))?;
    let sig = signer::sign_der(signer, &tbs_der)?;
    let list = CertificateList {
        tbs_cert_list: tbs,
        signature_algorithm: alg,
        signature: BitString::from_bytes(&sig).map_err(|e| PkiError::encode("CRL signature", e))?,
    };
    Ok(Crl {
        der: list.to_der().map_err(|e| PkiError::encode("CRL", e))?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{CertPolicy, DeviceValidator, KeyCurve, SoftwareKey};

    /// A CRL of `ca`'s, its extensions changed by `edit`, signed again.
    fn edited(key: &SoftwareKey, ca: &IssuedCert, edit: impl FnOnce(&mut TbsCertList)) -> Crl {
        let crl = issue_crl(key, ca, &[], 7, Duration::from_secs(3600)).unwrap();
        let mut l = CertificateList::from_der(&crl.der).unwrap();
        edit(&mut l.tbs_cert_list);
        let sig = signer::sign_der(key, &l.tbs_cert_list.to_der().unwrap()).unwrap();
        l.signature = BitString::from_bytes(&sig).unwrap();
        Crl {
            der: l.to_der().unwrap(),
        }
    }

    #[test]
    fn critical_crl_number_and_unknown_critical_extensions_are_refused() {
        let key = SoftwareKey::generate(KeyCurve::P256);
        let ca =
            crate::cert::issue_root(&key, "crl test", "family", &CertPolicy::default()).unwrap();
        let validator = || {
            DeviceValidator::new(
                std::slice::from_ref(&ca.der),
                crate::validate::RequiredEku::ClientAuth,
            )
            .unwrap()
        };
        // As issued: taken by both readers.
        let plain = edited(&key, &ca, |_| {});
        assert_eq!(plain.verify(&ca).unwrap().number, 7);
        validator().add_crl(&plain.der).unwrap();
        let number_oid = <CrlNumber as const_oid::AssociatedOid>::OID;
        let cases: Vec<(&str, Crl)> = vec![
            (
                "CRL number marked critical",
                edited(&key, &ca, |t| {
                    for e in t.crl_extensions.as_mut().unwrap() {
                        if e.extn_id == number_oid {
                            e.critical = true;
                        }
                    }
                }),
            ),
            (
                "a critical delta CRL indicator",
                edited(&key, &ca, |t| {
                    t.crl_extensions.as_mut().unwrap().push(Extension {
                        extn_id: const_oid::ObjectIdentifier::new_unwrap("2.5.29.27"),
                        critical: true,
                        extn_value: OctetString::new(vec![0x02, 0x01, 0x05]).unwrap(),
                    });
                }),
            ),
            (
                "a critical entry extension",
                edited(&key, &ca, |t| {
                    t.revoked_certificates = Some(vec![RevokedCert {
                        serial_number: SerialNumber::new(&[0x42]).unwrap(),
                        revocation_date: crate::cert::time(SystemTime::now()).unwrap(),
                        crl_entry_extensions: Some(vec![Extension {
                            // Certificate issuer (indirect CRLs).
                            extn_id: const_oid::ObjectIdentifier::new_unwrap("2.5.29.29"),
                            critical: true,
                            extn_value: OctetString::new(vec![0x30, 0x00]).unwrap(),
                        }]),
                    }]);
                }),
            ),
            (
                "no CRL number",
                edited(&key, &ca, |t| {
                    t.crl_extensions
                        .as_mut()
                        .unwrap()
                        .retain(|e| e.extn_id != number_oid);
                }),
            ),
        ];
        for (what, crl) in cases {
            assert!(
                matches!(crl.verify(&ca), Err(PkiError::Malformed { .. })),
                "{what}: taken by the cloud's reader"
            );
            assert!(
                matches!(
                    validator().add_crl(&crl.der),
                    Err(crate::ValidationError::BadCrl(_))
                ),
                "{what}: taken by the validator"
            );
        }
    }
}
