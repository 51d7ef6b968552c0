//! `flush` really syncs (counted with `strace -c`), concurrent flushes share
//! one sync, creation syncs the directory and a resize syncs the length.
//! Durability across a process crash is in `crash.rs`; across power loss in
//! `power_loss.rs`.

mod common;

use std::sync::Arc;

use mmap_actor::MappedFile;

const CHILD_ENV: &str = "MMAP_ACTOR_DURABILITY_DIR";

fn under_strace(test: &str) -> Option<std::collections::HashMap<String, u64>> {
    if !common::have("strace") {
        println!("skipped: strace is not installed");
        return None;
    }
    let s = common::Scratch::new();
    let summary = s.path("strace.txt");
    let (status, output) = common::rerun(
        test,
        &[
            "strace",
            "-f",
            "-c",
            "-e",
            "trace=fdatasync,fsync,msync,fallocate,ftruncate,pwrite64",
            "-o",
            summary.to_str().unwrap(),
        ],
        &[(CHILD_ENV, s.dir.path().display().to_string())],
    );
    assert!(status.success(), "child failed: {output}");
    let text = std::fs::read_to_string(&summary).unwrap();
    Some(common::strace_counts(&text))
}

fn child_dir() -> Option<std::path::PathBuf> {
    std::env::var_os(CHILD_ENV).map(Into::into)
}

/// Ten updates and one flush: at least one data sync, never zero.
#[tokio::test]
#[ignore = "child of flush_issues_a_real_sync"]
async fn child_update_then_flush() {
    let Some(dir) = child_dir() else { return };
    let file = MappedFile::create(dir.join("f"), 1 << 20).await.unwrap();
    // Creation and its length are synced before we count from here on: the
    // parent checks totals against a known baseline below.
    for i in 0..10u64 {
        file.update(i * 4096, vec![1u8; 100]).await.unwrap();
    }
    file.flush().await.unwrap();
    println!("flushed");
    std::mem::forget(file);
}

#[test]
fn flush_issues_a_real_sync() {
    let Some(counts) = under_strace("child_update_then_flush") else {
        return;
    };
    // create: fdatasync (length) + fsync (directory); flush: one fdatasync.
    let fdatasync = counts.get("fdatasync").copied().unwrap_or(0);
    let fsync = counts.get("fsync").copied().unwrap_or(0);
    assert!(
        fdatasync >= 2,
        "expected the length sync and the flush: {counts:?}"
    );
    assert!(fsync >= 1, "expected the directory sync: {counts:?}");
    assert!(
        !counts.contains_key("msync"),
        "flush must not use msync(MS_ASYNC): {counts:?}"
    );
}

/// Sixty-four tasks update then flush at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child of concurrent_flushes_share_syncs"]
async fn child_concurrent_flushes() {
    let Some(dir) = child_dir() else { return };
    let file = Arc::new(MappedFile::create(dir.join("f"), 1 << 20).await.unwrap());
    let barrier = Arc::new(tokio::sync::Barrier::new(64));
    let mut tasks = Vec::new();
    for i in 0..64u64 {
        let file = Arc::clone(&file);
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            file.update(i * 4096, vec![2u8; 4096]).await.unwrap();
            barrier.wait().await;
            file.flush().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[test]
fn concurrent_flushes_share_syncs() {
    let Some(counts) = under_strace("child_concurrent_flushes") else {
        return;
    };
    let fdatasync = counts.get("fdatasync").copied().unwrap_or(0);
    // One for the creation's length, then group commits: 64 flushers must
    // cost far fewer than 64 syncs (one in flight, one queued at a time).
    assert!(fdatasync >= 2, "{counts:?}");
    assert!(
        fdatasync <= 16,
        "64 flushes cost {fdatasync} syncs: {counts:?}"
    );
}

/// Thirty-two tasks, eight rounds each of a durable small update
/// (`update_from` then `flush`): after the first flushes the updates are
/// written with pwrite by the tasks themselves, and the flushes still share
/// syncs (group commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child of durable_updates_are_pwritten_and_share_syncs"]
async fn child_durable_rounds() {
    let Some(dir) = child_dir() else { return };
    let file = MappedFile::create(dir.join("f"), 4 << 20).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..32u64 {
        let file = file.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..8u64 {
                let at = ((i * 8 + round) * 7919 % 1024) * 4096;
                file.update_from(at, &[i as u8; 4096]).await.unwrap();
                file.flush().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    file.close().await.unwrap();
}

#[test]
fn durable_updates_are_pwritten_and_share_syncs() {
    let Some(counts) = under_strace("child_durable_rounds") else {
        return;
    };
    let fdatasync = counts.get("fdatasync").copied().unwrap_or(0);
    let pwrites = counts.get("pwrite64").copied().unwrap_or(0);
    // 256 updates, nearly all after the first flush: pwrite.
    assert!(
        pwrites >= 200,
        "{pwrites} pwrites for 256 durable updates: {counts:?}"
    );
    // 256 flushes from 32 concurrent tasks: shared syncs.
    assert!(
        (1..=128).contains(&fdatasync),
        "256 flushes cost {fdatasync} syncs: {counts:?}"
    );
}

/// `flush_range` uses msync(MS_SYNC) on the range.
#[tokio::test]
#[ignore = "child of flush_range_uses_msync"]
async fn child_flush_range() {
    let Some(dir) = child_dir() else { return };
    let file = MappedFile::create(dir.join("f"), 1 << 20).await.unwrap();
    file.update(8192, vec![3u8; 100]).await.unwrap();
    file.flush_range(8192, 100).await.unwrap();
    file.flush_range(0, 0).await.unwrap();
    std::mem::forget(file);
}

#[test]
fn flush_range_uses_msync() {
    let Some(counts) = under_strace("child_flush_range") else {
        return;
    };
    assert_eq!(counts.get("msync").copied(), Some(1), "{counts:?}");
}

/// A grow and a shrink each sync the new length.
#[tokio::test]
#[ignore = "child of resize_syncs_the_length"]
async fn child_resize() {
    let Some(dir) = child_dir() else { return };
    let file = MappedFile::create(dir.join("f"), 4096).await.unwrap();
    file.resize(1 << 20).await.unwrap();
    file.resize(8192).await.unwrap();
    std::mem::forget(file);
}

#[test]
fn resize_syncs_the_length() {
    let Some(counts) = under_strace("child_resize") else {
        return;
    };
    // create + grow + shrink.
    assert!(
        counts.get("fdatasync").copied().unwrap_or(0) >= 3,
        "{counts:?}"
    );
    // grow preallocates; create preallocates too.
    assert!(
        counts.get("fallocate").copied().unwrap_or(0) >= 2,
        "{counts:?}"
    );
    assert!(
        counts.get("ftruncate").copied().unwrap_or(0) >= 3,
        "{counts:?}"
    );
}
