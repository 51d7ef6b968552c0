//! Write-back errors: every flush that could not sync fails, the mapping is
//! poisoned, and the actor keeps answering everything else.
//!
//! Two sources of errors, each in a child process (this test binary run
//! again) so that a crash kills only the child:
//!
//! - `strace -f -e inject=SYSCALL:error=ERRNO` makes `fdatasync`, `msync`,
//!   `fallocate` (what glibc's `posix_fallocate` calls) or `ftruncate` fail
//!   inside the child. The child asserts the errors, the poisoning and that
//!   every other request still works, and exits 0.
//! - A real one: a sparse ext4 image on a tiny tmpfs, loop-mounted in a
//!   private mount namespace. ext4 believes it has room; when the loop device
//!   writes the flushed pages back to the full tmpfs, the write fails and
//!   `fdatasync` reports `EIO`.
//!
//! Skips (with a printed reason) where strace, loop devices or mount
//! namespaces are unavailable.

mod common;

use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;

use common::{child, SplitMix};
use mmap_actor::{Error, MappedFile};

/// Carries `<scenario>:<path>` to the child.
const CHILD_ENV: &str = "MMAP_ACTOR_WRITEBACK";
const CHILD_TEST: &str = "writeback_child_runs_scenario";
const LEN: u64 = 64 * 1024;
const EIO: i32 = 5;
const ENOSPC: i32 = 28;

fn pattern(len: u64) -> Vec<u8> {
    SplitMix::bytes(0x7762, len as usize)
}

fn assert_io(err: &Error, op: &str, errno: i32) {
    match err {
        Error::Io {
            op: got, source, ..
        } => assert!(
            *got == op && source.raw_os_error() == Some(errno),
            "expected {op} failing with errno {errno}, got {err:?}"
        ),
        other => panic!("expected {op} failing with errno {errno}, got {other:?}"),
    }
}

fn assert_poisoned(err: &Error, errno: i32) {
    let kind = io::Error::from_raw_os_error(errno).kind();
    assert!(
        matches!(err, Error::Poisoned { kind: k, .. } if *k == kind),
        "expected Poisoned({kind:?}), got {err:?}"
    );
}

/// Every request but a flush is still served, and the bytes written before
/// and after the failure are all there.
async fn assert_still_serves(file: &MappedFile, model: &mut [u8]) {
    let len = file.len();
    assert_eq!(len, model.len() as u64, "length changed");
    assert_eq!(
        &file.load(0, len).await.expect("load")[..],
        &model[..],
        "content changed"
    );
    let fresh = SplitMix::bytes(len, 100);
    file.update(1000, fresh.clone())
        .await
        .expect("update after the failure");
    model[1000..1100].copy_from_slice(&fresh);
    file.modify(2000, 10, |b| b.fill(0xAB))
        .await
        .expect("modify after the failure");
    model[2000..2010].fill(0xAB);
    {
        let mut seg = file
            .segment_mut(3000, 8)
            .await
            .expect("segment_mut after the failure");
        seg.copy_from_slice(b"leased!!");
        model[3000..3008].copy_from_slice(b"leased!!");
    }
    {
        let seg = file
            .segment(0, 4096)
            .await
            .expect("segment after the failure");
        assert_eq!(&seg[..], &model[..4096]);
    }
    {
        let view = file
            .atomic_u64(4096)
            .await
            .expect("atomic after the failure");
        let old = view.fetch_add(1, Ordering::SeqCst);
        model[4096..4104].copy_from_slice(&old.wrapping_add(1).to_le_bytes());
    }
    file.prewarm(0, len)
        .await
        .expect("prewarm after the failure");
    assert_eq!(
        &file.load(0, len).await.expect("load")[..],
        &model[..],
        "content after the failure"
    );
}

async fn fdatasync_eio(path: &Path) {
    let file = MappedFile::open_rw(path).await.expect("open");
    let mut model = pattern(LEN);
    file.update(0, b"first".to_vec()).await.expect("update");
    model[..5].copy_from_slice(b"first");
    // Eight flushes at once: the group commit serves them with one or two
    // syncs; every one of them must fail.
    let flushes: Vec<_> = (0..8)
        .map(|_| {
            let f = file.clone();
            tokio::spawn(async move { f.flush().await })
        })
        .collect();
    let mut io_errors = 0;
    for flush in flushes {
        match flush.await.expect("flush task") {
            Ok(()) => panic!("a flush succeeded although fdatasync failed"),
            Err(Error::Poisoned { .. }) => {}
            Err(err) => {
                assert_io(&err, "sync", EIO);
                io_errors += 1;
            }
        }
    }
    assert!(io_errors >= 1, "no flush reported the EIO itself");
    assert!(file.is_poisoned(), "a failed sync must poison the mapping");
    assert_poisoned(
        &file.flush().await.expect_err("flush after a failed sync"),
        EIO,
    );
    assert_poisoned(
        &file
            .flush_range(0, 4096)
            .await
            .expect_err("flush_range after a failed sync"),
        EIO,
    );
    assert_still_serves(&file, &mut model).await;
    assert_poisoned(&file.flush().await.expect_err("flush stays poisoned"), EIO);
    assert_poisoned(
        &file.close().await.expect_err("close flushes, so it fails"),
        EIO,
    );
    assert!(matches!(file.load(0, 1).await, Err(Error::Closed)));
}

