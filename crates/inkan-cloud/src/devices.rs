//! The device lifecycle service: operators' lifecycle actions, credentials
//! added and retired, decommissioning, transfers of ownership and a
//! device's history. Every state change goes through
//! [`crate::lifecycle::transition`] and is recorded (device history and
//! tenant audit log) with its actor and reason.

use crate::lifecycle::{self, Action, CredentialState, DeviceState};
use crate::registry::{fingerprint, RegistryError};
use crate::store::{Decommission, DeviceRow, HistoryEntry, TransferRecord};
use crate::App;
use inkan_pki::IssuedCert;
use inkan_proto::transfer::Transfer;

/// Who acts, for the history and the audit log.
#[derive(Clone, Copy, Debug)]
pub struct Actor<'a> {
    /// The tenant acting.
    pub tenant_id: &'a str,
    /// Who: `token <id>`, `cli`, ...
    pub who: &'a str,
}

async fn owned(app: &App, actor: Actor<'_>, device_id: &str) -> Result<DeviceRow, RegistryError> {
    app.registry
        .store
        .device_in(actor.tenant_id, device_id)
        .await?
        .ok_or(RegistryError::UnknownDevice)
}

/// A lifecycle action by the device's own tenant, for tools and tests
/// that act as its operator.
pub async fn act_as_owner(
    app: &App,
    device_id: &str,
    action: Action,
    who: &str,
) -> Result<DeviceRow, RegistryError> {
    let d = app
        .registry
        .store
        .device(device_id)
        .await?
        .ok_or(RegistryError::UnknownDevice)?;
    act(
        app,
        Actor {
            tenant_id: &d.tenant_id,
            who,
        },
        device_id,
        action,
        "operator request",
    )
    .await
}

/// An operator's lifecycle action on a device: claim, suspend, resume or
/// revoke (activation is the device's own first authentication;
/// decommissioning and transfers have their own calls).
pub async fn act(
    app: &App,
    actor: Actor<'_>,
    device_id: &str,
    action: Action,
    reason: &str,
) -> Result<DeviceRow, RegistryError> {
    let d = owned(app, actor, device_id).await?;
    let r = act_inner(app, actor, &d, action, reason).await;
    audit(app, actor, &d, action.as_str(), &r, reason).await?;
    r?;
    owned(app, actor, device_id).await
}

async fn act_inner(
    app: &App,
    actor: Actor<'_>,
    d: &DeviceRow,
    action: Action,
    reason: &str,
) -> Result<(), RegistryError> {
    if matches!(
        action,
        Action::Activate | Action::Decommission | Action::Transfer
    ) {
        return Err(lifecycle::TransitionRefused {
            from: d.state,
            action,
        }
        .into());
    }
    let to = lifecycle::transition(d.state, action)?;
    if !app
        .registry
        .store
        .set_device_state(d, d.state, to, action, actor.who, reason, None)
        .await?
    {
        return Err(RegistryError::Malformed(
            "the device changed state meanwhile: try again".into(),
        ));
    }
    Ok(())
}

async fn audit<T>(
    app: &App,
    actor: Actor<'_>,
    d: &DeviceRow,
    kind: &str,
    r: &Result<T, RegistryError>,
    reason: &str,
) -> Result<(), RegistryError> {
    let (outcome, detail) = match r {
        Ok(_) => ("ok", format!("{} by {}: {reason}", d.id, actor.who)),
        Err(e) => ("refused", format!("{} by {}: {e}", d.id, actor.who)),
    };
    app.registry
        .store
        .audit(
            Some(actor.tenant_id),
            &format!("device-{kind}"),
            &d.serial,
            outcome,
            &detail,
        )
        .await?;
    Ok(())
}

/// What decommissioning did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Decommissioned {
    /// The device.
    pub device_id: String,
    /// The erase order queued for the device (command id), when the
    /// service has a command key.
    pub erase_command: Option<String>,
    /// Whether its readings were deleted.
    pub readings_purged: bool,
}

/// Decommissions a device: state `decommissioned`, every credential
/// revoked (and on the family's revocation list), sessions ended, pending
/// commands expired, readings purged when asked, and a signed erase order
/// queued; an offline device gets it at its next contact, the only thing a
/// decommissioned device can still do.
pub async fn decommission(
    app: &App,
    actor: Actor<'_>,
    device_id: &str,
    purge_readings: bool,
    reason: &str,
) -> Result<Decommissioned, RegistryError> {
    let d = owned(app, actor, device_id).await?;
    let r = decommission_inner(app, actor, &d, purge_readings, reason).await;
    audit(app, actor, &d, "decommission", &r, reason).await?;
    r
}

