//! The file on disk: the blocking steps of opening it (every mode and
//! creation rule) and of changing its length. Open and resize share
//! [`set_length`], the one preallocate / set-length routine, and
//! [`sync_data`]. Everything here runs on the blocking pool.

use std::fs::{File, OpenOptions as StdOpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::options::OpenOptions;
use crate::sys::file::{self as raw, FileLock};
use crate::sys::Generation;
use crate::Mode;

/// A file opened and mapped, ready for its actor.
pub(crate) struct Opened {
    pub(crate) file: Arc<File>,
    pub(crate) path: PathBuf,
    /// The advisory lock, when the options asked for one.
    pub(crate) lock: Option<Arc<FileLock>>,
    pub(crate) generation: Generation,
}

/// Opens, creates, locks, sizes and maps the file as `opts` says.
pub(crate) fn open(opts: &OpenOptions, path: PathBuf) -> Result<Opened> {
    check_mode(opts)?;
    let (file, created) = open_file(opts, &path)?;
    let file = Arc::new(file);
    let found_len = check_kind(&file, &path)?;
    let lock = if opts.lock {
        let exclusive = opts.mode == Mode::ReadWrite;
        match FileLock::try_new(Arc::clone(&file), exclusive) {
            Ok(Some(lock)) => Some(Arc::new(lock)),
            Ok(None) => return Err(Error::Locked { path }),
            Err(e) => return Err(Error::io("flock", &path, e)),
        }
    } else {
        None
    };
    let len = size(opts, &file, &path, found_len, created)?;
    if created {
        let parent = parent_dir(&path);
        raw::sync_dir(&parent).map_err(|e| Error::io("fsync directory", &parent, e))?;
    }
    let generation = Generation::map(&file, len, opts.mode, lock.clone())
        .map_err(|e| Error::io("mmap", &path, e))?;
    Ok(Opened {
        file,
        path,
        lock,
        generation,
    })
}

/// Refuses what the mode cannot do before anything is touched.
fn check_mode(opts: &OpenOptions) -> Result<()> {
    if opts.mode != Mode::ReadWrite && (opts.create || opts.create_new || opts.truncate) {
        return Err(Error::ReadOnly {
            op: "create or truncate",
            mode: opts.mode,
        });
    }
    Ok(())
}

/// Opens (or creates) the file; whether this call created it.
fn open_file(opts: &OpenOptions, path: &Path) -> Result<(File, bool)> {
    let writable = opts.mode == Mode::ReadWrite;
    let mut std_opts = StdOpenOptions::new();
    std_opts.read(true).write(writable);
    let opened = if opts.create_new {
        std_opts.create_new(true).open(path).map(|f| (f, true))
    } else if opts.create {
        match StdOpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(file) => Ok((file, true)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                std_opts.open(path).map(|f| (f, false))
            }
            Err(e) => Err(e),
        }
    } else {
        std_opts.open(path).map(|f| (f, false))
    };
    opened.map_err(|e| Error::io("open", path, e))
}

/// Refuses anything but a regular file; returns its length.
fn check_kind(file: &File, path: &Path) -> Result<u64> {
    let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
    if !meta.is_file() {
        let errno = if meta.is_dir() {
            libc::EISDIR
        } else {
            libc::EINVAL
        };
        return Err(Error::io("open", path, io::Error::from_raw_os_error(errno)));
    }
    Ok(meta.len())
}

/// Truncates and sets the length as `opts` asks; returns the final length.
fn size(opts: &OpenOptions, file: &File, path: &Path, found: u64, created: bool) -> Result<u64> {
    let mut len = found;
    if opts.truncate && len != 0 {
        file.set_len(0)
            .map_err(|e| Error::io("ftruncate", path, e))?;
        len = 0;
    }
    let target = match opts.len {
        Some(want) if created || opts.truncate || want != len => Some(want),
        _ => None,
    };
    if let Some(want) = target {
        if opts.mode != Mode::ReadWrite {
            return Err(Error::ReadOnly {
                op: "set length",
                mode: opts.mode,
            });
        }
        set_length(file, path, len, want, opts.preallocate)?;
        len = want;
    }
    if target.is_some() || opts.truncate {
        sync_data(file, path)?;
    }
    Ok(len)
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
    let attempt = || -> Result<()> {
        if to > from && preallocate {
            raw::fallocate(file, from, to - from).map_err(|e| Error::io("fallocate", path, e))?;
        }
        file.set_len(to)
            .map_err(|e| Error::io("ftruncate", path, e))
    };
    attempt().inspect_err(|err| restore_length(file, path, from, err))
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
