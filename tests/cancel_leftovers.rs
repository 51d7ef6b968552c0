//! A cancelled request leaves nothing behind: once its future is dropped
//! (and whatever it waited for is gone), the very next `try_` call of the
//! same bytes succeeds at the first attempt: no retry, no sleep.
//!
//! Covered: requests cancelled while waiting for a lease (a shrink cutting a
//! held segment; `segment_mut`, `segment`, `update`, `load`, `atomic_u64`,
//! `atomic_u32`, `atomic_u64_slice`, `modify` under a held
//! `SegmentMut`), requests cancelled while waiting for channel room or
//! while still in the channel of an actor that is not running yet, a large
//! load cancelled while it runs, and lease grants whose future is dropped
//! after the actor granted them.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use common::Scratch;
use mmap_actor::{MappedFile, Result};

/// How long a waiting request is given before it is cancelled.
const CANCEL: Duration = Duration::from_millis(10);
/// Hang detector only.
const HANG: Duration = Duration::from_secs(10);
const L: u64 = 8192;

/// Polls `fut` once and drops it, returning its output if it was ready.
async fn poll_once<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
        Poll::Ready(v) => Poll::Ready(Some(v)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

type Waiting<'a> = Pin<Box<dyn Future<Output = Result<()>> + 'a>>;

/// A request that must wait under a `SegmentMut` of bytes 0..64.
type MakeWaiting = for<'a> fn(&'a MappedFile) -> Waiting<'a>;

/// The requests that wait for a held `SegmentMut` of 0..64, each with the
/// `try_` twin (or nearest `try_` call) checked after the cancellation.
fn waiting_requests() -> Vec<(&'static str, MakeWaiting, MakeWaiting)> {
    vec![
        (
            "segment_mut",
            |f| Box::pin(async move { f.segment_mut(0, 64).await.map(drop) }),
            |f| Box::pin(async move { f.try_segment_mut(0, 64).await.map(drop) }),
        ),
        (
            "segment",
            |f| Box::pin(async move { f.segment(0, 64).await.map(drop) }),
            |f| Box::pin(async move { f.try_segment(0, 64).await.map(drop) }),
        ),
        (
            "update",
            |f| Box::pin(async move { f.update(0, vec![3u8; 64]).await }),
            |f| Box::pin(async move { f.try_update(0, vec![4u8; 64]).await }),
        ),
        (
            "load",
            |f| Box::pin(async move { f.load(0, 64).await.map(drop) }),
            |f| Box::pin(async move { f.try_load(0, 64).await.map(drop) }),
        ),
        (
            "atomic_u64",
            |f| Box::pin(async move { f.atomic_u64(8).await.map(drop) }),
            |f| Box::pin(async move { f.try_atomic_u64(8).await.map(drop) }),
        ),
        (
            "atomic_u32",
            |f| Box::pin(async move { f.atomic_u32(4).await.map(drop) }),
            |f| Box::pin(async move { f.try_atomic_u32(4).await.map(drop) }),
        ),
        (
            "atomic_u64_slice",
            |f| Box::pin(async move { f.atomic_u64_slice(0, 8).await.map(drop) }),
            |f| Box::pin(async move { f.try_atomic_u64_slice(0, 8).await.map(drop) }),
        ),
        (
            "modify",
            |f| Box::pin(async move { f.modify(0, 64, |b| b.fill(5)).await }),
            // `modify` has no `try_` twin: the strictest call of its bytes.
            |f| Box::pin(async move { f.try_segment_mut(0, 64).await.map(drop) }),
        ),
        // `prewarm` changes no byte and never waits for a lease
        // (tests/prewarm_exclusion.rs): it cannot be cancelled while waiting.
    ]
}

