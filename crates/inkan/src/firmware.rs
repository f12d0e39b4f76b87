//! `inkan firmware`: the OEM signs firmware manifests and checks them;
//! `inkan device boot` runs the boot check on a device's secure element.

use anyhow::{anyhow, bail, Context, Result};
use inkan_pki::firmware::FirmwareManifest;
use inkan_pki::{CaSigner, SoftwareKey};
use std::path::PathBuf;

/// `inkan firmware …`.
#[derive(clap::Subcommand)]
pub enum FirmwareCmd {
    /// Sign a manifest for an image with the OEM firmware key (a key file,
    /// passphrase in $INKAN_CA_PASSPHRASE, or a PKCS#11 token key, PIN in
    /// $INKAN_PKCS11_PIN).
    #[command(after_help = "\
Examples:
  inkan firmware sign app.bin --key factory/keys/dev-firmware.key.pem --class thermo \\
        --version 1.4.0 --security-version 3 --out app.manifest
  inkan firmware sign app.bin --pkcs11-module /usr/lib/softhsm/libsofthsm2.so --token oem \\
        --label firmware --class thermo --version 1.4.0 --security-version 3 --out app.manifest")]
    Sign {
        /// The image.
        image: PathBuf,
        /// The firmware key file (encrypted PKCS#8 PEM).
        #[arg(
            long,
            conflicts_with = "pkcs11_module",
            required_unless_present = "pkcs11_module"
        )]
        key: Option<PathBuf>,
        /// A PKCS#11 module holding the key instead.
        #[arg(long, requires_all = ["token", "label"])]
        pkcs11_module: Option<PathBuf>,
        /// The token label.
        #[arg(long)]
        token: Option<String>,
        /// The key's CKA_LABEL.
        #[arg(long)]
        label: Option<String>,
        /// Vendor.
        #[arg(long, default_value = "inkan")]
        vendor: String,
        /// Device class: the family the image is for.
        #[arg(long)]
        class: String,
        /// Version string.
        #[arg(long)]
        version: String,
        /// Security version (monotonic; devices refuse anything lower than
        /// what they confirmed).
        #[arg(long)]
        security_version: u32,
        /// Where to write the signed manifest.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a manifest's signature with the firmware public key and the
    /// image against it; print the manifest.
    #[command(
        after_help = "Example:\n  inkan firmware verify app.bin app.manifest --key-pub factory/anchors/firmware.pub.pem"
    )]
    Verify {
        /// The image.
        image: PathBuf,
        /// The signed manifest.
        manifest: PathBuf,
        /// The firmware public key (PEM).
        #[arg(long)]
        key_pub: PathBuf,
    },
}

fn read(p: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("reading {}", p.display()))
}

/// Runs `inkan firmware`.
pub fn run(c: FirmwareCmd) -> Result<()> {
    match c {
        FirmwareCmd::Sign {
            image,
            key,
            pkcs11_module,
            token,
            label,
            vendor,
            class,
            version,
            security_version,
            out,
        } => {
            let img = read(&image)?;
            let signer: Box<dyn CaSigner> = match (key, pkcs11_module, token, label) {
                (Some(k), ..) => {
                    let pass = std::env::var("INKAN_CA_PASSPHRASE")
                        .map_err(|_| anyhow!("give the key passphrase in $INKAN_CA_PASSPHRASE"))?;
                    Box::new(SoftwareKey::load(&k, pass.as_bytes())?)
                }
                (None, Some(module), Some(token), Some(label)) => {
                    let pin = std::env::var("INKAN_PKCS11_PIN")
                        .map_err(|_| anyhow!("give the token PIN in $INKAN_PKCS11_PIN"))?;
                    Box::new(inkan_pki::pkcs11::Pkcs11Signer::open(
                        &inkan_pki::pkcs11::TokenKey {
                            module,
                            token,
                            pin,
                            label,
                        },
                    )?)
                }
                _ => bail!("give --key FILE or --pkcs11-module with --token and --label"),
            };
            let m = FirmwareManifest::describe(&img, &vendor, &class, &version, security_version);
            let signed = inkan_pki::firmware::sign(&m, &*signer)?;
            std::fs::write(&out, &signed).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "signed manifest for {} ({} bytes, sha256 {}): class {class}, version {version}, security version {security_version} -> {}",
                image.display(),
                img.len(),
                hex::encode(&m.digest),
                out.display()
            );
            Ok(())
        }
        FirmwareCmd::Verify {
            image,
            manifest,
            key_pub,
        } => {
            let der = inkan_pki::pem_or_der("PUBLIC KEY", &read(&key_pub)?)?
                .into_iter()
                .next()
                .ok_or_else(|| anyhow!("{} holds no public key", key_pub.display()))?;
            let point = inkan_pki::signer::point_of_spki(&der)?;
            let m = inkan_pki::firmware::verify(&read(&manifest)?, &point)?;
            let img = read(&image)?;
            let digest = <sha2::Sha256 as sha2::Digest>::digest(&img);
            if img.len() as u64 != m.size || digest.as_slice() != m.digest.as_slice() {
                bail!("the image does not match the manifest (size or SHA-256 differs)");
            }
            println!(
                "manifest verified: vendor {}, class {}, version {}, security version {}, {} bytes, sha256 {}",
                m.vendor,
                m.class,
                m.firmware_version,
                m.security_version,
                m.size,
                hex::encode(&m.digest)
            );
            Ok(())
        }
    }
}
