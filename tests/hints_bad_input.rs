//! The bad-input table for the hint calls and anonymous mappings: every
//! range-taking call (`schedule_flush_range`, `advise` with each advice,
//! `lock`, `unlock`, `prewarm_progress`) fed out-of-range, overflowing,
//! zero-length input on read-write, read-only, copy-on-write and anonymous
//! mappings returns the documented typed error (variant and fields) and
//! never panics; `DontNeed` is refused before the range is looked at;
//! every call fails with `Closed` after `close()`; the anonymous
//! constructors refuse impossible lengths and a missing runtime. The
//! mapping keeps working afterwards.

mod common;

use std::future::Future;
use std::pin::Pin;

use common::expect::{check, oob, Want};
use common::Scratch;
use futures::StreamExt;
use mmap_actor::{Advice, Error, MappedFile, Mode, Result};

const L: u64 = 4096;

type Outcome<'a> = Pin<Box<dyn Future<Output = Result<()>> + 'a>>;
type Call = for<'a> fn(&'a MappedFile, u64, u64) -> Outcome<'a>;

macro_rules! call {
    ($name:literal, |$f:ident, $a:ident, $b:ident| $body:expr) => {{
        fn call<'a>($f: &'a MappedFile, $a: u64, $b: u64) -> Outcome<'a> {
            let _ = ($a, $b);
            Box::pin(async move { $body.await.map(drop) })
        }
        ($name, call as Call)
    }};
}

/// Every item of a prewarm stream, the first error if any.
async fn prewarm_all(file: &MappedFile, offset: u64, len: u64) -> Result<()> {
    let mut stream = file.prewarm_progress(offset, len);
    let mut last = None;
    while let Some(item) = stream.next().await {
        last = Some(item?);
    }
    let last = last.expect("at least one item");
    assert_eq!(
        last.done, last.total,
        "prewarm_progress({offset}, {len}) ended early"
    );
    assert_eq!(last.total, len);
    Ok(())
}

/// The range-taking calls, and whether they are `DontNeed` (refused on
/// private memory whatever the range).
fn range_calls() -> Vec<(&'static str, Call, bool)> {
    let plain = vec![
        call!("schedule_flush_range", |f, o, l| f
            .schedule_flush_range(o, l)),
        call!("advise(Normal)", |f, o, l| f.advise(o, l, Advice::Normal)),
        call!("advise(Sequential)", |f, o, l| f.advise(
            o,
            l,
            Advice::Sequential
        )),
        call!("advise(Random)", |f, o, l| f.advise(o, l, Advice::Random)),
        call!("advise(WillNeed)", |f, o, l| f.advise(
            o,
            l,
            Advice::WillNeed
        )),
        call!("lock", |f, o, l| f.lock(o, l)),
        call!("unlock", |f, o, l| f.unlock(o, l)),
        call!("prewarm_progress", |f, o, l| prewarm_all(f, o, l)),
    ];
    let mut calls: Vec<_> = plain.into_iter().map(|(n, c)| (n, c, false)).collect();
    let (name, dont_need) = call!("advise(DontNeed)", |f, o, l| f.advise(
        o,
        l,
        Advice::DontNeed
    ));
    calls.push((name, dont_need, true));
    calls
}

/// The ranges of `bad_input.rs`, with whether they are valid for `L` bytes.
fn ranges() -> Vec<(u64, u64, bool)> {
    vec![
        (0, 0, true),
        (0, L, true),
        (L, 0, true),
        (L - 1, 1, true),
        (1, L - 2, true),
        (L + 1, 0, false),
        (L, 1, false),
        (L - 1, 2, false),
        (0, L + 1, false),
        (u64::MAX, 0, false),
        (u64::MAX, 1, false),
        (1, u64::MAX, false),
        (u64::MAX, u64::MAX, false),
        (L / 2, u64::MAX - L / 2 + 1, false),
        (u64::MAX - 10, 11, false),
    ]
}

fn expect_discard(what: &str, got: Result<()>, mapping: &str) {
    match got {
        Err(Error::WouldDiscard { op, mapping: m }) => {
            assert_eq!((op, m), ("advise(DontNeed)", mapping), "{what}")
        }
        other => panic!("{what}: expected WouldDiscard, got {other:?}"),
    }
}

/// Feeds every range to every call on `file`; `private` names the mapping
/// `DontNeed` is refused on, if it is.
async fn table(file: &MappedFile, private: Option<&str>) {
    for (offset, len, valid) in ranges() {
        for (name, call, dont_need) in range_calls() {
            let what = format!("{name}({offset}, {len}) on {:?}", file.mode());
            let got = call(file, offset, len).await;
            match (dont_need, private) {
                (true, Some(mapping)) => expect_discard(&what, got, mapping),
                _ => check(
                    &what,
                    got,
                    if valid { Want::Ok } else { oob(offset, len, L) },
                ),
            }
        }
    }
    file.unlock_all().await.unwrap();
}

fn pattern() -> Vec<u8> {
    (0..L).map(|i| (i % 253) as u8).collect()
}

