//! `mmap_actor::fs`: a copy is identical and durable (the destination and
//! its directory are synced, seen with `strace -y`), a rename syncs its
//! directories, and bad paths (missing, a directory, permission denied as
//! `nobody`) are typed errors naming the operation and the path. Refusals
//! for mapped files are unit tests in `src/fs.rs` (the registry is
//! private).

mod common;

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Scratch, SplitMix};
use mmap_actor::{fs, Error, Result};

/// Asserts `Error::Io { op, path, .. }` with the OS error `errno`.
fn assert_io<T: std::fmt::Debug>(call: &str, got: Result<T>, op: &str, path: &Path, errno: i32) {
    match &got {
        Err(
            err @ Error::Io {
                op: got_op,
                path: got_path,
                ..
            },
        ) => {
            assert_eq!(
                (*got_op, got_path.as_path(), err.raw_os_error()),
                (op, path, Some(errno)),
                "{call}: {err}"
            );
            assert!(std::error::Error::source(err).is_some());
        }
        other => panic!("{call}: expected Error::Io {{ op: {op:?}, .. }}, got {other:?}"),
    }
}

#[tokio::test]
async fn copy_gives_identical_bytes_and_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new();
    let src = s.path("src");
    let data = SplitMix::bytes(7, 10 << 20);
    std::fs::write(&src, &data).unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o640)).unwrap();
    let dst = s.path("dst");
    // An existing, longer destination is truncated.
    std::fs::write(&dst, vec![1u8; 11 << 20]).unwrap();
    assert_eq!(fs::copy(&src, &dst).await.unwrap(), 10 << 20);
    assert!(std::fs::read(&dst).unwrap() == data, "copied bytes differ");
    let mode = std::fs::metadata(&dst).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
    // An empty file copies to an empty file.
    std::fs::write(s.path("empty"), b"").unwrap();
    assert_eq!(
        fs::copy(s.path("empty"), s.path("empty2")).await.unwrap(),
        0
    );
    assert_eq!(std::fs::metadata(s.path("empty2")).unwrap().len(), 0);
}

#[tokio::test]
async fn rename_and_remove_do_what_they_say() {
    let s = Scratch::new();
    std::fs::write(s.path("a"), b"state").unwrap();
    std::fs::write(s.path("b"), b"old").unwrap();
    fs::rename(s.path("a"), s.path("b")).await.unwrap();
    assert!(!s.path("a").exists());
    assert_eq!(std::fs::read(s.path("b")).unwrap(), b"state");
    // Into another directory.
    std::fs::create_dir(s.path("sub")).unwrap();
    fs::rename(s.path("b"), s.path("sub/b")).await.unwrap();
    assert_eq!(std::fs::read(s.path("sub/b")).unwrap(), b"state");
    fs::remove(s.path("sub/b")).await.unwrap();
    assert!(!s.path("sub/b").exists());
}

