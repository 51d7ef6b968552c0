//! The advisory lock (`OpenOptions::lock`) lives as long as anything still
//! maps the file: the handles, the actor, *and* every lease. A lease that
//! outlives `close()`, its handles or its runtime still maps the file, so a
//! cooperating open that could truncate it must keep failing with
//! `Error::Locked` until the last lease is gone; then it succeeds.
//!
//! The class: the descriptor's and the mapping's lifetime. After `close()`,
//! writes through a live `SegmentMut` reach the file (a child process reads
//! it with `std::fs::read`), a `Segment` taken before `close()` stays
//! readable, and leases outlive dropped handles and a dropped runtime.
//!
//! Scenarios that could end in a `SIGBUS` (a second open truncating the
//! file under a lease) run in a child process: this test binary run again.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{child, Scratch, SplitMix};
use mmap_actor::{Error, MappedFile, Mode, Result};

/// Carries `<scenario>:<path>` to the child.
const CHILD_ENV: &str = "MMAP_ACTOR_LOCK_LIFETIME";
const CHILD_TEST: &str = "lock_lifetime_child_runs_scenario";
const LEN: u64 = 64 * 1024;
/// The leased tail.
const TAIL: u64 = LEN - 4096;
/// How long a released lock may take to be seen free (a hang detector:
/// the release may run on the blocking pool).
const RELEASE: Duration = Duration::from_secs(10);

fn pattern() -> Vec<u8> {
    SplitMix::bytes(0x10c4, LEN as usize)
}

fn fresh() -> Vec<u8> {
    SplitMix::bytes(0xf4e5, 4096)
}

async fn open_locked(path: &Path) -> Result<MappedFile> {
    MappedFile::options().lock(true).open(path).await
}

fn assert_locked(result: Result<MappedFile>, path: &Path, what: &str) {
    match result {
        Err(Error::Locked { path: p }) => assert_eq!(p, path, "{what}: wrong path"),
        Err(other) => panic!("{what}: expected Error::Locked, got {other:?}"),
        Ok(f) => panic!(
            "{what}: a locked open succeeded (len {}) while a lease still maps the file",
            f.len()
        ),
    }
}

/// Opens with the lock, retrying while the lock is still held, until
/// [`RELEASE`] has passed.
async fn open_locked_eventually(path: &Path, what: &str) -> MappedFile {
    let start = Instant::now();
    loop {
        match open_locked(path).await {
            Ok(f) => return f,
            Err(Error::Locked { .. }) if start.elapsed() < RELEASE => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Err(e) => panic!("{what}: the lock was not released: {e:?}"),
        }
    }
}

/// The reported scenario, in the child: A (locked) leases the tail and is
/// closed; B's locked opens (one of which would shrink the file) must fail
/// while the lease lives, here and in another process; the lease is then
/// written, read and dropped, and B's open succeeds.
async fn lease_after_close(path: &Path) {
    let a = open_locked(path).await.expect("open A with the lock");
    let mut tail = a.segment_mut(TAIL, 4096).await.expect("lease the tail");
    a.close().await.expect("close A");
    assert!(a.is_closed());

    // A locked open that would shrink the file under the lease. Its outcome
    // is checked after the lease is touched, so that the hazard shows as
    // what it is (a SIGBUS) if the open was allowed.
    let shrink = MappedFile::options()
        .lock(true)
        .len(LEN / 2)
        .open(path)
        .await;
    let shrink_ok = shrink.is_ok();
    drop(shrink);
    println!("TOUCHING-TAIL (the shrinking open returned ok: {shrink_ok})");
    tail.copy_from_slice(&fresh());
    assert_eq!(&tail[..], &fresh()[..]);
    println!("TAIL-TOUCHED");
    assert!(
        !shrink_ok,
        "a locked open shrank the file while a lease of the closed mapping was alive"
    );

    // Every locked open is refused in this process ...
    assert_locked(open_locked(path).await, path, "read-write, same process");
    let ro = MappedFile::options()
        .mode(Mode::ReadOnly)
        .lock(true)
        .open(path)
        .await;
    assert_locked(ro, path, "read-only, same process");
    // ... and in another one.
    let out = child::run(&mut child::command(
        CHILD_TEST,
        CHILD_ENV,
        format!("expect_locked:{}", path.display()),
    ));
    child::assert_success(&out, "SCENARIO-PASSED expect_locked");

    drop(tail);
    let b = open_locked_eventually(path, "open B after the lease was dropped").await;
    assert_eq!(b.len(), LEN, "the file lost its length");
    let mut want = pattern();
    want[TAIL as usize..].copy_from_slice(&fresh());
    assert_eq!(&b.load(0, LEN).await.expect("load")[..], &want[..]);
    b.close().await.expect("close B");
}

