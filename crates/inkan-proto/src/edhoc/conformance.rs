//! Conformance: RFC 9529 Trace 1 (method 0, cipher suite 0, X.509
//! certificates identified by x5t), reproduced byte for byte in both roles
//! with the keys and verification of a given [`Provider`], so every
//! provider the product uses runs the same published trace, down to the
//! OSCORE Master Secret and Salt it exports. The values below are the
//! trace's published inputs and outputs.

use super::crypto::Provider;
use super::{ConnId, Credential, IdCred, Initiator, Responder, Suite};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.split_whitespace().collect::<String>()).unwrap_or_default()
}

const X: &str = "892ec28e5cb6669108470539500b705e60d008d347c5817ee9f3327c8a87bb03";
const Y: &str = "e69c23fbf81bc435942446837fe827bf206c8fa10a39db47449e5a813421e1e8";
const SK_I: &str = "4c5b25878f507c6b9dae68fbd4fd3ff997533db0af00b25d324ea28e6c213bc8";
const SK_R: &str = "ef140ff900b0ab03f0c08d879cbbd4b31ea71e6e7ee7ffcb7e7955777a332799";
const ID_CRED_I: &str = "a11822822e48c24ab2fd7643c79f";
const ID_CRED_R: &str = "a11822822e4879f2a41b510c1f9b";
const CRED_I: &str =
    "58f13081ee3081a1a003020102020462319ea0300506032b6570301d311b301906035504030c12454448
    4f4320526f6f742045643235353139301e170d3232303331363038323430305a170d3239313233313233
    303030305a30223120301e06035504030c174544484f4320496e69746961746f72204564323535313930
    2a300506032b6570032100ed06a8ae61a829ba5fa54525c9d07f48dd44a302f43e0f23d8cc20b7308514
    1e300506032b6570034100521241d8b3a770996bcfc9b9ead4e7e0a1c0db353a3bdf2910b39275ae48b7
    56015981850d27db6734e37f67212267dd05eeff27b9e7a813fa574b72a00b430b";
const CRED_R: &str =
    "58f13081ee3081a1a003020102020462319ec4300506032b6570301d311b301906035504030c12454448
    4f4320526f6f742045643235353139301e170d3232303331363038323433365a170d3239313233313233
    303030305a30223120301e06035504030c174544484f4320526573706f6e646572204564323535313930
    2a300506032b6570032100a1db47b95184854ad12a0c1a354e418aace33aa0f2c662c00b3ac55de92f93
    59300506032b6570034100b723bc01eab0928e8b2b6c98de19cc3823d46e7d6987b032478fecfaf14537
    a1af14cc8be829c6b73044101837eb4abc949565d86dce51cfae52ab82c152cb02";
const MESSAGE_1: &str =
    "0000582031f82c7b5b9cbbf0f194d913cc12ef1532d328ef32632a4881a1c0701e237f042d";
const MESSAGE_2: &str =
    "5872dc88d2d51da5ed67fc4616356bc8ca74ef9ebe8b387e623a360ba480b9b29d1cbc26dd270fe9c02c
    44ce3934794b1cc62ba22f05459f8d358c8d12275ac42c5f96ded5f13cc9084e5b201889a45e5a60a556
    2dc118619c3daa2fd9f4c9f4d6edad109dd4edf95962aafbaf9ab3f4a1f6b98f";
const MESSAGE_3: &str =
    "585825c345884aaaeb22c527f9b1d2b6787207e0163c69b62a0d43928150427203c31674e4514ea6e383
    b566eb29763efeb0afa518776ae1c65f856d84bf32af3a7836970466dcb71f76745d39d3025e7703e0c0
    32ebad51947c";
const MESSAGE_4: &str = "484f0edee366e5c883";
/// RFC 9529 §2.6: the OSCORE Master Secret and Master Salt exported from
/// Trace 1's session.
const OSCORE_MASTER_SECRET: &str = "1e1c6beac3a8a1cac435de7e2f9ae7ff";
const OSCORE_MASTER_SALT: &str = "ce7ab844c0106d73";
const PRK_OUT: &str = "b744cb7d8a87cc0447c3350e165b250dab12ec453325abb922b30307e5c368f0";

