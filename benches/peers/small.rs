//! P1: 64 B random updates and loads from 64 tasks on a 2-worker runtime,
//! in every way a user would write them, against mmap-io 1.1 from the same
//! tasks.

use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::task::JoinSet;

use crate::throughput::{join_all, open_memmap2, open_mmap_io, open_ours};
use crate::util::{fmt_ops, fmt_ratio, multi_thread, prefill, rate, remove, Config, Rng, MIB};
use crate::{Met, Row};

const LEN: u64 = 64 * MIB;
const TASKS: u64 = 64;
const ROUNDS: u32 = 5;

fn offset(rng: &mut Rng) -> u64 {
    rng.below(LEN / 64) * 64
}

/// How our tasks call the library.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    /// `update_from(&[u8])`: a borrowed slice.
    UpdateFrom,
    /// `update(shared.clone())`: one `Bytes` shared by every task.
    SharedBytes,
    /// `update(Bytes::copy_from_slice(..))`: a fresh `Bytes` per call.
    FreshBytes,
    /// `load_into(&mut [u8])`.
    LoadInto,
}

async fn ours(path: PathBuf, per_task: u64, call: Call) -> f64 {
    let file = open_ours(&path, LEN).await;
    let shared = Bytes::from(vec![9u8; 64]);
    let start = Instant::now();
    let mut set = JoinSet::new();
    for t in 0..TASKS {
        let (file, shared) = (file.clone(), shared.clone());
        set.spawn(async move {
            let mut rng = Rng::new(t);
            let mut buf = [t as u8; 64];
            for i in 0..per_task {
                let off = offset(&mut rng);
                match call {
                    Call::UpdateFrom => {
                        buf[..8].copy_from_slice(&i.to_le_bytes());
                        file.update_from(off, &buf).await
                    }
                    Call::SharedBytes => file.update(off, shared.clone()).await,
                    Call::FreshBytes => {
                        buf[..8].copy_from_slice(&i.to_le_bytes());
                        file.update(off, Bytes::copy_from_slice(&buf)).await
                    }
                    Call::LoadInto => file.load_into(off, &mut buf).await,
                }
                .expect("our call");
            }
        });
    }
    join_all(set).await;
    let elapsed = start.elapsed();
    file.close().await.expect("close");
    remove(&path);
    rate(TASKS * per_task, elapsed)
}

async fn mmap_io(path: PathBuf, per_task: u64, load: bool) -> f64 {
    let mm = open_mmap_io(&path, LEN);
    let start = Instant::now();
    let mut set = JoinSet::new();
    for t in 0..TASKS {
        let mm = mm.clone();
        set.spawn(async move {
            let mut rng = Rng::new(t);
            let mut buf = [t as u8; 64];
            for i in 0..per_task {
                let off = offset(&mut rng);
                if load {
                    mm.read_into(off, &mut buf).expect("read_into");
                } else {
                    buf[..8].copy_from_slice(&i.to_le_bytes());
                    mm.update_region(off, &buf).expect("update_region");
                }
            }
        });
    }
    join_all(set).await;
    let elapsed = start.elapsed();
    drop(mm);
    remove(&path);
    rate(TASKS * per_task, elapsed)
}

async fn memmap2(path: PathBuf, per_task: u64) -> f64 {
    let map = open_memmap2(&path, LEN);
    let start = Instant::now();
    let mut set = JoinSet::new();
    for t in 0..TASKS {
        let map = Arc::clone(&map);
        set.spawn(async move {
            let mut rng = Rng::new(t);
            let mut buf = [t as u8; 64];
            for i in 0..per_task {
                buf[..8].copy_from_slice(&i.to_le_bytes());
                let off = offset(&mut rng) as usize;
                map.lock().expect("memmap2 lock")[off..off + 64].copy_from_slice(&buf);
            }
        });
    }
    join_all(set).await;
    let elapsed = start.elapsed();
    drop(map);
    remove(&path);
    rate(TASKS * per_task, elapsed)
}

