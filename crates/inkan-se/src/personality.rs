//! The two chip personalities. The host tells them apart by the mask id in
//! the product data (Query 0x11): ≥ 0x6000 is an A120, ≥ 0x4600 an A110
//! (§2.7).

use crate::channel::CounterWidth;
use crate::wire::{CommandCode, ExtendedCode};
use std::time::Duration;

/// Which chip the emulator plays, or the driver talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Personality {
    /// STSAFE-A110: 3-byte MAC counter, host key slot V1, 507-byte frames.
    A110,
    /// STSAFE-A120: 4-byte counter, host key slot V2, 752-byte frames,
    /// extended commands.
    A120,
}

impl Personality {
    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Personality::A110 => "a110",
            Personality::A120 => "a120",
        }
    }

    /// Parses a CLI name.
    pub fn from_name(s: &str) -> Option<Personality> {
        match s.to_ascii_lowercase().as_str() {
            "a110" => Some(Personality::A110),
            "a120" => Some(Personality::A120),
            _ => None,
        }
    }

    /// The three-byte mask id reported in product data.
    pub fn mask_id(self) -> [u8; 3] {
        match self {
            Personality::A110 => [0x0A, 0x46, 0x01],
            Personality::A120 => [0x0A, 0x60, 0x01],
        }
    }

    /// Identifies a personality from a mask id, as STSELib does.
    pub fn from_mask_id(mask: [u8; 3]) -> Option<Personality> {
        let n = u16::from_be_bytes([mask[1], mask[2]]);
        if n >= 0x6000 {
            Some(Personality::A120)
        } else if n >= 0x4600 {
            Some(Personality::A110)
        } else {
            None
        }
    }

    /// Width of the host MAC counter.
    pub fn counter_width(self) -> CounterWidth {
        match self {
            Personality::A110 => CounterWidth::V1,
            Personality::A120 => CounterWidth::V2,
        }
    }

    /// Largest command or response frame in bytes, excluding the response
    /// LEN field. The fact sheet leaves open whether the A110's 507 counts
    /// the CRC; the emulator and driver take the safe reading (it does). On
    /// the A120 the 752-byte limit excludes the CRC.
    pub fn max_frame(self) -> usize {
        match self {
            Personality::A110 => 507,
            Personality::A120 => 752 + 2,
        }
    }

    /// Indices of the static private key slots.
    pub fn static_slots(self) -> std::ops::Range<u8> {
        match self {
            Personality::A110 => 0..2,
            Personality::A120 => 0..5,
        }
    }

    /// Processing time of a command on real silicon (§1.5), used by the
    /// emulator's optional busy model. Unknown and extended commands take
    /// the 500 ms STSELib assumes.
    pub fn processing_time(self, code: CommandCode, ext: Option<ExtendedCode>) -> Duration {
        let a110 = match code {
            CommandCode::ECHO | CommandCode::READ => 0,
            CommandCode::RESET => 30,
            CommandCode::GENERATE_RANDOM
            | CommandCode::DECREMENT
            | CommandCode::UPDATE
            | CommandCode::PUT_ATTRIBUTE
            | CommandCode::VERIFY_PASSWORD => 15,
            CommandCode::HIBERNATE => 50,
            CommandCode::WRAP_LOCAL_ENVELOPE => 125,
            CommandCode::UNWRAP_LOCAL_ENVELOPE | CommandCode::VERIFY_SIGNATURE => 150,
            CommandCode::GENERATE_KEY => 160,
            CommandCode::QUERY => 1,
            CommandCode::GENERATE_SIGNATURE => 80,
            CommandCode::ESTABLISH_KEY => 260,
            _ => 500,
        };
        let a120 = match code {
            CommandCode::ECHO | CommandCode::RESET => 2,
            CommandCode::GENERATE_RANDOM => 4,
            CommandCode::DECREMENT | CommandCode::READ => 23,
            CommandCode::UPDATE => 22,
            CommandCode::WRAP_LOCAL_ENVELOPE | CommandCode::UNWRAP_LOCAL_ENVELOPE => 3,
            CommandCode::GENERATE_KEY => 32,
            CommandCode::QUERY => 5,
            CommandCode::GENERATE_SIGNATURE => 37,
            CommandCode::VERIFY_SIGNATURE => 62,
            CommandCode::ESTABLISH_KEY => 83,
            _ => 500,
        };
        let _ = ext;
        Duration::from_millis(match self {
            Personality::A110 => a110,
            Personality::A120 => a120,
        })
    }
}
