//! The small part of CBOR (RFC 8949) the device protocol needs: an encoder
//! that writes the preferred (shortest) serialization, and a strict,
//! bounded decoder for messages from the network. Indefinite lengths,
//! non-preferred integer encodings and nesting deeper than 16 are refused.

/// A CBOR decoding error, with the byte position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CborError {
    /// The input ended inside an item.
    #[error("truncated CBOR at byte {0}")]
    Truncated(usize),
    /// An item of another type than expected.
    #[error("unexpected CBOR type at byte {0}")]
    UnexpectedType(usize),
    /// Indefinite lengths, reserved values, non-shortest integers.
    #[error("unsupported or non-canonical CBOR at byte {0}")]
    Unsupported(usize),
    /// Nesting beyond the limit.
    #[error("CBOR nested too deeply at byte {0}")]
    TooDeep(usize),
    /// An integer outside the range the field allows.
    #[error("CBOR integer out of range at byte {0}")]
    OutOfRange(usize),
}

/// Major types.
pub mod major {
    /// Unsigned integer.
    pub const UINT: u8 = 0;
    /// Negative integer.
    pub const NINT: u8 = 1;
    /// Byte string.
    pub const BSTR: u8 = 2;
    /// Text string.
    pub const TSTR: u8 = 3;
    /// Array.
    pub const ARRAY: u8 = 4;
    /// Map.
    pub const MAP: u8 = 5;
    /// Tag.
    pub const TAG: u8 = 6;
    /// Simple values and floats.
    pub const SIMPLE: u8 = 7;
}

