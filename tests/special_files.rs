//! Special files given to the openers: a FIFO (opening one for reading
//! blocks until a writer comes, which must not wedge a blocking thread or
//! the caller), a Unix socket, a character device (`/dev/null`), a
//! directory, a symlink to a regular file, a symlink loop, a dangling
//! symlink, a symlink to a FIFO, and a `/proc` file (which claims to be a
//! regular file of length 0 while its content is generated on read).
//!
//! Every opener returns promptly (a 10 s timeout is the hang detector) with
//! an error, except for the symlink to a regular file, which works like
//! the file. The precise variant for the unsupported kinds
//! (`Error::Unsupported`) is asserted in `new_api.rs`; here it is only an
//! `Err`, and the directory keeps its `Error::Io` with `EISDIR`.
//!
//! A hung open of a FIFO is released by the test (it opens the FIFO for
//! reading and writing, which never blocks on Linux, and so supplies the
//! missing partner), so that a failure does not also hang the runtime's
//! shutdown.

mod common;

use std::future::Future;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use common::{child, Scratch};
use mmap_actor::{Error, MappedFile, Result};

/// Hang detector only.
const PROMPT: Duration = Duration::from_secs(10);

type Opening = Pin<Box<dyn Future<Output = Result<MappedFile>>>>;
type Opener = fn(PathBuf) -> Opening;

/// Every way to open a path.
fn openers() -> Vec<(&'static str, Opener)> {
    vec![
        ("open_ro", |p| {
            Box::pin(async move { MappedFile::open_ro(p).await })
        }),
        ("open_rw", |p| {
            Box::pin(async move { MappedFile::open_rw(p).await })
        }),
        ("open_cow", |p| {
            Box::pin(async move { MappedFile::open_cow(p).await })
        }),
        ("open_or_create", |p| {
            Box::pin(async move { MappedFile::open_or_create(p, 4096).await })
        }),
        ("options().open", |p| {
            Box::pin(async move { MappedFile::options().open(p).await })
        }),
    ]
}

/// FIFOs made with `mkfifo`. Dropping this opens each one for reading and
/// writing, which wakes any open still blocked on it.
struct Fifos(Vec<PathBuf>);

impl Fifos {
    fn make(paths: Vec<PathBuf>) -> Fifos {
        for p in &paths {
            child::sh(&format!("mkfifo '{}'", p.display()));
        }
        Fifos(paths)
    }

    /// Supplies the partner an open blocked on `path` is waiting for.
    fn release(path: &Path) {
        let _ = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path);
    }
}

impl Drop for Fifos {
    fn drop(&mut self) {
        for p in &self.0 {
            Fifos::release(p);
        }
    }
}

/// Awaits `opening` under the hang detector; a hang releases `fifo` (if
/// any) and fails the test.
async fn prompt(what: &str, fifo: Option<&Path>, opening: Opening) -> Result<MappedFile> {
    match tokio::time::timeout(PROMPT, opening).await {
        Ok(result) => result,
        Err(_) => {
            if let Some(p) = fifo {
                Fifos::release(p);
            }
            panic!("{what} did not return within {PROMPT:?}");
        }
    }
}

/// Every opener on `path` returns an error promptly.
async fn all_refused(kind: &str, path: &Path, fifo: Option<&Path>) {
    for (name, open) in openers() {
        let what = format!("{name}({kind})");
        match prompt(&what, fifo, open(path.to_path_buf())).await {
            Err(err) => println!("{what}: {err}"),
            Ok(f) => panic!("{what} succeeded (len {}, mode {:?})", f.len(), f.mode()),
        }
    }
    // `create` truncates an existing file: on these it must refuse.
    let what = format!("create({kind})");
    let got = prompt(
        &what,
        fifo,
        Box::pin({
            let p = path.to_path_buf();
            async move { MappedFile::create(p, 4096).await }
        }),
    )
    .await;
    assert!(got.is_err(), "{what} succeeded");
}

