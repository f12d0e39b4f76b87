//! Local envelopes: AES key wrap (RFC 3394, NIST SP 800-38F KW) of host data
//! under a key that never leaves the chip. The fact sheet leaves KW versus
//! KWP open; the emulator uses plain KW, so data must be a multiple of
//! 8 bytes, at least 16 and at most 480.

use crate::channel::AesKey;
use crate::wire::Status;
use zeroize::Zeroizing;

/// Largest payload a Wrap command accepts (§1.6).
pub const MAX_WRAP_INPUT: usize = 480;

/// Wraps `data` under `key`.
pub fn wrap(key: &AesKey, data: &[u8]) -> Result<Vec<u8>, Status> {
    if data.len() > MAX_WRAP_INPUT {
        return Err(Status::VALUE_OUT_OF_RANGE);
    }
    if data.len() < 16 || !data.len().is_multiple_of(8) {
        return Err(Status::INCONSISTENT_COMMAND_DATA);
    }
    let out = match key {
        AesKey::Aes128(k) => aes_kw::KekAes128::from(*k).wrap_vec(data),
        AesKey::Aes256(k) => aes_kw::KekAes256::from(*k).wrap_vec(data),
    };
    out.map_err(|_| Status::INCONSISTENT_COMMAND_DATA)
}

/// Unwraps an envelope; an envelope that fails the integrity check is
/// refused as inconsistent data and nothing is returned.
pub fn unwrap(key: &AesKey, envelope: &[u8]) -> Result<Zeroizing<Vec<u8>>, Status> {
    if envelope.len() > MAX_WRAP_INPUT + 8 {
        return Err(Status::VALUE_OUT_OF_RANGE);
    }
    if envelope.len() < 24 || !envelope.len().is_multiple_of(8) {
        return Err(Status::INCONSISTENT_COMMAND_DATA);
    }
    let out = match key {
        AesKey::Aes128(k) => aes_kw::KekAes128::from(*k).unwrap_vec(envelope),
        AesKey::Aes256(k) => aes_kw::KekAes256::from(*k).unwrap_vec(envelope),
    };
    out.map(Zeroizing::new)
        .map_err(|_| Status::INCONSISTENT_COMMAND_DATA)
}
