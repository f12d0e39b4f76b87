//! OSCORE (RFC 8613): object security for CoAP with AES-CCM-16-64-128 and
//! HKDF-SHA-256, keyed from an EDHOC session (RFC 9528 Appendix A.1).
//!
//! A [`SecurityContext`] holds one endpoint's view: its Sender Key and
//! sequence number, the peer's Recipient Key and a replay window. Messages
//! are `coap_lite::Packet`s: protecting moves the code, the Class E options
//! and the payload into the AEAD ciphertext, leaving the Class U options and
//! the OSCORE option outside (RFC 8613 §4 and §8).

use crate::edhoc::{ConnId, EdhocError, Session};
use ccm::aead::{Aead, KeyInit, Payload};
use coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use std::collections::LinkedList;
use zeroize::Zeroizing;

type AesCcm = ccm::Ccm<aes::Aes128, ccm::consts::U8, ccm::consts::U13>;

/// COSE algorithm AES-CCM-16-64-128.
pub const ALG_AES_CCM_16_64_128: i64 = 10;
/// Key length of the AEAD.
pub const KEY_LEN: usize = 16;
/// Nonce (and Common IV) length of the AEAD.
pub const NONCE_LEN: usize = 13;
/// Authentication tag length.
pub const TAG_LEN: usize = 8;
/// The largest sender sequence number (a Partial IV is at most 5 bytes).
pub const MAX_SEQUENCE: u64 = (1 << 40) - 1;
/// The replay window size (RFC 8613 §7.4 recommends at least 32).
pub const REPLAY_WINDOW: u64 = 32;

/// Why protecting or verifying a message failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OscoreError {
    /// The message or its OSCORE option does not parse.
    #[error("malformed OSCORE message: {0}")]
    Malformed(&'static str),
    /// The message carries no OSCORE option: it is not protected.
    #[error("not an OSCORE message (no OSCORE option)")]
    NotProtected,
    /// The kid names no context this endpoint holds.
    #[error("unknown kid: the request is under another security context")]
    UnknownKid,
    /// A request without a Partial IV.
    #[error("request without a Partial IV")]
    NoPartialIv,
    /// The Partial IV was seen before or is older than the window.
    #[error("replayed request (Partial IV {0} already seen or too old)")]
    Replay(u64),
    /// The AEAD tag does not verify: tampered, or another key.
    #[error("decryption failed: the message was altered or protected under another context")]
    Decryption,
    /// The sender sequence number space is used up; a new context is
    /// needed (a new EDHOC session).
    #[error("sender sequence numbers exhausted: re-key with a new EDHOC session")]
    SequenceExhausted,
    /// Key derivation failed.
    #[error("key derivation: {0}")]
    Kdf(&'static str),
}

/// The inputs of a security context (RFC 8613 §3.2).
#[derive(Clone, Debug)]
pub struct ContextParams {
    /// Master Secret.
    pub master_secret: Zeroizing<Vec<u8>>,
    /// Master Salt (empty when absent).
    pub master_salt: Vec<u8>,
    /// ID Context, when used.
    pub id_context: Option<Vec<u8>>,
    /// Our Sender ID.
    pub sender_id: Vec<u8>,
    /// The peer's Sender ID (our Recipient ID).
    pub recipient_id: Vec<u8>,
}

impl ContextParams {
    /// The parameters RFC 9528 Appendix A.1 derives from an EDHOC session:
    /// master secret and salt from the exporter; each side's Sender ID is
    /// the connection identifier the *other* side chose (the initiator
    /// sends with C_R, the responder with C_I).
    pub fn from_edhoc(
        session: &Session,
        initiator: bool,
        c_i: &ConnId,
        c_r: &ConnId,
    ) -> Result<ContextParams, EdhocError> {
        let (sender_id, recipient_id) = if initiator {
            (c_r.0.clone(), c_i.0.clone())
        } else {
            (c_i.0.clone(), c_r.0.clone())
        };
        Ok(ContextParams {
            master_secret: session.oscore_master_secret()?,
            master_salt: session.oscore_master_salt()?.to_vec(),
            id_context: None,
            sender_id,
            recipient_id,
        })
    }
}

/// The replay window of a recipient (RFC 8613 §7.4): the highest Partial
/// IV accepted and a bitmap of the [`REPLAY_WINDOW`] values below it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplayWindow {
    /// Highest Partial IV accepted, if any.
    pub highest: Option<u64>,
    /// Bit i set: `highest - i` was accepted (bit 0 is `highest`).
    pub seen: u64,
}