#[tokio::test]
async fn bad_paths_are_io_errors_with_the_op_and_path() {
    let s = Scratch::new();
    let missing = s.path("missing");
    let dir = s.path("dir");
    std::fs::create_dir(&dir).unwrap();
    let file = s.path("file");
    std::fs::write(&file, b"x").unwrap();
    let in_missing_dir = s.path("no-such-dir/f");

    assert_io(
        "copy(missing)",
        fs::copy(&missing, s.path("out")).await,
        "open",
        &missing,
        libc::ENOENT,
    );
    assert_io(
        "copy(directory)",
        fs::copy(&dir, s.path("out")).await,
        "copy",
        &dir,
        libc::EISDIR,
    );
    assert_io(
        "copy(to a missing directory)",
        fs::copy(&file, &in_missing_dir).await,
        "open",
        &in_missing_dir,
        libc::ENOENT,
    );
    assert_io(
        "copy(to a directory)",
        fs::copy(&file, &dir).await,
        "open",
        &dir,
        libc::EISDIR,
    );
    assert!(!s.path("out").exists());
    assert_io(
        "rename(missing)",
        fs::rename(&missing, s.path("out")).await,
        "rename",
        &missing,
        libc::ENOENT,
    );
    assert_io(
        "rename(to a missing directory)",
        fs::rename(&file, &in_missing_dir).await,
        "rename",
        &file,
        libc::ENOENT,
    );
    assert_io(
        "remove(missing)",
        fs::remove(&missing).await,
        "remove",
        &missing,
        libc::ENOENT,
    );
    assert_io(
        "remove(directory)",
        fs::remove(&dir).await,
        "remove",
        &dir,
        libc::EISDIR,
    );
    match fs::remove(Path::new("")).await {
        Err(err) => assert_eq!(err.io_kind(), Some(io::ErrorKind::NotFound)),
        Ok(()) => panic!("remove(\"\") succeeded"),
    }
    // Nothing was changed by the failures.
    assert!(dir.is_dir());
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

const CHILD_ENV: &str = "MMAP_ACTOR_FS_HELPERS_DIR";

fn child_dir() -> Option<PathBuf> {
    std::env::var_os(CHILD_ENV).map(Into::into)
}

/// Copies a 10 MiB file, then renames the copy into a subdirectory.
#[tokio::test]
#[ignore = "child of copy_and_rename_sync_the_file_and_the_directories"]
async fn child_copy_and_rename() {
    let Some(dir) = child_dir() else { return };
    std::fs::write(dir.join("src"), SplitMix::bytes(3, 10 << 20)).unwrap();
    println!("--- copy");
    fs::copy(dir.join("src"), dir.join("dst")).await.unwrap();
    println!("--- rename");
    std::fs::create_dir(dir.join("sub")).unwrap();
    fs::rename(dir.join("dst"), dir.join("sub/moved"))
        .await
        .unwrap();
    println!("--- remove");
    fs::remove(dir.join("src")).await.unwrap();
    println!("--- done");
}

/// The sync calls of the child, each with the path of its descriptor
/// (`strace -y`), in order.
fn traced_syncs(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter_map(|line| {
            // `6459  fdatasync(3</tmp/x/dst>)    = 0` (`-f -o` prefixes the pid).
            let (head, rest) = line.split_once('(')?;
            let name = head.split_whitespace().last()?;
            let path = rest.split_once('<')?.1.split_once('>')?.0;
            let ok = rest.trim_end().ends_with("= 0");
            (ok && ["fsync", "fdatasync"].contains(&name))
                .then(|| (name.to_string(), path.to_string()))
        })
        .collect()
}

#[test]
fn copy_and_rename_sync_the_file_and_the_directories() {
    if !common::have("strace") {
        println!("skipped: strace is not installed");
        return;
    }
    let s = Scratch::new();
    let log = s.path("strace.log");
    let (status, output) = common::rerun(
        "child_copy_and_rename",
        &[
            "strace",
            "-f",
            "-y",
            "-e",
            "trace=fsync,fdatasync",
            "-o",
            log.to_str().unwrap(),
        ],
        &[(CHILD_ENV, s.dir.path().display().to_string())],
    );
    assert!(
        status.success() && output.contains("--- done"),
        "child failed: {output}"
    );
    let syncs = traced_syncs(&std::fs::read_to_string(&log).unwrap());
    // Paths as the kernel resolves them.
    let real = std::fs::canonicalize(s.dir.path()).unwrap();
    let dir = real.display().to_string();
    let dst = real.join("dst").display().to_string();
    let sub = real.join("sub").display().to_string();
    let want = [
        // copy: the file's data, then its directory entry.
        (["fsync", "fdatasync"].as_slice(), dst.as_str()),
        (["fsync"].as_slice(), dir.as_str()),
        // rename across directories: both directories.
        (["fsync"].as_slice(), sub.as_str()),
        (["fsync"].as_slice(), dir.as_str()),
        // remove: the directory.
        (["fsync"].as_slice(), dir.as_str()),
    ];
    assert_eq!(syncs.len(), want.len(), "syncs: {syncs:?}");
    for ((name, path), (names, want_path)) in syncs.iter().zip(want) {
        assert!(
            names.contains(&name.as_str()) && path == want_path,
            "expected {names:?} of {want_path}, got {name} of {path}; all: {syncs:?}"
        );
    }
}

const PERMISSION_ENV: &str = "MMAP_ACTOR_FS_PERMISSION_DIR";

/// Runs as uid 65534 in a root-owned 0755 directory holding a 0600 file.
#[tokio::test]
#[ignore = "child process of permission_denied_is_an_io_error_with_the_path"]
async fn permission_child() {
    let Some(dir) = std::env::var_os(PERMISSION_ENV).map(PathBuf::from) else {
        return;
    };
    let uid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    assert_eq!(uid.unwrap(), 65534, "the child must run as uid 65534");
    let secret = dir.join("secret");
    let public = dir.join("public");
    let mine = std::env::temp_dir().join("mmap-actor-fs-permission-child");
    assert_io(
        "copy(unreadable)",
        fs::copy(&secret, &mine).await,
        "open",
        &secret,
        libc::EACCES,
    );
    let new = dir.join("new");
    assert_io(
        "copy(into a read-only directory)",
        fs::copy(&public, &new).await,
        "open",
        &new,
        libc::EACCES,
    );
    assert_io(
        "rename(in a read-only directory)",
        fs::rename(&public, &new).await,
        "rename",
        &public,
        libc::EACCES,
    );
    assert_io(
        "remove(in a read-only directory)",
        fs::remove(&public).await,
        "remove",
        &public,
        libc::EACCES,
    );
    println!("fs permission child: all checks passed");
}

#[test]
fn permission_denied_is_an_io_error_with_the_path() {
    use std::os::unix::fs::PermissionsExt;
    let euid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    if euid != 0 {
        println!("skipped: not root, so privileges cannot be dropped (uid {euid})");
        return;
    }
    if !common::have("setpriv") {
        println!("skipped: setpriv is not installed");
        return;
    }
    let s = Scratch::new();
    let dir = s.dir.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("secret"), b"secret").unwrap();
    std::fs::set_permissions(dir.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(dir.join("public"), b"public").unwrap();
    std::fs::set_permissions(dir.join("public"), std::fs::Permissions::from_mode(0o644)).unwrap();
    // The test binary may sit where nobody cannot reach it: run a copy.
    let exe = dir.join("fs_helpers-child");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A directory the unprivileged child can write to, as its TMPDIR.
    let tmp = dir.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o777)).unwrap();

    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args(common::child::test_args("permission_child"))
        .env(PERMISSION_ENV, dir)
        .env("TMPDIR", &tmp)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("setpriv:") {
        println!("skipped: setpriv could not drop privileges: {stderr}");
        return;
    }
    common::child::assert_success(&out, "fs permission child: all checks passed");
    // The refused calls changed nothing.
    assert_eq!(std::fs::read(dir.join("public")).unwrap(), b"public");
    assert!(!dir.join("new").exists());
}
