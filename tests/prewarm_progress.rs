//! `prewarm_progress`: the items it yields (steps ending at multiples of
//! `PREWARM_STEP`, `done` rising to `total`), bad and empty ranges, leases
//! it does not wait for, dropping it part way, and failures as error items:
//! a file truncated by someone else (`EFAULT`, no `SIGBUS`) and an I/O
//! error injected into `madvise`, both in child processes.

mod common;

use std::time::Duration;

use common::{child, Scratch};
use futures::StreamExt;
use mmap_actor::{Error, MappedFile, Progress, PREWARM_STEP};

const CHILD_ENV: &str = "MMAP_ACTOR_PREWARM_PROGRESS";
const CHILD_TEST: &str = "prewarm_progress_child_runs_scenario";
/// Hang detector only.
const HANG: Duration = Duration::from_secs(20);

async fn collect(file: &MappedFile, offset: u64, len: u64) -> Vec<mmap_actor::Result<Progress>> {
    let stream = file.prewarm_progress(offset, len);
    tokio::time::timeout(HANG, stream.collect::<Vec<_>>())
        .await
        .expect("prewarm_progress hung")
}

fn ok_items(items: Vec<mmap_actor::Result<Progress>>) -> Vec<Progress> {
    items
        .into_iter()
        .map(|item| item.expect("a progress item"))
        .collect()
}

#[tokio::test]
async fn steps_end_at_multiples_of_the_step_and_reach_the_total() {
    let scratch = Scratch::new();
    let len = 2 * PREWARM_STEP + 12_345;
    let file = scratch.file("big", len).await;
    let items = ok_items(collect(&file, 5, len - 5).await);
    let total = len - 5;
    assert_eq!(
        items,
        vec![
            Progress {
                done: PREWARM_STEP - 5,
                total
            },
            Progress {
                done: 2 * PREWARM_STEP - 5,
                total
            },
            Progress { done: total, total },
        ]
    );
    // A range inside one step is one item.
    let items = ok_items(collect(&file, PREWARM_STEP + 1, 100).await);
    assert_eq!(
        items,
        vec![Progress {
            done: 100,
            total: 100
        }]
    );
    // A range ending exactly on a step boundary has no empty last step.
    let items = ok_items(collect(&file, 0, 2 * PREWARM_STEP).await);
    assert_eq!(items.len(), 2);
    assert_eq!(items[1].done, 2 * PREWARM_STEP);
}

#[tokio::test]
async fn empty_bad_and_closed_ranges() {
    let scratch = Scratch::new();
    let file = scratch.file("f", 4096).await;
    for (offset, len) in [(0, 0), (4096, 0), (17, 0)] {
        let items = ok_items(collect(&file, offset, len).await);
        assert_eq!(
            items,
            vec![Progress { done: 0, total: 0 }],
            "({offset}, {len})"
        );
    }
    for (offset, len) in [(0, 4097), (4097, 0), (u64::MAX, 1), (1, u64::MAX)] {
        let items = collect(&file, offset, len).await;
        assert_eq!(items.len(), 1, "one error item, then the end");
        match &items[0] {
            Err(Error::OutOfBounds {
                offset: o,
                len: l,
                file_len,
            }) => assert_eq!((*o, *l, *file_len), (offset, len, 4096)),
            other => panic!("({offset}, {len}): {other:?}"),
        }
    }
    // The stream is fused.
    let mut stream = file.prewarm_progress(0, 8192);
    assert!(stream.next().await.unwrap().is_err());
    assert!(stream.next().await.is_none());
    assert!(stream.next().await.is_none());
    assert!(futures::stream::FusedStream::is_terminated(&stream));

    file.close().await.unwrap();
    let items = collect(&file, 0, 4096).await;
    assert!(matches!(items[..], [Err(Error::Closed)]), "{items:?}");
}

