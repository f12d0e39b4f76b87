//! The store: SQLite (a file, WAL) by default, PostgreSQL when given a
//! `postgres://` URL. Both run the same migrations and the same queries
//! (sqlx's Any driver, `$n` placeholders, portable types).

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::AnyPool;
use sqlx::Row;
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
}

/// A device row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRow {
    /// Identifier.
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Chip serial.
    pub serial: String,
    /// Family, when known.
    pub family_id: Option<String>,
    /// Certificate DER.
    pub certificate: Vec<u8>,
    /// Status: active, suspended, revoked.
    pub status: String,
    /// individual, manifest or family.
    pub enrolled_by: String,
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
    /// Status: active, suspended, revoked.
    pub status: String,
}

fn device(r: &AnyRow) -> Result<DeviceRow, StoreError> {
    Ok(DeviceRow {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        serial: r.try_get("serial")?,
        family_id: r.try_get("family_id")?,
        certificate: r.try_get("certificate")?,
        status: r.try_get("status")?,
        enrolled_by: r.try_get("enrolled_by")?,
    })
}

fn family(r: &AnyRow) -> Result<FamilyRow, StoreError> {
    Ok(FamilyRow {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        name: r.try_get("name")?,
        certificate: r.try_get("certificate")?,
        status: r.try_get("status")?,
    })
}

const DEVICE_COLS: &str = "id, tenant_id, serial, family_id, certificate, status, enrolled_by";

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
        Ok(Store { pool, backend })
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

    /// Appends an audit entry.
    pub async fn audit(
        &self,
        tenant: Option<&str>,
        kind: &str,
        subject: &str,
        outcome: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO audit (id, time, tenant_id, kind, subject, outcome, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(new_id())
            .bind(now_nanos())
            .bind(tenant.map(str::to_string))
            .bind(kind)
            .bind(subject)
            .bind(outcome)
            .bind(detail)
            .execute(&self.pool)
            .await?;
        Ok(())
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
        Ok(id)
    }

    /// Every family.
    pub async fn families(&self) -> Result<Vec<FamilyRow>, StoreError> {
        let rows = sqlx::query("SELECT id, tenant_id, name, certificate, status FROM families")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(family).collect()
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

    /// A device by its certificate fingerprint.
    pub async fn device_by_fingerprint(&self, fp: &str) -> Result<Option<DeviceRow>, StoreError> {
        let r = sqlx::query(&format!(
            "SELECT {DEVICE_COLS} FROM devices WHERE fingerprint = $1"
        ))
        .bind(fp)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(device).transpose()
    }

    /// The one device whose certificate fingerprint starts with `prefix`
    /// (hex), as an x5t (SHA-256/64) names it; None if none or several.
    pub async fn device_by_fingerprint_prefix(
        &self,
        prefix: &str,
    ) -> Result<Option<DeviceRow>, StoreError> {
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let rows = sqlx::query(&format!(
            "SELECT {DEVICE_COLS} FROM devices WHERE fingerprint LIKE $1 LIMIT 2"
        ))
        .bind(format!("{}%", prefix.to_ascii_lowercase()))
        .fetch_all(&self.pool)
        .await?;
        match rows.as_slice() {
            [one] => Ok(Some(device(one)?)),
            _ => Ok(None),
        }
    }

    /// A device by id.
    pub async fn device(&self, id: &str) -> Result<Option<DeviceRow>, StoreError> {
        let r = sqlx::query(&format!("SELECT {DEVICE_COLS} FROM devices WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(device).transpose()
    }

    /// Number of device rows.
    pub async fn device_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM devices")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }

    /// Inserts a device.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_device<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
        exec: E,
        tenant: &str,
        serial: &str,
        family_id: Option<&str>,
        cert: &[u8],
        fingerprint: &str,
        public_key: &[u8],
        enrolled_by: &str,
    ) -> Result<String, StoreError> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO devices (id, tenant_id, serial, family_id, certificate, fingerprint, public_key, status, enrolled_by, created) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', $8, $9)",
        )
        .bind(&id)
        .bind(tenant)
        .bind(serial)
        .bind(family_id.map(str::to_string))
        .bind(cert.to_vec())
        .bind(fingerprint)
        .bind(public_key.to_vec())
        .bind(enrolled_by)
        .bind(now())
        .execute(exec)
        .await?;
        Ok(id)
    }

    /// Sets a device's status and bumps the revocation epoch.
    pub async fn set_device_status(&self, id: &str, status: &str) -> Result<bool, StoreError> {
        let n = sqlx::query("UPDATE devices SET status = $1 WHERE id = $2")
            .bind(status)
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if status != "active" {
            sqlx::query("UPDATE sessions SET ended = $1 WHERE device_id = $2 AND ended IS NULL")
                .bind(now())
                .bind(id)
                .execute(&self.pool)
                .await?;
        }
        self.bump_epoch().await?;
        Ok(n > 0)
    }

    /// Sets a family's status and bumps the revocation epoch.
    pub async fn set_family_status(&self, id: &str, status: &str) -> Result<bool, StoreError> {
        let n = sqlx::query("UPDATE families SET status = $1 WHERE id = $2")
            .bind(status)
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        self.bump_epoch().await?;
        Ok(n > 0)
    }

    async fn bump_epoch(&self) -> Result<(), StoreError> {
        sqlx::query("UPDATE epochs SET value = value + 1 WHERE name = 'revocation'")
            .execute(&self.pool)
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
        sqlx::query("DELETE FROM exchanges WHERE expires < $1")
            .bind(t)
            .execute(&self.pool)
            .await?;
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM exchanges")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        if n >= cap {
            return Ok(false);
        }
        sqlx::query("INSERT INTO exchanges (c_r, state, peer, expires) VALUES ($1, $2, $3, $4)")
            .bind(c_r)
            .bind(state.to_vec())
            .bind(peer)
            .bind(t + ttl)
            .execute(&self.pool)
            .await?;
        Ok(true)
    }

    /// Takes a pending exchange (deleting it: message_3 is processed once).
    /// Returns None if unknown or expired.
    pub async fn take_exchange(&self, c_r: &str) -> Result<Option<(Vec<u8>, bool)>, StoreError> {
        let r = sqlx::query("DELETE FROM exchanges WHERE c_r = $1 RETURNING state, expires")
            .bind(c_r)
            .fetch_optional(&self.pool)
            .await?;
        match r {
            None => Ok(None),
            Some(r) => {
                let state: Vec<u8> = r.try_get("state")?;
                let expires: i64 = r.try_get("expires")?;
                Ok(Some((state, expires >= now())))
            }
        }
    }

    /// Pending exchanges.
    pub async fn pending_exchanges(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM exchanges")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }

    /// Records a session and the device's last authentication.
    pub async fn insert_session(
        &self,
        device_id: &str,
        c_i: &str,
        c_r: &str,
    ) -> Result<String, StoreError> {
        let id = new_id();
        let t = now();
        sqlx::query(
            "INSERT INTO sessions (id, device_id, c_i, c_r, created) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(device_id)
        .bind(c_i)
        .bind(c_r)
        .bind(t)
        .execute(&self.pool)
        .await?;
        sqlx::query("UPDATE devices SET last_auth = $1 WHERE id = $2")
            .bind(t)
            .bind(device_id)
            .execute(&self.pool)
            .await?;
        Ok(id)
    }
}
