//! The file on disk: the blocking steps of opening it (every mode and
//! creation rule) and of changing its length. Everything here runs on the
//! blocking pool.
//!
//! Three rules keep a failed open from changing anything:
//!
//! - **Check before touching.** Lengths beyond what a file can have, and
//!   modes that cannot create or resize, are refused before any syscall.
//! - **Create in one step.** A new file is made unnamed (`O_TMPFILE`, or a
//!   hidden temporary name where the file system lacks it), sized,
//!   preallocated and synced, and only then linked into place: other
//!   openers (other processes included) never see it half made, and a
//!   failure leaves no file behind.
//! - **Grow before you cut.** Resizing an existing file goes through
//!   [`set_length`], which restores the old length when a step fails;
//!   truncating goes through [`reset_length`], which reaches the new length
//!   first so that the only failure likely (`ENOSPC`, `EFBIG`) comes while
//!   the old contents are still there.

use std::ffi::OsString;
use std::fs::{File, OpenOptions as StdOpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::actor::registry::FileId;
use crate::error::{Error, Result};
use crate::options::OpenOptions;
use crate::sys::file::{self as raw, FileLock};
use crate::sys::generation::Keep;
use crate::sys::Generation;
use crate::Mode;

/// The longest a file can be: `off_t` is a signed 64-bit number.
pub(crate) const MAX_LEN: u64 = i64::MAX as u64;

/// A file opened (or created) and checked, not mapped yet.
pub(crate) struct Probe {
    pub(crate) file: Arc<File>,
    pub(crate) path: PathBuf,
    pub(crate) id: FileId,
    /// Its length when it was checked.
    pub(crate) len: u64,
    /// This open made it (at its final length).
    pub(crate) created: bool,
    /// The advisory lock, when the options asked for one (it goes into the
    /// open's keep).
    pub(crate) lock: Option<FileLock>,
    /// `OpenOptions::cow_writable`: a copy-on-write open maps writable.
    pub(crate) cow_writable: bool,
    /// An anonymous mapping's memory file (`crate::anonymous`), not a file
    /// of any file system.
    pub(crate) anonymous: Option<crate::anonymous::Memory>,
}

/// Refuses what can be refused before anything is touched: a mode that
/// cannot create or resize, a length no file can have.
pub(crate) fn check_options(opts: &OpenOptions) -> Result<()> {
    if opts.mode != Mode::ReadWrite && (opts.create || opts.create_new || opts.truncate) {
        return Err(Error::ReadOnly {
            op: "create or truncate",
            mode: opts.mode,
        });
    }
    check_len(opts.len.unwrap_or(0))
}

/// Refuses a length beyond [`MAX_LEN`].
pub(crate) fn check_len(len: u64) -> Result<()> {
    if len > MAX_LEN {
        return Err(Error::TooLarge { len, max: MAX_LEN });
    }
    Ok(())
}

/// Opens or creates the file, checks what it is and takes the lock. A file
/// this call creates already has its final length (`opts.len`).
pub(crate) fn probe(opts: &OpenOptions, path: PathBuf) -> Result<Probe> {
    let (file, created) = match (opts.create_new, opts.create) {
        (true, _) => (create(opts, &path)?, true),
        (false, true) => match create(opts, &path) {
            Ok(file) => (file, true),
            Err(err) if err.io_kind() == Some(io::ErrorKind::AlreadyExists) => {
                (open_existing(opts, &path)?, false)
            }
            Err(err) => return Err(err),
        },
        (false, false) => (open_existing(opts, &path)?, false),
    };
    let file = Arc::new(file);
    let meta = file.metadata().map_err(|e| Error::io("stat", &path, e))?;
    let lock = if opts.lock || opts.lock_shared {
        let exclusive = opts.mode == Mode::ReadWrite && !opts.lock_shared;
        match FileLock::try_new(Arc::clone(&file), exclusive) {
            Ok(Some(lock)) => Some(lock),
            Ok(None) => return Err(Error::Locked { path }),
            Err(e) => return Err(Error::io("flock", &path, e)),
        }
    } else {
        None
    };
    Ok(Probe {
        id: FileId::of(&meta),
        len: meta.len(),
        file,
        path,
        created,
        lock,
        cow_writable: opts.cow_writable,
        anonymous: None,
    })
}

/// Opens an existing file without blocking (a FIFO would wait for a
/// writer), refusing anything but a regular file of a real file system.
fn open_existing(opts: &OpenOptions, path: &Path) -> Result<File> {
    let file = StdOpenOptions::new()
        .read(true)
        .write(opts.mode == Mode::ReadWrite)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match std::fs::metadata(path) {
            // A socket cannot be opened at all (`ENXIO`): say what it is.
            Ok(meta) if meta.file_type().is_socket() => Error::Unsupported {
                path: path.to_path_buf(),
                what: "a socket",
            },
            _ => Error::io("open", path, e),
        })?;
    check_kind(&file, path)?;
    raw::clear_nonblock(&file).map_err(|e| Error::io("fcntl", path, e))?;
    Ok(file)
}

