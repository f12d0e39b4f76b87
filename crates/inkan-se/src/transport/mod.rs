//! How the host reaches a chip: one I²C write per command, one or more I²C
//! reads per response, each of which the chip may NACK while busy.
//!
//! - [`crate::chip::InProcess`]: the emulated chip in the same process.
//! - [`socket::SocketTransport`]: an emulated chip behind a Unix socket or a
//!   loopback TCP port, I²C transactions framed as [`socket`] documents.
//! - [`linux_i2c::LinuxI2c`]: a real chip on `/dev/i2c-N`.

pub mod linux_i2c;
pub mod socket;

/// A failed bus transaction.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The target did not acknowledge its address: busy, asleep or absent.
    #[error("the chip did not acknowledge (busy or absent)")]
    Nack,
    /// The transport itself failed (socket closed, device error).
    #[error("bus I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer broke the transport's framing.
    #[error("bus protocol error: {0}")]
    Protocol(&'static str),
}

/// One I²C target, as the host sees it.
pub trait Transport: Send {
    /// One write transaction (a whole command frame).
    fn write(&mut self, bytes: &[u8]) -> Result<(), BusError>;
    /// One read transaction of exactly `len` bytes.
    fn read(&mut self, len: usize) -> Result<Vec<u8>, BusError>;
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), BusError> {
        (**self).write(bytes)
    }
    fn read(&mut self, len: usize) -> Result<Vec<u8>, BusError> {
        (**self).read(len)
    }
}

/// Where a chip is reached, as written on the command line:
/// `unix:PATH`, `tcp:127.0.0.1:PORT`, or `i2c:/dev/i2c-N[@0xADDR]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// A Unix socket path.
    Unix(std::path::PathBuf),
    /// A loopback TCP address.
    Tcp(std::net::SocketAddr),
    /// A Linux I²C adapter and 7-bit address.
    I2c(std::path::PathBuf, u8),
}

/// A malformed address.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// No known scheme.
    #[error("address {0:?} must start with unix:, tcp: or i2c:")]
    Scheme(String),
    /// A TCP address that does not parse.
    #[error("invalid TCP address {0:?} (expected tcp:127.0.0.1:PORT)")]
    Tcp(String),
    /// A TCP address off loopback.
    #[error("TCP address {0} is not on loopback: the emulator only listens on 127.0.0.0/8 or ::1")]
    NotLoopback(std::net::SocketAddr),
    /// An I²C address that does not parse.
    #[error("invalid I2C address {0:?} (expected i2c:/dev/i2c-1 or i2c:/dev/i2c-1@0x20)")]
    I2c(String),
}

impl std::str::FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Address, AddressError> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err(AddressError::Scheme(s.into()));
            }
            Ok(Address::Unix(p.into()))
        } else if let Some(t) = s.strip_prefix("tcp:") {
            let a: std::net::SocketAddr = t.parse().map_err(|_| AddressError::Tcp(s.into()))?;
            if !a.ip().is_loopback() {
                return Err(AddressError::NotLoopback(a));
            }
            Ok(Address::Tcp(a))
        } else if let Some(d) = s.strip_prefix("i2c:") {
            let (dev, addr) = match d.split_once('@') {
                Some((dev, a)) => {
                    let a = a.trim_start_matches("0x");
                    (
                        dev,
                        u8::from_str_radix(a, 16).map_err(|_| AddressError::I2c(s.into()))?,
                    )
                }
                None => (d, 0x20),
            };
            if dev.is_empty() || addr > 0x7F {
                return Err(AddressError::I2c(s.into()));
            }
            Ok(Address::I2c(dev.into(), addr))
        } else {
            Err(AddressError::Scheme(s.into()))
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
            Address::Tcp(a) => write!(f, "tcp:{a}"),
            Address::I2c(d, a) => write!(f, "i2c:{}@0x{a:02x}", d.display()),
        }
    }
}

/// Connects to an address.
pub fn connect(addr: &Address) -> Result<Box<dyn Transport>, BusError> {
    Ok(match addr {
        Address::Unix(p) => Box::new(socket::SocketTransport::unix(p)?),
        Address::Tcp(a) => Box::new(socket::SocketTransport::tcp(*a)?),
        Address::I2c(dev, a) => Box::new(linux_i2c::LinuxI2c::open(dev, *a)?),
    })
}
