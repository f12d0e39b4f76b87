//! The service's Prometheus metrics, scraped over HTTP after real traffic:
//! an authentication by suite, the readings stored, a refused message_3 by
//! reason, and the active sessions read from the store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;
use common::world::*;
use common::Db;

on_both_stores!(metrics_count_what_happened);

fn metrics_count_what_happened(db: Db) {
    let w = world(&["thermo"], 1);
    let Scene {
        rt,
        app,
        addr,
        _dir,
        ..
    } = scene(&w, db, inkan_cloud::Limits::default());
    let url = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/metrics", l.local_addr().unwrap());
        tokio::spawn(inkan_cloud::metrics::serve(l, app.clone()));
        url
    });
    let scrape = || {
        let r = ureq::get(&url).call().unwrap();
        assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4"));
        r.into_string().unwrap()
    };
    let before = scrape();
    assert!(
        before.contains("inkan_authentications_total{suite=\"2\"} 0\n"),
        "{before}"
    );
    assert!(before.contains("inkan_active_sessions 0\n"), "{before}");

    // A device authenticates (suite 2) and stores three readings.
    let d = driver(&w, 0);
    let c = inkan_device::connect(d, addr, quick()).unwrap();
    let mut up = inkan_device::Uplink::new(&c, addr, quick()).unwrap();
    let readings: Vec<_> = (0..3)
        .map(|i| inkan_proto::telemetry::Reading {
            time_ms: 1_760_000_000_000 + i,
            channel: 1,
            value: vec![1, 2],
        })
        .collect();
    assert_eq!(up.send(&readings).unwrap(), 3);
    // A message_3 for an exchange that does not exist.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(addr).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let m3 = inkan_proto::coap::message_3_payload(
        &inkan_proto::edhoc::ConnId(vec![1, 2, 3, 4, 5, 6, 7]),
        &inkan_proto::cbor::bstr_vec(&[0u8; 20]),
    );
    sock.send(&inkan_proto::coap::request(0x7777, &[9], m3).unwrap())
        .unwrap();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).unwrap();
    assert!(
        !inkan_proto::coap::parse_response(&buf[..n])
            .unwrap()
            .success
    );

    let after = scrape();
    for line in [
        "inkan_authentications_total{suite=\"2\"} 1\n",
        "inkan_authentications_total{suite=\"0\"} 0\n",
        "inkan_readings_ingested_total 3\n",
        "inkan_refusals_total{kind=\"message_3\",reason=\"unknown exchange\"} 1\n",
        "inkan_active_sessions 1\n",
        "# TYPE inkan_refusals_total counter\n",
    ] {
        assert!(after.contains(line), "missing {line:?} in\n{after}");
    }
}
