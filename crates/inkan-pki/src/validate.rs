//! The cloud's device-certificate validator, built on rustls-webpki: path
//! building with its work budget, time, the required EKU as a parameter,
//! revocation lists, and the most specific error first.

use der::Decode;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use std::time::SystemTime;
use webpki::{
    CertRevocationList, EndEntityCert, KeyUsage, OwnedCertRevocationList, RevocationCheckDepth,
    RevocationOptionsBuilder, UnknownStatusPolicy,
};

/// Why a device certificate was refused. Ordered as webpki ranks them: the
/// most useful reason is reported when several paths fail.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The certificate (or one in its chain) does not parse.
    #[error("malformed certificate: {0}")]
    Malformed(String),
    /// No path to a registered CA.
    #[error("unknown issuer: the certificate does not chain to a registered CA")]
    UnknownIssuer,
    /// A signature in the chain does not verify (forged or altered).
    #[error("bad signature in the certificate chain")]
    BadSignature,
    /// Expired.
    #[error("certificate expired")]
    Expired,
    /// Not yet valid.
    #[error("certificate not yet valid")]
    NotYetValid,
    /// Revoked by its family's CRL.
    #[error("certificate revoked")]
    Revoked,
    /// The required extended key usage is missing.
    #[error("required extended key usage not present")]
    WrongEku,
    /// A CA certificate was presented as the device certificate, or a
    /// device certificate used as a CA.
    #[error("CA/end-entity role violated: {0}")]
    Role(&'static str),
    /// The path is longer than a CA allows.
    #[error("path length constraint violated")]
    PathLen,
    /// Path building ran out of its work budget (a hostile chain).
    #[error("path building budget exceeded")]
    Budget,
    /// A revocation list is unusable (unsigned by a CRL signer, no CRL
    /// number, bad signature).
    #[error("bad revocation list: {0}")]
    BadCrl(&'static str),
    /// The device key is not of an allowed type (P-256 or P-384).
    #[error("device key type not allowed: {0}")]
    KeyPolicy(String),
    /// Anything else webpki refuses.
    #[error("certificate refused: {0}")]
    Other(String),
}

impl From<webpki::Error> for ValidationError {
    fn from(e: webpki::Error) -> ValidationError {
        use webpki::Error as E;
        match e {
            E::UnknownIssuer => ValidationError::UnknownIssuer,
            E::InvalidSignatureForPublicKey
            | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
            | E::UnsupportedSignatureAlgorithmContext(_)
            | E::SignatureAlgorithmMismatch => ValidationError::BadSignature,
            E::CertExpired { .. } => ValidationError::Expired,
            E::CertNotValidYet { .. } => ValidationError::NotYetValid,
            E::CertRevoked => ValidationError::Revoked,
            E::RequiredEkuNotFoundContext(_) => ValidationError::WrongEku,
            E::CaUsedAsEndEntity => {
                ValidationError::Role("a CA certificate used as a device certificate")
            }
            E::EndEntityUsedAsCa => ValidationError::Role("a device certificate used as a CA"),
            E::PathLenConstraintViolated => ValidationError::PathLen,
            E::MaximumPathBuildCallsExceeded
            | E::MaximumSignatureChecksExceeded
            | E::MaximumPathDepthExceeded => ValidationError::Budget,
            E::IssuerNotCrlSigner => {
                ValidationError::BadCrl("the CRL issuer lacks the cRLSign key usage")
            }
            E::InvalidCrlSignatureForPublicKey => {
                ValidationError::BadCrl("the CRL signature does not verify")
            }
            E::BadDer | E::BadDerTime | E::TrailingData(_) => {
                ValidationError::Malformed(format!("{e:?}"))
            }
            other => ValidationError::Other(format!("{other:?}")),
        }
    }
}

/// Which extended key usage a validation requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequiredEku {
    /// id-kp-clientAuth: devices in production.
    ClientAuth,
    /// id-kp-serverAuth (test suites whose leaves carry it).
    ServerAuth,
    /// Any other, by the DER value bytes of its OID.
    Oid(&'static [u8]),
}

impl RequiredEku {
    fn usage(self) -> KeyUsage {
        match self {
            RequiredEku::ClientAuth => KeyUsage::client_auth(),
            RequiredEku::ServerAuth => KeyUsage::server_auth(),
            RequiredEku::Oid(o) => KeyUsage::required(o),
        }
    }
}

/// What a successful validation proves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatedDevice {
    /// DER of the CA certificate directly above the device (its family),
    /// or of the trust anchor when the device was issued by it.
    pub issuer_der: Option<Vec<u8>>,
}

/// Validates device certificates against registered CAs.
pub struct DeviceValidator {
    anchors: Vec<TrustAnchor<'static>>,
    anchor_certs: Vec<x509_cert::Certificate>,
    /// Issuer names of the CRLs, to check each against its issuing CA.
    crl_issuers: Vec<x509_cert::name::Name>,
    crls: Vec<OwnedCertRevocationList>,
    eku: RequiredEku,
}

