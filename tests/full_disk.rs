//! Full disks and file-size limits: growth fails with an error, never a
//! `SIGBUS`, and the file keeps its old length and bytes.
//!
//! Each case runs in a child process (this test binary run again), so that a
//! `SIGBUS` or `SIGXFSZ` would kill the child and fail the parent's check of
//! its exit status:
//!
//! - a 1 MiB tmpfs mounted in a private mount namespace (`unshare -m`):
//!   growing past the free space is `ENOSPC` from `posix_fallocate`;
//! - `RLIMIT_FSIZE` set with `prlimit`, with `SIGXFSZ` ignored (by `sh`'s
//!   `trap '' XFSZ`, which stays in force across `exec`): growing past the
//!   limit is `EFBIG`;
//! - and the opt-out: with `preallocate(false)` a grow on a full tmpfs
//!   succeeds, and the first write to the new tail is a `SIGBUS`. That is
//!   the documented price of sparse files, pinned here.
//!
//! Skips (with a printed reason) where mount namespaces or `prlimit` are
//! unavailable.

mod common;

use std::io::Write;
use std::path::Path;

use common::{child, SplitMix};
use mmap_actor::{Error, MappedFile};

/// Carries `<scenario>:<dir>` to the child.
const CHILD_ENV: &str = "MMAP_ACTOR_FULL_DISK";
const CHILD_TEST: &str = "full_disk_child_runs_scenario";
const ENOSPC: i32 = 28;
const EFBIG: i32 = 27;
const KIB: u64 = 1024;
/// The file-size limit of the `RLIMIT_FSIZE` case.
const FSIZE: u64 = 1 << 20;

fn assert_io(result: mmap_actor::Result<()>, op: &str, errno: i32) {
    match result {
        Err(Error::Io {
            op: got, source, ..
        }) if got == op && source.raw_os_error() == Some(errno) => {}
        other => panic!("expected {op} failing with errno {errno}, got {other:?}"),
    }
}

/// The file still has `model`'s length and bytes, and keeps working:
/// update, load, flush.
async fn assert_intact(file: &MappedFile, model: &mut [u8]) {
    let len = model.len() as u64;
    assert_eq!(file.len(), len, "the mapping's length changed");
    assert_eq!(
        std::fs::metadata(file.path()).expect("stat").len(),
        len,
        "the file's length changed"
    );
    assert_eq!(
        &file.load(0, len).await.expect("load")[..],
        &model[..],
        "bytes changed"
    );
    let fresh = SplitMix::bytes(len ^ 0x55, 4096);
    file.update(len - 4096, fresh.clone())
        .await
        .expect("update after the failure");
    model[(len - 4096) as usize..].copy_from_slice(&fresh);
    assert_eq!(&file.load(0, len).await.expect("load")[..], &model[..]);
    file.flush().await.expect("flush after the failure");
}

async fn full_tmpfs(dir: &Path) {
    let mnt = dir.join("tmpfs");
    std::fs::create_dir_all(&mnt).expect("mount point");
    child::sh(&format!(
        "mount -t tmpfs -o size=1m tmpfs '{}'",
        mnt.display()
    ));

    let len = 256 * KIB;
    let file = MappedFile::create(mnt.join("data.bin"), len)
        .await
        .expect("create");
    let mut model = SplitMix::bytes(1, len as usize);
    file.update(0, model.clone()).await.expect("fill");
    file.flush().await.expect("flush");

    // Far more than the free space.
    assert_io(file.resize(8 << 20).await, "fallocate", ENOSPC);
    assert_intact(&file, &mut model).await;

    // Fill the rest of the disk, then ask for one more page.
    let mut filler = std::fs::File::create(mnt.join("filler")).expect("filler");
    let chunk = vec![0xEEu8; 4096];
    let full = loop {
        if let Err(err) = filler.write_all(&chunk) {
            break err;
        }
    };
    assert_eq!(
        full.raw_os_error(),
        Some(ENOSPC),
        "filling the tmpfs: {full}"
    );
    drop(filler);
    assert_io(file.resize(len + 4 * KIB).await, "fallocate", ENOSPC);
    assert_intact(&file, &mut model).await;
    // Opening a new file with a length that does not fit fails the same way.
    assert_io(
        MappedFile::create(mnt.join("new.bin"), 64 * KIB)
            .await
            .map(drop),
        "fallocate",
        ENOSPC,
    );

    // With room again, the same mapping grows, and every new byte is
    // writable (its blocks are reserved).
    std::fs::remove_file(mnt.join("filler")).expect("remove filler");
    file.resize(2 * len).await.expect("grow with room");
    let tail = SplitMix::bytes(2, len as usize);
    file.update(len, tail.clone())
        .await
        .expect("write the new tail");
    let mut seg = file
        .segment_mut(2 * len - 4096, 4096)
        .await
        .expect("lease the tail");
    seg.fill(0x5A);
    drop(seg);
    let mut expected = model.clone();
    expected.extend_from_slice(&tail);
    expected[(2 * len - 4096) as usize..].fill(0x5A);
    assert_eq!(
        &file.load(0, 2 * len).await.expect("load")[..],
        &expected[..]
    );
    file.close().await.expect("close");
    println!("FULL-TMPFS grows refused with ENOSPC: 3, bytes intact: {len}");
}

