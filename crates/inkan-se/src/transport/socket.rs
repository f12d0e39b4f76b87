//! I²C transactions carried over a byte stream (Unix socket or loopback
//! TCP), so that a host written in any language can drive the emulator.
//!
//! Each transaction is one request and one reply. All integers big-endian.
//!
//! ```text
//! request:  op (1) | address (1, 7-bit) | length (2) | data (length bytes, writes only)
//!           op = 0x57 'W' (write `data` to the target)
//!              = 0x52 'R' (read `length` bytes from the target)
//! reply:    ack (1) | data (length bytes, reads that were acknowledged only)
//!           ack = 0x00 acknowledged, 0x01 NACK (busy, or wrong address),
//!                 0x02 framing error (the server then closes the connection)
//! ```
//!
//! `length` is at most [`MAX_TRANSACTION`]. A Python host needs about ten
//! lines: `sock.sendall(b"W\x20" + len(f).to_bytes(2, "big") + f)`, then
//! `sock.recv(1)`; and `sock.sendall(b"R\x20" + n.to_bytes(2, "big"))`, then
//! read 1 + n bytes if the first is 0.

use super::{BusError, Transport};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Write operation byte.
pub const OP_WRITE: u8 = b'W';
/// Read operation byte.
pub const OP_READ: u8 = b'R';
/// Reply: acknowledged.
pub const ACK: u8 = 0x00;
/// Reply: not acknowledged.
pub const NACK: u8 = 0x01;
/// Reply: framing error.
pub const FRAMING_ERROR: u8 = 0x02;
/// Largest transaction carried.
pub const MAX_TRANSACTION: usize = 4096;
/// The STSAFE-A default 7-bit address.
pub const DEFAULT_ADDRESS: u8 = 0x20;

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
        }
    }
}

/// The host end of a socket bus.
pub struct SocketTransport {
    stream: Stream,
    address: u8,
}

impl SocketTransport {
    /// Connects to a Unix socket.
    pub fn unix(path: &Path) -> Result<SocketTransport, BusError> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(SocketTransport {
            stream: Stream::Unix(s),
            address: DEFAULT_ADDRESS,
        })
    }

    /// Connects to a loopback TCP port. Other addresses are refused.
    pub fn tcp(addr: SocketAddr) -> Result<SocketTransport, BusError> {
        if !addr.ip().is_loopback() {
            return Err(BusError::Protocol(
                "TCP transport is restricted to loopback",
            ));
        }
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(SocketTransport {
            stream: Stream::Tcp(s),
            address: DEFAULT_ADDRESS,
        })
    }

    /// Uses another 7-bit target address.
    pub fn with_address(mut self, address: u8) -> Self {
        self.address = address;
        self
    }

    fn header(&self, op: u8, len: usize) -> Result<[u8; 4], BusError> {
        let l = u16::try_from(len)
            .ok()
            .filter(|&l| usize::from(l) <= MAX_TRANSACTION)
            .ok_or(BusError::Protocol(
                "transaction longer than the socket framing allows",
            ))?
            .to_be_bytes();
        Ok([op, self.address, l[0], l[1]])
    }

    fn ack(&mut self) -> Result<(), BusError> {
        let mut a = [0u8; 1];
        self.stream.read_exact(&mut a)?;
        match a[0] {
            ACK => Ok(()),
            NACK => Err(BusError::Nack),
            _ => Err(BusError::Protocol("the server reported a framing error")),
        }
    }
}

impl Transport for SocketTransport {
    fn write(&mut self, bytes: &[u8]) -> Result<(), BusError> {
        let mut msg = Vec::with_capacity(4 + bytes.len());
        msg.extend_from_slice(&self.header(OP_WRITE, bytes.len())?);
        msg.extend_from_slice(bytes);
        self.stream.write_all(&msg)?;
        self.ack()
    }

    fn read(&mut self, len: usize) -> Result<Vec<u8>, BusError> {
        let h = self.header(OP_READ, len)?;
        self.stream.write_all(&h)?;
        self.ack()?;
        let mut out = vec![0u8; len];
        self.stream.read_exact(&mut out)?;
        Ok(out)
    }
}

/// One request read by a server.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// Write these bytes to `address`.
    Write {
        /// Target address.
        address: u8,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Read `len` bytes from `address`.
    Read {
        /// Target address.
        address: u8,
        /// How many bytes.
        len: usize,
    },
}

/// Reads one request from a stream; `Ok(None)` at a clean end of stream.
pub fn read_request(r: &mut impl Read) -> Result<Option<Request>, BusError> {
    let mut h = [0u8; 4];
    match r.read_exact(&mut h[..1]) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    r.read_exact(&mut h[1..])?;
    let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if len > MAX_TRANSACTION {
        return Err(BusError::Protocol("transaction length above the maximum"));
    }
    match h[0] {
        OP_WRITE => {
            let mut data = vec![0u8; len];
            r.read_exact(&mut data)?;
            Ok(Some(Request::Write {
                address: h[1],
                data,
            }))
        }
        OP_READ => Ok(Some(Request::Read { address: h[1], len })),
        _ => Err(BusError::Protocol("unknown operation byte")),
    }
}
