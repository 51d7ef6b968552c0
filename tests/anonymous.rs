//! Anonymous mappings: memory served by its own actor like a file (loads,
//! updates, leases, atomic views, resize), coherent across generations (a
//! lease on an old generation sees writes made through the new one), not
//! shared with any other mapping, with flushes that are `Ok` no-ops (no
//! sync syscall, seen with strace), and `anonymous_huge` falling back to
//! plain memory when the kernel has no huge pages to give.

mod common;

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Scratch, SplitMix};
use mmap_actor::{Error, MappedFile, Mode};

const MIB: u64 = 1024 * 1024;
const CHILD_ENV: &str = "MMAP_ACTOR_ANONYMOUS";
/// Hang detector only.
const HANG: Duration = Duration::from_secs(10);

#[tokio::test]
async fn an_anonymous_mapping_serves_every_call_like_a_file() {
    let file = MappedFile::anonymous(MIB).await.unwrap();
    assert_eq!(file.len(), MIB);
    assert_eq!(file.mode(), Mode::ReadWrite);
    assert_eq!(file.path().to_str(), Some("memfd:anonymous"));
    assert!(file.load(0, MIB).await.unwrap().iter().all(|b| *b == 0));

    let data = SplitMix::bytes(1, 100_000);
    file.update(12_345, data.clone()).await.unwrap();
    file.update(7, &b"direct"[..]).await.unwrap();
    assert_eq!(&file.load(12_345, 100_000).await.unwrap()[..], &data[..]);
    assert_eq!(&file.load(7, 6).await.unwrap()[..], b"direct");
    file.modify(0, 4, |b| b.copy_from_slice(b"abcd"))
        .await
        .unwrap();
    {
        let mut seg = file.segment_mut(4096, 4).await.unwrap();
        seg.copy_from_slice(b"leas");
    }
    assert_eq!(&file.segment(4096, 4).await.unwrap()[..], b"leas");
    let counter = file.atomic_u64(8192).await.unwrap();
    counter.fetch_add(5, Ordering::Relaxed);
    drop(counter);
    assert_eq!(file.load(8192, 1).await.unwrap()[0], 5);

    file.flush().await.unwrap();
    file.flush_range(0, 10).await.unwrap();
    file.prewarm(0, MIB).await.unwrap();
    file.resize(2 * MIB).await.unwrap();
    assert_eq!(file.len(), 2 * MIB);
    assert_eq!(&file.load(7, 6).await.unwrap()[..], b"direct");
    file.resize(4096).await.unwrap();
    assert_eq!(&file.load(0, 4).await.unwrap()[..], b"abcd");
    file.close().await.unwrap();
    assert!(matches!(file.load(0, 1).await, Err(Error::Closed)));
}

