//! The host secure channel (§3): AES-CMAC truncated to four bytes over a
//! subject block, counter N for the C-MAC and N+1 for the R-MAC and for
//! encryption, AES-CBC with a derived IV and `0x80` padding. Shared, byte for
//! byte, by the emulated chip and the host driver.

use aes::cipher::{
    block_padding::NoPadding, BlockDecryptMut, BlockEncrypt, BlockEncryptMut, KeyInit, KeyIvInit,
};
use aes::{Aes128, Aes256};
use cmac::{Cmac, Mac};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of the truncated MAC.
pub const MAC_LEN: usize = 4;

/// Subject byte of the first MAC/IV block (§3.3).
pub mod subject {
    /// C-MAC.
    pub const CMAC: u8 = 0x00;
    /// R-MAC.
    pub const RMAC: u8 = 0x40;
    /// Command encryption IV.
    pub const COMMAND_ENCRYPTION: u8 = 0x80;
    /// Response encryption IV.
    pub const RESPONSE_ENCRYPTION: u8 = 0xC0;
}

/// An AES key of either size.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop, serde::Serialize, serde::Deserialize)]
pub enum AesKey {
    /// AES-128.
    Aes128([u8; 16]),
    /// AES-256.
    Aes256([u8; 32]),
}

impl std::fmt::Debug for AesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AesKey::Aes128(_) => f.write_str("AesKey::Aes128(..)"),
            AesKey::Aes256(_) => f.write_str("AesKey::Aes256(..)"),
        }
    }
}

impl AesKey {
    /// Builds a key from 16 or 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<AesKey> {
        match bytes.len() {
            16 => {
                let mut k = [0u8; 16];
                k.copy_from_slice(bytes);
                Some(AesKey::Aes128(k))
            }
            32 => {
                let mut k = [0u8; 32];
                k.copy_from_slice(bytes);
                Some(AesKey::Aes256(k))
            }
            _ => None,
        }
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            AesKey::Aes128(k) => k,
            AesKey::Aes256(k) => k,
        }
    }

    /// Key-type byte of the V2 host key slot: 0 AES-128, 1 AES-256.
    pub fn type_byte(&self) -> u8 {
        match self {
            AesKey::Aes128(_) => 0,
            AesKey::Aes256(_) => 1,
        }
    }

    /// Full 16-byte AES-CMAC (RFC 4493) over the concatenation of `parts`.
    pub fn cmac(&self, parts: &[&[u8]]) -> [u8; 16] {
        fn run<M: Mac>(mut m: M, parts: &[&[u8]]) -> [u8; 16] {
            for p in parts {
                m.update(p);
            }
            let mut out = [0u8; 16];
            out.copy_from_slice(&m.finalize().into_bytes()[..16]);
            out
        }
        match self {
            AesKey::Aes128(k) => run(<Cmac<Aes128> as KeyInit>::new(k.into()), parts),
            AesKey::Aes256(k) => run(<Cmac<Aes256> as KeyInit>::new(k.into()), parts),
        }
    }

    /// AES-ECB encryption of one block.
    pub fn encrypt_block(&self, block: &[u8; 16]) -> [u8; 16] {
        let mut b = aes::Block::from(*block);
        match self {
            AesKey::Aes128(k) => Aes128::new(k.into()).encrypt_block(&mut b),
            AesKey::Aes256(k) => Aes256::new(k.into()).encrypt_block(&mut b),
        }
        b.into()
    }

    fn cbc_encrypt(&self, iv: &[u8; 16], buf: &mut [u8]) {
        let len = buf.len();
        // The caller pads to whole blocks, so NoPadding cannot fail.
        let _ = match self {
            AesKey::Aes128(k) => cbc::Encryptor::<Aes128>::new(k.into(), iv.into())
                .encrypt_padded_mut::<NoPadding>(buf, len)
                .map(|_| ()),
            AesKey::Aes256(k) => cbc::Encryptor::<Aes256>::new(k.into(), iv.into())
                .encrypt_padded_mut::<NoPadding>(buf, len)
                .map(|_| ()),
        };
    }

    fn cbc_decrypt(&self, iv: &[u8; 16], buf: &mut [u8]) -> Result<(), ChannelError> {
        let r = match self {
            AesKey::Aes128(k) => cbc::Decryptor::<Aes128>::new(k.into(), iv.into())
                .decrypt_padded_mut::<NoPadding>(buf)
                .map(|_| ()),
            AesKey::Aes256(k) => cbc::Decryptor::<Aes256>::new(k.into(), iv.into())
                .decrypt_padded_mut::<NoPadding>(buf)
                .map(|_| ()),
        };
        r.map_err(|_| ChannelError::NotBlockAligned { len: buf.len() })
    }
}

/// The pair of host keys: one for MACs, one for encryption.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostKeys {
    /// The MAC key.
    pub mac: AesKey,
    /// The cipher key.
    pub cipher: AesKey,
}

impl HostKeys {
    /// The host keys of one chip of a paired family: derived (HKDF-SHA256)
    /// from the family's pairing key and the chip's serial, so a host that
    /// holds the pairing key opens a MAC'd session with any accessory of
    /// the family, and one chip's keys tell nothing of another's. AES-256
    /// keys for an A120, AES-128 for an A110.
    pub fn from_pairing(pairing: &[u8; 32], serial: &[u8], aes256: bool) -> HostKeys {
        let h = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"inkan host pairing v1"), pairing);
        let mut okm = zeroize::Zeroizing::new([0u8; 64]);
        let mut info = serial.to_vec();
        info.extend_from_slice(b" host keys");
        // 64 bytes is far below HKDF-SHA256's limit of 8160.
        let _ = h.expand(&info, &mut *okm);
        let key = |b: &[u8]| {
            if aes256 {
                AesKey::Aes256(b.try_into().unwrap_or([0; 32]))
            } else {
                AesKey::Aes128(b[..16].try_into().unwrap_or([0; 16]))
            }
        };
        HostKeys {
            mac: key(&okm[..32]),
            cipher: key(&okm[32..]),
        }
    }
}

