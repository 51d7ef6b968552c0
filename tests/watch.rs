//! `watch`: another process changes the file (`sh`, `truncate`, `chmod`,
//! `mv`, `rm`) and the stream reports the right event; removal ends the
//! stream, even while the file is mapped; a slow consumer gets an exact
//! `Lagged` count; stores through a mapping are not reported; bad paths are
//! typed errors; and creating and dropping thousands of watches leaks no
//! descriptor or thread (in a child process, so that other tests' files do
//! not blur the count).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Scratch;
use futures::StreamExt;
use mmap_actor::{watch, Error, FileEvent, MappedFile, Watch};

/// Generous: a hang detector, not a speed assertion.
const WAIT: Duration = Duration::from_secs(10);

/// Runs `script` with `sh -c`, its positional parameters `$1`, `$2`, ...
/// set to `args`.
fn sh(script: &str, args: &[&Path]) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .args(args)
        .output()
        .expect("spawn sh");
    assert!(
        out.status.success(),
        "`{script}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The next item, within [`WAIT`]; `None` when the stream ended.
async fn next(events: &mut Watch) -> Option<FileEvent> {
    match tokio::time::timeout(WAIT, events.next()).await {
        Ok(Some(Ok(event))) => Some(event),
        Ok(Some(Err(err))) => panic!("watch error: {err}"),
        Ok(None) => None,
        Err(_) => panic!("no event within {WAIT:?}"),
    }
}

/// A file with some bytes in a fresh directory, and a watch on it.
fn watched(s: &Scratch, name: &str) -> (PathBuf, Watch) {
    let path = s.path(name);
    std::fs::write(&path, b"0123456789").unwrap();
    let events = watch(&path).expect("watch");
    (path, events)
}

#[tokio::test]
async fn appends_and_truncations_are_modified() {
    let s = Scratch::new();
    let (path, mut events) = watched(&s, "f");
    sh("printf x >> \"$1\"", &[&path]);
    assert_eq!(next(&mut events).await, Some(FileEvent::Modified));
    sh("truncate -s 100000 \"$1\"", &[&path]);
    assert_eq!(next(&mut events).await, Some(FileEvent::Modified));
    sh("truncate -s 3 \"$1\"", &[&path]);
    assert_eq!(next(&mut events).await, Some(FileEvent::Modified));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 3);
}

#[tokio::test]
async fn chmod_and_touch_are_metadata() {
    let s = Scratch::new();
    let (path, mut events) = watched(&s, "f");
    sh("chmod 600 \"$1\"", &[&path]);
    assert_eq!(next(&mut events).await, Some(FileEvent::Metadata));
    sh("touch -d 2001-01-01 \"$1\"", &[&path]);
    assert_eq!(next(&mut events).await, Some(FileEvent::Metadata));
    // A new hard link changes the link count: metadata, not a removal.
    let link = s.path("link");
    sh("ln \"$1\" \"$2\"", &[&path, &link]);
    assert_eq!(next(&mut events).await, Some(FileEvent::Metadata));
    // Removing one of two links is metadata too: the file lives on.
    sh("rm \"$1\"", &[&link]);
    assert_eq!(next(&mut events).await, Some(FileEvent::Metadata));
}

#[tokio::test]
async fn removal_ends_the_stream() {
    let s = Scratch::new();
    let (path, mut events) = watched(&s, "f");
    sh("rm \"$1\"", &[&path]);
    assert_eq!(next(&mut events).await, Some(FileEvent::Removed));
    assert_eq!(next(&mut events).await, None);
    assert_eq!(next(&mut events).await, None);
    // A new file at the same path is another file: not reported.
    std::fs::write(&path, b"new").unwrap();
    assert_eq!(next(&mut events).await, None);
}

/// A file already removed when the watch starts (reached through a
/// descriptor's `/proc/self/fd` link) reports it at once.
#[tokio::test]
async fn a_file_removed_before_the_watch_reports_it_at_once() {
    use std::os::fd::AsRawFd;
    let s = Scratch::new();
    let path = s.path("f");
    std::fs::write(&path, b"x").unwrap();
    let open = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let mut events = watch(format!("/proc/self/fd/{}", open.as_raw_fd())).unwrap();
    assert_eq!(next(&mut events).await, Some(FileEvent::Removed));
    assert_eq!(next(&mut events).await, None);
}