#[tokio::test]
async fn every_range_on_every_kind_of_mapping() {
    let scratch = Scratch::new();
    let path = scratch.path("f");
    std::fs::write(&path, pattern()).unwrap();
    let rw = MappedFile::open_rw(&path).await.unwrap();
    table(&rw, None).await;
    table(&MappedFile::open_ro(&path).await.unwrap(), None).await;
    let cow = MappedFile::open_cow(&path).await.unwrap();
    table(&cow, Some("a writable copy-on-write mapping")).await;
    let cow_ro = MappedFile::options()
        .mode(Mode::CopyOnWrite)
        .cow_writable(false)
        .open(&path)
        .await
        .unwrap();
    table(&cow_ro, None).await;
    let anonymous = MappedFile::anonymous(L).await.unwrap();
    anonymous.update(0, pattern()).await.unwrap();
    table(&anonymous, Some("an anonymous mapping")).await;

    // Nothing changed a byte, and everything still works.
    for file in [&rw, &cow, &cow_ro, &anonymous] {
        assert_eq!(&file.load(0, L).await.unwrap()[..], &pattern()[..]);
    }
    rw.update(0, vec![1u8; 8]).await.unwrap();
    anonymous.update(0, vec![1u8; 8]).await.unwrap();
    assert_eq!(&anonymous.load(0, 8).await.unwrap()[..], &[1u8; 8]);
}

#[tokio::test]
async fn whole_mapping_calls_take_any_length() {
    let scratch = Scratch::new();
    for len in [0, 1, L, L + 1] {
        let file = scratch.file(&format!("f{len}"), len).await;
        file.schedule_flush().await.unwrap();
        file.lock_all().await.unwrap();
        file.unlock_all().await.unwrap();
        file.unlock_all().await.unwrap();
        assert!(!file.is_hugepage_backed().await.unwrap());
        prewarm_all(&file, 0, len).await.unwrap();
    }
}

#[tokio::test]
async fn every_call_after_close_is_closed() {
    let scratch = Scratch::new();
    for file in [
        scratch.file("f", L).await,
        MappedFile::anonymous(L).await.unwrap(),
    ] {
        let clone = file.clone();
        file.close().await.unwrap();
        let calls: Vec<(&str, Outcome<'_>)> = vec![
            ("schedule_flush", Box::pin(clone.schedule_flush())),
            (
                "schedule_flush_range",
                Box::pin(clone.schedule_flush_range(0, 1)),
            ),
            ("advise", Box::pin(clone.advise(0, 1, Advice::Random))),
            (
                "advise(DontNeed)",
                Box::pin(clone.advise(0, 1, Advice::DontNeed)),
            ),
            ("lock", Box::pin(clone.lock(0, 1))),
            ("unlock", Box::pin(clone.unlock(0, 1))),
            ("lock_all", Box::pin(clone.lock_all())),
            ("unlock_all", Box::pin(clone.unlock_all())),
            (
                "is_hugepage_backed",
                Box::pin(async { clone.is_hugepage_backed().await.map(drop) }),
            ),
            ("prewarm_progress", Box::pin(prewarm_all(&clone, 0, 1))),
            ("resize", Box::pin(clone.resize(2 * L))),
        ];
        for (name, call) in calls {
            check(name, call.await, Want::Closed);
        }
        check("watch", clone.watch().await.map(drop), Want::Closed);
    }
}

#[tokio::test]
async fn anonymous_lengths_beyond_any_file_are_too_large() {
    for len in [u64::MAX, i64::MAX as u64 + 1] {
        for (name, got) in [
            ("anonymous", MappedFile::anonymous(len).await),
            ("anonymous_huge", MappedFile::anonymous_huge(len).await),
        ] {
            match got {
                Err(Error::TooLarge { len: l, max }) => {
                    assert_eq!((l, max), (len, i64::MAX as u64), "{name}({len})")
                }
                other => panic!("{name}({len}): expected TooLarge, got {other:?}"),
            }
        }
    }
    let file = MappedFile::anonymous(L).await.unwrap();
    assert!(matches!(
        file.resize(u64::MAX).await,
        Err(Error::TooLarge { .. })
    ));
    // Odd lengths are fine (huge ones fall back to plain memory).
    for len in [1, L - 1, 3 * 1024 * 1024 + 7] {
        assert_eq!(MappedFile::anonymous_huge(len).await.unwrap().len(), len);
        assert_eq!(MappedFile::anonymous(len).await.unwrap().len(), len);
    }
    assert_eq!(file.len(), L);
}

#[test]
fn anonymous_mappings_need_a_runtime() {
    for (name, got) in [
        (
            "anonymous",
            futures::executor::block_on(MappedFile::anonymous(L)),
        ),
        (
            "anonymous_huge",
            futures::executor::block_on(MappedFile::anonymous_huge(L)),
        ),
    ] {
        match got {
            Err(Error::NoRuntime { op }) => assert_eq!(op, name),
            other => panic!("{name} outside a runtime: {other:?}"),
        }
    }
}
