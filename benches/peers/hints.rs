//! H1–H3: the hint calls a user puts on a hot path, per call, against the
//! same syscall made by the peers: raw on a memmap2 mapping (the floor),
//! the same raw call moved to `spawn_blocking` (the floor for a call that
//! must not hold an executor thread, which is what ours does), and
//! mmap-io 1.1's equivalent (synchronous, on the calling thread).
//!
//! - H1: `advise(random 4 KiB page, WillNeed)` on a resident 64 MiB file.
//! - H2: a 64 B store into a random page, then `schedule_flush_range` of
//!   that page (`sync_file_range(SYNC_FILE_RANGE_WRITE)`: it starts the
//!   page's write-back).
//!
//! - H3: 64 B stores with a flush every 64 writes, made by the flush
//!   policy (`FlushPolicy::EveryWrites(64)`) or by the caller, ours and
//!   mmap-io's.
//!
//! One task on a current-thread runtime; best of three interleaved rounds.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use mmap_actor::{Advice, MappedFile};

use crate::util::{current_thread, fmt_dur, fmt_ratio, per_op, prefill, remove, Config, Rng, MIB};
use crate::Row;

const LEN: u64 = 64 * MIB;
const PAGE: u64 = 4096;
const ROUNDS: u32 = 3;
/// The store before each `schedule_flush_range`.
static RECORD: [u8; 64] = [7; 64];

/// A read-write memmap2 mapping of a prefilled file, and the file.
#[allow(unsafe_code)]
fn open_memmap2(path: &Path) -> (File, memmap2::MmapMut) {
    prefill(path, LEN);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open memmap2");
    // SAFETY: the bench owns this file; nothing else truncates or writes
    // it while it is mapped.
    let map = unsafe { memmap2::MmapMut::map_mut(&file) }.expect("map memmap2");
    (file, map)
}

