//! EDHOC over CoAP (RFC 9528 Appendix A.2, RFC 7252): the initiator POSTs
//! to `/.well-known/edhoc`; message_1 is prefixed with the CBOR `true`
//! (0xF5), message_3 with the responder's connection identifier C_R; the
//! responses carry message_2 and message_4 (or an EDHOC error message).

use crate::cbor::Decoder;
use crate::edhoc::{ConnId, EdhocError};
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};

/// The resource path segments.
pub const EDHOC_PATH: [&str; 2] = [".well-known", "edhoc"];
/// Content-Format application/cid-edhoc+cbor-seq.
pub const CF_CID_EDHOC: u8 = 65;
/// Content-Format application/edhoc+cbor-seq.
pub const CF_EDHOC: u8 = 64;
/// Largest datagram handled.
pub const MAX_DATAGRAM: usize = 4096;
/// The Echo option (RFC 9175 §2): a server's proof that a client can
/// receive at its address, asked for before the server spends state or
/// sends more than it received.
pub const ECHO: u16 = 252;
/// Longest Echo value (RFC 9175 §2.2.1).
pub const MAX_ECHO: usize = 40;

/// What an EDHOC request carries.
#[derive(Debug, PartialEq, Eq)]
pub enum EdhocRequest<'a> {
    /// `true`, then message_1.
    Message1(&'a [u8]),
    /// C_R, then message_3.
    Message3(ConnId, &'a [u8]),
}

/// The payload of a message_1 request.
pub fn message_1_payload(m1: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(m1.len() + 1);
    v.push(0xF5);
    v.extend_from_slice(m1);
    v
}

/// The payload of a message_3 request.
pub fn message_3_payload(c_r: &ConnId, m3: &[u8]) -> Vec<u8> {
    let mut v = c_r.encoded();
    v.extend_from_slice(m3);
    v
}

/// Splits a request payload into what it carries.
pub fn parse_request(payload: &[u8]) -> Result<EdhocRequest<'_>, EdhocError> {
    match payload.first() {
        Some(0xF5) => Ok(EdhocRequest::Message1(&payload[1..])),
        Some(_) => {
            let mut d = Decoder::new(payload);
            let c_r = ConnId::decode(&mut d)?;
            let at = d.position();
            Ok(EdhocRequest::Message3(c_r, &payload[at..]))
        }
        None => Err(EdhocError::Malformed("empty EDHOC request")),
    }
}

/// A confirmable POST to /.well-known/edhoc.
pub fn request(message_id: u16, token: &[u8], payload: Vec<u8>) -> Result<Vec<u8>, EdhocError> {
    request_echo(message_id, token, payload, None)
}

/// A confirmable POST to /.well-known/edhoc, repeating the Echo value a
/// server asked for.
pub fn request_echo(
    message_id: u16,
    token: &[u8],
    payload: Vec<u8>,
    echo: Option<&[u8]>,
) -> Result<Vec<u8>, EdhocError> {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Post);
    p.header.message_id = message_id;
    p.set_token(token.to_vec());
    for seg in EDHOC_PATH {
        p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
    }
    p.add_option(CoapOption::ContentFormat, vec![CF_CID_EDHOC]);
    if let Some(e) = echo {
        p.add_option(CoapOption::Unknown(ECHO), e.to_vec());
    }
    p.payload = payload;
    p.to_bytes()
        .map_err(|_| EdhocError::Malformed("CoAP request too large"))
}

/// A parsed CoAP response: (message id, token, success, payload).
#[derive(Debug)]
pub struct Response {
    /// Message id.
    pub message_id: u16,
    /// Token.
    pub token: Vec<u8>,
    /// Whether the code is 2.xx.
    pub success: bool,
    /// The code, printable.
    pub code: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// The Echo value of a 4.01 that asks the client to prove its address.
    pub echo: Option<Vec<u8>>,
}

impl Response {
    /// The Echo value to repeat, when this is the server asking for one.
    pub fn echo_challenge(&self) -> Option<&[u8]> {
        self.echo.as_deref()
    }
}

/// Parses a response datagram.
pub fn parse_response(bytes: &[u8]) -> Result<Response, EdhocError> {
    let p = Packet::from_bytes(bytes).map_err(|_| EdhocError::Malformed("CoAP response"))?;
    let success = matches!(
        p.header.code,
        MessageClass::Response(
            ResponseType::Changed
                | ResponseType::Content
                | ResponseType::Created
                | ResponseType::Valid
        )
    );
    Ok(Response {
        message_id: p.header.message_id,
        token: p.get_token().to_vec(),
        success,
        code: p.header.get_code(),
        echo: echo_asked(&p).map(<[u8]>::to_vec),
        payload: p.payload,
    })
}

