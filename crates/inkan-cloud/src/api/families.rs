//! Families, their revocation lists and CRLs, manifests.

use super::*;

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

#[utoipa::path(get, path = "/v1/families", responses((status = 200, body = [FamilyView])))]
pub(super) async fn list_families(
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
pub(super) async fn family_challenge(
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
pub(super) async fn register_family(
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
pub(super) async fn family_action(
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
pub(super) async fn family_revocations(
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
pub(super) async fn family_signed_readings(
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
pub(super) async fn import_family_crl(
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
pub(super) async fn import_manifest(
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
