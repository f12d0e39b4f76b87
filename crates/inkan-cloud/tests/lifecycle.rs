//! A device's life, tried as attacks where there is something to break:
//! one identity across credentials, enrolment only after the device's
//! signature, commands bound to identity and credential, transfers of
//! ownership (forged, altered, expired, replayed, misaddressed), and
//! decommissioning of an online and an offline device.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;
use common::world::*;
use common::Db;

use inkan_cloud::auth::{AuthError, Authenticated};
use inkan_cloud::devices::{self, Actor};
use inkan_cloud::lifecycle::{Action, CredentialState, DeviceState};
use inkan_cloud::registry::RegistryError;
use inkan_cloud::{App, Limits, Registry, Store};
use inkan_device::{connect, poll_and_run, Executed, Polled, SeEphemeral, SeSigner, Uplink};
use inkan_pki::{CertPolicy, DeviceProfile, IssuedCert, SoftwareKey};
use inkan_proto::edhoc::{ConnId, Credential, IdCred, IdCredKind, Initiator, Suite};
use inkan_proto::oscore::{ContextParams, SecurityContext};
use inkan_se::driver::key_mode;
use inkan_se::Curve;
use std::sync::Arc;

on_both_stores!(
    enrolment_waits_for_the_devices_own_signature,
    a_device_keeps_its_identity_across_credentials,
    commands_are_bound_to_the_devices_identity_and_credential,
    a_transfer_moves_devices_to_the_buyer_alone,
    decommissioned_devices_erase_their_secrets_online_and_offline,
    refusals_at_message_1_are_audited_in_bounded_aggregates
);

/// One EDHOC exchange in which chip `i` presents `cert` and signs with the
/// key in `slot`.
fn exchange(
    w: &World,
    i: usize,
    auth: &App,
    rt: &tokio::runtime::Runtime,
    cert: &[u8],
    slot: u8,
) -> Result<Authenticated, AuthError> {
    exchange_keyed(w, i, auth, rt, cert, slot).map(|(a, _)| a)
}

/// The same, with the device's OSCORE context of the new session.
fn exchange_keyed(
    w: &World,
    i: usize,
    auth: &App,
    rt: &tokio::runtime::Runtime,
    cert: &[u8],
    slot: u8,
) -> Result<(Authenticated, SecurityContext), AuthError> {
    let d = driver(w, i);
    let eph = SeEphemeral::generate(d.clone()).unwrap();
    let (init, m1) = Initiator::start(Suite::P256Es256, ConnId(vec![0x21]), &[], Box::new(eph));
    let m2 = rt.block_on(auth.message_1(&m1, "test")).map_err(|e| e.0)?;
    let p2 = init.process_message_2(&m2).unwrap();
    let IdCredKind::X5chain(c) = p2.id_cred_r().parse().unwrap() else {
        panic!("x5chain expected")
    };
    let point = IssuedCert::from_der(&c[0]).unwrap().public_point();
    let v = p2.verify(&Credential::x509(&c[0], point)).unwrap();
    let (done, m3) = v
        .prepare_message_3(
            &IdCred::x5chain(&[cert.to_vec()]),
            &inkan_proto::cbor::bstr_vec(cert),
            &[],
            &mut SeSigner::new(d).in_slot(slot),
        )
        .unwrap();
    let a = rt.block_on(auth.message_3(&done.c_r, &m3, "test"))?;
    let ctx = SecurityContext::derive(
        &ContextParams::from_edhoc(done.session(), true, &ConnId(vec![0x21]), &done.c_r).unwrap(),
    )
    .unwrap();
    Ok((a, ctx))
}

/// Sends one reading (value `v`) under `ctx` to the endpoint at `addr`;
/// returns the response code.
fn send_reading(addr: std::net::SocketAddr, ctx: &mut SecurityContext, v: u8) -> String {
    let p = telemetry_request(
        0x500 + u16::from(v),
        &[v],
        &[inkan_proto::telemetry::Reading {
            time_ms: 1_700_000_000_000 + u64::from(v),
            channel: 0,
            value: vec![v],
        }],
    );
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(addr).unwrap();
    udp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    udp.send(&ctx.protect_request(&p).unwrap().0.to_bytes().unwrap())
        .unwrap();
    let mut buf = vec![0u8; 2048];
    let n = udp.recv(&mut buf).unwrap();
    coap_lite::Packet::from_bytes(&buf[..n])
        .unwrap()
        .header
        .code
        .to_string()
}

