//! EDHOC (RFC 9528), method 0 (signature / signature), cipher suites 0
//! (X25519, EdDSA) and 2 (P-256, ES256), both with AES-CCM-16-64-128 and
//! SHA-256.
//!
//! The engine is written as a chain of states for each role, each consumed
//! by the step that follows, so a message cannot be processed twice by the
//! same state. Every private-key operation of the initiator goes through
//! [`crypto::EphemeralKey`] and [`crypto::SignatureKey`], so a secure
//! element can perform them.

pub mod conformance;
pub mod crypto;
mod initiator;
mod kdf;
mod responder;

pub use initiator::{
    Initiator, InitiatorAwaitingMessage2, InitiatorDone, InitiatorProcessingMessage2,
};
pub use kdf::Session;
pub use responder::{
    Responder, ResponderAwaitingMessage3, ResponderDone, ResponderMessage1,
    ResponderProcessingMessage3,
};

use crate::cbor::{self, CborError, Decoder};

/// The authentication method: signature / signature.
pub const METHOD_SIG_SIG: i64 = 0;

/// Hash output length for both suites (SHA-256).
pub const HASH_LEN: usize = 32;
/// AES-CCM-16-64-128 key length.
pub const KEY_LEN: usize = 16;
/// AES-CCM-16-64-128 nonce length.
pub const IV_LEN: usize = 13;
/// AES-CCM-16-64-128 tag length.
pub const TAG_LEN: usize = 8;

/// Largest EDHOC message accepted (a certificate chain fits comfortably).
pub const MAX_MESSAGE: usize = 4096;

/// A cipher suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Suite {
    /// Suite 0: AES-CCM-16-64-128, SHA-256, 8, X25519, EdDSA.
    X25519EdDsa,
    /// Suite 2: AES-CCM-16-64-128, SHA-256, 8, P-256, ES256.
    P256Es256,
}

impl Suite {
    /// The suite's number.
    pub fn id(self) -> i64 {
        match self {
            Suite::X25519EdDsa => 0,
            Suite::P256Es256 => 2,
        }
    }

    /// The suite with this number, if supported.
    pub fn from_id(id: i64) -> Option<Suite> {
        match id {
            0 => Some(Suite::X25519EdDsa),
            2 => Some(Suite::P256Es256),
            _ => None,
        }
    }

    /// Length of an ephemeral public key on the wire (X25519 key or P-256
    /// x-coordinate).
    pub fn point_len(self) -> usize {
        32
    }
}

/// Why an EDHOC exchange failed. Each variant is a specific, expected way
/// for a malformed or hostile message to be refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EdhocError {
    /// The message is not well-formed CBOR of the expected shape.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// A critical EAD item (negative label) this endpoint does not
    /// understand (RFC 9528 §3.8).
    #[error("unsupported critical EAD item {0}")]
    CriticalEad(i64),
    /// CBOR-level error.
    #[error("malformed CBOR: {0}")]
    Cbor(#[from] CborError),
    /// A message longer than allowed.
    #[error("message of {0} bytes exceeds the limit")]
    TooLong(usize),
    /// Method other than 0.
    #[error("unsupported method {0}")]
    UnsupportedMethod(i64),
    /// The initiator's selected suite is not supported here; the responder
    /// answers with an error message listing its suites.
    #[error("selected cipher suite {selected} not supported")]
    UnsupportedSuite {
        /// The suite the initiator selected.
        selected: i64,
    },
    /// The peer's ephemeral key is not a valid point.
    #[error("invalid ephemeral public key")]
    InvalidEphemeralKey,
    /// The MAC does not verify (wrong keys or a spliced transcript).
    #[error("MAC_{0} does not verify")]
    MacMismatch(u8),
    /// The signature does not verify against the credential.
    #[error("signature_{0} does not verify")]
    BadSignature(u8),
    /// message_3 or message_4 failed decryption (tampered, replayed into
    /// another exchange, or keyed differently).
    #[error("message_{0} failed AEAD decryption")]
    Decryption(u8),
    /// The peer's credential is unusable (wrong key type for the suite).
    #[error("credential unusable: {0}")]
    Credential(&'static str),
    /// The credential lookup or validation refused the peer.
    #[error("peer refused: {0}")]
    Refused(String),
    /// A key operation failed (in a secure element, for example).
    #[error("key operation failed: {0}")]
    Key(String),
    /// The peer sent an EDHOC error message.
    #[error("peer sent an EDHOC error (code {code}): {detail}")]
    PeerError {
        /// ERR_CODE.
        code: i64,
        /// ERR_INFO, as text.
        detail: String,
    },
}

/// A connection identifier: a byte string, encoded as a one-byte CBOR int
/// when it is one (RFC 9528 §3.3.2).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConnId(pub Vec<u8>);

impl ConnId {
    fn is_one_byte_int(b: &[u8]) -> bool {
        matches!(b, [x] if *x <= 0x17 || (0x20..=0x37).contains(x))
    }

    /// The wire encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        if Self::is_one_byte_int(&self.0) {
            out.push(self.0[0]);
        } else {
            cbor::bstr(out, &self.0);
        }
    }

    /// The encoding as a vector.
    pub fn encoded(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// Decodes a connection identifier.
    pub fn decode(d: &mut Decoder<'_>) -> Result<ConnId, EdhocError> {
        match d.peek_major()? {
            cbor::major::UINT | cbor::major::NINT => {
                let raw = d.item()?;
                if raw.len() != 1 {
                    return Err(EdhocError::Malformed(
                        "connection identifier int is not one byte",
                    ));
                }
                Ok(ConnId(raw.to_vec()))
            }
            cbor::major::BSTR => {
                let b = d.bstr()?;
                if Self::is_one_byte_int(b) {
                    return Err(EdhocError::Malformed(
                        "connection identifier must use its int encoding",
                    ));
                }
                Ok(ConnId(b.to_vec()))
            }
            _ => Err(EdhocError::Malformed("connection identifier")),
        }
    }
}

