//! The chip's non-volatile memory: everything that survives a power cycle.
//! It is serialised as one JSON document (byte fields in hex) and written
//! atomically after every command that changes it.

use super::keys::PrivateKey;
use crate::channel::{AesKey, HostKeys};
use crate::personality::Personality;
use crate::wire::codes::{command_ac, life_cycle, zone_ac};
use crate::wire::{CommandCode, Curve, ExtendedCode};
use serde::{Deserialize, Serialize};

/// Version of the NVM image format.
pub const FORMAT_VERSION: u32 = 1;

/// Initial value of a one-way counter zone. Counters only go down.
pub const COUNTER_INITIAL: u32 = 0xFFFF_FFFF;

/// Tries allowed before the password blocks.
pub const PASSWORD_TRIES: u8 = 3;

/// A data zone's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ZoneKind {
    /// Plain data.
    Data,
    /// Data with a 32-bit one-way (down) counter.
    Counter,
}

/// One zone of the data partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zone {
    /// Zone index.
    pub index: u8,
    /// Type.
    pub kind: ZoneKind,
    /// Read access condition.
    pub read_ac: u8,
    /// Whether the read AC may still change.
    pub read_ac_change_right: bool,
    /// Update (or decrement) access condition.
    pub update_ac: u8,
    /// Whether the update AC may still change.
    pub update_ac_change_right: bool,
    /// The counter, for counter zones.
    pub counter: u32,
    /// The contents.
    #[serde(with = "hex_bytes")]
    pub data: Vec<u8>,
}

impl Zone {
    fn new(index: u8, kind: ZoneKind, size: usize) -> Zone {
        Zone {
            index,
            kind,
            read_ac: zone_ac::ALWAYS,
            read_ac_change_right: true,
            update_ac: zone_ac::ALWAYS,
            update_ac_change_right: true,
            counter: COUNTER_INITIAL,
            data: vec![0; size],
        }
    }

    /// The AC byte of the partition query (§4.2).
    pub fn ac_byte(&self) -> u8 {
        (u8::from(self.read_ac_change_right) << 7)
            | ((self.read_ac & 7) << 4)
            | (u8::from(self.update_ac_change_right) << 3)
            | (self.update_ac & 7)
    }
}

/// Mode-of-operation flags of a private key slot (16 bits, §5).
pub mod mode {
    /// The flags may still change.
    pub const CHANGE_RIGHT: u16 = 1 << 15;
    /// Signing over internal and external data allowed.
    pub const SIGN_INTERNAL: u16 = 1 << 3;
    /// Signing a host digest allowed.
    pub const SIGN_DIGEST: u16 = 1 << 2;
    /// Key establishment (ECDH) allowed.
    pub const KEY_ESTABLISHMENT: u16 = 1 << 0;
    /// Access condition of Generate Key on this slot (bits 4–5): 0 free,
    /// 1 host C-MAC, 2 or 3 never (the key can no longer be replaced).
    pub const GENERATE_AC_SHIFT: u16 = 4;
    /// Mask of the Generate Key access condition.
    pub const GENERATE_AC_MASK: u16 = 0b11 << GENERATE_AC_SHIFT;

    /// Whether signing digests is allowed. A mode with no usage bit at all
    /// (STSELib sends `00 00`) allows both signing and key establishment.
    pub fn can_sign(m: u16) -> bool {
        m & (SIGN_DIGEST | SIGN_INTERNAL | KEY_ESTABLISHMENT) == 0
            || m & (SIGN_DIGEST | SIGN_INTERNAL) != 0
    }

    /// Whether ECDH is allowed (same default as [`can_sign`]).
    pub fn can_establish(m: u16) -> bool {
        m & (SIGN_DIGEST | SIGN_INTERNAL | KEY_ESTABLISHMENT) == 0 || m & KEY_ESTABLISHMENT != 0
    }

    /// The Generate Key access condition.
    pub fn generate_ac(m: u16) -> u16 {
        (m & GENERATE_AC_MASK) >> GENERATE_AC_SHIFT
    }
}

