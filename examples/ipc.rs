//! Two processes share counters through atomic views of one file.
//!
//! The parent creates the file and re-executes itself as a child; each maps
//! the file (`MappedFile::create` / `open_rw`), takes `AtomicU64` views of
//! the same bytes and increments every counter `ROUNDS` times with
//! `fetch_add`, at the same time as the other. Both read the totals; the
//! parent checks that every counter is exactly `2 × ROUNDS` and prints the
//! rates. Two `MAP_SHARED` mappings of a file share its page-cache pages,
//! so the atomics are the same memory in both processes.
//!
//! ```text
//! cargo run --release --example ipc
//! ```

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mmap_actor::{AtomicView, MappedFile};

/// Counters both processes increment.
const COUNTERS: u64 = 16;
/// Increments of each counter by each process.
const ROUNDS: u64 = 2_000_000;
/// Byte offsets in the file: a start barrier, a finish barrier, then the
/// counters on their own cache line.
const STARTED: u64 = 0;
const FINISHED: u64 = 8;
const COUNTERS_AT: u64 = 64;
const LEN: u64 = 4096;
/// How long to wait for the other process before giving up.
const PATIENCE: Duration = Duration::from_secs(30);

type Error = Box<dyn std::error::Error>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, path] = args.as_slice() {
        if flag == "--child" {
            return child(Path::new(path)).await;
        }
    }
    parent().await
}

async fn parent() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("counters.bin");
    let file = MappedFile::create(&path, LEN).await?;
    let child = Command::new(std::env::current_exe()?)
        .arg("--child")
        .arg(&path)
        .stdout(Stdio::piped())
        .spawn()?;
    let child = tokio::task::spawn_blocking(move || child.wait_with_output());

    let measured = run("parent", &file).await?;
    let output = child.await??;
    if !output.status.success() {
        return Err(format!("child failed: {}", output.status).into());
    }
    print!("{}", String::from_utf8_lossy(&output.stdout));
    report("parent", &measured);

    // After the child exited, nothing else touches the counters.
    let counters = file.atomic_u64_slice(COUNTERS_AT, COUNTERS).await?;
    for (i, counter) in counters.iter().enumerate() {
        let total = counter.load(Ordering::SeqCst);
        if total != 2 * ROUNDS {
            return Err(format!("counter {i} is {total}, not {}", 2 * ROUNDS).into());
        }
    }
    println!(
        "all {COUNTERS} counters = {} = 2 × {ROUNDS}: no increment lost across processes",
        2 * ROUNDS
    );
    drop(counters);
    file.close().await?;
    Ok(())
}

async fn child(path: &Path) -> Result<(), Error> {
    let file = MappedFile::open_rw(path).await?;
    let measured = run("child", &file).await?;
    report("child", &measured);
    Ok(())
}

/// What one process measured.
struct Run {
    elapsed: Duration,
    /// Increments the other process had made when this one finished its
    /// own: evidence that the two really ran at the same time.
    others_so_far: u64,
    /// The counters once both had finished.
    totals: Vec<u64>,
}

/// Waits for the other process, increments every counter `ROUNDS` times,
/// waits until the other has finished too, and reads the totals.
async fn run(who: &str, file: &MappedFile) -> Result<Run, Error> {
    let started = file.atomic_u64(STARTED).await?;
    let finished = file.atomic_u64(FINISHED).await?;
    let counters = file.atomic_u64_slice(COUNTERS_AT, COUNTERS).await?;

    started.fetch_add(1, Ordering::AcqRel);
    wait_for(&started, 2, who, "start").await?;
    let t = Instant::now();
    for _ in 0..ROUNDS {
        for counter in counters.iter() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
    let elapsed = t.elapsed();
    let sum: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    finished.fetch_add(1, Ordering::AcqRel);
    wait_for(&finished, 2, who, "finish").await?;
    let totals = counters.iter().map(|c| c.load(Ordering::Acquire)).collect();
    Ok(Run {
        elapsed,
        others_so_far: sum - COUNTERS * ROUNDS,
        totals,
    })
}

/// Polls `flag` until it reaches `value` (the other process's arrival).
async fn wait_for(
    flag: &AtomicView<AtomicU64>,
    value: u64,
    who: &str,
    what: &str,
) -> Result<(), Error> {
    let deadline = Instant::now() + PATIENCE;
    while flag.load(Ordering::Acquire) < value {
        if Instant::now() > deadline {
            return Err(format!("{who}: the other process did not {what} in {PATIENCE:?}").into());
        }
        tokio::time::sleep(Duration::from_micros(100)).await;
    }
    Ok(())
}

fn report(who: &str, run: &Run) {
    let ops = COUNTERS * ROUNDS;
    println!(
        "{who:>6}: {ops} fetch_adds in {:.0} ms = {:.1} M op/s; meanwhile the other process made {:.0}% of its increments; totals read afterwards: {:?}…",
        run.elapsed.as_secs_f64() * 1e3,
        ops as f64 / run.elapsed.as_secs_f64() / 1e6,
        100.0 * run.others_so_far as f64 / ops as f64,
        &run.totals[..4.min(run.totals.len())],
    );
}
