//! How a file is opened: [`Mode`] and the [`OpenOptions`] builder.

use std::fs::{File, OpenOptions as StdOpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::handle::MappedFile;
use crate::sys;

/// How the file is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// `MAP_SHARED`, read-only: loads and shared segments only.
    ReadOnly,
    /// `MAP_SHARED`, read-write: updates reach the file and every other
    /// mapping of it.
    ReadWrite,
    /// `MAP_PRIVATE`, writable: updates go to private pages, are visible
    /// through this mapping only and never reach the file. Flushing is an
    /// `Ok` no-op and resizing is refused.
    CopyOnWrite,
}

impl Mode {
    /// Whether updates are allowed (read-write and copy-on-write).
    pub fn is_writable(self) -> bool {
        !matches!(self, Mode::ReadOnly)
    }
}

/// Default capacity of a mapping's request channel.
///
/// Large enough that 64 busy tasks rarely find it full (the actor drains it
/// in batches), small enough that a stalled actor pushes back on callers
/// instead of queueing without bound.
pub const DEFAULT_CHANNEL_CAPACITY: usize = 1024;

/// Builder for opening a [`MappedFile`], in the manner of
/// [`std::fs::OpenOptions`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> mmap_actor::Result<()> {
/// use mmap_actor::{MappedFile, Mode};
/// let dir = tempfile::tempdir().unwrap();
/// let file = MappedFile::options()
///     .mode(Mode::ReadWrite)
///     .create(true)
///     .len(4096)
///     .open(dir.path().join("data.bin"))
///     .await?;
/// assert_eq!(file.len(), 4096);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct OpenOptions {
    pub(crate) mode: Mode,
    pub(crate) create: bool,
    pub(crate) create_new: bool,
    pub(crate) truncate: bool,
    pub(crate) len: Option<u64>,
    pub(crate) capacity: usize,
    pub(crate) preallocate: bool,
    pub(crate) lock: bool,
    pub(crate) write_through: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            mode: Mode::ReadWrite,
            create: false,
            create_new: false,
            truncate: false,
            len: None,
            capacity: DEFAULT_CHANNEL_CAPACITY,
            preallocate: true,
            lock: false,
            write_through: false,
        }
    }
}

impl OpenOptions {
    /// Options for a read-write mapping of an existing file.
    pub fn new() -> OpenOptions {
        OpenOptions::default()
    }

    /// The mapping mode (default [`Mode::ReadWrite`]).
    pub fn mode(&mut self, mode: Mode) -> &mut Self {
        self.mode = mode;
        self
    }

    /// Create the file if it does not exist (read-write only). A created
    /// file gets the length given by [`len`](Self::len) (default 0).
    pub fn create(&mut self, create: bool) -> &mut Self {
        self.create = create;
        self
    }

    /// Create the file, failing with an `AlreadyExists` I/O error if it
    /// exists.
    pub fn create_new(&mut self, create_new: bool) -> &mut Self {
        self.create_new = create_new;
        self
    }

    /// Truncate an existing file to length 0 (then to [`len`](Self::len)).
    pub fn truncate(&mut self, truncate: bool) -> &mut Self {
        self.truncate = truncate;
        self
    }

    /// The length the file must have once open: a created or truncated file
    /// is set to it; an existing file is grown or shrunk to it (read-write
    /// only). Unset, an existing file keeps its length.
    pub fn len(&mut self, len: u64) -> &mut Self {
        self.len = Some(len);
        self
    }

    /// Capacity of the request channel (at least 1; default
    /// [`DEFAULT_CHANNEL_CAPACITY`]). When it is full, callers wait for
    /// room: the actor's backpressure.
    pub fn channel_capacity(&mut self, capacity: usize) -> &mut Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Reserve disk blocks for every byte the file grows by
    /// (`posix_fallocate`; default `true`). This is what turns a full disk
    /// into an `ENOSPC` error from `resize` instead of a `SIGBUS` on a later
    /// write through the mapping. Turn it off for huge sparse files whose
    /// pages are mostly never written, and accept that risk.
    pub fn preallocate(&mut self, preallocate: bool) -> &mut Self {
        self.preallocate = preallocate;
        self
    }

    /// Take an advisory `flock` on the file (default `false`): exclusive for
    /// read-write mappings, shared otherwise. Another cooperating mapping of
    /// the same file then fails to open with [`Error::Locked`] instead of
    /// mapping (and possibly truncating) a file this one has mapped for
    /// writing. Processes that do not take the lock are not stopped.
    pub fn lock(&mut self, lock: bool) -> &mut Self {
        self.lock = lock;
        self
    }

