//! `inkan accessory`: a host checking the accessory on its bus, offline
//! (no network): is it genuine, how many units are left, use some.

use anyhow::{anyhow, Context, Result};
use clap::Subcommand;
use inkan_device::accessory::{self, Refused, Trust};
use inkan_se::transport::{self, Address};
use inkan_se::Driver;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What the host trusts.
#[derive(clap::Args)]
pub struct TrustArgs {
    /// The secure element of the accessory (unix:PATH, tcp:HOST:PORT or
    /// i2c:BUS:ADDR).
    #[arg(long)]
    se: Address,
    /// The pinned certificate (PEM or DER): the accessory family's, or
    /// the root's with the family's given as --intermediate.
    #[arg(long)]
    root: PathBuf,
    /// Certificates between the pinned one and the accessory.
    #[arg(long)]
    intermediate: Vec<PathBuf>,
    /// Revocation lists (PEM or DER) of the issuing CAs.
    #[arg(long)]
    crl: Vec<PathBuf>,
}

/// Accessory commands.
#[derive(Subcommand)]
pub enum AccessoryCmd {
    /// Checks the accessory: its certificate against --root (and CRLs), a
    /// fresh challenge signed in its chip, its units left. Prints
    /// "genuine", or the refusal (clone, revoked, unknown root, invalid)
    /// and exits 1.
    #[command(
        after_help = "Example:\n  inkan accessory verify --se unix:/tmp/cartridge.sock --root factory/families/ink/family.crt.pem"
    )]
    Verify(TrustArgs),
    /// Checks the accessory as `verify` does, then uses --count units:
    /// its chip decrements its one-way usage counter inside a session
    /// MAC'd with keys derived from the family's pairing key. Refused
    /// ("exhausted") when fewer are left, using none.
    #[command(
        after_help = "Example:\n  inkan accessory use --se unix:/tmp/cartridge.sock --root family.crt.pem --pairing-key factory/families/ink/pairing.key --count 1"
    )]
    Use {
        #[command(flatten)]
        trust: TrustArgs,
        /// The family's pairing key (64 hex digits), held by genuine hosts.
        #[arg(long)]
        pairing_key: PathBuf,
        /// Units to use.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        count: u32,
    },
}

fn read_all(label: &str, path: &Path) -> Result<Vec<Vec<u8>>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    inkan_pki::pem_or_der(label, &bytes)
        .with_context(|| format!("{} is not {label}", path.display()))
}

/// The accessory's chip, as the host drives it.
type Bus = Arc<Mutex<Driver<Box<dyn inkan_se::transport::Transport>>>>;

fn check(a: &TrustArgs) -> Result<(Bus, inkan_device::accessory::Genuine)> {
    let anchors = read_all("CERTIFICATE", &a.root)?;
    let mut inter = Vec::new();
    for p in &a.intermediate {
        inter.extend(read_all("CERTIFICATE", p)?);
    }
    let mut crls = Vec::new();
    for p in &a.crl {
        crls.extend(read_all("X509 CRL", p)?);
    }
    let trust = Trust::new(&anchors, &inter, &crls)
        .map_err(|e| anyhow!("the pinned certificates or CRLs are refused: {e}"))?;
    let t = transport::connect(&a.se)
        .with_context(|| format!("connecting to the secure element at {}", a.se))?;
    let d = Arc::new(Mutex::new(Driver::new(t)?));
    let g = accessory::verify(&d, &trust).map_err(outcome)?;
    Ok((d, g))
}

fn outcome(e: Refused) -> anyhow::Error {
    anyhow!("refused: {e}")
}

fn units(n: Option<u32>) -> String {
    n.map_or_else(|| "not metered".into(), |n| format!("{n} unit(s) left"))
}

/// Runs an accessory command.
pub fn run(c: AccessoryCmd) -> Result<()> {
    match c {
        AccessoryCmd::Verify(a) => {
            let (_, g) = check(&a)?;
            println!(
                "genuine: chip {} ({}), {}",
                g.serial,
                g.subject,
                units(g.remaining)
            );
        }
        AccessoryCmd::Use {
            trust,
            pairing_key,
            count,
        } => {
            let pairing = inkan_factory::read_pairing_key(&pairing_key)?;
            let (d, g) = check(&trust)?;
            let left = accessory::use_units(&d, &pairing, count).map_err(outcome)?;
            println!(
                "genuine: chip {} ({}), used {count}, {}",
                g.serial,
                g.subject,
                units(Some(left))
            );
        }
    }
    Ok(())
}