/// The first `fdatasync` fails (`when=1`): the open that flushed and the
/// other open of the file made before the failure are poisoned; an open
/// made after it is not, and its flush syncs again.
async fn fdatasync_eio_other_opens(path: &Path) {
    let a = MappedFile::open_rw(path).await.expect("open a");
    let b = MappedFile::open_rw(path).await.expect("open b");
    a.update_from(0, b"from a").await.expect("update");
    assert_io(&a.flush().await.expect_err("the failing sync"), "sync", EIO);
    assert!(a.is_poisoned(), "the open that flushed");
    assert!(b.is_poisoned(), "an open made before the failure");
    assert_poisoned(&b.flush().await.expect_err("b's flush"), EIO);
    let c = MappedFile::open_rw(path).await.expect("open c");
    assert!(
        !c.is_poisoned(),
        "a reopen after the failure is not poisoned"
    );
    c.update_from(8, b"from c").await.expect("update c");
    c.flush().await.expect("c syncs again");
    assert_poisoned(&a.flush().await.expect_err("a stays poisoned"), EIO);
    let bytes = c.load(0, 14).await.expect("load");
    assert_eq!((&bytes[..6], &bytes[8..]), (&b"from a"[..], &b"from c"[..]));
    c.close().await.expect("close c");
    assert_poisoned(&b.close().await.expect_err("b's close flushes"), EIO);
    drop(a);
}

async fn msync_eio(path: &Path) {
    let file = MappedFile::open_rw(path).await.expect("open");
    let mut model = pattern(LEN);
    file.update(100, b"ranged".to_vec()).await.expect("update");
    model[100..106].copy_from_slice(b"ranged");
    assert_io(
        &file
            .flush_range(0, 4096)
            .await
            .expect_err("flush_range with msync failing"),
        "sync",
        EIO,
    );
    assert!(file.is_poisoned());
    assert_poisoned(
        &file.flush().await.expect_err("flush after a failed msync"),
        EIO,
    );
    assert_still_serves(&file, &mut model).await;
    assert_poisoned(
        &file.flush_range(0, 10).await.expect_err("stays poisoned"),
        EIO,
    );
}

async fn fallocate_enospc(path: &Path) {
    let file = MappedFile::open_rw(path).await.expect("open");
    let mut model = pattern(LEN);
    assert_io(
        &file
            .resize(4 * LEN)
            .await
            .expect_err("grow with fallocate failing"),
        "fallocate",
        ENOSPC,
    );
    assert_eq!(file.len(), LEN);
    assert_eq!(
        std::fs::metadata(path).expect("stat").len(),
        LEN,
        "the file's length changed"
    );
    assert!(!file.is_poisoned(), "a refused grow loses no data");
    assert_still_serves(&file, &mut model).await;
    file.flush().await.expect("flush after a refused grow");
    // Shrinking needs no fallocate.
    file.resize(LEN / 2).await.expect("shrink");
    model.truncate((LEN / 2) as usize);
    assert_eq!(&file.load(0, LEN / 2).await.expect("load")[..], &model[..]);
    let other = path.with_extension("new");
    assert_io(
        &MappedFile::create(&other, LEN)
            .await
            .expect_err("create with fallocate failing"),
        "fallocate",
        ENOSPC,
    );
    file.close().await.expect("close");
}

async fn ftruncate_eio_grow(path: &Path) {
    let file = MappedFile::open_rw(path).await.expect("open");
    let mut model = pattern(LEN);
    assert_io(
        &file
            .resize(4 * LEN)
            .await
            .expect_err("grow with ftruncate failing"),
        "ftruncate",
        EIO,
    );
    assert_eq!(file.len(), LEN);
    assert_eq!(
        std::fs::metadata(path).expect("stat").len(),
        LEN,
        "the grow was not undone"
    );
    assert_still_serves(&file, &mut model).await;
    file.flush().await.expect("flush after a failed grow");
    // Only the first ftruncate fails: the next grow works.
    file.resize(2 * LEN).await.expect("grow again");
    model.resize((2 * LEN) as usize, 0);
    assert_eq!(&file.load(0, 2 * LEN).await.expect("load")[..], &model[..]);
    file.close().await.expect("close");
}

