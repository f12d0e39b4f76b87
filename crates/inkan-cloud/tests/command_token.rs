//! The command key inside a PKCS#11 token (SoftHSM2): devices pinned a file
//! key at the factory; a rotation signed by that key hands them the token
//! key, whose commands they then run, verified by their chips. One test per
//! binary because SOFTHSM2_CONF is process-wide.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
#[allow(unused_macros)]
mod common;
use common::world::*;
use common::Db;

use inkan_cloud::{App, Limits, Registry, Store};
use inkan_device::{connect, poll_and_run, Executed, Polled, Uplink};
use inkan_pki::pkcs11::{Pkcs11Signer, TokenKey};
use inkan_pki::{CaSigner, KeyCurve, SoftwareKey};
use std::sync::Arc;

#[test]
fn a_token_held_command_key_after_rotation() {
    let dir = tempfile::tempdir().unwrap();
    // Before this process loads the module.
    inkan_pki::pkcs11::softhsm::init_token(dir.path(), "inkan-cloud", "87654321", "123456")
        .unwrap();
    let token_key = Pkcs11Signer::generate(
        &TokenKey {
            module: inkan_pki::pkcs11::softhsm::MODULE.into(),
            token: "inkan-cloud".into(),
            pin: "123456".into(),
            label: "command".into(),
        },
        KeyCurve::P256,
    )
    .unwrap();
    let token_point = token_key.public_point();

    let w = world(&["thermo"], 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(common::db_url(Db::Sqlite, dir.path()));
    let file_key = SoftwareKey::load(
        &w.factory.dir().join("keys/dev-cloud-command.key.pem"),
        b"pw",
    )
    .unwrap();
    let store = rt.block_on(Store::open(&url)).unwrap();
    let auth = Arc::new(
        App::new(
            Registry::new(store),
            identity(&w.cloud_key),
            Limits::default(),
        )
        .with_command_key(Box::new(token_key))
        .with_previous_command_key(Box::new(file_key)),
    );
    let tenant = rt
        .block_on(auth.registry.store.ensure_tenant("acme"))
        .unwrap();
    rt.block_on(register_family(&w, &auth.registry, &tenant, "thermo"));
    let addr = start_server(&rt, auth.clone());
    let d = driver(&w, 0);
    let c = connect(d.clone(), addr, quick()).unwrap();
    let mut up = Uplink::new(&c, addr, quick()).unwrap();
    let dev = rt
        .block_on(
            auth.registry
                .store
                .device_by_fingerprint(&inkan_cloud::registry::fingerprint(&leaf_of(&w, 0).der)),
        )
        .unwrap()
        .unwrap();
    let mut executed = Executed::open(None).unwrap();
    let mut ran = Vec::new();
    let mut actuator = |c: &inkan_proto::command::Command| -> Result<String, String> {
        ran.push(c.action.clone());
        Ok("done".into())
    };
    let issue = |action: &str| {
        rt.block_on(inkan_cloud::commands::issue(
            &auth,
            &tenant,
            std::slice::from_ref(&dev),
            action,
            b"",
            300,
        ))
        .unwrap()
    };
    // A command signed in the token: the chip still pins the file key.
    issue("open");
    assert!(matches!(
        poll_and_run(&mut up, &d, &mut executed, &mut actuator).unwrap(),
        Polled::Refused(inkan_device::CommandRefused::Command(
            inkan_proto::command::CommandError::Signature
        ))
    ));
    // The rotation, signed with the file key, pins the token key.
    issue(inkan_cloud::commands::ROTATE_COMMAND_KEY);
    assert!(matches!(
        poll_and_run(&mut up, &d, &mut executed, &mut actuator).unwrap(),
        Polled::Ran(_, inkan_proto::command::Outcome::Succeeded, _)
    ));
    let pinned = {
        let mut g = d.lock().unwrap();
        g.read_zone(inkan_device::COMMAND_KEY_ZONE, 0, 91).unwrap()
    };
    assert_eq!(pinned, inkan_pki::signer::spki_der(&token_point).unwrap());
    // Now the token's commands run.
    issue("close");
    assert!(matches!(
        poll_and_run(&mut up, &d, &mut executed, &mut actuator).unwrap(),
        Polled::Ran(..)
    ));
    assert_eq!(ran, vec!["close".to_string()]);
}
