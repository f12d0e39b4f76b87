//! Update campaigns: which devices get a firmware, in which stage, and the
//! automatic stop when a stage's failure rate crosses the threshold.
//! Devices learn of their update by polling `firmware/next` and report
//! progress to `firmware/report`, both inside OSCORE.

use crate::store::{new_id, now, StoreError};
use crate::AuthService;
use sqlx::Row;

/// How a campaign picks its devices among the firmware's family.
#[derive(Clone, Debug)]
pub enum Target {
    /// Every active device of the family.
    Family,
    /// These devices (ids).
    Devices(Vec<String>),
    /// This percentage of the family (a stable choice by device id).
    Percent(u8),
}

/// Why a campaign was refused.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    /// No such firmware in the tenant.
    #[error("no such firmware in this tenant")]
    UnknownFirmware,
    /// Bad parameters.
    #[error("{0}")]
    Invalid(&'static str),
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A campaign's progress.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Progress {
    /// running, stopped or completed.
    pub state: String,
    /// The open stage (0-based).
    pub stage: i64,
    /// Stages in all.
    pub stages: i64,
    /// Devices per state (pending, offered, downloading, installed,
    /// succeeded, failed).
    pub devices: std::collections::BTreeMap<String, i64>,
    /// Why it stopped, when it did.
    pub detail: Option<String>,
}

fn db(e: sqlx::Error) -> CampaignError {
    CampaignError::Store(StoreError::from(e))
}