/// A private key slot.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeySlot {
    /// Slot number.
    pub index: u8,
    /// The key, if one was generated.
    #[serde(with = "private_key_ser")]
    pub key: Option<PrivateKey>,
    /// Usage limit; 0 means unlimited.
    pub usage_limit: u16,
    /// Uses so far (counted only when a limit is set).
    pub used: u16,
    /// Mode-of-operation flags.
    pub mode: u16,
}

/// The host key slot (V1 or V2) and its MAC sequence counter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSlot {
    /// The paired keys.
    pub keys: Option<HostKeys>,
    /// The sequence counter N.
    pub counter: u32,
}

/// Host-key provisioning control (A120 tag 0x4A) bits.
pub mod provisioning {
    /// Wrapped-anonymous provisioning allowed.
    pub const WRAPPED_ANONYMOUS: u8 = 1 << 0;
    /// Plaintext provisioning allowed.
    pub const PLAINTEXT: u8 = 1 << 1;
    /// Re-provisioning (overwriting present keys) allowed.
    pub const REPROVISION: u8 = 1 << 2;
    /// These flags may still change.
    pub const CHANGE_RIGHT: u8 = 1 << 3;
}

/// One record of the command authorization table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandAc {
    /// Base command code.
    pub code: CommandCode,
    /// Extended code for 0x1F commands.
    pub extended: Option<ExtendedCode>,
    /// Access condition ([`command_ac`]).
    pub ac: u8,
    /// Encryption flags: bit 1 command, bit 0 response.
    pub encryption: u8,
}

/// Encryption flag: the command payload is encrypted.
pub const ENC_COMMAND: u8 = 0b10;
/// Encryption flag: the response data is encrypted.
pub const ENC_RESPONSE: u8 = 0b01;

/// The password slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Password {
    /// The 16-byte password.
    #[serde(with = "hex_bytes")]
    pub value: Vec<u8>,
    /// Tries left before the password blocks.
    pub tries_left: u8,
}

/// Everything the chip keeps across power cycles.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Nvm {
    /// Image format version.
    pub format: u32,
    /// Which chip this is.
    pub personality: Personality,
    /// The 9-byte chip serial number (the "ST number" of product data).
    #[serde(with = "hex_bytes")]
    pub serial: Vec<u8>,
    /// Life-cycle state ([`life_cycle`]).
    pub life_cycle: u8,
    /// 7-bit I²C address.
    pub i2c_address: u8,
    /// Host key slot.
    pub host: HostSlot,
    /// Host-key provisioning control ([`provisioning`]).
    pub host_provisioning: u8,
    /// The password, if set.
    pub password: Option<Password>,
    /// Change rights of the command table: bit 1 AC, bit 0 encryption flags.
    pub command_change_right: u8,
    /// The command authorization table.
    pub commands: Vec<CommandAc>,
    /// The data partition.
    pub zones: Vec<Zone>,
    /// Static private key slots.
    pub slots: Vec<KeySlot>,
    /// Local-envelope keys (two slots).
    pub envelope_keys: Vec<Option<AesKey>>,
}

/// Supported base commands, in table order.
pub const BASE_COMMANDS: [CommandCode; 17] = [
    CommandCode::ECHO,
    CommandCode::RESET,
    CommandCode::GENERATE_RANDOM,
    CommandCode::DECREMENT,
    CommandCode::READ,
    CommandCode::UPDATE,
    CommandCode::DELETE,
    CommandCode::WRAP_LOCAL_ENVELOPE,
    CommandCode::UNWRAP_LOCAL_ENVELOPE,
    CommandCode::PUT_ATTRIBUTE,
    CommandCode::GENERATE_KEY,
    CommandCode::QUERY,
    CommandCode::GENERATE_SIGNATURE,
    CommandCode::VERIFY_SIGNATURE,
    CommandCode::ESTABLISH_KEY,
    CommandCode::VERIFY_PASSWORD,
    CommandCode::HIBERNATE,
];

/// Supported extended commands (A120).
pub const EXTENDED_COMMANDS: [ExtendedCode; 2] = [
    ExtendedCode::WRITE_HOST_KEY_V2_PLAIN,
    ExtendedCode::GENERATE_ECDHE,
];

