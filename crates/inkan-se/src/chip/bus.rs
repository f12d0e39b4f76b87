//! The chip as an I²C target: it NACKs its address while it processes a
//! command and serves the response from its first byte on every read.

use super::Chip;
use crate::transport::{BusError, Transport};
use std::time::{Duration, Instant};

/// How long the emulated chip stays busy after a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusyModel {
    /// The response is ready at once.
    Instant,
    /// The per-command times of real silicon (stsafe-protocol.md §1.5).
    Nominal,
    /// A fixed time for every command (tests of host timeouts).
    Fixed(Duration),
}

/// An emulated chip on an I²C bus.
#[derive(Debug)]
pub struct ChipBus {
    chip: Chip,
    busy: BusyModel,
    busy_until: Option<Instant>,
    response: Option<Vec<u8>>,
}

impl ChipBus {
    /// Puts a chip on the bus.
    pub fn new(chip: Chip, busy: BusyModel) -> ChipBus {
        ChipBus {
            chip,
            busy,
            busy_until: None,
            response: None,
        }
    }

    /// The chip.
    pub fn chip(&self) -> &Chip {
        &self.chip
    }

    /// The chip, mutably (power cycles in tests).
    pub fn chip_mut(&mut self) -> &mut Chip {
        &mut self.chip
    }

    /// The 7-bit address the chip answers to.
    pub fn address(&self) -> u8 {
        self.chip.nvm().i2c_address
    }

    fn is_busy(&mut self) -> bool {
        match self.busy_until {
            Some(t) if Instant::now() < t => true,
            _ => {
                self.busy_until = None;
                false
            }
        }
    }

    /// A write transaction: one command frame. NACKed while busy.
    pub fn write(&mut self, address: u8, bytes: &[u8]) -> Result<(), BusError> {
        if address != self.address() || self.is_busy() {
            return Err(BusError::Nack);
        }
        let processed = self.chip.process(bytes);
        let time = match (self.busy, processed.command) {
            (BusyModel::Instant, _) => Duration::ZERO,
            (BusyModel::Fixed(d), _) => d,
            (BusyModel::Nominal, Some((code, ext))) => {
                self.chip.personality().processing_time(code, ext)
            }
            (BusyModel::Nominal, None) => Duration::from_millis(1),
        };
        self.busy_until = (!time.is_zero()).then(|| Instant::now() + time);
        self.response = Some(processed.response);
        Ok(())
    }

    /// A read transaction of `len` bytes: the pending response from its
    /// first byte, padded with 0xFF beyond its end. NACKed while busy or
    /// when no response is pending.
    pub fn read(&mut self, address: u8, len: usize) -> Result<Vec<u8>, BusError> {
        if address != self.address() || self.is_busy() {
            return Err(BusError::Nack);
        }
        let rsp = self.response.as_ref().ok_or(BusError::Nack)?;
        let mut out = rsp.iter().copied().take(len).collect::<Vec<u8>>();
        out.resize(len, 0xFF);
        Ok(out)
    }
}

/// The in-process transport: the driver talks to a chip in the same process.
#[derive(Debug)]
pub struct InProcess {
    bus: ChipBus,
}

impl InProcess {
    /// A transport over a chip that answers at once.
    pub fn new(chip: Chip) -> InProcess {
        InProcess {
            bus: ChipBus::new(chip, BusyModel::Instant),
        }
    }

    /// A transport over a chip with a busy model.
    pub fn with_busy(chip: Chip, busy: BusyModel) -> InProcess {
        InProcess {
            bus: ChipBus::new(chip, busy),
        }
    }

    /// The bus and chip behind it.
    pub fn bus(&self) -> &ChipBus {
        &self.bus
    }

    /// The bus and chip behind it, mutably.
    pub fn bus_mut(&mut self) -> &mut ChipBus {
        &mut self.bus
    }

    /// Takes the chip back.
    pub fn into_chip(self) -> Chip {
        self.bus.chip
    }
}

impl Transport for InProcess {
    fn write(&mut self, bytes: &[u8]) -> Result<(), BusError> {
        let a = self.bus.address();
        self.bus.write(a, bytes)
    }

    fn read(&mut self, len: usize) -> Result<Vec<u8>, BusError> {
        let a = self.bus.address();
        self.bus.read(a, len)
    }
}