#[tokio::test]
async fn it_waits_for_no_lease_and_changes_no_byte() {
    let scratch = Scratch::new();
    let len = PREWARM_STEP + 4096;
    let file = scratch.file("leased", len).await;
    file.update(0, vec![3u8; 4096]).await.unwrap();
    let mut seg = file.segment_mut(0, 4096).await.unwrap();
    let counter = file.atomic_u64(PREWARM_STEP).await.unwrap();
    let items = ok_items(collect(&file, 0, len).await);
    assert_eq!(
        items.last(),
        Some(&Progress {
            done: len,
            total: len
        })
    );
    seg[0] = 4;
    drop((seg, counter));
    let bytes = file.load(0, 4096).await.unwrap();
    assert_eq!(bytes[0], 4);
    assert!(bytes[1..].iter().all(|b| *b == 3));
}

#[tokio::test]
async fn dropping_the_stream_part_way_leaves_the_mapping_working() {
    let scratch = Scratch::new();
    let len = 4 * PREWARM_STEP;
    let file = scratch.file("dropped", len).await;
    let mut stream = file.prewarm_progress(0, len);
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.done, PREWARM_STEP);
    drop(stream);
    // A dropped stream queues nothing: a shrink (which would wait for
    // nothing but leases) and the other calls go through.
    tokio::time::timeout(HANG, file.resize(4096))
        .await
        .expect("a dropped prewarm left something behind")
        .unwrap();
    file.update(0, vec![1u8; 10]).await.unwrap();
    // And a stream dropped before its first poll did nothing at all.
    drop(file.prewarm_progress(0, 4096));
    assert_eq!(file.load(0, 1).await.unwrap()[0], 1);
}

#[tokio::test]
#[ignore = "child process of the prewarm_progress tests"]
async fn prewarm_progress_child_runs_scenario() {
    let Some(arg) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let arg = arg.into_string().unwrap();
    let (scenario, dir) = arg.split_once(':').unwrap();
    let path = std::path::Path::new(dir).join("f");
    let len = 3 * PREWARM_STEP;
    let file = MappedFile::create(&path, len).await.unwrap();
    let (want_errno, first_ok) = match scenario {
        "truncated" => {
            // Someone else cuts the file (not through this library) to
            // just past the first step.
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(PREWARM_STEP + 4096)
                .unwrap();
            (libc::EFAULT, true)
        }
        "eio" => (libc::EIO, false),
        other => panic!("unknown scenario {other}"),
    };
    let items = collect(&file, 0, len).await;
    println!("items: {items:?}");
    let (last, before) = items.split_last().expect("at least one item");
    if first_ok {
        assert_eq!(before.len(), 1, "the first step is inside the file");
        assert!(matches!(before[0], Ok(Progress { done, .. }) if done == PREWARM_STEP));
    } else {
        assert!(before.is_empty());
    }
    match last {
        Err(err @ Error::Io { op: "madvise", .. }) => {
            assert_eq!(err.raw_os_error(), Some(want_errno), "{err}")
        }
        other => panic!("expected an madvise error item, got {other:?}"),
    }
    // The mapping keeps serving what is still inside the file.
    file.update(0, vec![1u8; 10]).await.unwrap();
    std::mem::forget(file);
    println!("child done: {scenario}");
}

fn run_child(scenario: &str, wrapper: &[&str]) {
    let scratch = Scratch::new();
    let arg = format!("{scenario}:{}", scratch.dir.path().display());
    let out = child::run(&mut child::wrapped(wrapper, CHILD_TEST, CHILD_ENV, arg));
    assert_ne!(
        child::signal(&out.status),
        Some(child::SIGBUS),
        "prewarm raised SIGBUS\n{}",
        child::describe(&out)
    );
    child::assert_success(&out, &format!("child done: {scenario}"));
}

#[test]
fn a_file_truncated_by_someone_else_is_an_error_item_not_a_sigbus() {
    run_child("truncated", &[]);
}

#[test]
fn an_io_error_under_the_pages_is_an_error_item() {
    if !common::have("strace") {
        child::skip("an_io_error_under_the_pages_is_an_error_item", "no strace");
        return;
    }
    // Every `madvise` of the child fails with EIO (the allocator ignores
    // its own failures): the first step reports it.
    run_child(
        "eio",
        &[
            "strace",
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "inject=madvise:error=EIO",
        ],
    );
}
