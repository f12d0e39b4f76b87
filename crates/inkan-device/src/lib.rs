//! The device agent's link between the secure element and the device
//! protocol: EDHOC's ephemeral key lives in the chip's single-use slot, the
//! shared secret comes from the chip's Establish Key, and Signature_3 is
//! made by the chip's Generate Signature over the hash of the
//! Sig_structure. The device's certificate and the cloud key it pins are
//! read from the chip's zones.

use inkan_proto::edhoc::crypto::{p256_point_from_x, EphemeralKey, SignatureKey};
use inkan_proto::edhoc::{EdhocError, Suite};
use inkan_se::transport::Transport;
use inkan_se::{Curve, Driver};
use sha2::Digest;
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

pub mod accessory;
pub mod firmware;
pub mod usage;

/// A driver shared by the EDHOC key objects of one exchange.
pub type SharedDriver<T> = Arc<Mutex<Driver<T>>>;

/// The slot of the device key (certified at personalization).
pub const DEVICE_KEY_SLOT: u8 = 0;
/// Zone of the device certificate.
pub const CERT_ZONE: u8 = 0;
/// Zone of the pinned cloud authentication key.
pub const CLOUD_KEY_ZONE: u8 = 1;

fn key_err(e: impl std::fmt::Display) -> EdhocError {
    EdhocError::Key(format!("secure element: {e}"))
}

/// The chip curve of a suite's ephemeral key.
fn ephemeral_curve(suite: Suite) -> Curve {
    match suite {
        Suite::P256Es256 => Curve::P256,
        Suite::X25519EdDsa => Curve::X25519,
    }
}

/// The EDHOC ephemeral key (P-256 for suite 2, X25519 for suite 0),
/// generated in the chip's ephemeral slot; the chip erases it after its one
/// key establishment.
pub struct SeEphemeral<T: Transport> {
    driver: SharedDriver<T>,
    suite: Suite,
    public: Vec<u8>,
}

impl<T: Transport + 'static> SeEphemeral<T> {
    /// Has the chip generate a suite-2 key; only the public key leaves it.
    pub fn generate(driver: SharedDriver<T>) -> Result<Self, EdhocError> {
        Self::generate_for(driver, Suite::P256Es256)
    }

    /// Has the chip generate the ephemeral key of `suite`.
    pub fn generate_for(driver: SharedDriver<T>, suite: Suite) -> Result<Self, EdhocError> {
        let point = {
            let mut d = driver.lock().map_err(|_| key_err("driver lock poisoned"))?;
            d.generate_ephemeral_key(ephemeral_curve(suite))
                .map_err(key_err)?
        };
        // EDHOC carries the x-coordinate of a P-256 key, the whole X25519 key.
        let public = match suite {
            Suite::P256Es256 => point.get(1..33),
            Suite::X25519EdDsa => point.get(..32),
        }
        .ok_or_else(|| key_err("short public key"))?
        .to_vec();
        Ok(SeEphemeral {
            driver,
            suite,
            public,
        })
    }
}

impl<T: Transport + 'static> EphemeralKey for SeEphemeral<T> {
    fn public(&self) -> Vec<u8> {
        self.public.clone()
    }

    fn agree(self: Box<Self>, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, EdhocError> {
        let point = match self.suite {
            Suite::P256Es256 => p256_point_from_x(peer).ok_or(EdhocError::InvalidEphemeralKey)?,
            Suite::X25519EdDsa if peer.len() == 32 => peer.to_vec(),
            Suite::X25519EdDsa => return Err(EdhocError::InvalidEphemeralKey),
        };
        let mut d = self
            .driver
            .lock()
            .map_err(|_| key_err("driver lock poisoned"))?;
        d.establish_key(
            inkan_se::driver::EPHEMERAL_SLOT,
            ephemeral_curve(self.suite),
            &point,
        )
        .map_err(|e| {
            if e.status() == Some(inkan_se::Status::INVALID_PUBLIC_KEY) {
                EdhocError::InvalidEphemeralKey
            } else {
                key_err(e)
            }
        })
    }
}

/// The device key in slot 0. Suite 2 (ES256): SHA-256 of the Sig_structure
/// on the host, ECDSA in the chip. Suite 0 (EdDSA): the chip signs the
/// Sig_structure itself, as pure Ed25519 requires.
pub struct SeSigner<T: Transport> {
    driver: SharedDriver<T>,
    suite: Suite,
    slot: u8,
}

impl<T: Transport> SeSigner<T> {
    /// A suite-2 signer over the chip's device key.
    pub fn new(driver: SharedDriver<T>) -> Self {
        Self::for_suite(driver, Suite::P256Es256)
    }

    /// A signer over the chip's device key for `suite`.
    pub fn for_suite(driver: SharedDriver<T>, suite: Suite) -> Self {
        SeSigner {
            driver,
            suite,
            slot: DEVICE_KEY_SLOT,
        }
    }

    /// The same, over the key in another slot (a rotated key).
    pub fn in_slot(self, slot: u8) -> Self {
        SeSigner { slot, ..self }
    }
}

