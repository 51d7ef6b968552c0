//! `prewarm` touches no byte, so it needs no exclusion: it completes while
//! atomic views and exclusive segments of the range are held (by the
//! caller itself, too), while a writer or a shrink waits for the range, and
//! while other threads write through those leases; and it changes no byte,
//! dirties no page, and keeps a copy-on-write mapping's private bytes.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Scratch, SplitMix};
use mmap_actor::MappedFile;

/// Hang detector only.
const HANG: Duration = Duration::from_secs(10);
const LEN: u64 = 256 * 1024;

fn pattern() -> Vec<u8> {
    SplitMix::bytes(0x9e4a, LEN as usize)
}

async fn filled(scratch: &Scratch, name: &str) -> MappedFile {
    let file = scratch.file(name, LEN).await;
    file.update(0, pattern()).await.unwrap();
    file
}

async fn prewarm_promptly(file: &MappedFile, offset: u64, len: u64, what: &str) {
    match tokio::time::timeout(HANG, file.prewarm(offset, len)).await {
        Ok(r) => r.unwrap_or_else(|e| panic!("{what}: prewarm failed: {e:?}")),
        Err(_) => panic!("{what}: prewarm({offset}, {len}) waited for leases it does not need"),
    }
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// The reported case: the caller holds an atomic view and a `SegmentMut`.
#[tokio::test]
async fn prewarm_completes_under_atomic_views_and_exclusive_segments() {
    let scratch = Scratch::new();
    let file = filled(&scratch, "held").await;
    let want = pattern();
    let counter = file.atomic_u64(64).await.unwrap();
    let counters = file.atomic_u32_slice(4096, 256).await.unwrap();
    let seg = file.segment_mut(8192, 8192).await.unwrap();
    let shared = file.segment(65536, 4096).await.unwrap();
    prewarm_promptly(
        &file,
        0,
        LEN,
        "atomic views, a SegmentMut and a Segment held",
    )
    .await;
    prewarm_promptly(&file, 8192, 8192, "exactly the SegmentMut's bytes").await;
    prewarm_promptly(&file, 64, 8, "exactly the atomic's bytes").await;
    // No byte changed, seen through the leases themselves ...
    assert_eq!(counter.load(Ordering::SeqCst), u64_at(&want, 64));
    assert_eq!(
        counters[0].load(Ordering::SeqCst),
        u32::from_le_bytes(want[4096..4100].try_into().unwrap())
    );
    assert!(seg[..] == want[8192..16384], "prewarm changed leased bytes");
    assert!(shared[..] == want[65536..69632]);
    drop((counter, counters, seg, shared));
    // ... and through the file.
    assert!(file.load(0, LEN).await.unwrap()[..] == want[..]);
    file.close().await.unwrap();
    assert!(std::fs::read(scratch.path("held")).unwrap() == want);
}

/// Other threads write through a `SegmentMut` and an atomic view while
/// prewarm runs: every write survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prewarm_keeps_concurrent_writes_through_leases() {
    let scratch = Scratch::new();
    let file = filled(&scratch, "busy").await;
    let counter = Arc::new(file.atomic_u64(0).await.unwrap());
    let mut seg = file.segment_mut(4096, 4096).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let adder = {
        let (counter, stop) = (Arc::clone(&counter), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                counter.fetch_add(1, Ordering::SeqCst);
                n += 1;
            }
            n
        })
    };
    let writer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            // At least one round, even if the prewarms are all done before
            // this thread first runs (a loaded machine).
            let mut round = 0u8;
            loop {
                round = round.wrapping_add(1);
                seg.fill(round);
                if stop.load(Ordering::SeqCst) {
                    break;
                }
            }
            (seg, round)
        })
    };
    for _ in 0..8 {
        prewarm_promptly(&file, 0, LEN, "threads writing through the leases").await;
    }
    stop.store(true, Ordering::SeqCst);
    let added = adder.join().unwrap();
    let (seg, round) = writer.join().unwrap();
    assert!(
        seg.iter().all(|&b| b == round),
        "a write through the SegmentMut was lost"
    );
    assert_eq!(
        counter.load(Ordering::SeqCst),
        u64_at(&pattern(), 0).wrapping_add(added),
        "an atomic increment was lost"
    );
    drop(seg);
    drop(counter);
    let bytes = file.load(0, LEN).await.unwrap();
    assert!(bytes[4096..8192].iter().all(|&b| b == round));
    assert!(bytes[8192..] == pattern()[8192..]);
}

