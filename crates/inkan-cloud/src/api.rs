//! The operator API (HTTP/JSON): every request carries a bearer token,
//! stored hashed, bound to one tenant and one role (viewer < operator <
//! admin); every endpoint checks both, and every use is audited. Another
//! tenant's objects answer 404, as if they did not exist.

use crate::lifecycle::Action;
use crate::registry::{pop_challenge, RegistryError};
use crate::store::{new_id, Store, StoreError};
use crate::AuthService;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use utoipa::{OpenApi, ToSchema};

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read only.
    Viewer,
    /// Register devices and families, suspend and reinstate.
    Operator,
    /// Everything, including revocation and tokens.
    Admin,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Creates a token for a tenant; returns the secret form `ink_<id>_<secret>`
/// (shown once; only its hash is kept).
pub async fn create_token(
    store: &Store,
    tenant_id: &str,
    role: Role,
) -> Result<String, StoreError> {
    let id = new_id();
    let mut secret = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut secret);
    let secret = hex::encode(secret);
    store
        .insert_token(
            &id,
            tenant_id,
            &hex::encode(sha2::Sha256::digest(secret.as_bytes())),
            role.as_str(),
        )
        .await?;
    store
        .audit(Some(tenant_id), "token", &id, "created", role.as_str())
        .await?;
    Ok(format!("ink_{id}_{secret}"))
}

/// The caller behind a valid token.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Tenant.
    pub tenant_id: String,
    /// Role.
    pub role: Role,
    /// Token id (for the audit log).
    pub token_id: String,
}

/// An API error, rendered as `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(_: StoreError) -> ApiError {
        // Database text never reaches a client.
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error: the store failed".into(),
        )
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> ApiError {
        let code = match &e {
            RegistryError::Duplicate
            | RegistryError::Lifecycle(_)
            | RegistryError::SerialTaken
            | RegistryError::IdentityTaken => StatusCode::CONFLICT,
            RegistryError::ForeignFamily | RegistryError::UnprovenIssuer => StatusCode::FORBIDDEN,
            RegistryError::UnknownFamily | RegistryError::UnknownDevice => StatusCode::NOT_FOUND,
            RegistryError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        if let RegistryError::Store(e) = e {
            return ApiError::from(e);
        }
        ApiError(code, e.to_string())
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// Shared state of the API.
pub struct ApiState {
    /// The authentication service (registry and store).
    pub auth: Arc<AuthService>,
}

async fn caller(
    st: &ApiState,
    headers: &HeaderMap,
    need: Role,
    what: &str,
) -> Result<Caller, ApiError> {
    let store = &st.auth.registry.store;
    let unauthorized = || {
        ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or invalid bearer token".into(),
        )
    };
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(unauthorized)?;
    let rest = token.strip_prefix("ink_").ok_or_else(unauthorized)?;
    let (id, secret) = rest.split_once('_').ok_or_else(unauthorized)?;
    let Some((tenant_id, hash, role)) = store.token(id).await? else {
        store
            .audit(None, "api", what, "denied", "unknown token")
            .await?;
        return Err(unauthorized());
    };
    let given = hex::encode(sha2::Sha256::digest(secret.as_bytes()));
    if !bool::from(given.as_bytes().ct_eq(hash.as_bytes())) {
        store
            .audit(
                None,
                "api",
                what,
                "denied",
                &format!("bad secret for token {id}"),
            )
            .await?;
        return Err(unauthorized());
    }
    let role = Role::parse(&role)
        .ok_or_else(|| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "bad role".into()))?;
    if role < need {
        store
            .audit(
                Some(&tenant_id),
                "api",
                what,
                "denied",
                &format!("token {id} is {}, needs {}", role.as_str(), need.as_str()),
            )
            .await?;
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("this needs the {} role", need.as_str()),
        ));
    }
    store
        .audit(Some(&tenant_id), "api", what, "ok", &format!("token {id}"))
        .await?;
    Ok(Caller {
        tenant_id,
        role,
        token_id: id.to_string(),
    })
}

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

