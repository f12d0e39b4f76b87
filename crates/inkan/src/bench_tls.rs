//! The peer a user would pick instead of inkan's authentication: TLS 1.3
//! with client certificates, rustls 0.23 on aws-lc-rs, over the same P-256
//! chain (root → family → device, certificates from inkan's factory), the
//! client's chain verified on every handshake (WebPkiClientVerifier), no
//! resumption. The server runs in its own process like `inkan serve`
//! (`inkan bench tls-peer-serve`, hidden) and its CPU is read the same way.

use anyhow::{anyhow, Context, Result};
use inkan_factory::Factory;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The crypto provider both ends use: aws-lc-rs, P-256 key exchange and
/// AES-128-GCM only (the figures compare like with like: EDHOC suite 2 is
/// P-256 with AES-CCM).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::aws_lc_rs as a;
    let mut p = a::default_provider();
    p.kx_groups = vec![a::kx_group::SECP256R1];
    p.cipher_suites = vec![a::cipher_suite::TLS13_AES_128_GCM_SHA256];
    Arc::new(p)
}

fn p256_pkcs8() -> Result<(Vec<u8>, Vec<u8>)> {
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
    let doc = EcdsaKeyPair::generate_pkcs8(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .map_err(|_| anyhow!("key generation"))?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, doc.as_ref())
        .map_err(|_| anyhow!("key"))?;
    Ok((doc.as_ref().to_vec(), pair.public_key().as_ref().to_vec()))
}

/// `inkan bench tls-peer-serve`: serves TLS 1.3 handshakes with client
/// certificates checked against `root`, on a free loopback port printed
/// on stdout, until killed.
pub fn serve_peer(root: &Path, cert: &Path, key: &Path) -> Result<()> {
    let der = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(der(root)?))?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(der(cert)?)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der(key)?)),
        )?;
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    let cfg = Arc::new(cfg);
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    // A fixed pool of workers, as a server would run.
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (l, cfg) = (listener.try_clone(), cfg.clone());
            std::thread::spawn(move || -> Result<()> {
                let l = l?;
                loop {
                    let (mut sock, _) = l.accept()?;
                    let mut conn = rustls::ServerConnection::new(cfg.clone())?;
                    let done = (|| -> Result<()> {
                        while conn.is_handshaking() {
                            conn.complete_io(&mut sock)?;
                        }
                        // Until the client closes.
                        let mut buf = [0u8; 64];
                        let _ = rustls::Stream::new(&mut conn, &mut sock).read(&mut buf);
                        Ok(())
                    })();
                    drop(done);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| anyhow!("worker panicked"))??;
    }
    Ok(())
}

#[derive(Debug)]
struct AcceptAnyServer;

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        vec![rustls::SignatureScheme::ECDSA_NISTP256_SHA256]
    }
}

/// What one run of the peer measured.
pub struct PeerRun {
    /// Handshakes per second.
    pub rate: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// The server's CPU seconds per handshake.
    pub cpu: f64,
}

/// Runs `n` TLS 1.3 mutual-authentication handshakes, `concurrency` at a
/// time, against the peer in its own process, with device certificates
/// issued by the factory's `family` (software keys: the server's work is
/// what is measured).
pub fn measure(f: &Factory, family: &str, n: usize, concurrency: usize) -> Result<PeerRun> {
    use inkan_pki::{cert, CertPolicy, DeviceProfile};
    let dir = tempfile::tempdir()?;
    let root = f.root()?;
    let (_, fam) = f.family(family)?;
    let fam_key = f.signer(&format!("family-{family}"))?;
    // The server's certificate, under the root.
    let (server_key, server_point) = p256_pkcs8()?;
    let root_key = f.signer("root")?;
    let server_cert = cert::issue_signer(
        &*root_key,
        &root,
        &server_point,
        "bench",
        "tls peer",
        &CertPolicy::default(),
    )?;
    std::fs::write(dir.path().join("root.der"), &root.der)?;
    std::fs::write(dir.path().join("server.der"), &server_cert.der)?;
    std::fs::write(dir.path().join("server.key"), &server_key)?;
    // Device certificates from the family, as the factory issues them.
    let devices = (0..concurrency.max(1))
        .map(|i| -> Result<(Vec<u8>, Vec<u8>)> {
            let (key, point) = p256_pkcs8()?;
            let c = cert::issue_device(
                &*fam_key,
                &fam,
                &point,
                &DeviceProfile {
                    serial: format!("7{i:017X}"),
                    organization: "bench".into(),
                    family: family.into(),
                    key_agreement: true,
                    ueid: Some(inkan_pki::Ueid::random()),
                },
                &CertPolicy::default(),
            )?;
            Ok((c.der, key))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["bench", "tls-peer-serve", "--root"])
        .arg(dir.path().join("root.der"))
        .arg("--cert")
        .arg(dir.path().join("server.der"))
        .arg("--key")
        .arg(dir.path().join("server.key"))
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let result = (|| -> Result<PeerRun> {
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("peer stdout")?).read_line(&mut line)?;
        let addr: std::net::SocketAddr = line.trim().parse().context("the peer's address")?;
        let pid = child.id();
        let cpu0 = crate::measure::cpu_seconds(pid)?;
        let t = Instant::now();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let lat = Arc::new(Mutex::new(Vec::with_capacity(n)));
        std::thread::scope(|s| -> Result<()> {
            let mut hs = Vec::new();
            for (der, key) in &devices {
                let cfg = rustls::ClientConfig::builder_with_provider(provider())
                    .with_protocol_versions(&[&rustls::version::TLS13])?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AcceptAnyServer))
                    .with_client_auth_cert(
                        vec![
                            CertificateDer::from(der.clone()),
                            CertificateDer::from(fam.der.clone()),
                        ],
                        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.clone())),
                    )?;
                let cfg = Arc::new(cfg);
                let (next, lat) = (next.clone(), lat.clone());
                hs.push(s.spawn(move || -> Result<()> {
                    while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                        let t = Instant::now();
                        let mut sock = std::net::TcpStream::connect(addr)?;
                        sock.set_nodelay(true)?;
                        let mut conn = rustls::ClientConnection::new(
                            cfg.clone(),
                            ServerName::try_from("tls-peer")?,
                        )?;
                        while conn.is_handshaking() {
                            conn.complete_io(&mut sock)?;
                        }
                        // The server has the client's Finished once its
                        // first record arrives; then close.
                        conn.send_close_notify();
                        conn.complete_io(&mut sock)?;
                        let _ = sock.shutdown(std::net::Shutdown::Both);
                        lat.lock().map_err(|_| anyhow!("lock"))?.push(t.elapsed());
                    }
                    Ok(())
                }));
            }
            for h in hs {
                h.join().map_err(|_| anyhow!("client thread panicked"))??;
            }
            Ok(())
        })?;
        let wall = t.elapsed();
        // Let the server finish reading the last closes.
        std::thread::sleep(Duration::from_millis(100));
        let cpu = crate::measure::cpu_seconds(pid)? - cpu0;
        let mut lat = lat.lock().map_err(|_| anyhow!("lock"))?.clone();
        lat.sort();
        Ok(PeerRun {
            rate: lat.len() as f64 / wall.as_secs_f64(),
            p50: crate::measure::percentile(&lat, 500),
            p99: crate::measure::percentile(&lat, 990),
            cpu: cpu / lat.len().max(1) as f64,
        })
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}
