//! `inkan bench firmware`: a device downloads a large image from `inkan
//! serve` in its own process, twice: its ticket over OSCORE, then the
//! encrypted image in 1 KiB blocks (RFC 7959) with an Echo-verified
//! address. Printed: the service's CPU time per download and per block
//! (the first download reads the image from the store once, the second is
//! served from memory) beside two references measured in the same run:
//! reading the image once from the same store, and the floor of serving
//! it in 1 KiB datagrams at all (a bare blocking UDP loop answering each
//! request with 1 KiB from memory, no parsing, no crypto).

use crate::bench_auth::{fleet, register_bench_family, spawn_serve};
use crate::measure::{cpu_seconds, thread_cpu_seconds};
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
        let (floor_cpu, floor_wall) = udp_floor(&image)?;
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
        println!(
            "  reference, the floor of 1 KiB datagrams: a bare blocking UDP loop answering the same {blocks} requests from memory: server CPU {:.2} s ({:.1} µs per block), {:.2} s",
            floor_cpu,
            floor_cpu * 1e6 / blocks as f64,
            floor_wall.as_secs_f64()
        );
        Ok(())
    })();
    drop(server);
    result
}

/// A bare UDP server thread answering each datagram with the next 1 KiB of
/// `image` (a 12-byte header standing for CoAP's), driven stop-and-wait by
/// a client in this thread: (the server thread's CPU seconds, wall time).
fn udp_floor(image: &[u8]) -> Result<(f64, Duration)> {
    let server = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let at = server.local_addr()?;
    let blocks = image.len().div_ceil(1024);
    let data = image.to_vec();
    let t = std::thread::spawn(move || -> Result<f64> {
        let cpu0 = thread_cpu_seconds()?;
        let mut buf = [0u8; 64];
        let mut out = vec![0u8; 12 + 1024];
        for _ in 0..blocks {
            let (n, peer) = server.recv_from(&mut buf)?;
            let num = buf[..n.min(4)]
                .iter()
                .fold(0usize, |a, b| (a << 8) | usize::from(*b));
            let start = (num * 1024).min(data.len());
            let end = (start + 1024).min(data.len());
            out[12..12 + end - start].copy_from_slice(&data[start..end]);
            server.send_to(&out[..12 + end - start], peer)?;
        }
        Ok(thread_cpu_seconds()? - cpu0)
    });
    let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
    client.connect(at)?;
    client.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = vec![0u8; 2048];
    let start = Instant::now();
    for num in 0..blocks {
        client.send(&u32::try_from(num)?.to_be_bytes())?;
        client.recv(&mut buf)?;
    }
    let wall = start.elapsed();
    let cpu = t
        .join()
        .map_err(|_| anyhow::anyhow!("the floor's server thread panicked"))??;
    Ok((cpu, wall))
}
