//! Sessions and their OSCORE replay windows.

#[allow(unused_imports)]
use super::*;

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

impl Store {
    /// Records a session and its audit entry (`tenant`, kind
    /// `authenticate`, `subject`, outcome ok, "session <id>") in one group
    /// commit: both durable when this returns.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_session(
        &self,
        device_id: &str,
        credential_id: &str,
        c_i: &str,
        c_r: &str,
        oscore: Option<&[u8]>,
        ttl_secs: i64,
        tenant: &str,
        subject: &str,
    ) -> Result<String, StoreError> {
        let id = new_id();
        let t = now();
        self.append_all(vec![
            Append::Session {
                id: id.clone(),
                device_id: device_id.to_string(),
                credential_id: credential_id.to_string(),
                c_i: c_i.to_string(),
                c_r: c_r.to_string(),
                created: t,
                oscore: oscore.map(<[u8]>::to_vec),
                expires: t.saturating_add(ttl_secs),
            },
            Append::Audit {
                id: new_id(),
                time: super::now_nanos(),
                tenant: Some(tenant.to_string()),
                kind: "authenticate".into(),
                subject: subject.to_string(),
                outcome: "ok".into(),
                detail: format!("session {id}"),
            },
        ])
        .await?;
        Ok(id)
    }

    /// Sessions neither ended nor expired.
    pub async fn active_sessions(&self) -> Result<i64, StoreError> {
        let r =
            sqlx::query("SELECT COUNT(*) AS n FROM sessions WHERE ended IS NULL AND expires > $1")
                .bind(now())
                .fetch_one(&self.pool)
                .await?;
        Ok(r.try_get("n")?)
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

    /// Advances a session's replay window if it is still the one read (see
    /// [`Store::ingest`]); `Ok(false)` when another request moved it.
    pub async fn advance_window(
        &self,
        session: &SessionRow,
        new_window: (i64, i64),
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::advance_window_in(&mut conn, session, new_window).await
    }

    /// The replay window's compare-and-set, in the caller's transaction or
    /// connection: true when the window was still the one read.
    pub(super) async fn advance_window_in(
        conn: &mut sqlx::AnyConnection,
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
        .execute(&mut *conn)
        .await?
        .rows_affected()
            == 1)
    }
}
