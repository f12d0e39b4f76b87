//! The responder (the cloud): message_1 parsed and the suite negotiated,
//! message_2 built with the responder's signature, message_3 decrypted and
//! the initiator authenticated against the credential the caller resolves.

use super::crypto::{self, EphemeralKey, SignatureKey};
use super::kdf::{self, Session};
use super::{
    check_ead, check_len, parse_error_message, ConnId, Credential, EdhocError, IdCred, Suite,
    HASH_LEN, METHOD_SIG_SIG,
};
use crate::cbor::{self, Decoder};
use zeroize::Zeroizing;

/// Entry point of the responder role.
#[derive(Debug)]
pub struct Responder;

/// A parsed message_1.
#[derive(Debug)]
pub struct ResponderMessage1 {
    /// The selected suite.
    pub suite: Suite,
    /// The initiator's connection identifier.
    pub c_i: ConnId,
    g_x: Vec<u8>,
    /// EAD_1, raw.
    pub ead_1: Vec<u8>,
    h_message_1: [u8; HASH_LEN],
}

/// The responder after message_2: the state to keep until message_3
/// (small and plain, so it can live in a shared database).
#[derive(Clone, Debug)]
pub struct ResponderAwaitingMessage3 {
    /// The selected suite.
    pub suite: Suite,
    /// The initiator's connection identifier.
    pub c_i: ConnId,
    /// Our connection identifier.
    pub c_r: ConnId,
    th_3: [u8; HASH_LEN],
    prk_3e2m: Zeroizing<[u8; HASH_LEN]>,
}

/// message_3 decrypted; the initiator is not authenticated yet.
#[derive(Debug)]
pub struct ResponderProcessingMessage3 {
    state: ResponderAwaitingMessage3,
    id_cred_i: IdCred,
    signature_3: Vec<u8>,
    ead_3: Vec<u8>,
    plaintext_3: Zeroizing<Vec<u8>>,
}

/// The responder with the initiator authenticated.
#[derive(Debug)]
pub struct ResponderDone {
    /// The initiator's connection identifier.
    pub c_i: ConnId,
    /// Our connection identifier.
    pub c_r: ConnId,
    th_4: [u8; HASH_LEN],
    prk_4e3m: Zeroizing<[u8; HASH_LEN]>,
    session: Session,
}

fn parse_suites(d: &mut Decoder<'_>) -> Result<Vec<i64>, EdhocError> {
    match d.peek_major()? {
        cbor::major::UINT | cbor::major::NINT => Ok(vec![d.int()?]),
        cbor::major::ARRAY => {
            let n = d.array()?;
            if !(2..=16).contains(&n) {
                return Err(EdhocError::Malformed(
                    "SUITES_I array must hold 2 to 16 suites",
                ));
            }
            (0..n).map(|_| d.int().map_err(EdhocError::from)).collect()
        }
        _ => Err(EdhocError::Malformed("SUITES_I")),
    }
}

impl Responder {
    /// Parses message_1 and negotiates the suite (RFC 9528 §6.3.2): the
    /// selected suite (the last of SUITES_I) must be supported, and no suite
    /// the initiator prefers over it may be.
    pub fn process_message_1(
        message_1: &[u8],
        supported: &[Suite],
    ) -> Result<ResponderMessage1, EdhocError> {
        check_len(message_1)?;
        let mut d = Decoder::new(message_1);
        let method = d.int().map_err(|_| EdhocError::Malformed("METHOD"))?;
        if method != METHOD_SIG_SIG {
            return Err(EdhocError::UnsupportedMethod(method));
        }
        let suites = parse_suites(&mut d)?;
        let g_x = d.bstr().map_err(|_| EdhocError::Malformed("G_X"))?.to_vec();
        let c_i = ConnId::decode(&mut d)?;
        let ead_1 = d.rest().to_vec();
        check_ead(&ead_1)?;
        let selected = *suites.last().ok_or(EdhocError::Malformed("SUITES_I"))?;
        let preferred_supported = suites[..suites.len() - 1]
            .iter()
            .any(|s| Suite::from_id(*s).is_some_and(|s| supported.contains(&s)));
        let suite = Suite::from_id(selected)
            .filter(|s| supported.contains(s) && !preferred_supported)
            .ok_or(EdhocError::UnsupportedSuite { selected })?;
        if g_x.len() != suite.point_len() {
            return Err(EdhocError::InvalidEphemeralKey);
        }
        Ok(ResponderMessage1 {
            suite,
            c_i,
            g_x,
            ead_1,
            h_message_1: kdf::hash(&[message_1]),
        })
    }

