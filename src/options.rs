//! How a file is opened: [`Mode`] and the [`OpenOptions`] builder (plain
//! data; the opening itself is `OpenOptions::open`, in `handle/open.rs`).

use crate::policy::FlushPolicy;

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

/// Builder for opening a [`MappedFile`](crate::MappedFile), in the manner of
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
    pub(crate) lock_shared: bool,
    pub(crate) flush_policy: FlushPolicy,
    pub(crate) write_through: bool,
    pub(crate) huge_pages: bool,
    pub(crate) cow_writable: bool,
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
            lock_shared: false,
            flush_policy: FlushPolicy::Manual,
            write_through: false,
            huge_pages: false,
            cow_writable: true,
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
    /// the same file then fails to open with [`Error::Locked`](crate::Error::Locked) instead of
    /// mapping (and possibly truncating) a file this one has mapped for
    /// writing. Processes that do not take the lock are not stopped.
    pub fn lock(&mut self, lock: bool) -> &mut Self {
        self.lock = lock;
        self
    }

    /// Take the advisory `flock` in its *shared* mode even for a read-write
    /// mapping (default `false`; `true` implies [`lock`](Self::lock)). For
    /// cooperating processes that all map the file read-write, for
    /// instance to share counters through atomic views: they all open,
    /// while an exclusive [`lock`](Self::lock) open is refused with
    /// [`Error::Locked`](crate::Error::Locked). Because the others may be
    /// using any byte, shrinking through such a mapping is refused with
    /// `Error::Locked`; growing is fine.
    pub fn lock_shared(&mut self, shared: bool) -> &mut Self {
        self.lock_shared = shared;
        self
    }

    /// When the actor flushes by itself (default [`FlushPolicy::Manual`]:
    /// only when asked). See [`FlushPolicy`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mmap_actor::Result<()> {
    /// use mmap_actor::{FlushPolicy, MappedFile};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let file = MappedFile::options()
    ///     .create(true)
    ///     .len(1 << 20)
    ///     .flush_policy(FlushPolicy::EveryBytes(64 << 10))
    ///     .open(dir.path().join("log"))
    ///     .await?;
    /// file.update_from(0, &[1u8; 4096]).await?;
    /// assert_eq!(file.pending_bytes(), 4096);
    /// # Ok(()) }
    /// ```
    pub fn flush_policy(&mut self, policy: FlushPolicy) -> &mut Self {
        self.flush_policy = policy;
        self
    }

    /// Write every small update with `pwrite` from the start (default
    /// `false`: the library switches to `pwrite` by itself once updates are
    /// flushed often; read-write mappings only). The mapping shares the page
    /// cache, so loads, segments and atomics see the bytes as before.
    ///
    /// Why `pwrite`: a store through a shared mapping marks its whole
    /// page-cache *folio* dirty, and Linux caches files that were read or
    /// written sequentially in large folios (up to megabytes on ext4). A
    /// flush after small scattered updates then writes megabytes per update;
    /// `pwrite` dirties only the blocks it covers. A `pwrite` costs about a
    /// microsecond where a store costs a tenth of that, which is why the
    /// default stores until the flushes say the updates must be durable
    /// (see the crate docs, "Durability"). Set this when the very first
    /// flushes must be cheap too.
    pub fn write_through(&mut self, write_through: bool) -> &mut Self {
        self.write_through = write_through;
        self
    }

    /// Advise the kernel to back every mapping generation with transparent
    /// huge pages (`MADV_HUGEPAGE` on each generation as it is mapped;
    /// default `false`). [`MappedFile::is_hugepage_backed`](crate::MappedFile::is_hugepage_backed)
    /// says what the kernel really did.
    ///
    /// It is a hint. The kernel ignores it when transparent huge pages are
    /// off (`/sys/kernel/mm/transparent_hugepage/enabled` is `never`); for
    /// a file, when its file system does not cache it in huge folios (many
    /// do not; on recent kernels xfs and ext4 do, and map such folios huge
    /// even without the hint); for an anonymous mapping (a memory file)
    /// unless `/sys/kernel/mm/transparent_hugepage/shmem_enabled` is
    /// `advise`, `within_size` or `always`; for any part of a mapping that
    /// is not aligned to a huge page (2 MiB on x86-64) or is shorter than
    /// one; and whenever no huge page can be assembled. Pages already
    /// faulted in stay small until `khugepaged` collapses them.
    pub fn huge_pages(&mut self, huge_pages: bool) -> &mut Self {
        self.huge_pages = huge_pages;
        self
    }

    /// Whether a [`Mode::CopyOnWrite`] mapping takes writes (default
    /// `true`). Writable copy-on-write (the default) keeps updates in
    /// private pages that never reach the file. With `false`, the mapping is
    /// private and read-only (`PROT_READ`): every write (updates, exclusive
    /// segments, atomic views that store) is refused with
    /// [`Error::ReadOnly`](crate::Error::ReadOnly), as it is by `mmap-io`'s
    /// default copy-on-write mapping. Other modes ignore it.
    pub fn cow_writable(&mut self, cow_writable: bool) -> &mut Self {
        self.cow_writable = cow_writable;
        self
    }
}