impl<T: Transport> SignatureKey for SeSigner<T> {
    fn sign(&mut self, msg: &[u8]) -> Result<Vec<u8>, EdhocError> {
        let mut d = self
            .driver
            .lock()
            .map_err(|_| key_err("driver lock poisoned"))?;
        match self.suite {
            Suite::P256Es256 => {
                let digest = sha2::Sha256::digest(msg);
                d.sign_with_curve(self.slot, Curve::P256, &digest)
            }
            Suite::X25519EdDsa => d.sign_with_curve(self.slot, Curve::Ed25519, msg),
        }
        .map_err(key_err)
    }
}

/// What the device reads from its chip to authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The device certificate (DER), from zone 0.
    pub certificate: Vec<u8>,
    /// The pinned cloud authentication key (SubjectPublicKeyInfo DER), from zone 1.
    pub cloud_key_spki: Vec<u8>,
}

/// Reads a DER object (SEQUENCE with a definite length) from the start of a zone.
pub(crate) fn read_der<T: Transport>(d: &mut Driver<T>, zone: u8) -> Result<Vec<u8>, DeviceError> {
    let head = d.read_zone(zone, 0, 4)?;
    let len = match head.as_slice() {
        [0x30, 0x82, a, b] => 4 + usize::from(u16::from_be_bytes([*a, *b])),
        [0x30, 0x81, a, _] => 3 + usize::from(*a),
        [0x30, n, _, _] if *n < 0x80 => 2 + usize::from(*n),
        _ => {
            return Err(DeviceError::Zone {
                zone,
                reason: "does not start with a DER SEQUENCE",
            })
        }
    };
    Ok(d.read_zone(zone, 0, len)?)
}

/// Reads the device certificate and the pinned cloud key from the chip.
pub fn read_identity<T: Transport>(d: &mut Driver<T>) -> Result<Identity, DeviceError> {
    Ok(Identity {
        certificate: read_der(d, CERT_ZONE)?,
        cloud_key_spki: read_der(d, CLOUD_KEY_ZONE)?,
    })
}

/// A device-side failure.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The chip refused or the bus failed.
    #[error("secure element: {0}")]
    Chip(#[from] inkan_se::DriverError),
    /// A zone does not hold what personalization should have put there.
    #[error("zone {zone}: {reason}")]
    Zone {
        /// The zone.
        zone: u8,
        /// What is wrong.
        reason: &'static str,
    },
}

/// A session with the cloud.
#[derive(Debug)]
pub struct Connected {
    /// The chip serial (hex).
    pub serial: String,
    /// The cipher suite used (2: P-256/ES256, 0: X25519/EdDSA).
    pub suite: Suite,
    /// Our connection identifier.
    pub c_i: inkan_proto::edhoc::ConnId,
    /// The cloud's connection identifier.
    pub c_r: inkan_proto::edhoc::ConnId,
    /// The EDHOC session (PRK_out, exporter for OSCORE).
    pub session: inkan_proto::edhoc::Session,
}

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// EDHOC refused a message.
    #[error("EDHOC: {0}")]
    Edhoc(#[from] inkan_proto::edhoc::EdhocError),
    /// The chip or its zones.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The network.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    /// No answer after the retransmissions.
    #[error("no answer from the cloud after {0} attempts")]
    Timeout(u32),
    /// The cloud's key is not the one pinned in the chip: not our cloud.
    #[error("the cloud's certificate key does not match the key pinned in the secure element")]
    CloudKeyMismatch,
    /// The cloud refused us.
    #[error("the cloud refused ({code}): {detail}")]
    Refused {
        /// CoAP response code.
        code: String,
        /// The EDHOC error text.
        detail: String,
    },
}

/// CoAP retransmission parameters (RFC 7252 §4.8).
#[derive(Clone, Copy, Debug)]
pub struct Retransmission {
    /// Initial timeout.
    pub ack_timeout: std::time::Duration,
    /// Retransmissions after the first attempt.
    pub max_retransmit: u32,
}

impl Default for Retransmission {
    fn default() -> Self {
        Retransmission {
            ack_timeout: std::time::Duration::from_secs(2),
            max_retransmit: 4,
        }
    }
}

fn coap_exchange(
    udp: &std::net::UdpSocket,
    next_mid: &mut u16,
    payload: Vec<u8>,
    echo: &mut Option<Vec<u8>>,
    rt: Retransmission,
) -> Result<inkan_proto::coap::Response, ConnectError> {
    echo_retry(
        echo,
        |e| {
            let mid = *next_mid;
            *next_mid = mid.wrapping_add(1);
            coap_exchange_once(udp, mid, payload.clone(), e, rt)
        },
        |rsp| rsp.echo_challenge(),
    )
}

/// Sends a request (`send` with the Echo value to repeat, if any) and,
/// when the cloud answers with a new Echo value to repeat (RFC 9175: it
/// wants the address shown to receive), keeps that value in `echo` and
/// sends once more with it. Whatever comes back then is the answer (a
/// second request for an Echo stays a 4.01 refusal).
fn echo_retry<R, E>(
    echo: &mut Option<Vec<u8>>,
    mut send: impl FnMut(Option<&[u8]>) -> Result<R, E>,
    asked: impl Fn(&R) -> Option<&[u8]>,
) -> Result<R, E> {
    let rsp = send(echo.as_deref())?;
    let new = asked(&rsp)
        .filter(|e| echo.as_deref() != Some(*e))
        .map(<[u8]>::to_vec);
    match new {
        Some(e) => {
            *echo = Some(e);
            send(echo.as_deref())
        }
        None => Ok(rsp),
    }
}