    /// The error message to send for a failure (ERR_CODE 2 with our suites
    /// for a suite mismatch, ERR_CODE 1 otherwise).
    pub fn error_for(e: &EdhocError, supported: &[Suite]) -> Vec<u8> {
        match e {
            EdhocError::UnsupportedSuite { .. } => super::error_message(
                2,
                &super::ErrorInfo::Suites(supported.iter().map(|s| s.id()).collect()),
            ),
            other => super::error_message(1, &super::ErrorInfo::Text(other.to_string())),
        }
    }
}

impl ResponderMessage1 {
    /// Builds message_2, signed with `signer` over the transcript that
    /// includes the initiator's fresh ephemeral key.
    pub fn prepare_message_2(
        self,
        c_r: ConnId,
        id_cred_r: &IdCred,
        cred_r: &Credential,
        ead_2: &[u8],
        eph: Box<dyn EphemeralKey>,
        signer: &mut dyn SignatureKey,
    ) -> Result<(ResponderAwaitingMessage3, Vec<u8>), EdhocError> {
        if c_r == self.c_i {
            return Err(EdhocError::Malformed("C_R must differ from C_I"));
        }
        let g_y = eph.public();
        let th_2 = kdf::hash(&[&cbor::bstr_vec(&g_y), &cbor::bstr_vec(&self.h_message_1)]);
        let g_xy = eph.agree(&self.g_x)?;
        let prk_2e = kdf::extract(&th_2, &g_xy);
        let mut context = c_r.encoded();
        context.extend_from_slice(&id_cred_r.0);
        context.extend_from_slice(&cbor::bstr_vec(&th_2));
        context.extend_from_slice(&cred_r.cred);
        context.extend_from_slice(ead_2);
        let mac_2 = kdf::kdf(&*prk_2e, 2, &context, HASH_LEN)?;
        let signature_2 = signer.sign(&kdf::sig_structure(
            &id_cred_r.0,
            &th_2,
            &cred_r.cred,
            ead_2,
            &mac_2,
        ))?;
        let mut plaintext_2 = Zeroizing::new(c_r.encoded());
        id_cred_r.encode_compact(&mut plaintext_2);
        cbor::bstr(&mut plaintext_2, &signature_2);
        plaintext_2.extend_from_slice(ead_2);
        let ct_2 = kdf::keystream_xor(&*prk_2e, &th_2, &plaintext_2)?;
        let mut gy_ct = g_y.clone();
        gy_ct.extend_from_slice(&ct_2);
        let th_3 = kdf::hash(&[&cbor::bstr_vec(&th_2), &plaintext_2, &cred_r.cred]);
        Ok((
            ResponderAwaitingMessage3 {
                suite: self.suite,
                c_i: self.c_i,
                c_r,
                th_3,
                prk_3e2m: prk_2e,
            },
            cbor::bstr_vec(&gy_ct),
        ))
    }
}

