//! OSCORE-protected requests from authenticated devices (RFC 8613): the
//! kid names the session (its C_R), whose wrapped secrets and replay window
//! live in the store, so any replica can serve any device. A reading is
//! acknowledged only after the transaction that stores it, and advances the
//! replay window, has committed.

use crate::auth::AuthService;
use crate::store::{SessionRow, StoreError};
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use inkan_proto::oscore::{
    ContextParams, OscoreError, OscoreOption, ReplayWindow, SecurityContext,
};
use inkan_proto::telemetry::{decode_batch, BatchError};

/// Why a protected request was refused.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// OSCORE verification failed.
    #[error("OSCORE: {0}")]
    Oscore(#[from] OscoreError),
    /// The kid names no session.
    #[error("unknown kid: no session")]
    UnknownSession,
    /// The session was ended (its device revoked or suspended).
    #[error("session ended")]
    SessionEnded,
    /// The session is past its lifetime: run EDHOC again.
    #[error("session expired: authenticate again")]
    SessionExpired,
    /// The session's stored secrets do not unwrap (another cloud key).
    #[error("session secrets unavailable")]
    Unwrap,
    /// The batch inside a valid request is malformed.
    #[error("{0}")]
    Batch(#[from] BatchError),
    /// A signed batch whose signature does not verify with the device key.
    #[error("batch signature does not verify with the device's key")]
    BatchSignature,
    /// The device's family requires signed readings.
    #[error("this family requires readings signed by the secure element")]
    SignatureRequired,
    /// A request body that does not parse.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// No such resource.
    #[error("no resource {0}")]
    NotFound(String),
    /// A decommissioned device may only fetch its erase order and report.
    #[error("device decommissioned")]
    Decommissioned,
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A response packet mirroring the request's type, message id and token.
fn response_to(req: &Packet, code: ResponseType) -> Packet {
    let mut p = Packet::new();
    p.header
        .set_type(if req.header.get_type() == MessageType::Confirmable {
            MessageType::Acknowledgement
        } else {
            MessageType::NonConfirmable
        });
    p.header.message_id = req.header.message_id;
    p.header.code = MessageClass::Response(code);
    p.set_token(req.get_token().to_vec());
    p
}

/// The OSCORE context of a stored session, with its replay window.
fn context_of(auth: &AuthService, s: &SessionRow) -> Result<SecurityContext, TelemetryError> {
    let blob = s.oscore.as_deref().ok_or(TelemetryError::Unwrap)?;
    let secret = auth
        .identity()
        .unwrap(&s.c_r, blob)
        .ok_or(TelemetryError::Unwrap)?;
    if secret.len() != 24 {
        return Err(TelemetryError::Unwrap);
    }
    let hexd = |h: &str| hex::decode(h).map_err(|_| TelemetryError::Unwrap);
    let mut ctx = SecurityContext::derive(&ContextParams {
        master_secret: zeroize::Zeroizing::new(secret[..16].to_vec()),
        master_salt: secret[16..].to_vec(),
        id_context: None,
        sender_id: hexd(&s.c_i)?,
        recipient_id: hexd(&s.c_r)?,
    })?;
    ctx.replay = ReplayWindow {
        highest: s.replay_high.and_then(|h| u64::try_from(h).ok()),
        seen: u64::from_ne_bytes(s.replay_bits.to_ne_bytes()),
    };
    Ok(ctx)
}

/// Handles one OSCORE-protected request; returns the response to send
/// (protected when the request verified, a plain 4.01/4.00 otherwise).
pub async fn handle(auth: &AuthService, req: &Packet, peer: &str) -> Packet {
    match handle_inner(auth, req).await {
        Ok(rsp) => rsp,
        Err((e, protected)) => {
            let _ = auth
                .registry
                .store
                .audit(None, "oscore", peer, "refused", &e.to_string())
                .await;
            if let Some(p) = protected {
                return p;
            }
            let code = match &e {
                TelemetryError::Oscore(OscoreError::Malformed(_)) => ResponseType::BadRequest,
                TelemetryError::Store(_) => ResponseType::InternalServerError,
                _ => ResponseType::Unauthorized,
            };
            let mut p = response_to(req, code);
            p.payload = e.to_string().into_bytes();
            p
        }
    }
}

type Refusal = (TelemetryError, Option<Packet>);

async fn handle_inner(auth: &AuthService, req: &Packet) -> Result<Packet, Refusal> {
    let plain = |e: TelemetryError| (e, None);
    let opt = req
        .get_first_option(CoapOption::Oscore)
        .ok_or(plain(OscoreError::NotProtected.into()))?;
    let kid = OscoreOption::decode(opt)
        .map_err(|e| plain(e.into()))?
        .kid
        .ok_or(plain(OscoreError::UnknownKid.into()))?;
    let store = &auth.registry.store;
    // A concurrent request of the same session (or another replica) may
    // move the replay window between our read and our write: re-check.
    for _ in 0..8 {
        let s = store
            .session_by_c_r(&hex::encode(&kid))
            .await
            .map_err(|e| plain(e.into()))?
            .ok_or(plain(TelemetryError::UnknownSession))?;
        if s.ended.is_some() {
            return Err(plain(TelemetryError::SessionEnded));
        }
        if crate::store::now() > s.expires {
            return Err(plain(TelemetryError::SessionExpired));
        }
        let mut ctx = context_of(auth, &s).map_err(plain)?;
        let (inner, binding) = ctx.unprotect_request(req).map_err(|e| plain(e.into()))?;
        let seq = binding
            .piv
            .iter()
            .fold(0i64, |a, b| (a << 8) | i64::from(*b));
        // The request is authentic from here on: answers are protected.
        let respond = |ctx: &mut SecurityContext, code: ResponseType, payload: Vec<u8>| {
            let mut r = response_to(&inner, code);
            r.payload = payload;
            ctx.protect_response(&r, &binding, false)
        };
        // A refusal of an authentic request: answered under OSCORE.
        let refuse =
            |ctx: &mut SecurityContext, code: ResponseType, e: TelemetryError| -> Refusal {
                match respond(ctx, code, e.to_string().into_bytes()) {
                    Ok(p) => (e, Some(p)),
                    Err(o) => (o.into(), None),
                }
            };
        let path: Vec<String> = inner
            .get_option(CoapOption::UriPath)
            .map(|l| {
                l.iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let is_post = inner.header.code == MessageClass::Request(RequestType::Post);
        let window = (
            ctx.replay
                .highest
                .and_then(|h| i64::try_from(h).ok())
                .unwrap_or(-1),
            i64::from_ne_bytes(ctx.replay.seen.to_ne_bytes()),
        );
        let route = path.join("/");
        let device = store
            .device(&s.device_id)
            .await
            .map_err(|e| plain(e.into()))?
            .ok_or(plain(TelemetryError::UnknownSession))?;
        let decommissioned = device.state == crate::lifecycle::DeviceState::Decommissioned;
        let command_route =
            route == inkan_proto::command::NEXT_PATH || route == inkan_proto::command::RESULT_PATH;
        if decommissioned && !(is_post && command_route) {
            return Err(refuse(
                &mut ctx,
                ResponseType::Forbidden,
                TelemetryError::Decommissioned,
            ));
        }
        if is_post && route == inkan_proto::command::NEXT_PATH {
            if !store
                .advance_window(&s, window)
                .await
                .map_err(|e| plain(e.into()))?
            {
                continue;
            }
            let next = store
                .next_command(&s.device_id)
                .await
                .map_err(|e| plain(e.into()))?;
            let body = next.map(|(_, cose)| cose).unwrap_or_default();
            return respond(&mut ctx, ResponseType::Content, body).map_err(|e| plain(e.into()));
        }
        if is_post && route == inkan_proto::command::RESULT_PATH {
            let (id, outcome, detail) = match inkan_proto::command::decode_result(&inner.payload) {
                Ok(r) => r,
                Err(e) => {
                    let e = TelemetryError::Malformed(e.to_string());
                    return Err(refuse(&mut ctx, ResponseType::BadRequest, e));
                }
            };
            if !store
                .advance_window(&s, window)
                .await
                .map_err(|e| plain(e.into()))?
            {
                continue;
            }
            let changed = store
                .finish_command(&s.device_id, &hex::encode(&id), outcome.state(), &detail)
                .await
                .map_err(|e| plain(e.into()))?;
            // The erase order is the only command a decommissioned device
            // still receives: its success closes the device's life.
            if changed && decommissioned && outcome == inkan_proto::command::Outcome::Succeeded {
                store
                    .erase_confirmed(&device, &detail)
                    .await
                    .map_err(|e| plain(e.into()))?;
            }
            let _ = store
                .audit(
                    Some(&device.tenant_id),
                    "command-result",
                    &s.device_id,
                    outcome.state(),
                    &format!("{} {detail}", hex::encode(&id)),
                )
                .await;
            let mut ack = Vec::new();
            inkan_proto::cbor::int(&mut ack, i64::from(changed));
            return respond(&mut ctx, ResponseType::Changed, ack).map_err(|e| plain(e.into()));
        }
        if is_post && (route == "firmware/next" || route == "firmware/report") {
            if !store
                .advance_window(&s, window)
                .await
                .map_err(|e| plain(e.into()))?
            {
                continue;
            }
            let body = if route == "firmware/next" {
                let next = crate::campaigns::next_for(auth, &s.device_id)
                    .await
                    .map_err(|e| plain(e.into()))?;
                let mut v = Vec::new();
                if let Some((c, f)) = next {
                    inkan_proto::cbor::array(&mut v, 2);
                    inkan_proto::cbor::tstr(&mut v, &c);
                    inkan_proto::cbor::tstr(&mut v, &f);
                }
                v
            } else {
                let mut d = inkan_proto::cbor::Decoder::new(&inner.payload);
                let parsed = (|| {
                    if d.array().ok()? != 3 {
                        return None;
                    }
                    let text = |d: &mut inkan_proto::cbor::Decoder<'_>| {
                        d.tstr()
                            .ok()
                            .and_then(|t| String::from_utf8(t.to_vec()).ok())
                    };
                    Some((text(&mut d)?, text(&mut d)?, text(&mut d)?))
                })();
                let Some((campaign, state, detail)) = parsed else {
                    let e =
                        TelemetryError::Malformed("a report is [campaign, state, detail]".into());
                    return Err(refuse(&mut ctx, ResponseType::BadRequest, e));
                };
                let ok = crate::campaigns::report(auth, &s.device_id, &campaign, &state, &detail)
                    .await
                    .map_err(|e| plain(e.into()))?;
                let mut v = Vec::new();
                inkan_proto::cbor::int(&mut v, i64::from(ok));
                v
            };
            return respond(&mut ctx, ResponseType::Changed, body).map_err(|e| plain(e.into()));
        }
        let is_get = inner.header.code == MessageClass::Request(RequestType::Get);
        if is_get && path.len() >= 2 && path[0] == "firmware" {
            if !store
                .advance_window(&s, window)
                .await
                .map_err(|e| plain(e.into()))?
            {
                continue;
            }
            let num = inner
                .get_first_option(CoapOption::Block2)
                .and_then(|v| crate::firmware::parse_block(v))
                .map(|b| b.0)
                .unwrap_or(0);
            let found = crate::firmware::block_for(auth, &s.device_id, &path[1], num)
                .await
                .map_err(|e| plain(e.into()))?;
            let Some((manifest, total, data)) = found else {
                let e = TelemetryError::NotFound(route);
                return Err(refuse(&mut ctx, ResponseType::NotFound, e));
            };
            if path.get(2).map(String::as_str) == Some("manifest") {
                return respond(&mut ctx, ResponseType::Content, manifest)
                    .map_err(|e| plain(e.into()));
            }
            let start = (num as usize).saturating_mul(crate::firmware::BLOCK_SIZE);
            if start >= total && total > 0 {
                let e = TelemetryError::NotFound(format!("{route} block {num}"));
                return Err(refuse(&mut ctx, ResponseType::BadOption, e));
            }
            // Block2 (RFC 7959): this block, whether more follow, and on the
            // first block the total size (Size2).
            let more = start + crate::firmware::BLOCK_SIZE < total;
            let mut r = response_to(&inner, ResponseType::Content);
            r.payload = data;
            r.add_option(
                CoapOption::Block2,
                crate::firmware::block_value(num, more, crate::firmware::BLOCK_SZX),
            );
            if num == 0 {
                let t = u32::try_from(total).unwrap_or(u32::MAX).to_be_bytes();
                let skip = t.iter().take_while(|x| **x == 0).count();
                r.add_option(CoapOption::Size2, t[skip..].to_vec());
            }
            return ctx
                .protect_response(&r, &binding, false)
                .map_err(|e| plain(e.into()));
        }
        if !(is_post && path == [inkan_proto::telemetry::PATH]) {
            let e = TelemetryError::NotFound(route);
            return Err(refuse(&mut ctx, ResponseType::NotFound, e));
        }
        let (public_key, required) = store
            .device_signing(&s)
            .await
            .map_err(|e| plain(e.into()))?;
        let checked = if inkan_proto::telemetry::is_signed(&inner.payload) {
            match inkan_proto::telemetry::open_signed(&inner.payload) {
                Ok(sb) if inkan_pki::signer::verify_raw(&public_key, &sb.tbs, &sb.signature) => {
                    decode_batch(&sb.batch)
                        .map(|b| (b, Some(inner.payload.clone())))
                        .map_err(TelemetryError::from)
                }
                Ok(_) => Err(TelemetryError::BatchSignature),
                Err(e) => Err(e.into()),
            }
        } else if required {
            Err(TelemetryError::SignatureRequired)
        } else {
            decode_batch(&inner.payload)
                .map(|b| (b, None))
                .map_err(TelemetryError::from)
        };
        let (batch, signature) = match checked {
            Ok(b) => b,
            Err(e) => {
                return Err(refuse(&mut ctx, ResponseType::BadRequest, e));
            }
        };
        let rows: Vec<(i64, i64, Vec<u8>)> = batch
            .into_iter()
            .map(|r| {
                (
                    i64::try_from(r.time_ms).unwrap_or(i64::MAX),
                    i64::from(r.channel),
                    r.value,
                )
            })
            .collect();
        if store
            .ingest(&s, seq, &rows, signature.as_deref(), window)
            .await
            .map_err(|e| plain(e.into()))?
        {
            let mut ack = Vec::new();
            inkan_proto::cbor::int(&mut ack, i64::try_from(rows.len()).unwrap_or(0));
            return respond(&mut ctx, ResponseType::Changed, ack).map_err(|e| plain(e.into()));
        }
    }
    Err(plain(TelemetryError::Store(StoreError::Corrupt(
        "replay window kept moving".into(),
    ))))
}