#[tokio::test]
async fn special_files_fifo_is_refused_promptly() {
    if !common::have("mkfifo") {
        return child::skip(
            "special_files_fifo_is_refused_promptly",
            "mkfifo is not installed",
        );
    }
    let scratch = Scratch::new();
    let path = scratch.path("fifo");
    let fifos = Fifos::make(vec![path.clone()]);
    all_refused("a FIFO", &path, Some(&path)).await;
    assert!(
        std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_fifo(),
        "the FIFO was replaced"
    );
    drop(fifos);
}

#[tokio::test]
async fn special_files_symlink_to_a_fifo_is_refused_promptly() {
    if !common::have("mkfifo") {
        return child::skip(
            "special_files_symlink_to_a_fifo_is_refused_promptly",
            "mkfifo is not installed",
        );
    }
    let scratch = Scratch::new();
    let fifo = scratch.path("fifo");
    let fifos = Fifos::make(vec![fifo.clone()]);
    let link = scratch.path("link-to-fifo");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    all_refused("a symlink to a FIFO", &link, Some(&fifo)).await;
    drop(fifos);
}

/// 64 FIFOs in a row on a runtime with two blocking threads: if an open
/// left a blocking thread stuck on a FIFO, the pool would run dry and the
/// next open (of anything) would hang.
#[test]
fn special_files_fifos_do_not_leave_the_blocking_pool_stuck() {
    if !common::have("mkfifo") {
        return child::skip(
            "special_files_fifos_do_not_leave_the_blocking_pool_stuck",
            "mkfifo is not installed",
        );
    }
    let scratch = Scratch::new();
    let paths: Vec<_> = (0..64)
        .map(|i| scratch.path(&format!("fifo-{i}")))
        .collect();
    let fifos = Fifos::make(paths.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for (i, p) in paths.iter().enumerate() {
            let what = format!("open_ro(FIFO {i})");
            let got = prompt(
                &what,
                Some(p),
                Box::pin({
                    let p = p.clone();
                    async move { MappedFile::open_ro(p).await }
                }),
            )
            .await;
            assert!(got.is_err(), "{what} succeeded");
        }
        // The pool still serves a regular open.
        let regular = scratch.path("regular");
        std::fs::write(&regular, b"regular").unwrap();
        let file = prompt(
            "open_ro(a regular file) after the FIFOs",
            None,
            Box::pin({
                let p = regular.clone();
                async move { MappedFile::open_ro(p).await }
            }),
        )
        .await
        .expect("open a regular file");
        assert_eq!(&file.load(0, 7).await.unwrap()[..], b"regular");
    });
    drop(fifos);
}

