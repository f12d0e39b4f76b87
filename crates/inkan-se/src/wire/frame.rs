//! Command and response frames (§1.2, §1.3).
//!
//! A command is `HDR (1 or 2 bytes) ‖ PAYLOAD ‖ [C-MAC (4)] ‖ CRC (2, MSB first)`
//! with no length field: its end is the I²C STOP. A response is
//! `RSP_HDR ‖ LEN (2, BE) ‖ DATA ‖ [R-MAC (4)] ‖ CRC`, where LEN counts DATA,
//! the R-MAC and the CRC, and the CRC covers RSP_HDR, DATA and the R-MAC but
//! not LEN.

use super::codes::{header_flags, CommandCode, ExtendedCode, Status, RESPONSE_RMAC_FLAG};
use super::crc::{crc16, crc16_parts};
use super::WireError;

/// Length of a host MAC (C-MAC or R-MAC) on the wire.
pub const MAC_LEN: usize = 4;
/// Length of the CRC on the wire.
pub const CRC_LEN: usize = 2;

/// The header of a command: flags, code and, for extended commands, the
/// extended code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandHeader {
    /// Flag bits ([`header_flags`]) ORed into the first byte.
    pub flags: u8,
    /// The base command code (low five bits).
    pub code: CommandCode,
    /// The extended code, present exactly when `code` is [`CommandCode::EXTENDED`].
    pub extended: Option<ExtendedCode>,
}

impl CommandHeader {
    /// A plain header for a base command.
    pub fn new(code: CommandCode) -> Self {
        CommandHeader {
            flags: 0,
            code,
            extended: None,
        }
    }

    /// A plain header for an extended command.
    pub fn extended(code: ExtendedCode) -> Self {
        CommandHeader {
            flags: 0,
            code: CommandCode::EXTENDED,
            extended: Some(code),
        }
    }

    /// The header bytes as they go on the wire (flags included).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![(self.code.0 & header_flags::CODE_MASK) | self.flags];
        if let Some(ext) = self.extended {
            out.push(ext.0);
        }
        out
    }

    /// Whether the command carries a C-MAC.
    pub fn has_cmac(&self) -> bool {
        self.flags & header_flags::CMAC != 0
    }

    /// Whether the host asks for an R-MAC.
    pub fn wants_rmac(&self) -> bool {
        self.flags & header_flags::RMAC != 0
    }
}

/// A command frame, as the host sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandFrame {
    /// The header.
    pub header: CommandHeader,
    /// The payload (possibly encrypted), without C-MAC and CRC.
    pub payload: Vec<u8>,
    /// The C-MAC, present exactly when the header says so.
    pub cmac: Option<[u8; MAC_LEN]>,
}

impl CommandFrame {
    /// Serialises the frame, CRC included.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.header.to_bytes();
        out.extend_from_slice(&self.payload);
        if let Some(mac) = &self.cmac {
            out.extend_from_slice(mac);
        }
        let crc = crc16(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parses a frame received in one I²C write. `max_len` bounds the whole
    /// frame, CRC included.
    ///
    /// The checks run in the order a chip needs them: size, CRC, header,
    /// C-MAC presence.
    pub fn decode(bytes: &[u8], max_len: usize) -> Result<Self, WireError> {
        if bytes.len() > max_len {
            return Err(WireError::TooLong {
                len: bytes.len(),
                max: max_len,
            });
        }
        if bytes.len() < 1 + CRC_LEN {
            return Err(WireError::Truncated {
                needed: 1 + CRC_LEN,
                got: bytes.len(),
            });
        }
        let (body, crc_bytes) = bytes.split_at(bytes.len() - CRC_LEN);
        let found = u16::from_be_bytes([crc_bytes[0], crc_bytes[1]]);
        let expected = crc16(body);
        if found != expected {
            return Err(WireError::BadCrc {
                at: body.len(),
                expected,
                found,
            });
        }
        let first = body[0];
        let code = CommandCode(first & header_flags::CODE_MASK);
        let flags = first & !header_flags::CODE_MASK;
        let (extended, rest) = if code == CommandCode::EXTENDED {
            match body.get(1) {
                Some(&e) => (Some(ExtendedCode(e)), &body[2..]),
                None => return Err(WireError::MissingExtendedCode),
            }
        } else {
            (None, &body[1..])
        };
        let header = CommandHeader {
            flags,
            code,
            extended,
        };
        let (payload, cmac) = if header.has_cmac() {
            if rest.len() < MAC_LEN {
                return Err(WireError::MissingMac { got: rest.len() });
            }
            let (p, m) = rest.split_at(rest.len() - MAC_LEN);
            let mut mac = [0u8; MAC_LEN];
            mac.copy_from_slice(m);
            (p.to_vec(), Some(mac))
        } else {
            (rest.to_vec(), None)
        };
        Ok(CommandFrame {
            header,
            payload,
            cmac,
        })
    }
}

/// A response frame, as the chip sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseFrame {
    /// The status code.
    pub status: Status,
    /// The data (possibly encrypted), without R-MAC and CRC.
    pub data: Vec<u8>,
    /// The R-MAC; when present, bit 6 of the response header is set.
    pub rmac: Option<[u8; MAC_LEN]>,
}

