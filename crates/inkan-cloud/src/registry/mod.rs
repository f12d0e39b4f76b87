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

mod admission;
mod claims;

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
