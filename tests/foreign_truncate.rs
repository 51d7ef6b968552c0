//! Another process truncates the file.
//!
//! The library cannot stop a process that does not cooperate: if the file is
//! cut while mapped, touching a page past the new end raises `SIGBUS` (crate
//! docs, "Soundness"). The first test pins that behaviour in a child process.
//! The others test the opt-in advisory lock (`OpenOptions::lock`): a
//! cooperating open of a file another handle has mapped read-write with the
//! lock fails with `Error::Locked`, within a process and across processes,
//! and so cannot truncate or shrink it.

mod common;

use std::path::Path;
use std::process::Command;

use common::{child, SplitMix};
use mmap_actor::{Error, MappedFile, Mode};

/// Carries `<scenario>:<path>` to the child.
const CHILD_ENV: &str = "MMAP_ACTOR_FOREIGN_TRUNCATE";
const CHILD_TEST: &str = "foreign_truncate_child_runs_scenario";
const LEN: u64 = 64 * 1024;

fn pattern() -> Vec<u8> {
    SplitMix::bytes(0x7472, LEN as usize)
}

async fn locked(path: &Path) -> MappedFile {
    MappedFile::options()
        .lock(true)
        .open(path)
        .await
        .expect("open with the lock")
}

fn assert_locked(result: mmap_actor::Result<MappedFile>, path: &Path, what: &str) {
    match result {
        Err(Error::Locked { path: p }) => assert_eq!(p, path, "{what}: wrong path in the error"),
        Err(other) => panic!("{what}: expected Error::Locked, got {other:?}"),
        Ok(_) => panic!("{what}: opened a file another mapping holds locked"),
    }
}

/// Every cooperating open that would map, truncate or shrink the file is
/// refused while another mapping holds it locked read-write.
async fn assert_every_locked_open_refused(path: &Path) {
    let opts = |mode| {
        let mut o = MappedFile::options();
        o.mode(mode).lock(true);
        o
    };
    assert_locked(opts(Mode::ReadWrite).open(path).await, path, "read-write");
    assert_locked(opts(Mode::ReadOnly).open(path).await, path, "read-only");
    assert_locked(
        opts(Mode::CopyOnWrite).open(path).await,
        path,
        "copy-on-write",
    );
    assert_locked(
        opts(Mode::ReadWrite).truncate(true).open(path).await,
        path,
        "truncate",
    );
    assert_locked(
        opts(Mode::ReadWrite).len(LEN / 4).open(path).await,
        path,
        "shrink",
    );
    assert_locked(
        opts(Mode::ReadWrite).create(true).len(0).open(path).await,
        path,
        "create",
    );
    assert_eq!(
        std::fs::metadata(path).expect("stat").len(),
        LEN,
        "a refused open changed the length"
    );
}

async fn segment_then_truncate(path: &Path) {
    let file = MappedFile::create(path, LEN).await.expect("create");
    file.update(0, pattern()).await.expect("fill");
    let seg = file.segment(0, LEN).await.expect("segment");
    assert_eq!(&seg[..], &pattern()[..]);
    let status = Command::new("truncate")
        .args(["-s", "0"])
        .arg(path)
        .status()
        .expect("run truncate");
    assert!(status.success(), "truncate failed");
    assert_eq!(std::fs::metadata(path).expect("stat").len(), 0);
    println!("TRUNCATED-BY-ANOTHER-PROCESS");
    // Past the file's new end: the kernel raises SIGBUS here.
    let sum = seg
        .iter()
        .fold(0u64, |acc, &b| acc.wrapping_add(u64::from(b)));
    std::hint::black_box(sum);
    println!("SURVIVED-TOUCH");
}

async fn locked_elsewhere(path: &Path) {
    assert_every_locked_open_refused(path).await;
    // The lock is advisory: a handle that does not ask for it still opens.
    let unlocked = MappedFile::open_ro(path)
        .await
        .expect("open without the lock");
    assert_eq!(unlocked.len(), LEN);
}

async fn hold_shared_lock(path: &Path) {
    // A read-write lock is refused while a reader holds the shared lock ...
    assert_locked(
        MappedFile::options().lock(true).open(path).await,
        path,
        "read-write while read-only locked",
    );
    // ... but readers coexist.
    let reader = MappedFile::options()
        .mode(Mode::ReadOnly)
        .lock(true)
        .open(path)
        .await
        .expect("a second shared lock");
    assert_eq!(
        &reader.load(0, LEN).await.expect("load")[..],
        &pattern()[..]
    );
}

async fn take_rw_lock(path: &Path) {
    let file = locked(path).await;
    file.update(0, b"child".to_vec()).await.expect("update");
    // Exits holding the lock: the kernel drops it with the process.
}

