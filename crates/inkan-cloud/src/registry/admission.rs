//! Admission of a presented chain: resolved against the registry without
//! writing anything, then admitted (enrolment, a new credential,
//! activation) once the device proved it holds the key.

use super::*;

impl Registry {
    /// Checks the presented chain (end entity first) against the registry
    /// and decides what admitting it will do; writes nothing. The caller
    /// verifies the device's proof of possession with
    /// [`Resolved::public_key`] and only then calls [`Registry::admit`].
    pub async fn resolve(&self, chain: &[Vec<u8>]) -> Result<Resolved, RegistryError> {
        let leaf_der = chain
            .first()
            .ok_or_else(|| RegistryError::Malformed("empty certificate chain".into()))?;
        let fp = fingerprint(leaf_der);
        self.refresh_caches().await?;
        let (generation, hit) = match self.cache.lock() {
            Ok(c) => ((c.epoch, c.local), c.verified.get(&fp).cloned()),
            Err(_) => ((i64::MIN, u64::MAX), None),
        };
        if let Some((a, not_after)) = hit {
            if SystemTime::now() <= not_after {
                return Ok(Resolved {
                    public_key: a.public_key.clone(),
                    plan: Plan::Cached(Authorized {
                        enrolled_now: false,
                        ..a
                    }),
                    leaf_der: leaf_der.clone(),
                    fingerprint: fp,
                    not_after,
                    generation,
                });
            }
        }
        let leaf =
            IssuedCert::from_der(leaf_der).map_err(|e| RegistryError::Malformed(e.to_string()))?;
        let known = self.store.credential_by_fingerprint(&fp).await?;
        let family = self.family_of(&leaf).await?;
        if let Some(e) = family_error(family.as_ref()) {
            return Err(e);
        }
        let plan = match known {
            Some((credential, device)) => {
                let erase_only = device_error(&device, Some(&credential))?;
                // A device claimed without proof, under a family another
                // tenant owns: the family's owner wins.
                if let Some(f) = &family {
                    if device.tenant_id != f.tenant_id && device.proof == Proof::None {
                        return Err(RegistryError::ForeignFamily);
                    }
                }
                self.check_chain(&leaf, leaf_der, chain, family.as_ref(), true)?;
                Plan::Known {
                    device,
                    credential,
                    erase_only,
                }
            }
            None => {
                let f = family.ok_or(RegistryError::UnknownCa)?;
                // A certificate the family's revocation list names.
                if self
                    .revoked_serials(&f.id)
                    .await?
                    .contains(&leaf.serial_hex())
                {
                    return Err(RegistryError::DeviceRevoked);
                }
                self.check_chain(&leaf, leaf_der, chain, Some(&f), false)?;
                let serial = leaf
                    .subject_serial_number()
                    .unwrap_or_else(|| fp[..16].to_string());
                self.plan_new(&leaf, f, serial).await?
            }
        };
        Ok(Resolved {
            plan,
            public_key: leaf.public_point(),
            leaf_der: leaf_der.clone(),
            fingerprint: fp,
            not_after: leaf.validity().1,
            generation,
        })
    }

    /// Path validation against the family (time, EKU, path); a device
    /// without a family (registered before families were required) is
    /// checked against its own pinned certificate.
    fn check_chain(
        &self,
        leaf: &IssuedCert,
        leaf_der: &[u8],
        chain: &[Vec<u8>],
        family: Option<&FamilyRow>,
        known: bool,
    ) -> Result<(), RegistryError> {
        let anchor = match family {
            Some(f) => f.certificate.clone(),
            None if known => leaf_der.to_vec(),
            None => return Err(RegistryError::UnknownCa),
        };
        let validator =
            DeviceValidator::new(std::slice::from_ref(&anchor), RequiredEku::ClientAuth)?;
        if family.is_some() {
            validator.validate(leaf_der, &chain[1..], SystemTime::now())?;
        } else {
            let (nb, na) = leaf.validity();
            let now = SystemTime::now();
            if now > na {
                return Err(RegistryError::Chain(ValidationError::Expired));
            }
            if now < nb {
                return Err(RegistryError::Chain(ValidationError::NotYetValid));
            }
        }
        Ok(())
    }

