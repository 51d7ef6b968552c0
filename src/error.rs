//! The crate's error type: conditions, each with the context to act on it.

use std::io;
use std::path::PathBuf;

use crate::Mode;

/// Everything that can go wrong in `mmap-actor`.
///
/// Variants name a *condition* (what was wrong with the request or the file)
/// and carry the numbers and path needed to act on it. I/O failures keep the
/// operating system's [`io::Error`] as their [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The range `[offset, offset + len)` is not inside the file (the end
    /// may also have overflowed `u64`).
    #[error("range at offset {offset} of length {len} is outside the file of {file_len} bytes")]
    OutOfBounds {
        /// Start of the requested range.
        offset: u64,
        /// Length of the requested range.
        len: u64,
        /// Length of the file (of the mapping generation checked) at the time.
        file_len: u64,
    },
    /// An argument that no file could make valid, such as a chunk length of
    /// zero.
    #[error("invalid argument: {what}")]
    InvalidArgument {
        /// What was wrong, naming the argument.
        what: &'static str,
    },
    /// A range whose start is after its end (`end` is exclusive: `10..=4`
    /// reports `start: 10, end: 5`).
    #[error("range starts at {start} but ends at {end}")]
    ReversedRange {
        /// First byte of the range.
        start: u64,
        /// One past the last byte of the range.
        end: u64,
    },
    /// An atomic view must start at a multiple of its width (and a
    /// huge-page anonymous mapping must keep a length that is a multiple
    /// of its huge page size).
    #[error("offset {offset} is not a multiple of {align}")]
    Misaligned {
        /// Requested offset.
        offset: u64,
        /// Required alignment in bytes.
        align: u64,
    },
    /// The mapping's mode does not allow the operation (a write on a
    /// read-only mapping, a resize of a copy-on-write mapping).
    #[error("{op} is not allowed on a {mode:?} mapping")]
    ReadOnly {
        /// The refused operation.
        op: &'static str,
        /// The mapping's mode.
        mode: Mode,
    },
    /// A `try_` call found the range held by a conflicting lease or by a
    /// request queued before it, and did not wait.
    #[error(
        "{op} at offset {offset} of length {len} conflicts with a live lease or a queued request"
    )]
    Conflict {
        /// The refused operation.
        op: &'static str,
        /// Start of the requested range.
        offset: u64,
        /// Length of the requested range.
        len: u64,
    },
    /// The mapping was closed, or its actor has stopped.
    #[error("the mapping is closed")]
    Closed,
    /// An earlier sync of this file failed: its data may be lost, and every
    /// later flush fails until the file is reopened.
    #[error("an earlier flush of {path} failed ({kind}); reopen the file to recover")]
    Poisoned {
        /// The file.
        path: PathBuf,
        /// The kind of the original failure.
        kind: io::ErrorKind,
    },
    /// Another cooperating handle holds the file's advisory lock.
    #[error("{path} is locked by another mapping")]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// A request panicked inside the actor; only this request failed.
    #[error("{op} panicked inside the mapping actor")]
    Panicked {
        /// The operation that panicked.
        op: &'static str,
    },
    /// A length beyond what a file can have (`offset_t` is signed 64-bit).
    /// File systems have lower limits of their own (ext4: 16 TiB); those
    /// come back as [`Error::Io`] with `EFBIG`, and leave the file as it was.
    #[error("a length of {len} bytes is beyond the limit of {max}")]
    TooLarge {
        /// The requested length.
        len: u64,
        /// The largest length a file can have.
        max: u64,
    },
    /// The path is not something that can be mapped: a FIFO, a socket, a
    /// device, or a file of a pseudo file system (`/proc`, `/sys`) whose
    /// length says nothing about its contents.
    #[error("{path} is {what}, which cannot be mapped")]
    Unsupported {
        /// The path.
        path: PathBuf,
        /// What it is (`"a FIFO"`, `"a socket"`, ...).
        what: &'static str,
    },
    /// A call that needs a tokio runtime (every open: it spawns the actor
    /// and runs syscalls on the blocking pool) was made outside one.
    #[error("{op} must be called from within a tokio runtime")]
    NoRuntime {
        /// The call.
        op: &'static str,
    },
    /// Setting up or running a file watch failed (the inotify instance or
    /// watch limits were reached, or the kernel reported an error).
    #[error("watching {path} failed: {source}")]
    Watch {
        /// The watched file.
        path: PathBuf,
        /// The watcher's error.
        #[source]
        source: notify::Error,
    },
    /// The operation was refused because this process has the file mapped:
    /// removing it, or replacing or truncating it, would pull the file out
    /// from under its mapping.
    #[error("{op} of {path} refused: the file is mapped by this process")]
    Mapped {
        /// The refused operation (`"remove"`, `"rename"`, `"copy"`).
        op: &'static str,
        /// The mapped file.
        path: PathBuf,
    },
    /// An advice that would throw bytes away was refused:
    /// [`Advice::DontNeed`](crate::Advice::DontNeed) on a mapping whose
    /// memory is the only copy of its bytes (a writable copy-on-write or an
    /// anonymous mapping), where it would replace them under live leases.
    #[error("{op} refused on {mapping}: it would discard bytes that exist only in memory")]
    WouldDiscard {
        /// The refused call (`"advise(DontNeed)"`).
        op: &'static str,
        /// What the mapping is (`"a writable copy-on-write mapping"`,
        /// `"an anonymous mapping"`).
        mapping: &'static str,
    },
    /// Locking pages in memory (`mlock`) was refused by the locked-memory
    /// limit: `ENOMEM` when the process would lock more than
    /// `RLIMIT_MEMLOCK` bytes, `EPERM` when that limit is zero (processes
    /// with `CAP_IPC_LOCK` have no limit).
    #[error(
        "{op} of {len} bytes refused ({source}): the locked-memory limit RLIMIT_MEMLOCK is {}",
        limit_text(*.limit)
    )]
    MemoryLockLimit {
        /// The refused call (`"lock"`, `"lock_all"`).
        op: &'static str,
        /// How many bytes it asked to lock (whole pages).
        len: u64,
        /// `RLIMIT_MEMLOCK` (the soft limit) in bytes when it was refused;
        /// `None` when unlimited.
        limit: Option<u64>,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A subscription fell behind: `missed` changes were dropped from its
    /// buffer before it read them. The stream goes on with the oldest
    /// change it still holds.
    #[error("the subscription fell behind and missed {missed} changes")]
    Lagged {
        /// How many changes were dropped.
        missed: u64,
    },
    /// An item of an [`UpdateSink`](crate::UpdateSink) failed. The file
    /// holds exactly the `applied` items sent before it; nothing sent after
    /// it is applied, and the sink is closed.
    #[error("the update at offset {offset} failed after {applied} updates of the sink were applied: {source}")]
    SinkItem {
        /// Offset of the item that failed.
        offset: u64,
        /// How many items of the sink were applied before it.
        applied: u64,
        /// Why it failed.
        #[source]
        source: Box<Error>,
    },
    /// A system call failed.
    #[error("{op} failed on {path}: {source}")]
    Io {
        /// What was being done (`"open"`, `"fdatasync"`, `"fallocate"`, ...).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The [`io::ErrorKind`] behind an [`Error::Io`] or [`Error::Poisoned`]
    /// (or an [`Error::Watch`] caused by an I/O error), if any.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Error::Io { source, .. } | Error::MemoryLockLimit { source, .. } => Some(source.kind()),
            Error::Poisoned { kind, .. } => Some(*kind),
            Error::Watch { source, .. } => match &source.kind {
                notify::ErrorKind::Io(err) => Some(err.kind()),
                notify::ErrorKind::PathNotFound => Some(io::ErrorKind::NotFound),
                _ => None,
            },
            _ => None,
        }
    }

    /// The raw OS error number behind an [`Error::Io`] (or an
    /// [`Error::MemoryLockLimit`]), if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } | Error::MemoryLockLimit { source, .. } => {
                source.raw_os_error()
            }
            _ => None,
        }
    }

    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

