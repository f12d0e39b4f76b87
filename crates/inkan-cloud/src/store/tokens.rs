//! Operator API tokens: only a SHA-256 of each secret is kept.

#[allow(unused_imports)]
use super::*;

impl Store {
    /// Stores a token (its secret's hash).
    pub async fn insert_token(
        &self,
        id: &str,
        tenant_id: &str,
        hash: &str,
        role: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_tokens (id, tenant_id, hash, role, created) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(tenant_id)
        .bind(hash)
        .bind(role)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A token's (tenant, secret hash, role).
    pub async fn token(&self, id: &str) -> Result<Option<(String, String, String)>, StoreError> {
        let Some(r) = sqlx::query("SELECT tenant_id, hash, role FROM api_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some((
            r.try_get("tenant_id")?,
            r.try_get("hash")?,
            r.try_get("role")?,
        )))
    }
}
