//! A failed open or create leaves the file system as it found it: no new
//! file, no lost space, an existing file with its length and bytes; a
//! failed grow leaves the old length and the free space. And concurrent
//! `open_or_create` calls of one missing path all see the created length.
//!
//! - On a tmpfs of 4 MiB (mounted in a private user and mount namespace,
//!   `unshare -Urm`, by a child process: this test binary run again):
//!   creating a file that does not fit fails with `ENOSPC`, leaves no file
//!   and gives the space back; a retry that fits succeeds.
//! - On the normal disk: impossible lengths (`u64::MAX`, just past 128 TiB)
//!   fail before anything is touched.
//! - With `strace -e inject=`: a failing `fallocate`, `ftruncate`,
//!   `fdatasync`, `mmap` or directory `fsync` during a create leaves no
//!   file; a failing `fallocate`, `ftruncate` or `mmap` during a grow leaves
//!   the old length and a working mapping.
//! - 64 processes (and 64 tasks) race `open_or_create` on one missing path.
//!
//! Skips (with a printed reason) where `unshare` or `strace` cannot run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{child, Scratch, SplitMix};
use mmap_actor::{Error, MappedFile, Result};

/// Carries `<scenario>:<path>` to the child.
const CHILD_ENV: &str = "MMAP_ACTOR_OPEN_CLEANUP";
const CHILD_TEST: &str = "open_cleanup_child_runs_scenario";
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const TIB: u64 = 1 << 40;
const LEN: u64 = 64 * KIB;
/// Just past the largest length a mapping can have (128 TiB, the user
/// address space of x86-64).
const PAST_MAX: u64 = (128 << 40) + 1;
/// Processes (and tasks) racing `open_or_create`.
const RACERS: usize = 64;
const RACE_LEN: u64 = 8192;
/// The race between processes runs at least this many rounds, and for at
/// least [`RACE_FOR`].
const MIN_ROUNDS: usize = 4;
const RACE_FOR: Duration = Duration::from_secs(3);

fn pattern(len: u64) -> Vec<u8> {
    SplitMix::bytes(0xc1ea, len as usize)
}