/// A certificate of the family `fam` of `w` for `point`, with the serial
/// and identity given.
fn issue(
    w: &World,
    fam: &str,
    point: &[u8],
    serial: &str,
    ueid: Option<inkan_pki::Ueid>,
) -> Vec<u8> {
    let (_, fc) = w.factory.family(fam).unwrap();
    let key = w.factory.signer(&format!("family-{fam}")).unwrap();
    inkan_pki::cert::issue_device(
        &*key,
        &fc,
        point,
        &DeviceProfile {
            serial: serial.into(),
            organization: "cloud test".into(),
            family: fam.into(),
            key_agreement: true,
            ueid,
        },
        &CertPolicy::default(),
    )
    .unwrap()
    .der
}

fn service(w: &World, url: &str, rt: &tokio::runtime::Runtime) -> Arc<App> {
    let k = SoftwareKey::load(
        &w.factory.dir().join("keys/dev-cloud-command.key.pem"),
        b"pw",
    )
    .unwrap();
    let store = rt.block_on(Store::open(url)).unwrap();
    Arc::new(
        App::new(
            Registry::new(store),
            identity(&w.cloud_key),
            Limits::default(),
        )
        .with_command_key(Box::new(k)),
    )
}

fn url(db: Db, dir: &std::path::Path, rt: &tokio::runtime::Runtime) -> String {
    rt.block_on(common::db_url(db, dir))
}

