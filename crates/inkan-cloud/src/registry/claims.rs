//! Claims with proof: families registered with proof of possession,
//! devices registered one by one or imported from a manifest of a family
//! the tenant owns, family CRLs imported.

use super::*;

impl Registry {
    /// Registers a family CA for a tenant, with proof of possession: a
    /// signature (raw r‖s) by the family key over [`pop_challenge`].
    pub async fn register_family(
        &self,
        tenant_id: &str,
        name: &str,
        cert_der: &[u8],
        pop_signature: &[u8],
    ) -> Result<String, RegistryError> {
        let r = self
            .register_family_inner(tenant_id, name, cert_der, pop_signature)
            .await;
        let detail = format!("certificate {}", fingerprint(cert_der));
        self.audited(tenant_id, "register-family", name, &detail, r)
            .await
    }

    /// Writes the audit entry of a registration (success, or the reason
    /// of the refusal) and passes the result on.
    async fn audited<T>(
        &self,
        tenant_id: &str,
        kind: &str,
        subject: &str,
        ok_detail: &str,
        r: Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let (outcome, detail) = match &r {
            Ok(_) => ("ok", ok_detail.to_string()),
            Err(e) => ("refused", e.to_string()),
        };
        self.store
            .audit(Some(tenant_id), kind, subject, outcome, &detail)
            .await?;
        r
    }

    async fn register_family_inner(
        &self,
        tenant_id: &str,
        name: &str,
        cert_der: &[u8],
        pop_signature: &[u8],
    ) -> Result<String, RegistryError> {
        let cert =
            IssuedCert::from_der(cert_der).map_err(|e| RegistryError::Malformed(e.to_string()))?;
        cert.require_ca()
            .map_err(|e| RegistryError::NotACa(e.to_string()))?;
        let challenge = pop_challenge(tenant_id, cert_der);
        if !inkan_pki::signer::verify_raw(&cert.public_point(), &challenge, pop_signature) {
            return Err(RegistryError::ProofOfPossession);
        }
        let fp = fingerprint(cert_der);
        if self.store.family_by_fingerprint(&fp).await?.is_some() {
            return Err(RegistryError::Duplicate);
        }
        let id = self
            .store
            .insert_family(tenant_id, name, cert_der, &fp)
            .await?;
        // Devices of this family that a tenant claimed without proof (from
        // public data, before claims needed proof) go to the tenant that
        // just proved it holds the family key.
        let held: Vec<DeviceRow> = self
            .store
            .unproven_devices()
            .await?
            .into_iter()
            .filter(|d| {
                IssuedCert::from_der(&d.certificate)
                    .is_ok_and(|c| verify_issued_by(&c, &cert).is_ok())
            })
            .collect();
        if !held.is_empty() {
            self.store
                .reclaim(&held, tenant_id, &id, &format!("family {name}"))
                .await?;
            self.store
                .audit(
                    Some(tenant_id),
                    "reclaim",
                    name,
                    "ok",
                    &format!("{} devices held without proof reclaimed", held.len()),
                )
                .await?;
        }
        Ok(id)
    }

    /// Registers one device by its certificate. A device of a family
    /// registered by another tenant cannot be claimed.
    pub async fn register_device(
        &self,
        tenant_id: &str,
        cert_der: &[u8],
    ) -> Result<String, RegistryError> {
        let fp = fingerprint(cert_der);
        let subject = IssuedCert::from_der(cert_der)
            .ok()
            .and_then(|c| c.subject_serial_number())
            .unwrap_or_else(|| fp[..16].to_string());
        let r = self.register_device_inner(tenant_id, cert_der, &fp).await;
        self.audited(tenant_id, "register-device", &subject, &fp, r)
            .await
    }

    async fn register_device_inner(
        &self,
        tenant_id: &str,
        cert_der: &[u8],
        fp: &str,
    ) -> Result<String, RegistryError> {
        let cert =
            IssuedCert::from_der(cert_der).map_err(|e| RegistryError::Malformed(e.to_string()))?;
        let serial = cert
            .subject_serial_number()
            .ok_or_else(|| RegistryError::Malformed("certificate without a serialNumber".into()))?;
        let family = self.owned_family(tenant_id, &cert).await?;
        if self.store.credential_by_fingerprint(fp).await?.is_some() {
            return Err(RegistryError::Duplicate);
        }
        let id = device_id_of(&cert);
        if self.store.device(&id).await?.is_some() {
            return Err(RegistryError::Duplicate);
        }
        self.check_serial(&serial, &family.id).await?;
        // The chip is known already: a new certificate of it is a new
        // credential of that device (add-credential), not a second device.
        if !self.store.devices_by_serial(&serial).await?.is_empty() {
            return Err(RegistryError::Duplicate);
        }
        self.store
            .enroll(
                Entry {
                    tenant: tenant_id,
                    family_id: Some(&family.id),
                    state: DeviceState::Registered,
                    enrolled_by: "individual",
                    proof: Proof::Family,
                    actor: "operator",
                },
                &[NewDevice {
                    id: id.clone(),
                    serial: &serial,
                    certificate: cert_der,
                    fingerprint: fp.to_string(),
                    public_key: &cert.public_point(),
                }],
            )
            .await
            .map_err(duplicate)?;
        Ok(id)
    }