/// Free bytes of the file system holding `dir`, as `df` reports them.
fn avail(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run df");
    assert!(out.status.success(), "df failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("cannot parse df output {out:?}"))
}

/// A failure of a create that does not fit: `ENOSPC` (or `EFBIG`, should
/// the file system refuse the length itself).
fn assert_no_space(result: Result<MappedFile>, what: &str) {
    match result {
        Err(err) => assert!(
            matches!(err.raw_os_error(), Some(libc::ENOSPC | libc::EFBIG)),
            "{what}: expected ENOSPC (or EFBIG), got {err:?}"
        ),
        Ok(f) => panic!("{what}: succeeded with len {}", f.len()),
    }
}

fn assert_absent(path: &Path, what: &str) {
    assert!(
        std::fs::symlink_metadata(path).is_err(),
        "{what}: left {} behind ({:?})",
        path.display(),
        std::fs::metadata(path).map(|m| m.len())
    );
}

fn assert_intact(path: &Path, want: &[u8], what: &str) {
    let got = std::fs::read(path).unwrap_or_else(|e| panic!("{what}: read: {e}"));
    assert_eq!(got.len(), want.len(), "{what}: the file's length changed");
    assert!(got == want, "{what}: the file's bytes changed");
}

fn mount_tmpfs(dir: &Path) -> PathBuf {
    let mnt = dir.join("tmpfs");
    std::fs::create_dir_all(&mnt).expect("mount point");
    child::sh(&format!(
        "mount -t tmpfs -o size=4m tmpfs '{}'",
        mnt.display()
    ));
    mnt
}

/// create / create_new of files that do not fit a 4 MiB tmpfs.
async fn tmpfs_create(dir: &Path) {
    let mnt = mount_tmpfs(dir);
    let before = avail(&mnt);
    let path = mnt.join("big.bin");
    for (what, len) in [("1 TiB", TIB), ("8 MiB", 8 * MIB)] {
        assert_no_space(
            MappedFile::create(&path, len).await,
            &format!("create({what})"),
        );
        assert_absent(&path, &format!("create({what})"));
        assert_eq!(
            avail(&mnt),
            before,
            "create({what}) did not give the space back"
        );
        assert_no_space(
            MappedFile::create_new(&path, len).await,
            &format!("create_new({what})"),
        );
        assert_absent(&path, &format!("create_new({what})"));
        assert_eq!(
            avail(&mnt),
            before,
            "create_new({what}) did not give the space back"
        );
        assert_no_space(
            MappedFile::options()
                .create(true)
                .len(len)
                .open(&path)
                .await,
            &format!("options().create(true).len({what})"),
        );
        assert_absent(&path, &format!("options().create(true).len({what})"));
    }
    // A retry that fits succeeds (no stale file makes create_new fail).
    let file = MappedFile::create_new(&path, 4096)
        .await
        .expect("create_new that fits, after the failures");
    assert_eq!(file.len(), 4096);
    file.update(0, b"fits".to_vec()).await.unwrap();
    file.close().await.unwrap();
    // The handle keeps the open's descriptor (`AsFd`) until it is dropped.
    drop(file);
    std::fs::remove_file(&path).unwrap();
    // The actor's task ends (and lets go of its descriptor, which keeps the
    // unlinked file's pages) just after `close()` answered; give it a moment
    // on a loaded machine.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while avail(&mnt) != before && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(avail(&mnt), before, "the space came back");
}

/// open_or_create of a missing path that does not fit, then one that fits.
async fn tmpfs_open_or_create(dir: &Path) {
    let mnt = mount_tmpfs(dir);
    let before = avail(&mnt);
    let path = mnt.join("maybe.bin");
    assert_no_space(
        MappedFile::open_or_create(&path, TIB).await,
        "open_or_create(1 TiB)",
    );
    assert_absent(&path, "open_or_create(1 TiB)");
    assert_no_space(
        MappedFile::open_or_create(&path, 8 * MIB).await,
        "open_or_create(8 MiB)",
    );
    assert_absent(&path, "open_or_create(8 MiB)");
    assert_eq!(
        avail(&mnt),
        before,
        "open_or_create did not give the space back"
    );
    let file = MappedFile::open_or_create(&path, 4096)
        .await
        .expect("open_or_create that fits");
    assert_eq!(file.len(), 4096, "the retry mapped a leftover file");
    file.update(4095, vec![1u8])
        .await
        .expect("update the last byte");
    file.close().await.unwrap();
}

/// Opens that would replace or grow an existing file beyond the free space
/// fail and leave it as it was.
async fn tmpfs_existing(dir: &Path) {
    let mnt = mount_tmpfs(dir);
    let path = mnt.join("kept.bin");
    let data = pattern(256 * KIB);
    std::fs::write(&path, &data).unwrap();
    let before = avail(&mnt);
    assert_no_space(
        MappedFile::create(&path, 8 * MIB).await,
        "create(existing, 8 MiB)",
    );
    assert_intact(&path, &data, "create(existing, 8 MiB)");
    assert_eq!(
        avail(&mnt),
        before,
        "create(existing) changed the free space"
    );
    assert_no_space(
        MappedFile::options().len(8 * MIB).open(&path).await,
        "options().len(8 MiB) of an existing file",
    );
    assert_intact(&path, &data, "options().len(8 MiB)");
    assert_no_space(
        MappedFile::options()
            .truncate(true)
            .len(8 * MIB)
            .open(&path)
            .await,
        "options().truncate(true).len(8 MiB)",
    );
    assert_intact(&path, &data, "options().truncate(true).len(8 MiB)");
    assert_eq!(
        avail(&mnt),
        before,
        "the failed opens changed the free space"
    );
}

/// A grow that does not fit leaves the length, the free space and a working
/// mapping.
async fn tmpfs_grow(dir: &Path) {
    let mnt = mount_tmpfs(dir);
    let path = mnt.join("grow.bin");
    let file = MappedFile::create(&path, MIB).await.expect("create 1 MiB");
    let mut model = pattern(MIB);
    file.update(0, model.clone()).await.unwrap();
    file.flush().await.unwrap();
    let before = avail(&mnt);
    for (what, len) in [("16 MiB", 16 * MIB), ("1 TiB", TIB)] {
        match file.resize(len).await {
            Err(err) => assert_eq!(
                err.raw_os_error(),
                Some(libc::ENOSPC),
                "grow to {what}: {err:?}"
            ),
            Ok(()) => panic!("grow to {what} succeeded on a 4 MiB tmpfs"),
        }
        assert_eq!(
            file.len(),
            MIB,
            "grow to {what}: the mapping's length changed"
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), MIB);
        assert_eq!(
            avail(&mnt),
            before,
            "grow to {what}: the space was not given back"
        );
    }
    model[..4].copy_from_slice(b"more");
    file.update(0, b"more".to_vec())
        .await
        .expect("update after");
    assert_eq!(&file.load(0, MIB).await.unwrap()[..], &model[..]);
    file.flush().await.expect("flush after");
    // A grow that fits still works.
    file.resize(2 * MIB).await.expect("grow that fits");
    file.update(2 * MIB - 1, vec![7u8]).await.unwrap();
    file.close().await.unwrap();
}

