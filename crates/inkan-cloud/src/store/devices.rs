//! Devices, their credentials and their lifecycle events.

use super::{new_id, now, now_nanos, Store, StoreError};
use crate::lifecycle::{Action, CredentialState, DeviceState, Proof};
use sqlx::any::AnyRow;
use sqlx::Row;

/// A device row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRow {
    /// The device's identity for life (its UEID, hex, for devices
    /// personalized with one).
    pub id: String,
    /// Tenant (the current owner).
    pub tenant_id: String,
    /// Chip serial.
    pub serial: String,
    /// Family, when known.
    pub family_id: Option<String>,
    /// The certificate it was registered or enrolled with (DER), for the
    /// record: authentication uses its credentials.
    pub certificate: Vec<u8>,
    /// Lifecycle state.
    pub state: DeviceState,
    /// individual, manifest, family or transfer.
    pub enrolled_by: String,
    /// What proves the owner's claim.
    pub proof: Proof,
    /// Decommissioned, told to erase its secrets, not yet confirmed.
    pub erase_pending: bool,
    /// The firmware version its last successful update installed.
    pub firmware_version: Option<String>,
}

/// A credential of a device: a certificate and its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialRow {
    /// Identifier.
    pub id: String,
    /// The device.
    pub device_id: String,
    /// SHA-256 of the certificate, hex.
    pub fingerprint: String,
    /// The certificate, DER.
    pub certificate: Vec<u8>,
    /// The public key (SEC1, or the raw Ed25519 key).
    pub public_key: Vec<u8>,
    /// State.
    pub state: CredentialState,
    /// Created (Unix seconds).
    pub created: i64,
    /// Last state change (Unix seconds).
    pub changed: i64,
}

/// A device to insert.
#[derive(Clone, Debug)]
pub struct NewDevice<'a> {
    /// Its id (the UEID, hex).
    pub id: String,
    /// Chip serial.
    pub serial: &'a str,
    /// Certificate DER.
    pub certificate: &'a [u8],
    /// Its fingerprint.
    pub fingerprint: String,
    /// The public key.
    pub public_key: &'a [u8],
}

/// How a device enters the registry.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    /// The owner.
    pub tenant: &'a str,
    /// The family, when known.
    pub family_id: Option<&'a str>,
    /// Its first state.
    pub state: DeviceState,
    /// individual, manifest or family.
    pub enrolled_by: &'a str,
    /// The owner's proof.
    pub proof: Proof,
    /// Who did it (for the history).
    pub actor: &'a str,
}

/// One lifecycle event to record.
#[derive(Clone, Copy, Debug)]
pub struct Event<'a> {
    /// What happened (an action's name, or another event kind).
    pub kind: &'a str,
    /// The state before, if it changed.
    pub from: Option<DeviceState>,
    /// The state after, if it changed.
    pub to: Option<DeviceState>,
    /// Who did it: `token <id>`, `device`, `family <name>`, ...
    pub actor: &'a str,
    /// Why.
    pub reason: &'a str,
}

/// One entry of a device's history.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    /// When (ns since the Unix epoch).
    pub time_ns: i64,
    /// lifecycle, credential, session, command or firmware.
    pub category: String,
    /// What happened.
    pub kind: String,
    /// Details.
    pub detail: String,
}

pub(super) const DEVICE_COLS: &str = "id, tenant_id, serial, family_id, certificate, status, enrolled_by, proof, erase_pending, firmware_version";
const CREDENTIAL_COLS: &str =
    "id, device_id, fingerprint, certificate, public_key, state, created, changed";

fn corrupt(what: &str, v: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} {v:?}"))
}

pub(super) fn device(r: &AnyRow) -> Result<DeviceRow, StoreError> {
    let status: String = r.try_get("status")?;
    let proof: String = r.try_get("proof")?;
    Ok(DeviceRow {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        serial: r.try_get("serial")?,
        family_id: r.try_get("family_id")?,
        certificate: r.try_get("certificate")?,
        state: DeviceState::parse(&status).ok_or_else(|| corrupt("device state", &status))?,
        enrolled_by: r.try_get("enrolled_by")?,
        proof: Proof::parse(&proof).ok_or_else(|| corrupt("proof", &proof))?,
        erase_pending: r.try_get::<i64, _>("erase_pending")? != 0,
        firmware_version: r.try_get("firmware_version")?,
    })
}