/// Runs Trace 1 with `p`'s ephemeral keys and signature keys in both roles
/// and `p`'s verification of Signature_3; every message, PRK_out and the
/// OSCORE master secret must be the trace's. The first difference is the
/// error.
pub fn rfc9529_trace_1(p: &dyn Provider) -> Result<(), String> {
    let suite = Suite::X25519EdDsa;
    fn e(what: &'static str) -> impl Fn(super::EdhocError) -> String {
        move |err| format!("{what}: {err}")
    }
    let same = |what: &str, got: &[u8], want: &str| -> Result<(), String> {
        if got == h(want).as_slice() {
            Ok(())
        } else {
            Err(format!(
                "{what} differs: {} instead of {}",
                hex::encode(got),
                want.split_whitespace().collect::<String>()
            ))
        }
    };
    let mut sk_i = p.signer(suite, &h(SK_I)).map_err(e("SK_I"))?;
    let mut sk_r = p.signer(suite, &h(SK_R)).map_err(e("SK_R"))?;
    let public =
        |sk: &str| super::crypto::SoftwareSigner::from_bytes(suite, &h(sk)).map(|s| s.public_key());
    let cred_i = Credential {
        cred: h(CRED_I),
        public_key: public(SK_I).map_err(e("SK_I"))?,
    };
    let cred_r = Credential {
        cred: h(CRED_R),
        public_key: public(SK_R).map_err(e("SK_R"))?,
    };
    // The x5t values are the SHA-256/64 of the certificates.
    same("ID_CRED_I", &IdCred::x5t(&h(CRED_I)[2..]).0, ID_CRED_I)?;
    same("ID_CRED_R", &IdCred::x5t(&h(CRED_R)[2..]).0, ID_CRED_R)?;

    let eph_i = p.ephemeral_from_bytes(suite, &h(X)).map_err(e("X"))?;
    let (i, m1) = Initiator::start(suite, ConnId(vec![0x2d]), &[], eph_i);
    same("message_1", &m1, MESSAGE_1)?;

    let r = Responder::process_message_1(&m1, &[Suite::P256Es256, Suite::X25519EdDsa])
        .map_err(e("message_1"))?;
    if r.suite != suite || r.c_i != ConnId(vec![0x2d]) {
        return Err("message_1: suite or C_I".into());
    }
    let eph_r = p.ephemeral_from_bytes(suite, &h(Y)).map_err(e("Y"))?;
    let (r, m2) = r
        .prepare_message_2(
            ConnId(vec![0x18]),
            &IdCred(h(ID_CRED_R)),
            &cred_r,
            &[],
            eph_r,
            &mut *sk_r,
        )
        .map_err(e("message_2"))?;
    same("message_2", &m2, MESSAGE_2)?;

    let i = i
        .process_message_2(&m2)
        .map_err(e("message_2 (initiator)"))?;
    if i.c_r() != &ConnId(vec![0x18]) || i.id_cred_r() != &IdCred(h(ID_CRED_R)) {
        return Err("message_2: C_R or ID_CRED_R".into());
    }
    let i = i.verify(&cred_r).map_err(e("Signature_2"))?;
    let (i, m3) = i
        .prepare_message_3(&IdCred(h(ID_CRED_I)), &cred_i.cred, &[], &mut *sk_i)
        .map_err(e("message_3"))?;
    same("message_3", &m3, MESSAGE_3)?;

    let r = r
        .process_message_3(&m3)
        .map_err(e("message_3 (responder)"))?;
    if r.id_cred_i() != &IdCred(h(ID_CRED_I)) {
        return Err("message_3: ID_CRED_I".into());
    }
    let r = r.verify_with(&cred_i, p).map_err(e("Signature_3"))?;
    let m4 = r.message_4(&[]).map_err(e("message_4"))?;
    same("message_4", &m4, MESSAGE_4)?;
    if !i
        .process_message_4(&m4)
        .map_err(e("message_4 (initiator)"))?
        .is_empty()
    {
        return Err("message_4: unexpected EAD_4".into());
    }
    same("PRK_out (initiator)", i.session().prk_out(), PRK_OUT)?;
    same("PRK_out (responder)", r.session().prk_out(), PRK_OUT)?;
    // The OSCORE contexts both sides derive (RFC 9528 Appendix A.1): the
    // published Master Secret and Salt, each side's Sender ID the other's
    // connection identifier.
    let c_i = ConnId(vec![0x2d]);
    let c_r = ConnId(vec![0x18]);
    for (name, session, initiator) in [
        ("initiator", i.session(), true),
        ("responder", r.session(), false),
    ] {
        let params = crate::oscore::ContextParams::from_edhoc(session, initiator, &c_i, &c_r)
            .map_err(e("OSCORE"))?;
        same(
            &format!("OSCORE Master Secret ({name})"),
            &params.master_secret[..],
            OSCORE_MASTER_SECRET,
        )?;
        same(
            &format!("OSCORE Master Salt ({name})"),
            &params.master_salt,
            OSCORE_MASTER_SALT,
        )?;
        let (sender, recipient) = if initiator {
            ("18", "2d")
        } else {
            ("2d", "18")
        };
        same(
            &format!("OSCORE Sender ID ({name})"),
            &params.sender_id,
            sender,
        )?;
        same(
            &format!("OSCORE Recipient ID ({name})"),
            &params.recipient_id,
            recipient,
        )?;
    }
    Ok(())
}
