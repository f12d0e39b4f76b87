//! The cloud end to end on SQLite: a factory personalizes chips, the cloud
//! registers their family (with proof of possession), and the chips
//! authenticate with EDHOC over CoAP/UDP on loopback, every device key
//! operation inside the chip. Then the attacks, each refused with its
//! specific reason and an audit entry.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;
use common::world::*;
use common::{db_url, Db};

use inkan_cloud::auth::AuthError;
use inkan_cloud::registry::{pop_challenge, RegistryError};
use inkan_cloud::{App, Limits, Registry, Store};
use inkan_device::{connect, ConnectError, SeEphemeral, SeSigner};
use inkan_factory::personalize::BatchConfig;
use inkan_factory::Personalizer;
use inkan_pki::{KeyCurve, SoftwareKey};
use inkan_proto::edhoc::{ConnId, Credential, IdCred, IdCredKind, Initiator, Suite};
use inkan_se::{Chip, Driver, InProcess, Personality};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn family_registration_enrolls_devices_on_first_authentication(db: Db) {
    let w = world(&["thermo", "valve"], 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let auth = rt.block_on(cloud(db, dir.path(), &w.cloud_key, Limits::default()));
    let tenant = rt
        .block_on(auth.registry.store.ensure_tenant("acme"))
        .unwrap();
    rt.block_on(register_family(&w, &auth.registry, &tenant, "thermo"));
    assert_eq!(
        rt.block_on(auth.registry.store.device_count()).unwrap(),
        0,
        "zero rows per device beforehand"
    );
    let addr = start_server(&rt, auth.clone());

    for i in 0..2 {
        let c = connect(driver(&w, i), addr, quick()).unwrap();
        assert_eq!(c.session.prk_out().len(), 32);
    }
    assert_eq!(rt.block_on(auth.registry.store.device_count()).unwrap(), 2);
    // A returning device authenticates again (from the verified-chain cache).
    connect(driver(&w, 0), addr, quick()).unwrap();
    assert_eq!(rt.block_on(auth.registry.store.device_count()).unwrap(), 2);

    // Unknown CA: the valve family is not registered.
    refused_with(connect(driver(&w, 2), addr, quick()), "unknown CA");
    let audit = rt.block_on(auth.registry.store.audit_tail(50)).unwrap();
    assert!(audit
        .iter()
        .any(|(k, _, o, d)| k == "authenticate" && o == "refused" && d.contains("unknown CA")));
    assert_eq!(
        audit
            .iter()
            .filter(|(k, _, o, _)| k == "authenticate" && o == "ok")
            .count(),
        3
    );
    assert_eq!(audit.iter().filter(|(k, _, _, _)| k == "enroll").count(), 2);
}

fn suspension_revocation_and_the_most_specific_entry(db: Db) {
    let w = world(&["thermo"], 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let auth = rt.block_on(cloud(db, dir.path(), &w.cloud_key, Limits::default()));
    let tenant = rt
        .block_on(auth.registry.store.ensure_tenant("acme"))
        .unwrap();
    let fam_id = rt.block_on(register_family(&w, &auth.registry, &tenant, "thermo"));
    let addr = start_server(&rt, auth.clone());
    connect(driver(&w, 0), addr, quick()).unwrap();
    let store = &auth.registry.store;
    let dev = rt.block_on(async {
        let leaf = inkan_device::read_identity(&mut driver(&w, 0).lock().unwrap())
            .unwrap()
            .certificate;
        store
            .device_by_fingerprint(&inkan_cloud::registry::fingerprint(&leaf))
            .await
            .unwrap()
            .unwrap()
    });
    // Suspended inside an active family: out. Reinstated: in.
    rt.block_on(inkan_cloud::devices::act_as_owner(
        &auth,
        &dev.id,
        inkan_cloud::lifecycle::Action::Suspend,
        "test operator",
    ))
    .unwrap();
    refused_with(connect(driver(&w, 0), addr, quick()), "device suspended");
    rt.block_on(inkan_cloud::devices::act_as_owner(
        &auth,
        &dev.id,
        inkan_cloud::lifecycle::Action::Resume,
        "test operator",
    ))
    .unwrap();
    connect(driver(&w, 0), addr, quick()).unwrap();
    // Revoked: out, and its sessions are ended.
    rt.block_on(inkan_cloud::devices::act_as_owner(
        &auth,
        &dev.id,
        inkan_cloud::lifecycle::Action::Revoke,
        "test operator",
    ))
    .unwrap();
    refused_with(connect(driver(&w, 0), addr, quick()), "device revoked");
    // The other device of the family is unaffected...
    connect(driver(&w, 1), addr, quick()).unwrap();
    // ...until the family is revoked: then every device is out.
    rt.block_on(store.set_family_state(&fam_id, inkan_cloud::lifecycle::FamilyState::Revoked))
        .unwrap();
    refused_with(connect(driver(&w, 1), addr, quick()), "family revoked");
}

fn the_device_refuses_a_cloud_without_the_pinned_key(db: Db) {
    let w = world(&["thermo"], 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let impostor = SoftwareKey::generate(KeyCurve::P256);
    let auth = rt.block_on(cloud(db, dir.path(), &impostor, Limits::default()));
    let tenant = rt
        .block_on(auth.registry.store.ensure_tenant("acme"))
        .unwrap();
    rt.block_on(register_family(&w, &auth.registry, &tenant, "thermo"));
    let addr = start_server(&rt, auth);
    assert!(matches!(
        connect(driver(&w, 0), addr, quick()),
        Err(ConnectError::CloudKeyMismatch)
    ));
}

/// Drives EDHOC by hand with a chip: message_1 to `auth`, message_2
/// verified, message_3 built (not sent), to replay, splice or route it.
fn chip_exchange(
    w: &World,
    i: usize,
    auth: &App,
    rt: &tokio::runtime::Runtime,
) -> (inkan_proto::edhoc::InitiatorDone, Vec<u8>) {
    chip_exchange_with(w, i, auth, rt, false)
}

/// As [`chip_exchange`], identifying the device by x5t when `by_hash`.
fn chip_exchange_with(
    w: &World,
    i: usize,
    auth: &App,
    rt: &tokio::runtime::Runtime,
    by_hash: bool,
) -> (inkan_proto::edhoc::InitiatorDone, Vec<u8>) {
    let cert = inkan_device::read_identity(&mut driver(w, i).lock().unwrap())
        .unwrap()
        .certificate;
    chip_exchange_presenting(w, i, auth, rt, cert, by_hash)
}

/// As [`chip_exchange`], presenting `cert` (signed for the chip's key)
/// instead of the certificate stored in the chip.
fn chip_exchange_presenting(
    w: &World,
    i: usize,
    auth: &App,
    rt: &tokio::runtime::Runtime,
    cert: Vec<u8>,
    by_hash: bool,
) -> (inkan_proto::edhoc::InitiatorDone, Vec<u8>) {
    let d = driver(w, i);
    let eph = SeEphemeral::generate(d.clone()).unwrap();
    let (init, m1) = Initiator::start(
        Suite::P256Es256,
        ConnId(vec![0x01, 0x02]),
        &[],
        Box::new(eph),
    );
    let m2 = rt
        .block_on(auth.message_1(&m1, "test"))
        .map_err(|e| e.0)
        .unwrap();
    let p2 = init.process_message_2(&m2).unwrap();
    let IdCredKind::X5chain(c) = p2.id_cred_r().parse().unwrap() else {
        panic!("x5chain expected")
    };
    let point = inkan_pki::cert::IssuedCert::from_der(&c[0])
        .unwrap()
        .public_point();
    let v = p2.verify(&Credential::x509(&c[0], point)).unwrap();
    let id_cred = if by_hash {
        IdCred::x5t(&cert)
    } else {
        IdCred::x5chain(std::slice::from_ref(&cert))
    };
    v.prepare_message_3(
        &id_cred,
        &inkan_proto::cbor::bstr_vec(&cert),
        &[],
        &mut SeSigner::new(d),
    )
    .unwrap()
}

fn chip_message_3(
    w: &World,
    i: usize,
    auth: &App,
    rt: &tokio::runtime::Runtime,
) -> (ConnId, Vec<u8>) {
    let (done, m3) = chip_exchange(w, i, auth, rt);
    (done.c_r.clone(), m3)
}

fn replayed_spliced_expired_and_flooded_exchanges_are_refused(db: Db) {
    let w = world(&["thermo"], 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let auth = rt.block_on(cloud(
        db,
        dir.path(),
        &w.cloud_key,
        Limits {
            ttl_secs: 30,
            max_pending: 4,
            ..Limits::default()
        },
    ));
    let tenant = rt
        .block_on(auth.registry.store.ensure_tenant("acme"))
        .unwrap();
    rt.block_on(register_family(&w, &auth.registry, &tenant, "thermo"));

    // x5t names no device the cloud knows yet: refused, x5chain needed.
    let (done, m3) = chip_exchange_with(&w, 0, &auth, &rt, true);
    assert!(matches!(
        rt.block_on(auth.message_3(&done.c_r, &m3, "test")),
        Err(AuthError::Credential(m)) if m.contains("x5t names no known device")
    ));

    // A complete exchange, then its message_3 replayed.
    let (c_r, m3) = chip_message_3(&w, 0, &auth, &rt);
    rt.block_on(auth.message_3(&c_r, &m3, "test")).unwrap();
    assert!(matches!(
        rt.block_on(auth.message_3(&c_r, &m3, "test")),
        Err(AuthError::UnknownExchange)
    ));

    // message_3 of exchange A sent under exchange B's C_R.
    let (_, m3_a) = chip_message_3(&w, 0, &auth, &rt);
    let (c_r_b, _) = chip_message_3(&w, 0, &auth, &rt);
    assert!(matches!(
        rt.block_on(auth.message_3(&c_r_b, &m3_a, "test")),
        Err(AuthError::Edhoc(
            inkan_proto::edhoc::EdhocError::Decryption(3)
        ))
    ));

    // A known device may name its certificate by hash (x5t)...
    let (done, m3) = chip_exchange_with(&w, 0, &auth, &rt, true);
    rt.block_on(auth.message_3(&done.c_r, &m3, "test")).unwrap();

    // A flood of message_1 that never completes: capped.
    let mut refused = 0;
    for _ in 0..10 {
        let (_, m1) = Initiator::start(
            Suite::P256Es256,
            ConnId(vec![7]),
            &[],
            Box::new(inkan_proto::edhoc::crypto::SoftwareEphemeral::generate(
                Suite::P256Es256,
            )),
        );
        if let Err((AuthError::Busy, msg)) = rt.block_on(auth.message_1(&m1, "flood")) {
            assert!(inkan_proto::edhoc::parse_error_message(&msg).is_some());
            refused += 1;
        }
    }
    assert!(refused >= 6, "only {refused} refused");
    assert!(
        rt.block_on(auth.registry.store.pending_exchanges())
            .unwrap()
            <= 4
    );

    // An exchange that expired before message_3.
    let dir2 = tempfile::tempdir().unwrap();
    let short = rt.block_on(cloud(
        db,
        dir2.path(),
        &w.cloud_key,
        Limits {
            ttl_secs: -1,
            max_pending: 100,
            ..Limits::default()
        },
    ));
    let t2 = rt
        .block_on(short.registry.store.ensure_tenant("acme"))
        .unwrap();
    rt.block_on(register_family(&w, &short.registry, &t2, "thermo"));
    let (c_r, m3) = chip_message_3(&w, 0, &short, &rt);
    assert!(matches!(
        rt.block_on(short.message_3(&c_r, &m3, "test")),
        Err(AuthError::Expired)
    ));

    rt.block_on(auth.flush_refusals());
    let audit = rt.block_on(auth.registry.store.audit_tail(100)).unwrap();
    for reason in [
        "replayed or unknown message_3",
        "failed AEAD decryption",
        "too many pending exchanges",
    ] {
        assert!(
            audit
                .iter()
                .any(|(_, _, o, d)| o == "refused" && d.contains(reason)),
            "no audit entry for {reason}"
        );
    }
}

fn registration_needs_proof_of_possession_and_manifests_are_verified(db: Db) {
    let w = world(&["thermo"], 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let auth = rt.block_on(cloud(db, dir.path(), &w.cloud_key, Limits::default()));
    let reg = &auth.registry;
    let a = rt.block_on(reg.store.ensure_tenant("tenant-a")).unwrap();
    let b = rt.block_on(reg.store.ensure_tenant("tenant-b")).unwrap();
    let (_, fam) = w.factory.family("thermo").unwrap();
    let key = w.factory.signer("family-thermo").unwrap();
    // A proof made for tenant A does not register the family in tenant B.
    let sig_a = inkan_pki::signer::sign_raw(&*key, &pop_challenge(&a, &fam.der)).unwrap();
    assert!(matches!(
        rt.block_on(reg.register_family(&b, "thermo", &fam.der, &sig_a)),
        Err(RegistryError::ProofOfPossession)
    ));
    // A signature by another key.
    let other = SoftwareKey::generate(KeyCurve::P256);
    let bad = inkan_pki::signer::sign_raw(&other, &pop_challenge(&a, &fam.der)).unwrap();
    assert!(matches!(
        rt.block_on(reg.register_family(&a, "thermo", &fam.der, &bad)),
        Err(RegistryError::ProofOfPossession)
    ));
    let root = w.factory.root().unwrap();

    // Bulk import: the batch manifest, verified before anything is
    // written, and only into the tenant that owns (proved) the family.
    let p = Personalizer::open(
        &w.factory,
        "thermo",
        "thermo-1",
        &BatchConfig {
            family: "thermo".into(),
            count: 2,
            personality: Personality::A120,
        },
    )
    .unwrap();
    let report = p.finish().unwrap();
    let bytes = std::fs::read(&report.manifest).unwrap();
    let mut tampered = bytes.clone();
    let n = tampered.len();
    tampered[n / 2] ^= 1;
    assert!(matches!(
        rt.block_on(reg.import_manifest(&a, &tampered, &root.der)),
        Err(RegistryError::Manifest(_))
    ));
    // A manifest is public data: without the family registered with proof
    // of possession, importing it claims nothing.
    assert!(matches!(
        rt.block_on(reg.import_manifest(&a, &bytes, &root.der)),
        Err(RegistryError::UnprovenIssuer)
    ));
    assert_eq!(rt.block_on(reg.store.device_count()).unwrap(), 0);
    rt.block_on(register_family(&w, reg, &a, "thermo"));
    assert_eq!(
        rt.block_on(reg.store.device_count()).unwrap(),
        0,
        "nothing written from a tampered manifest"
    );
    assert_eq!(
        rt.block_on(reg.import_manifest(&a, &bytes, &root.der))
            .unwrap(),
        2
    );
    assert_eq!(rt.block_on(reg.store.device_count()).unwrap(), 2);
    // Importing it twice fails as a whole (one transaction), nothing duplicated.
    assert!(matches!(
        rt.block_on(reg.import_manifest(&a, &bytes, &root.der)),
        Err(RegistryError::Duplicate)
    ));
    assert_eq!(rt.block_on(reg.store.device_count()).unwrap(), 2);
    // A device certificate offered as a family is not a CA.
    let leaf = inkan_pki::manifest::verify(&bytes, &root, std::time::SystemTime::now())
        .unwrap()
        .entries[0]
        .certificate
        .to_vec();
    assert!(matches!(
        rt.block_on(reg.register_family(&a, "not-a-ca", &leaf, &sig_a)),
        Err(RegistryError::NotACa(_))
    ));
}

on_both_stores!(
    a_campaign_with_some_failing_devices_continues_below_the_threshold_and_stops_above,
    campaigns_roll_out_in_stages_and_stop_at_the_failure_threshold,
    firmware_downloads_blockwise_resumes_and_boots,
    signed_readings_are_kept_with_their_records,
    commands_reach_actuators_verified_by_their_chips,
    readings_flow_under_oscore_and_attacks_are_refused,
    suite_0_devices_use_x25519_and_ed25519_in_the_chip,
    revocations_reach_the_family_list_and_crls_revoke_unseen_devices,
    a_family_of_tenant_a_cannot_be_claimed_by_tenant_b,
    expired_not_yet_valid_and_wrong_eku_certificates_are_refused,
    coap_duplicates_and_malformed_requests,
    family_registration_enrolls_devices_on_first_authentication,
    suspension_revocation_and_the_most_specific_entry,
    the_device_refuses_a_cloud_without_the_pinned_key,
    replayed_spliced_expired_and_flooded_exchanges_are_refused,
    registration_needs_proof_of_possession_and_manifests_are_verified
);

fn coap_duplicates_and_malformed_requests(db: Db) {
    let w = world(&["thermo"], 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let auth = rt.block_on(cloud(db, dir.path(), &w.cloud_key, Limits::default()));
    let addr = start_server(&rt, auth.clone());
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(addr).unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let ask = |datagram: &[u8]| {
        udp.send(datagram).unwrap();
        let mut buf = vec![0u8; 8192];
        let n = udp.recv(&mut buf).unwrap();
        inkan_proto::coap::parse_response(&buf[..n]).unwrap()
    };
    // A confirmable message_1 retransmitted with the same message id gets
    // the same message_2, and only one exchange is created.
    let (_, m1) = Initiator::start(
        Suite::P256Es256,
        ConnId(vec![0x09]),
        &[],
        Box::new(inkan_proto::edhoc::crypto::SoftwareEphemeral::generate(
            Suite::P256Es256,
        )),
    );
    let req =
        inkan_proto::coap::request(0x1234, &[1, 2], inkan_proto::coap::message_1_payload(&m1))
            .unwrap();
    let first = ask(&req);
    let again = ask(&req);
    assert!(first.success);
    assert_eq!(
        first.payload, again.payload,
        "a duplicate must get the same message_2"
    );
    assert_eq!(
        rt.block_on(auth.registry.store.pending_exchanges())
            .unwrap(),
        1
    );
    // Malformed CBOR, an out-of-order message_3 (unknown C_R), another
    // method: each a 4.00 carrying an EDHOC error message.
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![0xF5, 0x00, 0x9f], "malformed"),
        (
            vec![0x41, 0x99, 0x58, 0x01, 0x00],
            "replayed or unknown message_3",
        ),
        (vec![0xF5, 0x05, 0x02], "unsupported method"),
    ];
    for (k, (payload, want)) in cases.into_iter().enumerate() {
        let rsp =
            ask(
                &inkan_proto::coap::request(0x2000 + u16::try_from(k).unwrap(), &[3], payload)
                    .unwrap(),
            );
        assert!(!rsp.success, "{want}");
        assert!(rsp.code.starts_with("4."), "{}", rsp.code);
        match inkan_proto::edhoc::parse_error_message(&rsp.payload) {
            Some(inkan_proto::edhoc::EdhocError::PeerError { detail, .. }) => {
                assert!(detail.contains(want), "{want}: {detail}")
            }
            other => panic!("{want}: no EDHOC error message: {other:?}"),
        }
    }
    // A datagram past the 4,096-byte limit (a message_1 with 5,000 bytes
    // of EAD): 4.13, nothing parsed, no exchange created.
    let mut big = inkan_proto::coap::request(0x3000, &[4], vec![0xF5, 0x00]).unwrap();
    big.extend(std::iter::repeat_n(0x41u8, 5000));
    let rsp = ask(&big);
    assert_eq!(rsp.code, "4.13");
    match inkan_proto::edhoc::parse_error_message(&rsp.payload) {
        Some(inkan_proto::edhoc::EdhocError::PeerError { detail, .. }) => {
            assert!(detail.contains("exceeds the limit"), "{detail}")
        }
        other => panic!("no EDHOC error message: {other:?}"),
    }
    assert_eq!(
        rt.block_on(auth.registry.store.pending_exchanges())
            .unwrap(),
        1
    );
}

/// Two replicas on one PostgreSQL: a device authenticates at either, an
/// exchange begun at one finishes at the other, and a revocation made at
/// one is enforced by the other on the next authentication.
#[test]
fn two_replicas_share_one_postgres() {
    let w = world(&["thermo"], 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = rt.block_on(db_url(Db::Postgres, dir.path()));
    let a = rt.block_on(cloud_at(&url, &w.cloud_key, Limits::default()));
    let b = rt.block_on(cloud_at(&url, &w.cloud_key, Limits::default()));
    let tenant = rt.block_on(a.registry.store.ensure_tenant("acme")).unwrap();
    rt.block_on(register_family(&w, &a.registry, &tenant, "thermo"));
    let (addr_a, addr_b) = (start_server(&rt, a.clone()), start_server(&rt, b.clone()));

    connect(driver(&w, 0), addr_a, quick()).unwrap();
    connect(driver(&w, 0), addr_b, quick()).unwrap();
    connect(driver(&w, 1), addr_b, quick()).unwrap();

    // message_1 at A, message_3 at B.
    let (done, m3) = chip_exchange(&w, 1, &a, &rt);
    let ok = rt
        .block_on(b.message_3(&done.c_r, &m3, "replica test"))
        .unwrap();
    done.process_message_4(&ok.message_4).unwrap();

    // Revoke at A; B refuses the very next authentication.
    let leaf = inkan_device::read_identity(&mut driver(&w, 0).lock().unwrap())
        .unwrap()
        .certificate;
    let row = rt
        .block_on(
            a.registry
                .store
                .device_by_fingerprint(&inkan_cloud::registry::fingerprint(&leaf)),
        )
        .unwrap()
        .unwrap();
    rt.block_on(inkan_cloud::devices::act_as_owner(
        &a,
        &row.id,
        inkan_cloud::lifecycle::Action::Revoke,
        "test operator",
    ))
    .unwrap();
    let revoked_at = std::time::Instant::now();
    // A, where the revocation was made, refuses at once.
    refused_with(connect(driver(&w, 0), addr_a, quick()), "device revoked");
    // B holds the device's verified chain in its cache; the revocation
    // reaches it through the shared epoch within a second.
    loop {
        match connect(driver(&w, 0), addr_b, quick()) {
            Err(ConnectError::Refused { detail, .. }) => {
                assert!(detail.contains("device revoked"), "{detail}");
                break;
            }
            Ok(_) => assert!(
                revoked_at.elapsed() < Duration::from_secs(1),
                "replica B still accepts a device revoked {:?} ago",
                revoked_at.elapsed()
            ),
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(revoked_at.elapsed() < Duration::from_secs(1));
    // The other device is unaffected at both.
    connect(driver(&w, 1), addr_a, quick()).unwrap();
    connect(driver(&w, 1), addr_b, quick()).unwrap();
}

/// Tenant A registered the family (and proved it holds its key). Tenant B
/// tries every way to claim the family or its devices: none works, each
/// refusal is audited, and the devices authenticate as tenant A's.
fn a_family_of_tenant_a_cannot_be_claimed_by_tenant_b(db: Db) {
    let w = world(&["thermo"], 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let auth = rt.block_on(cloud(db, dir.path(), &w.cloud_key, Limits::default()));
    let reg = &auth.registry;
    let a = rt.block_on(reg.store.ensure_tenant("tenant-a")).unwrap();
    let b = rt.block_on(reg.store.ensure_tenant("tenant-b")).unwrap();
    rt.block_on(register_family(&w, reg, &a, "thermo"));
    let (_, fam) = w.factory.family("thermo").unwrap();
    let key = w.factory.signer("family-thermo").unwrap();

    // The same family certificate, even with a valid proof for B.
    let sig_b = inkan_pki::signer::sign_raw(&*key, &pop_challenge(&b, &fam.der)).unwrap();
    assert!(matches!(
        rt.block_on(reg.register_family(&b, "mine", &fam.der, &sig_b)),
        Err(RegistryError::Duplicate)
    ));
    // One of its devices, registered individually by B.
    let leaf = inkan_device::read_identity(&mut driver(&w, 0).lock().unwrap())
        .unwrap()
        .certificate;
    assert!(matches!(
        rt.block_on(reg.register_device(&b, &leaf)),
        Err(RegistryError::ForeignFamily)
    ));
    // The batch manifest of the family, imported by B.
    let p = Personalizer::open(
        &w.factory,
        "thermo",
        "thermo-1",
        &BatchConfig {
            family: "thermo".into(),
            count: 2,
            personality: Personality::A120,
        },
    )
    .unwrap();
    let manifest = std::fs::read(p.finish().unwrap().manifest).unwrap();
    let root = w.factory.root().unwrap();
    assert!(matches!(
        rt.block_on(reg.import_manifest(&b, &manifest, &root.der)),
        Err(RegistryError::ForeignFamily)
    ));
    assert_eq!(rt.block_on(reg.store.device_count()).unwrap(), 0);

    // Before anyone registered the family, its devices' certificates and
    // manifest are public data: they claim nothing.
    let dir2 = tempfile::tempdir().unwrap();
    let early = rt.block_on(cloud(db, dir2.path(), &w.cloud_key, Limits::default()));
    let (a2, b2) = rt.block_on(async {
        (
            early
                .registry
                .store
                .ensure_tenant("tenant-a")
                .await
                .unwrap(),
            early
                .registry
                .store
                .ensure_tenant("tenant-b")
                .await
                .unwrap(),
        )
    });
    assert!(matches!(
        rt.block_on(early.registry.register_device(&b2, &leaf)),
        Err(RegistryError::UnprovenIssuer)
    ));
    assert!(matches!(
        rt.block_on(early.registry.import_manifest(&b2, &manifest, &root.der)),
        Err(RegistryError::UnprovenIssuer)
    ));
    assert_eq!(rt.block_on(early.registry.store.device_count()).unwrap(), 0);
    // A claim B made from public data before claims needed proof (a row
    // from an older version): when A proves it holds the family key, A
    // reclaims the device; it authenticates as A's, and B sees it no more.
    let leaf_cert = inkan_pki::IssuedCert::from_der(&leaf).unwrap();
    rt.block_on(async {
        let mut conn = early.registry.store.pool.acquire().await.unwrap();
        inkan_cloud::Store::insert_device(
            &mut conn,
            inkan_cloud::store::Entry {
                tenant: &b2,
                family_id: None,
                state: inkan_cloud::lifecycle::DeviceState::Registered,
                enrolled_by: "individual",
                proof: inkan_cloud::lifecycle::Proof::None,
                actor: "older version",
            },
            &inkan_cloud::store::NewDevice {
                id: leaf_cert.ueid().unwrap().to_hex(),
                serial: &leaf_cert.subject_serial_number().unwrap(),
                certificate: &leaf,
                fingerprint: inkan_cloud::registry::fingerprint(&leaf),
                public_key: &leaf_cert.public_point(),
            },
        )
        .await
        .unwrap();
    });
    rt.block_on(register_family(&w, &early.registry, &a2, "thermo"));
    let addr2 = start_server(&rt, early.clone());
    let held = rt
        .block_on(
            early
                .registry
                .store
                .device(&leaf_cert.ueid().unwrap().to_hex()),
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        held.tenant_id, a2,
        "the family's owner reclaimed the device"
    );
    connect(driver(&w, 0), addr2, quick()).unwrap();
    assert!(rt
        .block_on(early.registry.store.devices_in(&b2, 100, 0))
        .unwrap()
        .is_empty());
    // Its sibling, never claimed by B, enrolls in A.
    connect(driver(&w, 1), addr2, quick()).unwrap();
    let audit2 = rt.block_on(early.registry.store.audit_tail(100)).unwrap();
    assert!(audit2
        .iter()
        .any(|(k, _, o, d)| k == "reclaim" && o == "ok" && d.contains("1 devices")));

    // On the first cloud, the devices authenticate as tenant A's.
    let addr = start_server(&rt, auth.clone());
    connect(driver(&w, 0), addr, quick()).unwrap();
    let row = rt
        .block_on(
            reg.store
                .device_by_fingerprint(&inkan_cloud::registry::fingerprint(&leaf)),
        )
        .unwrap()
        .unwrap();
    assert_eq!(row.tenant_id, a);

    let audit = rt.block_on(reg.store.audit_tail(100)).unwrap();
    for (kind, reason) in [
        ("register-family", "already registered"),
        ("register-device", "another tenant"),
        ("import-manifest", "another tenant"),
    ] {
        assert!(
            audit
                .iter()
                .any(|(k, _, o, d)| k == kind && o == "refused" && d.contains(reason)),
            "no audit entry for {kind}: {reason}"
        );
    }
}

/// Re-signs `cert_der` with the family key after `edit` changed its TBS:
/// a certificate the family really issued, but with a defect.
fn reissued(
    w: &World,
    cert_der: &[u8],
    edit: impl FnOnce(&mut x509_cert::TbsCertificate),
) -> Vec<u8> {
    use der::{Decode, Encode};
    let mut cert = x509_cert::Certificate::from_der(cert_der).unwrap();
    edit(&mut cert.tbs_certificate);
    let key = w.factory.signer("family-thermo").unwrap();
    let tbs = cert.tbs_certificate.to_der().unwrap();
    let sig = inkan_pki::signer::sign_der(&*key, &tbs).unwrap();
    cert.signature = der::asn1::BitString::from_bytes(&sig).unwrap();
    cert.to_der().unwrap()
}

fn utc(t: std::time::SystemTime) -> x509_cert::time::Time {
    x509_cert::time::Time::UtcTime(der::asn1::UtcTime::from_system_time(t).unwrap())
}

/// Certificates the family signed for the chip's own key, but expired, not
/// yet valid, or without the clientAuth EKU: the chip's signature is
/// genuine, the certificate is not acceptable, and the cloud says why. And
/// a cloned certificate (another device's, valid) with this chip's
/// signature.
fn expired_not_yet_valid_and_wrong_eku_certificates_are_refused(db: Db) {
    use std::time::{Duration, SystemTime};
    let w = world(&["thermo"], 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let auth = rt.block_on(cloud(db, dir.path(), &w.cloud_key, Limits::default()));
    let tenant = rt
        .block_on(auth.registry.store.ensure_tenant("acme"))
        .unwrap();
    rt.block_on(register_family(&w, &auth.registry, &tenant, "thermo"));
    let genuine = inkan_device::read_identity(&mut driver(&w, 0).lock().unwrap())
        .unwrap()
        .certificate;
    let day = Duration::from_secs(86_400);
    let now = SystemTime::now();
    let expired = reissued(&w, &genuine, |t| {
        t.validity.not_before = utc(now - 30 * day);
        t.validity.not_after = utc(now - day);
    });
    let not_yet = reissued(&w, &genuine, |t| {
        t.validity.not_before = utc(now + day);
        t.validity.not_after = utc(now + 30 * day);
    });
    let server_only = reissued(&w, &genuine, |t| {
        let eku_oid = der::oid::ObjectIdentifier::new_unwrap("2.5.29.37");
        let server_auth = der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
        for e in t.extensions.as_mut().unwrap() {
            if e.extn_id == eku_oid {
                let v =
                    der::Encode::to_der(&x509_cert::ext::pkix::ExtendedKeyUsage(vec![server_auth]))
                        .unwrap();
                e.extn_value = der::asn1::OctetString::new(v).unwrap();
            }
        }
    });
    // The edited certificate still carries a good family signature.
    let fam = w.factory.family("thermo").unwrap().1;
    for c in [&expired, &not_yet, &server_only] {
        inkan_pki::cert::verify_issued_by(&inkan_pki::cert::IssuedCert::from_der(c).unwrap(), &fam)
            .unwrap();
    }
    for (cert, want) in [
        (expired, inkan_pki::ValidationError::Expired),
        (not_yet, inkan_pki::ValidationError::NotYetValid),
        (server_only, inkan_pki::ValidationError::WrongEku),
    ] {
        let (done, m3) = chip_exchange_presenting(&w, 0, &auth, &rt, cert, false);
        match rt.block_on(auth.message_3(&done.c_r, &m3, "test")) {
            Err(AuthError::Registry(RegistryError::Chain(e))) => assert_eq!(e, want),
            other => panic!("expected {want:?}, got {other:?}"),
        }
    }
    // A cloned certificate: device 1's genuine certificate presented by
    // chip 0, which can only sign with its own key.
    let (done, m3) = chip_exchange_presenting(&w, 0, &auth, &rt, leaf_of(&w, 1).der, false);
    assert!(matches!(
        rt.block_on(auth.message_3(&done.c_r, &m3, "test")),
        Err(AuthError::Edhoc(
            inkan_proto::edhoc::EdhocError::BadSignature(3)
        ))
    ));
    // The genuine certificate of the same chip is accepted.
    let (done, m3) = chip_exchange_presenting(&w, 0, &auth, &rt, genuine, false);
    rt.block_on(auth.message_3(&done.c_r, &m3, "test")).unwrap();
    let audit = rt.block_on(auth.registry.store.audit_tail(50)).unwrap();
    for reason in [
        "expired",
        "not yet valid",
        "extended key usage",
        "signature_3 does not verify",
    ] {
        assert!(
            audit.iter().any(|(k, _, o, d)| k == "authenticate"
                && o == "refused"
                && d.to_lowercase().contains(&reason.to_lowercase())),
            "no audit entry for {reason}"
        );
    }
}

/// A revocation in the cloud enters the family's revocation list; a CRL
/// the family CA signed revokes the devices it lists, even one the cloud
/// has never seen; a stale, foreign or tampered CRL is refused.
fn revocations_reach_the_family_list_and_crls_revoke_unseen_devices(db: Db) {
    let w = world(&["thermo", "valve"], 3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let auth = rt.block_on(cloud(db, dir.path(), &w.cloud_key, Limits::default()));
    let reg = &auth.registry;
    let store = &reg.store;
    let tenant = rt.block_on(store.ensure_tenant("acme")).unwrap();
    let fam = rt.block_on(register_family(&w, reg, &tenant, "thermo"));
    let addr = start_server(&rt, auth.clone());
    let leaves: Vec<_> = (0..3).map(|i| leaf_of(&w, i)).collect();

    // Revoked by an operator: on the family's list, with its chip serial.
    connect(driver(&w, 0), addr, quick()).unwrap();
    let row0 = rt
        .block_on(store.device_by_fingerprint(&inkan_cloud::registry::fingerprint(&leaves[0].der)))
        .unwrap()
        .unwrap();
    rt.block_on(inkan_cloud::devices::act_as_owner(
        &auth,
        &row0.id,
        inkan_cloud::lifecycle::Action::Revoke,
        "test operator",
    ))
    .unwrap();
    let list = rt.block_on(store.revocations(&fam)).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].cert_serial, leaves[0].serial_hex());
    assert_eq!(list[0].device_serial.as_deref(), Some(row0.serial.as_str()));
    assert_eq!(list[0].source, "operator");

    // Device 2 enrolls; device 1 has never been seen.
    connect(driver(&w, 2), addr, quick()).unwrap();
    let before = rt.block_on(store.device_count()).unwrap();
    // The factory revokes device 1: its CRL reaches the cloud.
    let crl1 = w
        .factory
        .revoke("thermo", &leaves[1].serial_hex())
        .unwrap()
        .0;
    let got = rt
        .block_on(reg.import_crl(&tenant, &fam, &crl1.der))
        .unwrap();
    let n1 = got.crl_number;
    assert!(n1 >= 1);
    assert_eq!((got.listed, got.devices_revoked), (1, 0));
    refused_with(connect(driver(&w, 1), addr, quick()), "device revoked");
    assert_eq!(
        rt.block_on(store.device_count()).unwrap(),
        before,
        "a revoked device is not enrolled"
    );
    // The factory then revokes device 2, which holds a session.
    let crl2 = w
        .factory
        .revoke("thermo", &leaves[2].serial_hex())
        .unwrap()
        .0;
    let got = rt
        .block_on(reg.import_crl(&tenant, &fam, &crl2.der))
        .unwrap();
    assert_eq!(
        (got.crl_number, got.listed, got.devices_revoked),
        (n1 + 1, 2, 1)
    );
    refused_with(connect(driver(&w, 2), addr, quick()), "device revoked");
    let list = rt.block_on(store.revocations(&fam)).unwrap();
    assert_eq!(list.len(), 3, "{list:?}");
    assert!(list
        .iter()
        .any(|r| r.cert_serial == leaves[2].serial_hex() && r.source == format!("crl {}", n1 + 1)));

    // Refused: the older CRL replayed, another family's CRL, a tampered one.
    assert!(matches!(
        rt.block_on(reg.import_crl(&tenant, &fam, &crl1.der)),
        Err(RegistryError::Crl(m)) if m.contains("stale")
    ));
    let valve_leaf = leaf_of(&w, 3);
    let foreign = w
        .factory
        .revoke("valve", &valve_leaf.serial_hex())
        .unwrap()
        .0;
    assert!(matches!(
        rt.block_on(reg.import_crl(&tenant, &fam, &foreign.der)),
        Err(RegistryError::Crl(m)) if m.contains("another issuer")
    ));
    let mut tampered = w
        .factory
        .revoke("thermo", &leaves[2].serial_hex())
        .unwrap()
        .0
        .der;
    let n = tampered.len();
    tampered[n - 10] ^= 0x01;
    assert!(matches!(
        rt.block_on(reg.import_crl(&tenant, &fam, &tampered)),
        Err(RegistryError::Crl(_))
    ));
    // Another tenant cannot read or feed this family's list.
    let other = rt.block_on(store.ensure_tenant("other")).unwrap();
    assert!(matches!(
        rt.block_on(reg.import_crl(&other, &fam, &crl2.der)),
        Err(RegistryError::UnknownFamily)
    ));
    assert_eq!(rt.block_on(store.crl_number(&fam)).unwrap(), Some(n1 + 1));

    let audit = rt.block_on(store.audit_tail(100)).unwrap();
    assert!(audit.iter().any(|(k, _, o, d)| k == "import-crl"
        && o == "ok"
        && d.contains(&format!("CRL {}", n1 + 1))));
    assert!(audit
        .iter()
        .any(|(k, _, o, d)| k == "import-crl" && o == "refused" && d.contains("stale")));
}

/// EDHOC suite 0 through the A120's X25519 and Ed25519 keys: the device of
/// an Ed25519 family authenticates once the cloud knows its certificate
/// (manifest), names it by x5t, and checks the cloud's Ed25519 certificate
/// against the pinned P-256 key; an impostor cloud and an unknown device
/// are refused; an A110 cannot join such a family.
fn suite_0_devices_use_x25519_and_ed25519_in_the_chip(db: Db) {
    let w = world_with(&["lamp"], 2, true);
    let rt = tokio::runtime::Runtime::new().unwrap();
    {
        let d = driver(&w, 0);
        let mut d = d.lock().unwrap();
        assert_eq!(d.slot_curve(0).unwrap(), inkan_se::Curve::Ed25519);
    }
    assert!(leaf_of(&w, 0).is_ed25519());
    let dir = tempfile::tempdir().unwrap();
    let auth = rt.block_on(cloud(db, dir.path(), &w.cloud_key, Limits::default()));
    let reg = &auth.registry;
    let tenant = rt.block_on(reg.store.ensure_tenant("acme")).unwrap();
    rt.block_on(register_family(&w, reg, &tenant, "lamp"));
    let addr = start_server(&rt, auth.clone());

    // Registered as a family only: the cloud cannot resolve the x5t.
    refused_with(
        connect(driver(&w, 0), addr, quick()),
        "x5t names no known device",
    );
    // The batch manifest makes the certificates known.
    let p = Personalizer::open(
        &w.factory,
        "lamp",
        "lamp-1",
        &BatchConfig {
            family: "lamp".into(),
            count: 2,
            personality: Personality::A120,
        },
    )
    .unwrap();
    let manifest = std::fs::read(p.finish().unwrap().manifest).unwrap();
    let root = w.factory.root().unwrap();
    assert_eq!(
        rt.block_on(reg.import_manifest(&tenant, &manifest, &root.der))
            .unwrap(),
        2
    );
    for i in 0..2 {
        let c = connect(driver(&w, i), addr, quick()).unwrap();
        assert_eq!(c.session.prk_out().len(), 32);
    }
    // (connect checked message_4: both ends hold the same session keys.)
    let audit = rt.block_on(reg.store.audit_tail(50)).unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|(k, _, o, _)| k == "authenticate" && o == "ok")
            .count(),
        2
    );

    // A cloud with another key: its Ed25519 certificate is not signed by
    // the pinned key, and the device refuses it.
    let dir2 = tempfile::tempdir().unwrap();
    let impostor = SoftwareKey::generate(KeyCurve::P256);
    let fake = rt.block_on(cloud(db, dir2.path(), &impostor, Limits::default()));
    let fake_addr = start_server(&rt, fake);
    assert!(matches!(
        connect(driver(&w, 0), fake_addr, quick()),
        Err(ConnectError::CloudKeyMismatch)
    ));

    // An A110 has no Ed25519 keys: it cannot join the family.
    let cfg = BatchConfig {
        family: "lamp".into(),
        count: 1,
        personality: Personality::A110,
    };
    let mut p = Personalizer::open(&w.factory, "lamp", "lamp-old", &cfg).unwrap();
    let path = inkan_se::chip::blank_chips(&p.dir().join("chips"), 1, Personality::A110)
        .unwrap()
        .remove(0);
    let mut d = Driver::new(InProcess::new(Chip::open(&path).unwrap())).unwrap();
    assert!(matches!(
        p.personalize(&mut d, Some(&path)),
        Err(inkan_factory::FactoryError::ChipLacksKey { key: "Ed25519", .. })
    ));
}

/// Sends raw bytes to the service and parses the answer.
fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> coap_lite::Packet {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(addr).unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    udp.send(bytes).unwrap();
    let mut buf = vec![0u8; 8192];
    let n = udp.recv(&mut buf).unwrap();
    coap_lite::Packet::from_bytes(&buf[..n]).unwrap()
}

fn batch(n: usize, t0: u64) -> Vec<inkan_proto::telemetry::Reading> {
    (0..n)
        .map(|i| inkan_proto::telemetry::Reading {
            time_ms: t0 + i as u64,
            channel: u32::try_from(i % 4).unwrap(),
            value: vec![u8::try_from(i % 251).unwrap(); 64],
        })
        .collect()
}

fn stored(auth: &App, rt: &tokio::runtime::Runtime, tenant: &str) -> usize {
    rt.block_on(
        auth.registry
            .store
            .readings(tenant, None, None, 0, i64::MAX, None, 100_000),
    )
    .unwrap()
    .len()
}

/// Readings travel under OSCORE keyed from EDHOC and are stored before the
/// acknowledgement; a flipped bit, a replay, another device's context, an
/// ended session and an expired one are each refused with their reason,
/// audited, and store nothing.
fn readings_flow_under_oscore_and_attacks_are_refused(db: Db) {
    use inkan_device::{Uplink, UplinkError};
    use inkan_proto::oscore::{ContextParams, SecurityContext};
    let w = world(&["thermo"], 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let auth = rt.block_on(cloud(db, dir.path(), &w.cloud_key, Limits::default()));
    let tenant = rt
        .block_on(auth.registry.store.ensure_tenant("acme"))
        .unwrap();
    rt.block_on(register_family(&w, &auth.registry, &tenant, "thermo"));
    let addr = start_server(&rt, auth.clone());

    let c0 = connect(driver(&w, 0), addr, quick()).unwrap();
    let c1 = connect(driver(&w, 1), addr, quick()).unwrap();
    let mut up0 = Uplink::new(&c0, addr, quick()).unwrap();
    for k in 0..3 {
        assert_eq!(up0.send(&batch(100, 1_000 * k)).unwrap(), 100);
    }
    assert_eq!(stored(&auth, &rt, &tenant), 300);
    let rows = rt
        .block_on(
            auth.registry
                .store
                .readings(&tenant, None, None, 0, i64::MAX, None, 10),
        )
        .unwrap();
    assert_eq!(rows[0].value, vec![0u8; 64]);
    assert_eq!(rows[0].serial, c0.serial);

    // A second context on the same session keys, far ahead in sequence
    // numbers, to craft requests by hand.
    let mut ctx0 = SecurityContext::derive(
        &ContextParams::from_edhoc(&c0.session, true, &c0.c_i, &c0.c_r).unwrap(),
    )
    .unwrap();
    ctx0.set_sender_sequence(1_000);
    // A flipped bit in the ciphertext.
    let (p, _) = ctx0
        .protect_request(&telemetry_request(0x100, &[1, 2, 3, 4], &batch(5, 0)))
        .unwrap();
    let mut bytes = p.to_bytes().unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x10;
    let rsp = raw_exchange(addr, &bytes);
    assert_eq!(rsp.header.code.to_string(), "4.01");
    assert!(String::from_utf8_lossy(&rsp.payload).contains("decryption failed"));
    // A valid request, then the same bytes again (new message id, so it
    // is not a CoAP duplicate): the second is a replay.
    let (p, _) = ctx0
        .protect_request(&telemetry_request(0x101, &[1, 2, 3, 4], &batch(5, 0)))
        .unwrap();
    let rsp = raw_exchange(addr, &p.to_bytes().unwrap());
    assert_eq!(rsp.header.code.to_string(), "2.04");
    assert_eq!(stored(&auth, &rt, &tenant), 305);
    let mut again = p.clone();
    again.header.message_id = 0x102;
    let rsp = raw_exchange(addr, &again.to_bytes().unwrap());
    assert_eq!(rsp.header.code.to_string(), "4.01");
    assert!(String::from_utf8_lossy(&rsp.payload).contains("replayed"));
    // Under device 0's keys but naming device 1's session.
    let (mut p, _) = ctx0
        .protect_request(&telemetry_request(0x103, &[1, 2, 3, 4], &batch(5, 0)))
        .unwrap();
    p.clear_option(coap_lite::CoapOption::Oscore);
    let mut opt = vec![0x0A, 0x03, 0xEA];
    opt.extend_from_slice(&c1.c_r.0);
    p.add_option(coap_lite::CoapOption::Oscore, opt);
    let rsp = raw_exchange(addr, &p.to_bytes().unwrap());
    assert_eq!(rsp.header.code.to_string(), "4.01");
    assert!(String::from_utf8_lossy(&rsp.payload).contains("decryption failed"));
    // A kid no session has.
    let mut p = p.clone();
    p.clear_option(coap_lite::CoapOption::Oscore);
    p.add_option(coap_lite::CoapOption::Oscore, vec![0x09, 0x07, 0xEE]);
    let rsp = raw_exchange(addr, &p.to_bytes().unwrap());
    assert!(String::from_utf8_lossy(&rsp.payload).contains("unknown kid"));
    assert_eq!(
        stored(&auth, &rt, &tenant),
        305,
        "nothing stored by refusals"
    );

    // The operator API pages through them, exports JSON lines and CSV, and
    // shows another tenant nothing.
    let api = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(inkan_cloud::api::serve(l, auth.clone()));
        base
    });
    let token = rt
        .block_on(inkan_cloud::api::create_token(
            &auth.registry.store,
            &tenant,
            inkan_cloud::api::Role::Viewer,
        ))
        .unwrap();
    let get = |q: &str, token: &str| {
        ureq::get(&format!("{api}/v1/readings?{q}"))
            .set("Authorization", &format!("Bearer {token}"))
            .call()
            .unwrap()
    };
    let mut seen = 0;
    let mut pages = 0;
    let mut cursor = String::new();
    loop {
        let q = if cursor.is_empty() {
            "limit=100".to_string()
        } else {
            format!("limit=100&cursor={cursor}")
        };
        let page: inkan_cloud::api::ReadingsPage = get(&q, &token).into_json().unwrap();
        seen += page.readings.len();
        pages += 1;
        match page.next {
            Some(n) => cursor = n,
            None => break,
        }
    }
    assert_eq!((seen, pages), (305, 4));
    let csv = get("format=csv&limit=10000", &token).into_string().unwrap();
    assert_eq!(csv.lines().count(), 306);
    assert!(csv.starts_with("device,serial,time_ms,channel,value_hex,received"));
    let dev0 = rows[0].key.device_id.clone();
    let jsonl = get(
        &format!("format=jsonl&device={dev0}&from=1000&to=2000"),
        &token,
    )
    .into_string()
    .unwrap();
    assert_eq!(jsonl.lines().count(), 100);
    let other = rt
        .block_on(auth.registry.store.ensure_tenant("other"))
        .unwrap();
    let other_token = rt
        .block_on(inkan_cloud::api::create_token(
            &auth.registry.store,
            &other,
            inkan_cloud::api::Role::Viewer,
        ))
        .unwrap();
    let page: inkan_cloud::api::ReadingsPage = get("", &other_token).into_json().unwrap();
    assert!(page.readings.is_empty());

    // Device 1 is revoked: its session ends.
    let mut up1 = Uplink::new(&c1, addr, quick()).unwrap();
    assert_eq!(up1.send(&batch(1, 0)).unwrap(), 1);
    let leaf1 = leaf_of(&w, 1);
    let row1 = rt
        .block_on(
            auth.registry
                .store
                .device_by_fingerprint(&inkan_cloud::registry::fingerprint(&leaf1.der)),
        )
        .unwrap()
        .unwrap();
    rt.block_on(inkan_cloud::devices::act_as_owner(
        &auth,
        &row1.id,
        inkan_cloud::lifecycle::Action::Revoke,
        "test operator",
    ))
    .unwrap();
    match up1.send(&batch(1, 0)) {
        Err(UplinkError::Refused { code, detail }) => {
            assert_eq!(code, "4.01");
            assert!(detail.contains("session ended"), "{detail}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A session past its lifetime.
    let dir2 = tempfile::tempdir().unwrap();
    let short = rt.block_on(cloud(
        db,
        dir2.path(),
        &w.cloud_key,
        Limits {
            session_ttl_secs: -1,
            ..Limits::default()
        },
    ));
    let t2 = rt
        .block_on(short.registry.store.ensure_tenant("acme"))
        .unwrap();
    rt.block_on(register_family(&w, &short.registry, &t2, "thermo"));
    let addr2 = start_server(&rt, short.clone());
    let c = connect(driver(&w, 0), addr2, quick()).unwrap();
    match Uplink::new(&c, addr2, quick()).unwrap().send(&batch(1, 0)) {
        Err(UplinkError::Refused { detail, .. }) => {
            assert!(detail.contains("session expired"), "{detail}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Refusals of requests that did not verify are counted and written per
    // interval (the endpoint flushes every 10 s): flush now.
    rt.block_on(auth.flush_refusals());
    let audit = rt.block_on(auth.registry.store.audit_tail(100)).unwrap();
    for reason in [
        "decryption failed",
        "replayed",
        "unknown kid",
        "session ended",
    ] {
        assert!(
            audit
                .iter()
                .any(|(k, _, o, d)| k == "oscore" && o == "refused" && d.contains(reason)),
            "no audit entry for {reason}"
        );
    }
}

/// OSCORE interop with an implementation nobody here wrote: aiocoap,
/// given a security context exported from a device's EDHOC session,
/// protects telemetry the cloud accepts (and aiocoap verifies the
/// protected answer), while its tampered copy is refused. The Python
/// interpreter of a venv with aiocoap is `INKAN_AIOCOAP_PYTHON`
/// (scripts/test.sh installs it).
#[test]
fn aiocoap_oscore_interop() {
    let python = std::env::var("INKAN_AIOCOAP_PYTHON").expect(
        "INKAN_AIOCOAP_PYTHON is not set: run scripts/test.sh, which installs aiocoap in .venv",
    );
    let w = world(&["thermo"], 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let auth = rt.block_on(cloud(
        Db::Sqlite,
        dir.path(),
        &w.cloud_key,
        Limits::default(),
    ));
    let tenant = rt
        .block_on(auth.registry.store.ensure_tenant("acme"))
        .unwrap();
    rt.block_on(register_family(&w, &auth.registry, &tenant, "thermo"));
    let addr = start_server(&rt, auth.clone());
    let c = connect(driver(&w, 0), addr, quick()).unwrap();
    // The device's side of the context, in aiocoap's settings.json form.
    let p =
        inkan_proto::oscore::ContextParams::from_edhoc(&c.session, true, &c.c_i, &c.c_r).unwrap();
    let ctxdir = dir.path().join("aiocoap-context");
    std::fs::create_dir(&ctxdir).unwrap();
    std::fs::write(
        ctxdir.join("settings.json"),
        serde_json::json!({
            "sender-id_hex": hex::encode(&p.sender_id),
            "recipient-id_hex": hex::encode(&p.recipient_id),
            "secret_hex": hex::encode(&*p.master_secret),
            "salt_hex": hex::encode(&p.master_salt),
            "algorithm": "AES-CCM-16-64-128",
            "kdf-hashfun": "sha256",
        })
        .to_string(),
    )
    .unwrap();
    let batch = inkan_proto::telemetry::encode_batch(&batch(3, 5_000));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/oscore_interop.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(&ctxdir)
        .arg("127.0.0.1")
        .arg(addr.port().to_string())
        .arg(hex::encode(&batch))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Accepted, answered under OSCORE, the answer verified by aiocoap:
    // 2.04 carrying the count (CBOR 3).
    assert_eq!(r["valid"]["code"], "2.04", "{r}");
    assert_eq!(r["valid"]["inner_code"], "2.04", "{r}");
    assert_eq!(r["valid"]["inner_payload_hex"], "03", "{r}");
    // The tampered copy: 4.01, unprotected, with the reason.
    assert_eq!(r["tampered"]["code"], "4.01", "{r}");
    assert!(
        r["tampered"]["diagnostic"]
            .as_str()
            .unwrap()
            .contains("decryption failed"),
        "{r}"
    );
    let rows = rt
        .block_on(
            auth.registry
                .store
                .readings(&tenant, None, None, 0, i64::MAX, None, 100),
        )
        .unwrap();
    assert_eq!(rows.len(), 3, "only the genuine request stored");
    assert_eq!(rows[0].key.time, 5_000);
}

/// Commands signed with the command key, delivered over OSCORE, verified
/// by the chip against the key pinned in zone 2, run at most once; every
/// way a command can be wrong is refused before anything runs, with its
/// reason recorded; the command key is rotated by a command signed with
/// the old one.
fn commands_reach_actuators_verified_by_their_chips(db: Db) {
    use inkan_device::{poll_and_run, Executed, Polled, Uplink};
    use inkan_proto::command::{Command, CommandError};
    let w = world(&["thermo"], 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = rt.block_on(db_url(db, dir.path()));
    let k1 = SoftwareKey::load(
        &w.factory.dir().join("keys/dev-cloud-command.key.pem"),
        b"pw",
    )
    .unwrap();
    let service = |key: SoftwareKey, previous: Option<SoftwareKey>| {
        let store = rt.block_on(Store::open(&url)).unwrap();
        let mut a = App::new(
            Registry::new(store),
            identity(&w.cloud_key),
            Limits::default(),
        )
        .with_command_key(Box::new(key));
        if let Some(p) = previous {
            a = a.with_previous_command_key(Box::new(p));
        }
        Arc::new(a)
    };
    let auth = service(k1.clone(), None);
    let tenant = rt
        .block_on(auth.registry.store.ensure_tenant("acme"))
        .unwrap();
    rt.block_on(register_family(&w, &auth.registry, &tenant, "thermo"));
    let addr = start_server(&rt, auth.clone());
    let (d0, d1) = (driver(&w, 0), driver(&w, 1));
    let c0 = connect(d0.clone(), addr, quick()).unwrap();
    let c1 = connect(d1.clone(), addr, quick()).unwrap();
    let mut up0 = Uplink::new(&c0, addr, quick()).unwrap();
    let mut up1 = Uplink::new(&c1, addr, quick()).unwrap();
    let store = &auth.registry.store;
    let row = |i: usize| {
        rt.block_on(
            store.device_by_fingerprint(&inkan_cloud::registry::fingerprint(&leaf_of(&w, i).der)),
        )
        .unwrap()
        .unwrap()
    };
    let (dev0, dev1) = (row(0), row(1));
    let ran = std::cell::RefCell::new(Vec::<String>::new());
    let mut actuator = |c: &Command| -> Result<String, String> {
        ran.borrow_mut().push(format!("{}:{}", c.device, c.action));
        if c.action == "jam" {
            Err("valve jammed".into())
        } else {
            Ok(format!("{} done", c.action))
        }
    };
    let mut ex0 = Executed::open(Some(&dir.path().join("executed-0"))).unwrap();
    let mut ex1 = Executed::open(None).unwrap();
    let state_of = |id: &str| {
        rt.block_on(store.commands(&tenant, None, 1000))
            .unwrap()
            .into_iter()
            .find(|c| c.id == id)
            .unwrap()
    };

    // One device: queued -> delivered -> succeeded.
    let ids = rt
        .block_on(inkan_cloud::commands::issue(
            &auth,
            &tenant,
            std::slice::from_ref(&dev0),
            "open",
            b"",
            300,
        ))
        .unwrap();
    assert_eq!(state_of(&ids[0].0).state.as_str(), "queued");
    match poll_and_run(&mut up0, &d0, &mut ex0, &mut actuator).unwrap() {
        Polled::Ran(c, o, _) => {
            assert_eq!(c.action, "open");
            assert_eq!(o, inkan_proto::command::Outcome::Succeeded);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(state_of(&ids[0].0).state.as_str(), "succeeded");
    assert!(matches!(
        poll_and_run(&mut up0, &d0, &mut ex0, &mut actuator).unwrap(),
        Polled::Nothing
    ));
    // A whole family; a failing actuator is reported as failed.
    let fam_ids = rt
        .block_on(inkan_cloud::commands::issue(
            &auth,
            &tenant,
            &[dev0.clone(), dev1.clone()],
            "jam",
            b"",
            300,
        ))
        .unwrap();
    poll_and_run(&mut up0, &d0, &mut ex0, &mut actuator).unwrap();
    poll_and_run(&mut up1, &d1, &mut ex1, &mut actuator).unwrap();
    for (id, _) in &fam_ids {
        let c = state_of(id);
        assert_eq!(c.state.as_str(), "failed");
        assert_eq!(c.result.as_deref(), Some("valve jammed"));
    }
    assert_eq!(ran.borrow().len(), 3);

    // Attacks, queued directly in the store as an intruder could:
    let now = inkan_cloud::store::now();
    let cose_of = |id: &str| -> Vec<u8> {
        let r = rt
            .block_on(
                sqlx::query("SELECT cose FROM commands WHERE id = $1")
                    .bind(id)
                    .fetch_one(&store.pool),
            )
            .unwrap();
        sqlx::Row::try_get(&r, "cose").unwrap()
    };
    let mut expect_refused = |cose: Vec<u8>, want: CommandError, state: &str| {
        let id = inkan_cloud::store::new_id();
        rt.block_on(store.insert_command(&id, &tenant, &dev0.id, "x", &cose, now + 300))
            .unwrap();
        let before = ran.borrow().len();
        match poll_and_run(&mut up0, &d0, &mut ex0, &mut actuator).unwrap() {
            Polled::Refused(inkan_device::CommandRefused::Command(e)) => assert_eq!(e, want),
            other => panic!("expected {want:?}, got {other:?}"),
        }
        assert_eq!(ran.borrow().len(), before, "nothing ran");
        // The device reports against the id inside the command; the row
        // the intruder added under another id is retired by hand.
        let (c, _, _) = Command::open(&cose).unwrap();
        let audit = rt.block_on(store.audit_tail(5)).unwrap();
        assert!(
            audit.iter().any(|(k, _, o, d)| k == "command-result"
                && o == state
                && d.starts_with(&hex::encode(c.id))),
            "no {state} report for {}",
            hex::encode(c.id)
        );
        rt.block_on(
            sqlx::query("UPDATE commands SET state = 'refused' WHERE id = $1")
                .bind(&id)
                .execute(&store.pool),
        )
        .unwrap();
    };
    // ...a replayed command (executed before, delivered again);
    expect_refused(cose_of(&ids[0].0), CommandError::Replayed, "refused");
    // ...a command for device 1 delivered to device 0;
    let for_1 = rt
        .block_on(inkan_cloud::commands::issue(
            &auth,
            &tenant,
            std::slice::from_ref(&dev1),
            "open",
            b"",
            300,
        ))
        .unwrap();
    expect_refused(
        cose_of(&for_1[0].0),
        CommandError::OtherDevice(dev1.serial.clone()),
        "refused",
    );
    // ...a command signed by another key;
    let rogue = SoftwareKey::generate(KeyCurve::P256);
    let bound = |d: &inkan_cloud::store::DeviceRow| -> (Vec<u8>, [u8; 32]) {
        let c = rt
            .block_on(store.current_credential(&d.id))
            .unwrap()
            .unwrap();
        (
            hex::decode(&d.id).unwrap(),
            hex::decode(c.fingerprint).unwrap().try_into().unwrap(),
        )
    };
    let forged = Command {
        id: [0x66; 16],
        device: dev0.serial.clone(),
        ueid: bound(&dev0).0,
        credential: bound(&dev0).1,
        action: "open".into(),
        args: vec![],
        issued: 0,
        expires: u64::MAX / 2,
    }
    .sign(|tbs| inkan_pki::signer::sign_raw(&rogue, tbs))
    .unwrap();
    expect_refused(forged, CommandError::Signature, "refused");
    // ...and a genuine command past its own expiry.
    let stale = Command {
        id: [0x77; 16],
        device: dev0.serial.clone(),
        ueid: bound(&dev0).0,
        credential: bound(&dev0).1,
        action: "open".into(),
        args: vec![],
        issued: 0,
        expires: 10,
    }
    .sign(|tbs| inkan_pki::signer::sign_raw(&k1, tbs))
    .unwrap();
    expect_refused(stale, CommandError::Expired, "expired");
    // The cloud expires what was never delivered in time.
    let short = rt
        .block_on(inkan_cloud::commands::issue(
            &auth,
            &tenant,
            std::slice::from_ref(&dev1),
            "open",
            b"",
            1,
        ))
        .unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(state_of(&short[0].0).state.as_str(), "expired");
    assert!(
        matches!(
            poll_and_run(&mut up1, &d1, &mut ex1, &mut actuator).unwrap(),
            Polled::Ran(..)
        ),
        "device 1 runs its pending 'open' (for_1), not the expired one"
    );
    assert!(matches!(
        poll_and_run(&mut up1, &d1, &mut ex1, &mut actuator).unwrap(),
        Polled::Nothing
    ));
    // At most once survives a restart of the device: the record is a file.
    let mut ex0_again = Executed::open(Some(&dir.path().join("executed-0"))).unwrap();
    assert!(!ex0_again.claim(&hex::decode(&ids[0].0).unwrap()).unwrap());

    // Rotation: a new key K2; the service signs the rotation with K1.
    let k2 = SoftwareKey::generate(KeyCurve::P256);
    let rotated = service(k2.clone(), Some(k1.clone()));
    let addr2 = start_server(&rt, rotated.clone());
    let mut up0b = Uplink::new(&c0, addr2, quick()).unwrap();
    up0b.set_next_sequence(10_000);
    let mut up1b = Uplink::new(&c1, addr2, quick()).unwrap();
    up1b.set_next_sequence(10_000);
    rt.block_on(inkan_cloud::commands::issue(
        &rotated,
        &tenant,
        std::slice::from_ref(&dev0),
        inkan_cloud::commands::ROTATE_COMMAND_KEY,
        b"",
        300,
    ))
    .unwrap();
    match poll_and_run(&mut up0b, &d0, &mut ex0, &mut actuator).unwrap() {
        Polled::Ran(_, o, d) => {
            assert_eq!(o, inkan_proto::command::Outcome::Succeeded, "{d}")
        }
        other => panic!("{other:?}"),
    }
    // Device 0 now follows K2; device 1, not rotated, refuses K2's command.
    rt.block_on(inkan_cloud::commands::issue(
        &rotated,
        &tenant,
        &[dev0.clone(), dev1.clone()],
        "close",
        b"",
        300,
    ))
    .unwrap();
    assert!(matches!(
        poll_and_run(&mut up0b, &d0, &mut ex0, &mut actuator).unwrap(),
        Polled::Ran(..)
    ));
    assert!(matches!(
        poll_and_run(&mut up1b, &d1, &mut ex1, &mut actuator).unwrap(),
        Polled::Refused(inkan_device::CommandRefused::Command(
            CommandError::Signature
        ))
    ));
    // And a rotation signed by a key the device never pinned is refused.
    let impostor = service(SoftwareKey::generate(KeyCurve::P256), Some(rogue));
    rt.block_on(inkan_cloud::commands::issue(
        &impostor,
        &tenant,
        std::slice::from_ref(&dev0),
        inkan_cloud::commands::ROTATE_COMMAND_KEY,
        b"",
        300,
    ))
    .unwrap();
    assert!(matches!(
        poll_and_run(&mut up0b, &d0, &mut ex0, &mut actuator).unwrap(),
        Polled::Refused(inkan_device::CommandRefused::Command(
            CommandError::Signature
        ))
    ));
    let audit = rt.block_on(store.audit_tail(200)).unwrap();
    for state in ["succeeded", "failed", "refused", "expired"] {
        assert!(
            audit
                .iter()
                .any(|(k, _, o, _)| k == "command-result" && o == state),
            "no audit entry for a {state} command"
        );
    }
}

/// A family that requires signed readings: an unsigned batch is refused, a
/// batch signed by the chip is stored with its COSE_Sign1, which verifies
/// with the device's certificate key; a batch signed by another key, or a
/// signed batch whose content was changed, is refused.
fn signed_readings_are_kept_with_their_records(db: Db) {
    use inkan_device::{Uplink, UplinkError};
    let w = world(&["thermo"], 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let auth = rt.block_on(cloud(db, dir.path(), &w.cloud_key, Limits::default()));
    let store = &auth.registry.store;
    let tenant = rt.block_on(store.ensure_tenant("acme")).unwrap();
    let fam = rt.block_on(register_family(&w, &auth.registry, &tenant, "thermo"));
    let addr = start_server(&rt, auth.clone());
    let d0 = driver(&w, 0);
    let c = connect(d0.clone(), addr, quick()).unwrap();
    let mut up = Uplink::new(&c, addr, quick()).unwrap();
    // Not required yet: unsigned batches are fine.
    assert_eq!(up.send(&batch(2, 0)).unwrap(), 2);
    assert!(rt.block_on(store.set_signed_readings(&fam, true)).unwrap());
    let refused = |r: Result<u64, UplinkError>, want: &str| match r {
        Err(UplinkError::Refused { code, detail }) => {
            assert_eq!(code, "4.00");
            assert!(detail.contains(want), "{detail}");
        }
        other => panic!("expected a refusal ({want}), got {other:?}"),
    };
    refused(up.send(&batch(2, 10)), "requires readings signed");
    assert_eq!(up.send_signed(&batch(3, 20), &d0).unwrap(), 3);
    let rows = rt
        .block_on(store.readings(&tenant, None, None, 20, 100, None, 10))
        .unwrap();
    assert_eq!(rows.len(), 3);
    let cose = rows[0].signature.clone().expect("signature kept");
    let sb = inkan_proto::telemetry::open_signed(&cose).unwrap();
    let point = leaf_of(&w, 0).public_point();
    assert!(inkan_pki::signer::verify_raw(
        &point,
        &sb.tbs,
        &sb.signature
    ));
    assert_eq!(
        inkan_proto::telemetry::decode_batch(&sb.batch).unwrap(),
        batch(3, 20)
    );
    // Signed by another key.
    let other = SoftwareKey::generate(KeyCurve::P256);
    let forged = inkan_proto::telemetry::sign_batch(
        &inkan_proto::telemetry::encode_batch(&batch(1, 30)),
        false,
        |tbs| inkan_pki::signer::sign_raw(&other, tbs),
    )
    .unwrap();
    refused(
        up.request(coap_lite::RequestType::Post, "telemetry", forged)
            .map(|_| 0),
        "batch signature does not verify",
    );
    // The device's genuine signature over other content.
    let mut altered = inkan_proto::telemetry::sign_batch(
        &inkan_proto::telemetry::encode_batch(&batch(1, 40)),
        false,
        |tbs| {
            inkan_proto::edhoc::crypto::SignatureKey::sign(
                &mut inkan_device::SeSigner::new(d0.clone()),
                tbs,
            )
        },
    )
    .unwrap();
    let pos = altered.len() - 70;
    altered[pos] ^= 0x01;
    match up.request(coap_lite::RequestType::Post, "telemetry", altered) {
        Err(UplinkError::Refused { code, .. }) => assert_eq!(code, "4.00"),
        other => panic!("an altered signed batch was accepted: {other:?}"),
    }
    assert_eq!(
        rt.block_on(store.readings(&tenant, None, None, 0, i64::MAX, None, 100))
            .unwrap()
            .len(),
        5,
        "nothing stored from refused batches"
    );
}

/// Firmware uploaded with its OEM-signed manifest (checked for key, family
/// and image), downloaded block-wise under OSCORE by a device of the family,
/// resumed after a drop, and booted through the chip; a truncated download
/// does not boot; another family's device cannot fetch it.
fn firmware_downloads_blockwise_resumes_and_boots(db: Db) {
    use inkan_cloud::firmware::{upload, UploadError};
    use inkan_device::{Uplink, UplinkError};
    let FirmwareCloud {
        w,
        rt,
        dir,
        oem,
        auth,
        tenant,
        families,
        addr,
    } = firmware_cloud(db, &["thermo", "valve"], 1);
    let thermo = families[0].clone();
    let image: Vec<u8> = (0..10_500u32)
        .map(|i| u8::try_from(i % 251).unwrap())
        .collect();
    let manifest =
        |img: &[u8], class: &str, key: &SoftwareKey| signed(key, class, img.to_vec(), 2).1;
    let m = manifest(&image, "thermo", &oem);
    // Refused uploads.
    let rogue = SoftwareKey::generate(KeyCurve::P256);
    assert!(matches!(
        rt.block_on(upload(
            &auth,
            &tenant,
            &thermo,
            &manifest(&image, "thermo", &rogue),
            &image
        )),
        Err(UploadError::Manifest(_))
    ));
    assert!(matches!(
        rt.block_on(upload(
            &auth,
            &tenant,
            &thermo,
            &manifest(&image, "valve", &oem),
            &image
        )),
        Err(UploadError::Family { .. })
    ));
    assert!(matches!(
        rt.block_on(upload(&auth, &tenant, &thermo, &m, &image[1..])),
        Err(UploadError::Image)
    ));
    let id = rt
        .block_on(upload(&auth, &tenant, &thermo, &m, &image))
        .unwrap();
    // The same through the operator API.
    let api = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(inkan_cloud::api::serve(l, auth.clone()));
        base
    });
    let token = rt
        .block_on(inkan_cloud::api::create_token(
            &auth.registry.store,
            &tenant,
            inkan_cloud::api::Role::Operator,
        ))
        .unwrap();
    // (status, body) of an upload.
    let post = |manifest: &[u8]| -> (u16, serde_json::Value) {
        match ureq::post(&format!("{api}/v1/firmware"))
            .set("Authorization", &format!("Bearer {token}"))
            .send_json(serde_json::json!({
                "family": thermo,
                "manifest_hex": hex::encode(manifest),
                "image_hex": hex::encode(&image),
            })) {
            Ok(r) => (r.status(), r.into_json().unwrap()),
            Err(ureq::Error::Status(c, r)) => (c, r.into_json().unwrap_or_default()),
            Err(e) => panic!("{e}"),
        }
    };
    let (code, r) = post(&m);
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["id"].as_str().unwrap().len(), 32);
    let (code, r) = post(&manifest(&image, "thermo", &rogue));
    assert_eq!(code, 400, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("manifest refused"),
        "{r}"
    );

    let d0 = driver(&w, 0);
    let c0 = connect(d0.clone(), addr, quick()).unwrap();
    let mut up = Uplink::new(&c0, addr, quick()).unwrap();
    assert_eq!(up.firmware_manifest(&id).unwrap(), m);
    let file = dir.path().join("download.bin");
    // The connection drops after 4 blocks...
    assert_eq!(up.download(&id, &file, Some(4)).unwrap(), (4096, false));
    // ...a partial image does not boot...
    let partial = std::fs::read(&file).unwrap();
    assert!(matches!(
        inkan_device::firmware::boot_check(&d0, &partial, &m),
        Err(inkan_device::firmware::BootRefused::Size { .. })
    ));
    // ...and the download resumes from there, over a new session.
    let c0b = connect(d0.clone(), addr, quick()).unwrap();
    let mut up2 = Uplink::new(&c0b, addr, quick()).unwrap();
    assert_eq!(up2.download(&id, &file, None).unwrap(), (10_500, true));
    let got = std::fs::read(&file).unwrap();
    assert_eq!(got, image);
    let ok = inkan_device::firmware::boot_check(&d0, &got, &m).unwrap();
    assert_eq!(ok.manifest.security_version, 2);

    // A device of another family gets no ticket.
    let c1 = connect(driver(&w, 1), addr, quick()).unwrap();
    let mut up1 = Uplink::new(&c1, addr, quick()).unwrap();
    match up1.download(&id, &dir.path().join("other.bin"), None) {
        Err(UplinkError::Refused { code, .. }) => assert_eq!(code, "4.04"),
        other => panic!("another family's device got the firmware: {other:?}"),
    }

    // The plain image resource, attacked from outside any session.
    let ticket = up2.firmware_ticket(&id).unwrap();
    assert_eq!(ticket.size, 10_500);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(addr).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut mid = 0x5000u16;
    let mut get = |path: &str, echo: Option<&[u8]>, block: u32| -> (Vec<u8>, coap_lite::Packet) {
        use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
        mid += 1;
        let mut p = Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.message_id = mid;
        p.header.code = MessageClass::Request(RequestType::Get);
        p.set_token(vec![0x77]);
        for seg in path.split('/') {
            p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
        }
        p.add_option(
            CoapOption::Block2,
            inkan_proto::coap::block_value(block, false, 6),
        );
        if let Some(e) = echo {
            p.add_option(CoapOption::Unknown(inkan_proto::coap::ECHO), e.to_vec());
        }
        let req = p.to_bytes().unwrap();
        sock.send(&req).unwrap();
        let mut buf = [0u8; 2048];
        let n = sock.recv(&mut buf).unwrap();
        (req, Packet::from_bytes(&buf[..n]).unwrap())
    };
    // Without an Echo: 4.01 with one to repeat, no larger than the request
    // (the resource amplifies nothing toward a spoofed address).
    let (req, rsp) = get(&ticket.path, None, 0);
    assert_eq!(rsp.header.code.to_string(), "4.01");
    assert!(rsp.payload.is_empty());
    assert!(rsp.to_bytes().unwrap().len() <= req.len());
    let echo = inkan_proto::coap::echo_of(&rsp).unwrap().to_vec();
    // An Echo made for another address (the device's own socket) or a
    // changed one is asked again; the image stays unsent.
    let mut forged = echo.clone();
    forged[5] ^= 0x40;
    for bad in [forged.as_slice(), &[0u8; 12][..], &echo[..4]] {
        let (_, rsp) = get(&ticket.path, Some(bad), 0);
        assert_eq!(rsp.header.code.to_string(), "4.01", "{bad:?}");
        assert!(rsp.payload.is_empty());
    }
    // A path the cloud did not make is not found, even from a verified
    // address: another token, another firmware id with this token.
    let mut other_token = ticket.path.clone();
    let last = other_token.pop().unwrap();
    other_token.push(if last == '0' { '1' } else { '0' });
    let other_id = ticket.path.replacen(&id, &"0".repeat(32), 1);
    for path in [other_token.as_str(), &other_id, "fw", "fw/x"] {
        let (_, rsp) = get(path, Some(&echo), 0);
        assert_eq!(rsp.header.code.to_string(), "4.04", "{path}");
    }
    // With its Echo the address is served: the block is ciphertext, which
    // the ticket's key alone turns into the image.
    let (_, rsp) = get(&ticket.path, Some(&echo), 3);
    assert_eq!(rsp.header.code.to_string(), "2.05");
    assert_eq!(rsp.payload.len(), 1024);
    assert_ne!(rsp.payload, image[3072..4096]);
    let mut clear = rsp.payload.clone();
    inkan_proto::resources::image_cipher(&ticket.key, 3072, &mut clear);
    assert_eq!(clear, image[3072..4096]);
    // Past the end: 4.02, not another image's bytes.
    let (_, rsp) = get(&ticket.path, Some(&echo), 11);
    assert_eq!(rsp.header.code.to_string(), "4.02");
}

/// Campaigns: a staged roll-out whose first stage fails stops by itself at
/// the threshold and offers nothing more; a good one completes stage by
/// stage, each device installing, trial-booting and confirming through its
/// chip, its version recorded.
fn campaigns_roll_out_in_stages_and_stop_at_the_failure_threshold(db: Db) {
    use inkan_cloud::campaigns::{create, progress, Target};
    use inkan_device::firmware::{slots::Slots, update_once, UpdateOutcome};
    use inkan_device::Uplink;
    let FirmwareCloud {
        w,
        rt,
        dir,
        oem,
        auth,
        tenant,
        families,
        addr,
    } = firmware_cloud(db, &["thermo"], 6);
    let thermo = families[0].clone();
    let fw = |fill: u8, sv: u32| signed(&oem, "thermo", vec![fill; 3000], sv);
    let (v1, m1) = fw(1, 1);
    let (v2, m2) = fw(2, 2);
    let fw2 = rt
        .block_on(inkan_cloud::firmware::upload(
            &auth, &tenant, &thermo, &m2, &v2,
        ))
        .unwrap();
    // Six devices on v1, each with its slots and an OSCORE session.
    let mut fleet = Vec::new();
    for i in 0..6 {
        let d = driver(&w, i);
        let c = connect(d.clone(), addr, quick()).unwrap();
        let up = Uplink::new(&c, addr, quick()).unwrap();
        let mut slots = Slots::open(&dir.path().join(format!("dev-{i}")));
        slots.provision(&v1, &m1).unwrap();
        slots.boot(&d).unwrap();
        let work = dir.path().join(format!("work-{i}"));
        std::fs::create_dir_all(&work).unwrap();
        fleet.push((d, up, slots, work));
    }
    let mut poll_all = |self_test_ok: bool| {
        let mut outcomes = Vec::new();
        for (d, up, slots, work) in fleet.iter_mut() {
            let mut test = |_: &[u8]| -> Result<(), String> {
                if self_test_ok {
                    Ok(())
                } else {
                    Err("sensor does not answer".into())
                }
            };
            outcomes.push(update_once(up, d, slots, work, &mut test).unwrap());
        }
        outcomes
    };

    // A bad roll-out: stages 34% then 100%, stop above 30% failures.
    let bad = rt
        .block_on(create(&auth, &tenant, &fw2, Target::Family, &[34, 100], 30))
        .unwrap();
    let outcomes = poll_all(false);
    let failed = outcomes
        .iter()
        .filter(|o| matches!(o, UpdateOutcome::Failed(_)))
        .count();
    // The first failure (1 of the stage's 3 devices, above 30%) stops it.
    assert_eq!(failed, 1, "{outcomes:?}");
    let p = rt
        .block_on(progress(&auth, &tenant, &bad))
        .unwrap()
        .unwrap();
    assert_eq!(p.state, "stopped", "{p:?}");
    assert!(p.detail.unwrap().contains("threshold 30%"));
    assert_eq!(
        p.devices.get("pending").copied().unwrap_or(0),
        5,
        "nothing offered after the stop"
    );
    // Nothing more is offered, and every device still runs v1.
    assert!(poll_all(true).iter().all(|o| *o == UpdateOutcome::Nothing));

    // A good roll-out completes stage by stage: the second half is not
    // offered anything until the first half has succeeded.
    let good = rt
        .block_on(create(&auth, &tenant, &fw2, Target::Family, &[50, 100], 50))
        .unwrap();
    let stage_of: Vec<i64> = (0..6)
        .map(|i| {
            let id = rt
                .block_on(
                    auth.registry
                        .store
                        .device_by_fingerprint(&inkan_cloud::registry::fingerprint(&leaf_of(&w, i).der)),
                )
                .unwrap()
                .unwrap()
                .id;
            let r = rt
                .block_on(
                    sqlx::query("SELECT stage FROM campaign_devices WHERE campaign_id = $1 AND device_id = $2")
                        .bind(&good)
                        .bind(&id)
                        .fetch_one(&auth.registry.store.pool),
                )
                .unwrap();
            sqlx::Row::try_get(&r, "stage").unwrap()
        })
        .collect();
    assert_eq!(stage_of.iter().filter(|s| **s == 0).count(), 3);
    let mut poll = |i: usize| {
        let (d, up, slots, work) = &mut fleet[i];
        update_once(up, d, slots, work, &mut |_: &[u8]| Ok(())).unwrap()
    };
    let (first, second): (Vec<usize>, Vec<usize>) = (0..6).partition(|i| stage_of[*i] == 0);
    for i in &second {
        assert_eq!(poll(*i), UpdateOutcome::Nothing, "stage 2 offered early");
    }
    for i in &first {
        assert_eq!(poll(*i), UpdateOutcome::Updated(2));
    }
    let p = rt
        .block_on(progress(&auth, &tenant, &good))
        .unwrap()
        .unwrap();
    assert_eq!((p.state.as_str(), p.stage), ("running", 1), "{p:?}");
    for i in &second {
        assert_eq!(poll(*i), UpdateOutcome::Updated(2));
    }
    let p = rt
        .block_on(progress(&auth, &tenant, &good))
        .unwrap()
        .unwrap();
    assert_eq!(p.state, "completed", "{p:?}");
    assert_eq!(p.devices.get("succeeded").copied(), Some(6));
    // Through the operator API: the progress, and a malformed campaign.
    let api = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(inkan_cloud::api::serve(l, auth.clone()));
        base
    });
    let token = rt
        .block_on(inkan_cloud::api::create_token(
            &auth.registry.store,
            &tenant,
            inkan_cloud::api::Role::Operator,
        ))
        .unwrap();
    let got: serde_json::Value = ureq::get(&format!("{api}/v1/campaigns/{good}"))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(got["state"], "completed");
    let devices: Vec<inkan_cloud::api::DeviceView> = ureq::get(&format!("{api}/v1/devices"))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(devices.len(), 6);
    assert!(devices
        .iter()
        .all(|d| d.firmware_version.as_deref() == Some("2.0")));
    match ureq::post(&format!("{api}/v1/campaigns"))
        .set("Authorization", &format!("Bearer {token}"))
        .send_json(serde_json::json!({ "firmware": fw2, "stages": [50, 40] }))
    {
        Err(ureq::Error::Status(code, _)) => assert_eq!(code, 400),
        Ok(r) => panic!("decreasing stages accepted: {}", r.status()),
        Err(e) => panic!("{e}"),
    }
    let versions: Vec<Option<String>> = rt
        .block_on(
            sqlx::query("SELECT firmware_version FROM devices")
                .fetch_all(&auth.registry.store.pool),
        )
        .unwrap()
        .iter()
        .map(|r| sqlx::Row::try_get(r, "firmware_version").unwrap())
        .collect();
    assert!(
        versions.iter().all(|v| v.as_deref() == Some("2.0")),
        "{versions:?}"
    );
}

/// Some devices are set to fail their self-test. A failure rate at or
/// below the threshold lets the roll-out go on to the next stage; crossing
/// it stops the campaign, and devices not yet updated are offered nothing.
fn a_campaign_with_some_failing_devices_continues_below_the_threshold_and_stops_above(db: Db) {
    use inkan_cloud::campaigns::{create, progress, Target};
    use inkan_device::firmware::{slots::Slots, update_once, UpdateOutcome};
    use inkan_device::Uplink;
    let FirmwareCloud {
        w,
        rt,
        dir,
        oem,
        auth,
        tenant,
        families,
        addr,
    } = firmware_cloud(db, &["thermo"], 6);
    let thermo = families[0].clone();
    let fw = |fill: u8, sv: u32| signed(&oem, "thermo", vec![fill; 2000], sv);
    let (v1, m1) = fw(1, 1);
    let (v2, m2) = fw(2, 2);
    let fw2 = rt
        .block_on(inkan_cloud::firmware::upload(
            &auth, &tenant, &thermo, &m2, &v2,
        ))
        .unwrap();
    // The devices enrol on their first authentication, then the campaign.
    let mut enrolled = Vec::new();
    for i in 0..6 {
        let d = driver(&w, i);
        let c = connect(d.clone(), addr, quick()).unwrap();
        enrolled.push((d, c));
    }
    let campaign = rt
        .block_on(create(&auth, &tenant, &fw2, Target::Family, &[50, 100], 40))
        .unwrap();
    let mut fleet = Vec::new();
    for (i, (d, c)) in enrolled.into_iter().enumerate() {
        let up = Uplink::new(&c, addr, quick()).unwrap();
        let mut slots = Slots::open(&dir.path().join(format!("dev-{i}")));
        slots.provision(&v1, &m1).unwrap();
        slots.boot(&d).unwrap();
        let work = dir.path().join(format!("work-{i}"));
        std::fs::create_dir_all(&work).unwrap();
        let id = rt
            .block_on(
                auth.registry
                    .store
                    .device_by_fingerprint(&inkan_cloud::registry::fingerprint(
                        &leaf_of(&w, i).der,
                    )),
            )
            .unwrap()
            .unwrap()
            .id;
        let r = rt
            .block_on(
                sqlx::query(
                    "SELECT stage FROM campaign_devices WHERE campaign_id = $1 AND device_id = $2",
                )
                .bind(&campaign)
                .bind(&id)
                .fetch_one(&auth.registry.store.pool),
            )
            .unwrap();
        let stage: i64 = sqlx::Row::try_get(&r, "stage").unwrap();
        fleet.push((d, up, slots, work, stage));
    }
    let first: Vec<usize> = (0..6).filter(|i| fleet[*i].4 == 0).collect();
    let second: Vec<usize> = (0..6).filter(|i| fleet[*i].4 == 1).collect();
    assert_eq!((first.len(), second.len()), (3, 3));
    let mut poll = |i: usize, ok: bool| {
        let (d, up, slots, work, _) = &mut fleet[i];
        update_once(up, d, slots, work, &mut |_: &[u8]| {
            if ok {
                Ok(())
            } else {
                Err("self-test failed".into())
            }
        })
        .unwrap()
    };
    // Stage 1: one of three fails (33% <= 40%): the roll-out goes on.
    assert!(matches!(poll(first[0], false), UpdateOutcome::Failed(_)));
    assert_eq!(poll(first[1], true), UpdateOutcome::Updated(2));
    assert_eq!(poll(first[2], true), UpdateOutcome::Updated(2));
    let p = rt
        .block_on(progress(&auth, &tenant, &campaign))
        .unwrap()
        .unwrap();
    assert_eq!((p.state.as_str(), p.stage), ("running", 1), "{p:?}");
    // Stage 2: a second failure is 2 of 6 (33%): still on; a third is 3 of
    // 6 (50% > 40%): stop.
    assert!(matches!(poll(second[0], false), UpdateOutcome::Failed(_)));
    let p = rt
        .block_on(progress(&auth, &tenant, &campaign))
        .unwrap()
        .unwrap();
    assert_eq!(p.state, "running", "{p:?}");
    assert!(matches!(poll(second[1], false), UpdateOutcome::Failed(_)));
    let p = rt
        .block_on(progress(&auth, &tenant, &campaign))
        .unwrap()
        .unwrap();
    assert_eq!(p.state, "stopped", "{p:?}");
    assert!(p.detail.as_deref().unwrap().contains("3 of 6"), "{p:?}");
    // The rest of stage 2 is not offered the update.
    assert_eq!(poll(second[2], true), UpdateOutcome::Nothing);
    // The failed devices reverted to 1.0; the others run 2.0.
    let (d, _, slots, _, _) = &mut fleet[first[0]];
    assert_eq!(slots.boot(d).unwrap().security_version, 1);
    let (d, _, slots, _, _) = &mut fleet[first[1]];
    assert_eq!(slots.boot(d).unwrap().security_version, 2);
}

/// A cloud that accepts firmware signed with the factory's OEM key: the
/// given families registered in tenant "acme", its endpoint running.
struct FirmwareCloud {
    w: World,
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    oem: SoftwareKey,
    auth: Arc<App>,
    tenant: String,
    families: Vec<String>,
    addr: SocketAddr,
}

fn firmware_cloud(db: Db, families: &[&str], per_family: usize) -> FirmwareCloud {
    let w = world(families, per_family);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = rt.block_on(db_url(db, dir.path()));
    let oem = SoftwareKey::load(&w.factory.dir().join("keys/dev-firmware.key.pem"), b"pw").unwrap();
    let store = rt.block_on(Store::open(&url)).unwrap();
    let auth = Arc::new(
        App::new(
            Registry::new(store),
            identity(&w.cloud_key),
            Limits::default(),
        )
        .with_firmware_key(inkan_pki::CaSigner::public_point(&oem)),
    );
    let tenant = rt
        .block_on(auth.registry.store.ensure_tenant("acme"))
        .unwrap();
    let ids = families
        .iter()
        .map(|f| rt.block_on(register_family(&w, &auth.registry, &tenant, f)))
        .collect();
    let addr = start_server(&rt, auth.clone());
    FirmwareCloud {
        w,
        rt,
        dir,
        oem,
        auth,
        tenant,
        families: ids,
        addr,
    }
}

/// An image and its manifest for `class`, signed by `oem`.
fn signed(oem: &SoftwareKey, class: &str, image: Vec<u8>, sv: u32) -> (Vec<u8>, Vec<u8>) {
    let m = inkan_pki::firmware::sign(
        &inkan_pki::firmware::FirmwareManifest::describe(
            &image,
            "o",
            class,
            &format!("{sv}.0"),
            sv,
        ),
        oem,
    )
    .unwrap();
    (image, m)
}
