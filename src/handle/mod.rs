//! [`MappedFile`]: the cheap, cloneable handle to a mapping actor.
//!
//! This file: opening, facts, and the requests served by the actor;
//! `direct.rs`: small loads and updates served by the calling task;
//! `leases.rs`: the calls that hand out leases.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::options::OpenOptions;
use crate::request::{Envelope, Reply, Request};
use crate::sys::gate::Gate;
use crate::sys::Mapping;
use crate::Mode;

/// Facts every handle can read without a round trip to the actor.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) path: PathBuf,
    pub(crate) mode: Mode,
    /// Length of the current generation; written by the actor after a
    /// resize is complete.
    pub(crate) len: AtomicU64,
    /// Set by `close()` (and when the actor stops): calls fail fast.
    pub(crate) closed: AtomicBool,
    /// The kind of the first failed sync; once set, flushes fail.
    pub(crate) poisoned: OnceLock<io::ErrorKind>,
    /// Direct access to the current generation for small loads and updates
    /// while the actor has nothing that could conflict (see `sys::gate`).
    pub(crate) gate: Gate<Mapping>,
    /// Updates go through `pwrite` (`OpenOptions::write_through`), so never
    /// by the direct path.
    pub(crate) write_through: bool,
}

impl Shared {
    /// The error every flush gets once a sync has failed, if one has.
    pub(crate) fn poisoned(&self) -> Option<Error> {
        self.poisoned.get().map(|&kind| Error::Poisoned {
            path: self.path.clone(),
            kind,
        })
    }

    /// Records a failed sync: every later flush fails until reopened.
    pub(crate) fn poison(&self, err: &Error) {
        let _ = self
            .poisoned
            .set(err.io_kind().unwrap_or(io::ErrorKind::Other));
    }

    pub(crate) fn new(path: PathBuf, mode: Mode, map: Arc<Mapping>, write_through: bool) -> Shared {
        Shared {
            path,
            mode,
            write_through: write_through && mode == Mode::ReadWrite,
            len: AtomicU64::new(map.len()),
            closed: AtomicBool::new(false),
            poisoned: OnceLock::new(),
            gate: Gate::new(map),
        }
    }
}

/// A memory-mapped file, served by its own actor task.
///
/// `MappedFile` is a cheap handle: clone it into every task that needs the
/// file. Each method sends one request to the mapping's actor and awaits the
/// answer; requests from one handle are served in the order they were sent,
/// and an update whose future has completed is visible to every later load
/// from any handle.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> mmap_actor::Result<()> {
/// use mmap_actor::MappedFile;
/// let dir = tempfile::tempdir().unwrap();
/// let file = MappedFile::create(dir.path().join("data.bin"), 1 << 20).await?;
/// file.update(100, b"hello".to_vec()).await?;
/// assert_eq!(&file.load(100, 5).await?[..], b"hello");
/// file.flush().await?; // durable once this returns Ok
/// file.resize(4 << 20).await?;
/// assert_eq!(file.len(), 4 << 20);
/// file.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct MappedFile {
    tx: mpsc::Sender<Envelope>,
    shared: Arc<Shared>,
}

/// The span a request carries to the actor.
macro_rules! span {
    ($op:expr, $offset:expr, $len:expr) => {
        tracing::debug_span!("mmap", op = $op, offset = $offset, len = $len)
    };
}

mod direct;
mod leases;

pub use direct::DIRECT_MAX;

impl MappedFile {
    pub(crate) fn new(tx: mpsc::Sender<Envelope>, shared: Arc<Shared>) -> MappedFile {
        MappedFile { tx, shared }
    }

    /// A builder for every way of opening a file; see [`OpenOptions`].
    pub fn options() -> OpenOptions {
        OpenOptions::new()
    }

    /// Creates the file (or truncates an existing one) with `len` zero bytes
    /// and maps it read-write. The new length and the directory entry are
    /// synced before this returns.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] with the path: the directory is missing or not
    /// writable, the path is a directory, the disk is full (`ENOSPC` from
    /// preallocation).
    ///
    /// # Cancel safety
    ///
    /// The open runs to completion on the blocking pool even if the future
    /// is dropped; the file may then exist.
    pub async fn create(path: impl AsRef<Path>, len: u64) -> Result<MappedFile> {
        OpenOptions::new()
            .create(true)
            .truncate(true)
            .len(len)
            .open(path)
            .await
    }

