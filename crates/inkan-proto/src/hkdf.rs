//! HKDF-SHA256 (RFC 5869), the one place EDHOC's key schedule and the
//! OSCORE context derivation take it from: extract, then expand.

use sha2::Sha256;
use zeroize::Zeroizing;

/// Length of a SHA-256 PRK.
pub const PRK_LEN: usize = 32;

/// Most output one expand gives (255 blocks of SHA-256).
pub const MAX_OUTPUT: usize = 255 * PRK_LEN;

/// HKDF-Extract(salt, IKM): the pseudorandom key.
pub fn extract(salt: &[u8], ikm: &[u8]) -> Zeroizing<[u8; PRK_LEN]> {
    let (prk, _) = hkdf::Hkdf::<Sha256>::extract(Some(salt), ikm);
    let mut out = Zeroizing::new([0u8; PRK_LEN]);
    out.copy_from_slice(&prk);
    out
}

/// Why an expand gives nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// A PRK shorter than the hash.
    #[error("PRK shorter than {PRK_LEN} bytes")]
    Prk,
    /// More than 255 blocks asked for.
    #[error("more than {MAX_OUTPUT} bytes asked for")]
    Length,
}

/// HKDF-Expand(PRK, info, L).
pub fn expand(prk: &[u8], info: &[u8], len: usize) -> Result<Zeroizing<Vec<u8>>, ExpandError> {
    let hk = hkdf::Hkdf::<Sha256>::from_prk(prk).map_err(|_| ExpandError::Prk)?;
    let mut out = Zeroizing::new(vec![0u8; len]);
    hk.expand(info, &mut out).map_err(|_| ExpandError::Length)?;
    Ok(out)
}
