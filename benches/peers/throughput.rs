//! P1–P4: update throughput, request overhead and durable updates.

use std::io::SeekFrom;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mmap_actor::{MappedFile, DEFAULT_CHANNEL_CAPACITY};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::util::{
    current_thread, fmt_bps, fmt_dur, fmt_ops, fmt_ratio, multi_thread, per_op, prefill, rate,
    remove, Config, Rng, MIB,
};
use crate::{Met, Row};

async fn join_all(mut set: JoinSet<()>) {
    while let Some(done) = set.join_next().await {
        done.expect("a bench task panicked");
    }
}

/// Our file, prefilled, opened and written once through the mapping (as
/// mmap-io's is below), so that its pages are mapped writable: steady-state
/// overwrites. `prewarm` alone maps pages for reading; the first store to
/// each page would then take a write fault inside the measurement.
async fn open_ours(path: &Path, len: u64) -> MappedFile {
    prefill(path, len);
    let file = MappedFile::open_rw(path).await.expect("open ours");
    file.prewarm(0, len).await.expect("prewarm ours");
    let chunk = Bytes::from(vec![1u8; MIB as usize]);
    for off in (0..len).step_by(MIB as usize) {
        let n = (len - off).min(MIB) as usize;
        file.update(off, chunk.slice(..n))
            .await
            .expect("write-fault ours");
    }
    // No flush here: a sync write-protects the pages again, and mmap-io's
    // file is not flushed either.
    file
}

/// mmap-io's file, prefilled and written once through the mapping so that
/// its page tables are populated too.
fn open_mmap_io(path: &Path, len: u64) -> mmap_io::MemoryMappedFile {
    prefill(path, len);
    let mm = mmap_io::MemoryMappedFile::open_rw(path).expect("open mmap-io");
    let chunk = vec![1u8; MIB as usize];
    for off in (0..len).step_by(MIB as usize) {
        mm.update_region(off, &chunk[..(len - off).min(MIB) as usize])
            .expect("prewarm mmap-io");
    }
    mm
}

/// A raw memmap2 mapping behind a mutex: the floor for shared writers.
#[allow(unsafe_code)]
fn open_memmap2(path: &Path, len: u64) -> Arc<Mutex<memmap2::MmapMut>> {
    prefill(path, len);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open memmap2");
    // SAFETY: the bench owns this file; nothing else truncates or writes
    // it while it is mapped.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.expect("map memmap2");
    map.fill(1);
    Arc::new(Mutex::new(map))
}

/// Interleaved rounds per workload; each peer keeps its best.
const ROUNDS: u32 = 5;

// ---------------------------------------------------------------- P1

const P1_LEN: u64 = 64 * MIB;
const P1_TASKS: u64 = 64;

fn p1_offset(rng: &mut Rng) -> u64 {
    rng.below(P1_LEN / 64) * 64
}

async fn p1_ours(path: PathBuf, per_task: u64) -> f64 {
    let file = open_ours(&path, P1_LEN).await;
    let start = Instant::now();
    let mut set = JoinSet::new();
    for t in 0..P1_TASKS {
        let file = file.clone();
        set.spawn(async move {
            let mut rng = Rng::new(t);
            let mut buf = [t as u8; 64];
            for i in 0..per_task {
                buf[..8].copy_from_slice(&i.to_le_bytes());
                let off = p1_offset(&mut rng);
                file.update(off, Bytes::copy_from_slice(&buf))
                    .await
                    .expect("update");
            }
        });
    }
    join_all(set).await;
    let elapsed = start.elapsed();
    file.close().await.expect("close");
    remove(&path);
    rate(P1_TASKS * per_task, elapsed)
}

async fn p1_mmap_io(path: PathBuf, per_task: u64) -> f64 {
    let mm = open_mmap_io(&path, P1_LEN);
    let start = Instant::now();
    let mut set = JoinSet::new();
    for t in 0..P1_TASKS {
        let mm = mm.clone();
        set.spawn(async move {
            let mut rng = Rng::new(t);
            let mut buf = [t as u8; 64];
            for i in 0..per_task {
                buf[..8].copy_from_slice(&i.to_le_bytes());
                let off = p1_offset(&mut rng);
                mm.update_region(off, &buf).expect("update_region");
            }
        });
    }
    join_all(set).await;
    let elapsed = start.elapsed();
    drop(mm);
    remove(&path);
    rate(P1_TASKS * per_task, elapsed)
}

