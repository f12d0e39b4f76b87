//! Protocol constants as open newtypes: an unknown value still round-trips
//! and prints in hex (stsafe-protocol.md §2.1, §2.6, §2.8).

use std::fmt;

macro_rules! open_code {
    ($(#[$meta:meta])* $name:ident { $($(#[$cmeta:meta])* $cname:ident = $val:expr => $text:expr,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        pub struct $name(pub u8);

        impl $name {
            $($(#[$cmeta])* pub const $cname: $name = $name($val);)*

            /// The protocol's name for this value, if it is a known one.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($val => Some($text),)*
                    _ => None,
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(n) => write!(f, "{}(0x{:02X} {})", stringify!($name), self.0, n),
                    None => write!(f, "{}(0x{:02X})", stringify!($name), self.0),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(n) => write!(f, "0x{:02X} ({})", self.0, n),
                    None => write!(f, "0x{:02X}", self.0),
                }
            }
        }
    };
}

open_code! {
    /// Base command code: the low five bits of a command header (§2.1).
    CommandCode {
        /// Echo the payload back.
        ECHO = 0x00 => "echo",
        /// Reset volatile state (ephemeral key, password verification).
        RESET = 0x01 => "reset",
        /// Return random bytes.
        GENERATE_RANDOM = 0x02 => "generate random",
        /// Legacy A100 signature session.
        START_SESSION = 0x03 => "start session",
        /// Decrement a one-way counter zone.
        DECREMENT = 0x04 => "decrement",
        /// Read a data zone.
        READ = 0x05 => "read",
        /// Update a data zone.
        UPDATE = 0x06 => "update",
        /// Increment a counter (format unknown; not supported).
        INCREMENT = 0x07 => "increment",
        /// Derive LoRa key (not supported).
        DERIVE_LORA_KEY = 0x08 => "derive LoRa key",
        /// Generate MAC (A120 symmetric; not supported).
        GENERATE_MAC = 0x09 => "generate MAC",
        /// Verify MAC (A120 symmetric; not supported).
        VERIFY_MAC = 0x0A => "verify MAC",
        /// Unwrap issuer envelope (not supported).
        UNWRAP_ISSUER_ENVELOPE = 0x0B => "unwrap issuer envelope",
        /// Delete an attribute (the password).
        DELETE = 0x0C => "delete",
        /// Hibernate (A110 only).
        HIBERNATE = 0x0D => "hibernate",
        /// Wrap data under a local-envelope key (AES key wrap).
        WRAP_LOCAL_ENVELOPE = 0x0E => "wrap local envelope",
        /// Unwrap a local envelope.
        UNWRAP_LOCAL_ENVELOPE = 0x0F => "unwrap local envelope",
        /// Write an attribute (host keys, life cycle, password, access conditions).
        PUT_ATTRIBUTE = 0x10 => "put attribute",
        /// Generate a private key or a local-envelope key.
        GENERATE_KEY = 0x11 => "generate key",
        /// Put key (not supported).
        PUT_KEY = 0x12 => "put key",
        /// Configure (not supported).
        CONFIGURE = 0x13 => "configure",
        /// Query an attribute.
        QUERY = 0x14 => "query",
        /// Legacy signature session (not supported).
        GET_SIGNATURE = 0x15 => "get signature",
        /// Sign a host-computed digest.
        GENERATE_SIGNATURE = 0x16 => "generate signature",
        /// Verify a signature over a digest with a given public key.
        VERIFY_SIGNATURE = 0x17 => "verify signature",
        /// ECDH with a private key slot.
        ESTABLISH_KEY = 0x18 => "establish key",
        /// Standby (not supported).
        STANDBY = 0x19 => "standby",
        /// Verify the password.
        VERIFY_PASSWORD = 0x1A => "verify password",
        /// Symmetric encrypt (not supported).
        ENCRYPT = 0x1B => "encrypt",
        /// Symmetric decrypt (not supported).
        DECRYPT = 0x1C => "decrypt",
        /// Chunk prefix (unused).
        CHUNK = 0x1E => "chunk prefix",
        /// Extended command: a second byte carries the extended code.
        EXTENDED = 0x1F => "extended command",
    }
}

open_code! {
    /// Extended command code: the byte after a 0x1F header (A120 only, §2.1).
    ExtendedCode {
        /// Start a hash.
        START_HASH = 0x00 => "start hash",
        /// Continue a hash.
        PROCESS_HASH = 0x01 => "process hash",
        /// Finish a hash.
        FINISH_HASH = 0x02 => "finish hash",
        /// Start a volatile KEK session.
        START_VOLATILE_KEK_SESSION = 0x03 => "start volatile KEK session",
        /// Write host key V2 in plaintext.
        WRITE_HOST_KEY_V2_PLAIN = 0x07 => "write host key V2 (plaintext)",
        /// Write host key V2 wrapped.
        WRITE_HOST_KEY_V2_WRAPPED = 0x08 => "write host key V2 (wrapped)",
        /// Generate an ECDHE key pair in volatile memory.
        GENERATE_ECDHE = 0x0B => "generate ECDHE key",
        /// Generate an entity-authentication challenge.
        GENERATE_CHALLENGE = 0x0E => "generate challenge",
        /// Verify an entity signature.
        VERIFY_ENTITY_SIGNATURE = 0x0F => "verify entity signature",
        /// Establish host key V2 by ECDH.
        ESTABLISH_HOST_KEY_V2 = 0x18 => "establish host key V2",
        /// Decompress a public key.
        DECOMPRESS_PUBLIC_KEY = 0x1A => "decompress public key",
    }
}

open_code! {
    /// Response status: the low five bits of a response header (§2.8).
    Status {
        /// Success.
        OK = 0x00 => "OK",
        /// Communication error, such as a bad CRC.
        COMMUNICATION_ERROR = 0x01 => "communication error",
        /// The command's data is inconsistent (wrong length, bad encoding).
        INCONSISTENT_COMMAND_DATA = 0x02 => "inconsistent command data",
        /// A value is out of range.
        VALUE_OUT_OF_RANGE = 0x03 => "value out of range",
        /// The command code is not supported.
        UNSUPPORTED_COMMAND_CODE = 0x04 => "command code not supported",
        /// Unexpected error.
        UNEXPECTED_ERROR = 0x05 => "unexpected error",
        /// The frame or a response would exceed the buffer.
        BUFFER_LENGTH_EXCEEDED = 0x06 => "buffer length exceeded",
        /// No host session, or the wrong one.
        SESSION_ERROR = 0x07 => "session error",
        /// Too many messages lost.
        TOO_MANY_MESSAGES_LOST = 0x08 => "too many messages lost",
        /// The host MAC counter reached its maximum.
        COUNTER_MAXIMUM = 0x09 => "C-MAC counter maximum reached",
        /// The key was not found.
        KEY_NOT_FOUND = 0x0A => "key not found",
        /// The key is blocked (usage limit) or not available.
        KEY_BLOCKED = 0x0B => "key blocked",
        /// Wrong key type.
        WRONG_KEY_TYPE = 0x0C => "wrong key type",
        /// Session counter out of range.
        SESSION_COUNTER_OUT_OF_RANGE = 0x0D => "session counter out of range",
        /// The life-cycle state forbids the command.
        INVALID_LIFE_CYCLE_STATE = 0x0F => "invalid life-cycle state",
        /// The entry (zone, slot, tag) was not found.
        ENTRY_NOT_FOUND = 0x10 => "entry not found",
        /// The access condition is not satisfied.
        ACCESS_CONDITION_NOT_SATISFIED = 0x11 => "access condition not satisfied",
        /// The zone has the wrong type for the command.
        WRONG_ZONE_TYPE = 0x12 => "wrong zone type",
        /// The one-way counter would go below zero.
        COUNTER_LIMIT_EXCEEDED = 0x13 => "counter limit exceeded",
        /// Offset or length outside the zone.
        BOUNDARY_EXCEEDED = 0x14 => "boundary exceeded",
        /// Invalid private key.
        INVALID_PRIVATE_KEY = 0x15 => "invalid private key",
        /// The C-MAC did not verify.
        INVALID_CMAC = 0x16 => "invalid C-MAC",
        /// Challenge missing.
        CHALLENGE_MISSING = 0x17 => "challenge missing",
        /// The encrypted command did not decrypt.
        COMMAND_DECRYPTION_ERROR = 0x18 => "command decryption error",
        /// The public key is invalid (not on the curve, wrong size).
        INVALID_PUBLIC_KEY = 0x19 => "invalid public key",
        /// The password is blocked.
        PASSWORD_BLOCKED = 0x1A => "password blocked",
        /// The key may not be used this way.
        WRONG_KEY_USAGE = 0x1B => "wrong key usage",
        /// Wrong mode of operation.
        WRONG_MODE_OF_OPERATION = 0x1C => "wrong mode of operation",
        /// Wrong MAC length.
        WRONG_MAC_LENGTH = 0x1D => "wrong MAC length",
        /// The command is not authorized.
        COMMAND_NOT_AUTHORIZED = 0x1E => "command not authorized",
        /// Old message.
        OLD_MESSAGE = 0x1F => "old message",
    }
}

open_code! {
    /// Query and Put Attribute tags (§2.6).
    Tag {
        /// Admin base key slot.
        ADMIN_BASE_KEY = 0x01 => "admin base key slot",
        /// Local-envelope key table (Query) / key (Generate Key).
        LOCAL_ENVELOPE_KEY_TABLE = 0x07 => "local-envelope key table",
        /// Life-cycle state.
        LIFE_CYCLE_STATE = 0x08 => "life-cycle state",
        /// Password slot.
        PASSWORD = 0x09 => "password slot",
        /// I2C parameters.
        I2C_PARAMETERS = 0x0A => "I2C parameters",
        /// Product data.
        PRODUCT_DATA = 0x11 => "product data",
        /// Data-partition configuration.
        DATA_PARTITION = 0x12 => "data partition configuration",
        /// Private key slot (Generate Key subject).
        PRIVATE_KEY_SLOT = 0x13 => "private key slot",
        /// Private key table.
        PRIVATE_KEY_TABLE = 0x14 => "private key table",
        /// Host key slot V1.
        HOST_KEY_SLOT = 0x17 => "host key slot V1",
        /// Command authorization configuration.
        COMMAND_AUTHORIZATION = 0x24 => "command authorization configuration",
        /// Command access condition (Put).
        COMMAND_AC = 0x29 => "command access condition",
        /// Command host-encryption flags (Put).
        COMMAND_ENCRYPTION = 0x2A => "command encryption flags",
        /// Host key slot V2 (A120).
        HOST_KEY_SLOT_V2 = 0x47 => "host key slot V2",
        /// Host key provisioning control fields (A120).
        HOST_KEY_PROVISIONING_CONTROL = 0x4A => "host key provisioning control",
    }
}

/// Life-cycle states (Query tag 0x08).
pub mod life_cycle {
    /// Born: fresh from manufacturing.
    pub const BORN: u8 = 0x01;
    /// Operational.
    pub const OPERATIONAL: u8 = 0x03;
    /// Terminated: the chip refuses everything but Echo and Query.
    pub const TERMINATED: u8 = 0x04;
    /// Flag ORed in when the configuration is locked.
    pub const LOCKED: u8 = 0x80;
    /// Born and locked.
    pub const BORN_LOCKED: u8 = BORN | LOCKED;
    /// Operational and locked.
    pub const OPERATIONAL_LOCKED: u8 = OPERATIONAL | LOCKED;
}

/// Command access conditions (§2.5).
pub mod command_ac {
    /// The command is never allowed.
    pub const NEVER: u8 = 0;
    /// The command is always allowed.
    pub const FREE: u8 = 1;
    /// Admin: a C-MAC is required (the emulator has only host keys).
    pub const ADMIN: u8 = 2;
    /// Host: a C-MAC is required.
    pub const HOST: u8 = 3;
    /// Admin or a verified password.
    pub const ADMIN_OR_PASSWORD: u8 = 4;
    /// Admin or host: a C-MAC is required.
    pub const ADMIN_OR_HOST: u8 = 5;

    /// How strict a condition is; a condition may only be replaced by one at
    /// least as strict.
    pub fn strictness(ac: u8) -> u8 {
        match ac {
            FREE => 0,
            ADMIN_OR_PASSWORD => 1,
            ADMIN_OR_HOST | HOST | ADMIN => 2,
            _ => 3,
        }
    }
}

/// Zone access conditions (§4.1): 0 always, 1 host, 6 auth+host, 7 never.
pub mod zone_ac {
    /// Always allowed.
    pub const ALWAYS: u8 = 0;
    /// A C-MAC is required.
    pub const HOST: u8 = 1;
    /// Never allowed.
    pub const NEVER: u8 = 7;
}

/// Header flag bits of a command (§1.2).
pub mod header_flags {
    /// The command carries a C-MAC.
    pub const CMAC: u8 = 0x80;
    /// The host asks for an R-MAC on the response.
    pub const RMAC: u8 = 0x40;
    /// Host secure channel (as opposed to the legacy session).
    pub const HOST_CHANNEL: u8 = 0x20;
    /// All three, as STSELib sends them on authenticated commands.
    pub const ALL: u8 = CMAC | RMAC | HOST_CHANNEL;
    /// Mask of the command code.
    pub const CODE_MASK: u8 = 0x1F;
}

/// Bit of the response header that says an R-MAC is appended (§1.3).
pub const RESPONSE_RMAC_FLAG: u8 = 0x40;
