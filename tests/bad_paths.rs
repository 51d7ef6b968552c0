//! Bad paths and files: missing paths, directories, the empty path,
//! existing files for `create_new`, impossible lengths, empty files in
//! every mode, and permission denied (checked in a child process running as
//! `nobody`, since root ignores file modes and CI runs as root). Each gives
//! the documented typed error, with the path, and changes nothing.

mod common;

use std::io;
use std::path::Path;

use common::expect::{check, oob, Want};
use common::Scratch;
use mmap_actor::{Error, MappedFile, Mode, Result};

const L: u64 = 4096;

/// Missing paths, directories and existing files given to every opener.
#[tokio::test]
async fn bad_paths_are_io_errors_with_the_path() {
    let scratch = Scratch::new();
    let missing = scratch.path("missing");
    let in_missing_dir = scratch.path("no-such-dir/file");
    let dir = scratch.path("a-directory");
    std::fs::create_dir(&dir).unwrap();
    let existing = scratch.path("existing");
    std::fs::write(&existing, b"0123456789").unwrap();

    let enoent = Want::Io {
        op: "open",
        errno: libc::ENOENT,
    };
    let eisdir = Want::Io {
        op: "open",
        errno: libc::EISDIR,
    };
    let eexist = Want::Io {
        op: "open",
        errno: libc::EEXIST,
    };

    let openers: Vec<(&str, Opener)> = vec![
        (
            "open_rw",
            Box::new(|p: &Path| Box::pin(MappedFile::open_rw(p.to_path_buf())) as Opening),
        ),
        (
            "open_ro",
            Box::new(|p: &Path| Box::pin(MappedFile::open_ro(p.to_path_buf())) as Opening),
        ),
        (
            "open_cow",
            Box::new(|p: &Path| Box::pin(MappedFile::open_cow(p.to_path_buf())) as Opening),
        ),
        (
            "options().open",
            Box::new(|p: &Path| {
                let p = p.to_path_buf();
                Box::pin(async move { MappedFile::options().open(p).await }) as Opening
            }),
        ),
    ];
    for (name, open) in &openers {
        check(&format!("{name}(missing)"), open(&missing).await, enoent);
        check(
            &format!("{name}(missing dir)"),
            open(&in_missing_dir).await,
            enoent,
        );
        check(&format!("{name}(\"\")"), open(Path::new("")).await, enoent);
        check(&format!("{name}(directory)"), open(&dir).await, eisdir);
    }
    check(
        "create(missing dir)",
        MappedFile::create(&in_missing_dir, 8).await,
        enoent,
    );
    check(
        "create_new(missing dir)",
        MappedFile::create_new(&in_missing_dir, 8).await,
        enoent,
    );
    check(
        "open_or_create(missing dir)",
        MappedFile::open_or_create(&in_missing_dir, 8).await,
        enoent,
    );
    check(
        "create(directory)",
        MappedFile::create(&dir, 8).await,
        eisdir,
    );
    check(
        "create_new(directory)",
        MappedFile::create_new(&dir, 8).await,
        eexist,
    );
    check(
        "open_or_create(directory)",
        MappedFile::open_or_create(&dir, 8).await,
        eisdir,
    );
    check(
        "create_new(existing)",
        MappedFile::create_new(&existing, 8).await,
        eexist,
    );

    // The error names the path, and keeps the OS error as its source.
    match MappedFile::open_rw(&missing).await {
        Err(err @ Error::Io { .. }) => {
            assert_eq!(err.io_kind(), Some(io::ErrorKind::NotFound));
            assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
            let Error::Io { path, .. } = &err else {
                unreachable!()
            };
            assert_eq!(path, &missing);
            assert!(std::error::Error::source(&err).is_some());
        }
        other => panic!("open_rw(missing): {other:?}"),
    }
    // Failed opens created nothing and changed nothing.
    assert!(!missing.exists());
    assert!(!in_missing_dir.parent().unwrap().exists());
    assert!(dir.is_dir());
    assert_eq!(std::fs::read(&existing).unwrap(), b"0123456789");
    // open_or_create keeps an existing file's length and bytes.
    let kept = MappedFile::open_or_create(&existing, 4096).await.unwrap();
    assert_eq!(kept.len(), 10);
    assert_eq!(&kept.load(0, 10).await.unwrap()[..], b"0123456789");
    kept.close().await.unwrap();
}

/// An opener under test, as a boxed function of the path.
type Opener = Box<dyn Fn(&Path) -> Opening>;
type Opening = std::pin::Pin<Box<dyn std::future::Future<Output = Result<MappedFile>>>>;