async fn decommission_inner(
    app: &App,
    actor: Actor<'_>,
    d: &DeviceRow,
    purge_readings: bool,
    reason: &str,
) -> Result<Decommissioned, RegistryError> {
    let to = lifecycle::transition(d.state, Action::Decommission)?;
    let now = crate::store::now();
    let ttl = i64::try_from(inkan_proto::command::MAX_TTL_SECS).unwrap_or(i64::MAX);
    let erase = match app.command_key() {
        Some(key) => Some(
            crate::commands::sign_for(
                app,
                key,
                d,
                inkan_proto::command::DECOMMISSION,
                &[],
                now,
                ttl,
            )
            .await
            .map_err(|e| RegistryError::Malformed(format!("signing the erase order: {e}")))?,
        ),
        None => None,
    };
    let done = app
        .registry
        .store
        .set_device_state(
            d,
            d.state,
            to,
            Action::Decommission,
            actor.who,
            reason,
            Some(Decommission {
                purge_readings,
                erase: erase
                    .as_ref()
                    .map(|(id, cose)| (id.as_str(), cose.as_slice(), now.saturating_add(ttl))),
            }),
        )
        .await?;
    if !done {
        return Err(RegistryError::Malformed(
            "the device changed state meanwhile: try again".into(),
        ));
    }
    Ok(Decommissioned {
        device_id: d.id.clone(),
        erase_command: erase.map(|(id, _)| id),
        readings_purged: purge_readings,
    })
}

/// Adds a certificate as a new credential of a device: issued by the
/// device's family, for the same chip serial and the same identity (UEID),
/// valid now. The device keeps its id, readings and history.
pub async fn add_credential(
    app: &App,
    actor: Actor<'_>,
    device_id: &str,
    cert_der: &[u8],
) -> Result<String, RegistryError> {
    let d = owned(app, actor, device_id).await?;
    let r = add_credential_inner(app, actor, &d, cert_der).await;
    audit(app, actor, &d, "credential-add", &r, "certificate added").await?;
    r
}

async fn add_credential_inner(
    app: &App,
    actor: Actor<'_>,
    d: &DeviceRow,
    cert_der: &[u8],
) -> Result<String, RegistryError> {
    if !lifecycle::may_authenticate(d.state) && d.state != DeviceState::Suspended {
        return Err(RegistryError::Malformed(format!(
            "a {} device takes no new credential",
            d.state
        )));
    }
    let cert =
        IssuedCert::from_der(cert_der).map_err(|e| RegistryError::Malformed(e.to_string()))?;
    let family_id = d.family_id.as_deref().ok_or(RegistryError::UnknownFamily)?;
    let family = app
        .registry
        .store
        .family_in(&d.tenant_id, family_id)
        .await?
        .or(app.registry.store.family(family_id).await?)
        .ok_or(RegistryError::UnknownFamily)?;
    let validator = inkan_pki::DeviceValidator::new(
        std::slice::from_ref(&family.certificate),
        inkan_pki::validate::RequiredEku::ClientAuth,
    )?;
    validator.validate(cert_der, &[], std::time::SystemTime::now())?;
    if cert.subject_serial_number().as_deref() != Some(d.serial.as_str()) {
        return Err(RegistryError::IdentityTaken);
    }
    if let Some(u) = cert.ueid() {
        if u.to_hex() != d.id {
            return Err(RegistryError::IdentityTaken);
        }
    }
    let fp = fingerprint(cert_der);
    if app
        .registry
        .store
        .credential_by_fingerprint(&fp)
        .await?
        .is_some()
    {
        return Err(RegistryError::Duplicate);
    }
    Ok(app
        .registry
        .store
        .add_credential(d, cert_der, &fp, &cert.public_point(), actor.who)
        .await?)
}

/// Retires (or revokes) one credential of a device: refused from now on.
pub async fn end_credential(
    app: &App,
    actor: Actor<'_>,
    device_id: &str,
    credential_id: &str,
    to: CredentialState,
) -> Result<(), RegistryError> {
    let d = owned(app, actor, device_id).await?;
    let r = if matches!(to, CredentialState::Retired | CredentialState::Revoked) {
        app.registry
            .store
            .end_credential(&d, credential_id, to, actor.who)
            .await
            .map_err(RegistryError::from)
            .and_then(|ok| {
                ok.then_some(())
                    .ok_or(RegistryError::Malformed("no such active credential".into()))
            })
    } else {
        Err(RegistryError::Malformed(
            "a credential can be retired or revoked".into(),
        ))
    };
    audit(app, actor, &d, "credential-end", &r, credential_id).await?;
    r
}

