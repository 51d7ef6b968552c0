//! `chunks` and `chunks_mut`: what they yield for every kind of range, the
//! bad-input table (one error item, then the end), one lease at a time,
//! failures mid-stream and cancellation.

mod common;

use std::ops::Bound;
use std::time::Duration;

use futures::stream::{FusedStream, Stream, StreamExt};
use mmap_actor::{Chunks, ChunksMut, Error, MappedFile, Segment};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use common::Scratch;

/// Longer than any of these streams needs: only a hang trips it.
const HANG: Duration = Duration::from_secs(10);

/// More items than any stream here yields: an endless stream trips it.
const TOO_MANY: usize = 100_000;

fn pattern(len: u64) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// A read-write file of `len` bytes, byte `i` being `i % 251`.
async fn patterned(scratch: &Scratch, name: &str, len: u64) -> MappedFile {
    let file = scratch.file(name, len).await;
    file.update(0, pattern(len)).await.expect("fill");
    file
}

/// Every item of `stream` up to its end, failing on a hang or on an
/// endless stream; then checks that it stays ended.
async fn drain<S, T>(mut stream: S) -> Vec<Result<T, Error>>
where
    S: Stream<Item = Result<T, Error>> + FusedStream + Unpin,
{
    let items = tokio::time::timeout(HANG, async {
        let mut items = Vec::new();
        while let Some(item) = stream.next().await {
            items.push(item);
            assert!(items.len() < TOO_MANY, "the stream does not end");
        }
        items
    })
    .await
    .expect("the stream hangs");
    assert!(stream.is_terminated());
    assert!(
        stream.next().await.is_none(),
        "an ended stream yields again"
    );
    items
}

/// `(offset, bytes)` of each chunk, or the first error.
fn contents(items: Vec<Result<Segment, Error>>) -> Result<Vec<(u64, Vec<u8>)>, Error> {
    items
        .into_iter()
        .map(|item| item.map(|seg| (seg.offset(), seg.to_vec())))
        .collect()
}

#[test]
fn streams_are_send_unpin_and_fused() {
    fn check<T: Send + Unpin + FusedStream + 'static>() {}
    check::<Chunks>();
    check::<ChunksMut>();
}

#[tokio::test]
async fn chunks_concatenate_to_the_range() {
    let scratch = Scratch::new();
    let len = 10_000;
    let file = patterned(&scratch, "f", len).await;
    let data = pattern(len);
    for (start, end, chunk_len) in [
        (0, len, 4096),
        (0, len, 1),
        (1, len - 1, 333),
        (4096, 8192, 4096),
        (0, len, len),
        (0, len, u64::MAX),
        (9_999, len, 7),
    ] {
        let chunks = contents(drain(file.chunks(start..end, chunk_len)).await).unwrap();
        let joined: Vec<u8> = chunks.iter().flat_map(|(_, b)| b.clone()).collect();
        assert_eq!(
            joined,
            &data[start as usize..end as usize],
            "{start}..{end} by {chunk_len}"
        );
        let expected = (end - start).div_ceil(chunk_len) as usize;
        assert_eq!(chunks.len(), expected, "{start}..{end} by {chunk_len}");
        let mut at = start;
        for (i, (offset, bytes)) in chunks.iter().enumerate() {
            assert_eq!(*offset, at);
            if i + 1 < chunks.len() {
                assert_eq!(bytes.len() as u64, chunk_len);
            } else {
                assert!(bytes.len() as u64 <= chunk_len && !bytes.is_empty());
            }
            at += bytes.len() as u64;
        }
    }
}

