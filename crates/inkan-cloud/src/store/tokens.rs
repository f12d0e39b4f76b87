//! Operator API tokens: only a SHA-256 of each secret is kept.

#[allow(unused_imports)]
use super::*;

impl Store {
    /// Stores a token (its secret's hash), valid until `expires` (Unix
    /// seconds) when given.
    pub async fn insert_token(
        &self,
        id: &str,
        tenant_id: &str,
        hash: &str,
        role: &str,
        expires: Option<i64>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_tokens (id, tenant_id, hash, role, created, expires) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(tenant_id)
        .bind(hash)
        .bind(role)
        .bind(now())
        .bind(expires)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A token usable now: (tenant, secret hash, role); None when unknown,
    /// expired or revoked.
    pub async fn token(&self, id: &str) -> Result<Option<(String, String, String)>, StoreError> {
        let Some(r) = sqlx::query(
            "SELECT tenant_id, hash, role FROM api_tokens WHERE id = $1 AND revoked IS NULL \
             AND (expires IS NULL OR expires > $2)",
        )
        .bind(id)
        .bind(now())
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

    /// Records a token's use.
    pub async fn token_used(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_tokens SET last_used = $1 WHERE id = $2")
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A tenant's tokens, newest first (never their secrets).
    pub async fn tokens_of(&self, tenant_id: &str) -> Result<Vec<TokenRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, role, created, last_used, expires, revoked FROM api_tokens WHERE tenant_id = $1 ORDER BY created DESC, id",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TokenRow {
                    id: r.try_get("id")?,
                    role: r.try_get("role")?,
                    created: r.try_get("created")?,
                    last_used: r.try_get("last_used")?,
                    expires: r.try_get("expires")?,
                    revoked: r.try_get("revoked")?,
                })
            })
            .collect()
    }

    /// Revokes a tenant's token; false when it is not the tenant's or was
    /// revoked already.
    pub async fn revoke_token(&self, tenant_id: &str, id: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "UPDATE api_tokens SET revoked = $1 WHERE id = $2 AND tenant_id = $3 AND revoked IS NULL",
        )
        .bind(now())
        .bind(id)
        .bind(tenant_id)
        .execute(&self.pool)
        .await?
        .rows_affected()
            > 0)
    }
}

/// An API token, as listed (never its secret).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TokenRow {
    /// Identifier (the first part of the token).
    pub id: String,
    /// viewer, operator or admin.
    pub role: String,
    /// Created (Unix seconds).
    pub created: i64,
    /// Last used (Unix seconds).
    pub last_used: Option<i64>,
    /// Expires (Unix seconds), if it does.
    pub expires: Option<i64>,
    /// Revoked (Unix seconds), if it was.
    pub revoked: Option<i64>,
}
