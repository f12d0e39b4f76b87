//! Usage reported by devices, per device and per family, and each family's
//! alert level.

use super::*;

/// A family's alert level.
#[derive(Deserialize, ToSchema, Debug)]
pub struct UsageAlertBody {
    /// Reports below this many units left raise an alert in the audit log
    /// (absent or null: no alert).
    pub below: Option<u32>,
}

#[utoipa::path(get, path = "/v1/devices/{id}/usage", responses((status = 200, body = crate::store::UsageRow), (status = 404)))]
pub(super) async fn device_usage(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<crate::store::UsageRow> {
    let c = caller(&st, &headers, Role::Viewer, "GET /v1/devices/{id}/usage").await?;
    let (tenant, who) = actor(&c);
    let u = crate::usage::device_usage(
        &st.auth,
        crate::devices::Actor {
            tenant_id: &tenant,
            who: &who,
        },
        &id,
    )
    .await?
    .ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "the device has reported no usage".into(),
        )
    })?;
    Ok(Json(u))
}

#[utoipa::path(get, path = "/v1/families/{id}/usage", responses((status = 200, body = crate::usage::FamilyUsage), (status = 404)))]
pub(super) async fn family_usage(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<crate::usage::FamilyUsage> {
    let c = caller(&st, &headers, Role::Viewer, "GET /v1/families/{id}/usage").await?;
    let (tenant, who) = actor(&c);
    let u = crate::usage::family_usage(
        &st.auth,
        crate::devices::Actor {
            tenant_id: &tenant,
            who: &who,
        },
        &id,
    )
    .await?;
    Ok(Json(u))
}

#[utoipa::path(put, path = "/v1/families/{id}/usage-alert", request_body = UsageAlertBody, responses((status = 200, body = crate::usage::FamilyUsage), (status = 404)))]
pub(super) async fn set_usage_alert(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(b): Json<UsageAlertBody>,
) -> ApiResult<crate::usage::FamilyUsage> {
    let c = caller(
        &st,
        &headers,
        Role::Operator,
        "PUT /v1/families/{id}/usage-alert",
    )
    .await?;
    let (tenant, who) = actor(&c);
    let a = crate::devices::Actor {
        tenant_id: &tenant,
        who: &who,
    };
    crate::usage::set_alert(&st.auth, a, &id, b.below).await?;
    Ok(Json(crate::usage::family_usage(&st.auth, a, &id).await?))
}
