//! Two opens of one file in one process must not `SIGBUS` each other or
//! break each other's leases: the lease rules hold across handles of the
//! same file (same inode), not only within one open.
//!
//! - A shrink through open B waits for a segment of the cut tail held
//!   through open A (read-write, through a hard link, read-only,
//!   copy-on-write); the segment stays readable; after the shrink, A does
//!   not touch the cut bytes. `create` or an open with a shorter `len` of
//!   the mapped file must not cut A's segment either. These run in a child
//!   process (this test binary run again), whose death by `SIGBUS` the
//!   parent reports.
//! - A `SegmentMut` (or atomic view) through A makes loads, updates and
//!   leases of the same bytes through B wait until it is dropped.
//! - A read-only and a read-write open coexist, see each other's updates,
//!   and close independently; a copy-on-write open keeps its private bytes
//!   while a read-write open updates the file.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{child, Scratch, SplitMix};
use mmap_actor::{MappedFile, Result};

/// Carries `<scenario>:<path>` to the child.
const CHILD_ENV: &str = "MMAP_ACTOR_SAME_PROCESS";
const CHILD_TEST: &str = "same_process_child_runs_scenario";
const LEN: u64 = 64 * 1024;
/// The held tail.
const TAIL: u64 = LEN - 4096;
/// How long a request that must wait is watched.
const WAIT: Duration = Duration::from_millis(200);
/// Hang detector only.
const HANG: Duration = Duration::from_secs(10);

fn pattern() -> Vec<u8> {
    SplitMix::bytes(0x5a3e, LEN as usize)
}

/// The path A opens: the file itself, or a hard link to it.
fn a_path(path: &Path, variant: &str) -> PathBuf {
    if variant == "hardlink" {
        let link = path.with_extension("link");
        std::fs::hard_link(path, &link).expect("hard link");
        link
    } else {
        path.to_path_buf()
    }
}

async fn open_a(path: &Path, variant: &str) -> MappedFile {
    let p = a_path(path, variant);
    match variant {
        "rw" | "hardlink" => MappedFile::open_rw(p).await,
        "ro" => MappedFile::open_ro(p).await,
        "cow" => MappedFile::open_cow(p).await,
        other => panic!("unknown variant {other}"),
    }
    .expect("open A")
}

/// Reads every byte of A's segment of the tail (a SIGBUS if the file was
/// cut under it) and checks them.
fn touch(seg: &[u8], what: &str) {
    println!("TOUCHING-SEGMENT {what}");
    assert!(
        seg == &pattern()[TAIL as usize..],
        "{what}: the segment's bytes changed"
    );
    println!("SEGMENT-READABLE {what}");
}

/// After the file was cut to `new_len` through another open, A must not
/// touch the cut bytes (an error, not a SIGBUS) and keeps working below.
async fn a_after_the_cut(a: &MappedFile, new_len: u64) {
    println!("A-LOADS-THE-CUT-TAIL");
    let cut = a.load(TAIL, 4096).await;
    assert!(
        cut.is_err(),
        "A loaded the cut tail: {:?} (the file has {} bytes)",
        cut.map(|b| b.len()),
        std::fs::metadata(a.path()).map(|m| m.len()).unwrap_or(0)
    );
    let kept = a
        .load(0, new_len.min(4096))
        .await
        .expect("A loads below the cut");
    assert!(kept[..] == pattern()[..kept.len()]);
}

