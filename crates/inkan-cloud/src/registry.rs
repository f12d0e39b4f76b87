//! The registry: families, devices, manifests, and the decision whether a
//! presented certificate chain belongs to a device that may authenticate.
//! The most specific entry wins: a suspended or revoked device stays out
//! even inside an active family, and any device of a revoked family stays
//! out even if registered individually.

use crate::store::{DeviceRow, FamilyRow, Store, StoreError};
use inkan_pki::cert::{verify_issued_by, IssuedCert};
use inkan_pki::validate::RequiredEku;
use inkan_pki::{DeviceValidator, ValidationError};
use sha2::Digest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Why a device is refused, or a registration rejected.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Input that does not parse.
    #[error("malformed {0}")]
    Malformed(String),
    /// The chain does not lead to a registered family or device.
    #[error("unknown CA: the certificate chains to no registered family")]
    UnknownCa,
    /// Path validation refused the chain.
    #[error("certificate refused: {0}")]
    Chain(#[from] ValidationError),
    /// The device is suspended.
    #[error("device suspended")]
    DeviceSuspended,
    /// The device is revoked.
    #[error("device revoked")]
    DeviceRevoked,
    /// The family is suspended.
    #[error("family suspended")]
    FamilySuspended,
    /// The family is revoked.
    #[error("family revoked")]
    FamilyRevoked,
    /// Proof of possession of the family key failed.
    #[error(
        "proof of possession failed: the challenge signature does not verify with the family key"
    )]
    ProofOfPossession,
    /// The certificate registered as a family is not a CA.
    #[error("not a CA certificate: {0}")]
    NotACa(String),
    /// The certificate chains to a family another tenant registered (and
    /// proved it holds the key of): it cannot be claimed by this tenant.
    #[error("the certificate belongs to a family registered by another tenant")]
    ForeignFamily,
    /// No family with this id in the caller's tenant.
    #[error("no such family in this tenant")]
    UnknownFamily,
    /// A CRL that does not verify against the family, or is older than
    /// the newest one imported.
    #[error("CRL refused: {0}")]
    Crl(String),
    /// Already registered.
    #[error("already registered: {0}")]
    Duplicate(String),
    /// A manifest that does not verify.
    #[error("manifest refused: {0}")]
    Manifest(String),
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A device allowed to authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorized {
    /// Device id.
    pub device_id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Chip serial.
    pub serial: String,
    /// The device's public key (SEC1).
    pub public_key: Vec<u8>,
    /// Whether this authentication enrolled the device through its family.
    pub enrolled_now: bool,
}

/// What importing a family CRL did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CrlImport {
    /// The CRL number.
    pub crl_number: i64,
    /// Certificates the CRL lists.
    pub listed: usize,
    /// Registered devices it revoked now.
    pub devices_revoked: usize,
}

/// Fingerprint (SHA-256 hex) of DER.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(der))
}

/// The challenge a family registration must sign: bound to the tenant and
/// the certificate, so a proof cannot be replayed for another tenant.
pub fn pop_challenge(tenant_id: &str, family_cert_der: &[u8]) -> Vec<u8> {
    let mut h = sha2::Sha256::new();
    h.update(b"inkan family registration proof of possession\0");
    h.update(tenant_id.as_bytes());
    h.update([0]);
    h.update(family_cert_der);
    h.finalize().to_vec()
}

/// How often a replica reads the shared revocation epoch: a revocation
/// made at another replica reaches this one's caches within this time (its
/// own changes drop them at once).
pub const EPOCH_POLL: Duration = Duration::from_millis(250);

#[derive(Default)]
struct Cache {
    /// The shared epoch last read, when, and this process's change count
    /// at that moment.
    epoch: i64,
    read_at: Option<Instant>,
    local: u64,
    /// Verified chains by leaf fingerprint, with the leaf's notAfter.
    verified: HashMap<String, (Authorized, SystemTime)>,
    /// The registered families, as last read.
    families: Option<Arc<Vec<FamilyRow>>>,
    /// Each family's revocation list (certificate serials), as last read.
    revoked: HashMap<String, Arc<std::collections::HashSet<String>>>,
}

