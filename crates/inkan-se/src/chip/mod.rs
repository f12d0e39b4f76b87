//! The emulated secure element.
//!
//! [`Chip`] takes one command frame (the bytes of one I²C write) and returns
//! one response frame. Around it, [`ChipBus`] plays the I²C target: it NACKs
//! while the chip is busy and lets the host re-read a response from its first
//! byte; [`server`] carries that bus over a Unix or loopback TCP socket.
//!
//! A frame goes through these steps, in order, each with its own status:
//! size and CRC ([`Status::COMMUNICATION_ERROR`], [`Status::BUFFER_LENGTH_EXCEEDED`]),
//! life cycle, command support, the host C-MAC (the counter moves on only
//! once a C-MAC verifies), the command's access condition, payload
//! decryption, the command itself, then response protection. A command
//! either completes, and its changes reach the state file before the
//! response is released, or it changes nothing (the C-MAC counter aside).

mod bus;
mod commands;
pub mod envelope;
pub mod keys;
mod persist;
pub mod server;
pub mod state;

pub use bus::{BusyModel, ChipBus, InProcess};
pub use persist::PersistError;

use crate::channel::{self, subject};
use crate::personality::Personality;
use crate::wire::codes::{command_ac, header_flags, life_cycle};
use crate::wire::{CommandCode, CommandFrame, ExtendedCode, ResponseFrame, Status, WireError};
use keys::PrivateKey;
use state::{Nvm, ENC_COMMAND, ENC_RESPONSE};
use std::path::{Path, PathBuf};

/// State that a power cycle or a Reset clears.
#[derive(Debug, Default)]
struct Volatile {
    /// The single-use ephemeral key (slot 0xFF).
    ephemeral: Option<PrivateKey>,
    /// Whether the password was verified since the last reset.
    password_verified: bool,
}

/// What one processed frame produced.
#[derive(Debug)]
pub struct Processed {
    /// The response frame bytes.
    pub response: Vec<u8>,
    /// The command that was decoded, if the frame got that far (for the
    /// busy model's per-command times).
    pub command: Option<(CommandCode, Option<ExtendedCode>)>,
}

/// One emulated STSAFE-A chip.
#[derive(Debug)]
pub struct Chip {
    nvm: Nvm,
    volatile: Volatile,
    store: Option<PathBuf>,
    dirty: bool,
}

/// A decoded, authenticated and decrypted command, handed to a handler.
pub(crate) struct Request<'a> {
    pub code: CommandCode,
    pub ext: Option<ExtendedCode>,
    pub payload: &'a [u8],
    /// The command carried a valid C-MAC.
    pub authenticated: bool,
    /// The response will carry an R-MAC (4 bytes of the frame).
    pub rmac: bool,
}

impl From<WireError> for Status {
    fn from(e: WireError) -> Status {
        match e {
            WireError::BadCrc { .. } => Status::COMMUNICATION_ERROR,
            WireError::TooLong { .. } => Status::BUFFER_LENGTH_EXCEEDED,
            WireError::UnknownCurve { .. } => Status::VALUE_OUT_OF_RANGE,
            WireError::Truncated { .. }
            | WireError::MissingMac { .. }
            | WireError::MissingExtendedCode
            | WireError::BadLength { .. }
            | WireError::UnsupportedPointFormat { .. }
            | WireError::WrongFieldLength { .. }
            | WireError::TrailingBytes { .. } => Status::INCONSISTENT_COMMAND_DATA,
        }
    }
}

impl Chip {
    /// A chip that lives in memory only (tests, benchmarks, fleets of
    /// emulated devices in one process).
    pub fn new(personality: Personality, serial: [u8; 9]) -> Chip {
        Chip {
            nvm: Nvm::fresh(personality, serial),
            volatile: Volatile::default(),
            store: None,
            dirty: false,
        }
    }

    /// A chip with a random serial number, in memory.
    pub fn new_random(personality: Personality) -> Chip {
        Chip::new(personality, random_serial())
    }

    /// Creates a new chip whose NVM lives in `path`. Fails if the file exists.
    pub fn create(
        path: &Path,
        personality: Personality,
        serial: [u8; 9],
    ) -> Result<Chip, PersistError> {
        if path.exists() {
            return Err(PersistError::AlreadyExists(path.to_path_buf()));
        }
        let chip = Chip {
            nvm: Nvm::fresh(personality, serial),
            volatile: Volatile::default(),
            store: Some(path.to_path_buf()),
            dirty: false,
        };
        persist::save(path, &chip.nvm)?;
        Ok(chip)
    }

