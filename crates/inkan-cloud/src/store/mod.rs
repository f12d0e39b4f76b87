//! The store: SQLite (a file, WAL) by default, PostgreSQL when given a
//! `postgres://` URL. Both run the same migrations and the same queries
//! (sqlx's Any driver, `$n` placeholders, portable types).

mod devices;

pub use devices::{
    CredentialRow, Decommission, DeviceRow, Entry, Event, HistoryEntry, NewDevice, TransferRecord,
};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::AnyPool;
use sqlx::Row;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A row holds something unexpected.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The group-commit writer could not write a row.
    #[error("database (group commit): {0}")]
    Append(String),
}

/// Which database backs the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

// SQLite runs in WAL mode with synchronous=NORMAL: a committed transaction
// survives the service being killed at any moment (the WAL is written
// before the commit returns); only an operating-system crash or power loss
// can lose the last commits. PostgreSQL keeps its own fsync-on-commit.

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Nanoseconds since the Unix epoch (audit ordering).
pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A random identifier (128 bits, hex).
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    hex::encode(b)
}

/// The database.
#[derive(Clone, Debug)]
pub struct Store {
    /// The pool.
    pub pool: AnyPool,
    /// The backend.
    pub backend: Backend,
    /// The group-commit writer of audit entries and sessions.
    writer: Option<tokio::sync::mpsc::UnboundedSender<Job>>,
    /// Revocation-relevant changes made through this process: a replica
    /// drops its caches at once after its own changes, and polls the
    /// shared epoch for the others'.
    local_changes: Arc<AtomicU64>,
    /// Exchanges stored by this process (every 512th purges expired ones).
    exchanges_stored: Arc<AtomicU64>,
    /// The exchange batcher.
    exchanges: Option<tokio::sync::mpsc::UnboundedSender<ExchangeJob>>,
}

/// A row the group-commit writer appends.
#[derive(Clone, Debug)]
enum Append {
    Audit {
        id: String,
        time: i64,
        tenant: Option<String>,
        kind: String,
        subject: String,
        outcome: String,
        detail: String,
    },
    Session {
        id: String,
        device_id: String,
        credential_id: String,
        c_i: String,
        c_r: String,
        created: i64,
        oscore: Option<Vec<u8>>,
        expires: i64,
    },
}

#[derive(Debug)]
struct Job {
    row: Append,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// Most rows one group commit carries.
const GROUP_MAX: usize = 256;

/// Appends rows, many requests' at a time: one transaction (and one
/// multi-row INSERT per table) for everything queued, each caller answered
/// only after the commit. Durable before acknowledged, at a fraction of the
/// per-statement cost when requests are concurrent.
async fn group_writer(pool: AnyPool, mut rx: tokio::sync::mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < GROUP_MAX {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let rows: Vec<Append> = jobs.iter().map(|j| j.row.clone()).collect();
        if append_rows(&pool, &rows).await.is_ok() {
            for j in jobs {
                let _ = j.done.send(Ok(()));
            }
            continue;
        }
        // One bad row must not fail the others: write them one by one.
        for j in jobs {
            let r = append_rows(&pool, std::slice::from_ref(&j.row))
                .await
                .map_err(|e| e.to_string());
            let _ = j.done.send(r);
        }
    }
}

/// Splits `n` rows into statements of 32, 8, 2 and 1 rows: a handful of
/// distinct SQL texts, so the per-connection statement cache keeps them
/// prepared whatever the batch size.
fn fixed_chunks(mut n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    for size in [32, 8, 2, 1] {
        while n >= size {
            out.push(size);
            n -= size;
        }
    }
    out
}

async fn append_rows(pool: &AnyPool, rows: &[Append]) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    let sessions: Vec<&Append> = rows
        .iter()
        .filter(|r| matches!(r, Append::Session { .. }))
        .collect();
    let audits: Vec<&Append> = rows
        .iter()
        .filter(|r| matches!(r, Append::Audit { .. }))
        .collect();
    let mut at = 0;
    for size in fixed_chunks(sessions.len()) {
        let chunk = &sessions[at..at + size];
        at += size;
        let sql = multi_insert(
            "INSERT INTO sessions (id, device_id, credential_id, c_i, c_r, created, oscore, expires) VALUES ",
            8,
            size,
        );
        let mut q = sqlx::query(&sql);
        let mut placeholders = Vec::with_capacity(size);
        let mut devices = Vec::with_capacity(size);
        let mut latest = 0;
        for (k, r) in chunk.iter().enumerate() {
            if let Append::Session {
                id,
                device_id,
                credential_id,
                c_i,
                c_r,
                created,
                oscore,
                expires,
            } = r
            {
                q = q
                    .bind(id)
                    .bind(device_id)
                    .bind(credential_id)
                    .bind(c_i)
                    .bind(c_r)
                    .bind(*created)
                    .bind(oscore.clone())
                    .bind(*expires);
                placeholders.push(format!("${}", k + 2));
                devices.push(device_id);
                latest = latest.max(*created);
            }
        }
        q.execute(&mut *tx).await?;
        let sql = format!(
            "UPDATE devices SET last_auth = $1 WHERE id IN ({})",
            placeholders.join(", ")
        );
        let mut u = sqlx::query(&sql).bind(latest);
        for d in devices {
            u = u.bind(d);
        }
        u.execute(&mut *tx).await?;
    }
    let mut at = 0;
    for size in fixed_chunks(audits.len()) {
        let chunk = &audits[at..at + size];
        at += size;
        let sql = multi_insert(
            "INSERT INTO audit (id, time, tenant_id, kind, subject, outcome, detail) VALUES ",
            7,
            size,
        );
        let mut q = sqlx::query(&sql);
        for r in chunk {
            if let Append::Audit {
                id,
                time,
                tenant,
                kind,
                subject,
                outcome,
                detail,
            } = r
            {
                q = q
                    .bind(id)
                    .bind(*time)
                    .bind(tenant.clone())
                    .bind(kind)
                    .bind(subject)
                    .bind(outcome)
                    .bind(detail);
            }
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// `head` followed by `rows` tuples of `cols` numbered placeholders.
fn multi_insert(head: &str, cols: usize, rows: usize) -> String {
    let mut sql = String::from(head);
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..cols {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", r * cols + c + 1));
        }
        sql.push(')');
    }
    sql
}

/// An entry of a family's revocation list.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RevocationRow {
    /// The certificate's serial number (hex).
    pub cert_serial: String,
    /// The chip serial, when the device is known.
    pub device_serial: Option<String>,
    /// `operator`, or `crl N` for an imported CRL.
    pub source: String,
    /// When it entered the list (Unix seconds).
    pub time: i64,
}

/// A family row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyRow {
    /// Identifier.
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Name.
    pub name: String,
    /// Certificate DER.
    pub certificate: Vec<u8>,
    /// State.
    pub state: crate::lifecycle::FamilyState,
}

