//! The requests the actor serves: loads, updates, read-modify-writes,
//! flushes, resizes, prewarming and close.

use std::sync::Arc;

use bytes::Bytes;
use tracing::Instrument;

use super::quick::Update;
use super::write::Source;
use super::{request_span, MappedFile};
use crate::actor::caller_sync::Target;
use crate::error::{Error, Result};
use crate::request::{Inline, OnConflict, Request, ResizeKind};
use crate::Mode;

impl MappedFile {
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
        self.read("load", offset, len, OnConflict::Wait).await
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
        self.read("load", offset, len, OnConflict::Fail).await
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
    pub fn update(&self, offset: u64, data: impl Into<Bytes>) -> Update<'_> {
        Update::new(self, offset, data.into())
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
        let data = Source::Owned(data.into());
        self.write_parts("update", offset, data, OnConflict::Fail)
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
        self.call(
            "modify",
            OnConflict::Wait,
            request_span("modify", offset, len),
            |reply| {
                Request::Inline(Inline::Modify {
                    offset,
                    len,
                    f: Box::new(f),
                    reply,
                })
            },
        )
        .await
    }

    /// Makes every update (and every write through a lease) that completed
    /// before this call durable: it returns `Ok` only after an `fdatasync`
    /// of the file has succeeded. Concurrent flushes share syncs (group
    /// commit). The calling task starts the sync on the blocking pool
    /// itself (no round trip to the actor) unless one is running that it
    /// can queue behind. On a read-only or copy-on-write mapping, or an
    /// anonymous one, it is an `Ok` no-op.
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
        if self.shared.mode != Mode::ReadWrite || self.shared.anonymous {
            return if self.shared.is_closed() {
                Err(Error::Closed)
            } else {
                Ok(())
            };
        }
        // Led by this task when it runs on a tokio runtime (no round trip
        // to the actor: `actor/caller_sync.rs`); through the actor
        // otherwise.
        if tokio::runtime::Handle::try_current().is_ok() {
            return self.flush_led().await;
        }
        self.call(
            "flush",
            OnConflict::Wait,
            request_span("flush", 0u64, self.len()),
            |reply| Request::Inline(Inline::Flush { range: None, reply }),
        )
        .await
    }

    /// A whole-file flush this task leads (`actor/caller_sync.rs`).
    async fn flush_led(&self) -> Result<()> {
        let shared = &self.shared;
        if shared.is_closed() {
            return Err(Error::Closed);
        }
        if let Some(err) = shared.poisoned() {
            return Err(err);
        }
        let tally = &shared.tally;
        // How updates reach the page cache from now on depends on how many
        // came between flushes (`actor/write_method.rs`).
        shared
            .method
            .flushed_after(tally.sync.mark_flush(tally.total(shared.gate())));
        let target = || Target {
            tally: Arc::clone(tally),
            gate: Arc::clone(shared.gate()),
            file: Arc::clone(&shared.file),
            path: shared.path.clone(),
        };
        tally
            .sync
            .flush(target)
            .instrument(request_span("flush", 0, self.len()))
            .await?;
        // A sync that failed meanwhile (a resize's) reported a write-back
        // error this one's success does not cover.
        match shared.poisoned() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Bytes written to the file through this process (every open of it,
    /// every path: updates, `modify`, and leases that could write, counted
    /// whole when released) since the last flush that succeeded. A failed
    /// flush leaves it as it was. A plain read of counters: no round trip.
    ///
    /// A lease is counted when the actor takes in its release, a moment
    /// after it is dropped; that includes the temporary lease under which
    /// a large update may be copied, so such an update can show here just
    /// after its call returned rather than at once.
    pub fn pending_bytes(&self) -> u64 {
        self.shared.tally.pending(self.shared.gate()).bytes
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
            OnConflict::Wait,
            request_span("flush_range", offset, len),
            |reply| {
                Request::Inline(Inline::Flush {
                    range: Some((offset, len)),
                    reply,
                })
            },
        )
        .await
    }

    /// Changes the file's length to `new_len` bytes (new bytes are zero).
    ///
    /// A grow reserves the new blocks first (`posix_fallocate`, see
    /// [`OpenOptions::preallocate`](crate::OpenOptions::preallocate)), then maps a new generation; it never
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
        self.resize_inner(new_len, OnConflict::Wait).await
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
        self.resize_inner(new_len, OnConflict::Fail).await
    }

    /// A resize of the given kind (`grow_to`, or an open's `truncate` of a
    /// file this process maps already).
    pub(super) async fn resize_with(&self, new_len: u64, kind: ResizeKind) -> Result<()> {
        if self.shared.mode != Mode::ReadWrite {
            return Err(Error::ReadOnly {
                op: "resize",
                mode: self.shared.mode,
            });
        }
        crate::disk::check_len(new_len)?;
        self.call(
            "resize",
            OnConflict::Wait,
            request_span("resize", new_len, 0),
            |reply| Request::Resize {
                new_len,
                kind,
                reply,
            },
        )
        .await
    }

    async fn resize_inner(&self, new_len: u64, on_conflict: OnConflict) -> Result<()> {
        if self.shared.mode != Mode::ReadWrite {
            return Err(Error::ReadOnly {
                op: "resize",
                mode: self.shared.mode,
            });
        }
        crate::disk::check_len(new_len)?;
        self.call(
            "resize",
            on_conflict,
            request_span("resize", new_len, 0u64),
            |reply| Request::Resize {
                new_len,
                kind: ResizeKind::Exact,
                reply,
            },
        )
        .await
    }

    /// Prefaults the pages of `[offset, offset + len)` on the blocking pool
    /// (`MADV_POPULATE_READ`, or `MADV_WILLNEED` on older kernels; never
    /// `MADV_POPULATE_WRITE`, which would dirty every page of the range),
    /// so that later accesses do not stall on page faults.
    ///
    /// It changes no byte, so it never waits for leases (segments, atomic
    /// views, exclusive segments of the range are fine) and needs no `try_`
    /// twin.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`]; [`Error::Io`] when a page cannot be read in
    /// (an I/O error, or the file was cut by another process or a shrink
    /// meanwhile); [`Error::Closed`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; a started prefault completes in the background.
    pub async fn prewarm(&self, offset: u64, len: u64) -> Result<()> {
        self.call(
            "prewarm",
            OnConflict::Wait,
            request_span("prewarm", offset, len),
            |reply| Request::Inline(Inline::Populate { offset, len, reply }),
        )
        .await
    }

    /// Flushes, ends this open of the file and reports the flush's outcome.
    /// Afterwards every call on every handle of this open fails with
    /// [`Error::Closed`]; requests still queued are answered with it. Other
    /// opens of the file are not affected.
    ///
    /// Live leases stay valid, and the actor keeps track of them (a later
    /// open of the file waits for them before it cuts their bytes). Writes
    /// through a [`SegmentMut`](crate::SegmentMut) or an
    /// [`AtomicView`](crate::AtomicView) after the close reach the file's
    /// page cache (they survive a crash of this process) but no flush of
    /// this open makes them durable any more: flush them before closing, or
    /// through another open of the file.
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
        self.call(
            "close",
            OnConflict::Wait,
            request_span("close", 0u64, 0u64),
            |reply| Request::Close { reply },
        )
        .await
    }
}
