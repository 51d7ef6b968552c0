//! P4 and P4b: durable small updates with default options, and a log
//! written the obvious way, against `pwrite` + `fdatasync`, mmap-io and
//! `tokio::fs`, with what reached the block device.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use mmap_actor::MappedFile;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;

use crate::throughput::{join_all, open_mmap_io};
use crate::util::{fmt_ops, fmt_ratio, multi_thread, prefill, rate, remove, Config, Rng, MIB};
use crate::{Met, Row};

/// Bytes written to the block device holding `path` so far
/// (`/sys/dev/block/MAJ:MIN/stat`), or `None` off a block device. The
/// counter is machine-wide: other writers can only add to it.
pub(crate) fn device_bytes(path: &Path) -> Option<u64> {
    let dev = std::fs::metadata(path.parent()?).ok()?.dev();
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0xff);
    let stat = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/stat")).ok()?;
    let sectors: u64 = stat.split_whitespace().nth(6)?.parse().ok()?;
    Some(sectors * 512)
}

/// The syncs our group commit started, counted from its tracing events
/// (see `main.rs`, which installs the counter).
pub(crate) static SYNCS: AtomicU64 = AtomicU64::new(0);

/// What one run did.
#[derive(Clone, Copy, Default)]
struct Run {
    ops_per_sec: f64,
    /// Device bytes during the run (`None` off a block device).
    device: Option<u64>,
    syncs: u64,
}

fn fmt_bytes(b: Option<u64>) -> String {
    match b {
        Some(b) if b >= MIB => format!("{:.1} MiB", b as f64 / MIB as f64),
        Some(b) => format!("{:.0} KiB", b as f64 / 1024.0),
        None => "–".into(),
    }
}

// ---------------------------------------------------------------- P4

const P4_LEN: u64 = 16 * MIB;
const P4_BLOCK: u64 = 4096;

fn p4_offset(rng: &mut Rng) -> u64 {
    rng.below(P4_LEN / P4_BLOCK) * P4_BLOCK
}

/// Runs `body` on a fresh prefilled file and measures it.
async fn measured<F, Fut>(path: &Path, ops: u64, body: F) -> Run
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let before = device_bytes(path);
    let syncs = SYNCS.load(Ordering::Relaxed);
    let start = Instant::now();
    body().await;
    let elapsed = start.elapsed();
    Run {
        ops_per_sec: rate(ops, elapsed),
        device: before.and_then(|b| Some(device_bytes(path)? - b)),
        syncs: SYNCS.load(Ordering::Relaxed) - syncs,
    }
}

async fn p4_ours(path: PathBuf, tasks: u64, per_task: u64) -> Run {
    prefill(&path, P4_LEN);
    let file = MappedFile::open_rw(&path).await.expect("open ours");
    // Read in as a scan would (large page-cache folios, where stores
    // through the mapping would dirty megabytes), then start clean.
    file.prewarm(0, P4_LEN).await.expect("prewarm ours");
    let run = measured(&path, tasks * per_task, || async {
        let mut set = JoinSet::new();
        for t in 0..tasks {
            let file = file.clone();
            set.spawn(async move {
                let mut rng = Rng::new(t);
                let buf = vec![t as u8; P4_BLOCK as usize];
                for _ in 0..per_task {
                    file.update_from(p4_offset(&mut rng), &buf)
                        .await
                        .expect("update");
                    file.flush().await.expect("flush");
                }
            });
        }
        join_all(set).await;
    })
    .await;
    file.close().await.expect("close");
    remove(&path);
    run
}

async fn p4_pwrite(path: PathBuf, tasks: u64, per_task: u64) -> Run {
    prefill(&path, P4_LEN);
    let file = Arc::new(
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open for pwrite"),
    );
    let run = measured(&path, tasks * per_task, || async {
        let mut set = JoinSet::new();
        for t in 0..tasks {
            let file = Arc::clone(&file);
            set.spawn(async move {
                let mut rng = Rng::new(t);
                let buf = Arc::new(vec![t as u8; P4_BLOCK as usize]);
                for _ in 0..per_task {
                    let off = p4_offset(&mut rng);
                    let (file, buf) = (Arc::clone(&file), Arc::clone(&buf));
                    tokio::task::spawn_blocking(move || {
                        file.write_all_at(&buf, off)?;
                        file.sync_data()
                    })
                    .await
                    .expect("spawn_blocking")
                    .expect("pwrite + fdatasync");
                }
            });
        }
        join_all(set).await;
    })
    .await;
    remove(&path);
    run
}