/// Refuses anything but a regular file whose length means something.
fn check_kind(file: &File, path: &Path) -> Result<()> {
    let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
    let kind = meta.file_type();
    let what = if kind.is_file() {
        raw::pseudo_fs(file).map_err(|e| Error::io("statfs", path, e))?
    } else if kind.is_dir() {
        return Err(Error::io(
            "open",
            path,
            io::Error::from_raw_os_error(libc::EISDIR),
        ));
    } else if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_socket() {
        Some("a socket")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else {
        Some("not a regular file")
    };
    match what {
        Some(what) => Err(Error::Unsupported {
            path: path.to_path_buf(),
            what,
        }),
        None => Ok(()),
    }
}

/// Creates `path` at its final length in one step, failing with
/// `AlreadyExists` if it exists. Nothing is left behind on failure.
///
/// The descriptor returned is opened anew by the path once the file is in
/// place, so that `/proc/self/maps`, `lsof` and `strace -y` name the file
/// (the unnamed or temporary descriptor would say "(deleted)").
fn create(opts: &OpenOptions, path: &Path) -> Result<File> {
    // Not needed for correctness (the link refuses an existing path) but
    // cheap: an existing file is not worth sizing a new one for.
    if std::fs::symlink_metadata(path).is_ok() {
        let exists = io::Error::from_raw_os_error(libc::EEXIST);
        return Err(Error::io("open", path, exists));
    }
    let made = make(opts, path)?;
    let made_id = made.metadata().map_err(|e| Error::io("stat", path, e))?;
    let reopened = StdOpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open", path, e))?;
    let meta = reopened
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?;
    if FileId::of(&meta) != FileId::of(&made_id) {
        // Replaced between the link and the open: not ours to map.
        let raced = io::Error::from_raw_os_error(libc::EEXIST);
        return Err(Error::io("open", path, raced));
    }
    Ok(reopened)
}

/// Makes the file: unnamed, sized, synced, linked in.
fn make(opts: &OpenOptions, path: &Path) -> Result<File> {
    let dir = parent_dir(path);
    let len = opts.len.unwrap_or(0);
    match create_unnamed(&dir) {
        Ok(file) => {
            prepare(&file, path, len, opts.preallocate)?;
            match raw::link_tmpfile(&file, path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(Error::io("open", path, e))
                }
                // No /proc to link through: the hidden-name way.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return create_named(&dir, path, len, opts.preallocate)
                }
                Err(e) => return Err(Error::io("link", path, e)),
            }
            sync_new_entry(&dir, path)?;
            Ok(file)
        }
        // File systems without O_TMPFILE.
        Err(e) if unnamed_unsupported(&e) => create_named(&dir, path, len, opts.preallocate),
        Err(e) => Err(Error::io("open", path, e)),
    }
}

fn create_unnamed(dir: &Path) -> io::Result<File> {
    StdOpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o666)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
}

fn unnamed_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
    )
}

/// The fallback: a hidden temporary name in the same directory, linked
/// into place (`link` fails if the target exists) and then removed.
pub(crate) fn create_named(dir: &Path, path: &Path, len: u64, preallocate: bool) -> Result<File> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(
        ".mmap-actor-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let temp = dir.join(name);
    let file = StdOpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(|e| Error::io("open", path, e))?;
    let made = prepare(&file, path, len, preallocate)
        .and_then(|()| std::fs::hard_link(&temp, path).map_err(|e| Error::io("open", path, e)));
    // The temporary name goes whatever happened.
    if let Err(e) = std::fs::remove_file(&temp) {
        tracing::warn!(err = %e, temp = %temp.display(), "could not remove a temporary file");
    }
    made?;
    sync_new_entry(dir, path)?;
    Ok(file)
}

/// Sizes a file that is being created and makes its length durable.
fn prepare(file: &File, path: &Path, len: u64, preallocate: bool) -> Result<()> {
    set_length(file, path, 0, len, preallocate)?;
    sync_data(file, path)
}

/// Syncs the directory of a new entry; if that fails, the entry is removed
/// again (the open failed, so it must leave nothing behind).
fn sync_new_entry(dir: &Path, path: &Path) -> Result<()> {
    raw::sync_dir(dir).map_err(|e| {
        if let Err(undo) = std::fs::remove_file(path) {
            tracing::error!(%undo, path = %path.display(), "could not remove a file whose creation failed");
        }
        Error::io("fsync directory", dir, e)
    })
}

