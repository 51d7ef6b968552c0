//! A small write-ahead log on an `Appender`: length-prefixed, checksummed
//! records appended durably from many tasks; then a crash (the process is
//! killed with SIGKILL) and a recovery that finds every acknowledged
//! record.
//!
//! ```text
//! cargo run --release --example wal            # 16 writers, killed after 1 s
//! cargo run --release --example wal -- 64 3    # 64 writers, killed after 3 s
//! ```
//!
//! The example runs itself twice: as the writer (a child process that
//! prints one line per acknowledged record and never stops), and as the
//! parent that kills it, recovers the log and checks every acknowledged
//! record. It prints the writer's throughput and what recovery found
//! (run it under `strace -f -c -e trace=fdatasync` to see the appends share
//! syncs).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mmap_actor::{Appender, MappedFile};

/// Record header: payload length and checksum, little-endian `u32`s.
const HEADER: usize = 8;

/// FNV-1a: enough to tell a torn or missing record from a whole one.
fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Appends one record; returns its offset (durable when this returns).
async fn append(log: &Appender, payload: &[u8]) -> mmap_actor::Result<u64> {
    let mut header = [0u8; HEADER];
    header[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[4..].copy_from_slice(&checksum(payload).to_le_bytes());
    log.append_vectored(&[&header, payload]).await
}

/// Scans the log from the start: every whole record, up to the first hole
/// or torn record (the end of what the log holds).
fn recover(bytes: &[u8]) -> Vec<(u64, &[u8])> {
    let mut records = Vec::new();
    let mut at = 0usize;
    while at + HEADER <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let sum = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap());
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        if len == 0 || checksum(payload) != sum {
            break;
        }
        records.push((at as u64, payload));
        at += HEADER + len;
    }
    records
}

/// The writer: appends forever, acknowledging each record on stdout.
async fn writer(path: &Path, writers: u32) -> mmap_actor::Result<()> {
    let file = MappedFile::open_or_create(path, 0).await?;
    let log = file.appender(0).grow_step(1 << 20).durable(true);
    println!("READY");
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let log = log.clone();
        tasks.spawn(async move {
            for i in 0u64.. {
                let payload = format!("writer {w} record {i}");
                let at = append(&log, payload.as_bytes()).await?;
                println!("ACK {at} {payload}");
            }
            Ok::<(), mmap_actor::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("writer task")?;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if let [_, flag, path, writers] = &args[..] {
        if flag == "--writer" {
            rt.block_on(writer(Path::new(path), writers.parse()?))?;
            return Ok(());
        }
    }
    let writers: u32 = args.get(1).map_or(Ok(16), |a| a.parse())?;
    let run_for = Duration::from_secs_f64(args.get(2).map_or(Ok(1.0), |a| a.parse())?);
    // Next to the build, on a real file system (a tmpfs sync is free).
    let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
    let path = dir.path().join("wal.log");

    // Run the writer, collect its acknowledgements, kill it.
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--writer",
            path.to_str().ok_or("path")?,
            &writers.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("stdout")?).lines();
    lines.next().transpose()?; // READY
    let started = Instant::now();
    let mut acked = Vec::new();
    for line in lines.by_ref() {
        if let Some((at, payload)) = line?.strip_prefix("ACK ").and_then(|l| l.split_once(' ')) {
            acked.push((at.parse::<u64>()?, payload.to_string()));
        }
        if started.elapsed() >= run_for {
            child.kill()?; // SIGKILL: no flush, no close
            break;
        }
    }
    let elapsed = started.elapsed();
    // Acknowledgements already in the pipe count too.
    for line in lines.map_while(Result::ok) {
        if let Some((at, payload)) = line.strip_prefix("ACK ").and_then(|l| l.split_once(' ')) {
            acked.push((at.parse::<u64>()?, payload.to_string()));
        }
    }
    child.wait()?;

    // Recover: open the log again and scan it.
    let recovery = Instant::now();
    let (found, len) = rt.block_on(async {
        let file = MappedFile::open_rw(&path).await?;
        let bytes = file.load(0, file.len()).await?;
        let found: Vec<(u64, String)> = recover(&bytes)
            .into_iter()
            .map(|(at, p)| (at, String::from_utf8_lossy(p).into_owned()))
            .collect();
        file.close().await?;
        Ok::<_, mmap_actor::Error>((found, bytes.len()))
    })?;
    let recovery = recovery.elapsed();
    let found_set: std::collections::HashSet<&(u64, String)> = found.iter().collect();
    let lost = acked.iter().filter(|r| !found_set.contains(r)).count();

    let secs = elapsed.as_secs_f64();
    println!(
        "writer: {writers} tasks, {} durable records acknowledged in {secs:.2} s ({:.0} records/s), then SIGKILL",
        acked.len(),
        acked.len() as f64 / secs
    );
    println!(
        "recovery: {} records found in a {len}-byte log in {:.1} ms; {} acknowledged records lost",
        found.len(),
        recovery.as_secs_f64() * 1e3,
        lost
    );
    if lost > 0 {
        return Err(format!("{lost} acknowledged records were lost").into());
    }
    Ok(())
}