async fn ftruncate_eio_shrink(path: &Path) {
    let file = MappedFile::open_rw(path).await.expect("open");
    let mut model = pattern(LEN);
    assert_io(
        &file
            .resize(LEN / 4)
            .await
            .expect_err("shrink with ftruncate failing"),
        "ftruncate",
        EIO,
    );
    assert_eq!(file.len(), LEN);
    assert_eq!(std::fs::metadata(path).expect("stat").len(), LEN);
    assert_still_serves(&file, &mut model).await;
    file.resize(LEN / 4).await.expect("shrink again");
    model.truncate((LEN / 4) as usize);
    assert_eq!(&file.load(0, LEN / 4).await.expect("load")[..], &model[..]);
    file.close().await.expect("close");
}

/// The first `fdatasync` (the grow's) fails. Besides the length, it was
/// supposed to write back every dirty page of the file: those may be lost,
/// and the kernel reports that only once, so the mapping must be poisoned.
async fn fdatasync_eio_grow(path: &Path) {
    let file = MappedFile::open_rw(path).await.expect("open");
    let mut model = pattern(LEN);
    file.update(0, b"dirty".to_vec()).await.expect("update");
    model[..5].copy_from_slice(b"dirty");
    assert_io(
        &file
            .resize(4 * LEN)
            .await
            .expect_err("grow with fdatasync failing"),
        "fdatasync",
        EIO,
    );
    assert_eq!(file.len(), LEN);
    assert_eq!(std::fs::metadata(path).expect("stat").len(), LEN);
    assert_still_serves(&file, &mut model).await;
    assert!(
        file.flush().await.is_err(),
        "a flush succeeded after the grow's fdatasync failed: dirty pages may be lost"
    );
    assert!(file.is_poisoned());
}

/// The first `fdatasync` (the shrink's) fails after the file was cut: the
/// mapping must not go on using bytes past the file's end (a `SIGBUS`), and
/// the failed sync poisons it.
async fn fdatasync_eio_shrink(path: &Path) {
    let file = MappedFile::open_rw(path).await.expect("open");
    let model = pattern(LEN);
    assert_io(
        &file
            .resize(LEN / 4)
            .await
            .expect_err("shrink with fdatasync failing"),
        "fdatasync",
        EIO,
    );
    let on_disk = std::fs::metadata(path).expect("stat").len();
    assert_eq!(
        file.len(),
        on_disk,
        "the mapping's length differs from the file's"
    );
    let len = file.len();
    // Touches every byte the mapping claims to have: past the file's end
    // this is a SIGBUS, which kills the child.
    let all = file.load(0, len).await.expect("load");
    assert_eq!(&all[..], &model[..len as usize]);
    assert!(
        file.flush().await.is_err(),
        "a flush succeeded after a failed sync"
    );
    assert!(file.is_poisoned());
}

/// The real thing: see the module docs. Runs in a private mount namespace.
async fn full_backing_store(dir: &Path) {
    let tmpfs = dir.join("tmpfs");
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&tmpfs).expect("mount point");
    std::fs::create_dir_all(&mnt).expect("mount point");
    let image = tmpfs.join("fs.img");
    child::sh(&format!(
        "mount -t tmpfs -o size=8m tmpfs '{}'",
        tmpfs.display()
    ));
    child::sh(&format!("truncate -s 64M '{}'", image.display()));
    child::sh(&format!(
        "mkfs.ext4 -q -F -O ^has_journal -E lazy_itable_init=1,nodiscard '{}'",
        image.display()
    ));
    child::sh(&format!(
        "mount -o loop '{}' '{}'",
        image.display(),
        mnt.display()
    ));

    const BIG: u64 = 16 << 20;
    let file = MappedFile::create(mnt.join("data.bin"), BIG)
        .await
        .expect("create");
    let mut model = SplitMix::bytes(0xf00d, BIG as usize);
    file.update(0, model.clone()).await.expect("update");
    let err = file
        .flush()
        .await
        .expect_err("flush with the backing store full");
    // The loop device passes the tmpfs's ENOSPC up; older kernels turn
    // every failed block write into EIO.
    assert!(
        matches!(&err, Error::Io { op: "sync", source, .. }
            if matches!(source.raw_os_error(), Some(EIO | ENOSPC))),
        "expected EIO or ENOSPC from the sync, got {err:?}"
    );
    assert!(file.is_poisoned());
    assert!(matches!(file.flush().await, Err(Error::Poisoned { .. })));
    assert_still_serves(&file, &mut model).await;
    println!("REAL-EIO {err}");
}