fn coap_exchange_once(
    udp: &std::net::UdpSocket,
    message_id: u16,
    payload: Vec<u8>,
    echo: Option<&[u8]>,
    rt: Retransmission,
) -> Result<inkan_proto::coap::Response, ConnectError> {
    let mut token = [0u8; 4];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut token);
    let req = inkan_proto::coap::request_echo(message_id, &token, payload, echo)?;
    let rsp = exchange_datagram(udp, &req, rt, |bytes| {
        inkan_proto::coap::parse_response(bytes)
            .ok()
            .filter(|r| r.message_id == message_id && r.token == token)
    })?;
    rsp.ok_or(ConnectError::Timeout(rt.max_retransmit + 1))
}

/// Sends `req` with confirmable retransmission (RFC 7252 §4.2: timeouts
/// doubling from `rt.ack_timeout`) until `matches` accepts a datagram
/// received; None after the last attempt.
fn exchange_datagram<R>(
    udp: &std::net::UdpSocket,
    req: &[u8],
    rt: Retransmission,
    mut matches: impl FnMut(&[u8]) -> Option<R>,
) -> std::io::Result<Option<R>> {
    let mut timeout = rt.ack_timeout;
    let mut buf = vec![0u8; 16 * 1024];
    for _ in 0..=rt.max_retransmit {
        udp.send(req)?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            udp.set_read_timeout(Some(left))?;
            match udp.recv(&mut buf) {
                Ok(n) => {
                    if let Some(r) = matches(&buf[..n]) {
                        return Ok(Some(r));
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e),
            }
        }
        timeout *= 2;
    }
    Ok(None)
}

/// A UDP socket on loopback of the cloud's address family, connected to it.
fn udp_to(cloud: std::net::SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let bind: std::net::SocketAddr = if cloud.is_ipv4() {
        ([127, 0, 0, 1], 0).into()
    } else {
        (std::net::Ipv6Addr::LOCALHOST, 0).into()
    };
    let udp = std::net::UdpSocket::bind(bind)?;
    udp.connect(cloud)?;
    Ok(udp)
}

fn refused(rsp: &inkan_proto::coap::Response) -> ConnectError {
    let detail = match inkan_proto::edhoc::parse_error_message(&rsp.payload) {
        Some(inkan_proto::edhoc::EdhocError::PeerError { detail, .. }) => detail,
        _ => String::from_utf8_lossy(&rsp.payload).into_owned(),
    };
    ConnectError::Refused {
        code: rsp.code.clone(),
        detail,
    }
}

/// The cloud's key from its certificate, accepted only if it is the pinned
/// key (suite 2), or an Ed25519 key whose certificate the pinned key signed
/// and which is within its validity (suite 0).
fn cloud_key(cert_der: &[u8], pinned: &[u8], suite: Suite) -> Result<Vec<u8>, ConnectError> {
    let cert = inkan_pki::cert::IssuedCert::from_der(cert_der)
        .map_err(|_| ConnectError::CloudKeyMismatch)?;
    let point = cert.public_point();
    match suite {
        Suite::P256Es256 if point == pinned => Ok(point),
        Suite::X25519EdDsa
            if cert.is_ed25519()
                && inkan_pki::cert::verify_signed_by_key(&cert, pinned).is_ok()
                && cert.require_valid_at(std::time::SystemTime::now()).is_ok() =>
        {
            Ok(point)
        }
        _ => Err(ConnectError::CloudKeyMismatch),
    }
}