// Each branch casts only after checking the value fits.
#[allow(clippy::cast_possible_truncation)]
fn head(out: &mut Vec<u8>, major: u8, v: u64) {
    let m = major << 5;
    if v < 24 {
        out.push(m | v as u8);
    } else if v <= 0xFF {
        out.extend_from_slice(&[m | 24, v as u8]);
    } else if v <= 0xFFFF {
        out.push(m | 25);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= 0xFFFF_FFFF {
        out.push(m | 26);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// Appends an integer.
pub fn int(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        head(out, major::UINT, v.unsigned_abs());
    } else {
        head(out, major::NINT, (-1 - v).unsigned_abs());
    }
}

/// Appends an unsigned integer.
pub fn uint(out: &mut Vec<u8>, v: u64) {
    head(out, major::UINT, v);
}

/// Appends a byte string.
pub fn bstr(out: &mut Vec<u8>, b: &[u8]) {
    head(out, major::BSTR, b.len() as u64);
    out.extend_from_slice(b);
}

/// A byte string as a new vector.
pub fn bstr_vec(b: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(b.len() + 3);
    bstr(&mut v, b);
    v
}

/// Appends a text string.
pub fn tstr(out: &mut Vec<u8>, s: &str) {
    head(out, major::TSTR, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Appends an array header.
pub fn array(out: &mut Vec<u8>, len: usize) {
    head(out, major::ARRAY, len as u64);
}

/// Appends a map header.
pub fn map(out: &mut Vec<u8>, len: usize) {
    head(out, major::MAP, len as u64);
}

const MAX_DEPTH: usize = 16;

/// A strict decoder over a CBOR sequence.
#[derive(Clone, Debug)]
pub struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// A decoder at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Decoder { data, pos: 0 }
    }

    /// Current position.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Whether every byte was consumed.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// The rest of the input, unread.
    pub fn rest(&self) -> &'a [u8] {
        &self.data[self.pos.min(self.data.len())..]
    }

    /// Major type of the next item.
    pub fn peek_major(&self) -> Result<u8, CborError> {
        self.data
            .get(self.pos)
            .map(|b| b >> 5)
            .ok_or(CborError::Truncated(self.pos))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CborError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(CborError::Truncated(self.pos))?;
        if end > self.data.len() {
            return Err(CborError::Truncated(self.pos));
        }
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Reads an item head: (major type, argument).
    pub fn head(&mut self) -> Result<(u8, u64), CborError> {
        let at = self.pos;
        let b = self.take(1)?[0];
        let (major, info) = (b >> 5, b & 0x1F);
        let v = match info {
            0..=23 => u64::from(info),
            24 => {
                let v = u64::from(self.take(1)?[0]);
                if v < 24 {
                    return Err(CborError::Unsupported(at));
                }
                v
            }
            25 => {
                let s = self.take(2)?;
                let v = u64::from(u16::from_be_bytes([s[0], s[1]]));
                if v <= 0xFF {
                    return Err(CborError::Unsupported(at));
                }
                v
            }
            26 => {
                let s = self.take(4)?;
                let v = u64::from(u32::from_be_bytes([s[0], s[1], s[2], s[3]]));
                if v <= 0xFFFF {
                    return Err(CborError::Unsupported(at));
                }
                v
            }
            27 => {
                let s = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(s);
                let v = u64::from_be_bytes(a);
                if v <= 0xFFFF_FFFF {
                    return Err(CborError::Unsupported(at));
                }
                v
            }
            _ => return Err(CborError::Unsupported(at)),
        };
        Ok((major, v))
    }

    /// An integer (major 0 or 1) within i64.
    pub fn int(&mut self) -> Result<i64, CborError> {
        let at = self.pos;
        match self.head()? {
            (major::UINT, v) => i64::try_from(v).map_err(|_| CborError::OutOfRange(at)),
            (major::NINT, v) => i64::try_from(v)
                .map(|v| -1 - v)
                .map_err(|_| CborError::OutOfRange(at)),
            _ => Err(CborError::UnexpectedType(at)),
        }
    }

    /// A byte string.
    pub fn bstr(&mut self) -> Result<&'a [u8], CborError> {
        let at = self.pos;
        match self.head()? {
            (major::BSTR, n) => {
                self.take(usize::try_from(n).map_err(|_| CborError::Truncated(at))?)
            }
            _ => Err(CborError::UnexpectedType(at)),
        }
    }

    /// A text string (UTF-8 not checked beyond being bytes).
    pub fn tstr(&mut self) -> Result<&'a [u8], CborError> {
        let at = self.pos;
        match self.head()? {
            (major::TSTR, n) => {
                self.take(usize::try_from(n).map_err(|_| CborError::Truncated(at))?)
            }
            _ => Err(CborError::UnexpectedType(at)),
        }
    }

    /// An array header; returns the element count.
    pub fn array(&mut self) -> Result<usize, CborError> {
        let at = self.pos;
        match self.head()? {
            (major::ARRAY, n) => usize::try_from(n).map_err(|_| CborError::OutOfRange(at)),
            _ => Err(CborError::UnexpectedType(at)),
        }
    }

    /// One whole item, as its raw bytes.
    pub fn item(&mut self) -> Result<&'a [u8], CborError> {
        let start = self.pos;
        self.skip(0)?;
        Ok(&self.data[start..self.pos])
    }

    fn skip(&mut self, depth: usize) -> Result<(), CborError> {
        if depth > MAX_DEPTH {
            return Err(CborError::TooDeep(self.pos));
        }
        let at = self.pos;
        let (major, v) = self.head()?;
        let n = usize::try_from(v).map_err(|_| CborError::OutOfRange(at))?;
        match major {
            major::UINT | major::NINT => Ok(()),
            major::BSTR | major::TSTR => self.take(n).map(drop),
            major::ARRAY => {
                for _ in 0..n {
                    self.skip(depth + 1)?;
                }
                Ok(())
            }
            major::MAP => {
                for _ in 0..n.checked_mul(2).ok_or(CborError::OutOfRange(at))? {
                    self.skip(depth + 1)?;
                }
                Ok(())
            }
            major::TAG => self.skip(depth + 1),
            _ => {
                // Simple values false/true/null only.
                if matches!(v, 20..=22) {
                    Ok(())
                } else {
                    Err(CborError::Unsupported(at))
                }
            }
        }
    }
}
