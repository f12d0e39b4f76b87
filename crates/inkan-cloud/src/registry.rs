//! The registry: families, devices, manifests, and the decision whether a
//! presented certificate chain belongs to a device that may authenticate.
//! The most specific entry wins: a suspended or revoked device stays out
//! even inside an active family, and any device of a revoked family stays
//! out even if registered individually.

use crate::lifecycle::{self, Action, CredentialState, DeviceState, Proof};
use crate::store::{CredentialRow, DeviceRow, Entry, FamilyRow, NewDevice, Store, StoreError};
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
    /// Already registered (no detail: the device may be another
    /// tenant's).
    #[error("already registered")]
    Duplicate,
    /// Claiming a device needs proof tied to its issuer: its family
    /// registered by this tenant with proof of possession, or a transfer
    /// signed for it.
    #[error("claiming a device needs proof: register its family with proof of possession of the family key, or claim a transfer")]
    UnprovenIssuer,
    /// A device with this chip serial is known under another family.
    #[error("this chip serial is already enrolled under another family")]
    SerialTaken,
    /// The certificate names a device identity (UEID) that belongs to a
    /// device of another family or chip.
    #[error("the device identity (UEID) in this certificate belongs to another device")]
    IdentityTaken,
    /// The credential was retired (replaced by a newer one).
    #[error("credential retired")]
    CredentialRetired,
    /// The credential is not active yet.
    #[error("credential not active")]
    CredentialInactive,
    /// The device is decommissioned.
    #[error("device decommissioned")]
    DeviceDecommissioned,
    /// A lifecycle transition not in the table.
    #[error(transparent)]
    Lifecycle(#[from] lifecycle::TransitionRefused),
    /// No such device in the caller's tenant.
    #[error("no such device in this tenant")]
    UnknownDevice,
    /// A transfer refused.
    #[error("transfer refused: {0}")]
    Transfer(String),
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
    /// The credential it presented.
    pub credential_id: String,
    /// A decommissioned device that may only fetch its erase order.
    pub erase_only: bool,
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

fn family_error(family: Option<&FamilyRow>) -> Option<RegistryError> {
    match family.map(|f| f.state) {
        Some(crate::lifecycle::FamilyState::Revoked) => Some(RegistryError::FamilyRevoked),
        Some(crate::lifecycle::FamilyState::Suspended) => Some(RegistryError::FamilySuspended),
        _ => None,
    }
}

/// Whether a device (and the credential it presents) may authenticate;
/// Ok(true) for a decommissioned device still to be told to erase.
fn device_error(d: &DeviceRow, c: Option<&CredentialRow>) -> Result<bool, RegistryError> {
    if d.state == DeviceState::Decommissioned {
        return if d.erase_pending {
            Ok(true)
        } else {
            Err(RegistryError::DeviceDecommissioned)
        };
    }
    match c.map(|c| c.state) {
        Some(CredentialState::Retired) => return Err(RegistryError::CredentialRetired),
        Some(CredentialState::Revoked) => return Err(RegistryError::DeviceRevoked),
        Some(CredentialState::Issued) => return Err(RegistryError::CredentialInactive),
        _ => {}
    }
    match d.state {
        DeviceState::Revoked => Err(RegistryError::DeviceRevoked),
        DeviceState::Suspended => Err(RegistryError::DeviceSuspended),
        _ => Ok(false),
    }
}

/// What an authentication will do once the device's signature verified.
#[derive(Debug)]
enum Plan {
    /// Verified before and cached.
    Cached(Authorized),
    /// A known credential.
    Known {
        device: DeviceRow,
        credential: CredentialRow,
        erase_only: bool,
    },
    /// A new certificate of a known device (same UEID, same family).
    NewCredential {
        device: DeviceRow,
        family: FamilyRow,
    },
    /// A device seen for the first time, enrolled through its family.
    NewDevice {
        family: FamilyRow,
        serial: String,
        id: String,
    },
}

/// A chain checked against the registry, not yet admitted: nothing has
/// been written. [`Registry::admit`] writes what it needs once the
/// device's proof of possession verified.
#[derive(Debug)]
pub struct Resolved {
    plan: Plan,
    leaf_der: Vec<u8>,
    fingerprint: String,
    public_key: Vec<u8>,
    not_after: SystemTime,
    generation: (i64, u64),
}

impl Resolved {
    /// The public key the device must prove it holds.
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    /// The tenant the device or its family belongs to.
    pub fn tenant_id(&self) -> &str {
        match &self.plan {
            Plan::Cached(a) => &a.tenant_id,
            Plan::Known { device, .. } | Plan::NewCredential { device, .. } => &device.tenant_id,
            Plan::NewDevice { family, .. } => &family.tenant_id,
        }
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
            return Err(RegistryError::Duplicate);
        }
        let id = self
            .store
            .insert_family(tenant_id, name, cert_der, &fp)
            .await?;
        // Devices of this family that a tenant claimed without proof (from
        // public data, before claims needed proof) go to the tenant that
        // just proved it holds the family key.
        let held: Vec<DeviceRow> = self
            .store
            .unproven_devices()
            .await?
            .into_iter()
            .filter(|d| {
                IssuedCert::from_der(&d.certificate)
                    .is_ok_and(|c| verify_issued_by(&c, &cert).is_ok())
            })
            .collect();
        if !held.is_empty() {
            self.store
                .reclaim(&held, tenant_id, &id, &format!("family {name}"))
                .await?;
            self.store
                .audit(
                    Some(tenant_id),
                    "reclaim",
                    name,
                    "ok",
                    &format!("{} devices held without proof reclaimed", held.len()),
                )
                .await?;
        }
        Ok(id)
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
        let family = self.owned_family(tenant_id, &cert).await?;
        if self.store.credential_by_fingerprint(fp).await?.is_some() {
            return Err(RegistryError::Duplicate);
        }
        let id = device_id_of(&cert);
        if self.store.device(&id).await?.is_some() {
            return Err(RegistryError::Duplicate);
        }
        self.check_serial(&serial, &family.id).await?;
        // The chip is known already: a new certificate of it is a new
        // credential of that device (add-credential), not a second device.
        if !self.store.devices_by_serial(&serial).await?.is_empty() {
            return Err(RegistryError::Duplicate);
        }
        self.store
            .enroll(
                Entry {
                    tenant: tenant_id,
                    family_id: Some(&family.id),
                    state: DeviceState::Registered,
                    enrolled_by: "individual",
                    proof: Proof::Family,
                    actor: "operator",
                },
                &[NewDevice {
                    id: id.clone(),
                    serial: &serial,
                    certificate: cert_der,
                    fingerprint: fp.to_string(),
                    public_key: &cert.public_point(),
                }],
            )
            .await
            .map_err(duplicate)?;
        Ok(id)
    }

    /// The family that issued `cert`, which `tenant_id` must own: claiming
    /// a device needs that proof.
    async fn owned_family(
        &self,
        tenant_id: &str,
        cert: &IssuedCert,
    ) -> Result<FamilyRow, RegistryError> {
        match self.family_of(cert).await? {
            Some(f) if f.tenant_id == tenant_id => Ok(f),
            Some(_) => Err(RegistryError::ForeignFamily),
            None => Err(RegistryError::UnprovenIssuer),
        }
    }

    /// A chip serial belongs to one family.
    async fn check_serial(&self, serial: &str, family_id: &str) -> Result<(), RegistryError> {
        let taken = self
            .store
            .devices_by_serial(serial)
            .await?
            .iter()
            .any(|d| d.family_id.as_deref() != Some(family_id));
        if taken {
            return Err(RegistryError::SerialTaken);
        }
        Ok(())
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
        let family = match self.store.family_by_fingerprint(&family_fp).await? {
            Some(f) if f.tenant_id == tenant_id => f,
            Some(_) => return Err(RegistryError::ForeignFamily),
            None => return Err(RegistryError::UnprovenIssuer),
        };
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
            let id = match &e.ueid {
                Some(u) => inkan_pki::Ueid::from_bytes(u)
                    .map_err(|err| RegistryError::Manifest(format!("entry {}: {err}", e.serial)))?
                    .to_hex(),
                None => device_id_of(&cert),
            };
            rows.push(NewDevice {
                id,
                serial: &e.serial,
                certificate: &e.certificate,
                fingerprint: fingerprint(&e.certificate),
                public_key: &e.public_key,
            });
        }
        self.store
            .enroll(
                Entry {
                    tenant: tenant_id,
                    family_id: Some(&family.id),
                    state: DeviceState::Manufactured,
                    enrolled_by: "manifest",
                    proof: Proof::Family,
                    actor: "manifest",
                },
                &rows,
            )
            .await
            .map_err(duplicate)?;
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

    /// Checks the presented chain (end entity first) against the registry
    /// and decides what admitting it will do; writes nothing. The caller
    /// verifies the device's proof of possession with
    /// [`Resolved::public_key`] and only then calls [`Registry::admit`].
    pub async fn resolve(&self, chain: &[Vec<u8>]) -> Result<Resolved, RegistryError> {
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
                return Ok(Resolved {
                    public_key: a.public_key.clone(),
                    plan: Plan::Cached(Authorized {
                        enrolled_now: false,
                        ..a
                    }),
                    leaf_der: leaf_der.clone(),
                    fingerprint: fp,
                    not_after,
                    generation,
                });
            }
        }
        let leaf =
            IssuedCert::from_der(leaf_der).map_err(|e| RegistryError::Malformed(e.to_string()))?;
        let known = self.store.credential_by_fingerprint(&fp).await?;
        let family = self.family_of(&leaf).await?;
        if let Some(e) = family_error(family.as_ref()) {
            return Err(e);
        }
        let plan = match known {
            Some((credential, device)) => {
                let erase_only = device_error(&device, Some(&credential))?;
                // A device claimed without proof, under a family another
                // tenant owns: the family's owner wins.
                if let Some(f) = &family {
                    if device.tenant_id != f.tenant_id && device.proof == Proof::None {
                        return Err(RegistryError::ForeignFamily);
                    }
                }
                self.check_chain(&leaf, leaf_der, chain, family.as_ref(), true)?;
                Plan::Known {
                    device,
                    credential,
                    erase_only,
                }
            }
            None => {
                let f = family.ok_or(RegistryError::UnknownCa)?;
                // A certificate the family's revocation list names.
                if self
                    .revoked_serials(&f.id)
                    .await?
                    .contains(&leaf.serial_hex())
                {
                    return Err(RegistryError::DeviceRevoked);
                }
                self.check_chain(&leaf, leaf_der, chain, Some(&f), false)?;
                let serial = leaf
                    .subject_serial_number()
                    .unwrap_or_else(|| fp[..16].to_string());
                self.plan_new(&leaf, f, serial).await?
            }
        };
        Ok(Resolved {
            plan,
            public_key: leaf.public_point(),
            leaf_der: leaf_der.clone(),
            fingerprint: fp,
            not_after: leaf.validity().1,
            generation,
        })
    }

    /// Path validation against the family (time, EKU, path); a device
    /// without a family (registered before families were required) is
    /// checked against its own pinned certificate.
    fn check_chain(
        &self,
        leaf: &IssuedCert,
        leaf_der: &[u8],
        chain: &[Vec<u8>],
        family: Option<&FamilyRow>,
        known: bool,
    ) -> Result<(), RegistryError> {
        let anchor = match family {
            Some(f) => f.certificate.clone(),
            None if known => leaf_der.to_vec(),
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
        Ok(())
    }

    /// A certificate the registry has never seen, issued by a registered
    /// family: a new credential of a known device (same UEID, or same chip
    /// serial in the same family), or a new device.
    async fn plan_new(
        &self,
        leaf: &IssuedCert,
        family: FamilyRow,
        serial: String,
    ) -> Result<Plan, RegistryError> {
        let same_chip = self.store.devices_by_serial(&serial).await?;
        if same_chip
            .iter()
            .any(|d| d.family_id.as_deref() != Some(family.id.as_str()))
        {
            return Err(RegistryError::SerialTaken);
        }
        let by_ueid = match leaf.ueid() {
            Some(u) => self.store.device(&u.to_hex()).await?,
            None => same_chip.into_iter().next(),
        };
        match by_ueid {
            Some(device) => {
                if device.family_id.as_deref() != Some(family.id.as_str())
                    || device.serial != serial
                {
                    return Err(RegistryError::IdentityTaken);
                }
                device_error(&device, None)?;
                Ok(Plan::NewCredential { device, family })
            }
            None => {
                if self
                    .store
                    .devices_by_serial(&serial)
                    .await?
                    .iter()
                    .any(|d| d.family_id.as_deref() == Some(family.id.as_str()))
                {
                    // The same chip under a new identity: the old one must
                    // be decommissioned first.
                    return Err(RegistryError::IdentityTaken);
                }
                Ok(Plan::NewDevice {
                    id: device_id_of(leaf),
                    family,
                    serial,
                })
            }
        }
    }

    /// Admits a resolved chain whose proof of possession verified:
    /// enrolls a new device, records a new credential, activates a device
    /// on its first authentication.
    pub async fn admit(&self, r: Resolved) -> Result<Authorized, RegistryError> {
        let Resolved {
            plan,
            leaf_der,
            fingerprint: fp,
            public_key,
            not_after,
            generation,
        } = r;
        let (device, credential_id, erase_only, enrolled_now) = match plan {
            Plan::Cached(a) => return Ok(a),
            Plan::Known {
                device,
                credential,
                erase_only,
            } => (device, credential.id, erase_only, false),
            Plan::NewCredential { device, family } => {
                let id = self
                    .store
                    .add_credential(
                        &device,
                        &leaf_der,
                        &fp,
                        &public_key,
                        &format!("family {}", family.name),
                    )
                    .await?;
                self.store
                    .audit(
                        Some(&device.tenant_id),
                        "credential-added",
                        &device.serial,
                        "ok",
                        &format!(
                            "device {} credential {id} issued by family {}",
                            device.id, family.name
                        ),
                    )
                    .await?;
                (device, id, false, false)
            }
            Plan::NewDevice { family, serial, id } => {
                let inserted = self
                    .store
                    .enroll(
                        Entry {
                            tenant: &family.tenant_id,
                            family_id: Some(&family.id),
                            state: DeviceState::Active,
                            enrolled_by: "family",
                            proof: Proof::Family,
                            actor: &format!("family {}", family.name),
                        },
                        &[NewDevice {
                            id: id.clone(),
                            serial: &serial,
                            certificate: &leaf_der,
                            fingerprint: fp.clone(),
                            public_key: &public_key,
                        }],
                    )
                    .await;
                let enrolled_now = inserted.is_ok();
                if enrolled_now {
                    self.store
                        .audit(
                            Some(&family.tenant_id),
                            "enroll",
                            &serial,
                            "ok",
                            &format!("device {id} through family {}", family.name),
                        )
                        .await?;
                }
                // Another replica may have enrolled it at the same moment.
                let (c, d) = self
                    .store
                    .credential_by_fingerprint(&fp)
                    .await?
                    .ok_or(RegistryError::UnknownCa)?;
                (d, c.id, false, enrolled_now)
            }
        };
        if matches!(
            device.state,
            DeviceState::Manufactured | DeviceState::Registered
        ) {
            let to = lifecycle::transition(device.state, Action::Activate)?;
            self.store
                .set_device_state(
                    &device,
                    device.state,
                    to,
                    Action::Activate,
                    "device",
                    "first authentication",
                    None,
                )
                .await?;
        }
        let a = Authorized {
            device_id: device.id,
            credential_id,
            erase_only,
            tenant_id: device.tenant_id,
            serial: device.serial,
            public_key,
            enrolled_now,
        };
        if !erase_only {
            if let Ok(mut c) = self.cache.lock() {
                if (c.epoch, c.local) == generation {
                    c.verified.insert(fp, (a.clone(), not_after));
                }
            }
        }
        Ok(a)
    }

    /// The tenant a presented chain belongs to, for attributing a refusal:
    /// the owner of its credential's device, else of its issuing family.
    pub async fn tenant_of(&self, chain: &[Vec<u8>]) -> Option<String> {
        let leaf_der = chain.first()?;
        if let Ok(Some((_, d))) = self
            .store
            .credential_by_fingerprint(&fingerprint(leaf_der))
            .await
        {
            return Some(d.tenant_id);
        }
        let leaf = IssuedCert::from_der(leaf_der).ok()?;
        self.family_of(&leaf).await.ok()?.map(|f| f.tenant_id)
    }
}

/// The device id a certificate names: its UEID, or a fresh one for a
/// certificate without.
pub fn device_id_of(cert: &IssuedCert) -> String {
    cert.ueid().unwrap_or_else(inkan_pki::Ueid::random).to_hex()
}

/// A unique violation on insert means the device is already registered.
fn duplicate(err: StoreError) -> RegistryError {
    if err.is_unique_violation() {
        RegistryError::Duplicate
    } else {
        RegistryError::Store(err)
    }
}