    /// Write every [`update`](MappedFile::update) with `pwrite` on the
    /// blocking pool instead of storing through the mapping (default
    /// `false`; read-write mappings only). The mapping shares the page cache,
    /// so loads, segments and atomics see the bytes as before.
    ///
    /// Why: a store through a shared mapping marks its whole page-cache
    /// *folio* dirty, and Linux caches files that were read or written
    /// sequentially in large folios (up to megabytes on ext4). A flush after
    /// small scattered updates then writes megabytes per update; `pwrite`
    /// dirties only the blocks it covers. Turn this on for durable
    /// small-update workloads (update then flush); leave it off for raw
    /// update throughput (every update then costs a blocking-pool round
    /// trip instead of a copy).
    pub fn write_through(&mut self, write_through: bool) -> &mut Self {
        self.write_through = write_through;
        self
    }

    /// Opens the file and spawns its mapping actor on the current tokio
    /// runtime.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] for an open, length, preallocation or map failure (with
    /// the path and the OS error: missing file, permission denied, a
    /// directory, no space); [`Error::ReadOnly`] when a length change or
    /// creation is asked of a read-only or copy-on-write mapping;
    /// [`Error::Locked`] when [`lock`](Self::lock) is set and another mapping
    /// holds the lock.
    ///
    /// # Cancel safety
    ///
    /// The blocking open runs to completion on the blocking pool even if this
    /// future is dropped; a file it created is left on disk.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn open(&self, path: impl AsRef<Path>) -> Result<MappedFile> {
        let (file, actor) = self.open_unspawned(path).await?;
        tokio::spawn(actor.run());
        Ok(file)
    }

    /// Opens the file and returns the handle with its actor *not yet
    /// running*: spawn [`MappingActor::run`](crate::MappingActor::run)
    /// wherever you like (another runtime, a `LocalSet`, a task you can
    /// abort in a test). Requests wait until it runs.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    ///
    /// # Cancel safety
    ///
    /// As [`open`](Self::open).
    pub async fn open_unspawned(
        &self,
        path: impl AsRef<Path>,
    ) -> Result<(MappedFile, crate::MappingActor)> {
        let path = path.as_ref().to_path_buf();
        let opts = self.clone();
        let opened = tokio::task::spawn_blocking(move || opts.open_blocking(path))
            .await
            .map_err(|_| Error::Panicked { op: "open" })??;
        Ok(crate::actor::MappingActor::start(self, opened))
    }

    fn open_blocking(&self, path: PathBuf) -> Result<Opened> {
        let writable = self.mode == Mode::ReadWrite;
        if !writable && (self.create || self.create_new || self.truncate) {
            return Err(Error::ReadOnly {
                op: "create or truncate",
                mode: self.mode,
            });
        }
        let mut std_opts = StdOpenOptions::new();
        std_opts.read(true).write(writable);
        let mut created = false;
        let file = if self.create_new {
            created = true;
            std_opts.create_new(true).open(&path)
        } else if self.create {
            match StdOpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    created = true;
                    Ok(file)
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => std_opts.open(&path),
                Err(e) => Err(e),
            }
        } else {
            std_opts.open(&path)
        }
        .map_err(|e| Error::io("open", &path, e))?;

        let meta = file.metadata().map_err(|e| Error::io("stat", &path, e))?;
        if !meta.is_file() {
            let errno = if meta.is_dir() {
                libc::EISDIR
            } else {
                libc::EINVAL
            };
            return Err(Error::io(
                "open",
                &path,
                io::Error::from_raw_os_error(errno),
            ));
        }
        if self.lock && !sys::try_lock(&file, writable).map_err(|e| Error::io("flock", &path, e))? {
            return Err(Error::Locked { path });
        }
        let mut len = meta.len();
        if self.truncate && len != 0 {
            file.set_len(0)
                .map_err(|e| Error::io("ftruncate", &path, e))?;
            len = 0;
        }
        let target = match self.len {
            Some(want) if created || self.truncate || want != len => Some(want),
            _ => None,
        };
        if let Some(want) = target {
            if !writable {
                return Err(Error::ReadOnly {
                    op: "set length",
                    mode: self.mode,
                });
            }
            if want > len && self.preallocate {
                sys::fallocate(&file, len, want - len)
                    .map_err(|e| Error::io("fallocate", &path, e))?;
            }
            file.set_len(want)
                .map_err(|e| Error::io("ftruncate", &path, e))?;
            len = want;
        }
        if target.is_some() || self.truncate {
            file.sync_data()
                .map_err(|e| Error::io("fdatasync", &path, e))?;
        }
        if created {
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            sys::sync_dir(&parent).map_err(|e| Error::io("fsync directory", &parent, e))?;
        }
        let map =
            sys::Mapping::map(&file, len, self.mode).map_err(|e| Error::io("mmap", &path, e))?;
        Ok(Opened { file, path, map })
    }
}

/// A file opened and mapped on the blocking pool, ready for its actor.
pub(crate) struct Opened {
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    pub(crate) map: sys::Mapping,
}
