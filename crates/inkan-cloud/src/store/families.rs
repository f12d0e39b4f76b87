//! Families, their revocation lists and CRLs.

#[allow(unused_imports)]
use super::*;

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
}
