//! Device authentication: the EDHOC responder of the [`App`]. The state between message_2 and
//! message_3 lives in the store (any replica can finish an exchange), is
//! capped in number, expires, and is taken exactly once.

use crate::registry::{Authorized, RegistryError};
use crate::store::StoreError;
use crate::App;
use inkan_proto::edhoc::crypto::{Provider, SignatureKey, SoftwareSigner};
use inkan_proto::edhoc::{
    ConnId, Credential, EdhocError, IdCred, IdCredKind, Responder, ResponderAwaitingMessage3, Suite,
};
use std::sync::Mutex;

/// The responder's cryptography: aws-lc-rs.
pub const PROVIDER: crate::provider::AwsLc = crate::provider::AwsLc;

/// Why an authentication failed (each also lands in the audit log).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The EDHOC layer refused a message.
    #[error("EDHOC: {0}")]
    Edhoc(#[from] EdhocError),
    /// The device's credential was refused.
    #[error("{0}")]
    Registry(#[from] RegistryError),
    /// message_3 names no pending exchange: unknown, already finished
    /// (a replay), or purged.
    #[error("no pending exchange for this C_R (replayed or unknown message_3)")]
    UnknownExchange,
    /// The exchange expired before message_3 arrived.
    #[error("exchange expired")]
    Expired,
    /// Too many exchanges are pending (a flood of message_1).
    #[error("too many pending exchanges")]
    Busy,
    /// The device did not present an X.509 chain.
    #[error("unsupported credential type: {0}")]
    Credential(&'static str),
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AuthError {
    /// A short reason for the audit log.
    pub fn reason(&self) -> String {
        self.to_string()
    }

    /// A fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::Edhoc(_) => "edhoc",
            AuthError::Registry(_) => "credential refused",
            AuthError::UnknownExchange => "unknown exchange",
            AuthError::Expired => "exchange expired",
            AuthError::Busy => "busy",
            AuthError::Credential(_) => "credential type",
            AuthError::Store(_) => "store",
        }
    }

    /// What the device is told: a fixed reason, never database or library
    /// text (the audit log has the detail).
    pub fn public_reason(&self) -> String {
        match self {
            AuthError::Store(_) | AuthError::Registry(RegistryError::Store(_)) => {
                "internal error".into()
            }
            AuthError::Registry(RegistryError::Malformed(_)) => "malformed certificate".into(),
            other => other.to_string(),
        }
    }
}

/// Refusals of unauthenticated traffic (nothing identifies a tenant):
/// counted per kind, source address and reason, and written to the audit
/// log as aggregates at most once per interval, so a flood cannot grow the
/// log without bound. At most [`REFUSAL_KEYS`] distinct keys are kept per
/// interval; more sources are counted as "other sources".
#[derive(Default)]
pub(crate) struct RefusalTally {
    pub(crate) since: Option<std::time::Instant>,
    pub(crate) counts: std::collections::BTreeMap<(String, String, String), u64>,
}

/// How often aggregated refusals are written.
pub const REFUSAL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Distinct (kind, source, reason) keys counted per interval.
pub const REFUSAL_KEYS: usize = 1024;

/// The source address of a peer (its IP, without the port: a flood from
/// many ports of one host is one source).
pub fn source_of(peer: &str) -> String {
    peer.parse::<std::net::SocketAddr>()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| peer.to_string())
}

/// Limits on pending exchanges.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Seconds an exchange waits for message_3.
    pub ttl_secs: i64,
    /// Most exchanges pending at once (across replicas).
    pub max_pending: i64,
    /// Seconds a session (and its OSCORE context) lives; then the device
    /// runs EDHOC again.
    pub session_ttl_secs: i64,
    /// Datagrams per second one source address may send (bursts of twice
    /// as many) before the device endpoint sheds it.
    pub source_rate: u32,
    /// message_1s per second this replica takes from addresses that have
    /// not proved they receive; past it, each is first asked for an Echo
    /// (RFC 9175). 0 asks every time.
    pub echo_rate: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            ttl_secs: 30,
            max_pending: 10_000,
            session_ttl_secs: 24 * 3600,
            source_rate: 2000,
            echo_rate: 500,
        }
    }
}

/// One suite's credential: the signing key and the certificate presented.
struct SuiteIdentity {
    signer: Mutex<Box<dyn SignatureKey + Send>>,
    /// The key's public half (SEC1 point or Ed25519 key).
    public: Vec<u8>,
    cred: Credential,
    id_cred: IdCred,
}

