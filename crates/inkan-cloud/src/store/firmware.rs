//! Firmware images and their manifests.

#[allow(unused_imports)]
use super::*;

impl Store {
    /// Stores an uploaded firmware (already verified).
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_firmware(
        &self,
        id: &str,
        tenant_id: &str,
        family_id: &str,
        version: &str,
        security_version: i64,
        manifest: &[u8],
        image: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO firmware (id, tenant_id, family_id, version, security_version, manifest, image, created) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(tenant_id)
        .bind(family_id)
        .bind(version)
        .bind(security_version)
        .bind(manifest.to_vec())
        .bind(image.to_vec())
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A firmware whole: (tenant, family, manifest, image).
    pub async fn firmware(&self, id: &str) -> Result<Option<crate::firmware::Served>, StoreError> {
        let Some(r) =
            sqlx::query("SELECT tenant_id, family_id, manifest, image FROM firmware WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
        else {
            return Ok(None);
        };
        Ok(Some(crate::firmware::Served {
            tenant_id: r.try_get("tenant_id")?,
            family_id: r.try_get("family_id")?,
            manifest: r.try_get("manifest")?,
            image: r.try_get("image")?,
        }))
    }
}