/// An impossible length fails (`TooLarge` beyond what any file can have, an
/// I/O error beyond what this file system allows) and leaves the file and
/// the mapping as they were.
#[tokio::test]
async fn impossible_lengths_fail_cleanly() {
    let scratch = Scratch::new();
    let file = scratch.file("data", L).await;
    file.update(0, vec![0x5Au8; L as usize]).await.unwrap();
    for new_len in [u64::MAX, u64::MAX / 2, 1 << 62] {
        match file.resize(new_len).await {
            Err(Error::Io { op, .. }) => {
                assert!(
                    ["fallocate", "ftruncate", "mmap"].contains(&op),
                    "resize({new_len}): op {op}"
                )
            }
            Err(Error::TooLarge { len, max }) => {
                assert_eq!(len, new_len);
                assert!(new_len > max, "resize({new_len}) refused below {max}");
            }
            other => panic!("resize({new_len}): expected Error::Io or TooLarge, got {other:?}"),
        }
        match file.try_resize(new_len).await {
            Err(Error::Io { .. } | Error::TooLarge { .. }) => {}
            other => panic!("try_resize({new_len}): expected Error::Io or TooLarge, got {other:?}"),
        }
        assert_eq!(file.len(), L);
        assert_eq!(std::fs::metadata(scratch.path("data")).unwrap().len(), L);
    }
    // The mapping still works, with its data.
    assert!(file.load(0, L).await.unwrap().iter().all(|&b| b == 0x5A));
    file.update(L - 1, vec![1u8]).await.unwrap();
    file.resize(2 * L).await.unwrap();
    assert_eq!(file.load(L - 1, 2).await.unwrap()[..], [1, 0]);
    file.close().await.unwrap();

    match MappedFile::create(scratch.path("huge"), u64::MAX).await {
        Err(Error::TooLarge { len: u64::MAX, .. }) => {}
        other => panic!("create(u64::MAX): expected Error::TooLarge, got {other:?}"),
    }
    assert!(
        !scratch.path("huge").exists(),
        "a failed create left a file"
    );
}