async fn sparse_on_full_tmpfs(dir: &Path) {
    let mnt = dir.join("tmpfs");
    std::fs::create_dir_all(&mnt).expect("mount point");
    child::sh(&format!(
        "mount -t tmpfs -o size=1m tmpfs '{}'",
        mnt.display()
    ));
    let file = MappedFile::options()
        .create(true)
        .len(64 * KIB)
        .preallocate(false)
        .open(mnt.join("sparse.bin"))
        .await
        .expect("create sparse");
    // No blocks are reserved, so this succeeds on a 1 MiB disk.
    file.resize(4 << 20).await.expect("sparse grow");
    println!("TOUCHING-SPARSE-TAIL");
    // Filling the tail needs more pages than the tmpfs has: a SIGBUS.
    let chunk = vec![0x11u8; 64 * 1024];
    for offset in (64 * KIB..4 << 20).step_by(chunk.len()) {
        let _ = file.update(offset, chunk.clone()).await;
    }
    println!("SURVIVED-SPARSE-TAIL");
}

async fn fsize_limit(dir: &Path) {
    // SIGXFSZ must be ignored, or the first refused grow kills us (which the
    // parent would also notice).
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let ignored = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .map(|mask| u64::from_str_radix(mask.trim(), 16).expect("SigIgn mask"))
        .expect("SigIgn line");
    assert_ne!(
        ignored & (1 << (child::SIGXFSZ - 1)),
        0,
        "SIGXFSZ is not ignored"
    );

    let len = 64 * KIB;
    let file = MappedFile::create(dir.join("data.bin"), len)
        .await
        .expect("create");
    let mut model = SplitMix::bytes(3, len as usize);
    file.update(0, model.clone()).await.expect("fill");
    assert_io(file.resize(2 * FSIZE).await, "fallocate", EFBIG);
    assert_intact(&file, &mut model).await;
    assert_io(file.resize(FSIZE + 1).await, "fallocate", EFBIG);
    assert_intact(&file, &mut model).await;
    // Up to the limit is fine.
    file.resize(FSIZE).await.expect("grow to the limit");
    model.resize(FSIZE as usize, 0);
    assert_intact(&file, &mut model).await;
    file.close().await.expect("close");

    // Without preallocation the limit is hit by ftruncate instead.
    let sparse = MappedFile::options()
        .create(true)
        .len(len)
        .preallocate(false)
        .open(dir.join("sparse.bin"))
        .await
        .expect("create sparse");
    let mut zeros = vec![0u8; len as usize];
    assert_io(sparse.resize(4 * FSIZE).await, "ftruncate", EFBIG);
    assert_intact(&sparse, &mut zeros).await;
    // Opening with a length over the limit fails too.
    assert_io(
        MappedFile::create(dir.join("big.bin"), 2 * FSIZE)
            .await
            .map(drop),
        "fallocate",
        EFBIG,
    );
    println!("FSIZE grows refused with EFBIG: 4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of the full_disk_* tests"]
async fn full_disk_child_runs_scenario() {
    let Ok(arg) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (scenario, dir) = arg.split_once(':').expect("scenario:dir");
    let dir = Path::new(dir);
    match scenario {
        "full_tmpfs" => full_tmpfs(dir).await,
        "sparse_on_full_tmpfs" => sparse_on_full_tmpfs(dir).await,
        "fsize_limit" => fsize_limit(dir).await,
        other => panic!("unknown scenario {other}"),
    }
    println!("SCENARIO-PASSED {scenario}");
}

/// Runs `scenario` in a child inside a private mount namespace.
fn in_namespace(scenario: &str, scratch: &common::Scratch) -> std::process::Output {
    child::run(&mut child::wrapped(
        &["unshare", "-m", "--propagation", "private"],
        CHILD_TEST,
        CHILD_ENV,
        format!("{scenario}:{}", scratch.dir.path().display()),
    ))
}

#[test]
fn full_disk_growth_on_full_tmpfs_is_enospc_and_keeps_data() {
    if let Some(why) = child::mount_namespace_unavailable() {
        return child::skip(
            "full_disk_growth_on_full_tmpfs_is_enospc_and_keeps_data",
            &why,
        );
    }
    let scratch = common::Scratch::new();
    let out = in_namespace("full_tmpfs", &scratch);
    assert_eq!(
        child::signal(&out.status),
        None,
        "the child was killed\n{}",
        child::describe(&out)
    );
    child::assert_success(&out, "SCENARIO-PASSED full_tmpfs");
}

#[test]
fn full_disk_sparse_growth_without_preallocation_is_a_sigbus() {
    if let Some(why) = child::mount_namespace_unavailable() {
        return child::skip(
            "full_disk_sparse_growth_without_preallocation_is_a_sigbus",
            &why,
        );
    }
    let scratch = common::Scratch::new();
    let out = in_namespace("sparse_on_full_tmpfs", &scratch);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        child::signal(&out.status) == Some(child::SIGBUS)
            && stdout.contains("TOUCHING-SPARSE-TAIL")
            && !stdout.contains("SURVIVED-SPARSE-TAIL"),
        "expected a SIGBUS writing the unreserved tail\n{}",
        child::describe(&out)
    );
}

#[test]
fn full_disk_growth_past_rlimit_fsize_is_efbig() {
    const NAME: &str = "full_disk_growth_past_rlimit_fsize_is_efbig";
    if !common::have("prlimit") || !common::have("sh") {
        return child::skip(NAME, "prlimit or sh is not installed");
    }
    let scratch = common::Scratch::new();
    let fsize = format!("--fsize={FSIZE}");
    let out = child::run(&mut child::wrapped(
        &[
            "prlimit",
            &fsize,
            "--",
            "sh",
            "-c",
            "trap '' XFSZ; exec \"$0\" \"$@\"",
        ],
        CHILD_TEST,
        CHILD_ENV,
        format!("fsize_limit:{}", scratch.dir.path().display()),
    ));
    assert_eq!(
        child::signal(&out.status),
        None,
        "the child was killed\n{}",
        child::describe(&out)
    );
    child::assert_success(&out, "SCENARIO-PASSED fsize_limit");
}
