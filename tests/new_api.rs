//! Tests of API the library does not have yet; this file does not compile
//! until it does. Each test names the API it needs:
//!
//! - `impl From<mmap_actor::Error> for std::io::Error`, keeping the kind
//!   (`OutOfBounds` → `InvalidInput`, `Io` → its source's kind) and the
//!   error itself as the inner error, so `?` works in `io::Result` code;
//! - `Error::TooLarge { len, max }` for a resize past the largest length a
//!   mapping can have;
//! - opening outside a tokio runtime returns an error instead of panicking;
//! - `MappedFile::atomic_u64_reader` / `atomic_u32_reader`: load-only
//!   atomic views, allowed on read-only mappings;
//! - `OpenOptions::lock_shared`: a shared advisory lock for read-write
//!   mappings that cooperate (several may write, none may shrink);
//! - `Error::Unsupported { path, what }` for files that cannot be mapped
//!   (a FIFO, a `/proc` file, a socket, a device).

mod common;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{child, Scratch};
use mmap_actor::{Error, MappedFile, Mode, Result};

/// Hang detector only.
const PROMPT: Duration = Duration::from_secs(10);
const LEN: u64 = 64 * 1024;

// ---------------------------------------------------------------------
// io::Error from mmap_actor::Error

/// `?` on the library's results inside an `io::Result` function.
async fn update_past_the_end(file: &MappedFile) -> io::Result<()> {
    file.update(file.len(), vec![1u8; 8]).await?;
    Ok(())
}

async fn open_missing(path: &Path) -> io::Result<u64> {
    let file = MappedFile::open_rw(path).await?;
    Ok(file.len())
}

#[tokio::test]
async fn new_api_io_error_from_error_keeps_kind_and_source() {
    let scratch = Scratch::new();
    let file = scratch.file("data", 4096).await;

    let err = update_past_the_end(&file).await.expect_err("out of bounds");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    match err.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        Some(Error::OutOfBounds {
            offset: 4096,
            len: 8,
            file_len: 4096,
        }) => {}
        other => panic!("the io::Error does not carry the OutOfBounds error: {other:?}"),
    }

    let missing = scratch.path("missing");
    let err = open_missing(&missing).await.expect_err("missing file");
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    match err.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        Some(inner @ Error::Io { path, .. }) => {
            assert_eq!(path, &missing);
            assert_eq!(inner.raw_os_error(), Some(libc::ENOENT));
        }
        other => panic!("the io::Error does not carry the Io error: {other:?}"),
    }

    // The conversion itself, for a few more variants: the kind is kept
    // for I/O errors, and every variant converts.
    let direct = io::Error::from(Error::Io {
        op: "open",
        path: PathBuf::from("/x"),
        source: io::Error::from_raw_os_error(libc::EACCES),
    });
    assert_eq!(direct.kind(), io::ErrorKind::PermissionDenied);
    for e in [
        Error::Closed,
        Error::Misaligned {
            offset: 1,
            align: 8,
        },
        Error::ReadOnly {
            op: "update",
            mode: Mode::ReadOnly,
        },
        Error::Locked {
            path: PathBuf::from("/x"),
        },
    ] {
        let text = e.to_string();
        let converted = io::Error::from(e);
        assert!(
            converted
                .get_ref()
                .is_some_and(|inner| inner.to_string() == text),
            "{text}: the error is not kept inside the io::Error"
        );
    }
}

// ---------------------------------------------------------------------
// Error::TooLarge

#[tokio::test]
async fn new_api_resize_past_the_maximum_is_too_large() {
    let scratch = Scratch::new();
    let path = scratch.path("sparse");
    let file = MappedFile::options()
        .create(true)
        .len(4096)
        .preallocate(false)
        .open(&path)
        .await
        .unwrap();
    let max = match file.resize(u64::MAX).await {
        Err(Error::TooLarge { len, max }) => {
            assert_eq!(len, u64::MAX, "TooLarge names the asked length");
            max
        }
        other => panic!("resize(u64::MAX): expected Error::TooLarge, got {other:?}"),
    };
    // A 1 TiB sparse file is supported (design P7); u64::MAX is not.
    assert!(
        (1 << 40..u64::MAX).contains(&max),
        "implausible maximum {max}"
    );
    match file.try_resize(max + 1).await {
        Err(Error::TooLarge { len, max: m }) => assert_eq!((len, m), (max + 1, max)),
        other => panic!("try_resize(max + 1): expected Error::TooLarge, got {other:?}"),
    }
    assert_eq!(file.len(), 4096);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096);
    file.update(0, b"still works".to_vec()).await.unwrap();
}

// ---------------------------------------------------------------------
// Outside a runtime

/// Runs `opening` on the `futures` executor, with no tokio runtime: it must
/// return an error, not panic.
fn outside_a_runtime(name: &str, opening: impl std::future::Future<Output = Result<MappedFile>>) {
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        futures::executor::block_on(opening)
    }));
    match got {
        Err(_) => panic!("{name} outside a tokio runtime panicked"),
        Ok(Ok(f)) => panic!("{name} outside a tokio runtime succeeded (len {})", f.len()),
        Ok(Err(e)) => println!("{name} outside a runtime: {e}"),
    }
}