fn credential(r: &AnyRow) -> Result<CredentialRow, StoreError> {
    let state: String = r.try_get("state")?;
    Ok(CredentialRow {
        id: r.try_get("id")?,
        device_id: r.try_get("device_id")?,
        fingerprint: r.try_get("fingerprint")?,
        certificate: r.try_get("certificate")?,
        public_key: r.try_get("public_key")?,
        state: CredentialState::parse(&state).ok_or_else(|| corrupt("credential state", &state))?,
        created: r.try_get("created")?,
        changed: r.try_get("changed")?,
    })
}

impl Store {
    /// A device by id.
    pub async fn device(&self, id: &str) -> Result<Option<DeviceRow>, StoreError> {
        let r = sqlx::query(&format!("SELECT {DEVICE_COLS} FROM devices WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(device).transpose()
    }

    /// A tenant's device by id (another tenant's is not found).
    pub async fn device_in(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<DeviceRow>, StoreError> {
        Ok(self.device(id).await?.filter(|d| d.tenant_id == tenant_id))
    }

    /// A tenant's devices, by serial, one page.
    pub async fn devices_in(
        &self,
        tenant_id: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<DeviceRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DEVICE_COLS} FROM devices WHERE tenant_id = $1 ORDER BY serial, id LIMIT $2 OFFSET $3"
        ))
        .bind(tenant_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(device).collect()
    }

    /// Devices with this chip serial, in any tenant or family.
    pub async fn devices_by_serial(&self, serial: &str) -> Result<Vec<DeviceRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DEVICE_COLS} FROM devices WHERE serial = $1 LIMIT 8"
        ))
        .bind(serial)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(device).collect()
    }

    /// Whether any of these chip serials is registered under another family
    /// than `family_id` (or none), or, with `elsewhere` false, under that
    /// family.
    pub async fn serial_elsewhere(
        &self,
        serials: &[&str],
        family_id: &str,
        elsewhere: bool,
    ) -> Result<bool, StoreError> {
        let which = if elsewhere {
            "(family_id IS NULL OR family_id <> $1)"
        } else {
            "family_id = $1"
        };
        for chunk in serials.chunks(100) {
            let marks: Vec<String> = (0..chunk.len()).map(|k| format!("${}", k + 2)).collect();
            let sql = format!(
                "SELECT 1 AS x FROM devices WHERE {which} AND serial IN ({}) LIMIT 1",
                marks.join(", ")
            );
            let mut q = sqlx::query(&sql).bind(family_id);
            for s in chunk {
                q = q.bind(*s);
            }
            if q.fetch_optional(&self.pool).await?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Devices with no family that a registration made without proof.
    pub async fn unproven_devices(&self) -> Result<Vec<DeviceRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DEVICE_COLS} FROM devices WHERE proof = 'none'"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(device).collect()
    }

    /// Number of device rows.
    pub async fn device_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM devices")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }

    /// The device holding the credential with this certificate
    /// fingerprint, and the credential.
    pub async fn credential_by_fingerprint(
        &self,
        fp: &str,
    ) -> Result<Option<(CredentialRow, DeviceRow)>, StoreError> {
        let r = sqlx::query(&format!(
            "SELECT {CREDENTIAL_COLS} FROM credentials WHERE fingerprint = $1"
        ))
        .bind(fp)
        .fetch_optional(&self.pool)
        .await?;
        let Some(c) = r.as_ref().map(credential).transpose()? else {
            return Ok(None);
        };
        Ok(self.device(&c.device_id).await?.map(|d| (c, d)))
    }

    /// The device holding the credential with this fingerprint.
    pub async fn device_by_fingerprint(&self, fp: &str) -> Result<Option<DeviceRow>, StoreError> {
        Ok(self.credential_by_fingerprint(fp).await?.map(|(_, d)| d))
    }

    /// The one credential whose fingerprint starts with `prefix` (hex), as
    /// an x5t (SHA-256/64) names it; None if none or several.
    pub async fn credential_by_fingerprint_prefix(
        &self,
        prefix: &str,
    ) -> Result<Option<CredentialRow>, StoreError> {
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let rows = sqlx::query(&format!(
            "SELECT {CREDENTIAL_COLS} FROM credentials WHERE fingerprint LIKE $1 LIMIT 2"
        ))
        .bind(format!("{}%", prefix.to_ascii_lowercase()))
        .fetch_all(&self.pool)
        .await?;
        match rows.as_slice() {
            [one] => Ok(Some(credential(one)?)),
            _ => Ok(None),
        }
    }

    /// A device's credentials, oldest first.
    pub async fn credentials_of(&self, device_id: &str) -> Result<Vec<CredentialRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {CREDENTIAL_COLS} FROM credentials WHERE device_id = $1 ORDER BY created, id"
        ))
        .bind(device_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(credential).collect()
    }

    /// The credential commands are bound to: the active credential the
    /// device used last, else its newest active one.
    pub async fn current_credential(
        &self,
        device_id: &str,
    ) -> Result<Option<CredentialRow>, StoreError> {
        let r = sqlx::query(
            "SELECT s.credential_id FROM sessions s JOIN credentials c ON c.id = s.credential_id \
             WHERE s.device_id = $1 AND c.state = 'active' ORDER BY s.created DESC LIMIT 1",
        )
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await?;
        let used: Option<String> = r.map(|r| r.try_get("credential_id")).transpose()?;
        let creds = self.credentials_of(device_id).await?;
        let mut active = creds.iter().filter(|c| c.state == CredentialState::Active);
        Ok(match used {
            Some(id) => creds.iter().find(|c| c.id == id).cloned(),
            None => active.next_back().cloned(),
        })
    }

    /// Enrols devices (each with its first credential and entry event) in
    /// one transaction: all or none.
    pub async fn enroll(
        &self,
        entry: Entry<'_>,
        devices: &[NewDevice<'_>],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        Self::insert_devices(&mut tx, entry, devices).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Inserts a device with its first credential and the event of its
    /// entry (in the caller's transaction).
    pub async fn insert_device(
        conn: &mut sqlx::AnyConnection,
        entry: Entry<'_>,
        d: &NewDevice<'_>,
    ) -> Result<(), StoreError> {
        Self::insert_devices(conn, entry, std::slice::from_ref(d)).await
    }

    /// Inserts many devices of one tenant and family, each with its first
    /// credential and entry event, with multi-row INSERTs of up to 100
    /// rows (in the caller's transaction).
    pub async fn insert_devices(
        conn: &mut sqlx::AnyConnection,
        entry: Entry<'_>,
        devices: &[NewDevice<'_>],
    ) -> Result<(), StoreError> {
        let t = now();
        let tn = now_nanos();
        for chunk in devices.chunks(100) {
            let sql = super::multi_insert(
                "INSERT INTO devices (id, tenant_id, serial, family_id, certificate, fingerprint, public_key, status, enrolled_by, created, proof) VALUES ",
                11,
                chunk.len(),
            );
            let mut q = sqlx::query(&sql);
            for d in chunk {
                q = q
                    .bind(d.id.clone())
                    .bind(entry.tenant)
                    .bind(d.serial)
                    .bind(entry.family_id.map(str::to_string))
                    .bind(d.certificate.to_vec())
                    .bind(d.fingerprint.clone())
                    .bind(d.public_key.to_vec())
                    .bind(entry.state.as_str())
                    .bind(entry.enrolled_by)
                    .bind(t)
                    .bind(entry.proof.as_str());
            }
            q.execute(&mut *conn).await?;
            let sql = super::multi_insert(
                "INSERT INTO credentials (id, device_id, fingerprint, certificate, public_key, state, created, changed) VALUES ",
                8,
                chunk.len(),
            );
            let mut q = sqlx::query(&sql);
            for d in chunk {
                q = q
                    .bind(new_id())
                    .bind(d.id.clone())
                    .bind(d.fingerprint.clone())
                    .bind(d.certificate.to_vec())
                    .bind(d.public_key.to_vec())
                    .bind(CredentialState::Active.as_str())
                    .bind(t)
                    .bind(t);
            }
            q.execute(&mut *conn).await?;
            let sql = super::multi_insert(
                "INSERT INTO device_events (id, device_id, tenant_id, time, kind, from_state, to_state, actor, reason) VALUES ",
                9,
                chunk.len(),
            );
            let mut q = sqlx::query(&sql);
            for d in chunk {
                q = q
                    .bind(new_id())
                    .bind(d.id.clone())
                    .bind(entry.tenant)
                    .bind(tn)
                    .bind(entry.enrolled_by)
                    .bind(None::<String>)
                    .bind(entry.state.as_str())
                    .bind(entry.actor)
                    .bind(format!("proof: {}", entry.proof.as_str()));
            }
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Adds a credential to a device (active at once), with its event.
    pub async fn add_credential(
        &self,
        device: &DeviceRow,
        certificate: &[u8],
        fingerprint: &str,
        public_key: &[u8],
        actor: &str,
    ) -> Result<String, StoreError> {
        let id = new_id();
        let t = now();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO credentials (id, device_id, fingerprint, certificate, public_key, state, created, changed) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(&id)
        .bind(&device.id)
        .bind(fingerprint)
        .bind(certificate.to_vec())
        .bind(public_key.to_vec())
        .bind(CredentialState::Active.as_str())
        .bind(t)
        .execute(&mut *tx)
        .await?;
        Self::record_event(
            &mut tx,
            &device.id,
            &device.tenant_id,
            Event {
                kind: "credential-added",
                from: None,
                to: None,
                actor,
                reason: &format!("credential {id} (certificate {fingerprint})"),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Retires or revokes a device's credential (a revoked one enters the
    /// family's revocation list); the device's sessions under it end.
    /// False when the credential is not the device's or not active.
    pub async fn end_credential(
        &self,
        device: &DeviceRow,
        credential_id: &str,
        to: CredentialState,
        actor: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE credentials SET state = $1, changed = $2 WHERE id = $3 AND device_id = $4 AND state = 'active'",
        )
        .bind(to.as_str())
        .bind(now())
        .bind(credential_id)
        .bind(&device.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        sqlx::query("UPDATE sessions SET ended = $1 WHERE credential_id = $2 AND ended IS NULL")
            .bind(now())
            .bind(credential_id)
            .execute(&mut *tx)
            .await?;
        if to == CredentialState::Revoked {
            Self::list_revoked_credentials(&mut tx, device, Some(credential_id)).await?;
        }
        Self::record_event(
            &mut tx,
            &device.id,
            &device.tenant_id,
            Event {
                kind: if to == CredentialState::Revoked {
                    "credential-revoked"
                } else {
                    "credential-retired"
                },
                from: None,
                to: None,
                actor,
                reason: &format!("credential {credential_id}"),
            },
        )
        .await?;
        Self::bump_epoch_in(&mut *tx).await?;
        tx.commit().await?;
        self.changed_here();
        Ok(true)
    }

    /// Puts a device's credentials (one, or all not yet revoked) on its
    /// family's revocation list and marks them revoked.
    async fn list_revoked_credentials(
        conn: &mut sqlx::AnyConnection,
        device: &DeviceRow,
        only: Option<&str>,
    ) -> Result<(), StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {CREDENTIAL_COLS} FROM credentials WHERE device_id = $1"
        ))
        .bind(&device.id)
        .fetch_all(&mut *conn)
        .await?;
        for r in rows {
            let c = credential(&r)?;
            if only.is_some_and(|o| o != c.id) {
                continue;
            }
            if let (Some(f), Ok(cert)) = (
                &device.family_id,
                inkan_pki::IssuedCert::from_der(&c.certificate),
            ) {
                Self::add_revocation(
                    &mut *conn,
                    f,
                    &cert.serial_hex(),
                    Some(&device.serial),
                    "operator",
                )
                .await?;
            }
        }
        let sql = if only.is_some() {
            "UPDATE credentials SET state = 'revoked', changed = $1 WHERE device_id = $2 AND id = $3"
        } else {
            "UPDATE credentials SET state = 'revoked', changed = $1 WHERE device_id = $2 AND state <> 'revoked' AND id <> $3"
        };
        sqlx::query(sql)
            .bind(now())
            .bind(&device.id)
            .bind(only.unwrap_or(""))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Records a lifecycle event (in the caller's transaction).
    pub async fn record_event(
        conn: &mut sqlx::AnyConnection,
        device_id: &str,
        tenant_id: &str,
        e: Event<'_>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO device_events (id, device_id, tenant_id, time, kind, from_state, to_state, actor, reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(new_id())
        .bind(device_id)
        .bind(tenant_id)
        .bind(now_nanos())
        .bind(e.kind)
        .bind(e.from.map(|s| s.as_str().to_string()))
        .bind(e.to.map(|s| s.as_str().to_string()))
        .bind(e.actor)
        .bind(e.reason)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Moves a device from `from` to `to` (the caller checked the
    /// transition table), only if it is still in `from`; applies what the
    /// new state means: sessions end unless it may authenticate, and a
    /// revoked or decommissioned device's credentials are revoked and
    /// listed. With `decommission`, also: pending commands expire, the
    /// readings go when `purge`, and `erase` (a signed erase order: id,
    /// COSE, expiry) is queued. Returns false if the state had moved.
    #[allow(clippy::too_many_arguments)]
    pub async fn set_device_state(
        &self,
        d: &DeviceRow,
        from: DeviceState,
        to: DeviceState,
        action: Action,
        actor: &str,
        reason: &str,
        decommission: Option<Decommission<'_>>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("UPDATE devices SET status = $1 WHERE id = $2 AND status = $3")
            .bind(to.as_str())
            .bind(&d.id)
            .bind(from.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        let t = now();
        if !crate::lifecycle::may_authenticate(to) {
            sqlx::query("UPDATE sessions SET ended = $1 WHERE device_id = $2 AND ended IS NULL")
                .bind(t)
                .bind(&d.id)
                .execute(&mut *tx)
                .await?;
        }
        if matches!(to, DeviceState::Revoked | DeviceState::Decommissioned) {
            Self::list_revoked_credentials(&mut tx, d, None).await?;
        }
        if let Some(dc) = decommission {
            sqlx::query(
                "UPDATE commands SET state = 'expired', finished = $1 WHERE device_id = $2 AND state IN ('queued', 'delivered')",
            )
            .bind(t)
            .bind(&d.id)
            .execute(&mut *tx)
            .await?;
            if dc.purge_readings {
                sqlx::query("DELETE FROM reading_signatures WHERE device_id = $1")
                    .bind(&d.id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM readings WHERE device_id = $1")
                    .bind(&d.id)
                    .execute(&mut *tx)
                    .await?;
            }
            if let Some((id, cose, expires)) = dc.erase {
                Self::queue_command(
                    &mut tx,
                    id,
                    &d.tenant_id,
                    &d.id,
                    "decommission",
                    cose,
                    expires,
                )
                .await?;
                sqlx::query("UPDATE devices SET erase_pending = 1 WHERE id = $1")
                    .bind(&d.id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        Self::record_event(
            &mut tx,
            &d.id,
            &d.tenant_id,
            Event {
                kind: action.as_str(),
                from: Some(from),
                to: Some(to),
                actor,
                reason,
            },
        )
        .await?;
        Self::bump_epoch_in(&mut *tx).await?;
        tx.commit().await?;
        self.changed_here();
        Ok(true)
    }

    /// The device confirmed it erased its secrets.
    pub async fn erase_confirmed(&self, d: &DeviceRow, detail: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE devices SET erase_pending = 0 WHERE id = $1")
            .bind(&d.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE sessions SET ended = $1 WHERE device_id = $2 AND ended IS NULL")
            .bind(now())
            .bind(&d.id)
            .execute(&mut *tx)
            .await?;
        Self::record_event(
            &mut tx,
            &d.id,
            &d.tenant_id,
            Event {
                kind: "secrets-erased",
                from: None,
                to: None,
                actor: "device",
                reason: detail,
            },
        )
        .await?;
        Self::bump_epoch_in(&mut *tx).await?;
        tx.commit().await?;
        self.changed_here();
        Ok(())
    }

    /// Moves devices of `from_tenant` to `to_tenant` under a signed
    /// transfer, all or none: each must still belong to `from_tenant` in a
    /// transferable state (`from_states`). Sessions end, pending commands
    /// expire, each device becomes `registered` with proof `transfer`.
    /// Returns false (nothing written) when a device had moved or the
    /// transfer was claimed before.
    pub async fn apply_transfer(
        &self,
        t: &TransferRecord<'_>,
        devices: &[DeviceRow],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO transfers (id, family_id, from_tenant, to_tenant, devices, document, claimed) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
        )
        .bind(t.id)
        .bind(t.family_id)
        .bind(t.from_tenant)
        .bind(t.to_tenant)
        .bind(i64::try_from(devices.len()).unwrap_or(i64::MAX))
        .bind(t.document.to_vec())
        .bind(now())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(false);
        }
        let time = now();
        for d in devices {
            let n = sqlx::query(
                "UPDATE devices SET tenant_id = $1, status = $2, proof = 'transfer', enrolled_by = 'transfer' \
                 WHERE id = $3 AND tenant_id = $4 AND status = $5",
            )
            .bind(t.to_tenant)
            .bind(DeviceState::Registered.as_str())
            .bind(&d.id)
            .bind(t.from_tenant)
            .bind(d.state.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Ok(false);
            }
            sqlx::query("UPDATE sessions SET ended = $1 WHERE device_id = $2 AND ended IS NULL")
                .bind(time)
                .bind(&d.id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE commands SET state = 'expired', finished = $1 WHERE device_id = $2 AND state IN ('queued', 'delivered')",
            )
            .bind(time)
            .bind(&d.id)
            .execute(&mut *tx)
            .await?;
            Self::record_event(
                &mut tx,
                &d.id,
                t.to_tenant,
                Event {
                    kind: Action::Transfer.as_str(),
                    from: Some(d.state),
                    to: Some(DeviceState::Registered),
                    actor: t.actor,
                    reason: &format!("transfer {} from tenant {}", t.id, t.from_tenant),
                },
            )
            .await?;
        }
        Self::bump_epoch_in(&mut *tx).await?;
        tx.commit().await?;
        self.changed_here();
        Ok(true)
    }

    /// Whether the transfer with this id was claimed.
    pub async fn transfer_claimed(&self, id: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query("SELECT id FROM transfers WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// Gives devices claimed without proof to the tenant that proved it
    /// holds their family's key.
    pub async fn reclaim(
        &self,
        devices: &[DeviceRow],
        tenant_id: &str,
        family_id: &str,
        actor: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for d in devices {
            sqlx::query(
                "UPDATE devices SET tenant_id = $1, family_id = $2, proof = 'family' WHERE id = $3 AND proof = 'none'",
            )
            .bind(tenant_id)
            .bind(family_id)
            .bind(&d.id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE sessions SET ended = $1 WHERE device_id = $2 AND ended IS NULL")
                .bind(now())
                .bind(&d.id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE commands SET state = 'expired', finished = $1 WHERE device_id = $2 AND state IN ('queued', 'delivered')",
            )
            .bind(now())
            .bind(&d.id)
            .execute(&mut *tx)
            .await?;
            Self::record_event(
                &mut tx,
                &d.id,
                tenant_id,
                Event {
                    kind: "reclaimed",
                    from: None,
                    to: None,
                    actor,
                    reason: &format!(
                        "held by tenant {} without proof; the family's owner proved possession of its key",
                        d.tenant_id
                    ),
                },
            )
            .await?;
        }
        Self::bump_epoch_in(&mut *tx).await?;
        tx.commit().await?;
        self.changed_here();
        Ok(())
    }

    /// A device's whole history, kept across owners: lifecycle events,
    /// credentials, sessions, commands and firmware updates, in time order.
    pub async fn history(&self, device_id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut out = Vec::new();
        let s = 1_000_000_000i64;
        for r in sqlx::query(
            "SELECT time, kind, from_state, to_state, actor, reason FROM device_events WHERE device_id = $1",
        )
        .bind(device_id)
        .fetch_all(&self.pool)
        .await?
        {
            let from: Option<String> = r.try_get("from_state")?;
            let to: Option<String> = r.try_get("to_state")?;
            let actor: String = r.try_get("actor")?;
            let reason: String = r.try_get("reason")?;
            let change = match (from, to) {
                (Some(f), Some(t)) => format!("{f} -> {t}; "),
                (None, Some(t)) => format!("-> {t}; "),
                _ => String::new(),
            };
            out.push(HistoryEntry {
                time_ns: r.try_get("time")?,
                category: "lifecycle".into(),
                kind: r.try_get("kind")?,
                detail: format!("{change}by {actor}; {reason}"),
            });
        }
        for c in self.credentials_of(device_id).await? {
            out.push(HistoryEntry {
                time_ns: c.created.saturating_mul(s),
                category: "credential".into(),
                kind: "credential".into(),
                detail: format!("{} certificate {} ({} now)", c.id, c.fingerprint, c.state),
            });
        }
        for r in sqlx::query(
            "SELECT id, created, ended, credential_id FROM sessions WHERE device_id = $1",
        )
        .bind(device_id)
        .fetch_all(&self.pool)
        .await?
        {
            let ended: Option<i64> = r.try_get("ended")?;
            let cred: Option<String> = r.try_get("credential_id")?;
            let id: String = r.try_get("id")?;
            out.push(HistoryEntry {
                time_ns: r.try_get::<i64, _>("created")?.saturating_mul(s),
                category: "session".into(),
                kind: "authenticated".into(),
                detail: format!(
                    "session {id} with credential {}{}",
                    cred.as_deref().unwrap_or("?"),
                    ended.map(|e| format!(", ended at {e}")).unwrap_or_default()
                ),
            });
        }
        for r in sqlx::query(
            "SELECT id, action, state, created, result FROM commands WHERE device_id = $1",
        )
        .bind(device_id)
        .fetch_all(&self.pool)
        .await?
        {
            let id: String = r.try_get("id")?;
            let action: String = r.try_get("action")?;
            let state: String = r.try_get("state")?;
            let result: Option<String> = r.try_get("result")?;
            out.push(HistoryEntry {
                time_ns: r.try_get("created")?,
                category: "command".into(),
                kind: action,
                detail: format!(
                    "command {id}: {state}{}",
                    result.map(|x| format!(" ({x})")).unwrap_or_default()
                ),
            });
        }
        for r in sqlx::query(
            "SELECT cd.campaign_id, cd.state, cd.updated, f.version FROM campaign_devices cd \
             JOIN campaigns c ON c.id = cd.campaign_id JOIN firmware f ON f.id = c.firmware_id \
             WHERE cd.device_id = $1",
        )
        .bind(device_id)
        .fetch_all(&self.pool)
        .await?
        {
            let campaign: String = r.try_get("campaign_id")?;
            let state: String = r.try_get("state")?;
            let version: String = r.try_get("version")?;
            out.push(HistoryEntry {
                time_ns: r.try_get::<i64, _>("updated")?.saturating_mul(s),
                category: "firmware".into(),
                kind: "update".into(),
                detail: format!("firmware {version} in campaign {campaign}: {state}"),
            });
        }
        out.sort_by(|a, b| a.time_ns.cmp(&b.time_ns).then(a.category.cmp(&b.category)));
        Ok(out)
    }

    /// The active devices of a family in a tenant.
    pub async fn devices_of_family(
        &self,
        tenant_id: &str,
        family_id: &str,
    ) -> Result<Vec<DeviceRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DEVICE_COLS} FROM devices WHERE tenant_id = $1 AND family_id = $2 AND status = 'active' ORDER BY serial"
        ))
        .bind(tenant_id)
        .bind(family_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(device).collect()
    }

    /// The public key of the credential a session authenticated with, and
    /// whether the device's family requires signed readings.
    pub async fn device_signing(
        &self,
        session: &super::SessionRow,
    ) -> Result<(Vec<u8>, bool), StoreError> {
        let r = sqlx::query(
            "SELECT COALESCE(c.public_key, d.public_key) AS public_key, COALESCE(f.signed_readings, 0) AS required \
             FROM devices d LEFT JOIN families f ON f.id = d.family_id \
             LEFT JOIN credentials c ON c.id = $2 WHERE d.id = $1",
        )
        .bind(&session.device_id)
        .bind(session.credential_id.clone())
        .fetch_one(&self.pool)
        .await?;
        Ok((
            r.try_get("public_key")?,
            r.try_get::<i64, _>("required")? != 0,
        ))
    }
}

/// What decommissioning does besides the state change.
#[derive(Clone, Copy, Debug)]
pub struct Decommission<'a> {
    /// Delete the device's readings.
    pub purge_readings: bool,
    /// The signed erase order to queue: (command id, COSE, expiry).
    pub erase: Option<(&'a str, &'a [u8], i64)>,
}

/// A transfer being claimed.
#[derive(Clone, Copy, Debug)]
pub struct TransferRecord<'a> {
    /// The transfer document's id (hex).
    pub id: &'a str,
    /// The family whose key signed it.
    pub family_id: &'a str,
    /// The previous owner.
    pub from_tenant: &'a str,
    /// The new owner.
    pub to_tenant: &'a str,
    /// The signed document.
    pub document: &'a [u8],
    /// Who claimed it.
    pub actor: &'a str,
}
