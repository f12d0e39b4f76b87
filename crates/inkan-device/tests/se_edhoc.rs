//! The classic flow with every device private-key operation in the chip: a
//! personalized emulated STSAFE-A runs EDHOC suite 2 as initiator (its
//! ephemeral key in slot 0xFF, ECDH by Establish Key, Signature_3 by
//! Generate Signature) against a software responder that validates the
//! device chain against the factory root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use inkan_device::{read_identity, SeEphemeral, SeSigner};
use inkan_factory::personalize::BatchConfig;
use inkan_factory::{Factory, InitOptions, KeyStore, Personalizer, Secrets};
use inkan_pki::validate::RequiredEku;
use inkan_pki::{CertPolicy, DeviceValidator, KeyCurve, SoftwareKey};
use inkan_proto::edhoc::crypto::{SoftwareEphemeral, SoftwareSigner};
use inkan_proto::edhoc::{
    ConnId, Credential, EdhocError, IdCred, IdCredKind, Initiator, Responder, Suite,
};
use inkan_se::{Chip, Driver, InProcess, Personality};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

#[test]
fn a_personalized_chip_authenticates_with_edhoc() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = Secrets {
        passphrase: Some(zeroize::Zeroizing::new(b"pw".to_vec())),
        pin: None,
    };
    let f = Factory::init(
        &dir.path().join("factory"),
        InitOptions {
            organization: "edhoc test".into(),
            curve: KeyCurve::P256,
            policy: CertPolicy::default(),
            keys: KeyStore::File,
            anchors: None,
        },
        secrets.clone(),
    )
    .unwrap();
    let (_, family) = {
        f.create_family("thermo", KeyCurve::P256, true).unwrap();
        f.family("thermo").unwrap()
    };
    let cfg = BatchConfig {
        family: "thermo".into(),
        count: 1,
        personality: Personality::A120,
    };
    let mut p = Personalizer::open(&f, "thermo", "b", &cfg).unwrap();
    let path = inkan_se::chip::blank_chips(&p.dir().join("chips"), 1, Personality::A120)
        .unwrap()
        .remove(0);
    let mut d = Driver::new(InProcess::new(Chip::open(&path).unwrap())).unwrap();
    p.personalize(&mut d, Some(&path)).unwrap();
    let serial = hex::encode_upper(d.serial().unwrap());
    let keys = p.device_secrets(&serial).unwrap().host_keys().unwrap();

    // The cloud: its authentication key is the one pinned at personalization.
    let cloud_key = SoftwareKey::load(&f.dir().join("keys/dev-cloud-auth.key.pem"), b"pw").unwrap();
    let cloud_scalar = match &cloud_key {
        SoftwareKey::P256(k) => k.to_bytes().to_vec(),
        SoftwareKey::P384(_) => unreachable!(),
    };
    let mut cloud_signer = SoftwareSigner::from_bytes(Suite::P256Es256, &cloud_scalar).unwrap();
    let cloud_cred = Credential {
        cred: inkan_proto::cbor::bstr_vec(b"cloud credential"),
        public_key: cloud_signer.public_key(),
    };

    // The device: every key operation in the chip, through a host session.
    d.open_session(keys).unwrap();
    let identity = read_identity(&mut d).unwrap();
    let pinned = p256::PublicKey::from_public_key_der_compat(&identity.cloud_key_spki);
    let driver = Arc::new(Mutex::new(d));
    let eph = SeEphemeral::generate(driver.clone()).unwrap();
    let (i, m1) = Initiator::start(Suite::P256Es256, ConnId(vec![0x0a]), &[], Box::new(eph));

    // Cloud: message_2.
    let r1 = Responder::process_message_1(&m1, &[Suite::P256Es256]).unwrap();
    let (r2, m2) = r1
        .prepare_message_2(
            ConnId(vec![0x0b]),
            &IdCred::kid(b"cloud"),
            &cloud_cred,
            &[],
            Box::new(SoftwareEphemeral::generate(Suite::P256Es256)),
            &mut cloud_signer,
        )
        .unwrap();

    // Device: the cloud must hold the pinned key.
    let p2 = i.process_message_2(&m2).unwrap();
    assert_eq!(
        cloud_cred.public_key, pinned,
        "the device checks the cloud against its pinned key"
    );
    let v = p2.verify(&cloud_cred).unwrap();
    let id_cred_i = IdCred::x5chain(std::slice::from_ref(&identity.certificate));
    let cred_i = inkan_proto::cbor::bstr_vec(&identity.certificate);
    let (idone, m3) = v
        .prepare_message_3(&id_cred_i, &cred_i, &[], &mut SeSigner::new(driver.clone()))
        .unwrap();

    // Cloud: decrypt, validate the chain, verify Signature_3 with the leaf key.
    let p3 = r2.process_message_3(&m3).unwrap();
    let IdCredKind::X5chain(chain) = p3.id_cred_i().parse().unwrap() else {
        panic!("x5chain expected")
    };
    let validator =
        DeviceValidator::new(&[f.root().unwrap().der], RequiredEku::ClientAuth).unwrap();
    validator
        .validate(
            &chain[0],
            std::slice::from_ref(&family.der),
            SystemTime::now(),
        )
        .unwrap();
    let leaf = inkan_pki::cert::IssuedCert::from_der(&chain[0]).unwrap();
    let rdone = p3
        .verify(&Credential::x509(&chain[0], leaf.public_point()))
        .unwrap();
    idone
        .process_message_4(&rdone.message_4(&[]).unwrap())
        .unwrap();
    assert_eq!(idone.session().prk_out(), rdone.session().prk_out());
    assert_eq!(
        leaf.subject_serial_number().as_deref(),
        Some(serial.as_str())
    );

    // The chip's ephemeral slot is single use: a second ECDH fails.
    let again =
        driver
            .lock()
            .unwrap()
            .establish_key(0xFF, inkan_se::Curve::P256, &leaf.public_point());
    assert_eq!(
        again.unwrap_err().status(),
        Some(inkan_se::Status::KEY_NOT_FOUND)
    );
    // Without the host session the chip refuses to sign for EDHOC.
    driver.lock().unwrap().close_session();
    let e =
        inkan_proto::edhoc::crypto::SignatureKey::sign(&mut SeSigner::new(driver.clone()), b"x")
            .unwrap_err();
    assert!(
        matches!(e, EdhocError::Key(ref m) if m.contains("access condition")),
        "{e:?}"
    );
}

trait CompatDer {
    fn from_public_key_der_compat(der: &[u8]) -> Vec<u8>;
}

impl CompatDer for p256::PublicKey {
    fn from_public_key_der_compat(der: &[u8]) -> Vec<u8> {
        use p256::pkcs8::DecodePublicKey;
        p256::PublicKey::from_public_key_der(der)
            .unwrap()
            .to_sec1_bytes()
            .to_vec()
    }
}