/// A parsed request: what the server needs.
#[derive(Debug)]
pub struct Request {
    /// Message type.
    pub confirmable: bool,
    /// Message id.
    pub message_id: u16,
    /// Token.
    pub token: Vec<u8>,
    /// Whether it is a POST to /.well-known/edhoc.
    pub is_edhoc_post: bool,
    /// Payload.
    pub payload: Vec<u8>,
    /// The Echo value repeated, if any.
    pub echo: Option<Vec<u8>>,
}

/// A message's Echo option value (the first, if several), at most
/// [`MAX_ECHO`] bytes.
pub fn echo_of(p: &Packet) -> Option<&[u8]> {
    p.get_first_option(CoapOption::Unknown(ECHO))
        .map(Vec::as_slice)
        .filter(|v| v.len() <= MAX_ECHO)
}

/// Parses a request datagram. Acknowledgements and resets are never
/// requests (RFC 7252 §4.2, §4.3): None, so nothing is processed or
/// answered.
pub fn parse_request_datagram(bytes: &[u8]) -> Option<Request> {
    let p = Packet::from_bytes(bytes).ok()?;
    if !matches!(
        p.header.get_type(),
        MessageType::Confirmable | MessageType::NonConfirmable
    ) {
        return None;
    }
    let path: Vec<Vec<u8>> = p
        .get_option(CoapOption::UriPath)
        .map(|l| l.iter().cloned().collect())
        .unwrap_or_default();
    let is_edhoc_post = p.header.code == MessageClass::Request(RequestType::Post)
        && path.len() == 2
        && path[0] == EDHOC_PATH[0].as_bytes()
        && path[1] == EDHOC_PATH[1].as_bytes();
    Some(Request {
        confirmable: p.header.get_type() == MessageType::Confirmable,
        message_id: p.header.message_id,
        token: p.get_token().to_vec(),
        is_edhoc_post,
        echo: echo_of(&p).map(<[u8]>::to_vec),
        payload: p.payload,
    })
}

/// Builds the response to `req`: piggybacked ACK for a confirmable
/// request, NON otherwise.
pub fn response(req: &Request, code: ResponseType, payload: Vec<u8>) -> Vec<u8> {
    let mut p = reply_to(req.confirmable, req.message_id, &req.token, code);
    if !payload.is_empty() {
        p.add_option(CoapOption::ContentFormat, vec![CF_EDHOC]);
    }
    p.payload = payload;
    p.to_bytes().unwrap_or_default()
}

/// 4.01 asking the client to repeat its request with `echo` (RFC 9175
/// §2.4): no payload, so the answer is no larger than the request.
pub fn echo_challenge(req: &Request, echo: &[u8]) -> Vec<u8> {
    let mut p = reply_to(
        req.confirmable,
        req.message_id,
        &req.token,
        ResponseType::Unauthorized,
    );
    p.add_option(CoapOption::Unknown(ECHO), echo.to_vec());
    p.to_bytes().unwrap_or_default()
}

/// The Echo value a response asks the client to repeat: a 4.01 carrying
/// one (RFC 9175 §2.4).
pub fn echo_asked(p: &Packet) -> Option<&[u8]> {
    (p.header.code == MessageClass::Response(ResponseType::Unauthorized))
        .then(|| echo_of(p))
        .flatten()
}

/// A response mirroring a request: a piggybacked ACK for a confirmable
/// request, NON otherwise, with its message id and token.
pub fn response_to(req: &Packet, code: ResponseType) -> Packet {
    reply_to(
        req.header.get_type() == MessageType::Confirmable,
        req.header.message_id,
        req.get_token(),
        code,
    )
}

fn reply_to(confirmable: bool, message_id: u16, token: &[u8], code: ResponseType) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(if confirmable {
        MessageType::Acknowledgement
    } else {
        MessageType::NonConfirmable
    });
    p.header.code = MessageClass::Response(code);
    p.header.message_id = message_id;
    p.set_token(token.to_vec());
    p
}

/// Encodes a Block2 option value (RFC 7959 §2.2): block number, whether
/// more follow, size exponent (bytes = 16 << szx).
pub fn block_value(num: u32, more: bool, szx: u8) -> Vec<u8> {
    let v = (num << 4) | (u32::from(more) << 3) | u32::from(szx & 7);
    let b = v.to_be_bytes();
    let skip = b.iter().take_while(|x| **x == 0).count();
    b[skip..].to_vec()
}

/// Decodes a Block2 option value: (num, more, szx).
pub fn parse_block(v: &[u8]) -> Option<(u32, bool, u8)> {
    if v.len() > 3 {
        return None;
    }
    let n = v.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b));
    Some((n >> 4, n & 8 != 0, u8::try_from(n & 7).ok()?))
}

pub use coap_lite::ResponseType as Code;
