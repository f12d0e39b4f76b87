//! The initiator (the device): message_1, then message_2 is decrypted and
//! its signature verified against the responder's credential, then
//! message_3 carries the initiator's identity and signature, encrypted.

use super::crypto::{self, EphemeralKey, SignatureKey};
use super::kdf::{self, Session};
use super::{
    check_len, parse_error_message, ConnId, Credential, EdhocError, IdCred, Suite, HASH_LEN,
    METHOD_SIG_SIG,
};
use crate::cbor::{self, Decoder};
use zeroize::Zeroizing;

/// Entry point of the initiator role.
#[derive(Debug)]
pub struct Initiator;

/// The initiator after sending message_1.
pub struct InitiatorAwaitingMessage2 {
    suite: Suite,
    c_i: ConnId,
    eph: Box<dyn EphemeralKey>,
    h_message_1: [u8; HASH_LEN],
}

impl std::fmt::Debug for InitiatorAwaitingMessage2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitiatorAwaitingMessage2")
            .field("suite", &self.suite)
            .field("c_i", &self.c_i)
            .finish()
    }
}

/// The initiator with message_2 decrypted, waiting for the caller to
/// resolve ID_CRED_R to a credential it trusts.
#[derive(Debug)]
pub struct InitiatorProcessingMessage2 {
    suite: Suite,
    c_r: ConnId,
    id_cred_r: IdCred,
    signature_2: Vec<u8>,
    ead_2: Vec<u8>,
    th_2: [u8; HASH_LEN],
    prk_3e2m: Zeroizing<[u8; HASH_LEN]>,
    plaintext_2: Zeroizing<Vec<u8>>,
}

/// The initiator with the responder authenticated.
#[derive(Debug)]
pub struct InitiatorVerified {
    c_r: ConnId,
    th_3: [u8; HASH_LEN],
    prk_3e2m: Zeroizing<[u8; HASH_LEN]>,
}

/// The initiator after message_3: the session keys exist.
#[derive(Debug)]
pub struct InitiatorDone {
    /// The responder's connection identifier.
    pub c_r: ConnId,
    th_4: [u8; HASH_LEN],
    prk_4e3m: Zeroizing<[u8; HASH_LEN]>,
    session: Session,
}

impl Initiator {
    /// Builds message_1 with a fresh connection identifier and ephemeral key.
    pub fn start(
        suite: Suite,
        c_i: ConnId,
        ead_1: &[u8],
        eph: Box<dyn EphemeralKey>,
    ) -> (InitiatorAwaitingMessage2, Vec<u8>) {
        let mut m = Vec::with_capacity(40 + ead_1.len());
        cbor::int(&mut m, METHOD_SIG_SIG);
        cbor::int(&mut m, suite.id());
        cbor::bstr(&mut m, &eph.public());
        c_i.encode(&mut m);
        m.extend_from_slice(ead_1);
        let h_message_1 = kdf::hash(&[&m]);
        (
            InitiatorAwaitingMessage2 {
                suite,
                c_i,
                eph,
                h_message_1,
            },
            m,
        )
    }
}

impl InitiatorAwaitingMessage2 {
    /// Our connection identifier.
    pub fn c_i(&self) -> &ConnId {
        &self.c_i
    }

    /// Decrypts message_2. The responder is not authenticated yet: call
    /// [`InitiatorProcessingMessage2::verify`] with its credential.
    pub fn process_message_2(
        self,
        message_2: &[u8],
    ) -> Result<InitiatorProcessingMessage2, EdhocError> {
        check_len(message_2)?;
        if let Some(e) = parse_error_message(message_2) {
            return Err(e);
        }
        let mut d = Decoder::new(message_2);
        let gy_ct = d.bstr()?;
        if !d.is_empty() {
            return Err(EdhocError::Malformed("trailing bytes after message_2"));
        }
        let n = self.suite.point_len();
        if gy_ct.len() <= n {
            return Err(EdhocError::Malformed("message_2 too short"));
        }
        let (g_y, ct_2) = gy_ct.split_at(n);
        let th_2 = kdf::hash(&[&cbor::bstr_vec(g_y), &cbor::bstr_vec(&self.h_message_1)]);
        let g_xy = self.eph.agree(g_y)?;
        let prk_2e = kdf::extract(&th_2, &g_xy);
        let plaintext_2 = kdf::keystream_xor(&*prk_2e, &th_2, ct_2)?;
        let mut p = Decoder::new(&plaintext_2);
        let c_r = ConnId::decode(&mut p).map_err(|_| EdhocError::Malformed("PLAINTEXT_2: C_R"))?;
        let id_cred_r = IdCred::decode_compact(&mut p)
            .map_err(|_| EdhocError::Malformed("PLAINTEXT_2: ID_CRED_R"))?;
        let signature_2 = p
            .bstr()
            .map_err(|_| EdhocError::Malformed("PLAINTEXT_2: Signature_2"))?
            .to_vec();
        let ead_2 = p.rest().to_vec();
        Ok(InitiatorProcessingMessage2 {
            suite: self.suite,
            c_r,
            id_cred_r,
            signature_2,
            ead_2,
            th_2,
            prk_3e2m: prk_2e,
            plaintext_2,
        })
    }
}

