//! Hostile load on the device endpoint: duplicates that arrive while the
//! first copy is still being handled, and many concurrent requests of one
//! OSCORE session.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;
use common::world::*;
use common::Db;

use inkan_cloud::{App, Limits, Registry, Store};
use inkan_device::connect;
use inkan_proto::oscore::{ContextParams, SecurityContext};
use std::sync::Arc;
use std::time::Duration;

on_both_stores!(
    a_duplicate_in_flight_is_answered_once_and_handled_once,
    concurrent_requests_of_one_session_are_all_served,
    a_reading_time_no_export_can_reach_is_refused,
    handshake_messages_sent_as_ack_or_reset_are_ignored,
    a_command_the_device_cannot_take_stops_blocking_the_queue,
    audit_entries_past_the_retention_are_deleted,
    a_flooding_source_is_shed_and_others_still_authenticate,
    one_source_cannot_fill_the_pending_exchanges_of_all,
    under_load_message_1_waits_for_an_echo_and_keeps_nothing,
    a_duplicated_protected_request_is_stored_once_and_answered_alike
);

fn app(w: &World, db: Db, dir: &std::path::Path, rt: &tokio::runtime::Runtime) -> Arc<App> {
    let url = rt.block_on(common::db_url(db, dir));
    let store = rt.block_on(Store::open(&url)).unwrap();
    Arc::new(App::new(
        Registry::new(store),
        identity(&w.cloud_key),
        Limits::default(),
    ))
}