fn family(r: &AnyRow) -> Result<FamilyRow, StoreError> {
    Ok(FamilyRow {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        name: r.try_get("name")?,
        certificate: r.try_get("certificate")?,
        state: {
            let s: String = r.try_get("status")?;
            crate::lifecycle::FamilyState::parse(&s)
                .ok_or_else(|| StoreError::Corrupt(format!("family state {s:?}")))?
        },
    })
}

impl Store {
    /// Opens (creating) the store and runs the migrations. `url` is a
    /// SQLite file path, `sqlite://…`, or `postgres://…`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (url, backend) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (url.to_string(), Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            (url.to_string(), Backend::Sqlite)
        } else {
            (format!("sqlite://{url}?mode=rwc"), Backend::Sqlite)
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 16 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        sqlx::query("PRAGMA journal_mode=WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout=5000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys=ON")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous=NORMAL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(group_writer(pool.clone(), rx));
        let (etx, erx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(exchange_batcher(pool.clone(), erx));
        Ok(Store {
            pool,
            backend,
            writer: Some(tx),
            local_changes: Arc::new(AtomicU64::new(0)),
            exchanges_stored: Arc::new(AtomicU64::new(0)),
            exchanges: Some(etx),
        })
    }

    /// Appends a row through the group-commit writer (directly when the
    /// writer's runtime is gone); returns once it is committed.
    async fn append(&self, row: Append) -> Result<(), StoreError> {
        if let Some(w) = &self.writer {
            let (done, rx) = tokio::sync::oneshot::channel();
            if w.send(Job {
                row: row.clone(),
                done,
            })
            .is_ok()
            {
                if let Ok(r) = rx.await {
                    return r.map_err(StoreError::Append);
                }
            }
        }
        append_rows(&self.pool, std::slice::from_ref(&row)).await
    }

    /// How many revocation-relevant changes this process has made.
    pub fn local_changes(&self) -> u64 {
        self.local_changes.load(Ordering::SeqCst)
    }

    fn changed_here(&self) {
        self.local_changes.fetch_add(1, Ordering::SeqCst);
    }

    /// Creates a tenant (idempotent by name); returns its id.
    pub async fn ensure_tenant(&self, name: &str) -> Result<String, StoreError> {
        if let Some(r) = sqlx::query("SELECT id FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
        {
            return Ok(r.try_get("id")?);
        }
        let id = new_id();
        sqlx::query("INSERT INTO tenants (id, name, created) VALUES ($1, $2, $3)")
            .bind(&id)
            .bind(name)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(id)
    }

    /// A tenant's id by its name.
    pub async fn tenant_by_name(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query("SELECT id FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get("id"))
            .transpose()?)
    }

    /// A tenant's name by its id.
    pub async fn tenant_name(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query("SELECT name FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get("name"))
            .transpose()?)
    }

    /// A family by id.
    pub async fn family(&self, id: &str) -> Result<Option<FamilyRow>, StoreError> {
        let r = sqlx::query(
            "SELECT id, tenant_id, name, certificate, status FROM families WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(family).transpose()
    }

    /// Appends an audit entry.
    pub async fn audit(
        &self,
        tenant: Option<&str>,
        kind: &str,
        subject: &str,
        outcome: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        self.append(Append::Audit {
            id: new_id(),
            time: now_nanos(),
            tenant: tenant.map(str::to_string),
            kind: kind.to_string(),
            subject: subject.to_string(),
            outcome: outcome.to_string(),
            detail: detail.to_string(),
        })
        .await
    }

    /// A tenant's newest audit entries: (time ns, kind, subject, outcome,
    /// detail).
    pub async fn audit_in(
        &self,
        tenant_id: &str,
        limit: i64,
    ) -> Result<Vec<(i64, String, String, String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT time, kind, subject, outcome, detail FROM audit WHERE tenant_id = $1 ORDER BY time DESC LIMIT $2",
        )
        .bind(tenant_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("time")?,
                    r.try_get("kind")?,
                    r.try_get("subject")?,
                    r.try_get("outcome")?,
                    r.try_get("detail")?,
                ))
            })
            .collect()
    }

    /// The newest audit entries: (kind, subject, outcome, detail).
    pub async fn audit_tail(
        &self,
        n: i64,
    ) -> Result<Vec<(String, String, String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, subject, outcome, detail FROM audit ORDER BY time DESC LIMIT $1",
        )
        .bind(n)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("kind")?,
                    r.try_get("subject")?,
                    r.try_get("outcome")?,
                    r.try_get("detail")?,
                ))
            })
            .collect()
    }

    /// Inserts a family.
    pub async fn insert_family(
        &self,
        tenant: &str,
        name: &str,
        cert: &[u8],
        fingerprint: &str,
    ) -> Result<String, StoreError> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO families (id, tenant_id, name, certificate, fingerprint, status, created) VALUES ($1, $2, $3, $4, $5, 'active', $6)",
        )
        .bind(&id)
        .bind(tenant)
        .bind(name)
        .bind(cert.to_vec())
        .bind(fingerprint)
        .bind(now())
        .execute(&self.pool)
        .await?;
        self.changed_here();
        Ok(id)
    }

    /// Every family.
    pub async fn families(&self) -> Result<Vec<FamilyRow>, StoreError> {
        let rows = sqlx::query("SELECT id, tenant_id, name, certificate, status FROM families")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(family).collect()
    }

    /// A tenant's family by id (another tenant's is not found).
    pub async fn family_in(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<FamilyRow>, StoreError> {
        let r = sqlx::query(
            "SELECT id, tenant_id, name, certificate, status FROM families WHERE id = $1 AND tenant_id = $2",
        )
        .bind(id)
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(family).transpose()
    }

    /// A family by its certificate fingerprint.
    pub async fn family_by_fingerprint(&self, fp: &str) -> Result<Option<FamilyRow>, StoreError> {
        let r = sqlx::query(
            "SELECT id, tenant_id, name, certificate, status FROM families WHERE fingerprint = $1",
        )
        .bind(fp)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(family).transpose()
    }

    /// Adds an entry to a family's revocation list (kept if already there).
    pub async fn add_revocation<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
        exec: E,
        family_id: &str,
        cert_serial: &str,
        device_serial: Option<&str>,
        source: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO revocations (family_id, cert_serial, device_serial, source, time) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (family_id, cert_serial) DO NOTHING",
        )
        .bind(family_id)
        .bind(cert_serial)
        .bind(device_serial.map(str::to_string))
        .bind(source)
        .bind(now())
        .execute(exec)
        .await?;
        Ok(())
    }

    /// A family's revocation list, oldest first.
    pub async fn revocations(&self, family_id: &str) -> Result<Vec<RevocationRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT cert_serial, device_serial, source, time FROM revocations WHERE family_id = $1 ORDER BY time, cert_serial",
        )
        .bind(family_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RevocationRow {
                    cert_serial: r.try_get("cert_serial")?,
                    device_serial: r.try_get("device_serial")?,
                    source: r.try_get("source")?,
                    time: r.try_get("time")?,
                })
            })
            .collect()
    }

    /// The number of the newest CRL imported for a family.
    pub async fn crl_number(&self, family_id: &str) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query("SELECT crl_number FROM families WHERE id = $1")
            .bind(family_id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get::<Option<i64>, _>("crl_number"))
            .transpose()?
            .flatten())
    }

    /// Applies a verified CRL of a family in one transaction: its entries
    /// join the family's revocation list, the devices it names are revoked
    /// and their sessions ended, and its number becomes the family's
    /// newest. Returns the number of devices newly revoked.
    pub async fn apply_crl(
        &self,
        family_id: &str,
        number: i64,
        cert_serials: &[String],
    ) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await?;
        let source = format!("crl {number}");
        for s in cert_serials {
            Self::add_revocation(&mut *tx, family_id, s, None, &source).await?;
        }
        let listed: std::collections::HashSet<&str> =
            cert_serials.iter().map(String::as_str).collect();
        // Every credential of the family's devices not yet revoked: a
        // listed one is revoked, and its device with it.
        let rows = sqlx::query(
            "SELECT c.id AS credential_id, c.certificate, d.id, d.serial, d.tenant_id, d.status FROM credentials c \
             JOIN devices d ON d.id = c.device_id WHERE d.family_id = $1 AND c.state <> 'revoked'",
        )
        .bind(family_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut revoked = 0;
        for r in rows {
            let cert: Vec<u8> = r.try_get("certificate")?;
            let Ok(c) = inkan_pki::IssuedCert::from_der(&cert) else {
                continue;
            };
            let cert_serial = c.serial_hex();
            if !listed.contains(cert_serial.as_str()) {
                continue;
            }
            let id: String = r.try_get("id")?;
            let serial: String = r.try_get("serial")?;
            let tenant: String = r.try_get("tenant_id")?;
            let status: String = r.try_get("status")?;
            let credential_id: String = r.try_get("credential_id")?;
            sqlx::query("UPDATE credentials SET state = 'revoked', changed = $1 WHERE id = $2")
                .bind(now())
                .bind(&credential_id)
                .execute(&mut *tx)
                .await?;
            let from = crate::lifecycle::DeviceState::parse(&status);
            let to = from.and_then(|f| {
                crate::lifecycle::transition(f, crate::lifecycle::Action::Revoke).ok()
            });
            if let Some(to) = to {
                sqlx::query("UPDATE devices SET status = $1 WHERE id = $2")
                    .bind(to.as_str())
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
            }
            Self::record_event(
                &mut tx,
                &id,
                &tenant,
                Event {
                    kind: crate::lifecycle::Action::Revoke.as_str(),
                    from: to.and(from),
                    to,
                    actor: &source,
                    reason: &format!("credential {credential_id} listed by the family CRL"),
                },
            )
            .await?;
            sqlx::query("UPDATE sessions SET ended = $1 WHERE device_id = $2 AND ended IS NULL")
                .bind(now())
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE revocations SET device_serial = $1 WHERE family_id = $2 AND cert_serial = $3",
            )
            .bind(&serial)
            .bind(family_id)
            .bind(&cert_serial)
            .execute(&mut *tx)
            .await?;
            revoked += 1;
        }
        sqlx::query("UPDATE families SET crl_number = $1 WHERE id = $2")
            .bind(number)
            .bind(family_id)
            .execute(&mut *tx)
            .await?;
        Self::bump_epoch_in(&mut *tx).await?;
        tx.commit().await?;
        self.changed_here();
        Ok(revoked)
    }

    /// Sets a family's status and bumps the revocation epoch. Suspension
    /// and revocation end the sessions of all its devices.
    pub async fn set_family_state(
        &self,
        id: &str,
        state: crate::lifecycle::FamilyState,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("UPDATE families SET status = $1 WHERE id = $2")
            .bind(state.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if state != crate::lifecycle::FamilyState::Active {
            sqlx::query(
                "UPDATE sessions SET ended = $1 WHERE ended IS NULL AND device_id IN (SELECT id FROM devices WHERE family_id = $2)",
            )
            .bind(now())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        Self::bump_epoch_in(&mut *tx).await?;
        tx.commit().await?;
        self.changed_here();
        Ok(n > 0)
    }

    /// Bumps the revocation epoch (inside a caller's transaction).
    pub async fn bump_epoch_in<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
        exec: E,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE epochs SET value = value + 1 WHERE name = 'revocation'")
            .execute(exec)
            .await?;
        Ok(())
    }

    /// The revocation epoch.
    pub async fn epoch(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query("SELECT value FROM epochs WHERE name = 'revocation'")
                .fetch_one(&self.pool)
                .await?
                .try_get("value")?,
        )
    }

    /// Records a pending exchange, refusing when `cap` are already pending
    /// (expired ones are purged first).
    pub async fn put_exchange(
        &self,
        c_r: &str,
        state: &[u8],
        peer: &str,
        ttl: i64,
        cap: i64,
    ) -> Result<bool, StoreError> {
        let t = now();
        if self.exchanges_stored.fetch_add(1, Ordering::Relaxed) % 512 == 511 {
            sqlx::query("DELETE FROM exchanges WHERE expires < $1")
                .bind(t)
                .execute(&self.pool)
                .await?;
        }
        if let Some(b) = &self.exchanges {
            let (done, rx) = tokio::sync::oneshot::channel();
            let job = ExchangeJob::Put {
                c_r: c_r.to_string(),
                state: state.to_vec(),
                peer: peer.to_string(),
                expires: t + ttl,
                cap,
                done,
            };
            if b.send(job).is_ok() {
                if let Ok(r) = rx.await {
                    return r.map_err(StoreError::Append);
                }
            }
        }
        self.put_exchange_direct(c_r, state, peer, t + ttl, cap)
            .await
    }

    async fn put_exchange_direct(
        &self,
        c_r: &str,
        state: &[u8],
        peer: &str,
        expires: i64,
        cap: i64,
    ) -> Result<bool, StoreError> {
        put_exchange_on(&self.pool, c_r, state, peer, expires, cap).await
    }

    /// Takes a pending exchange (deleting it: message_3 is processed once).
    /// Returns None if unknown; the flag says whether it is still live.
    pub async fn take_exchange(&self, c_r: &str) -> Result<Option<(Vec<u8>, bool)>, StoreError> {
        if let Some(b) = &self.exchanges {
            let (done, rx) = tokio::sync::oneshot::channel();
            if b.send(ExchangeJob::Take {
                c_r: c_r.to_string(),
                done,
            })
            .is_ok()
            {
                if let Ok(r) = rx.await {
                    return r
                        .map(|o| o.map(|(state, expires)| (state, expires >= now())))
                        .map_err(StoreError::Append);
                }
            }
        }
        Ok(take_exchange_on(&self.pool, c_r)
            .await?
            .map(|(state, expires)| (state, expires >= now())))
    }
}