/// Width of the sequence counter in the MAC input: 3 bytes for the V1 slot
/// (A110), 4 bytes for V2 (A120).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CounterWidth {
    /// 24-bit counter, host key slot V1.
    V1,
    /// 32-bit counter, host key slot V2.
    V2,
}

impl CounterWidth {
    /// The largest usable counter value; the chip answers "counter maximum
    /// reached" beyond it (0xFFFFFF is the A110's invalid value).
    pub fn max(self) -> u32 {
        match self {
            CounterWidth::V1 => 0x00FF_FFFE,
            CounterWidth::V2 => 0xFFFF_FFFE,
        }
    }
}

/// A channel failure seen while unprotecting a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// Ciphertext length not a multiple of 16.
    #[error("ciphertext of {len} bytes is not a whole number of AES blocks")]
    NotBlockAligned {
        /// The length.
        len: usize,
    },
    /// No `0x80` padding marker after decryption (wrong key, wrong counter or tampering).
    #[error("decrypted payload has no valid 0x80 padding")]
    BadPadding,
}

/// The first block of a MAC or IV input: `CTR ‖ SUBJ ‖ 0x80 ‖ zeros`.
pub fn subject_block(width: CounterWidth, counter: u32, subject: u8) -> [u8; 16] {
    let mut b = [0u8; 16];
    let ctr = counter.to_be_bytes();
    let n = match width {
        CounterWidth::V1 => {
            b[..3].copy_from_slice(&ctr[1..]);
            3
        }
        CounterWidth::V2 => {
            b[..4].copy_from_slice(&ctr);
            4
        }
    };
    b[n] = subject;
    b[n + 1] = 0x80;
    b
}

fn len2(n: usize) -> [u8; 2] {
    u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes()
}

fn truncate(full: [u8; 16]) -> [u8; MAC_LEN] {
    [full[0], full[1], full[2], full[3]]
}

/// The C-MAC of a command with counter `n`. `header` holds the header bytes
/// with their flags; `payload` is the payload as sent (encrypted if it is).
pub fn c_mac(
    keys: &HostKeys,
    width: CounterWidth,
    n: u32,
    header: &[u8],
    payload: &[u8],
) -> [u8; MAC_LEN] {
    let block = subject_block(width, n, subject::CMAC);
    truncate(
        keys.mac
            .cmac(&[&block, &[0x00], header, &len2(payload.len()), payload]),
    )
}

/// The R-MAC of a response, with counter `n_plus_1` (the counter after the
/// chip accepted the C-MAC).
pub fn r_mac(
    keys: &HostKeys,
    width: CounterWidth,
    n_plus_1: u32,
    header: &[u8],
    payload: &[u8],
    response_header: u8,
    response_data: &[u8],
) -> [u8; MAC_LEN] {
    let block = subject_block(width, n_plus_1, subject::RMAC);
    truncate(keys.mac.cmac(&[
        &block,
        &[0x80],
        header,
        &len2(payload.len()),
        payload,
        &[response_header],
        &len2(response_data.len()),
        response_data,
    ]))
}

/// Constant-time comparison of two MACs.
pub fn mac_eq(a: &[u8; MAC_LEN], b: &[u8; MAC_LEN]) -> bool {
    a.ct_eq(b).into()
}

/// The IV for payload encryption: AES-ECB(cipher key, block(N+1, subject)).
pub fn iv(keys: &HostKeys, width: CounterWidth, n_plus_1: u32, subj: u8) -> [u8; 16] {
    keys.cipher
        .encrypt_block(&subject_block(width, n_plus_1, subj))
}

/// Encrypts a command or response payload: `0x80` and zero padding to a
/// whole block (a full extra block if already aligned), AES-CBC.
pub fn encrypt(
    keys: &HostKeys,
    width: CounterWidth,
    n_plus_1: u32,
    subj: u8,
    plaintext: &[u8],
) -> Vec<u8> {
    let padded_len = (plaintext.len() / 16 + 1) * 16;
    let mut buf = Vec::with_capacity(padded_len);
    buf.extend_from_slice(plaintext);
    buf.push(0x80);
    buf.resize(padded_len, 0);
    let iv = iv(keys, width, n_plus_1, subj);
    keys.cipher.cbc_encrypt(&iv, &mut buf);
    buf
}

/// Decrypts a payload and removes the padding (the last `0x80` after
/// trailing zeros).
pub fn decrypt(
    keys: &HostKeys,
    width: CounterWidth,
    n_plus_1: u32,
    subj: u8,
    ciphertext: &[u8],
) -> Result<Vec<u8>, ChannelError> {
    if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(16) {
        return Err(ChannelError::NotBlockAligned {
            len: ciphertext.len(),
        });
    }
    let mut buf = ciphertext.to_vec();
    let iv = iv(keys, width, n_plus_1, subj);
    keys.cipher.cbc_decrypt(&iv, &mut buf)?;
    let end = buf
        .iter()
        .rposition(|&b| b != 0)
        .ok_or(ChannelError::BadPadding)?;
    if buf[end] != 0x80 || buf.len() - end > 16 {
        buf.zeroize();
        return Err(ChannelError::BadPadding);
    }
    buf.truncate(end);
    Ok(buf)
}
