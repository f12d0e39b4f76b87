//! What the benchmarks measure with: CPU time from /proc, percentiles.

use anyhow::{bail, Context, Result};
use std::time::Duration;

/// CPU seconds (user + system) a process has used, from /proc.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    cpu_seconds_in(&format!("/proc/{pid}/stat"))
}

/// CPU seconds (user + system) the calling thread has used.
pub fn thread_cpu_seconds() -> Result<f64> {
    cpu_seconds_in("/proc/thread-self/stat")
}

fn cpu_seconds_in(stat_path: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(stat_path)?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("stat format")?;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields after the command: state is index 0, utime 11, stime 12.
    let ticks: f64 =
        f.get(11).context("utime")?.parse::<f64>()? + f.get(12).context("stime")?.parse::<f64>()?;
    #[allow(unsafe_code)]
    // SAFETY: sysconf takes a constant and only reads a system setting.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        bail!("sysconf(_SC_CLK_TCK) failed");
    }
    Ok(ticks / hz as f64)
}

/// `per_mille` of 500 is the median, 990 the 99th percentile.
pub fn percentile(sorted: &[Duration], per_mille: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Nearest-rank percentile on the sorted sample.
    let rank = (sorted.len() - 1) * per_mille / 1000;
    sorted[rank.min(sorted.len() - 1)]
}