    /// Opens a chip from its state file (a power-on: volatile state is empty).
    pub fn open(path: &Path) -> Result<Chip, PersistError> {
        let nvm = persist::load(path)?;
        Ok(Chip {
            nvm,
            volatile: Volatile::default(),
            store: Some(path.to_path_buf()),
            dirty: false,
        })
    }

    /// The personality.
    pub fn personality(&self) -> Personality {
        self.nvm.personality
    }

    /// The 9-byte serial number.
    pub fn serial(&self) -> &[u8] {
        &self.nvm.serial
    }

    /// Read-only view of the NVM (inspection and tests).
    pub fn nvm(&self) -> &Nvm {
        &self.nvm
    }

    /// The state file, if the chip is persistent.
    pub fn store(&self) -> Option<&Path> {
        self.store.as_deref()
    }

    /// Manufacturer provisioning of a private key, as the chip vendor does
    /// for slot 0 before the chip ships (not reachable over the wire). Only
    /// possible while the chip is born and unlocked; used by test-vector
    /// harnesses that need a known key behind Establish Key.
    pub fn manufacture_key(
        &mut self,
        slot: u8,
        curve: crate::wire::Curve,
        scalar: &[u8],
    ) -> Result<(), Status> {
        if self.nvm.life_cycle != life_cycle::BORN {
            return Err(Status::INVALID_LIFE_CYCLE_STATE);
        }
        let key = PrivateKey::from_scalar(curve, scalar)?;
        let s = self
            .nvm
            .slots
            .iter_mut()
            .find(|s| s.index == slot)
            .ok_or(Status::VALUE_OUT_OF_RANGE)?;
        s.key = Some(key);
        self.dirty = true;
        self.commit().map_err(|_| Status::UNEXPECTED_ERROR)
    }

    /// A power cycle: volatile state is lost.
    pub fn power_cycle(&mut self) {
        self.volatile = Volatile::default();
    }

    /// Processes one command frame and returns the response frame.
    pub fn process(&mut self, frame: &[u8]) -> Processed {
        let mut command = None;
        let response = match CommandFrame::decode(frame, self.nvm.personality.max_frame()) {
            // A frame too short to carry a header and CRC is a broken transfer.
            Err(WireError::Truncated { .. }) => ResponseFrame::status(Status::COMMUNICATION_ERROR),
            Err(e) => ResponseFrame::status(e.into()),
            Ok(f) => {
                command = Some((f.header.code, f.header.extended));
                self.process_frame(&f)
            }
        };
        let response = match self.commit() {
            Ok(()) => response,
            Err(_) => ResponseFrame::status(Status::UNEXPECTED_ERROR),
        };
        Processed {
            response: response.encode(),
            command,
        }
    }

    /// Writes the NVM if a command changed it. If the write fails the
    /// in-memory state goes back to what the file holds, so that memory and
    /// file never disagree.
    fn commit(&mut self) -> Result<(), PersistError> {
        if !self.dirty {
            return Ok(());
        }
        self.dirty = false;
        let Some(path) = &self.store else {
            return Ok(());
        };
        if let Err(e) = persist::save(path, &self.nvm) {
            if let Ok(nvm) = persist::load(path) {
                self.nvm = nvm;
            }
            return Err(e);
        }
        Ok(())
    }