/// The cloud's EDHOC identity: its P-256 key (pinned in every device) and
/// the certificate it presents in suite 2; for suite 0, an Ed25519 key
/// whose certificate the pinned key signed (devices check that signature).
pub struct CloudIdentity {
    p256: SuiteIdentity,
    ed25519: Option<SuiteIdentity>,
    /// Wraps the OSCORE secrets of sessions in the store; derived from the
    /// cloud key, so every replica can unwrap them.
    wrap_key: zeroize::Zeroizing<[u8; 16]>,
    /// Keys the values every replica must make and check alike without
    /// sharing state (Echo values, firmware image keys and paths); derived
    /// from the cloud key.
    derive_key: zeroize::Zeroizing<[u8; 64]>,
}

type WrapCipher = ccm::Ccm<aes::Aes128, ccm::consts::U8, ccm::consts::U13>;

impl CloudIdentity {
    /// An identity from the P-256 scalar of the cloud authentication key
    /// and a certificate for it. When that certificate is a CA, a fresh
    /// Ed25519 key is certified under it and suite 0 is offered too.
    pub fn new(scalar: &[u8], certificate_der: &[u8]) -> Result<CloudIdentity, EdhocError> {
        let public = SoftwareSigner::from_bytes(Suite::P256Es256, scalar)?.public_key();
        let signer = PROVIDER.signer(Suite::P256Es256, scalar)?;
        let cred = Credential::x509(certificate_der, public.clone());
        let ed25519 = Self::ed25519_under(scalar, certificate_der);
        let mut wrap_key = zeroize::Zeroizing::new([0u8; 16]);
        hkdf::Hkdf::<sha2::Sha256>::new(Some(b"inkan session wrap v1"), scalar)
            .expand(b"oscore master secret and salt", &mut *wrap_key)
            .map_err(|_| EdhocError::Key("session wrap key".into()))?;
        let mut derive_key = zeroize::Zeroizing::new([0u8; 64]);
        hkdf::Hkdf::<sha2::Sha256>::new(Some(b"inkan derived values v1"), scalar)
            .expand(b"echo values, image keys and paths", &mut *derive_key)
            .map_err(|_| EdhocError::Key("derived values key".into()))?;
        Ok(CloudIdentity {
            wrap_key,
            derive_key,
            p256: SuiteIdentity {
                signer: Mutex::new(signer),
                public,
                cred,
                id_cred: IdCred::x5chain(&[certificate_der.to_vec()]),
            },
            ed25519,
        })
    }

    /// A fresh Ed25519 key and its certificate, issued by the cloud key.
    fn ed25519_under(scalar: &[u8], certificate_der: &[u8]) -> Option<SuiteIdentity> {
        let ca_key = p256::ecdsa::SigningKey::from_slice(scalar).ok()?;
        let ca_key = inkan_pki::SoftwareKey::P256(ca_key);
        let ca = inkan_pki::IssuedCert::from_der(certificate_der).ok()?;
        ca.require_ca().ok()?;
        let seed = zeroize::Zeroizing::new({
            let mut b = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
            b
        });
        let public = SoftwareSigner::from_bytes(Suite::X25519EdDsa, &*seed)
            .ok()?
            .public_key();
        let signer = PROVIDER.signer(Suite::X25519EdDsa, &*seed).ok()?;
        let cert = inkan_pki::cert::issue_signer(
            &ca_key,
            &ca,
            &public,
            "inkan cloud",
            "inkan cloud authentication (Ed25519)",
            &inkan_pki::CertPolicy::default(),
        )
        .ok()?;
        Some(SuiteIdentity {
            cred: Credential::x509(&cert.der, public.clone()),
            signer: Mutex::new(signer),
            public,
            id_cred: IdCred::x5chain(&[cert.der]),
        })
    }

    /// HMAC-SHA256 under the derived-values key over `label` and `parts`
    /// (each length-prefixed, so no two inputs collide).
    pub(crate) fn derive(&self, label: &str, parts: &[&[u8]]) -> zeroize::Zeroizing<[u8; 32]> {
        use hmac::Mac;
        // A key of SHA-256's block size is used as it is.
        let mut m =
            <hmac::Hmac<sha2::Sha256> as hmac::digest::KeyInit>::new(&(*self.derive_key).into());
        for p in std::iter::once(label.as_bytes()).chain(parts.iter().copied()) {
            m.update(&u32::try_from(p.len()).unwrap_or(u32::MAX).to_be_bytes());
            m.update(p);
        }
        zeroize::Zeroizing::new(m.finalize().into_bytes().into())
    }