/// A holds a segment of the tail; B shrinks the file.
async fn shrink_under(path: &Path, variant: &str) {
    let a = open_a(path, variant).await;
    let b = MappedFile::open_rw(path).await.expect("open B");
    let seg = a
        .segment(TAIL, 4096)
        .await
        .expect("A's segment of the tail");
    let bf = b.clone();
    let shrink = tokio::spawn(async move { bf.resize(LEN / 2).await });
    tokio::time::sleep(WAIT).await;
    let waited = !shrink.is_finished();
    touch(
        &seg,
        &format!("{variant}: while B shrinks (it waited: {waited})"),
    );
    assert!(
        waited,
        "{variant}: B's shrink completed while A's segment of the cut tail lived"
    );
    assert_eq!(std::fs::metadata(path).unwrap().len(), LEN);
    drop(seg);
    tokio::time::timeout(HANG, shrink)
        .await
        .expect("B's shrink did not complete after A's segment was dropped")
        .unwrap()
        .expect("B's shrink");
    assert_eq!(b.len(), LEN / 2);
    assert_eq!(std::fs::metadata(path).unwrap().len(), LEN / 2);
    a_after_the_cut(&a, LEN / 2).await;
    if variant != "cow" && variant != "ro" {
        a.update(0, b"from A".to_vec()).await.expect("A updates");
        assert_eq!(&b.load(0, 6).await.unwrap()[..], b"from A");
    }
}

