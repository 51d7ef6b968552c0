//! Subscriptions: every write path reported (and atomic views not), ranges
//! with Rust's meaning and partial overlaps reported whole, data cut to the
//! range, `seq` in the order of application, `Lagged` instead of a silent
//! gap, the end when the mapping closes, the direct path routed through the
//! actor only for watched bytes, cancellation, bad input.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::Scratch;
use futures::{FutureExt, SinkExt, StreamExt};
use mmap_actor::stream::SUBSCRIPTION_CAPACITY;
use mmap_actor::{Change, ChangeKind, Error, MappedFile, Subscription};
use tokio::io::AsyncWriteExt;

/// Hang detector only.
const PROMPT: Duration = Duration::from_secs(20);

async fn next(sub: &mut Subscription) -> Change {
    tokio::time::timeout(PROMPT, sub.next())
        .await
        .expect("a change in time")
        .expect("the stream goes on")
        .expect("a change, not an error")
}

/// Nothing more is ready now (every change was already published when the
/// call that made it returned).
fn nothing_more(sub: &mut Subscription) {
    if let Some(item) = sub.next().now_or_never() {
        panic!("unexpected item {item:?}");
    }
}

fn summary(c: &Change) -> (u64, u64, ChangeKind) {
    (c.offset(), c.len(), c.kind())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_reports_every_write_path_once() {
    let s = Scratch::new();
    let file = s.file("f", 1 << 20).await;
    let mut all = file.subscribe(..);
    use ChangeKind::*;

    // Small updates (the direct path's size) and a large one (the pool).
    file.update(0, b"small".to_vec()).await.unwrap();
    file.try_update(10, b"try".to_vec()).await.unwrap();
    file.update(100_000, vec![1u8; 200_000]).await.unwrap();
    file.modify(50, 8, |b| b.fill(9)).await.unwrap();
    // A segment written through, one only read, and one borrowed mutably
    // through chunks_mut.
    let mut seg = file.segment_mut(4096, 100).await.unwrap();
    seg[0] = 1;
    drop(seg);
    let seg = file.segment_mut(8192, 100).await.unwrap();
    assert_eq!(seg[0], 0);
    drop(seg);
    let mut chunks = file.chunks_mut(12_288..12_288 + 1024, 512);
    while let Some(mut chunk) = chunks.next().await.map(Result::unwrap) {
        chunk.fill(3);
    }
    // An atomic view: shared memory, not reported.
    let counter = file.atomic_u64(16_384).await.unwrap();
    counter.fetch_add(1, Ordering::SeqCst);
    drop(counter);
    // A sink, a writer, an appender, resizes.
    let mut sink = file.update_sink();
    sink.send((20_000, Bytes::from_static(b"sink")))
        .await
        .unwrap();
    let mut writer = file.writer(30_000);
    writer.write_all(b"writer").await.unwrap();
    writer.flush().await.unwrap();
    let log = file.appender(40_000);
    log.append(b"record".to_vec()).await.unwrap();
    // Borrowed slices, vectored parts and zeros, small and large (the
    // large ones are copied by this task under a temporary lease).
    file.update_from(50_000, b"from").await.unwrap();
    file.update_vectored(51_000, &[b"ab", b"cd"]).await.unwrap();
    file.zero(52_000, 16).await.unwrap();
    file.update_from(600_000, &[7u8; 100_000]).await.unwrap();
    file.zero(300_000, 100_000).await.unwrap();
    // A grow, a grow that is a no-op (nothing to report), a shrink.
    file.grow_to(2 << 20).await.unwrap();
    file.grow_to(1 << 20).await.unwrap();
    file.resize(1 << 20).await.unwrap();

    let expected = [
        (0, 5, Update),
        (10, 3, Update),
        (100_000, 200_000, Update),
        (50, 8, Modify),
        (4096, 100, SegmentMut),
        (12_288, 512, SegmentMut),
        (12_800, 512, SegmentMut),
        (20_000, 4, Update),
        (30_000, 6, Update),
        (40_000, 6, Append),
        (50_000, 4, Update),
        (51_000, 4, Update),
        (52_000, 16, Update),
        (600_000, 100_000, Update),
        (300_000, 100_000, Update),
        (
            1 << 20,
            1 << 20,
            Resize {
                old_len: 1 << 20,
                new_len: 2 << 20,
            },
        ),
        (
            1 << 20,
            1 << 20,
            Resize {
                old_len: 2 << 20,
                new_len: 1 << 20,
            },
        ),
    ];
    let mut last_seq = None;
    for want in expected {
        let got = next(&mut all).await;
        assert_eq!(summary(&got), want);
        assert!(last_seq < Some(got.seq()), "seq must increase");
        assert!(got.data().is_none(), "a plain subscription carries no data");
        last_seq = Some(got.seq());
    }
    nothing_more(&mut all);
}

#[tokio::test]
async fn subscribe_ranges_have_slice_meaning_and_partial_overlaps_are_whole() {
    let s = Scratch::new();
    let file = s.file("f", 100_000).await;
    let mut a = file.subscribe(1000..2000);
    let mut b = file.subscribe(1000..=2000);
    let mut c = file.subscribe(99_000..);
    file.update(1990, vec![1u8; 10]).await.unwrap(); // inside both
    file.update(2000, vec![2u8; 5]).await.unwrap(); // only ..=2000
    file.update(500, vec![3u8; 501]).await.unwrap(); // ends at 1001: partly in
    file.update(500, vec![4u8; 500]).await.unwrap(); // ends at 1000: outside
    file.update(99_999, vec![5u8; 1]).await.unwrap();
    assert_eq!(summary(&next(&mut a).await).0, 1990);
    assert_eq!(summary(&next(&mut a).await), (500, 501, ChangeKind::Update));
    nothing_more(&mut a);
    assert_eq!(summary(&next(&mut b).await).0, 1990);
    assert_eq!(summary(&next(&mut b).await).0, 2000);
    assert_eq!(summary(&next(&mut b).await).0, 500);
    nothing_more(&mut b);
    assert_eq!(summary(&next(&mut c).await).0, 99_999);
    nothing_more(&mut c);
}

#[tokio::test]
async fn subscribe_with_data_cuts_each_write_to_the_range() {
    let s = Scratch::new();
    let file = s.file("f", 1 << 20).await;
    let mut sub = file.subscribe_with_data(100..200);
    let ramp: Vec<u8> = (0..=255).collect();
    file.update(50, ramp.clone()).await.unwrap(); // covers the whole range
    file.modify(190, 20, |b| b.fill(7)).await.unwrap();
    let mut seg = file.segment_mut(0, 150).await.unwrap();
    seg.fill(8);
    drop(seg);
    file.update(0, vec![9u8; 300_000]).await.unwrap(); // on the pool

    let c = next(&mut sub).await;
    assert_eq!((c.offset(), c.len()), (50, 256));
    assert_eq!(c.data_offset(), Some(100));
    assert_eq!(&c.data().unwrap()[..], &ramp[50..150]);
    let c = next(&mut sub).await;
    assert_eq!((c.kind(), c.data_offset()), (ChangeKind::Modify, Some(190)));
    assert_eq!(&c.data().unwrap()[..], &[7u8; 10]);
    let c = next(&mut sub).await;
    assert_eq!(
        (c.kind(), c.data_offset()),
        (ChangeKind::SegmentMut, Some(100))
    );
    assert_eq!(&c.data().unwrap()[..], &[8u8; 50]);
    let c = next(&mut sub).await;
    assert_eq!(c.len(), 300_000);
    assert_eq!(&c.data().unwrap()[..], &[9u8; 100][..]);
    nothing_more(&mut sub);
}

/// A subscriber that does not read gets one `Lagged` with the count of
/// dropped changes, then the oldest change still held; nothing is silently
/// skipped, and a quiet range's subscription does not lag.
#[tokio::test]
async fn subscribe_lagging_subscriber_gets_lagged_then_goes_on() {
    let s = Scratch::new();
    let file = s.file("f", 1 << 20).await;
    let mut busy = file.subscribe(0..4096);
    let mut quiet = file.subscribe(8192..8200);
    let total = SUBSCRIPTION_CAPACITY as u64 * 3 + 17;
    for i in 0..total {
        file.update(i % 4000, i.to_le_bytes().to_vec())
            .await
            .unwrap();
    }
    file.update(8192, b"quiet".to_vec()).await.unwrap();
    let mut received = 0u64;
    let mut missed_total = 0u64;
    let mut lagged = 0;
    let mut last_seq = None;
    while let Some(item) = busy.next().now_or_never().flatten() {
        match item {
            Ok(c) => {
                assert!(last_seq < Some(c.seq()));
                last_seq = Some(c.seq());
                received += 1;
            }
            Err(Error::Lagged { missed }) => {
                lagged += 1;
                missed_total += missed;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(lagged, 1, "one Lagged item for one overflow");
    assert_eq!(
        received + missed_total,
        total,
        "every change seen or counted"
    );
    assert!(received >= SUBSCRIPTION_CAPACITY as u64);
    let q = next(&mut quiet).await;
    assert_eq!(q.offset(), 8192);
    assert_eq!(q.seq(), total, "seqs count every reported change");
}

/// The stream ends once the mapping is closed, after what it holds; a
/// subscription made on a closed mapping is an error item, then the end.
#[tokio::test]
async fn subscribe_ends_when_the_mapping_closes() {
    let s = Scratch::new();
    let file = s.file("f", 4096).await;
    let mut sub = file.subscribe(..);
    file.update(0, b"last".to_vec()).await.unwrap();
    file.close().await.unwrap();
    assert_eq!(
        next(&mut sub).await.offset(),
        0,
        "held changes are yielded first"
    );
    assert!(sub.next().await.is_none());
    assert!(sub.next().await.is_none(), "fused");
    let mut late = file.subscribe(..);
    assert!(matches!(late.next().await, Some(Err(Error::Closed))));
    assert!(late.next().await.is_none());

    // All handles dropped: the open ends, and so does the stream.
    let file = s.file("g", 4096).await;
    let mut sub = file.subscribe(..);
    drop(file);
    let end = tokio::time::timeout(PROMPT, sub.next())
        .await
        .expect("the end in time");
    assert!(end.is_none());

    // The actor task dropped: likewise.
    let (file, actor) = MappedFile::options()
        .create(true)
        .len(4096)
        .open_unspawned(s.path("h"))
        .await
        .unwrap();
    let mut sub = file.subscribe(..);
    let task = tokio::spawn(actor.run());
    file.update(0, vec![1u8; 8000].into_iter().take(8).collect::<Vec<_>>())
        .await
        .unwrap();
    task.abort();
    let _ = task.await;
    let mut items = Vec::new();
    while let Some(item) = tokio::time::timeout(PROMPT, sub.next())
        .await
        .expect("no hang")
    {
        items.push(item.unwrap());
    }
    assert!(items.len() <= 1);
}

#[tokio::test]
#[allow(clippy::reversed_empty_ranges)] // on purpose
async fn subscribe_bad_ranges_are_one_error_item() {
    let s = Scratch::new();
    let file = s.file("f", 4096).await;
    let cases: Vec<(&str, Subscription)> = vec![
        ("reversed", file.subscribe(10..5)),
        ("empty", file.subscribe(10..10)),
        ("past the end", file.subscribe(4000..5000)),
        ("start past the end", file.subscribe(5000..)),
        ("overflowing", file.subscribe(0..=u64::MAX)),
        ("empty, with data", file.subscribe_with_data(4096..)),
    ];
    for (name, mut sub) in cases {
        let first = sub.next().await;
        let ok = matches!(
            (&first, name),
            (
                Some(Err(Error::ReversedRange { start: 10, end: 5 })),
                "reversed"
            ) | (
                Some(Err(Error::InvalidArgument { .. })),
                "empty" | "empty, with data"
            ) | (Some(Err(Error::OutOfBounds { .. })), _)
        );
        assert!(ok, "{name}: {first:?}");
        assert!(sub.next().await.is_none(), "{name}: ends after its error");
    }
    // Bad subscriptions cost the direct path nothing.
    let mut good = file.subscribe(0..1);
    file.update(100, b"x".to_vec()).await.unwrap();
    nothing_more(&mut good);
}

/// A dropped `next()` future loses nothing.
#[tokio::test]
async fn subscribe_dropped_next_loses_nothing() {
    let s = Scratch::new();
    let file = s.file("f", 4096).await;
    let mut sub = file.subscribe(..);
    {
        let pending = sub.next();
        assert!(pending.now_or_never().is_none());
    }
    file.update(7, b"x".to_vec()).await.unwrap();
    {
        // Dropped after the change was published, before it was polled.
        let _unpolled = sub.next();
    }
    assert_eq!(next(&mut sub).await.offset(), 7);
}

/// The direct path: with the actor not running, an update that goes
/// direct completes, one routed through the actor waits. While a
/// subscription covers some bytes, updates of those bytes go through the
/// actor (and are reported); updates elsewhere stay direct; once the
/// subscription is dropped, they go direct again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_routes_only_watched_direct_updates_through_the_actor() {
    let s = Scratch::new();
    let (file, actor) = MappedFile::options()
        .create(true)
        .len(1 << 20)
        .open_unspawned(s.path("f"))
        .await
        .unwrap();
    let direct = |file: &MappedFile, offset: u64| {
        let file = file.clone();
        async move { file.update(offset, b"12345678".to_vec()).now_or_never() }
    };
    assert!(direct(&file, 0).await.is_some(), "no subscription: direct");
    let mut sub = file.subscribe(4096..8192);
    assert!(
        direct(&file, 0).await.is_some(),
        "outside the range: direct"
    );
    assert!(
        direct(&file, 100_000).await.is_some(),
        "outside the range: direct"
    );
    // Inside (and straddling) the range: waits for the actor.
    let inside = tokio::spawn({
        let file = file.clone();
        async move { file.update(4090, b"12345678".to_vec()).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!inside.is_finished(), "a watched update went direct");
    let running = tokio::spawn(actor.run());
    inside.await.unwrap().unwrap();
    let c = next(&mut sub).await;
    assert_eq!((c.offset(), c.len()), (4090, 8));
    nothing_more(&mut sub);
    drop(sub);
    file.close().await.unwrap();
    running.await.unwrap();

    // After the subscription is gone, direct again (a fresh unspawned open).
    let (file, actor) = MappedFile::options()
        .open_unspawned(s.path("f"))
        .await
        .unwrap();
    let sub = file.subscribe(4096..8192);
    drop(sub);
    assert!(
        direct(&file, 5000).await.is_some(),
        "unsubscribed: direct again"
    );
    drop(file);
    actor.run().await;
}

/// The documented race: an update that starts after `subscribe` returned
/// is reported, even while other tasks hammer the direct path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_race_updates_after_subscribe_are_reported() {
    let s = Scratch::new();
    let file = s.file("f", 1 << 20).await;
    for round in 0..50u64 {
        let noise = tokio::spawn({
            let file = file.clone();
            async move {
                for i in 0..200u64 {
                    file.update(8192 + (i % 100) * 64, vec![1u8; 64])
                        .await
                        .unwrap();
                }
            }
        });
        let mut sub = file.subscribe(0..4096);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let writer = tokio::spawn({
            let file = file.clone();
            async move {
                rx.await.unwrap();
                for i in 0..20u64 {
                    file.update(i * 8, round.to_le_bytes().to_vec())
                        .await
                        .unwrap();
                }
            }
        });
        tx.send(()).unwrap();
        writer.await.unwrap();
        for i in 0..20u64 {
            assert_eq!(next(&mut sub).await.offset(), i * 8, "round {round}");
        }
        nothing_more(&mut sub);
        noise.await.unwrap();
    }
}

/// The documented race between a `SegmentMut` and an update of the same
/// bytes: the update waits for the lease, so the segment's change (made
/// first) has the smaller seq, and the data each reports is what it wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_race_segment_then_update_keep_their_order() {
    let s = Scratch::new();
    let file = s.file("f", 4096).await;
    let mut sub = file.subscribe_with_data(0..16);
    for round in 0..50u8 {
        let mut seg = file.segment_mut(0, 16).await.unwrap();
        let update = tokio::spawn({
            let file = file.clone();
            async move { file.update(0, vec![round ^ 0xFF; 16]).await }
        });
        tokio::task::yield_now().await;
        seg.fill(round);
        drop(seg);
        update.await.unwrap().unwrap();
        let a = next(&mut sub).await;
        let b = next(&mut sub).await;
        assert_eq!(a.kind(), ChangeKind::SegmentMut);
        assert_eq!(&a.data().unwrap()[..], &[round; 16]);
        assert_eq!(b.kind(), ChangeKind::Update);
        assert_eq!(&b.data().unwrap()[..], &[round ^ 0xFF; 16]);
        assert!(a.seq() < b.seq());
    }
}

/// A resize is reported to every subscription, whatever its range.
#[tokio::test]
async fn subscribe_resizes_reach_every_subscription() {
    let s = Scratch::new();
    let file = s.file("f", 8192).await;
    let mut low = file.subscribe(0..10);
    let mut high = file.subscribe(8000..8192);
    file.resize(4096).await.unwrap();
    for sub in [&mut low, &mut high] {
        let c = next(sub).await;
        assert_eq!(
            summary(&c),
            (
                4096,
                4096,
                ChangeKind::Resize {
                    old_len: 8192,
                    new_len: 4096
                }
            )
        );
    }
    // The high subscription's bytes are gone; it goes on (a grow back).
    file.resize(8192).await.unwrap();
    assert!(matches!(
        next(&mut high).await.kind(),
        ChangeKind::Resize { new_len: 8192, .. }
    ));
}

/// Subscriptions are `Send` and live on other tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_from_many_tasks() {
    let s = Scratch::new();
    let file = s.file("f", 1 << 16).await;
    let mut readers = Vec::new();
    for _ in 0..16 {
        let mut sub = file.subscribe(..);
        readers.push(tokio::spawn(async move {
            let mut n = 0;
            while let Some(item) = sub.next().await {
                match item {
                    Ok(_) => n += 1,
                    Err(Error::Lagged { missed }) => n += missed,
                    Err(e) => panic!("{e:?}"),
                }
                if n == 500 {
                    break;
                }
            }
            n
        }));
    }
    let mut sink = file.update_sink();
    let items = (0..500u64).map(|i| Ok((i * 64, Bytes::from(vec![1u8; 64]))));
    sink.send_all(&mut futures::stream::iter(items))
        .await
        .unwrap();
    for r in readers {
        assert_eq!(tokio::time::timeout(PROMPT, r).await.unwrap().unwrap(), 500);
    }
}

/// `Subscription` is `Send + Sync + Unpin + 'static`; `Change` is
/// `Send + Sync + Clone`.
#[test]
fn subscribe_auto_traits() {
    fn send_sync_unpin_static<T: Send + Sync + Unpin + 'static>() {}
    send_sync_unpin_static::<Subscription>();
    fn send_sync_clone<T: Send + Sync + Clone>() {}
    send_sync_clone::<Change>();
    send_sync_clone::<ChangeKind>();
}

/// With four or more subscriptions a sink stores and publishes watched
/// items itself. Two sinks race over the same offsets while five
/// subscriptions (one with data) watch: every subscription sees every
/// change in increasing `seq`, and for each offset the bytes of the last
/// change the data subscription saw are the bytes in the file (a write
/// and its publication are one step, so changes to the same bytes are
/// published in the order they were written).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_sinks_publishing_themselves_keep_the_order_of_writes() {
    let s = Scratch::new();
    let file = MappedFile::create(s.path("race"), SLOTS * 1024)
        .await
        .unwrap();
    // A race is short: many rounds; small items are gathered and stored a
    // batch at a time, items of 1 KiB and more stored at once, their
    // changes held.
    for round in 0..30 {
        race_two_sinks(&file, round, 64).await;
        race_two_sinks(&file, round, 1024).await;
    }
    file.close().await.unwrap();
}

const SLOTS: u64 = 64;

async fn race_two_sinks(file: &MappedFile, round: u64, item: usize) {
    // Both sinks' changes fit in a subscription: read after the race,
    // nothing lags.
    const ITEMS: u64 = SUBSCRIPTION_CAPACITY as u64 / 2 - 8;
    let mut data_sub = file.subscribe_with_data(..);
    let mut plain: Vec<_> = (0..4).map(|_| file.subscribe(..)).collect();
    let writers: Vec<_> = (0..2u8)
        .map(|w| {
            let file = file.clone();
            tokio::spawn(async move {
                let mut sink = file.update_sink();
                let mut items = futures::stream::iter((0..ITEMS).map(move |i| {
                    let slot = (i * 7 + u64::from(w) * 13 + round) % SLOTS;
                    let mut bytes = vec![w + 1; item];
                    bytes[..8].copy_from_slice(&(round << 32 | i).to_le_bytes());
                    Ok((slot * item as u64, Bytes::from(bytes)))
                }));
                sink.send_all(&mut items).await.unwrap();
                sink.close().await.unwrap();
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let mut last: Vec<Option<Bytes>> = vec![None; SLOTS as usize];
    let mut prev_seq = None;
    for _ in 0..2 * ITEMS {
        let c = next(&mut data_sub).await;
        assert!(prev_seq < Some(c.seq()), "seq must increase");
        prev_seq = Some(c.seq());
        let bytes = c.data().expect("the changed bytes");
        assert_eq!((c.data_offset(), bytes.len()), (Some(c.offset()), item));
        last[(c.offset() / item as u64) as usize] = Some(bytes.clone());
    }
    for sub in &mut plain {
        let mut prev = None;
        for _ in 0..2 * ITEMS {
            let c = next(sub).await;
            assert!(prev < Some(c.seq()));
            prev = Some(c.seq());
        }
        nothing_more(sub);
    }
    nothing_more(&mut data_sub);
    let content = file.load(0, SLOTS * item as u64).await.unwrap();
    for (slot, seen) in last.iter().enumerate() {
        let bytes = seen.as_ref().expect("every slot was written");
        assert_eq!(
            &content[slot * item..(slot + 1) * item],
            &bytes[..],
            "round {round}, slot {slot}: the file must hold the last change reported"
        );
    }
}

/// A sink publishing itself stops at an item it cannot apply: the items
/// before it are applied and reported, the error names its offset, and
/// nothing after it is applied or reported.
#[tokio::test]
async fn subscribe_sink_publishing_itself_stops_at_a_failing_item() {
    let s = Scratch::new();
    let file = MappedFile::create(s.path("fail"), 4096).await.unwrap();
    let mut subs: Vec<_> = (0..4).map(|_| file.subscribe(..)).collect();
    let mut sink = file.update_sink();
    let mut items = futures::stream::iter((0..100u64).map(|i| {
        // Item 60 is past the end.
        let offset = if i == 60 { 8192 } else { i * 32 % 4096 };
        Ok((offset, Bytes::from(vec![i as u8 + 1; 32])))
    }));
    let err = sink.send_all(&mut items).await.unwrap_err();
    match err {
        Error::SinkItem {
            offset, applied, ..
        } => assert_eq!((offset, applied), (8192, 60)),
        other => panic!("expected SinkItem, got {other:?}"),
    }
    drop(sink);
    for sub in &mut subs {
        for i in 0..60u64 {
            assert_eq!(next(sub).await.offset(), i * 32 % 4096);
        }
        nothing_more(sub);
    }
    let content = file.load(0, 4096).await.unwrap();
    assert_eq!(content[59 * 32], 60, "item 59 applied");
    assert_eq!(content[61 * 32], 0, "item 61 not applied");
    file.close().await.unwrap();
}

/// A sink watched by four or more subscriptions stores items of 1 KiB and
/// more at once and holds their changes until it flushes (or is dropped):
/// every subscription that existed when an item was stored gets its change,
/// and one made later never does.
#[tokio::test]
async fn subscribe_held_changes_reach_the_subscriptions_made_before_them() {
    let s = Scratch::new();
    let file = MappedFile::create(s.path("held"), 1 << 20).await.unwrap();
    let mut early: Vec<_> = (0..4).map(|_| file.subscribe(..)).collect();
    let mut sink = file.update_sink();
    for i in 0..10u64 {
        sink.feed((i * 4096, Bytes::from(vec![1u8; 2048])))
            .await
            .unwrap();
    }
    // Stored already (a load sees them), before any flush.
    assert_eq!(file.load(9 * 4096, 1).await.unwrap()[0], 1);
    let mut late = file.subscribe(..);
    sink.flush().await.unwrap();
    for sub in &mut early {
        for i in 0..10u64 {
            assert_eq!(
                summary(&next(sub).await),
                (i * 4096, 2048, ChangeKind::Update)
            );
        }
        nothing_more(sub);
    }
    nothing_more(&mut late);
    for i in 10..13u64 {
        sink.feed((i * 4096, Bytes::from(vec![2u8; 1024])))
            .await
            .unwrap();
    }
    drop(sink);
    for sub in early.iter_mut().chain([&mut late]) {
        for i in 10..13u64 {
            assert_eq!(next(sub).await.offset(), i * 4096);
        }
        nothing_more(sub);
    }
    file.close().await.unwrap();
}
