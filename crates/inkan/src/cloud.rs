//! `inkan serve` and `inkan device`: the cloud's device endpoint, and a
//! device authenticating to it through its secure element.

use anyhow::{anyhow, bail, Context, Result};
use inkan_cloud::{AuthService, CloudIdentity, Limits, Registry, Store};
use inkan_pki::{CertPolicy, SoftwareKey};
use inkan_se::transport::{self, Address};
use inkan_se::Driver;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Arguments of `inkan serve`.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  inkan serve --cloud-key cloud-auth.key.pem                       (SQLite in ./inkan.db, CoAP on 127.0.0.1:5683)
  inkan serve --db postgres://inkan@127.0.0.1/inkan --cloud-key cloud-auth.key.pem
The cloud key's passphrase comes from $INKAN_CA_PASSPHRASE or --passphrase-file.")]
pub struct ServeArgs {
    /// The store: a SQLite file (created, WAL) or postgres://… .
    #[arg(long, default_value = "inkan.db")]
    db: String,
    /// Device endpoint (CoAP over UDP), loopback by default.
    #[arg(long, default_value = "127.0.0.1:5683")]
    coap: SocketAddr,
    /// The cloud's authentication key (encrypted PKCS#8 PEM, P-256): the
    /// key devices pinned at personalization.
    #[arg(long)]
    cloud_key: PathBuf,
    /// Passphrase file for the cloud key.
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
    /// Seconds an EDHOC exchange may wait for message_3.
    #[arg(long, default_value_t = 30)]
    exchange_ttl: i64,
    /// Most EDHOC exchanges pending at once.
    #[arg(long, default_value_t = 10_000)]
    max_pending: i64,
}

/// Loads the cloud identity from an encrypted key file.
pub fn load_identity(key: &std::path::Path, passphrase: &[u8]) -> Result<CloudIdentity> {
    let k = SoftwareKey::load(key, passphrase)?;
    let SoftwareKey::P256(sk) = &k else {
        bail!("the cloud key must be P-256 (EDHOC cipher suite 2)")
    };
    let cert = inkan_pki::cert::issue_root(
        &k,
        "inkan cloud",
        "inkan cloud authentication",
        &CertPolicy::default(),
    )?;
    Ok(CloudIdentity::new(&sk.to_bytes(), &cert.der)?)
}

fn passphrase(file: &Option<PathBuf>) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    match file {
        Some(p) => Ok(zeroize::Zeroizing::new(
            std::fs::read(p)
                .with_context(|| format!("reading {}", p.display()))?
                .trim_ascii_end()
                .to_vec(),
        )),
        None => std::env::var("INKAN_CA_PASSPHRASE")
            .map(|s| zeroize::Zeroizing::new(s.into_bytes()))
            .map_err(|_| {
                anyhow!(
                    "give the cloud key passphrase in $INKAN_CA_PASSPHRASE or --passphrase-file"
                )
            }),
    }
}

/// Runs `inkan serve`.
pub fn serve(a: ServeArgs) -> Result<()> {
    if !a.coap.ip().is_loopback() {
        eprintln!(
            "warning: the device endpoint listens on {} (not loopback)",
            a.coap
        );
    }
    let identity = load_identity(&a.cloud_key, &passphrase(&a.passphrase_file)?)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let store = Store::open(&a.db)
            .await
            .with_context(|| format!("opening the store {}", a.db))?;
        let auth = Arc::new(AuthService::new(
            Registry::new(store),
            identity,
            Limits {
                ttl_secs: a.exchange_ttl,
                max_pending: a.max_pending,
            },
        ));
        let sock = tokio::net::UdpSocket::bind(a.coap)
            .await
            .with_context(|| format!("binding {}", a.coap))?;
        eprintln!(
            "inkan serve: store {}, device endpoint coap://{}/.well-known/edhoc",
            a.db,
            sock.local_addr()?
        );
        inkan_cloud::server::serve(sock, auth).await?;
        Ok(())
    })
}

/// `inkan device …`.
#[derive(clap::Subcommand)]
pub enum DeviceCmd {
    /// Authenticate to the cloud with EDHOC over CoAP, every private-key
    /// operation in the secure element; print the session.
    #[command(after_help = "\
Example:
  inkan device connect --se unix:/tmp/se.sock --cloud coap://127.0.0.1:5683 --device-secrets factory/batches/b1/devices/0A1B….json")]
    Connect {
        /// The secure element: unix:PATH, tcp:127.0.0.1:PORT or i2c:/dev/i2c-N.
        #[arg(long)]
        se: Address,
        /// The cloud's device endpoint.
        #[arg(long, default_value = "coap://127.0.0.1:5683")]
        cloud: String,
        /// The device secrets file the factory wrote (host MAC keys).
        #[arg(long)]
        device_secrets: PathBuf,
    },
}

/// Parses `coap://host:port`.
pub fn coap_addr(s: &str) -> Result<SocketAddr> {
    let rest = s.strip_prefix("coap://").ok_or_else(|| {
        anyhow!("the cloud address must look like coap://127.0.0.1:5683, not {s:?}")
    })?;
    let rest = rest.trim_end_matches('/');
    rest.parse()
        .map_err(|_| anyhow!("{s:?} is not coap://IP:PORT"))
}

/// Runs `inkan device`.
pub fn device(c: DeviceCmd) -> Result<()> {
    match c {
        DeviceCmd::Connect {
            se,
            cloud,
            device_secrets,
        } => {
            let cloud = coap_addr(&cloud)?;
            let secrets: inkan_factory::personalize::DeviceSecrets = serde_json::from_slice(
                &std::fs::read(&device_secrets)
                    .with_context(|| format!("reading {}", device_secrets.display()))?,
            )
            .with_context(|| {
                format!("{} is not a device secrets file", device_secrets.display())
            })?;
            let keys = secrets
                .host_keys()
                .ok_or_else(|| anyhow!("bad host keys in {}", device_secrets.display()))?;
            let t = transport::connect(&se)
                .with_context(|| format!("connecting to the secure element at {se}"))?;
            let mut d = Driver::new(t)?;
            d.open_session(keys)?;
            let c = inkan_device::connect(
                Arc::new(Mutex::new(d)),
                cloud,
                inkan_device::Retransmission::default(),
            )?;
            println!("authenticated: device {} to {cloud}", c.serial);
            println!(
                "  C_I {}  C_R {}",
                hex::encode(&c.c_i.0),
                hex::encode(&c.c_r.0)
            );
            println!(
                "  OSCORE master secret {}…  salt {}",
                &hex::encode(&*c.session.oscore_master_secret()?)[..8],
                hex::encode(&*c.session.oscore_master_salt()?)
            );
        }
    }
    Ok(())
}