    /// Creates a new file of `len` zero bytes, failing if it exists.
    ///
    /// # Errors
    ///
    /// As [`create`](Self::create); an existing file gives [`Error::Io`] of
    /// kind `AlreadyExists`.
    ///
    /// # Cancel safety
    ///
    /// As [`create`](Self::create).
    pub async fn create_new(path: impl AsRef<Path>, len: u64) -> Result<MappedFile> {
        OpenOptions::new()
            .create_new(true)
            .len(len)
            .open(path)
            .await
    }

    /// Opens an existing file read-write (an empty file is fine).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] with the path: missing file, permission denied, a
    /// directory.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future leaves nothing behind but a closed descriptor.
    pub async fn open_rw(path: impl AsRef<Path>) -> Result<MappedFile> {
        OpenOptions::new().mode(Mode::ReadWrite).open(path).await
    }

    /// Opens an existing file read-only.
    ///
    /// # Errors
    ///
    /// As [`open_rw`](Self::open_rw).
    ///
    /// # Cancel safety
    ///
    /// As [`open_rw`](Self::open_rw).
    pub async fn open_ro(path: impl AsRef<Path>) -> Result<MappedFile> {
        OpenOptions::new().mode(Mode::ReadOnly).open(path).await
    }

    /// Opens an existing file copy-on-write: updates go to private pages and
    /// never reach the file.
    ///
    /// # Errors
    ///
    /// As [`open_rw`](Self::open_rw).
    ///
    /// # Cancel safety
    ///
    /// As [`open_rw`](Self::open_rw).
    pub async fn open_cow(path: impl AsRef<Path>) -> Result<MappedFile> {
        OpenOptions::new().mode(Mode::CopyOnWrite).open(path).await
    }

