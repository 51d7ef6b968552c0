//! Segments, exclusive segments and atomic views: the compatibility table,
//! FIFO waiting, resizes that await releases, zero-copy `Bytes`.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use mmap_actor::{Error, MappedFile};

/// A live lease of one kind on bytes `[64, 80)`.
enum Held {
    Segment(#[allow(dead_code)] mmap_actor::Segment),
    SegmentMut(#[allow(dead_code)] mmap_actor::SegmentMut),
    Atomic64(#[allow(dead_code)] mmap_actor::AtomicView<[std::sync::atomic::AtomicU64]>),
    Atomic32(#[allow(dead_code)] mmap_actor::AtomicView<[std::sync::atomic::AtomicU32]>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Segment,
    SegmentMut,
    Atomic64,
    Atomic32,
    Update,
    Load,
}

const KINDS: [Kind; 6] = [
    Kind::Segment,
    Kind::SegmentMut,
    Kind::Atomic64,
    Kind::Atomic32,
    Kind::Update,
    Kind::Load,
];

async fn take(
    file: &MappedFile,
    kind: Kind,
    offset: u64,
    wait: bool,
) -> Result<Option<Held>, Error> {
    Ok(Some(match (kind, wait) {
        (Kind::Segment, true) => Held::Segment(file.segment(offset, 16).await?),
        (Kind::Segment, false) => Held::Segment(file.try_segment(offset, 16).await?),
        (Kind::SegmentMut, true) => Held::SegmentMut(file.segment_mut(offset, 16).await?),
        (Kind::SegmentMut, false) => Held::SegmentMut(file.try_segment_mut(offset, 16).await?),
        (Kind::Atomic64, true) => Held::Atomic64(file.atomic_u64_slice(offset, 2).await?),
        (Kind::Atomic64, false) => Held::Atomic64(file.try_atomic_u64_slice(offset, 2).await?),
        (Kind::Atomic32, true) => Held::Atomic32(file.atomic_u32_slice(offset, 4).await?),
        (Kind::Atomic32, false) => Held::Atomic32(file.try_atomic_u32_slice(offset, 4).await?),
        (Kind::Update, true) => {
            file.update(offset, vec![1u8; 16]).await?;
            return Ok(None);
        }
        (Kind::Update, false) => {
            file.try_update(offset, vec![1u8; 16]).await?;
            return Ok(None);
        }
        (Kind::Load, true) => {
            file.load(offset, 16).await?;
            return Ok(None);
        }
        (Kind::Load, false) => {
            file.try_load(offset, 16).await?;
            return Ok(None);
        }
    }))
}

/// The compatibility table (docs/ARCHITECTURE.md, "Leases"), with `load` behaving as a segment.
fn compatible(held: Kind, wanted: Kind) -> bool {
    use Kind::*;
    matches!(
        (held, wanted),
        (Segment, Segment | Load) | (Atomic64, Atomic64) | (Atomic32, Atomic32)
    )
}

#[tokio::test]
async fn every_row_of_the_compatibility_table() {
    let s = common::Scratch::new();
    let file = s.file("table", 4096).await;
    for held_kind in [
        Kind::Segment,
        Kind::SegmentMut,
        Kind::Atomic64,
        Kind::Atomic32,
    ] {
        for wanted in KINDS {
            let held = take(&file, held_kind, 64, true).await.unwrap();
            // Overlapping bytes [72, 88) vs [64, 80), try_ twin.
            let attempt = take(&file, wanted, 72, false).await;
            if compatible(held_kind, wanted) {
                assert!(
                    attempt.is_ok(),
                    "{held_kind:?} then try {wanted:?}: {attempt:?}",
                    attempt = attempt.as_ref().err()
                );
            } else {
                match attempt {
                    Err(Error::Conflict {
                        offset: 72,
                        len: 16,
                        ..
                    }) => {}
                    other => panic!("{held_kind:?} then try {wanted:?}: {:?}", other.err()),
                }
            }
            drop(attempt);
            // Waiting twin: completes at once if compatible, else only after
            // the release.
            let f = file.clone();
            let waiter = tokio::spawn(async move { take(&f, wanted, 72, true).await.map(drop) });
            if !compatible(held_kind, wanted) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                assert!(
                    !waiter.is_finished(),
                    "{held_kind:?} then {wanted:?} did not wait"
                );
            }
            drop(held);
            waiter.await.unwrap().unwrap();
            // Disjoint bytes never wait.
            let held = take(&file, held_kind, 64, true).await.unwrap();
            take(&file, wanted, 1024, false).await.unwrap();
            drop(held);
        }
    }
}

#[tokio::test]
async fn waiting_requests_are_served_first_come_first_served() {
    let s = common::Scratch::new();
    let file = s.file("fifo", 4096).await;
    let reader = file.segment(0, 100).await.unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    // A writer queues behind the reader ...
    let writer = {
        let (f, order) = (file.clone(), order.clone());
        tokio::spawn(async move {
            let mut w = f.segment_mut(50, 10).await.unwrap();
            order.lock().unwrap().push("writer");
            w.fill(7);
        })
    };
    while file.try_segment_mut(50, 10).await.is_ok() {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    // ... and a later reader of the same bytes queues behind the writer,
    // although it is compatible with the reader that holds them,
    let other = file.clone();
    let refused = tokio::spawn(async move { other.try_segment(0, 100).await.map(drop) });
    assert!(matches!(
        refused.await.unwrap(),
        Err(Error::Conflict { .. })
    ));
    // unless it comes from the holder itself: its own compatible request is
    // served ahead of the writer that waits for it (no deadlock).
    drop(file.try_segment(0, 100).await.unwrap());
    let late_reader = {
        let (f, order) = (file.clone(), order.clone());
        tokio::spawn(async move {
            let seg = f.segment(0, 100).await.unwrap();
            order.lock().unwrap().push("late reader");
            seg[55]
        })
    };
    // Disjoint bytes are not held up by the queue.
    drop(file.try_segment_mut(200, 10).await.unwrap());
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(order.lock().unwrap().is_empty());
    drop(reader);
    writer.await.unwrap();
    assert_eq!(
        late_reader.await.unwrap(),
        7,
        "the late reader saw the writer's bytes"
    );
    assert_eq!(*order.lock().unwrap(), ["writer", "late reader"]);
}

#[tokio::test(flavor = "current_thread")]
async fn shrink_awaits_a_view_while_other_tasks_run() {
    let s = common::Scratch::new();
    let file = s.file("shrink-await", 1 << 20).await;
    let hits = file.atomic_u64(4096).await.unwrap();
    hits.fetch_add(1, Ordering::Relaxed);
    // Grow returns at once with the view held.
    file.resize(8 << 20).await.unwrap();
    // A shrink that cuts the view waits, on this one thread, while another
    // task keeps running.
    let f2 = file.clone();
    let shrink = tokio::spawn(async move { f2.resize(32).await });
    let ticks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ticker = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                ticks.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    ticker.await.unwrap();
    assert_eq!(ticks.load(Ordering::Relaxed), 20);
    assert!(!shrink.is_finished());
    assert_eq!(file.len(), 8 << 20);
    // A new lease in the cut tail queues behind the pending shrink; one
    // before the cut does not.
    assert!(matches!(
        file.try_segment(1000, 8).await,
        Err(Error::Conflict { .. })
    ));
    assert_eq!(file.try_segment(0, 8).await.unwrap().len(), 8);
    // The view still works and sees its bytes.
    assert_eq!(hits.fetch_add(1, Ordering::Relaxed), 1);
    drop(hits);
    shrink.await.unwrap().unwrap();
    assert_eq!(file.len(), 32);
}

#[tokio::test(flavor = "current_thread")]
async fn try_resize_fails_fast_on_the_callers_own_lease() {
    let s = common::Scratch::new();
    let file = s.file("self-wait", 8192).await;
    let seg = file.segment(4096, 16).await.unwrap();
    assert!(matches!(
        file.try_resize(100).await,
        Err(Error::Conflict { op: "resize", .. })
    ));
    // Growing never waits, even on its own leases.
    file.try_resize(16384).await.unwrap();
    // A shrink that keeps the leased bytes does not wait either.
    file.try_resize(4096 + 16).await.unwrap();
    drop(seg);
    file.try_resize(100).await.unwrap();
    assert_eq!(file.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomics_of_two_generations_are_coherent() {
    let s = common::Scratch::new();
    let file = s.file("coherent", 4096).await;
    let old = Arc::new(file.atomic_u64(128).await.unwrap());
    file.resize(16 << 20).await.unwrap();
    let new = Arc::new(file.atomic_u64(128).await.unwrap());
    file.resize(32 << 20).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let view = if t % 2 == 0 { old.clone() } else { new.clone() };
        tasks.push(tokio::spawn(async move {
            for _ in 0..10_000 {
                view.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(old.load(Ordering::SeqCst), 80_000);
    assert_eq!(new.load(Ordering::SeqCst), 80_000);
    drop((old, new));
    assert_eq!(
        &file.load(128, 8).await.unwrap()[..],
        &80_000u64.to_le_bytes()
    );
}

#[tokio::test]
async fn into_bytes_is_zero_copy_and_keeps_the_lease() {
    let s = common::Scratch::new();
    let file = s.file("bytes", 1 << 20).await;
    file.update(4096, vec![3u8; 65536]).await.unwrap();
    let seg = file.segment(4096, 65536).await.unwrap();
    let ptr = seg.as_ptr();
    let bytes = seg.into_bytes();
    assert_eq!(bytes.as_ptr(), ptr, "into_bytes copied");
    let slice = bytes.slice(100..200);
    drop(bytes);
    // The lease lives in the remaining `Bytes`: writers still wait.
    assert!(matches!(
        file.try_update(4096, vec![0u8; 10]).await,
        Err(Error::Conflict { .. })
    ));
    assert!(slice.iter().all(|&b| b == 3));
    drop(slice);
    file.try_update(4096, vec![0u8; 10]).await.unwrap();
}

#[tokio::test]
async fn writes_through_leases_are_visible_and_flushed() {
    let s = common::Scratch::new();
    let path = s.path("lease-writes");
    let file = MappedFile::create(&path, 8192).await.unwrap();
    let mut w = file.segment_mut(0, 4096).await.unwrap();
    w[..5].copy_from_slice(b"hello");
    drop(w);
    let n = file.atomic_u32(4096).await.unwrap();
    n.store(0xfeed, Ordering::Release);
    drop(n);
    assert_eq!(&file.load(0, 5).await.unwrap()[..], b"hello");
    file.flush().await.unwrap();
    file.close().await.unwrap();
    let disk = std::fs::read(&path).unwrap();
    assert_eq!(&disk[..5], b"hello");
    assert_eq!(&disk[4096..4100], &0xfeedu32.to_le_bytes());
}

const CHILD_ENV: &str = "MMAP_ACTOR_LEASES_DIR";

/// Take a lease, grow (a new generation), then shrink below the lease: the
/// shrink waits, the lease keeps reading its bytes, nothing dies of SIGBUS.
#[tokio::test(flavor = "current_thread")]
#[ignore = "child of shrink_below_a_lease_of_an_older_generation"]
async fn child_shrink_below_old_generation_lease() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let file = MappedFile::create(std::path::Path::new(&dir).join("f"), 64 * 1024)
        .await
        .unwrap();
    file.update(32 * 1024, vec![0xabu8; 32 * 1024])
        .await
        .unwrap();
    let seg = file.segment(32 * 1024, 32 * 1024).await.unwrap();
    file.resize(1 << 20).await.unwrap();
    let f2 = file.clone();
    let shrink = tokio::spawn(async move { f2.resize(4096).await });
    for _ in 0..50 {
        tokio::task::yield_now().await;
        // Touch every page of the old generation's lease while the shrink
        // is pending: a truncation under it would raise SIGBUS here.
        assert!(seg.iter().step_by(4096).all(|&b| b == 0xab));
    }
    assert!(!shrink.is_finished());
    drop(seg);
    shrink.await.unwrap().unwrap();
    assert_eq!(file.len(), 4096);
    println!("child done");
}

#[test]
fn shrink_below_a_lease_of_an_older_generation() {
    let s = common::Scratch::new();
    let (status, output) = common::rerun(
        "child_shrink_below_old_generation_lease",
        &[],
        &[(CHILD_ENV, s.dir.path().display().to_string())],
    );
    assert!(status.success(), "child died ({status:?}): {output}");
    assert!(output.contains("child done"), "{output}");
}