/// Another process must find the file locked.
async fn expect_locked(path: &Path) {
    assert_locked(open_locked(path).await, path, "read-write, other process");
    assert_locked(
        MappedFile::options()
            .lock(true)
            .truncate(true)
            .open(path)
            .await,
        path,
        "truncate, other process",
    );
    assert_eq!(std::fs::metadata(path).expect("stat").len(), LEN);
}

/// Reads the file with `std::fs::read` and compares it with the expected
/// content (the pattern with `fresh()` over the tail).
fn verify_tail(path: &Path) {
    let bytes = std::fs::read(path).expect("read the file");
    assert_eq!(bytes.len() as u64, LEN, "length");
    let mut want = pattern();
    want[TAIL as usize..].copy_from_slice(&fresh());
    assert!(
        bytes == want,
        "the writes through the lease are not in the file"
    );
}

#[tokio::test]
#[ignore = "child process of the lock_lifetime_* tests"]
async fn lock_lifetime_child_runs_scenario() {
    let Ok(arg) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (scenario, path) = arg.split_once(':').expect("scenario:path");
    let path = Path::new(path);
    match scenario {
        "lease_after_close" => lease_after_close(path).await,
        "expect_locked" => expect_locked(path).await,
        "verify_tail" => verify_tail(path),
        other => panic!("unknown scenario {other}"),
    }
    println!("SCENARIO-PASSED {scenario}");
}

#[test]
fn lock_lifetime_lock_outlives_close_while_a_lease_maps_the_file() {
    let scratch = Scratch::new();
    let path = scratch.path("data.bin");
    std::fs::write(&path, pattern()).unwrap();
    let out = child::run(&mut child::command(
        CHILD_TEST,
        CHILD_ENV,
        format!("lease_after_close:{}", path.display()),
    ));
    assert_ne!(
        child::signal(&out.status),
        Some(child::SIGBUS),
        "the child died of SIGBUS: a second open truncated the file under a live lease\n{}",
        child::describe(&out)
    );
    child::assert_success(&out, "SCENARIO-PASSED lease_after_close");
}

/// Writes through a `SegmentMut` made after `close()` reach the file, as
/// another process sees it, both while the lease lives and after it is
/// dropped.
#[tokio::test]
async fn lock_lifetime_writes_through_a_lease_after_close_reach_the_file() {
    let scratch = Scratch::new();
    let path = scratch.path("data.bin");
    std::fs::write(&path, pattern()).unwrap();
    let file = open_locked(&path).await.expect("open");
    let mut tail = file.segment_mut(TAIL, 4096).await.expect("lease");
    file.close().await.expect("close");
    tail.copy_from_slice(&fresh());
    let verify = || {
        let out = child::run(&mut child::command(
            CHILD_TEST,
            CHILD_ENV,
            format!("verify_tail:{}", path.display()),
        ));
        child::assert_success(&out, "SCENARIO-PASSED verify_tail");
    };
    verify();
    drop(tail);
    verify();
}

