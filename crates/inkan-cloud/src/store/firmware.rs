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

    /// A firmware's manifest, its image's size and `len` bytes of the image
    /// from `start`, if `device_id`'s family and tenant are the
    /// firmware's. Only the requested bytes leave the database.
    pub async fn firmware_slice(
        &self,
        device_id: &str,
        firmware_id: &str,
        start: i64,
        len: i64,
    ) -> Result<Option<(Vec<u8>, i64, Vec<u8>)>, StoreError> {
        // SQL positions count from 1.
        let slice = match self.backend {
            Backend::Sqlite => "substr(f.image, $3, $4)",
            Backend::Postgres => "substring(f.image from $3::int for $4::int)",
        };
        let r = sqlx::query(&format!(
            "SELECT f.manifest, length(f.image) AS size, {slice} AS part FROM firmware f \
             JOIN devices d ON d.family_id = f.family_id AND d.tenant_id = f.tenant_id \
             WHERE f.id = $1 AND d.id = $2"
        ))
        .bind(firmware_id)
        .bind(device_id)
        .bind(start.saturating_add(1))
        .bind(len)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = r else { return Ok(None) };
        let size: i64 = r
            .try_get::<i64, _>("size")
            .or_else(|_| r.try_get::<i32, _>("size").map(i64::from))?;
        Ok(Some((
            r.try_get("manifest")?,
            size,
            r.try_get::<Option<Vec<u8>>, _>("part")?.unwrap_or_default(),
        )))
    }
}
