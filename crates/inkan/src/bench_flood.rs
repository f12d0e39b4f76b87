//! `inkan bench flood`: a flood of EDHOC message_1 from one hostile address
//! (127.0.0.2, many source ports) at increasing rates, against `inkan
//! serve` in its own process, while legitimate devices (127.0.0.1)
//! authenticate and an operator polls the API. Printed per rate: the
//! service's peak resident memory, the legitimate devices' success rate
//! and latency, the API's worst latency and failures, and the time to
//! recover once the flood stops; the reference is the same devices and
//! API measured without a flood, in the same run.

use crate::bench_auth::{fleet, register_bench_family, spawn_serve, Chip0};
use crate::measure::percentile;
use anyhow::{Context, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Resident memory of a process (kB), from /proc.
fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// What one measured phase saw.
struct Phase {
    ok: u64,
    failed: u64,
    latencies: Vec<Duration>,
    api_worst: Duration,
    api_failed: u64,
    rss_peak_kb: u64,
    sent: u64,
}

fn quick() -> inkan_device::Retransmission {
    inkan_device::Retransmission {
        ack_timeout: Duration::from_millis(1000),
        max_retransmit: 2,
    }
}

/// Legitimate devices authenticate in a loop while `flood_rate` message_1
/// per second arrive from 127.0.0.2 (none when 0), for `secs`.
fn phase(
    fleet: &[Chip0],
    coap: std::net::SocketAddr,
    api: &str,
    pid: u32,
    flood_rate: u64,
    secs: f64,
) -> Result<Phase> {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || -> Result<()> {
            if flood_rate == 0 {
                return Ok(());
            }
            let suite = inkan_proto::edhoc::Suite::P256Es256;
            // A few distinct message_1, sent again and again with new
            // message ids from 64 source ports.
            let m1s: Vec<Vec<u8>> = (0..16)
                .map(|_| {
                    inkan_proto::edhoc::Initiator::start(
                        suite,
                        inkan_proto::edhoc::ConnId(vec![0x13]),
                        &[],
                        Box::new(inkan_proto::edhoc::crypto::SoftwareEphemeral::generate(
                            suite,
                        )),
                    )
                    .1
                })
                .collect();
            let socks: Vec<std::net::UdpSocket> = (0..64)
                .map(|_| std::net::UdpSocket::bind("127.0.0.2:0"))
                .collect::<std::io::Result<_>>()?;
            let start = Instant::now();
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                // Datagrams due by now: elapsed microseconds times the rate.
                let due = u64::try_from(start.elapsed().as_micros())
                    .unwrap_or(u64::MAX)
                    .saturating_mul(flood_rate)
                    / 1_000_000;
                if n >= due {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                let k = usize::try_from(n % 64).unwrap_or(0);
                let d = inkan_proto::coap::request(
                    u16::try_from(n % 65_536).unwrap_or(0),
                    &[0xfe],
                    inkan_proto::coap::message_1_payload(&m1s[k % m1s.len()]),
                )?;
                let _ = socks[k].send_to(&d, coap);
                n += 1;
                sent.store(n, Ordering::Relaxed);
            }
            Ok(())
        })
    };
    let api_probe = {
        let (stop, url) = (stop.clone(), format!("{api}/openapi.json"));
        std::thread::spawn(move || {
            let (mut worst, mut failed) = (Duration::ZERO, 0u64);
            let agent = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(5))
                .build();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if agent.get(&url).call().is_err() {
                    failed += 1;
                }
                worst = worst.max(t.elapsed());
                std::thread::sleep(Duration::from_millis(100));
            }
            (worst, failed)
        })
    };
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(rss_kb(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        })
    };
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let devices: Vec<_> = fleet
        .iter()
        .map(|chip| {
            let chip = chip.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed, mut lat) = (0u64, 0u64, Vec::new());
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match inkan_device::connect(chip.clone(), coap, quick()) {
                        Ok(_) => {
                            ok += 1;
                            lat.push(t.elapsed());
                        }
                        Err(_) => failed += 1,
                    }
                }
                (ok, failed, lat)
            })
        })
        .collect();
    let (mut ok, mut failed, mut latencies) = (0, 0, Vec::new());
    for d in devices {
        let (o, f, l) = d.join().map_err(|_| anyhow::anyhow!("device thread"))?;
        ok += o;
        failed += f;
        latencies.extend(l);
    }
    stop.store(true, Ordering::Relaxed);
    flood
        .join()
        .map_err(|_| anyhow::anyhow!("flood thread"))??;
    let (api_worst, api_failed) = api_probe.join().map_err(|_| anyhow::anyhow!("api"))?;
    let rss_peak_kb = sampler.join().map_err(|_| anyhow::anyhow!("sampler"))?;
    latencies.sort();
    Ok(Phase {
        ok,
        failed,
        latencies,
        api_worst,
        api_failed,
        rss_peak_kb,
        sent: sent.load(Ordering::Relaxed),
    })
}

