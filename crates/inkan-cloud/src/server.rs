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

/// A request seen: still being handled (with the duplicates that arrived
/// meanwhile), or answered.
enum Seen {
    InFlight(u32),
    Answered(Vec<u8>),
}

/// What to do with a datagram.
enum Admit {
    /// New: handle it.
    Handle,
    /// A duplicate of an answered request: send this again.
    Again(Vec<u8>),
    /// A duplicate of a request being handled: it is answered when the
    /// first is.
    Wait,
}

#[derive(Default)]
struct Dedup {
    seen: HashMap<(SocketAddr, u16), (Instant, Seen)>,
}

impl Dedup {
    /// Records a request before it is handled, so a duplicate that arrives
    /// meanwhile is not handled twice (RFC 7252 §4.5).
    fn admit(&mut self, key: (SocketAddr, u16)) -> Admit {
        if let Some((t, seen)) = self.seen.get_mut(&key) {
            if t.elapsed() < DEDUP_LIFETIME {
                return match seen {
                    Seen::Answered(r) => Admit::Again(r.clone()),
                    Seen::InFlight(waiting) => {
                        *waiting = waiting.saturating_add(1);
                        Admit::Wait
                    }
                };
            }
        }
        if self.seen.len() >= DEDUP_CAP {
            self.seen.retain(|_, (t, s)| {
                matches!(s, Seen::InFlight(_)) || t.elapsed() < Duration::from_secs(10)
            });
            if self.seen.len() >= DEDUP_CAP {
                self.seen.retain(|_, (_, s)| matches!(s, Seen::InFlight(_)));
            }
        }
        self.seen.insert(key, (Instant::now(), Seen::InFlight(0)));
        Admit::Handle
    }