impl std::fmt::Debug for DeviceValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceValidator")
            .field("anchors", &self.anchors.len())
            .field("crls", &self.crls.len())
            .finish()
    }
}

impl DeviceValidator {
    /// A validator trusting these CA certificates (DER).
    pub fn new(anchors: &[Vec<u8>], eku: RequiredEku) -> Result<DeviceValidator, ValidationError> {
        let mut out = Vec::with_capacity(anchors.len());
        let mut certs = Vec::with_capacity(anchors.len());
        for a in anchors {
            let der = CertificateDer::from(a.as_slice());
            let ta = webpki::anchor_from_trusted_cert(&der).map_err(ValidationError::from)?;
            out.push(ta.to_owned());
            certs.push(
                x509_cert::Certificate::from_der(a)
                    .map_err(|e| ValidationError::Malformed(e.to_string()))?,
            );
        }
        Ok(DeviceValidator {
            anchors: out,
            anchor_certs: certs,
            crl_issuers: Vec::new(),
            crls: Vec::new(),
            eku,
        })
    }

    /// Adds a CRL (DER). Its signature is checked against the issuing CA
    /// during validation. A CRL without a CRL number (RFC 5280 §5.2.3: a
    /// conforming issuer MUST include it) is refused.
    pub fn add_crl(&mut self, der: &[u8]) -> Result<(), ValidationError> {
        let list = x509_cert::crl::CertificateList::from_der(der)
            .map_err(|e| ValidationError::Malformed(e.to_string()))?;
        crate::crl::extension_policy(&list).map_err(ValidationError::BadCrl)?;
        self.crls
            .push(OwnedCertRevocationList::from_der(der).map_err(ValidationError::from)?);
        self.crl_issuers.push(list.tbs_cert_list.issuer);
        Ok(())
    }

    /// A CRL must come from a CA allowed to sign CRLs: webpki cannot see
    /// the key usage of a trust anchor, so it is checked here.
    fn check_crl_signers(&self) -> Result<(), ValidationError> {
        use x509_cert::ext::pkix::{KeyUsage, KeyUsages};
        for issuer in &self.crl_issuers {
            for ca in self
                .anchor_certs
                .iter()
                .filter(|c| &c.tbs_certificate.subject == issuer)
            {
                if let Ok(Some((_, ku))) = ca.tbs_certificate.get::<KeyUsage>() {
                    if !ku.0.contains(KeyUsages::CRLSign) {
                        return Err(ValidationError::BadCrl(
                            "the CRL issuer lacks the cRLSign key usage",
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Validates `leaf` with the `intermediates` the device presented, at `time`.
    pub fn validate(
        &self,
        leaf: &[u8],
        intermediates: &[Vec<u8>],
        time: SystemTime,
    ) -> Result<ValidatedDevice, ValidationError> {
        self.check_crl_signers()?;
        check_leaf_key(leaf)?;
        let leaf_der = CertificateDer::from(leaf);
        let ee = EndEntityCert::try_from(&leaf_der).map_err(ValidationError::from)?;
        let inter: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        let since = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let crls: Vec<CertRevocationList<'_>> = self
            .crls
            .iter()
            .map(|c| CertRevocationList::Owned(c.clone()))
            .collect();
        let crl_refs: Vec<&CertRevocationList<'_>> = crls.iter().collect();
        let revocation = RevocationOptionsBuilder::new(&crl_refs).ok().map(|b| {
            b.with_depth(RevocationCheckDepth::EndEntity)
                .with_status_policy(UnknownStatusPolicy::Allow)
                .build()
        });
        let path = ee
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &self.anchors,
                &inter,
                UnixTime::since_unix_epoch(since),
                self.eku.usage(),
                revocation,
                None,
            )
            .map_err(ValidationError::from)?;
        let issuer_der = path
            .intermediate_certificates()
            .next()
            .map(|c| c.der().to_vec());
        Ok(ValidatedDevice { issuer_der })
    }
}

/// Device keys must be EC P-256 or P-384, or Ed25519: weak, legacy or unexpected key
/// types are refused before any path is built.
fn check_leaf_key(leaf: &[u8]) -> Result<(), ValidationError> {
    let cert = x509_cert::Certificate::from_der(leaf)
        .map_err(|e| ValidationError::Malformed(e.to_string()))?;
    let alg = &cert.tbs_certificate.subject_public_key_info.algorithm;
    if alg.oid == crate::signer::ED25519 && alg.parameters.is_none() {
        return Ok(());
    }
    if alg.oid != crate::signer::EC_PUBLIC_KEY {
        return Err(ValidationError::KeyPolicy(format!("algorithm {}", alg.oid)));
    }
    let curve = alg
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<const_oid::ObjectIdentifier>().ok())
        .ok_or_else(|| ValidationError::KeyPolicy("EC key without a named curve".into()))?;
    if curve != crate::signer::SECP256R1 && curve != crate::signer::SECP384R1 {
        return Err(ValidationError::KeyPolicy(format!("curve {curve}")));
    }
    Ok(())
}