#[tokio::test]
async fn every_kind_of_range_bound() {
    let scratch = Scratch::new();
    let len = 1000;
    let file = patterned(&scratch, "f", len).await;
    let data = pattern(len);
    let spans = |items| -> Vec<(u64, usize)> {
        contents(items)
            .unwrap()
            .into_iter()
            .map(|(o, b)| (o, b.len()))
            .collect()
    };
    assert_eq!(
        spans(drain(file.chunks(.., 400)).await),
        [(0, 400), (400, 400), (800, 200)]
    );
    assert_eq!(spans(drain(file.chunks(0..=399, 400)).await), [(0, 400)]);
    assert_eq!(
        spans(drain(file.chunks(0..=400, 400)).await),
        [(0, 400), (400, 1)]
    );
    assert_eq!(
        spans(drain(file.chunks(900.., 64)).await),
        [(900, 64), (964, 36)]
    );
    assert_eq!(
        spans(drain(file.chunks(..10, 4)).await),
        [(0, 4), (4, 4), (8, 2)]
    );
    assert_eq!(spans(drain(file.chunks(..=9, 5)).await), [(0, 5), (5, 5)]);
    assert_eq!(
        spans(drain(file.chunks((Bound::Excluded(9), Bound::Included(19)), 10)).await),
        [(10, 10)]
    );
    assert_eq!(spans(drain(file.chunks(0..=999, 1000)).await), [(0, 1000)]);
    // The whole file as of the call: a later grow does not extend it.
    let whole = file.chunks(.., 600);
    file.resize(5000).await.unwrap();
    assert_eq!(spans(drain(whole).await), [(0, 600), (600, 400)]);
    let all = contents(drain(file.chunks(..1000, 7)).await).unwrap();
    let joined: Vec<u8> = all.into_iter().flat_map(|(_, b)| b).collect();
    assert_eq!(joined, data);
}

/// The stream's items for `(start, end, chunk_len)` over `data`, as
/// `(offset, len)`, or `None` where it must yield one error item.
fn model(
    start: Bound<u64>,
    end: Bound<u64>,
    chunk_len: u64,
    file_len: u64,
) -> Option<Vec<(u64, u64)>> {
    let start = match start {
        Bound::Included(s) => u128::from(s),
        Bound::Excluded(s) => u128::from(s) + 1,
        Bound::Unbounded => 0,
    };
    let end = match end {
        Bound::Included(e) => u128::from(e) + 1,
        Bound::Excluded(e) => u128::from(e),
        Bound::Unbounded => u128::from(file_len).max(start),
    };
    if chunk_len == 0 || start > end || end > u128::from(file_len) {
        return None;
    }
    let (start, end) = (start as u64, end as u64);
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let n = chunk_len.min(end - at);
        out.push((at, n));
        at += n;
    }
    Some(out)
}

fn bound(max: u64) -> impl Strategy<Value = Bound<u64>> {
    prop_oneof![
        (0..=max).prop_map(Bound::Included),
        (0..=max).prop_map(Bound::Excluded),
        Just(Bound::Unbounded),
        Just(Bound::Included(u64::MAX)),
        Just(Bound::Excluded(u64::MAX)),
    ]
}

/// A model-based test: for random bounds of every kind and random chunk
/// lengths, the shared and the exclusive stream yield the model's chunks,
/// with the file's bytes, or exactly one error.
#[test]
fn chunks_match_a_vec_model() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let scratch = Scratch::new();
    let len = 3000u64;
    let file = rt.block_on(patterned(&scratch, "f", len));
    let data = pattern(len);
    let mut runner = TestRunner::new(Config {
        cases: 400,
        ..Config::default()
    });
    let strategy = (bound(len + 20), bound(len + 20), 0..=len + 5);
    runner
        .run(&strategy, |(start, end, chunk_len)| {
            let expected = model(start, end, chunk_len, len);
            // Copied out, so that no shared chunk is alive (and held) while
            // the exclusive stream asks for the same bytes.
            let (shared, exclusive) = rt.block_on(async {
                let shared = contents(drain(file.chunks((start, end), chunk_len)).await);
                let exclusive = drain(file.chunks_mut((start, end), chunk_len)).await;
                (shared, exclusive)
            });
            match expected {
                None => {
                    prop_assert!(shared.is_err());
                    prop_assert_eq!(exclusive.len(), 1);
                    prop_assert!(exclusive[0].is_err());
                }
                Some(expected) => {
                    let got = shared.expect("no error item");
                    let spans: Vec<(u64, u64)> =
                        got.iter().map(|(o, b)| (*o, b.len() as u64)).collect();
                    prop_assert_eq!(&spans, &expected);
                    for (offset, bytes) in &got {
                        let at = *offset as usize;
                        prop_assert_eq!(&bytes[..], &data[at..at + bytes.len()]);
                    }
                    let spans: Vec<(u64, u64)> = exclusive
                        .into_iter()
                        .map(|item| {
                            let seg = item.expect("no error item");
                            (seg.offset(), seg.len() as u64)
                        })
                        .collect();
                    prop_assert_eq!(&spans, &expected);
                }
            }
            Ok(())
        })
        .unwrap();
}