/// The kernel's own deletion event waits until nobody has the file open or
/// mapped; the watch reports the removal at once regardless.
#[tokio::test]
async fn removal_of_a_mapped_file_is_reported_at_once() {
    let s = Scratch::new();
    let (path, mut events) = watched(&s, "f");
    let file = MappedFile::open_rw(&path).await.unwrap();
    let started = Instant::now();
    sh("rm \"$1\"", &[&path]);
    assert_eq!(next(&mut events).await, Some(FileEvent::Removed));
    assert!(started.elapsed() < WAIT);
    assert_eq!(next(&mut events).await, None);
    // The mapping still works: it outlives the name.
    file.update(0, b"still here".to_vec()).await.unwrap();
    file.close().await.unwrap();
}

#[tokio::test]
async fn renames_are_followed_and_replacement_is_removal() {
    let s = Scratch::new();
    let (path, mut events) = watched(&s, "f");
    let moved = s.path("moved");
    sh("mv \"$1\" \"$2\"", &[&path, &moved]);
    let to = std::fs::canonicalize(&moved).unwrap();
    assert_eq!(
        next(&mut events).await,
        Some(FileEvent::Renamed { to: Some(to) })
    );
    // The watch follows the file, not the old name.
    std::fs::write(&path, b"another file").unwrap();
    sh("printf x >> \"$1\"", &[&moved]);
    assert_eq!(next(&mut events).await, Some(FileEvent::Modified));
    // Another file renamed over it: its last name is gone.
    sh("mv \"$1\" \"$2\"", &[&path, &moved]);
    assert_eq!(next(&mut events).await, Some(FileEvent::Removed));
    assert_eq!(next(&mut events).await, None);
}

/// Stores through a mapping are invisible to inotify: the first event after
/// a mapped update is the `chmod` that follows it.
#[tokio::test]
async fn stores_through_a_mapping_are_not_reported() {
    let s = Scratch::new();
    let (path, mut events) = watched(&s, "f");
    let file = MappedFile::open_rw(&path).await.unwrap();
    file.update(0, b"abc".to_vec()).await.unwrap();
    let counter = file.atomic_u64(8).await;
    drop(counter);
    file.flush().await.unwrap();
    sh("chmod 640 \"$1\"", &[&path]);
    assert_eq!(next(&mut events).await, Some(FileEvent::Metadata));
    assert_eq!(&std::fs::read(&path).unwrap()[..3], b"abc");
    file.close().await.unwrap();
}

