//! The operator API (HTTP/JSON): every request carries a bearer token,
//! stored hashed, bound to one tenant and one role (viewer < operator <
//! admin); every endpoint checks both, and every use is audited. Another
//! tenant's objects answer 404, as if they did not exist.

use crate::lifecycle::Action;
use crate::registry::{pop_challenge, RegistryError};
use crate::store::{new_id, Store, StoreError};
use crate::App;
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

mod audit;
mod commands;
mod devices;
mod families;
mod firmware;
mod readings;
mod tokens;
mod transfers;
mod usage;

pub use audit::*;
pub use commands::*;
pub use devices::*;
pub use families::*;
pub use firmware::*;
pub use readings::*;
pub use tokens::*;
pub use transfers::*;
pub use usage::*;

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
    create_token_for(store, tenant_id, role, None).await
}

/// The same, valid for `ttl_secs` when given.
pub async fn create_token_for(
    store: &Store,
    tenant_id: &str,
    role: Role,
    ttl_secs: Option<i64>,
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
            ttl_secs.map(|t| crate::store::now().saturating_add(t)),
        )
        .await?;
    store
        .audit(
            Some(tenant_id),
            "token",
            &id,
            "created",
            &match ttl_secs {
                Some(t) => format!("{}, expires in {t} s", role.as_str()),
                None => role.as_str().to_string(),
            },
        )
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
    pub auth: Arc<App>,
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
    // Refusals before a valid token are counted, not written one row each.
    let Some((tenant_id, hash, role)) = store.token(id).await? else {
        st.auth
            .refused_unauthenticated(
                "api",
                "http",
                &format!("{what}: unknown, expired or revoked token"),
            )
            .await;
        return Err(unauthorized());
    };
    let given = hex::encode(sha2::Sha256::digest(secret.as_bytes()));
    if !bool::from(given.as_bytes().ct_eq(hash.as_bytes())) {
        st.auth
            .refused_unauthenticated("api", "http", &format!("{what}: bad secret for token {id}"))
            .await;
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
    store.token_used(id).await?;
    Ok(Caller {
        tenant_id,
        role,
        token_id: id.to_string(),
    })
}

/// Pagination.
#[derive(Deserialize, ToSchema, Debug)]
pub struct Page {
    /// Maximum items (default 100, at most 1000).
    pub limit: Option<i64>,
    /// Items to skip.
    pub offset: Option<i64>,
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

fn actor(c: &Caller) -> (String, String) {
    (c.tenant_id.clone(), format!("token {}", c.token_id))
}

fn not_found() -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "no such object in this tenant".into(),
    )
}

/// The OpenAPI description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "inkan operator API",
        description = "Registry and audit of devices and families, per tenant. Bearer tokens: ink_<id>_<secret>."
    ),
    paths(
        devices::list_devices,
        devices::get_device,
        devices::register_device,
        devices::decommission_device,
        devices::device_history,
        devices::list_credentials,
        devices::add_credential,
        devices::end_credential,
        transfers::offer_transfer,
        transfers::claim_transfer,
        devices::device_action,
        families::list_families,
        families::family_challenge,
        families::register_family,
        families::family_action,
        families::family_revocations,
        families::import_family_crl,
        families::family_signed_readings,
        families::import_manifest,
        readings::readings,
        commands::issue_command,
        commands::list_commands,
        firmware::upload_firmware,
        firmware::create_campaign,
        firmware::campaign_progress,
        audit::audit,
        tokens::new_token,
        tokens::list_tokens,
        tokens::revoke_token,
        usage::device_usage,
        usage::family_usage,
        usage::set_usage_alert
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
        crate::store::TokenRow,
        AuditView,
        DecommissionBody,
        CredentialView,
        TransferOfferBody,
        TransferDocument,
        crate::store::HistoryEntry,
        crate::store::UsageRow,
        crate::usage::FamilyUsage,
        UsageAlertBody,
        Role
    ))
)]
pub struct ApiDoc;

