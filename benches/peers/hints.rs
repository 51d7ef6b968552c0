//! H1–H2: the hint calls a user puts on a hot path, per call, against the
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
