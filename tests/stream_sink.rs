//! `UpdateSink`: items applied in order in batches, flush means applied
//! (durable with one sync when asked), a failing item stops the sink with
//! exactly the items before it applied, bounded memory, leases respected,
//! cancellation, bad input.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Scratch, SplitMix};
use futures::{stream, FutureExt, SinkExt};
use mmap_actor::{Error, MappedFile, INLINE_COPY_MAX};

/// Hang detector only.
const PROMPT: Duration = Duration::from_secs(20);

async fn prompt<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PROMPT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

/// `n` seeded updates of 1..=max bytes inside a file of `len` bytes.
fn updates(seed: u64, n: usize, len: u64, max: u64) -> Vec<(u64, Bytes)> {
    let mut rng = SplitMix(seed);
    (0..n)
        .map(|_| {
            let l = rng.range(1, max + 1);
            let off = rng.range(0, len - l + 1);
            (
                off,
                Bytes::from(SplitMix::bytes(rng.next_u64(), l as usize)),
            )
        })
        .collect()
}

fn apply(model: &mut [u8], items: &[(u64, Bytes)]) {
    for (off, data) in items {
        let o = *off as usize;
        model[o..o + data.len()].copy_from_slice(data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_applies_overlapping_items_in_order() {
    let s = Scratch::new();
    let len = 256 * 1024;
    let file = s.file("f", len).await;
    // Small, overlapping items (the order decides the result), a few large
    // ones that travel alone.
    let mut items = updates(1, 20_000, len, 64);
    items.extend(updates(2, 5, len, 2 * INLINE_COPY_MAX as u64));
    items.extend(updates(3, 5_000, len, 300));
    let mut model = vec![0u8; len as usize];
    apply(&mut model, &items);
    let mut sink = file.update_sink();
    let mut source = stream::iter(items.clone().into_iter().map(Ok));
    prompt("send_all", sink.send_all(&mut source))
        .await
        .unwrap();
    // send_all ends with a flush: everything is applied now.
    assert_eq!(sink.applied(), items.len() as u64);
    assert_eq!(&file.load(0, len).await.unwrap()[..], &model[..]);
    prompt("close", sink.close()).await.unwrap();
    // A closed sink refuses more.
    assert!(matches!(
        sink.send((0, Bytes::from_static(b"x"))).await,
        Err(Error::Closed)
    ));
}

#[tokio::test]
async fn sink_send_means_applied() {
    let s = Scratch::new();
    let file = s.file("f", 4096).await;
    let mut sink = file.update_sink();
    for i in 0..100u64 {
        sink.send((i * 8, Bytes::from(i.to_le_bytes().to_vec())))
            .await
            .unwrap();
        // Visible to a load at once, from another handle too.
        let other = file.clone();
        assert_eq!(&other.load(i * 8, 8).await.unwrap()[..], &i.to_le_bytes());
    }
}

/// One failing item among many: reported with its offset and the number
/// applied; the file holds exactly the items before it, nothing after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_failing_item_stops_with_exactly_the_items_before_it() {
    let s = Scratch::new();
    let len = 64 * 1024;
    // The last cases keep several batches in flight behind the failing one.
    for (bad_at, count) in [
        (0usize, 10usize),
        (1, 2),
        (537, 3000),
        (2999, 3000),
        (30_000, 60_000),
        (59_999, 60_000),
    ] {
        let file = s.file(&format!("f{bad_at}"), len).await;
        let mut items = updates(bad_at as u64, count, len, 100);
        items[bad_at] = (len - 3, Bytes::from_static(b"past the end"));
        let mut model = vec![0u8; len as usize];
        apply(&mut model, &items[..bad_at]);
        let mut sink = file.update_sink();
        let got = prompt(
            "send_all",
            sink.send_all(&mut stream::iter(items.clone().into_iter().map(Ok))),
        )
        .await;
        match got {
            Err(Error::SinkItem {
                offset,
                applied,
                source,
            }) => {
                assert_eq!(offset, len - 3, "the failing item's offset");
                assert_eq!(applied, bad_at as u64, "the items before it");
                assert!(
                    matches!(*source, Error::OutOfBounds { offset, len: 12, file_len } if offset == len - 3 && file_len == len),
                    "cause: {source:?}"
                );
            }
            other => panic!("expected SinkItem, got {other:?}"),
        }
        assert_eq!(
            &file.load(0, len).await.unwrap()[..],
            &model[..],
            "bad item {bad_at}: the file must hold exactly the items before it"
        );
        // Closed from now on, flush and close included.
        assert!(matches!(sink.flush().await, Err(Error::Closed)));
        assert!(matches!(
            sink.send((0, Bytes::from_static(b"x"))).await,
            Err(Error::Closed)
        ));
        assert_eq!(file.load(0, 1).await.unwrap()[0], model[0]);
    }
}

/// A failure is reported by the next poll_ready too (not only by a flush).
#[tokio::test]
async fn sink_failure_is_reported_by_the_next_ready() {
    let s = Scratch::new();
    let file = s.file("f", 4096).await;
    let mut sink = file.update_sink();
    sink.feed((5000, Bytes::from_static(b"bad"))).await.unwrap();
    // `feed` does not flush; the batch goes out with the next poll_ready.
    let next = prompt("feed", sink.feed((0, Bytes::from_static(b"never applied")))).await;
    let err = match next {
        Err(err) => err,
        // The batch had not come back yet: the flush reports it.
        Ok(()) => prompt("flush", sink.flush()).await.unwrap_err(),
    };
    assert!(
        matches!(
            err,
            Error::SinkItem {
                offset: 5000,
                applied: 0,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(&file.load(0, 5).await.unwrap()[..], &[0u8; 5]);
}

#[tokio::test]
async fn sink_on_read_only_mapping_is_refused() {
    let s = Scratch::new();
    let path = s.path("ro");
    std::fs::write(&path, vec![0u8; 4096]).unwrap();
    let ro = MappedFile::open_ro(&path).await.unwrap();
    let mut sink = ro.update_sink();
    let err = sink.send((0, Bytes::from_static(b"x"))).await.unwrap_err();
    assert!(matches!(err, Error::ReadOnly { .. }), "{err:?}");
    assert!(matches!(sink.flush().await, Err(Error::Closed)));
}

/// Bad items are typed errors, never a panic: past the end, offset + len
/// overflowing u64, on a closed mapping.
#[tokio::test]
async fn sink_bad_items_are_typed_errors() {
    let s = Scratch::new();
    for (name, item) in [
        ("past the end", (4090u64, Bytes::from_static(b"0123456789"))),
        ("at u64::MAX", (u64::MAX, Bytes::from_static(b"x"))),
        (
            "overflowing",
            (u64::MAX - 2, Bytes::from_static(b"0123456789")),
        ),
        (
            "large, past the end",
            (10, Bytes::from(vec![1u8; 2 * INLINE_COPY_MAX])),
        ),
    ] {
        let file = s.file(name, 4096).await;
        let mut sink = file.update_sink();
        let err = prompt(name, sink.send(item.clone())).await.unwrap_err();
        match err {
            Error::SinkItem {
                offset,
                applied,
                source,
            } => {
                assert_eq!((offset, applied), (item.0, 0), "{name}");
                assert!(
                    matches!(*source, Error::OutOfBounds { .. }),
                    "{name}: {source:?}"
                );
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    let file = s.file("closed", 4096).await;
    file.close().await.unwrap();
    let mut sink = file.update_sink();
    let err = prompt("closed", sink.send((0, Bytes::from_static(b"x")))).await;
    assert!(
        matches!(&err, Err(Error::SinkItem { source, .. }) if matches!(**source, Error::Closed)),
        "{err:?}"
    );
}

/// While a lease holds an item's bytes, that item and every item after it
/// wait (the ones before are applied); the sink holds at most its bound and
/// then stops accepting; releasing the lease lets everything through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_waits_for_a_lease_in_order_and_stays_bounded() {
    let s = Scratch::new();
    let file = s.file("f", 1 << 20).await;
    let held = file.segment_mut(8192, 4096).await.unwrap();
    let bound = 64 * 1024;
    let tag = |i: u64| (i % 250) as u8 + 1;
    let mut sink = file.update_sink().max_in_flight(bound);
    // 0..4: free bytes; 5: under the lease; 6..: free again.
    let item = |i: u64| {
        let off = if i == 5 { 8192 } else { 100_000 + i * 16 };
        (off, Bytes::from(vec![tag(i); 16]))
    };
    let mut accepted = 0u64;
    // `feed` returns once the item is accepted; it is pending while the
    // sink holds its bound.
    while let Some(fed) = sink.feed(item(accepted)).now_or_never() {
        fed.unwrap();
        accepted += 1;
        assert!(accepted < 100_000, "the sink never pushed back");
        if accepted % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // About `bound / (16 + 40)` items are held; none past the lease applied.
    assert!(
        accepted > 100 && accepted < 2 * bound as u64 / 16,
        "{accepted}"
    );
    // A flush cannot finish while the lease is held; dropping it (the
    // timeout) loses nothing.
    let flushing = tokio::time::timeout(Duration::from_millis(200), sink.flush()).await;
    assert!(
        flushing.is_err(),
        "a flush finished with an item under a lease"
    );
    let before = file.load(100_000, 16 * 5).await.unwrap();
    for i in 0..5u64 {
        assert_eq!(
            before[(i * 16) as usize],
            tag(i),
            "item {i} before the lease"
        );
    }
    assert_eq!(
        file.load(100_000 + 6 * 16, 16).await.unwrap()[0],
        0,
        "an item after the waiting one was applied"
    );
    drop(held);
    prompt("flush", sink.flush()).await.unwrap();
    assert_eq!(sink.applied(), accepted);
    assert_eq!(file.load(8192, 1).await.unwrap()[0], 6);
    let last = accepted - 1;
    assert_eq!(
        file.load(100_000 + last * 16, 1).await.unwrap()[0],
        tag(last)
    );
}

/// Several batches in flight, the first waiting for a lease: the later
/// ones wait behind it (none of their items is applied meanwhile), then
/// everything lands in the order sent (an item written twice keeps the
/// later value).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_batches_in_flight_keep_their_order_behind_a_waiting_one() {
    let s = Scratch::new();
    let file = s.file("f", 1 << 20).await;
    let held = file.segment_mut(0, 8).await.unwrap();
    let mut sink = file.update_sink().max_in_flight(8 << 20);
    let mut items = vec![(0u64, Bytes::from_static(b"first..."))];
    // Enough for several full batches, all over the same few slots.
    for i in 0..40_000u64 {
        items.push((4096 + (i % 64) * 8, Bytes::from(i.to_le_bytes().to_vec())));
    }
    items.push((0, Bytes::from_static(b"last....")));
    let mut source = stream::iter(items.clone().into_iter().map(Ok));
    let sending =
        tokio::time::timeout(Duration::from_millis(300), sink.send_all(&mut source)).await;
    assert!(sending.is_err(), "finished under a lease");
    assert_eq!(
        &file.load(4096, 512).await.unwrap()[..],
        &[0u8; 512][..],
        "an item behind the waiting batch was applied"
    );
    drop(held);
    prompt("flush", sink.flush()).await.unwrap();
    prompt("the rest", sink.send_all(&mut source))
        .await
        .unwrap();
    assert_eq!(sink.applied(), items.len() as u64);
    let mut model = vec![0u8; 8192];
    apply(&mut model, &items);
    assert_eq!(&file.load(0, 8192).await.unwrap()[..], &model[..]);
    assert_eq!(&file.load(0, 8).await.unwrap()[..], b"last....");
}

/// An item larger than the bound is accepted once nothing else is held.
#[tokio::test]
async fn sink_item_larger_than_the_bound_goes_alone() {
    let s = Scratch::new();
    let file = s.file("f", 1 << 20).await;
    let mut sink = file.update_sink().max_in_flight(1000);
    let big = Bytes::from(vec![7u8; 300_000]);
    prompt("send", sink.send((0, Bytes::from_static(b"small"))))
        .await
        .unwrap();
    prompt("send big", sink.send((10, big.clone())))
        .await
        .unwrap();
    prompt("send", sink.send((0, Bytes::from_static(b"S"))))
        .await
        .unwrap();
    let got = file.load(0, 300_010).await.unwrap();
    assert_eq!(&got[..10], b"Small\0\0\0\0\0".as_ref());
    assert!(got[10..].iter().all(|&b| b == 7));
    assert_eq!(sink.applied(), 3);
}

/// Dropping a `send` future after its item was accepted loses nothing: the
/// sink keeps the item and applies it with the next flush. Dropping a
/// `send_all` midway likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_dropped_send_futures_lose_nothing_accepted() {
    let s = Scratch::new();
    let file = s.file("f", 1 << 20).await;
    let held = file.segment_mut(0, 16).await.unwrap();
    let mut sink = file.update_sink();
    {
        // Accepted, then pending in the flush (the lease holds the bytes).
        let mut send = Box::pin(sink.send((0, Bytes::from_static(b"kept"))));
        assert!(futures::poll!(send.as_mut()).is_pending());
    }
    drop(held);
    prompt("flush", sink.flush()).await.unwrap();
    assert_eq!(&file.load(0, 4).await.unwrap()[..], b"kept");

    // A send_all dropped midway: what it handed over to the sink is
    // applied by the next flush, in order (the one item a `send_all` future
    // may hold itself, taken from the stream but not yet handed over, goes
    // with it).
    let items: Vec<(u64, Bytes)> = (0..50_000u64)
        .map(|i| {
            (
                4096 + (i % 1000) * 8,
                Bytes::from((i + 1).to_le_bytes().to_vec()),
            )
        })
        .collect();
    let mut source = stream::iter(items.clone().into_iter().map(Ok));
    {
        let mut all = Box::pin(sink.send_all(&mut source));
        for _ in 0..3 {
            let _ = futures::poll!(all.as_mut());
            tokio::task::yield_now().await;
        }
    }
    prompt("flush", sink.flush()).await.unwrap();
    let handed = (sink.applied() - 1) as usize;
    assert!(handed > 0, "the send_all handed nothing over");
    let mut model = vec![0u8; 1 << 20];
    apply(&mut model, &items[..handed]);
    assert_eq!(
        &file.load(4096, 8000).await.unwrap()[..],
        &model[4096..12096],
        "the {handed} items handed over, applied in order"
    );
}

/// Dropping the sink with items buffered: the file holds a prefix of what
/// was sent (never a later item without the earlier ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_dropped_leaves_a_prefix() {
    let s = Scratch::new();
    for round in 0..20u64 {
        let file = s.file(&format!("f{round}"), 1 << 20).await;
        let n = 20_000u64;
        {
            let mut sink = file.update_sink().max_in_flight(16 * 1024);
            for i in 0..n {
                // Item i writes i + 1 into its own slot.
                let item = (i * 8, Bytes::from((i + 1).to_le_bytes().to_vec()));
                if sink.feed(item).now_or_never().is_none() {
                    break;
                }
            }
            if round % 2 == 0 {
                tokio::task::yield_now().await;
            }
        } // dropped with items buffered and a batch in flight
        let bytes = file.load(0, n * 8).await.unwrap();
        let present: Vec<bool> = bytes.chunks(8).map(|c| c != [0u8; 8]).collect();
        let prefix = present.iter().take_while(|&&p| p).count();
        assert!(
            present[prefix..].iter().all(|&p| !p),
            "round {round}: item {} applied after a gap at {prefix}",
            prefix + present[prefix..].iter().position(|&p| p).unwrap_or(0)
        );
    }
}

/// Small items are gathered and stored together (a run of up to sixteen);
/// items that cannot be stored that way (larger than the direct path's
/// limit, or larger than `INLINE_COPY_MAX` and sent alone) still land
/// after the small ones sent before them and before those sent after; and
/// small items still gathered are stored when the sink is dropped
/// unflushed, as they would have been at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_small_items_stored_together_keep_their_order() {
    let s = Scratch::new();
    let len = 1 << 20;
    let file = s.file("runs", len).await;
    let sizes = [8usize, 4096, 8, 5000, 8, INLINE_COPY_MAX + 1, 8];
    let (mut dropped_rounds, mut dropped_whole) = (0, 0);
    for round in 0..40u64 {
        let mut items = Vec::new();
        let mut rng = SplitMix(round);
        // Dropped unflushed (odd rounds), a sink keeps only a prefix of the
        // items it had to buffer for the actor (the gate was closed when it
        // stored them: a request's hold not yet released, say); those it
        // gathered to store itself it stores.
        let dropped = round % 2 == 1;
        for i in 0..(round as usize % 37 + 1) {
            // Every item overlaps offset 0, so a wrong order shows there.
            let size = if dropped {
                [8, 64, 4096][rng.range(0, 3) as usize]
            } else {
                sizes[rng.range(0, sizes.len() as u64) as usize]
            };
            let byte = (i % 250) as u8 + 1;
            items.push((0u64, Bytes::from(vec![byte; size])));
        }
        {
            let mut sink = file.update_sink();
            for item in items.iter().cloned() {
                prompt("feed", sink.feed(item)).await.unwrap();
            }
            if !dropped {
                prompt("flush", sink.flush()).await.unwrap();
            }
        }
        // The models of every prefix of the items, the whole last.
        let mut models = vec![vec![0u8; len as usize]];
        for item in &items {
            let mut next = models.last().unwrap().clone();
            apply(&mut next, std::slice::from_ref(item));
            models.push(next);
        }
        let bytes = file.load(0, len).await.unwrap();
        let whole = bytes[..] == models.last().unwrap()[..];
        if dropped {
            dropped_rounds += 1;
            dropped_whole += usize::from(whole);
            assert!(
                models.iter().any(|m| bytes[..] == m[..]),
                "round {round}: the file is no prefix of what was sent"
            );
        } else {
            assert!(whole, "round {round}: wrong bytes after a flush");
        }
        file.zero(0, len).await.unwrap();
    }
    // Dropping without storing the gathered items would keep everything
    // only when the count is a multiple of sixteen: 2 of the 20 rounds.
    assert!(
        dropped_whole * 2 >= dropped_rounds,
        "only {dropped_whole} of {dropped_rounds} dropped sinks kept every item"
    );
}

/// A sink's items are reported to subscriptions as updates, in order.
#[tokio::test]
async fn sink_items_are_reported_to_subscriptions() {
    use futures::StreamExt;
    let s = Scratch::new();
    let file = s.file("f", 4096).await;
    let mut changes = file.subscribe_with_data(0..100);
    let mut sink = file.update_sink();
    let items = vec![
        (0u64, Bytes::from_static(b"aa")),
        (200, Bytes::from_static(b"outside")),
        (98, Bytes::from_static(b"bbbb")),
    ];
    sink.send_all(&mut stream::iter(items.into_iter().map(Ok)))
        .await
        .unwrap();
    let a = changes.next().await.unwrap().unwrap();
    let b = changes.next().await.unwrap().unwrap();
    assert_eq!(
        (a.offset(), a.len(), &a.data().unwrap()[..]),
        (0, 2, &b"aa"[..])
    );
    assert_eq!(
        (b.offset(), b.len(), &b.data().unwrap()[..]),
        (98, 4, &b"bb"[..])
    );
    assert_eq!(
        b.seq(),
        a.seq() + 2,
        "the item outside the range took a seq"
    );
    assert_eq!(b.kind(), mmap_actor::ChangeKind::Update);
}

// ---------------------------------------------------------------------
// Durability: one fdatasync per durable flush, seen by strace.

const CHILD_ENV: &str = "MMAP_ACTOR_SINK_DIR";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child of sink_durable_flush_is_one_sync"]
async fn sink_child_durable_flushes() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let file = MappedFile::create(std::path::Path::new(&dir).join("f"), 1 << 20)
        .await
        .unwrap();
    println!("MARK created");
    let mut sink = file.update_sink().durable(true);
    for round in 0..3u64 {
        let items = updates(round, 5000, 1 << 20, 200);
        sink.send_all(&mut stream::iter(items.into_iter().map(Ok)))
            .await
            .unwrap();
    }
    // Nothing new since the last flush: no sync.
    sink.flush().await.unwrap();
    println!("DURABLE-FLUSHES 3");
    std::mem::forget(file);
}

#[test]
fn sink_durable_flush_is_one_sync() {
    if !common::have("strace") {
        return common::child::skip("sink_durable_flush_is_one_sync", "strace is not installed");
    }
    let s = Scratch::new();
    let summary = s.path("strace.txt");
    let (status, output) = common::rerun(
        "sink_child_durable_flushes",
        &[
            "strace",
            "-f",
            "-c",
            "-e",
            "trace=fdatasync,fsync,msync",
            "-o",
            summary.to_str().unwrap(),
        ],
        &[(CHILD_ENV, s.dir.path().display().to_string())],
    );
    assert!(
        status.success() && output.contains("DURABLE-FLUSHES 3"),
        "child failed: {output}"
    );
    let counts = common::strace_counts(&std::fs::read_to_string(&summary).unwrap());
    let fdatasync = counts.get("fdatasync").copied().unwrap_or(0);
    // Creation syncs the length once; each of the three send_all flushes
    // syncs once; the last flush, with nothing new, none.
    assert_eq!(fdatasync, 1 + 3, "{counts:?}");
    assert!(!counts.contains_key("msync"), "{counts:?}");
}

/// A non-durable sink issues no sync at all.
#[tokio::test]
#[ignore = "child of sink_plain_flush_is_no_sync"]
async fn sink_child_plain_flushes() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let file = MappedFile::create(std::path::Path::new(&dir).join("f"), 1 << 20)
        .await
        .unwrap();
    let mut sink = file.update_sink();
    let items = updates(9, 5000, 1 << 20, 200);
    sink.send_all(&mut stream::iter(items.into_iter().map(Ok)))
        .await
        .unwrap();
    sink.close().await.unwrap();
    println!("PLAIN-DONE");
    std::mem::forget(file);
}

#[test]
fn sink_plain_flush_is_no_sync() {
    if !common::have("strace") {
        return common::child::skip("sink_plain_flush_is_no_sync", "strace is not installed");
    }
    let s = Scratch::new();
    let summary = s.path("strace.txt");
    let (status, output) = common::rerun(
        "sink_child_plain_flushes",
        &[
            "strace",
            "-f",
            "-c",
            "-e",
            "trace=fdatasync,fsync,msync",
            "-o",
            summary.to_str().unwrap(),
        ],
        &[(CHILD_ENV, s.dir.path().display().to_string())],
    );
    assert!(
        status.success() && output.contains("PLAIN-DONE"),
        "{output}"
    );
    let counts = common::strace_counts(&std::fs::read_to_string(&summary).unwrap());
    assert_eq!(
        counts.get("fdatasync").copied().unwrap_or(0),
        1,
        "creation only: {counts:?}"
    );
}

/// A sink is `Send`, `Unpin` and `'static` (it can live in a spawned task);
/// its `send` future is `Send`.
#[test]
fn sink_auto_traits() {
    fn send_unpin_static<T: Send + Unpin + 'static>() {}
    send_unpin_static::<mmap_actor::UpdateSink>();
    fn send_future<F: std::future::Future + Send>(_: F) {}
    #[allow(dead_code, clippy::let_underscore_future)]
    fn futures(mut sink: mmap_actor::UpdateSink) {
        send_future(async move { sink.send((0, Bytes::new())).await });
    }
}

/// Items a sink stores directly (nothing of it on its way, the gate open)
/// never make it wait: `send_all` of a stream that is always ready must
/// still yield to the runtime (it spends the task's budget), so another
/// task on a current-thread runtime runs while it goes on. And the items
/// land, in order.
#[tokio::test(flavor = "current_thread")]
async fn sink_storing_directly_still_yields_to_the_runtime() {
    let s = Scratch::new();
    let file = s.file("yields", 1 << 20).await;
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let during = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let other = {
        let ticks = std::sync::Arc::clone(&ticks);
        tokio::spawn(async move {
            loop {
                ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };
    let n = 200_000u64;
    let mut items = futures::stream::iter((0..n).map(|i| {
        let at = (i * 8) % ((1 << 20) - 8);
        Ok::<_, mmap_actor::Error>((at, Bytes::copy_from_slice(&i.to_le_bytes())))
    }));
    let mut sink = file.update_sink();
    let before = ticks.load(std::sync::atomic::Ordering::Relaxed);
    sink.send_all(&mut items).await.unwrap();
    during.store(
        ticks.load(std::sync::atomic::Ordering::Relaxed) - before,
        std::sync::atomic::Ordering::Relaxed,
    );
    sink.close().await.unwrap();
    other.abort();
    assert!(
        during.load(std::sync::atomic::Ordering::Relaxed) > 10,
        "the other task ran only {} times during send_all of {n} items",
        during.load(std::sync::atomic::Ordering::Relaxed)
    );
    // The last writer of each place wins, as if applied one by one.
    let last = n - 1;
    let at = (last * 8) % ((1 << 20) - 8);
    assert_eq!(file.load(at, 8).await.unwrap()[..], last.to_le_bytes());
}

/// Items of a KiB or more into a mapping larger than any processor cache
/// are stored past the cache (non-temporal stores) wherever they are
/// stored: by the sink itself (no subscription), by the actor (one
/// subscription), or by the sink with its changes held (four): every byte
/// lands, at every alignment and length, in order with the small items
/// around them, and every change is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_items_stored_past_the_cache_land_whole() {
    use futures::StreamExt;
    let s = Scratch::new();
    // Sparse: only the pages written take space.
    let len: u64 = 1 << 30;
    for (round, subs) in [0usize, 1, 4].into_iter().enumerate() {
        let file = MappedFile::options()
            .create(true)
            .len(len)
            .preallocate(false)
            .open(s.path(&format!("big{round}")))
            .await
            .expect("create");
        let mut rng = SplitMix(77 + round as u64);
        // Disjoint slots of 8 KiB, so every item can be checked afterwards.
        let slots = len / 8192;
        let mut items = Vec::new();
        for i in 0..600u64 {
            let slot = rng.range(0, slots / 600) * 600 + i;
            let size = [1024usize, 4096, 1500, 4093, 8, 64][(i % 6) as usize];
            let skew = rng.range(0, 9);
            items.push((slot * 8192 + skew, Bytes::from(SplitMix::bytes(i, size))));
        }
        let mut counters = Vec::new();
        for _ in 0..subs {
            let mut sub = file.subscribe(..);
            counters.push(tokio::spawn(async move {
                let mut seen = 0u64;
                while let Some(change) = sub.next().await {
                    match change {
                        Ok(_) => seen += 1,
                        Err(Error::Lagged { missed }) => seen += missed,
                        Err(e) => panic!("subscription: {e}"),
                    }
                }
                seen
            }));
        }
        let mut sink = file.update_sink();
        let mut all = stream::iter(items.iter().cloned().map(Ok));
        prompt("send_all", sink.send_all(&mut all)).await.unwrap();
        assert_eq!(sink.applied(), items.len() as u64);
        drop(sink);
        for (offset, data) in &items {
            let got = file.load(*offset, data.len() as u64).await.unwrap();
            assert!(
                got == *data,
                "{subs} subscriptions: item at {offset} ({} bytes)",
                data.len()
            );
            // The bytes before it in its slot are untouched.
            let before = file
                .load(offset - offset % 8192, offset % 8192)
                .await
                .unwrap();
            assert!(before.iter().all(|&b| b == 0), "bytes before {offset}");
        }
        file.close().await.unwrap();
        for counter in counters {
            let seen = prompt("subscription end", counter).await.unwrap();
            assert_eq!(seen, items.len() as u64, "{subs} subscriptions");
        }
    }
}