#[tokio::test]
async fn special_files_unix_socket_is_refused_promptly() {
    let scratch = Scratch::new();
    let path = scratch.path("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    all_refused("a Unix socket", &path, None).await;
}

#[tokio::test]
async fn special_files_character_device_is_refused_promptly() {
    let path = Path::new("/dev/null");
    if !path.exists() {
        return child::skip(
            "special_files_character_device_is_refused_promptly",
            "/dev/null does not exist",
        );
    }
    all_refused("/dev/null", path, None).await;
}

#[tokio::test]
async fn special_files_proc_file_is_refused_promptly() {
    let path = Path::new("/proc/self/status");
    if !path.exists() {
        return child::skip(
            "special_files_proc_file_is_refused_promptly",
            "/proc is not mounted",
        );
    }
    for (name, open) in [openers()[0], openers()[2]] {
        let what = format!("{name}(/proc/self/status)");
        match prompt(&what, None, open(path.to_path_buf())).await {
            Err(err) => println!("{what}: {err}"),
            Ok(f) => panic!(
                "{what} succeeded with len {}: a /proc file is not a mappable file",
                f.len()
            ),
        }
    }
    let what = "open_rw(/proc/self/status)";
    assert!(
        prompt(what, None, openers()[1].1(path.to_path_buf()))
            .await
            .is_err(),
        "{what} succeeded"
    );
}

/// A directory keeps its error: `Error::Io` with `EISDIR`.
#[tokio::test]
async fn special_files_directory_is_eisdir() {
    let scratch = Scratch::new();
    let dir = scratch.path("dir");
    std::fs::create_dir(&dir).unwrap();
    for (name, open) in openers() {
        let what = format!("{name}(a directory)");
        match prompt(&what, None, open(dir.clone())).await {
            Err(Error::Io { source, path, .. }) => {
                assert_eq!(source.raw_os_error(), Some(libc::EISDIR), "{what}");
                assert_eq!(path, dir, "{what}: path");
            }
            other => panic!("{what}: expected Error::Io with EISDIR, got {other:?}"),
        }
    }
    match MappedFile::create(&dir, 4096).await {
        Err(Error::Io { source, .. }) => {
            assert_eq!(source.raw_os_error(), Some(libc::EISDIR), "create(dir)")
        }
        other => panic!("create(a directory): expected EISDIR, got {other:?}"),
    }
    assert!(dir.is_dir());
}

/// A symlink to a regular file works like the file, in every mode.
#[tokio::test]
async fn special_files_symlink_to_a_regular_file_works() {
    let scratch = Scratch::new();
    let target = scratch.path("target");
    std::fs::write(&target, vec![5u8; 4096]).unwrap();
    let link = scratch.path("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();

    let rw = MappedFile::open_rw(&link).await.expect("open_rw(link)");
    assert_eq!(rw.len(), 4096);
    rw.update(0, b"through the link".to_vec()).await.unwrap();
    let ro = MappedFile::open_ro(&link).await.expect("open_ro(link)");
    assert_eq!(&ro.load(0, 16).await.unwrap()[..], b"through the link");
    let cow = MappedFile::open_cow(&link).await.expect("open_cow(link)");
    cow.update(0, b"private".to_vec()).await.unwrap();
    let kept = MappedFile::open_or_create(&link, 100)
        .await
        .expect("open_or_create(link)");
    assert_eq!(kept.len(), 4096, "open_or_create changed an existing file");
    rw.resize(8192).await.expect("resize through the link");
    for f in [rw, ro, cow, kept] {
        f.close().await.unwrap();
    }
    let bytes = std::fs::read(&target).unwrap();
    assert_eq!(bytes.len(), 8192);
    assert_eq!(&bytes[..16], b"through the link");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());

    // create through the link resets the target.
    let created = MappedFile::create(&link, 100).await.expect("create(link)");
    assert_eq!(created.len(), 100);
    created.close().await.unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), vec![0u8; 100]);
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
}

/// A symlink loop and a dangling symlink are I/O errors.
#[tokio::test]
async fn special_files_symlink_loop_and_dangling_symlink_are_io_errors() {
    let scratch = Scratch::new();
    let a = scratch.path("loop-a");
    let b = scratch.path("loop-b");
    std::os::unix::fs::symlink(&b, &a).unwrap();
    std::os::unix::fs::symlink(&a, &b).unwrap();
    for (name, open) in openers() {
        let what = format!("{name}(a symlink loop)");
        match prompt(&what, None, open(a.clone())).await {
            Err(Error::Io { source, .. }) => println!("{what}: {source}"),
            other => panic!("{what}: expected Error::Io, got {other:?}"),
        }
    }
    assert!(
        MappedFile::create(&a, 4096).await.is_err(),
        "create(a symlink loop)"
    );

    let dangling = scratch.path("dangling");
    std::os::unix::fs::symlink(scratch.path("nowhere"), &dangling).unwrap();
    for (name, open) in openers()
        .into_iter()
        .filter(|(n, _)| *n != "open_or_create")
    {
        let what = format!("{name}(a dangling symlink)");
        match prompt(&what, None, open(dangling.clone())).await {
            Err(err) => assert_eq!(
                err.io_kind(),
                Some(std::io::ErrorKind::NotFound),
                "{what}: {err:?}"
            ),
            Ok(_) => panic!("{what} succeeded"),
        }
    }
}