impl ReplayWindow {
    /// Whether `piv` would be accepted (not seen, not older than the window).
    pub fn check(&self, piv: u64) -> Result<(), OscoreError> {
        match self.highest {
            None => Ok(()),
            Some(h) if piv > h => Ok(()),
            Some(h) => {
                let age = h - piv;
                if age >= REPLAY_WINDOW || self.seen & (1 << age) != 0 {
                    Err(OscoreError::Replay(piv))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Records `piv` as accepted (after the message verified).
    pub fn accept(&mut self, piv: u64) {
        match self.highest {
            None => {
                self.highest = Some(piv);
                self.seen = 1;
            }
            Some(h) if piv > h => {
                let shift = piv - h;
                self.seen = if shift >= 64 { 0 } else { self.seen << shift };
                self.seen |= 1;
                self.highest = Some(piv);
            }
            Some(h) => {
                let age = h - piv;
                if age < 64 {
                    self.seen |= 1 << age;
                }
            }
        }
    }
}

/// What a response must be bound to: the request's kid and Partial IV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestBinding {
    /// The requester's Sender ID.
    pub kid: Vec<u8>,
    /// The request's Partial IV (minimal big-endian bytes).
    pub piv: Vec<u8>,
}

/// One endpoint's OSCORE security context.
pub struct SecurityContext {
    sender_id: Vec<u8>,
    recipient_id: Vec<u8>,
    id_context: Option<Vec<u8>>,
    sender_key: Zeroizing<[u8; KEY_LEN]>,
    recipient_key: Zeroizing<[u8; KEY_LEN]>,
    common_iv: [u8; NONCE_LEN],
    /// The next sender sequence number.
    sender_sequence: u64,
    /// The recipient's replay window.
    pub replay: ReplayWindow,
}

impl std::fmt::Debug for SecurityContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityContext")
            .field("sender_id", &hex::encode(&self.sender_id))
            .field("recipient_id", &hex::encode(&self.recipient_id))
            .field("sender_sequence", &self.sender_sequence)
            .finish_non_exhaustive()
    }
}

/// The `info` of RFC 8613 §3.2.1: [id, id_context, alg_aead, type, L].
fn info(id: &[u8], id_context: Option<&[u8]>, kind: &str, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(32);
    crate::cbor::array(&mut v, 5);
    crate::cbor::bstr(&mut v, id);
    match id_context {
        Some(c) => crate::cbor::bstr(&mut v, c),
        None => v.push(0xF6),
    }
    crate::cbor::int(&mut v, ALG_AES_CCM_16_64_128);
    crate::cbor::tstr(&mut v, kind);
    crate::cbor::int(&mut v, i64::try_from(len).unwrap_or(0));
    v
}

/// Minimal big-endian encoding of a Partial IV (0 is one zero byte).
pub fn encode_piv(n: u64) -> Vec<u8> {
    let b = n.to_be_bytes();
    let skip = b.iter().take(7).take_while(|x| **x == 0).count();
    b[skip..].to_vec()
}

fn decode_piv(b: &[u8]) -> Result<u64, OscoreError> {
    if b.is_empty() || b.len() > 5 {
        return Err(OscoreError::Malformed("Partial IV length"));
    }
    Ok(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
}

/// The OSCORE option's fields (RFC 8613 §6.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OscoreOption {
    /// Partial IV.
    pub piv: Option<Vec<u8>>,
    /// kid context.
    pub kid_context: Option<Vec<u8>>,
    /// kid.
    pub kid: Option<Vec<u8>>,
}

impl OscoreOption {
    /// Encodes the option value (empty when every field is absent).
    pub fn encode(&self) -> Vec<u8> {
        let piv = self.piv.as_deref().unwrap_or(&[]);
        if piv.is_empty() && self.kid_context.is_none() && self.kid.is_none() {
            return Vec::new();
        }
        let mut flags = u8::try_from(piv.len()).unwrap_or(0) & 0x07;
        if self.kid.is_some() {
            flags |= 0x08;
        }
        if self.kid_context.is_some() {
            flags |= 0x10;
        }
        let mut v = vec![flags];
        v.extend_from_slice(piv);
        if let Some(c) = &self.kid_context {
            v.push(u8::try_from(c.len()).unwrap_or(0));
            v.extend_from_slice(c);
        }
        if let Some(k) = &self.kid {
            v.extend_from_slice(k);
        }
        v
    }

