//! Commands to devices.

use super::*;

/// A command to issue.
#[derive(Deserialize, ToSchema, Debug)]
pub struct CommandBody {
    /// One device (id)...
    pub device: Option<String>,
    /// ...or every active device of a family (id).
    pub family: Option<String>,
    /// The action, e.g. "open".
    pub action: String,
    /// Arguments, hex (at most 512 bytes).
    pub args_hex: Option<String>,
    /// Seconds until the command expires (default 300).
    pub ttl_secs: Option<i64>,
}

/// A command, as the API shows it.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
pub struct CommandView {
    /// Identifier.
    pub id: String,
    /// Device id.
    pub device: String,
    /// Action.
    pub action: String,
    /// queued, delivered, succeeded, failed, refused or expired.
    pub state: String,
    /// Expiry (s since the epoch).
    pub expires: i64,
    /// First delivery (s).
    pub delivered: Option<i64>,
    /// Finished (s).
    pub finished: Option<i64>,
    /// The device's report.
    pub result: Option<String>,
}

/// Query of `GET /v1/commands`.
#[derive(Deserialize, ToSchema, Debug)]
pub struct CommandsQuery {
    /// Only this device (id).
    pub device: Option<String>,
    /// Most entries (default 100).
    pub limit: Option<i64>,
}

#[utoipa::path(post, path = "/v1/commands", request_body = CommandBody, responses((status = 200, body = [CommandView]), (status = 400), (status = 404)))]
pub(super) async fn issue_command(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Json(b): Json<CommandBody>,
) -> ApiResult<Vec<CommandView>> {
    let c = caller(&st, &headers, Role::Operator, "POST /v1/commands").await?;
    let store = &st.auth.registry.store;
    let devices = match (&b.device, &b.family) {
        (Some(id), None) => vec![store
            .device(id)
            .await?
            .filter(|d| d.tenant_id == c.tenant_id && crate::lifecycle::may_authenticate(d.state))
            .ok_or_else(not_found)?],
        (None, Some(fam)) => store.devices_of_family(&c.tenant_id, fam).await?,
        _ => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "give exactly one of device and family".into(),
            ))
        }
    };
    let args = match &b.args_hex {
        Some(h) => hex::decode(h)
            .map_err(|_| ApiError(StatusCode::BAD_REQUEST, "args_hex is not hex".into()))?,
        None => Vec::new(),
    };
    let issued = crate::commands::issue(
        &st.auth,
        &c.tenant_id,
        &devices,
        &b.action,
        &args,
        b.ttl_secs.unwrap_or(300),
    )
    .await
    .map_err(|e| match e {
        crate::commands::IssueError::Store(s) => ApiError::from(s),
        crate::commands::IssueError::NoTarget => ApiError(StatusCode::NOT_FOUND, e.to_string()),
        other => ApiError(StatusCode::BAD_REQUEST, other.to_string()),
    })?;
    let ids: std::collections::HashSet<String> = issued.into_iter().map(|(id, _)| id).collect();
    let rows = store
        .commands(
            &c.tenant_id,
            None,
            i64::try_from(ids.len()).unwrap_or(0) + 1000,
        )
        .await?;
    Ok(Json(
        rows.into_iter()
            .filter(|r| ids.contains(&r.id))
            .map(command_view)
            .collect(),
    ))
}

pub(super) fn command_view(r: crate::store::CommandRow) -> CommandView {
    CommandView {
        id: r.id,
        device: r.device_id,
        action: r.action,
        state: r.state.as_str().to_string(),
        expires: r.expires,
        delivered: r.delivered,
        finished: r.finished,
        result: r.result,
    }
}

#[utoipa::path(get, path = "/v1/commands", params(("device" = Option<String>, Query), ("limit" = Option<i64>, Query)), responses((status = 200, body = [CommandView])))]
pub(super) async fn list_commands(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(q): Query<CommandsQuery>,
) -> ApiResult<Vec<CommandView>> {
    let c = caller(&st, &headers, Role::Viewer, "GET /v1/commands").await?;
    let rows = st
        .auth
        .registry
        .store
        .commands(
            &c.tenant_id,
            q.device.as_deref(),
            q.limit.unwrap_or(100).clamp(1, 1000),
        )
        .await?;
    Ok(Json(rows.into_iter().map(command_view).collect()))
}
