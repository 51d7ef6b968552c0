//! The direct-access gate under fire: small updates from many threads race
//! exclusive and shared leases of the same bytes, and no update may land
//! while a lease is held. Runs with both forms of the gate's protocol: the
//! asymmetric one (`membarrier`, the default where the kernel has it; a
//! child counts its barriers with `strace`) and the symmetric one (a child
//! with `MMAP_ACTOR_SYMMETRIC_GATE` set). Twelve worker threads, so that
//! some threads own a slot and the rest share one.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{child, Scratch, SplitMix};
use mmap_actor::MappedFile;

const CHILD_TEST: &str = "gate_exclusion_child";
const CHILD_ENV: &str = "MMAP_ACTOR_GATE_CHILD";
const REGION: u64 = 4096;
const WRITERS: u64 = 16;
const RUN: Duration = Duration::from_millis(1500);

/// Leases of the region taken, and the ones that saw a byte change under
/// them.
struct Outcome {
    leases: u64,
    broken: u64,
    updates: u64,
}

async fn race(path: std::path::PathBuf) -> Outcome {
    let file = MappedFile::options()
        .create(true)
        .len(4 * REGION)
        .open(&path)
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let updates = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (file, stop, updates) = (file.clone(), stop.clone(), updates.clone());
        writers.push(tokio::spawn(async move {
            let mut rng = SplitMix(w + 1);
            let record = [(w as u8) | 0x80; 64];
            while !stop.load(Ordering::Relaxed) {
                let at = rng.range(0, REGION / 64) * 64;
                file.update_from(at, &record).await.unwrap();
                updates.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut leases = 0;
    let mut broken = 0;
    let start = Instant::now();
    while start.elapsed() < RUN {
        // An exclusive lease: its bytes are ours until it is dropped.
        let mut seg = file.segment_mut(0, REGION).await.unwrap();
        seg.fill(0x11);
        for _ in 0..4 {
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_micros(20));
        }
        if seg.iter().any(|&b| b != 0x11) {
            broken += 1;
        }
        drop(seg);
        // A shared lease: nothing may write under it either.
        let seg = file.segment(0, REGION).await.unwrap();
        let before = seg.to_vec();
        for _ in 0..4 {
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_micros(20));
        }
        if seg[..] != before[..] {
            broken += 1;
        }
        drop(seg);
        leases += 2;
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    file.close().await.unwrap();
    Outcome {
        leases,
        broken,
        updates: updates.load(Ordering::Relaxed),
    }
}

fn check(outcome: &Outcome, form: &str) {
    assert_eq!(
        outcome.broken, 0,
        "{form}: {} of {} leases saw a direct update land under them",
        outcome.broken, outcome.leases
    );
    assert!(
        outcome.leases > 20,
        "{form}: only {} leases",
        outcome.leases
    );
    assert!(
        outcome.updates > 1000,
        "{form}: only {} updates raced the leases",
        outcome.updates
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 12)]
async fn gate_exclusion_no_update_lands_under_a_lease() {
    let s = Scratch::new();
    let outcome = race(s.path("race")).await;
    check(&outcome, "default form");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 12)]
#[ignore = "child process of the gate_exclusion_* tests"]
async fn gate_exclusion_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let outcome = race(path.into()).await;
    check(&outcome, "child");
    println!(
        "GATE-CHILD-PASSED leases={} updates={}",
        outcome.leases, outcome.updates
    );
}

#[test]
fn gate_exclusion_symmetric_form_excludes_too() {
    let s = Scratch::new();
    let mut cmd = child::command(CHILD_TEST, CHILD_ENV, s.path("race"));
    cmd.env("MMAP_ACTOR_SYMMETRIC_GATE", "1");
    let out = child::run(&mut cmd);
    child::assert_success(&out, "GATE-CHILD-PASSED");
}

/// The asymmetric form really is the one in use where the kernel has
/// `membarrier`, and holders pay for it: once per session of holds, not
/// per direct update. The symmetric form makes no such call.
#[test]
fn gate_exclusion_holders_run_the_process_wide_barrier() {
    if !common::have("strace") {
        return child::skip("gate_exclusion_holders", "strace is not installed");
    }
    let count = |symmetric: bool| {
        let s = Scratch::new();
        let summary = s.path("strace.txt");
        let summary_arg = summary.display().to_string();
        let mut cmd = child::wrapped(
            &[
                "strace",
                "-f",
                "-c",
                "-o",
                &summary_arg,
                "-e",
                "trace=membarrier",
            ],
            CHILD_TEST,
            CHILD_ENV,
            s.path("race"),
        );
        if symmetric {
            cmd.env("MMAP_ACTOR_SYMMETRIC_GATE", "1");
        }
        let out = child::run(&mut cmd);
        child::assert_success(&out, "GATE-CHILD-PASSED");
        let text = std::fs::read_to_string(&summary).unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let field = |key: &str| -> u64 {
            stdout
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|v| v.parse().ok())
                .unwrap()
        };
        let calls = common::strace_counts(&text)
            .get("membarrier")
            .copied()
            .unwrap_or(0);
        (calls, field("leases="), field("updates="))
    };
    let (symmetric, _, _) = count(true);
    assert_eq!(symmetric, 0, "the symmetric form called membarrier");
    let (calls, leases, updates) = count(false);
    if calls == 0 {
        // The kernel (or a seccomp filter) refused the registration: the
        // library fell back to the symmetric form, which the test above
        // covers.
        return child::skip("gate_exclusion_holders", "membarrier is not available here");
    }
    // A query and a registration, then at most one barrier per lease (each
    // lease is a session of holds), and far fewer than direct updates.
    assert!(
        calls <= leases + 2 + 64,
        "{calls} membarrier calls for {leases} leases"
    );
    assert!(
        calls * 10 < updates,
        "{calls} membarrier calls for {updates} direct updates"
    );
}
