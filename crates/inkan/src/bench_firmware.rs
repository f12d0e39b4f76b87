//! `inkan bench firmware`: a device downloads a large image block-wise
//! (RFC 7959, 1 KiB blocks, under OSCORE) from `inkan serve` in its own
//! process, twice. Printed: the service's CPU time per download and per
//! block (the first download reads the image from the store once, the
//! second is served from memory) beside reading the image once from the
//! same store, measured in the same run.

use crate::bench_auth::{cpu_seconds, fleet, register_bench_family, spawn_serve};
use anyhow::Result;
use std::time::{Duration, Instant};

/// Runs the firmware download benchmark with an image of `mib` MiB.
pub fn run(mib: usize) -> Result<()> {
    println!(
        "inkan bench firmware: one device downloads a {mib} MiB image in 1 KiB blocks under OSCORE from inkan serve (SQLite, its own process)"
    );
    let (dir, f, chips) = fleet(1)?;
    let db = dir
        .path()
        .join("firmware.db")
        .to_string_lossy()
        .into_owned();
    let rt = tokio::runtime::Runtime::new()?;
    let image: Vec<u8> = (0..mib * 1024 * 1024)
        .map(|i| u8::try_from(i % 251).unwrap_or(0))
        .collect();
    let firmware_id = inkan_cloud::store::new_id();
    rt.block_on(async {
        let (tenant, family) = register_bench_family(&f, &db).await?;
        // Stored as an upload would store it (the upload's checks are not
        // what is measured here).
        let store = inkan_cloud::Store::open(&db).await?;
        store
            .insert_firmware(
                &firmware_id,
                &tenant,
                &family,
                "1.0.0",
                1,
                b"bench manifest",
                &image,
            )
            .await?;
        anyhow::Ok(())
    })?;
    let server = spawn_serve(&f, &db, &[])?;
    let (pid, coap) = (server.child.id(), server.coap);
    let result = (|| -> Result<()> {
        let rtx = inkan_device::Retransmission {
            ack_timeout: Duration::from_secs(2),
            max_retransmit: 4,
        };
        let c = inkan_device::connect(chips[0].clone(), coap, rtx)?;
        let mut up = inkan_device::Uplink::new(&c, coap, rtx)?;
        // Twice: the first download reads the image from the store once,
        // the second is served from the service's memory.
        let mut runs = Vec::new();
        for k in 0..2 {
            let out = dir.path().join(format!("download-{k}.bin"));
            let cpu0 = cpu_seconds(pid)?;
            let t = Instant::now();
            let (bytes, done) = up.download(&firmware_id, &out, None)?;
            let wall = t.elapsed();
            let cpu = cpu_seconds(pid)? - cpu0;
            anyhow::ensure!(done, "the download did not finish");
            anyhow::ensure!(
                std::fs::read(&out)? == image,
                "the downloaded image differs"
            );
            runs.push((bytes, wall, cpu));
        }
        // Reference: the image read once from the same database file with
        // a plain SQLite query (sqlx directly, not inkan's store).
        let read_once = rt.block_on(async {
            use sqlx::Connection;
            let mut conn =
                sqlx::SqliteConnection::connect(&format!("sqlite://{db}?mode=ro")).await?;
            let t = Instant::now();
            let (got,): (Vec<u8>,) = sqlx::query_as("SELECT image FROM firmware WHERE id = ?1")
                .bind(&firmware_id)
                .fetch_one(&mut conn)
                .await?;
            let e = t.elapsed();
            anyhow::ensure!(got.len() == image.len(), "short read");
            anyhow::Ok(e)
        })?;
        let blocks = runs[0].0.div_ceil(1024).max(1);
        for (k, (bytes, wall, cpu)) in runs.iter().enumerate() {
            println!(
                "  download {}: {bytes} bytes in {blocks} blocks, {:.2} s ({:.1} MB/s); server CPU {:.2} s ({:.1} µs per block){}",
                k + 1,
                wall.as_secs_f64(),
                *bytes as f64 / wall.as_secs_f64() / 1e6,
                cpu,
                cpu * 1e6 / blocks as f64,
                if k == 0 { ", the image read from the store once" } else { ", served from memory" }
            );
        }
        println!(
            "  reference, reading the image once with a plain SQL query: {:.1} ms; the service reads it once per download at most (not once per block)",
            read_once.as_secs_f64() * 1e3
        );
        Ok(())
    })();
    drop(server);
    result
}