/// Opening with another executor (no tokio runtime) returns an error; it
/// does not panic, and creates nothing.
#[test]
fn new_api_opening_outside_a_runtime_is_an_error() {
    let scratch = Scratch::new();
    let path = scratch.path("new");
    let existing = scratch.path("existing");
    std::fs::write(&existing, vec![1u8; 4096]).unwrap();
    outside_a_runtime("create", MappedFile::create(&path, 4096));
    outside_a_runtime("open_ro", MappedFile::open_ro(&existing));
    outside_a_runtime("open_or_create", MappedFile::open_or_create(&path, 4096));
    assert!(!path.exists(), "an open outside a runtime created the file");
    assert_eq!(std::fs::read(&existing).unwrap(), vec![1u8; 4096]);
}

// ---------------------------------------------------------------------
// Load-only atomic views

#[tokio::test]
async fn new_api_atomic_readers_on_a_read_only_mapping() {
    let scratch = Scratch::new();
    let path = scratch.path("data");
    let mut bytes = vec![0u8; 4096];
    bytes[8..16].copy_from_slice(&0x0123_4567_89AB_CDEFu64.to_le_bytes());
    bytes[16..20].copy_from_slice(&0xFEED_BEEFu32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let ro = MappedFile::open_ro(&path).await.unwrap();

    let v64 = ro.atomic_u64_reader(8).await.expect("atomic_u64_reader(8)");
    assert_eq!(v64.load(Ordering::Acquire), 0x0123_4567_89AB_CDEF);
    let v32 = ro
        .atomic_u32_reader(16)
        .await
        .expect("atomic_u32_reader(16)");
    assert_eq!(v32.load(Ordering::Acquire), 0xFEED_BEEF);
    // Several readers of the same atomic coexist.
    let again = ro.atomic_u64_reader(8).await.expect("a second reader");
    assert_eq!(again.load(Ordering::Relaxed), 0x0123_4567_89AB_CDEF);
    drop((v64, v32, again));

    // Another (writable) open changes the value; a new reader sees it.
    let rw = MappedFile::open_rw(&path).await.unwrap();
    rw.update(8, 7u64.to_le_bytes().to_vec()).await.unwrap();
    let v64 = ro.atomic_u64_reader(8).await.unwrap();
    assert_eq!(v64.load(Ordering::Acquire), 7);
    drop(v64);

    // Alignment and bounds as for the other atomic views.
    assert!(matches!(
        ro.atomic_u64_reader(4).await,
        Err(Error::Misaligned {
            offset: 4,
            align: 8
        })
    ));
    assert!(matches!(
        ro.atomic_u32_reader(2).await,
        Err(Error::Misaligned {
            offset: 2,
            align: 4
        })
    ));
    assert!(matches!(
        ro.atomic_u64_reader(4096).await,
        Err(Error::OutOfBounds {
            offset: 4096,
            len: 8,
            file_len: 4096
        })
    ));
    assert!(matches!(
        ro.atomic_u32_reader(4096).await,
        Err(Error::OutOfBounds {
            offset: 4096,
            len: 4,
            file_len: 4096
        })
    ));
    // They work on a read-write mapping too.
    let r = rw
        .atomic_u64_reader(8)
        .await
        .expect("reader on a read-write mapping");
    assert_eq!(r.load(Ordering::Acquire), 7);
}

// ---------------------------------------------------------------------
// OpenOptions::lock_shared

const CHILD_ENV: &str = "MMAP_ACTOR_NEW_API";
const CHILD_TEST: &str = "new_api_child_runs_scenario";

async fn open_shared(path: &Path) -> Result<MappedFile> {
    MappedFile::options().lock_shared(true).open(path).await
}

fn assert_locked<T: std::fmt::Debug>(got: Result<T>, what: &str) {
    assert!(
        matches!(got, Err(Error::Locked { .. })),
        "{what}: expected Error::Locked, got {got:?}"
    );
}

/// The other process: a second shared read-write lock works; an exclusive
/// one and a shrink do not.
async fn shared_elsewhere(path: &Path) {
    let b = open_shared(path).await.expect("a second lock_shared open");
    b.update(100, b"from the child".to_vec())
        .await
        .expect("update");
    assert_locked(
        MappedFile::options().lock(true).open(path).await,
        "an exclusive lock while shared locks are held",
    );
    assert_locked(
        b.resize(LEN / 2).await,
        "a shrink through a lock_shared mapping",
    );
    assert_eq!(b.len(), LEN);
    b.close().await.unwrap();
}

#[tokio::test]
#[ignore = "child process of the new_api_* tests"]
async fn new_api_child_runs_scenario() {
    let Ok(arg) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (scenario, path) = arg.split_once(':').expect("scenario:path");
    match scenario {
        "shared_elsewhere" => shared_elsewhere(Path::new(path)).await,
        other => panic!("unknown scenario {other}"),
    }
    println!("SCENARIO-PASSED {scenario}");
}

#[tokio::test]
async fn new_api_lock_shared_writers_coexist_and_exclude_exclusive_locks_and_shrinks() {
    let scratch = Scratch::new();
    let path = scratch.path("shared");
    std::fs::write(&path, vec![0u8; LEN as usize]).unwrap();
    let a = open_shared(&path).await.expect("lock_shared open");
    assert_eq!(a.mode(), Mode::ReadWrite);
    let out = child::run(&mut child::command(
        CHILD_TEST,
        CHILD_ENV,
        format!("shared_elsewhere:{}", path.display()),
    ));
    child::assert_success(&out, "SCENARIO-PASSED shared_elsewhere");
    assert_eq!(&a.load(100, 14).await.unwrap()[..], b"from the child");
    assert_locked(
        MappedFile::options().lock(true).open(&path).await,
        "an exclusive lock while a shared lock is held",
    );
    assert_locked(
        a.resize(LEN / 2).await,
        "a shrink through a lock_shared mapping",
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), LEN);
    a.update(0, b"parent".to_vec()).await.unwrap();
    a.close().await.unwrap();
    // Once every shared lock is gone, an exclusive one is granted.
    let x = MappedFile::options()
        .lock(true)
        .open(&path)
        .await
        .expect("exclusive");
    assert_eq!(&x.load(0, 6).await.unwrap()[..], b"parent");
}

