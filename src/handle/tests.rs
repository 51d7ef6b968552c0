//! The direct path reopens after everything that closes it: a leaked hold
//! would silently send every small call through the actor (the P1/P2
//! gains gone) while every other test still passed.

use std::time::Duration;

use super::MappedFile;

/// Whether a small update would be served by the calling task now.
fn direct_open(file: &MappedFile) -> bool {
    file.shared.current.enter().is_some()
}

/// Waits (bounded) until the direct path is open again: the actor drops its
/// hold just after answering, so the caller may see it an instant later.
async fn assert_reopens(file: &MappedFile, after: &str) {
    for _ in 0..2000 {
        if direct_open(file) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the direct path stayed closed after {after}");
}

async fn scratch(len: u64) -> (tempfile::TempDir, MappedFile) {
    let dir = tempfile::tempdir().unwrap();
    let file = MappedFile::create(dir.path().join("f"), len).await.unwrap();
    (dir, file)
}

#[tokio::test]
async fn gate_reopens_after_a_lease_is_dropped() {
    let (_dir, file) = scratch(4096).await;
    assert!(direct_open(&file));
    let seg = file.segment(0, 64).await.unwrap();
    assert!(!direct_open(&file), "a live lease closes the direct path");
    drop(seg);
    assert_reopens(&file, "a lease was dropped").await;
    let view = file.atomic_u64(8).await.unwrap();
    drop(view);
    assert_reopens(&file, "an atomic view was dropped").await;
}

#[tokio::test]
async fn gate_reopens_after_a_try_conflict() {
    let (_dir, file) = scratch(4096).await;
    let seg = file.segment_mut(0, 64).await.unwrap();
    let err = file.try_update(0, vec![1u8; 8]).await.unwrap_err();
    assert!(matches!(err, crate::Error::Conflict { .. }), "{err:?}");
    drop(seg);
    assert_reopens(&file, "a try_ conflict").await;
}

#[tokio::test]
async fn gate_reopens_after_a_request_cancelled_while_waiting_for_room() {
    let dir = tempfile::tempdir().unwrap();
    let (file, actor) = MappedFile::options()
        .create(true)
        .len(4096)
        .channel_capacity(1)
        .open_unspawned(dir.path().join("f"))
        .await
        .unwrap();
    // The actor is not running: the first request fills the channel, the
    // second waits for room and is cancelled there.
    // (`modify` always goes through the actor; small loads may not.)
    let first = tokio::spawn({
        let file = file.clone();
        async move { file.modify(0, 8, |_| {}).await }
    });
    tokio::task::yield_now().await;
    let second = tokio::time::timeout(Duration::from_millis(20), file.modify(0, 8, |_| {})).await;
    assert!(second.is_err(), "the second request had to wait for room");
    tokio::spawn(actor.run());
    first.await.unwrap().unwrap();
    assert_reopens(&file, "a request cancelled while waiting for channel room").await;
}

#[tokio::test]
async fn gate_reopens_after_a_request_abandoned_in_the_channel() {
    let dir = tempfile::tempdir().unwrap();
    let (file, actor) = MappedFile::options()
        .create(true)
        .len(4096)
        .open_unspawned(dir.path().join("f"))
        .await
        .unwrap();
    // Sent (the channel has room), then dropped before the actor runs.
    let sent = tokio::time::timeout(Duration::from_millis(20), file.modify(0, 8, |_| {})).await;
    assert!(sent.is_err());
    tokio::spawn(actor.run());
    file.flush().await.unwrap();
    assert_reopens(&file, "a request abandoned in the channel").await;
}

#[tokio::test]
async fn gate_reopens_after_a_panic_in_modify() {
    let (_dir, file) = scratch(4096).await;
    let err = file
        .modify(0, 8, |_| panic!("a bug in the closure"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, crate::Error::Panicked { op: "modify" }),
        "{err:?}"
    );
    assert_reopens(&file, "a panic in modify").await;
}

#[tokio::test]
async fn gate_reopens_after_resizes() {
    let (_dir, file) = scratch(4096).await;
    file.resize(1 << 20).await.unwrap();
    assert_reopens(&file, "a grow").await;
    file.resize(8192).await.unwrap();
    assert_reopens(&file, "a shrink").await;
    // A shrink that waited for a lease.
    let seg = file.segment(4096, 64).await.unwrap();
    let shrink = tokio::spawn({
        let file = file.clone();
        async move { file.resize(4096).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(seg);
    shrink.await.unwrap().unwrap();
    assert_reopens(&file, "a shrink that waited").await;
}

#[tokio::test]
async fn gate_of_one_mapping_is_not_held_by_closing_another() {
    let (_dir, a) = scratch(4096).await;
    let (_dir2, b) = scratch(4096).await;
    let a2 = a.clone();
    a2.close().await.unwrap();
    assert_reopens(&b, "another mapping was closed").await;
    b.update(0, vec![7u8; 8]).await.unwrap();
    assert_eq!(&b.load(0, 8).await.unwrap()[..], &[7u8; 8]);
}
