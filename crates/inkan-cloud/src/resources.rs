//! The device resources inside OSCORE (RFC 8613): one router, one handler
//! per resource ([`inkan_proto::resources::Resource`], shared with the
//! device). The kid names the session (its C_R), whose wrapped secrets and
//! replay window live in the store, so any replica can serve any device. A
//! reading is acknowledged only after the transaction that stores it, and
//! advances the replay window, has committed; every other resource advances
//! the window before it acts.

use crate::lifecycle::DeviceState;
use crate::store::{DeviceRow, SessionRow, StoreError};
use crate::App;
use coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use inkan_proto::oscore::{
    ContextParams, OscoreError, OscoreOption, ReplayWindow, RequestBinding, SecurityContext,
};
use inkan_proto::resources::{FirmwareOffer, FirmwareReport, Method, Resource};
use inkan_proto::telemetry::{decode_batch, BatchError};

/// Why a protected request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
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
    /// A usage report refused.
    #[error("{0}")]
    Usage(String),
    /// A decommissioned device may only fetch its erase order and report.
    #[error("device decommissioned")]
    Decommissioned,
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ResourceError {
    /// A fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ResourceError::Oscore(_) => "oscore",
            ResourceError::UnknownSession => "unknown session",
            ResourceError::SessionEnded => "session ended",
            ResourceError::SessionExpired => "session expired",
            ResourceError::Unwrap => "session secrets",
            ResourceError::Batch(_) | ResourceError::Malformed(_) => "malformed",
            ResourceError::BatchSignature | ResourceError::SignatureRequired => "signature",
            ResourceError::NotFound(_) => "not found",
            ResourceError::Usage(_) => "usage",
            ResourceError::Decommissioned => "decommissioned",
            ResourceError::Store(_) => "store",
        }
    }

    /// What a peer is told: a fixed reason, never database text.
    pub fn public_reason(&self) -> String {
        match self {
            ResourceError::Store(_) => "internal error".into(),
            other => other.to_string(),
        }
    }
}

/// The OSCORE context of a stored session, with its replay window.
fn context_of(app: &App, s: &SessionRow) -> Result<SecurityContext, ResourceError> {
    let blob = s.oscore.as_deref().ok_or(ResourceError::Unwrap)?;
    let secret = app
        .identity()
        .unwrap(&s.c_r, blob)
        .ok_or(ResourceError::Unwrap)?;
    if secret.len() != 24 {
        return Err(ResourceError::Unwrap);
    }
    let hexd = |h: &str| hex::decode(h).map_err(|_| ResourceError::Unwrap);
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
pub async fn handle(app: &App, req: &Packet, peer: &str) -> Packet {
    match handle_inner(app, req).await {
        Ok(rsp) => rsp,
        Err((e, tenant, protected)) => {
            app.metrics.refused("oscore", e.label());
            match &tenant {
                // An authenticated request: its device's tenant sees it.
                Some(t) => {
                    let _ = app
                        .registry
                        .store
                        .audit(Some(t), "oscore", peer, "refused", &e.to_string())
                        .await;
                }
                // Unauthenticated: counted, not a row per datagram.
                None => {
                    app.refused_unauthenticated("oscore", peer, &e.to_string())
                        .await
                }
            }
            if let Some(p) = protected {
                return p;
            }
            let code = match &e {
                ResourceError::Oscore(OscoreError::Malformed(_)) => ResponseType::BadRequest,
                ResourceError::Store(_) => ResponseType::InternalServerError,
                _ => ResponseType::Unauthorized,
            };
            let mut p = inkan_proto::coap::response_to(req, code);
            p.payload = e.public_reason().into_bytes();
            p
        }
    }
}

/// A refusal: the error, the tenant it concerns when known, and the
/// protected answer when the request verified.
type Refusal = (ResourceError, Option<String>, Option<Packet>);

/// What a handler decided.
enum Handled {
    /// Answer with this code, payload and options.
    Reply(ResponseType, Vec<u8>, Vec<(CoapOption, Vec<u8>)>),
    /// Refuse (answered under OSCORE).
    Refuse(ResponseType, ResourceError),
    /// The replay window moved under us (a concurrent request of the same
    /// session, or another replica): read the session again.
    Retry,
}

/// A verified request, with what every handler needs.
struct Request<'a> {
    app: &'a App,
    session: &'a SessionRow,
    device: &'a DeviceRow,
    inner: &'a Packet,
    /// The request's Partial IV as a number.
    seq: i64,
    /// The replay window after this request.
    window: (i64, i64),
}

