//! Seeded concurrency stress: many tasks on a two-worker runtime mix
//! updates, loads, modifies, segments, exclusive segments, atomics, flushes,
//! grows and shrinks on one mapping. The schedule is chosen so that the
//! final state is deterministic:
//!
//! - each task owns a region for its plain writes, and checks every read of
//!   it against its own model as it goes;
//! - shared counters (`u64` and `u32`) only ever get `fetch_add(1)`, so
//!   each must end equal to the number of increments;
//! - resizes (and leases, loads and writes that tolerate being cut off) only
//!   touch the tail past every owned region, which is cut back at the end.
//!
//! At the end the file equals the model, on reopen too, and no task died or
//! hung. The seed is printed; `MMAP_ACTOR_STRESS_SEED` replays another.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Scratch, SplitMix};
use mmap_actor::{Error, MappedFile};

const TASKS: u64 = 16;
const REGION: u64 = 4096;
/// Shared `u64` counters, then shared `u32` counters, in the page after
/// the owned regions.
const COUNTERS_U64: u64 = TASKS * REGION;
const N_U64: u64 = 256;
const COUNTERS_U32: u64 = COUNTERS_U64 + 8 * N_U64;
const N_U32: u64 = 256;
/// Everything from here on may be grown, shrunk, written and cut.
const TAIL: u64 = COUNTERS_U64 + REGION;
const TAIL_MAX: u64 = 64 * 1024;
/// Hang detector only: the run takes a few seconds.
const HANG: Duration = Duration::from_secs(120);

fn seed() -> u64 {
    std::env::var("MMAP_ACTOR_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_5EED_57E5)
}

/// What one task did that the final check needs.
struct Done {
    region: Vec<u8>,
    u64_adds: Vec<u64>,
    u32_adds: Vec<u64>,
    ops: u64,
}

/// A sub-range of the task's own region: `(offset in the file, offset in
/// the region, length)`.
fn own_range(rng: &mut SplitMix, base: u64) -> (u64, usize, usize) {
    let len = if rng.range(0, 16) == 0 {
        rng.range(1, REGION + 1)
    } else {
        rng.range(1, 257)
    };
    let at = rng.range(0, REGION - len + 1);
    (base + at, at as usize, len as usize)
}

async fn worker(file: MappedFile, task: u64, seed: u64, ops: u64) -> Done {
    let mut rng = SplitMix(seed ^ (task + 1).wrapping_mul(0xA076_1D64_78BD_642F));
    let base = task * REGION;
    let mut region = vec![0u8; REGION as usize];
    let mut u64_adds = vec![0u64; N_U64 as usize];
    let mut u32_adds = vec![0u64; N_U32 as usize];
    for n in 0..ops {
        let what = |op: &str| format!("task {task} op {n} {op} (seed {seed})");
        match rng.range(0, 100) {
            0..=21 => {
                let (off, at, len) = own_range(&mut rng, base);
                let data = SplitMix::bytes(rng.next_u64(), len);
                file.update(off, data.clone())
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e:?}", what("update")));
                region[at..at + len].copy_from_slice(&data);
            }
            22..=31 => {
                let (off, at, len) = own_range(&mut rng, base);
                let bytes = file
                    .load(off, len as u64)
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e:?}", what("load")));
                assert!(
                    bytes[..] == region[at..at + len],
                    "{}: contents",
                    what("load")
                );
            }
            32..=40 => {
                let (off, at, len) = own_range(&mut rng, base);
                let seg = file
                    .segment(off, len as u64)
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e:?}", what("segment")));
                assert!(
                    seg[..] == region[at..at + len],
                    "{}: contents",
                    what("segment")
                );
                tokio::task::yield_now().await;
                // Nobody else writes this region: still the same.
                assert!(
                    seg[..] == region[at..at + len],
                    "{}: contents after yield",
                    what("segment")
                );
            }
            41..=49 => {
                let (off, at, len) = own_range(&mut rng, base);
                let mut seg = file
                    .segment_mut(off, len as u64)
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e:?}", what("segment_mut")));
                assert!(
                    seg[..] == region[at..at + len],
                    "{}: contents",
                    what("segment_mut")
                );
                let data = SplitMix::bytes(rng.next_u64(), len);
                seg.copy_from_slice(&data);
                if rng.range(0, 2) == 0 {
                    tokio::task::yield_now().await;
                }
                drop(seg);
                region[at..at + len].copy_from_slice(&data);
            }
            50..=54 => {
                let (off, at, len) = own_range(&mut rng, base);
                let xor = rng.range(1, 256) as u8;
                file.modify(off, len as u64, move |b| {
                    b.iter_mut().for_each(|x| *x ^= xor)
                })
                .await
                .unwrap_or_else(|e| panic!("{}: {e:?}", what("modify")));
                region[at..at + len].iter_mut().for_each(|x| *x ^= xor);
            }
            55..=66 => {
                let k = rng.range(0, N_U64);
                let view = file
                    .atomic_u64(COUNTERS_U64 + 8 * k)
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e:?}", what("atomic_u64")));
                view.fetch_add(1, Ordering::Relaxed);
                u64_adds[k as usize] += 1;
                if rng.range(0, 4) == 0 {
                    tokio::task::yield_now().await;
                }
            }
            67..=70 => {
                // A slice view over several counters, overlapping single
                // views other tasks hold (same width: they coexist).
                let count = rng.range(1, 17);
                let k = rng.range(0, N_U64 - count + 1);
                let view = file
                    .atomic_u64_slice(COUNTERS_U64 + 8 * k, count)
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e:?}", what("atomic_u64_slice")));
                assert_eq!(view.len() as u64, count);
                for (i, counter) in view.iter().enumerate() {
                    counter.fetch_add(1, Ordering::Relaxed);
                    u64_adds[k as usize + i] += 1;
                }
            }
            71..=75 => {
                let k = rng.range(0, N_U32);
                let view = file
                    .atomic_u32(COUNTERS_U32 + 4 * k)
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e:?}", what("atomic_u32")));
                view.fetch_add(1, Ordering::Relaxed);
                u32_adds[k as usize] += 1;
            }
            76..=77 => {
                // A plain read of counters waits for the atomic views of
                // its bytes; its value is whatever it is at that moment.
                let k = rng.range(0, N_U64);
                let bytes = file
                    .load(COUNTERS_U64 + 8 * k, 8)
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e:?}", what("load counter")));
                assert_eq!(bytes.len(), 8);
            }
            78..=83 => {
                let new_len = TAIL + rng.range(0, TAIL_MAX + 1);
                file.resize(new_len)
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e:?}", what("resize")));
                assert!(
                    file.len() >= TAIL,
                    "{}: length {} cuts owned bytes",
                    what("resize"),
                    file.len()
                );
            }
            84..=91 => tail_op(&file, &mut rng, &what("tail")).await,
            92..=95 => {
                if rng.range(0, 2) == 0 {
                    file.flush()
                        .await
                        .unwrap_or_else(|e| panic!("{}: {e:?}", what("flush")));
                } else {
                    file.flush_range(base, REGION)
                        .await
                        .unwrap_or_else(|e| panic!("{}: {e:?}", what("flush_range")));
                }
            }
            _ => {
                // `try_` calls on the task's own bytes never conflict. The
                // waiting update first makes sure the actor has seen the
                // release of a lease this task dropped just before
                // (`a_dropped_lease_never_refuses_a_later_try_call`).
                let (off, at, len) = own_range(&mut rng, base);
                file.update(off, region[at..at + len].to_vec())
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e:?}", what("update before try_update")));
                let data = SplitMix::bytes(rng.next_u64(), len);
                file.try_update(off, data.clone())
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e:?}", what("try_update")));
                region[at..at + len].copy_from_slice(&data);
                let seg = file
                    .try_segment(off, len as u64)
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e:?}", what("try_segment")));
                assert!(
                    seg[..] == region[at..at + len],
                    "{}: contents",
                    what("try_segment")
                );
            }
        }
    }
    Done {
        region,
        u64_adds,
        u32_adds,
        ops,
    }
}

