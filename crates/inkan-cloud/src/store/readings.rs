//! Readings and their signatures, stored before they are acknowledged.

#[allow(unused_imports)]
use super::*;

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

impl Store {
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
        if !Self::advance_window_in(&mut tx, session, new_window).await? {
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