/// The devices of a seller named in a transfer offer.
pub async fn offer_transfer(
    app: &App,
    actor: Actor<'_>,
    seller_name: &str,
    buyer_name: &str,
    device_ids: &[String],
    ttl_secs: u64,
) -> Result<Vec<u8>, RegistryError> {
    let store = &app.registry.store;
    let refuse = |m: &str| RegistryError::Transfer(m.to_string());
    if device_ids.is_empty() || device_ids.len() > inkan_proto::transfer::MAX_DEVICES {
        return Err(refuse("name 1 to 10000 devices"));
    }
    if ttl_secs == 0 || ttl_secs > inkan_proto::command::MAX_TTL_SECS {
        return Err(refuse("ttl_secs must be 1 to 2592000 (30 days)"));
    }
    if buyer_name == seller_name {
        return Err(refuse("a tenant cannot transfer devices to itself"));
    }
    if store.tenant_by_name(buyer_name).await?.is_none() {
        return Err(refuse("no such buyer tenant"));
    }
    let mut devices = Vec::with_capacity(device_ids.len());
    for id in device_ids {
        let d = owned(app, actor, id).await?;
        lifecycle::transition(d.state, Action::Transfer)?;
        devices.push(hex::decode(&d.id).map_err(|_| refuse("a device id that is not hex"))?);
    }
    let mut tid = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut tid);
    let now = u64::try_from(crate::store::now()).unwrap_or(0);
    let t = Transfer {
        id: tid,
        from: seller_name.to_string(),
        to: buyer_name.to_string(),
        devices,
        issued: now,
        expires: now.saturating_add(ttl_secs),
    };
    let doc = t
        .sign(|tbs| app.identity().sign_document(tbs))
        .map_err(|e| refuse(&format!("signing: {e}")))?;
    store
        .audit(
            Some(actor.tenant_id),
            "transfer-offer",
            &hex::encode(tid),
            "ok",
            &format!(
                "{} devices to tenant {buyer_name}, by {}",
                device_ids.len(),
                actor.who
            ),
        )
        .await?;
    Ok(doc)
}

/// The buyer claims a transfer: from now on the devices, their data and
/// actions are the buyer's alone. Returns the devices received.
pub async fn claim_transfer(
    app: &App,
    actor: Actor<'_>,
    buyer_name: &str,
    document: &[u8],
) -> Result<Vec<String>, RegistryError> {
    let r = claim_inner(app, actor, buyer_name, document).await;
    let (outcome, detail) = match &r {
        Ok((t, ids)) => (
            "ok",
            format!(
                "transfer {}: {} devices from tenant {}",
                hex::encode(t.id),
                ids.len(),
                t.from
            ),
        ),
        Err(e) => ("refused", e.to_string()),
    };
    app.registry
        .store
        .audit(
            Some(actor.tenant_id),
            "transfer-claim",
            actor.who,
            outcome,
            &detail,
        )
        .await?;
    if let Ok((t, ids)) = &r {
        if let Some(seller) = app.registry.store.tenant_by_name(&t.from).await? {
            app.registry
                .store
                .audit(
                    Some(&seller),
                    "transfer-completed",
                    &hex::encode(t.id),
                    "ok",
                    &format!("{} devices now belong to tenant {}", ids.len(), t.to),
                )
                .await?;
        }
    }
    r.map(|(_, ids)| ids)
}

async fn claim_inner(
    app: &App,
    actor: Actor<'_>,
    buyer_name: &str,
    document: &[u8],
) -> Result<(Transfer, Vec<String>), RegistryError> {
    let store = &app.registry.store;
    let refuse = |m: &str| RegistryError::Transfer(m.to_string());
    let key = app.identity().document_key();
    let t = Transfer::open(document, |tbs, sig| {
        inkan_pki::signer::verify_raw(&key, tbs, sig)
    })
    .map_err(|e| refuse(&e.to_string()))?;
    if t.to != buyer_name {
        return Err(refuse("addressed to another tenant"));
    }
    if store.transfer_claimed(&hex::encode(t.id)).await? {
        return Err(refuse("already claimed"));
    }
    if u64::try_from(crate::store::now()).unwrap_or(u64::MAX) > t.expires {
        return Err(refuse("expired"));
    }
    let seller = store
        .tenant_by_name(&t.from)
        .await?
        .ok_or(refuse("the seller tenant no longer exists"))?;
    if seller == actor.tenant_id {
        return Err(refuse("a tenant cannot claim its own transfer"));
    }
    let mut devices = Vec::with_capacity(t.devices.len());
    let mut family_id = None;
    for raw in &t.devices {
        let id = hex::encode(raw);
        let d = store
            .device(&id)
            .await?
            .filter(|d| d.tenant_id == seller)
            .ok_or(refuse("a device it names no longer belongs to the seller"))?;
        lifecycle::transition(d.state, Action::Transfer)?;
        family_id = family_id.or(d.family_id.clone());
        devices.push(d);
    }
    let family_id = family_id.ok_or(refuse("its devices have no family"))?;
    let tid = hex::encode(t.id);
    let applied = store
        .apply_transfer(
            &TransferRecord {
                id: &tid,
                family_id: &family_id,
                from_tenant: &seller,
                to_tenant: actor.tenant_id,
                document,
                actor: actor.who,
            },
            &devices,
        )
        .await?;
    if !applied {
        return Err(refuse("already claimed"));
    }
    Ok((t, devices.into_iter().map(|d| d.id).collect()))
}

/// A device's history (its owner only).
pub async fn history(
    app: &App,
    actor: Actor<'_>,
    device_id: &str,
) -> Result<Vec<HistoryEntry>, RegistryError> {
    let d = owned(app, actor, device_id).await?;
    Ok(app.registry.store.history(&d.id).await?)
}
