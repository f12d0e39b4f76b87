//! The boot check: before a device runs an image, its secure element
//! verifies the firmware manifest against the OEM key pinned in zone 3, the
//! manifest must be for this device's class (its family), its security
//! version at least the one the chip's one-way counter records (zone 5),
//! and the image must hash to the manifest's digest.

use crate::{read_der, read_identity, DeviceError, SharedDriver};
use inkan_pki::firmware::FirmwareManifest;
use inkan_pki::KeyCurve;
use inkan_se::transport::Transport;
use inkan_se::Curve;
use sha2::Digest;
use std::time::{Duration, Instant};

/// Zone of the pinned firmware key.
pub const FIRMWARE_KEY_ZONE: u8 = 3;
/// The one-way counter zone holding the confirmed security version: the
/// counter only goes down, and `u32::MAX - counter` is the version.
pub const FW_COUNTER_ZONE: u8 = 5;

/// Why a device refuses to boot (or install) an image.
#[derive(Debug, thiserror::Error)]
pub enum BootRefused {
    /// The manifest does not parse.
    #[error("malformed firmware manifest: {0}")]
    Manifest(String),
    /// The chip says the signature is not the pinned firmware key's.
    #[error(
        "manifest signature does not verify with the firmware key pinned in the secure element"
    )]
    Signature,
    /// For another device class.
    #[error("manifest for class {manifest:?}, this device is {device:?}")]
    Class {
        /// The manifest's class.
        manifest: String,
        /// The device's family.
        device: String,
    },
    /// Below the confirmed security version.
    #[error("security version {manifest} is below the device's {device} (downgrade refused)")]
    Downgrade {
        /// The manifest's security version.
        manifest: u32,
        /// The version the chip's counter records.
        device: u32,
    },
    /// The image is not the one the manifest describes.
    #[error(
        "image size {found} differs from the manifest's {expected} (truncated or padded image)"
    )]
    Size {
        /// The manifest's size.
        expected: u64,
        /// The image's.
        found: u64,
    },
    /// The image hashes to something else.
    #[error("image digest does not match the manifest (tampered or corrupt image)")]
    Digest,
    /// The chip or its zones.
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// A check that passed, with where its time went.
#[derive(Debug, Clone)]
pub struct BootOk {
    /// The manifest.
    pub manifest: FirmwareManifest,
    /// The security version the chip recorded before.
    pub device_security_version: u32,
    /// Hashing the image on the host.
    pub hash_time: Duration,
    /// The chip's signature check (digest of the manifest and Verify
    /// Signature).
    pub verify_time: Duration,
}

fn chip<E: Into<DeviceError>>(e: E) -> BootRefused {
    BootRefused::Device(e.into())
}

/// The security version the chip's one-way counter records.
pub fn security_version<T: Transport>(d: &mut inkan_se::Driver<T>) -> Result<u32, DeviceError> {
    let (counter, _) = d.read_counter(FW_COUNTER_ZONE, 0, 0)?;
    Ok(u32::MAX - counter)
}

/// Checks `image` against the signed `manifest` with the chip.
pub fn boot_check<T: Transport>(
    driver: &SharedDriver<T>,
    image: &[u8],
    manifest: &[u8],
) -> Result<BootOk, BootRefused> {
    let opened =
        inkan_pki::firmware::open(manifest).map_err(|e| BootRefused::Manifest(e.to_string()))?;
    let mut d = driver.lock().map_err(|_| {
        BootRefused::Device(DeviceError::Zone {
            zone: FIRMWARE_KEY_ZONE,
            reason: "driver lock poisoned",
        })
    })?;
    // 1. The signature, by the chip, against the pinned key.
    let t = Instant::now();
    let spki = read_der(&mut d, FIRMWARE_KEY_ZONE)?;
    let point = inkan_pki::signer::point_of_spki(&spki).map_err(|_| DeviceError::Zone {
        zone: FIRMWARE_KEY_ZONE,
        reason: "not a P-256 or P-384 public key",
    })?;
    let (curve, digest) = match KeyCurve::of_point(&point) {
        Some(KeyCurve::P256) => (Curve::P256, sha2::Sha256::digest(&opened.tbs).to_vec()),
        Some(KeyCurve::P384) => (Curve::P384, sha2::Sha384::digest(&opened.tbs).to_vec()),
        None => return Err(BootRefused::Signature),
    };
    if Some(opened.curve) != KeyCurve::of_point(&point)
        || !d
            .verify(curve, &point, &digest, &opened.signature)
            .map_err(chip)?
    {
        return Err(BootRefused::Signature);
    }
    let verify_time = t.elapsed();
    let m = opened.manifest;
    // 2. For this device's class.
    let cert = read_identity(&mut d)?.certificate;
    let family = inkan_pki::IssuedCert::from_der(&cert)
        .ok()
        .and_then(|c| c.subject_org_unit())
        .unwrap_or_default();
    if m.class != family {
        return Err(BootRefused::Class {
            manifest: m.class,
            device: family,
        });
    }
    // 3. Never below the confirmed security version.
    let current = security_version(&mut d)?;
    if m.security_version < current {
        return Err(BootRefused::Downgrade {
            manifest: m.security_version,
            device: current,
        });
    }
    drop(d);
    // 4. The image itself.
    let t = Instant::now();
    if image.len() as u64 != m.size {
        return Err(BootRefused::Size {
            expected: m.size,
            found: image.len() as u64,
        });
    }
    let h = sha2::Sha256::digest(image);
    let hash_time = t.elapsed();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        h.as_slice(),
        m.digest.as_slice(),
    )) {
        return Err(BootRefused::Digest);
    }
    Ok(BootOk {
        manifest: m,
        device_security_version: current,
        hash_time,
        verify_time,
    })
}

