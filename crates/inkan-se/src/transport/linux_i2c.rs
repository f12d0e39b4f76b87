//! A real chip on a Linux I²C adapter (`/dev/i2c-N`), the way the legacy ST
//! middleware's Linux glue drives it: `ioctl(I2C_SLAVE, addr)`, then one
//! `write()` per command and one `read()` per read transaction. `EREMOTEIO`
//! and `ENXIO` mean the chip NACKed (busy or asleep).

use super::{BusError, Transport};
use std::io::{Read, Write};
use std::path::Path;

/// `I2C_SLAVE` from `linux/i2c-dev.h`.
pub const I2C_SLAVE: u64 = 0x0703;

/// The character device the transport talks to: a `/dev/i2c-N` file, or a
/// stand-in in tests.
pub trait I2cDevice: Send {
    /// One write transaction.
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// One read transaction filling `buf`.
    fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()>;
}

impl I2cDevice for std::fs::File {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let n = Write::write(self, bytes)?;
        if n != bytes.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "short I2C write",
            ));
        }
        Ok(())
    }
    fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        let n = Read::read(self, buf)?;
        if n != buf.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "short I2C read",
            ));
        }
        Ok(())
    }
}

/// Maps an errno from the adapter: NACK codes become [`BusError::Nack`].
pub fn map_error(e: std::io::Error) -> BusError {
    match e.raw_os_error() {
        Some(libc::EREMOTEIO) | Some(libc::ENXIO) => BusError::Nack,
        _ => BusError::Io(e),
    }
}

/// A chip on a Linux I²C adapter.
pub struct LinuxI2c<D: I2cDevice = std::fs::File> {
    dev: D,
}

impl LinuxI2c<std::fs::File> {
    /// Opens the adapter and selects the 7-bit target address.
    pub fn open(path: &Path, address: u8) -> Result<Self, BusError> {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        #[allow(unsafe_code)]
        // SAFETY: `f` is an open file descriptor for the lifetime of the call,
        // and I2C_SLAVE takes its argument by value (no pointer is passed).
        let rc =
            unsafe { libc::ioctl(f.as_raw_fd(), I2C_SLAVE as _, libc::c_ulong::from(address)) };
        if rc < 0 {
            return Err(BusError::Io(std::io::Error::last_os_error()));
        }
        Ok(LinuxI2c { dev: f })
    }
}

impl<D: I2cDevice> LinuxI2c<D> {
    /// Wraps an already configured device (tests use a stand-in).
    pub fn from_device(dev: D) -> Self {
        LinuxI2c { dev }
    }

    /// The device underneath.
    pub fn device(&self) -> &D {
        &self.dev
    }
}

impl<D: I2cDevice> Transport for LinuxI2c<D> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), BusError> {
        self.dev.write_all(bytes).map_err(map_error)
    }

    fn read(&mut self, len: usize) -> Result<Vec<u8>, BusError> {
        let mut buf = vec![0u8; len];
        self.dev.read_exact(&mut buf).map_err(map_error)?;
        Ok(buf)
    }
}
