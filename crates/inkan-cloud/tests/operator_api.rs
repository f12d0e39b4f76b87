//! The operator API: bearer tokens bound to a tenant and a role, checked on
//! every endpoint and audited; another tenant's objects are invisible. Runs
//! on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;
use common::{db_url, Db};

use inkan_cloud::api::{create_token, DeviceView, Role};
use inkan_cloud::{App, CloudIdentity, Limits, Registry, Store};
use inkan_pki::{cert, CaSigner, CertPolicy, DeviceProfile, KeyCurve, SoftwareKey};
use serde_json::json;
use std::sync::Arc;

struct Api {
    base: String,
    store: Store,
    _rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn api(db: Db) -> Api {
    api_with(db, inkan_cloud::api::HttpLimits::default())
}

fn api_with(db: Db, limits: inkan_cloud::api::HttpLimits) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (base, store) = rt.block_on(async {
        let store = Store::open(&db_url(db, dir.path()).await).await.unwrap();
        let k = SoftwareKey::generate(KeyCurve::P256);
        let c = cert::issue_root(&k, "o", "cloud", &CertPolicy::default()).unwrap();
        let SoftwareKey::P256(sk) = &k else { panic!() };
        let auth = Arc::new(App::new(
            Registry::new(store.clone()),
            CloudIdentity::new(&sk.to_bytes(), &c.der).unwrap(),
            Limits::default(),
        ));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(inkan_cloud::api::serve_with(l, auth, limits));
        (base, store)
    });
    Api {
        base,
        store,
        _rt: rt,
        _dir: dir,
    }
}

impl Api {
    fn token(&self, tenant: &str, role: Role) -> String {
        self._rt.block_on(async {
            let t = self.store.ensure_tenant(tenant).await.unwrap();
            create_token(&self.store, &t, role).await.unwrap()
        })
    }

    fn get(&self, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        let mut r = ureq::get(&format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.set("Authorization", &format!("Bearer {t}"));
        }
        done(r.call())
    }

    fn post(&self, path: &str, token: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        done(
            ureq::post(&format!("{}{path}", self.base))
                .set("Authorization", &format!("Bearer {token}"))
                .send_json(body),
        )
    }
}

fn done(r: Result<ureq::Response, ureq::Error>) -> (u16, serde_json::Value) {
    match r {
        Ok(r) => (r.status(), r.into_json().unwrap_or(json!(null))),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(json!(null))),
        Err(e) => panic!("transport: {e}"),
    }
}

/// A family CA: its key and certificate.
struct Family {
    key: SoftwareKey,
    cert: inkan_pki::IssuedCert,
}

fn family() -> Family {
    let policy = CertPolicy::default();
    let rk = SoftwareKey::generate(KeyCurve::P256);
    let root = cert::issue_root(&rk, "o", "r", &policy).unwrap();
    let key = SoftwareKey::generate(KeyCurve::P256);
    let cert = cert::issue_family(&rk, &root, &key.public_point(), "o", "f", &policy).unwrap();
    Family { key, cert }
}

impl Api {
    /// Registers a family over the API, with proof of possession.
    fn register_family(&self, token: &str, f: &Family) -> (u16, serde_json::Value) {
        let (_, ch) = self.post(
            "/v1/families/challenge",
            token,
            json!({ "certificate_pem": f.cert.to_pem() }),
        );
        let challenge = hex::decode(ch["challenge_hex"].as_str().unwrap()).unwrap();
        let proof = inkan_pki::signer::sign_raw(&f.key, &challenge).unwrap();
        self.post(
            "/v1/families",
            token,
            json!({ "name": "f", "certificate_pem": f.cert.to_pem(), "proof_hex": hex::encode(proof) }),
        )
    }
}

fn device_pem(f: &Family, serial: &str) -> String {
    let policy = CertPolicy::default();
    let (fk, fam) = (&f.key, &f.cert);
    let dk = SoftwareKey::generate(KeyCurve::P256);
    let profile = DeviceProfile {
        serial: serial.into(),
        organization: "o".into(),
        family: "f".into(),
        key_agreement: true,
        ueid: None,
    };
    cert::issue_device(fk, fam, &dk.public_point(), &profile, &policy)
        .unwrap()
        .to_pem()
}

