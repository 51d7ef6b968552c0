//! The queue of requests waiting for a lease is bounded and drains fast:
//! hundreds of thousands of callers queued behind one `SegmentMut` are all
//! served, soon after it is dropped, and a request for other bytes still
//! gets through.
//!
//! The timeouts are hang detectors (a drain that takes minutes is the bug),
//! not speed measurements. Each test builds its own runtime and shuts it
//! down in the background, so that an actor still busy draining does not
//! hold the test up once it has failed.

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Scratch;
use mmap_actor::{MappedFile, INLINE_COPY_MAX};

const DRAIN: Duration = Duration::from_secs(60);
/// How long the callers may take to start and send their requests (a hang
/// detector for the setup, not part of what is tested).
const SETUP: Duration = Duration::from_secs(120);
/// How long a barrier round trip may take before we assume the queue bound
/// is pushing back (then the remaining callers wait for channel room).
const BARRIER: Duration = Duration::from_secs(5);
static ONES: [u8; 64] = [1u8; 64];

fn runtime(multi: bool) -> tokio::runtime::Runtime {
    let mut b = if multi {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    b.enable_all().build().expect("runtime")
}

/// Runs `body` on `rt`, then shuts `rt` down without waiting for its tasks.
fn run<T>(rt: tokio::runtime::Runtime, body: impl Future<Output = T>) -> T {
    let out = rt.block_on(body);
    rt.shutdown_background();
    out
}

/// Spawns `n` callers of `call` and waits until each has started (it has
/// sent its request, or waits for channel room), then until a round trip
/// from a fresh caller comes back (every request sent before it is queued),
/// or [`BARRIER`] passes (the queue is full and pushes back).
async fn spawn_waiters<F, Fut>(
    file: &MappedFile,
    n: usize,
    call: F,
) -> (
    Vec<tokio::task::JoinHandle<mmap_actor::Result<()>>>,
    Arc<AtomicUsize>,
)
where
    F: Fn(MappedFile) -> Fut,
    Fut: Future<Output = mmap_actor::Result<()>> + Send + 'static,
{
    let started = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let fut = call(file.clone());
        let started = Arc::clone(&started);
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            started.fetch_add(1, Ordering::Relaxed);
            let out = fut.await;
            done.fetch_add(1, Ordering::Relaxed);
            out
        }));
    }
    let t = Instant::now();
    while started.load(Ordering::Relaxed) < n {
        assert!(
            t.elapsed() < SETUP,
            "only {} of {n} callers started within {SETUP:?}",
            started.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("{n} callers started in {:?}", t.elapsed());
    // A flush touches no bytes, so it does not queue behind the lease:
    // once it returns, the actor has taken every request sent before it.
    match tokio::time::timeout(BARRIER, file.flush()).await {
        Ok(r) => r.expect("flush"),
        Err(_) => println!("the queue pushes back: some callers wait for channel room"),
    }
    assert_eq!(
        done.load(Ordering::Relaxed),
        0,
        "a caller was served under an exclusive lease"
    );
    (tasks, done)
}

/// Awaits every task under [`DRAIN`]; each must succeed.
async fn drain(
    what: &str,
    tasks: Vec<tokio::task::JoinHandle<mmap_actor::Result<()>>>,
    done: &AtomicUsize,
) {
    let n = tasks.len();
    let t = Instant::now();
    let all = tokio::time::timeout(DRAIN, futures::future::join_all(tasks)).await;
    let Ok(all) = all else {
        panic!(
            "{what}: only {} of {n} queued callers were served within {DRAIN:?} of the lease's release",
            done.load(Ordering::Relaxed)
        );
    };
    for (i, r) in all.into_iter().enumerate() {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{what}: caller {i} failed: {e:?}"),
            Err(e) => panic!("{what}: caller {i} died: {e}"),
        }
    }
    println!("{what}: {n} callers drained in {:?}", t.elapsed());
}

/// 200,000 small updates of the held bytes.
#[test]
fn queue_bounds_200k_small_updates_drain_after_the_lease() {
    const N: usize = 200_000;
    let scratch = Scratch::new();
    run(runtime(true), async {
        let file = scratch.file("small", 1 << 20).await;
        let held = file.segment_mut(0, 64).await.unwrap();
        let (tasks, done) = spawn_waiters(&file, N, |f| async move {
            f.update(0, Bytes::from_static(&ONES)).await
        })
        .await;
        drop(held);
        drain("200k small updates", tasks, &done).await;
        assert_eq!(file.load(0, 64).await.unwrap()[..], ONES);
        // Nothing is left behind: the bytes can be taken at once.
        drop(
            file.try_segment_mut(0, 64)
                .await
                .expect("try_segment_mut after the drain"),
        );
    });
}

/// 40,000 updates of `INLINE_COPY_MAX + 1` bytes (the actor's slow path:
/// in place under `block_in_place` on a multi-thread runtime, on the
/// blocking pool on a current-thread one) queued behind one lease.
fn large_updates(multi: bool) {
    const N: usize = 40_000;
    let len = INLINE_COPY_MAX + 1;
    let scratch = Scratch::new();
    run(runtime(multi), async {
        let file = scratch.file("large", 2 * len as u64).await;
        let data = Bytes::from(vec![7u8; len]);
        let held = file.segment_mut(0, 64).await.unwrap();
        let (tasks, done) = spawn_waiters(&file, N, |f| {
            let data = data.clone();
            async move { f.update(0, data).await }
        })
        .await;
        drop(held);
        drain(
            &format!("40k large updates (multi-thread: {multi})"),
            tasks,
            &done,
        )
        .await;
        assert!(file
            .load(0, len as u64)
            .await
            .unwrap()
            .iter()
            .all(|&b| b == 7));
        drop(
            file.try_segment_mut(0, len as u64)
                .await
                .expect("try_segment_mut after the drain"),
        );
    });
}

#[test]
fn queue_bounds_40k_large_updates_drain_multi_thread() {
    large_updates(true);
}

#[test]
fn queue_bounds_40k_large_updates_drain_current_thread() {
    large_updates(false);
}

/// 100,000 updates wait behind a lease on bytes 0..64; a load of other
/// bytes (8192..8256) from another task must not be starved by them.
///
/// What this pins down: a bounded queue may push back on *every* new
/// request while it is full (the disjoint load then waits for channel room
/// like everyone else), but that backpressure must end: once the lease is
/// released, the queue drains and the disjoint load completes, and so does
/// every waiting caller. Whether the load also completes while the lease is
/// still held is reported, not asserted.
#[test]
fn queue_bounds_disjoint_request_is_not_starved() {
    const N: usize = 100_000;
    let scratch = Scratch::new();
    run(runtime(true), async {
        let file = scratch.file("disjoint", 1 << 20).await;
        file.update(8192, vec![9u8; 64]).await.unwrap();
        let held = file.segment_mut(0, 64).await.unwrap();
        let (tasks, done) = spawn_waiters(&file, N, |f| async move {
            f.update(0, Bytes::from_static(&ONES)).await
        })
        .await;
        let f = file.clone();
        let load = tokio::spawn(async move { f.load(8192, 64).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        println!(
            "the disjoint load completed while the lease was held: {}",
            load.is_finished()
        );
        drop(held);
        let got = tokio::time::timeout(Duration::from_secs(30), load)
            .await
            .expect("the disjoint load did not complete within 30 s of the lease's release")
            .expect("load task")
            .expect("load");
        assert_eq!(got[..], [9u8; 64]);
        drain("100k updates behind a disjoint load", tasks, &done).await;
        assert_eq!(file.load(0, 64).await.unwrap()[..], ONES);
    });
}
