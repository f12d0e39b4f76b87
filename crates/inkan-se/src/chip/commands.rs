//! The command handlers. Each one parses its whole payload and checks every
//! condition before it changes anything, so a refused command leaves the
//! NVM as it was.

use super::envelope;
use super::keys::{self, PrivateKey};
use super::state::{mode, provisioning, ZoneKind, PASSWORD_TRIES};
use super::{Chip, Request};
use crate::channel::{AesKey, HostKeys};
use crate::personality::Personality;
use crate::wire::codes::{command_ac, life_cycle, zone_ac};
use crate::wire::encoding::{
    decode_public_key, decode_signature, encode_public_key, encode_signature, put_len,
};
use crate::wire::{CommandCode, Curve, ExtendedCode, Reader, Status, Tag};
use subtle::ConstantTimeEq;

/// The ephemeral key slot.
pub const EPHEMERAL_SLOT: u8 = 0xFF;

/// Option-byte fields of Read / Update / Decrement (§4.3).
struct AccessOption {
    change_ac: Option<(u8, bool)>,
}

impl AccessOption {
    fn parse(option: u8) -> AccessOption {
        let change_ac = (option & 0x10 != 0).then_some((option & 0x07, option & 0x08 != 0));
        AccessOption { change_ac }
    }
}

fn zone_ac_satisfied(ac: u8, authenticated: bool) -> bool {
    match ac {
        zone_ac::ALWAYS => true,
        // 1 HOST, 2 AUTH, 3 MAC (A110) and 6 AUTH+HOST (A120) all need the host
        // C-MAC; the emulator has no separate entity authentication.
        1..=3 | 6 => authenticated,
        _ => false,
    }
}

impl Chip {
    /// Most response data one frame carries: the frame less its header and
    /// CRC, and less the R-MAC only when the response carries one.
    fn max_data(&self, rmac: bool) -> usize {
        self.nvm.personality.max_frame() - 1 - 2 - if rmac { 4 } else { 0 }
    }

    fn require_unlocked(&self) -> Result<(), Status> {
        if self.nvm.locked() {
            Err(Status::INVALID_LIFE_CYCLE_STATE)
        } else {
            Ok(())
        }
    }

    pub(super) fn dispatch(&mut self, req: &Request<'_>) -> Result<Vec<u8>, Status> {
        let mut r = Reader::new(req.payload);
        let out = match (req.code, req.ext) {
            (CommandCode::ECHO, _) => {
                if req.payload.len() > self.max_data(req.rmac) {
                    return Err(Status::BUFFER_LENGTH_EXCEEDED);
                }
                return Ok(req.payload.to_vec());
            }
            (CommandCode::RESET, _) => {
                r.finish()?;
                self.volatile = Default::default();
                Vec::new()
            }
            (CommandCode::GENERATE_RANDOM, _) => self.generate_random(&mut r)?,
            (CommandCode::QUERY, _) => self.query(&mut r)?,
            (CommandCode::PUT_ATTRIBUTE, _) => self.put_attribute(&mut r, req.authenticated)?,
            (CommandCode::READ, _) => self.read(&mut r, req.authenticated, req.rmac)?,
            (CommandCode::UPDATE, _) => self.update(&mut r, req.authenticated)?,
            (CommandCode::DECREMENT, _) => self.decrement(&mut r, req.authenticated)?,
            (CommandCode::GENERATE_KEY, _) => self.generate_key(&mut r, req.authenticated)?,
            (CommandCode::GENERATE_SIGNATURE, _) => self.generate_signature(&mut r)?,
            (CommandCode::VERIFY_SIGNATURE, _) => self.verify_signature(&mut r)?,
            (CommandCode::ESTABLISH_KEY, _) => self.establish_key(&mut r)?,
            (CommandCode::WRAP_LOCAL_ENVELOPE, _) => self.wrap(&mut r)?,
            (CommandCode::UNWRAP_LOCAL_ENVELOPE, _) => self.unwrap(&mut r)?,
            (CommandCode::VERIFY_PASSWORD, _) => self.verify_password(&mut r)?,
            (CommandCode::DELETE, _) => self.delete(&mut r, req.authenticated)?,
            (CommandCode::HIBERNATE, _) => {
                let mode = r.u8()?;
                r.finish()?;
                if !matches!(mode, 1 | 2) {
                    return Err(Status::VALUE_OUT_OF_RANGE);
                }
                self.volatile = Default::default();
                Vec::new()
            }
            (CommandCode::EXTENDED, Some(ExtendedCode::WRITE_HOST_KEY_V2_PLAIN)) => {
                self.write_host_key_v2(&mut r)?
            }
            (CommandCode::EXTENDED, Some(ExtendedCode::GENERATE_ECDHE)) => {
                self.generate_ecdhe(&mut r)?
            }
            _ => return Err(Status::UNSUPPORTED_COMMAND_CODE),
        };
        r.finish()?;
        Ok(out)
    }