/// Runs the flood benchmark.
pub fn run(rates: &[u64], secs: f64, devices: usize) -> Result<()> {
    println!(
        "inkan bench flood: {devices} legitimate devices (127.0.0.1) authenticate for {secs} s per rate while message_1 floods from 127.0.0.2 (64 source ports); inkan serve on SQLite in its own process"
    );
    let (dir, f, chips) = fleet(devices)?;
    let db = dir.path().join("flood.db").to_string_lossy().into_owned();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(register_bench_family(&f, &db))?;
    // The service's defaults (no larger exchange cap): what a deployment
    // faces.
    let server = spawn_serve(&f, &db, &[])?;
    let (pid, coap, api) = (server.child.id(), server.coap, server.api.clone());
    let result = (|| -> Result<()> {
        let base = phase(&chips, coap, &api, pid, 0, secs)?;
        let rss0 = rss_kb(pid).context("reading the service's memory")?;
        println!(
            "\n  reference, no flood: {} authentications, success {:.1} %, p50 {:.1} ms, p99 {:.1} ms; API worst {:.1} ms; resident memory {:.1} MB",
            base.ok,
            100.0 * base.ok as f64 / (base.ok + base.failed).max(1) as f64,
            percentile(&base.latencies, 500).as_secs_f64() * 1e3,
            percentile(&base.latencies, 990).as_secs_f64() * 1e3,
            base.api_worst.as_secs_f64() * 1e3,
            rss0 as f64 / 1024.0
        );
        println!(
            "\n  {:>8} {:>10} {:>12} {:>9} {:>9} {:>12} {:>9} {:>10}",
            "flood/s", "sent", "legit ok %", "p50 ms", "p99 ms", "API worst", "API fail", "peak MB"
        );
        for &rate in rates {
            let p = phase(&chips, coap, &api, pid, rate, secs)?;
            println!(
                "  {:>8} {:>10} {:>12.1} {:>9.1} {:>9.1} {:>10.1}ms {:>9} {:>10.1}",
                rate,
                p.sent,
                100.0 * p.ok as f64 / (p.ok + p.failed).max(1) as f64,
                percentile(&p.latencies, 500).as_secs_f64() * 1e3,
                percentile(&p.latencies, 990).as_secs_f64() * 1e3,
                p.api_worst.as_secs_f64() * 1e3,
                p.api_failed,
                p.rss_peak_kb as f64 / 1024.0
            );
            // Recovery: the first legitimate authentication after the
            // flood stopped, and how long it took.
            let t = Instant::now();
            let mut tries = 0;
            loop {
                tries += 1;
                if inkan_device::connect(chips[0].clone(), coap, quick()).is_ok() || tries > 50 {
                    break;
                }
            }
            println!(
                "  {:>8} recovery: first authentication {:.1} ms after the flood stopped ({tries} attempt(s))",
                "",
                t.elapsed().as_secs_f64() * 1e3
            );
        }
        Ok(())
    })();
    drop(server);
    result
}