    /// Decodes an option value.
    pub fn decode(v: &[u8]) -> Result<OscoreOption, OscoreError> {
        let Some((&flags, mut rest)) = v.split_first() else {
            return Ok(OscoreOption::default());
        };
        if flags & 0xE0 != 0 {
            return Err(OscoreError::Malformed("reserved flag bits set"));
        }
        let n = usize::from(flags & 0x07);
        if n > 5 {
            return Err(OscoreError::Malformed("Partial IV longer than 5 bytes"));
        }
        let piv = if n > 0 {
            let (p, r) = rest
                .split_at_checked(n)
                .ok_or(OscoreError::Malformed("truncated Partial IV"))?;
            rest = r;
            Some(p.to_vec())
        } else {
            None
        };
        let kid_context = if flags & 0x10 != 0 {
            let (&s, r) = rest
                .split_first()
                .ok_or(OscoreError::Malformed("truncated kid context"))?;
            let (c, r) = r
                .split_at_checked(usize::from(s))
                .ok_or(OscoreError::Malformed("truncated kid context"))?;
            rest = r;
            Some(c.to_vec())
        } else {
            None
        };
        let kid = if flags & 0x08 != 0 {
            Some(rest.to_vec())
        } else if !rest.is_empty() {
            return Err(OscoreError::Malformed("trailing bytes without a kid flag"));
        } else {
            None
        };
        Ok(OscoreOption {
            piv,
            kid_context,
            kid,
        })
    }
}

/// Options that stay outside the encryption (Class U, RFC 8613 §4.1.2):
/// Uri-Host, Uri-Port, Proxy-Uri, Proxy-Scheme. Observe is inner, with an
/// outer copy (§4.1.3.5). Everything else is Class E.
fn is_outer(number: u16) -> bool {
    matches!(number, 3 | 7 | 35 | 39)
}

const OPT_OBSERVE: u16 = 6;
const OPT_OSCORE: u16 = 9;

/// The plaintext of §5.3: the code, the Class E options and the payload.
fn plaintext_of(msg: &Packet) -> Result<Vec<u8>, OscoreError> {
    let mut inner = Packet::new();
    inner.header.code = msg.header.code;
    for (number, values) in msg.options() {
        if !is_outer(*number) && *number != OPT_OSCORE {
            inner.set_option(CoapOption::from(*number), values.clone());
        }
    }
    inner.payload = msg.payload.clone();
    let bytes = inner
        .to_bytes_unlimited()
        .map_err(|_| OscoreError::Malformed("inner message does not encode"))?;
    // Strip the 4-byte header (no token); put the code in front.
    let mut out = vec![u8::from(msg.header.code)];
    out.extend_from_slice(bytes.get(4..).unwrap_or(&[]));
    Ok(out)
}

/// Rebuilds a message from the outer one and the decrypted plaintext.
fn message_from(outer: &Packet, plaintext: &[u8]) -> Result<Packet, OscoreError> {
    let (&code, rest) = plaintext
        .split_first()
        .ok_or(OscoreError::Malformed("empty plaintext"))?;
    let mut framed = vec![0x40, code, 0x00, 0x00];
    framed.extend_from_slice(rest);
    let inner = Packet::from_bytes(&framed).map_err(|_| OscoreError::Malformed("inner options"))?;
    let mut msg = Packet::new();
    msg.header = outer.header.clone();
    msg.header.code = MessageClass::from(code);
    msg.set_token(outer.get_token().to_vec());
    for (number, values) in outer.options() {
        if is_outer(*number) {
            msg.set_option(CoapOption::from(*number), values.clone());
        }
    }
    for (number, values) in inner.options() {
        if is_outer(*number) || *number == OPT_OSCORE {
            return Err(OscoreError::Malformed(
                "a Class U or OSCORE option inside the ciphertext",
            ));
        }
        msg.set_option(CoapOption::from(*number), values.clone());
    }
    msg.payload = inner.payload;
    Ok(msg)
}

/// The AAD: Enc_structure ["Encrypt0", h'', external_aad] (RFC 8613 §5.4),
/// built with coset; external_aad = bstr([1, [alg], kid, piv, h'']).
fn aad(request: &RequestBinding) -> Vec<u8> {
    let mut ext = Vec::with_capacity(16 + request.kid.len());
    crate::cbor::array(&mut ext, 5);
    crate::cbor::int(&mut ext, 1);
    crate::cbor::array(&mut ext, 1);
    crate::cbor::int(&mut ext, ALG_AES_CCM_16_64_128);
    crate::cbor::bstr(&mut ext, &request.kid);
    crate::cbor::bstr(&mut ext, &request.piv);
    crate::cbor::bstr(&mut ext, &[]);
    coset::enc_structure_data(
        coset::EncryptionContext::CoseEncrypt0,
        coset::ProtectedHeader::default(),
        &ext,
    )
}

impl SecurityContext {
    /// Derives the keys and the Common IV (RFC 8613 §3.2.1).
    pub fn derive(p: &ContextParams) -> Result<SecurityContext, OscoreError> {
        let max_id = NONCE_LEN - 6;
        if p.sender_id.len() > max_id || p.recipient_id.len() > max_id {
            return Err(OscoreError::Kdf("Sender/Recipient ID longer than 7 bytes"));
        }
        if p.sender_id == p.recipient_id {
            return Err(OscoreError::Kdf("Sender ID equals Recipient ID"));
        }
        // An absent Master Salt is the empty string, which HKDF takes as
        // the hash length of zeros (RFC 5869 §2.2).
        let prk = crate::hkdf::extract(&p.master_salt, &p.master_secret);
        let ctx = p.id_context.as_deref();
        let expand = |id: &[u8], kind: &str, out: &mut [u8]| {
            let okm = crate::hkdf::expand(&*prk, &info(id, ctx, kind, out.len()), out.len())
                .map_err(|_| OscoreError::Kdf("HKDF expand"))?;
            out.copy_from_slice(&okm);
            Ok::<_, OscoreError>(())
        };
        let mut sender_key = Zeroizing::new([0u8; KEY_LEN]);
        let mut recipient_key = Zeroizing::new([0u8; KEY_LEN]);
        let mut common_iv = [0u8; NONCE_LEN];
        expand(&p.sender_id, "Key", &mut *sender_key)?;
        expand(&p.recipient_id, "Key", &mut *recipient_key)?;
        expand(&[], "IV", &mut common_iv)?;
        Ok(SecurityContext {
            sender_id: p.sender_id.clone(),
            recipient_id: p.recipient_id.clone(),
            id_context: p.id_context.clone(),
            sender_key,
            recipient_key,
            common_iv,
            sender_sequence: 0,
            replay: ReplayWindow::default(),
        })
    }

