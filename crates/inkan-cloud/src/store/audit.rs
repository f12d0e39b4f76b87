//! The append-only audit log.

#[allow(unused_imports)]
use super::*;

impl Store {
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

    /// Deletes audit entries older than `time_ns`; returns how many.
    pub async fn purge_audit_before(&self, time_ns: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM audit WHERE time < $1")
            .bind(time_ns)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}
