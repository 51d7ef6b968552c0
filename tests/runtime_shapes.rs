//! Every operation works in every shape of runtime a tokio program can
//! have: a current-thread runtime; a multi-thread runtime (2 workers); a
//! `LocalSet` on a multi-thread runtime with the actor started by
//! `open_unspawned` + `spawn_local` (callers in the local set and on the
//! workers); the actor spawned on one runtime and the callers on another
//! (both ways round: multi-thread actor with current-thread callers, and a
//! current-thread actor driven by its own thread with multi-thread
//! callers).
//!
//! In each shape: small (64 B) and large (4 MiB) updates and loads, flush,
//! a grow and a shrink, a segment, a segment_mut, an atomic view, modify,
//! prewarm, and close. Everything must succeed with the right bytes.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Scratch, SplitMix};
use mmap_actor::{MappedFile, MappingActor};

/// Hang detector only.
const HANG: Duration = Duration::from_secs(30);
const MIB: u64 = 1 << 20;
/// Room for three callers' bytes: at 0, at 6 MiB and at 11 MiB (each
/// uses 4.5 MiB), and a shrink by 1 MiB.
const LEN: u64 = 16 * MIB;
const BIG: u64 = 4 * MIB;

async fn open_unspawned(path: &Path) -> (MappedFile, MappingActor) {
    MappedFile::options()
        .create(true)
        .len(LEN)
        .open_unspawned(path)
        .await
        .expect("open_unspawned")
}

/// The workload, at `base` (each caller uses its own bytes); closes the
/// file at the end when `close`.
async fn workload(file: MappedFile, shape: &str, base: u64, close: bool) {
    tokio::time::timeout(HANG, async {
        let at = |what: &str| format!("{shape}: {what}");
        let small = SplitMix::bytes(base ^ 1, 64);
        file.update(base, small.clone())
            .await
            .unwrap_or_else(|e| panic!("{}: {e:?}", at("small update")));
        assert_eq!(
            &file.load(base, 64).await.expect("small load")[..],
            &small[..],
            "{}",
            at("small load")
        );

        let big = SplitMix::bytes(base ^ 2, BIG as usize);
        let big_at = base + MIB / 2;
        file.update(big_at, big.clone())
            .await
            .unwrap_or_else(|e| panic!("{}: {e:?}", at("4 MiB update")));
        let loaded = file
            .load(big_at, BIG)
            .await
            .unwrap_or_else(|e| panic!("{}: {e:?}", at("4 MiB load")));
        assert!(loaded[..] == big[..], "{}", at("4 MiB load: wrong bytes"));
        file.flush()
            .await
            .unwrap_or_else(|e| panic!("{}: {e:?}", at("flush")));

        let seg = file
            .segment(base, 64)
            .await
            .unwrap_or_else(|e| panic!("{}: {e:?}", at("segment")));
        assert_eq!(&seg[..], &small[..], "{}", at("segment"));
        drop(seg);
        {
            let mut seg = file
                .segment_mut(base + 64, 8)
                .await
                .unwrap_or_else(|e| panic!("{}: {e:?}", at("segment_mut")));
            seg.copy_from_slice(b"leased!!");
        }
        assert_eq!(&file.load(base + 64, 8).await.unwrap()[..], b"leased!!");
        {
            let view = file
                .atomic_u64(base + 128)
                .await
                .unwrap_or_else(|e| panic!("{}: {e:?}", at("atomic_u64")));
            view.store(41, Ordering::SeqCst);
            assert_eq!(view.fetch_add(1, Ordering::SeqCst), 41);
        }
        assert_eq!(
            &file.load(base + 128, 8).await.unwrap()[..],
            &42u64.to_le_bytes()
        );
        file.modify(base + 136, 8, |b| b.fill(0x6D))
            .await
            .unwrap_or_else(|e| panic!("{}: {e:?}", at("modify")));
        assert_eq!(&file.load(base + 136, 8).await.unwrap()[..], &[0x6D; 8]);
        file.prewarm(0, file.len())
            .await
            .unwrap_or_else(|e| panic!("{}: {e:?}", at("prewarm")));
        if close {
            file.resize(2 * LEN)
                .await
                .unwrap_or_else(|e| panic!("{}: {e:?}", at("grow")));
            file.update(2 * LEN - 64, vec![0xEEu8; 64])
                .await
                .unwrap_or_else(|e| panic!("{}: {e:?}", at("update after the grow")));
            file.resize(LEN - MIB)
                .await
                .unwrap_or_else(|e| panic!("{}: {e:?}", at("shrink")));
            assert_eq!(file.len(), LEN - MIB);
            assert!(file.load(big_at, BIG).await.unwrap()[..] == big[..]);
            file.close()
                .await
                .unwrap_or_else(|e| panic!("{}: {e:?}", at("close")));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{shape}: the workload hung"));
}

fn check_file(path: &PathBuf, shape: &str) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(bytes.len() as u64, LEN - MIB, "{shape}: length on disk");
    assert_eq!(&bytes[64..72], b"leased!!", "{shape}: bytes on disk");
}

#[test]
fn runtime_shapes_current_thread() {
    let scratch = Scratch::new();
    let path = scratch.path("data");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (file, actor) = open_unspawned(&path).await;
        tokio::spawn(actor.run());
        let f = file.clone();
        tokio::spawn(
            async move { workload(f, "current-thread, spawned caller", MIB * 6, false).await },
        )
        .await
        .unwrap();
        workload(file, "current-thread", 0, true).await;
    });
    check_file(&path, "current-thread");
}

