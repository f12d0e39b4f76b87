//! Devices: listing, registration, lifecycle actions, decommissioning,
//! credentials and history.

use super::*;

/// A device, as the API shows it.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct DeviceView {
    /// Identifier.
    pub id: String,
    /// Chip serial.
    pub serial: String,
    /// Lifecycle state: manufactured, registered, active, suspended,
    /// revoked or decommissioned.
    pub status: String,
    /// individual, manifest, family or transfer.
    pub enrolled_by: String,
    /// A decommissioned device told to erase its secrets, not yet
    /// confirmed.
    #[serde(default)]
    pub erase_pending: bool,
    /// The family, if known.
    pub family_id: Option<String>,
    /// The firmware version its last successful update installed.
    #[serde(default)]
    pub firmware_version: Option<String>,
}

/// A certificate in PEM or base16 DER.
#[derive(Deserialize, ToSchema, Debug)]
pub struct CertificateBody {
    /// The certificate (PEM).
    pub certificate_pem: String,
}

/// A lifecycle action through the API and the role it needs.
pub(super) fn lifecycle_action(action: &str) -> Result<(Role, Action), ApiError> {
    match Action::parse(action) {
        Some(a @ (Action::Claim | Action::Suspend | Action::Resume)) => Ok((Role::Operator, a)),
        Some(a @ Action::Revoke) => Ok((Role::Admin, a)),
        _ => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("unknown action {action:?} (claim, suspend, resume, revoke)"),
        )),
    }
}

pub(super) fn device_view(d: crate::store::DeviceRow) -> DeviceView {
    DeviceView {
        id: d.id,
        serial: d.serial,
        status: d.state.as_str().to_string(),
        enrolled_by: d.enrolled_by,
        erase_pending: d.erase_pending,
        family_id: d.family_id,
        firmware_version: d.firmware_version,
    }
}

#[utoipa::path(get, path = "/v1/devices", params(("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query)), responses((status = 200, body = [DeviceView])))]
pub(super) async fn list_devices(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(p): Query<Page>,
) -> ApiResult<Vec<DeviceView>> {
    let c = caller(&st, &headers, Role::Viewer, "GET /v1/devices").await?;
    let rows = st
        .auth
        .registry
        .store
        .devices_in(
            &c.tenant_id,
            p.limit.unwrap_or(100).clamp(1, 1000),
            p.offset.unwrap_or(0).max(0),
        )
        .await?;
    Ok(Json(rows.into_iter().map(device_view).collect()))
}