/// Text with a NUL character is refused before anything reaches the store
/// (PostgreSQL cannot keep one in TEXT): in the path, in the query, or in a
/// JSON body (where a NUL can only be written `\u0000`).
async fn refuse_nul(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let refused = || {
        ApiError(
            StatusCode::BAD_REQUEST,
            "NUL characters are not accepted".into(),
        )
        .into_response()
    };
    if req.uri().to_string().to_ascii_lowercase().contains("%00") {
        return refused();
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return ApiError(StatusCode::PAYLOAD_TOO_LARGE, "body too large".into()).into_response();
    };
    if bytes.windows(6).any(|w| w == b"\\u0000") {
        return refused();
    }
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}

/// The largest body any route takes (a firmware image and its manifest).
const MAX_BODY: usize = 64 << 20;

/// The operator API router.
pub fn router(auth: Arc<App>) -> Router {
    let st = Arc::new(ApiState { auth });
    Router::new()
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .route(
            "/v1/devices",
            get(devices::list_devices).post(devices::register_device),
        )
        .route("/v1/devices/{id}", get(devices::get_device))
        .route(
            "/v1/devices/{id}/decommission",
            post(devices::decommission_device),
        )
        .route("/v1/devices/{id}/history", get(devices::device_history))
        .route("/v1/devices/{id}/usage", get(usage::device_usage))
        .route("/v1/families/{id}/usage", get(usage::family_usage))
        .route(
            "/v1/families/{id}/usage-alert",
            axum::routing::put(usage::set_usage_alert),
        )
        .route(
            "/v1/devices/{id}/credentials",
            get(devices::list_credentials).post(devices::add_credential),
        )
        .route(
            "/v1/devices/{id}/credentials/{credential}/{action}",
            post(devices::end_credential),
        )
        .route("/v1/devices/{id}/{action}", post(devices::device_action))
        .route("/v1/transfers", post(transfers::offer_transfer))
        .route("/v1/transfers/claim", post(transfers::claim_transfer))
        .route(
            "/v1/families",
            get(families::list_families).post(families::register_family),
        )
        .route("/v1/families/challenge", post(families::family_challenge))
        .route(
            "/v1/families/{id}/revocations",
            get(families::family_revocations),
        )
        .route("/v1/families/{id}/crl", post(families::import_family_crl))
        .route(
            "/v1/families/{id}/signed-readings",
            post(families::family_signed_readings),
        )
        .route("/v1/families/{id}/{action}", post(families::family_action))
        .route("/v1/manifests", post(families::import_manifest))
        .route("/v1/audit", get(audit::audit))
        .route("/v1/readings", get(readings::readings))
        .route(
            "/v1/commands",
            get(commands::list_commands).post(commands::issue_command),
        )
        .route("/v1/campaigns", post(firmware::create_campaign))
        .route("/v1/campaigns/{id}", get(firmware::campaign_progress))
        .route(
            "/v1/firmware",
            // Images are large; the limit applies to this route only.
            post(firmware::upload_firmware).layer(axum::extract::DefaultBodyLimit::max(MAX_BODY)),
        )
        .route(
            "/v1/tokens",
            get(tokens::list_tokens).post(tokens::new_token),
        )
        .route("/v1/tokens/{id}/revoke", post(tokens::revoke_token))
        .layer(axum::extract::DefaultBodyLimit::max(8 * 1024 * 1024))
        .layer(axum::middleware::from_fn(refuse_nul))
        .with_state(st)
}

/// Serves the API on a listener.
pub async fn serve(listener: tokio::net::TcpListener, auth: Arc<App>) -> std::io::Result<()> {
    serve_with(listener, auth, HttpLimits::default()).await
}

/// What one client may hold of the API server.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Time to send a request's headers; a slower client is disconnected.
    pub header_read_timeout: std::time::Duration,
    /// Longest life of one connection (keep-alive included).
    pub connection_lifetime: std::time::Duration,
    /// Connections open at once; past it, new ones are closed at once so
    /// the process never runs out of file descriptors.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: std::time::Duration::from_secs(10),
            connection_lifetime: std::time::Duration::from_secs(300),
            max_connections: 1024,
        }
    }
}

/// Serves the API with explicit limits: a header-read timeout, a
/// connection lifetime and a cap on open connections (slow clients cannot
/// exhaust the server).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    auth: Arc<App>,
    limits: HttpLimits,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let app = router(auth);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            // Out of descriptors or a connection reset before accept: wait
            // a moment rather than spin or stop.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(limits.connection_lifetime, conn).await;
            drop(permit);
        });
    }
}
