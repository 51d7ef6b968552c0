//! Cancellation and panics.
//!
//! - Tens of thousands of requests, about half of them dropped at random
//!   points (zero timeouts, `select!` losers, futures polled a few times and
//!   dropped, spawned tasks aborted): the actor is never wedged and every
//!   update acknowledged with `Ok` is in the file. Each request writes its
//!   own slot, so an acknowledged slot has exactly one right content, and an
//!   unacknowledged one is either untouched or whole.
//! - A `modify` closure that panics fails that call alone.
//! - An actor that dies fails every waiting caller promptly, and leases
//!   outlive it.

mod common;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use common::{Scratch, SplitMix};
use mmap_actor::{Error, MappedFile, INLINE_COPY_MAX};

/// Hang detector only.
const HANG: Duration = Duration::from_secs(60);

/// Polls `fut` at most `polls` times (yielding in between) and drops it if
/// it is still pending: a cancellation at an arbitrary await point.
async fn poll_then_drop<F: Future>(fut: F, polls: u32) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    for i in 0..polls {
        let step = std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
            Poll::Ready(v) => Poll::Ready(Some(v)),
            Poll::Pending => Poll::Ready(None),
        })
        .await;
        if step.is_some() {
            return step;
        }
        if i + 1 < polls {
            tokio::task::yield_now().await;
        }
    }
    None
}

/// How a request is awaited, or abandoned.
#[derive(Clone, Copy, Debug)]
enum Fate {
    /// Awaited to the end: must succeed.
    Awaited,
    /// `tokio::time::timeout(Duration::ZERO, ..)`.
    ZeroTimeout,
    /// The loser (or winner) of a `select!` against a few yields.
    Select(u32),
    /// Polled a few times, then dropped.
    Polled(u32),
    /// Spawned, then aborted after a few yields.
    Aborted(u32),
}

impl Fate {
    fn pick(rng: &mut SplitMix) -> Fate {
        let n = rng.range(1, 4) as u32;
        match rng.range(0, 10) {
            0..=2 => Fate::Awaited,
            3 | 4 => Fate::ZeroTimeout,
            5 | 6 => Fate::Select(n),
            7 | 8 => Fate::Polled(n),
            _ => Fate::Aborted(n),
        }
    }

    /// Runs `fut` to its fate: `Some(output)` if it completed, `None` if it
    /// was dropped first.
    async fn run<T: Send + 'static>(
        self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        match self {
            Fate::Awaited => Some(fut.await),
            Fate::ZeroTimeout => tokio::time::timeout(Duration::ZERO, fut).await.ok(),
            Fate::Select(yields) => {
                tokio::select! {
                    out = fut => Some(out),
                    _ = async { for _ in 0..yields { tokio::task::yield_now().await } } => None,
                }
            }
            Fate::Polled(polls) => poll_then_drop(fut, polls).await,
            Fate::Aborted(yields) => {
                let task = tokio::spawn(fut);
                for _ in 0..yields {
                    tokio::task::yield_now().await;
                }
                task.abort();
                match task.await {
                    Ok(out) => Some(out),
                    Err(e) if e.is_cancelled() => None,
                    Err(e) => panic!("a request task failed: {e}"),
                }
            }
        }
    }
}

/// Small slots, one per request: 8 bytes.
const SLOTS: u64 = 40_000;
const SLOT: u64 = 8;
/// Large slots (copied on the blocking pool), one per large request.
const BIG_SLOTS: u64 = 24;
const BIG: u64 = INLINE_COPY_MAX as u64 + 4096;
const BIG_BASE: u64 = SLOTS * SLOT;
/// Past every slot: grown and shrunk by cancelled resizes.
const TAIL: u64 = BIG_BASE + BIG_SLOTS * BIG;
const WORKERS: u64 = 8;

/// The content request `id` writes into its small slot: never zero.
fn small(id: u64) -> [u8; 8] {
    (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1).to_le_bytes()
}

/// What a worker learned: which slots were acknowledged.
#[derive(Default)]
struct Acks {
    small: Vec<u64>,
    big: Vec<u64>,
    completed: u64,
    dropped: u64,
}