#[test]
fn runtime_shapes_multi_thread() {
    let scratch = Scratch::new();
    let path = scratch.path("data");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let file = MappedFile::options()
            .create(true)
            .len(LEN)
            .open(&path)
            .await
            .unwrap();
        let f = file.clone();
        tokio::spawn(
            async move { workload(f, "multi-thread, spawned caller", MIB * 6, false).await },
        )
        .await
        .unwrap();
        workload(file, "multi-thread, block_on caller", 0, true).await;
    });
    check_file(&path, "multi-thread");
}

/// The actor in a `LocalSet` on a multi-thread runtime; callers in the
/// local set and on the workers.
#[test]
fn runtime_shapes_local_set_on_a_multi_thread_runtime() {
    let scratch = Scratch::new();
    let path = scratch.path("data");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    rt.block_on(local.run_until(async {
        let (file, actor) = open_unspawned(&path).await;
        tokio::task::spawn_local(actor.run());
        let f = file.clone();
        tokio::task::spawn_local(async move {
            workload(f, "local set, spawn_local caller", MIB * 6, false).await
        })
        .await
        .unwrap();
        let f = file.clone();
        tokio::spawn(async move { workload(f, "local set, worker caller", MIB * 11, false).await })
            .await
            .unwrap();
        workload(file, "local set, run_until caller", 0, true).await;
    }));
    check_file(&path, "local set");
}

/// The actor on a multi-thread runtime, the callers on a current-thread one.
#[test]
fn runtime_shapes_actor_on_one_runtime_callers_on_another() {
    let scratch = Scratch::new();
    let path = scratch.path("data");
    let actor_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (file, actor) = actor_rt.block_on(open_unspawned(&path));
    let running = actor_rt.spawn(actor.run());
    let callers = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    callers.block_on(async {
        let f = file.clone();
        tokio::spawn(
            async move { workload(f, "other runtime, spawned caller", MIB * 6, false).await },
        )
        .await
        .unwrap();
        workload(file, "other runtime, block_on caller", 0, true).await;
    });
    actor_rt
        .block_on(async { tokio::time::timeout(HANG, running).await })
        .expect("the actor did not stop after close")
        .expect("the actor task failed");
    check_file(&path, "actor on another runtime");
}

/// The actor on a current-thread runtime driven by its own thread, the
/// callers on a multi-thread runtime.
#[test]
fn runtime_shapes_current_thread_actor_multi_thread_callers() {
    let scratch = Scratch::new();
    let path = scratch.path("data");
    let (file_tx, file_rx) = std::sync::mpsc::channel();
    let actor_path = path.clone();
    let actor_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (file, actor) = open_unspawned(&actor_path).await;
            file_tx.send(file).unwrap();
            // Runs until close().
            tokio::time::timeout(2 * HANG, actor.run())
                .await
                .expect("the actor did not stop after close");
        });
    });
    let file: MappedFile = file_rx.recv().expect("the actor thread opened the file");
    let callers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    callers.block_on(async {
        let f = file.clone();
        tokio::spawn(async move {
            workload(f, "current-thread actor, worker caller", MIB * 6, false).await
        })
        .await
        .unwrap();
        workload(file, "current-thread actor, block_on caller", 0, true).await;
    });
    actor_thread.join().expect("the actor thread panicked");
    check_file(&path, "current-thread actor");
}