impl InitiatorProcessingMessage2 {
    /// How the responder identified its credential.
    pub fn id_cred_r(&self) -> &IdCred {
        &self.id_cred_r
    }

    /// The responder's connection identifier.
    pub fn c_r(&self) -> &ConnId {
        &self.c_r
    }

    /// EAD_2, raw.
    pub fn ead_2(&self) -> &[u8] {
        &self.ead_2
    }

    /// Authenticates the responder: MAC_2 recomputed with `cred_r`, and the
    /// signature over it checked with the credential's key.
    pub fn verify(self, cred_r: &Credential) -> Result<InitiatorVerified, EdhocError> {
        let mut context = self.c_r.encoded();
        context.extend_from_slice(&self.id_cred_r.0);
        context.extend_from_slice(&cbor::bstr_vec(&self.th_2));
        context.extend_from_slice(&cred_r.cred);
        context.extend_from_slice(&self.ead_2);
        let mac_2 = kdf::kdf(&*self.prk_3e2m, 2, &context, HASH_LEN)?;
        let to_verify = kdf::sig_structure(
            &self.id_cred_r.0,
            &self.th_2,
            &cred_r.cred,
            &self.ead_2,
            &mac_2,
        );
        if !crypto::verify(
            self.suite,
            &cred_r.public_key,
            &to_verify,
            &self.signature_2,
        ) {
            return Err(EdhocError::BadSignature(2));
        }
        let th_3 = kdf::hash(&[&cbor::bstr_vec(&self.th_2), &self.plaintext_2, &cred_r.cred]);
        Ok(InitiatorVerified {
            c_r: self.c_r,
            th_3,
            prk_3e2m: self.prk_3e2m,
        })
    }
}

impl InitiatorVerified {
    /// Builds message_3: ID_CRED_I and Signature_3 (made by `signer`, which
    /// may be a secure element), encrypted under K_3.
    pub fn prepare_message_3(
        self,
        id_cred_i: &IdCred,
        cred_i: &[u8],
        ead_3: &[u8],
        signer: &mut dyn SignatureKey,
    ) -> Result<(InitiatorDone, Vec<u8>), EdhocError> {
        let prk_4e3m = self.prk_3e2m.clone();
        let mut context = id_cred_i.0.clone();
        context.extend_from_slice(&cbor::bstr_vec(&self.th_3));
        context.extend_from_slice(cred_i);
        context.extend_from_slice(ead_3);
        let mac_3 = kdf::kdf(&*prk_4e3m, 6, &context, HASH_LEN)?;
        let signature_3 = signer.sign(&kdf::sig_structure(
            &id_cred_i.0,
            &self.th_3,
            cred_i,
            ead_3,
            &mac_3,
        ))?;
        let mut plaintext_3 = Zeroizing::new(Vec::with_capacity(
            signature_3.len() + id_cred_i.0.len() + 4,
        ));
        id_cred_i.encode_compact(&mut plaintext_3);
        cbor::bstr(&mut plaintext_3, &signature_3);
        plaintext_3.extend_from_slice(ead_3);
        let ct_3 = kdf::seal(&*self.prk_3e2m, (3, 4), &self.th_3, &plaintext_3)?;
        let th_4 = kdf::hash(&[&cbor::bstr_vec(&self.th_3), &plaintext_3, cred_i]);
        let prk_out = kdf::kdf(&*prk_4e3m, 7, &th_4, HASH_LEN)?;
        let session = Session::new(&prk_out)?;
        Ok((
            InitiatorDone {
                c_r: self.c_r,
                th_4,
                prk_4e3m,
                session,
            },
            cbor::bstr_vec(&ct_3),
        ))
    }
}

impl InitiatorDone {
    /// The session (PRK_out and the exporter).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Checks message_4, which confirms the responder derived the same keys;
    /// returns EAD_4.
    pub fn process_message_4(&self, message_4: &[u8]) -> Result<Vec<u8>, EdhocError> {
        check_len(message_4)?;
        if let Some(e) = parse_error_message(message_4) {
            return Err(e);
        }
        let mut d = Decoder::new(message_4);
        let ct = d.bstr()?;
        if !d.is_empty() {
            return Err(EdhocError::Malformed("trailing bytes after message_4"));
        }
        Ok(kdf::open(&*self.prk_4e3m, (8, 9), &self.th_4, ct, 4)?.to_vec())
    }
}
