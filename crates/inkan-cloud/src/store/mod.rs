//! The store: SQLite (a file, WAL) by default, PostgreSQL when given a
//! `postgres://` URL. Both run the same migrations and the same queries
//! (sqlx's Any driver, `$n` placeholders, portable types).

mod audit;
mod campaigns;
mod commands;
mod devices;
mod exchanges;
mod families;
mod firmware;
mod readings;
mod sessions;
mod tokens;
mod usage;

pub use commands::CommandRow;
pub use devices::{
    CredentialRow, Decommission, DeviceRow, Entry, Event, HistoryEntry, NewDevice, TransferRecord,
};
pub use families::{FamilyRow, RevocationRow};
pub use readings::{ReadingKey, ReadingRow};
pub use sessions::SessionRow;
pub use tokens::TokenRow;
pub use usage::{UsageChange, UsageRow};

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
    /// The store could not be opened.
    #[error("cannot open the store {url}: {reason}")]
    Open {
        /// The store (without a password).
        url: String,
        /// Why.
        reason: String,
    },
    /// A value the store does not take.
    #[error("{0}")]
    Invalid(String),
    /// The group-commit writer could not write a row.
    #[error("database (group commit): {0}")]
    Append(String),
}

impl StoreError {
    /// A unique constraint refused the write (the row exists).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Db(sqlx::Error::Database(d)) if d.is_unique_violation())
    }
}

/// A store URL without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// A tenant name: 1 to 64 letters, digits, '-', '_' or '.'.
pub fn check_tenant_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "{name:?} is not a tenant name: use 1 to 64 letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
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
    exchanges: Option<tokio::sync::mpsc::UnboundedSender<exchanges::ExchangeJob>>,
}

/// A row the group-commit writer appends.
#[derive(Clone, Debug)]
pub(crate) enum Append {
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
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(&url)
            .await
            .map_err(|e| StoreError::Open {
                url: redacted(&url),
                reason: e.to_string(),
            })?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Open {
                url: redacted(&url),
                reason: e.to_string(),
            })?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(group_writer(pool.clone(), rx));
        let (etx, erx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(exchanges::exchange_batcher(pool.clone(), erx));
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

    /// Appends rows through the group-commit writer, queued together so
    /// they ride the same commit; returns once all are committed.
    pub(crate) async fn append_all(&self, rows: Vec<Append>) -> Result<(), StoreError> {
        let Some(w) = &self.writer else {
            return append_rows(&self.pool, &rows).await;
        };
        let mut waits = Vec::with_capacity(rows.len());
        for row in &rows {
            let (done, rx) = tokio::sync::oneshot::channel();
            if w.send(Job {
                row: row.clone(),
                done,
            })
            .is_err()
            {
                return append_rows(&self.pool, &rows).await;
            }
            waits.push(rx);
        }
        for rx in waits {
            match rx.await {
                Ok(r) => r.map_err(StoreError::Append)?,
                Err(_) => return Err(StoreError::Append("group-commit writer gone".into())),
            }
        }
        Ok(())
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
        check_tenant_name(name).map_err(StoreError::Invalid)?;
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
}

/// A taken exchange: its state and expiry.
type Taken = Option<(Vec<u8>, i64)>;