/// The registry over a store, with a cache of verified chains dropped
/// whenever the revocation epoch moves (on any replica).
pub struct Registry {
    /// The store.
    pub store: Store,
    cache: Mutex<Cache>,
}

fn status_error(device: Option<&DeviceRow>, family: Option<&FamilyRow>) -> Option<RegistryError> {
    match family.map(|f| f.status.as_str()) {
        Some("revoked") => return Some(RegistryError::FamilyRevoked),
        Some("suspended") => return Some(RegistryError::FamilySuspended),
        _ => {}
    }
    match device.map(|d| d.status.as_str()) {
        Some("revoked") => Some(RegistryError::DeviceRevoked),
        Some("suspended") => Some(RegistryError::DeviceSuspended),
        _ => None,
    }
}

impl Registry {
    /// A registry over `store`.
    pub fn new(store: Store) -> Registry {
        Registry {
            store,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// Registers a family CA for a tenant, with proof of possession: a
    /// signature (raw r‖s) by the family key over [`pop_challenge`].
    pub async fn register_family(
        &self,
        tenant_id: &str,
        name: &str,
        cert_der: &[u8],
        pop_signature: &[u8],
    ) -> Result<String, RegistryError> {
        let r = self
            .register_family_inner(tenant_id, name, cert_der, pop_signature)
            .await;
        let detail = format!("certificate {}", fingerprint(cert_der));
        self.audited(tenant_id, "register-family", name, &detail, r)
            .await
    }

    /// Writes the audit entry of a registration (success, or the reason
    /// of the refusal) and passes the result on.
    async fn audited<T>(
        &self,
        tenant_id: &str,
        kind: &str,
        subject: &str,
        ok_detail: &str,
        r: Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let (outcome, detail) = match &r {
            Ok(_) => ("ok", ok_detail.to_string()),
            Err(e) => ("refused", e.to_string()),
        };
        self.store
            .audit(Some(tenant_id), kind, subject, outcome, &detail)
            .await?;
        r
    }

    async fn register_family_inner(
        &self,
        tenant_id: &str,
        name: &str,
        cert_der: &[u8],
        pop_signature: &[u8],
    ) -> Result<String, RegistryError> {
        let cert =
            IssuedCert::from_der(cert_der).map_err(|e| RegistryError::Malformed(e.to_string()))?;
        cert.require_ca()
            .map_err(|e| RegistryError::NotACa(e.to_string()))?;
        let challenge = pop_challenge(tenant_id, cert_der);
        if !inkan_pki::signer::verify_raw(&cert.public_point(), &challenge, pop_signature) {
            return Err(RegistryError::ProofOfPossession);
        }
        let fp = fingerprint(cert_der);
        if self.store.family_by_fingerprint(&fp).await?.is_some() {
            return Err(RegistryError::Duplicate(format!("family certificate {fp}")));
        }
        self.store
            .insert_family(tenant_id, name, cert_der, &fp)
            .await
            .map_err(RegistryError::from)
    }

    /// Registers one device by its certificate. A device of a family
    /// registered by another tenant cannot be claimed.
    pub async fn register_device(
        &self,
        tenant_id: &str,
        cert_der: &[u8],
    ) -> Result<String, RegistryError> {
        let fp = fingerprint(cert_der);
        let subject = IssuedCert::from_der(cert_der)
            .ok()
            .and_then(|c| c.subject_serial_number())
            .unwrap_or_else(|| fp[..16].to_string());
        let r = self.register_device_inner(tenant_id, cert_der, &fp).await;
        self.audited(tenant_id, "register-device", &subject, &fp, r)
            .await
    }

    async fn register_device_inner(
        &self,
        tenant_id: &str,
        cert_der: &[u8],
        fp: &str,
    ) -> Result<String, RegistryError> {
        let cert =
            IssuedCert::from_der(cert_der).map_err(|e| RegistryError::Malformed(e.to_string()))?;
        let serial = cert
            .subject_serial_number()
            .ok_or_else(|| RegistryError::Malformed("certificate without a serialNumber".into()))?;
        if self.store.device_by_fingerprint(fp).await?.is_some() {
            return Err(RegistryError::Duplicate(format!("device {serial}")));
        }
        let family = self.family_of(&cert).await?;
        if family.as_ref().is_some_and(|f| f.tenant_id != tenant_id) {
            return Err(RegistryError::ForeignFamily);
        }
        let id = Store::insert_device(
            &self.store.pool,
            tenant_id,
            &serial,
            family.map(|f| f.id).as_deref(),
            cert_der,
            fp,
            &cert.public_point(),
            "individual",
        )
        .await?;
        Ok(id)
    }

    /// Imports a signed factory manifest: verified against `root` before
    /// anything is written, then every device in one transaction.
    pub async fn import_manifest(
        &self,
        tenant_id: &str,
        bytes: &[u8],
        root_der: &[u8],
    ) -> Result<usize, RegistryError> {
        let r = self.import_manifest_inner(tenant_id, bytes, root_der).await;
        let (subject, detail) = match &r {
            Ok((batch, n)) => (batch.clone(), format!("{n} devices")),
            Err(_) => ("manifest".to_string(), String::new()),
        };
        self.audited(tenant_id, "import-manifest", &subject, &detail, r)
            .await
            .map(|(_, n)| n)
    }

    async fn import_manifest_inner(
        &self,
        tenant_id: &str,
        bytes: &[u8],
        root_der: &[u8],
    ) -> Result<(String, usize), RegistryError> {
        let root =
            IssuedCert::from_der(root_der).map_err(|e| RegistryError::Malformed(e.to_string()))?;
        let m = inkan_pki::manifest::verify(bytes, &root, SystemTime::now())
            .map_err(|e| RegistryError::Manifest(e.to_string()))?;
        let family_fp = fingerprint(&m.family_certificate);
        let family = self.store.family_by_fingerprint(&family_fp).await?;
        if family.as_ref().is_some_and(|f| f.tenant_id != tenant_id) {
            return Err(RegistryError::ForeignFamily);
        }
        let family_id = family.map(|f| f.id);
        let mut rows = Vec::with_capacity(m.entries.len());
        for e in &m.entries {
            let cert = IssuedCert::from_der(&e.certificate)
                .map_err(|e| RegistryError::Malformed(e.to_string()))?;
            if cert.public_point() != e.public_key.as_ref() {
                return Err(RegistryError::Manifest(format!(
                    "entry {}: public key does not match its certificate",
                    e.serial
                )));
            }
            rows.push(crate::store::NewDevice {
                serial: &e.serial,
                certificate: &e.certificate,
                fingerprint: fingerprint(&e.certificate),
                public_key: &e.public_key,
            });
        }
        let mut tx = self.store.pool.begin().await.map_err(StoreError::from)?;
        Store::insert_devices(&mut tx, tenant_id, family_id.as_deref(), "manifest", &rows)
            .await
            .map_err(|err| match err {
                StoreError::Db(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                    RegistryError::Duplicate(
                        "a device of this manifest is already registered".into(),
                    )
                }
                other => RegistryError::Store(other),
            })?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok((m.batch.clone(), m.entries.len()))
    }

    /// Imports a CRL signed by a family's CA: verified against the family
    /// certificate, refused if not newer than the last one, then applied
    /// in one transaction (see [`Store::apply_crl`]).
    pub async fn import_crl(
        &self,
        tenant_id: &str,
        family_id: &str,
        crl_der: &[u8],
    ) -> Result<CrlImport, RegistryError> {
        let r = self.import_crl_inner(tenant_id, family_id, crl_der).await;
        let detail = match &r {
            Ok(i) => format!(
                "CRL {}: {} listed, {} devices revoked",
                i.crl_number, i.listed, i.devices_revoked
            ),
            Err(_) => String::new(),
        };
        self.audited(tenant_id, "import-crl", family_id, &detail, r)
            .await
    }

    async fn import_crl_inner(
        &self,
        tenant_id: &str,
        family_id: &str,
        crl_der: &[u8],
    ) -> Result<CrlImport, RegistryError> {
        let f = self
            .store
            .family_in(tenant_id, family_id)
            .await?
            .ok_or(RegistryError::UnknownFamily)?;
        let ca = IssuedCert::from_der(&f.certificate)
            .map_err(|e| RegistryError::Malformed(e.to_string()))?;
        let v = inkan_pki::crl::Crl::from_der(crl_der)
            .and_then(|c| c.verify(&ca))
            .map_err(|e| RegistryError::Crl(e.to_string()))?;
        let number = i64::try_from(v.number)
            .map_err(|_| RegistryError::Crl("CRL number beyond 2^63".into()))?;
        if let Some(have) = self.store.crl_number(&f.id).await? {
            if number <= have {
                return Err(RegistryError::Crl(format!(
                    "stale: CRL number {number}, the cloud already has {have}"
                )));
            }
        }
        let serials: Vec<String> = v.revoked.iter().map(|r| hex::encode(&r.serial)).collect();
        let devices_revoked = self.store.apply_crl(&f.id, number, &serials).await?;
        Ok(CrlImport {
            crl_number: number,
            listed: serials.len(),
            devices_revoked,
        })
    }

    /// The registered family that issued `cert`: candidates by subject
    /// name first, then the signature decides. Families come from the
    /// cache, re-read from the store when none matches (a family another
    /// replica just registered).
    async fn family_of(&self, cert: &IssuedCert) -> Result<Option<FamilyRow>, RegistryError> {
        let cached = self.cache.lock().ok().and_then(|c| c.families.clone());
        if let Some(fams) = &cached {
            if let Some(f) = Self::issuer_among(fams, cert) {
                return Ok(Some(f));
            }
        }
        let fams = Arc::new(self.store.families().await?);
        if let Ok(mut c) = self.cache.lock() {
            c.families = Some(fams.clone());
        }
        Ok(Self::issuer_among(&fams, cert))
    }

    fn issuer_among(fams: &[FamilyRow], cert: &IssuedCert) -> Option<FamilyRow> {
        let issuer = &cert.cert.tbs_certificate.issuer;
        fams.iter()
            .find(|f| {
                IssuedCert::from_der(&f.certificate).is_ok_and(|fc| {
                    &fc.cert.tbs_certificate.subject == issuer
                        && verify_issued_by(cert, &fc).is_ok()
                })
            })
            .cloned()
    }

    /// A family's revocation list (certificate serials), cached until the
    /// next change.
    async fn revoked_serials(
        &self,
        family_id: &str,
    ) -> Result<Arc<std::collections::HashSet<String>>, RegistryError> {
        if let Some(set) = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.revoked.get(family_id).cloned())
        {
            return Ok(set);
        }
        let set: Arc<std::collections::HashSet<String>> = Arc::new(
            self.store
                .revocations(family_id)
                .await?
                .into_iter()
                .map(|r| r.cert_serial)
                .collect(),
        );
        if let Ok(mut c) = self.cache.lock() {
            c.revoked.insert(family_id.to_string(), set.clone());
        }
        Ok(set)
    }

    /// Drops the caches when this process changed something or another
    /// replica's change shows in the shared epoch (read at most every
    /// [`EPOCH_POLL`]).
    async fn refresh_caches(&self) -> Result<(), RegistryError> {
        let local = self.store.local_changes();
        let due = self
            .cache
            .lock()
            .map(|c| c.local != local || c.read_at.is_none_or(|t| t.elapsed() >= EPOCH_POLL))
            .unwrap_or(true);
        if !due {
            return Ok(());
        }
        let epoch = self.store.epoch().await?;
        if let Ok(mut c) = self.cache.lock() {
            if c.epoch != epoch || c.local != local {
                c.verified.clear();
                c.families = None;
                c.revoked.clear();
            }
            c.epoch = epoch;
            c.local = local;
            c.read_at = Some(Instant::now());
        }
        Ok(())
    }

    /// Decides whether the presented chain (end entity first) belongs to a
    /// device that may authenticate now; enrolls it through its family on
    /// its first authentication.
    pub async fn authorize(&self, chain: &[Vec<u8>]) -> Result<Authorized, RegistryError> {
        let leaf_der = chain
            .first()
            .ok_or_else(|| RegistryError::Malformed("empty certificate chain".into()))?;
        let fp = fingerprint(leaf_der);
        self.refresh_caches().await?;
        let (generation, hit) = match self.cache.lock() {
            Ok(c) => ((c.epoch, c.local), c.verified.get(&fp).cloned()),
            Err(_) => ((i64::MIN, u64::MAX), None),
        };
        if let Some((a, not_after)) = hit {
            if SystemTime::now() <= not_after {
                return Ok(Authorized {
                    enrolled_now: false,
                    ..a
                });
            }
        }
        let leaf =
            IssuedCert::from_der(leaf_der).map_err(|e| RegistryError::Malformed(e.to_string()))?;
        let device = self.store.device_by_fingerprint(&fp).await?;
        let family = self.family_of(&leaf).await?;
        if let Some(e) = status_error(device.as_ref(), family.as_ref()) {
            return Err(e);
        }
        // A device registered by one tenant under a family another tenant
        // owns (it proved possession of the family key): the family's
        // owner wins, the claim is refused.
        if let (Some(d), Some(f)) = (&device, &family) {
            if d.tenant_id != f.tenant_id {
                return Err(RegistryError::ForeignFamily);
            }
        }
        // A device never seen before may already be on its family's
        // revocation list (an imported CRL).
        if let (None, Some(f)) = (&device, &family) {
            if self
                .revoked_serials(&f.id)
                .await?
                .contains(&leaf.serial_hex())
            {
                return Err(RegistryError::DeviceRevoked);
            }
        }
        // The chain is checked against the family when there is one (time,
        // EKU, path); an individually registered device without a family is
        // checked against its own pinned certificate.
        let anchor = match &family {
            Some(f) => f.certificate.clone(),
            None if device.is_some() => leaf_der.clone(),
            None => return Err(RegistryError::UnknownCa),
        };
        let validator =
            DeviceValidator::new(std::slice::from_ref(&anchor), RequiredEku::ClientAuth)?;
        if family.is_some() {
            validator.validate(leaf_der, &chain[1..], SystemTime::now())?;
        } else {
            let (nb, na) = leaf.validity();
            let now = SystemTime::now();
            if now > na {
                return Err(RegistryError::Chain(ValidationError::Expired));
            }
            if now < nb {
                return Err(RegistryError::Chain(ValidationError::NotYetValid));
            }
        }
        let (device_id, tenant_id, serial, enrolled_now) = match device {
            Some(d) => (d.id, d.tenant_id, d.serial, false),
            None => {
                let f = family.as_ref().ok_or(RegistryError::UnknownCa)?;
                let serial = leaf
                    .subject_serial_number()
                    .unwrap_or_else(|| fp[..16].to_string());
                let id = match Store::insert_device(
                    &self.store.pool,
                    &f.tenant_id,
                    &serial,
                    Some(&f.id),
                    leaf_der,
                    &fp,
                    &leaf.public_point(),
                    "family",
                )
                .await
                {
                    Ok(id) => id,
                    // Another replica enrolled it at the same moment.
                    Err(_) => self
                        .store
                        .device_by_fingerprint(&fp)
                        .await?
                        .map(|d| d.id)
                        .ok_or(RegistryError::UnknownCa)?,
                };
                self.store
                    .audit(
                        Some(&f.tenant_id),
                        "enroll",
                        &serial,
                        "ok",
                        &format!("through family {}", f.name),
                    )
                    .await?;
                (id, f.tenant_id.clone(), serial, true)
            }
        };
        let a = Authorized {
            device_id,
            tenant_id,
            serial,
            public_key: leaf.public_point(),
            enrolled_now,
        };
        if let Ok(mut c) = self.cache.lock() {
            if (c.epoch, c.local) == generation {
                c.verified.insert(fp, (a.clone(), leaf.validity().1));
            }
        }
        Ok(a)
    }
}
