//! Key schedule (RFC 9528 §4): EDHOC_Extract is HKDF-Extract with SHA-256,
//! EDHOC_KDF(PRK, label, context, length) is HKDF-Expand with
//! info = (label, context, length) as a CBOR sequence; the AEAD is
//! AES-CCM-16-64-128 with the COSE Encrypt0 structure as additional data.

use super::{EdhocError, HASH_LEN, IV_LEN, KEY_LEN};
use crate::cbor;
use ccm::aead::{Aead, KeyInit, Payload};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

type AesCcm = ccm::Ccm<aes::Aes128, ccm::consts::U8, ccm::consts::U13>;

/// SHA-256.
pub(crate) fn hash(parts: &[&[u8]]) -> [u8; HASH_LEN] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// EDHOC_Extract(salt, IKM).
pub(crate) fn extract(salt: &[u8], ikm: &[u8]) -> Zeroizing<[u8; HASH_LEN]> {
    crate::hkdf::extract(salt, ikm)
}

/// EDHOC_KDF(PRK, label, context, length).
pub(crate) fn kdf(
    prk: &[u8],
    label: i64,
    context: &[u8],
    len: usize,
) -> Result<Zeroizing<Vec<u8>>, EdhocError> {
    let mut info = Vec::with_capacity(context.len() + 8);
    cbor::int(&mut info, label);
    cbor::bstr(&mut info, context);
    cbor::int(
        &mut info,
        i64::try_from(len).map_err(|_| EdhocError::Malformed("KDF length"))?,
    );
    crate::hkdf::expand(prk, &info, len).map_err(|e| match e {
        crate::hkdf::ExpandError::Prk => EdhocError::Key("PRK length".into()),
        crate::hkdf::ExpandError::Length => EdhocError::Malformed("KDF output too long"),
    })
}

fn enc_structure(th: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(th.len() + 16);
    cbor::array(&mut a, 3);
    cbor::tstr(&mut a, "Encrypt0");
    cbor::bstr(&mut a, &[]);
    cbor::bstr(&mut a, th);
    a
}

/// AEAD-encrypts with K and IV derived from (PRK, key label, IV label, TH).
pub(crate) fn seal(
    prk: &[u8],
    labels: (i64, i64),
    th: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, EdhocError> {
    let key = kdf(prk, labels.0, th, KEY_LEN)?;
    let iv = kdf(prk, labels.1, th, IV_LEN)?;
    let cipher = AesCcm::new_from_slice(&key).map_err(|_| EdhocError::Key("AEAD key".into()))?;
    cipher
        .encrypt(
            ccm::Nonce::<ccm::consts::U13>::from_slice(&iv),
            Payload {
                msg: plaintext,
                aad: &enc_structure(th),
            },
        )
        .map_err(|_| EdhocError::Key("AEAD encryption".into()))
}

/// AEAD-decrypts; `which` names the message for the error.
pub(crate) fn open(
    prk: &[u8],
    labels: (i64, i64),
    th: &[u8],
    ciphertext: &[u8],
    which: u8,
) -> Result<Zeroizing<Vec<u8>>, EdhocError> {
    let key = kdf(prk, labels.0, th, KEY_LEN)?;
    let iv = kdf(prk, labels.1, th, IV_LEN)?;
    let cipher = AesCcm::new_from_slice(&key).map_err(|_| EdhocError::Key("AEAD key".into()))?;
    cipher
        .decrypt(
            ccm::Nonce::<ccm::consts::U13>::from_slice(&iv),
            Payload {
                msg: ciphertext,
                aad: &enc_structure(th),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| EdhocError::Decryption(which))
}

/// XORs `data` with KEYSTREAM_2.
pub(crate) fn keystream_xor(
    prk_2e: &[u8],
    th_2: &[u8],
    data: &[u8],
) -> Result<Zeroizing<Vec<u8>>, EdhocError> {
    let mut ks = kdf(prk_2e, 0, th_2, data.len())?;
    for (k, d) in ks.iter_mut().zip(data) {
        *k ^= d;
    }
    Ok(ks)
}

/// The COSE Sig_structure EDHOC signs: `["Signature1", << ID_CRED >>,
/// << TH, CRED, ? EAD >>, MAC]`.
pub(crate) fn sig_structure(
    id_cred: &[u8],
    th: &[u8],
    cred: &[u8],
    ead: &[u8],
    mac: &[u8],
) -> Vec<u8> {
    let mut external = cbor::bstr_vec(th);
    external.extend_from_slice(cred);
    external.extend_from_slice(ead);
    let mut s = Vec::with_capacity(external.len() + id_cred.len() + mac.len() + 24);
    cbor::array(&mut s, 4);
    cbor::tstr(&mut s, "Signature1");
    cbor::bstr(&mut s, id_cred);
    cbor::bstr(&mut s, &external);
    cbor::bstr(&mut s, mac);
    s
}

/// What an EDHOC session yields: PRK_out and the exporter.
#[derive(Clone)]
pub struct Session {
    prk_out: Zeroizing<[u8; HASH_LEN]>,
    prk_exporter: Zeroizing<[u8; HASH_LEN]>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session(..)")
    }
}

impl Session {
    pub(crate) fn new(prk_out: &[u8]) -> Result<Session, EdhocError> {
        let mut out = Zeroizing::new([0u8; HASH_LEN]);
        out.copy_from_slice(prk_out);
        let mut exp = Zeroizing::new([0u8; HASH_LEN]);
        exp.copy_from_slice(&kdf(prk_out, 10, &[], HASH_LEN)?);
        Ok(Session {
            prk_out: out,
            prk_exporter: exp,
        })
    }

    /// PRK_out.
    pub fn prk_out(&self) -> &[u8] {
        &*self.prk_out
    }

    /// EDHOC_Exporter(label, context, length).
    pub fn export(
        &self,
        label: i64,
        context: &[u8],
        len: usize,
    ) -> Result<Zeroizing<Vec<u8>>, EdhocError> {
        kdf(&*self.prk_exporter, label, context, len)
    }

    /// The OSCORE Master Secret (exporter label 0, 16 bytes).
    pub fn oscore_master_secret(&self) -> Result<Zeroizing<Vec<u8>>, EdhocError> {
        self.export(0, &[], 16)
    }

    /// The OSCORE Master Salt (exporter label 1, 8 bytes).
    pub fn oscore_master_salt(&self) -> Result<Zeroizing<Vec<u8>>, EdhocError> {
        self.export(1, &[], 8)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.prk_out.zeroize();
    }
}
