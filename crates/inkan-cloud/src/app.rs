//! The application state: one value holding the services of the cloud —
//! the registry (and through it the store), the EDHOC identity and limits,
//! the command and firmware keys — which every part (the device endpoint,
//! the device resources, the lifecycle service, the operator API) reaches.

use crate::auth::{CloudIdentity, Limits, RefusalTally};
use crate::registry::Registry;
use std::sync::Mutex;

/// The application state.
pub struct App {
    /// The registry.
    pub registry: Registry,
    pub(crate) identity: CloudIdentity,
    pub(crate) limits: Limits,
    pub(crate) command_key: Option<Box<dyn inkan_pki::CaSigner>>,
    pub(crate) previous_command_key: Option<Box<dyn inkan_pki::CaSigner>>,
    pub(crate) firmware_key: Option<Vec<u8>>,
    pub(crate) refusals: Mutex<RefusalTally>,
    /// Requests of one OSCORE session are handled one at a time in this
    /// process (sharded by kid): concurrent requests of a session never
    /// race on its replay window here; other replicas are kept apart by the
    /// store's compare-and-set.
    pub(crate) session_locks: Vec<tokio::sync::Mutex<()>>,
    /// How long audit entries are kept.
    pub(crate) audit_retention: std::time::Duration,
    /// Firmware images kept in memory for block-wise downloads.
    pub(crate) firmware_cache: Mutex<crate::firmware::Cache>,
    /// Each source address's share of the pending exchanges (a token
    /// bucket: tokens, last refill).
    pub(crate) exchange_shares:
        Mutex<std::collections::HashMap<std::net::IpAddr, (f64, std::time::Instant)>>,
    /// The budget of message_1s taken without an Echo (tokens, last
    /// refill).
    pub(crate) unverified_message_1: Mutex<Option<(f64, std::time::Instant)>>,
    /// The service's counters (Prometheus).
    pub(crate) metrics: crate::metrics::Metrics,
}

/// Shards of the per-session request locks.
const SESSION_LOCK_SHARDS: usize = 256;

impl App {
    /// The lock that serializes the requests of the session `kid`.
    pub(crate) fn session_lock(&self, kid: &[u8]) -> &tokio::sync::Mutex<()> {
        let h = kid.iter().fold(0usize, |a, b| {
            a.wrapping_mul(31).wrapping_add(usize::from(*b))
        });
        &self.session_locks[h % self.session_locks.len()]
    }

    /// The cloud's identity (and its session wrap key).
    pub(crate) fn identity(&self) -> &CloudIdentity {
        &self.identity
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Keeps audit entries for `retention` (one year by default); older
    /// ones are deleted by the device endpoint's housekeeping.
    pub fn with_audit_retention(mut self, retention: std::time::Duration) -> App {
        self.audit_retention = retention;
        self
    }

    /// Deletes audit entries older than the retention; returns how many.
    pub async fn purge_audit(&self) -> Result<u64, crate::store::StoreError> {
        let keep = i64::try_from(self.audit_retention.as_nanos()).unwrap_or(i64::MAX);
        self.registry
            .store
            .purge_audit_before(crate::store::now_nanos().saturating_sub(keep))
            .await
    }

    /// The application over a registry.
    pub fn new(registry: Registry, identity: CloudIdentity, limits: Limits) -> App {
        App {
            registry,
            identity,
            limits,
            command_key: None,
            previous_command_key: None,
            firmware_key: None,
            refusals: Mutex::new(RefusalTally::default()),
            audit_retention: std::time::Duration::from_secs(365 * 24 * 3600),
            exchange_shares: Mutex::new(std::collections::HashMap::new()),
            unverified_message_1: Mutex::new(None),
            metrics: Default::default(),
            firmware_cache: Mutex::new(crate::firmware::Cache::default()),
            session_locks: (0..SESSION_LOCK_SHARDS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    /// The key commands are signed with (its public half is pinned in the
    /// devices' zone 2): a key file or a PKCS#11 token.
    pub fn with_command_key(mut self, key: Box<dyn inkan_pki::CaSigner>) -> App {
        self.command_key = Some(key);
        self
    }

    /// The command key devices pinned before a rotation: it signs only the
    /// rotation command that hands them the current key.
    pub fn with_previous_command_key(mut self, key: Box<dyn inkan_pki::CaSigner>) -> App {
        self.previous_command_key = Some(key);
        self
    }

    /// The previous command key, if any.
    pub fn previous_command_key(&self) -> Option<&dyn inkan_pki::CaSigner> {
        self.previous_command_key.as_deref()
    }

    /// The OEM firmware key (SEC1 point) uploads are checked against.
    pub fn with_firmware_key(mut self, point: Vec<u8>) -> App {
        self.firmware_key = Some(point);
        self
    }

    /// The firmware key, if any.
    pub fn firmware_key(&self) -> Option<&[u8]> {
        self.firmware_key.as_deref()
    }

    /// The command key, if the service has one.
    pub fn command_key(&self) -> Option<&dyn inkan_pki::CaSigner> {
        self.command_key.as_deref()
    }
}