impl Request<'_> {
    /// Advances the session's replay window (compare-and-set); false when
    /// it moved meanwhile.
    async fn advance(&self) -> Result<bool, ResourceError> {
        Ok(self
            .app
            .registry
            .store
            .advance_window(self.session, self.window)
            .await?)
    }
}

async fn handle_inner(app: &App, req: &Packet) -> Result<Packet, Refusal> {
    let plain = |e: ResourceError| (e, None, None);
    let opt = req
        .get_first_option(CoapOption::Oscore)
        .ok_or(plain(OscoreError::NotProtected.into()))?;
    let kid = OscoreOption::decode(opt)
        .map_err(|e| plain(e.into()))?
        .kid
        .ok_or(plain(OscoreError::UnknownKid.into()))?;
    let store = &app.registry.store;
    let _one_at_a_time = app.session_lock(&kid).lock().await;
    for _ in 0..8 {
        let s = store
            .session_by_c_r(&hex::encode(&kid))
            .await
            .map_err(|e| plain(e.into()))?
            .ok_or(plain(ResourceError::UnknownSession))?;
        if s.ended.is_some() {
            return Err(plain(ResourceError::SessionEnded));
        }
        if crate::store::now() > s.expires {
            return Err(plain(ResourceError::SessionExpired));
        }
        let mut ctx = context_of(app, &s).map_err(plain)?;
        let (inner, binding) = ctx.unprotect_request(req).map_err(|e| plain(e.into()))?;
        // The request is authentic from here on: answers are protected.
        let device = store
            .device(&s.device_id)
            .await
            .map_err(|e| plain(e.into()))?
            .ok_or(plain(ResourceError::UnknownSession))?;
        let tenant = Some(device.tenant_id.clone());
        let seq = binding
            .piv
            .iter()
            .fold(0i64, |a, b| (a << 8) | i64::from(*b));
        let window = (
            ctx.replay
                .highest
                .and_then(|h| i64::try_from(h).ok())
                .unwrap_or(-1),
            i64::from_ne_bytes(ctx.replay.seen.to_ne_bytes()),
        );
        let r = Request {
            app,
            session: &s,
            device: &device,
            inner: &inner,
            seq,
            window,
        };
        let handled = match route(&inner) {
            None => Handled::Refuse(
                ResponseType::NotFound,
                ResourceError::NotFound(path_of(&inner).join("/")),
            ),
            Some(resource) => dispatch(&r, resource)
                .await
                .map_err(|e| (e, tenant.clone(), None))?,
        };
        match handled {
            Handled::Retry => continue,
            Handled::Reply(code, payload, options) => {
                return reply(&mut ctx, &inner, &binding, code, payload, options)
                    .map_err(|e| (e, tenant, None))
            }
            Handled::Refuse(code, e) => {
                let payload = e.public_reason().into_bytes();
                return match reply(&mut ctx, &inner, &binding, code, payload, Vec::new()) {
                    Ok(p) => Err((e, tenant, Some(p))),
                    Err(o) => Err((o, tenant, None)),
                };
            }
        }
    }
    Err(plain(ResourceError::Store(StoreError::Corrupt(
        "replay window kept moving".into(),
    ))))
}