/// The length an existing file must get, if `opts` asks for a change:
/// `(length, empty it first)`. Only a read-write open may change it.
pub(crate) fn wanted_len(opts: &OpenOptions, probe: &Probe) -> Result<Option<(u64, bool)>> {
    if probe.created {
        return Ok(None);
    }
    let wanted = match (opts.truncate, opts.len) {
        (true, want) => Some((want.unwrap_or(0), true)),
        (false, Some(want)) if want != probe.len => Some((want, false)),
        _ => None,
    };
    if wanted.is_some() && opts.mode != Mode::ReadWrite {
        return Err(Error::ReadOnly {
            op: "set length",
            mode: opts.mode,
        });
    }
    if let Some((want, truncate)) = wanted {
        if opts.lock_shared && (truncate || want < probe.len) {
            // Cooperating processes that share the lock may map any byte.
            return Err(Error::Locked {
                path: probe.path.clone(),
            });
        }
    }
    Ok(wanted)
}

/// Applies `wanted_len` to an existing file nothing else in this process
/// maps, and makes it durable; returns the final length.
pub(crate) fn size_alone(opts: &OpenOptions, probe: &Probe) -> Result<u64> {
    let Some((want, truncate)) = wanted_len(opts, probe)? else {
        return Ok(probe.len);
    };
    if truncate {
        reset_length(&probe.file, &probe.path, probe.len, want, opts.preallocate)?;
    } else {
        set_length(&probe.file, &probe.path, probe.len, want, opts.preallocate)?;
    }
    sync_data(&probe.file, &probe.path)?;
    Ok(want)
}

/// Removes a file this open created (and only if the path still names it),
/// after a later step of the open failed.
pub(crate) fn remove_created(probe: &Probe) {
    if !probe.created || probe.anonymous.is_some() {
        return;
    }
    let same = std::fs::metadata(&probe.path).is_ok_and(|meta| FileId::of(&meta) == probe.id);
    if same {
        if let Err(e) = std::fs::remove_file(&probe.path) {
            tracing::error!(err = %e, path = %probe.path.display(), "could not remove a file whose open failed");
        }
    }
}

/// Maps a probed file at `len`, the generation keeping `keep`.
pub(crate) fn map(probe: &Probe, len: u64, mode: Mode, keep: &Keep) -> Result<Generation> {
    let keep = Some(Arc::clone(keep));
    let mapped = if mode == Mode::CopyOnWrite && !probe.cow_writable {
        Generation::map_cow_read_only(&probe.file, len, keep)
    } else {
        Generation::map(&probe.file, len, mode, keep)
    };
    mapped.map_err(|e| Error::io("mmap", &probe.path, e))
}

/// Marks `[from, to)` of a new generation, bytes this process just added
/// to the file (holes, or blocks reserved but never written), as not worth
/// reading ahead (`MADV_RANDOM`). A fault there would otherwise run the
/// file's read-ahead, which for holes is no I/O but zeroing: a large folio
/// at a time, growing with each window, up to tens of milliseconds in one
/// fault of the thread that copies into the mapping (an executor thread,
/// for large updates). Without read-ahead each fault zeroes its own page.
/// Best effort: a refused advice changes nothing else.
/// [`Advice::Normal`](crate::Advice::Normal) or `Sequential` restores it.
pub(crate) fn fresh_bytes(generation: &Generation, from: u64, to: u64) {
    if to > from {
        let _ = generation.advise(from, to - from, crate::Advice::Random);
    }
}

/// Changes the file's length from `from` to `to`: a grow reserves the new
/// blocks first (`posix_fallocate`, when `preallocate`), so that a full disk
/// is an `ENOSPC` here rather than a `SIGBUS` later. On failure the length
/// is set back to `from`, which also frees whatever a partial fallocate
/// reserved past it.
pub(crate) fn set_length(
    file: &File,
    path: &Path,
    from: u64,
    to: u64,
    preallocate: bool,
) -> Result<()> {
    check_len(to)?;
    let attempt = || -> Result<()> {
        if to > from && preallocate {
            raw::fallocate(file, from, to - from).map_err(|e| Error::io("fallocate", path, e))?;
        }
        file.set_len(to)
            .map_err(|e| Error::io("ftruncate", path, e))
    };
    attempt().inspect_err(|err| restore_length(file, path, from, err))
}

/// Empties the file and gives it `to` zero bytes. The new length is
/// reached first (a failure then leaves the old contents untouched); only
/// then is the old data dropped.
pub(crate) fn reset_length(
    file: &File,
    path: &Path,
    from: u64,
    to: u64,
    preallocate: bool,
) -> Result<()> {
    if to > from {
        set_length(file, path, from, to, preallocate)?;
    }
    file.set_len(0)
        .map_err(|e| Error::io("ftruncate", path, e))?;
    set_length(file, path, 0, to, preallocate)
}

/// Sets the length back to `len` after a failed step, logging (not
/// returning) a failure to do so: the step's error is the one to report.
pub(crate) fn restore_length(file: &File, path: &Path, len: u64, cause: &Error) {
    if let Err(undo) = file.set_len(len) {
        tracing::error!(%cause, %undo, path = %path.display(), "could not restore the length");
    }
}

/// `fdatasync` of the file: its data and its length are durable.
pub(crate) fn sync_data(file: &File, path: &Path) -> Result<()> {
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", path, e))
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
