//! API tokens.

use super::*;

/// A token request.
#[derive(Deserialize, ToSchema, Debug)]
pub struct TokenBody {
    /// The role of the new token.
    pub role: Role,
}

#[utoipa::path(post, path = "/v1/tokens", request_body = TokenBody, responses((status = 200, description = "{\"token\": …} shown once")))]
pub(super) async fn new_token(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Json(b): Json<TokenBody>,
) -> ApiResult<serde_json::Value> {
    let c = caller(&st, &headers, Role::Admin, "POST /v1/tokens").await?;
    let t = create_token(&st.auth.registry.store, &c.tenant_id, b.role).await?;
    Ok(Json(serde_json::json!({ "token": t })))
}
