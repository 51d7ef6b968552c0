//! `close`, dropping every handle, and leases that outlive the handles.

mod common;

use std::sync::atomic::Ordering;

use mmap_actor::{Error, MappedFile};

#[tokio::test]
async fn after_close_every_call_on_every_handle_is_closed() {
    let s = common::Scratch::new();
    let path = s.path("close");
    let file = MappedFile::create(&path, 8192).await.unwrap();
    let other = file.clone();
    file.update(0, &b"before close"[..]).await.unwrap();
    file.close().await.unwrap();
    assert!(file.is_closed() && other.is_closed());
    let closed = |r: Result<(), Error>| assert!(matches!(r, Err(Error::Closed)), "{r:?}");
    closed(other.update(0, &b"x"[..]).await);
    closed(other.update(0, vec![0u8; 100_000]).await);
    closed(other.load(0, 1).await.map(|_| ()));
    closed(other.load(0, 8192).await.map(|_| ()));
    closed(other.flush().await);
    closed(other.flush_range(0, 1).await);
    closed(other.resize(1).await);
    closed(other.segment(0, 1).await.map(|_| ()));
    closed(other.atomic_u64(0).await.map(|_| ()));
    closed(other.close().await);
    assert_eq!(&std::fs::read(&path).unwrap()[..12], b"before close");
}

#[tokio::test]
async fn close_answers_queued_waiters() {
    let s = common::Scratch::new();
    let file = s.file("queued", 4096).await;
    let held = file.segment_mut(0, 16).await.unwrap();
    let waiter = {
        let f = file.clone();
        tokio::spawn(async move { f.load(0, 16).await })
    };
    tokio::task::yield_now().await;
    while !file
        .try_load(0, 16)
        .await
        .is_err_and(|e| matches!(e, Error::Conflict { .. }))
    {
        tokio::task::yield_now().await;
    }
    file.close().await.unwrap();
    assert!(matches!(waiter.await.unwrap(), Err(Error::Closed)));
    // The lease stays valid after close.
    assert_eq!(held.len(), 16);
}

#[tokio::test]
async fn dropping_every_handle_flushes_and_stops_the_actor() {
    let s = common::Scratch::new();
    let path = s.path("dropped");
    let (file, actor) = MappedFile::options()
        .create(true)
        .len(4096)
        .open_unspawned(&path)
        .await
        .unwrap();
    let actor = tokio::spawn(actor.run());
    let clone = file.clone();
    file.update(10, &b"last words"[..]).await.unwrap();
    drop(file);
    assert!(!actor.is_finished());
    drop(clone);
    // The actor ends by itself once the handles are gone.
    tokio::time::timeout(std::time::Duration::from_secs(30), actor)
        .await
        .expect("actor stopped")
        .unwrap();
    assert_eq!(&std::fs::read(&path).unwrap()[10..20], b"last words");
}

#[tokio::test]
async fn leases_outlive_the_handles_and_the_actor() {
    let s = common::Scratch::new();
    let file = s.file("outlive", 4096).await;
    file.update(0, &b"still mapped"[..]).await.unwrap();
    let seg = file.segment(0, 12).await.unwrap();
    let counter = file.atomic_u64(64).await.unwrap();
    file.close().await.unwrap();
    drop(file);
    assert_eq!(&seg[..], b"still mapped");
    counter.fetch_add(2, Ordering::SeqCst);
    // Dropped on another thread, after the actor stopped: fine.
    std::thread::spawn(move || {
        assert_eq!(counter.load(Ordering::SeqCst), 2);
        drop(counter);
        drop(seg);
    })
    .join()
    .unwrap();
}

#[tokio::test]
async fn handle_facts_need_no_round_trip() {
    let s = common::Scratch::new();
    let file = s.file("facts", 10).await;
    assert_eq!(file.len(), 10);
    assert!(!file.is_empty());
    assert!(!file.is_poisoned());
    assert!(!file.is_closed());
    assert_eq!(file.mode(), mmap_actor::Mode::ReadWrite);
    assert!(file.path().ends_with("facts"));
}

/// A file closed while its runtime shuts down, then removed: its actor may
/// not have stopped yet, and a new file can get the same inode number. A
/// new open of that file must start its own actor instead of joining the
/// stopping one (which answered `Panicked` or `Closed` when its runtime
/// went away under it).
#[test]
fn lifecycle_a_reused_inode_never_joins_a_stopping_actor() {
    let s = common::Scratch::new();
    let mut reused = 0;
    for round in 0..40 {
        let path = s.path(&format!("f{}", round % 2));
        let old = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let ino = old.block_on(async {
            let file = mmap_actor::MappedFile::create(&path, 4096).await.unwrap();
            file.close().await.unwrap();
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap())
        });
        // The actor may still be running its end: do not wait for it.
        old.shutdown_background();
        std::fs::remove_file(&path).unwrap();
        let new = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        new.block_on(async {
            let file = mmap_actor::MappedFile::create(&path, 8192)
                .await
                .unwrap_or_else(|e| panic!("round {round}: create after a removal: {e:?}"));
            if std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap()) == ino {
                reused += 1;
            }
            file.update(0, b"new".to_vec()).await.unwrap();
            assert_eq!(file.len(), 8192);
            file.close().await.unwrap();
        });
        std::fs::remove_file(&path).unwrap();
    }
    println!("inode numbers reused in {reused} of 40 rounds");
}
