//! The device endpoint: CoAP over UDP, `/.well-known/edhoc`. Confirmable
//! retransmissions (same peer, same message id) get the same response again
//! without re-running the exchange (RFC 7252 §4.5).

use crate::App;
use inkan_proto::coap::{self, Code, EdhocRequest};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// How long a response is kept for duplicate detection.
const DEDUP_LIFETIME: Duration = Duration::from_secs(247);
/// Most responses kept.
const DEDUP_CAP: usize = 20_000;

#[derive(Default)]
struct Dedup {
    seen: HashMap<(SocketAddr, u16), (Instant, Vec<u8>)>,
}

impl Dedup {
    fn get(&mut self, key: &(SocketAddr, u16)) -> Option<Vec<u8>> {
        self.seen
            .get(key)
            .filter(|(t, _)| t.elapsed() < DEDUP_LIFETIME)
            .map(|(_, r)| r.clone())
    }

    fn put(&mut self, key: (SocketAddr, u16), rsp: Vec<u8>) {
        if self.seen.len() >= DEDUP_CAP {
            self.seen
                .retain(|_, (t, _)| t.elapsed() < Duration::from_secs(10));
            if self.seen.len() >= DEDUP_CAP {
                self.seen.clear();
            }
        }
        self.seen.insert(key, (Instant::now(), rsp));
    }
}

/// Largest OSCORE request accepted (a batch of 100 readings of 64 bytes is
/// about 7 KB; on a constrained link it would travel block-wise).
pub const MAX_OSCORE_DATAGRAM: usize = 16 * 1024;

/// 4.13 (RFC 7252 §5.9.2.9) with an EDHOC error message, for a datagram
/// past `limit`; its payload is never parsed.
fn too_large(bytes: &[u8], limit: usize) -> Option<Vec<u8>> {
    let req = coap::parse_request_datagram(bytes)?;
    Some(coap::response(
        &req,
        Code::RequestEntityTooLarge,
        inkan_proto::edhoc::error_message(
            1,
            &inkan_proto::edhoc::ErrorInfo::Text(format!(
                "request exceeds the limit of {limit} bytes"
            )),
        ),
    ))
}

/// Handles one datagram; returns the response to send, if any.
pub async fn handle(auth: &App, bytes: &[u8], peer: SocketAddr) -> Option<Vec<u8>> {
    // OSCORE-protected requests (an OSCORE option) go to the telemetry
    // service; everything else is EDHOC.
    if let Ok(p) = coap_lite::Packet::from_bytes(bytes) {
        if p.get_first_option(coap_lite::CoapOption::Oscore).is_some()
            && matches!(p.header.code, coap_lite::MessageClass::Request(_))
        {
            let rsp = crate::resources::handle(auth, &p, &peer.to_string()).await;
            return rsp.to_bytes_unlimited().ok();
        }
    }
    if bytes.len() > coap::MAX_DATAGRAM {
        return too_large(bytes, coap::MAX_DATAGRAM);
    }
    let req = coap::parse_request_datagram(bytes)?;
    if !req.is_edhoc_post {
        return Some(coap::response(&req, Code::NotFound, Vec::new()));
    }
    let peer_s = peer.to_string();
    let rsp = match coap::parse_request(&req.payload) {
        Err(e) => coap::response(
            &req,
            Code::BadRequest,
            inkan_proto::edhoc::error_message(
                1,
                &inkan_proto::edhoc::ErrorInfo::Text(e.to_string()),
            ),
        ),
        Ok(EdhocRequest::Message1(m1)) => match auth.message_1(m1, &peer_s).await {
            Ok(m2) => coap::response(&req, Code::Changed, m2),
            Err((_, err)) => coap::response(&req, Code::BadRequest, err),
        },
        Ok(EdhocRequest::Message3(c_r, m3)) => match auth.message_3(&c_r, m3, &peer_s).await {
            Ok(a) => coap::response(&req, Code::Changed, a.message_4),
            Err(e) => coap::response(
                &req,
                Code::BadRequest,
                inkan_proto::edhoc::error_message(
                    1,
                    &inkan_proto::edhoc::ErrorInfo::Text(e.public_reason()),
                ),
            ),
        },
    };
    Some(rsp)
}

/// Serves until the socket fails.
pub async fn serve(socket: UdpSocket, auth: Arc<App>) -> std::io::Result<()> {
    let socket = Arc::new(socket);
    let dedup = Arc::new(Mutex::new(Dedup::default()));
    // One byte more than the largest request: a datagram that fills the
    // buffer is too large.
    let mut buf = vec![0u8; MAX_OSCORE_DATAGRAM + 1];
    loop {
        let (n, peer) = socket.recv_from(&mut buf).await?;
        if n > MAX_OSCORE_DATAGRAM {
            if let Some(rsp) = too_large(&buf[..n], MAX_OSCORE_DATAGRAM) {
                let _ = socket.send_to(&rsp, peer).await;
            }
            continue;
        }
        let bytes = buf[..n].to_vec();
        let (socket, auth, dedup) = (socket.clone(), auth.clone(), dedup.clone());
        tokio::spawn(async move {
            let key = coap::parse_request_datagram(&bytes).map(|r| (peer, r.message_id));
            if let Some(k) = &key {
                let cached = dedup.lock().ok().and_then(|mut d| d.get(k));
                if let Some(rsp) = cached {
                    let _ = socket.send_to(&rsp, peer).await;
                    return;
                }
            }
            if let Some(rsp) = handle(&auth, &bytes, peer).await {
                if let (Some(k), Ok(mut d)) = (key, dedup.lock()) {
                    d.put(k, rsp.clone());
                }
                let _ = socket.send_to(&rsp, peer).await;
            }
        });
    }
}