async fn tokio_fs(path: PathBuf, per_task: u64) -> f64 {
    prefill(&path, LEN);
    // Each task needs its own cursor, so its own open file.
    let mut files = Vec::new();
    for _ in 0..TASKS {
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
                f.seek(SeekFrom::Start(offset(&mut rng)))
                    .await
                    .expect("seek");
                f.write_all(&buf).await.expect("write_all");
            }
            f.flush().await.expect("flush");
        });
    }
    join_all(set).await;
    let elapsed = start.elapsed();
    remove(&path);
    rate(TASKS * per_task, elapsed)
}

/// The spread of a measure over the rounds: best and worst.
#[derive(Clone, Copy)]
struct Spread {
    best: f64,
    worst: f64,
}

impl Spread {
    fn new() -> Spread {
        Spread {
            best: 0.0,
            worst: f64::MAX,
        }
    }
    fn add(&mut self, x: f64) {
        self.best = self.best.max(x);
        self.worst = self.worst.min(x);
    }
    fn show(&self) -> String {
        format!("{} (worst {})", fmt_ops(self.best), fmt_ops(self.worst))
    }
}

pub(crate) fn p1(cfg: &Config) -> Vec<Row> {
    // 1.28 M calls a round (about 100 ms): shorter rounds measure the
    // scheduler more than the calls.
    let per_task = cfg.pick(20_000, 200);
    let fs_per_task = (per_task / 20).max(10);
    let rt = multi_thread(2);
    let calls = [
        (Call::UpdateFrom, "`update_from(&[u8])`"),
        (
            Call::SharedBytes,
            "`update` of one shared `Bytes`, cloned per call",
        ),
        (Call::FreshBytes, "`update` of a fresh `Bytes` per call"),
        (Call::LoadInto, "`load_into(&mut [u8])` of 64 B"),
    ];
    let mut mine = [Spread::new(); 4];
    let (mut writes, mut reads, mut raw, mut fs) =
        (Spread::new(), Spread::new(), Spread::new(), Spread::new());
    // Interleaved rounds: the machine may be shared, and a busy neighbour
    // should hurt every library alike.
    for _ in 0..ROUNDS {
        for (i, (call, _)) in calls.iter().enumerate() {
            mine[i].add(rt.block_on(ours(cfg.path("p1-ours"), per_task, *call)));
        }
        writes.add(rt.block_on(mmap_io(cfg.path("p1-mmap-io"), per_task, false)));
        reads.add(rt.block_on(mmap_io(cfg.path("p1-mmap-io-r"), per_task, true)));
        raw.add(rt.block_on(memmap2(cfg.path("p1-memmap2"), per_task)));
        fs.add(rt.block_on(tokio_fs(cfg.path("p1-tokio-fs"), fs_per_task)));
    }
    let mut rows = Vec::new();
    for (i, (call, name)) in calls.iter().enumerate() {
        let peer = if *call == Call::LoadInto {
            reads
        } else {
            writes
        };
        let peer_name = if *call == Call::LoadInto {
            "mmap-io 1.1 `read_into` (sync, in the task)"
        } else {
            "mmap-io 1.1 `update_region(&[u8])` (sync, in the task)"
        };
        let w = format!(
            "64 B random calls, 64 MiB file, 64 tasks × {per_task}, 2 workers: {name} (speed-up = ours/peer op/s, best of {ROUNDS})"
        );
        let r = mine[i].best / peer.best;
        rows.push(
            Row::new("P1", &w)
                .ours(mine[i].show())
                .peer(peer_name, peer.show())
                .ratio(fmt_ratio(r))
                .target("≥ 1.5×", Met::from(r >= 1.5)),
        );
        if *call == Call::UpdateFrom {
            let r = mine[i].best / fs.best;
            rows.push(
                Row::new("P1", &w)
                    .ours(mine[i].show())
                    .peer(
                        format!("tokio::fs seek+write_all (64 tasks × {fs_per_task})"),
                        fs.show(),
                    )
                    .ratio(fmt_ratio(r))
                    .target("≥ 50×", Met::from(r >= 50.0)),
            );
            rows.push(
                Row::new("P1", &w)
                    .ours(mine[i].show())
                    .peer("memmap2 + Mutex (floor)", raw.show())
                    .ratio(fmt_ratio(mine[i].best / raw.best)),
            );
        }
    }
    rows
}