    fn process_frame(&mut self, f: &CommandFrame) -> ResponseFrame {
        let hdr = f.header;
        let lcs = self.nvm.life_cycle & !life_cycle::LOCKED;
        if lcs == life_cycle::TERMINATED
            && !matches!(hdr.code, CommandCode::ECHO | CommandCode::QUERY)
        {
            return ResponseFrame::status(Status::INVALID_LIFE_CYCLE_STATE);
        }
        let Some(record) = self.nvm.command(hdr.code, hdr.extended).cloned() else {
            return ResponseFrame::status(Status::UNSUPPORTED_COMMAND_CODE);
        };
        if hdr.wants_rmac() && !hdr.has_cmac() {
            return ResponseFrame::status(Status::SESSION_ERROR);
        }
        let width = self.nvm.personality.counter_width();
        let header_bytes = hdr.to_bytes();
        // 1. The host C-MAC. The counter moves on once the MAC verifies, even
        //    if the command then fails (§3.2).
        let mut authenticated = false;
        let mut n = 0;
        if let Some(mac) = &f.cmac {
            if hdr.flags & header_flags::HOST_CHANNEL == 0 {
                return ResponseFrame::status(Status::SESSION_ERROR);
            }
            let Some(keys) = &self.nvm.host.keys else {
                return ResponseFrame::status(Status::SESSION_ERROR);
            };
            n = self.nvm.host.counter;
            if n > width.max() {
                return ResponseFrame::status(Status::COUNTER_MAXIMUM);
            }
            let expected = channel::c_mac(keys, width, n, &header_bytes, &f.payload);
            if !channel::mac_eq(&expected, mac) {
                return ResponseFrame::status(Status::INVALID_CMAC);
            }
            self.nvm.host.counter = n + 1;
            self.dirty = true;
            authenticated = true;
        }
        // 2. The command's access condition.
        let allowed = match record.ac {
            command_ac::FREE => true,
            command_ac::ADMIN | command_ac::HOST | command_ac::ADMIN_OR_HOST => authenticated,
            command_ac::ADMIN_OR_PASSWORD => authenticated || self.volatile.password_verified,
            _ => return ResponseFrame::status(Status::COMMAND_NOT_AUTHORIZED),
        };
        if !allowed || (record.encryption != 0 && !authenticated) {
            return ResponseFrame::status(Status::ACCESS_CONDITION_NOT_SATISFIED);
        }
        // 3. Payload decryption.
        let plaintext;
        let payload: &[u8] = if record.encryption & ENC_COMMAND != 0 {
            let Some(keys) = &self.nvm.host.keys else {
                return ResponseFrame::status(Status::SESSION_ERROR);
            };
            match channel::decrypt(keys, width, n + 1, subject::COMMAND_ENCRYPTION, &f.payload) {
                Ok(p) => {
                    plaintext = zeroize::Zeroizing::new(p);
                    &plaintext
                }
                Err(_) => return ResponseFrame::status(Status::COMMAND_DECRYPTION_ERROR),
            }
        } else {
            &f.payload
        };
        // 4. The command.
        let req = Request {
            code: hdr.code,
            ext: hdr.extended,
            payload,
            authenticated,
            rmac: authenticated && hdr.wants_rmac() && self.nvm.host.keys.is_some(),
        };
        let data = match self.dispatch(&req) {
            Ok(d) => d,
            Err(status) => return ResponseFrame::status(status),
        };
        // 5. Response protection.
        let mut rsp = ResponseFrame::ok(data);
        if authenticated {
            if let Some(keys) = &self.nvm.host.keys {
                if record.encryption & ENC_RESPONSE != 0 {
                    rsp.data = channel::encrypt(
                        keys,
                        width,
                        n + 1,
                        subject::RESPONSE_ENCRYPTION,
                        &rsp.data,
                    );
                }
                if hdr.wants_rmac() {
                    rsp.rmac = Some([0; 4]);
                    let rsp_hdr = rsp.header_byte();
                    rsp.rmac = Some(channel::r_mac(
                        keys,
                        width,
                        n + 1,
                        &header_bytes,
                        &f.payload,
                        rsp_hdr,
                        &rsp.data,
                    ));
                }
            }
        }
        let size = 1 + rsp.data.len() + if rsp.rmac.is_some() { 4 } else { 0 } + 2;
        if size > self.nvm.personality.max_frame() {
            return ResponseFrame::status(Status::BUFFER_LENGTH_EXCEEDED);
        }
        rsp
    }
}

/// `count` blank emulated chips in `dir` (`00000.json`, `00001.json`, …),
/// each with a random serial; files already there are kept, so a batch
/// interrupted half-way resumes with the same chips.
pub fn blank_chips(
    dir: &Path,
    count: usize,
    personality: Personality,
) -> Result<Vec<std::path::PathBuf>, PersistError> {
    std::fs::create_dir_all(dir).map_err(|source| PersistError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let p = dir.join(format!("{i:05}.json"));
        if !p.exists() {
            Chip::create(&p, personality, random_serial())?;
        }
        out.push(p);
    }
    Ok(out)
}

/// Nine random bytes for a new chip's serial number.
pub fn random_serial() -> [u8; 9] {
    let mut s = [0u8; 9];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut s);
    s
}
