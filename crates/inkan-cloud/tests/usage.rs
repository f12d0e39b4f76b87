//! Usage seen from the cloud: a device uses units counted down in its
//! chip and reports what is left in batches its chip signs; the operator
//! sees it per device and per family, and an alert enters the audit log
//! when a report falls below the family's level. Attacks: an unsigned
//! usage reading, a report that rises (an old reading replayed in a new
//! batch, or a host inflating), a report altered after the chip signed
//! it, a malformed value, another tenant reading
//! the usage — each refused with its reason; a power cut between a
//! decrement and its report.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;
use common::world::*;
use common::Db;

use inkan_device::usage;
use inkan_device::{connect, Uplink, UplinkError};

on_both_stores!(usage_is_reported_signed_never_rises_and_alerts);

fn refused_with(r: Result<u64, UplinkError>, want: &str) {
    match r {
        Err(UplinkError::Refused { code, detail }) => {
            assert_eq!(code, "4.00", "{detail}");
            assert!(detail.contains(want), "expected {want:?}, got {detail:?}");
        }
        other => panic!("expected a refusal with {want:?}, got {other:?}"),
    }
}

fn usage_is_reported_signed_never_rises_and_alerts(db: Db) {
    let w = world_profiled(
        &["pump"],
        1,
        false,
        inkan_factory::FamilyProfile {
            accessory: false,
            usage_limit: Some(10),
        },
    );
    let Scene {
        rt,
        app,
        tenant,
        families,
        addr,
        _dir,
    } = scene(&w, db, inkan_cloud::Limits::default());
    let family = families[0].clone();
    let api = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(inkan_cloud::api::serve(l, app.clone()));
        base
    });
    let token = |tenant: &str| {
        rt.block_on(inkan_cloud::api::create_token(
            &app.registry.store,
            tenant,
            inkan_cloud::api::Role::Operator,
        ))
        .unwrap()
    };
    let ours = token(&tenant);
    let call = |req: ureq::Request, body: Option<serde_json::Value>, tok: &str| {
        let req = req.set("Authorization", &format!("Bearer {tok}"));
        let r = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match r {
            Ok(r) => (r.status(), r.into_json::<serde_json::Value>().unwrap()),
            Err(ureq::Error::Status(c, r)) => (c, r.into_json().unwrap_or_default()),
            Err(e) => panic!("{e}"),
        }
    };
    let (code, _) = call(
        ureq::put(&format!("{api}/v1/families/{family}/usage-alert")),
        Some(serde_json::json!({ "below": 5 })),
        &ours,
    );
    assert_eq!(code, 200);

    // Three doses, counted down in the chip, then reported.
    let d = driver(&w, 0);
    assert_eq!(usage::consume(&mut d.lock().unwrap(), 3).unwrap(), 7);
    let c = connect(d.clone(), addr, quick()).unwrap();
    let mut up = Uplink::new(&c, addr, quick()).unwrap();
    assert_eq!(up.report_usage(&d).unwrap(), Some(7));
    let (_, devices) = call(ureq::get(&format!("{api}/v1/devices")), None, &ours);
    let id = devices[0]["id"].as_str().unwrap().to_string();
    let (code, u) = call(
        ureq::get(&format!("{api}/v1/devices/{id}/usage")),
        None,
        &ours,
    );
    assert_eq!(code, 200, "{u}");
    assert_eq!(
        (u["remaining"].as_i64(), u["first_remaining"].as_i64()),
        (Some(7), Some(7))
    );
    let alerts = |app: &inkan_cloud::App| {
        rt.block_on(app.registry.store.audit_tail(200))
            .unwrap()
            .into_iter()
            .filter(|(k, _, _, _)| k == "usage-alert")
            .count()
    };
    assert_eq!(alerts(&app), 0, "7 is not below 5");

    // Three more: 4 left, below the level: one alert.
    assert_eq!(usage::consume(&mut d.lock().unwrap(), 3).unwrap(), 4);
    assert_eq!(up.report_usage(&d).unwrap(), Some(4));
    assert_eq!(alerts(&app), 1);
    // The same value again (a retry) is taken, and raises no second alert.
    assert_eq!(up.report_usage(&d).unwrap(), Some(4));
    assert_eq!(alerts(&app), 1);

    // A power cut between a decrement and its report: the next session
    // reports what the chip holds, which is never more.
    assert_eq!(usage::consume(&mut d.lock().unwrap(), 1).unwrap(), 3);
    drop(up);
    let c = connect(d.clone(), addr, quick()).unwrap();
    let mut up = Uplink::new(&c, addr, quick()).unwrap();
    assert_eq!(up.report_usage(&d).unwrap(), Some(3));

    let now = 1_760_000_000_000;
    // Unsigned: refused, nothing of the batch stored.
    refused_with(
        up.send(&[usage::reading(2, now)]),
        "only in batches signed by the secure element",
    );
    // Rising (a host inflating, or the first report replayed in a new
    // batch): refused, even signed by the genuine chip.
    refused_with(
        up.send_signed(&[usage::reading(7, now)], &d),
        "usage rose from 3 to 7",
    );
    // Altered on the way (a signed report whose value is changed after the
    // chip signed it, inside a valid OSCORE request): the signature fails.
    let batch = inkan_proto::telemetry::encode_batch(&[usage::reading(3, now)]);
    let mut signed = inkan_proto::telemetry::sign_batch(&batch, false, |tbs| {
        use inkan_proto::edhoc::crypto::SignatureKey;
        inkan_device::SeSigner::new(d.clone()).sign(tbs)
    })
    .unwrap();
    let at = signed
        .windows(4)
        .position(|w| w == 3u32.to_be_bytes())
        .unwrap();
    signed[at + 3] = 2;
    match up.request(
        coap_lite::RequestType::Post,
        inkan_proto::resources::TELEMETRY,
        signed,
    ) {
        Err(UplinkError::Refused { code, detail }) => {
            assert_eq!(code, "4.00");
            assert!(detail.contains("signature"), "{detail}");
        }
        other => panic!("an altered usage report was taken: {other:?}"),
    }
    // Malformed.
    let bad = inkan_proto::telemetry::Reading {
        time_ms: now,
        channel: inkan_proto::telemetry::USAGE_CHANNEL,
        value: vec![0, 0, 4],
    };
    refused_with(up.send_signed(&[bad], &d), "4 bytes");
    let (_, u) = call(
        ureq::get(&format!("{api}/v1/devices/{id}/usage")),
        None,
        &ours,
    );
    assert_eq!(u["remaining"].as_i64(), Some(3));
    assert_eq!(u["reports"].as_i64(), Some(4));
    let audit = rt.block_on(app.registry.store.audit_tail(200)).unwrap();
    assert!(audit
        .iter()
        .any(|(k, _, o, detail)| k == "oscore" && o == "refused" && detail.contains("usage rose")));

    // The family's view: units used since the first report.
    let (code, f) = call(
        ureq::get(&format!("{api}/v1/families/{family}/usage")),
        None,
        &ours,
    );
    assert_eq!(code, 200, "{f}");
    assert_eq!(f["used"].as_i64(), Some(4));
    assert_eq!(f["alert_below"].as_i64(), Some(5));
    assert_eq!(f["devices"].as_array().unwrap().len(), 1);

    // Another tenant sees neither.
    let other = rt
        .block_on(app.registry.store.ensure_tenant("other"))
        .unwrap();
    let theirs = token(&other);
    for path in [
        format!("/v1/devices/{id}/usage"),
        format!("/v1/families/{family}/usage"),
    ] {
        let (code, _) = call(ureq::get(&format!("{api}{path}")), None, &theirs);
        assert_eq!(code, 404, "{path}");
    }
    let (code, _) = call(
        ureq::put(&format!("{api}/v1/families/{family}/usage-alert")),
        Some(serde_json::json!({ "below": 1 })),
        &theirs,
    );
    assert_eq!(code, 404);
}