async fn p1_memmap2(path: PathBuf, per_task: u64) -> f64 {
    let map = open_memmap2(&path, P1_LEN);
    let start = Instant::now();
    let mut set = JoinSet::new();
    for t in 0..P1_TASKS {
        let map = Arc::clone(&map);
        set.spawn(async move {
            let mut rng = Rng::new(t);
            let mut buf = [t as u8; 64];
            for i in 0..per_task {
                buf[..8].copy_from_slice(&i.to_le_bytes());
                let off = p1_offset(&mut rng) as usize;
                map.lock().expect("memmap2 lock")[off..off + 64].copy_from_slice(&buf);
            }
        });
    }
    join_all(set).await;
    let elapsed = start.elapsed();
    drop(map);
    remove(&path);
    rate(P1_TASKS * per_task, elapsed)
}

async fn p1_tokio_fs(path: PathBuf, per_task: u64) -> f64 {
    prefill(&path, P1_LEN);
    // Each task needs its own cursor, so its own open file.
    let mut files = Vec::new();
    for _ in 0..P1_TASKS {
        let f = tokio::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .await
            .expect("open tokio::fs");
        files.push(f);
    }
    let start = Instant::now();
    let mut set = JoinSet::new();
    for (t, mut f) in files.into_iter().enumerate() {
        set.spawn(async move {
            let mut rng = Rng::new(t as u64);
            let mut buf = [t as u8; 64];
            for i in 0..per_task {
                buf[..8].copy_from_slice(&i.to_le_bytes());
                let off = p1_offset(&mut rng);
                f.seek(SeekFrom::Start(off)).await.expect("seek");
                f.write_all(&buf).await.expect("write_all");
            }
            f.flush().await.expect("flush");
        });
    }
    join_all(set).await;
    let elapsed = start.elapsed();
    remove(&path);
    rate(P1_TASKS * per_task, elapsed)
}

/// P1: 64 B random updates into a 64 MiB file from 64 tasks on a
/// 2-worker runtime.
pub(crate) fn p1(cfg: &Config) -> Vec<Row> {
    let per_task = cfg.pick(2_000, 200);
    let fs_per_task = (per_task / 20).max(10);
    let rt = multi_thread(2);
    // Best of five interleaved rounds: the machine may be shared, and a
    // busy neighbour should not decide a ratio.
    let (mut ours, mut mmap_io, mut raw, mut fs) = (0f64, 0f64, 0f64, 0f64);
    for _ in 0..ROUNDS {
        ours = ours.max(rt.block_on(p1_ours(cfg.path("p1-ours"), per_task)));
        mmap_io = mmap_io.max(rt.block_on(p1_mmap_io(cfg.path("p1-mmap-io"), per_task)));
        raw = raw.max(rt.block_on(p1_memmap2(cfg.path("p1-memmap2"), per_task)));
        fs = fs.max(rt.block_on(p1_tokio_fs(cfg.path("p1-tokio-fs"), fs_per_task)));
    }
    let w = format!(
        "64 B random updates, 64 MiB file, 64 tasks × {per_task}, 2 workers (speed-up = ours/peer op/s)"
    );
    vec![
        Row::new("P1", &w)
            .ours(fmt_ops(ours))
            .peer(
                "mmap-io 1.1 `update_region` (sync, in the task)",
                fmt_ops(mmap_io),
            )
            .ratio(fmt_ratio(ours / mmap_io))
            .target("≥ 1.0×", Met::from(ours / mmap_io >= 1.0)),
        Row::new("P1", &w)
            .ours(fmt_ops(ours))
            .peer(
                format!("tokio::fs seek+write_all (64 tasks × {fs_per_task})"),
                fmt_ops(fs),
            )
            .ratio(fmt_ratio(ours / fs))
            .target("≥ 50×", Met::from(ours / fs >= 50.0)),
        Row::new("P1", &w)
            .ours(fmt_ops(ours))
            .peer("memmap2 + Mutex (floor)", fmt_ops(raw))
            .ratio(fmt_ratio(ours / raw)),
    ]
}

// ---------------------------------------------------------------- P2

const P2_LEN: u64 = 64 * MIB;

async fn p2_ours(file: &MappedFile, n: u64) -> Duration {
    let mut buf = [7u8; 64];
    let start = Instant::now();
    for i in 0..n {
        buf[..8].copy_from_slice(&i.to_le_bytes());
        let off = (i * 64) % P2_LEN;
        file.update(off, Bytes::copy_from_slice(&buf))
            .await
            .expect("update");
    }
    per_op(start.elapsed(), n)
}