async fn cancelling_worker(file: MappedFile, worker: u64, seed: u64) -> Acks {
    let mut rng = SplitMix(seed ^ (worker + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut acks = Acks::default();
    let mut id = worker;
    while id < SLOTS {
        let fate = Fate::pick(&mut rng);
        let off = id * SLOT;
        let f = file.clone();
        let what = format!("request {id} {fate:?} (seed {seed})");
        // Most requests are updates; the others are requests whose
        // cancellation must not leave anything behind (leases, a queued
        // resize, a flush).
        // The first few ids of the second thousand are large updates.
        let kind = if (1000..1000 + BIG_SLOTS).contains(&id) {
            19
        } else {
            rng.range(0, 19)
        };
        let done = match kind {
            0..=11 => {
                fate.run(async move { f.update(off, small(id).to_vec()).await })
                    .await
            }
            12 => {
                fate.run(async move {
                    let mut seg = f.segment_mut(off, SLOT).await?;
                    seg.copy_from_slice(&small(id));
                    Ok(())
                })
                .await
            }
            13 => {
                fate.run(async move {
                    f.modify(off, SLOT, move |b| b.copy_from_slice(&small(id)))
                        .await
                })
                .await
            }
            14 => {
                fate.run(async move {
                    let view = f.atomic_u64(off).await?;
                    view.store(u64::from_le_bytes(small(id)), Ordering::Relaxed);
                    Ok(())
                })
                .await
            }
            15 => {
                // Not a write: the slot stays zero whatever happens.
                let out = fate
                    .run(async move { f.segment(off, SLOT).await.map(drop) })
                    .await;
                if let Some(r) = &out {
                    assert!(r.is_ok(), "{what}: segment {r:?}");
                }
                out.map(|_| Err(Error::Closed))
            }
            16 => {
                let out = fate
                    .run(async move { f.load(off, SLOT).await.map(drop) })
                    .await;
                if let Some(r) = &out {
                    assert!(r.is_ok(), "{what}: load {r:?}");
                }
                out.map(|_| Err(Error::Closed))
            }
            17 => {
                let out = fate.run(async move { f.flush().await }).await;
                if let Some(r) = &out {
                    assert!(r.is_ok(), "{what}: flush {r:?}");
                }
                out.map(|_| Err(Error::Closed))
            }
            18 => {
                let new_len = TAIL + rng.range(0, 64 * 1024);
                let out = fate.run(async move { f.resize(new_len).await }).await;
                if let Some(r) = &out {
                    assert!(r.is_ok(), "{what}: resize {r:?}");
                }
                out.map(|_| Err(Error::Closed))
            }
            _ => {
                // A large update on the blocking pool, into a big slot of
                // its own.
                let data = SplitMix::bytes(id, BIG as usize);
                let at = BIG_BASE + (id - 1000) * BIG;
                let out = fate.run(async move { f.update(at, data).await }).await;
                match &out {
                    Some(Ok(())) => acks.big.push(id),
                    Some(Err(e)) => panic!("{what}: big update {e:?}"),
                    None => {}
                }
                out.map(|_| Err(Error::Closed))
            }
        };
        match done {
            Some(Ok(())) => {
                acks.small.push(id);
                acks.completed += 1;
            }
            // Requests that write no slot report `Err(Closed)` above.
            Some(Err(Error::Closed)) => acks.completed += 1,
            Some(Err(e)) => panic!("{what}: {e:?}"),
            None => {
                assert!(
                    !matches!(fate, Fate::Awaited),
                    "{what}: an awaited request was dropped"
                );
                acks.dropped += 1;
            }
        }
        id += WORKERS;
    }
    acks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_requests_neither_wedge_the_actor_nor_lose_acknowledged_writes() {
    let seed: u64 = std::env::var("MMAP_ACTOR_CANCEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xCA9CE1);
    let scratch = Scratch::new();
    let path = scratch.path("cancel.bin");
    let file = MappedFile::create(&path, TAIL).await.unwrap();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| tokio::spawn(cancelling_worker(file.clone(), w, seed)))
        .collect();
    let all = tokio::time::timeout(HANG, async {
        let mut all = Vec::new();
        for w in workers {
            all.push(
                w.await
                    .unwrap_or_else(|e| panic!("a worker died (seed {seed}): {e}")),
            );
        }
        all
    })
    .await
    .unwrap_or_else(|_| panic!("the workers hung: the actor is wedged (seed {seed})"));

    let completed: u64 = all.iter().map(|a| a.completed).sum();
    let dropped: u64 = all.iter().map(|a| a.dropped).sum();
    let acked: Vec<u64> = all.iter().flat_map(|a| a.small.iter().copied()).collect();
    let acked_big: Vec<u64> = all.iter().flat_map(|a| a.big.iter().copied()).collect();
    println!(
        "cancellation: seed {seed}: {} requests, {completed} completed, {dropped} dropped, {} writes acknowledged",
        completed + dropped,
        acked.len() + acked_big.len()
    );
    assert_eq!(completed + dropped, SLOTS);
    // The mix really cancels a large share of the requests.
    assert!(
        dropped * 4 > SLOTS,
        "only {dropped} of {SLOTS} requests were dropped"
    );

    tokio::time::timeout(HANG, async {
        // A resize whose future was dropped after the actor started it
        // still completes; this one is served after it, and waits for every
        // lease on the tail.
        file.resize(TAIL).await.unwrap();
        assert_eq!(file.len(), TAIL);
        // Every lease a dropped future was granted has been released: the
        // whole file can be taken exclusively (this also waits for large
        // copies still running on the blocking pool).
        drop(file.segment_mut(0, TAIL).await.unwrap());
        file.flush().await.unwrap();
        let loaded = file.load(0, SLOTS * SLOT).await.unwrap();
        check_slots(&loaded, &acked, "before close");
        file.close().await.unwrap();
    })
    .await
    .unwrap_or_else(|_| panic!("the final requests hung (seed {seed})"));

    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len() as u64, TAIL);
    check_slots(&bytes[..(SLOTS * SLOT) as usize], &acked, "after reopen");
    for id in acked_big {
        let at = (BIG_BASE + (id - 1000) * BIG) as usize;
        assert!(
            bytes[at..at + BIG as usize] == SplitMix::bytes(id, BIG as usize)[..],
            "acknowledged big update {id} is missing (seed {seed})"
        );
    }
}

/// Every acknowledged slot holds its request's bytes; every other slot is
/// zero or whole (a write is never half-applied).
fn check_slots(bytes: &[u8], acked: &[u64], when: &str) {
    let mut is_acked = vec![false; SLOTS as usize];
    for &id in acked {
        is_acked[id as usize] = true;
    }
    for id in 0..SLOTS {
        let at = (id * SLOT) as usize;
        let slot = &bytes[at..at + SLOT as usize];
        if is_acked[id as usize] {
            assert_eq!(
                slot,
                small(id),
                "{when}: acknowledged write {id} is missing"
            );
        } else {
            assert!(
                slot == small(id) || slot == [0; 8],
                "{when}: slot {id} holds {slot:?}, neither zero nor its write"
            );
        }
    }
}

/// Requests queued behind a lease and then dropped are skipped: once the
/// lease goes, a later update is the one that shows, and the actor answers.
#[tokio::test]
async fn dropped_waiting_requests_are_skipped() {
    let scratch = Scratch::new();
    let file = scratch.file("queued", 4096).await;
    let held = file.segment_mut(0, 64).await.unwrap();
    let mut rng = SplitMix(7);
    for i in 0..2000u64 {
        let f = file.clone();
        let byte = (i % 250) as u8 + 1;
        // All of these wait for `held`, so none can complete.
        let out = match rng.range(0, 4) {
            0 => tokio::time::timeout(Duration::ZERO, f.update(0, vec![byte; 64]))
                .await
                .ok(),
            1 => poll_then_drop(f.update(8, vec![byte; 8]), 2).await,
            2 => poll_then_drop(async { f.segment_mut(0, 64).await.map(drop) }, 2).await,
            _ => poll_then_drop(async { f.load(0, 64).await.map(drop) }, 1).await,
        };
        assert!(
            out.is_none(),
            "request {i} completed under an exclusive lease: {out:?}"
        );
    }
    // Writes through the lease are what the file shows, then a new update.
    let mut held = held;
    held.fill(0xAB);
    drop(held);
    tokio::time::timeout(HANG, async {
        assert_eq!(file.load(0, 64).await.unwrap()[..], [0xAB; 64]);
        file.update(0, vec![0xCD; 64]).await.unwrap();
        assert_eq!(file.load(0, 64).await.unwrap()[..], [0xCD; 64]);
        drop(file.try_segment_mut(0, 4096).await.unwrap());
        file.close().await.unwrap();
    })
    .await
    .expect("the actor is wedged after dropped waiting requests");
}

/// A shrink still waiting for a lease, whose caller gives up, is abandoned:
/// the length does not change once the lease goes.
#[tokio::test]
async fn abandoned_waiting_shrink_is_not_applied() {
    let scratch = Scratch::new();
    let file = scratch.file("shrink", 8192).await;
    let seg = file.segment(6000, 100).await.unwrap();
    let f = file.clone();
    let shrink = tokio::spawn(async move { f.resize(4096).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Semantics, not timing: it cannot have finished while `seg` lives.
    assert!(
        !shrink.is_finished(),
        "a shrink cutting a live segment completed"
    );
    shrink.abort();
    assert!(shrink.await.unwrap_err().is_cancelled());
    // Other ways of giving up on a waiting shrink.
    assert!(tokio::time::timeout(Duration::ZERO, file.resize(100))
        .await
        .is_err());
    assert!(poll_then_drop(file.resize(0), 3).await.is_none());
    drop(seg);
    tokio::time::timeout(HANG, async {
        // A round trip: the actor has seen the release and every request.
        file.flush().await.unwrap();
        assert_eq!(file.load(8000, 192).await.unwrap().len(), 192);
    })
    .await
    .expect("actor wedged");
    assert_eq!(file.len(), 8192);
    assert_eq!(
        std::fs::metadata(scratch.path("shrink")).unwrap().len(),
        8192
    );
    file.close().await.unwrap();
}

/// Marker in the panics these tests cause on purpose, so the panic hook
/// can keep them out of the output.
const DELIBERATE: &str = "deliberate panic in a modify closure";

fn quiet_deliberate_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
                .unwrap_or("");
            if !msg.contains(DELIBERATE) {
                default(info);
            }
        }));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_modify_fails_alone() {
    quiet_deliberate_panics();
    let scratch = Scratch::new();
    let file = scratch.file("panic", 64 * 1024).await;
    // Bystanders keep writing their own bytes while closures panic.
    let bystanders: Vec<_> = (0..4u64)
        .map(|b| {
            let f = file.clone();
            tokio::spawn(async move {
                for i in 0..500u64 {
                    let off = 4096 * (b + 1) + (i % 512) * 8;
                    f.update(off, i.to_le_bytes().to_vec()).await.unwrap();
                    assert_eq!(f.load(off, 8).await.unwrap()[..], i.to_le_bytes());
                }
            })
        })
        .collect();
    for round in 0..200u64 {
        let got = file
            .modify(0, 16, move |b| {
                // Bytes written before the panic stay written.
                b[0] = round as u8;
                panic!("{DELIBERATE} {round}");
            })
            .await;
        assert!(
            matches!(got, Err(Error::Panicked { op: "modify" })),
            "round {round}: {got:?}"
        );
        assert_eq!(file.load(0, 1).await.unwrap()[0], round as u8);
        // The next requests succeed, including another modify of the bytes.
        file.modify(8, 8, move |b| b.copy_from_slice(&round.to_le_bytes()))
            .await
            .unwrap();
        assert_eq!(file.load(8, 8).await.unwrap()[..], round.to_le_bytes());
        let seg = file.try_segment_mut(0, 16).await.unwrap();
        drop(seg);
    }
    tokio::time::timeout(HANG, async {
        for b in bystanders {
            b.await.expect("a bystander failed");
        }
    })
    .await
    .expect("bystanders hung");
    assert!(!file.is_closed());
    assert!(!file.is_poisoned());
    file.flush().await.unwrap();
    file.close().await.unwrap();
}

/// The actor task is aborted while requests wait behind a held lease: each
/// waiter fails promptly with `Closed` (or `Panicked`), later calls fail
/// with `Closed`, and the lease stays usable, on another thread too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_actor_fails_every_waiter() {
    let scratch = Scratch::new();
    let path = scratch.path("dead");
    let (file, actor) = MappedFile::options()
        .create(true)
        .len(4096)
        .open_unspawned(&path)
        .await
        .unwrap();
    let actor = tokio::spawn(actor.run());
    let mut held = file.segment_mut(0, 64).await.unwrap();
    let mut waiters = Vec::new();
    for i in 0..8u64 {
        let f = file.clone();
        waiters.push(tokio::spawn(async move {
            match i {
                0 => f.update(0, vec![1u8; 8]).await,
                1 => f.load(0, 8).await.map(drop),
                2 => f.segment(8, 8).await.map(drop),
                3 => f.segment_mut(0, 64).await.map(drop),
                4 => f.atomic_u64(16).await.map(drop),
                5 => f.modify(0, 8, |b| b.fill(2)).await,
                6 => f.resize(32).await,
                _ => f.update(60, vec![3u8; 8]).await,
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    for (i, w) in waiters.iter().enumerate() {
        assert!(
            !w.is_finished(),
            "waiter {i} finished under an exclusive lease"
        );
    }
    actor.abort();
    assert!(actor.await.unwrap_err().is_cancelled());

    tokio::time::timeout(HANG, async {
        for (i, w) in waiters.into_iter().enumerate() {
            let got = w.await.expect("waiter task");
            assert!(
                matches!(got, Err(Error::Closed) | Err(Error::Panicked { .. })),
                "waiter {i}: {got:?}"
            );
        }
        assert!(file.is_closed());
        for got in [
            file.update(1000, vec![1u8]).await,
            file.load(1000, 1).await.map(drop),
            file.flush().await,
            file.resize(8192).await,
            file.segment(1000, 8).await.map(drop),
            file.close().await,
        ] {
            assert!(
                matches!(got, Err(Error::Closed)),
                "after the actor died: {got:?}"
            );
        }
    })
    .await
    .expect("a caller hung on a dead actor");

    // The lease keeps its mapping: write through it, then drop it on
    // another thread.
    held.copy_from_slice(&[0x42; 64]);
    std::thread::spawn(move || drop(held)).join().unwrap();
    assert_eq!(std::fs::read(&path).unwrap()[..64], [0x42; 64]);
}

/// The actor dies with no lease and no request in flight: later calls
/// fail with `Closed`, as `is_closed()` says.
#[tokio::test]
async fn calls_after_the_actor_died_fail_with_closed() {
    let scratch = Scratch::new();
    let (file, actor) = MappedFile::options()
        .create(true)
        .len(4096)
        .open_unspawned(scratch.path("idle"))
        .await
        .unwrap();
    let actor = tokio::spawn(actor.run());
    file.update(0, vec![1u8; 8]).await.unwrap();
    actor.abort();
    assert!(actor.await.unwrap_err().is_cancelled());
    assert!(file.is_closed());
    for got in [
        file.update(0, vec![2u8; 8]).await,
        file.load(0, 8).await.map(drop),
        file.modify(0, 8, |b| b.fill(3)).await,
        file.segment(0, 8).await.map(drop),
    ] {
        assert!(
            matches!(got, Err(Error::Closed)),
            "after the actor died: {got:?}"
        );
    }
}

/// Leases outlive a closed mapping and may be used and dropped on other
/// threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_dropped_on_other_threads_after_close() {
    let scratch = Scratch::new();
    let path = scratch.path("after");
    let file = scratch.file("after", 4096).await;
    file.update(0, vec![5u8; 16]).await.unwrap();
    let seg = file.segment(0, 16).await.unwrap();
    let bytes = file.segment(0, 8).await.unwrap().into_bytes();
    let mut seg_mut = file.segment_mut(1024, 16).await.unwrap();
    let counter = Arc::new(file.atomic_u64(2048).await.unwrap());
    file.close().await.unwrap();
    assert!(file.is_closed());

    let mut threads = Vec::new();
    threads.push(std::thread::spawn(move || {
        assert_eq!(seg[..], [5u8; 16]);
        drop(seg);
    }));
    threads.push(std::thread::spawn(move || {
        assert_eq!(bytes[..], [5u8; 8]);
        let clone = bytes.clone();
        drop(bytes);
        assert_eq!(clone[..], [5u8; 8]);
    }));
    threads.push(std::thread::spawn(move || {
        seg_mut.fill(9);
        drop(seg_mut);
    }));
    for _ in 0..4 {
        let c = Arc::clone(&counter);
        threads.push(std::thread::spawn(move || {
            for _ in 0..1000 {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in threads {
        t.join().expect("a lease thread panicked");
    }
    assert_eq!(counter.load(Ordering::Relaxed), 4000);
    drop(counter);
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(on_disk[1024..1040], [9u8; 16]);
    assert_eq!(on_disk[2048..2056], 4000u64.to_le_bytes());
}

/// Flushes led by their callers (`flush` without a round trip): the first
/// flusher starts the sync, and dropping its future (or any other) never
/// leaves the others, or later flushes, waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_flush_futures_leave_no_flush_waiting() {
    let scratch = Scratch::new();
    let file = MappedFile::create(scratch.path("flushes"), 1 << 20)
        .await
        .unwrap();
    tokio::time::timeout(HANG, async {
        for round in 0..200u64 {
            file.update_from(round * 64, &round.to_le_bytes())
                .await
                .unwrap();
            let mut flushes = Vec::new();
            // Each one polled once: the first starts a sync, the others
            // queue behind it (or start their own).
            for _ in 0..6 {
                let mut f = Box::pin(file.flush());
                match poll_then_drop(f.as_mut(), 1).await {
                    None => flushes.push(f),
                    Some(done) => done.expect("a flush"),
                }
            }
            // Drop the leader, and every other one of the rest (all of
            // them every third round).
            let kept: Vec<_> = flushes
                .into_iter()
                .enumerate()
                .filter(|(i, _)| i % 2 == 1 && round % 3 != 0)
                .map(|(_, f)| f)
                .collect();
            for f in kept {
                f.await.expect("a flush queued behind a dropped one");
            }
        }
        file.flush().await.expect("a flush after them all");
        file.close().await.expect("close");
    })
    .await
    .expect("a flush hung after others were dropped");
}