    /// Our Sender ID.
    pub fn sender_id(&self) -> &[u8] {
        &self.sender_id
    }

    /// Our Recipient ID (the peer's Sender ID).
    pub fn recipient_id(&self) -> &[u8] {
        &self.recipient_id
    }

    /// The Sender Key (for tests against published vectors).
    pub fn sender_key(&self) -> &[u8] {
        &*self.sender_key
    }

    /// The Recipient Key.
    pub fn recipient_key(&self) -> &[u8] {
        &*self.recipient_key
    }

    /// The Common IV.
    pub fn common_iv(&self) -> &[u8] {
        &self.common_iv
    }

    /// The next sender sequence number.
    pub fn sender_sequence(&self) -> u64 {
        self.sender_sequence
    }

    /// Resumes sending at `next` (after a restart: a value at or above
    /// anything used before, RFC 8613 Appendix B.1.1).
    pub fn set_sender_sequence(&mut self, next: u64) {
        self.sender_sequence = next;
    }

    /// The AEAD nonce for a Partial IV sent by `id_piv` (RFC 8613 §5.2).
    pub fn nonce(&self, id_piv: &[u8], piv: &[u8]) -> [u8; NONCE_LEN] {
        let mut n = [0u8; NONCE_LEN];
        n[0] = u8::try_from(id_piv.len()).unwrap_or(0);
        let id_end = NONCE_LEN - 5;
        n[id_end - id_piv.len()..id_end].copy_from_slice(id_piv);
        n[NONCE_LEN - piv.len()..].copy_from_slice(piv);
        for (b, iv) in n.iter_mut().zip(self.common_iv.iter()) {
            *b ^= iv;
        }
        n
    }