    /// A certificate the registry has never seen, issued by a registered
    /// family: a new credential of a known device (same UEID, or same chip
    /// serial in the same family), or a new device.
    async fn plan_new(
        &self,
        leaf: &IssuedCert,
        family: FamilyRow,
        serial: String,
    ) -> Result<Plan, RegistryError> {
        let same_chip = self.store.devices_by_serial(&serial).await?;
        if same_chip
            .iter()
            .any(|d| d.family_id.as_deref() != Some(family.id.as_str()))
        {
            return Err(RegistryError::SerialTaken);
        }
        let by_ueid = match leaf.ueid() {
            Some(u) => self.store.device(&u.to_hex()).await?,
            None => same_chip.into_iter().next(),
        };
        match by_ueid {
            Some(device) => {
                if device.family_id.as_deref() != Some(family.id.as_str())
                    || device.serial != serial
                {
                    return Err(RegistryError::IdentityTaken);
                }
                device_error(&device, None)?;
                Ok(Plan::NewCredential { device, family })
            }
            None => {
                if self
                    .store
                    .devices_by_serial(&serial)
                    .await?
                    .iter()
                    .any(|d| d.family_id.as_deref() == Some(family.id.as_str()))
                {
                    // The same chip under a new identity: the old one must
                    // be decommissioned first.
                    return Err(RegistryError::IdentityTaken);
                }
                Ok(Plan::NewDevice {
                    id: device_id_of(leaf),
                    family,
                    serial,
                })
            }
        }
    }

    /// Admits a resolved chain whose proof of possession verified:
    /// enrolls a new device, records a new credential, activates a device
    /// on its first authentication.
    pub async fn admit(&self, r: Resolved) -> Result<Authorized, RegistryError> {
        let Resolved {
            plan,
            leaf_der,
            fingerprint: fp,
            public_key,
            not_after,
            generation,
        } = r;
        let (device, credential_id, erase_only, enrolled_now) = match plan {
            Plan::Cached(a) => return Ok(a),
            Plan::Known {
                device,
                credential,
                erase_only,
            } => (device, credential.id, erase_only, false),
            Plan::NewCredential { device, family } => {
                let id = self
                    .store
                    .add_credential(
                        &device,
                        &leaf_der,
                        &fp,
                        &public_key,
                        &format!("family {}", family.name),
                    )
                    .await?;
                self.store
                    .audit(
                        Some(&device.tenant_id),
                        "credential-added",
                        &device.serial,
                        "ok",
                        &format!(
                            "device {} credential {id} issued by family {}",
                            device.id, family.name
                        ),
                    )
                    .await?;
                (device, id, false, false)
            }
            Plan::NewDevice { family, serial, id } => {
                let inserted = self
                    .store
                    .enroll(
                        Entry {
                            tenant: &family.tenant_id,
                            family_id: Some(&family.id),
                            state: DeviceState::Active,
                            enrolled_by: "family",
                            proof: Proof::Family,
                            actor: &format!("family {}", family.name),
                        },
                        &[NewDevice {
                            id: id.clone(),
                            serial: &serial,
                            certificate: &leaf_der,
                            fingerprint: fp.clone(),
                            public_key: &public_key,
                        }],
                    )
                    .await;
                let enrolled_now = inserted.is_ok();
                if enrolled_now {
                    self.store
                        .audit(
                            Some(&family.tenant_id),
                            "enroll",
                            &serial,
                            "ok",
                            &format!("device {id} through family {}", family.name),
                        )
                        .await?;
                }
                // Another replica may have enrolled it at the same moment.
                let (c, d) = self
                    .store
                    .credential_by_fingerprint(&fp)
                    .await?
                    .ok_or(RegistryError::UnknownCa)?;
                (d, c.id, false, enrolled_now)
            }
        };
        if matches!(
            device.state,
            DeviceState::Manufactured | DeviceState::Registered
        ) {
            let to = lifecycle::transition(device.state, Action::Activate)?;
            self.store
                .set_device_state(
                    &device,
                    device.state,
                    to,
                    Action::Activate,
                    "device",
                    "first authentication",
                    None,
                )
                .await?;
        }
        let a = Authorized {
            device_id: device.id,
            credential_id,
            erase_only,
            tenant_id: device.tenant_id,
            serial: device.serial,
            public_key,
            enrolled_now,
        };
        if !erase_only {
            if let Ok(mut c) = self.cache.lock() {
                if (c.epoch, c.local) == generation {
                    c.verified.insert(fp, (a.clone(), not_after));
                }
            }
        }
        Ok(a)
    }

    /// The tenant a presented chain belongs to, for attributing a refusal:
    /// the owner of its credential's device, else of its issuing family.
    pub async fn tenant_of(&self, chain: &[Vec<u8>]) -> Option<String> {
        let leaf_der = chain.first()?;
        if let Ok(Some((_, d))) = self
            .store
            .credential_by_fingerprint(&fingerprint(leaf_der))
            .await
        {
            return Some(d.tenant_id);
        }
        let leaf = IssuedCert::from_der(leaf_der).ok()?;
        self.family_of(&leaf).await.ok()?.map(|f| f.tenant_id)
    }
}