/// A range of any kind, as `chunks` takes it.
type Range = (Bound<u64>, Bound<u64>);

/// What one bad input must yield: its one error.
fn check_error(what: &str, err: &Error, len: u64) {
    match what {
        "chunk_len 0" | "chunk_len 0, empty range" => {
            assert!(
                matches!(err, Error::InvalidArgument { .. }),
                "{what}: {err:?}"
            )
        }
        "reversed" => assert!(
            matches!(err, Error::ReversedRange { start: 10, end: 5 }),
            "{what}: {err:?}"
        ),
        "reversed inclusive" => assert!(
            matches!(err, Error::ReversedRange { start: 10, end: 5 }),
            "{what}: {err:?}"
        ),
        "past the end" => assert!(
            matches!(err, Error::OutOfBounds { offset: 0, len: l, file_len } if *l == len + 1 && *file_len == len),
            "{what}: {err:?}"
        ),
        "starts past the end" | "empty past the end" => assert!(
            matches!(err, Error::OutOfBounds { offset, len: 0, file_len } if *offset == len + 5 && *file_len == len),
            "{what}: {err:?}"
        ),
        "overflowing end" => assert!(
            matches!(
                err,
                Error::OutOfBounds {
                    offset: 0,
                    len: u64::MAX,
                    ..
                }
            ),
            "{what}: {err:?}"
        ),
        "overflowing end from 10" => assert!(
            matches!(err, Error::OutOfBounds { offset: 10, len: l, .. } if *l == u64::MAX - 9),
            "{what}: {err:?}"
        ),
        "overflowing start" => assert!(
            matches!(
                err,
                Error::OutOfBounds {
                    offset: u64::MAX,
                    ..
                }
            ),
            "{what}: {err:?}"
        ),
        "huge start" => assert!(
            matches!(
                err,
                Error::OutOfBounds {
                    offset: u64::MAX,
                    ..
                }
            ),
            "{what}: {err:?}"
        ),
        other => panic!("no expectation for {other}"),
    }
}

#[tokio::test]
async fn bad_input_yields_one_error_then_ends() {
    let scratch = Scratch::new();
    let len = 4096u64;
    let file = patterned(&scratch, "f", len).await;
    let table: Vec<(&str, Range, u64)> = vec![
        ("chunk_len 0", (Bound::Included(0), Bound::Excluded(len)), 0),
        (
            "chunk_len 0, empty range",
            (Bound::Included(5), Bound::Excluded(5)),
            0,
        ),
        ("reversed", (Bound::Included(10), Bound::Excluded(5)), 16),
        (
            "reversed inclusive",
            (Bound::Included(10), Bound::Included(4)),
            16,
        ),
        (
            "past the end",
            (Bound::Included(0), Bound::Excluded(len + 1)),
            16,
        ),
        (
            "starts past the end",
            (Bound::Included(len + 5), Bound::Unbounded),
            16,
        ),
        (
            "empty past the end",
            (Bound::Included(len + 5), Bound::Excluded(len + 5)),
            16,
        ),
        (
            "overflowing end",
            (Bound::Unbounded, Bound::Included(u64::MAX)),
            16,
        ),
        (
            "overflowing end from 10",
            (Bound::Included(10), Bound::Included(u64::MAX)),
            16,
        ),
        (
            "overflowing start",
            (Bound::Excluded(u64::MAX), Bound::Unbounded),
            16,
        ),
        (
            "huge start",
            (Bound::Included(u64::MAX), Bound::Unbounded),
            16,
        ),
    ];
    for (what, range, chunk_len) in table {
        let shared = drain(file.chunks(range, chunk_len)).await;
        assert_eq!(shared.len(), 1, "{what}: {shared:?}");
        check_error(what, shared[0].as_ref().unwrap_err(), len);
        let exclusive = drain(file.chunks_mut(range, chunk_len)).await;
        assert_eq!(exclusive.len(), 1, "{what}: {exclusive:?}");
        check_error(what, exclusive[0].as_ref().unwrap_err(), len);
    }
}