async fn p4_mmap_io(path: PathBuf, tasks: u64, per_task: u64) -> Run {
    let mm = open_mmap_io(&path, P4_LEN);
    mm.flush().expect("flush");
    let run = measured(&path, tasks * per_task, || async {
        let mut set = JoinSet::new();
        for t in 0..tasks {
            let mm = mm.clone();
            set.spawn(async move {
                let mut rng = Rng::new(t);
                let buf = vec![t as u8; P4_BLOCK as usize];
                for _ in 0..per_task {
                    mm.update_region_async(p4_offset(&mut rng), &buf)
                        .await
                        .expect("update_region_async");
                }
            });
        }
        join_all(set).await;
    })
    .await;
    drop(mm);
    remove(&path);
    run
}

/// P4: durable 4 KiB random updates (update then flush) with default
/// options from 1, 4 and 32 tasks.
pub(crate) fn p4(cfg: &Config) -> Vec<Row> {
    let rt = multi_thread(2);
    let mut rows = Vec::new();
    for tasks in [1u64, 4, 32] {
        let per_task = cfg.pick(512 / tasks.min(16), 32 / tasks.min(8)).max(4);
        // Best of three interleaved rounds for the speeds; the device
        // bytes of the round with the fewest (other writers only add).
        let (mut ours, mut pwrite) = (Run::default(), Run::default());
        let (mut ours_dev, mut pwrite_dev) = (u64::MAX, u64::MAX);
        for _ in 0..3 {
            let o = rt.block_on(p4_ours(cfg.path("p4-ours"), tasks, per_task));
            let p = rt.block_on(p4_pwrite(cfg.path("p4-pwrite"), tasks, per_task));
            if o.ops_per_sec > ours.ops_per_sec {
                ours = o;
            }
            if p.ops_per_sec > pwrite.ops_per_sec {
                pwrite = p;
            }
            ours_dev = ours_dev.min(o.device.unwrap_or(u64::MAX));
            pwrite_dev = pwrite_dev.min(p.device.unwrap_or(u64::MAX));
        }
        let w = format!(
            "durable 4 KiB random updates (`update_from` + `flush`), default options, 16 MiB file read in first, {tasks} task(s) × {per_task} (speed-up = ours/peer op/s, best of 3)"
        );
        let r = ours.ops_per_sec / pwrite.ops_per_sec;
        rows.push(
            Row::new("P4", &w)
                .ours(fmt_ops(ours.ops_per_sec))
                .peer(
                    "spawn_blocking pwrite + fdatasync",
                    fmt_ops(pwrite.ops_per_sec),
                )
                .ratio(fmt_ratio(r))
                .target("≥ 0.95×", Met::from(r >= 0.95)),
        );
        if ours_dev != u64::MAX && pwrite_dev != u64::MAX {
            let d = ours_dev as f64 / pwrite_dev.max(1) as f64;
            rows.push(
                Row::new("P4", &w)
                    .ours(format!("{} to the device", fmt_bytes(Some(ours_dev))))
                    .peer(
                        "device bytes of spawn_blocking pwrite + fdatasync",
                        fmt_bytes(Some(pwrite_dev)),
                    )
                    .ratio(format!("{d:.2}× the bytes"))
                    .target("≤ 1.5× the bytes", Met::from(d <= 1.5)),
            );
        }
        if tasks == 32 {
            let m = rt.block_on(p4_mmap_io(cfg.path("p4-mmap-io"), tasks, per_task));
            let r = ours.ops_per_sec / m.ops_per_sec;
            rows.push(
                Row::new("P4", &w)
                    .ours(fmt_ops(ours.ops_per_sec))
                    .peer(
                        "mmap-io 1.1 `update_region_async` (msync MS_SYNC each)",
                        fmt_ops(m.ops_per_sec),
                    )
                    .ratio(fmt_ratio(r))
                    .target("≥ 10×", Met::from(r >= 10.0)),
            );
        }
    }
    rows
}

// ---------------------------------------------------------------- P4b

const LOG_TASKS: u64 = 16;
const LOG_STEP: u64 = 16 * MIB;

/// Record sizes from 100 to 2,000 bytes, the same for every library.
fn record_len(rng: &mut Rng) -> u64 {
    100 + rng.below(1901)
}