/// Authenticates to the cloud with EDHOC over CoAP: every private-key
/// operation in the chip, the cloud checked against the key pinned in the
/// chip, the device identified by the certificate in zone 0.
pub fn connect<T: Transport + 'static>(
    driver: SharedDriver<T>,
    cloud: std::net::SocketAddr,
    rt: Retransmission,
) -> Result<Connected, ConnectError> {
    use inkan_proto::edhoc::{ConnId, Credential, IdCred, IdCredKind, Initiator, Suite};
    let (identity, serial) = {
        let mut d = driver.lock().map_err(|_| DeviceError::Zone {
            zone: 0,
            reason: "driver lock poisoned",
        })?;
        (
            read_identity(&mut d)?,
            hex::encode_upper(d.serial().unwrap_or_default()),
        )
    };
    let pinned = {
        use p256::pkcs8::DecodePublicKey;
        p256::PublicKey::from_public_key_der(&identity.cloud_key_spki)
            .map_err(|_| DeviceError::Zone {
                zone: CLOUD_KEY_ZONE,
                reason: "not a P-256 public key",
            })?
            .to_sec1_bytes()
            .to_vec()
    };
    let udp = udp_to(cloud)?;
    let mut ids = [0u8; 6];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut ids);
    let mut mid = u16::from_be_bytes([ids[4], ids[5]]);
    let mut echo = None;

    // The suite follows the device key: Ed25519 → suite 0, P-256 → suite 2.
    let own = inkan_pki::cert::IssuedCert::from_der(&identity.certificate).map_err(|_| {
        DeviceError::Zone {
            zone: CERT_ZONE,
            reason: "not an X.509 certificate",
        }
    })?;
    let suite = if own.is_ed25519() {
        Suite::X25519EdDsa
    } else {
        Suite::P256Es256
    };
    let eph = SeEphemeral::generate_for(driver.clone(), suite)?;
    let (i, m1) = Initiator::start(suite, ConnId(ids[..4].to_vec()), &[], Box::new(eph));
    let c_i = i.c_i().clone();
    let rsp = coap_exchange(
        &udp,
        &mut mid,
        inkan_proto::coap::message_1_payload(&m1),
        &mut echo,
        rt,
    )?;
    if !rsp.success {
        return Err(refused(&rsp));
    }
    let p2 = i.process_message_2(&rsp.payload)?;
    let cloud_cert = match p2.id_cred_r().parse()? {
        IdCredKind::X5chain(c) => c.into_iter().next().ok_or(ConnectError::CloudKeyMismatch)?,
        _ => return Err(ConnectError::CloudKeyMismatch),
    };
    let cloud_point = cloud_key(&cloud_cert, &pinned, suite)?;
    let v = p2.verify(&Credential::x509(&cloud_cert, cloud_point))?;
    // Suite 0 names the device's certificate by hash: pure Ed25519 signs
    // the whole Sig_structure in the chip, and an x5chain would put the
    // certificate in it twice, past the A120's 752-byte frame. The cloud
    // knows the certificate (manifest import or single registration).
    let id_cred_i = match suite {
        Suite::X25519EdDsa => IdCred::x5t(&identity.certificate),
        Suite::P256Es256 => IdCred::x5chain(std::slice::from_ref(&identity.certificate)),
    };
    let (done, m3) = v.prepare_message_3(
        &id_cred_i,
        &inkan_proto::cbor::bstr_vec(&identity.certificate),
        &[],
        &mut SeSigner::for_suite(driver.clone(), suite),
    )?;
    let c_r = done.c_r.clone();
    let rsp = coap_exchange(
        &udp,
        &mut mid,
        inkan_proto::coap::message_3_payload(&c_r, &m3),
        &mut echo,
        rt,
    )?;
    if !rsp.success {
        return Err(refused(&rsp));
    }
    done.process_message_4(&rsp.payload)?;
    Ok(Connected {
        serial,
        suite,
        c_i,
        c_r: done.c_r.clone(),
        session: done.session().clone(),
    })
}

