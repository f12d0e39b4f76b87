//! The world every cloud scenario starts from: a factory with families of
//! personalized emulated chips, the cloud key, and helpers to run the
//! service and drive devices.

#![allow(dead_code)]

use super::{db_url, Db};
use inkan_cloud::registry::pop_challenge;
use inkan_cloud::{App, CloudIdentity, Limits, Registry, Store};
use inkan_device::{ConnectError, Retransmission, SharedDriver};
use inkan_factory::personalize::BatchConfig;
use inkan_factory::{Factory, InitOptions, KeyStore, Personalizer, Secrets};
use inkan_pki::{CertPolicy, KeyCurve, SoftwareKey};
use inkan_se::{Chip, Driver, InProcess, Personality};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct World {
    pub _dir: tempfile::TempDir,
    pub factory: Factory,
    pub chips: Vec<(PathBuf, String)>,
    pub secrets: Vec<inkan_factory::personalize::DeviceSecrets>,
    pub cloud_key: SoftwareKey,
}

pub fn world(families: &[&str], per_family: usize) -> World {
    world_with(families, per_family, false)
}

/// A world whose families have Ed25519 device keys when `ed25519`.
pub fn world_with(families: &[&str], per_family: usize, ed25519: bool) -> World {
    world_profiled(families, per_family, ed25519, Default::default())
}

/// A world whose families are personalized with `profile` (usage limit,
/// accessory).
pub fn world_profiled(
    families: &[&str],
    per_family: usize,
    ed25519: bool,
    profile: inkan_factory::FamilyProfile,
) -> World {
    let dir = tempfile::tempdir().unwrap();
    let secrets = Secrets {
        passphrase: Some(zeroize::Zeroizing::new(b"pw".to_vec())),
        pin: None,
    };
    let f = Factory::init(
        &dir.path().join("factory"),
        InitOptions {
            organization: "cloud test".into(),
            curve: KeyCurve::P256,
            policy: CertPolicy::default(),
            keys: KeyStore::File,
            anchors: None,
        },
        secrets,
    )
    .unwrap();
    let mut chips = Vec::new();
    let mut dsec = Vec::new();
    for fam in families {
        f.create_family_with(fam, KeyCurve::P256, true, ed25519)
            .unwrap();
        if profile != inkan_factory::FamilyProfile::default() {
            f.configure_family(fam, profile).unwrap();
        }
        let cfg = BatchConfig {
            family: fam.to_string(),
            count: per_family,
            personality: Personality::A120,
        };
        let mut p = Personalizer::open(&f, fam, &format!("{fam}-1"), &cfg).unwrap();
        for path in
            inkan_se::chip::blank_chips(&p.dir().join("chips"), per_family, Personality::A120)
                .unwrap()
        {
            let mut d = Driver::new(InProcess::new(Chip::open(&path).unwrap())).unwrap();
            p.personalize(&mut d, Some(&path)).unwrap();
            let serial = hex::encode_upper(d.serial().unwrap());
            dsec.push(p.device_secrets(&serial).unwrap());
            chips.push((path, fam.to_string()));
        }
    }
    let cloud_key = SoftwareKey::load(&f.dir().join("keys/dev-cloud-auth.key.pem"), b"pw").unwrap();
    World {
        _dir: dir,
        factory: f,
        chips,
        secrets: dsec,
        cloud_key,
    }
}

pub fn identity(key: &SoftwareKey) -> CloudIdentity {
    let cert =
        inkan_pki::cert::issue_root(key, "cloud test", "inkan cloud", &CertPolicy::default())
            .unwrap();
    let SoftwareKey::P256(k) = key else { panic!() };
    CloudIdentity::new(&k.to_bytes(), &cert.der).unwrap()
}

pub async fn cloud_at(url: &str, key: &SoftwareKey, limits: Limits) -> Arc<App> {
    let store = Store::open(url).await.unwrap();
    Arc::new(App::new(Registry::new(store), identity(key), limits))
}