    /// Opens the file read-write, creating it with `len` zero bytes if it
    /// does not exist. An existing file keeps its length.
    ///
    /// # Errors
    ///
    /// As [`create`](Self::create).
    ///
    /// # Cancel safety
    ///
    /// As [`create`](Self::create).
    pub async fn open_or_create(path: impl AsRef<Path>, len: u64) -> Result<MappedFile> {
        let path = path.as_ref();
        let mut opts = OpenOptions::new();
        opts.create(true);
        // The length applies to a created file only: `len` on the builder
        // would also resize an existing one.
        match opts.clone().create_new(true).len(len).open(path).await {
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
                opts.create(false).open(path).await
            }
            other => other,
        }
    }

    /// Length of the file in bytes (of the current mapping generation).
    pub fn len(&self) -> u64 {
        self.shared.len.load(Ordering::Acquire)
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The mapping mode.
    pub fn mode(&self) -> Mode {
        self.shared.mode
    }

    /// The path the file was opened with.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Whether the mapping has been closed (or its actor has stopped).
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire) || self.tx.is_closed()
    }

    /// Whether an earlier flush failed, so that every flush now fails with
    /// [`Error::Poisoned`] until the file is reopened.
    pub fn is_poisoned(&self) -> bool {
        self.shared.poisoned.get().is_some()
    }

    fn writable(&self, op: &'static str) -> Result<()> {
        if self.shared.mode.is_writable() {
            Ok(())
        } else {
            Err(Error::ReadOnly {
                op,
                mode: self.shared.mode,
            })
        }
    }

    /// Sends one request and awaits its answer.
    async fn call<T>(
        &self,
        op: &'static str,
        wait: bool,
        span: tracing::Span,
        make: impl FnOnce(Reply<T>) -> Request,
    ) -> Result<T> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let (reply, answer) = oneshot::channel();
        let request = make(reply);
        // Every request but a flush or a close touches bytes, leases or the
        // generation: hold the direct path closed until the actor has served
        // it, so that no direct operation overtakes it.
        let held = !matches!(request, Request::Flush { .. } | Request::Close { .. });
        let hold = held.then(|| self.shared.gate.take_hold());
        let envelope = Envelope {
            request,
            wait,
            held,
            span,
            task: tokio::task::try_id(),
        };
        // If the send fails or this future is dropped while it waits for
        // room, the guard releases the hold; once sent, the actor does.
        self.tx.send(envelope).await.map_err(|_| Error::Closed)?;
        if let Some(hold) = hold {
            hold.hand_over();
        }
        match answer.await {
            Ok(result) => result,
            // The actor dropped the reply without answering: it stopped
            // (closed or died), or serving this request panicked.
            Err(_) if self.is_closed() => Err(Error::Closed),
            Err(_) => Err(Error::Panicked { op }),
        }
    }

    /// Copies `len` bytes at `offset` out of the mapping.
    ///
    /// Waits while an exclusive lease ([`SegmentMut`](crate::SegmentMut)) or an atomic view
    /// covers any of the bytes. Copies above
    /// [`INLINE_COPY_MAX`](crate::INLINE_COPY_MAX) run on the blocking pool.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`] unless `offset + len <= len()` (checked
    /// without overflow; a zero-length load at `offset <= len()` is fine);
    /// [`Error::Closed`] after [`close`](Self::close).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future abandons the load.
    pub async fn load(&self, offset: u64, len: u64) -> Result<Bytes> {
        if let Some(result) = self.load_direct(offset, len).await {
            return result;
        }
        self.call("load", true, span!("load", offset, len), |reply| {
            Request::Load { offset, len, reply }
        })
        .await
    }

    /// [`load`](Self::load) that fails with [`Error::Conflict`] instead of
    /// waiting for a lease.
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load), plus [`Error::Conflict`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn try_load(&self, offset: u64, len: u64) -> Result<Bytes> {
        self.call("load", false, span!("try_load", offset, len), |reply| {
            Request::Load { offset, len, reply }
        })
        .await
    }

    /// Writes `data` at `offset`. `data` may be a `Vec<u8>`, [`Bytes`] or a
    /// `&'static [u8]`; it travels to the actor without being copied.
    ///
    /// Once the future completes, the bytes are visible to every later
    /// `load` from any handle, and survive a crash of this process (they are
    /// in the page cache); [`flush`](Self::flush) makes them survive power
    /// loss. Waits while a lease covers any of the bytes.
    ///
    /// # Errors
    ///
    /// [`Error::ReadOnly`] on a read-only mapping; [`Error::OutOfBounds`]
    /// unless `offset + data.len() <= len()`; [`Error::Closed`].
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped before it completes, the update may or may
    /// not be applied; it is never half-applied by a small write, and it is
    /// not acknowledged.
    pub async fn update(&self, offset: u64, data: impl Into<Bytes>) -> Result<()> {
        self.writable("update")?;
        let data = data.into();
        if let Some(result) = self.update_direct(offset, &data).await {
            return result;
        }
        let len = data.len() as u64;
        self.call("update", true, span!("update", offset, len), |reply| {
            Request::Update {
                offset,
                data,
                reply,
            }
        })
        .await
    }

    /// [`update`](Self::update) that fails with [`Error::Conflict`] instead
    /// of waiting for a lease.
    ///
    /// # Errors
    ///
    /// As [`update`](Self::update), plus [`Error::Conflict`].
    ///
    /// # Cancel safety
    ///
    /// As [`update`](Self::update).
    pub async fn try_update(&self, offset: u64, data: impl Into<Bytes>) -> Result<()> {
        self.writable("update")?;
        let data = data.into();
        let len = data.len() as u64;
        self.call("update", false, span!("try_update", offset, len), |reply| {
            Request::Update {
                offset,
                data,
                reply,
            }
        })
        .await
    }

    /// Runs `f` on the `len` bytes at `offset`, inside the actor, atomically
    /// with respect to every other request: a read-modify-write.
    ///
    /// `f` runs on the actor's thread: keep it short (no I/O, no large
    /// copies). If it panics, this call fails with [`Error::Panicked`] and
    /// the actor carries on; bytes `f` wrote before panicking stay written.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mmap_actor::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = mmap_actor::MappedFile::create(dir.path().join("m"), 16).await?;
    /// file.modify(0, 8, |b| {
    ///     let n = u64::from_le_bytes(b.try_into().unwrap());
    ///     b.copy_from_slice(&(n + 1).to_le_bytes());
    /// }).await?;
    /// assert_eq!(file.load(0, 1).await?[0], 1);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::ReadOnly`], [`Error::OutOfBounds`], [`Error::Panicked`],
    /// [`Error::Closed`].
    ///
    /// # Cancel safety
    ///
    /// As [`update`](Self::update).
    pub async fn modify(
        &self,
        offset: u64,
        len: u64,
        f: impl FnOnce(&mut [u8]) + Send + 'static,
    ) -> Result<()> {
        self.writable("modify")?;
        self.call("modify", true, span!("modify", offset, len), |reply| {
            Request::Modify {
                offset,
                len,
                f: Box::new(f),
                reply,
            }
        })
        .await
    }

    /// Makes every update (and every write through a lease) that completed
    /// before this call durable: it returns `Ok` only after an `fdatasync`
    /// of the file has succeeded. Concurrent flushes share one sync (group
    /// commit). On a read-only or copy-on-write mapping it is an `Ok` no-op.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the sync fails: the data may be lost, and the
    /// mapping is poisoned; every later flush fails with
    /// [`Error::Poisoned`] until the file is reopened. [`Error::Closed`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future does not stop the sync; its outcome is then
    /// unknown to the caller (a later flush reports a failure as
    /// [`Error::Poisoned`]).
    pub async fn flush(&self) -> Result<()> {
        if self.shared.mode != Mode::ReadWrite {
            return if self.shared.closed.load(Ordering::Acquire) {
                Err(Error::Closed)
            } else {
                Ok(())
            };
        }
        self.call("flush", true, span!("flush", 0u64, self.len()), |reply| {
            Request::Flush { range: None, reply }
        })
        .await
    }

    /// Like [`flush`](Self::flush), for the pages covering
    /// `[offset, offset + len)` only (`msync(MS_SYNC)`).
    ///
    /// # Errors
    ///
    /// As [`flush`](Self::flush), plus [`Error::OutOfBounds`].
    ///
    /// # Cancel safety
    ///
    /// As [`flush`](Self::flush).
    pub async fn flush_range(&self, offset: u64, len: u64) -> Result<()> {
        self.call(
            "flush_range",
            true,
            span!("flush_range", offset, len),
            |reply| Request::Flush {
                range: Some((offset, len)),
                reply,
            },
        )
        .await
    }

    /// Changes the file's length to `new_len` bytes (new bytes are zero).
    ///
    /// A grow reserves the new blocks first (`posix_fallocate`, see
    /// [`OpenOptions::preallocate`]), then maps a new generation; it never
    /// waits for leases, which keep their own generation. A shrink waits
    /// until no lease overlaps the cut tail (leases elsewhere are not
    /// affected), and new requests for the tail queue behind it. The new
    /// length is durable when this returns.
    ///
    /// **A shrink waits on leases held by the calling task too**: a task that
    /// holds a view of the tail and awaits a shrink never completes (a
    /// warning is logged when this is detected). Use
    /// [`try_resize`](Self::try_resize) to fail fast instead.
    ///
    /// # Errors
    ///
    /// [`Error::ReadOnly`] on read-only and copy-on-write mappings;
    /// [`Error::Io`] when the disk is full (`ENOSPC`), the file-size limit is
    /// hit (`EFBIG`) or another syscall fails: the file then keeps its old
    /// length and the mapping keeps working. [`Error::Closed`].
    ///
    /// # Cancel safety
    ///
    /// A resize the actor has started completes even if the future is
    /// dropped; one still waiting for leases is abandoned.
    pub async fn resize(&self, new_len: u64) -> Result<()> {
        self.resize_inner(new_len, true).await
    }

    /// [`resize`](Self::resize) that fails with [`Error::Conflict`] instead
    /// of waiting for leases on the cut tail (or for a queued resize).
    ///
    /// # Errors
    ///
    /// As [`resize`](Self::resize), plus [`Error::Conflict`].
    ///
    /// # Cancel safety
    ///
    /// As [`resize`](Self::resize).
    pub async fn try_resize(&self, new_len: u64) -> Result<()> {
        self.resize_inner(new_len, false).await
    }

    async fn resize_inner(&self, new_len: u64, wait: bool) -> Result<()> {
        if self.shared.mode != Mode::ReadWrite {
            return Err(Error::ReadOnly {
                op: "resize",
                mode: self.shared.mode,
            });
        }
        self.call("resize", wait, span!("resize", new_len, 0u64), |reply| {
            Request::Resize { new_len, reply }
        })
        .await
    }

    /// Prefaults the pages of `[offset, offset + len)` on the blocking pool
    /// (`MADV_POPULATE_READ`, or `MADV_WILLNEED` on older kernels; never
    /// `MADV_POPULATE_WRITE`, which would dirty every page of the range),
    /// so that later accesses do not stall on page faults.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`], [`Error::Io`], [`Error::Closed`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; a started prefault completes in the background.
    pub async fn prewarm(&self, offset: u64, len: u64) -> Result<()> {
        self.call("prewarm", true, span!("prewarm", offset, len), |reply| {
            Request::Populate { offset, len, reply }
        })
        .await
    }

    /// Flushes, stops the actor and reports the flush's outcome. Afterwards
    /// every call on every handle fails with [`Error::Closed`]; requests
    /// still queued are answered with it. Live leases stay valid.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] or [`Error::Poisoned`] when the final flush fails;
    /// [`Error::Closed`] if it was already closed.
    ///
    /// # Cancel safety
    ///
    /// The close goes on if the future is dropped after it was sent.
    pub async fn close(&self) -> Result<()> {
        self.call("close", true, span!("close", 0u64, 0u64), |reply| {
            Request::Close { reply }
        })
        .await
    }
}