#[tokio::test]
async fn empty_ranges_inside_the_file_yield_nothing() {
    let scratch = Scratch::new();
    let file = patterned(&scratch, "f", 4096).await;
    for (start, end) in [(0, 0), (5, 5), (4096, 4096)] {
        assert!(drain(file.chunks(start..end, 16)).await.is_empty());
        assert!(drain(file.chunks_mut(start..end, 16)).await.is_empty());
    }
    assert!(drain(file.chunks(4096.., 16)).await.is_empty());
    let empty = scratch.file("empty", 0).await;
    assert!(drain(empty.chunks(.., 16)).await.is_empty());
    assert!(drain(empty.chunks_mut(.., 16)).await.is_empty());
}

#[tokio::test]
async fn chunks_mut_writes_every_chunk() {
    let scratch = Scratch::new();
    let len = 20_000u64;
    let file = scratch.file("f", len).await;
    let mut chunks = file.chunks_mut(100..=15_099, 4096);
    let mut count = 0;
    while let Some(chunk) = tokio::time::timeout(HANG, chunks.next()).await.unwrap() {
        let mut chunk = chunk.unwrap();
        let at = chunk.offset();
        for (i, b) in chunk.iter_mut().enumerate() {
            *b = ((at + i as u64) % 251) as u8;
        }
        count += 1;
    }
    assert_eq!(count, 4); // 15_000 bytes in 4096-byte chunks
    let loaded = file.load(0, len).await.unwrap();
    let data = pattern(len);
    assert!(loaded[..100].iter().all(|&b| b == 0));
    assert_eq!(&loaded[100..15_100], &data[100..15_100]);
    assert!(loaded[15_100..].iter().all(|&b| b == 0));
}

/// A yielded chunk is a lease while it lives; the chunks after it hold
/// none; dropping it releases it before the stream is polled again.
#[tokio::test]
async fn one_lease_at_a_time() {
    let scratch = Scratch::new();
    let file = scratch.file("f", 4096).await;
    let mut chunks = file.chunks_mut(.., 1024);
    let first = chunks.next().await.unwrap().unwrap();
    assert_eq!(first.offset(), 0);
    assert!(matches!(
        file.try_update(0, vec![1u8; 16]).await,
        Err(Error::Conflict { .. })
    ));
    assert!(matches!(
        file.try_load(1000, 24).await,
        Err(Error::Conflict { .. })
    ));
    // Chunks not yet yielded are not leased.
    file.try_update(1024, vec![2u8; 3072]).await.unwrap();
    drop(first);
    file.try_update(0, vec![1u8; 16]).await.unwrap();
    let second = chunks.next().await.unwrap().unwrap();
    assert_eq!(second.offset(), 1024);
    assert_eq!(second[0], 2);
    assert!(matches!(
        file.try_update(1024, vec![3u8; 1]).await,
        Err(Error::Conflict { .. })
    ));
    file.try_update(0, vec![3u8; 1024]).await.unwrap();
    drop(second);

    // The same for shared chunks: they exclude updates, not loads.
    let mut chunks = file.chunks(.., 2048);
    let first = chunks.next().await.unwrap().unwrap();
    assert!(matches!(
        file.try_update(10, vec![1u8; 1]).await,
        Err(Error::Conflict { .. })
    ));
    assert_eq!(file.try_load(10, 1).await.unwrap()[0], 3);
    file.try_update(2048, vec![4u8; 16]).await.unwrap();
    drop(first);
    file.try_update(10, vec![1u8; 1]).await.unwrap();
    assert_eq!(chunks.next().await.unwrap().unwrap()[0], 4);
}

