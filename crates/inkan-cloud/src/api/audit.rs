//! The tenant's audit log.

use super::*;

/// One audit entry.
#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct AuditView {
    /// Nanoseconds since the epoch.
    pub time: i64,
    /// Kind.
    pub kind: String,
    /// Subject.
    pub subject: String,
    /// ok, refused, denied…
    pub outcome: String,
    /// Detail.
    pub detail: String,
}

#[utoipa::path(get, path = "/v1/audit", params(("limit" = Option<i64>, Query)), responses((status = 200, body = [AuditView])))]
pub(super) async fn audit(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(p): Query<Page>,
) -> ApiResult<Vec<AuditView>> {
    let c = caller(&st, &headers, Role::Viewer, "GET /v1/audit").await?;
    let rows = st
        .auth
        .registry
        .store
        .audit_in(&c.tenant_id, p.limit.unwrap_or(100).clamp(1, 1000))
        .await?;
    let out: Vec<AuditView> = rows
        .into_iter()
        .map(|(time, kind, subject, outcome, detail)| AuditView {
            time,
            kind,
            subject,
            outcome,
            detail,
        })
        .collect();
    Ok(Json(out))
}
