//! Page locks: `lock`, `unlock`, `lock_all` and `unlock_all` lock exactly
//! the whole pages asked for (seen in the process's `VmLck`), in the order
//! the calls were sent; locks follow the mapping across a resize (fixed
//! ranges clipped to the new length, `lock_all` the whole new length, the
//! old generation unlocked even while a lease holds it) and end on close;
//! `RLIMIT_MEMLOCK` (lowered with `prlimit`, `CAP_IPC_LOCK` dropped with
//! `setpriv`) gives `Error::MemoryLockLimit` naming the limit.
//!
//! Each scenario runs in a child process, so that `VmLck` counts its locks
//! only.

mod common;

use std::path::Path;

use common::child;
use mmap_actor::{Error, MappedFile};

const CHILD_ENV: &str = "MMAP_ACTOR_MLOCK";
const CHILD_TEST: &str = "mlock_child_runs_scenario";
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// This process's locked memory in KiB (`VmLck` of `/proc/self/status`).
fn locked_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmLck:"))
        .expect("VmLck in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
#[ignore = "child process of the mlock tests"]
async fn mlock_child_runs_scenario() {
    let Some(arg) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let arg = arg.into_string().unwrap();
    let (scenario, dir) = arg.split_once(':').unwrap();
    let dir = Path::new(dir);
    match scenario {
        "ranges" => ranges(dir).await,
        "resize" => resize(dir).await,
        "order" => order(dir).await,
        "limit" => limit(dir).await,
        "limit_zero" => limit_zero(dir).await,
        other => panic!("unknown scenario {other}"),
    }
    println!("child done: {scenario}");
}

/// Runs `scenario` in a child, through `wrapper`.
fn run(scenario: &str, wrapper: &[&str]) {
    let scratch = common::Scratch::new();
    let arg = format!("{scenario}:{}", scratch.dir.path().display());
    let out = child::run(&mut child::wrapped(wrapper, CHILD_TEST, CHILD_ENV, arg));
    child::assert_success(&out, &format!("child done: {scenario}"));
}

async fn ranges(dir: &Path) {
    let base = locked_kib();
    let at = |kib: u64, what: &str| {
        assert_eq!(locked_kib(), base + kib, "{what}");
    };
    let file = MappedFile::create(dir.join("f"), 4 * MIB).await.unwrap();
    file.lock(0, MIB).await.unwrap();
    at(1024, "lock(0, 1 MiB)");
    file.lock(MIB / 2, MIB).await.unwrap();
    at(1536, "an overlapping lock adds only its new pages");
    file.lock(0, MIB).await.unwrap();
    at(1536, "locks do not nest");
    file.unlock(0, 4097).await.unwrap();
    at(1536 - 8, "unlock(0, 4097) unlocks two whole pages");
    file.unlock_all().await.unwrap();
    at(0, "unlock_all");
    file.lock(4097, 1).await.unwrap();
    at(4, "lock(4097, 1) locks its page");
    file.lock(100, 0).await.unwrap();
    at(4, "an empty lock locks nothing");
    file.unlock(4096 + 4095, 1).await.unwrap();
    at(0, "unlock of the page's last byte");
    file.lock_all().await.unwrap();
    at(4096, "lock_all");
    file.unlock(MIB, MIB).await.unwrap();
    at(3072, "unlock of a range after lock_all");
    file.lock_all().await.unwrap();
    at(4096, "lock_all again");
    // Locks change no byte.
    file.update(0, vec![7u8; 4096]).await.unwrap();
    file.lock(0, 8192).await.unwrap();
    assert_eq!(&file.load(0, 4096).await.unwrap()[..], &[7u8; 4096][..]);
    // An anonymous mapping locks like a file.
    let anonymous = MappedFile::anonymous(2 * MIB).await.unwrap();
    anonymous.lock_all().await.unwrap();
    at(4096 + 2048, "an anonymous mapping's lock_all");
    anonymous.close().await.unwrap();
    at(4096, "closing unlocks");
    // A copy-on-write mapping locks too (copying its pages, keeping bytes).
    let cow = MappedFile::open_cow(dir.join("f")).await.unwrap();
    cow.update(4096, vec![9u8; 10]).await.unwrap();
    cow.lock(0, 2 * 4096).await.unwrap();
    at(4096 + 8, "a copy-on-write lock");
    let bytes = cow.load(0, 4106).await.unwrap();
    assert!(bytes[..4096].iter().all(|b| *b == 7) && bytes[4096..].iter().all(|b| *b == 9));
    drop(cow);
    file.close().await.unwrap();
}

async fn resize(dir: &Path) {
    let base = locked_kib();
    let at = |kib: u64, what: &str| {
        assert_eq!(locked_kib(), base + kib, "{what}");
    };
    let file = MappedFile::create(dir.join("f"), 4 * MIB).await.unwrap();
    file.lock_all().await.unwrap();
    at(4096, "lock_all");
    // A lease keeps the old generation mapped; it is unlocked all the same.
    let old = file.segment(0, 4096).await.unwrap();
    file.resize(8 * MIB).await.unwrap();
    at(
        8192,
        "lock_all covers what a grow adds; the old generation is unlocked",
    );
    file.resize(2 * MIB).await.unwrap();
    at(2048, "a shrink leaves the new length locked");
    file.unlock_all().await.unwrap();
    at(0, "unlock_all");

    file.lock(MIB, MIB).await.unwrap();
    at(1024, "a fixed range");
    file.resize(4 * MIB).await.unwrap();
    at(1024, "a grow keeps a fixed range as it was");
    file.resize(MIB + MIB / 2).await.unwrap();
    at(512, "a shrink clips it");
    file.resize(MIB + 100).await.unwrap();
    at(4, "to the page holding the last byte");
    file.resize(MIB).await.unwrap();
    at(0, "and drops it once it is gone");
    file.resize(4 * MIB).await.unwrap();
    at(0, "a grow does not bring it back");

    file.lock(0, 8192).await.unwrap();
    at(8, "locked before close");
    file.close().await.unwrap();
    at(0, "close unlocks, though a lease still maps the file");
    assert_eq!(old.len(), 4096);
    drop(old);
}

async fn order(dir: &Path) {
    let base = locked_kib();
    let file = MappedFile::create(dir.join("f"), MIB).await.unwrap();
    for round in 0..20 {
        let (a, b) = tokio::join!(file.lock(0, MIB), file.unlock(0, MIB));
        a.unwrap();
        b.unwrap();
        assert_eq!(locked_kib(), base, "round {round}: lock then unlock");
        let (a, b) = tokio::join!(file.unlock_all(), file.lock_all());
        a.unwrap();
        b.unwrap();
        assert_eq!(locked_kib(), base + 1024, "round {round}: unlock then lock");
        file.unlock_all().await.unwrap();
    }
}

fn expect_limit(got: mmap_actor::Result<()>, op: &str, len: u64, limit: u64, errno: i32) {
    match got {
        Err(err @ Error::MemoryLockLimit { .. }) => {
            let text = err.to_string();
            assert!(
                text.contains(&format!("RLIMIT_MEMLOCK is {limit} bytes")),
                "the message names the limit: {text}"
            );
            assert_eq!(err.raw_os_error(), Some(errno), "{text}");
            let Error::MemoryLockLimit {
                op: o,
                len: l,
                limit: m,
                ..
            } = err
            else {
                unreachable!()
            };
            assert_eq!((o, l, m), (op, len, Some(limit)));
        }
        other => panic!("{op}: expected MemoryLockLimit, got {other:?}"),
    }
}

async fn limit(dir: &Path) {
    let base = locked_kib();
    let file = MappedFile::create(dir.join("f"), MIB).await.unwrap();
    expect_limit(file.lock(0, MIB).await, "lock", MIB, 64 * KIB, libc::ENOMEM);
    // Whole pages are counted: 100 bytes across a page boundary are two.
    expect_limit(
        file.lock(64 * KIB - 50, 64 * KIB).await,
        "lock",
        68 * KIB,
        64 * KIB,
        libc::ENOMEM,
    );
    assert_eq!(locked_kib(), base, "a refused lock locks nothing");
    file.lock(0, 16 * KIB).await.unwrap();
    assert_eq!(locked_kib(), base + 16);
    expect_limit(
        file.lock_all().await,
        "lock_all",
        MIB,
        64 * KIB,
        libc::ENOMEM,
    );
    file.unlock_all().await.unwrap();

    // A grow that cannot lock its new generation still succeeds.
    let small = MappedFile::create(dir.join("small"), 32 * KIB)
        .await
        .unwrap();
    small.lock_all().await.unwrap();
    assert_eq!(locked_kib(), base + 32);
    small.resize(MIB).await.unwrap();
    assert_eq!(small.len(), MIB);
    assert_eq!(locked_kib(), base, "neither generation stays locked");
    small.update(MIB - 1, vec![1u8]).await.unwrap();

    let anonymous = MappedFile::anonymous(MIB).await.unwrap();
    expect_limit(
        anonymous.lock_all().await,
        "lock_all",
        MIB,
        64 * KIB,
        libc::ENOMEM,
    );
}

async fn limit_zero(dir: &Path) {
    let file = MappedFile::create(dir.join("f"), MIB).await.unwrap();
    expect_limit(file.lock(0, 1).await, "lock", 4 * KIB, 0, libc::EPERM);
}

#[test]
fn locks_cover_whole_pages_and_do_not_nest() {
    run("ranges", &[]);
}

#[test]
fn locks_follow_resizes_and_end_on_close() {
    run("resize", &[]);
}

#[test]
fn lock_calls_apply_in_the_order_they_were_sent() {
    run("order", &[]);
}

/// `setpriv` drops `CAP_IPC_LOCK` (which lifts the limit for root), then
/// `prlimit` lowers `RLIMIT_MEMLOCK` for the child.
fn limited(limit: &str) -> Option<Vec<String>> {
    if !common::have("prlimit") || !common::have("setpriv") {
        child::skip("memlock limit", "prlimit or setpriv is not installed");
        return None;
    }
    Some(
        [
            "setpriv",
            "--inh-caps",
            "-ipc_lock",
            "--bounding-set",
            "-ipc_lock",
            "prlimit",
            &format!("--memlock={limit}:{limit}"),
        ]
        .map(String::from)
        .to_vec(),
    )
}

#[test]
fn the_memlock_limit_is_a_typed_error_naming_it() {
    let Some(wrapper) = limited("65536") else {
        return;
    };
    run(
        "limit",
        &wrapper.iter().map(String::as_str).collect::<Vec<_>>(),
    );
}

#[test]
fn a_zero_memlock_limit_is_eperm() {
    let Some(wrapper) = limited("0") else {
        return;
    };
    run(
        "limit_zero",
        &wrapper.iter().map(String::as_str).collect::<Vec<_>>(),
    );
}