/// The reported case: a shrink waiting for a held segment is cancelled; the
/// segment goes; `try_resize` to the same length succeeds at once.
async fn cancelled_waiting_shrink() {
    let scratch = Scratch::new();
    let file = scratch.file("shrink", L).await;
    let seg = file.segment(6000, 100).await.unwrap();
    assert!(
        tokio::time::timeout(CANCEL, file.resize(4096))
            .await
            .is_err(),
        "a shrink cutting a live segment completed"
    );
    drop(seg);
    file.try_resize(4096)
        .await
        .expect("try_resize right after the cancelled shrink and the segment's release");
    assert_eq!(file.len(), 4096);
    assert_eq!(std::fs::metadata(file.path()).unwrap().len(), 4096);
    // And a cancelled grow-then-shrink pair leaves nothing either.
    let seg = file.segment(4000, 96).await.unwrap();
    assert!(tokio::time::timeout(CANCEL, file.resize(2048))
        .await
        .is_err());
    assert!(tokio::time::timeout(CANCEL, file.resize(1024))
        .await
        .is_err());
    drop(seg);
    now("try_resize(1024)", file.try_resize(1024)).await;
    assert_eq!(file.len(), 1024);
    file.close().await.unwrap();
}

/// Every waiting request, cancelled under a held `SegmentMut`: the next
/// `try_` twin, then `try_segment_mut` of the bytes, succeed at once.
async fn cancelled_waiting_requests() {
    let scratch = Scratch::new();
    let file = scratch.file("waiting", L).await;
    for (name, waiting, twin) in waiting_requests() {
        let held = file.segment_mut(0, 64).await.unwrap();
        assert!(
            tokio::time::timeout(CANCEL, waiting(&file)).await.is_err(),
            "{name} completed under an exclusive lease"
        );
        drop(held);
        if let Err(e) = twin(&file).await {
            panic!("the try_ twin right after a cancelled waiting {name}: {e:?}");
        }
        if let Err(e) = file.try_segment_mut(0, 64).await {
            panic!("try_segment_mut(0, 64) right after a cancelled waiting {name}: {e:?}");
        }
    }
    // Several cancelled waiters at once, of every kind.
    let held = file.segment_mut(0, 64).await.unwrap();
    for (name, waiting, _) in waiting_requests() {
        assert!(
            tokio::time::timeout(CANCEL, waiting(&file)).await.is_err(),
            "{name} completed under an exclusive lease"
        );
    }
    drop(held);
    now(
        "try_segment_mut of the whole file after many cancelled waiters",
        file.try_segment_mut(0, L),
    )
    .await;
    now(
        "try_resize(64) after many cancelled waiters",
        file.try_resize(64),
    )
    .await;
    file.close().await.unwrap();
}