/// Confirms a booted image: advances the chip's one-way counter to its
/// security version (never backwards). Returns the recorded version.
pub fn confirm<T: Transport>(
    driver: &SharedDriver<T>,
    security_version: u32,
) -> Result<u32, DeviceError> {
    let mut d = driver.lock().map_err(|_| DeviceError::Zone {
        zone: FW_COUNTER_ZONE,
        reason: "driver lock poisoned",
    })?;
    let current = self::security_version(&mut d)?;
    if security_version > current {
        d.decrement(FW_COUNTER_ZONE, security_version - current, 0, &[])?;
    }
    self::security_version(&mut d)
}

/// A/B firmware slots on the device's disk: the running image in one slot,
/// an update installed into the other, tried once, then confirmed (the chip
/// records its security version) or reverted. Every change of state is one
/// atomic rename, so a power cut at any step leaves a slot that passes the
/// boot check.
pub mod slots {
    use super::{boot_check, confirm, BootRefused};
    use crate::{DeviceError, SharedDriver};
    use inkan_se::transport::Transport;
    use std::path::{Path, PathBuf};

    /// Which slot.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    pub enum Slot {
        /// Slot A.
        A,
        /// Slot B.
        B,
    }

    impl Slot {
        fn other(self) -> Slot {
            match self {
                Slot::A => Slot::B,
                Slot::B => Slot::A,
            }
        }
        fn dir(self) -> &'static str {
            match self {
                Slot::A => "slot-a",
                Slot::B => "slot-b",
            }
        }
    }

    /// The slot state, in `state.json`.
    #[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    pub struct State {
        /// The confirmed slot.
        pub active: Slot,
        /// An installed update waiting for its trial boot.
        pub pending: Option<Slot>,
        /// Whether the pending slot has been booted once already (a second
        /// boot without confirmation reverts).
        pub tried: bool,
    }

    /// Why an install or a boot failed.
    #[derive(Debug, thiserror::Error)]
    pub enum SlotError {
        /// The image was refused.
        #[error(transparent)]
        Refused(#[from] BootRefused),
        /// No slot holds a bootable image.
        #[error("no bootable image: {0}")]
        Unbootable(String),
        /// The disk.
        #[error("{path}: {source}")]
        Io {
            /// The file.
            path: PathBuf,
            /// What failed.
            source: std::io::Error,
        },
        /// The chip.
        #[error(transparent)]
        Device(#[from] DeviceError),
        /// A simulated power cut (tests).
        #[error("power cut at {0}")]
        PowerCut(&'static str),
    }

    /// What a boot chose.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Booted {
        /// The slot running.
        pub slot: Slot,
        /// Whether this is the trial boot of an update.
        pub trial: bool,
        /// Its security version.
        pub security_version: u32,
    }

    fn io(path: &Path, e: std::io::Error) -> SlotError {
        SlotError::Io {
            path: path.to_path_buf(),
            source: e,
        }
    }

    /// Writes a file atomically and durably (temp, fsync, rename, dir fsync).
    fn write_atomic(path: &Path, data: &[u8]) -> Result<(), SlotError> {
        use std::io::Write;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
        f.write_all(data).map_err(|e| io(&tmp, e))?;
        f.sync_all().map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io(dir, e))?;
        }
        Ok(())
    }

    /// The slots in `dir`.
    pub struct Slots {
        dir: PathBuf,
        /// Called before each durable step with its name; an error stops
        /// there, as a power cut would (tests inject them).
        pub step_hook: Box<dyn FnMut(&'static str) -> Result<(), SlotError> + Send>,
    }

    impl Slots {
        /// Slots in `dir`; a fresh directory gets `image` + `manifest` as
        /// its first, confirmed slot A.
        pub fn open(dir: &Path) -> Slots {
            Slots {
                dir: dir.to_path_buf(),
                step_hook: Box::new(|_| Ok(())),
            }
        }

        fn step(&mut self, name: &'static str) -> Result<(), SlotError> {
            (self.step_hook)(name)
        }

        fn path(&self, slot: Slot, file: &str) -> PathBuf {
            self.dir.join(slot.dir()).join(file)
        }

        /// The state (slot A confirmed when there is none yet).
        pub fn state(&self) -> Result<State, SlotError> {
            let p = self.dir.join("state.json");
            match std::fs::read(&p) {
                Ok(b) => serde_json::from_slice(&b)
                    .map_err(|e| io(&p, std::io::Error::other(e.to_string()))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State {
                    active: Slot::A,
                    pending: None,
                    tried: false,
                }),
                Err(e) => Err(io(&p, e)),
            }
        }

        fn set_state(&mut self, s: &State, step: &'static str) -> Result<(), SlotError> {
            self.step(step)?;
            let bytes = serde_json::to_vec(s).unwrap_or_default();
            write_atomic(&self.dir.join("state.json"), &bytes)
        }

        fn read(&self, slot: Slot) -> Option<(Vec<u8>, Vec<u8>)> {
            Some((
                std::fs::read(self.path(slot, "image")).ok()?,
                std::fs::read(self.path(slot, "manifest")).ok()?,
            ))
        }

        /// Installs the factory image into slot A (first boot).
        pub fn provision(&mut self, image: &[u8], manifest: &[u8]) -> Result<(), SlotError> {
            std::fs::create_dir_all(self.dir.join("slot-a")).map_err(|e| io(&self.dir, e))?;
            write_atomic(&self.path(Slot::A, "image"), image)?;
            write_atomic(&self.path(Slot::A, "manifest"), manifest)
        }

        /// Verifies an update with the chip, then writes it into the
        /// inactive slot and marks it pending. Nothing is written for an
        /// image the chip refuses.
        pub fn install<T: Transport>(
            &mut self,
            driver: &SharedDriver<T>,
            image: &[u8],
            manifest: &[u8],
        ) -> Result<Slot, SlotError> {
            boot_check(driver, image, manifest)?;
            let mut st = self.state()?;
            let target = st.active.other();
            // A pending update not yet confirmed is dropped first.
            if st.pending.is_some() {
                st.pending = None;
                st.tried = false;
                self.set_state(&st, "drop pending")?;
            }
            let dir = self.dir.join(target.dir());
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
            self.step("write image")?;
            write_atomic(&self.path(target, "image"), image)?;
            self.step("write manifest")?;
            write_atomic(&self.path(target, "manifest"), manifest)?;
            st.pending = Some(target);
            st.tried = false;
            self.set_state(&st, "mark pending")?;
            Ok(target)
        }

        /// Chooses what to run: a pending update once (its trial), else
        /// the active slot; every candidate passes the boot check first,
        /// and a pending slot that fails it, or was already tried, is
        /// dropped.
        pub fn boot<T: Transport>(
            &mut self,
            driver: &SharedDriver<T>,
        ) -> Result<Booted, SlotError> {
            let mut st = self.state()?;
            if let Some(p) = st.pending {
                let ok = !st.tried
                    && self
                        .read(p)
                        .and_then(|(i, m)| boot_check(driver, &i, &m).ok())
                        .is_some();
                if ok {
                    st.tried = true;
                    self.set_state(&st, "mark tried")?;
                    let (i, m) = self
                        .read(p)
                        .ok_or_else(|| SlotError::Unbootable("pending slot vanished".into()))?;
                    let sv = boot_check(driver, &i, &m)?.manifest.security_version;
                    return Ok(Booted {
                        slot: p,
                        trial: true,
                        security_version: sv,
                    });
                }
                st.pending = None;
                st.tried = false;
                self.set_state(&st, "revert")?;
            }
            let (i, m) = self
                .read(st.active)
                .ok_or_else(|| SlotError::Unbootable(format!("slot {:?} is empty", st.active)))?;
            let ok = boot_check(driver, &i, &m)
                .map_err(|e| SlotError::Unbootable(format!("slot {:?}: {e}", st.active)))?;
            // A power cut between activating a slot and advancing the
            // counter is caught up here: the active slot's version is
            // recorded.
            if ok.manifest.security_version > ok.device_security_version {
                confirm(driver, ok.manifest.security_version)?;
            }
            Ok(Booted {
                slot: st.active,
                trial: false,
                security_version: ok.manifest.security_version,
            })
        }

        /// The trial boot worked: the pending slot becomes active and the
        /// chip records its security version.
        pub fn confirm<T: Transport>(
            &mut self,
            driver: &SharedDriver<T>,
        ) -> Result<u32, SlotError> {
            let mut st = self.state()?;
            let Some(p) = st.pending.filter(|_| st.tried) else {
                return Err(SlotError::Unbootable("nothing on trial to confirm".into()));
            };
            let (i, m) = self
                .read(p)
                .ok_or_else(|| SlotError::Unbootable("pending slot vanished".into()))?;
            let sv = boot_check(driver, &i, &m)?.manifest.security_version;
            st.active = p;
            st.pending = None;
            st.tried = false;
            self.set_state(&st, "activate")?;
            self.step("advance counter")?;
            Ok(confirm(driver, sv)?)
        }
    }
}

