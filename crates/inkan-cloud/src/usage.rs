//! Usage seen from the cloud. A device reports the units of use its chip's
//! one-way usage counter has left as a reading on
//! [`inkan_proto::telemetry::USAGE_CHANNEL`], in a batch signed by its
//! secure element. The cloud takes such a report only signed, and never
//! one above the last it took (the counter only goes down): what reaches
//! the operator is what the device's chip key signed, unaltered on the
//! way. What it cannot prove is that the host read the counter honestly:
//! a host whose application firmware is compromised can report fewer
//! units than are left (never more than it reported before), since the
//! chip signs what the host gives it. Each family may set a level below
//! which a report raises an alert in the audit log.

use crate::devices::Actor;
use crate::registry::RegistryError;
use crate::store::{DeviceRow, StoreError, UsageChange, UsageRow};
use crate::App;
use inkan_proto::telemetry::USAGE_CHANNEL;

/// Why a usage report is refused.
#[derive(Debug, thiserror::Error)]
pub enum UsageRefused {
    /// A usage reading in a batch the chip did not sign.
    #[error("usage readings are taken only in batches signed by the secure element")]
    Unsigned,
    /// A usage value that is not 4 bytes.
    #[error("a usage reading is 4 bytes (units left, big-endian)")]
    Malformed,
    /// More units than the last report.
    #[error(
        "usage rose from {last} to {reported} units left: refused (the counter only goes down)"
    )]
    Rose {
        /// The last value taken.
        last: i64,
        /// The value reported.
        reported: i64,
    },
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The usage readings of a batch (channel, value), checked before any of
/// the batch is stored; then recorded in order.
pub(crate) async fn take(
    app: &App,
    device: &DeviceRow,
    rows: &[(i64, i64, Vec<u8>)],
    signed: bool,
) -> Result<(), UsageRefused> {
    let mut values = Vec::new();
    for (_, channel, value) in rows {
        if *channel != i64::from(USAGE_CHANNEL) {
            continue;
        }
        if !signed {
            return Err(UsageRefused::Unsigned);
        }
        let v: [u8; 4] = value
            .as_slice()
            .try_into()
            .map_err(|_| UsageRefused::Malformed)?;
        values.push(i64::from(u32::from_be_bytes(v)));
    }
    if values.is_empty() {
        return Ok(());
    }
    let store = &app.registry.store;
    let alert = match device.family_id.as_deref() {
        Some(f) => store.usage_alert(f).await?,
        None => None,
    };
    for remaining in values {
        match store
            .record_usage(
                &device.id,
                &device.tenant_id,
                device.family_id.as_deref(),
                remaining,
            )
            .await?
        {
            UsageChange::Rose { last } => {
                return Err(UsageRefused::Rose {
                    last,
                    reported: remaining,
                })
            }
            UsageChange::Recorded(before) => {
                if let Some(level) = alert {
                    let crossed = remaining < level && before.is_none_or(|b| b >= level);
                    if crossed {
                        store
                            .audit(
                                Some(&device.tenant_id),
                                "usage-alert",
                                &device.id,
                                "alert",
                                &format!(
                                    "{remaining} unit(s) left, below the family's level of {level}"
                                ),
                            )
                            .await?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// A family's usage: its alert level and its devices' last reports.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FamilyUsage {
    /// The family.
    pub family: String,
    /// Reports below this raise an alert.
    pub alert_below: Option<i64>,
    /// Units used across the family since each device's first report.
    pub used: i64,
    /// Each device's last report, fewest units left first.
    pub devices: Vec<UsageRow>,
}

/// A device's last usage report (its owner only); None before any.
pub async fn device_usage(
    app: &App,
    actor: Actor<'_>,
    device_id: &str,
) -> Result<Option<UsageRow>, RegistryError> {
    let d = app
        .registry
        .store
        .device_in(actor.tenant_id, device_id)
        .await?
        .ok_or(RegistryError::UnknownDevice)?;
    Ok(app.registry.store.device_usage(&d.id).await?)
}

/// A family's usage (its owner only).
pub async fn family_usage(
    app: &App,
    actor: Actor<'_>,
    family_id: &str,
) -> Result<FamilyUsage, RegistryError> {
    let store = &app.registry.store;
    let f = store
        .family_in(actor.tenant_id, family_id)
        .await?
        .ok_or(RegistryError::UnknownFamily)?;
    let devices = store.family_usage(&f.id).await?;
    Ok(FamilyUsage {
        family: f.id.clone(),
        alert_below: store.usage_alert(&f.id).await?,
        used: devices
            .iter()
            .map(|d| d.first_remaining - d.remaining)
            .sum(),
        devices,
    })
}

/// Sets (or clears) the level below which a family's reports raise an
/// alert; audited.
pub async fn set_alert(
    app: &App,
    actor: Actor<'_>,
    family_id: &str,
    below: Option<u32>,
) -> Result<(), RegistryError> {
    let store = &app.registry.store;
    let f = store
        .family_in(actor.tenant_id, family_id)
        .await?
        .ok_or(RegistryError::UnknownFamily)?;
    store.set_usage_alert(&f.id, below.map(i64::from)).await?;
    store
        .audit(
            Some(actor.tenant_id),
            "usage-alert-level",
            &f.id,
            "ok",
            &format!(
                "{} by {}",
                below.map_or_else(|| "cleared".to_string(), |b| format!("below {b}")),
                actor.who
            ),
        )
        .await?;
    Ok(())
}