/// Inserts an exchange unless the cap of live ones is reached (one
/// statement; expired ones are purged only when the cap is hit).
async fn put_exchange_on(
    pool: &AnyPool,
    c_r: &str,
    state: &[u8],
    peer: &str,
    expires: i64,
    cap: i64,
) -> Result<bool, StoreError> {
    let t = now();
    // One statement in the common case: insert unless the cap of live
    // exchanges is reached. Expired ones are purged only when the cap
    // is hit, then the insert is tried once more.
    for attempt in 0..2 {
        let n = sqlx::query(
            "INSERT INTO exchanges (c_r, state, peer, expires) SELECT $1, $2, $3, $4 \
             WHERE (SELECT COUNT(*) FROM exchanges WHERE expires >= $5) < $6",
        )
        .bind(c_r)
        .bind(state.to_vec())
        .bind(peer)
        .bind(expires)
        .bind(t)
        .bind(cap)
        .execute(pool)
        .await?
        .rows_affected();
        if n == 1 {
            return Ok(true);
        }
        if attempt == 0 {
            sqlx::query("DELETE FROM exchanges WHERE expires < $1")
                .bind(t)
                .execute(pool)
                .await?;
        }
    }
    Ok(false)
}

/// Deletes an exchange and returns its state and expiry (at most once).
async fn take_exchange_on(pool: &AnyPool, c_r: &str) -> Result<Option<(Vec<u8>, i64)>, StoreError> {
    let r = sqlx::query("DELETE FROM exchanges WHERE c_r = $1 RETURNING state, expires")
        .bind(c_r)
        .fetch_optional(pool)
        .await?;
    match r {
        None => Ok(None),
        Some(r) => Ok(Some((r.try_get("state")?, r.try_get("expires")?))),
    }
}