    /// Wraps a session's secret state for the store (AES-CCM, random
    /// nonce, bound to the session's C_R).
    pub fn wrap(&self, c_r: &str, secret: &[u8]) -> Result<Vec<u8>, EdhocError> {
        use ccm::aead::{Aead, KeyInit, Payload};
        let mut nonce = [0u8; 13];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        let c = WrapCipher::new_from_slice(&*self.wrap_key)
            .map_err(|_| EdhocError::Key("wrap key".into()))?;
        let ct = c
            .encrypt(
                ccm::Nonce::<ccm::consts::U13>::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: c_r.as_bytes(),
                },
            )
            .map_err(|_| EdhocError::Key("wrap".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Unwraps what [`CloudIdentity::wrap`] made for `c_r`.
    pub fn unwrap(&self, c_r: &str, blob: &[u8]) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        use ccm::aead::{Aead, KeyInit, Payload};
        let (nonce, ct) = blob.split_at_checked(13)?;
        let c = WrapCipher::new_from_slice(&*self.wrap_key).ok()?;
        c.decrypt(
            ccm::Nonce::<ccm::consts::U13>::from_slice(nonce),
            Payload {
                msg: ct,
                aad: c_r.as_bytes(),
            },
        )
        .ok()
        .map(zeroize::Zeroizing::new)
    }

    /// Signs a document the cloud vouches for (a transfer of ownership)
    /// with its P-256 key: raw `r ‖ s` over `msg`.
    pub fn sign_document(&self, msg: &[u8]) -> Result<Vec<u8>, EdhocError> {
        let mut s = self
            .p256
            .signer
            .lock()
            .map_err(|_| EdhocError::Key("cloud signer lock poisoned".into()))?;
        s.sign(msg)
    }

    /// The cloud key's public point (SEC1), which documents it signed
    /// verify with.
    pub fn document_key(&self) -> Vec<u8> {
        self.p256.public.clone()
    }

    /// The suites offered, most preferred first.
    pub fn suites(&self) -> Vec<Suite> {
        let mut v = vec![Suite::P256Es256];
        if self.ed25519.is_some() {
            v.push(Suite::X25519EdDsa);
        }
        v
    }

    fn for_suite(&self, suite: Suite) -> Option<&SuiteIdentity> {
        match suite {
            Suite::P256Es256 => Some(&self.p256),
            Suite::X25519EdDsa => self.ed25519.as_ref(),
        }
    }
}

/// The result of a successful authentication.
#[derive(Clone, Debug)]
pub struct Authenticated {
    /// The device.
    pub device: Authorized,
    /// The session id.
    pub session_id: String,
    /// message_4 to send back.
    pub message_4: Vec<u8>,
}

fn conn_id_hex(c: &ConnId) -> String {
    hex::encode(&c.0)
}

impl App {
    /// Takes one pending exchange from `peer`'s share: each source address
    /// may hold an eighth of `Limits::max_pending` at once (a token bucket
    /// given back when an exchange is finished, and refilled as exchanges
    /// expire), so one sender cannot fill the cap that every device shares.
    fn exchange_share(&self, peer: &str) -> bool {
        let Ok(ip) = source_of(peer).parse::<std::net::IpAddr>() else {
            return true;
        };
        let share = (self.limits.max_pending / 8).max(1) as f64;
        let refill = share / self.limits.ttl_secs.max(1) as f64;
        let now = std::time::Instant::now();
        let Ok(mut shares) = self.exchange_shares.lock() else {
            return true;
        };
        if shares.len() >= 65_536 && !shares.contains_key(&ip) {
            shares.retain(|_, (tokens, t)| {
                *tokens + now.duration_since(*t).as_secs_f64() * refill < share
            });
        }
        let (tokens, last) = shares.entry(ip).or_insert((share, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * refill).min(share);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Gives a source back the share an exchange it finished (or let
    /// expire) held.
    fn return_share(&self, peer: &str) {
        let Ok(ip) = source_of(peer).parse::<std::net::IpAddr>() else {
            return;
        };
        let share = (self.limits.max_pending / 8).max(1) as f64;
        if let Ok(mut shares) = self.exchange_shares.lock() {
            if let Some((tokens, _)) = shares.get_mut(&ip) {
                *tokens = (*tokens + 1.0).min(share);
            }
        }
    }

    /// Counts a refusal of unauthenticated traffic: the first after a
    /// quiet interval is written at once, the others as one aggregated
    /// entry per kind, source and reason when the interval ends.
    pub async fn refused_unauthenticated(&self, kind: &str, peer: &str, reason: &str) {
        self.refused_unauthenticated_n(kind, peer, reason, 1).await
    }

    /// The same for `n` refusals at once (a caller that counts them
    /// itself on a hot path).
    pub async fn refused_unauthenticated_n(&self, kind: &str, peer: &str, reason: &str, n: u64) {
        let key = (kind.to_string(), source_of(peer), reason.to_string());
        let due: Vec<((String, String, String), u64)> = {
            let Ok(mut t) = self.refusals.lock() else {
                return;
            };
            let now = std::time::Instant::now();
            match t.since {
                Some(since) if now.duration_since(since) < REFUSAL_INTERVAL => {
                    let key = if t.counts.len() >= REFUSAL_KEYS && !t.counts.contains_key(&key) {
                        (key.0, "other sources".to_string(), key.2)
                    } else {
                        key
                    };
                    *t.counts.entry(key).or_default() += n;
                    Vec::new()
                }
                _ => {
                    let mut out: Vec<_> = std::mem::take(&mut t.counts).into_iter().collect();
                    out.push((key, n));
                    t.since = Some(now);
                    out
                }
            }
        };
        self.write_refusals(due).await;
    }

    /// Writes what was counted and starts a new interval (the device
    /// endpoint calls this every [`REFUSAL_INTERVAL`]).
    pub async fn flush_refusals(&self) {
        let due: Vec<_> = match self.refusals.lock() {
            Ok(mut t) => {
                t.since = None;
                std::mem::take(&mut t.counts).into_iter().collect()
            }
            Err(_) => return,
        };
        self.write_refusals(due).await;
    }

    async fn write_refusals(&self, due: Vec<((String, String, String), u64)>) {
        for ((kind, source, reason), n) in due {
            let _ = self
                .registry
                .store
                .audit(None, &kind, &source, "refused", &format!("{n} x {reason}"))
                .await;
        }
    }

    /// Handles message_1; returns message_2. Errors carry the EDHOC error
    /// message to send.
    pub async fn message_1(&self, m1: &[u8], peer: &str) -> Result<Vec<u8>, (AuthError, Vec<u8>)> {
        let r = self.message_1_inner(m1, peer).await;
        if let Err((e, _)) = &r {
            self.metrics.refused("message_1", e.label());
            self.refused_unauthenticated(
                "authenticate",
                peer,
                &format!("message_1: {}", e.reason()),
            )
            .await;
        }
        r
    }

    async fn message_1_inner(
        &self,
        m1: &[u8],
        peer: &str,
    ) -> Result<Vec<u8>, (AuthError, Vec<u8>)> {
        // Each source address holds at most its share of the pending
        // exchanges: refused before any cryptography is spent on it.
        if !self.exchange_share(peer) {
            return Err((
                AuthError::Busy,
                inkan_proto::edhoc::error_message(
                    1,
                    &inkan_proto::edhoc::ErrorInfo::Text("busy".into()),
                ),
            ));
        }
        let supported = self.identity.suites();
        let r1 = Responder::process_message_1(m1, &supported).map_err(|e| {
            let msg = Responder::error_for(&e, &supported);
            (AuthError::Edhoc(e), msg)
        })?;
        let suite = r1.suite;
        let id = self.identity.for_suite(suite).ok_or_else(|| {
            let e = EdhocError::UnsupportedSuite {
                selected: suite.id(),
            };
            let msg = Responder::error_for(&e, &supported);
            (AuthError::Edhoc(e), msg)
        })?;
        // 7 bytes: C_R is also the device's OSCORE Sender ID (at most 7
        // bytes with a 13-byte nonce) and the kid the cloud looks its
        // session up by, so it must not collide across many sessions.
        let mut c_r = [0u8; 7];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut c_r);
        let c_r = ConnId(c_r.to_vec());
        let made = {
            let mut signer = id.signer.lock().map_err(|_| {
                let e = EdhocError::Key("cloud signer lock poisoned".into());
                let msg = Responder::error_for(&e, &supported);
                (AuthError::Edhoc(e), msg)
            })?;
            let signer: &mut dyn SignatureKey = &mut **signer;
            PROVIDER.ephemeral(suite).and_then(|eph| {
                r1.prepare_message_2(c_r.clone(), &id.id_cred, &id.cred, &[], eph, signer)
            })
        };
        let (state, m2) = made.map_err(|e| {
            let msg = Responder::error_for(&e, &supported);
            (AuthError::Edhoc(e), msg)
        })?;
        let stored = self
            .registry
            .store
            .put_exchange(
                &conn_id_hex(&c_r),
                &state.to_bytes(),
                peer,
                self.limits.ttl_secs,
                self.limits.max_pending,
            )
            .await
            .map_err(|e| (AuthError::Store(e), Vec::new()))?;
        if !stored {
            return Err((
                AuthError::Busy,
                inkan_proto::edhoc::error_message(
                    1,
                    &inkan_proto::edhoc::ErrorInfo::Text("busy".into()),
                ),
            ));
        }
        Ok(m2)
    }

    /// Handles message_3 for the exchange `c_r`; authenticates the device.
    pub async fn message_3(
        &self,
        c_r: &ConnId,
        m3: &[u8],
        peer: &str,
    ) -> Result<Authenticated, AuthError> {
        let mut presented = None;
        let result = self.finish(c_r, m3, peer, &mut presented).await;
        let store = &self.registry.store;
        match &result {
            // Audited with the session, in the same commit.
            Ok(_) => {}
            Err(e) => {
                self.metrics.refused("message_3", e.label());
                // Attributed to the tenant whose device or family the
                // chain names, when it names one.
                let tenant = match &presented {
                    Some(chain) => self.registry.tenant_of(chain).await,
                    None => None,
                };
                match tenant {
                    Some(t) => {
                        store
                            .audit(Some(&t), "authenticate", peer, "refused", &e.reason())
                            .await?
                    }
                    // Nothing identifies a tenant: counted, not a row each.
                    None => {
                        self.refused_unauthenticated(
                            "authenticate",
                            peer,
                            &format!("message_3: {}", e.reason()),
                        )
                        .await
                    }
                }
            }
        }
        result
    }

    async fn finish(
        &self,
        c_r: &ConnId,
        m3: &[u8],
        peer: &str,
        presented: &mut Option<Vec<Vec<u8>>>,
    ) -> Result<Authenticated, AuthError> {
        let (state, live) = self
            .registry
            .store
            .take_exchange(&conn_id_hex(c_r))
            .await?
            .ok_or(AuthError::UnknownExchange)?;
        // The exchange is no longer pending: its source gets its slot back.
        self.return_share(peer);
        if !live {
            return Err(AuthError::Expired);
        }
        let state = ResponderAwaitingMessage3::from_bytes(&state)?;
        let p3 = state.process_message_3(m3)?;
        let suite = p3.suite();
        let chain = match p3.id_cred_i().parse()? {
            IdCredKind::X5chain(chain) => chain,
            // A known device may name its certificate by hash (SHA-256/64).
            IdCredKind::X5t { alg: -15, hash } if hash.len() == 8 => {
                let c = self
                    .registry
                    .store
                    .credential_by_fingerprint_prefix(&hex::encode(&hash))
                    .await?
                    .ok_or(AuthError::Credential(
                        "x5t names no known device: send x5chain",
                    ))?;
                vec![c.certificate]
            }
            IdCredKind::X5t { .. } => {
                return Err(AuthError::Credential(
                    "x5t with another hash than SHA-256/64",
                ))
            }
            IdCredKind::Kid(_) => return Err(AuthError::Credential("kid")),
        };
        *presented = Some(chain.clone());
        // Checked against the registry first (nothing written), then the
        // device's signature; only a device that proved it holds the key
        // is enrolled or gets a session.
        let resolved = self.registry.resolve(&chain).await?;
        let leaf = chain.first().ok_or(AuthError::Credential("empty chain"))?;
        let done = p3.verify_with(
            &Credential::x509(leaf, resolved.public_key().to_vec()),
            &PROVIDER,
        )?;
        let device = self.registry.admit(resolved).await?;
        let params = inkan_proto::oscore::ContextParams::from_edhoc(
            done.session(),
            false,
            &done.c_i,
            &done.c_r,
        )?;
        let mut secret = zeroize::Zeroizing::new(params.master_secret.to_vec());
        secret.extend_from_slice(&params.master_salt);
        let c_r_hex = conn_id_hex(&done.c_r);
        let wrapped = self.identity.wrap(&c_r_hex, &secret)?;
        let session_id = self
            .registry
            .store
            .insert_session(
                &device.device_id,
                &device.credential_id,
                &conn_id_hex(&done.c_i),
                &c_r_hex,
                Some(&wrapped),
                self.limits.session_ttl_secs,
                &device.tenant_id,
                &device.serial,
            )
            .await?;
        self.metrics.authenticated(suite);
        Ok(Authenticated {
            device,
            session_id,
            message_4: done.message_4(&[])?,
        })
    }
}
