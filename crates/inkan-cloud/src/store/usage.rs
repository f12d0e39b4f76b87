//! Usage reported by devices (units of use left in their chips' one-way
//! counters) and each family's alert level.

use super::{Store, StoreError};
use sqlx::any::AnyRow;
use sqlx::Row;

/// A device's last usage report.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct UsageRow {
    /// The device.
    pub device_id: String,
    /// Units left at the last report.
    pub remaining: i64,
    /// Units left at the first report.
    pub first_remaining: i64,
    /// Reports taken.
    pub reports: i64,
    /// When the last came (Unix seconds).
    pub reported_at: i64,
}

/// What became of a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageChange {
    /// Recorded; the value before, if any.
    Recorded(Option<i64>),
    /// Refused: more units than the last report (a counter only goes
    /// down).
    Rose {
        /// The last value taken.
        last: i64,
    },
}

fn usage(r: &AnyRow) -> Result<UsageRow, StoreError> {
    Ok(UsageRow {
        device_id: r.try_get("device_id")?,
        remaining: r.try_get("remaining")?,
        first_remaining: r.try_get("first_remaining")?,
        reports: r.try_get("reports")?,
        reported_at: r.try_get("reported_at")?,
    })
}

const COLUMNS: &str = "device_id, remaining, first_remaining, reports, reported_at";

impl Store {
    /// Records that `device_id` has `remaining` units left, unless that is
    /// more than it last reported (checked in the same statement, so two
    /// replicas cannot interleave a rise).
    pub async fn record_usage(
        &self,
        device_id: &str,
        tenant_id: &str,
        family_id: Option<&str>,
        remaining: i64,
    ) -> Result<UsageChange, StoreError> {
        let before = self.device_usage(device_id).await?;
        if let Some(b) = &before {
            if remaining > b.remaining {
                return Ok(UsageChange::Rose { last: b.remaining });
            }
        }
        let done = sqlx::query(
            "INSERT INTO device_usage (device_id, tenant_id, family_id, remaining, first_remaining, reports, reported_at)
             VALUES ($1, $2, $3, $4, $4, 1, $5)
             ON CONFLICT (device_id) DO UPDATE SET remaining = excluded.remaining,
                 reports = device_usage.reports + 1, reported_at = excluded.reported_at
             WHERE device_usage.remaining >= excluded.remaining",
        )
        .bind(device_id)
        .bind(tenant_id)
        .bind(family_id)
        .bind(remaining)
        .bind(super::now())
        .execute(&self.pool)
        .await?
        .rows_affected();
        if done == 0 {
            let last = self
                .device_usage(device_id)
                .await?
                .map_or(remaining, |u| u.remaining);
            return Ok(UsageChange::Rose { last });
        }
        Ok(UsageChange::Recorded(before.map(|b| b.remaining)))
    }

    /// A device's last usage report.
    pub async fn device_usage(&self, device_id: &str) -> Result<Option<UsageRow>, StoreError> {
        let r = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM device_usage WHERE device_id = $1"
        ))
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(usage).transpose()
    }

    /// The last usage reports of a family's devices, fewest units left
    /// first.
    pub async fn family_usage(&self, family_id: &str) -> Result<Vec<UsageRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM device_usage WHERE family_id = $1 ORDER BY remaining, device_id"
        ))
        .bind(family_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(usage).collect()
    }

    /// Sets (or clears) the level below which a family's usage reports
    /// raise an alert.
    pub async fn set_usage_alert(
        &self,
        family_id: &str,
        below: Option<i64>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE families SET usage_alert_below = $1 WHERE id = $2")
            .bind(below)
            .bind(family_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A family's alert level.
    pub async fn usage_alert(&self, family_id: &str) -> Result<Option<i64>, StoreError> {
        let r = sqlx::query("SELECT usage_alert_below FROM families WHERE id = $1")
            .bind(family_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match r {
            Some(r) => r.try_get::<Option<i64>, _>("usage_alert_below")?,
            None => None,
        })
    }
}