/// Creates a campaign: the targets are split into `stages` cumulative
/// percentages (e.g. [10, 50, 100]); it stops when the failed devices are
/// more than `threshold_pct` percent of the devices of the open stages.
pub async fn create(
    auth: &AuthService,
    tenant_id: &str,
    firmware_id: &str,
    target: Target,
    stages: &[u8],
    threshold_pct: u8,
) -> Result<String, CampaignError> {
    if stages.is_empty()
        || stages.windows(2).any(|w| w[0] >= w[1])
        || stages.last() != Some(&100)
        || stages[0] == 0
    {
        return Err(CampaignError::Invalid(
            "stages are increasing cumulative percentages ending at 100",
        ));
    }
    if threshold_pct > 100 {
        return Err(CampaignError::Invalid(
            "the failure threshold is a percentage",
        ));
    }
    let pool = &auth.registry.store.pool;
    let fam: String =
        sqlx::query("SELECT family_id FROM firmware WHERE id = $1 AND tenant_id = $2")
            .bind(firmware_id)
            .bind(tenant_id)
            .fetch_optional(pool)
            .await
            .map_err(db)?
            .ok_or(CampaignError::UnknownFirmware)?
            .try_get("family_id")
            .map_err(db)?;
    let mut devices: Vec<String> = auth
        .registry
        .store
        .devices_of_family(tenant_id, &fam)
        .await?
        .into_iter()
        .map(|d| d.id)
        .collect();
    match &target {
        Target::Family => {}
        Target::Devices(ids) => devices.retain(|d| ids.contains(d)),
        Target::Percent(p) => {
            if *p == 0 || *p > 100 {
                return Err(CampaignError::Invalid("a percentage from 1 to 100"));
            }
            // Stable: by a hash of the device id.
            devices.sort_by_key(|d| <sha2::Sha256 as sha2::Digest>::digest(d.as_bytes()).to_vec());
            let keep = (devices.len() * usize::from(*p)).div_ceil(100);
            devices.truncate(keep);
        }
    }
    if devices.is_empty() {
        return Err(CampaignError::Invalid(
            "no device of the firmware's family matches",
        ));
    }
    devices.sort_by_key(|d| <sha2::Sha256 as sha2::Digest>::digest(d.as_bytes()).to_vec());
    let id = new_id();
    let mut tx = pool.begin().await.map_err(db)?;
    sqlx::query(
        "INSERT INTO campaigns (id, tenant_id, firmware_id, stages, stage, threshold, state, created) \
         VALUES ($1, $2, $3, $4, 0, $5, 'running', $6)",
    )
    .bind(&id)
    .bind(tenant_id)
    .bind(firmware_id)
    .bind(i64::try_from(stages.len()).unwrap_or(1))
    .bind(i64::from(threshold_pct))
    .bind(now())
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    let n = devices.len();
    for (k, d) in devices.iter().enumerate() {
        // The first stage whose cumulative share covers this device.
        let stage = stages
            .iter()
            .position(|p| k < (n * usize::from(*p)).div_ceil(100))
            .unwrap_or(stages.len() - 1);
        sqlx::query(
            "INSERT INTO campaign_devices (campaign_id, device_id, stage, state, updated) VALUES ($1, $2, $3, 'pending', $4)",
        )
        .bind(&id)
        .bind(d)
        .bind(i64::try_from(stage).unwrap_or(0))
        .bind(now())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    auth.registry
        .store
        .audit(
            Some(tenant_id),
            "campaign-create",
            &id,
            "ok",
            &format!("firmware {firmware_id}, {n} devices, stages {stages:?}, threshold {threshold_pct}%"),
        )
        .await?;
    Ok(id)
}

/// The update a device should take now: (campaign id, firmware id), if one
/// of its campaigns is running and has opened its stage.
pub async fn next_for(
    auth: &AuthService,
    device_id: &str,
) -> Result<Option<(String, String)>, StoreError> {
    let r = sqlx::query(
        "SELECT c.id, c.firmware_id FROM campaign_devices cd JOIN campaigns c ON c.id = cd.campaign_id \
         WHERE cd.device_id = $1 AND c.state = 'running' AND cd.stage <= c.stage \
         AND cd.state IN ('pending', 'offered', 'downloading', 'installed') ORDER BY c.created LIMIT 1",
    )
    .bind(device_id)
    .fetch_optional(&auth.registry.store.pool)
    .await?;
    let Some(r) = r else { return Ok(None) };
    let (c, f): (String, String) = (r.try_get("id")?, r.try_get("firmware_id")?);
    sqlx::query("UPDATE campaign_devices SET state = 'offered', updated = $1 WHERE campaign_id = $2 AND device_id = $3 AND state = 'pending'")
        .bind(now())
        .bind(&c)
        .bind(device_id)
        .execute(&auth.registry.store.pool)
        .await?;
    Ok(Some((c, f)))
}

/// Records a device's progress; on a final state, stops the campaign if
/// the stage's failure rate crosses the threshold, or opens the next stage
/// (or completes) once the stage is done.
pub async fn report(
    auth: &AuthService,
    device_id: &str,
    campaign_id: &str,
    state: &str,
    detail: &str,
) -> Result<bool, StoreError> {
    if !["downloading", "installed", "succeeded", "failed"].contains(&state) {
        return Ok(false);
    }
    let pool = &auth.registry.store.pool;
    let n = sqlx::query(
        "UPDATE campaign_devices SET state = $1, detail = $2, updated = $3 \
         WHERE campaign_id = $4 AND device_id = $5 AND state NOT IN ('succeeded', 'failed')",
    )
    .bind(state)
    .bind(detail)
    .bind(now())
    .bind(campaign_id)
    .bind(device_id)
    .execute(pool)
    .await?
    .rows_affected();
    if n == 0 {
        return Ok(false);
    }
    if state == "succeeded" {
        sqlx::query(
            "UPDATE devices SET firmware_version = (SELECT f.version FROM firmware f JOIN campaigns c ON c.firmware_id = f.id WHERE c.id = $1) WHERE id = $2",
        )
        .bind(campaign_id)
        .bind(device_id)
        .execute(pool)
        .await?;
    }
    if state == "succeeded" || state == "failed" {
        evaluate(auth, campaign_id).await?;
    }
    Ok(true)
}

async fn evaluate(auth: &AuthService, campaign_id: &str) -> Result<(), StoreError> {
    let pool = &auth.registry.store.pool;
    let c = sqlx::query("SELECT stage, stages, threshold, state FROM campaigns WHERE id = $1")
        .bind(campaign_id)
        .fetch_one(pool)
        .await?;
    let (stage, stages, threshold, state): (i64, i64, i64, String) = (
        c.try_get("stage")?,
        c.try_get("stages")?,
        c.try_get("threshold")?,
        c.try_get("state")?,
    );
    if state != "running" {
        return Ok(());
    }
    let counts = sqlx::query(
        "SELECT state, COUNT(*) AS n FROM campaign_devices WHERE campaign_id = $1 AND stage <= $2 GROUP BY state",
    )
    .bind(campaign_id)
    .bind(stage)
    .fetch_all(pool)
    .await?;
    let (mut failed, mut done, mut total) = (0i64, 0i64, 0i64);
    for r in counts {
        let s: String = r.try_get("state")?;
        let n: i64 = r.try_get("n")?;
        total += n;
        if s == "failed" {
            failed += n;
        }
        if s == "failed" || s == "succeeded" {
            done += n;
        }
    }
    // The failure rate over every device of the open stages: a few early
    // failures in a large stage do not stop it, enough of them do.
    if failed * 100 > threshold * total {
        let why = format!(
            "stopped at stage {}: {failed} of {total} devices failed (threshold {threshold}%)",
            stage + 1
        );
        sqlx::query("UPDATE campaigns SET state = 'stopped', detail = $1 WHERE id = $2")
            .bind(&why)
            .bind(campaign_id)
            .execute(pool)
            .await?;
        auth.registry
            .store
            .audit(None, "campaign-stop", campaign_id, "stopped", &why)
            .await?;
        return Ok(());
    }
    if done == total {
        let (next, st) = if stage + 1 >= stages {
            (stage, "completed")
        } else {
            (stage + 1, "running")
        };
        sqlx::query("UPDATE campaigns SET stage = $1, state = $2 WHERE id = $3")
            .bind(next)
            .bind(st)
            .bind(campaign_id)
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// A campaign's progress, in the tenant.
pub async fn progress(
    auth: &AuthService,
    tenant_id: &str,
    campaign_id: &str,
) -> Result<Option<Progress>, StoreError> {
    let pool = &auth.registry.store.pool;
    let Some(c) = sqlx::query(
        "SELECT stage, stages, state, detail FROM campaigns WHERE id = $1 AND tenant_id = $2",
    )
    .bind(campaign_id)
    .bind(tenant_id)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let mut devices = std::collections::BTreeMap::new();
    for r in sqlx::query(
        "SELECT state, COUNT(*) AS n FROM campaign_devices WHERE campaign_id = $1 GROUP BY state",
    )
    .bind(campaign_id)
    .fetch_all(pool)
    .await?
    {
        devices.insert(r.try_get("state")?, r.try_get("n")?);
    }
    Ok(Some(Progress {
        state: c.try_get("state")?,
        stage: c.try_get("stage")?,
        stages: c.try_get("stages")?,
        devices,
        detail: c.try_get("detail")?,
    }))
}
