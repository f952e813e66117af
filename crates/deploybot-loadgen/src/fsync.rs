//! The disk's fsync latency, printed next to every result because it varies
//! tenfold over an hour on these machines.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::stats::Latencies;

/// Writes and fsyncs 4 KiB `rounds` times in a scratch file under `dir`.
pub fn measure(dir: &Path, rounds: usize) -> std::io::Result<String> {
    let path = dir.join(".loadgen-fsync-probe");
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)?;
    let block = [0u8; 4096];
    let mut latencies = Latencies::default();
    let mut total = Duration::ZERO;
    for _ in 0..rounds {
        let started = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        let took = started.elapsed();
        total += took;
        latencies.record(took);
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(format!(
        "{} over {rounds} writes (mean {:.2} ms)",
        latencies.summary(),
        total.as_secs_f64() * 1000.0 / rounds as f64
    ))
}