    /// The family that issued `cert`, which `tenant_id` must own: claiming
    /// a device needs that proof.
    async fn owned_family(
        &self,
        tenant_id: &str,
        cert: &IssuedCert,
    ) -> Result<FamilyRow, RegistryError> {
        match self.family_of(cert).await? {
            Some(f) if f.tenant_id == tenant_id => Ok(f),
            Some(_) => Err(RegistryError::ForeignFamily),
            None => Err(RegistryError::UnprovenIssuer),
        }
    }

    /// A chip serial belongs to one family.
    async fn check_serial(&self, serial: &str, family_id: &str) -> Result<(), RegistryError> {
        let taken = self
            .store
            .devices_by_serial(serial)
            .await?
            .iter()
            .any(|d| d.family_id.as_deref() != Some(family_id));
        if taken {
            return Err(RegistryError::SerialTaken);
        }
        Ok(())
    }

    /// Imports a signed factory manifest: verified against `root` before
    /// anything is written, then every device in one transaction.
    pub async fn import_manifest(
        &self,
        tenant_id: &str,
        bytes: &[u8],
        root_der: &[u8],
    ) -> Result<usize, RegistryError> {
        let r = self.import_manifest_inner(tenant_id, bytes, root_der).await;
        let (subject, detail) = match &r {
            Ok((batch, n)) => (batch.clone(), format!("{n} devices")),
            Err(_) => ("manifest".to_string(), String::new()),
        };
        self.audited(tenant_id, "import-manifest", &subject, &detail, r)
            .await
            .map(|(_, n)| n)
    }

    async fn import_manifest_inner(
        &self,
        tenant_id: &str,
        bytes: &[u8],
        root_der: &[u8],
    ) -> Result<(String, usize), RegistryError> {
        let root =
            IssuedCert::from_der(root_der).map_err(|e| RegistryError::Malformed(e.to_string()))?;
        let m = inkan_pki::manifest::verify(bytes, &root, SystemTime::now())
            .map_err(|e| RegistryError::Manifest(e.to_string()))?;
        let family_fp = fingerprint(&m.family_certificate);
        let family = match self.store.family_by_fingerprint(&family_fp).await? {
            Some(f) if f.tenant_id == tenant_id => f,
            Some(_) => return Err(RegistryError::ForeignFamily),
            None => return Err(RegistryError::UnprovenIssuer),
        };
        let mut rows = Vec::with_capacity(m.entries.len());
        for e in &m.entries {
            let cert = IssuedCert::from_der(&e.certificate)
                .map_err(|e| RegistryError::Malformed(e.to_string()))?;
            if cert.public_point() != e.public_key.as_ref() {
                return Err(RegistryError::Manifest(format!(
                    "entry {}: public key does not match its certificate",
                    e.serial
                )));
            }
            let id = match &e.ueid {
                Some(u) => inkan_pki::Ueid::from_bytes(u)
                    .map_err(|err| RegistryError::Manifest(format!("entry {}: {err}", e.serial)))?
                    .to_hex(),
                None => device_id_of(&cert),
            };
            rows.push(NewDevice {
                id,
                serial: &e.serial,
                certificate: &e.certificate,
                fingerprint: fingerprint(&e.certificate),
                public_key: &e.public_key,
            });
        }
        self.store
            .enroll(
                Entry {
                    tenant: tenant_id,
                    family_id: Some(&family.id),
                    state: DeviceState::Manufactured,
                    enrolled_by: "manifest",
                    proof: Proof::Family,
                    actor: "manifest",
                },
                &rows,
            )
            .await
            .map_err(duplicate)?;
        Ok((m.batch.clone(), m.entries.len()))
    }

    /// Imports a CRL signed by a family's CA: verified against the family
    /// certificate, refused if not newer than the last one, then applied
    /// in one transaction (see [`Store::apply_crl`]).
    pub async fn import_crl(
        &self,
        tenant_id: &str,
        family_id: &str,
        crl_der: &[u8],
    ) -> Result<CrlImport, RegistryError> {
        let r = self.import_crl_inner(tenant_id, family_id, crl_der).await;
        let detail = match &r {
            Ok(i) => format!(
                "CRL {}: {} listed, {} devices revoked",
                i.crl_number, i.listed, i.devices_revoked
            ),
            Err(_) => String::new(),
        };
        self.audited(tenant_id, "import-crl", family_id, &detail, r)
            .await
    }

    async fn import_crl_inner(
        &self,
        tenant_id: &str,
        family_id: &str,
        crl_der: &[u8],
    ) -> Result<CrlImport, RegistryError> {
        let f = self
            .store
            .family_in(tenant_id, family_id)
            .await?
            .ok_or(RegistryError::UnknownFamily)?;
        let ca = IssuedCert::from_der(&f.certificate)
            .map_err(|e| RegistryError::Malformed(e.to_string()))?;
        let v = inkan_pki::crl::Crl::from_der(crl_der)
            .and_then(|c| c.verify(&ca))
            .map_err(|e| RegistryError::Crl(e.to_string()))?;
        let number = i64::try_from(v.number)
            .map_err(|_| RegistryError::Crl("CRL number beyond 2^63".into()))?;
        if let Some(have) = self.store.crl_number(&f.id).await? {
            if number <= have {
                return Err(RegistryError::Crl(format!(
                    "stale: CRL number {number}, the cloud already has {have}"
                )));
            }
        }
        let serials: Vec<String> = v.revoked.iter().map(|r| hex::encode(&r.serial)).collect();
        let devices_revoked = self.store.apply_crl(&f.id, number, &serials).await?;
        Ok(CrlImport {
            crl_number: number,
            listed: serials.len(),
            devices_revoked,
        })
    }
}
