//! A host checking the accessory on its bus, offline: a printer its
//! cartridge, a pump its filter. The host reads the accessory's
//! certificate from its chip, checks it against the certificate it pins
//! (the family's or the root's, with a CRL when it has one), has the chip
//! sign a fresh challenge with the key the certificate names (a clone that
//! copied a genuine certificate cannot), and reads the units of use left
//! in the chip's one-way usage counter. Using units decrements that
//! counter inside the chip, under the host MAC: the host keys derive from
//! the family's pairing key and the chip serial
//! ([`inkan_se::HostKeys::from_pairing`]), so only a genuine host can, and
//! nobody can raise it.

use crate::{read_der, SeSigner, SharedDriver, CERT_ZONE};
use inkan_proto::edhoc::crypto::SignatureKey;
use inkan_proto::edhoc::Suite;
use inkan_se::transport::Transport;

pub use crate::usage::USAGE_ZONE;

/// A genuine accessory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Genuine {
    /// The chip serial (hex).
    pub serial: String,
    /// The certificate's subject.
    pub subject: String,
    /// Units of use left (None: not metered).
    pub remaining: Option<u32>,
}

/// Why an accessory is refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Its certificate does not chain to the pinned certificate.
    #[error(
        "unknown root: the accessory's certificate does not chain to the pinned certificate ({0})"
    )]
    UnknownRoot(String),
    /// The certificate is revoked by the CRL the host holds.
    #[error("revoked: the accessory's certificate is on the revocation list")]
    Revoked,
    /// The certificate is not valid (expired, wrong use, malformed).
    #[error("invalid certificate: {0}")]
    Invalid(String),
    /// The chip cannot sign for the key its certificate names: a clone.
    #[error("clone: the chip cannot sign for the certificate it carries")]
    Clone,
    /// Units could not be used: exhausted (nothing used), not metered, or
    /// the chip refused the MAC'd read or decrement (the host keys are not
    /// the family's, or an answer did not verify).
    #[error(transparent)]
    Use(#[from] crate::usage::UseRefused),
    /// The chip refused or the bus failed.
    #[error("secure element: {0}")]
    Chip(#[from] inkan_se::DriverError),
    /// A zone does not hold what personalization put there.
    #[error(transparent)]
    Device(#[from] crate::DeviceError),
}

/// What the host trusts: pinned certificates (DER; the family's, or the
/// root's with the family's among `intermediates`) and CRLs (DER).
pub struct Trust {
    validator: inkan_pki::DeviceValidator,
    intermediates: Vec<Vec<u8>>,
}

impl Trust {
    /// Pins `anchors`, with `intermediates` for chains through them and
    /// `crls` from the issuing CAs.
    pub fn new(
        anchors: &[Vec<u8>],
        intermediates: &[Vec<u8>],
        crls: &[Vec<u8>],
    ) -> Result<Trust, inkan_pki::ValidationError> {
        let mut validator =
            inkan_pki::DeviceValidator::new(anchors, inkan_pki::validate::RequiredEku::ClientAuth)?;
        for c in crls {
            validator.add_crl(c)?;
        }
        Ok(Trust {
            validator,
            intermediates: intermediates.to_vec(),
        })
    }
}

/// Checks the accessory behind `driver`: certificate against `trust`, a
/// fresh challenge signed in the chip, and its units left.
pub fn verify<T: Transport + 'static>(
    driver: &SharedDriver<T>,
    trust: &Trust,
) -> Result<Genuine, Refused> {
    use inkan_pki::ValidationError as V;
    let (cert_der, serial) = {
        let mut d = driver.lock().map_err(|_| poisoned())?;
        (
            read_der(&mut d, CERT_ZONE)?,
            hex::encode_upper(d.serial().unwrap_or_default()),
        )
    };
    match trust.validator.validate(
        &cert_der,
        &trust.intermediates,
        std::time::SystemTime::now(),
    ) {
        Ok(_) => {}
        Err(V::UnknownIssuer | V::BadSignature) => {
            return Err(Refused::UnknownRoot(
                "no path to a pinned certificate".into(),
            ))
        }
        Err(V::Revoked) => return Err(Refused::Revoked),
        Err(e) => return Err(Refused::Invalid(e.to_string())),
    }
    let cert =
        inkan_pki::IssuedCert::from_der(&cert_der).map_err(|e| Refused::Invalid(e.to_string()))?;
    let suite = if cert.is_ed25519() {
        Suite::X25519EdDsa
    } else {
        Suite::P256Es256
    };
    let mut challenge = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut challenge);
    let mut msg = b"inkan accessory challenge v1".to_vec();
    msg.extend_from_slice(&challenge);
    // A chip without the certificate's key either refuses or signs with
    // another key: both are a clone.
    let sig = SeSigner::for_suite(driver.clone(), suite).sign(&msg);
    let genuine = sig
        .is_ok_and(|s| inkan_proto::edhoc::crypto::verify(suite, &cert.public_point(), &msg, &s));
    if !genuine {
        return Err(Refused::Clone);
    }
    let remaining = {
        let mut d = driver.lock().map_err(|_| poisoned())?;
        crate::usage::remaining(&mut d)?
    };
    Ok(Genuine {
        serial,
        subject: cert.subject(),
        remaining,
    })
}

/// Uses `count` units of a verified accessory: the chip decrements its
/// usage counter inside a session MAC'd with the host keys derived from
/// `pairing` and the chip serial. Returns the units left; nothing is used
/// when fewer than `count` are left.
pub fn use_units<T: Transport + 'static>(
    driver: &SharedDriver<T>,
    pairing: &[u8; 32],
    count: u32,
) -> Result<u32, Refused> {
    let mut d = driver.lock().map_err(|_| poisoned())?;
    let serial = d.serial().unwrap_or_default().to_vec();
    let aes256 = d.personality() == inkan_se::Personality::A120;
    // The read and the decrement both inside the MAC'd session: the
    // answers are authenticated too, so an old counter read replayed on
    // the bus does not verify. The session ends with the operation.
    d.open_session(inkan_se::HostKeys::from_pairing(pairing, &serial, aes256))?;
    let r = crate::usage::consume(&mut d, count);
    d.close_session();
    Ok(r?)
}

fn poisoned() -> Refused {
    Refused::Device(crate::DeviceError::Zone {
        zone: CERT_ZONE,
        reason: "driver lock poisoned",
    })
}