/// Under an injected failure: a create of a missing path fails and leaves
/// no file.
async fn create_fails_cleanly(path: &Path) {
    let result = MappedFile::create(path, LEN).await;
    let ok = result.is_ok();
    println!("CREATE-RESULT {:?}", result.as_ref().map(|f| f.len()));
    assert!(!ok, "create succeeded although a syscall was made to fail");
    assert_absent(path, "the failed create");
    let result = MappedFile::open_or_create(path, LEN).await;
    println!(
        "OPEN-OR-CREATE-RESULT {:?}",
        result.as_ref().map(|f| f.len())
    );
    if let Ok(f) = result {
        // The fault was injected once: the retry may succeed, but then
        // with the whole length.
        assert_eq!(f.len(), LEN, "open_or_create mapped a leftover file");
    } else {
        assert_absent(path, "the failed open_or_create");
    }
}

/// Under an injected failure: a grow fails, the file keeps its length and
/// bytes, the mapping keeps working, and a second grow succeeds.
async fn grow_fails_cleanly(path: &Path) {
    let file = MappedFile::open_rw(path).await.expect("open");
    let mut model = pattern(LEN);
    let err = file
        .resize(4 * LEN)
        .await
        .expect_err("a grow succeeded although a syscall was made to fail");
    println!("GROW-ERROR {err:?}");
    assert!(matches!(err, Error::Io { .. }), "grow: {err:?}");
    assert_eq!(file.len(), LEN, "the mapping's length changed");
    assert_eq!(
        std::fs::metadata(path).unwrap().len(),
        LEN,
        "the file's length changed"
    );
    assert!(!file.is_poisoned(), "a refused grow loses no data");
    model[LEN as usize - 4..].copy_from_slice(b"last");
    file.update(LEN - 4, b"last".to_vec())
        .await
        .expect("update after");
    assert_eq!(&file.load(0, LEN).await.unwrap()[..], &model[..]);
    {
        let seg = file.segment(LEN - 4096, 4096).await.expect("segment after");
        assert_eq!(&seg[..], &model[(LEN - 4096) as usize..]);
    }
    file.flush().await.expect("flush after");
    file.resize(4 * LEN).await.expect("the second grow");
    model.resize(4 * LEN as usize, 0);
    assert_eq!(&file.load(0, 4 * LEN).await.unwrap()[..], &model[..]);
    file.close().await.expect("close");
    assert_eq!(std::fs::metadata(path).unwrap().len(), 4 * LEN);
}

/// One racer: says it is ready, waits at the barrier (a FIFO next to
/// `path`, whose opening for reading blocks until the parent opens it for
/// writing: every racer is released at once), then opens or creates `path`
/// and uses its last byte.
async fn race(path: &Path) {
    let ready = path.with_extension(format!("ready-{}", std::process::id()));
    std::fs::write(ready, b"").expect("ready marker");
    drop(std::fs::File::open(path.with_extension("go")).expect("the barrier"));
    let file = match MappedFile::open_or_create(path, RACE_LEN).await {
        Ok(f) => f,
        Err(e) => {
            println!("RACE-OPEN-FAILED {e:?}");
            panic!("open_or_create failed: {e:?}");
        }
    };
    println!("MAPPED-LEN {}", file.len());
    file.update(RACE_LEN - 1, vec![1u8])
        .await
        .expect("update the last byte");
    assert_eq!(
        file.load(0, RACE_LEN).await.expect("load").len() as u64,
        RACE_LEN
    );
}

/// The child. strace counts `when=N` per thread, so the runtime has a single
/// blocking thread: every syscall the library makes runs on it.
#[test]
#[ignore = "child process of the open_cleanup_* tests"]
fn open_cleanup_child_runs_scenario() {
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
            "tmpfs_create" => tmpfs_create(path).await,
            "tmpfs_open_or_create" => tmpfs_open_or_create(path).await,
            "tmpfs_existing" => tmpfs_existing(path).await,
            "tmpfs_grow" => tmpfs_grow(path).await,
            "create_fails_cleanly" => create_fails_cleanly(path).await,
            "grow_fails_cleanly" => grow_fails_cleanly(path).await,
            "race" => race(path).await,
            other => panic!("unknown scenario {other}"),
        }
    });
    println!("SCENARIO-PASSED {scenario}");
}