/// The child: runs one scenario under a fault injector or in a namespace.
///
/// strace counts `when=N` per thread, so the runtime has a single blocking
/// thread: every syscall the actor makes runs on it, and "the first
/// `ftruncate`" means the first one of the process.
#[test]
#[ignore = "child process of the writeback_* tests"]
fn writeback_child_runs_scenario() {
    let Ok(arg) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (scenario, path) = arg.split_once(':').expect("scenario:path");
    let path = Path::new(path);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        match scenario {
            "fdatasync_eio" => fdatasync_eio(path).await,
            "fdatasync_eio_other_opens" => fdatasync_eio_other_opens(path).await,
            "msync_eio" => msync_eio(path).await,
            "fallocate_enospc" => fallocate_enospc(path).await,
            "ftruncate_eio_grow" => ftruncate_eio_grow(path).await,
            "ftruncate_eio_shrink" => ftruncate_eio_shrink(path).await,
            "fdatasync_eio_grow" => fdatasync_eio_grow(path).await,
            "fdatasync_eio_shrink" => fdatasync_eio_shrink(path).await,
            "full_backing_store" => full_backing_store(path).await,
            other => panic!("unknown scenario {other}"),
        }
    });
    println!("SCENARIO-PASSED {scenario}");
}

/// Runs `scenario` in a child under `strace -e inject=<inject>`, on a fresh
/// 64 KiB file the parent wrote (so opening it needs no sync).
fn injected(test: &str, scenario: &str, inject: &str) {
    if !common::have("strace") {
        return child::skip(test, "strace is not installed");
    }
    let traces = std::process::Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "true"])
        .stdin(std::process::Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if !traces {
        return child::skip(test, "strace cannot trace here (ptrace is not permitted)");
    }
    let scratch = common::Scratch::new();
    let path = scratch.path("data.bin");
    std::fs::write(&path, pattern(LEN)).expect("write the file");
    let syscall = inject.split(':').next().expect("syscall");
    let trace = format!("trace={syscall}");
    let inject = format!("inject={inject}");
    let out = child::run(&mut child::wrapped(
        &[
            "strace",
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            &trace,
            "-e",
            &inject,
        ],
        CHILD_TEST,
        CHILD_ENV,
        format!("{scenario}:{}", path.display()),
    ));
    child::assert_success(&out, &format!("SCENARIO-PASSED {scenario}"));
}

#[test]
fn writeback_fdatasync_eio_fails_every_flush_and_poisons() {
    injected(
        "writeback_fdatasync_eio_fails_every_flush_and_poisons",
        "fdatasync_eio",
        "fdatasync:error=EIO",
    );
}

#[test]
fn writeback_fdatasync_eio_poisons_the_opens_made_before_it() {
    injected(
        "writeback_fdatasync_eio_poisons_the_opens_made_before_it",
        "fdatasync_eio_other_opens",
        "fdatasync:error=EIO:when=1",
    );
}

#[test]
fn writeback_msync_eio_fails_flush_range_and_poisons() {
    injected(
        "writeback_msync_eio_fails_flush_range_and_poisons",
        "msync_eio",
        "msync:error=EIO",
    );
}

#[test]
fn writeback_fallocate_enospc_refuses_grow_and_keeps_length() {
    injected(
        "writeback_fallocate_enospc_refuses_grow_and_keeps_length",
        "fallocate_enospc",
        "fallocate:error=ENOSPC",
    );
}

#[test]
fn writeback_ftruncate_eio_refuses_grow_and_keeps_length() {
    injected(
        "writeback_ftruncate_eio_refuses_grow_and_keeps_length",
        "ftruncate_eio_grow",
        "ftruncate:error=EIO:when=1",
    );
}

#[test]
fn writeback_ftruncate_eio_refuses_shrink_and_keeps_length() {
    injected(
        "writeback_ftruncate_eio_refuses_shrink_and_keeps_length",
        "ftruncate_eio_shrink",
        "ftruncate:error=EIO:when=1",
    );
}

#[test]
fn writeback_fdatasync_eio_during_grow_poisons() {
    injected(
        "writeback_fdatasync_eio_during_grow_poisons",
        "fdatasync_eio_grow",
        "fdatasync:error=EIO:when=1",
    );
}

#[test]
fn writeback_fdatasync_eio_during_shrink_keeps_mapping_inside_file() {
    injected(
        "writeback_fdatasync_eio_during_shrink_keeps_mapping_inside_file",
        "fdatasync_eio_shrink",
        "fdatasync:error=EIO:when=1",
    );
}

#[test]
fn writeback_full_backing_store_fails_flush_and_poisons() {
    const NAME: &str = "writeback_full_backing_store_fails_flush_and_poisons";
    if let Some(why) = child::loop_devices_unavailable() {
        return child::skip(NAME, &why);
    }
    let scratch = common::Scratch::new();
    let out = child::run(&mut child::wrapped(
        &["unshare", "-m", "--propagation", "private"],
        CHILD_TEST,
        CHILD_ENV,
        format!("full_backing_store:{}", scratch.dir.path().display()),
    ));
    child::assert_success(&out, "SCENARIO-PASSED full_backing_store");
}