/// A `Segment` (and its `Bytes`) taken before `close()` stays readable,
/// and sees what another open writes to the same bytes meanwhile.
#[tokio::test]
async fn lock_lifetime_segment_stays_readable_after_close() {
    let scratch = Scratch::new();
    let path = scratch.path("data.bin");
    std::fs::write(&path, pattern()).unwrap();
    let file = open_locked(&path).await.expect("open");
    let seg = file.segment(TAIL, 4096).await.expect("segment");
    let bytes = file.segment(0, 4096).await.expect("segment").into_bytes();
    let counter = file.atomic_u64(8192).await.expect("atomic");
    file.close().await.expect("close");
    assert_eq!(&seg[..], &pattern()[TAIL as usize..]);
    assert_eq!(&bytes[..], &pattern()[..4096]);
    counter.fetch_add(1, Ordering::SeqCst);
    // Another open of the file in this process is served by the same lease
    // table: its update of the segment's bytes waits for the segment, even
    // though the open the segment came through is closed.
    let other = MappedFile::open_rw(&path).await.expect("unlocked open");
    assert!(
        tokio::time::timeout(Duration::from_millis(100), other.update(TAIL, fresh()))
            .await
            .is_err(),
        "an update through another open did not wait for the live segment"
    );
    // A write that does not go through the library lands in the same page
    // cache: the segment still maps the file.
    {
        use std::os::unix::fs::FileExt;
        let raw = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        raw.write_all_at(&fresh(), TAIL).unwrap();
    }
    assert_eq!(
        &seg[..],
        &fresh()[..],
        "the segment no longer maps the file"
    );
    drop((seg, bytes, counter));
    // With the leases gone, the other open's update goes through.
    tokio::time::timeout(Duration::from_secs(10), other.update(TAIL, fresh()))
        .await
        .expect("the update waited past the release of the segment")
        .expect("update");
    other.close().await.unwrap();
}

/// Every handle is dropped (the actor stops on its own, flushing): the
/// lease still maps the file, so the lock must still be held.
#[tokio::test]
async fn lock_lifetime_leases_outlive_dropped_handles_and_keep_the_lock() {
    let scratch = Scratch::new();
    let path = scratch.path("data.bin");
    std::fs::write(&path, pattern()).unwrap();
    let file = open_locked(&path).await.expect("open");
    let mut tail = file.segment_mut(TAIL, 4096).await.expect("lease");
    let seg = file.segment(0, 4096).await.expect("segment");
    drop(file);
    // Give the orphaned actor time to stop (this is not a timing
    // assertion: before it stops the lock is held anyway).
    for _ in 0..20 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_locked(
        open_locked(&path).await,
        &path,
        "after every handle was dropped",
    );
    tail.copy_from_slice(&fresh());
    assert_eq!(&seg[..], &pattern()[..4096]);
    assert_locked(
        open_locked(&path).await,
        &path,
        "after the lease was written",
    );
    drop(tail);
    // The segment still maps the file.
    assert_locked(open_locked(&path).await, &path, "while a segment lives");
    drop(seg);
    let again = open_locked_eventually(&path, "after the last lease").await;
    let mut want = pattern();
    want[TAIL as usize..].copy_from_slice(&fresh());
    assert_eq!(&again.load(0, LEN).await.unwrap()[..], &want[..]);
}

/// The runtime the mapping lived on is dropped (its actor with it): leases
/// stay usable from plain threads, keep the lock, and their writes reach the
/// file.
#[test]
fn lock_lifetime_leases_outlive_a_dropped_runtime_and_keep_the_lock() {
    let scratch = Scratch::new();
    let path = scratch.path("data.bin");
    std::fs::write(&path, pattern()).unwrap();
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut tail, seg, counter) = first.block_on(async {
        let file = open_locked(&path).await.expect("open");
        let leases = (
            file.segment_mut(TAIL, 4096).await.expect("lease"),
            file.segment(0, 4096).await.expect("segment"),
            file.atomic_u64(8192).await.expect("atomic"),
        );
        drop(file);
        leases
    });
    drop(first);

    // Used from other threads, with no runtime anywhere.
    let reader = std::thread::spawn(move || {
        assert_eq!(&seg[..], &pattern()[..4096]);
        seg
    });
    tail.copy_from_slice(&fresh());
    let seg = reader.join().expect("reader thread");
    for _ in 0..10 {
        counter.fetch_add(1, Ordering::SeqCst);
    }

    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    second.block_on(async {
        assert_locked(
            open_locked(&path).await,
            &path,
            "after the mapping's runtime was dropped",
        );
    });
    drop((tail, seg, counter));
    second.block_on(async {
        let file = open_locked_eventually(&path, "after the last lease").await;
        let mut want = pattern();
        want[TAIL as usize..].copy_from_slice(&fresh());
        want[8192..8200].copy_from_slice(
            &(u64::from_le_bytes(pattern()[8192..8200].try_into().unwrap()).wrapping_add(10))
                .to_le_bytes(),
        );
        assert_eq!(&file.load(0, LEN).await.unwrap()[..], &want[..]);
        file.close().await.unwrap();
    });
}
