//! Commands to devices and their states.

#[allow(unused_imports)]
use super::*;

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
    pub state: crate::commands::CommandState,
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

/// Deliveries without a result after which a command is set aside.
pub const MAX_DELIVERIES: i64 = 3;

impl Store {
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
    /// expired first, and one delivered [`MAX_DELIVERIES`] times without a
    /// result (the device cannot take it) is set aside as refused, so it no
    /// longer blocks the queue.
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
        sqlx::query(
            "UPDATE commands SET state = 'refused', finished = $1, result = $2 \
             WHERE device_id = $3 AND state = 'delivered' AND deliveries >= $4",
        )
        .bind(t)
        .bind(format!(
            "no result after {MAX_DELIVERIES} deliveries: the device cannot take it"
        ))
        .bind(device_id)
        .bind(MAX_DELIVERIES)
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
        sqlx::query(
            "UPDATE commands SET state = 'delivered', delivered = COALESCE(delivered, $1), \
             deliveries = deliveries + 1 WHERE id = $2",
        )
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
        state: crate::commands::CommandState,
        detail: &str,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "UPDATE commands SET state = $1, finished = $2, result = $3 \
             WHERE id = $4 AND device_id = $5 AND state IN ('queued', 'delivered')",
        )
        .bind(state.as_str())
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
                    state: {
                        let st: String = r.try_get("state")?;
                        crate::commands::CommandState::parse(&st)
                            .ok_or_else(|| StoreError::Corrupt(format!("command state {st:?}")))?
                    },
                    created_ns: r.try_get("created")?,
                    expires: r.try_get("expires")?,
                    delivered: r.try_get("delivered")?,
                    finished: r.try_get("finished")?,
                    result: r.try_get("result")?,
                })
            })
            .collect()
    }
}