pub async fn cloud(db: Db, dir: &Path, key: &SoftwareKey, limits: Limits) -> Arc<App> {
    let url = db_url(db, dir).await;
    cloud_at(&url, key, limits).await
}

/// A running cloud over a fresh store: tenant "acme" with every family of
/// the world registered (ids in the factory's order), the device endpoint
/// on a free loopback port. Bind `_dir` when destructuring: it holds the
/// store.
pub struct Scene {
    pub rt: tokio::runtime::Runtime,
    pub _dir: tempfile::TempDir,
    pub app: Arc<App>,
    pub tenant: String,
    pub families: Vec<String>,
    pub addr: SocketAddr,
}

pub fn scene(w: &World, db: Db, limits: Limits) -> Scene {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = rt.block_on(cloud(db, dir.path(), &w.cloud_key, limits));
    let tenant = rt
        .block_on(app.registry.store.ensure_tenant("acme"))
        .unwrap();
    let families = w
        .factory
        .families()
        .unwrap()
        .iter()
        .map(|f| rt.block_on(register_family(w, &app.registry, &tenant, f)))
        .collect();
    let addr = start_server(&rt, app.clone());
    Scene {
        rt,
        _dir: dir,
        app,
        tenant,
        families,
        addr,
    }
}

pub fn start_server(rt: &tokio::runtime::Runtime, auth: Arc<App>) -> SocketAddr {
    rt.block_on(async {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        tokio::spawn(inkan_cloud::server::serve(sock, auth));
        addr
    })
}

pub async fn register_family(w: &World, reg: &Registry, tenant: &str, fam: &str) -> String {
    let (_, cert) = w.factory.family(fam).unwrap();
    let key = w.factory.signer(&format!("family-{fam}")).unwrap();
    let sig = inkan_pki::signer::sign_raw(&*key, &pop_challenge(tenant, &cert.der)).unwrap();
    reg.register_family(tenant, fam, &cert.der, &sig)
        .await
        .unwrap()
}

pub fn driver(w: &World, i: usize) -> SharedDriver<InProcess> {
    let mut d = Driver::new(InProcess::new(Chip::open(&w.chips[i].0).unwrap())).unwrap();
    d.open_session(w.secrets[i].host_keys().unwrap()).unwrap();
    Arc::new(Mutex::new(d))
}

pub fn quick() -> Retransmission {
    Retransmission {
        ack_timeout: Duration::from_millis(500),
        max_retransmit: 2,
    }
}

pub fn refused_with(r: Result<inkan_device::Connected, ConnectError>, want: &str) {
    match r {
        Err(ConnectError::Refused { detail, .. }) => {
            assert!(detail.contains(want), "expected {want:?}, got {detail:?}")
        }
        other => panic!("expected a refusal containing {want:?}, got {other:?}"),
    }
}

pub fn leaf_of(w: &World, i: usize) -> inkan_pki::IssuedCert {
    let der = inkan_device::read_identity(&mut driver(w, i).lock().unwrap())
        .unwrap()
        .certificate;
    inkan_pki::IssuedCert::from_der(&der).unwrap()
}

/// A plain CoAP request posting `readings` to the telemetry resource (to be
/// OSCORE-protected by the caller).
pub fn telemetry_request(
    mid: u16,
    token: &[u8],
    readings: &[inkan_proto::telemetry::Reading],
) -> coap_lite::Packet {
    let mut p = coap_lite::Packet::new();
    p.header.set_type(coap_lite::MessageType::Confirmable);
    p.header.message_id = mid;
    p.header.code = coap_lite::MessageClass::Request(coap_lite::RequestType::Post);
    p.set_token(token.to_vec());
    p.add_option(
        coap_lite::CoapOption::UriPath,
        inkan_proto::resources::TELEMETRY.as_bytes().to_vec(),
    );
    p.payload = inkan_proto::telemetry::encode_batch(readings);
    p
}