/// Something on the tail, whose length changes under it: each outcome is
/// either success or `OutOfBounds` naming the length at the time.
async fn tail_op(file: &MappedFile, rng: &mut SplitMix, what: &str) {
    let off = TAIL + rng.range(0, TAIL_MAX);
    let len = rng.range(0, 2048);
    let ok_or_cut = |r: Result<(), Error>, op: &str| match r {
        Ok(()) => {}
        Err(Error::OutOfBounds {
            offset,
            len: l,
            file_len,
        }) => {
            assert_eq!((offset, l), (off, len), "{what} {op}");
            assert!(
                offset + l > file_len,
                "{what} {op}: refused an in-range request"
            );
            assert!(file_len >= TAIL, "{what} {op}: length {file_len}");
        }
        Err(e) => panic!("{what} {op}: {e:?}"),
    };
    match rng.range(0, 4) {
        0 => ok_or_cut(
            file.update(off, SplitMix::bytes(off, len as usize)).await,
            "update",
        ),
        1 => ok_or_cut(
            file.load(off, len)
                .await
                .map(|b| assert_eq!(b.len() as u64, len)),
            "load",
        ),
        2 => {
            // Hold a segment of the tail for a moment: a shrink that would
            // cut it must wait for it.
            match file.segment(off, len).await {
                Ok(seg) => {
                    assert_eq!(seg.len() as u64, len);
                    let copy = seg.to_vec();
                    tokio::task::yield_now().await;
                    // Shared: nobody may write these bytes meanwhile.
                    assert!(
                        seg[..] == copy[..],
                        "{what}: tail segment changed under a lease"
                    );
                }
                Err(e) => ok_or_cut(Err(e), "segment"),
            }
        }
        _ => match file.segment_mut(off, len).await {
            Ok(mut seg) => {
                seg.fill(0xEE);
                tokio::task::yield_now().await;
                assert!(
                    seg.iter().all(|&b| b == 0xEE),
                    "{what}: exclusive tail segment changed"
                );
            }
            Err(e) => ok_or_cut(Err(e), "segment_mut"),
        },
    }
}