impl ResponderAwaitingMessage3 {
    /// Serialises the state (suite, C_I, C_R, TH_3, PRK_3e2m) so another
    /// replica can finish the exchange. The bytes are secret.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut v = Zeroizing::new(Vec::with_capacity(100));
        cbor::array(&mut v, 5);
        cbor::int(&mut v, self.suite.id());
        cbor::bstr(&mut v, &self.c_i.0);
        cbor::bstr(&mut v, &self.c_r.0);
        cbor::bstr(&mut v, &self.th_3);
        cbor::bstr(&mut v, &*self.prk_3e2m);
        v
    }

    /// Restores a state saved with [`ResponderAwaitingMessage3::to_bytes`].
    pub fn from_bytes(b: &[u8]) -> Result<ResponderAwaitingMessage3, EdhocError> {
        let mut d = Decoder::new(b);
        if d.array()? != 5 {
            return Err(EdhocError::Malformed("saved state"));
        }
        let suite = Suite::from_id(d.int()?).ok_or(EdhocError::Malformed("saved state suite"))?;
        let c_i = ConnId(d.bstr()?.to_vec());
        let c_r = ConnId(d.bstr()?.to_vec());
        let th_3: [u8; HASH_LEN] = d
            .bstr()?
            .try_into()
            .map_err(|_| EdhocError::Malformed("saved TH_3"))?;
        let prk: [u8; HASH_LEN] = d
            .bstr()?
            .try_into()
            .map_err(|_| EdhocError::Malformed("saved PRK"))?;
        Ok(ResponderAwaitingMessage3 {
            suite,
            c_i,
            c_r,
            th_3,
            prk_3e2m: Zeroizing::new(prk),
        })
    }

    /// Decrypts message_3. A message_3 from another exchange, replayed or
    /// altered, fails here with [`EdhocError::Decryption`].
    pub fn process_message_3(
        self,
        message_3: &[u8],
    ) -> Result<ResponderProcessingMessage3, EdhocError> {
        check_len(message_3)?;
        if let Some(e) = parse_error_message(message_3) {
            return Err(e);
        }
        let mut d = Decoder::new(message_3);
        let ct = d.bstr()?;
        if !d.is_empty() {
            return Err(EdhocError::Malformed("trailing bytes after message_3"));
        }
        let plaintext_3 = kdf::open(&*self.prk_3e2m, (3, 4), &self.th_3, ct, 3)?;
        let mut p = Decoder::new(&plaintext_3);
        let id_cred_i = IdCred::decode_compact(&mut p)
            .map_err(|_| EdhocError::Malformed("PLAINTEXT_3: ID_CRED_I"))?;
        let signature_3 = p
            .bstr()
            .map_err(|_| EdhocError::Malformed("PLAINTEXT_3: Signature_3"))?
            .to_vec();
        let ead_3 = p.rest().to_vec();
        Ok(ResponderProcessingMessage3 {
            state: self,
            id_cred_i,
            signature_3,
            ead_3,
            plaintext_3,
        })
    }
}

impl ResponderProcessingMessage3 {
    /// How the initiator identified its credential.
    pub fn id_cred_i(&self) -> &IdCred {
        &self.id_cred_i
    }

    /// EAD_3, raw.
    pub fn ead_3(&self) -> &[u8] {
        &self.ead_3
    }

    /// The suite.
    pub fn suite(&self) -> Suite {
        self.state.suite
    }

    /// Authenticates the initiator: Signature_3 over MAC_3 and the
    /// transcript, with the credential's key.
    pub fn verify(self, cred_i: &Credential) -> Result<ResponderDone, EdhocError> {
        self.verify_with(cred_i, &crypto::RustCrypto)
    }

    /// The same, verifying Signature_3 with `provider`.
    pub fn verify_with(
        self,
        cred_i: &Credential,
        provider: &dyn crypto::Provider,
    ) -> Result<ResponderDone, EdhocError> {
        let st = self.state;
        let prk_4e3m = st.prk_3e2m.clone();
        let mut context = self.id_cred_i.0.clone();
        context.extend_from_slice(&cbor::bstr_vec(&st.th_3));
        context.extend_from_slice(&cred_i.cred);
        context.extend_from_slice(&self.ead_3);
        let mac_3 = kdf::kdf(&*prk_4e3m, 6, &context, HASH_LEN)?;
        let to_verify = kdf::sig_structure(
            &self.id_cred_i.0,
            &st.th_3,
            &cred_i.cred,
            &self.ead_3,
            &mac_3,
        );
        if !provider.verify(st.suite, &cred_i.public_key, &to_verify, &self.signature_3) {
            return Err(EdhocError::BadSignature(3));
        }
        let th_4 = kdf::hash(&[&cbor::bstr_vec(&st.th_3), &self.plaintext_3, &cred_i.cred]);
        let prk_out = kdf::kdf(&*prk_4e3m, 7, &th_4, HASH_LEN)?;
        Ok(ResponderDone {
            c_i: st.c_i,
            c_r: st.c_r,
            th_4,
            prk_4e3m,
            session: Session::new(&prk_out)?,
        })
    }
}

impl ResponderDone {
    /// The session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// message_4: key confirmation, carrying EAD_4.
    pub fn message_4(&self, ead_4: &[u8]) -> Result<Vec<u8>, EdhocError> {
        Ok(cbor::bstr_vec(&kdf::seal(
            &*self.prk_4e3m,
            (8, 9),
            &self.th_4,
            ead_4,
        )?))
    }
}