#[utoipa::path(get, path = "/v1/devices/{id}", responses((status = 200, body = DeviceView), (status = 404)))]
pub(super) async fn get_device(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<DeviceView> {
    let c = caller(&st, &headers, Role::Viewer, "GET /v1/devices/{id}").await?;
    let d = st
        .auth
        .registry
        .store
        .device_in(&c.tenant_id, &id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(device_view(d)))
}

#[utoipa::path(post, path = "/v1/devices", request_body = CertificateBody, responses((status = 200, body = DeviceView)))]
pub(super) async fn register_device(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Json(b): Json<CertificateBody>,
) -> ApiResult<DeviceView> {
    let c = caller(&st, &headers, Role::Operator, "POST /v1/devices").await?;
    let id = st
        .auth
        .registry
        .register_device(&c.tenant_id, &cert_der(&b.certificate_pem)?)
        .await?;
    get_device(State(st), headers, Path(id)).await
}

#[utoipa::path(post, path = "/v1/devices/{id}/{action}", responses((status = 200, body = DeviceView), (status = 403), (status = 404)))]
pub(super) async fn device_action(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult<DeviceView> {
    let (need, action) = lifecycle_action(&action)?;
    let c = caller(
        &st,
        &headers,
        need,
        &format!("POST /v1/devices/{{id}}/{action}"),
    )
    .await?;
    let (tenant, who) = actor(&c);
    let d = crate::devices::act(
        &st.auth,
        crate::devices::Actor {
            tenant_id: &tenant,
            who: &who,
        },
        &id,
        action,
        "operator request",
    )
    .await?;
    Ok(Json(device_view(d)))
}

/// A decommissioning request.
#[derive(Deserialize, ToSchema, Debug, Default)]
pub struct DecommissionBody {
    /// Delete the device's readings too (kept by default).
    #[serde(default)]
    pub purge_readings: bool,
    /// Why (kept in the history).
    #[serde(default)]
    pub reason: Option<String>,
}

#[utoipa::path(post, path = "/v1/devices/{id}/decommission", request_body = DecommissionBody, responses((status = 200), (status = 404), (status = 409)))]
pub(super) async fn decommission_device(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(b): Json<DecommissionBody>,
) -> ApiResult<crate::devices::Decommissioned> {
    let c = caller(
        &st,
        &headers,
        Role::Admin,
        "POST /v1/devices/{id}/decommission",
    )
    .await?;
    let (tenant, who) = actor(&c);
    let r = crate::devices::decommission(
        &st.auth,
        crate::devices::Actor {
            tenant_id: &tenant,
            who: &who,
        },
        &id,
        b.purge_readings,
        b.reason.as_deref().unwrap_or("operator request"),
    )
    .await?;
    Ok(Json(r))
}

#[utoipa::path(get, path = "/v1/devices/{id}/history", responses((status = 200, body = [crate::store::HistoryEntry]), (status = 404)))]
pub(super) async fn device_history(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Vec<crate::store::HistoryEntry>> {
    let c = caller(&st, &headers, Role::Viewer, "GET /v1/devices/{id}/history").await?;
    let (tenant, who) = actor(&c);
    let h = crate::devices::history(
        &st.auth,
        crate::devices::Actor {
            tenant_id: &tenant,
            who: &who,
        },
        &id,
    )
    .await?;
    Ok(Json(h))
}

/// A credential, as the API shows it.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct CredentialView {
    /// Identifier.
    pub id: String,
    /// SHA-256 of the certificate, hex.
    pub fingerprint: String,
    /// issued, active, retired or revoked.
    pub state: String,
    /// Created (Unix seconds).
    pub created: i64,
    /// Last change (Unix seconds).
    pub changed: i64,
}

#[utoipa::path(get, path = "/v1/devices/{id}/credentials", responses((status = 200, body = [CredentialView]), (status = 404)))]
pub(super) async fn list_credentials(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Vec<CredentialView>> {
    let c = caller(
        &st,
        &headers,
        Role::Viewer,
        "GET /v1/devices/{id}/credentials",
    )
    .await?;
    let store = &st.auth.registry.store;
    let d = store
        .device_in(&c.tenant_id, &id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(
        store
            .credentials_of(&d.id)
            .await?
            .into_iter()
            .map(|c| CredentialView {
                id: c.id,
                fingerprint: c.fingerprint,
                state: c.state.as_str().into(),
                created: c.created,
                changed: c.changed,
            })
            .collect(),
    ))
}

#[utoipa::path(post, path = "/v1/devices/{id}/credentials", request_body = CertificateBody, responses((status = 200), (status = 404), (status = 409)))]
pub(super) async fn add_credential(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(b): Json<CertificateBody>,
) -> ApiResult<serde_json::Value> {
    let c = caller(
        &st,
        &headers,
        Role::Operator,
        "POST /v1/devices/{id}/credentials",
    )
    .await?;
    let (tenant, who) = actor(&c);
    let cid = crate::devices::add_credential(
        &st.auth,
        crate::devices::Actor {
            tenant_id: &tenant,
            who: &who,
        },
        &id,
        &cert_der(&b.certificate_pem)?,
    )
    .await?;
    Ok(Json(serde_json::json!({ "credential_id": cid })))
}

#[utoipa::path(post, path = "/v1/devices/{id}/credentials/{credential}/{action}", responses((status = 200), (status = 404)))]
pub(super) async fn end_credential(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((id, credential, action)): Path<(String, String, String)>,
) -> ApiResult<serde_json::Value> {
    let (need, to) = match action.as_str() {
        "retire" => (Role::Operator, crate::lifecycle::CredentialState::Retired),
        "revoke" => (Role::Admin, crate::lifecycle::CredentialState::Revoked),
        _ => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "a credential can be retired or revoked".into(),
            ))
        }
    };
    let c = caller(
        &st,
        &headers,
        need,
        "POST /v1/devices/{id}/credentials/{credential}",
    )
    .await?;
    let (tenant, who) = actor(&c);
    crate::devices::end_credential(
        &st.auth,
        crate::devices::Actor {
            tenant_id: &tenant,
            who: &who,
        },
        &id,
        &credential,
        to,
    )
    .await?;
    Ok(Json(
        serde_json::json!({ "credential_id": credential, "state": to.as_str() }),
    ))
}
