//! `inkan`: hardware-rooted device identity, from the secure element to the
//! cloud. See `inkan --help`.

mod accessory;
mod alloc;
mod bench;
mod bench_accessory;
mod bench_auth;
mod bench_firmware;
mod bench_flood;
mod bench_telemetry;
mod bench_tls;
mod cloud;
mod demo;
mod factory;
mod firmware;
mod measure;
mod se;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

/// inkan gives every device a hardware-rooted identity and lets a service
/// trust what the device says.
///
/// Start with `inkan demo`: it runs the whole story on this machine.
#[derive(Parser)]
#[command(name = "inkan", version, about, long_about = None, after_help = "\
Examples:
  inkan demo                                    run everything end to end, in a temporary directory
  inkan se init --state chip.json --personality a120
  inkan se serve --state chip.json --listen unix:/tmp/se.sock
  inkan se --connect unix:/tmp/se.sock query product
  inkan factory init --org 'Example Devices'    (CA passphrase from $INKAN_CA_PASSPHRASE)
  inkan factory personalize --family thermo --count 100
  inkan bench se                                measure the secure element")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole story end to end on embedded defaults (a temporary
    /// directory, emulated chips), printing what happens at each step.
    #[command(
        after_help = "Example:\n  inkan demo\n  inkan demo --keep ./demo-out    keep the chip state and socket for inspection"
    )]
    Demo(demo::Args),
    /// The secure element: run an emulated STSAFE-A chip, or talk to one
    /// (emulated or real) through the host driver.
    Se(se::Args),
    /// The factory: CA hierarchy, families, personalization of secure
    /// elements, signed batch manifests, revocation lists.
    Factory(factory::Args),
    /// Run the cloud service: the device endpoint (EDHOC over CoAP/UDP) on
    /// SQLite by default or PostgreSQL.
    Serve(cloud::ServeArgs),
    /// Operator commands for the cloud: tenants and tokens, devices,
    /// families, manifests, audit (through the operator API).
    Cloud(cloud::CloudArgs),
    /// Firmware for the OEM: sign manifests, check them.
    #[command(subcommand)]
    Firmware(firmware::FirmwareCmd),
    /// The device side: authenticate to the cloud through the secure element.
    #[command(subcommand)]
    Device(cloud::DeviceCmd),
    /// A host checking its accessory offline: genuine or not, units of use
    /// left, use some.
    #[command(subcommand)]
    Accessory(accessory::AccessoryCmd),
    /// Benchmarks, each printed next to a reference measured in the same run.
    #[command(subcommand, after_help = "Example:\n  inkan bench se --seconds 5")]
    Bench(bench::Which),
}

/// Output cut short by the reader (`inkan … | head`) ends the program
/// quietly, as a closed pipe ends any Unix tool; any other panic is
/// reported as usual.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let p = info.payload();
        let msg = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

fn main() {
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Se(a) => se::run(a),
        Command::Factory(a) => factory::run(a),
        Command::Serve(a) => cloud::serve(a),
        Command::Cloud(a) => cloud::cloud(a),
        Command::Device(c) => cloud::device(c),
        Command::Firmware(c) => firmware::run(c),
        Command::Accessory(c) => accessory::run(c),
        Command::Bench(w) => bench::run(w),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