/// The same request shape (offset, payload, reply) sent to a task that
/// only answers: the cost of the hop itself.
async fn p2_bare(n: u64) -> Duration {
    type Msg = (u64, Bytes, oneshot::Sender<()>);
    let (tx, mut rx) = mpsc::channel::<Msg>(DEFAULT_CHANNEL_CAPACITY);
    let server = tokio::spawn(async move {
        while let Some((_off, _data, reply)) = rx.recv().await {
            let _ = reply.send(());
        }
    });
    let mut buf = [7u8; 64];
    let start = Instant::now();
    for i in 0..n {
        buf[..8].copy_from_slice(&i.to_le_bytes());
        let off = (i * 64) % P2_LEN;
        let (reply, answer) = oneshot::channel();
        tx.send((off, Bytes::copy_from_slice(&buf), reply))
            .await
            .expect("send");
        answer.await.expect("answer");
    }
    let elapsed = start.elapsed();
    drop(tx);
    server.await.expect("server");
    per_op(elapsed, n)
}

fn p2_mmap_io(mm: &mmap_io::MemoryMappedFile, n: u64) -> Duration {
    let mut buf = [7u8; 64];
    let start = Instant::now();
    for i in 0..n {
        buf[..8].copy_from_slice(&i.to_le_bytes());
        mm.update_region((i * 64) % P2_LEN, &buf)
            .expect("update_region");
    }
    per_op(start.elapsed(), n)
}

/// P2: one task, 64 B updates, current-thread runtime: our request
/// overhead against a bare mpsc + oneshot round trip.
pub(crate) fn p2(cfg: &Config) -> Vec<Row> {
    let n = cfg.pick(200_000, 20_000);
    let rt = current_thread();
    let path = cfg.path("p2-ours");
    let file = rt.block_on(open_ours(&path, P2_LEN));
    let mm_path = cfg.path("p2-mmap-io");
    let mm = open_mmap_io(&mm_path, P2_LEN);
    // Best of five, interleaved, so that a noisy neighbour hurts both.
    let (mut ours, mut bare, mut sync) = (Duration::MAX, Duration::MAX, Duration::MAX);
    // Each loop runs in a spawned task, as it would in a service (the
    // future given to `block_on` is polled differently from tasks).
    for _ in 0..3 {
        let f = file.clone();
        let t = rt.block_on(async move { tokio::spawn(async move { p2_ours(&f, n).await }).await });
        ours = ours.min(t.expect("ours"));
        let t = rt.block_on(async { tokio::spawn(p2_bare(n)).await });
        bare = bare.min(t.expect("bare"));
        sync = sync.min(p2_mmap_io(&mm, n));
    }
    rt.block_on(file.close()).expect("close");
    drop(mm);
    remove(&path);
    remove(&mm_path);
    let r = ours.as_secs_f64() / bare.as_secs_f64();
    let w = format!(
        "one task, {n} × 64 B updates, current-thread (time per update; ratio = ours/peer time)"
    );
    vec![
        Row::new("P2", &w)
            .ours(fmt_dur(ours))
            .peer("bare tokio mpsc(1024) + oneshot round trip", fmt_dur(bare))
            .ratio(fmt_ratio(r))
            .target("≤ 1.5×", Met::from(r <= 1.5)),
        Row::new("P2", &w)
            .ours(fmt_dur(ours))
            .peer("mmap-io 1.1 `update_region` (sync, no hop)", fmt_dur(sync))
            .ratio(fmt_ratio(ours.as_secs_f64() / sync.as_secs_f64())),
    ]
}

// ---------------------------------------------------------------- P3

const P3_LEN: u64 = 64 * MIB;
const P3_CHUNK: u64 = MIB;

async fn p3_ours(path: PathBuf, passes: u64) -> f64 {
    let file = open_ours(&path, P3_LEN).await;
    let data = Bytes::from(vec![0xA5u8; P3_CHUNK as usize]);
    let start = Instant::now();
    for _ in 0..passes {
        for off in (0..P3_LEN).step_by(P3_CHUNK as usize) {
            // A clone of `Bytes` shares the buffer: nothing is copied
            // before the actor's one copy into the mapping.
            file.update(off, data.clone()).await.expect("update");
        }
    }
    let elapsed = start.elapsed();
    file.close().await.expect("close");
    remove(&path);
    rate(passes * P3_LEN, elapsed)
}