#[tokio::test]
async fn cancel_leftovers_waiting_shrink_current_thread() {
    cancelled_waiting_shrink().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_leftovers_waiting_shrink_multi_thread() {
    cancelled_waiting_shrink().await;
}

#[tokio::test]
async fn cancel_leftovers_waiting_requests_current_thread() {
    cancelled_waiting_requests().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_leftovers_waiting_requests_multi_thread() {
    cancelled_waiting_requests().await;
}

/// Requests cancelled while waiting for room in a full channel (capacity
/// 1, actor not running yet), and one cancelled while it sat in the channel:
/// once the actor runs, nothing of them is left, and the cancelled resizes
/// are not applied.
#[tokio::test]
async fn cancel_leftovers_requests_cancelled_waiting_for_channel_room() {
    let scratch = Scratch::new();
    let (file, actor) = MappedFile::options()
        .create(true)
        .len(L)
        .channel_capacity(1)
        .open_unspawned(scratch.path("room"))
        .await
        .unwrap();
    // In the channel, then abandoned: the actor will find it first.
    assert!(
        poll_once(file.segment_mut(0, 64)).await.is_none(),
        "segment_mut was served with no actor running"
    );
    // The channel is full: these wait for room, and are cancelled.
    for (name, waiting, _) in waiting_requests() {
        assert!(
            tokio::time::timeout(CANCEL, waiting(&file)).await.is_err(),
            "{name} completed with no actor running"
        );
    }
    assert!(tokio::time::timeout(CANCEL, file.resize(100))
        .await
        .is_err());
    assert!(tokio::time::timeout(CANCEL, file.try_resize(200))
        .await
        .is_err());
    tokio::spawn(actor.run());
    // A round trip: the actor has looked at everything before it.
    tokio::time::timeout(HANG, file.flush())
        .await
        .expect("the actor is wedged")
        .unwrap();
    now(
        "try_segment_mut of the whole file",
        file.try_segment_mut(0, L),
    )
    .await;
    assert_eq!(file.len(), L, "a cancelled resize was applied");
    now("try_resize(64)", file.try_resize(64)).await;
    file.close().await.unwrap();
}

/// A large load (8 MiB, copied on the blocking pool) cancelled while it
/// runs: a read of the bytes succeeds at once; an exclusive lease of them
/// is granted once the copy is done; nothing is left afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_leftovers_large_load_cancelled_while_it_runs() {
    const BIG: u64 = 8 << 20;
    let scratch = Scratch::new();
    let file = scratch.file("big", 2 * BIG).await;
    for round in 0..8u64 {
        let f = file.clone();
        let load = tokio::spawn(async move { f.load(0, BIG).await.map(drop) });
        // Somewhere in the copy (or before it, or after: all must be clean).
        tokio::time::sleep(Duration::from_micros(200 * round)).await;
        load.abort();
        let _ = load.await;
        file.try_load(0, BIG)
            .await
            .unwrap_or_else(|e| panic!("round {round}: try_load right after the cancel: {e:?}"));
        let seg = tokio::time::timeout(HANG, file.segment_mut(0, BIG))
            .await
            .unwrap_or_else(|_| {
                panic!("round {round}: the cancelled load's lease was never released")
            })
            .unwrap();
        drop(seg);
        drop(
            file.try_segment_mut(0, BIG)
                .await
                .unwrap_or_else(|e| panic!("round {round}: try_segment_mut: {e:?}")),
        );
    }
    now(
        "try_resize(4096) after the cancelled loads",
        file.try_resize(4096),
    )
    .await;
    file.close().await.unwrap();
}

/// The actor granted a lease, and the caller's future was dropped before
/// it took the grant: the lease is released, so `try_segment_mut` of the
/// bytes succeeds at once. Both for a grant made on arrival and for one made
/// to a waiting request when the lease it waited for went away.
#[tokio::test]
async fn cancel_leftovers_dropped_grants_are_released() {
    let leases: Vec<(&str, MakeWaiting)> = vec![
        ("segment", |f| {
            Box::pin(async move { f.segment(0, 64).await.map(drop) })
        }),
        ("segment_mut", |f| {
            Box::pin(async move { f.segment_mut(0, 64).await.map(drop) })
        }),
        ("atomic_u64", |f| {
            Box::pin(async move { f.atomic_u64(8).await.map(drop) })
        }),
        ("atomic_u32_slice", |f| {
            Box::pin(async move { f.atomic_u32_slice(0, 16).await.map(drop) })
        }),
    ];
    let scratch = Scratch::new();
    let file = scratch.file("grants", L).await;
    for (name, lease) in &leases {
        // Granted on arrival: the request is sent, a round trip makes sure
        // the actor served it, then the future (with the grant) is dropped.
        {
            let mut fut = lease(&file);
            // Ready at once only if the channel refused it: then it failed.
            if let Some(r) = poll_once(fut.as_mut()).await {
                panic!("{name}: answered without a round trip: {r:?}");
            }
            file.try_load(4096, 8).await.expect("round trip");
            drop(fut);
        }
        drop(
            file.try_segment_mut(0, 64)
                .await
                .unwrap_or_else(|e| panic!("{name} granted on arrival, dropped: {e:?}")),
        );

        // Granted to a waiting request once the lease it waited for went.
        let held = file.segment_mut(0, 64).await.unwrap();
        let mut fut = lease(&file);
        assert!(
            poll_once(fut.as_mut()).await.is_none(),
            "{name} was served under an exclusive lease"
        );
        drop(held);
        // A round trip for other bytes: the actor has seen the release
        // (releases are applied before later requests) and granted `fut`.
        file.try_load(4096, 8).await.expect("round trip");
        drop(fut);
        drop(
            file.try_segment_mut(0, 64)
                .await
                .unwrap_or_else(|e| panic!("{name} granted to a waiter, dropped: {e:?}")),
        );
    }
    file.close().await.unwrap();
}

/// Awaits a `try_` call that must succeed at its first attempt.
async fn now<T>(what: &str, call: impl Future<Output = Result<T>>) {
    if let Err(e) = call.await {
        panic!("{what}: {e:?}");
    }
}
