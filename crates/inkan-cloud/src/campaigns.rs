//! Update campaigns: which devices get a firmware, in which stage, and the
//! automatic stop when a stage's failure rate crosses the threshold.
//! Devices learn of their update by polling `firmware/next` and report
//! progress to `firmware/report`, both inside OSCORE.

use crate::store::{new_id, StoreError};
use crate::App;

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

/// The state of a campaign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CampaignState {
    /// Offering its open stages.
    Running,
    /// Stopped by the failure threshold.
    Stopped,
    /// Every stage done.
    Completed,
}

impl CampaignState {
    /// The store's text.
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignState::Running => "running",
            CampaignState::Stopped => "stopped",
            CampaignState::Completed => "completed",
        }
    }

    /// From the store's text.
    pub fn parse(s: &str) -> Option<CampaignState> {
        [
            CampaignState::Running,
            CampaignState::Stopped,
            CampaignState::Completed,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// Where one device is in a campaign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateState {
    /// Its stage is not open yet, or it has not polled.
    Pending,
    /// Told of the update.
    Offered,
    /// Downloading.
    Downloading,
    /// Installed, in its trial boot.
    Installed,
    /// Confirmed.
    Succeeded,
    /// Failed.
    Failed,
}

impl UpdateState {
    /// The store's text (and the device's report).
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateState::Pending => "pending",
            UpdateState::Offered => "offered",
            UpdateState::Downloading => "downloading",
            UpdateState::Installed => "installed",
            UpdateState::Succeeded => "succeeded",
            UpdateState::Failed => "failed",
        }
    }

    /// From the store's text.
    pub fn parse(s: &str) -> Option<UpdateState> {
        [
            UpdateState::Pending,
            UpdateState::Offered,
            UpdateState::Downloading,
            UpdateState::Installed,
            UpdateState::Succeeded,
            UpdateState::Failed,
        ]
        .into_iter()
        .find(|u| u.as_str() == s)
    }

    /// A final state.
    pub fn is_final(self) -> bool {
        matches!(self, UpdateState::Succeeded | UpdateState::Failed)
    }
}

/// Creates a campaign: the targets are split into `stages` cumulative
/// percentages (e.g. [10, 50, 100]); it stops when the failed devices are
/// more than `threshold_pct` percent of the devices of the open stages.
pub async fn create(
    auth: &App,
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
    let store = &auth.registry.store;
    let fam = store
        .firmware_family(tenant_id, firmware_id)
        .await?
        .ok_or(CampaignError::UnknownFirmware)?;
    let mut devices: Vec<String> = store
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
    let n = devices.len();
    let staged: Vec<(String, i64)> = devices
        .into_iter()
        .enumerate()
        .map(|(k, d)| {
            // The first stage whose cumulative share covers this device.
            let stage = stages
                .iter()
                .position(|p| k < (n * usize::from(*p)).div_ceil(100))
                .unwrap_or(stages.len() - 1);
            (d, i64::try_from(stage).unwrap_or(0))
        })
        .collect();
    store
        .insert_campaign(
            &id,
            tenant_id,
            firmware_id,
            i64::try_from(stages.len()).unwrap_or(1),
            i64::from(threshold_pct),
            &staged,
        )
        .await?;
    store
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
pub async fn next_for(auth: &App, device_id: &str) -> Result<Option<(String, String)>, StoreError> {
    auth.registry.store.offer_update(device_id).await
}

/// Records a device's progress; on a final state, stops the campaign if
/// the stage's failure rate crosses the threshold, or opens the next stage
/// (or completes) once the stage is done.
pub async fn report(
    auth: &App,
    device_id: &str,
    campaign_id: &str,
    state: &str,
    detail: &str,
) -> Result<bool, StoreError> {
    let Some(state) = UpdateState::parse(state)
        .filter(|s| !matches!(s, UpdateState::Pending | UpdateState::Offered))
    else {
        return Ok(false);
    };
    if !auth
        .registry
        .store
        .report_update(campaign_id, device_id, state, detail)
        .await?
    {
        return Ok(false);
    }
    if state.is_final() {
        evaluate(auth, campaign_id).await?;
    }
    Ok(true)
}

async fn evaluate(auth: &App, campaign_id: &str) -> Result<(), StoreError> {
    let store = &auth.registry.store;
    let (stage, stages, threshold, state) = store.campaign(campaign_id).await?;
    if state != CampaignState::Running {
        return Ok(());
    }
    let counts = store.update_counts(campaign_id, Some(stage)).await?;
    let (mut failed, mut done, mut total) = (0i64, 0i64, 0i64);
    for (s, n) in counts {
        total += n;
        let s = UpdateState::parse(&s);
        if s == Some(UpdateState::Failed) {
            failed += n;
        }
        if s.is_some_and(UpdateState::is_final) {
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
        store
            .set_campaign(campaign_id, stage, CampaignState::Stopped, Some(&why))
            .await?;
        store
            .audit(None, "campaign-stop", campaign_id, "stopped", &why)
            .await?;
        return Ok(());
    }
    if done == total {
        let (next, st) = if stage + 1 >= stages {
            (stage, CampaignState::Completed)
        } else {
            (stage + 1, CampaignState::Running)
        };
        store.set_campaign(campaign_id, next, st, None).await?;
    }
    Ok(())
}

/// A campaign's progress, in the tenant.
pub async fn progress(
    auth: &App,
    tenant_id: &str,
    campaign_id: &str,
) -> Result<Option<Progress>, StoreError> {
    let store = &auth.registry.store;
    let Some((stage, stages, state, detail)) = store.campaign_in(tenant_id, campaign_id).await?
    else {
        return Ok(None);
    };
    Ok(Some(Progress {
        state: state.as_str().to_string(),
        stage,
        stages,
        devices: store.update_counts(campaign_id, None).await?,
        detail,
    }))
}
