//! P2–P4: request overhead, large updates and durable updates, and the
//! file preparation the small-call workloads (P1, `small.rs`) share.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mmap_actor::{MappedFile, DEFAULT_CHANNEL_CAPACITY};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::util::{
    current_thread, fmt_bps, fmt_dur, fmt_ratio, multi_thread, per_op, prefill, rate, remove,
    Config, MIB,
};
use crate::{Met, Row};

pub(crate) async fn join_all(mut set: JoinSet<()>) {
    while let Some(done) = set.join_next().await {
        done.expect("a bench task panicked");
    }
}

/// Our file, prefilled, opened and written once through the mapping (as
/// mmap-io's is below), so that its pages are mapped writable: steady-state
/// overwrites. `prewarm` alone maps pages for reading; the first store to
/// each page would then take a write fault inside the measurement.
pub(crate) async fn open_ours(path: &Path, len: u64) -> MappedFile {
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
pub(crate) fn open_mmap_io(path: &Path, len: u64) -> mmap_io::MemoryMappedFile {
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
pub(crate) fn open_memmap2(path: &Path, len: u64) -> Arc<Mutex<memmap2::MmapMut>> {
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

/// P3: 1 MiB sequential updates over a 64 MiB file, one task, on a
/// multi-thread and on a current-thread runtime.
pub(crate) fn p3(cfg: &Config) -> Vec<Row> {
    let passes = cfg.pick(4, 1);
    let mut rows = Vec::new();
    for (flavor, rt) in [
        ("multi-thread (2 workers)", multi_thread(2)),
        ("current-thread", current_thread()),
    ] {
        let (mut ours, mut mmap_io, mut raw, mut fs) = (0f64, 0f64, 0f64, 0f64);
        let (mut ours_worst, mut mmap_io_worst) = (f64::MAX, f64::MAX);
        for _ in 0..ROUNDS {
            let o = rt.block_on(p3_ours(cfg.path("p3-ours"), passes));
            let m = rt.block_on(async { p3_mmap_io(cfg.path("p3-mmap-io"), passes) });
            ours = ours.max(o);
            ours_worst = ours_worst.min(o);
            mmap_io = mmap_io.max(m);
            mmap_io_worst = mmap_io_worst.min(m);
            raw = raw.max(p3_memmap2(cfg.path("p3-memmap2"), passes));
            fs = fs.max(rt.block_on(p3_tokio_fs(cfg.path("p3-tokio-fs"), passes)));
        }
        let w = format!(
            "1 MiB sequential updates over 64 MiB × {passes} passes, one task, {flavor} (speed-up = ours/peer bytes/s, best of {ROUNDS})"
        );
        rows.push(
            Row::new("P3", &w)
                .ours(format!("{} (worst {})", fmt_bps(ours), fmt_bps(ours_worst)))
                .peer(
                    "mmap-io 1.1 `update_region` (sync, on the executor thread)",
                    format!("{} (worst {})", fmt_bps(mmap_io), fmt_bps(mmap_io_worst)),
                )
                .ratio(fmt_ratio(ours / mmap_io))
                .target("≥ 0.95×", Met::from(ours / mmap_io >= 0.95)),
        );
        rows.push(
            Row::new("P3", &w)
                .ours(fmt_bps(ours))
                .peer("tokio::fs write_all", fmt_bps(fs))
                .ratio(fmt_ratio(ours / fs))
                .target("≥ 1.5×", Met::from(ours / fs >= 1.5)),
        );
        rows.push(
            Row::new("P3", &w)
                .ours(fmt_bps(ours))
                .peer("memmap2 copy_from_slice (floor)", fmt_bps(raw))
                .ratio(fmt_ratio(ours / raw)),
        );
    }
    rows
}