/// ID_CRED_x: how a credential is identified (a COSE header map).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdCred(pub Vec<u8>);

/// COSE header label x5chain.
pub const X5CHAIN: i64 = 33;
/// COSE header label x5t.
pub const X5T: i64 = 34;
/// COSE header label kid.
pub const KID: i64 = 4;

impl IdCred {
    /// `{34: [-15, first 8 bytes of SHA-256(cert)]}` (x5t, SHA-256/64).
    pub fn x5t(cert_der: &[u8]) -> IdCred {
        use sha2::Digest;
        let h = sha2::Sha256::digest(cert_der);
        let mut v = Vec::new();
        cbor::map(&mut v, 1);
        cbor::int(&mut v, X5T);
        cbor::array(&mut v, 2);
        cbor::int(&mut v, -15);
        cbor::bstr(&mut v, &h[..8]);
        IdCred(v)
    }

    /// `{33: cert}` or `{33: [cert, ...]}` (x5chain, end entity first).
    pub fn x5chain(certs: &[Vec<u8>]) -> IdCred {
        let mut v = Vec::new();
        cbor::map(&mut v, 1);
        cbor::int(&mut v, X5CHAIN);
        if let [one] = certs {
            cbor::bstr(&mut v, one);
        } else {
            cbor::array(&mut v, certs.len());
            for c in certs {
                cbor::bstr(&mut v, c);
            }
        }
        IdCred(v)
    }

    /// `{4: kid}`.
    pub fn kid(kid: &[u8]) -> IdCred {
        let mut v = Vec::new();
        cbor::map(&mut v, 1);
        cbor::int(&mut v, KID);
        cbor::bstr(&mut v, kid);
        IdCred(v)
    }

    /// What the map says, parsed.
    pub fn parse(&self) -> Result<IdCredKind, EdhocError> {
        let mut d = Decoder::new(&self.0);
        let (major, n) = d.head()?;
        if major != cbor::major::MAP || n != 1 {
            return Err(EdhocError::Malformed(
                "ID_CRED must be a map with one entry",
            ));
        }
        let label = d.int()?;
        let kind = match label {
            KID => IdCredKind::Kid(d.bstr()?.to_vec()),
            X5T => {
                if d.array()? != 2 {
                    return Err(EdhocError::Malformed("x5t must be [alg, hash]"));
                }
                let alg = d.int()?;
                IdCredKind::X5t {
                    alg,
                    hash: d.bstr()?.to_vec(),
                }
            }
            X5CHAIN => match d.peek_major()? {
                cbor::major::BSTR => IdCredKind::X5chain(vec![d.bstr()?.to_vec()]),
                cbor::major::ARRAY => {
                    let n = d.array()?;
                    if n == 0 || n > 8 {
                        return Err(EdhocError::Malformed(
                            "x5chain must hold 1 to 8 certificates",
                        ));
                    }
                    let mut v = Vec::with_capacity(n);
                    for _ in 0..n {
                        v.push(d.bstr()?.to_vec());
                    }
                    IdCredKind::X5chain(v)
                }
                _ => return Err(EdhocError::Malformed("x5chain")),
            },
            _ => return Err(EdhocError::Malformed("unsupported ID_CRED label")),
        };
        if !d.is_empty() {
            return Err(EdhocError::Malformed("trailing bytes after ID_CRED"));
        }
        Ok(kind)
    }

    /// The encoding inside PLAINTEXT_2/3: a lone kid is sent compactly.
    fn encode_compact(&self, out: &mut Vec<u8>) {
        if let Ok(IdCredKind::Kid(k)) = self.parse() {
            if ConnId::is_one_byte_int(&k) {
                out.push(k[0]);
            } else {
                cbor::bstr(out, &k);
            }
        } else {
            out.extend_from_slice(&self.0);
        }
    }