fn tokens_roles_and_tenants(db: Db) {
    let a = api(db);
    let admin_a = a.token("tenant-a", Role::Admin);
    let operator_a = a.token("tenant-a", Role::Operator);
    let viewer_a = a.token("tenant-a", Role::Viewer);
    let admin_b = a.token("tenant-b", Role::Admin);

    // No token, a malformed one, a wrong secret: 401, and the bad secret is audited.
    assert_eq!(a.get("/v1/devices", None).0, 401);
    assert_eq!(a.get("/v1/devices", Some("not-a-token")).0, 401);
    let (id, _) = admin_a.trim_start_matches("ink_").split_once('_').unwrap();
    assert_eq!(
        a.get(
            "/v1/devices",
            Some(&format!("ink_{id}_{}", "00".repeat(32)))
        )
        .0,
        401
    );

    // A device of a family nobody proved is claimed by no one.
    let fam = family();
    assert_eq!(
        a.post(
            "/v1/devices",
            &operator_a,
            json!({ "certificate_pem": device_pem(&fam, "AA01") }),
        )
        .0,
        403
    );
    assert_eq!(a.register_family(&admin_a, &fam).0, 200);
    // Now an operator registers a device; a viewer can read but not act.
    let (s, body) = a.post(
        "/v1/devices",
        &operator_a,
        json!({ "certificate_pem": device_pem(&fam, "AA01") }),
    );
    assert_eq!(s, 200, "{body}");
    let dev: DeviceView = serde_json::from_value(body).unwrap();
    assert_eq!(
        (
            dev.serial.as_str(),
            dev.status.as_str(),
            dev.enrolled_by.as_str()
        ),
        ("AA01", "registered", "individual")
    );
    assert_eq!(
        a.get(&format!("/v1/devices/{}", dev.id), Some(&viewer_a)).0,
        200
    );
    assert_eq!(
        a.post(
            &format!("/v1/devices/{}/suspend", dev.id),
            &viewer_a,
            json!({})
        )
        .0,
        403
    );
    assert_eq!(
        a.post(
            &format!("/v1/devices/{}/suspend", dev.id),
            &operator_a,
            json!({})
        )
        .1["status"],
        "suspended"
    );
    assert_eq!(
        a.post(
            &format!("/v1/devices/{}/reinstate", dev.id),
            &operator_a,
            json!({})
        )
        .1["status"],
        "active"
    );
    // Revocation needs an admin.
    assert_eq!(
        a.post(
            &format!("/v1/devices/{}/revoke", dev.id),
            &operator_a,
            json!({})
        )
        .0,
        403
    );
    assert_eq!(
        a.post(
            &format!("/v1/devices/{}/revoke", dev.id),
            &admin_a,
            json!({})
        )
        .1["status"],
        "revoked"
    );
    assert_eq!(
        a.post(
            &format!("/v1/devices/{}/reinstate", dev.id),
            &admin_a,
            json!({})
        )
        .0,
        409
    );
    // A duplicate registration is a conflict that names nothing (the
    // device could be another tenant's).
    let (code, body) = a.post(
        "/v1/devices",
        &operator_a,
        json!({ "certificate_pem": device_pem(&fam, "AA01") }),
    );
    assert_eq!(code, 409, "{body}");
    assert!(!body.to_string().contains("AA01"), "{body}");
    // Garbage is a clear 400.
    assert_eq!(
        a.post(
            "/v1/devices",
            &operator_a,
            json!({ "certificate_pem": device_pem(&fam, "AA02") })
        )
        .0,
        200
    );
    assert_eq!(a.post("/v1/devices", &operator_a, json!({ "certificate_pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n" })).0, 400);
    assert_eq!(
        a.post(
            &format!("/v1/devices/{}/explode", dev.id),
            &admin_a,
            json!({})
        )
        .0,
        400
    );

    // A NUL character anywhere is a clear 400 before the store sees it
    // (PostgreSQL would refuse it with an error of its own).
    for (code, body) in [
        a.get("/v1/devices/AB%00CD", Some(&viewer_a)),
        a.get("/v1/readings?device=%00", Some(&viewer_a)),
        a.post(
            "/v1/transfers",
            &admin_a,
            json!({ "to": "b\u{0}", "devices": [dev.id] }),
        ),
        a.post(
            &format!("/v1/devices/{}/decommission", dev.id),
            &admin_a,
            json!({ "reason": "x\u{0}y" }),
        ),
    ] {
        assert_eq!(code, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains("NUL"), "{body}");
    }
    // Tenant B sees none of A's devices, cannot act on them, and cannot
    // claim one of A's family (403, without saying whether it exists).
    assert_eq!(a.get("/v1/devices", Some(&admin_b)).1, json!([]));
    let (code, body) = a.post(
        "/v1/devices",
        &admin_b,
        json!({ "certificate_pem": device_pem(&fam, "AA03") }),
    );
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        a.get(&format!("/v1/devices/{}", dev.id), Some(&admin_b)).0,
        404
    );
    assert_eq!(
        a.post(
            &format!("/v1/devices/{}/suspend", dev.id),
            &admin_b,
            json!({})
        )
        .0,
        404
    );
    assert_eq!(
        a.get("/v1/devices", Some(&viewer_a))
            .1
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Tokens expire, are listed without their secrets, and are revoked;
    // an expired or revoked token is refused like an unknown one.
    let (s, short) = a.post(
        "/v1/tokens",
        &admin_a,
        json!({ "role": "viewer", "ttl_secs": 1 }),
    );
    assert_eq!(s, 200, "{short}");
    let short = short["token"].as_str().unwrap().to_string();
    assert_eq!(a.get("/v1/devices", Some(&short)).0, 200);
    assert_eq!(
        a.post(
            "/v1/tokens",
            &admin_a,
            json!({ "role": "viewer", "ttl_secs": -1 })
        )
        .0,
        400
    );
    let (s, doomed) = a.post("/v1/tokens", &admin_a, json!({ "role": "operator" }));
    assert_eq!(s, 200);
    let doomed = doomed["token"].as_str().unwrap().to_string();
    let doomed_id = doomed
        .trim_start_matches("ink_")
        .split_once('_')
        .unwrap()
        .0
        .to_string();
    assert_eq!(a.get("/v1/tokens", Some(&viewer_a)).0, 403);
    let (s, list) = a.get("/v1/tokens", Some(&admin_a));
    assert_eq!(s, 200);
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["id"] == doomed_id.as_str()));
    assert!(
        !list.to_string().contains(doomed.split('_').nth(2).unwrap()),
        "no secret listed"
    );
    assert_eq!(a.get("/v1/devices", Some(&doomed)).0, 200);
    assert_eq!(
        a.post(
            &format!("/v1/tokens/{doomed_id}/revoke"),
            &admin_b,
            json!({})
        )
        .0,
        404,
        "another tenant cannot revoke it"
    );
    assert_eq!(
        a.post(
            &format!("/v1/tokens/{doomed_id}/revoke"),
            &admin_a,
            json!({})
        )
        .0,
        200
    );
    assert_eq!(a.get("/v1/devices", Some(&doomed)).0, 401);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(a.get("/v1/devices", Some(&short)).0, 401);

    // Tokens: only an admin mints them, bound to its own tenant.
    assert_eq!(
        a.post("/v1/tokens", &operator_a, json!({ "role": "viewer" }))
            .0,
        403
    );
    let (s, t) = a.post("/v1/tokens", &admin_a, json!({ "role": "viewer" }));
    assert_eq!(s, 200);
    assert_eq!(
        a.get("/v1/devices", Some(t["token"].as_str().unwrap()))
            .1
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // A flood of bad tokens is counted, not written one row each.
    let before = a._rt.block_on(a.store.audit_tail(100_000)).unwrap().len();
    for _ in 0..200 {
        assert_eq!(a.get("/v1/devices", Some("ink_nosuch_00")).0, 401);
    }
    let after = a._rt.block_on(a.store.audit_tail(100_000)).unwrap().len();
    assert!(
        after - before <= 2,
        "{} audit rows for 200 refusals",
        after - before
    );

    // Every use is audited, per tenant.
    let (s, log) = a.get("/v1/audit?limit=500", Some(&viewer_a));
    assert_eq!(s, 200);
    let log = log.as_array().unwrap();
    assert!(log
        .iter()
        .any(|e| e["kind"] == "api" && e["outcome"] == "denied"));
    assert!(log
        .iter()
        .any(|e| e["kind"] == "device-revoke" && e["subject"] == "AA01"));
    assert!(log.iter().all(|e| e["subject"] != "tenant-b"));
    let (_, log_b) = a.get("/v1/audit?limit=500", Some(&admin_b));
    assert!(
        log_b
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["subject"] != "AA01"),
        "tenant B sees A's audit"
    );

    // The OpenAPI description is served.
    let (s, doc) = a.get("/openapi.json", None);
    assert_eq!(s, 200);
    assert!(
        doc["paths"]["/v1/devices/{id}/{action}"].is_object(),
        "{doc}"
    );
}

