//! `MappedFile::watch` reports what another process does to the mapped
//! file (`write(2)` through `dd`, `rm`), and `AsFd` gives the open's own
//! descriptor (the same inode, opened for the open's mode).

mod common;

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::process::Command;
use std::time::Duration;

use common::Scratch;
use futures::StreamExt;
use mmap_actor::{Error, FileEvent, MappedFile, Watch};

/// Hang detector only.
const WAIT: Duration = Duration::from_secs(10);

/// The next event that is not `Metadata` (a write also touches times).
async fn next_change(events: &mut Watch) -> Option<FileEvent> {
    loop {
        match tokio::time::timeout(WAIT, events.next()).await {
            Ok(Some(Ok(FileEvent::Metadata))) => continue,
            Ok(Some(Ok(event))) => return Some(event),
            Ok(Some(Err(err))) => panic!("watch error: {err}"),
            Ok(None) => return None,
            Err(_) => panic!("no event within {WAIT:?}"),
        }
    }
}

fn sh(script: &str, path: &std::path::Path) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(path)
        .output()
        .expect("spawn sh");
    assert!(out.status.success(), "{script}: {out:?}");
}

#[tokio::test]
async fn watch_sees_another_process_write_and_remove_the_file() {
    let scratch = Scratch::new();
    let path = scratch.path("watched");
    let file = MappedFile::create(&path, 4096).await.unwrap();
    let mut events = file.watch().await.unwrap();
    sh(
        "printf abc | dd of=\"$1\" bs=1 seek=10 conv=notrunc status=none",
        &path,
    );
    assert_eq!(next_change(&mut events).await, Some(FileEvent::Modified));
    // The other process's bytes are in the page cache this mapping shares.
    assert_eq!(&file.load(10, 3).await.unwrap()[..], b"abc");
    sh("rm \"$1\"", &path);
    loop {
        match next_change(&mut events).await {
            Some(FileEvent::Removed) => break,
            Some(FileEvent::Modified) => continue,
            other => panic!("expected Removed, got {other:?}"),
        }
    }
    assert_eq!(
        next_change(&mut events).await,
        None,
        "Removed ends the stream"
    );

    file.close().await.unwrap();
    assert!(matches!(file.watch().await, Err(Error::Closed)));
}

#[tokio::test]
async fn as_fd_is_the_opens_own_descriptor() {
    let scratch = Scratch::new();
    let path = scratch.path("f");
    let rw = MappedFile::create(&path, 8192).await.unwrap();
    let fd = std::fs::File::from(rw.as_fd().try_clone_to_owned().unwrap());
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(
        (fd.metadata().unwrap().dev(), fd.metadata().unwrap().ino()),
        (meta.dev(), meta.ino())
    );
    // Read-write: writable, and what it writes is what the mapping shows.
    fd.write_all_at(b"via fd", 100).unwrap();
    assert_eq!(&rw.load(100, 6).await.unwrap()[..], b"via fd");

    // Read-only (and copy-on-write) opens hold a read-only descriptor.
    for file in [
        MappedFile::open_ro(&path).await.unwrap(),
        MappedFile::open_cow(&path).await.unwrap(),
    ] {
        let mut fd = std::fs::File::from(file.as_fd().try_clone_to_owned().unwrap());
        assert!(
            fd.write_all(b"x").is_err(),
            "{:?}: writable descriptor",
            file.mode()
        );
        let mut buf = [0u8; 6];
        fd.read_exact_at(&mut buf, 100).unwrap();
        assert_eq!(&buf, b"via fd");
    }
    // It stays valid after close, as long as the handle lives.
    rw.close().await.unwrap();
    assert_eq!(
        std::fs::File::from(rw.as_fd().try_clone_to_owned().unwrap())
            .metadata()
            .unwrap()
            .ino(),
        meta.ino()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn watch_works_outside_a_runtime_too() {
    let scratch = Scratch::new();
    let path = scratch.path("f");
    let file = MappedFile::create(&path, 4096).await.unwrap();
    let handle = file.clone();
    let mut events = std::thread::spawn(move || futures::executor::block_on(handle.watch()))
        .join()
        .expect("watch outside a runtime panicked")
        .unwrap();
    sh("printf x >> \"$1\"", &path);
    assert_eq!(next_change(&mut events).await, Some(FileEvent::Modified));
}
