//! Prewarms a large file with a progress bar, and prints how long it took.
//!
//! `MappedFile::prewarm_progress` faults the file in on the blocking pool,
//! one step at a time, and yields a `Progress { done, total }` after each:
//! the bar below moves with it while the runtime stays free for other
//! work. A second prewarm of the same (now resident) pages shows what is
//! left once nothing has to be read from the disk.
//!
//! ```text
//! cargo run --release --example prewarm                 # a new 512 MiB file
//! cargo run --release --example prewarm -- 2048         # a new 2 GiB file
//! cargo run --release --example prewarm -- /some/file   # an existing file
//! ```
//!
//! A new file is written with `write(2)` first, then (best effort) dropped
//! from the page cache with GNU `dd iflag=nocache`, so that the first
//! prewarm reads it from the disk.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use mmap_actor::MappedFile;

type Error = Box<dyn std::error::Error>;

const MIB: u64 = 1024 * 1024;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let arg = std::env::args().nth(1);
    let dir = tempfile::tempdir()?;
    let path = match arg.as_deref().map(|a| (a, a.parse::<u64>())) {
        Some((path, Err(_))) => PathBuf::from(path),
        Some((_, Ok(mib))) => make(dir.path(), mib * MIB)?,
        None => make(dir.path(), 512 * MIB)?,
    };
    let file = MappedFile::open_ro(&path).await?;
    println!("{}: {} MiB", path.display(), file.len().div_ceil(MIB));
    let cold = prewarm(&file, "first prewarm").await?;
    let warm = prewarm(&file, "again (resident)").await?;
    let mib = file.len() as f64 / MIB as f64;
    println!(
        "first: {:.3} s ({:.0} MiB/s); again: {:.3} s ({:.0} MiB/s)",
        cold.as_secs_f64(),
        mib / cold.as_secs_f64(),
        warm.as_secs_f64(),
        mib / warm.as_secs_f64()
    );
    file.close().await?;
    Ok(())
}

/// Prewarms the whole file behind a progress bar; returns the time taken.
async fn prewarm(file: &MappedFile, what: &str) -> Result<Duration, Error> {
    let bar = ProgressBar::new(file.len());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:18} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )?
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    let started = Instant::now();
    let mut progress = file.prewarm_progress(0, file.len());
    while let Some(step) = progress.next().await {
        bar.set_position(step?.done);
    }
    let took = started.elapsed();
    bar.finish();
    Ok(took)
}

/// Writes a file of `len` bytes and asks for it to leave the page cache.
fn make(dir: &Path, len: u64) -> Result<PathBuf, Error> {
    let path = dir.join("prewarm.bin");
    let mut out = std::fs::File::create(&path)?;
    let chunk: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
    let mut left = len;
    while left > 0 {
        let n = left.min(MIB) as usize;
        out.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    out.sync_all()?;
    drop(out);
    let dropped = Command::new("dd")
        .arg(format!("if={}", path.display()))
        .args(["iflag=nocache", "count=0", "status=none"])
        .status()
        .is_ok_and(|s| s.success());
    if !dropped {
        println!("(could not drop the file from the page cache: the first prewarm is warm too)");
    }
    Ok(path)
}