fn families_with_proof_of_possession(db: Db) {
    let a = api(db);
    let op_a = a.token("tenant-a", Role::Operator);
    let op_b = a.token("tenant-b", Role::Operator);
    let viewer_b = a.token("tenant-b", Role::Viewer);
    let policy = CertPolicy::default();
    let rk = SoftwareKey::generate(KeyCurve::P256);
    let root = cert::issue_root(&rk, "o", "r", &policy).unwrap();
    let fk = SoftwareKey::generate(KeyCurve::P256);
    let fam = cert::issue_family(&rk, &root, &fk.public_point(), "o", "thermo", &policy).unwrap();
    let (s, ch) = a.post(
        "/v1/families/challenge",
        &op_a,
        json!({ "certificate_pem": fam.to_pem() }),
    );
    assert_eq!(s, 200);
    let challenge = hex::decode(ch["challenge_hex"].as_str().unwrap()).unwrap();
    let proof = hex::encode(inkan_pki::signer::sign_raw(&fk, &challenge).unwrap());
    // Tenant B cannot reuse tenant A's proof.
    let (s, e) = a.post(
        "/v1/families",
        &op_b,
        json!({ "name": "thermo", "certificate_pem": fam.to_pem(), "proof_hex": proof }),
    );
    assert_eq!(s, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("proof of possession"));
    let (s, f) = a.post(
        "/v1/families",
        &op_a,
        json!({ "name": "thermo", "certificate_pem": fam.to_pem(), "proof_hex": proof }),
    );
    assert_eq!(s, 200, "{f}");
    assert_eq!(a.get("/v1/families", Some(&viewer_b)).1, json!([]));
    assert_eq!(
        a.post(
            &format!("/v1/families/{}/revoke", f["id"].as_str().unwrap()),
            &op_a,
            json!({})
        )
        .0,
        403
    );

    // The family's CRL: imported by an operator of its tenant, shown in
    // its revocation list; invisible to another tenant; no replay.
    let fid = f["id"].as_str().unwrap();
    let crl = inkan_pki::crl::issue_crl(
        &fk,
        &fam,
        &[inkan_pki::crl::Revoked {
            serial: vec![0x42, 0x17],
            time: std::time::SystemTime::now(),
        }],
        5,
        std::time::Duration::from_secs(86_400),
    )
    .unwrap();
    let path = format!("/v1/families/{fid}/crl");
    let body = json!({ "crl_pem": crl.to_pem() });
    assert_eq!(a.post(&path, &op_b, body.clone()).0, 404);
    assert_eq!(a.post(&path, &viewer_b, body.clone()).0, 403);
    let (s, r) = a.post(&path, &op_a, body.clone());
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["crl_number"], 5);
    let (s, e) = a.post(&path, &op_a, body);
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().contains("stale"), "{e}");
    let (s, e) = a.post(&path, &op_a, json!({ "crl_pem": "not a crl" }));
    assert_eq!(s, 400, "{e}");
    let list_path = format!("/v1/families/{fid}/revocations");
    assert_eq!(a.get(&list_path, Some(&viewer_b)).0, 404);
    let viewer_a = a.token("tenant-a", Role::Viewer);
    let (s, l) = a.get(&list_path, Some(&viewer_a));
    assert_eq!(s, 200, "{l}");
    assert_eq!(l["crl_number"], 5);
    assert_eq!(l["entries"][0]["certificate_serial"], "4217");
    assert_eq!(l["entries"][0]["source"], "crl 5");
}