fn path_of(inner: &Packet) -> Vec<String> {
    inner
        .get_option(CoapOption::UriPath)
        .map(|l| {
            l.iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn route(inner: &Packet) -> Option<Resource> {
    let method = match inner.header.code {
        MessageClass::Request(RequestType::Get) => Method::Get,
        MessageClass::Request(RequestType::Post) => Method::Post,
        _ => Method::Other,
    };
    Resource::route(method, &path_of(inner))
}

fn reply(
    ctx: &mut SecurityContext,
    inner: &Packet,
    binding: &RequestBinding,
    code: ResponseType,
    payload: Vec<u8>,
    options: Vec<(CoapOption, Vec<u8>)>,
) -> Result<Packet, ResourceError> {
    let mut r = inkan_proto::coap::response_to(inner, code);
    r.payload = payload;
    for (o, v) in options {
        r.add_option(o, v);
    }
    Ok(ctx.protect_response(&r, binding, false)?)
}

/// One handler per resource. A decommissioned device reaches only its
/// commands (the erase order) and their results.
async fn dispatch(r: &Request<'_>, resource: Resource) -> Result<Handled, ResourceError> {
    if r.device.state == DeviceState::Decommissioned
        && !matches!(resource, Resource::CommandsNext | Resource::CommandsResult)
    {
        return Ok(Handled::Refuse(
            ResponseType::Forbidden,
            ResourceError::Decommissioned,
        ));
    }
    match resource {
        Resource::Telemetry => telemetry(r).await,
        Resource::CommandsNext => commands_next(r).await,
        Resource::CommandsResult => commands_result(r).await,
        Resource::FirmwareNext => firmware_next(r).await,
        Resource::FirmwareReport => firmware_report(r).await,
        Resource::FirmwareTicket(id) => firmware_ticket(r, &id).await,
        Resource::FirmwareManifest(id) => firmware_manifest(r, &id).await,
    }
}

/// `POST telemetry`: readings stored and the window advanced in one
/// transaction, then acknowledged with their count.
async fn telemetry(r: &Request<'_>) -> Result<Handled, ResourceError> {
    let store = &r.app.registry.store;
    let (public_key, required) = store.device_signing(r.session).await?;
    let payload = &r.inner.payload;
    let checked = if inkan_proto::telemetry::is_signed(payload) {
        match inkan_proto::telemetry::open_signed(payload) {
            Ok(sb) if inkan_pki::signer::verify_raw(&public_key, &sb.tbs, &sb.signature) => {
                decode_batch(&sb.batch)
                    .map(|b| (b, Some(payload.clone())))
                    .map_err(ResourceError::from)
            }
            Ok(_) => Err(ResourceError::BatchSignature),
            Err(e) => Err(e.into()),
        }
    } else if required {
        Err(ResourceError::SignatureRequired)
    } else {
        decode_batch(payload)
            .map(|b| (b, None))
            .map_err(ResourceError::from)
    };
    let (batch, signature) = match checked {
        Ok(b) => b,
        Err(e) => return Ok(Handled::Refuse(ResponseType::BadRequest, e)),
    };
    let rows: Vec<(i64, i64, Vec<u8>)> = batch
        .into_iter()
        .map(|x| {
            (
                i64::try_from(x.time_ms).unwrap_or(i64::MAX),
                i64::from(x.channel),
                x.value,
            )
        })
        .collect();
    // Usage reports first: a refused one stores nothing of the batch; a
    // repeated one (the same value after a retry) is taken again.
    match crate::usage::take(r.app, r.device, &rows, signature.is_some()).await {
        Ok(()) => {}
        Err(crate::usage::UsageRefused::Store(e)) => return Err(e.into()),
        Err(e) => {
            return Ok(Handled::Refuse(
                ResponseType::BadRequest,
                ResourceError::Usage(e.to_string()),
            ))
        }
    }
    if !store
        .ingest(r.session, r.seq, &rows, signature.as_deref(), r.window)
        .await?
    {
        return Ok(Handled::Retry);
    }
    r.app.metrics.readings(rows.len() as u64);
    let mut ack = Vec::new();
    inkan_proto::cbor::int(&mut ack, i64::try_from(rows.len()).unwrap_or(0));
    Ok(Handled::Reply(ResponseType::Changed, ack, Vec::new()))
}

/// `POST commands/next`: the oldest waiting command (empty when none).
async fn commands_next(r: &Request<'_>) -> Result<Handled, ResourceError> {
    if !r.advance().await? {
        return Ok(Handled::Retry);
    }
    let next = r.app.registry.store.next_command(&r.device.id).await?;
    let body = next.map(|(_, cose)| cose).unwrap_or_default();
    Ok(Handled::Reply(ResponseType::Content, body, Vec::new()))
}

/// `POST commands/result`: a command's outcome, recorded once. The
/// success of a decommissioned device's erase order closes its life.
async fn commands_result(r: &Request<'_>) -> Result<Handled, ResourceError> {
    let (id, outcome, detail) = match inkan_proto::command::decode_result(&r.inner.payload) {
        Ok(x) => x,
        Err(e) => {
            return Ok(Handled::Refuse(
                ResponseType::BadRequest,
                ResourceError::Malformed(e.to_string()),
            ))
        }
    };
    if !r.advance().await? {
        return Ok(Handled::Retry);
    }
    let store = &r.app.registry.store;
    let changed = store
        .finish_command(
            &r.device.id,
            &hex::encode(&id),
            crate::commands::CommandState::of(outcome),
            &detail,
        )
        .await?;
    if changed
        && r.device.state == DeviceState::Decommissioned
        && outcome == inkan_proto::command::Outcome::Succeeded
    {
        store.erase_confirmed(r.device, &detail).await?;
    }
    store
        .audit(
            Some(&r.device.tenant_id),
            "command-result",
            &r.device.serial,
            outcome.state(),
            &format!("{} {detail}", hex::encode(&id)),
        )
        .await?;
    let mut ack = Vec::new();
    inkan_proto::cbor::int(&mut ack, i64::from(changed));
    Ok(Handled::Reply(ResponseType::Changed, ack, Vec::new()))
}

/// `POST firmware/next`: the update a campaign offers (empty when none).
async fn firmware_next(r: &Request<'_>) -> Result<Handled, ResourceError> {
    if !r.advance().await? {
        return Ok(Handled::Retry);
    }
    let body = crate::campaigns::next_for(r.app, &r.device.id)
        .await?
        .map(|(campaign, firmware)| FirmwareOffer { campaign, firmware }.encode())
        .unwrap_or_default();
    Ok(Handled::Reply(ResponseType::Changed, body, Vec::new()))
}

/// `POST firmware/report`: the device's progress in a campaign.
async fn firmware_report(r: &Request<'_>) -> Result<Handled, ResourceError> {
    let report = match FirmwareReport::decode(&r.inner.payload) {
        Ok(x) => x,
        Err(e) => {
            return Ok(Handled::Refuse(
                ResponseType::BadRequest,
                ResourceError::Malformed(e.to_string()),
            ))
        }
    };
    if !r.advance().await? {
        return Ok(Handled::Retry);
    }
    let ok = crate::campaigns::report(
        r.app,
        &r.device.id,
        &report.campaign,
        &report.state,
        &report.detail,
    )
    .await?;
    let mut v = Vec::new();
    inkan_proto::cbor::int(&mut v, i64::from(ok));
    Ok(Handled::Reply(ResponseType::Changed, v, Vec::new()))
}

/// `GET firmware/{id}/manifest`: the signed manifest, to the firmware
/// family's devices only.
async fn firmware_manifest(r: &Request<'_>, id: &str) -> Result<Handled, ResourceError> {
    if !r.advance().await? {
        return Ok(Handled::Retry);
    }
    match crate::firmware::manifest_for(r.app, r.device, id).await? {
        Some(manifest) => Ok(Handled::Reply(ResponseType::Content, manifest, Vec::new())),
        None => Ok(Handled::Refuse(
            ResponseType::NotFound,
            ResourceError::NotFound(Resource::FirmwareManifest(id.into()).path()),
        )),
    }
}

/// `GET firmware/{id}/ticket`: the image's key, download path and size,
/// to the firmware family's devices only.
async fn firmware_ticket(r: &Request<'_>, id: &str) -> Result<Handled, ResourceError> {
    if !r.advance().await? {
        return Ok(Handled::Retry);
    }
    match crate::firmware::ticket_for(r.app, r.device, id).await? {
        Some(t) => Ok(Handled::Reply(
            ResponseType::Content,
            t.encode(),
            Vec::new(),
        )),
        None => Ok(Handled::Refuse(
            ResponseType::NotFound,
            ResourceError::NotFound(Resource::FirmwareTicket(id.into()).path()),
        )),
    }
}