/// Why private user and mount namespaces cannot be made, if they cannot.
fn user_namespace_unavailable() -> Option<String> {
    if !common::have("unshare") || !common::have("mount") || !common::have("df") {
        return Some("unshare, mount or df is not installed".into());
    }
    let ok = Command::new("unshare")
        .args(["-Urm", "true"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    (!ok).then(|| "`unshare -Urm` is not permitted here".into())
}

fn in_tmpfs(test: &str, scenario: &str) {
    if let Some(why) = user_namespace_unavailable() {
        return child::skip(test, &why);
    }
    let scratch = Scratch::new();
    let out = child::run(&mut child::wrapped(
        &["unshare", "-Urm"],
        CHILD_TEST,
        CHILD_ENV,
        format!("{scenario}:{}", scratch.dir.path().display()),
    ));
    assert_eq!(
        child::signal(&out.status),
        None,
        "the child was killed\n{}",
        child::describe(&out)
    );
    child::assert_success(&out, &format!("SCENARIO-PASSED {scenario}"));
}

#[test]
fn open_cleanup_create_that_does_not_fit_leaves_no_file_and_no_lost_space() {
    in_tmpfs(
        "open_cleanup_create_that_does_not_fit_leaves_no_file_and_no_lost_space",
        "tmpfs_create",
    );
}

#[test]
fn open_cleanup_open_or_create_that_does_not_fit_leaves_no_file() {
    in_tmpfs(
        "open_cleanup_open_or_create_that_does_not_fit_leaves_no_file",
        "tmpfs_open_or_create",
    );
}

#[test]
fn open_cleanup_opens_of_an_existing_file_that_do_not_fit_keep_it() {
    in_tmpfs(
        "open_cleanup_opens_of_an_existing_file_that_do_not_fit_keep_it",
        "tmpfs_existing",
    );
}

#[test]
fn open_cleanup_grow_that_does_not_fit_keeps_length_and_free_space() {
    in_tmpfs(
        "open_cleanup_grow_that_does_not_fit_keeps_length_and_free_space",
        "tmpfs_grow",
    );
}

/// Impossible lengths on the normal disk: an existing file keeps its length
/// and bytes, a missing path stays missing.
#[tokio::test]
async fn open_cleanup_impossible_lengths_touch_nothing() {
    let scratch = Scratch::new();
    let existing = scratch.path("existing");
    let data = pattern(LEN);
    std::fs::write(&existing, &data).unwrap();
    let missing = scratch.path("missing");
    for (what, len) in [("u64::MAX", u64::MAX), ("128 TiB + 1", PAST_MAX)] {
        let got = MappedFile::create(&existing, len).await;
        assert!(got.is_err(), "create(existing, {what}) succeeded");
        assert_intact(&existing, &data, &format!("create(existing, {what})"));
        let got = MappedFile::options().len(len).open(&existing).await;
        assert!(got.is_err(), "options().len({what}) succeeded");
        assert_intact(&existing, &data, &format!("options().len({what})"));
        let got = MappedFile::options()
            .truncate(true)
            .len(len)
            .open(&existing)
            .await;
        assert!(
            got.is_err(),
            "options().truncate(true).len({what}) succeeded"
        );
        assert_intact(
            &existing,
            &data,
            &format!("options().truncate(true).len({what})"),
        );
        let got = MappedFile::open_or_create(&existing, len).await;
        assert_eq!(
            got.expect("open_or_create keeps an existing file").len(),
            LEN
        );

        for (name, got) in [
            ("create", MappedFile::create(&missing, len).await),
            ("create_new", MappedFile::create_new(&missing, len).await),
            (
                "open_or_create",
                MappedFile::open_or_create(&missing, len).await,
            ),
            (
                "options().create(true).len",
                MappedFile::options()
                    .create(true)
                    .len(len)
                    .open(&missing)
                    .await,
            ),
        ] {
            assert!(got.is_err(), "{name}(missing, {what}) succeeded");
            assert_absent(&missing, &format!("{name}(missing, {what})"));
        }
    }
    // A usable length afterwards.
    let file = MappedFile::create_new(&missing, 4096)
        .await
        .expect("create_new");
    assert_eq!(file.len(), 4096);
}

/// Whether strace can inject faults here: `None` if so, else why not.
fn strace_unavailable() -> Option<String> {
    if !common::have("strace") {
        return Some("strace is not installed".into());
    }
    let traces = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "true"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    (!traces).then(|| "strace cannot trace here (ptrace is not permitted)".into())
}

/// Runs `scenario` on `path` in a child under `strace -e inject=<inject>`;
/// with `only_path`, only the syscalls on `path` are counted and failed
/// (`strace -P`), so that `mmap` of the file can fail while the
/// allocator's do not.
fn injected(test: &str, scenario: &str, path: &Path, inject: &str, only_path: bool) {
    let syscall = inject.split(':').next().expect("syscall");
    let trace = format!("trace={syscall}");
    let inject = format!("inject={inject}");
    let path_arg = path.display().to_string();
    let mut wrapper = vec!["strace", "-f", "-qq", "-o", "/dev/null"];
    if only_path {
        wrapper.extend(["-P", &path_arg]);
    }
    wrapper.extend(["-e", &trace, "-e", &inject]);
    let out = child::run(&mut child::wrapped(
        &wrapper,
        CHILD_TEST,
        CHILD_ENV,
        format!("{scenario}:{}", path.display()),
    ));
    assert_eq!(
        child::signal(&out.status),
        None,
        "{test}: the child was killed\n{}",
        child::describe(&out)
    );
    child::assert_success(&out, &format!("SCENARIO-PASSED {scenario}"));
}

/// A create whose `inject` fault fails it leaves no file.
fn create_under(test: &str, inject: &str, only_path: bool) {
    if let Some(why) = strace_unavailable() {
        return child::skip(test, &why);
    }
    let scratch = Scratch::new();
    let path = scratch.path("new.bin");
    injected(test, "create_fails_cleanly", &path, inject, only_path);
    if let Ok(meta) = std::fs::metadata(&path) {
        // The retried open_or_create may have created it, whole.
        assert_eq!(meta.len(), LEN, "{test}: a partial file was left behind");
    }
}

#[test]
fn open_cleanup_failed_directory_sync_leaves_no_file() {
    // The library syncs the parent directory with fsync (the file itself
    // with fdatasync), so this fails the directory sync only.
    create_under(
        "open_cleanup_failed_directory_sync_leaves_no_file",
        "fsync:error=EIO",
        false,
    );
}

#[test]
fn open_cleanup_failed_fallocate_at_create_leaves_no_file() {
    create_under(
        "open_cleanup_failed_fallocate_at_create_leaves_no_file",
        "fallocate:error=ENOSPC:when=1",
        // Not filtered by path: a new file is made unnamed, so its
        // syscalls name no path until it is linked in.
        false,
    );
}

#[test]
fn open_cleanup_failed_ftruncate_at_create_leaves_no_file() {
    create_under(
        "open_cleanup_failed_ftruncate_at_create_leaves_no_file",
        "ftruncate:error=EIO:when=1",
        // Not filtered by path: a new file is made unnamed, so its
        // syscalls name no path until it is linked in.
        false,
    );
}

#[test]
fn open_cleanup_failed_fdatasync_at_create_leaves_no_file() {
    create_under(
        "open_cleanup_failed_fdatasync_at_create_leaves_no_file",
        "fdatasync:error=EIO:when=1",
        // Not filtered by path: a new file is made unnamed, so its
        // syscalls name no path until it is linked in.
        false,
    );
}

#[test]
fn open_cleanup_failed_mmap_at_create_leaves_no_file() {
    create_under(
        "open_cleanup_failed_mmap_at_create_leaves_no_file",
        "mmap:error=ENOMEM:when=1",
        true,
    );
}

/// A grow whose `inject` fault fails it leaves the old length.
fn grow_under(test: &str, inject: &str) {
    if let Some(why) = strace_unavailable() {
        return child::skip(test, &why);
    }
    let scratch = Scratch::new();
    let path = scratch.path("data.bin");
    std::fs::write(&path, pattern(LEN)).unwrap();
    injected(test, "grow_fails_cleanly", &path, inject, true);
}

#[test]
fn open_cleanup_failed_fallocate_in_a_grow_keeps_the_length() {
    grow_under(
        "open_cleanup_failed_fallocate_in_a_grow_keeps_the_length",
        "fallocate:error=ENOSPC:when=1",
    );
}

#[test]
fn open_cleanup_failed_ftruncate_in_a_grow_keeps_the_length() {
    grow_under(
        "open_cleanup_failed_ftruncate_in_a_grow_keeps_the_length",
        "ftruncate:error=EIO:when=1",
    );
}

#[test]
fn open_cleanup_failed_mmap_in_a_grow_keeps_the_length() {
    // The first mmap of the file is the open's, the second the grow's.
    grow_under(
        "open_cleanup_failed_mmap_in_a_grow_keeps_the_length",
        "mmap:error=ENOMEM:when=2",
    );
}

/// 64 processes call `open_or_create(path, 8192)` on one missing path at
/// once: every one succeeds and maps 8192 bytes.
#[test]
fn open_cleanup_open_or_create_races_between_processes() {
    const NAME: &str = "open_cleanup_open_or_create_races_between_processes";
    if !common::have("mkfifo") {
        return child::skip(NAME, "mkfifo is not installed");
    }
    // The window is narrow: race round after round for a few seconds.
    let start = Instant::now();
    let mut round = 0;
    while round < MIN_ROUNDS || start.elapsed() < RACE_FOR {
        race_processes(round, &[]);
        round += 1;
    }
    println!("{round} rounds of {RACERS} racing processes");
}

/// The same race with the window held open: every racer runs under strace,
/// which delays each `fallocate` and `ftruncate` by 200 ms, so the racer
/// that creates the file is still setting its length when the others open
/// it.
#[test]
fn open_cleanup_open_or_create_races_between_processes_with_a_slow_creator() {
    const NAME: &str = "open_cleanup_open_or_create_races_between_processes_with_a_slow_creator";
    if !common::have("mkfifo") {
        return child::skip(NAME, "mkfifo is not installed");
    }
    if let Some(why) = strace_unavailable() {
        return child::skip(NAME, &why);
    }
    race_processes(
        0,
        &[
            "strace",
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "trace=fallocate,ftruncate",
            "-e",
            "inject=fallocate,ftruncate:delay_enter=200000",
        ],
    );
}

/// One round: `RACERS` children (under `wrapper`, if any) released at once.
fn race_processes(round: usize, wrapper: &[&str]) {
    let scratch = Scratch::new();
    let path = scratch.path("raced.bin");
    let go = path.with_extension("go");
    child::sh(&format!("mkfifo '{}'", go.display()));
    let children: Vec<_> = (0..RACERS)
        .map(|_| {
            let arg = format!("race:{}", path.display());
            let mut cmd = if wrapper.is_empty() {
                child::command(CHILD_TEST, CHILD_ENV, arg)
            } else {
                child::wrapped(wrapper, CHILD_TEST, CHILD_ENV, arg)
            };
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn a racer")
        })
        .collect();
    // Release them together once all are at the barrier.
    let start = Instant::now();
    loop {
        let ready = std::fs::read_dir(scratch.dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().contains(".ready-"))
            })
            .count();
        if ready == RACERS {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "only {ready} of {RACERS} racers got ready"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    // Held open until every racer is done, so that none blocks forever.
    let barrier = std::fs::OpenOptions::new()
        .write(true)
        .open(&go)
        .expect("open the barrier");
    let mut failures = Vec::new();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().expect("wait for a racer");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let ok = out.status.success()
            && stdout.contains(&format!("MAPPED-LEN {RACE_LEN}"))
            && stdout.contains("SCENARIO-PASSED race");
        if !ok {
            failures.push(format!("racer {i}:\n{}", child::describe(&out)));
        }
    }
    drop(barrier);
    assert!(
        failures.is_empty(),
        "round {round}: {} of {RACERS} racers failed; the first:\n{}",
        failures.len(),
        failures[0]
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), RACE_LEN);
}

/// The same race between tasks of one process, over several rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_cleanup_open_or_create_races_between_tasks() {
    let scratch = Scratch::new();
    for round in 0..16 {
        let path = scratch.path(&format!("raced-{round}.bin"));
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(RACERS));
        let tasks: Vec<_> = (0..RACERS)
            .map(|_| {
                let path = path.clone();
                let barrier = std::sync::Arc::clone(&barrier);
                tokio::spawn(async move {
                    barrier.wait().await;
                    let file = MappedFile::open_or_create(&path, RACE_LEN).await?;
                    let len = file.len();
                    file.update(RACE_LEN - 1, vec![1u8]).await?;
                    Ok::<u64, Error>(len)
                })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await.expect("racer task") {
                Ok(len) => assert_eq!(len, RACE_LEN, "round {round}, racer {i}: mapped length"),
                Err(e) => panic!("round {round}, racer {i}: {e:?}"),
            }
        }
    }
}