/// A family, as the API shows it.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct FamilyView {
    /// Identifier.
    pub id: String,
    /// Name.
    pub name: String,
    /// Status.
    pub status: String,
}

/// Pagination.
#[derive(Deserialize, ToSchema, Debug)]
pub struct Page {
    /// Maximum items (default 100, at most 1000).
    pub limit: Option<i64>,
    /// Items to skip.
    pub offset: Option<i64>,
}

/// A certificate in PEM or base16 DER.
#[derive(Deserialize, ToSchema, Debug)]
pub struct CertificateBody {
    /// The certificate (PEM).
    pub certificate_pem: String,
}

/// A family registration.
#[derive(Deserialize, ToSchema, Debug)]
pub struct FamilyBody {
    /// Family name.
    pub name: String,
    /// The family CA certificate (PEM).
    pub certificate_pem: String,
    /// The family key's ECDSA signature (raw r||s, hex) over the challenge.
    pub proof_hex: String,
}

/// A manifest import.
#[derive(Deserialize, ToSchema, Debug)]
pub struct ManifestBody {
    /// The signed manifest (COSE_Sign1), hex.
    pub manifest_hex: String,
    /// The factory root certificate (PEM) it must verify against.
    pub root_pem: String,
}

/// A family CRL to import.
#[derive(Deserialize, ToSchema, Debug)]
pub struct CrlBody {
    /// The CRL signed by the family CA (PEM `X509 CRL`).
    pub crl_pem: String,
}

/// One entry of a family's revocation list.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct RevocationView {
    /// The certificate's serial number (hex).
    pub certificate_serial: String,
    /// The chip serial, when the device is known to the cloud.
    pub device_serial: Option<String>,
    /// `operator` (revoked in the cloud) or `crl N` (an imported CRL).
    pub source: String,
    /// When it entered the list (Unix seconds).
    pub time: i64,
}

/// A family's revocation list.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct RevocationList {
    /// Family id.
    pub family_id: String,
    /// Status of the family itself.
    pub family_status: String,
    /// The newest imported CRL's number.
    pub crl_number: Option<i64>,
    /// Revoked certificates.
    pub entries: Vec<RevocationView>,
}

/// A token request.
#[derive(Deserialize, ToSchema, Debug)]
pub struct TokenBody {
    /// The role of the new token.
    pub role: Role,
}

fn cert_der(pem: &str) -> Result<Vec<u8>, ApiError> {
    inkan_pki::pem_or_der("CERTIFICATE", pem.as_bytes())
        .ok()
        .and_then(|v| v.into_iter().next())
        .ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                "certificate_pem is not a PEM certificate".into(),
            )
        })
}

/// A lifecycle action through the API and the role it needs.
fn lifecycle_action(action: &str) -> Result<(Role, Action), ApiError> {
    match Action::parse(action) {
        Some(a @ (Action::Claim | Action::Suspend | Action::Resume)) => Ok((Role::Operator, a)),
        Some(a @ Action::Revoke) => Ok((Role::Admin, a)),
        _ => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("unknown action {action:?} (claim, suspend, resume, revoke)"),
        )),
    }
}

fn device_view(d: crate::store::DeviceRow) -> DeviceView {
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

fn actor(c: &Caller) -> (String, String) {
    (c.tenant_id.clone(), format!("token {}", c.token_id))
}

fn not_found() -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "no such object in this tenant".into(),
    )
}