#[tokio::test]
async fn a_shrink_mid_stream_is_one_error_then_the_end() {
    let scratch = Scratch::new();
    let file = patterned(&scratch, "f", 8192).await;
    let mut chunks = file.chunks(.., 1024);
    for at in [0, 1024] {
        let chunk = chunks.next().await.unwrap().unwrap();
        assert_eq!(chunk.offset(), at);
    }
    file.resize(3000).await.unwrap();
    let rest = drain(chunks).await;
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert!(
        matches!(
            rest[0],
            Err(Error::OutOfBounds {
                offset: 2048,
                len: 1024,
                file_len: 3000
            })
        ),
        "{rest:?}"
    );
}

#[tokio::test]
async fn chunks_mut_on_a_read_only_mapping_fails_once() {
    let scratch = Scratch::new();
    patterned(&scratch, "f", 4096).await.close().await.unwrap();
    let file = MappedFile::open_ro(scratch.path("f")).await.unwrap();
    let items = drain(file.chunks_mut(.., 1024)).await;
    assert_eq!(items.len(), 1);
    assert!(matches!(items[0], Err(Error::ReadOnly { .. })), "{items:?}");
    // Shared chunks work on it.
    assert_eq!(drain(file.chunks(.., 1024)).await.len(), 4);
}

#[tokio::test]
async fn a_closed_mapping_fails_once() {
    let scratch = Scratch::new();
    let file = patterned(&scratch, "f", 4096).await;
    let mut chunks = file.chunks(.., 1024);
    drop(chunks.next().await.unwrap().unwrap());
    file.close().await.unwrap();
    let rest = drain(chunks).await;
    assert_eq!(rest.len(), 1);
    assert!(matches!(rest[0], Err(Error::Closed)), "{rest:?}");
}

/// A dropped `next()` future leaves its request in the stream; a dropped
/// stream leaves no lease behind.
#[tokio::test]
async fn cancellation_keeps_or_releases_the_pending_request() {
    let scratch = Scratch::new();
    let file = patterned(&scratch, "f", 4096).await;
    let blocker = file.segment_mut(1024, 1024).await.unwrap();
    let mut chunks = file.chunks(.., 1024);
    drop(chunks.next().await.unwrap().unwrap());
    // The second chunk waits for `blocker`: give up on this poll.
    let waited = tokio::time::timeout(Duration::from_millis(50), chunks.next()).await;
    assert!(waited.is_err(), "the chunk should wait for the blocker");
    drop(blocker);
    let second = tokio::time::timeout(HANG, chunks.next())
        .await
        .expect("the kept request is granted")
        .unwrap()
        .unwrap();
    assert_eq!(second.offset(), 1024);
    assert_eq!(second[0], (1024 % 251) as u8);
    drop(second);

    // Now drop the whole stream while its request waits.
    let blocker = file.segment_mut(2048, 1024).await.unwrap();
    let mut chunks = file.chunks(2048.., 1024);
    let waited = tokio::time::timeout(Duration::from_millis(50), chunks.next()).await;
    assert!(waited.is_err());
    drop(chunks);
    drop(blocker);
    // The abandoned request's lease, if it was granted, is released at
    // once: an exclusive lease of its bytes becomes free.
    let free = tokio::time::timeout(HANG, async {
        loop {
            match file.try_segment_mut(2048, 1024).await {
                Ok(seg) => return seg,
                Err(Error::Conflict { .. }) => tokio::task::yield_now().await,
                Err(err) => panic!("{err:?}"),
            }
        }
    })
    .await
    .expect("the abandoned request's lease is never released");
    assert_eq!(free.offset(), 2048);
}