/// The default data partition. The real SPL05/A110 maps are not public, so
/// this one is inkan's and is documented in the crate README:
/// zone 0 device certificate, 1 cloud trust anchor, 2 cloud command key,
/// 3 firmware-signing key, 4 general storage, 5 and 6 one-way counters
/// (5: firmware security version), 7 general storage.
pub fn default_zones(p: Personality) -> Vec<Zone> {
    let big = match p {
        Personality::A110 => 1024,
        Personality::A120 => 1536,
    };
    vec![
        Zone::new(0, ZoneKind::Data, big),
        Zone::new(1, ZoneKind::Data, big),
        Zone::new(2, ZoneKind::Data, 256),
        Zone::new(3, ZoneKind::Data, 256),
        Zone::new(4, ZoneKind::Data, big),
        Zone::new(5, ZoneKind::Counter, 64),
        Zone::new(6, ZoneKind::Counter, 64),
        Zone::new(7, ZoneKind::Data, 512),
    ]
}

impl Nvm {
    /// A factory-fresh chip: born, no keys, every command free, every zone
    /// open with its change rights.
    pub fn fresh(personality: Personality, serial: [u8; 9]) -> Nvm {
        let mut commands: Vec<CommandAc> = BASE_COMMANDS
            .iter()
            .filter(|c| !(personality == Personality::A120 && **c == CommandCode::HIBERNATE))
            .map(|&code| CommandAc {
                code,
                extended: None,
                ac: command_ac::FREE,
                encryption: 0,
            })
            .collect();
        if personality == Personality::A120 {
            commands.extend(EXTENDED_COMMANDS.iter().map(|&e| CommandAc {
                code: CommandCode::EXTENDED,
                extended: Some(e),
                ac: command_ac::FREE,
                encryption: 0,
            }));
        }
        Nvm {
            format: FORMAT_VERSION,
            personality,
            serial: serial.to_vec(),
            life_cycle: life_cycle::BORN,
            i2c_address: 0x20,
            host: HostSlot::default(),
            host_provisioning: provisioning::PLAINTEXT
                | provisioning::REPROVISION
                | provisioning::CHANGE_RIGHT,
            password: None,
            command_change_right: 0b11,
            commands,
            zones: default_zones(personality),
            slots: personality
                .static_slots()
                .map(|index| KeySlot {
                    index,
                    key: None,
                    usage_limit: 0,
                    used: 0,
                    mode: mode::CHANGE_RIGHT,
                })
                .collect(),
            envelope_keys: vec![None, None],
        }
    }

    /// Whether the configuration is locked.
    pub fn locked(&self) -> bool {
        self.life_cycle & life_cycle::LOCKED != 0
    }

    /// The table record of a command, if it is supported.
    pub fn command(&self, code: CommandCode, ext: Option<ExtendedCode>) -> Option<&CommandAc> {
        self.commands
            .iter()
            .find(|c| c.code == code && c.extended == ext)
    }

    /// Curves a personality can generate keys on.
    pub fn supports_curve(&self, c: Curve) -> bool {
        match c {
            Curve::P256 | Curve::P384 => true,
            // X25519 and Ed25519 are A120 features.
            Curve::X25519 | Curve::Ed25519 => self.personality == Personality::A120,
            _ => false,
        }
    }
}

/// Hex (de)serialisation of byte vectors.
pub(crate) mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

mod private_key_ser {
    use super::PrivateKey;
    use crate::wire::Curve;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use zeroize::Zeroizing;

    #[derive(Serialize, Deserialize)]
    struct Stored {
        curve: Curve,
        scalar: Zeroizing<String>,
    }

    pub fn serialize<S: Serializer>(k: &Option<PrivateKey>, s: S) -> Result<S::Ok, S::Error> {
        k.as_ref()
            .map(|k| Stored {
                curve: k.curve(),
                scalar: Zeroizing::new(hex::encode(&*k.scalar())),
            })
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PrivateKey>, D::Error> {
        let Some(st) = Option::<Stored>::deserialize(d)? else {
            return Ok(None);
        };
        let scalar =
            Zeroizing::new(hex::decode(st.scalar.as_bytes()).map_err(serde::de::Error::custom)?);
        PrivateKey::from_scalar(st.curve, &scalar)
            .map(Some)
            .map_err(|_| serde::de::Error::custom("invalid private key scalar"))
    }
}