#[utoipa::path(get, path = "/v1/devices", params(("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query)), responses((status = 200, body = [DeviceView])))]
async fn list_devices(
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
async fn get_device(
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
async fn register_device(
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
async fn device_action(
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
async fn decommission_device(
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
async fn device_history(
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
async fn list_credentials(
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
async fn add_credential(
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
async fn end_credential(
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
async fn offer_transfer(
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
async fn claim_transfer(
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

#[utoipa::path(get, path = "/v1/families", responses((status = 200, body = [FamilyView])))]
async fn list_families(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> ApiResult<Vec<FamilyView>> {
    let c = caller(&st, &headers, Role::Viewer, "GET /v1/families").await?;
    let fams = st.auth.registry.store.families().await?;
    Ok(Json(
        fams.into_iter()
            .filter(|f| f.tenant_id == c.tenant_id)
            .map(|f| FamilyView {
                id: f.id,
                name: f.name,
                status: f.state.as_str().into(),
            })
            .collect(),
    ))
}

#[utoipa::path(post, path = "/v1/families/challenge", request_body = CertificateBody, responses((status = 200, description = "{\"challenge_hex\": …}: sign it with the family key")))]
async fn family_challenge(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Json(b): Json<CertificateBody>,
) -> ApiResult<serde_json::Value> {
    let c = caller(&st, &headers, Role::Operator, "POST /v1/families/challenge").await?;
    Ok(Json(
        serde_json::json!({ "challenge_hex": hex::encode(pop_challenge(&c.tenant_id, &cert_der(&b.certificate_pem)?)) }),
    ))
}

#[utoipa::path(post, path = "/v1/families", request_body = FamilyBody, responses((status = 200, body = FamilyView)))]
async fn register_family(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Json(b): Json<FamilyBody>,
) -> ApiResult<FamilyView> {
    let c = caller(&st, &headers, Role::Operator, "POST /v1/families").await?;
    let proof = hex::decode(&b.proof_hex)
        .map_err(|_| ApiError(StatusCode::BAD_REQUEST, "proof_hex is not hex".into()))?;
    let id = st
        .auth
        .registry
        .register_family(
            &c.tenant_id,
            &b.name,
            &cert_der(&b.certificate_pem)?,
            &proof,
        )
        .await?;
    Ok(Json(FamilyView {
        id,
        name: b.name,
        status: "active".into(),
    }))
}

#[utoipa::path(post, path = "/v1/families/{id}/{action}", responses((status = 200, body = FamilyView), (status = 403), (status = 404)))]
async fn family_action(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult<FamilyView> {
    let (need, act) = lifecycle_action(&action)?;
    let c = caller(
        &st,
        &headers,
        need,
        &format!("POST /v1/families/{{id}}/{action}"),
    )
    .await?;
    let store = &st.auth.registry.store;
    let f = store
        .family_in(&c.tenant_id, &id)
        .await?
        .ok_or_else(not_found)?;
    let to = f
        .state
        .after(act)
        .map_err(|e| ApiError(StatusCode::CONFLICT, e.to_string()))?;
    store.set_family_state(&f.id, to).await?;
    store
        .audit(
            Some(&c.tenant_id),
            &format!("family-{action}"),
            &f.name,
            "ok",
            &format!("token {}", c.token_id),
        )
        .await?;
    Ok(Json(FamilyView {
        id: f.id,
        name: f.name,
        status: to.as_str().into(),
    }))
}

#[utoipa::path(get, path = "/v1/families/{id}/revocations", responses((status = 200, body = RevocationList), (status = 404)))]
async fn family_revocations(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<RevocationList> {
    let c = caller(
        &st,
        &headers,
        Role::Viewer,
        "GET /v1/families/{id}/revocations",
    )
    .await?;
    let store = &st.auth.registry.store;
    let f = store
        .family_in(&c.tenant_id, &id)
        .await?
        .ok_or_else(not_found)?;
    let entries = store
        .revocations(&f.id)
        .await?
        .into_iter()
        .map(|r| RevocationView {
            certificate_serial: r.cert_serial,
            device_serial: r.device_serial,
            source: r.source,
            time: r.time,
        })
        .collect();
    Ok(Json(RevocationList {
        crl_number: store.crl_number(&f.id).await?,
        family_id: f.id,
        family_status: f.state.as_str().into(),
        entries,
    }))
}

/// Whether a family's readings must be signed by the devices' chips.
#[derive(Deserialize, ToSchema, Debug)]
pub struct SignedReadingsBody {
    /// Required from now on.
    pub required: bool,
}

#[utoipa::path(post, path = "/v1/families/{id}/signed-readings", request_body = SignedReadingsBody, responses((status = 200, description = "{\"required\": bool}"), (status = 404)))]
async fn family_signed_readings(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(b): Json<SignedReadingsBody>,
) -> ApiResult<serde_json::Value> {
    let c = caller(
        &st,
        &headers,
        Role::Admin,
        "POST /v1/families/{id}/signed-readings",
    )
    .await?;
    let store = &st.auth.registry.store;
    let f = store
        .family_in(&c.tenant_id, &id)
        .await?
        .ok_or_else(not_found)?;
    store.set_signed_readings(&f.id, b.required).await?;
    store
        .audit(
            Some(&c.tenant_id),
            "family-signed-readings",
            &f.name,
            "ok",
            &format!("required {} (token {})", b.required, c.token_id),
        )
        .await?;
    Ok(Json(serde_json::json!({ "required": b.required })))
}

#[utoipa::path(post, path = "/v1/families/{id}/crl", request_body = CrlBody, responses((status = 200, description = "{\"crl_number\", \"listed\", \"devices_revoked\"}"), (status = 400), (status = 404)))]
async fn import_family_crl(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(b): Json<CrlBody>,
) -> ApiResult<crate::registry::CrlImport> {
    let c = caller(&st, &headers, Role::Operator, "POST /v1/families/{id}/crl").await?;
    let der = inkan_pki::pem_or_der("X509 CRL", b.crl_pem.as_bytes())
        .ok()
        .and_then(|v| v.into_iter().next())
        .ok_or_else(|| ApiError(StatusCode::BAD_REQUEST, "crl_pem is not a PEM CRL".into()))?;
    match st.auth.registry.import_crl(&c.tenant_id, &id, &der).await {
        Err(RegistryError::UnknownFamily) => Err(not_found()),
        r => Ok(Json(r?)),
    }
}

#[utoipa::path(post, path = "/v1/manifests", request_body = ManifestBody, responses((status = 200, description = "{\"imported\": n}")))]
async fn import_manifest(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Json(b): Json<ManifestBody>,
) -> ApiResult<serde_json::Value> {
    let c = caller(&st, &headers, Role::Operator, "POST /v1/manifests").await?;
    let bytes = hex::decode(&b.manifest_hex)
        .map_err(|_| ApiError(StatusCode::BAD_REQUEST, "manifest_hex is not hex".into()))?;
    let n = st
        .auth
        .registry
        .import_manifest(&c.tenant_id, &bytes, &cert_der(&b.root_pem)?)
        .await?;
    Ok(Json(serde_json::json!({ "imported": n })))
}

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
async fn audit(
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

/// Query of `GET /v1/readings`.
#[derive(Deserialize, ToSchema, Debug, Default)]
pub struct ReadingsQuery {
    /// Only this device (id).
    pub device: Option<String>,
    /// Only devices of this family (id).
    pub family: Option<String>,
    /// From this device time (ms since the epoch, inclusive).
    pub from: Option<i64>,
    /// Until this device time (ms, exclusive).
    pub to: Option<i64>,
    /// Page size (1..=10000, default 1000).
    pub limit: Option<i64>,
    /// The `next` cursor of the previous page.
    pub cursor: Option<String>,
    /// `json` (default, one page with its cursor), `jsonl` or `csv`.
    pub format: Option<String>,
}

/// A reading, as the API shows it.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct ReadingView {
    /// Device id.
    pub device: String,
    /// Chip serial.
    pub serial: String,
    /// Device time (ms since the epoch).
    pub time_ms: i64,
    /// Channel.
    pub channel: i64,
    /// Value, hex.
    pub value_hex: String,
    /// When the cloud stored it (s since the epoch).
    pub received: i64,
    /// The device's COSE_Sign1 over the batch this reading came in (hex),
    /// when its family requires signed readings.
    pub signature_hex: Option<String>,
}

/// One page of readings.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct ReadingsPage {
    /// The readings, by device time.
    pub readings: Vec<ReadingView>,
    /// Cursor of the next page; absent on the last one.
    pub next: Option<String>,
}

fn cursor_of(k: &crate::store::ReadingKey) -> String {
    hex::encode(format!(
        "{}|{}|{}|{}|{}",
        k.time, k.device_id, k.session_id, k.piv, k.idx
    ))
}

fn parse_cursor(c: &str) -> Result<crate::store::ReadingKey, ApiError> {
    let bad = || {
        ApiError(
            StatusCode::BAD_REQUEST,
            "cursor is not one this API gave".into(),
        )
    };
    let text = String::from_utf8(hex::decode(c).map_err(|_| bad())?).map_err(|_| bad())?;
    let f: Vec<&str> = text.split('|').collect();
    let [time, device_id, session_id, piv, idx] = f.as_slice() else {
        return Err(bad());
    };
    Ok(crate::store::ReadingKey {
        time: time.parse().map_err(|_| bad())?,
        device_id: (*device_id).to_string(),
        session_id: (*session_id).to_string(),
        piv: piv.parse().map_err(|_| bad())?,
        idx: idx.parse().map_err(|_| bad())?,
    })
}

#[utoipa::path(get, path = "/v1/readings", params(("device" = Option<String>, Query), ("family" = Option<String>, Query), ("from" = Option<i64>, Query), ("to" = Option<i64>, Query), ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query), ("format" = Option<String>, Query)), responses((status = 200, body = ReadingsPage, description = "json; jsonl and csv carry the next cursor in the X-Next-Cursor header")))]
async fn readings(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(q): Query<ReadingsQuery>,
) -> Result<Response, ApiError> {
    let c = caller(&st, &headers, Role::Viewer, "GET /v1/readings").await?;
    let format = q.format.as_deref().unwrap_or("json");
    if !matches!(format, "json" | "jsonl" | "csv") {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("format {format:?}: use json, jsonl or csv"),
        ));
    }
    let after = q.cursor.as_deref().map(parse_cursor).transpose()?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let rows = st
        .auth
        .registry
        .store
        .readings(
            &c.tenant_id,
            q.device.as_deref(),
            q.family.as_deref(),
            q.from.unwrap_or(0),
            q.to.unwrap_or(i64::MAX),
            after.as_ref(),
            limit,
        )
        .await?;
    let next = (i64::try_from(rows.len()).unwrap_or(0) == limit)
        .then(|| rows.last().map(|r| cursor_of(&r.key)))
        .flatten();
    let views: Vec<ReadingView> = rows
        .into_iter()
        .map(|r| ReadingView {
            device: r.key.device_id,
            serial: r.serial,
            time_ms: r.key.time,
            channel: r.channel,
            value_hex: hex::encode(r.value),
            received: r.received,
            signature_hex: r.signature.map(hex::encode),
        })
        .collect();
    let with_cursor = |mut rsp: Response| {
        if let Some(n) = &next {
            if let Ok(v) = axum::http::HeaderValue::from_str(n) {
                rsp.headers_mut().insert("x-next-cursor", v);
            }
        }
        rsp
    };
    Ok(match format {
        "jsonl" => {
            let mut body = String::new();
            for v in &views {
                body.push_str(&serde_json::to_string(v).unwrap_or_default());
                body.push('\n');
            }
            with_cursor(([("content-type", "application/x-ndjson")], body).into_response())
        }
        "csv" => {
            let mut body = String::from("device,serial,time_ms,channel,value_hex,received\n");
            for v in &views {
                body.push_str(&format!(
                    "{},{},{},{},{},{}\n",
                    v.device, v.serial, v.time_ms, v.channel, v.value_hex, v.received
                ));
            }
            with_cursor(([("content-type", "text/csv")], body).into_response())
        }
        _ => Json(ReadingsPage {
            readings: views,
            next,
        })
        .into_response(),
    })
}

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
async fn issue_command(
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
            .filter(|d| {
                d.tenant_id == c.tenant_id && d.state == crate::lifecycle::DeviceState::Active
            })
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

fn command_view(r: crate::store::CommandRow) -> CommandView {
    CommandView {
        id: r.id,
        device: r.device_id,
        action: r.action,
        state: r.state,
        expires: r.expires,
        delivered: r.delivered,
        finished: r.finished,
        result: r.result,
    }
}

#[utoipa::path(get, path = "/v1/commands", params(("device" = Option<String>, Query), ("limit" = Option<i64>, Query)), responses((status = 200, body = [CommandView])))]
async fn list_commands(
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
async fn upload_firmware(
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
async fn create_campaign(
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
async fn campaign_progress(
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

#[utoipa::path(post, path = "/v1/tokens", request_body = TokenBody, responses((status = 200, description = "{\"token\": …} shown once")))]
async fn new_token(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Json(b): Json<TokenBody>,
) -> ApiResult<serde_json::Value> {
    let c = caller(&st, &headers, Role::Admin, "POST /v1/tokens").await?;
    let t = create_token(&st.auth.registry.store, &c.tenant_id, b.role).await?;
    Ok(Json(serde_json::json!({ "token": t })))
}

/// The OpenAPI description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "inkan operator API",
        description = "Registry and audit of devices and families, per tenant. Bearer tokens: ink_<id>_<secret>."
    ),
    paths(
        list_devices,
        get_device,
        register_device,
        decommission_device,
        device_history,
        list_credentials,
        add_credential,
        end_credential,
        offer_transfer,
        claim_transfer,
        device_action,
        list_families,
        family_challenge,
        register_family,
        family_action,
        family_revocations,
        import_family_crl,
        family_signed_readings,
        import_manifest,
        readings,
        issue_command,
        list_commands,
        upload_firmware,
        create_campaign,
        campaign_progress,
        audit,
        new_token
    ),
    components(schemas(
        DeviceView,
        FamilyView,
        CertificateBody,
        FamilyBody,
        ManifestBody,
        CrlBody,
        RevocationView,
        RevocationList,
        ReadingsQuery,
        ReadingView,
        ReadingsPage,
        SignedReadingsBody,
        CommandBody,
        CommandView,
        CommandsQuery,
        FirmwareBody,
        CampaignBody,
        TokenBody,
        AuditView,
        DecommissionBody,
        CredentialView,
        TransferOfferBody,
        TransferDocument,
        crate::store::HistoryEntry,
        Role
    ))
)]
pub struct ApiDoc;

/// The operator API router.
pub fn router(auth: Arc<AuthService>) -> Router {
    let st = Arc::new(ApiState { auth });
    Router::new()
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .route("/v1/devices", get(list_devices).post(register_device))
        .route("/v1/devices/{id}", get(get_device))
        .route("/v1/devices/{id}/decommission", post(decommission_device))
        .route("/v1/devices/{id}/history", get(device_history))
        .route(
            "/v1/devices/{id}/credentials",
            get(list_credentials).post(add_credential),
        )
        .route(
            "/v1/devices/{id}/credentials/{credential}/{action}",
            post(end_credential),
        )
        .route("/v1/devices/{id}/{action}", post(device_action))
        .route("/v1/transfers", post(offer_transfer))
        .route("/v1/transfers/claim", post(claim_transfer))
        .route("/v1/families", get(list_families).post(register_family))
        .route("/v1/families/challenge", post(family_challenge))
        .route("/v1/families/{id}/revocations", get(family_revocations))
        .route("/v1/families/{id}/crl", post(import_family_crl))
        .route(
            "/v1/families/{id}/signed-readings",
            post(family_signed_readings),
        )
        .route("/v1/families/{id}/{action}", post(family_action))
        .route("/v1/manifests", post(import_manifest))
        .route("/v1/audit", get(audit))
        .route("/v1/readings", get(readings))
        .route("/v1/commands", get(list_commands).post(issue_command))
        .route("/v1/campaigns", post(create_campaign))
        .route("/v1/campaigns/{id}", get(campaign_progress))
        .route(
            "/v1/firmware",
            // Images are large; the limit applies to this route only.
            post(upload_firmware).layer(axum::extract::DefaultBodyLimit::max(64 << 20)),
        )
        .route("/v1/tokens", post(new_token))
        .layer(axum::extract::DefaultBodyLimit::max(8 * 1024 * 1024))
        .with_state(st)
}

/// Serves the API on a listener.
pub async fn serve(
    listener: tokio::net::TcpListener,
    auth: Arc<AuthService>,
) -> std::io::Result<()> {
    axum::serve(listener, router(auth)).await
}