/// A holds a segment of the tail; the file is re-created (or opened with a
/// shorter length) through the library: either that open fails and leaves
/// the file alone, or it waits for the segment.
async fn reopen_under(path: &Path, how: &str) {
    let a = MappedFile::open_rw(path).await.expect("open A");
    let seg = a
        .segment(TAIL, 4096)
        .await
        .expect("A's segment of the tail");
    let p = path.to_path_buf();
    let how_owned = how.to_string();
    let reopen = tokio::spawn(async move {
        match how_owned.as_str() {
            "create" => MappedFile::create(&p, 4096).await,
            "len" => MappedFile::options().len(4096).open(&p).await,
            "truncate" => MappedFile::options().truncate(true).open(&p).await,
            other => panic!("unknown reopen {other}"),
        }
    });
    tokio::time::sleep(WAIT).await;
    let finished = reopen.is_finished();
    touch(
        &seg,
        &format!("{how}: while the reopen runs (it finished: {finished})"),
    );
    if finished {
        let got = reopen.await.unwrap();
        assert!(
            got.is_err(),
            "{how}: the open cut the file under a live segment of another open (len {:?})",
            got.map(|f| f.len())
        );
        assert_eq!(
            std::fs::metadata(path).unwrap().len(),
            LEN,
            "{how}: the file changed"
        );
        drop(seg);
    } else {
        drop(seg);
        let b = tokio::time::timeout(HANG, reopen)
            .await
            .expect("the reopen did not complete after the segment was dropped")
            .unwrap()
            .expect("the reopen");
        let new_len = b.len();
        if how == "len" {
            a_after_the_cut(&a, new_len).await;
        } else {
            // `create` and `truncate` empty the file: A sees the new zeros
            // below the cut, and the cut tail is gone for it too.
            assert!(
                a.load(TAIL, 4096).await.is_err(),
                "{how}: A loaded the cut tail"
            );
            let kept = a.load(0, new_len).await.expect("A loads below the cut");
            assert!(
                kept.iter().all(|&b| b == 0),
                "{how}: the file was not emptied"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of the same_process_* tests"]
async fn same_process_child_runs_scenario() {
    let Ok(arg) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (scenario, path) = arg.split_once(':').expect("scenario:path");
    let path = Path::new(path);
    match scenario.split_once('-') {
        Some(("shrink", variant)) => shrink_under(path, variant).await,
        Some(("reopen", how)) => reopen_under(path, how).await,
        _ => panic!("unknown scenario {scenario}"),
    }
    println!("SCENARIO-PASSED {scenario}");
}

/// Runs `scenario` in a child on a fresh file; asserts it neither died of
/// SIGBUS nor failed.
fn in_child(scenario: &str) {
    let scratch = Scratch::new();
    let path = scratch.path("data.bin");
    std::fs::write(&path, pattern()).unwrap();
    let out = child::run(&mut child::command(
        CHILD_TEST,
        CHILD_ENV,
        format!("{scenario}:{}", path.display()),
    ));
    assert_ne!(
        child::signal(&out.status),
        Some(child::SIGBUS),
        "{scenario}: the child died of SIGBUS (one open cut the file under another's mapping)\n{}",
        child::describe(&out)
    );
    child::assert_success(&out, &format!("SCENARIO-PASSED {scenario}"));
}

#[test]
fn same_process_shrink_through_another_open_waits_for_a_segment() {
    in_child("shrink-rw");
}

#[test]
fn same_process_shrink_waits_for_a_segment_through_a_hard_link() {
    in_child("shrink-hardlink");
}

#[test]
fn same_process_shrink_waits_for_a_read_only_opens_segment() {
    in_child("shrink-ro");
}

#[test]
fn same_process_shrink_waits_for_a_copy_on_write_opens_segment() {
    in_child("shrink-cow");
}

#[test]
fn same_process_create_does_not_cut_another_opens_segment() {
    in_child("reopen-create");
}

#[test]
fn same_process_open_with_a_shorter_len_does_not_cut_another_opens_segment() {
    in_child("reopen-len");
}

#[test]
fn same_process_open_with_truncate_does_not_cut_another_opens_segment() {
    in_child("reopen-truncate");
}

/// `request` through B must wait while A holds `lease` of bytes 0..8, and
/// complete once it is dropped.
async fn waits_across_opens(a: &MappedFile, b: &MappedFile, lease: &str, request: &str) {
    let what = format!("A holds {lease}, B {request}s");
    let held: Box<dyn Send> = match lease {
        "segment_mut" => Box::new(a.segment_mut(0, 8).await.unwrap()),
        "atomic_u64" => {
            let v = a.atomic_u64(0).await.unwrap();
            v.store(0x1111_1111_1111_1111, Ordering::SeqCst);
            Box::new(v)
        }
        "segment" => Box::new(a.segment(0, 8).await.unwrap()),
        other => panic!("unknown lease {other}"),
    };
    let bf = b.clone();
    let req = request.to_string();
    let task = tokio::spawn(async move {
        let r: Result<()> = match req.as_str() {
            "update" => bf.update(0, vec![2u8; 8]).await,
            "load" => bf.load(0, 8).await.map(drop),
            "segment" => bf.segment(0, 8).await.map(drop),
            "segment_mut" => bf.segment_mut(0, 8).await.map(drop),
            "modify" => bf.modify(0, 8, |x| x.fill(3)).await,
            "atomic_u32" => bf.atomic_u32(0).await.map(drop),
            other => panic!("unknown request {other}"),
        };
        r
    });
    tokio::time::sleep(WAIT).await;
    let waited = !task.is_finished();
    drop(held);
    let done = tokio::time::timeout(HANG, task).await;
    assert!(
        waited,
        "{what}: B did not wait for A's lease of the same bytes"
    );
    done.unwrap_or_else(|_| panic!("{what}: B never completed"))
        .unwrap()
        .unwrap_or_else(|e| panic!("{what}: B failed: {e:?}"));
}

#[tokio::test]
async fn same_process_segment_mut_through_one_open_makes_an_update_through_another_wait() {
    let scratch = Scratch::new();
    let path = scratch.path("data.bin");
    std::fs::write(&path, pattern()).unwrap();
    let a = MappedFile::open_rw(&path).await.unwrap();
    let b = MappedFile::open_rw(&path).await.unwrap();
    let mut seg = a.segment_mut(0, 8).await.unwrap();
    let bf = b.clone();
    let update = tokio::spawn(async move { bf.update(0, vec![2u8; 8]).await });
    tokio::time::sleep(WAIT).await;
    let waited = !update.is_finished();
    seg.copy_from_slice(&[1u8; 8]);
    drop(seg);
    tokio::time::timeout(HANG, update)
        .await
        .expect("B's update never completed")
        .unwrap()
        .unwrap();
    assert!(
        waited,
        "B's update did not wait for A's SegmentMut of the same bytes"
    );
    // B's update came after A's writes.
    assert_eq!(a.load(0, 8).await.unwrap()[..], [2u8; 8]);
}

#[tokio::test]
async fn same_process_every_conflict_waits_across_opens() {
    let scratch = Scratch::new();
    let path = scratch.path("data.bin");
    std::fs::write(&path, pattern()).unwrap();
    let link = scratch.path("data.link");
    std::fs::hard_link(&path, &link).unwrap();
    let a = MappedFile::open_rw(&path).await.unwrap();
    for b_path in [&path, &link] {
        let b = MappedFile::open_rw(b_path).await.unwrap();
        for request in [
            "update",
            "load",
            "segment",
            "segment_mut",
            "modify",
            "atomic_u32",
        ] {
            waits_across_opens(&a, &b, "segment_mut", request).await;
        }
        for request in ["update", "load", "segment", "segment_mut", "atomic_u32"] {
            waits_across_opens(&a, &b, "atomic_u64", request).await;
        }
        for request in ["update", "segment_mut", "modify"] {
            waits_across_opens(&a, &b, "segment", request).await;
        }
        b.close().await.unwrap();
    }
}

/// A read-only and a read-write open at once: both work, see each other's
/// updates, and close independently.
#[tokio::test]
async fn same_process_read_only_and_read_write_opens_coexist() {
    let scratch = Scratch::new();
    let path = scratch.path("data.bin");
    std::fs::write(&path, pattern()).unwrap();
    let rw = MappedFile::open_rw(&path).await.unwrap();
    let ro = MappedFile::open_ro(&path).await.unwrap();
    rw.update(0, b"written by rw".to_vec()).await.unwrap();
    assert_eq!(&ro.load(0, 13).await.unwrap()[..], b"written by rw");
    {
        let seg = ro.segment(0, 13).await.unwrap();
        assert_eq!(&seg[..], b"written by rw");
    }
    ro.close().await.unwrap();
    assert!(ro.is_closed());
    // The read-write open is unaffected by the other's close.
    assert!(!rw.is_closed());
    rw.update(100, b"still here".to_vec())
        .await
        .expect("rw after ro closed");
    assert_eq!(&rw.load(100, 10).await.unwrap()[..], b"still here");
    rw.resize(2 * LEN).await.expect("rw grows after ro closed");
    rw.flush().await.unwrap();

    let ro2 = MappedFile::open_ro(&path).await.unwrap();
    assert_eq!(ro2.len(), 2 * LEN);
    rw.close().await.unwrap();
    assert!(!ro2.is_closed());
    assert_eq!(
        &ro2.load(100, 10).await.expect("ro after rw closed")[..],
        b"still here"
    );
    let rw2 = MappedFile::open_rw(&path).await.unwrap();
    rw2.update(200, b"rw2".to_vec()).await.unwrap();
    assert_eq!(&ro2.load(200, 3).await.unwrap()[..], b"rw2");
    ro2.close().await.unwrap();
    rw2.close().await.unwrap();
}

/// A copy-on-write open keeps its private bytes while a read-write open
/// updates the same bytes of the file; neither sees the other's write.
#[tokio::test]
async fn same_process_copy_on_write_keeps_private_bytes() {
    let scratch = Scratch::new();
    let path = scratch.path("data.bin");
    std::fs::write(&path, pattern()).unwrap();
    let cow = MappedFile::open_cow(&path).await.unwrap();
    let rw = MappedFile::open_rw(&path).await.unwrap();
    cow.update(0, b"private".to_vec()).await.unwrap();
    rw.update(0, b"shared!".to_vec()).await.unwrap();
    assert_eq!(&cow.load(0, 7).await.unwrap()[..], b"private");
    assert_eq!(&rw.load(0, 7).await.unwrap()[..], b"shared!");
    {
        let mut seg = cow.segment_mut(4096, 8).await.unwrap();
        seg.copy_from_slice(b"cow-only");
    }
    rw.update(4096, b"rw-bytes".to_vec()).await.unwrap();
    assert_eq!(&cow.load(4096, 8).await.unwrap()[..], b"cow-only");
    rw.close().await.unwrap();
    assert_eq!(&cow.load(0, 7).await.unwrap()[..], b"private");
    cow.close().await.unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..7], b"shared!");
    assert_eq!(&bytes[4096..4104], b"rw-bytes");
}
