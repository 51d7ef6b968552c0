//! The write path: borrowed-slice calls, vectored updates, zeroing,
//! `grow_to`, large copies made by the calling task (under a temporary
//! lease, or through the gate from a multi-thread runtime's `block_on`),
//! and the write method (stores through the mapping, or `pwrite` for
//! updates that are flushed often).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::Scratch;
use mmap_actor::{Error, MappedFile, Mode, DIRECT_MAX, INLINE_COPY_MAX};

const MIB: u64 = 1 << 20;

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i % 251) as u8) | 1)
        .collect()
}

/// Sizes that take each path: direct, one request, a leased copy.
fn sizes() -> Vec<usize> {
    vec![
        0,
        1,
        64,
        DIRECT_MAX,
        DIRECT_MAX + 1,
        INLINE_COPY_MAX,
        INLINE_COPY_MAX + 1,
        3 * MIB as usize + 7,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_path_every_size_round_trips() {
    let s = Scratch::new();
    let file = s.file("sizes", 8 * MIB).await;
    for (i, len) in sizes().into_iter().enumerate() {
        let offset = (i as u64) * 13 + 5;
        let data = pattern(i as u8, len);
        file.update_from(offset, &data).await.unwrap();
        let mut back = vec![0u8; len];
        file.load_into(offset, &mut back).await.unwrap();
        assert_eq!(back, data, "update_from/load_into of {len} bytes");
        assert_eq!(&file.load(offset, len as u64).await.unwrap()[..], &data[..]);
        // The same with the gate closed (a lease elsewhere): every call
        // goes through the actor or a lease and gives the same bytes.
        let held = file.segment(8 * MIB - 8, 8).await.unwrap();
        let again = pattern(i as u8 ^ 0x55, len);
        file.update_from(offset, &again).await.unwrap();
        file.load_into(offset, &mut back).await.unwrap();
        assert_eq!(back, again, "through the actor, {len} bytes");
        drop(held);
        // Vectored: the pieces land back to back.
        let (a, rest) = again.split_at(len / 3);
        let (b, c) = rest.split_at(rest.len() / 2);
        file.zero(offset, len as u64).await.unwrap();
        assert!(file
            .load(offset, len as u64)
            .await
            .unwrap()
            .iter()
            .all(|&x| x == 0));
        file.update_vectored(offset, &[a, &[], b, c]).await.unwrap();
        assert_eq!(
            &file.load(offset, len as u64).await.unwrap()[..],
            &again[..]
        );
        // `update` with owned bytes takes the same paths.
        file.update(offset, data.clone()).await.unwrap();
        assert_eq!(&file.load(offset, len as u64).await.unwrap()[..], &data[..]);
    }
    file.close().await.unwrap();
}

#[tokio::test]
async fn write_path_bad_input_is_a_typed_error_at_every_size() {
    bad_input_at_every_size().await;
}

/// The same from a multi-thread runtime's `block_on`, where large copies go
/// through the gate a piece at a time: an update out of bounds writes
/// nothing there either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_path_bad_input_is_a_typed_error_at_every_size_multi_thread() {
    bad_input_at_every_size().await;
}

async fn bad_input_at_every_size() {
    let s = Scratch::new();
    let len = 8 * MIB;
    let file = s.file("bad", len).await;
    for size in sizes().into_iter().filter(|&n| n > 0) {
        let n = size as u64;
        let data = vec![1u8; size];
        let mut buf = vec![0u8; size];
        for offset in [
            len - n + 1,
            len,
            len + 1,
            (u64::MAX - n).saturating_add(2),
            u64::MAX,
        ] {
            let want = |got: mmap_actor::Result<()>, what: &str| match got {
                Err(Error::OutOfBounds {
                    offset: o,
                    len: l,
                    file_len,
                }) => {
                    assert_eq!((o, file_len), (offset, len), "{what}({offset}, {n})");
                    assert!(l >= n, "{what}: the length in the error");
                }
                other => panic!("{what}({offset}, {n}): expected OutOfBounds, got {other:?}"),
            };
            want(file.update_from(offset, &data).await, "update_from");
            want(file.try_update_from(offset, &data).await, "try_update_from");
            want(
                file.update_vectored(offset, &[&data, &data]).await,
                "update_vectored",
            );
            want(file.zero(offset, n).await, "zero");
            want(file.load_into(offset, &mut buf).await, "load_into");
            want(file.load(offset, n).await.map(drop), "load");
        }
    }
    // A length no file could have is refused before anything is allocated.
    assert!(matches!(
        file.load(0, u64::MAX / 2).await,
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        file.zero(8, u64::MAX).await,
        Err(Error::OutOfBounds { .. })
    ));
    // The file is untouched.
    assert!(file.load(0, len).await.unwrap().iter().all(|&b| b == 0));
    file.close().await.unwrap();

    // Read-only: every write is refused before its bounds are looked at.
    let ro = MappedFile::open_ro(s.path("bad")).await.unwrap();
    for (what, got) in [
        ("update_from", ro.update_from(0, b"x").await),
        ("update_vectored", ro.update_vectored(0, &[b"x"]).await),
        ("zero", ro.zero(u64::MAX, 9).await),
        ("grow_to", ro.grow_to(8 * MIB).await),
    ] {
        assert!(
            matches!(
                got,
                Err(Error::ReadOnly {
                    mode: Mode::ReadOnly,
                    ..
                })
            ),
            "{what}: {got:?}"
        );
    }
    let mut buf = [0u8; 16];
    ro.load_into(0, &mut buf).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_path_grow_to_never_shrinks_under_racing_tasks() {
    let s = Scratch::new();
    let file = s.file("grow", 4096).await;
    let tasks: Vec<_> = (1..=16u64)
        .map(|i| {
            let file = file.clone();
            tokio::spawn(async move { file.grow_to(i * 64 * 1024).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(file.len(), 16 * 64 * 1024);
    file.grow_to(4096).await.unwrap();
    assert_eq!(file.len(), 16 * 64 * 1024, "grow_to shrank the file");
    assert_eq!(
        std::fs::metadata(s.path("grow")).unwrap().len(),
        16 * 64 * 1024
    );
    // It does not wait for leases of the tail (it never cuts).
    let tail = file.segment_mut(16 * 64 * 1024 - 8, 8).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), file.grow_to(2 * MIB))
        .await
        .expect("grow_to waited for a lease")
        .unwrap();
    drop(tail);
    assert!(matches!(
        file.grow_to(u64::MAX).await,
        Err(Error::TooLarge { .. })
    ));
    file.close().await.unwrap();
}

/// A large copy runs on the calling task in chunks, letting other tasks run
/// between them; dropping it mid-way releases its lease at once and leaves
/// each chunk old or new.
#[tokio::test(flavor = "current_thread")]
async fn write_path_large_copy_yields_and_cancels_cleanly() {
    let s = Scratch::new();
    let len = 64 * MIB;
    let file = s.file("large", len).await;
    let new = vec![0xABu8; len as usize];
    // Another task on the same (only) thread counts how often it runs.
    let ticks = Arc::new(AtomicU64::new(0));
    let ticker = tokio::spawn({
        let ticks = Arc::clone(&ticks);
        async move {
            loop {
                ticks.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }
    });
    file.update_from(0, &new).await.unwrap();
    let during = ticks.load(Ordering::Relaxed);
    assert!(
        during >= 4,
        "the other task ran {during} times during a 64 MiB copy: the copy held the thread"
    );
    // Cancel one mid-way: old bytes are 0xAB, new ones 0x5A.
    let newer = vec![0x5Au8; len as usize];
    let cancelled =
        tokio::time::timeout(Duration::from_micros(300), file.update_from(0, &newer)).await;
    assert!(cancelled.is_err(), "the copy finished within 300 µs");
    // The lease is gone: a try_ call of the range succeeds at the first try.
    file.try_update_from(len - 1, &[0xAB]).await.unwrap();
    let bytes = file.load(0, len).await.unwrap();
    let mut seen_new = 0;
    for (i, chunk) in bytes.chunks(64 * 1024).enumerate() {
        let first = chunk[0];
        assert!(
            chunk.iter().all(|&b| b == first) && (first == 0xAB || first == 0x5A),
            "chunk {i} is torn"
        );
        seen_new += usize::from(first == 0x5A);
    }
    assert!(
        seen_new < bytes.len() / (64 * 1024),
        "the cancelled copy completed"
    );
    ticker.abort();
    file.close().await.unwrap();
}

#[tokio::test]
async fn write_path_copy_on_write_updates_stay_private_whatever_the_pattern() {
    let s = Scratch::new();
    let path = s.path("cow");
    std::fs::write(&path, vec![0u8; 64 * 1024]).unwrap();
    let cow = MappedFile::open_cow(&path).await.unwrap();
    // The pattern that makes a read-write open switch to pwrite.
    for i in 0..64u64 {
        cow.update_from(i * 512, &[7u8; 512]).await.unwrap();
        cow.flush().await.unwrap();
    }
    assert!(cow
        .load(0, 32 * 1024)
        .await
        .unwrap()
        .iter()
        .all(|&b| b == 7));
    cow.close().await.unwrap();
    assert!(
        std::fs::read(&path).unwrap().iter().all(|&b| b == 0),
        "a copy-on-write update reached the file"
    );
}

// ---------------------------------------------------------------------
// The write method, seen by syscall counts in a child process.

const CHILD_TEST: &str = "write_path_child_runs_scenario";
const CHILD_ENV: &str = "MMAP_ACTOR_WRITE_PATH";

#[tokio::test]
#[ignore = "child process of the write_path_* tests"]
async fn write_path_child_runs_scenario() {
    let Ok(arg) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (scenario, path) = arg.split_once(':').expect("scenario:path");
    let file = MappedFile::create(path, 16 * MIB).await.unwrap();
    let block = vec![3u8; 4096];
    match scenario {
        // Update then flush, again and again: a durable workload.
        "durable" => {
            for i in 0..200u64 {
                file.update_from((i * 7919 % 4096) * 4096, &block)
                    .await
                    .unwrap();
                file.flush().await.unwrap();
            }
        }
        // Many updates, one flush: a throughput workload.
        "throughput" => {
            for i in 0..4000u64 {
                file.update_from((i * 7919 % 4096) * 4096, &block)
                    .await
                    .unwrap();
            }
            file.flush().await.unwrap();
        }
        other => panic!("unknown scenario {other}"),
    }
    file.close().await.unwrap();
    println!("SCENARIO-PASSED {scenario}");
}

fn pwrites_of(scenario: &str) -> Option<u64> {
    let counts = common::strace_scenario(
        "write_path_method",
        "pwrite64,fdatasync",
        CHILD_TEST,
        CHILD_ENV,
        scenario,
    )?;
    assert!(
        counts.get("fdatasync").copied().unwrap_or(0) >= 1,
        "{scenario}: no fdatasync: {counts:?}"
    );
    Some(counts.get("pwrite64").copied().unwrap_or(0))
}

#[test]
fn write_path_updates_flushed_often_are_written_with_pwrite() {
    let Some(pwrites) = pwrites_of("durable") else {
        return;
    };
    // The first update is stored (the method is chosen at a flush); after
    // that, every one is a pwrite.
    assert!(
        pwrites >= 190,
        "{pwrites} pwrite calls for 200 update+flush rounds"
    );
}

#[test]
fn write_path_updates_rarely_flushed_are_stored() {
    let Some(pwrites) = pwrites_of("throughput") else {
        return;
    };
    assert!(
        pwrites <= 10,
        "{pwrites} pwrite calls for 4000 updates and one flush"
    );
}

/// Large copies from a multi-thread runtime's `block_on` (no task: a round
/// trip to the actor would wake two parked threads) go through the gate a
/// piece at a time. They must land whole, count once for the flush
/// policies, be reported to subscriptions, and give way to leases taken
/// while they run (the rest then goes under a lease) without losing bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_path_large_copies_through_the_gate_from_block_on() {
    large_copies_through_the_gate().await;
}

/// Updates of a mebibyte and more go through the gate from any caller,
/// their whole words stored past the cache: from a task of a multi-thread
/// runtime, and on a current-thread runtime (where the leaser below runs
/// only between the update's pieces).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_path_large_copies_through_the_gate_from_a_task() {
    tokio::spawn(large_copies_through_the_gate()).await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn write_path_large_copies_through_the_gate_on_a_current_thread_runtime() {
    large_copies_through_the_gate().await;
}

/// Updates at every alignment of their first and last byte land exactly,
/// and leave the bytes around them alone, whichever way they are copied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_path_large_updates_at_every_alignment_touch_only_their_bytes() {
    let s = Scratch::new();
    let len = 8 * MIB;
    let file = s.file("align", len).await;
    let base = pattern(1, len as usize);
    for (i, size) in [MIB as usize, MIB as usize + 1, 2 * MIB as usize + 63]
        .into_iter()
        .enumerate()
    {
        for skip in [0u64, 1, 7, 8, 9, 63, 64, 65] {
            file.update_from(0, &base).await.unwrap();
            let offset = MIB + skip;
            let data = pattern(i as u8 * 16 + skip as u8 + 2, size);
            file.update_from(offset, &data).await.unwrap();
            let back = file.load(0, len).await.unwrap();
            let (start, end) = (offset as usize, offset as usize + size);
            assert!(
                back[..start] == base[..start],
                "size {size} skip {skip}: bytes before"
            );
            assert!(
                back[start..end] == data[..],
                "size {size} skip {skip}: the update"
            );
            assert!(
                back[end..] == base[end..],
                "size {size} skip {skip}: bytes after"
            );
            file.zero(offset, size as u64).await.unwrap();
            let back = file.load(0, len).await.unwrap();
            assert!(
                back[start..end].iter().all(|&b| b == 0),
                "size {size} skip {skip}: zero"
            );
            assert!(
                back[end..] == base[end..],
                "size {size} skip {skip}: after the zeros"
            );
        }
    }
    file.close().await.unwrap();
}

/// Small direct loads racing with large updates of the same bytes (stored
/// past the cache, a word at a time) see each aligned 8-byte word whole:
/// all old or all new, never a mix within a word. (Loads that meet the
/// update's temporary lease, when it takes one, are served by the actor
/// after it; bounded by time, since those are slow in a debug build.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_path_loads_racing_a_large_update_see_whole_words() {
    let s = Scratch::new();
    let len = 4 * MIB;
    let file = s.file("race", len).await;
    let stop = Arc::new(AtomicU64::new(0));
    let writer = {
        let (file, stop) = (file.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let (a, b) = (
                vec![0x11u8; 2 * MIB as usize],
                vec![0x22u8; 2 * MIB as usize],
            );
            let mut rounds = 0u64;
            while stop.load(Ordering::Relaxed) == 0 || rounds < 2 {
                let data = if rounds % 2 == 0 { &a } else { &b };
                file.update_from(MIB, data).await.unwrap();
                rounds += 1;
            }
            rounds
        })
    };
    let mut rng = common::SplitMix(7);
    let mut mixed_words = 0u64;
    let mut seen = [false; 3];
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut loads = 0u32;
    while loads < 200_000 && std::time::Instant::now() < deadline {
        let offset = MIB + 8 * rng.range(0, (2 * MIB - 64) / 8);
        let mut buf = [0u8; 64];
        file.load_into(offset, &mut buf).await.unwrap();
        for word in buf.chunks(8) {
            match word {
                [0, 0, 0, 0, 0, 0, 0, 0] => seen[0] = true,
                [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11] => seen[1] = true,
                [0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22] => seen[2] = true,
                _ => mixed_words += 1,
            }
        }
        loads += 1;
    }
    stop.store(1, Ordering::Relaxed);
    let rounds = writer.await.unwrap();
    assert_eq!(mixed_words, 0, "words mixing old and new bytes");
    assert!(rounds >= 2, "the writer ran {rounds} rounds");
    // Both patterns were there to see once the writer had run twice.
    let mut buf = [0u8; 8];
    file.load_into(MIB, &mut buf).await.unwrap();
    assert!(buf == [0x11; 8] || buf == [0x22; 8], "{buf:?}");
    assert!(
        loads > 0 && (seen[0] || seen[1] || seen[2]),
        "{loads} loads saw {seen:?}"
    );
    file.close().await.unwrap();
}

async fn large_copies_through_the_gate() {
    let s = Scratch::new();
    let len = 16 * MIB;
    let file = s.file("gate", len).await;
    let size = 3 * MIB as usize + 5;

    // Whole, and counted once with every byte.
    let data = pattern(7, size);
    let before = file.pending_bytes();
    file.update_from(4099, &data).await.unwrap();
    // Copied through the gate, it is counted at once; copied under a
    // temporary lease (pages not in the page cache are faulted in on the
    // pool first), when the actor has taken in the lease's release.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while file.pending_bytes() - before < size as u64 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(file.pending_bytes() - before, size as u64);
    let mut back = vec![0u8; size];
    file.load_into(4099, &mut back).await.unwrap();
    assert!(back == data, "load_into after a large update_from");
    file.update_vectored(8 * MIB, &[&data[..MIB as usize], &data[..7]])
        .await
        .unwrap();
    assert_eq!(
        file.load(8 * MIB, MIB + 7).await.unwrap()[..],
        [&data[..MIB as usize], &data[..7]].concat()[..]
    );
    file.zero(4099, size as u64).await.unwrap();
    assert!(file
        .load(4099, size as u64)
        .await
        .unwrap()
        .iter()
        .all(|&b| b == 0));

    // A subscription of the range sees one change per update.
    let mut changes = file.subscribe(0..len);
    file.update_from(MIB, &data).await.unwrap();
    let change = futures::StreamExt::next(&mut changes)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((change.offset(), change.len()), (MIB, size as u64));
    assert_eq!(change.kind(), mmap_actor::ChangeKind::Update);
    drop(changes);

    // Leases of the same bytes come and go while large updates run; each
    // update lands whole, however its pieces were split between the gate
    // and a lease.
    let stop = Arc::new(AtomicU64::new(0));
    let leaser = {
        let (file, stop) = (file.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut taken = 0u64;
            while stop.load(Ordering::Relaxed) == 0 {
                // Held briefly, then the gate stays open for a while: some
                // leases arrive in the middle of an update's pieces.
                drop(file.segment(2 * MIB, 4096).await.unwrap());
                taken += 1;
                let quiet = std::time::Instant::now();
                while quiet.elapsed() < Duration::from_micros(50 + (taken % 7) * 40) {
                    tokio::task::yield_now().await;
                }
            }
            taken
        })
    };
    for round in 0..100u8 {
        let data = pattern(round, size);
        file.update_from(MIB, &data).await.unwrap();
        let mut back = vec![0u8; size];
        file.load_into(MIB, &mut back).await.unwrap();
        assert!(
            back == data,
            "round {round}: a large update did not land whole"
        );
    }
    stop.store(1, Ordering::Relaxed);
    assert!(leaser.await.unwrap() > 0, "the leases ran alongside");
    file.close().await.unwrap();
}

/// The hand-written futures of the direct path's calls answer once: a poll
/// after the answer panics instead of writing again. (Multi-thread: should
/// the call take the general path, the actor answers while this polls.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_path_call_futures_polled_after_completion_panic() {
    use std::future::Future;
    use std::task::{Context, Poll};
    let s = Scratch::new();
    let file = s.file("again", 4096).await;
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut update = file.update_from(0, &[7u8; 8]);
    let mut first = Poll::Pending;
    while first.is_pending() {
        first = std::pin::Pin::new(&mut update).poll(&mut cx);
    }
    assert!(matches!(first, Poll::Ready(Ok(()))));
    // Another write, which a second run of the first would undo.
    file.update_from(0, &[9u8; 8]).await.unwrap();
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = std::pin::Pin::new(&mut update).poll(&mut cx);
    }));
    assert!(again.is_err(), "a second poll of a completed update_from");
    assert_eq!(&file.load(0, 8).await.unwrap()[..], &[9u8; 8]);
    file.close().await.unwrap();
}