    /// Records the answer; returns how many duplicates wait for it.
    fn answered(&mut self, key: (SocketAddr, u16), rsp: Option<Vec<u8>>) -> u32 {
        let waiting = match self.seen.get(&key) {
            Some((_, Seen::InFlight(n))) => *n,
            _ => 0,
        };
        match rsp {
            Some(r) => {
                self.seen.insert(key, (Instant::now(), Seen::Answered(r)));
            }
            None => {
                self.seen.remove(&key);
            }
        }
        waiting
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
        if matches!(
            p.header.get_type(),
            coap_lite::MessageType::Acknowledgement | coap_lite::MessageType::Reset
        ) {
            // Never a request: nothing to process, nothing to answer.
            return None;
        }
        if p.get_first_option(coap_lite::CoapOption::Oscore).is_some()
            && matches!(p.header.code, coap_lite::MessageClass::Request(_))
        {
            let rsp = crate::resources::handle(auth, &p, &peer.to_string()).await;
            return rsp.to_bytes_unlimited().ok();
        }
        if p.header.code == coap_lite::MessageClass::Request(coap_lite::RequestType::Get) {
            return Some(crate::firmware::image_request(auth, &p, peer).await);
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
        Ok(EdhocRequest::Message1(_))
            if auth.message_1_needs_echo() && !auth.echo_verifies(peer, req.echo.as_deref()) =>
        {
            // Many message_1s arrive: this one waits until its sender shows
            // it receives at its address; nothing is kept meanwhile.
            auth.metrics.echo_asked();
            auth.refused_unauthenticated("authenticate", &peer_s, "message_1: Echo asked")
                .await;
            coap::echo_challenge(&req, &auth.echo_for(peer))
        }
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

/// Most datagrams handled at once: past it, new ones are dropped before
/// they are parsed (clients retransmit), so a flood cannot grow memory
/// without bound.
pub const MAX_IN_FLIGHT: usize = 512;

/// Sources tracked at once (the least recently seen are forgotten).
const SOURCES_TRACKED: usize = 65_536;

/// Per-source token buckets: each source address may send
/// `Limits::source_rate` datagrams per second in bursts of
/// `Limits::source_burst`; a source past it is shed before its datagrams
/// are parsed, so one sender cannot take the others' share.
struct Budgets {
    rate: f64,
    burst: f64,
    buckets: HashMap<std::net::IpAddr, (f64, Instant)>,
}

impl Budgets {
    /// Takes one datagram from `ip`'s budget; false when it is spent.
    fn take(&mut self, ip: std::net::IpAddr, now: Instant) -> bool {
        if self.buckets.len() >= SOURCES_TRACKED && !self.buckets.contains_key(&ip) {
            // Forget sources idle for a second (their buckets are full).
            self.buckets
                .retain(|_, (_, t)| now.duration_since(*t) < Duration::from_secs(1));
            if self.buckets.len() >= SOURCES_TRACKED {
                return false;
            }
        }
        let (tokens, last) = self.buckets.entry(ip).or_insert((self.burst, now));
        let refill = now.duration_since(*last).as_secs_f64() * self.rate;
        *tokens = (*tokens + refill).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Serves until the socket fails.
pub async fn serve(socket: UdpSocket, auth: Arc<App>) -> std::io::Result<()> {
    let socket = Arc::new(socket);
    let dedup = Arc::new(Mutex::new(Dedup::default()));
    // Housekeeping: aggregated refusals of unauthenticated traffic reach
    // the audit log once per interval; entries past the retention go once
    // an hour.
    let keeper = auth.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::auth::REFUSAL_INTERVAL);
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            keeper.flush_refusals().await;
            if n.is_multiple_of(360) {
                let _ = keeper.purge_audit().await;
            }
            n += 1;
        }
    });
    // One byte more than the largest request: a datagram that fills the
    // buffer is too large.
    let mut buf = vec![0u8; MAX_OSCORE_DATAGRAM + 1];
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut budgets = Budgets {
        rate: f64::from(auth.limits().source_rate),
        burst: f64::from(auth.limits().source_rate) * 2.0,
        buckets: HashMap::new(),
    };
    // Sheds are counted here, per source (past REFUSAL_KEYS sources, as
    // one), and handed to the audit tally once a second: nothing is
    // allocated per shed datagram.
    let mut shed: HashMap<Option<std::net::IpAddr>, u64> = HashMap::new();
    let mut shed_reported = Instant::now();
    loop {
        let got = tokio::time::timeout(Duration::from_secs(1), socket.recv_from(&mut buf)).await;
        let now = Instant::now();
        if !shed.is_empty() && now.duration_since(shed_reported) >= Duration::from_secs(1) {
            for (ip, count) in shed.drain() {
                let source = ip.map_or_else(|| "other sources".to_string(), |ip| ip.to_string());
                auth.refused_unauthenticated_n(
                    "datagram",
                    &source,
                    "shed: source over its budget or the endpoint at capacity",
                    count,
                )
                .await;
            }
            shed_reported = now;
        }
        let Ok(got) = got else {
            continue;
        };
        let (n, peer) = got?;
        // Shed before parsing: a source past its budget, or no room.
        let permit = if budgets.take(peer.ip(), now) {
            in_flight.clone().try_acquire_owned().ok()
        } else {
            None
        };
        let Some(permit) = permit else {
            let key = Some(peer.ip());
            let key = if shed.len() < crate::auth::REFUSAL_KEYS || shed.contains_key(&key) {
                key
            } else {
                None
            };
            *shed.entry(key).or_default() += 1;
            auth.metrics.shed(1);
            continue;
        };
        // Image blocks from memory are answered here, with no task: the
        // bulk of a firmware download costs a lookup and a copy.
        if let Some(rsp) = crate::firmware::image_from_memory(&auth, &buf[..n], peer) {
            drop(permit);
            let _ = socket.send_to(&rsp, peer).await;
            continue;
        }
        if n > MAX_OSCORE_DATAGRAM {
            if let Some(rsp) = too_large(&buf[..n], MAX_OSCORE_DATAGRAM) {
                let _ = socket.send_to(&rsp, peer).await;
            }
            continue;
        }
        let bytes = buf[..n].to_vec();
        let (socket, auth, dedup) = (socket.clone(), auth.clone(), dedup.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let key = coap::parse_request_datagram(&bytes).map(|r| (peer, r.message_id));
            if let Some(k) = key {
                let admitted = dedup.lock().ok().map(|mut d| d.admit(k));
                match admitted {
                    Some(Admit::Handle) | None => {}
                    Some(Admit::Again(rsp)) => {
                        let _ = socket.send_to(&rsp, peer).await;
                        return;
                    }
                    Some(Admit::Wait) => return,
                }
            }
            let rsp = handle(&auth, &bytes, peer).await;
            let waiting = key
                .and_then(|k| dedup.lock().ok().map(|mut d| d.answered(k, rsp.clone())))
                .unwrap_or(0);
            if let Some(rsp) = rsp {
                // The request and every duplicate that came meanwhile get
                // the same answer.
                for _ in 0..=waiting.min(4) {
                    let _ = socket.send_to(&rsp, peer).await;
                }
            }
        });
    }
}
