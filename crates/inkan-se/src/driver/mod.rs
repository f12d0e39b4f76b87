//! The host driver: a typed API over any [`Transport`], to the emulator or a
//! real STSAFE-A. It depends on the wire codec and the secure channel, never
//! on the emulated chip.
//!
//! Once a host session is open ([`Driver::open_session`]) every command but
//! the host-key-slot query goes out with a C-MAC and asks for an R-MAC, so
//! a tampered response is caught; payloads are encrypted where the chip's
//! command table says so. After any exchange whose outcome is unknown (lost
//! response, timeout, invalid C-MAC) the driver forgets its copy of the MAC
//! counter and queries it again before the next protected command.

pub mod query;

use crate::channel::{self, subject, HostKeys};
use crate::personality::Personality;
use crate::transport::{BusError, Transport};
use crate::wire::codes::header_flags;
use crate::wire::encoding::{
    decode_public_key, decode_signature, encode_public_key, encode_signature, put_len,
};
use crate::wire::frame::CRC_LEN;
use crate::wire::{
    CommandCode, CommandFrame, CommandHeader, Curve, ExtendedCode, Reader, ResponseFrame, Status,
    Tag, WireError,
};
use query::{CommandAuthorization, HostKeySlot, ProductData, SlotInfo, ZoneInfo};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Largest zone read in one command (STSELib's certificate chunk, §1.6).
pub const READ_CHUNK: usize = 253;

/// The ephemeral key slot.
pub const EPHEMERAL_SLOT: u8 = 0xFF;

/// Mode-of-operation flags for Generate Key (§5).
pub mod key_mode {
    /// The flags may change later.
    pub const CHANGE_RIGHT: u16 = 1 << 15;
    /// Signing host digests allowed.
    pub const SIGN_DIGEST: u16 = 1 << 2;
    /// Key establishment allowed.
    pub const KEY_ESTABLISHMENT: u16 = 1 << 0;
    /// Generate Key on this slot needs the host C-MAC.
    pub const GENERATE_HOST_ONLY: u16 = 1 << 4;
    /// Generate Key on this slot is never allowed again (the key is fixed).
    pub const GENERATE_NEVER: u16 = 2 << 4;
}

/// A driver failure.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The bus failed.
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    /// The chip stayed busy (NACKing) beyond the timeout.
    #[error("the chip did not answer within {0:?}")]
    Timeout(Duration),
    /// The response frame is malformed (bad CRC, truncated): a noisy bus or
    /// a tampered response.
    #[error("malformed response: {0}")]
    BadResponse(#[from] WireError),
    /// The chip refused the command.
    #[error("the chip refused {command}: status {status}")]
    Status {
        /// The command.
        command: CommandCode,
        /// Its status.
        status: Status,
    },
    /// The R-MAC does not verify: the response was altered on the bus.
    #[error("the response to {0} failed its R-MAC check (altered on the bus?)")]
    ResponseMac(CommandCode),
    /// An R-MAC was asked for but the response carries none.
    #[error("the response to {0} carries no R-MAC")]
    ResponseMacMissing(CommandCode),
    /// The encrypted response does not decrypt.
    #[error("the response to {command} does not decrypt: {source}")]
    ResponseDecryption {
        /// The command.
        command: CommandCode,
        /// Why.
        source: channel::ChannelError,
    },
    /// The product data names no known chip.
    #[error("unknown chip (mask id {mask:02X?})")]
    UnknownChip {
        /// The mask id found.
        mask: [u8; 3],
    },
    /// A frame would exceed the chip's maximum.
    #[error("command frame of {len} bytes exceeds the chip's maximum of {max}")]
    FrameTooLong {
        /// Frame length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A caller-supplied argument is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl DriverError {
    /// The chip's status, when the chip refused the command.
    pub fn status(&self) -> Option<Status> {
        match self {
            DriverError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Timing of the driver's busy polling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriverConfig {
    /// Wait after a write before the first read.
    pub first_poll_delay: Duration,
    /// Wait between NACKed attempts.
    pub poll_interval: Duration,
    /// Give up after this long.
    pub timeout: Duration,
}

impl Default for DriverConfig {
    /// For the emulator: poll every millisecond for up to 2.5 s.
    fn default() -> Self {
        DriverConfig {
            first_poll_delay: Duration::ZERO,
            poll_interval: Duration::from_millis(1),
            timeout: Duration::from_millis(2500),
        }
    }
}

impl DriverConfig {
    /// STSELib's polling for real silicon: 10 ms, then every 10 ms, 100 times.
    pub fn real_chip() -> Self {
        DriverConfig {
            first_poll_delay: Duration::from_millis(10),
            poll_interval: Duration::from_millis(10),
            timeout: Duration::from_millis(1000),
        }
    }
}

struct Session {
    keys: HostKeys,
    /// The chip's counter N as the driver believes it; `None` after an
    /// exchange with an unknown outcome.
    counter: Option<u32>,
    table: Vec<CommandAuthorization>,
}

/// A host driver bound to one chip.
pub struct Driver<T: Transport> {
    transport: T,
    personality: Personality,
    config: DriverConfig,
    session: Option<Session>,
    serial: Option<Vec<u8>>,
}

impl<T: Transport> std::fmt::Debug for Driver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("personality", &self.personality)
            .field("session", &self.session.is_some())
            .finish_non_exhaustive()
    }
}

impl<T: Transport> Driver<T> {
    /// Connects with the default polling: reads the product data to learn
    /// which chip this is, as STSELib's `stse_init` does.
    pub fn new(transport: T) -> Result<Self, DriverError> {
        Self::with_config(transport, DriverConfig::default())
    }

    /// Connects with the given polling configuration.
    pub fn with_config(transport: T, config: DriverConfig) -> Result<Self, DriverError> {
        let mut d = Driver {
            transport,
            personality: Personality::A110,
            config,
            session: None,
            serial: None,
        };
        let pd = d.product_data()?;
        d.personality = pd.personality;
        d.serial = pd.serial;
        Ok(d)
    }

    /// The chip's personality.
    pub fn personality(&self) -> Personality {
        self.personality
    }

    /// The chip's serial number, from product data.
    pub fn serial(&self) -> Option<&[u8]> {
        self.serial.as_deref()
    }

    /// The transport (tests reach through it to the emulated chip).
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The transport, mutably.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Gives the transport back.
    pub fn into_transport(self) -> T {
        self.transport
    }

    /// Changes the polling configuration.
    pub fn set_config(&mut self, config: DriverConfig) {
        self.config = config;
    }

    /// Whether a host session is open.
    pub fn has_session(&self) -> bool {
        self.session.is_some()
    }

    // ---- exchange ------------------------------------------------------

    fn retry<R>(
        &mut self,
        start: Instant,
        mut op: impl FnMut(&mut T) -> Result<R, BusError>,
    ) -> Result<R, DriverError> {
        loop {
            match op(&mut self.transport) {
                Ok(r) => return Ok(r),
                Err(BusError::Nack) => {
                    if start.elapsed() >= self.config.timeout {
                        return Err(DriverError::Timeout(self.config.timeout));
                    }
                    std::thread::sleep(self.config.poll_interval);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// One write and the reads of its response (§1.5): 5 bytes first, then,
    /// if the response is longer, a full re-read from the first byte.
    fn exchange(&mut self, frame: &[u8], expect_rmac: bool) -> Result<ResponseFrame, DriverError> {
        let max = self.personality.max_frame();
        if frame.len() > max {
            return Err(DriverError::FrameTooLong {
                len: frame.len(),
                max,
            });
        }
        let start = Instant::now();
        self.retry(start, |t| t.write(frame))?;
        if !self.config.first_poll_delay.is_zero() {
            std::thread::sleep(self.config.first_poll_delay);
        }
        let start = Instant::now();
        let head = self.retry(start, |t| t.read(3 + CRC_LEN))?;
        let total = ResponseFrame::announced_len(&head)?;
        let bytes = if total <= head.len() {
            head
        } else {
            self.retry(start, |t| t.read(total))?
        };
        Ok(ResponseFrame::decode(&bytes, expect_rmac)?)
    }

    fn plain(&mut self, header: CommandHeader, payload: &[u8]) -> Result<Vec<u8>, DriverError> {
        let frame = CommandFrame {
            header,
            payload: payload.to_vec(),
            cmac: None,
        }
        .encode();
        let rsp = self.exchange(&frame, false)?;
        if rsp.status != Status::OK {
            return Err(DriverError::Status {
                command: header.code,
                status: rsp.status,
            });
        }
        Ok(rsp.data)
    }

    fn counter_query_tag(&self) -> Tag {
        match self.personality {
            Personality::A110 => Tag::HOST_KEY_SLOT,
            Personality::A120 => Tag::HOST_KEY_SLOT_V2,
        }
    }

    /// Sends a command, protected when a session is open.
    fn transfer(&mut self, header: CommandHeader, payload: &[u8]) -> Result<Vec<u8>, DriverError> {
        let exempt = header.code == CommandCode::QUERY && payload == [self.counter_query_tag().0];
        if self.session.is_none() || exempt {
            return self.plain(header, payload);
        }
        if self.session.as_ref().is_some_and(|s| s.counter.is_none()) {
            let slot = self.host_key_slot()?;
            if let Some(s) = self.session.as_mut() {
                s.counter = Some(slot.counter);
            }
        }
        let width = self.personality.counter_width();
        let Some(session) = self.session.as_ref() else {
            return self.plain(header, payload);
        };
        let n = session.counter.unwrap_or(0);
        let enc = session
            .table
            .iter()
            .find(|c| c.code == header.code && c.extended == header.extended)
            .map_or(0, |c| c.encryption);
        let mut header = header;
        header.flags = header_flags::ALL;
        let header_bytes = header.to_bytes();
        let sent_payload = if enc & 0b10 != 0 {
            channel::encrypt(
                &session.keys,
                width,
                n + 1,
                subject::COMMAND_ENCRYPTION,
                payload,
            )
        } else {
            payload.to_vec()
        };
        let cmac = channel::c_mac(&session.keys, width, n, &header_bytes, &sent_payload);
        let frame = CommandFrame {
            header,
            payload: sent_payload.clone(),
            cmac: Some(cmac),
        }
        .encode();
        let result = self.exchange(&frame, true);
        let Some(session) = self.session.as_mut() else {
            return Err(DriverError::InvalidArgument("no session".into()));
        };
        let rsp = match result {
            Ok(r) => r,
            Err(e) => {
                session.counter = None;
                return Err(e);
            }
        };
        if rsp.status == Status::INVALID_CMAC || rsp.status == Status::COMMUNICATION_ERROR {
            session.counter = None;
            return Err(DriverError::Status {
                command: header.code,
                status: rsp.status,
            });
        }
        session.counter = Some(n + 1);
        if rsp.status != Status::OK {
            return Err(DriverError::Status {
                command: header.code,
                status: rsp.status,
            });
        }
        let mac = rsp
            .rmac
            .ok_or(DriverError::ResponseMacMissing(header.code))?;
        let expected = channel::r_mac(
            &session.keys,
            width,
            n + 1,
            &header_bytes,
            &sent_payload,
            0x40 | rsp.status.0,
            &rsp.data,
        );
        if !channel::mac_eq(&expected, &mac) {
            session.counter = None;
            return Err(DriverError::ResponseMac(header.code));
        }
        if enc & 0b01 != 0 {
            return channel::decrypt(
                &session.keys,
                width,
                n + 1,
                subject::RESPONSE_ENCRYPTION,
                &rsp.data,
            )
            .map_err(|source| DriverError::ResponseDecryption {
                command: header.code,
                source,
            });
        }
        Ok(rsp.data)
    }

    fn cmd(&mut self, code: CommandCode, payload: &[u8]) -> Result<Vec<u8>, DriverError> {
        self.transfer(CommandHeader::new(code), payload)
    }

    fn ext(&mut self, code: ExtendedCode, payload: &[u8]) -> Result<Vec<u8>, DriverError> {
        self.transfer(CommandHeader::extended(code), payload)
    }

    // ---- session -------------------------------------------------------

    /// Pairs host keys with the chip: Put Attribute 0x17 on an A110 (two
    /// AES-128 keys), Write Host Key V2 in plaintext on an A120 (AES-128 or
    /// AES-256). Do this in a trusted place (the factory): the keys cross
    /// the bus in clear.
    pub fn pair_host_keys(&mut self, keys: &HostKeys) -> Result<(), DriverError> {
        let (m, c) = (keys.mac.as_bytes(), keys.cipher.as_bytes());
        if m.len() != c.len() {
            return Err(DriverError::InvalidArgument(
                "MAC and cipher keys must have the same size".into(),
            ));
        }
        let mut payload = Zeroizing::new(Vec::with_capacity(68));
        match self.personality {
            Personality::A110 => {
                if m.len() != 16 {
                    return Err(DriverError::InvalidArgument(
                        "the A110 host key slot takes AES-128 keys".into(),
                    ));
                }
                payload.push(Tag::HOST_KEY_SLOT.0);
                payload.extend_from_slice(m);
                payload.extend_from_slice(c);
                self.cmd(CommandCode::PUT_ATTRIBUTE, &payload)?;
            }
            Personality::A120 => {
                payload.extend_from_slice(&[0, 0, 0, keys.mac.type_byte()]);
                payload.extend_from_slice(m);
                payload.extend_from_slice(c);
                self.ext(ExtendedCode::WRITE_HOST_KEY_V2_PLAIN, &payload)?;
            }
        }
        Ok(())
    }

    /// Opens a host session: reads the MAC counter and the command table;
    /// from now on commands are MAC'd (and encrypted where required).
    pub fn open_session(&mut self, keys: HostKeys) -> Result<(), DriverError> {
        self.session = None;
        let slot = self.host_key_slot()?;
        if !slot.present {
            return Err(DriverError::InvalidArgument(
                "the chip has no host keys: pair first".into(),
            ));
        }
        let (_, table) = self.command_table()?;
        self.session = Some(Session {
            keys,
            counter: Some(slot.counter),
            table,
        });
        Ok(())
    }

    /// Closes the session; later commands go out unprotected.
    pub fn close_session(&mut self) {
        self.session = None;
    }

    /// Forces a counter re-query before the next protected command.
    pub fn resync(&mut self) {
        if let Some(s) = self.session.as_mut() {
            s.counter = None;
        }
    }

    // ---- commands ------------------------------------------------------

    /// Echo.
    pub fn echo(&mut self, data: &[u8]) -> Result<Vec<u8>, DriverError> {
        self.cmd(CommandCode::ECHO, data)
    }

    /// Reset: clears the ephemeral key and the password verification.
    pub fn reset(&mut self) -> Result<(), DriverError> {
        self.cmd(CommandCode::RESET, &[]).map(drop)
    }

    /// `n` random bytes from the chip (1 to 255).
    pub fn random(&mut self, n: u8) -> Result<Vec<u8>, DriverError> {
        self.cmd(CommandCode::GENERATE_RANDOM, &[0x00, n])
    }

    /// A raw query.
    pub fn query(&mut self, tag: Tag) -> Result<Vec<u8>, DriverError> {
        self.cmd(CommandCode::QUERY, &[tag.0])
    }

    /// Product data (tag 0x11).
    pub fn product_data(&mut self) -> Result<ProductData, DriverError> {
        ProductData::parse(&self.query(Tag::PRODUCT_DATA)?)
    }

    /// The data partition (tag 0x12).
    pub fn partition(&mut self) -> Result<Vec<ZoneInfo>, DriverError> {
        query::parse_partition(&self.query(Tag::DATA_PARTITION)?)
    }

    /// The private key table (tag 0x14): global usage limit and slots.
    pub fn key_table(&mut self) -> Result<(u16, Vec<SlotInfo>), DriverError> {
        query::parse_key_table(&self.query(Tag::PRIVATE_KEY_TABLE)?)
    }

    /// The host key slot (tag 0x17 on an A110, 0x47 on an A120).
    pub fn host_key_slot(&mut self) -> Result<HostKeySlot, DriverError> {
        let tag = self.counter_query_tag();
        query::parse_host_key_slot(self.personality, &self.query(tag)?)
    }

    /// The command authorization table (tag 0x24).
    pub fn command_table(&mut self) -> Result<(u8, Vec<CommandAuthorization>), DriverError> {
        query::parse_command_table(&self.query(Tag::COMMAND_AUTHORIZATION)?)
    }

    /// The life-cycle state (tag 0x08).
    pub fn life_cycle(&mut self) -> Result<u8, DriverError> {
        let d = self.query(Tag::LIFE_CYCLE_STATE)?;
        let mut r = Reader::new(&d);
        let v = r.u8()?;
        r.finish()?;
        Ok(v)
    }

    /// The local-envelope key table (tag 0x07).
    pub fn envelope_key_table(&mut self) -> Result<Vec<(u8, Option<u8>)>, DriverError> {
        query::parse_envelope_table(&self.query(Tag::LOCAL_ENVELOPE_KEY_TABLE)?)
    }

    /// Reads `len` bytes of a zone from `offset`, in chunks of at most
    /// [`READ_CHUNK`] bytes. For a counter zone use [`Driver::read_counter`].
    pub fn read_zone(&mut self, zone: u8, offset: u16, len: usize) -> Result<Vec<u8>, DriverError> {
        let mut out = Vec::with_capacity(len);
        let mut off = usize::from(offset);
        let end = off + len;
        if end > usize::from(u16::MAX) {
            return Err(DriverError::InvalidArgument(
                "zone offset beyond 65535".into(),
            ));
        }
        while off < end {
            let n = (end - off).min(READ_CHUNK);
            let mut p = vec![0x00, zone];
            put_len(&mut p, off);
            put_len(&mut p, n);
            let chunk = self.cmd(CommandCode::READ, &p)?;
            if chunk.len() != n {
                return Err(DriverError::BadResponse(WireError::WrongFieldLength {
                    at: 0,
                    expected: n,
                    found: chunk.len(),
                }));
            }
            out.extend_from_slice(&chunk);
            off += n;
        }
        Ok(out)
    }

    /// Reads a counter zone: `(counter, len bytes of data from offset)`.
    pub fn read_counter(
        &mut self,
        zone: u8,
        offset: u16,
        len: u16,
    ) -> Result<(u32, Vec<u8>), DriverError> {
        let mut p = vec![0x00, zone];
        p.extend_from_slice(&offset.to_be_bytes());
        p.extend_from_slice(&len.to_be_bytes());
        let d = self.cmd(CommandCode::READ, &p)?;
        let mut r = Reader::new(&d);
        let c = r.u32()?;
        Ok((c, r.rest().to_vec()))
    }

    fn update_chunk(&self) -> usize {
        // Header, option/zone/offset, C-MAC, CRC and a block of padding.
        self.personality.max_frame() - 1 - 4 - 4 - 2 - 16
    }

    /// Writes `data` into a zone at `offset` (atomic option set). Data larger
    /// than one frame goes in several Update commands, each atomic.
    pub fn update_zone(&mut self, zone: u8, offset: u16, data: &[u8]) -> Result<(), DriverError> {
        let chunk = self.update_chunk();
        let mut off = usize::from(offset);
        if off + data.len() > usize::from(u16::MAX) {
            return Err(DriverError::InvalidArgument(
                "zone offset beyond 65535".into(),
            ));
        }
        for part in data.chunks(chunk) {
            let mut p = vec![0x80, zone];
            put_len(&mut p, off);
            p.extend_from_slice(part);
            self.cmd(CommandCode::UPDATE, &p)?;
            off += part.len();
        }
        Ok(())
    }

    /// Tightens a zone's read and/or update access condition (`(ac,
    /// change_right)`); the chip refuses any loosening.
    pub fn set_zone_access(
        &mut self,
        zone: u8,
        read: Option<(u8, bool)>,
        update: Option<(u8, bool)>,
    ) -> Result<(), DriverError> {
        let opt = |ac: u8, right: bool| 0x10 | (u8::from(right) << 3) | (ac & 7);
        let counter_zone = self
            .partition()?
            .iter()
            .any(|z| z.index == zone && z.counter_zone);
        if let Some((ac, right)) = read {
            self.cmd(CommandCode::READ, &[opt(ac, right), zone, 0, 0, 0, 0])?;
        }
        if let Some((ac, right)) = update {
            if counter_zone {
                self.cmd(
                    CommandCode::DECREMENT,
                    &[opt(ac, right), zone, 0, 0, 0, 0, 0, 0],
                )?;
            } else {
                self.cmd(CommandCode::UPDATE, &[opt(ac, right), zone, 0, 0])?;
            }
        }
        Ok(())
    }

    /// Decrements a one-way counter zone by `amount`, writing `data` at
    /// `offset` with it; returns the new counter.
    pub fn decrement(
        &mut self,
        zone: u8,
        amount: u32,
        offset: u16,
        data: &[u8],
    ) -> Result<u32, DriverError> {
        let mut p = vec![0x00, zone];
        p.extend_from_slice(&offset.to_be_bytes());
        p.extend_from_slice(&amount.to_be_bytes());
        p.extend_from_slice(data);
        let d = self.cmd(CommandCode::DECREMENT, &p)?;
        let mut r = Reader::new(&d);
        let v = r.u32()?;
        r.finish()?;
        Ok(v)
    }

    /// Generates a key pair in a slot; only the public key leaves the chip
    /// (returned as a SEC1 uncompressed point). `usage_limit` 0 is
    /// unlimited; `mode` takes [`key_mode`] flags.
    pub fn generate_key(
        &mut self,
        slot: u8,
        curve: Curve,
        usage_limit: u16,
        mode: u16,
    ) -> Result<Vec<u8>, DriverError> {
        let mut p = vec![Tag::PRIVATE_KEY_SLOT.0, slot];
        p.extend_from_slice(&usage_limit.to_be_bytes());
        p.extend_from_slice(&mode.to_be_bytes());
        curve.encode(&mut p);
        let d = self.cmd(CommandCode::GENERATE_KEY, &p)?;
        let mut r = Reader::new(&d);
        let point = decode_public_key(curve, &mut r)?;
        r.finish()?;
        Ok(point)
    }

    /// Generates a single-use ephemeral key in slot 0xFF for one ECDH.
    pub fn generate_ephemeral_key(&mut self, curve: Curve) -> Result<Vec<u8>, DriverError> {
        self.generate_key(EPHEMERAL_SLOT, curve, 1, key_mode::KEY_ESTABLISHMENT)
    }

    /// Generate ECDHE (A120): a volatile key pair, private half in slot 0xFF.
    pub fn generate_ecdhe(&mut self, curve: Curve) -> Result<Vec<u8>, DriverError> {
        let mut p = Vec::new();
        curve.encode(&mut p);
        let d = self.ext(ExtendedCode::GENERATE_ECDHE, &p)?;
        let mut r = Reader::new(&d);
        let c = Curve::decode(&mut r)?;
        if c != curve {
            return Err(DriverError::BadResponse(WireError::UnknownCurve { at: 0 }));
        }
        let point = decode_public_key(curve, &mut r)?;
        r.finish()?;
        Ok(point)
    }

    /// Signs a digest (32, 48 or 64 bytes) with a slot's key; returns raw
    /// `r ‖ s`.
    pub fn sign(&mut self, slot: u8, digest: &[u8]) -> Result<Vec<u8>, DriverError> {
        let curve = self.slot_curve(slot)?;
        self.sign_with_curve(slot, curve, digest)
    }

    /// Signs when the slot's curve is already known (saves a query).
    pub fn sign_with_curve(
        &mut self,
        slot: u8,
        curve: Curve,
        digest: &[u8],
    ) -> Result<Vec<u8>, DriverError> {
        let mut p = vec![slot];
        put_len(&mut p, digest.len());
        p.extend_from_slice(digest);
        let d = self.cmd(CommandCode::GENERATE_SIGNATURE, &p)?;
        let mut r = Reader::new(&d);
        let sig = decode_signature(curve, &mut r)?;
        r.finish()?;
        Ok(sig)
    }

    /// The curve of the key in a slot.
    pub fn slot_curve(&mut self, slot: u8) -> Result<Curve, DriverError> {
        let (_, slots) = self.key_table()?;
        slots
            .iter()
            .find(|s| s.slot == slot)
            .and_then(|s| s.curve)
            .ok_or(DriverError::Status {
                command: CommandCode::QUERY,
                status: Status::KEY_NOT_FOUND,
            })
    }

    /// Has the chip verify a signature (raw `r ‖ s`) over a digest with a
    /// public key (SEC1 uncompressed point).
    pub fn verify(
        &mut self,
        curve: Curve,
        public: &[u8],
        digest: &[u8],
        signature: &[u8],
    ) -> Result<bool, DriverError> {
        let n = curve.coordinate_len();
        check_public(curve, public)?;
        if signature.len() != 2 * n {
            return Err(DriverError::InvalidArgument(format!(
                "{} needs a {}-byte r||s signature",
                curve.name(),
                2 * n
            )));
        }
        let mut p = vec![0x00];
        curve.encode(&mut p);
        encode_public_key(curve, public, &mut p);
        encode_signature(signature, &mut p);
        if curve == Curve::Ed25519 {
            // EdDSA variant 0: pure Ed25519; `digest` is the message.
            p.push(0);
        }
        put_len(&mut p, digest.len());
        p.extend_from_slice(digest);
        let d = self.cmd(CommandCode::VERIFY_SIGNATURE, &p)?;
        match d.as_slice() {
            [v] => Ok(*v == 1),
            _ => Err(DriverError::BadResponse(WireError::WrongFieldLength {
                at: 0,
                expected: 1,
                found: d.len(),
            })),
        }
    }

    /// ECDH between a slot's key (or the ephemeral slot 0xFF) and a peer
    /// point; returns the shared X coordinate.
    pub fn establish_key(
        &mut self,
        slot: u8,
        curve: Curve,
        peer: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, DriverError> {
        check_public(curve, peer)?;
        let mut p = vec![slot];
        encode_public_key(curve, peer, &mut p);
        let d = Zeroizing::new(self.cmd(CommandCode::ESTABLISH_KEY, &p)?);
        let mut r = Reader::new(&d);
        let s = Zeroizing::new(r.take_len_prefixed()?.to_vec());
        r.finish()?;
        Ok(s)
    }

    /// Generates a local-envelope key (AES-128 or AES-256).
    pub fn generate_envelope_key(&mut self, slot: u8, aes256: bool) -> Result<(), DriverError> {
        self.cmd(
            CommandCode::GENERATE_KEY,
            &[Tag::LOCAL_ENVELOPE_KEY_TABLE.0, slot, u8::from(aes256)],
        )
        .map(drop)
    }

    /// Wraps data (multiple of 8, 16 to 480 bytes) under a local-envelope key.
    pub fn wrap(&mut self, slot: u8, data: &[u8]) -> Result<Vec<u8>, DriverError> {
        let mut p = Zeroizing::new(vec![slot]);
        p.extend_from_slice(data);
        self.cmd(CommandCode::WRAP_LOCAL_ENVELOPE, &p)
    }

    /// Unwraps an envelope.
    pub fn unwrap(&mut self, slot: u8, envelope: &[u8]) -> Result<Zeroizing<Vec<u8>>, DriverError> {
        let mut p = vec![slot];
        p.extend_from_slice(envelope);
        Ok(Zeroizing::new(
            self.cmd(CommandCode::UNWRAP_LOCAL_ENVELOPE, &p)?,
        ))
    }

    /// Sets (or, after verification, changes) the 16-byte password.
    pub fn set_password(&mut self, password: &[u8; 16]) -> Result<(), DriverError> {
        let mut p = Zeroizing::new(vec![Tag::PASSWORD.0]);
        p.extend_from_slice(password);
        self.cmd(CommandCode::PUT_ATTRIBUTE, &p).map(drop)
    }

    /// Verifies the password: `(verified, tries left)`.
    pub fn verify_password(&mut self, password: &[u8; 16]) -> Result<(bool, u8), DriverError> {
        let d = self.cmd(CommandCode::VERIFY_PASSWORD, password)?;
        match d.as_slice() {
            [ok, left] => Ok((*ok == 1, *left)),
            _ => Err(DriverError::BadResponse(WireError::WrongFieldLength {
                at: 0,
                expected: 2,
                found: d.len(),
            })),
        }
    }

    /// Deletes the password.
    pub fn delete_password(&mut self) -> Result<(), DriverError> {
        self.cmd(CommandCode::DELETE, &[Tag::PASSWORD.0]).map(drop)
    }

    /// Sets the life-cycle state (Put Attribute 0x08).
    pub fn set_life_cycle(&mut self, state: u8) -> Result<(), DriverError> {
        self.cmd(
            CommandCode::PUT_ATTRIBUTE,
            &[Tag::LIFE_CYCLE_STATE.0, state],
        )
        .map(drop)
    }

    /// Locks the configuration (keeps the state, sets the lock bit).
    pub fn lock(&mut self) -> Result<(), DriverError> {
        let s = self.life_cycle()?;
        self.set_life_cycle(s | crate::wire::codes::life_cycle::LOCKED)
    }

    /// Unlocks the configuration.
    pub fn unlock(&mut self) -> Result<(), DriverError> {
        let s = self.life_cycle()?;
        self.set_life_cycle(s & !crate::wire::codes::life_cycle::LOCKED)
    }

    /// Tightens the access condition of a command (Put Attribute 0x29).
    pub fn set_command_ac(
        &mut self,
        code: CommandCode,
        ext: Option<ExtendedCode>,
        ac: u8,
    ) -> Result<(), DriverError> {
        let mut p = vec![Tag::COMMAND_AC.0, code.0];
        p.extend(ext.map(|e| e.0));
        p.push(ac);
        self.cmd(CommandCode::PUT_ATTRIBUTE, &p)?;
        self.refresh_table()
    }

    /// Adds encryption flags to a command (Put Attribute 0x2A).
    pub fn set_command_encryption(
        &mut self,
        code: CommandCode,
        ext: Option<ExtendedCode>,
        flags: u8,
    ) -> Result<(), DriverError> {
        let mut p = vec![Tag::COMMAND_ENCRYPTION.0, code.0];
        p.extend(ext.map(|e| e.0));
        p.push(flags);
        self.cmd(CommandCode::PUT_ATTRIBUTE, &p)?;
        self.refresh_table()
    }

    /// Sets the A120 host-key provisioning control (Put Attribute 0x4A):
    /// 0 forbids any further host-key provisioning.
    pub fn set_host_key_provisioning(&mut self, flags: u8) -> Result<(), DriverError> {
        self.cmd(
            CommandCode::PUT_ATTRIBUTE,
            &[Tag::HOST_KEY_PROVISIONING_CONTROL.0, flags, 0xFF],
        )
        .map(drop)
    }

    fn refresh_table(&mut self) -> Result<(), DriverError> {
        if self.session.is_some() {
            let (_, t) = self.command_table()?;
            if let Some(s) = self.session.as_mut() {
                s.table = t;
            }
        }
        Ok(())
    }

    /// Sends a raw command frame and returns the raw response (diagnostics
    /// and tests of the chip's input handling).
    pub fn raw_exchange(&mut self, frame: &[u8]) -> Result<ResponseFrame, DriverError> {
        self.exchange(frame, false)
    }
}

/// A public key must be a SEC1 uncompressed point on Weierstrass curves and
/// the raw 32 bytes on X25519/Ed25519.
fn check_public(curve: Curve, public: &[u8]) -> Result<(), DriverError> {
    let n = curve.coordinate_len();
    let ok = if curve.is_weierstrass() {
        public.len() == 1 + 2 * n && public[0] == 0x04
    } else {
        public.len() == n
    };
    if ok {
        Ok(())
    } else if curve.is_weierstrass() {
        Err(DriverError::InvalidArgument(format!(
            "{} needs a {}-byte uncompressed point",
            curve.name(),
            1 + 2 * n
        )))
    } else {
        Err(DriverError::InvalidArgument(format!(
            "{} needs a {n}-byte public key",
            curve.name()
        )))
    }
}