/// The same message_1 datagram twice, back to back (a proxy duplicating
/// datagrams): one exchange is made, and both copies get the same answer.
fn a_duplicate_in_flight_is_answered_once_and_handled_once(db: Db) {
    let w = world(&["thermo"], 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = app(&w, db, dir.path(), &rt);
    let addr = start_server(&rt, app.clone());
    let (_, m1) = inkan_proto::edhoc::Initiator::start(
        inkan_proto::edhoc::Suite::P256Es256,
        inkan_proto::edhoc::ConnId(vec![0x05]),
        &[],
        Box::new(inkan_proto::edhoc::crypto::SoftwareEphemeral::generate(
            inkan_proto::edhoc::Suite::P256Es256,
        )),
    );
    let datagram =
        inkan_proto::coap::request(0x4242, &[0xa1], inkan_proto::coap::message_1_payload(&m1))
            .unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(addr).unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    udp.send(&datagram).unwrap();
    udp.send(&datagram).unwrap();
    let mut answers = Vec::new();
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = udp.recv(&mut buf) {
        answers.push(buf[..n].to_vec());
        udp.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
    }
    assert!(
        answers.len() >= 2,
        "each copy is answered: {}",
        answers.len()
    );
    assert!(answers.iter().all(|a| a == &answers[0]), "the same answer");
    assert_eq!(
        rt.block_on(app.registry.store.pending_exchanges()).unwrap(),
        1,
        "the duplicate was not handled a second time"
    );
}

/// 30 valid requests of one session (all inside the 32-entry replay window
/// of RFC 8613) sent at once from 30 sockets: every one is stored and
/// acknowledged (never a 5.00), the readings all there.
fn concurrent_requests_of_one_session_are_all_served(db: Db) {
    let w = world(&["thermo"], 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = app(&w, db, dir.path(), &rt);
    let tenant = rt
        .block_on(app.registry.store.ensure_tenant("acme"))
        .unwrap();
    rt.block_on(register_family(&w, &app.registry, &tenant, "thermo"));
    let addr = start_server(&rt, app.clone());
    let c = connect(driver(&w, 0), addr, quick()).unwrap();
    let mut ctx = SecurityContext::derive(
        &ContextParams::from_edhoc(&c.session, true, &c.c_i, &c.c_r).unwrap(),
    )
    .unwrap();
    let requests: Vec<Vec<u8>> = (0..30u8)
        .map(|k| {
            let p = telemetry_request(
                0x700 + u16::from(k),
                &[9, 9, k],
                &[inkan_proto::telemetry::Reading {
                    time_ms: 1_700_000_000_000 + u64::from(k),
                    channel: 1,
                    value: vec![k],
                }],
            );
            ctx.protect_request(&p).unwrap().0.to_bytes().unwrap()
        })
        .collect();
    let barrier = Arc::new(std::sync::Barrier::new(requests.len()));
    let codes: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = requests
            .iter()
            .map(|r| {
                let barrier = barrier.clone();
                s.spawn(move || {
                    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                    udp.connect(addr).unwrap();
                    udp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    barrier.wait();
                    udp.send(r).unwrap();
                    let mut buf = vec![0u8; 4096];
                    let n = udp.recv(&mut buf).unwrap();
                    let p = coap_lite::Packet::from_bytes(&buf[..n]).unwrap();
                    let code = p.header.code.to_string();
                    if code == "2.04" {
                        code
                    } else {
                        format!("{code} {}", String::from_utf8_lossy(&p.payload))
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        codes.iter().all(|c| c == "2.04"),
        "every request served: {codes:?}"
    );
    let stored = rt
        .block_on(
            app.registry
                .store
                .readings(&tenant, None, None, 0, i64::MAX, None, 100),
        )
        .unwrap();
    assert_eq!(stored.len(), 30);
}

/// A reading stamped at 2^63−1 ms would be stored where no export reaches
/// it: refused (4.00), nothing stored; the latest time accepted (year 9999)
/// is stored and exported.
fn a_reading_time_no_export_can_reach_is_refused(db: Db) {
    use inkan_proto::telemetry::{Reading, MAX_TIME_MS};
    let w = world(&["thermo"], 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = app(&w, db, dir.path(), &rt);
    let tenant = rt
        .block_on(app.registry.store.ensure_tenant("acme"))
        .unwrap();
    rt.block_on(register_family(&w, &app.registry, &tenant, "thermo"));
    let addr = start_server(&rt, app.clone());
    let c = connect(driver(&w, 0), addr, quick()).unwrap();
    let mut up = inkan_device::Uplink::new(&c, addr, quick()).unwrap();
    let at = |t: u64| Reading {
        time_ms: t,
        channel: 0,
        value: vec![1],
    };
    match up.send(&[at(i64::MAX as u64)]) {
        Err(inkan_device::UplinkError::Refused { code, detail }) => {
            assert_eq!(code, "4.00");
            assert!(detail.contains("after year 9999"), "{detail}");
        }
        other => panic!("an unexportable time was accepted: {other:?}"),
    }
    assert_eq!(up.send(&[at(MAX_TIME_MS)]).unwrap(), 1);
    let stored = rt
        .block_on(
            app.registry
                .store
                .readings(&tenant, None, None, 0, i64::MAX, None, 100),
        )
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].key.time, i64::try_from(MAX_TIME_MS).unwrap());
}

/// A message_1 sent as an Acknowledgement or a Reset is not a request
/// (RFC 7252 §4.2, §4.3): nothing is processed, nothing answered; the same
/// bytes as a Confirmable request are answered.
fn handshake_messages_sent_as_ack_or_reset_are_ignored(db: Db) {
    let w = world(&["thermo"], 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = app(&w, db, dir.path(), &rt);
    let addr = start_server(&rt, app.clone());
    let suite = inkan_proto::edhoc::Suite::P256Es256;
    let (_, m1) = inkan_proto::edhoc::Initiator::start(
        suite,
        inkan_proto::edhoc::ConnId(vec![0x06]),
        &[],
        Box::new(inkan_proto::edhoc::crypto::SoftwareEphemeral::generate(
            suite,
        )),
    );
    let con =
        inkan_proto::coap::request(0x1111, &[0xb2], inkan_proto::coap::message_1_payload(&m1))
            .unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(addr).unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut buf = vec![0u8; 4096];
    for (kind, t) in [("ACK", 2u8), ("RST", 3u8)] {
        let mut d = con.clone();
        d[0] = (d[0] & 0xCF) | (t << 4);
        d[2] ^= t; // another message id, not a duplicate of anything
        udp.send(&d).unwrap();
        assert!(udp.recv(&mut buf).is_err(), "a {kind} was answered");
    }
    assert_eq!(
        rt.block_on(app.registry.store.pending_exchanges()).unwrap(),
        0
    );
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    udp.send(&con).unwrap();
    assert!(udp.recv(&mut buf).is_ok());
    assert_eq!(
        rt.block_on(app.registry.store.pending_exchanges()).unwrap(),
        1
    );
}

/// A command delivered again and again without a result (the device
/// cannot parse it, or fails before reporting) is set aside as refused
/// after three deliveries; the command queued behind it is delivered.
fn a_command_the_device_cannot_take_stops_blocking_the_queue(db: Db) {
    let w = world(&["thermo"], 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = rt.block_on(common::db_url(db, dir.path()));
    let key = inkan_pki::SoftwareKey::load(
        &w.factory.dir().join("keys/dev-cloud-command.key.pem"),
        b"pw",
    )
    .unwrap();
    let app = Arc::new(
        App::new(
            Registry::new(rt.block_on(Store::open(&url)).unwrap()),
            identity(&w.cloud_key),
            Limits::default(),
        )
        .with_command_key(Box::new(key)),
    );
    let tenant = rt
        .block_on(app.registry.store.ensure_tenant("acme"))
        .unwrap();
    rt.block_on(register_family(&w, &app.registry, &tenant, "thermo"));
    let addr = start_server(&rt, app.clone());
    let c = connect(driver(&w, 0), addr, quick()).unwrap();
    let mut up = inkan_device::Uplink::new(&c, addr, quick()).unwrap();
    let dev = rt
        .block_on(app.registry.store.devices_in(&tenant, 10, 0))
        .unwrap()
        .remove(0);
    let issue = |action: &str| {
        rt.block_on(inkan_cloud::commands::issue(
            &app,
            &tenant,
            std::slice::from_ref(&dev),
            action,
            b"",
            300,
        ))
        .unwrap()
        .remove(0)
        .0
    };
    let stuck = issue("jam");
    std::thread::sleep(Duration::from_millis(5));
    let next = issue("open");
    let id_of = |cose: &[u8]| hex::encode(inkan_proto::command::Command::open(cose).unwrap().0.id);
    for _ in 0..3 {
        let cose = up.next_command().unwrap().unwrap();
        assert_eq!(
            id_of(&cose),
            stuck,
            "delivered again while it has no result"
        );
    }
    let cose = up.next_command().unwrap().unwrap();
    assert_eq!(id_of(&cose), next, "the queue moves on");
    let rows = rt
        .block_on(app.registry.store.commands(&tenant, None, 100))
        .unwrap();
    let set_aside = rows.iter().find(|r| r.id == stuck).unwrap();
    assert_eq!(set_aside.state.as_str(), "refused");
    assert!(set_aside
        .result
        .as_deref()
        .unwrap()
        .contains("no result after 3 deliveries"));
}

/// Audit entries older than the retention are deleted; newer ones stay.
fn audit_entries_past_the_retention_are_deleted(db: Db) {
    let w = world(&["thermo"], 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = rt.block_on(common::db_url(db, dir.path()));
    let app = App::new(
        Registry::new(rt.block_on(Store::open(&url)).unwrap()),
        identity(&w.cloud_key),
        Limits::default(),
    )
    .with_audit_retention(Duration::from_millis(300));
    let store = &app.registry.store;
    for k in 0..5 {
        rt.block_on(store.audit(None, "test", &format!("old {k}"), "ok", ""))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(400));
    rt.block_on(store.audit(None, "test", "new", "ok", ""))
        .unwrap();
    assert_eq!(rt.block_on(app.purge_audit()).unwrap(), 5);
    let left = rt.block_on(store.audit_tail(100)).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].1, "new");
}

/// One source floods message_1 far past its budget: its excess is shed
/// before parsing (few exchanges stored, the sheds counted in the audit
/// log), and a device from another address authenticates meanwhile.
fn a_flooding_source_is_shed_and_others_still_authenticate(db: Db) {
    let w = world(&["thermo"], 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = rt.block_on(common::db_url(db, dir.path()));
    let app = Arc::new(App::new(
        Registry::new(rt.block_on(Store::open(&url)).unwrap()),
        identity(&w.cloud_key),
        Limits {
            source_rate: 100,
            ..Limits::default()
        },
    ));
    let tenant = rt
        .block_on(app.registry.store.ensure_tenant("acme"))
        .unwrap();
    rt.block_on(register_family(&w, &app.registry, &tenant, "thermo"));
    let addr = start_server(&rt, app.clone());
    let suite = inkan_proto::edhoc::Suite::P256Es256;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = std::time::Instant::now();
    let flooder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let udp = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
            let mut sent = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (_, m1) = inkan_proto::edhoc::Initiator::start(
                    suite,
                    inkan_proto::edhoc::ConnId(vec![0x07]),
                    &[],
                    Box::new(inkan_proto::edhoc::crypto::SoftwareEphemeral::generate(
                        suite,
                    )),
                );
                let d = inkan_proto::coap::request(
                    u16::try_from(sent % 65_536).unwrap(),
                    &[0xf1],
                    inkan_proto::coap::message_1_payload(&m1),
                )
                .unwrap();
                let _ = udp.send_to(&d, addr);
                sent += 1;
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    // A device from another address authenticates during the flood.
    connect(driver(&w, 0), addr, quick()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = flooder.join().unwrap();
    let secs = started.elapsed().as_secs_f64();
    // The endpoint hands its shed counts to the audit tally once a second.
    std::thread::sleep(Duration::from_millis(1200));
    rt.block_on(app.flush_refusals());
    let pending = rt.block_on(app.registry.store.pending_exchanges()).unwrap();
    // The device's own exchange is done; the flood's are what its budget
    // allowed: a burst of 200 and 100 per second.
    let allowed = 200.0 + 100.0 * secs + 10.0;
    assert!(
        (pending as f64) <= allowed && u64::from(sent) > 2 * u64::try_from(pending).unwrap(),
        "{pending} exchanges stored for {sent} flood datagrams in {secs:.2} s (allowed {allowed:.0})"
    );
    let audit = rt.block_on(app.registry.store.audit_tail(1000)).unwrap();
    assert!(
        audit.iter().any(|(k, s, o, d)| k == "datagram"
            && s == "127.0.0.2"
            && o == "refused"
            && d.contains("shed")),
        "the sheds are in the audit log"
    );
}

/// The pending-exchange cap is shared: one source holds at most an eighth
/// of it, so a flood of message_1 that never completes leaves room for the
/// devices of every other address.
fn one_source_cannot_fill_the_pending_exchanges_of_all(db: Db) {
    let w = world(&["thermo"], 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = rt.block_on(common::db_url(db, dir.path()));
    let app = Arc::new(App::new(
        Registry::new(rt.block_on(Store::open(&url)).unwrap()),
        identity(&w.cloud_key),
        Limits {
            max_pending: 80,
            ..Limits::default()
        },
    ));
    let tenant = rt
        .block_on(app.registry.store.ensure_tenant("acme"))
        .unwrap();
    rt.block_on(register_family(&w, &app.registry, &tenant, "thermo"));
    let suite = inkan_proto::edhoc::Suite::P256Es256;
    let mut busy = 0;
    for _ in 0..100 {
        let (_, m1) = inkan_proto::edhoc::Initiator::start(
            suite,
            inkan_proto::edhoc::ConnId(vec![0x08]),
            &[],
            Box::new(inkan_proto::edhoc::crypto::SoftwareEphemeral::generate(
                suite,
            )),
        );
        if let Err((inkan_cloud::AuthError::Busy, _)) =
            rt.block_on(app.message_1(&m1, "127.0.0.2:4000"))
        {
            busy += 1;
        }
    }
    let pending = rt.block_on(app.registry.store.pending_exchanges()).unwrap();
    assert_eq!(pending, 10, "the flooding source holds its share of 80/8");
    assert_eq!(busy, 90);
    // A device from another address still authenticates.
    let addr = start_server(&rt, app.clone());
    connect(driver(&w, 0), addr, quick()).unwrap();
}

/// Past the Echo rate (here 0: always), a message_1 from an address that
/// has not shown it receives gets a 4.01 with an Echo value and leaves no
/// exchange behind (a spoofed flood costs one small answer each); a forged
/// or another address's value is asked again; the right one proceeds; a
/// device repeats the value by itself and authenticates.
fn under_load_message_1_waits_for_an_echo_and_keeps_nothing(db: Db) {
    let w = world(&["thermo"], 1);
    let Scene {
        rt,
        app,
        addr,
        _dir,
        ..
    } = scene(
        &w,
        db,
        Limits {
            echo_rate: 0,
            ..Limits::default()
        },
    );
    let suite = inkan_proto::edhoc::Suite::P256Es256;
    let (_, m1) = inkan_proto::edhoc::Initiator::start(
        suite,
        inkan_proto::edhoc::ConnId(vec![0x09]),
        &[],
        Box::new(inkan_proto::edhoc::crypto::SoftwareEphemeral::generate(
            suite,
        )),
    );
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(addr).unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut mid = 0x6000u16;
    let mut send = |echo: Option<&[u8]>| {
        mid += 1;
        let d = inkan_proto::coap::request_echo(
            mid,
            &[0xe1],
            inkan_proto::coap::message_1_payload(&m1),
            echo,
        )
        .unwrap();
        udp.send(&d).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = udp.recv(&mut buf).unwrap();
        (
            d.len(),
            inkan_proto::coap::parse_response(&buf[..n]).unwrap(),
        )
    };
    let (sent, rsp) = send(None);
    assert_eq!(rsp.code, "4.01");
    assert!(rsp.payload.is_empty());
    let echo = rsp.echo_challenge().expect("an Echo to repeat").to_vec();
    assert!(echo.len() < sent, "the answer is smaller than the request");
    assert_eq!(
        rt.block_on(app.registry.store.pending_exchanges()).unwrap(),
        0
    );
    // Another address's value, a changed value: asked again, nothing kept.
    let elsewhere = app.echo_for("127.0.0.1:9".parse().unwrap());
    let mut changed = echo.clone();
    changed[11] ^= 1;
    for bad in [elsewhere, changed] {
        let (_, rsp) = send(Some(&bad));
        assert_eq!(rsp.code, "4.01");
        assert!(rsp.echo_challenge().is_some());
    }
    assert_eq!(
        rt.block_on(app.registry.store.pending_exchanges()).unwrap(),
        0
    );
    // The value it was given: message_2.
    let (_, rsp) = send(Some(&echo));
    assert_eq!(rsp.code, "2.04");
    assert!(!rsp.payload.is_empty());
    assert_eq!(
        rt.block_on(app.registry.store.pending_exchanges()).unwrap(),
        1
    );
    // A device does all of it by itself.
    let c = connect(driver(&w, 0), addr, quick()).unwrap();
    let mut up = inkan_device::Uplink::new(&c, addr, quick()).unwrap();
    assert_eq!(
        up.send(&[inkan_proto::telemetry::Reading {
            time_ms: 1_700_000_000_000,
            channel: 1,
            value: b"20.5".to_vec(),
        }])
        .unwrap(),
        1
    );
}

/// A protected telemetry request duplicated on the way (same datagram
/// twice, back to back): stored once, both copies answered with the same
/// 2.04 — never a 5.00 from the store, never a replay refusal.
fn a_duplicated_protected_request_is_stored_once_and_answered_alike(db: Db) {
    let w = world(&["thermo"], 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = app(&w, db, dir.path(), &rt);
    let tenant = rt
        .block_on(app.registry.store.ensure_tenant("acme"))
        .unwrap();
    rt.block_on(register_family(&w, &app.registry, &tenant, "thermo"));
    let addr = start_server(&rt, app.clone());
    let c = connect(driver(&w, 0), addr, quick()).unwrap();
    let mut ctx = SecurityContext::derive(
        &ContextParams::from_edhoc(&c.session, true, &c.c_i, &c.c_r).unwrap(),
    )
    .unwrap();
    let p = telemetry_request(
        0x0bad,
        &[4, 2],
        &[inkan_proto::telemetry::Reading {
            time_ms: 1_700_000_000_000,
            channel: 2,
            value: vec![7],
        }],
    );
    let datagram = ctx.protect_request(&p).unwrap().0.to_bytes().unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(addr).unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    udp.send(&datagram).unwrap();
    udp.send(&datagram).unwrap();
    let mut answers = Vec::new();
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = udp.recv(&mut buf) {
        answers.push(buf[..n].to_vec());
        udp.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
    }
    assert!(answers.len() >= 2, "each copy is answered");
    assert!(answers.iter().all(|a| a == &answers[0]), "the same answer");
    let code = coap_lite::Packet::from_bytes(&answers[0])
        .unwrap()
        .header
        .code
        .to_string();
    assert_eq!(code, "2.04");
    let stored = rt
        .block_on(
            app.registry
                .store
                .readings(&tenant, None, None, 0, i64::MAX, None, 100),
        )
        .unwrap();
    assert_eq!(stored.len(), 1);
}
