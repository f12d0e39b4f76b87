//! The STSAFE-A wire codec, shared by the emulated chip and the host driver:
//! frames, CRC, command/status/tag codes and field encodings.

pub mod codes;
pub mod crc;
pub mod encoding;
pub mod frame;

pub use codes::{CommandCode, ExtendedCode, Status, Tag};
pub use encoding::{Curve, Reader};
pub use frame::{CommandFrame, CommandHeader, ResponseFrame};

/// A malformed frame or field. Every variant carries where the problem is.
/// On the chip side these come from the host (a buggy host, a noisy bus, or
/// an attack); on the host side from the chip or the bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the structure needs.
    #[error("truncated: needed {needed} bytes, got {got}")]
    Truncated {
        /// Bytes needed up to the end of the field being read.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// The frame exceeds the personality's maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLong {
        /// Frame length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The CRC does not match.
    #[error("bad CRC at byte {at}: expected {expected:04X}, found {found:04X}")]
    BadCrc {
        /// Offset of the CRC in the frame.
        at: usize,
        /// CRC computed over the frame.
        expected: u16,
        /// CRC carried by the frame.
        found: u16,
    },
    /// The header says a MAC is present but the frame is too short to hold it.
    #[error("MAC flagged but only {got} bytes follow the header")]
    MissingMac {
        /// Bytes available for payload and MAC.
        got: usize,
    },
    /// An extended-command prefix (0x1F) with no extended code after it.
    #[error("extended command prefix without an extended code")]
    MissingExtendedCode,
    /// A response LEN field below the minimum of 2.
    #[error("response length field {len} is below 2")]
    BadLength {
        /// The LEN value.
        len: usize,
    },
    /// An unknown curve identifier.
    #[error("unknown curve identifier at byte {at}")]
    UnknownCurve {
        /// Offset of the identifier.
        at: usize,
    },
    /// A point format other than uncompressed.
    #[error("unsupported point format 0x{format:02X} at byte {at}")]
    UnsupportedPointFormat {
        /// Offset of the format byte.
        at: usize,
        /// The format byte.
        format: u8,
    },
    /// A length-prefixed field of the wrong size.
    #[error("field at byte {at} has length {found}, expected {expected}")]
    WrongFieldLength {
        /// Offset of the length prefix.
        at: usize,
        /// Expected length.
        expected: usize,
        /// Length found.
        found: usize,
    },
    /// Bytes left after the last field.
    #[error("{count} unexpected bytes after byte {at}")]
    TrailingBytes {
        /// Offset of the first extra byte.
        at: usize,
        /// How many.
        count: usize,
    },
}