on_both_stores!(tokens_roles_and_tenants, families_with_proof_of_possession);

/// Slow clients (headers never finished) hold a connection for the header
/// timeout only, and no more connections than the cap are kept: the API
/// answers again as soon as they are gone, and the process never runs out
/// of descriptors.
#[test]
fn slow_clients_are_cut_off_and_connections_capped() {
    use std::io::{Read, Write};
    let a = api_with(
        Db::Sqlite,
        inkan_cloud::api::HttpLimits {
            header_read_timeout: std::time::Duration::from_millis(800),
            connection_lifetime: std::time::Duration::from_secs(30),
            max_connections: 8,
        },
    );
    let token = a.token("acme", Role::Viewer);
    let addr = a.base.trim_start_matches("http://").to_string();
    let slow: Vec<std::net::TcpStream> = (0..8)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /v1/devices HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    // Past the cap: closed at once, unanswered.
    let mut extra = std::net::TcpStream::connect(&addr).unwrap();
    extra
        .set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    let _ = extra.write_all(b"GET /v1/devices HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 64];
    assert!(
        matches!(extra.read(&mut buf), Ok(0) | Err(_)),
        "a connection past the cap was served"
    );
    // The slow ones are cut off after the header timeout...
    std::thread::sleep(std::time::Duration::from_millis(1200));
    for mut s in slow {
        s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(
            !String::from_utf8_lossy(&rest).contains("200 OK"),
            "a request with unfinished headers was served"
        );
    }
    // ...and the API answers again.
    assert_eq!(a.get("/v1/devices", Some(&token)).0, 200);
}