/// `sync_file_range(SYNC_FILE_RANGE_WRITE)`, as the peers call it.
#[allow(unsafe_code)]
fn start_writeback(fd: i32, offset: u64, len: u64) {
    // SAFETY: a plain syscall on a descriptor the caller keeps open.
    let rc = unsafe {
        libc::sync_file_range(
            fd,
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    assert_eq!(
        rc,
        0,
        "sync_file_range: {}",
        std::io::Error::last_os_error()
    );
}

async fn open_ours(path: &Path) -> MappedFile {
    prefill(path, LEN);
    let file = MappedFile::open_rw(path).await.expect("open ours");
    file.prewarm(0, LEN).await.expect("prewarm ours");
    file
}

fn open_mmap_io(path: &Path) -> mmap_io::MemoryMappedFile {
    prefill(path, LEN);
    let mm = mmap_io::MemoryMappedFile::open_rw(path).expect("open mmap-io");
    mm.touch_pages().expect("touch mmap-io");
    mm
}

fn page(rng: &mut Rng) -> u64 {
    rng.below(LEN / PAGE) * PAGE
}

/// The four timings of one workload, best of the rounds.
struct Best {
    ours: Duration,
    raw: Duration,
    raw_blocking: Duration,
    mmap_io: Duration,
}

impl Best {
    fn rows(&self, id: &'static str, workload: &str, call: &str) -> Vec<Row> {
        let ratio = |peer: Duration| fmt_ratio(self.ours.as_secs_f64() / peer.as_secs_f64());
        vec![
            Row::new(id, workload)
                .ours(fmt_dur(self.ours))
                .peer(format!("raw {call} on memmap2 (inline)"), fmt_dur(self.raw))
                .ratio(ratio(self.raw)),
            Row::new(id, workload)
                .ours(fmt_dur(self.ours))
                .peer(
                    format!("raw {call} on memmap2 in spawn_blocking"),
                    fmt_dur(self.raw_blocking),
                )
                .ratio(ratio(self.raw_blocking)),
            Row::new(id, workload)
                .ours(fmt_dur(self.ours))
                .peer("mmap-io 1.1 (sync, inline)", fmt_dur(self.mmap_io))
                .ratio(ratio(self.mmap_io)),
        ]
    }
}

/// H1: `advise` per call.
pub(crate) fn h1(cfg: &Config) -> Vec<Row> {
    let n = cfg.pick(20_000, 2_000);
    let rt = current_thread();
    let (ours_path, raw_path, mm_path) = (
        cfg.path("h1-ours"),
        cfg.path("h1-raw"),
        cfg.path("h1-mmap-io"),
    );
    let file = rt.block_on(open_ours(&ours_path));
    let (_raw_file, raw) = open_memmap2(&raw_path);
    raw.advise(memmap2::Advice::WillNeed).expect("advise");
    let raw = std::sync::Arc::new(raw);
    let mm = open_mmap_io(&mm_path);
    let mut best = Best {
        ours: Duration::MAX,
        raw: Duration::MAX,
        raw_blocking: Duration::MAX,
        mmap_io: Duration::MAX,
    };
    for round in 0..ROUNDS {
        let seed = u64::from(round);
        let f = file.clone();
        let ours = rt.block_on(async move {
            tokio::spawn(async move {
                let mut rng = Rng::new(seed);
                let start = Instant::now();
                for _ in 0..n {
                    f.advise(page(&mut rng), PAGE, Advice::WillNeed)
                        .await
                        .expect("advise");
                }
                per_op(start.elapsed(), n)
            })
            .await
            .expect("ours")
        });
        best.ours = best.ours.min(ours);

        let mut rng = Rng::new(seed);
        let start = Instant::now();
        for _ in 0..n {
            raw.advise_range(
                memmap2::Advice::WillNeed,
                page(&mut rng) as usize,
                PAGE as usize,
            )
            .expect("madvise");
        }
        best.raw = best.raw.min(per_op(start.elapsed(), n));

        let map = std::sync::Arc::clone(&raw);
        let blocking = rt.block_on(async move {
            tokio::spawn(async move {
                let mut rng = Rng::new(seed);
                let start = Instant::now();
                for _ in 0..n {
                    let map = std::sync::Arc::clone(&map);
                    let at = page(&mut rng) as usize;
                    tokio::task::spawn_blocking(move || {
                        map.advise_range(memmap2::Advice::WillNeed, at, PAGE as usize)
                    })
                    .await
                    .expect("join")
                    .expect("madvise");
                }
                per_op(start.elapsed(), n)
            })
            .await
            .expect("raw blocking")
        });
        best.raw_blocking = best.raw_blocking.min(blocking);

        let mut rng = Rng::new(seed);
        let start = Instant::now();
        for _ in 0..n {
            mm.advise(page(&mut rng), PAGE, mmap_io::MmapAdvice::WillNeed)
                .expect("mmap-io advise");
        }
        best.mmap_io = best.mmap_io.min(per_op(start.elapsed(), n));
    }
    rt.block_on(file.close()).expect("close");
    drop((raw, mm));
    for path in [&ours_path, &raw_path, &mm_path] {
        remove(path);
    }
    best.rows(
        "H1",
        &format!(
            "{n} × advise(random 4 KiB page of 64 MiB, WillNeed), one task, current-thread (time per call; ratio = ours/peer time)"
        ),
        "madvise",
    )
}

/// H2: a small store, then `schedule_flush_range` of its page.
pub(crate) fn h2(cfg: &Config) -> Vec<Row> {
    let n = cfg.pick(20_000, 2_000);
    let rt = current_thread();
    let (ours_path, raw_path, mm_path) = (
        cfg.path("h2-ours"),
        cfg.path("h2-raw"),
        cfg.path("h2-mmap-io"),
    );
    let file = rt.block_on(open_ours(&ours_path));
    let (raw_file, mut raw) = open_memmap2(&raw_path);
    raw.fill(1);
    let fd = raw_file.as_raw_fd();
    let mm = open_mmap_io(&mm_path);
    let mut best = Best {
        ours: Duration::MAX,
        raw: Duration::MAX,
        raw_blocking: Duration::MAX,
        mmap_io: Duration::MAX,
    };
    for round in 0..ROUNDS {
        let seed = u64::from(round) + 100;
        let f = file.clone();
        let ours = rt.block_on(async move {
            tokio::spawn(async move {
                let mut rng = Rng::new(seed);
                let start = Instant::now();
                for _ in 0..n {
                    let at = page(&mut rng);
                    f.update(at, &RECORD[..]).await.expect("update");
                    f.schedule_flush_range(at, PAGE).await.expect("schedule");
                }
                per_op(start.elapsed(), n)
            })
            .await
            .expect("ours")
        });
        best.ours = best.ours.min(ours);

        let mut rng = Rng::new(seed);
        let start = Instant::now();
        for _ in 0..n {
            let at = page(&mut rng);
            raw[at as usize..at as usize + 64].copy_from_slice(&RECORD);
            start_writeback(fd, at, PAGE);
        }
        best.raw = best.raw.min(per_op(start.elapsed(), n));

        // In a task, as ours runs (the map goes in and comes back).
        let (map, blocking) = rt.block_on(async move {
            tokio::spawn(async move {
                let mut raw = raw;
                let mut rng = Rng::new(seed);
                let start = Instant::now();
                for _ in 0..n {
                    let at = page(&mut rng);
                    raw[at as usize..at as usize + 64].copy_from_slice(&RECORD);
                    tokio::task::spawn_blocking(move || start_writeback(fd, at, PAGE))
                        .await
                        .expect("join");
                }
                (raw, per_op(start.elapsed(), n))
            })
            .await
            .expect("raw blocking")
        });
        raw = map;
        best.raw_blocking = best.raw_blocking.min(blocking);

        let mut rng = Rng::new(seed);
        let start = Instant::now();
        for _ in 0..n {
            let at = page(&mut rng);
            mm.update_region(at, &RECORD).expect("update_region");
            mm.schedule_flush_range(at, PAGE).expect("schedule");
        }
        best.mmap_io = best.mmap_io.min(per_op(start.elapsed(), n));
    }
    rt.block_on(file.close()).expect("close");
    drop((raw, raw_file, mm));
    for path in [&ours_path, &raw_path, &mm_path] {
        remove(path);
    }
    best.rows(
        "H2",
        &format!(
            "{n} × (64 B store into a random 4 KiB page of 64 MiB, then schedule_flush_range of that page), one task, current-thread (time per pair; ratio = ours/peer time)"
        ),
        "sync_file_range",
    )
}

/// H3's batch: a flush is due after this many writes.
const H3_EVERY: u64 = 64;

/// H3: a policy flush every `H3_EVERY` writes against a manual flush every
/// `H3_EVERY` writes, ours and mmap-io's (whose policy flushes inline, on
/// the write that reaches the count).
pub(crate) fn h3(cfg: &Config) -> Vec<Row> {
    use std::sync::atomic::Ordering;
    let n = cfg.pick(8_192, 1_024);
    let rt = current_thread();
    let paths = [
        cfg.path("h3-ours-policy"),
        cfg.path("h3-ours-manual"),
        cfg.path("h3-mmap-io-policy"),
        cfg.path("h3-mmap-io-manual"),
    ];
    let policy = rt.block_on(async {
        prefill(&paths[0], LEN);
        let file = MappedFile::options()
            .flush_policy(mmap_actor::FlushPolicy::EveryWrites(H3_EVERY))
            .open(&paths[0])
            .await
            .expect("open ours (policy)");
        file.prewarm(0, LEN).await.expect("prewarm");
        file
    });
    let manual = rt.block_on(open_ours(&paths[1]));
    let mm_policy = {
        prefill(&paths[2], LEN);
        let mm = mmap_io::MemoryMappedFile::builder(&paths[2])
            .mode(mmap_io::MmapMode::ReadWrite)
            .flush_policy(mmap_io::flush::FlushPolicy::EveryWrites(H3_EVERY as usize))
            .open()
            .expect("open mmap-io (policy)");
        mm.touch_pages().expect("touch");
        mm
    };
    let mm_manual = open_mmap_io(&paths[3]);
    let mut best = [Duration::MAX; 4];
    let mut syncs = [0u64; 2];
    for round in 0..ROUNDS {
        let seed = u64::from(round) + 300;
        // Ours, the policy: the writes go on while its flushes run; the
        // run ends when nothing is pending any more.
        let f = policy.clone();
        let before = crate::durable::SYNCS.load(Ordering::Relaxed);
        let t = rt.block_on(async move {
            tokio::spawn(async move {
                let mut rng = Rng::new(seed);
                let start = Instant::now();
                for _ in 0..n {
                    f.update_from(page(&mut rng), &RECORD)
                        .await
                        .expect("update");
                }
                while f.pending_bytes() > 0 {
                    tokio::time::sleep(Duration::from_micros(50)).await;
                }
                per_op(start.elapsed(), n)
            })
            .await
            .expect("ours policy")
        });
        best[0] = best[0].min(t);
        syncs[0] = crate::durable::SYNCS.load(Ordering::Relaxed) - before;

        let f = manual.clone();
        let before = crate::durable::SYNCS.load(Ordering::Relaxed);
        let t = rt.block_on(async move {
            tokio::spawn(async move {
                let mut rng = Rng::new(seed);
                let start = Instant::now();
                for i in 1..=n {
                    f.update_from(page(&mut rng), &RECORD)
                        .await
                        .expect("update");
                    if i % H3_EVERY == 0 {
                        f.flush().await.expect("flush");
                    }
                }
                per_op(start.elapsed(), n)
            })
            .await
            .expect("ours manual")
        });
        best[1] = best[1].min(t);
        syncs[1] = crate::durable::SYNCS.load(Ordering::Relaxed) - before;

        let mut rng = Rng::new(seed);
        let start = Instant::now();
        for _ in 0..n {
            mm_policy
                .update_region(page(&mut rng), &RECORD)
                .expect("update_region");
        }
        best[2] = best[2].min(per_op(start.elapsed(), n));

        let mut rng = Rng::new(seed);
        let start = Instant::now();
        for i in 1..=n {
            mm_manual
                .update_region(page(&mut rng), &RECORD)
                .expect("update_region");
            if i % H3_EVERY == 0 {
                mm_manual.flush().expect("flush");
            }
        }
        best[3] = best[3].min(per_op(start.elapsed(), n));
    }
    rt.block_on(async {
        policy.close().await.expect("close");
        manual.close().await.expect("close");
    });
    drop((mm_policy, mm_manual));
    for path in &paths {
        remove(path);
    }
    let ratio = |ours: Duration, peer: Duration| fmt_ratio(ours.as_secs_f64() / peer.as_secs_f64());
    let workload = |how: &str, syncs: Option<u64>| {
        let syncs = syncs.map_or(String::new(), |s| format!("; ours made {s} syncs"));
        format!(
            "{n} × 64 B store into a random 4 KiB page of 64 MiB, {how} every {H3_EVERY} writes, one task, current-thread (time per write{syncs}; ratio = ours/peer time)"
        )
    };
    vec![
        Row::new("H3", workload("a policy flush", Some(syncs[0])))
            .ours(fmt_dur(best[0]))
            .peer("mmap-io 1.1 FlushPolicy::EveryWrites", fmt_dur(best[2]))
            .ratio(ratio(best[0], best[2])),
        Row::new("H3", workload("a manual flush", Some(syncs[1])))
            .ours(fmt_dur(best[1]))
            .peer("mmap-io 1.1 flush() every N", fmt_dur(best[3]))
            .ratio(ratio(best[1], best[3])),
        Row::new("H3", workload("ours: policy vs manual flush", None))
            .ours(fmt_dur(best[0]))
            .peer("ours, manual flush() every N", fmt_dur(best[1]))
            .ratio(ratio(best[0], best[1])),
    ]
}