    fn decode_compact(d: &mut Decoder<'_>) -> Result<IdCred, EdhocError> {
        match d.peek_major()? {
            cbor::major::MAP => {
                let raw = d.item()?;
                let id = IdCred(raw.to_vec());
                id.parse()?;
                Ok(id)
            }
            cbor::major::UINT | cbor::major::NINT => {
                let raw = d.item()?;
                if raw.len() != 1 {
                    return Err(EdhocError::Malformed("compact kid"));
                }
                Ok(IdCred::kid(raw))
            }
            cbor::major::BSTR => Ok(IdCred::kid(d.bstr()?)),
            _ => Err(EdhocError::Malformed("ID_CRED")),
        }
    }
}

/// A parsed ID_CRED.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdCredKind {
    /// A key identifier.
    Kid(Vec<u8>),
    /// A certificate hash: (COSE hash algorithm, hash).
    X5t {
        /// COSE algorithm (-15: SHA-256/64).
        alg: i64,
        /// The hash.
        hash: Vec<u8>,
    },
    /// Certificates, end entity first.
    X5chain(Vec<Vec<u8>>),
}

/// A peer's authentication credential: CRED_x as it enters the transcript,
/// and the public key it authenticates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// CRED_x, CBOR encoded (for X.509: a bstr of the DER certificate).
    pub cred: Vec<u8>,
    /// The authentication public key: 32 bytes Ed25519, or a SEC1 P-256 point.
    pub public_key: Vec<u8>,
}

impl Credential {
    /// CRED_x for an X.509 certificate with its public key.
    pub fn x509(cert_der: &[u8], public_key: Vec<u8>) -> Credential {
        Credential {
            cred: cbor::bstr_vec(cert_der),
            public_key,
        }
    }
}

/// External authorization data items, passed through raw.
pub type Ead = Vec<u8>;

/// Builds an EDHOC error message (RFC 9528 §6): ERR_CODE 1 with a text,
/// or ERR_CODE 2 with the responder's suites.
pub fn error_message(code: i64, info: &ErrorInfo) -> Vec<u8> {
    let mut v = Vec::new();
    cbor::int(&mut v, code);
    match info {
        ErrorInfo::Text(t) => cbor::tstr(&mut v, t),
        ErrorInfo::Suites(s) => {
            if let [one] = s.as_slice() {
                cbor::int(&mut v, *one);
            } else {
                cbor::array(&mut v, s.len());
                for x in s {
                    cbor::int(&mut v, *x);
                }
            }
        }
    }
    v
}

/// ERR_INFO of an error message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorInfo {
    /// ERR_CODE 1: unspecified error, with a text.
    Text(String),
    /// ERR_CODE 2: wrong selected cipher suite, with SUITES_R.
    Suites(Vec<i64>),
}

/// Recognises an EDHOC error message (it starts with an int where a
/// message would start with a bstr).
pub fn parse_error_message(msg: &[u8]) -> Option<EdhocError> {
    let mut d = Decoder::new(msg);
    if !matches!(d.peek_major().ok()?, cbor::major::UINT | cbor::major::NINT) {
        return None;
    }
    let code = d.int().ok()?;
    let detail = match d.peek_major().ok()? {
        cbor::major::TSTR => String::from_utf8_lossy(d.tstr().ok()?).into_owned(),
        _ => hex::encode(d.rest()),
    };
    Some(EdhocError::PeerError { code, detail })
}

pub(crate) fn check_len(msg: &[u8]) -> Result<(), EdhocError> {
    if msg.len() > MAX_MESSAGE {
        return Err(EdhocError::TooLong(msg.len()));
    }
    Ok(())
}

/// Checks an EAD field (RFC 9528 §3.8): a sequence of `ead_label` (int)
/// each optionally followed by `ead_value` (bstr). No item is understood
/// here: a critical one (negative label) is refused, non-critical ones and
/// padding (label 0) are ignored; anything else is malformed (so bytes
/// trailing a message are not silently taken for EAD).
pub(crate) fn check_ead(ead: &[u8]) -> Result<(), EdhocError> {
    let mut d = cbor::Decoder::new(ead);
    while !d.is_empty() {
        let label = match d.peek_major() {
            Ok(cbor::major::UINT | cbor::major::NINT) => {
                d.int().map_err(|_| EdhocError::Malformed("EAD label"))?
            }
            _ => {
                return Err(EdhocError::Malformed(
                    "EAD: an item must start with an integer label",
                ))
            }
        };
        if !d.is_empty() && d.peek_major().ok() == Some(cbor::major::BSTR) {
            d.bstr().map_err(|_| EdhocError::Malformed("EAD value"))?;
        }
        if label < 0 {
            return Err(EdhocError::CriticalEad(label));
        }
    }
    Ok(())
}