/// A genuine device certificate is public: presented by another chip (that
/// cannot sign for it), nothing is enrolled, and the refusal lands in the
/// audit log of the tenant whose family the certificate names.
fn enrolment_waits_for_the_devices_own_signature(db: Db) {
    let w = world(&["thermo"], 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let auth = service(&w, &url(db, dir.path(), &rt), &rt);
    let tenant = rt
        .block_on(auth.registry.store.ensure_tenant("acme"))
        .unwrap();
    rt.block_on(register_family(&w, &auth.registry, &tenant, "thermo"));
    let victim = leaf_of(&w, 0);
    match exchange(&w, 1, &auth, &rt, &victim.der, 0) {
        Err(AuthError::Edhoc(_)) => {}
        other => panic!("a signature by another chip was accepted: {other:?}"),
    }
    assert_eq!(rt.block_on(auth.registry.store.device_count()).unwrap(), 0);
    let audit = rt
        .block_on(auth.registry.store.audit_in(&tenant, 50))
        .unwrap();
    assert!(
        audit
            .iter()
            .any(|(_, k, _, o, _)| k == "authenticate" && o == "refused"),
        "the refusal is in the tenant's audit log: {audit:?}"
    );
    // The genuine chip enrols.
    exchange(&w, 0, &auth, &rt, &victim.der, 0).unwrap();
    assert_eq!(rt.block_on(auth.registry.store.device_count()).unwrap(), 1);
}

/// A device given a second certificate for the same chip key, then a third
/// for a new key in another slot, keeps its id, readings and history; a
/// retired certificate is refused afterwards.
fn a_device_keeps_its_identity_across_credentials(db: Db) {
    let w = world(&["thermo"], 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let auth = service(&w, &url(db, dir.path(), &rt), &rt);
    let store = &auth.registry.store;
    let tenant = rt.block_on(store.ensure_tenant("acme")).unwrap();
    rt.block_on(register_family(&w, &auth.registry, &tenant, "thermo"));
    let first = leaf_of(&w, 0);
    let ueid = first.ueid().unwrap();
    let serial = first.subject_serial_number().unwrap();
    let addr = start_server(&rt, auth.clone());
    let (a, mut ctx_a) = exchange_keyed(&w, 0, &auth, &rt, &first.der, 0).unwrap();
    assert_eq!(
        a.device.device_id,
        ueid.to_hex(),
        "the device id is its UEID"
    );
    assert_eq!(send_reading(addr, &mut ctx_a, 1), "2.04");

    // Renewed: same key, new certificate from the family.
    let second = issue(
        &w,
        "thermo",
        &first.public_point(),
        &serial,
        Some(ueid.clone()),
    );
    let b = exchange(&w, 0, &auth, &rt, &second, 0).unwrap();
    assert_eq!(b.device.device_id, a.device.device_id);
    assert!(!b.device.enrolled_now);
    // Rotated: a new key in slot 1, certified by the family.
    let d = driver(&w, 0);
    let point = {
        // A personalized chip is locked: key generation needs the host
        // session to unlock it first.
        let mut g = d.lock().unwrap();
        g.unlock().unwrap();
        let p = g
            .generate_key(1, Curve::P256, 0, key_mode::SIGN_DIGEST)
            .unwrap();
        g.lock().unwrap();
        p
    };
    let third = issue(&w, "thermo", &point, &serial, Some(ueid.clone()));
    let (c, mut ctx_c) = exchange_keyed(&w, 0, &auth, &rt, &third, 1).unwrap();
    assert_eq!(c.device.device_id, a.device.device_id);
    assert_eq!(send_reading(addr, &mut ctx_c, 3), "2.04");
    // Readings sent under the first and the third credential are the
    // same device's.
    let readings = rt
        .block_on(store.readings(&tenant, None, None, 0, i64::MAX, None, 100))
        .unwrap();
    assert_eq!(readings.len(), 2);
    assert!(readings
        .iter()
        .all(|r| r.key.device_id == a.device.device_id));
    assert_eq!(rt.block_on(store.device_count()).unwrap(), 1);
    let creds = rt
        .block_on(store.credentials_of(&a.device.device_id))
        .unwrap();
    assert_eq!(creds.len(), 3);
    assert!(creds.iter().all(|c| c.state == CredentialState::Active));

    // The first one retired: refused from now on; the others still work.
    let actor = Actor {
        tenant_id: &tenant,
        who: "test operator",
    };
    let first_cred = creds
        .iter()
        .find(|c| c.fingerprint == inkan_cloud::registry::fingerprint(&first.der))
        .unwrap();
    rt.block_on(devices::end_credential(
        &auth,
        actor,
        &a.device.device_id,
        &first_cred.id,
        CredentialState::Retired,
    ))
    .unwrap();
    match exchange(&w, 0, &auth, &rt, &first.der, 0) {
        Err(AuthError::Registry(RegistryError::CredentialRetired)) => {}
        other => panic!("a retired credential authenticated: {other:?}"),
    }
    exchange(&w, 0, &auth, &rt, &third, 1).unwrap();
    // A certificate naming this identity from another chip serial is not
    // this device.
    let other = issue(
        &w,
        "thermo",
        &point,
        "0102030405060708AA",
        Some(ueid.clone()),
    );
    match exchange(&w, 0, &auth, &rt, &other, 1) {
        Err(AuthError::Registry(RegistryError::IdentityTaken)) => {}
        other => panic!("{other:?}"),
    }
    // The history holds every credential and every session, in order.
    let h = rt
        .block_on(devices::history(&auth, actor, &a.device.device_id))
        .unwrap();
    assert_eq!(h.iter().filter(|e| e.category == "credential").count(), 3);
    assert_eq!(h.iter().filter(|e| e.category == "session").count(), 4);
    assert!(h.iter().any(|e| e.kind == "credential-retired"));
    assert!(h.windows(2).all(|p| p[0].time_ns <= p[1].time_ns));
    // Another tenant sees no history.
    let eve = rt.block_on(store.ensure_tenant("eve")).unwrap();
    assert!(matches!(
        rt.block_on(devices::history(
            &auth,
            Actor {
                tenant_id: &eve,
                who: "eve"
            },
            &a.device.device_id
        )),
        Err(RegistryError::UnknownDevice)
    ));
}

/// A hostile tenant makes a chip under its own family carrying a victim's
/// chip serial: it is not enrolled. A genuine command for the victim is
/// refused by the victim's chip once the victim holds another credential;
/// a lifetime beyond the bound is never signed.
fn commands_are_bound_to_the_devices_identity_and_credential(db: Db) {
    let w = world(&["thermo"], 1);
    let hostile = world(&["thermo"], 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let auth = service(&w, &url(db, dir.path(), &rt), &rt);
    let store = &auth.registry.store;
    let tenant = rt.block_on(store.ensure_tenant("acme")).unwrap();
    let eve = rt.block_on(store.ensure_tenant("eve")).unwrap();
    rt.block_on(register_family(&w, &auth.registry, &tenant, "thermo"));
    rt.block_on(register_family(&hostile, &auth.registry, &eve, "thermo"));
    let addr = start_server(&rt, auth.clone());
    let victim = leaf_of(&w, 0);
    let c = connect(driver(&w, 0), addr, quick()).unwrap();
    let dev = rt
        .block_on(store.device(&victim.ueid().unwrap().to_hex()))
        .unwrap()
        .unwrap();

    // The clone: the victim's serial (and identity) under eve's family.
    let clone_key = leaf_of(&hostile, 0).public_point();
    for ueid in [victim.ueid(), None] {
        let forged = issue(
            &hostile,
            "thermo",
            &clone_key,
            &victim.subject_serial_number().unwrap(),
            ueid,
        );
        match exchange(&hostile, 0, &auth, &rt, &forged, 0) {
            Err(AuthError::Registry(RegistryError::SerialTaken)) => {}
            other => panic!("a chip with a known serial enrolled elsewhere: {other:?}"),
        }
    }
    // No lifetime beyond 30 days.
    assert!(matches!(
        rt.block_on(inkan_cloud::commands::issue(
            &auth,
            &tenant,
            std::slice::from_ref(&dev),
            "open",
            b"",
            9_000_000_000,
        )),
        Err(inkan_cloud::commands::IssueError::Invalid(_))
    ));
    // A genuine command, then the device's certificate changes before it
    // polls: the command names the old credential and is refused.
    rt.block_on(inkan_cloud::commands::issue(
        &auth,
        &tenant,
        std::slice::from_ref(&dev),
        "open",
        b"",
        300,
    ))
    .unwrap();
    let renewed = issue(
        &w,
        "thermo",
        &victim.public_point(),
        &victim.subject_serial_number().unwrap(),
        victim.ueid(),
    );
    let d = driver(&w, 0);
    d.lock().unwrap().update_zone(0, 0, &renewed).unwrap();
    let mut up = Uplink::new(&c, addr, quick()).unwrap();
    let mut ex = Executed::open(None).unwrap();
    let mut ran = 0;
    let mut act = |_: &inkan_proto::command::Command| -> Result<String, String> {
        ran += 1;
        Ok("opened".into())
    };
    match poll_and_run(&mut up, &d, &mut ex, &mut act).unwrap() {
        Polled::Refused(inkan_device::CommandRefused::Command(
            inkan_proto::command::CommandError::OtherCredential,
        )) => {}
        other => panic!("a command for another credential ran: {other:?}"),
    }
    assert_eq!(ran, 0);
}

/// Maker to buyer: the buyer's devices authenticate; the maker no longer
/// sees them; forged, altered, expired, replayed and misaddressed
/// transfers are refused.
fn a_transfer_moves_devices_to_the_buyer_alone(db: Db) {
    let w = world(&["thermo"], 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let auth = service(&w, &url(db, dir.path(), &rt), &rt);
    let store = &auth.registry.store;
    let maker = rt.block_on(store.ensure_tenant("maker")).unwrap();
    let buyer = rt.block_on(store.ensure_tenant("buyer")).unwrap();
    let eve = rt.block_on(store.ensure_tenant("eve")).unwrap();
    rt.block_on(register_family(&w, &auth.registry, &maker, "thermo"));
    let addr = start_server(&rt, auth.clone());
    connect(driver(&w, 0), addr, quick()).unwrap();
    connect(driver(&w, 1), addr, quick()).unwrap();
    let id0 = leaf_of(&w, 0).ueid().unwrap().to_hex();
    let as_maker = Actor {
        tenant_id: &maker,
        who: "maker admin",
    };
    let as_buyer = Actor {
        tenant_id: &buyer,
        who: "buyer admin",
    };
    let offer = |to: &str, ttl: u64| {
        rt.block_on(devices::offer_transfer(
            &auth,
            as_maker,
            "maker",
            to,
            std::slice::from_ref(&id0),
            ttl,
        ))
    };
    let doc = offer("buyer", 3600).unwrap();
    let claim = |who: Actor<'_>, name: &str, d: &[u8]| {
        rt.block_on(devices::claim_transfer(&auth, who, name, d))
    };
    let refused = |r: Result<Vec<String>, RegistryError>, want: &str| match r {
        Err(RegistryError::Transfer(m)) if m.contains(want) => {}
        other => panic!("expected a refusal with {want:?}, got {other:?}"),
    };
    // Misaddressed: eve claims the buyer's transfer.
    refused(
        claim(
            Actor {
                tenant_id: &eve,
                who: "eve",
            },
            "eve",
            &doc,
        ),
        "another tenant",
    );
    // Altered: a flipped byte anywhere.
    let mut altered = doc.clone();
    let n = altered.len();
    altered[n - 70] ^= 1;
    assert!(matches!(
        claim(as_buyer, "buyer", &altered),
        Err(RegistryError::Transfer(_))
    ));
    // Forged: the same document signed by another key.
    let mut t = inkan_proto::transfer::Transfer::open(&doc, |_, _| true).unwrap();
    let rogue = SoftwareKey::generate(inkan_pki::KeyCurve::P256);
    let forged = t
        .sign(|tbs| inkan_pki::signer::sign_raw(&rogue, tbs))
        .unwrap();
    refused(claim(as_buyer, "buyer", &forged), "signature");
    // Expired: signed by the cloud, but past its expiry.
    t.expires = 1;
    t.id = [9; 16];
    let expired = t
        .sign(|tbs| identity(&w.cloud_key).sign_document(tbs))
        .unwrap();
    refused(claim(as_buyer, "buyer", &expired), "expired");
    // The maker cannot transfer a device to itself or offer a forever.
    assert!(offer("maker", 3600).is_err());
    assert!(offer("buyer", 365 * 24 * 3600).is_err());

    // The real claim.
    assert_eq!(claim(as_buyer, "buyer", &doc).unwrap(), vec![id0.clone()]);
    // Replayed.
    refused(claim(as_buyer, "buyer", &doc), "");
    let d = rt.block_on(store.device(&id0)).unwrap().unwrap();
    assert_eq!(d.tenant_id, buyer);
    assert_eq!(d.state, DeviceState::Registered);
    // The maker sees nothing of it and cannot act on it.
    assert!(rt
        .block_on(store.device_in(&maker, &id0))
        .unwrap()
        .is_none());
    assert!(matches!(
        rt.block_on(devices::act(&auth, as_maker, &id0, Action::Suspend, "x")),
        Err(RegistryError::UnknownDevice)
    ));
    assert!(matches!(
        rt.block_on(devices::history(&auth, as_maker, &id0)),
        Err(RegistryError::UnknownDevice)
    ));
    assert!(matches!(
        rt.block_on(inkan_cloud::commands::issue(
            &auth,
            &maker,
            &rt.block_on(store.devices_in(&maker, 10, 0))
                .unwrap()
                .into_iter()
                .filter(|x| x.id == id0)
                .collect::<Vec<_>>(),
            "open",
            b"",
            60
        )),
        Err(inkan_cloud::commands::IssueError::NoTarget)
    ));
    // Not reflashed: it authenticates to its new owner, and is active.
    let a = exchange(&w, 0, &auth, &rt, &leaf_of(&w, 0).der, 0).unwrap();
    assert_eq!(a.device.tenant_id, buyer);
    let d = rt.block_on(store.device(&id0)).unwrap().unwrap();
    assert_eq!(d.state, DeviceState::Active);
    // The other device stays the maker's.
    let id1 = leaf_of(&w, 1).ueid().unwrap().to_hex();
    assert_eq!(
        rt.block_on(store.device(&id1)).unwrap().unwrap().tenant_id,
        maker
    );
    // The history kept what happened before.
    let h = rt
        .block_on(devices::history(&auth, as_buyer, &id0))
        .unwrap();
    assert!(h.iter().any(|e| e.kind == "transfer"));
    assert!(
        h.iter().any(|e| e.kind == "family"),
        "its enrolment is kept"
    );
}

/// Decommissioned online (it polls, erases, reports) and offline (told at
/// its next contact): either way the chip then refuses to sign and the
/// device never authenticates again.
fn decommissioned_devices_erase_their_secrets_online_and_offline(db: Db) {
    let w = world(&["thermo"], 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let auth = service(&w, &url(db, dir.path(), &rt), &rt);
    let store = &auth.registry.store;
    let tenant = rt.block_on(store.ensure_tenant("acme")).unwrap();
    rt.block_on(register_family(&w, &auth.registry, &tenant, "thermo"));
    let addr = start_server(&rt, auth.clone());
    let actor = Actor {
        tenant_id: &tenant,
        who: "test admin",
    };
    for (i, online) in [(0usize, true), (1, false)] {
        let d = driver(&w, i);
        let id = leaf_of(&w, i).ueid().unwrap().to_hex();
        let c = connect(d.clone(), addr, quick()).unwrap();
        let r = rt
            .block_on(devices::decommission(
                &auth,
                actor,
                &id,
                i == 1,
                "end of service",
            ))
            .unwrap();
        assert!(r.erase_command.is_some());
        // The session it had is over.
        let mut old = Uplink::new(&c, addr, quick()).unwrap();
        assert!(old.next_command().is_err(), "an ended session still works");
        // Online or at its next contact: it authenticates only to be told.
        if !online {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let c = connect(d.clone(), addr, quick()).unwrap();
        let mut up = Uplink::new(&c, addr, quick()).unwrap();
        assert!(
            up.send(&[inkan_proto::telemetry::Reading {
                time_ms: 1,
                channel: 0,
                value: vec![1],
            }])
            .is_err(),
            "a decommissioned device sends no readings"
        );
        let mut ex = Executed::open(None).unwrap();
        let mut act = |_: &inkan_proto::command::Command| -> Result<String, String> {
            Err("not an actuator command".into())
        };
        match poll_and_run(&mut up, &d, &mut ex, &mut act).unwrap() {
            Polled::Ran(cmd, inkan_proto::command::Outcome::Succeeded, detail) => {
                assert_eq!(cmd.action, inkan_proto::command::DECOMMISSION);
                assert!(detail.contains("terminated"), "{detail}");
            }
            other => panic!("the erase order did not run: {other:?}"),
        }
        // The chip refuses to sign, through the driver.
        assert!(d.lock().unwrap().sign(0, &[0u8; 32]).is_err());
        assert!(connect(d.clone(), addr, quick()).is_err());
        let row = rt.block_on(store.device(&id)).unwrap().unwrap();
        assert_eq!(row.state, DeviceState::Decommissioned);
        assert!(!row.erase_pending, "the erase was confirmed");
        // Its certificate is refused even when a chip that can sign
        // presents it (a copy of its key would be).
        let creds = rt.block_on(store.credentials_of(&id)).unwrap();
        assert!(creds.iter().all(|c| c.state == CredentialState::Revoked));
        let h = rt.block_on(devices::history(&auth, actor, &id)).unwrap();
        assert!(h.iter().any(|e| e.kind == "secrets-erased"));
        // No way back.
        assert!(matches!(
            rt.block_on(devices::act(&auth, actor, &id, Action::Resume, "x")),
            Err(RegistryError::Lifecycle(_))
        ));
    }
    let fam = rt.block_on(store.families()).unwrap();
    assert_eq!(rt.block_on(store.revocations(&fam[0].id)).unwrap().len(), 2);
}

/// A flood of message_1 the cloud refuses (an unsupported suite): audited,
/// but as counts per reason per interval, not a row per datagram.
fn refusals_at_message_1_are_audited_in_bounded_aggregates(db: Db) {
    let w = world(&["thermo"], 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let auth = service(&w, &url(db, dir.path(), &rt), &rt);
    let mut m1 = vec![0x00, 0x18, 0x63, 0x58, 0x20];
    m1.extend_from_slice(&[7u8; 32]);
    m1.push(0x37);
    for _ in 0..300 {
        assert!(rt.block_on(auth.message_1(&m1, "flood")).is_err());
    }
    let rows = || -> Vec<String> {
        rt.block_on(auth.registry.store.audit_tail(1000))
            .unwrap()
            .into_iter()
            .filter(|(k, s, o, _)| k == "authenticate" && s == "flood" && o == "refused")
            .map(|(_, _, _, d)| d)
            .collect()
    };
    let first = rows();
    assert_eq!(first.len(), 1, "one row for the interval so far: {first:?}");
    assert!(first[0].starts_with("1 x message_1: "), "{first:?}");
    // At the end of the interval, the rest as one aggregate.
    rt.block_on(auth.flush_refusals());
    let all = rows();
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(
        all.iter().any(|d| d.starts_with("299 x message_1: ")),
        "{all:?}"
    );
}
