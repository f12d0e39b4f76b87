//! Transfers of ownership between tenants.

use super::*;

/// A transfer offer.
#[derive(Deserialize, ToSchema, Debug)]
pub struct TransferOfferBody {
    /// The buyer's tenant name.
    pub to: String,
    /// The devices to hand over.
    pub devices: Vec<String>,
    /// How long the buyer has to claim it (default 7 days, at most 30).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// A signed transfer document.
#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct TransferDocument {
    /// The COSE_Sign1, hex.
    pub transfer_hex: String,
}

#[utoipa::path(post, path = "/v1/transfers", request_body = TransferOfferBody, responses((status = 200, body = TransferDocument)))]
pub(super) async fn offer_transfer(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Json(b): Json<TransferOfferBody>,
) -> ApiResult<TransferDocument> {
    let c = caller(&st, &headers, Role::Admin, "POST /v1/transfers").await?;
    let (tenant, who) = actor(&c);
    let seller = st
        .auth
        .registry
        .store
        .tenant_name(&tenant)
        .await?
        .ok_or_else(not_found)?;
    let doc = crate::devices::offer_transfer(
        &st.auth,
        crate::devices::Actor {
            tenant_id: &tenant,
            who: &who,
        },
        &seller,
        &b.to,
        &b.devices,
        b.ttl_secs.unwrap_or(7 * 24 * 3600),
    )
    .await?;
    Ok(Json(TransferDocument {
        transfer_hex: hex::encode(doc),
    }))
}

#[utoipa::path(post, path = "/v1/transfers/claim", request_body = TransferDocument, responses((status = 200)))]
pub(super) async fn claim_transfer(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Json(b): Json<TransferDocument>,
) -> ApiResult<serde_json::Value> {
    let c = caller(&st, &headers, Role::Admin, "POST /v1/transfers/claim").await?;
    let (tenant, who) = actor(&c);
    let buyer = st
        .auth
        .registry
        .store
        .tenant_name(&tenant)
        .await?
        .ok_or_else(not_found)?;
    let doc = hex::decode(b.transfer_hex.trim())
        .map_err(|_| ApiError(StatusCode::BAD_REQUEST, "transfer_hex is not hex".into()))?;
    let ids = crate::devices::claim_transfer(
        &st.auth,
        crate::devices::Actor {
            tenant_id: &tenant,
            who: &who,
        },
        &buyer,
        &doc,
    )
    .await?;
    Ok(Json(serde_json::json!({ "devices": ids })))
}
