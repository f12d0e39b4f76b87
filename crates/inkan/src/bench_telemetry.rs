//! `inkan bench telemetry`: devices authenticated with EDHOC send batches of
//! 64-byte readings under OSCORE to `inkan serve` (SQLite, its own process),
//! each batch acknowledged only once stored; beside it, the same rows in
//! the same batch size inserted raw into the same store.

use crate::bench_auth::{fleet, register_bench_family, spawn_serve};
use crate::measure::percentile;
use anyhow::{bail, Result};
use inkan_proto::telemetry::Reading;
use std::time::{Duration, Instant};

fn batch(device: usize, k: usize, size: usize) -> Vec<Reading> {
    (0..size)
        .map(|i| Reading {
            time_ms: u64::try_from(k * size + i).unwrap_or(0),
            channel: u32::try_from(device % 8).unwrap_or(0),
            value: vec![u8::try_from((k + i) % 251).unwrap_or(0); 64],
        })
        .collect()
}

/// Runs the benchmark.
pub fn run(devices: usize, batches: usize, batch_size: usize, commands: usize) -> Result<()> {
    println!(
        "inkan bench telemetry: {devices} devices, {batches} batches of {batch_size} readings of 64 bytes each, over OSCORE to inkan serve (SQLite, own process)"
    );
    let (dir, f, chips) = fleet(devices)?;
    let db = dir
        .path()
        .join("telemetry.db")
        .to_string_lossy()
        .to_string();
    let rt = tokio::runtime::Runtime::new()?;
    let (tenant, fam_id) = rt.block_on(register_bench_family(&f, &db))?;
    let server = spawn_serve(&f, &db, &["--max-pending", "100000"])?;
    let addr = server.coap;
    let result = (|| -> Result<(f64, Vec<Duration>, Vec<Duration>)> {
        let rt_args = inkan_device::Retransmission {
            ack_timeout: Duration::from_secs(2),
            max_retransmit: 4,
        };
        let mut uplinks = Vec::new();
        let mut sessions = Vec::new();
        for c in &chips {
            let connected = inkan_device::connect(c.clone(), addr, rt_args)?;
            uplinks.push(inkan_device::Uplink::new(&connected, addr, rt_args)?);
            sessions.push(connected);
        }
        // Command round trip, on the first device: from the command being
        // queued (signed) to the device's report being recorded, the
        // device polling without pause and its chip verifying each command.
        let command_rtt = {
            let key = inkan_pki::SoftwareKey::load(
                &f.dir().join("keys/dev-cloud-command.key.pem"),
                b"bench",
            )?;
            let identity = crate::cloud::load_identity(
                &f.dir().join("keys/dev-cloud-auth.key.pem"),
                b"bench",
            )?;
            let issuer = rt.block_on(async {
                anyhow::Ok(
                    inkan_cloud::App::new(
                        inkan_cloud::Registry::new(inkan_cloud::Store::open(&db).await?),
                        identity,
                        inkan_cloud::Limits::default(),
                    )
                    .with_command_key(Box::new(key)),
                )
            })?;
            let device = rt
                .block_on(issuer.registry.store.devices_of_family(&tenant, &fam_id))?
                .into_iter()
                .find(|d| d.serial == sessions[0].serial)
                .ok_or_else(|| anyhow::anyhow!("device row"))?;
            // A session of its own, apart from the readings'.
            let own = inkan_device::connect(chips[0].clone(), addr, rt_args)?;
            let mut up = inkan_device::Uplink::new(&own, addr, rt_args)?;
            let mut executed = inkan_device::Executed::open(None)?;
            let mut actuator =
                |_: &inkan_proto::command::Command| -> Result<String, String> { Ok("done".into()) };
            let mut rtt = Vec::with_capacity(commands);
            for _ in 0..commands {
                let t = Instant::now();
                rt.block_on(inkan_cloud::commands::issue(
                    &issuer,
                    &tenant,
                    std::slice::from_ref(&device),
                    "toggle",
                    b"",
                    60,
                ))?;
                loop {
                    match inkan_device::poll_and_run(
                        &mut up,
                        &chips[0],
                        &mut executed,
                        &mut actuator,
                    )? {
                        inkan_device::Polled::Ran(..) => break,
                        inkan_device::Polled::Nothing => continue,
                        inkan_device::Polled::Refused(e) => bail!("command refused: {e}"),
                    }
                }
                rtt.push(t.elapsed());
            }
            rtt.sort();
            rtt
        };
        let t = Instant::now();
        let lat = std::sync::Mutex::new(Vec::with_capacity(devices * batches));
        let failures = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for (d, mut up) in uplinks.into_iter().enumerate() {
                let (lat, failures) = (&lat, &failures);
                s.spawn(move || {
                    for k in 0..batches {
                        let b = batch(d, k, batch_size);
                        let t = Instant::now();
                        match up.send(&b) {
                            Ok(n) if n == b.len() as u64 => {
                                if let Ok(mut l) = lat.lock() {
                                    l.push(t.elapsed());
                                }
                            }
                            _ => {
                                failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }
                });
            }
        });
        let wall = t.elapsed().as_secs_f64();
        let fails = failures.load(std::sync::atomic::Ordering::Relaxed);
        if fails > 0 {
            bail!("{fails} batches failed");
        }
        let mut l = lat
            .into_inner()
            .map_err(|_| anyhow::anyhow!("latency lock"))?;
        l.sort();
        Ok((
            (devices * batches * batch_size) as f64 / wall,
            l,
            command_rtt,
        ))
    })();
    drop(server);
    let (rate, lat, rtt) = result?;

    // Reference: the same rows, same batch size, inserted raw into the
    // same store (one transaction per batch, the same multi-row statements).
    let raw = rt.block_on(async {
        let store = inkan_cloud::Store::open(&db).await?;
        let rows = store
            .readings(&tenant, None, None, 0, i64::MAX, None, 1)
            .await?;
        let Some(first) = rows.first() else {
            bail!("no readings were stored");
        };
        let session = inkan_cloud::store::SessionRow {
            id: "raw-reference".into(),
            device_id: first.key.device_id.clone(),
            credential_id: None,
            c_i: String::new(),
            c_r: String::new(),
            oscore: None,
            expires: 0,
            ended: None,
            replay_high: None,
            replay_bits: 0,
        };
        let t = Instant::now();
        let n = devices * batches;
        for k in 0..n {
            let rows: Vec<(i64, i64, Vec<u8>)> = batch(0, k, batch_size)
                .into_iter()
                .map(|r| {
                    (
                        i64::try_from(r.time_ms).unwrap_or(0),
                        i64::from(r.channel),
                        r.value,
                    )
                })
                .collect();
            store
                .insert_readings_raw(&session, i64::try_from(k).unwrap_or(0), &rows)
                .await?;
        }
        anyhow::Ok((n * batch_size) as f64 / t.elapsed().as_secs_f64())
    })?;
    println!();
    println!(
        "{:<58} {:>12} {:>8} {:>8} {:>7}",
        "", "readings/s", "p50 ms", "p99 ms", "ratio"
    );
    println!(
        "{:<58} {raw:>12.0} {:>8} {:>8} {:>7}",
        "raw inserts, same rows and batches (reference)", "", "", "1.00"
    );
    println!(
        "{:<58} {rate:>12.0} {:>8.2} {:>8.2} {:>7.2}",
        "ingested over OSCORE, stored before the acknowledgement",
        percentile(&lat, 500).as_secs_f64() * 1000.0,
        percentile(&lat, 990).as_secs_f64() * 1000.0,
        rate / raw
    );
    println!(
        "command round trip ({} commands: queued, polled, verified by the chip, run, result recorded): p50 {:.2} ms, p99 {:.2} ms",
        rtt.len(),
        percentile(&rtt, 500).as_secs_f64() * 1000.0,
        percentile(&rtt, 990).as_secs_f64() * 1000.0
    );
    Ok(())
}
