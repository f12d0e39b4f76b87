//! Field encodings shared by commands (§2.2): curve identifiers, public keys,
//! signatures, and a bounds-checked reader for payloads.

use super::WireError;

/// An elliptic curve, as identified on the wire by its OID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Curve {
    /// NIST P-256 (secp256r1).
    P256,
    /// NIST P-384 (secp384r1).
    P384,
    /// NIST P-521.
    P521,
    /// brainpoolP256r1.
    BrainpoolP256,
    /// brainpoolP384r1.
    BrainpoolP384,
    /// brainpoolP512r1.
    BrainpoolP512,
    /// X25519 (key agreement).
    X25519,
    /// Ed25519 (signatures).
    Ed25519,
}

impl Curve {
    /// Every curve the wire format can name.
    pub const ALL: [Curve; 8] = [
        Curve::P256,
        Curve::P384,
        Curve::P521,
        Curve::BrainpoolP256,
        Curve::BrainpoolP384,
        Curve::BrainpoolP512,
        Curve::X25519,
        Curve::Ed25519,
    ];

    /// The OID content bytes (DER without tag and length).
    pub fn oid(self) -> &'static [u8] {
        match self {
            Curve::P256 => &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07],
            Curve::P384 => &[0x2B, 0x81, 0x04, 0x00, 0x22],
            Curve::P521 => &[0x2B, 0x81, 0x04, 0x00, 0x23],
            Curve::BrainpoolP256 => &[0x2B, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x07],
            Curve::BrainpoolP384 => &[0x2B, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x0B],
            Curve::BrainpoolP512 => &[0x2B, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x0D],
            Curve::X25519 => &[0x2B, 0x65, 0x6E],
            Curve::Ed25519 => &[0x2B, 0x65, 0x70],
        }
    }

    /// Size of one coordinate (or of the key for the Edwards/Montgomery curves).
    pub fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 | Curve::BrainpoolP256 | Curve::X25519 | Curve::Ed25519 => 32,
            Curve::P384 | Curve::BrainpoolP384 => 48,
            Curve::P521 => 66,
            Curve::BrainpoolP512 => 64,
        }
    }

    /// Whether public keys are Weierstrass points (`04 ‖ X ‖ Y` form).
    pub fn is_weierstrass(self) -> bool {
        !matches!(self, Curve::X25519 | Curve::Ed25519)
    }

    /// The short name used by the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "p256",
            Curve::P384 => "p384",
            Curve::P521 => "p521",
            Curve::BrainpoolP256 => "bp256",
            Curve::BrainpoolP384 => "bp384",
            Curve::BrainpoolP512 => "bp512",
            Curve::X25519 => "x25519",
            Curve::Ed25519 => "ed25519",
        }
    }

    /// Parses a CLI name.
    pub fn from_name(name: &str) -> Option<Curve> {
        Curve::ALL
            .into_iter()
            .find(|c| c.name() == name.to_ascii_lowercase())
    }

    /// Encodes `[len(2)][oid]`.
    pub fn encode(self, out: &mut Vec<u8>) {
        let oid = self.oid();
        put_len(out, oid.len());
        out.extend_from_slice(oid);
    }

    /// Decodes `[len(2)][oid]`.
    pub fn decode(r: &mut Reader<'_>) -> Result<Curve, WireError> {
        let at = r.position();
        let oid = r.take_len_prefixed()?;
        Curve::ALL
            .into_iter()
            .find(|c| c.oid() == oid)
            .ok_or(WireError::UnknownCurve { at })
    }
}

/// Writes a two-byte big-endian length. Every length written by the codec is
/// bounded by a frame size (≤ 752), so it always fits.
pub fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
}

/// Encodes a public key: `04 [LEN_X][X][LEN_Y][Y]` for Weierstrass curves,
/// `[LEN][K]` for X25519/Ed25519. `point` is the SEC1 uncompressed point
/// (`04 ‖ X ‖ Y`) or the raw 32-byte key.
pub fn encode_public_key(curve: Curve, point: &[u8], out: &mut Vec<u8>) {
    if curve.is_weierstrass() {
        let n = curve.coordinate_len();
        let coords = point.get(1..).unwrap_or(&[]);
        let (x, y) = coords.split_at(n.min(coords.len()));
        out.push(0x04);
        put_len(out, x.len());
        out.extend_from_slice(x);
        put_len(out, y.len());
        out.extend_from_slice(y);
    } else {
        put_len(out, point.len());
        out.extend_from_slice(point);
    }
}

/// Decodes a public key of `curve`, returning the SEC1 uncompressed point
/// (or the raw key for X25519/Ed25519). Sizes are checked; whether the point
/// is on the curve is for the caller.
pub fn decode_public_key(curve: Curve, r: &mut Reader<'_>) -> Result<Vec<u8>, WireError> {
    let n = curve.coordinate_len();
    if curve.is_weierstrass() {
        let at = r.position();
        let format = r.u8()?;
        if format != 0x04 {
            return Err(WireError::UnsupportedPointFormat { at, format });
        }
        let x = r.take_len_prefixed_exact(n)?;
        let y = r.take_len_prefixed_exact(n)?;
        let mut point = Vec::with_capacity(1 + 2 * n);
        point.push(0x04);
        point.extend_from_slice(x);
        point.extend_from_slice(y);
        Ok(point)
    } else {
        Ok(r.take_len_prefixed_exact(n)?.to_vec())
    }
}

/// Encodes a signature `[LEN_R][R][LEN_S][S]` from the raw `r ‖ s` form.
pub fn encode_signature(raw: &[u8], out: &mut Vec<u8>) {
    let (r, s) = raw.split_at(raw.len() / 2);
    put_len(out, r.len());
    out.extend_from_slice(r);
    put_len(out, s.len());
    out.extend_from_slice(s);
}

/// Decodes a signature for `curve` into raw `r ‖ s`.
pub fn decode_signature(curve: Curve, rd: &mut Reader<'_>) -> Result<Vec<u8>, WireError> {
    let n = curve.coordinate_len();
    let r = rd.take_len_prefixed_exact(n)?;
    let s = rd.take_len_prefixed_exact(n)?;
    let mut raw = Vec::with_capacity(2 * n);
    raw.extend_from_slice(r);
    raw.extend_from_slice(s);
    Ok(raw)
}

/// A cursor over a payload. Every read is bounds-checked and errors carry the
/// byte position.
#[derive(Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    /// Current position.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// Takes `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.remaining() < n {
            return Err(WireError::Truncated {
                needed: self.pos + n,
                got: self.data.len(),
            });
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Takes `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// Takes everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.data[self.pos..];
        self.pos = self.data.len();
        s
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    /// A big-endian u16.
    pub fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// A big-endian u32.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// `[len(2)][bytes]`.
    pub fn take_len_prefixed(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    /// `[len(2)][bytes]` where len must equal `n`.
    pub fn take_len_prefixed_exact(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let at = self.pos;
        let len = usize::from(self.u16()?);
        if len != n {
            return Err(WireError::WrongFieldLength {
                at,
                expected: n,
                found: len,
            });
        }
        self.take(n)
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<(), WireError> {
        if self.remaining() != 0 {
            return Err(WireError::TrailingBytes {
                at: self.pos,
                count: self.remaining(),
            });
        }
        Ok(())
    }
}