/// A taken exchange: its state and expiry.
type Taken = Option<(Vec<u8>, i64)>;

/// A request to the exchange batcher.
#[derive(Debug)]
enum ExchangeJob {
    Put {
        c_r: String,
        state: Vec<u8>,
        peer: String,
        expires: i64,
        cap: i64,
        done: tokio::sync::oneshot::Sender<Result<bool, String>>,
    },
    Take {
        c_r: String,
        done: tokio::sync::oneshot::Sender<Result<Taken, String>>,
    },
}

/// Stores and takes pending EDHOC exchanges many requests at a time: the
/// puts of a batch are one multi-row INSERT under the cap, its takes one
/// DELETE … RETURNING, all in one transaction, each caller answered after
/// the commit. An exchange is taken at most once (the first request naming
/// a C_R in a batch gets it).
async fn exchange_batcher(
    pool: AnyPool,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<ExchangeJob>,
) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < GROUP_MAX {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        match exchange_batch(&pool, &jobs).await {
            Ok((puts, takes)) => {
                let (mut p, mut t) = (puts.into_iter(), takes.into_iter());
                for j in jobs {
                    match j {
                        ExchangeJob::Put { done, .. } => {
                            let _ = done.send(Ok(p.next().unwrap_or(false)));
                        }
                        ExchangeJob::Take { done, .. } => {
                            let _ = done.send(Ok(t.next().flatten()));
                        }
                    }
                }
            }
            // Each on its own, so one failure does not fail the others.
            Err(_) => {
                for j in jobs {
                    match j {
                        ExchangeJob::Put {
                            c_r,
                            state,
                            peer,
                            expires,
                            cap,
                            done,
                        } => {
                            let r = put_exchange_on(&pool, &c_r, &state, &peer, expires, cap)
                                .await
                                .map_err(|e| e.to_string());
                            let _ = done.send(r);
                        }
                        ExchangeJob::Take { c_r, done } => {
                            let r = take_exchange_on(&pool, &c_r)
                                .await
                                .map_err(|e| e.to_string());
                            let _ = done.send(r);
                        }
                    }
                }
            }
        }
    }
}