fn p3_mmap_io(path: PathBuf, passes: u64) -> f64 {
    let mm = open_mmap_io(&path, P3_LEN);
    let data = vec![0xA5u8; P3_CHUNK as usize];
    let start = Instant::now();
    for _ in 0..passes {
        for off in (0..P3_LEN).step_by(P3_CHUNK as usize) {
            mm.update_region(off, &data).expect("update_region");
        }
    }
    let elapsed = start.elapsed();
    drop(mm);
    remove(&path);
    rate(passes * P3_LEN, elapsed)
}

fn p3_memmap2(path: PathBuf, passes: u64) -> f64 {
    let map = open_memmap2(&path, P3_LEN);
    let data = vec![0xA5u8; P3_CHUNK as usize];
    let start = Instant::now();
    for _ in 0..passes {
        let mut map = map.lock().expect("memmap2 lock");
        for chunk in map.chunks_exact_mut(P3_CHUNK as usize) {
            chunk.copy_from_slice(&data);
        }
    }
    let elapsed = start.elapsed();
    drop(map);
    remove(&path);
    rate(passes * P3_LEN, elapsed)
}

async fn p3_tokio_fs(path: PathBuf, passes: u64) -> f64 {
    prefill(&path, P3_LEN);
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .await
        .expect("open tokio::fs");
    let data = vec![0xA5u8; P3_CHUNK as usize];
    let start = Instant::now();
    for _ in 0..passes {
        f.seek(SeekFrom::Start(0)).await.expect("seek");
        for _ in 0..P3_LEN / P3_CHUNK {
            f.write_all(&data).await.expect("write_all");
        }
    }
    f.flush().await.expect("flush");
    let elapsed = start.elapsed();
    remove(&path);
    rate(passes * P3_LEN, elapsed)
}

/// P3: 1 MiB sequential updates over a 64 MiB file, one task.
pub(crate) fn p3(cfg: &Config) -> Vec<Row> {
    let passes = cfg.pick(4, 1);
    let rt = multi_thread(2);
    let (mut ours, mut mmap_io, mut raw, mut fs) = (0f64, 0f64, 0f64, 0f64);
    for _ in 0..ROUNDS {
        ours = ours.max(rt.block_on(p3_ours(cfg.path("p3-ours"), passes)));
        mmap_io = mmap_io.max(rt.block_on(async { p3_mmap_io(cfg.path("p3-mmap-io"), passes) }));
        raw = raw.max(p3_memmap2(cfg.path("p3-memmap2"), passes));
        fs = fs.max(rt.block_on(p3_tokio_fs(cfg.path("p3-tokio-fs"), passes)));
    }
    let w = format!(
        "1 MiB sequential updates over 64 MiB × {passes} passes, one task (speed-up = ours/peer bytes/s)"
    );
    vec![
        Row::new("P3", &w)
            .ours(fmt_bps(ours))
            .peer("mmap-io 1.1 `update_region` (sync)", fmt_bps(mmap_io))
            .ratio(fmt_ratio(ours / mmap_io))
            .target("≥ 0.9×", Met::from(ours / mmap_io >= 0.9)),
        Row::new("P3", &w)
            .ours(fmt_bps(ours))
            .peer("tokio::fs write_all", fmt_bps(fs))
            .ratio(fmt_ratio(ours / fs))
            .target("≥ 1.5×", Met::from(ours / fs >= 1.5)),
        Row::new("P3", &w)
            .ours(fmt_bps(ours))
            .peer("memmap2 copy_from_slice (floor)", fmt_bps(raw))
            .ratio(fmt_ratio(ours / raw)),
    ]
}

// ---------------------------------------------------------------- P4

const P4_LEN: u64 = 16 * MIB;
const P4_TASKS: u64 = 32;
const P4_BLOCK: u64 = 4096;

fn p4_offset(rng: &mut Rng) -> u64 {
    rng.below(P4_LEN / P4_BLOCK) * P4_BLOCK
}

async fn p4_ours(path: PathBuf, per_task: u64, write_through: bool) -> f64 {
    prefill(&path, P4_LEN);
    let file = MappedFile::options()
        .write_through(write_through)
        .open(&path)
        .await
        .expect("open ours");
    file.prewarm(0, P4_LEN).await.expect("prewarm ours");
    // Prefaulting for writing may dirty pages: start from a clean file.
    file.flush().await.expect("flush");
    let start = Instant::now();
    let mut set = JoinSet::new();
    for t in 0..P4_TASKS {
        let file = file.clone();
        set.spawn(async move {
            let mut rng = Rng::new(t);
            let buf = vec![t as u8; P4_BLOCK as usize];
            for _ in 0..per_task {
                file.update(p4_offset(&mut rng), Bytes::copy_from_slice(&buf))
                    .await
                    .expect("update");
                file.flush().await.expect("flush");
            }
        });
    }
    join_all(set).await;
    let elapsed = start.elapsed();
    file.close().await.expect("close");
    remove(&path);
    let ops = P4_TASKS * per_task;
    rate(ops, elapsed)
}