async fn log_ours(path: PathBuf, per_task: u64) -> (Run, u64) {
    remove(&path);
    let file = MappedFile::create(&path, LOG_STEP)
        .await
        .expect("create ours");
    let cursor = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let run = measured(&path, LOG_TASKS * per_task, || async {
        let mut set = JoinSet::new();
        for t in 0..LOG_TASKS {
            let (file, cursor, bytes) = (file.clone(), Arc::clone(&cursor), Arc::clone(&bytes));
            set.spawn(async move {
                let mut rng = Rng::new(t);
                let record = vec![t as u8 | 1; 2000];
                for _ in 0..per_task {
                    let len = record_len(&mut rng);
                    let at = cursor.fetch_add(len, Ordering::Relaxed);
                    if at + len > file.len() {
                        // Tasks racing to make room: `grow_to` never shrinks.
                        file.grow_to(at + len + LOG_STEP).await.expect("grow_to");
                    }
                    file.update_from(at, &record[..len as usize])
                        .await
                        .expect("update_from");
                    file.flush().await.expect("flush");
                    bytes.fetch_add(len, Ordering::Relaxed);
                }
            });
        }
        join_all(set).await;
    })
    .await;
    file.close().await.expect("close");
    remove(&path);
    (run, bytes.load(Ordering::Relaxed))
}

async fn log_tokio_fs(path: PathBuf, per_task: u64) -> (Run, u64) {
    remove(&path);
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await
        .expect("open tokio::fs");
    let bytes = Arc::new(AtomicU64::new(0));
    let shared = Arc::new(tokio::sync::Mutex::new(file));
    let run = measured(&path, LOG_TASKS * per_task, || async {
        let mut set = JoinSet::new();
        for t in 0..LOG_TASKS {
            let (shared, bytes) = (Arc::clone(&shared), Arc::clone(&bytes));
            // A handle of its own to sync with, outside the mutex.
            let syncer = shared.lock().await.try_clone().await.expect("try_clone");
            set.spawn(async move {
                let mut rng = Rng::new(t);
                let record = vec![t as u8 | 1; 2000];
                for _ in 0..per_task {
                    let len = record_len(&mut rng);
                    {
                        let mut f = shared.lock().await;
                        f.write_all(&record[..len as usize])
                            .await
                            .expect("write_all");
                        f.flush().await.expect("flush");
                    }
                    syncer.sync_data().await.expect("sync_data");
                    bytes.fetch_add(len, Ordering::Relaxed);
                }
            });
        }
        join_all(set).await;
    })
    .await;
    remove(&path);
    (run, bytes.load(Ordering::Relaxed))
}

/// P4b: a log written the obvious way: 16 tasks append 100–2,000 B
/// records at a growing end, each made durable (`update_from` + `flush`).
pub(crate) fn p4b(cfg: &Config) -> Vec<Row> {
    let per_task = cfg.pick(2_000, 100);
    let rt = multi_thread(2);
    let (mut ours, mut fs) = ((Run::default(), 0), (Run::default(), 0));
    let mut least_ratio = f64::MAX;
    for _ in 0..2 {
        let o = rt.block_on(log_ours(cfg.path("p4b-ours"), per_task));
        let f = rt.block_on(log_tokio_fs(cfg.path("p4b-tokio-fs"), per_task));
        if let Some(dev) = o.0.device {
            least_ratio = least_ratio.min(dev as f64 / o.1.max(1) as f64);
        }
        if o.0.ops_per_sec > ours.0.ops_per_sec {
            ours = o;
        }
        if f.0.ops_per_sec > fs.0.ops_per_sec {
            fs = f;
        }
    }
    let w = format!(
        "durable log: 16 tasks × {per_task} records of 100–2,000 B at a growing end, `update_from` + `flush` each, default options (speed-up = ours/peer appends/s, best of 2)"
    );
    let r = ours.0.ops_per_sec / fs.0.ops_per_sec;
    let per_sync = (LOG_TASKS * per_task) as f64 / ours.0.syncs.max(1) as f64;
    let mut rows = vec![
        Row::new("P4b", &w)
            .ours(fmt_ops(ours.0.ops_per_sec))
            .peer(
                "tokio::fs O_APPEND `write_all` under a mutex, `sync_data` outside it",
                fmt_ops(fs.0.ops_per_sec),
            )
            .ratio(fmt_ratio(r))
            .target("≥ 2×", Met::from(r >= 2.0)),
        Row::new("P4b", &w)
            .ours(format!(
                "{:.1} appends per sync ({} syncs)",
                per_sync, ours.0.syncs
            ))
            .peer("–", "–")
            .target("≥ 4 appends per fdatasync", Met::from(per_sync >= 4.0)),
    ];
    if least_ratio != f64::MAX {
        rows.push(
            Row::new("P4b", &w)
                .ours(format!(
                    "{} to the device for {} of records",
                    fmt_bytes(ours.0.device),
                    fmt_bytes(Some(ours.1))
                ))
                .peer("tokio::fs device bytes", fmt_bytes(fs.0.device))
                .ratio(format!("{least_ratio:.2}× the record bytes"))
                .target("≤ 2× the record bytes", Met::from(least_ratio <= 2.0)),
        );
    }
    rows
}
