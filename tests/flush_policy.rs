//! Flush policies and `pending_bytes`: the actor flushes by itself after N
//! writes, N bytes or every interval, counting every write path, through
//! the same group commit; a failed policy flush poisons the mapping; only a
//! successful flush resets `pending_bytes`. Syncs are counted with `strace`.

mod common;

use std::time::Duration;

use common::{child, Scratch};
use mmap_actor::{Error, FlushPolicy, MappedFile};

const CHILD_TEST: &str = "flush_policy_child_runs_scenario";
const CHILD_ENV: &str = "MMAP_ACTOR_FLUSH_POLICY";

async fn open(path: &std::path::Path, policy: FlushPolicy) -> MappedFile {
    MappedFile::options()
        .create(true)
        .len(1 << 20)
        .flush_policy(policy)
        .open(path)
        .await
        .unwrap()
}

/// Waits (bounded) until `pending_bytes` is `want`: policy flushes run in
/// the background.
async fn pending_becomes(file: &MappedFile, want: u64, what: &str) {
    for _ in 0..2000 {
        if file.pending_bytes() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!(
        "{what}: pending_bytes stayed {} (wanted {want})",
        file.pending_bytes()
    );
}

#[tokio::test]
async fn flush_policy_pending_bytes_counts_every_path_and_a_flush_resets_it() {
    let s = Scratch::new();
    let file = open(&s.path("p"), FlushPolicy::Manual).await;
    assert_eq!(file.pending_bytes(), 0);
    file.update_from(0, &[1u8; 100]).await.unwrap();
    file.update(4096, vec![2u8; 8000]).await.unwrap();
    file.modify(20_000, 10, |b| b.fill(3)).await.unwrap();
    file.zero(200_000, 300_000).await.unwrap();
    // A lease that can write counts, whole, when it is released.
    let mut seg = file.segment_mut(600_000, 1000).await.unwrap();
    seg[0] = 9;
    drop(seg);
    // A round trip through the actor, so that it has seen the release.
    drop(file.segment(0, 0).await.unwrap());
    assert_eq!(file.pending_bytes(), 100 + 8000 + 10 + 300_000 + 1000);
    // A read-only lease and loads count nothing.
    drop(file.segment(0, 4096).await.unwrap());
    file.load(0, 4096).await.unwrap();
    drop(file.segment(0, 0).await.unwrap());
    assert_eq!(file.pending_bytes(), 309_110);
    file.flush().await.unwrap();
    assert_eq!(file.pending_bytes(), 0);
    file.close().await.unwrap();
}

#[tokio::test]
async fn flush_policy_every_bytes_and_every_writes_flush_by_themselves() {
    let s = Scratch::new();
    let file = open(&s.path("bytes"), FlushPolicy::EveryBytes(64 * 1024)).await;
    for i in 0..15u64 {
        file.update_from(i * 4096, &[1u8; 4096]).await.unwrap();
    }
    assert_eq!(file.pending_bytes(), 15 * 4096, "below the threshold");
    file.update_from(15 * 4096, &[1u8; 4096]).await.unwrap();
    pending_becomes(&file, 0, "EveryBytes(64 KiB) after 64 KiB").await;
    file.close().await.unwrap();

    let file = open(&s.path("writes"), FlushPolicy::EveryWrites(10)).await;
    for i in 0..9u64 {
        file.update_from(i * 64, &[1u8; 64]).await.unwrap();
    }
    assert_eq!(file.pending_bytes(), 9 * 64);
    file.update_from(9 * 64, &[1u8; 64]).await.unwrap();
    pending_becomes(&file, 0, "EveryWrites(10) after 10 writes").await;
    file.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn flush_policy_interval_flushes_what_is_pending() {
    let s = Scratch::new();
    let file = open(
        &s.path("interval"),
        FlushPolicy::Interval(Duration::from_secs(5)),
    )
    .await;
    file.update_from(0, &[1u8; 512]).await.unwrap();
    assert_eq!(file.pending_bytes(), 512);
    // The clock is paused: sleeping past the period lets the actor's clock
    // tick; the sync itself runs on the blocking pool in real time.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for _ in 0..2000 {
        if file.pending_bytes() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(file.pending_bytes(), 0, "the interval flush did not run");
    file.close().await.unwrap();
}

// ---------------------------------------------------------------------
// Children: syncs counted, and a failing policy flush.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of the flush_policy_* tests"]
async fn flush_policy_child_runs_scenario() {
    let Ok(arg) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (scenario, path) = arg.split_once(':').expect("scenario:path");
    let path = std::path::Path::new(path);
    match scenario {
        "every-writes" | "manual" => {
            let policy = if scenario == "manual" {
                FlushPolicy::Manual
            } else {
                FlushPolicy::EveryWrites(10)
            };
            let file = open(path, policy).await;
            for i in 0..100u64 {
                file.update_from(i * 4096 % (1 << 20), &[7u8; 64])
                    .await
                    .unwrap();
                // Let a policy flush go out before the next writes pile up.
                if i % 10 == 9 && scenario != "manual" {
                    pending_settles(&file).await;
                }
            }
            file.close().await.unwrap();
        }
        "failing" => {
            // The parent made the file: opening it syncs nothing, so every
            // fdatasync of this process is a flush's.
            let file = MappedFile::options()
                .flush_policy(FlushPolicy::EveryWrites(5))
                .open(path)
                .await
                .unwrap();
            for i in 0..5u64 {
                file.update_from(i * 64, &[7u8; 64]).await.unwrap();
            }
            // The policy flush fails (injected EIO): the mapping is
            // poisoned, and pending_bytes is not reset.
            for _ in 0..2000 {
                if file.is_poisoned() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            assert!(file.is_poisoned(), "the failed policy flush did not poison");
            assert_eq!(file.pending_bytes(), 5 * 64);
            assert!(matches!(file.flush().await, Err(Error::Poisoned { .. })));
        }
        other => panic!("unknown scenario {other}"),
    }
    println!("SCENARIO-PASSED {scenario}");
}

async fn pending_settles(file: &MappedFile) {
    for _ in 0..2000 {
        if file.pending_bytes() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn syncs_of(scenario: &str) -> Option<u64> {
    let counts =
        common::strace_scenario("flush_policy", "fdatasync", CHILD_TEST, CHILD_ENV, scenario)?;
    Some(counts.get("fdatasync").copied().unwrap_or(0))
}

#[test]
fn flush_policy_every_writes_issues_real_syncs() {
    let (Some(policy), Some(manual)) = (syncs_of("every-writes"), syncs_of("manual")) else {
        return;
    };
    // 100 writes, a policy flush every 10: about 10 more syncs than the
    // same writes with manual flushing (creation and close sync in both).
    assert!(
        policy >= manual + 9,
        "EveryWrites(10): {policy} syncs, manual: {manual}"
    );
}

#[test]
fn flush_policy_a_failed_policy_flush_poisons() {
    if !common::have("strace") {
        return child::skip(
            "flush_policy_a_failed_policy_flush_poisons",
            "strace is not installed",
        );
    }
    let s = Scratch::new();
    let data = s.path("data");
    std::fs::write(&data, vec![0u8; 1 << 20]).unwrap();
    // Every fdatasync fails (strace counts `when=` per thread, and syncs
    // run on any thread of the blocking pool).
    let out = child::run(&mut child::wrapped(
        &[
            "strace",
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "trace=fdatasync",
            "-e",
            "inject=fdatasync:error=EIO",
        ],
        CHILD_TEST,
        CHILD_ENV,
        format!("failing:{}", data.display()),
    ));
    child::assert_success(&out, "SCENARIO-PASSED failing");
}
