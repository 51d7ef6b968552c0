//! A tour of mmap-actor: concurrent updaters, loads, leases, atomics, a
//! durable flush and a grow that does not wait for live views.
//!
//! ```text
//! cargo run --release --example tour            # in a temporary directory
//! cargo run --release --example tour -- data.bin  # or at a path you choose
//! ```

use std::sync::atomic::Ordering;
use std::time::Instant;

use mmap_actor::MappedFile;

const LEN: u64 = 64 << 20;
const TASKS: u64 = 16;
const UPDATES_PER_TASK: u64 = 10_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let scratch = tempfile::tempdir()?;
    let path = match std::env::args_os().nth(1) {
        Some(path) => path.into(),
        None => scratch.path().join("tour.bin"),
    };

    let t = Instant::now();
    let file = MappedFile::create(&path, LEN).await?;
    println!(
        "created {} ({} MiB) in {:?}",
        path.display(),
        LEN >> 20,
        t.elapsed()
    );

    let t = Instant::now();
    file.prewarm(0, LEN).await?;
    println!(
        "prewarmed every page on the blocking pool in {:?}",
        t.elapsed()
    );

    // Concurrent updaters: each task owns a stripe of 64-byte records.
    let t = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let file = file.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..UPDATES_PER_TASK {
                let offset = (i * TASKS + task) * 64;
                let mut record = [0u8; 64];
                record[..8].copy_from_slice(&task.to_le_bytes());
                record[8..16].copy_from_slice(&i.to_le_bytes());
                file.update(offset, record.to_vec()).await?;
            }
            Ok::<_, mmap_actor::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let n = TASKS * UPDATES_PER_TASK;
    let elapsed = t.elapsed();
    println!(
        "{n} updates of 64 B from {TASKS} tasks in {elapsed:?} ({:.0} ns each)",
        elapsed.as_nanos() as f64 / n as f64
    );

    // Loads see every completed update, from any handle.
    let t = Instant::now();
    let record = file.load((1234 * TASKS + 7) * 64, 16).await?;
    assert_eq!(&record[..8], &7u64.to_le_bytes());
    assert_eq!(&record[8..], &1234u64.to_le_bytes());
    println!("loaded record 1234 of task 7 in {:?}", t.elapsed());

    // A zero-copy segment of 1 MiB, turned into `Bytes` without copying.
    let t = Instant::now();
    let segment = file.segment(0, 1 << 20).await?;
    let bytes = segment.into_bytes();
    println!(
        "leased 1 MiB zero-copy in {:?} (first task id {})",
        t.elapsed(),
        bytes[0]
    );
    drop(bytes);

    // An atomic counter inside the file.
    let hits = file.atomic_u64(LEN - 8).await?;
    hits.fetch_add(41, Ordering::Relaxed);
    hits.fetch_add(1, Ordering::Relaxed);

    // Durable: returns once fdatasync succeeded.
    let t = Instant::now();
    file.flush().await?;
    println!("flushed (fdatasync) in {:?}", t.elapsed());

    // Grow while `hits` is alive: a new generation, no waiting.
    let t = Instant::now();
    file.resize(2 * LEN).await?;
    println!(
        "grew to {} MiB with a view held in {:?}; the view still reads {}",
        file.len() >> 20,
        t.elapsed(),
        hits.load(Ordering::Relaxed)
    );

    // A shrink that would cut the view waits for its release.
    let shrinker = file.clone();
    let t = Instant::now();
    let shrink = tokio::spawn(async move { shrinker.resize(LEN / 2).await });
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    println!(
        "shrink pending while the view lives: {}",
        !shrink.is_finished()
    );
    drop(hits);
    shrink.await??;
    println!(
        "shrink done after the release, {:?} after it was asked",
        t.elapsed()
    );

    let t = Instant::now();
    file.close().await?;
    println!(
        "closed (final flush) in {:?}; length {} MiB",
        t.elapsed(),
        std::fs::metadata(&path)?.len() >> 20
    );
    Ok(())
}
