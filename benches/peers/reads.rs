//! P8: zero-copy reads: the cost of taking a segment, and a scan through
//! segments against a raw memmap2 slice.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use mmap_actor::MappedFile;

use crate::util::{
    current_thread, fmt_bps, fmt_dur, fmt_ratio, per_op, prefill, remove, xor_words, Config, KIB,
    MIB,
};
use crate::{Met, Row};

const SEGMENT: u64 = MIB;

/// One way to scan the whole file: (time, xor of its words).
type Scan<'a> = dyn FnMut() -> (Duration, u64) + 'a;

async fn take_segments(file: &MappedFile, len: u64, n: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        let seg = file.segment(0, len).await.expect("segment");
        black_box(seg.len());
    }
    per_op(start.elapsed(), n)
}

async fn take_loads(file: &MappedFile, len: u64, n: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        black_box(file.load(0, len).await.expect("load").len());
    }
    per_op(start.elapsed(), n)
}

async fn scan_ours(file: &MappedFile, len: u64) -> (Duration, u64) {
    let start = Instant::now();
    let mut acc = 0;
    for off in (0..len).step_by(SEGMENT as usize) {
        let seg = file.segment(off, SEGMENT).await.expect("segment");
        acc ^= xor_words(&seg);
    }
    (start.elapsed(), acc)
}

fn scan_mmap_io(mm: &mmap_io::MemoryMappedFile, len: u64) -> (Duration, u64) {
    let start = Instant::now();
    let mut acc = 0;
    for off in (0..len).step_by(SEGMENT as usize) {
        acc ^= xor_words(&mm.as_slice(off, SEGMENT).expect("as_slice"));
    }
    (start.elapsed(), acc)
}

fn scan_raw(map: &memmap2::Mmap) -> (Duration, u64) {
    let start = Instant::now();
    let acc = xor_words(map);
    (start.elapsed(), acc)
}

/// The raw slice scanned in the same 1 MiB steps as the segments: tells
/// the cost of the chunking apart from the cost of the requests.
fn scan_raw_chunked(map: &memmap2::Mmap) -> (Duration, u64) {
    let start = Instant::now();
    let acc = map
        .chunks(SEGMENT as usize)
        .fold(0, |acc, chunk| acc ^ xor_words(black_box(chunk)));
    (start.elapsed(), acc)
}

#[allow(unsafe_code)]
fn map_raw(path: &Path) -> memmap2::Mmap {
    let file = std::fs::File::open(path).expect("open memmap2");
    // SAFETY: the bench owns this file; nothing writes or truncates it
    // while it is mapped.
    unsafe { memmap2::Mmap::map(&file) }.expect("map memmap2")
}

pub(crate) fn p8(cfg: &Config) -> Vec<Row> {
    let len = cfg.pick(256, 64) * MIB;
    let n = cfg.pick(20_000, 2_000);
    let path = cfg.path("p8");
    prefill(&path, len);
    let rt = current_thread();
    let file = rt.block_on(MappedFile::open_ro(&path)).expect("open ours");
    let mm = mmap_io::MemoryMappedFile::open_ro(&path).expect("open mmap-io");
    let raw = map_raw(&path);

    let (big, small, load_big) = rt.block_on(async {
        // Warm up the request path and fault the first MiB in; then the
        // best of five interleaved rounds.
        take_segments(&file, SEGMENT, n / 10).await;
        let (mut big, mut small, mut load_big) = (Duration::MAX, Duration::MAX, Duration::MAX);
        for _ in 0..5 {
            big = big.min(take_segments(&file, SEGMENT, n).await);
            small = small.min(take_segments(&file, 64 * KIB, n).await);
            load_big = load_big.min(take_loads(&file, SEGMENT, n / 10).await);
        }
        (big, small, load_big)
    });
    let mm_slice = {
        let start = Instant::now();
        for _ in 0..n {
            black_box(mm.as_slice(0, SEGMENT).expect("as_slice").len());
        }
        per_op(start.elapsed(), n)
    };

    // The first pass of each faults the pages into its mapping; then the
    // best of five interleaved rounds, every scan checked against the raw
    // one.
    let value = scan_raw(&raw).1;
    let mut scans: [(Duration, Box<Scan<'_>>); 4] = [
        (Duration::MAX, Box::new(|| scan_raw(&raw))),
        (
            Duration::MAX,
            Box::new(|| rt.block_on(scan_ours(&file, len))),
        ),
        (Duration::MAX, Box::new(|| scan_mmap_io(&mm, len))),
        (Duration::MAX, Box::new(|| scan_raw_chunked(&raw))),
    ];
    for round in 0..6 {
        for (best, scan) in scans.iter_mut() {
            let (t, v) = scan();
            assert_eq!(v, value, "scans disagree");
            if round > 0 {
                *best = (*best).min(t);
            }
        }
    }
    let [raw_t, ours_t, mm_t, chunked_t] = scans.map(|(t, _)| t);
    rt.block_on(file.close()).expect("close");
    drop((mm, raw));
    remove(&path);

    let o1 = big.as_secs_f64() / small.as_secs_f64();
    let bps = |t: Duration| len as f64 / t.as_secs_f64();
    let scan_ratio = raw_t.as_secs_f64() / ours_t.as_secs_f64();
    let w_scan = format!(
        "scan (xor of u64 words) of {} MiB through 1 MiB segments, current-thread (speed-up = ours/peer bytes/s)",
        len / MIB
    );
    vec![
        Row::new(
            "P8",
            "take + drop a 1 MiB `Segment` vs a 64 KiB one (ratio = 1 MiB time / 64 KiB time)",
        )
        .ours(format!(
            "1 MiB: {} / 64 KiB: {}",
            fmt_dur(big),
            fmt_dur(small)
        ))
        .peer("same call, 16× smaller", fmt_dur(small))
        .ratio(fmt_ratio(o1))
        .target("O(1) in size (≤ 1.25×)", Met::from(o1 <= 1.25)),
        Row::new("P8", "take 1 MiB (ratio = ours `segment` time / peer time)")
            .ours(fmt_dur(big))
            .peer(
                "ours `load` (a copy), mmap-io 1.1 `as_slice`",
                format!("{} / {}", fmt_dur(load_big), fmt_dur(mm_slice)),
            )
            .ratio(format!(
                "{} / {}",
                fmt_ratio(big.as_secs_f64() / load_big.as_secs_f64()),
                fmt_ratio(big.as_secs_f64() / mm_slice.as_secs_f64())
            )),
        Row::new("P8", &w_scan)
            .ours(fmt_bps(bps(ours_t)))
            .peer("memmap2 slice scan (floor)", fmt_bps(bps(raw_t)))
            .ratio(fmt_ratio(scan_ratio))
            .target("≥ 0.9×", Met::from(scan_ratio >= 0.9)),
        Row::new("P8", &w_scan)
            .ours(fmt_bps(bps(ours_t)))
            .peer(
                "memmap2 slice scanned per 1 MiB chunk",
                fmt_bps(bps(chunked_t)),
            )
            .ratio(fmt_ratio(chunked_t.as_secs_f64() / ours_t.as_secs_f64())),
        Row::new("P8", &w_scan)
            .ours(fmt_bps(bps(ours_t)))
            .peer("mmap-io 1.1 `as_slice` per 1 MiB", fmt_bps(bps(mm_t)))
            .ratio(fmt_ratio(mm_t.as_secs_f64() / ours_t.as_secs_f64())),
    ]
}