impl From<Error> for io::Error {
    /// An `io::Error` of the kind that fits the condition, with the crate's
    /// error as its source (`io::Error::get_ref` / `into_inner` give it
    /// back), so that `?` works in functions returning `io::Result`.
    fn from(err: Error) -> io::Error {
        io::Error::new(kind_of(&err), err)
    }
}

/// The [`io::ErrorKind`] that fits a condition (`From<Error> for io::Error`).
fn kind_of(err: &Error) -> io::ErrorKind {
    match err {
        Error::Io { source, .. } | Error::MemoryLockLimit { source, .. } => source.kind(),
        Error::Poisoned { kind, .. } => *kind,
        Error::WouldDiscard { .. } => io::ErrorKind::Unsupported,
        Error::OutOfBounds { .. }
        | Error::Misaligned { .. }
        | Error::TooLarge { .. }
        | Error::InvalidArgument { .. }
        | Error::ReversedRange { .. } => io::ErrorKind::InvalidInput,
        Error::Mapped { .. } => io::ErrorKind::PermissionDenied,
        Error::Watch { .. } => err.io_kind().unwrap_or(io::ErrorKind::Other),
        Error::ReadOnly { .. } => io::ErrorKind::PermissionDenied,
        Error::Conflict { .. } | Error::Locked { .. } => io::ErrorKind::WouldBlock,
        Error::Closed => io::ErrorKind::BrokenPipe,
        Error::Unsupported { .. } => io::ErrorKind::Unsupported,
        Error::Panicked { .. } | Error::NoRuntime { .. } | Error::Lagged { .. } => {
            io::ErrorKind::Other
        }
        Error::SinkItem { source, .. } => kind_of(source),
    }
}

/// `RLIMIT_MEMLOCK` for a message: bytes, or unlimited.
fn limit_text(limit: Option<u64>) -> String {
    match limit {
        Some(bytes) => format!("{bytes} bytes"),
        None => "unlimited".to_string(),
    }
}

/// A copy of an I/O error, for telling several waiters of one failed sync
/// (a group commit). `io::Error` is not `Clone`: the copy keeps the OS error
/// number, or else the kind and message.
pub(crate) fn copy_io(source: &io::Error) -> io::Error {
    match source.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(source.kind(), source.to_string()),
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