/// Why sending over the OSCORE session failed.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// OSCORE protection or verification failed.
    #[error("OSCORE: {0}")]
    Oscore(#[from] inkan_proto::oscore::OscoreError),
    /// The EDHOC session cannot give an OSCORE context.
    #[error("EDHOC: {0}")]
    Edhoc(#[from] inkan_proto::edhoc::EdhocError),
    /// The network.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    /// No answer after the retransmissions.
    #[error("no answer from the cloud after {0} attempts")]
    Timeout(u32),
    /// The cloud refused the request (unprotected 4.01/4.00: the session
    /// is unknown, ended or expired, or the message did not verify), or
    /// answered a verified request with an error.
    #[error("the cloud refused ({code}): {detail}")]
    Refused {
        /// CoAP response code.
        code: String,
        /// The diagnostic.
        detail: String,
    },
    /// A message that does not encode or parse.
    #[error("malformed CoAP: {0}")]
    Coap(String),
}

/// The device's OSCORE channel to the cloud, keyed from its EDHOC session
/// (RFC 9528 Appendix A.1). It is never persisted: after a restart the
/// device runs EDHOC again and gets a fresh context, so a sequence number
/// is never used twice under one key.
pub struct Uplink {
    ctx: inkan_proto::oscore::SecurityContext,
    udp: std::net::UdpSocket,
    next_mid: u16,
    rt: Retransmission,
    /// The Echo value the cloud last asked this address for.
    echo: Option<Vec<u8>>,
}

impl Uplink {
    /// The uplink of a connected device.
    pub fn new(
        c: &Connected,
        cloud: std::net::SocketAddr,
        rt: Retransmission,
    ) -> Result<Uplink, UplinkError> {
        let params =
            inkan_proto::oscore::ContextParams::from_edhoc(&c.session, true, &c.c_i, &c.c_r)?;
        let ctx = inkan_proto::oscore::SecurityContext::derive(&params)?;
        let udp = udp_to(cloud)?;
        let mut m = [0u8; 2];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut m);
        Ok(Uplink {
            ctx,
            udp,
            next_mid: u16::from_be_bytes(m),
            rt,
            echo: None,
        })
    }

    /// Sets the next sender sequence number (tests and demonstrations of
    /// replay protection; normal use never rewinds it).
    pub fn set_next_sequence(&mut self, next: u64) {
        self.ctx.set_sender_sequence(next);
    }

    /// The OSCORE context (for inspection and export).
    pub fn context(&self) -> &inkan_proto::oscore::SecurityContext {
        &self.ctx
    }

    /// Sends a batch of readings; returns how many the cloud stored (it
    /// answers only after they are durable).
    pub fn send(
        &mut self,
        readings: &[inkan_proto::telemetry::Reading],
    ) -> Result<u64, UplinkError> {
        let payload = inkan_proto::telemetry::encode_batch(readings);
        let rsp = self.request(
            coap_lite::RequestType::Post,
            inkan_proto::resources::TELEMETRY,
            payload,
        )?;
        let mut d = inkan_proto::cbor::Decoder::new(&rsp.payload);
        let n = d
            .int()
            .ok()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| UplinkError::Coap("acknowledgement is not a count".into()))?;
        Ok(n)
    }

    /// Sends a batch signed by the chip's device key (COSE_Sign1: ES256 for
    /// a P-256 key, EdDSA for Ed25519), for families that keep signatures
    /// with their records. An Ed25519 chip signs the whole to-be-signed
    /// bytes, so its signed batches must fit the chip's frame.
    pub fn send_signed<T: Transport>(
        &mut self,
        readings: &[inkan_proto::telemetry::Reading],
        driver: &SharedDriver<T>,
    ) -> Result<u64, UplinkError> {
        let batch = inkan_proto::telemetry::encode_batch(readings);
        let ed25519 = {
            let mut d = driver
                .lock()
                .map_err(|_| UplinkError::Edhoc(EdhocError::Key("driver lock poisoned".into())))?;
            d.slot_curve(DEVICE_KEY_SLOT)
                .map_err(|e| UplinkError::Edhoc(key_err(e)))?
                == Curve::Ed25519
        };
        let suite = if ed25519 {
            Suite::X25519EdDsa
        } else {
            Suite::P256Es256
        };
        let signed = inkan_proto::telemetry::sign_batch(&batch, ed25519, |tbs| {
            SeSigner::for_suite(driver.clone(), suite).sign(tbs)
        })?;
        let rsp = self.request(
            coap_lite::RequestType::Post,
            inkan_proto::resources::TELEMETRY,
            signed,
        )?;
        let mut d = inkan_proto::cbor::Decoder::new(&rsp.payload);
        d.int()
            .ok()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| UplinkError::Coap("acknowledgement is not a count".into()))
    }

    /// Reports the units of use the chip's usage counter has left, in a
    /// batch the chip signs; None (nothing sent) when the chip has no
    /// usage limit. Returns the units reported.
    pub fn report_usage<T: Transport>(
        &mut self,
        driver: &SharedDriver<T>,
    ) -> Result<Option<u32>, UplinkError> {
        let left = {
            let mut d = driver
                .lock()
                .map_err(|_| UplinkError::Edhoc(EdhocError::Key("driver lock poisoned".into())))?;
            usage::remaining(&mut d).map_err(|e| UplinkError::Edhoc(key_err(e)))?
        };
        let Some(left) = left else {
            return Ok(None);
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
        self.send_signed(&[usage::reading(left, now)], driver)?;
        Ok(Some(left))
    }

    /// A protected confirmable request; returns the verified response.
    pub fn request(
        &mut self,
        method: coap_lite::RequestType,
        path: &str,
        payload: Vec<u8>,
    ) -> Result<coap_lite::Packet, UplinkError> {
        self.request_with(method, path, payload, &[])
    }

    /// Fetches the signed manifest of firmware `id`.
    pub fn firmware_manifest(&mut self, id: &str) -> Result<Vec<u8>, UplinkError> {
        Ok(self
            .request(
                coap_lite::RequestType::Get,
                &inkan_proto::resources::Resource::FirmwareManifest(id.to_string()).path(),
                Vec::new(),
            )?
            .payload)
    }

    /// How to fetch and decrypt firmware `id` (its key, download path and
    /// size), asked over OSCORE.
    pub fn firmware_ticket(
        &mut self,
        id: &str,
    ) -> Result<inkan_proto::resources::FirmwareTicket, UplinkError> {
        let rsp = self.request(
            coap_lite::RequestType::Get,
            &inkan_proto::resources::Resource::FirmwareTicket(id.to_string()).path(),
            Vec::new(),
        )?;
        inkan_proto::resources::FirmwareTicket::decode(&rsp.payload)
            .map_err(|e| UplinkError::Coap(e.to_string()))
    }

    /// Downloads firmware `id` into `out` block by block: its ticket over
    /// OSCORE, then the encrypted image in 1024-byte blocks (RFC 7959
    /// Block2) from its plain download path, each block decrypted as it
    /// arrives; resumes after the whole blocks the file already holds (a
    /// dropped connection costs at most one block). Stops after
    /// `max_blocks` when given. Returns the bytes in the file and whether
    /// the image is complete. What is installed is checked against the
    /// signed manifest, not trusted for having arrived.
    pub fn download(
        &mut self,
        id: &str,
        out: &std::path::Path,
        max_blocks: Option<u32>,
    ) -> Result<(u64, bool), UplinkError> {
        use inkan_proto::resources::{image_cipher, IMAGE_BLOCK, IMAGE_BLOCK_SZX};
        use std::io::{Seek, Write};
        let ticket = self.firmware_ticket(id)?;
        let block = IMAGE_BLOCK as u64;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(out)?;
        let have = (f.metadata()?.len() / block).min(ticket.size.div_ceil(block));
        f.set_len(have * block)?;
        let mut num = u32::try_from(have).unwrap_or(u32::MAX);
        let mut fetched = 0;
        loop {
            if max_blocks.is_some_and(|m| fetched >= m) {
                f.sync_all()?;
                return Ok((f.metadata()?.len(), false));
            }
            let rsp = self.plain_get(
                &ticket.path,
                &[(
                    coap_lite::CoapOption::Block2,
                    inkan_proto::coap::block_value(num, false, IMAGE_BLOCK_SZX),
                )],
            )?;
            let (n, more, _) = rsp
                .get_first_option(coap_lite::CoapOption::Block2)
                .and_then(|v| inkan_proto::coap::parse_block(v))
                .ok_or_else(|| UplinkError::Coap("a firmware block without Block2".into()))?;
            if n != num {
                return Err(UplinkError::Coap(format!("asked for block {num}, got {n}")));
            }
            let at = u64::from(num) * block;
            if rsp.payload.len() > IMAGE_BLOCK || at + rsp.payload.len() as u64 > ticket.size {
                return Err(UplinkError::Coap(format!(
                    "block {num} goes past the image's {} bytes",
                    ticket.size
                )));
            }
            let mut data = rsp.payload;
            image_cipher(&ticket.key, at, &mut data);
            f.seek(std::io::SeekFrom::Start(at))?;
            f.write_all(&data)?;
            fetched += 1;
            if !more {
                f.sync_all()?;
                return Ok((f.metadata()?.len(), true));
            }
            num += 1;
        }
    }

    /// A plain (not OSCORE) confirmable GET of `path` to the cloud, for
    /// what needs no session (encrypted image blocks). When the cloud asks
    /// the device to show it receives at its address (RFC 9175 Echo), the
    /// request is repeated with the value, which is kept for the next.
    fn plain_get(
        &mut self,
        path: &str,
        options: &[(coap_lite::CoapOption, Vec<u8>)],
    ) -> Result<coap_lite::Packet, UplinkError> {
        use coap_lite::{CoapOption, RequestType};
        let mut echo = self.echo.take();
        let got = echo_retry(
            &mut echo,
            |e| {
                let mut req = self.new_request(RequestType::Get, path, options);
                if let Some(e) = e {
                    req.add_option(CoapOption::Unknown(inkan_proto::coap::ECHO), e.to_vec());
                }
                let bytes = req
                    .to_bytes()
                    .map_err(|e| UplinkError::Coap(format!("{e:?}")))?;
                self.exchange(&bytes, &req)
            },
            inkan_proto::coap::echo_asked,
        );
        self.echo = echo;
        let rsp = got?;
        if u8::from(rsp.header.code) >> 5 != 2 {
            return Err(UplinkError::Refused {
                code: rsp.header.code.to_string(),
                detail: String::from_utf8_lossy(&rsp.payload).into_owned(),
            });
        }
        Ok(rsp)
    }

    /// A confirmable request with a fresh message id and token.
    fn new_request(
        &mut self,
        method: coap_lite::RequestType,
        path: &str,
        options: &[(coap_lite::CoapOption, Vec<u8>)],
    ) -> coap_lite::Packet {
        use coap_lite::{CoapOption, MessageClass, MessageType, Packet};
        let mid = self.next_mid;
        self.next_mid = self.next_mid.wrapping_add(1);
        let mut token = [0u8; 4];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut token);
        let mut req = Packet::new();
        req.header.set_type(MessageType::Confirmable);
        req.header.message_id = mid;
        req.header.code = MessageClass::Request(method);
        req.set_token(token.to_vec());
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            req.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
        }
        for (o, v) in options {
            req.add_option(*o, v.clone());
        }
        req
    }

    /// Sends `bytes` (the datagram of `req`, protected or not) and returns
    /// the response with `req`'s message id and token.
    fn exchange(
        &self,
        bytes: &[u8],
        req: &coap_lite::Packet,
    ) -> Result<coap_lite::Packet, UplinkError> {
        let (mid, token) = (req.header.message_id, req.get_token().to_vec());
        exchange_datagram(&self.udp, bytes, self.rt, |got| {
            coap_lite::Packet::from_bytes(got)
                .ok()
                .filter(|r| r.header.message_id == mid && r.get_token() == token.as_slice())
        })?
        .ok_or(UplinkError::Timeout(self.rt.max_retransmit + 1))
    }

    /// A protected confirmable request with extra (inner) options.
    pub fn request_with(
        &mut self,
        method: coap_lite::RequestType,
        path: &str,
        payload: Vec<u8>,
        options: &[(coap_lite::CoapOption, Vec<u8>)],
    ) -> Result<coap_lite::Packet, UplinkError> {
        use coap_lite::{CoapOption, MessageClass};
        let mut req = self.new_request(method, path, options);
        req.payload = payload;
        let (protected, binding) = self.ctx.protect_request(&req)?;
        let bytes = protected
            .to_bytes_unlimited()
            .map_err(|e| UplinkError::Coap(format!("{e:?}")))?;
        let rsp = self.exchange(&bytes, &req)?;
        if rsp.get_first_option(CoapOption::Oscore).is_none() {
            return Err(UplinkError::Refused {
                code: rsp.header.code.to_string(),
                detail: String::from_utf8_lossy(&rsp.payload).into_owned(),
            });
        }
        let inner = self.ctx.unprotect_response(&rsp, &binding)?;
        let ok = matches!(
            inner.header.code,
            MessageClass::Response(c) if u8::from(MessageClass::Response(c)) >> 5 == 2
        );
        if !ok {
            return Err(UplinkError::Refused {
                code: inner.header.code.to_string(),
                detail: String::from_utf8_lossy(&inner.payload).into_owned(),
            });
        }
        Ok(inner)
    }
}