#[tokio::test]
async fn a_slow_consumer_gets_an_exact_lag_count() {
    let s = Scratch::new();
    let (path, mut events) = watched(&s, "f");
    const WRITES: u64 = 500;
    // Every change happens before the stream is polled at all: 500 writes
    // and a chmod, far more than the buffer holds.
    sh(
        &format!("i=0; while [ $i -lt {WRITES} ]; do printf x >> \"$1\"; i=$((i+1)); done"),
        &[&path],
    );
    sh("chmod 600 \"$1\"", &[&path]);
    // Each event is either reported or counted in a `Lagged`, exactly once.
    let (mut reported, mut missed, mut lags) = (0, 0, 0);
    while reported + missed < WRITES + 1 {
        match next(&mut events).await.expect("the stream ended") {
            FileEvent::Modified | FileEvent::Metadata => reported += 1,
            FileEvent::Lagged { missed: Some(n) } => {
                lags += 1;
                missed += n;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(lags >= 1, "{WRITES} unread events must overflow the buffer");
    assert_eq!(
        reported + missed,
        WRITES + 1,
        "{reported} reported, {missed} missed"
    );
    // Nothing else was queued, and delivery goes on normally.
    sh("printf y >> \"$1\"", &[&path]);
    assert_eq!(next(&mut events).await, Some(FileEvent::Modified));
}

#[tokio::test]
async fn every_watch_of_a_file_sees_its_events() {
    let s = Scratch::new();
    let (path, mut first) = watched(&s, "f");
    let mut second = watch(&path).unwrap();
    sh("printf x >> \"$1\"", &[&path]);
    assert_eq!(next(&mut first).await, Some(FileEvent::Modified));
    assert_eq!(next(&mut second).await, Some(FileEvent::Modified));
    // Dropping one leaves the other watching.
    drop(first);
    sh("chmod 600 \"$1\"", &[&path]);
    assert_eq!(next(&mut second).await, Some(FileEvent::Metadata));
    assert_eq!(second.path(), path);
}

#[test]
fn bad_paths_are_typed_errors_with_the_path() {
    let s = Scratch::new();
    let missing = s.path("missing");
    match watch(&missing) {
        Err(err @ Error::Io { .. }) => {
            assert_eq!(err.io_kind(), Some(std::io::ErrorKind::NotFound));
            let Error::Io { op, path, .. } = &err else {
                unreachable!()
            };
            assert_eq!((*op, path), ("open", &missing));
        }
        other => panic!("watch(missing): {other:?}"),
    }
    match watch(s.dir.path()) {
        Err(err @ Error::Io { op: "watch", .. }) => {
            assert_eq!(err.raw_os_error(), Some(libc::EISDIR))
        }
        other => panic!("watch(directory): {other:?}"),
    }
    match watch("") {
        Err(err @ Error::Io { .. }) => {
            assert_eq!(err.io_kind(), Some(std::io::ErrorKind::NotFound))
        }
        other => panic!("watch(\"\"): {other:?}"),
    }
}

#[test]
fn watch_is_send_unpin_and_static() {
    fn check<T: Send + Unpin + 'static>() {}
    check::<Watch>();
    check::<FileEvent>();
}

const LEAK_ENV: &str = "MMAP_ACTOR_WATCH_LEAK_DIR";

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Waits until the counts are back to `baseline`, or fails after [`WAIT`].
fn assert_back_to(baseline: (usize, usize), what: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = (open_fds(), threads());
        if now == baseline {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after {what}: (descriptors, threads) = {now:?}, was {baseline:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The next item without a runtime (polling), within [`WAIT`].
fn next_blocking(events: &mut Watch) -> Option<mmap_actor::Result<FileEvent>> {
    use futures::FutureExt;
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(item) = events.next().now_or_never() {
            return item;
        }
        assert!(Instant::now() < deadline, "no event within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The child half of [`dropped_watches_leak_nothing`]: no runtime, so that
/// nothing but the watches opens descriptors or starts threads.
#[test]
#[ignore = "child process of dropped_watches_leak_nothing"]
fn leak_child() {
    let Some(dir) = std::env::var_os(LEAK_ENV).map(PathBuf::from) else {
        return;
    };
    let path = dir.join("one");
    std::fs::write(&path, b"x").unwrap();
    let baseline = (open_fds(), threads());

    for _ in 0..2000 {
        drop(watch(&path).unwrap());
    }
    assert_back_to(baseline, "2,000 watches created and dropped in turn");

    // More files watched at once than the per-user limit of inotify
    // instances (128 by default) allows instances: they share one.
    let paths: Vec<PathBuf> = (0..300).map(|i| dir.join(format!("f{i}"))).collect();
    for p in &paths {
        std::fs::write(p, b"x").unwrap();
    }
    let mut all: Vec<Watch> = paths.iter().map(|p| watch(p).unwrap()).collect();
    let out = Command::new("chmod")
        .arg("600")
        .args(&paths)
        .status()
        .unwrap();
    assert!(out.success());
    for w in &mut all {
        let got = next_blocking(w);
        assert!(
            matches!(got, Some(Ok(FileEvent::Metadata))),
            "{}: {got:?}",
            w.path().display()
        );
    }
    drop(all);
    assert_back_to(baseline, "300 watches held at once, then dropped");
    println!("leak child: no descriptor or thread left");
}

#[test]
fn dropped_watches_leak_nothing() {
    let s = Scratch::new();
    let out = common::child::run(&mut common::child::command(
        "leak_child",
        LEAK_ENV,
        s.dir.path(),
    ));
    common::child::assert_success(&out, "leak child: no descriptor or thread left");
}