/// One batch in one transaction: the puts' verdicts and the takes' results,
/// each in job order.
async fn exchange_batch(
    pool: &AnyPool,
    jobs: &[ExchangeJob],
) -> Result<(Vec<bool>, Vec<Taken>), StoreError> {
    let t = now();
    let mut tx = pool.begin().await?;
    let puts: Vec<_> = jobs
        .iter()
        .filter_map(|j| match j {
            ExchangeJob::Put {
                c_r,
                state,
                peer,
                expires,
                cap,
                ..
            } => Some((c_r, state, peer, *expires, *cap)),
            ExchangeJob::Take { .. } => None,
        })
        .collect();
    let mut verdicts = Vec::with_capacity(puts.len());
    if !puts.is_empty() {
        let live: i64 = sqlx::query("SELECT COUNT(*) AS n FROM exchanges WHERE expires >= $1")
            .bind(t)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        let cap = puts.first().map(|p| p.4).unwrap_or(0);
        let room = usize::try_from((cap - live).max(0))
            .unwrap_or(0)
            .min(puts.len());
        let mut at = 0;
        for size in fixed_chunks(room) {
            let sql = multi_insert(
                "INSERT INTO exchanges (c_r, state, peer, expires) VALUES ",
                4,
                size,
            );
            let mut q = sqlx::query(&sql);
            for (c_r, state, peer, expires, _) in &puts[at..at + size] {
                q = q
                    .bind(*c_r)
                    .bind((*state).clone())
                    .bind(*peer)
                    .bind(*expires);
            }
            q.execute(&mut *tx).await?;
            at += size;
        }
        verdicts.extend((0..puts.len()).map(|i| i < room));
        if room < puts.len() {
            sqlx::query("DELETE FROM exchanges WHERE expires < $1")
                .bind(t)
                .execute(&mut *tx)
                .await?;
        }
    }
    let wanted: Vec<&String> = jobs
        .iter()
        .filter_map(|j| match j {
            ExchangeJob::Take { c_r, .. } => Some(c_r),
            ExchangeJob::Put { .. } => None,
        })
        .collect();
    let mut found: std::collections::HashMap<String, (Vec<u8>, i64)> =
        std::collections::HashMap::new();
    let mut distinct: Vec<&String> = Vec::new();
    for c in &wanted {
        if !distinct.contains(c) {
            distinct.push(c);
        }
    }
    let mut at = 0;
    for size in fixed_chunks(distinct.len()) {
        let marks: Vec<String> = (1..=size).map(|k| format!("${k}")).collect();
        let sql = format!(
            "DELETE FROM exchanges WHERE c_r IN ({}) RETURNING c_r, state, expires",
            marks.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for c in &distinct[at..at + size] {
            q = q.bind(c.as_str());
        }
        for r in q.fetch_all(&mut *tx).await? {
            found.insert(
                r.try_get("c_r")?,
                (r.try_get("state")?, r.try_get("expires")?),
            );
        }
        at += size;
    }
    tx.commit().await?;
    // The first request naming a C_R gets it; a duplicate gets nothing.
    let results = wanted.iter().map(|c| found.remove(c.as_str())).collect();
    Ok((verdicts, results))
}

impl Store {
    /// Pending exchanges.
    pub async fn pending_exchanges(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM exchanges")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }

    /// Records a session and the device's last authentication (group
    /// commit: durable when this returns).
    pub async fn insert_session(
        &self,
        device_id: &str,
        credential_id: &str,
        c_i: &str,
        c_r: &str,
        oscore: Option<&[u8]>,
        ttl_secs: i64,
    ) -> Result<String, StoreError> {
        let id = new_id();
        let t = now();
        self.append(Append::Session {
            id: id.clone(),
            device_id: device_id.to_string(),
            credential_id: credential_id.to_string(),
            c_i: c_i.to_string(),
            c_r: c_r.to_string(),
            created: t,
            oscore: oscore.map(<[u8]>::to_vec),
            expires: t.saturating_add(ttl_secs),
        })
        .await?;
        Ok(id)
    }

    /// The newest session whose C_R (the OSCORE kid of its device) is
    /// `c_r` (hex).
    pub async fn session_by_c_r(&self, c_r: &str) -> Result<Option<SessionRow>, StoreError> {
        let r = sqlx::query(
            "SELECT id, device_id, credential_id, c_i, c_r, oscore, expires, ended, replay_high, replay_bits \
             FROM sessions WHERE c_r = $1 ORDER BY created DESC LIMIT 1",
        )
        .bind(c_r)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = r else { return Ok(None) };
        Ok(Some(SessionRow {
            id: r.try_get("id")?,
            device_id: r.try_get("device_id")?,
            credential_id: r.try_get("credential_id")?,
            c_i: r.try_get("c_i")?,
            c_r: r.try_get("c_r")?,
            oscore: r.try_get("oscore")?,
            expires: r.try_get::<Option<i64>, _>("expires")?.unwrap_or(0),
            ended: r.try_get("ended")?,
            replay_high: r.try_get("replay_high")?,
            replay_bits: r.try_get::<Option<i64>, _>("replay_bits")?.unwrap_or(0),
        }))
    }

    /// Stores readings and advances the session's replay window in one
    /// transaction, only if the window is still `old` (another request or
    /// replica may have moved it: then nothing is written and `Ok(false)`
    /// tells the caller to re-check).
    pub async fn ingest(
        &self,
        session: &SessionRow,
        piv: i64,
        readings: &[(i64, i64, Vec<u8>)],
        signature: Option<&[u8]>,
        new_window: (i64, i64),
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        Self::insert_readings(&mut tx, session, piv, readings).await?;
        if let Some(cose) = signature {
            sqlx::query(
                "INSERT INTO reading_signatures (device_id, session_id, piv, cose) VALUES ($1, $2, $3, $4)",
            )
            .bind(&session.device_id)
            .bind(&session.id)
            .bind(piv)
            .bind(cose.to_vec())
            .execute(&mut *tx)
            .await?;
        }
        let n = sqlx::query(
            "UPDATE sessions SET replay_high = $1, replay_bits = $2 WHERE id = $3 \
             AND COALESCE(replay_high, -1) = $4 AND COALESCE(replay_bits, 0) = $5",
        )
        .bind(new_window.0)
        .bind(new_window.1)
        .bind(&session.id)
        .bind(session.replay_high.unwrap_or(-1))
        .bind(session.replay_bits)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Inserts readings with the statements [`Store::ingest`] uses, in one
    /// transaction, without the session checks: the raw reference of the
    /// telemetry benchmark.
    pub async fn insert_readings_raw(
        &self,
        session: &SessionRow,
        piv: i64,
        readings: &[(i64, i64, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        Self::insert_readings(&mut tx, session, piv, readings).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn insert_readings(
        conn: &mut sqlx::AnyConnection,
        session: &SessionRow,
        piv: i64,
        readings: &[(i64, i64, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let received = now();
        let mut at = 0;
        for size in reading_chunks(readings.len()) {
            let sql = multi_insert(
                "INSERT INTO readings (device_id, session_id, piv, idx, time, channel, value, received) VALUES ",
                8,
                size,
            );
            let mut q = sqlx::query(&sql);
            for (k, (time, channel, value)) in readings[at..at + size].iter().enumerate() {
                q = q
                    .bind(&session.device_id)
                    .bind(&session.id)
                    .bind(piv)
                    .bind(i64::try_from(at + k).unwrap_or(i64::MAX))
                    .bind(*time)
                    .bind(*channel)
                    .bind(value.clone())
                    .bind(received);
            }
            q.execute(&mut *conn).await?;
            at += size;
        }
        Ok(())
    }

    /// Requires (or not) the readings of a family's devices to be signed
    /// by their secure elements.
    pub async fn set_signed_readings(
        &self,
        family_id: &str,
        required: bool,
    ) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("UPDATE families SET signed_readings = $1 WHERE id = $2")
                .bind(i64::from(required))
                .bind(family_id)
                .execute(&self.pool)
                .await?
                .rows_affected()
                == 1,
        )
    }

    /// Queues a signed command.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_command(
        &self,
        id: &str,
        tenant_id: &str,
        device_id: &str,
        action: &str,
        cose: &[u8],
        expires: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::queue_command(&mut conn, id, tenant_id, device_id, action, cose, expires).await
    }

    /// Queues a command (in the caller's transaction or connection).
    pub(crate) async fn queue_command(
        conn: &mut sqlx::AnyConnection,
        id: &str,
        tenant_id: &str,
        device_id: &str,
        action: &str,
        cose: &[u8],
        expires: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO commands (id, tenant_id, device_id, action, cose, state, created, expires) \
             VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7)",
        )
        .bind(id)
        .bind(tenant_id)
        .bind(device_id)
        .bind(action)
        .bind(cose.to_vec())
        .bind(now_nanos())
        .bind(expires)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// The next command for a device (oldest queued, or delivered without
    /// a result), marked delivered; commands past their expiry become
    /// expired first.
    pub async fn next_command(
        &self,
        device_id: &str,
    ) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        let t = now();
        sqlx::query(
            "UPDATE commands SET state = 'expired', finished = $1 \
             WHERE device_id = $2 AND state IN ('queued', 'delivered') AND expires < $1",
        )
        .bind(t)
        .bind(device_id)
        .execute(&self.pool)
        .await?;
        let r = sqlx::query(
            "SELECT id, cose FROM commands WHERE device_id = $1 AND state IN ('queued', 'delivered') \
             ORDER BY created, id LIMIT 1",
        )
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = r else { return Ok(None) };
        let id: String = r.try_get("id")?;
        sqlx::query("UPDATE commands SET state = 'delivered', delivered = $1 WHERE id = $2 AND state = 'queued'")
            .bind(t)
            .bind(&id)
            .execute(&self.pool)
            .await?;
        Ok(Some((id, r.try_get("cose")?)))
    }

    /// Records a command's outcome, once: only a command of this device
    /// that is still queued or delivered changes.
    pub async fn finish_command(
        &self,
        device_id: &str,
        id: &str,
        state: &str,
        detail: &str,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "UPDATE commands SET state = $1, finished = $2, result = $3 \
             WHERE id = $4 AND device_id = $5 AND state IN ('queued', 'delivered')",
        )
        .bind(state)
        .bind(now())
        .bind(detail)
        .bind(id)
        .bind(device_id)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// A tenant's commands, newest first.
    pub async fn commands(
        &self,
        tenant_id: &str,
        device_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<CommandRow>, StoreError> {
        let t = now();
        sqlx::query(
            "UPDATE commands SET state = 'expired', finished = $1 \
             WHERE tenant_id = $2 AND state IN ('queued', 'delivered') AND expires < $1",
        )
        .bind(t)
        .bind(tenant_id)
        .execute(&self.pool)
        .await?;
        let rows = sqlx::query(
            "SELECT id, device_id, action, state, created, expires, delivered, finished, result FROM commands \
             WHERE tenant_id = $1 AND ($2 = '' OR device_id = $2) ORDER BY created DESC LIMIT $3",
        )
        .bind(tenant_id)
        .bind(device_id.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(CommandRow {
                    id: r.try_get("id")?,
                    device_id: r.try_get("device_id")?,
                    action: r.try_get("action")?,
                    state: r.try_get("state")?,
                    created_ns: r.try_get("created")?,
                    expires: r.try_get("expires")?,
                    delivered: r.try_get("delivered")?,
                    finished: r.try_get("finished")?,
                    result: r.try_get("result")?,
                })
            })
            .collect()
    }

    /// Advances a session's replay window if it is still the one read (see
    /// [`Store::ingest`]); `Ok(false)` when another request moved it.
    pub async fn advance_window(
        &self,
        session: &SessionRow,
        new_window: (i64, i64),
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "UPDATE sessions SET replay_high = $1, replay_bits = $2 WHERE id = $3 \
             AND COALESCE(replay_high, -1) = $4 AND COALESCE(replay_bits, 0) = $5",
        )
        .bind(new_window.0)
        .bind(new_window.1)
        .bind(&session.id)
        .bind(session.replay_high.unwrap_or(-1))
        .bind(session.replay_bits)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// Readings of a tenant's devices, oldest first, after the cursor
    /// `(time, device_id, session_id, piv, idx)` position `after_key`.
    #[allow(clippy::too_many_arguments)]
    pub async fn readings(
        &self,
        tenant_id: &str,
        device_id: Option<&str>,
        family_id: Option<&str>,
        from_ms: i64,
        to_ms: i64,
        after: Option<&ReadingKey>,
        limit: i64,
    ) -> Result<Vec<ReadingRow>, StoreError> {
        let (a_time, a_dev, a_sess, a_piv, a_idx) = match after {
            Some(k) => (
                k.time,
                k.device_id.clone(),
                k.session_id.clone(),
                k.piv,
                k.idx,
            ),
            None => (i64::MIN, String::new(), String::new(), i64::MIN, i64::MIN),
        };
        let rows = sqlx::query(
            "SELECT r.device_id, d.serial, r.session_id, r.piv, r.idx, r.time, r.channel, r.value, r.received, s.cose \
             FROM readings r JOIN devices d ON d.id = r.device_id \
             LEFT JOIN reading_signatures s ON s.device_id = r.device_id AND s.session_id = r.session_id AND s.piv = r.piv \
             WHERE d.tenant_id = $1 AND ($2 = '' OR r.device_id = $2) AND ($3 = '' OR d.family_id = $3) \
             AND r.time >= $4 AND r.time < $5 \
             AND (r.time > $6 OR (r.time = $6 AND (r.device_id > $7 OR (r.device_id = $7 AND (r.session_id > $8 \
                  OR (r.session_id = $8 AND (r.piv > $9 OR (r.piv = $9 AND r.idx > $10)))))))) \
             ORDER BY r.time, r.device_id, r.session_id, r.piv, r.idx LIMIT $11",
        )
        .bind(tenant_id)
        .bind(device_id.unwrap_or(""))
        .bind(family_id.unwrap_or(""))
        .bind(from_ms)
        .bind(to_ms)
        .bind(a_time)
        .bind(a_dev)
        .bind(a_sess)
        .bind(a_piv)
        .bind(a_idx)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ReadingRow {
                    key: ReadingKey {
                        time: r.try_get("time")?,
                        device_id: r.try_get("device_id")?,
                        session_id: r.try_get("session_id")?,
                        piv: r.try_get("piv")?,
                        idx: r.try_get("idx")?,
                    },
                    serial: r.try_get("serial")?,
                    channel: r.try_get("channel")?,
                    value: r.try_get("value")?,
                    received: r.try_get("received")?,
                    signature: r.try_get("cose")?,
                })
            })
            .collect()
    }
}