async fn stress(capacity: usize, ops: u64) {
    let seed = seed();
    println!("stress: seed {seed}, {TASKS} tasks x {ops} operations, channel capacity {capacity}");
    let scratch = Scratch::new();
    let path = scratch.path("stress.bin");
    let file = MappedFile::options()
        .create(true)
        .len(TAIL + TAIL_MAX / 2)
        .channel_capacity(capacity)
        .open(&path)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| tokio::spawn(worker(file.clone(), task, seed, ops)))
        .collect();
    let done = tokio::time::timeout(HANG, async {
        let mut done = Vec::new();
        for t in tasks {
            // A panicking worker fails the test here, with its message.
            done.push(
                t.await
                    .unwrap_or_else(|e| panic!("a worker died (seed {seed}): {e}")),
            );
        }
        done
    })
    .await
    .unwrap_or_else(|_| panic!("workers hung (seed {seed})"));
    assert_eq!(done.iter().map(|d| d.ops).sum::<u64>(), TASKS * ops);

    // The model: owned regions, counter totals, then the tail cut away.
    let mut model = vec![0u8; TAIL as usize];
    for (task, d) in done.iter().enumerate() {
        let base = task * REGION as usize;
        model[base..base + REGION as usize].copy_from_slice(&d.region);
    }
    let mut increments = 0;
    for k in 0..N_U64 as usize {
        let total: u64 = done.iter().map(|d| d.u64_adds[k]).sum();
        increments += total;
        let at = COUNTERS_U64 as usize + 8 * k;
        model[at..at + 8].copy_from_slice(&total.to_le_bytes());
    }
    for k in 0..N_U32 as usize {
        let total: u64 = done.iter().map(|d| d.u32_adds[k]).sum();
        increments += total;
        let at = COUNTERS_U32 as usize + 4 * k;
        model[at..at + 4].copy_from_slice(&(total as u32).to_le_bytes());
    }
    assert!(increments > 0);
    println!("stress: {increments} atomic increments");

    tokio::time::timeout(HANG, async {
        file.resize(TAIL).await.unwrap();
        // The counters as atomics agree with the count of increments.
        let counters = file.atomic_u64_slice(COUNTERS_U64, N_U64).await.unwrap();
        for (k, c) in counters.iter().enumerate() {
            let total: u64 = done.iter().map(|d| d.u64_adds[k]).sum();
            assert_eq!(
                c.load(Ordering::Relaxed),
                total,
                "u64 counter {k} (seed {seed})"
            );
        }
        drop(counters);
        let all = file.load(0, TAIL).await.unwrap();
        assert!(
            all[..] == model[..],
            "file differs from the model (seed {seed})"
        );
        // No lease leaked: the whole file can be taken exclusively.
        drop(file.try_segment_mut(0, TAIL).await.unwrap());
        file.flush().await.unwrap();
        file.close().await.unwrap();
    })
    .await
    .unwrap_or_else(|_| panic!("final checks hung (seed {seed})"));

    let reopened = MappedFile::open_rw(&path).await.unwrap();
    assert_eq!(reopened.len(), TAIL);
    assert!(
        reopened.load(0, TAIL).await.unwrap()[..] == model[..],
        "reopened file differs (seed {seed})"
    );
    reopened.close().await.unwrap();
    assert!(
        std::fs::read(&path).unwrap() == model,
        "read(2) differs (seed {seed})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_mix_on_two_workers_ends_equal_to_the_model() {
    stress(mmap_actor::DEFAULT_CHANNEL_CAPACITY, 1500).await;
}

/// The same with a channel of two slots: callers wait for room most of the
/// time (the actor's backpressure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_mix_under_backpressure_ends_equal_to_the_model() {
    stress(2, 600).await;
}

/// A lease dropped before a `try_` call is no longer live when the call is
/// served: the call must not fail with `Conflict`. The release travels on
/// its own channel, so this is a race between two channels on a
/// multi-thread runtime; it is run many times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_lease_never_refuses_a_later_try_call() {
    let scratch = Scratch::new();
    let file = scratch.file("release", 4096).await;
    let mut conflicts = 0;
    for i in 0..20_000u64 {
        let seg = file.segment_mut(0, 64).await.unwrap();
        drop(seg);
        match file.try_update(0, i.to_le_bytes().to_vec()).await {
            Ok(()) => {}
            Err(Error::Conflict { .. }) => conflicts += 1,
            Err(e) => panic!("try_update {i}: {e:?}"),
        }
        let seg = file.segment(0, 64).await.unwrap();
        drop(seg);
        match file.try_segment_mut(0, 64).await {
            Ok(_) => {}
            Err(Error::Conflict { .. }) => conflicts += 1,
            Err(e) => panic!("try_segment_mut {i}: {e:?}"),
        }
    }
    assert_eq!(
        conflicts, 0,
        "try_ calls refused after the conflicting lease was dropped"
    );
    file.close().await.unwrap();
}
