//! Firmware uploads and update campaigns.

use super::*;

/// A firmware upload.
#[derive(Deserialize, ToSchema, Debug)]
pub struct FirmwareBody {
    /// The family it is for (id).
    pub family: String,
    /// The OEM-signed manifest (COSE_Sign1), hex.
    pub manifest_hex: String,
    /// The image, hex.
    pub image_hex: String,
}

#[utoipa::path(post, path = "/v1/firmware", request_body = FirmwareBody, responses((status = 200, description = "{\"id\": …}"), (status = 400), (status = 404)))]
pub(super) async fn upload_firmware(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Json(b): Json<FirmwareBody>,
) -> ApiResult<serde_json::Value> {
    let c = caller(&st, &headers, Role::Operator, "POST /v1/firmware").await?;
    let bad = |what: &str| ApiError(StatusCode::BAD_REQUEST, format!("{what} is not hex"));
    let manifest = hex::decode(&b.manifest_hex).map_err(|_| bad("manifest_hex"))?;
    let image = hex::decode(&b.image_hex).map_err(|_| bad("image_hex"))?;
    let id = crate::firmware::upload(&st.auth, &c.tenant_id, &b.family, &manifest, &image)
        .await
        .map_err(|e| match e {
            crate::firmware::UploadError::UnknownFamily => not_found(),
            crate::firmware::UploadError::Store(s) => ApiError::from(s),
            other => ApiError(StatusCode::BAD_REQUEST, other.to_string()),
        })?;
    Ok(Json(serde_json::json!({ "id": id })))
}

/// A campaign to start.
#[derive(Deserialize, ToSchema, Debug)]
pub struct CampaignBody {
    /// The firmware (id, uploaded for a family).
    pub firmware: String,
    /// Only these devices (ids)...
    pub devices: Option<Vec<String>>,
    /// ...or this percentage of the family (default: all of it).
    pub percent: Option<u8>,
    /// Cumulative stage percentages ending at 100 (default [100]).
    pub stages: Option<Vec<u8>>,
    /// Stop when more than this percentage of a stage's finished devices
    /// failed (default 20).
    pub failure_threshold: Option<u8>,
}

#[utoipa::path(post, path = "/v1/campaigns", request_body = CampaignBody, responses((status = 200, description = "{\"id\": …}"), (status = 400), (status = 404)))]
pub(super) async fn create_campaign(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Json(b): Json<CampaignBody>,
) -> ApiResult<serde_json::Value> {
    let c = caller(&st, &headers, Role::Operator, "POST /v1/campaigns").await?;
    let target = match (b.devices, b.percent) {
        (Some(d), None) => crate::campaigns::Target::Devices(d),
        (None, Some(p)) => crate::campaigns::Target::Percent(p),
        (None, None) => crate::campaigns::Target::Family,
        _ => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "give devices or percent, not both".into(),
            ))
        }
    };
    let id = crate::campaigns::create(
        &st.auth,
        &c.tenant_id,
        &b.firmware,
        target,
        &b.stages.unwrap_or_else(|| vec![100]),
        b.failure_threshold.unwrap_or(20),
    )
    .await
    .map_err(|e| match e {
        crate::campaigns::CampaignError::UnknownFirmware => not_found(),
        crate::campaigns::CampaignError::Store(s) => ApiError::from(s),
        other => ApiError(StatusCode::BAD_REQUEST, other.to_string()),
    })?;
    Ok(Json(serde_json::json!({ "id": id })))
}

#[utoipa::path(get, path = "/v1/campaigns/{id}", responses((status = 200, description = "state, stage, stages, devices per state, detail"), (status = 404)))]
pub(super) async fn campaign_progress(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<crate::campaigns::Progress> {
    let c = caller(&st, &headers, Role::Viewer, "GET /v1/campaigns/{id}").await?;
    crate::campaigns::progress(&st.auth, &c.tenant_id, &id)
        .await?
        .map(Json)
        .ok_or_else(not_found)
}
