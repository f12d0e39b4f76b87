//! Update campaigns and their devices' progress.

#[allow(unused_imports)]
use super::*;
use crate::campaigns::{CampaignState, UpdateState};
use std::collections::BTreeMap;

impl Store {
    /// The family of a tenant's firmware.
    pub async fn firmware_family(
        &self,
        tenant_id: &str,
        firmware_id: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query("SELECT family_id FROM firmware WHERE id = $1 AND tenant_id = $2")
                .bind(firmware_id)
                .bind(tenant_id)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get("family_id"))
                .transpose()?,
        )
    }

    /// Inserts a running campaign and its devices, each with its stage, in
    /// one transaction.
    pub async fn insert_campaign(
        &self,
        id: &str,
        tenant_id: &str,
        firmware_id: &str,
        stages: i64,
        threshold: i64,
        devices: &[(String, i64)],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO campaigns (id, tenant_id, firmware_id, stages, stage, threshold, state, created) \
             VALUES ($1, $2, $3, $4, 0, $5, $6, $7)",
        )
        .bind(id)
        .bind(tenant_id)
        .bind(firmware_id)
        .bind(stages)
        .bind(threshold)
        .bind(CampaignState::Running.as_str())
        .bind(now())
        .execute(&mut *tx)
        .await?;
        for (d, stage) in devices {
            sqlx::query(
                "INSERT INTO campaign_devices (campaign_id, device_id, stage, state, updated) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(d)
            .bind(*stage)
            .bind(UpdateState::Pending.as_str())
            .bind(now())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The update a device should take now, marked offered: (campaign id,
    /// firmware id), if one of its campaigns is running and has opened its
    /// stage.
    pub async fn offer_update(
        &self,
        device_id: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let r = sqlx::query(
            "SELECT c.id, c.firmware_id FROM campaign_devices cd JOIN campaigns c ON c.id = cd.campaign_id \
             WHERE cd.device_id = $1 AND c.state = 'running' AND cd.stage <= c.stage \
             AND cd.state IN ('pending', 'offered', 'downloading', 'installed') ORDER BY c.created LIMIT 1",
        )
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = r else { return Ok(None) };
        let (c, f): (String, String) = (r.try_get("id")?, r.try_get("firmware_id")?);
        sqlx::query(
            "UPDATE campaign_devices SET state = $1, updated = $2 WHERE campaign_id = $3 AND device_id = $4 AND state = 'pending'",
        )
        .bind(UpdateState::Offered.as_str())
        .bind(now())
        .bind(&c)
        .bind(device_id)
        .execute(&self.pool)
        .await?;
        Ok(Some((c, f)))
    }

    /// Records a device's progress in a campaign unless it already ended;
    /// a success also records the installed version. False when nothing
    /// changed.
    pub async fn report_update(
        &self,
        campaign_id: &str,
        device_id: &str,
        state: UpdateState,
        detail: &str,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE campaign_devices SET state = $1, detail = $2, updated = $3 \
             WHERE campaign_id = $4 AND device_id = $5 AND state NOT IN ('succeeded', 'failed')",
        )
        .bind(state.as_str())
        .bind(detail)
        .bind(now())
        .bind(campaign_id)
        .bind(device_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n > 0 && state == UpdateState::Succeeded {
            sqlx::query(
                "UPDATE devices SET firmware_version = (SELECT f.version FROM firmware f JOIN campaigns c ON c.firmware_id = f.id WHERE c.id = $1) WHERE id = $2",
            )
            .bind(campaign_id)
            .bind(device_id)
            .execute(&self.pool)
            .await?;
        }
        Ok(n > 0)
    }

    /// A campaign's (open stage, stages, threshold %, state).
    pub async fn campaign(
        &self,
        campaign_id: &str,
    ) -> Result<(i64, i64, i64, CampaignState), StoreError> {
        let c = sqlx::query("SELECT stage, stages, threshold, state FROM campaigns WHERE id = $1")
            .bind(campaign_id)
            .fetch_one(&self.pool)
            .await?;
        let s: String = c.try_get("state")?;
        Ok((
            c.try_get("stage")?,
            c.try_get("stages")?,
            c.try_get("threshold")?,
            CampaignState::parse(&s)
                .ok_or_else(|| StoreError::Corrupt(format!("campaign state {s:?}")))?,
        ))
    }

    /// Devices per update state, over the stages up to `stage` (all when
    /// None).
    pub async fn update_counts(
        &self,
        campaign_id: &str,
        stage: Option<i64>,
    ) -> Result<BTreeMap<String, i64>, StoreError> {
        let mut out = BTreeMap::new();
        for r in sqlx::query(
            "SELECT state, COUNT(*) AS n FROM campaign_devices WHERE campaign_id = $1 AND stage <= $2 GROUP BY state",
        )
        .bind(campaign_id)
        .bind(stage.unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?
        {
            out.insert(r.try_get("state")?, r.try_get("n")?);
        }
        Ok(out)
    }

    /// Sets a campaign's open stage and state, with why it stopped.
    pub async fn set_campaign(
        &self,
        campaign_id: &str,
        stage: i64,
        state: CampaignState,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE campaigns SET stage = $1, state = $2, detail = COALESCE($3, detail) WHERE id = $4",
        )
        .bind(stage)
        .bind(state.as_str())
        .bind(detail.map(str::to_string))
        .bind(campaign_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A tenant's campaign: (open stage, stages, state, detail).
    pub async fn campaign_in(
        &self,
        tenant_id: &str,
        campaign_id: &str,
    ) -> Result<Option<(i64, i64, CampaignState, Option<String>)>, StoreError> {
        let Some(c) = sqlx::query(
            "SELECT stage, stages, state, detail FROM campaigns WHERE id = $1 AND tenant_id = $2",
        )
        .bind(campaign_id)
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let s: String = c.try_get("state")?;
        Ok(Some((
            c.try_get("stage")?,
            c.try_get("stages")?,
            CampaignState::parse(&s)
                .ok_or_else(|| StoreError::Corrupt(format!("campaign state {s:?}")))?,
            c.try_get("detail")?,
        )))
    }
}