#[tokio::test]
#[ignore = "child process of the foreign_truncate_* tests"]
async fn foreign_truncate_child_runs_scenario() {
    let Ok(arg) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (scenario, path) = arg.split_once(':').expect("scenario:path");
    let path = Path::new(path);
    match scenario {
        "segment_then_truncate" => segment_then_truncate(path).await,
        "locked_elsewhere" => locked_elsewhere(path).await,
        "hold_shared_lock" => hold_shared_lock(path).await,
        "take_rw_lock" => take_rw_lock(path).await,
        other => panic!("unknown scenario {other}"),
    }
    println!("SCENARIO-PASSED {scenario}");
}

#[test]
fn foreign_truncate_under_a_segment_is_a_sigbus() {
    if !common::have("truncate") {
        return child::skip(
            "foreign_truncate_under_a_segment_is_a_sigbus",
            "truncate is not installed",
        );
    }
    let scratch = common::Scratch::new();
    let path = scratch.path("data.bin");
    let out = child::run(&mut child::command(
        CHILD_TEST,
        CHILD_ENV,
        format!("segment_then_truncate:{}", path.display()),
    ));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        child::signal(&out.status) == Some(child::SIGBUS)
            && stdout.contains("TRUNCATED-BY-ANOTHER-PROCESS")
            && !stdout.contains("SURVIVED-TOUCH"),
        "expected the child to die of SIGBUS touching the truncated segment\n{}",
        child::describe(&out)
    );
}

#[tokio::test]
async fn foreign_truncate_lock_refuses_a_second_open_in_process() {
    let scratch = common::Scratch::new();
    let path = scratch.path("data.bin");
    std::fs::write(&path, pattern()).expect("write");
    let file = locked(&path).await;
    assert_every_locked_open_refused(&path).await;
    // The holder is unaffected.
    assert_eq!(file.len(), LEN);
    assert_eq!(&file.load(0, LEN).await.expect("load")[..], &pattern()[..]);
    file.update(0, b"still mine".to_vec())
        .await
        .expect("update");
    file.resize(2 * LEN).await.expect("the holder may resize");
}

#[tokio::test]
async fn foreign_truncate_lock_refuses_an_open_in_another_process() {
    let scratch = common::Scratch::new();
    let path = scratch.path("data.bin");
    std::fs::write(&path, pattern()).expect("write");
    let file = locked(&path).await;
    let out = child::run(&mut child::command(
        CHILD_TEST,
        CHILD_ENV,
        format!("locked_elsewhere:{}", path.display()),
    ));
    child::assert_success(&out, "SCENARIO-PASSED locked_elsewhere");
    assert_eq!(file.len(), LEN);
    assert_eq!(&file.load(0, LEN).await.expect("load")[..], &pattern()[..]);
}

#[tokio::test]
async fn foreign_truncate_shared_locks_coexist_and_exclude_a_writer() {
    let scratch = common::Scratch::new();
    let path = scratch.path("data.bin");
    std::fs::write(&path, pattern()).expect("write");
    let _reader = MappedFile::options()
        .mode(Mode::ReadOnly)
        .lock(true)
        .open(&path)
        .await
        .expect("shared lock");
    let out = child::run(&mut child::command(
        CHILD_TEST,
        CHILD_ENV,
        format!("hold_shared_lock:{}", path.display()),
    ));
    child::assert_success(&out, "SCENARIO-PASSED hold_shared_lock");
}

#[tokio::test]
async fn foreign_truncate_lock_is_released_when_the_mapping_is_gone() {
    let scratch = common::Scratch::new();
    let path = scratch.path("data.bin");
    std::fs::write(&path, pattern()).expect("write");
    // A child process takes the lock and exits: the kernel releases it.
    let out = child::run(&mut child::command(
        CHILD_TEST,
        CHILD_ENV,
        format!("take_rw_lock:{}", path.display()),
    ));
    child::assert_success(&out, "SCENARIO-PASSED take_rw_lock");
    let file = locked(&path).await;
    assert_eq!(&file.load(0, 5).await.expect("load")[..], b"child");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_truncate_lock_is_released_when_close_returns() {
    let scratch = common::Scratch::new();
    let path = scratch.path("data.bin");
    std::fs::write(&path, pattern()).expect("write");
    // The race is narrow: try it many times.
    for round in 0..200 {
        let file = MappedFile::options()
            .lock(true)
            .open(&path)
            .await
            .unwrap_or_else(|err| {
                panic!("round {round}: the lock was still held after close: {err:?}")
            });
        file.close().await.expect("close");
    }
}
