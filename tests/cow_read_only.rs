//! `OpenOptions::cow_writable(false)`: a private, read-only mapping
//! (`r--p` in `/proc/self/maps`) on which every write is refused with
//! `Error::ReadOnly` naming the call and `Mode::CopyOnWrite`, while every
//! read works; writable copy-on-write stays the default.

mod common;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use common::Scratch;
use futures::StreamExt;
use mmap_actor::{Error, MappedFile, Mode, Result};
use tokio::io::AsyncWriteExt;

const LEN: u64 = 64 * 1024;

type Outcome<'a> = Pin<Box<dyn Future<Output = Result<()>> + 'a>>;

fn pattern() -> Vec<u8> {
    (0..LEN).map(|i| (i % 239) as u8).collect()
}

async fn read_only_cow(path: &Path) -> MappedFile {
    MappedFile::options()
        .mode(Mode::CopyOnWrite)
        .cow_writable(false)
        .open(path)
        .await
        .unwrap()
}

/// The permissions `/proc/self/maps` gives this process's mappings of
/// `path`.
fn perms(path: &Path) -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter(|l| l.trim_end().ends_with(path.to_str().unwrap()))
        .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn every_write_is_refused_and_every_read_works() {
    let scratch = Scratch::new();
    let path = scratch.path("f");
    std::fs::write(&path, pattern()).unwrap();
    let file = read_only_cow(&path).await;
    assert_eq!(file.mode(), Mode::CopyOnWrite);
    assert_eq!(perms(&path), ["r--p"], "a private read-only mapping");

    let writes: Vec<(&str, Outcome<'_>)> = vec![
        ("update", Box::pin(file.update(0, vec![1u8; 8]))),
        ("update", Box::pin(file.try_update(0, vec![1u8; 8]))),
        ("modify", Box::pin(file.modify(0, 8, |b| b.fill(1)))),
        (
            "segment_mut",
            Box::pin(async { file.segment_mut(0, 8).await.map(drop) }),
        ),
        (
            "segment_mut",
            Box::pin(async { file.try_segment_mut(0, 8).await.map(drop) }),
        ),
        (
            "atomic_u32",
            Box::pin(async { file.atomic_u32(0).await.map(drop) }),
        ),
        (
            "atomic_u32",
            Box::pin(async { file.try_atomic_u32(0).await.map(drop) }),
        ),
        (
            "atomic_u64",
            Box::pin(async { file.atomic_u64(0).await.map(drop) }),
        ),
        (
            "atomic_u64",
            Box::pin(async { file.try_atomic_u64(0).await.map(drop) }),
        ),
        (
            "atomic_u32_slice",
            Box::pin(async { file.atomic_u32_slice(0, 2).await.map(drop) }),
        ),
        (
            "atomic_u64_slice",
            Box::pin(async { file.atomic_u64_slice(0, 2).await.map(drop) }),
        ),
        ("resize", Box::pin(file.resize(2 * LEN))),
    ];
    for (op, call) in writes {
        match call.await {
            Err(Error::ReadOnly { op: o, mode }) => {
                assert_eq!((o, mode), (op, Mode::CopyOnWrite), "{op}")
            }
            other => panic!("{op} on a read-only copy-on-write mapping: {other:?}"),
        }
    }
    let mut writer = file.writer(0);
    let err = writer.write_all(b"no").await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    let mut chunks = file.chunks_mut(.., 4096);
    assert!(matches!(
        chunks.next().await,
        Some(Err(Error::ReadOnly { .. }))
    ));

    // Reads.
    assert_eq!(&file.load(0, LEN).await.unwrap()[..], &pattern()[..]);
    assert_eq!(
        &file.segment(100, 10).await.unwrap()[..],
        &pattern()[100..110]
    );
    let word = u32::from_le_bytes(pattern()[8..12].try_into().unwrap());
    let reader = file.atomic_u32_reader(8).await.unwrap();
    assert_eq!(reader.load(std::sync::atomic::Ordering::Relaxed), word);
    drop(reader);
    let mut chunks = file.chunks(.., 4096);
    let mut seen = 0;
    while let Some(chunk) = chunks.next().await {
        seen += chunk.unwrap().len() as u64;
    }
    assert_eq!(seen, LEN);
    file.prewarm(0, LEN).await.unwrap();
    file.flush().await.unwrap();
    file.flush_range(0, 10).await.unwrap();
    // Nothing was written, to the file or the mapping.
    assert_eq!(std::fs::read(&path).unwrap(), pattern());
    assert_eq!(&file.load(0, LEN).await.unwrap()[..], &pattern()[..]);
}

#[tokio::test]
async fn writable_copy_on_write_stays_the_default() {
    let scratch = Scratch::new();
    let path = scratch.path("f");
    std::fs::write(&path, pattern()).unwrap();
    for file in [
        MappedFile::open_cow(&path).await.unwrap(),
        MappedFile::options()
            .mode(Mode::CopyOnWrite)
            .cow_writable(true)
            .open(&path)
            .await
            .unwrap(),
    ] {
        file.update(0, vec![0xAB; 16]).await.unwrap();
        assert!(file.load(0, 16).await.unwrap().iter().all(|b| *b == 0xAB));
        file.flush().await.unwrap();
        file.close().await.unwrap();
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        pattern(),
        "the file is untouched"
    );
    // `cow_writable` is about copy-on-write only.
    let rw = MappedFile::options()
        .cow_writable(false)
        .open(&path)
        .await
        .unwrap();
    rw.update(0, vec![1u8; 4]).await.unwrap();
    let ro = MappedFile::options()
        .mode(Mode::ReadOnly)
        .cow_writable(true)
        .open(&path)
        .await
        .unwrap();
    assert!(matches!(
        ro.update(0, vec![1u8]).await,
        Err(Error::ReadOnly {
            mode: Mode::ReadOnly,
            ..
        })
    ));
}

#[tokio::test]
async fn a_read_only_open_beside_a_writer_sees_its_updates_and_follows_a_shrink() {
    let scratch = Scratch::new();
    let path = scratch.path("f");
    std::fs::write(&path, pattern()).unwrap();
    let writer = MappedFile::open_rw(&path).await.unwrap();
    let reader = read_only_cow(&path).await;
    writer.update(LEN - 4096, vec![5u8; 4096]).await.unwrap();
    // Pages a private mapping never wrote are the file's pages.
    assert!(reader
        .load(LEN - 4096, 4096)
        .await
        .unwrap()
        .iter()
        .all(|b| *b == 5));
    writer.resize(LEN / 2).await.unwrap();
    assert_eq!(
        reader.len(),
        LEN / 2,
        "cut in place, as copy-on-write opens are"
    );
    assert!(matches!(
        reader.load(LEN / 2, 1).await,
        Err(Error::OutOfBounds { .. })
    ));
    assert_eq!(&reader.load(0, 100).await.unwrap()[..], &pattern()[..100]);
}