#[tokio::test]
async fn old_generations_stay_coherent_with_new_ones_across_resizes() {
    let file = MappedFile::anonymous(64 * 1024).await.unwrap();
    // Held on the first generation through every resize below.
    let old = file.atomic_u64(0).await.unwrap();
    let seg = file.segment(4096, 4096).await.unwrap();
    file.resize(8 * MIB).await.unwrap();
    // A view of the same bytes, taken on the new generation.
    let new = file.atomic_u64(0).await.unwrap();
    old.store(41, Ordering::SeqCst);
    assert_eq!(new.load(Ordering::SeqCst), 41, "old write seen through new");
    new.fetch_add(1, Ordering::SeqCst);
    assert_eq!(old.load(Ordering::SeqCst), 42, "new write seen through old");
    // A shrink that keeps the leased bytes does not wait for them.
    tokio::time::timeout(HANG, file.resize(16 * 1024))
        .await
        .expect("shrink waited for leases outside its tail")
        .unwrap();
    old.fetch_add(1, Ordering::SeqCst);
    assert_eq!(new.load(Ordering::SeqCst), 43);
    // One that would cut the segment waits until it is released.
    let shrink = tokio::spawn({
        let file = file.clone();
        async move { file.resize(4096).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!shrink.is_finished(), "the shrink cut a live segment");
    assert!(seg.iter().all(|b| *b == 0));
    drop(seg);
    tokio::time::timeout(HANG, shrink)
        .await
        .expect("the shrink never ran")
        .unwrap()
        .unwrap();
    assert_eq!(file.len(), 4096);
    drop((old, new));
    assert_eq!(file.load(0, 1).await.unwrap()[0], 43);
}

#[tokio::test]
async fn anonymous_mappings_are_each_their_own() {
    let a = MappedFile::anonymous(4096).await.unwrap();
    let b = MappedFile::anonymous(4096).await.unwrap();
    a.update(0, vec![1u8; 4096]).await.unwrap();
    assert!(b.load(0, 4096).await.unwrap().iter().all(|x| *x == 0));
    // A lease on one does not stop the other.
    let _held = a.segment_mut(0, 4096).await.unwrap();
    tokio::time::timeout(HANG, b.update(0, vec![2u8; 10]))
        .await
        .expect("one anonymous mapping waited for another's lease")
        .unwrap();
    // Its descriptor is its own memory file.
    let fd = a.as_fd().try_clone_to_owned().unwrap();
    let fd_b = b.as_fd().try_clone_to_owned().unwrap();
    let meta = std::fs::File::from(fd).metadata().unwrap();
    let meta_b = std::fs::File::from(fd_b).metadata().unwrap();
    assert_eq!(meta.len(), 4096);
    use std::os::unix::fs::MetadataExt;
    assert_ne!(meta.ino(), meta_b.ino());
    // A file of that name in the working directory is not it.
    assert!(std::fs::metadata(a.path()).is_err());
    // Nothing to watch.
    match a.watch().await {
        Err(err @ Error::Watch { .. }) => {
            assert_eq!(err.io_kind(), Some(std::io::ErrorKind::Unsupported))
        }
        other => panic!("watch of an anonymous mapping: {other:?}"),
    }
}

#[tokio::test]
async fn empty_and_huge_anonymous_mappings() {
    let empty = MappedFile::anonymous(0).await.unwrap();
    assert!(empty.is_empty());
    empty.resize(4096).await.unwrap();
    empty.update(4095, vec![1u8]).await.unwrap();

    // Either backing (the pool's huge pages or plain memory) is a working
    // mapping of that length.
    for len in [2 * MIB, 4 * MIB, 3 * MIB + 1, 4096] {
        let huge = MappedFile::anonymous_huge(len).await.unwrap();
        assert_eq!(huge.len(), len);
        huge.update(len - 1, vec![9u8]).await.unwrap();
        assert_eq!(huge.load(len - 1, 1).await.unwrap()[0], 9);
        huge.is_hugepage_backed().await.unwrap();
    }
    match MappedFile::anonymous(u64::MAX).await {
        Err(Error::TooLarge { len, .. }) => assert_eq!(len, u64::MAX),
        other => panic!("anonymous(u64::MAX): {other:?}"),
    }
}

/// Free pages of the kernel's huge page pool (`HugePages_Free`).
fn free_huge_pages() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn anonymous_huge_uses_the_pool_when_it_has_pages() {
    if free_huge_pages() < 2 {
        common::child::skip(
            "anonymous_huge_uses_the_pool_when_it_has_pages",
            "the kernel's huge page pool has fewer than 2 free pages (vm.nr_hugepages)",
        );
        // The fallback: plain memory, any length it likes.
        let huge = MappedFile::anonymous_huge(2 * MIB).await.unwrap();
        huge.resize(2 * MIB + 1).await.unwrap();
        return;
    }
    let huge = MappedFile::anonymous_huge(2 * MIB).await.unwrap();
    huge.prewarm(0, 2 * MIB).await.unwrap();
    assert!(huge.is_hugepage_backed().await.unwrap());
    match huge.resize(2 * MIB + 4096).await {
        Err(Error::Misaligned { offset, align }) => {
            assert_eq!(offset, 2 * MIB + 4096);
            assert_eq!(align % (2 * MIB), 0);
        }
        other => panic!("an unaligned resize of hugetlb memory: {other:?}"),
    }
    assert_eq!(huge.len(), 2 * MIB);
    huge.resize(4 * MIB).await.unwrap();
}

fn child_dir() -> Option<std::path::PathBuf> {
    std::env::var_os(CHILD_ENV).map(Into::into)
}

#[tokio::test]
#[ignore = "child of flushing_anonymous_memory_issues_no_sync"]
async fn child_anonymous_flushes() {
    if child_dir().is_none() {
        return;
    }
    let file = MappedFile::anonymous(MIB).await.unwrap();
    file.update(0, vec![1u8; 4096]).await.unwrap();
    file.flush().await.unwrap();
    file.flush_range(0, 4096).await.unwrap();
    file.schedule_flush().await.unwrap();
    file.schedule_flush_range(0, 4096).await.unwrap();
    // Not closed: a close syncs through the generic path (free on a memory
    // file); only the flushes are counted.
    std::mem::forget(file);
    println!("child done");
}

#[test]
fn flushing_anonymous_memory_issues_no_sync() {
    if !common::have("strace") {
        common::child::skip("flushing_anonymous_memory_issues_no_sync", "no strace");
        return;
    }
    let scratch = Scratch::new();
    let summary = scratch.path("strace.txt");
    let (status, output) = common::rerun(
        "child_anonymous_flushes",
        &[
            "strace",
            "-f",
            "-c",
            "-e",
            "trace=memfd_create,fdatasync,fsync,msync,sync_file_range",
            "-o",
            summary.to_str().unwrap(),
        ],
        &[(CHILD_ENV, scratch.dir.path().display().to_string())],
    );
    assert!(
        status.success() && output.contains("child done"),
        "child failed: {output}"
    );
    let counts = common::strace_counts(&std::fs::read_to_string(&summary).unwrap());
    assert_eq!(counts.get("memfd_create"), Some(&1), "{counts:?}");
    for sync in ["msync", "sync_file_range", "fdatasync", "fsync"] {
        assert!(
            !counts.contains_key(sync),
            "{sync} on anonymous memory: {counts:?}"
        );
    }
}
