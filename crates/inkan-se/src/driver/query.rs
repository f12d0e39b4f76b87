//! Typed answers of the Query command, parsed from the wire (§2.5, §2.6,
//! §4.2, §5).

use super::DriverError;
use crate::personality::Personality;
use crate::wire::{CommandCode, Curve, ExtendedCode, Reader};

/// Product data (tag 0x11).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductData {
    /// The three-byte mask id.
    pub mask_id: [u8; 3],
    /// The personality the mask id selects.
    pub personality: Personality,
    /// The 9-byte serial number, if the chip reports one (TLV 0x02).
    pub serial: Option<Vec<u8>>,
    /// Every TLV, in order.
    pub tlvs: Vec<(u8, Vec<u8>)>,
}

impl ProductData {
    /// Parses the TLV list; the first TLV must be the mask id.
    pub fn parse(data: &[u8]) -> Result<ProductData, DriverError> {
        let mut r = Reader::new(data);
        let mut tlvs = Vec::new();
        while r.remaining() > 0 {
            let t = r.u8()?;
            let l = r.u8()?;
            tlvs.push((t, r.take(usize::from(l))?.to_vec()));
        }
        let mask: [u8; 3] = match tlvs.first() {
            Some((1, v)) if v.len() == 3 => [v[0], v[1], v[2]],
            _ => return Err(DriverError::UnknownChip { mask: [0; 3] }),
        };
        let personality =
            Personality::from_mask_id(mask).ok_or(DriverError::UnknownChip { mask })?;
        let serial = tlvs
            .iter()
            .find(|(t, v)| *t == 2 && v.len() == 9)
            .map(|(_, v)| v.clone());
        Ok(ProductData {
            mask_id: mask,
            personality,
            serial,
            tlvs,
        })
    }
}

/// One zone of the data partition (tag 0x12).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneInfo {
    /// Zone index.
    pub index: u8,
    /// Whether it is a counter zone.
    pub counter_zone: bool,
    /// Read access condition.
    pub read_ac: u8,
    /// Whether the read AC may change.
    pub read_ac_change_right: bool,
    /// Update access condition.
    pub update_ac: u8,
    /// Whether the update AC may change.
    pub update_ac_change_right: bool,
    /// Size in bytes.
    pub size: u16,
    /// The counter, for counter zones.
    pub counter: Option<u32>,
}

/// Parses the partition query.
pub fn parse_partition(data: &[u8]) -> Result<Vec<ZoneInfo>, DriverError> {
    let mut r = Reader::new(data);
    let n = r.u8()?;
    let mut zones = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let index = r.u8()?;
        let kind = r.u8()?;
        let ac = r.u8()?;
        let size = r.u16()?;
        let counter = if kind == 1 { Some(r.u32()?) } else { None };
        zones.push(ZoneInfo {
            index,
            counter_zone: kind == 1,
            read_ac: (ac >> 4) & 7,
            read_ac_change_right: ac & 0x80 != 0,
            update_ac: ac & 7,
            update_ac_change_right: ac & 0x08 != 0,
            size,
            counter,
        });
    }
    r.finish()?;
    Ok(zones)
}

/// One private key slot (tag 0x14).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotInfo {
    /// Slot number.
    pub slot: u8,
    /// Whether a key is present.
    pub present: bool,
    /// Mode-of-operation flags.
    pub mode: u16,
    /// The key's curve, when present.
    pub curve: Option<Curve>,
}

/// Parses the private key table.
pub fn parse_key_table(data: &[u8]) -> Result<(u16, Vec<SlotInfo>), DriverError> {
    let mut r = Reader::new(data);
    let n = r.u8()?;
    let _filler = r.u8()?;
    let global = r.u16()?;
    let mut slots = Vec::new();
    for _ in 0..n {
        let slot = r.u8()?;
        let present = r.u8()? != 0;
        let mode = r.u16()?;
        let curve = if present {
            Some(Curve::decode(&mut r)?)
        } else {
            None
        };
        slots.push(SlotInfo {
            slot,
            present,
            mode,
            curve,
        });
    }
    r.finish()?;
    Ok((global, slots))
}

/// The host key slot (tag 0x17 or 0x47).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostKeySlot {
    /// Whether host keys are paired.
    pub present: bool,
    /// Key type (V2 only): 0 AES-128, 1 AES-256.
    pub key_type: Option<u8>,
    /// The MAC sequence counter.
    pub counter: u32,
}

/// Parses the V1 (3-byte counter) or V2 (type + 4-byte counter) slot query.
pub fn parse_host_key_slot(p: Personality, data: &[u8]) -> Result<HostKeySlot, DriverError> {
    let mut r = Reader::new(data);
    let present = r.u8()? != 0;
    let slot = match p {
        Personality::A110 => {
            let c = r.array::<3>()?;
            HostKeySlot {
                present,
                key_type: None,
                counter: u32::from_be_bytes([0, c[0], c[1], c[2]]),
            }
        }
        Personality::A120 => {
            let t = r.u8()?;
            HostKeySlot {
                present,
                key_type: Some(t),
                counter: r.u32()?,
            }
        }
    };
    r.finish()?;
    Ok(slot)
}

/// One record of the command authorization table (tag 0x24).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandAuthorization {
    /// Base code.
    pub code: CommandCode,
    /// Extended code, for 0x1F.
    pub extended: Option<ExtendedCode>,
    /// Access condition.
    pub ac: u8,
    /// Encryption flags: bit 1 command, bit 0 response.
    pub encryption: u8,
}

/// Parses the command authorization table: `(change rights, records)`.
pub fn parse_command_table(data: &[u8]) -> Result<(u8, Vec<CommandAuthorization>), DriverError> {
    let mut r = Reader::new(data);
    let right = r.u8()?;
    let n = r.u8()?;
    let mut out = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let code = CommandCode(r.u8()?);
        let extended = if code == CommandCode::EXTENDED {
            Some(ExtendedCode(r.u8()?))
        } else {
            None
        };
        let ac = r.u8()?;
        let encryption = r.u8()?;
        out.push(CommandAuthorization {
            code,
            extended,
            ac,
            encryption,
        });
    }
    r.finish()?;
    Ok((right, out))
}

/// One local-envelope key slot (tag 0x07): `(slot, key type if present)`.
pub fn parse_envelope_table(data: &[u8]) -> Result<Vec<(u8, Option<u8>)>, DriverError> {
    let mut r = Reader::new(data);
    let n = r.u8()?;
    let mut out = Vec::new();
    for _ in 0..n {
        let slot = r.u8()?;
        let present = r.u8()? != 0;
        out.push((slot, if present { Some(r.u8()?) } else { None }));
    }
    r.finish()?;
    Ok(out)
}