// ---------------------------------------------------------------------
// Error::Unsupported

fn assert_unsupported(
    got: Result<MappedFile>,
    path: &Path,
    what_contains: Option<&str>,
    call: &str,
) {
    match got {
        Err(Error::Unsupported { path: p, what }) => {
            assert_eq!(p, path, "{call}: the error names the wrong path");
            assert!(
                !what.is_empty(),
                "{call}: the error does not say what the file is"
            );
            if let Some(word) = what_contains {
                assert!(
                    what.to_lowercase().contains(word),
                    "{call}: {what:?} does not mention {word:?}"
                );
            }
        }
        other => panic!("{call}: expected Error::Unsupported, got {other:?}"),
    }
}

type Opening = std::pin::Pin<Box<dyn std::future::Future<Output = Result<MappedFile>>>>;

type Opener = fn(PathBuf) -> Opening;

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
    ]
}

/// Opens `path` with every opener, each promptly; `release` (a FIFO) is
/// opened for reading and writing if an open hangs, to free it.
async fn every_opener(path: &Path, what_contains: Option<&str>, release: Option<&Path>) {
    for (name, open) in openers() {
        let call = format!("{name}({})", path.display());
        let got = match tokio::time::timeout(PROMPT, open(path.to_path_buf())).await {
            Ok(got) => got,
            Err(_) => {
                if let Some(p) = release {
                    let _ = std::fs::OpenOptions::new().read(true).write(true).open(p);
                }
                panic!("{call} hung");
            }
        };
        assert_unsupported(got, path, what_contains, &call);
    }
}

#[tokio::test]
async fn new_api_fifo_is_unsupported() {
    if !common::have("mkfifo") {
        return child::skip("new_api_fifo_is_unsupported", "mkfifo is not installed");
    }
    let scratch = Scratch::new();
    let fifo = scratch.path("fifo");
    child::sh(&format!("mkfifo '{}'", fifo.display()));
    every_opener(&fifo, Some("fifo"), Some(&fifo)).await;
    // Free any open that may still block on it.
    let _ = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo);
}

#[tokio::test]
async fn new_api_proc_file_is_unsupported() {
    let path = Path::new("/proc/self/status");
    if !path.exists() {
        return child::skip("new_api_proc_file_is_unsupported", "/proc is not mounted");
    }
    for (name, open) in [openers()[0], openers()[2]] {
        let call = format!("{name}(/proc/self/status)");
        let got = tokio::time::timeout(PROMPT, open(path.to_path_buf()))
            .await
            .unwrap_or_else(|_| panic!("{call} hung"));
        assert_unsupported(got, path, None, &call);
    }
}

/// My reading of the class: sockets and devices are "unsupported" files
/// too (the directory keeps its `Error::Io` with `EISDIR`).
#[tokio::test]
async fn new_api_socket_and_character_device_are_unsupported() {
    let scratch = Scratch::new();
    let socket = scratch.path("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    every_opener(&socket, None, None).await;
    if Path::new("/dev/null").exists() {
        every_opener(Path::new("/dev/null"), None, None).await;
    }
    let dir = scratch.path("dir");
    std::fs::create_dir(&dir).unwrap();
    match MappedFile::open_ro(&dir).await {
        Err(Error::Io { source, .. }) => assert_eq!(source.raw_os_error(), Some(libc::EISDIR)),
        other => panic!("open_ro(a directory): expected Error::Io with EISDIR, got {other:?}"),
    }
}
