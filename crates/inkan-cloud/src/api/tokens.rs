//! API tokens: created with a role and an optional lifetime, listed (never
//! their secrets), revoked; an expired or revoked token is refused like an
//! unknown one. Every change is audited.

use super::*;

/// A token request.
#[derive(Deserialize, ToSchema, Debug)]
pub struct TokenBody {
    /// The role of the new token.
    pub role: Role,
    /// Seconds it stays valid (none: until revoked).
    #[serde(default)]
    pub ttl_secs: Option<i64>,
}

#[utoipa::path(post, path = "/v1/tokens", request_body = TokenBody, responses((status = 200, description = "{\"token\": …} shown once")))]
pub(super) async fn new_token(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Json(b): Json<TokenBody>,
) -> ApiResult<serde_json::Value> {
    let c = caller(&st, &headers, Role::Admin, "POST /v1/tokens").await?;
    if b.ttl_secs.is_some_and(|t| t <= 0 || t > 366 * 24 * 3600) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "ttl_secs must be 1 to 31622400 (366 days)".into(),
        ));
    }
    let t = create_token_for(&st.auth.registry.store, &c.tenant_id, b.role, b.ttl_secs).await?;
    Ok(Json(serde_json::json!({ "token": t })))
}

#[utoipa::path(get, path = "/v1/tokens", responses((status = 200, body = [crate::store::TokenRow])))]
pub(super) async fn list_tokens(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> ApiResult<Vec<crate::store::TokenRow>> {
    let c = caller(&st, &headers, Role::Admin, "GET /v1/tokens").await?;
    Ok(Json(st.auth.registry.store.tokens_of(&c.tenant_id).await?))
}

#[utoipa::path(post, path = "/v1/tokens/{id}/revoke", responses((status = 200), (status = 404)))]
pub(super) async fn revoke_token(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<serde_json::Value> {
    let c = caller(&st, &headers, Role::Admin, "POST /v1/tokens/{id}/revoke").await?;
    let store = &st.auth.registry.store;
    if !store.revoke_token(&c.tenant_id, &id).await? {
        return Err(not_found());
    }
    store
        .audit(
            Some(&c.tenant_id),
            "token",
            &id,
            "revoked",
            &format!("by token {}", c.token_id),
        )
        .await?;
    Ok(Json(serde_json::json!({ "revoked": id })))
}