/// Zone of the pinned cloud command key.
pub const COMMAND_KEY_ZONE: u8 = 2;

/// The action that replaces the pinned command key: its arguments are the
/// new key (SubjectPublicKeyInfo DER), and it is signed by the old one.
pub const ROTATE_COMMAND_KEY: &str = "rotate-command-key";

/// The action that takes a device out of service for good: the device
/// destroys its secrets by moving its secure element to the terminated
/// life-cycle state, in which the chip refuses every command but Echo and
/// Query (it can never sign again, so never authenticate again, with any
/// owner).
pub const DECOMMISSION: &str = inkan_proto::command::DECOMMISSION;

/// Why a device did not run a command.
#[derive(Debug, thiserror::Error)]
pub enum CommandRefused {
    /// The command itself is refused (signature, device, expiry, replay).
    #[error(transparent)]
    Command(#[from] inkan_proto::command::CommandError),
    /// The chip or its zones.
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// The P-256 point of a SubjectPublicKeyInfo.
fn spki_point(spki: &[u8], zone: u8) -> Result<Vec<u8>, DeviceError> {
    use p256::pkcs8::DecodePublicKey;
    Ok(p256::PublicKey::from_public_key_der(spki)
        .map_err(|_| DeviceError::Zone {
            zone,
            reason: "not a P-256 public key",
        })?
        .to_sec1_bytes()
        .to_vec())
}

/// Has the chip verify a signed command against the command key pinned in
/// its zone 2, then checks it is for this chip — its serial, its identity
/// for life (UEID) and the credential in its zone 0 — within the bounded
/// lifetime and not expired (`now`: Unix seconds).
pub fn verify_command<T: Transport>(
    driver: &SharedDriver<T>,
    cose: &[u8],
    now: u64,
) -> Result<inkan_proto::command::Command, CommandRefused> {
    use inkan_proto::command::{Command, CommandError};
    let (cmd, tbs, sig) = Command::open(cose)?;
    let mut d = driver.lock().map_err(|_| DeviceError::Zone {
        zone: COMMAND_KEY_ZONE,
        reason: "driver lock poisoned",
    })?;
    let point = spki_point(&read_der(&mut d, COMMAND_KEY_ZONE)?, COMMAND_KEY_ZONE)?;
    let digest = sha2::Sha256::digest(&tbs);
    if !d
        .verify(Curve::P256, &point, &digest, &sig)
        .map_err(DeviceError::from)?
    {
        return Err(CommandError::Signature.into());
    }
    let serial = hex::encode_upper(d.serial().unwrap_or_default());
    if cmd.device != serial {
        return Err(CommandError::OtherDevice(cmd.device).into());
    }
    // Bound to what only this device holds: the certificate in its zone 0
    // (a chip made elsewhere with the same serial has another) and the
    // identity that certificate names.
    let cert = read_der(&mut d, CERT_ZONE)?;
    let own: [u8; 32] = sha2::Sha256::digest(&cert).into();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(&own[..], &cmd.credential[..])) {
        return Err(CommandError::OtherCredential.into());
    }
    if let Some(u) = inkan_pki::IssuedCert::from_der(&cert)
        .ok()
        .and_then(|c| c.ueid())
    {
        if u.as_bytes() != cmd.ueid.as_slice() {
            return Err(CommandError::OtherCredential.into());
        }
    }
    use inkan_proto::command::{MAX_SKEW_SECS, MAX_TTL_SECS};
    if cmd.expires.saturating_sub(cmd.issued) > MAX_TTL_SECS
        || cmd.issued > now.saturating_add(MAX_SKEW_SECS)
    {
        return Err(CommandError::Lifetime.into());
    }
    if now > cmd.expires {
        return Err(CommandError::Expired.into());
    }
    Ok(cmd)
}

/// Command ids this device has run, so each runs at most once; kept in a
/// file when given one (written before the command runs).
#[derive(Debug, Default)]
pub struct Executed {
    ids: std::collections::BTreeSet<String>,
    file: Option<std::path::PathBuf>,
}

impl Executed {
    /// The record in `file` (created when missing), or only in memory.
    pub fn open(file: Option<&std::path::Path>) -> std::io::Result<Executed> {
        let mut ids = std::collections::BTreeSet::new();
        if let Some(f) = file {
            match std::fs::read_to_string(f) {
                Ok(t) => ids.extend(t.lines().map(str::to_string)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Executed {
            ids,
            file: file.map(std::path::Path::to_path_buf),
        })
    }

    /// Records `id` as run; false if it was already.
    pub fn claim(&mut self, id: &[u8]) -> std::io::Result<bool> {
        let h = hex::encode(id);
        if self.ids.contains(&h) {
            return Ok(false);
        }
        if let Some(f) = &self.file {
            use std::io::Write;
            let mut o = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(f)?;
            writeln!(o, "{h}")?;
            o.sync_all()?;
        }
        self.ids.insert(h);
        Ok(true)
    }
}

impl Uplink {
    /// Polls the cloud for this device's next command (a signed COSE_Sign1).
    pub fn next_command(&mut self) -> Result<Option<Vec<u8>>, UplinkError> {
        let r = self.request(
            coap_lite::RequestType::Post,
            inkan_proto::resources::COMMANDS_NEXT,
            Vec::new(),
        )?;
        Ok((!r.payload.is_empty()).then_some(r.payload))
    }

    /// Reports what became of a command; true if the cloud recorded it.
    pub fn report(
        &mut self,
        id: &[u8],
        outcome: inkan_proto::command::Outcome,
        detail: &str,
    ) -> Result<bool, UplinkError> {
        let r = self.request(
            coap_lite::RequestType::Post,
            inkan_proto::resources::COMMANDS_RESULT,
            inkan_proto::command::encode_result(id, outcome, detail),
        )?;
        Ok(r.payload == [1])
    }
}

/// What one poll did.
#[derive(Debug)]
pub enum Polled {
    /// No command waiting.
    Nothing,
    /// A command ran (its outcome reported).
    Ran(
        inkan_proto::command::Command,
        inkan_proto::command::Outcome,
        String,
    ),
    /// A command was refused before running (reported when it had an id).
    Refused(CommandRefused),
}

/// Polls for one command, has the chip verify it, runs it at most once
/// through `actuator` (which returns a detail or a failure), applies a
/// command-key rotation itself, and reports the outcome.
pub fn poll_and_run<T: Transport>(
    uplink: &mut Uplink,
    driver: &SharedDriver<T>,
    executed: &mut Executed,
    actuator: &mut dyn FnMut(&inkan_proto::command::Command) -> Result<String, String>,
) -> Result<Polled, UplinkError> {
    use inkan_proto::command::{Command, CommandError, Outcome};
    let Some(cose) = uplink.next_command()? else {
        return Ok(Polled::Nothing);
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let cmd = match verify_command(driver, &cose, now) {
        Ok(c) => c,
        Err(e) => {
            // Report it when the payload names an id.
            if let Ok((c, _, _)) = Command::open(&cose) {
                let outcome = match &e {
                    CommandRefused::Command(CommandError::Expired) => Outcome::Expired,
                    _ => Outcome::Refused,
                };
                uplink.report(&c.id, outcome, &e.to_string())?;
            }
            return Ok(Polled::Refused(e));
        }
    };
    if !executed.claim(&cmd.id)? {
        let e = CommandRefused::Command(CommandError::Replayed);
        uplink.report(&cmd.id, Outcome::Refused, &e.to_string())?;
        return Ok(Polled::Refused(e));
    }
    let result = if cmd.action == ROTATE_COMMAND_KEY {
        rotate_command_key(driver, &cmd.args)
    } else if cmd.action == DECOMMISSION {
        erase_secrets(driver)
    } else {
        actuator(&cmd)
    };
    let (outcome, detail) = match result {
        Ok(d) => (Outcome::Succeeded, d),
        Err(d) => (Outcome::Failed, d),
    };
    uplink.report(&cmd.id, outcome, &detail)?;
    Ok(Polled::Ran(cmd, outcome, detail))
}

/// Moves the chip to its terminated life-cycle state (needs the host
/// session the device runs in), then checks it no longer signs.
pub fn erase_secrets<T: Transport>(driver: &SharedDriver<T>) -> Result<String, String> {
    use inkan_se::wire::codes::life_cycle;
    let mut d = driver
        .lock()
        .map_err(|_| "driver lock poisoned".to_string())?;
    d.set_life_cycle(life_cycle::TERMINATED)
        .map_err(|e| format!("terminating the chip: {e}"))?;
    if d.sign(0, &[0u8; 32]).is_ok() {
        return Err("the chip still signs after termination".into());
    }
    Ok("secrets destroyed: the secure element is terminated and refuses to sign".into())
}

/// Writes the new command key (SPKI) into zone 2, read back.
fn rotate_command_key<T: Transport>(
    driver: &SharedDriver<T>,
    spki: &[u8],
) -> Result<String, String> {
    spki_point(spki, COMMAND_KEY_ZONE).map_err(|e| e.to_string())?;
    let mut d = driver
        .lock()
        .map_err(|_| "driver lock poisoned".to_string())?;
    d.update_zone(COMMAND_KEY_ZONE, 0, spki)
        .map_err(|e| format!("writing zone 2: {e}"))?;
    let back = read_der(&mut d, COMMAND_KEY_ZONE).map_err(|e| e.to_string())?;
    if back != spki {
        return Err("zone 2 read back differs".into());
    }
    Ok("command key replaced".into())
}