/// What one update poll did.
#[derive(Debug, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// No update offered.
    Nothing,
    /// Installed, trial-booted and confirmed at this security version.
    Updated(u32),
    /// Refused or failed (reported to the cloud).
    Failed(String),
}

fn report(
    up: &mut crate::Uplink,
    campaign: &str,
    state: &str,
    detail: &str,
) -> Result<(), crate::UplinkError> {
    let report = inkan_proto::resources::FirmwareReport {
        campaign: campaign.to_string(),
        state: state.to_string(),
        detail: detail.to_string(),
    };
    up.request(
        coap_lite::RequestType::Post,
        inkan_proto::resources::FIRMWARE_REPORT,
        report.encode(),
    )?;
    Ok(())
}

/// Asks the cloud for an update; if one is offered: downloads it
/// block-wise into `work` (resuming), installs it into the inactive slot
/// (the chip verifies it first), boots it on trial, lets `self_test`
/// decide, and confirms or reverts; progress and outcome are reported.
pub fn update_once<T: Transport>(
    up: &mut crate::Uplink,
    driver: &SharedDriver<T>,
    slots: &mut slots::Slots,
    work: &std::path::Path,
    self_test: &mut dyn FnMut(&[u8]) -> Result<(), String>,
) -> Result<UpdateOutcome, crate::UplinkError> {
    let offer = up
        .request(
            coap_lite::RequestType::Post,
            inkan_proto::resources::FIRMWARE_NEXT,
            Vec::new(),
        )?
        .payload;
    if offer.is_empty() {
        return Ok(UpdateOutcome::Nothing);
    }
    let inkan_proto::resources::FirmwareOffer { campaign, firmware } =
        inkan_proto::resources::FirmwareOffer::decode(&offer)
            .map_err(|e| crate::UplinkError::Coap(e.to_string()))?;
    report(up, &campaign, "downloading", "")?;
    let manifest = up.firmware_manifest(&firmware)?;
    let file = work.join(format!("{firmware}.part"));
    up.download(&firmware, &file, None)?;
    let image = std::fs::read(&file)?;
    let fail = |up: &mut crate::Uplink, why: String| -> Result<UpdateOutcome, crate::UplinkError> {
        report(up, &campaign, "failed", &why)?;
        Ok(UpdateOutcome::Failed(why))
    };
    if let Err(e) = slots.install(driver, &image, &manifest) {
        return fail(up, e.to_string());
    }
    let _ = std::fs::remove_file(&file);
    report(up, &campaign, "installed", "")?;
    let booted = match slots.boot(driver) {
        Ok(b) if b.trial => b,
        Ok(_) => return fail(up, "the update did not boot on trial".into()),
        Err(e) => return fail(up, e.to_string()),
    };
    if let Err(why) = self_test(&image) {
        // Not confirmed: the next boot reverts to the previous slot.
        let _ = slots.boot(driver);
        return fail(up, format!("self-test failed: {why}"));
    }
    match slots.confirm(driver) {
        Ok(v) => {
            report(
                up,
                &campaign,
                "succeeded",
                &format!("security version {v} in slot {:?}", booted.slot),
            )?;
            Ok(UpdateOutcome::Updated(v))
        }
        Err(e) => fail(up, e.to_string()),
    }
}