    fn next_piv(&mut self) -> Result<Vec<u8>, OscoreError> {
        if self.sender_sequence > MAX_SEQUENCE {
            return Err(OscoreError::SequenceExhausted);
        }
        let piv = encode_piv(self.sender_sequence);
        self.sender_sequence += 1;
        Ok(piv)
    }

    fn seal(
        key: &[u8; KEY_LEN],
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, OscoreError> {
        let c = AesCcm::new_from_slice(key).map_err(|_| OscoreError::Kdf("AEAD key"))?;
        c.encrypt(
            ccm::Nonce::<ccm::consts::U13>::from_slice(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| OscoreError::Malformed("AEAD input too long"))
    }

    fn open(
        key: &[u8; KEY_LEN],
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, OscoreError> {
        let c = AesCcm::new_from_slice(key).map_err(|_| OscoreError::Kdf("AEAD key"))?;
        c.decrypt(
            ccm::Nonce::<ccm::consts::U13>::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| OscoreError::Decryption)
    }

    /// The outer message: the original header and token, the Class U
    /// options, the OSCORE option, and the ciphertext as payload.
    fn outer(msg: &Packet, code: MessageClass, option: &OscoreOption, ct: Vec<u8>) -> Packet {
        let mut out = Packet::new();
        out.header = msg.header.clone();
        out.header.code = code;
        out.set_token(msg.get_token().to_vec());
        for (number, values) in msg.options() {
            if is_outer(*number) || *number == OPT_OBSERVE {
                out.set_option(CoapOption::from(*number), values.clone());
            }
        }
        let mut v = LinkedList::new();
        v.push_back(option.encode());
        out.set_option(CoapOption::Oscore, v);
        out.payload = ct;
        out
    }

    /// Protects a request (RFC 8613 §8.1). Returns the protected message
    /// and what its response must be bound to.
    pub fn protect_request(
        &mut self,
        msg: &Packet,
    ) -> Result<(Packet, RequestBinding), OscoreError> {
        let piv = self.next_piv()?;
        let binding = RequestBinding {
            kid: self.sender_id.clone(),
            piv: piv.clone(),
        };
        let nonce = self.nonce(&self.sender_id, &piv);
        let ct = Self::seal(
            &self.sender_key,
            &nonce,
            &aad(&binding),
            &plaintext_of(msg)?,
        )?;
        let option = OscoreOption {
            piv: Some(piv),
            kid_context: self.id_context.clone(),
            kid: Some(self.sender_id.clone()),
        };
        // FETCH when observing, POST otherwise (§4.2).
        let code = if msg.get_option(CoapOption::Observe).is_some() {
            MessageClass::Request(RequestType::Fetch)
        } else {
            MessageClass::Request(RequestType::Post)
        };
        Ok((Self::outer(msg, code, &option, ct), binding))
    }

    /// Verifies and decrypts a request (RFC 8613 §8.2): the kid must be
    /// our Recipient ID, the Partial IV fresh in the replay window, the
    /// tag valid. The window advances only for a message that verified.
    pub fn unprotect_request(
        &mut self,
        protected: &Packet,
    ) -> Result<(Packet, RequestBinding), OscoreError> {
        let opt = protected
            .get_first_option(CoapOption::Oscore)
            .ok_or(OscoreError::NotProtected)?;
        let opt = OscoreOption::decode(opt)?;
        let kid = opt.kid.ok_or(OscoreError::UnknownKid)?;
        if kid != self.recipient_id || opt.kid_context != self.id_context {
            return Err(OscoreError::UnknownKid);
        }
        let piv = opt.piv.ok_or(OscoreError::NoPartialIv)?;
        let seq = decode_piv(&piv)?;
        self.replay.check(seq)?;
        let binding = RequestBinding { kid, piv };
        let nonce = self.nonce(&binding.kid, &binding.piv);
        let pt = Self::open(
            &self.recipient_key,
            &nonce,
            &aad(&binding),
            &protected.payload,
        )?;
        let msg = message_from(protected, &pt)?;
        self.replay.accept(seq);
        Ok((msg, binding))
    }

    /// Protects a response to `request` (RFC 8613 §8.3). With `fresh_piv`
    /// the response carries its own Partial IV (needed for Observe
    /// notifications); otherwise it reuses the request's nonce.
    pub fn protect_response(
        &mut self,
        msg: &Packet,
        request: &RequestBinding,
        fresh_piv: bool,
    ) -> Result<Packet, OscoreError> {
        let (nonce, option) = if fresh_piv {
            let piv = self.next_piv()?;
            (
                self.nonce(&self.sender_id, &piv),
                OscoreOption {
                    piv: Some(piv),
                    ..OscoreOption::default()
                },
            )
        } else {
            (
                self.nonce(&request.kid, &request.piv),
                OscoreOption::default(),
            )
        };
        let ct = Self::seal(&self.sender_key, &nonce, &aad(request), &plaintext_of(msg)?)?;
        let code = if msg.get_option(CoapOption::Observe).is_some() {
            MessageClass::Response(ResponseType::Content)
        } else {
            MessageClass::Response(ResponseType::Changed)
        };
        Ok(Self::outer(msg, code, &option, ct))
    }

    /// Verifies and decrypts a response to `request` (RFC 8613 §8.4).
    pub fn unprotect_response(
        &mut self,
        protected: &Packet,
        request: &RequestBinding,
    ) -> Result<Packet, OscoreError> {
        let opt = protected
            .get_first_option(CoapOption::Oscore)
            .ok_or(OscoreError::NotProtected)?;
        let opt = OscoreOption::decode(opt)?;
        let nonce = match &opt.piv {
            Some(piv) => self.nonce(&self.recipient_id, piv),
            None => self.nonce(&request.kid, &request.piv),
        };
        let pt = Self::open(
            &self.recipient_key,
            &nonce,
            &aad(request),
            &protected.payload,
        )?;
        message_from(protected, &pt)
    }
}