    fn generate_random(&mut self, r: &mut Reader<'_>) -> Result<Vec<u8>, Status> {
        let subject = r.u8()?;
        let size = r.u8()?;
        r.finish()?;
        if subject != 0 || size == 0 {
            return Err(Status::VALUE_OUT_OF_RANGE);
        }
        let mut out = vec![0u8; usize::from(size)];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut out);
        Ok(out)
    }

    fn query(&self, r: &mut Reader<'_>) -> Result<Vec<u8>, Status> {
        let tag = Tag(r.u8()?);
        r.finish()?;
        let nvm = &self.nvm;
        let a120 = nvm.personality == Personality::A120;
        let mut out = Vec::new();
        match tag {
            Tag::PRODUCT_DATA => {
                // TLVs: 0x01 mask id (STSELib needs it first), 0x02 serial
                // ("ST number"), 0x03 I/O buffer size, 0x04 atomicity buffer
                // size, 0x05 NVM size. Tags after 0x01 are inkan's choice.
                let nvm_size: usize = nvm.zones.iter().map(|z| z.data.len()).sum();
                out.extend_from_slice(&[0x01, 0x03]);
                out.extend_from_slice(&nvm.personality.mask_id());
                out.extend_from_slice(&[0x02, 0x09]);
                out.extend_from_slice(&nvm.serial);
                out.extend_from_slice(&[0x03, 0x02]);
                put_len(&mut out, nvm.personality.max_frame());
                out.extend_from_slice(&[0x04, 0x02]);
                put_len(&mut out, 488);
                out.extend_from_slice(&[0x05, 0x02]);
                put_len(&mut out, nvm_size);
            }
            Tag::LIFE_CYCLE_STATE => out.push(nvm.life_cycle),
            Tag::I2C_PARAMETERS => {
                out.extend_from_slice(&[nvm.i2c_address << 1, u8::from(nvm.locked())])
            }
            Tag::DATA_PARTITION => {
                out.push(u8::try_from(nvm.zones.len()).unwrap_or(u8::MAX));
                for z in &nvm.zones {
                    out.push(z.index);
                    out.push(match z.kind {
                        ZoneKind::Data => 0,
                        ZoneKind::Counter => 1,
                    });
                    out.push(z.ac_byte());
                    put_len(&mut out, z.data.len());
                    if z.kind == ZoneKind::Counter {
                        out.extend_from_slice(&z.counter.to_be_bytes());
                    }
                }
            }
            Tag::PRIVATE_KEY_TABLE => {
                out.push(u8::try_from(nvm.slots.len() + 1).unwrap_or(u8::MAX));
                out.push(0);
                out.extend_from_slice(&0u16.to_be_bytes());
                for s in &nvm.slots {
                    out.push(s.index);
                    out.push(u8::from(s.key.is_some()));
                    out.extend_from_slice(&s.mode.to_be_bytes());
                    if let Some(k) = &s.key {
                        k.curve().encode(&mut out);
                    }
                }
                out.push(EPHEMERAL_SLOT);
                out.push(u8::from(self.volatile.ephemeral.is_some()));
                out.extend_from_slice(&mode::KEY_ESTABLISHMENT.to_be_bytes());
                if let Some(k) = &self.volatile.ephemeral {
                    k.curve().encode(&mut out);
                }
            }
            Tag::HOST_KEY_SLOT if !a120 => {
                out.push(u8::from(nvm.host.keys.is_some()));
                out.extend_from_slice(&nvm.host.counter.to_be_bytes()[1..]);
            }
            Tag::HOST_KEY_SLOT_V2 if a120 => {
                out.push(u8::from(nvm.host.keys.is_some()));
                out.push(nvm.host.keys.as_ref().map_or(0, |k| k.mac.type_byte()));
                out.extend_from_slice(&nvm.host.counter.to_be_bytes());
            }
            Tag::HOST_KEY_PROVISIONING_CONTROL if a120 => {
                out.extend_from_slice(&[nvm.host_provisioning, 0xFF])
            }
            Tag::COMMAND_AUTHORIZATION => {
                out.push(nvm.command_change_right);
                out.push(u8::try_from(nvm.commands.len()).unwrap_or(u8::MAX));
                for c in &nvm.commands {
                    out.push(c.code.0);
                    if let Some(e) = c.extended {
                        out.push(e.0);
                    }
                    out.push(c.ac);
                    out.push(c.encryption);
                }
            }
            Tag::LOCAL_ENVELOPE_KEY_TABLE => {
                out.push(u8::try_from(nvm.envelope_keys.len()).unwrap_or(u8::MAX));
                for (i, k) in nvm.envelope_keys.iter().enumerate() {
                    out.push(u8::try_from(i).unwrap_or(u8::MAX));
                    out.push(u8::from(k.is_some()));
                    if let Some(k) = k {
                        out.push(k.type_byte());
                    }
                }
            }
            _ => return Err(Status::VALUE_OUT_OF_RANGE),
        }
        Ok(out)
    }

    fn put_attribute(
        &mut self,
        r: &mut Reader<'_>,
        authenticated: bool,
    ) -> Result<Vec<u8>, Status> {
        let tag = Tag(r.u8()?);
        match tag {
            Tag::LIFE_CYCLE_STATE => {
                let new = r.u8()?;
                r.finish()?;
                self.set_life_cycle(new, authenticated)?;
            }
            Tag::PASSWORD => {
                let pw = r.take(16)?;
                r.finish()?;
                self.require_unlocked()?;
                if self.nvm.password.is_some() && !self.volatile.password_verified && !authenticated
                {
                    return Err(Status::ACCESS_CONDITION_NOT_SATISFIED);
                }
                self.nvm.password = Some(super::state::Password {
                    value: pw.to_vec(),
                    tries_left: PASSWORD_TRIES,
                });
            }
            Tag::I2C_PARAMETERS => {
                let addr = r.u8()? >> 1;
                let _mode = r.u8()?;
                r.finish()?;
                self.require_unlocked()?;
                if !(0x08..=0x77).contains(&addr) {
                    return Err(Status::VALUE_OUT_OF_RANGE);
                }
                self.nvm.i2c_address = addr;
            }
            Tag::HOST_KEY_SLOT => {
                let mac = r.array::<16>()?;
                let cipher = r.array::<16>()?;
                r.finish()?;
                self.require_unlocked()?;
                // V1 host keys are written once.
                if self.nvm.host.keys.is_some() {
                    return Err(Status::ACCESS_CONDITION_NOT_SATISFIED);
                }
                self.nvm.host.keys = Some(HostKeys {
                    mac: AesKey::Aes128(mac),
                    cipher: AesKey::Aes128(cipher),
                });
                self.nvm.host.counter = 0;
            }
            Tag::COMMAND_AC | Tag::COMMAND_ENCRYPTION => {
                let code = CommandCode(r.u8()?);
                let ext = if code == CommandCode::EXTENDED {
                    Some(ExtendedCode(r.u8()?))
                } else {
                    None
                };
                let value = r.u8()?;
                r.finish()?;
                self.require_unlocked()?;
                let right = if tag == Tag::COMMAND_AC { 0b10 } else { 0b01 };
                if self.nvm.command_change_right & right == 0 {
                    return Err(Status::ACCESS_CONDITION_NOT_SATISFIED);
                }
                let rec = self
                    .nvm
                    .commands
                    .iter_mut()
                    .find(|c| c.code == code && c.extended == ext)
                    .ok_or(Status::ENTRY_NOT_FOUND)?;
                if tag == Tag::COMMAND_AC {
                    if value > command_ac::ADMIN_OR_HOST {
                        return Err(Status::VALUE_OUT_OF_RANGE);
                    }
                    if command_ac::strictness(value) < command_ac::strictness(rec.ac) {
                        return Err(Status::ACCESS_CONDITION_NOT_SATISFIED);
                    }
                    rec.ac = value;
                } else {
                    if value > 0b11 {
                        return Err(Status::VALUE_OUT_OF_RANGE);
                    }
                    // Encryption can be added, never removed.
                    if value & rec.encryption != rec.encryption {
                        return Err(Status::ACCESS_CONDITION_NOT_SATISFIED);
                    }
                    rec.encryption = value;
                }
            }
            Tag::HOST_KEY_PROVISIONING_CONTROL if self.nvm.personality == Personality::A120 => {
                let flags = r.u8()?;
                let _slot = r.u8()?;
                r.finish()?;
                self.require_unlocked()?;
                if self.nvm.host_provisioning & provisioning::CHANGE_RIGHT == 0 {
                    return Err(Status::ACCESS_CONDITION_NOT_SATISFIED);
                }
                if flags & 0xF0 != 0 {
                    return Err(Status::VALUE_OUT_OF_RANGE);
                }
                self.nvm.host_provisioning = flags;
            }
            _ => return Err(Status::VALUE_OUT_OF_RANGE),
        }
        self.dirty = true;
        Ok(Vec::new())
    }

    fn set_life_cycle(&mut self, new: u8, authenticated: bool) -> Result<(), Status> {
        let cur = self.nvm.life_cycle;
        let lock_change = (cur & life_cycle::LOCKED) != (new & life_cycle::LOCKED);
        let ok = match (cur, new) {
            (life_cycle::BORN, life_cycle::OPERATIONAL | life_cycle::BORN_LOCKED) => true,
            (life_cycle::BORN_LOCKED, life_cycle::BORN | life_cycle::OPERATIONAL_LOCKED) => true,
            (life_cycle::OPERATIONAL, life_cycle::OPERATIONAL_LOCKED) => true,
            (life_cycle::OPERATIONAL_LOCKED, life_cycle::OPERATIONAL) => true,
            (c, life_cycle::TERMINATED) => c & !life_cycle::LOCKED != life_cycle::TERMINATED,
            _ => false,
        };
        if !ok {
            return Err(Status::INVALID_LIFE_CYCLE_STATE);
        }
        // Locking, unlocking and terminating take the password when one is
        // set, the host C-MAC otherwise.
        if lock_change || new == life_cycle::TERMINATED {
            let proven = if self.nvm.password.is_some() {
                self.volatile.password_verified
            } else {
                authenticated
            };
            if !proven {
                return Err(Status::ACCESS_CONDITION_NOT_SATISFIED);
            }
        }
        self.nvm.life_cycle = new;
        Ok(())
    }

    /// Zone lookup plus the option byte's AC change, validated but not yet
    /// applied. Returns the zone position and the change to apply.
    fn zone_access(
        &self,
        zone: u8,
        option: u8,
        for_update: bool,
        authenticated: bool,
    ) -> Result<(usize, Option<(u8, bool)>), Status> {
        let pos = self
            .nvm
            .zones
            .iter()
            .position(|z| z.index == zone)
            .ok_or(Status::ENTRY_NOT_FOUND)?;
        let z = &self.nvm.zones[pos];
        let (ac, right) = if for_update {
            (z.update_ac, z.update_ac_change_right)
        } else {
            (z.read_ac, z.read_ac_change_right)
        };
        if !zone_ac_satisfied(ac, authenticated) {
            return Err(Status::ACCESS_CONDITION_NOT_SATISFIED);
        }
        let opt = AccessOption::parse(option);
        if let Some((new_ac, _)) = opt.change_ac {
            self.require_unlocked()?;
            if !right || new_ac < ac {
                return Err(Status::ACCESS_CONDITION_NOT_SATISFIED);
            }
        }
        Ok((pos, opt.change_ac))
    }

    fn apply_ac_change(&mut self, pos: usize, change: Option<(u8, bool)>, for_update: bool) {
        if let Some((ac, right)) = change {
            let z = &mut self.nvm.zones[pos];
            if for_update {
                z.update_ac = ac;
                z.update_ac_change_right = right;
            } else {
                z.read_ac = ac;
                z.read_ac_change_right = right;
            }
            self.dirty = true;
        }
    }

    fn read(
        &mut self,
        r: &mut Reader<'_>,
        authenticated: bool,
        rmac: bool,
    ) -> Result<Vec<u8>, Status> {
        let option = r.u8()?;
        let zone = r.u8()?;
        let offset = usize::from(r.u16()?);
        let len = usize::from(r.u16()?);
        r.finish()?;
        if option & 0xE0 != 0 {
            return Err(Status::VALUE_OUT_OF_RANGE);
        }
        let (pos, change) = self.zone_access(zone, option, false, authenticated)?;
        let z = &self.nvm.zones[pos];
        if offset + len > z.data.len() {
            return Err(Status::BOUNDARY_EXCEEDED);
        }
        let counter = z.kind == ZoneKind::Counter;
        if len + if counter { 4 } else { 0 } > self.max_data(rmac) {
            return Err(Status::BUFFER_LENGTH_EXCEEDED);
        }
        let mut out = Vec::with_capacity(len + 4);
        if counter {
            out.extend_from_slice(&z.counter.to_be_bytes());
        }
        out.extend_from_slice(&z.data[offset..offset + len]);
        self.apply_ac_change(pos, change, false);
        Ok(out)
    }

    fn update(&mut self, r: &mut Reader<'_>, authenticated: bool) -> Result<Vec<u8>, Status> {
        let option = r.u8()?;
        let zone = r.u8()?;
        let offset = usize::from(r.u16()?);
        let data = r.rest();
        // Bit 7 asks for an atomic write; every write is atomic here.
        if option & 0x60 != 0 {
            return Err(Status::VALUE_OUT_OF_RANGE);
        }
        let (pos, change) = self.zone_access(zone, option, true, authenticated)?;
        let z = &self.nvm.zones[pos];
        if z.kind != ZoneKind::Data {
            return Err(Status::WRONG_ZONE_TYPE);
        }
        if offset + data.len() > z.data.len() {
            return Err(Status::BOUNDARY_EXCEEDED);
        }
        self.nvm.zones[pos].data[offset..offset + data.len()].copy_from_slice(data);
        self.apply_ac_change(pos, change, true);
        self.dirty = true;
        Ok(Vec::new())
    }

    fn decrement(&mut self, r: &mut Reader<'_>, authenticated: bool) -> Result<Vec<u8>, Status> {
        let option = r.u8()?;
        let zone = r.u8()?;
        let offset = usize::from(r.u16()?);
        let amount = r.u32()?;
        let data = r.rest();
        if option & 0xE0 != 0 {
            return Err(Status::VALUE_OUT_OF_RANGE);
        }
        let (pos, change) = self.zone_access(zone, option, true, authenticated)?;
        let z = &self.nvm.zones[pos];
        if z.kind != ZoneKind::Counter {
            return Err(Status::WRONG_ZONE_TYPE);
        }
        if offset + data.len() > z.data.len() {
            return Err(Status::BOUNDARY_EXCEEDED);
        }
        // A zero amount is only a pure access-condition change.
        if amount == 0 && (change.is_none() || !data.is_empty()) {
            return Err(Status::VALUE_OUT_OF_RANGE);
        }
        let new = z
            .counter
            .checked_sub(amount)
            .ok_or(Status::COUNTER_LIMIT_EXCEEDED)?;
        let z = &mut self.nvm.zones[pos];
        z.counter = new;
        z.data[offset..offset + data.len()].copy_from_slice(data);
        self.apply_ac_change(pos, change, true);
        self.dirty = true;
        Ok(new.to_be_bytes().to_vec())
    }

    fn generate_key(&mut self, r: &mut Reader<'_>, authenticated: bool) -> Result<Vec<u8>, Status> {
        let tag = Tag(r.u8()?);
        match tag {
            Tag::PRIVATE_KEY_SLOT => {
                let slot = r.u8()?;
                let limit = r.u16()?;
                let new_mode = r.u16()?;
                let curve = Curve::decode(r)?;
                r.finish()?;
                if !self.nvm.supports_curve(curve) {
                    return Err(Status::WRONG_KEY_TYPE);
                }
                if slot == EPHEMERAL_SLOT {
                    if !mode::can_establish(new_mode) {
                        return Err(Status::WRONG_MODE_OF_OPERATION);
                    }
                    let key = PrivateKey::generate(curve)?;
                    let mut out = Vec::new();
                    encode_public_key(curve, &key.public_point(), &mut out);
                    self.volatile.ephemeral = Some(key);
                    return Ok(out);
                }
                self.require_unlocked()?;
                let pos = self
                    .nvm
                    .slots
                    .iter()
                    .position(|s| s.index == slot)
                    .ok_or(Status::VALUE_OUT_OF_RANGE)?;
                let s = &self.nvm.slots[pos];
                if s.key.is_some() {
                    match mode::generate_ac(s.mode) {
                        0 => {}
                        1 if authenticated => {}
                        1 => return Err(Status::ACCESS_CONDITION_NOT_SATISFIED),
                        _ => return Err(Status::COMMAND_NOT_AUTHORIZED),
                    }
                }
                if new_mode != s.mode && s.mode & mode::CHANGE_RIGHT == 0 {
                    return Err(Status::WRONG_MODE_OF_OPERATION);
                }
                let key = PrivateKey::generate(curve)?;
                let mut out = Vec::new();
                encode_public_key(curve, &key.public_point(), &mut out);
                let s = &mut self.nvm.slots[pos];
                s.key = Some(key);
                s.usage_limit = limit;
                s.used = 0;
                s.mode = new_mode;
                self.dirty = true;
                Ok(out)
            }
            Tag::LOCAL_ENVELOPE_KEY_TABLE => {
                let slot = usize::from(r.u8()?);
                let kind = r.u8()?;
                r.finish()?;
                self.require_unlocked()?;
                if slot >= self.nvm.envelope_keys.len() {
                    return Err(Status::VALUE_OUT_OF_RANGE);
                }
                let mut bytes = zeroize::Zeroizing::new(vec![
                    0u8;
                    match kind {
                        0 => 16,
                        1 => 32,
                        _ => return Err(Status::VALUE_OUT_OF_RANGE),
                    }
                ]);
                rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
                self.nvm.envelope_keys[slot] = AesKey::from_slice(&bytes);
                self.dirty = true;
                Ok(Vec::new())
            }
            _ => Err(Status::VALUE_OUT_OF_RANGE),
        }
    }

    /// Counts one use of a static slot's key, refusing once the limit is
    /// reached.
    fn count_use(&mut self, pos: usize) -> Result<(), Status> {
        let s = &mut self.nvm.slots[pos];
        if s.usage_limit != 0 {
            if s.used >= s.usage_limit {
                return Err(Status::KEY_BLOCKED);
            }
            s.used += 1;
            self.dirty = true;
        }
        Ok(())
    }

    fn generate_signature(&mut self, r: &mut Reader<'_>) -> Result<Vec<u8>, Status> {
        let slot = r.u8()?;
        let digest = r.take_len_prefixed()?;
        r.finish()?;
        if slot == EPHEMERAL_SLOT {
            return Err(Status::WRONG_KEY_USAGE);
        }
        let pos = self
            .nvm
            .slots
            .iter()
            .position(|s| s.index == slot)
            .ok_or(Status::KEY_NOT_FOUND)?;
        let s = &self.nvm.slots[pos];
        let key = s.key.as_ref().ok_or(Status::KEY_NOT_FOUND)?;
        if !mode::can_sign(s.mode) {
            return Err(Status::WRONG_KEY_USAGE);
        }
        // ECDSA keys sign a host digest; Ed25519 keys sign the message.
        if !key.signs_messages() && !keys::digest_len_ok(digest.len()) {
            return Err(Status::INCONSISTENT_COMMAND_DATA);
        }
        if s.usage_limit != 0 && s.used >= s.usage_limit {
            return Err(Status::KEY_BLOCKED);
        }
        let sig = key.sign_digest(digest)?;
        self.count_use(pos)?;
        let mut out = Vec::with_capacity(sig.len() + 4);
        encode_signature(&sig, &mut out);
        Ok(out)
    }

    fn verify_signature(&mut self, r: &mut Reader<'_>) -> Result<Vec<u8>, Status> {
        let subject = r.u8()?;
        if subject != 0 {
            return Err(Status::VALUE_OUT_OF_RANGE);
        }
        let curve = Curve::decode(r)?;
        if !self.nvm.supports_curve(curve) {
            return Err(Status::WRONG_KEY_TYPE);
        }
        let point = decode_public_key(curve, r)?;
        let sig = decode_signature(curve, r)?;
        if curve == Curve::Ed25519 {
            // The EdDSA variant: 0, pure Ed25519 (RFC 8032), is the one
            // this chip implements.
            if r.u8()? != 0 {
                return Err(Status::VALUE_OUT_OF_RANGE);
            }
        }
        let digest = r.take_len_prefixed()?;
        r.finish()?;
        if curve != Curve::Ed25519 && !keys::digest_len_ok(digest.len()) {
            return Err(Status::INCONSISTENT_COMMAND_DATA);
        }
        let valid = keys::verify_digest(curve, &point, digest, &sig)?;
        Ok(vec![u8::from(valid)])
    }

    fn establish_key(&mut self, r: &mut Reader<'_>) -> Result<Vec<u8>, Status> {
        let slot = r.u8()?;
        let key_curve = if slot == EPHEMERAL_SLOT {
            self.volatile
                .ephemeral
                .as_ref()
                .ok_or(Status::KEY_NOT_FOUND)?
                .curve()
        } else {
            let s = self
                .nvm
                .slots
                .iter()
                .find(|s| s.index == slot)
                .ok_or(Status::KEY_NOT_FOUND)?;
            if !mode::can_establish(s.mode) {
                return Err(Status::WRONG_KEY_USAGE);
            }
            s.key.as_ref().ok_or(Status::KEY_NOT_FOUND)?.curve()
        };
        let point = decode_public_key(key_curve, r)?;
        r.finish()?;
        let secret = if slot == EPHEMERAL_SLOT {
            // Single use: the key is gone whatever the outcome.
            let key = self
                .volatile
                .ephemeral
                .take()
                .ok_or(Status::KEY_NOT_FOUND)?;
            key.ecdh(&point)?
        } else {
            let pos = self
                .nvm
                .slots
                .iter()
                .position(|s| s.index == slot)
                .ok_or(Status::KEY_NOT_FOUND)?;
            let s = &self.nvm.slots[pos];
            if s.usage_limit != 0 && s.used >= s.usage_limit {
                return Err(Status::KEY_BLOCKED);
            }
            let secret = s.key.as_ref().ok_or(Status::KEY_NOT_FOUND)?.ecdh(&point)?;
            self.count_use(pos)?;
            secret
        };
        let mut out = Vec::with_capacity(secret.len() + 2);
        put_len(&mut out, secret.len());
        out.extend_from_slice(&secret);
        Ok(out)
    }

    fn envelope_key(&self, slot: u8) -> Result<&AesKey, Status> {
        self.nvm
            .envelope_keys
            .get(usize::from(slot))
            .ok_or(Status::VALUE_OUT_OF_RANGE)?
            .as_ref()
            .ok_or(Status::KEY_NOT_FOUND)
    }

    fn wrap(&mut self, r: &mut Reader<'_>) -> Result<Vec<u8>, Status> {
        let slot = r.u8()?;
        let data = r.rest();
        envelope::wrap(self.envelope_key(slot)?, data)
    }

    fn unwrap(&mut self, r: &mut Reader<'_>) -> Result<Vec<u8>, Status> {
        let slot = r.u8()?;
        let env = r.rest();
        Ok(envelope::unwrap(self.envelope_key(slot)?, env)?.to_vec())
    }

    fn verify_password(&mut self, r: &mut Reader<'_>) -> Result<Vec<u8>, Status> {
        let candidate = r.take(16)?;
        r.finish()?;
        let pw = self.nvm.password.as_mut().ok_or(Status::ENTRY_NOT_FOUND)?;
        if pw.tries_left == 0 {
            return Err(Status::PASSWORD_BLOCKED);
        }
        let ok: bool = pw.value.ct_eq(candidate).into();
        if ok {
            if pw.tries_left != PASSWORD_TRIES {
                pw.tries_left = PASSWORD_TRIES;
                self.dirty = true;
            }
        } else {
            pw.tries_left -= 1;
            self.dirty = true;
        }
        let left = pw.tries_left;
        self.volatile.password_verified = ok;
        Ok(vec![u8::from(ok), left])
    }

    fn delete(&mut self, r: &mut Reader<'_>, authenticated: bool) -> Result<Vec<u8>, Status> {
        let tag = Tag(r.u8()?);
        r.finish()?;
        if tag != Tag::PASSWORD {
            return Err(Status::VALUE_OUT_OF_RANGE);
        }
        self.require_unlocked()?;
        if self.nvm.password.is_none() {
            return Err(Status::ENTRY_NOT_FOUND);
        }
        if !self.volatile.password_verified && !authenticated {
            return Err(Status::ACCESS_CONDITION_NOT_SATISFIED);
        }
        self.nvm.password = None;
        self.volatile.password_verified = false;
        self.dirty = true;
        Ok(Vec::new())
    }

    fn write_host_key_v2(&mut self, r: &mut Reader<'_>) -> Result<Vec<u8>, Status> {
        let filler = r.array::<3>()?;
        let kind = r.u8()?;
        let n = match kind {
            0 => 16,
            1 => 32,
            _ => return Err(Status::VALUE_OUT_OF_RANGE),
        };
        let mac = r.take(n)?;
        let cipher = r.take(n)?;
        r.finish()?;
        if filler != [0, 0, 0] {
            return Err(Status::VALUE_OUT_OF_RANGE);
        }
        self.require_unlocked()?;
        let ctl = self.nvm.host_provisioning;
        if ctl & provisioning::PLAINTEXT == 0 {
            return Err(Status::COMMAND_NOT_AUTHORIZED);
        }
        if self.nvm.host.keys.is_some() && ctl & provisioning::REPROVISION == 0 {
            return Err(Status::ACCESS_CONDITION_NOT_SATISFIED);
        }
        let (Some(mac), Some(cipher)) = (AesKey::from_slice(mac), AesKey::from_slice(cipher))
        else {
            return Err(Status::INCONSISTENT_COMMAND_DATA);
        };
        self.nvm.host.keys = Some(HostKeys { mac, cipher });
        self.nvm.host.counter = 0;
        self.dirty = true;
        Ok(Vec::new())
    }

    /// Generate ECDHE (A120): a fresh key pair whose private half goes to
    /// the volatile ephemeral slot 0xFF (single use, key establishment only).
    fn generate_ecdhe(&mut self, r: &mut Reader<'_>) -> Result<Vec<u8>, Status> {
        let curve = Curve::decode(r)?;
        r.finish()?;
        if !self.nvm.supports_curve(curve) {
            return Err(Status::WRONG_KEY_TYPE);
        }
        let key = PrivateKey::generate(curve)?;
        let mut out = Vec::new();
        curve.encode(&mut out);
        encode_public_key(curve, &key.public_point(), &mut out);
        self.volatile.ephemeral = Some(key);
        Ok(out)
    }
}