impl ResponseFrame {
    /// A response with a status and no data.
    pub fn status(status: Status) -> Self {
        ResponseFrame {
            status,
            data: Vec::new(),
            rmac: None,
        }
    }

    /// A successful response carrying `data`.
    pub fn ok(data: Vec<u8>) -> Self {
        ResponseFrame {
            status: Status::OK,
            data,
            rmac: None,
        }
    }

    /// The response header byte.
    pub fn header_byte(&self) -> u8 {
        (self.status.0 & header_flags::CODE_MASK)
            | if self.rmac.is_some() {
                RESPONSE_RMAC_FLAG
            } else {
                0
            }
    }

    /// Serialises the frame: header, LEN, data, R-MAC, CRC.
    pub fn encode(&self) -> Vec<u8> {
        let mac: &[u8] = match &self.rmac {
            Some(m) => m,
            None => &[],
        };
        let len = self.data.len() + mac.len() + CRC_LEN;
        let hdr = [self.header_byte()];
        let crc = crc16_parts(&[&hdr, &self.data, mac]);
        let mut out = Vec::with_capacity(3 + len);
        out.push(hdr[0]);
        // LEN is two bytes; frames are bounded far below 64 KiB by the
        // personality's limit, so the saturation never triggers in practice.
        out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(&self.data);
        out.extend_from_slice(mac);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// The total frame length announced by a response's first three bytes
    /// (header and LEN), or an error if fewer than three bytes are given.
    pub fn announced_len(prefix: &[u8]) -> Result<usize, WireError> {
        if prefix.len() < 3 {
            return Err(WireError::Truncated {
                needed: 3,
                got: prefix.len(),
            });
        }
        let len = usize::from(u16::from_be_bytes([prefix[1], prefix[2]]));
        if len < CRC_LEN {
            return Err(WireError::BadLength { len });
        }
        Ok(3 + len)
    }

    /// Parses a response read from the chip. Extra bytes after the announced
    /// length are filler and ignored (§1.5). `expect_rmac` says whether the
    /// host asked for an R-MAC: it is present on successful responses only.
    pub fn decode(bytes: &[u8], expect_rmac: bool) -> Result<Self, WireError> {
        let total = Self::announced_len(bytes)?;
        if bytes.len() < total {
            return Err(WireError::Truncated {
                needed: total,
                got: bytes.len(),
            });
        }
        let hdr = bytes[0];
        let body = &bytes[3..total - CRC_LEN];
        let found = u16::from_be_bytes([bytes[total - 2], bytes[total - 1]]);
        let expected = crc16_parts(&[&bytes[..1], body]);
        if found != expected {
            return Err(WireError::BadCrc {
                at: total - CRC_LEN,
                expected,
                found,
            });
        }
        let status = Status(hdr & header_flags::CODE_MASK);
        let has_rmac = hdr & RESPONSE_RMAC_FLAG != 0 || (expect_rmac && status == Status::OK);
        if has_rmac && status == Status::OK {
            if body.len() < MAC_LEN {
                return Err(WireError::MissingMac { got: body.len() });
            }
            let (d, m) = body.split_at(body.len() - MAC_LEN);
            let mut mac = [0u8; MAC_LEN];
            mac.copy_from_slice(m);
            Ok(ResponseFrame {
                status,
                data: d.to_vec(),
                rmac: Some(mac),
            })
        } else {
            Ok(ResponseFrame {
                status,
                data: body.to_vec(),
                rmac: None,
            })
        }
    }
}