/// An empty file opens in every mode; a read-write one grows.
#[tokio::test]
async fn empty_files_open_in_every_mode_and_grow() {
    let scratch = Scratch::new();
    let path = scratch.path("empty");
    std::fs::write(&path, b"").unwrap();

    let opens: Vec<(Mode, MappedFile)> = vec![
        (Mode::ReadWrite, MappedFile::open_rw(&path).await.unwrap()),
        (Mode::ReadOnly, MappedFile::open_ro(&path).await.unwrap()),
        (
            Mode::CopyOnWrite,
            MappedFile::open_cow(&path).await.unwrap(),
        ),
        (
            Mode::ReadWrite,
            MappedFile::open_or_create(&path, 100).await.unwrap(),
        ),
        (
            Mode::ReadWrite,
            MappedFile::options().open(&path).await.unwrap(),
        ),
    ];
    for (mode, file) in &opens {
        assert_eq!(file.mode(), *mode);
        assert!(file.is_empty());
        assert_eq!(file.len(), 0);
        check("load(0, 0)", file.load(0, 0).await, Want::Ok);
        check("load(0, 1)", file.load(0, 1).await, oob(0, 1, 0));
        check("load(1, 0)", file.load(1, 0).await, oob(1, 0, 0));
        check("segment(0, 0)", file.segment(0, 0).await, Want::Ok);
        check("segment(0, 1)", file.segment(0, 1).await, oob(0, 1, 0));
        check("prewarm(0, 0)", file.prewarm(0, 0).await, Want::Ok);
        check("flush", file.flush().await, Want::Ok);
        check("flush_range(0, 0)", file.flush_range(0, 0).await, Want::Ok);
        if mode.is_writable() {
            check("update(0, [])", file.update(0, Vec::new()).await, Want::Ok);
            check(
                "update(0, [1])",
                file.update(0, vec![1u8]).await,
                oob(0, 1, 0),
            );
            check("segment_mut(0, 0)", file.segment_mut(0, 0).await, Want::Ok);
            check("atomic_u32(0)", file.atomic_u32(0).await, oob(0, 4, 0));
            check("atomic_u64(0)", file.atomic_u64(0).await, oob(0, 8, 0));
            check(
                "atomic_u64_slice(0, 0)",
                file.atomic_u64_slice(0, 0).await,
                Want::Ok,
            );
            check(
                "modify(0, 0)",
                file.modify(0, 0, |b| assert!(b.is_empty())).await,
                Want::Ok,
            );
        }
    }
    for (mode, file) in &opens {
        if *mode != Mode::ReadWrite {
            check(
                "resize of an empty file",
                file.resize(L).await,
                Want::ReadOnly {
                    op: "resize",
                    mode: *mode,
                },
            );
        }
    }
    // Grow through one read-write handle, write, shrink to zero and grow
    // again through another.
    let rw = &opens[0].1;
    rw.resize(L).await.unwrap();
    assert_eq!(rw.len(), L);
    rw.update(L - 3, b"end".to_vec()).await.unwrap();
    rw.resize(0).await.unwrap();
    assert!(rw.is_empty());
    let other = &opens[3].1;
    other.resize(2 * L).await.unwrap();
    other.update(0, b"start".to_vec()).await.unwrap();
    for (_, file) in opens {
        file.close().await.unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len() as u64, 2 * L);
    assert_eq!(&bytes[..5], b"start");
    assert!(bytes[5..].iter().all(|&b| b == 0));

    // A file created empty by every creator.
    let created = MappedFile::create(scratch.path("c0"), 0).await.unwrap();
    let created_new = MappedFile::create_new(scratch.path("c1"), 0).await.unwrap();
    let or_created = MappedFile::open_or_create(scratch.path("c2"), 0)
        .await
        .unwrap();
    for file in [created, created_new, or_created] {
        assert!(file.is_empty());
        file.resize(10).await.unwrap();
        file.update(9, vec![9u8]).await.unwrap();
        file.close().await.unwrap();
        let bytes = std::fs::read(file.path()).unwrap();
        assert_eq!(bytes, [0, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
    }
}

const CHILD_ENV: &str = "MMAP_ACTOR_PERMISSION_CHILD";

/// The child half: run by [`permission_denied_is_an_io_error`] as uid 65534
/// on a root-owned 0600 file. Ignored when run on its own.
#[tokio::test]
#[ignore = "child process of permission_denied_is_an_io_error"]
async fn permission_denied_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        eprintln!("not started by permission_denied_is_an_io_error; nothing to do");
        return;
    };
    // Privileges really were dropped (`/proc/self` belongs to the euid).
    let uid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    assert_eq!(uid.unwrap(), 65534, "the child must run as uid 65534");
    let dir = Path::new(&dir);
    let secret = dir.join("secret");
    let denied = |op| Want::Io {
        op,
        errno: libc::EACCES,
    };
    check(
        "open_rw",
        MappedFile::open_rw(&secret).await,
        denied("open"),
    );
    check(
        "open_ro",
        MappedFile::open_ro(&secret).await,
        denied("open"),
    );
    check(
        "open_cow",
        MappedFile::open_cow(&secret).await,
        denied("open"),
    );
    check(
        "open_or_create",
        MappedFile::open_or_create(&secret, 8).await,
        denied("open"),
    );
    check(
        "create",
        MappedFile::create(&secret, 8).await,
        denied("open"),
    );
    // The directory is root's, mode 0755: no new files in it.
    check(
        "create(new)",
        MappedFile::create(dir.join("new"), 8).await,
        denied("open"),
    );
    check(
        "create_new(new)",
        MappedFile::create_new(dir.join("new"), 8).await,
        denied("open"),
    );
    match MappedFile::open_rw(&secret).await {
        Err(err) => assert_eq!(err.io_kind(), Some(io::ErrorKind::PermissionDenied)),
        Ok(_) => panic!("open_rw of a 0600 root file succeeded as nobody"),
    }
    // A world-readable file opens read-only but not read-write.
    let public = dir.join("public");
    check(
        "open_ro(public)",
        MappedFile::open_ro(&public).await,
        Want::Ok,
    );
    check(
        "open_rw(public)",
        MappedFile::open_rw(&public).await,
        denied("open"),
    );
    println!("permission child: all checks passed");
}

#[test]
fn permission_denied_is_an_io_error() {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    // The effective uid, read through /proc (no unsafe libc call).
    let euid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    if euid != 0 {
        eprintln!("skipped: not root, so privileges cannot be dropped (uid {euid})");
        return;
    }
    if !common::have("setpriv") {
        eprintln!("skipped: setpriv is not installed");
        return;
    }
    let scratch = Scratch::new();
    let dir = scratch.dir.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, vec![1u8; 64]).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let public = dir.join("public");
    std::fs::write(&public, vec![2u8; 64]).unwrap();
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644)).unwrap();
    // The test binary may sit under a directory nobody cannot reach: run a
    // copy from the scratch directory.
    let exe = dir.join("bad_paths-child");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();

    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args([
            "--exact",
            "permission_denied_child",
            "--include-ignored",
            "--nocapture",
        ])
        .env(CHILD_ENV, dir)
        .env("TMPDIR", dir)
        .output()
        .expect("run setpriv");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("setpriv:") {
        // setpriv itself failed (no capability to change ids in this
        // container): not the library's fault.
        eprintln!("skipped: setpriv could not drop privileges: {stderr}");
        return;
    }
    assert!(
        out.status.success(),
        "child failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("permission child: all checks passed") && stdout.contains("1 passed"),
        "the child did not run its checks:\n{stdout}\n{stderr}"
    );
    println!("permission denied: the child ran as uid 65534 and passed");
    // Nothing was changed or created by the refused opens.
    assert_eq!(std::fs::read(&secret).unwrap(), vec![1u8; 64]);
    assert!(!dir.join("new").exists());
}