async fn p4_pwrite(path: PathBuf, per_task: u64) -> f64 {
    prefill(&path, P4_LEN);
    let file = Arc::new(
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open for pwrite"),
    );
    let start = Instant::now();
    let mut set = JoinSet::new();
    for t in 0..P4_TASKS {
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
    let elapsed = start.elapsed();
    remove(&path);
    let ops = P4_TASKS * per_task;
    rate(ops, elapsed)
}

/// mmap-io 0.9.6's file, prefilled and written once through the mapping.
fn open_mmap_io_09(path: &Path, len: u64) -> mmap_io_09::MemoryMappedFile {
    prefill(path, len);
    let mm = mmap_io_09::MemoryMappedFile::open_rw(path).expect("open mmap-io 0.9");
    let chunk = vec![1u8; MIB as usize];
    for off in (0..len).step_by(MIB as usize) {
        mm.update_region(off, &chunk[..(len - off).min(MIB) as usize])
            .expect("prewarm mmap-io 0.9");
    }
    mm
}

/// P4 for an mmap-io version: `update_region_async` from 32 tasks (1.1
/// flushes with `msync(MS_SYNC)` each time, 0.9.6 with `MS_ASYNC`).
macro_rules! p4_mmap_io_version {
    ($name:ident, $open:ident) => {
        async fn $name(path: PathBuf, per_task: u64) -> f64 {
            let mm = $open(&path, P4_LEN);
            mm.flush().expect("flush");
            let start = Instant::now();
            let mut set = JoinSet::new();
            for t in 0..P4_TASKS {
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
            let elapsed = start.elapsed();
            drop(mm);
            remove(&path);
            rate(P4_TASKS * per_task, elapsed)
        }
    };
}

p4_mmap_io_version!(p4_mmap_io, open_mmap_io);
p4_mmap_io_version!(p4_mmap_io_09, open_mmap_io_09);

/// P4: durable 4 KiB updates (update, then flush) from 32 tasks.
pub(crate) fn p4(cfg: &Config) -> Vec<Row> {
    let per_task = cfg.pick(16, 4);
    let rt = multi_thread(2);
    let stores = rt.block_on(p4_ours(cfg.path("p4-ours-stores"), per_task, false));
    let ours = rt.block_on(p4_ours(cfg.path("p4-ours"), per_task, true));
    let pwrite = rt.block_on(p4_pwrite(cfg.path("p4-pwrite"), per_task));
    let mmap_io = rt.block_on(p4_mmap_io(cfg.path("p4-mmap-io"), per_task));
    let mmap_io_09 = rt.block_on(p4_mmap_io_09(cfg.path("p4-mmap-io-09"), per_task));
    let w = format!(
        "durable 4 KiB random updates (update + flush), 16 MiB file, 32 tasks × {per_task}, ours with `write_through(true)` (speed-up = ours/peer op/s)"
    );
    vec![
        Row::new("P4", &w)
            .ours(fmt_ops(ours))
            .peer(
                "ours without `write_through` (stores through the mapping)",
                fmt_ops(stores),
            )
            .ratio(fmt_ratio(ours / stores)),
        Row::new("P4", &w)
            .ours(fmt_ops(ours))
            .peer("spawn_blocking pwrite + fdatasync", fmt_ops(pwrite))
            .ratio(fmt_ratio(ours / pwrite))
            .target("≥ 1.5×", Met::from(ours / pwrite >= 1.5)),
        Row::new("P4", &w)
            .ours(fmt_ops(ours))
            .peer(
                "mmap-io 1.1 `update_region_async` (msync MS_SYNC each)",
                fmt_ops(mmap_io),
            )
            .ratio(fmt_ratio(ours / mmap_io))
            .target("≥ 10×", Met::from(ours / mmap_io >= 10.0)),
        Row::new("P4", &w)
            .ours(fmt_ops(ours))
            .peer(
                "mmap-io 0.9.6 `update_region_async` (MS_ASYNC: **not durable**)",
                fmt_ops(mmap_io_09),
            )
            .ratio(fmt_ratio(ours / mmap_io_09)),
    ]
}