/// Readings go in statements of 64, 16, 4 and 1 rows (few distinct SQL
/// texts, all kept prepared).
fn reading_chunks(mut n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    for size in [64, 16, 4, 1] {
        while n >= size {
            out.push(size);
            n -= size;
        }
    }
    out
}

/// A command row.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CommandRow {
    /// Identifier (hex of the command id).
    pub id: String,
    /// The device.
    pub device_id: String,
    /// The action.
    pub action: String,
    /// queued, delivered, succeeded, failed, refused or expired.
    pub state: String,
    /// Created (ns since the epoch).
    pub created_ns: i64,
    /// Expiry (s).
    pub expires: i64,
    /// First delivered (s).
    pub delivered: Option<i64>,
    /// Finished (s).
    pub finished: Option<i64>,
    /// The device's report.
    pub result: Option<String>,
}

/// A session row.
#[derive(Clone, Debug)]
pub struct SessionRow {
    /// Identifier.
    pub id: String,
    /// The device.
    pub device_id: String,
    /// The credential it authenticated with.
    pub credential_id: Option<String>,
    /// C_I (hex): the device's OSCORE Recipient ID, the cloud's Sender ID.
    pub c_i: String,
    /// C_R (hex): the device's OSCORE Sender ID (the kid of its requests).
    pub c_r: String,
    /// The wrapped OSCORE master secret and salt.
    pub oscore: Option<Vec<u8>>,
    /// End of life (Unix seconds).
    pub expires: i64,
    /// When it was ended (revocation), if it was.
    pub ended: Option<i64>,
    /// Replay window: highest Partial IV accepted.
    pub replay_high: Option<i64>,
    /// Replay window bitmap.
    pub replay_bits: i64,
}

/// Where a reading sits in the paging order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadingKey {
    /// Device time (ms).
    pub time: i64,
    /// Device.
    pub device_id: String,
    /// Session.
    pub session_id: String,
    /// The request's Partial IV.
    pub piv: i64,
    /// Place in the batch.
    pub idx: i64,
}

/// A stored reading.
#[derive(Clone, Debug)]
pub struct ReadingRow {
    /// Its key.
    pub key: ReadingKey,
    /// The chip serial.
    pub serial: String,
    /// Channel.
    pub channel: i64,
    /// Value.
    pub value: Vec<u8>,
    /// When the cloud stored it (Unix seconds).
    pub received: i64,
    /// The device's COSE_Sign1 over the batch it came in, when signed.
    pub signature: Option<Vec<u8>>,
}