/// A writer queued behind the caller's segment: prewarm must not queue
/// behind the writer (which waits for the caller: a deadlock).
#[tokio::test]
async fn prewarm_is_not_queued_behind_a_waiting_writer() {
    let scratch = Scratch::new();
    let file = filled(&scratch, "queued").await;
    let seg = file.segment(0, 4096).await.unwrap();
    let f = file.clone();
    let writer = tokio::spawn(async move { f.segment_mut(0, 4096).await.map(drop) });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !writer.is_finished(),
        "the writer was served under a segment"
    );
    let prewarmed = tokio::time::timeout(HANG, file.prewarm(0, LEN)).await;
    drop(seg);
    assert!(
        prewarmed.is_ok(),
        "prewarm queued behind a writer that waits for the caller's segment"
    );
    prewarmed.unwrap().unwrap();
    tokio::time::timeout(HANG, writer)
        .await
        .expect("the writer was never served")
        .unwrap()
        .unwrap();
}

/// A shrink waiting for the caller's segment of the tail: prewarm of the
/// whole file (the tail too) must not queue behind it.
#[tokio::test]
async fn prewarm_is_not_queued_behind_a_waiting_shrink() {
    let scratch = Scratch::new();
    let file = filled(&scratch, "shrink").await;
    let tail = file.segment(LEN - 4096, 4096).await.unwrap();
    let f = file.clone();
    let shrink = tokio::spawn(async move { f.resize(LEN / 2).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!shrink.is_finished(), "the shrink cut a live segment");
    let prewarmed = tokio::time::timeout(HANG, file.prewarm(0, LEN)).await;
    drop(tail);
    assert!(
        prewarmed.is_ok(),
        "prewarm queued behind a shrink that waits for the caller's segment"
    );
    // It prewarmed the range it was given; the shrink came after.
    prewarmed.unwrap().unwrap();
    tokio::time::timeout(HANG, shrink)
        .await
        .expect("the shrink was never served")
        .unwrap()
        .unwrap();
    assert_eq!(file.len(), LEN / 2);
}

/// A copy-on-write mapping keeps its private bytes through a prewarm, with
/// an exclusive segment of them held.
#[tokio::test]
async fn prewarm_keeps_private_copy_on_write_bytes() {
    let scratch = Scratch::new();
    let path = scratch.path("cow");
    std::fs::write(&path, pattern()).unwrap();
    let cow = MappedFile::open_cow(&path).await.unwrap();
    cow.update(0, vec![0xC0u8; 8192]).await.unwrap();
    let mut seg = cow.segment_mut(8192, 4096).await.unwrap();
    seg.fill(0xC1);
    prewarm_promptly(&cow, 0, LEN, "copy-on-write, a SegmentMut held").await;
    assert!(
        seg.iter().all(|&b| b == 0xC1),
        "private bytes under the lease were lost"
    );
    drop(seg);
    let bytes = cow.load(0, LEN).await.unwrap();
    assert!(
        bytes[..8192].iter().all(|&b| b == 0xC0),
        "private bytes were lost"
    );
    assert!(bytes[12288..] == pattern()[12288..]);
    assert!(
        std::fs::read(&path).unwrap() == pattern(),
        "the file changed"
    );
}

/// Dirty pages (`Shared_Dirty` + `Private_Dirty` in `/proc/self/smaps`) of
/// every mapping of `path`, in KiB.
fn dirty_kib(path: &std::path::Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
    let name = path.to_string_lossy();
    let mut dirty = 0;
    let mut ours = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header line: "start-end perms offset dev inode path".
            ours = line.trim_end().ends_with(&*name);
        } else if ours && (first == "Shared_Dirty:" || first == "Private_Dirty:") {
            dirty += line
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    dirty
}

/// After a flush, prewarm with leases held dirties no page of the file.
#[tokio::test]
async fn prewarm_dirties_no_page() {
    if !std::path::Path::new("/proc/self/smaps").exists() {
        return common::child::skip("prewarm_dirties_no_page", "/proc/self/smaps is missing");
    }
    let scratch = Scratch::new();
    let file = filled(&scratch, "clean").await;
    let path = std::fs::canonicalize(scratch.path("clean")).unwrap();
    let counter = file.atomic_u64(64).await.unwrap();
    let seg = file.segment_mut(8192, 8192).await.unwrap();
    file.flush().await.unwrap();
    assert_eq!(dirty_kib(&path), 0, "pages are dirty right after a flush");
    prewarm_promptly(&file, 0, LEN, "after a flush, leases held").await;
    assert_eq!(dirty_kib(&path), 0, "prewarm dirtied pages of the file");
    drop((counter, seg));
}
