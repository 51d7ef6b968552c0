//! The write path: borrowed-slice calls (`update_from`, `load_into`),
//! vectored updates, zeroing, `grow_to`, and the one body every load and
//! update goes through.
//!
//! Which way a copy goes:
//!
//! - **small** (up to `DIRECT_MAX`, or `INLINE_COPY_MAX` when updates are
//!   written with `pwrite`): the calling task copies through the gate, no
//!   round trip, no allocation;
//! - **medium** (up to `INLINE_COPY_MAX`): one request; the actor copies
//!   (a borrowed slice is copied into the request first, so a dropped
//!   future never leaves the actor holding a borrow);
//! - **large**: the calling task copies itself, in chunks, yielding to the
//!   scheduler whenever about 50 µs of copying have passed: no thread
//!   hand-off, and no executor thread held for long. An update of 1 MiB or
//!   more copies through the gate one chunk per entry, with stores that
//!   bypass the cache (`sys/streaming.rs`), from any caller. A smaller one,
//!   from a task, first takes a temporary lease of the range (one round
//!   trip, cheap there) and copies with `memcpy`; from a multi-thread
//!   runtime's `block_on`, where a round trip wakes two parked threads, it
//!   too copies through the gate (atomic words). If a lease or a resize
//!   closes the gate between two chunks, the rest goes under a lease
//!   (`large.rs`). Dropping the future mid-copy leaves the range holding,
//!   chunk by chunk, old or new bytes.
//!
//! `update`, `update_from` and `load_into` return hand-written futures
//! (`quick.rs`) that hold only their arguments until the direct path has
//! had its try.

use bytes::{Bytes, BytesMut};

use super::direct::{spend_budget, ZEROS};
use super::quick::{LoadInto, UpdateFrom};
use super::{request_span, MappedFile};
use crate::error::{Error, Result};
use crate::region;
use crate::request::{Inline, OnConflict, Request};
use crate::{DIRECT_MAX, INLINE_COPY_MAX};

/// What an update writes.
pub(super) enum Source<'a> {
    /// Borrowed slices, back to back.
    Slices(&'a [&'a [u8]]),
    /// Bytes the caller gave away (a request carries them without a copy).
    Owned(Bytes),
    /// This many zero bytes.
    Zeros(u64),
}

impl MappedFile {
    /// The body of every update: the direct path inline, anything else in
    /// a future of its own on the heap (so that the future of a small
    /// update stays small: it is built and moved at every call).
    pub(super) async fn write_parts(
        &self,
        op: &'static str,
        offset: u64,
        source: Source<'_>,
        on_conflict: OnConflict,
    ) -> Result<()> {
        self.writable(op)?;
        if let Some(done) = self.write_direct(offset, &source).await {
            return done;
        }
        Box::pin(self.write_slow(op, offset, source, on_conflict)).await
    }

    /// The direct path of an update, if it applies and the gate is open.
    async fn write_direct(&self, offset: u64, source: &Source<'_>) -> Option<Result<()>> {
        let (one, zeros) = match source {
            Source::Slices(parts) if parts.len() == 1 => (parts[0], 0),
            Source::Owned(bytes) => (&bytes[..], 0),
            Source::Zeros(n) => (&[][..], usize::try_from(*n).ok()?),
            Source::Slices(parts) => {
                spend_budget().await;
                return self.update_direct(offset, parts, 0);
            }
        };
        if one.len() + zeros > INLINE_COPY_MAX {
            return None;
        }
        spend_budget().await;
        self.update_direct(offset, &[one], zeros)
    }

    /// Every update that is not served directly.
    async fn write_slow(
        &self,
        op: &'static str,
        offset: u64,
        source: Source<'_>,
        on_conflict: OnConflict,
    ) -> Result<()> {
        let owned;
        let (parts, zeros): (&[&[u8]], u64) = match &source {
            Source::Slices(parts) => (parts, 0),
            Source::Owned(bytes) => {
                owned = [&bytes[..]];
                (&owned, 0)
            }
            Source::Zeros(n) => (&[], *n),
        };
        let sum = parts.iter().map(|p| p.len() as u64).sum::<u64>();
        let total = sum.checked_add(zeros).ok_or(Error::OutOfBounds {
            offset,
            len: u64::MAX,
            file_len: self.len(),
        })?;
        if total > INLINE_COPY_MAX as u64 {
            return self
                .write_large(op, offset, parts, total, on_conflict)
                .await;
        }
        let data = match source {
            Source::Owned(data) => data,
            Source::Zeros(n) => Bytes::from_static(&ZEROS[..n as usize]),
            Source::Slices(parts) => {
                let mut joined = BytesMut::with_capacity(total as usize);
                for part in parts {
                    joined.extend_from_slice(part);
                }
                joined.freeze()
            }
        };
        self.call(op, on_conflict, request_span(op, offset, total), |reply| {
            Request::Inline(Inline::Update {
                offset,
                data,
                reply,
            })
        })
        .await
    }

    /// The body of every load into a caller's buffer.
    pub(super) async fn read_into(
        &self,
        op: &'static str,
        offset: u64,
        buf: &mut [u8],
        on_conflict: OnConflict,
    ) -> Result<()> {
        if buf.len() <= DIRECT_MAX {
            spend_budget().await;
            if let Some(done) = self.load_into_direct(offset, buf) {
                return done;
            }
        }
        Box::pin(self.read_into_slow(op, offset, buf, on_conflict)).await
    }

    async fn read_into_slow(
        &self,
        op: &'static str,
        offset: u64,
        buf: &mut [u8],
        on_conflict: OnConflict,
    ) -> Result<()> {
        let len = buf.len() as u64;
        if buf.len() > INLINE_COPY_MAX {
            return self.read_large(op, offset, buf, on_conflict).await;
        }
        let bytes = self.load_request(op, offset, len, on_conflict).await?;
        buf.copy_from_slice(&bytes);
        Ok(())
    }

    /// The body of every load returning `Bytes`.
    pub(super) async fn read(
        &self,
        op: &'static str,
        offset: u64,
        len: u64,
        on_conflict: OnConflict,
    ) -> Result<Bytes> {
        if len > INLINE_COPY_MAX as u64 {
            // Checked before allocating (the actor checks again).
            region::check(offset, len, self.len())?;
            let mut buf = vec![0u8; len as usize];
            Box::pin(self.read_into_slow(op, offset, &mut buf, on_conflict)).await?;
            return Ok(Bytes::from(buf));
        }
        if len <= DIRECT_MAX as u64 {
            spend_budget().await;
            if let Some(done) = self.load_direct(offset, len) {
                return done;
            }
        }
        Box::pin(self.load_request(op, offset, len, on_conflict)).await
    }

    async fn load_request(
        &self,
        op: &'static str,
        offset: u64,
        len: u64,
        on_conflict: OnConflict,
    ) -> Result<Bytes> {
        self.call(op, on_conflict, request_span(op, offset, len), |reply| {
            Request::Inline(Inline::Load { offset, len, reply })
        })
        .await
    }

    /// Copies `buf.len()` bytes at `offset` into `buf`: [`load`](Self::load)
    /// without allocating.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mmap_actor::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = mmap_actor::MappedFile::create(dir.path().join("f"), 8192).await?;
    /// file.update_from(4096, b"sixty-four bytes or any length").await?;
    /// let mut buf = [0u8; 9];
    /// file.load_into(4096, &mut buf).await?;
    /// assert_eq!(&buf, b"sixty-fou");
    /// # Ok(()) }
    /// ```
    ///
    /// Small loads are copied by the calling task; large ones under a
    /// temporary lease, in chunks, by the calling task too.
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future abandons the load; `buf` may then
    /// hold part of the bytes.
    pub fn load_into<'a>(&'a self, offset: u64, buf: &'a mut [u8]) -> LoadInto<'a> {
        LoadInto::new(self, offset, buf)
    }

    /// [`load_into`](Self::load_into) that fails with [`Error::Conflict`]
    /// instead of waiting for a lease.
    ///
    /// # Errors
    ///
    /// As [`load_into`](Self::load_into), plus [`Error::Conflict`].
    ///
    /// # Cancel safety
    ///
    /// As [`load_into`](Self::load_into).
    pub async fn try_load_into(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.read_into("load", offset, buf, OnConflict::Fail).await
    }

    /// Writes `data` at `offset`: [`update`](Self::update) from a borrowed
    /// slice. A small update is copied by the calling task, with no
    /// allocation; a medium one is copied into the request; a large one is
    /// copied by the calling task under a temporary lease.
    ///
    /// # Errors
    ///
    /// As [`update`](Self::update).
    ///
    /// # Cancel safety
    ///
    /// As [`update`](Self::update); a large update dropped mid-way leaves
    /// each of its 64 KiB chunks either old or new.
    pub fn update_from<'a>(&'a self, offset: u64, data: &'a [u8]) -> UpdateFrom<'a> {
        UpdateFrom::new(self, offset, data)
    }

    /// [`update_from`](Self::update_from) that fails with
    /// [`Error::Conflict`] instead of waiting for a lease.
    ///
    /// # Errors
    ///
    /// As [`update_from`](Self::update_from), plus [`Error::Conflict`].
    ///
    /// # Cancel safety
    ///
    /// As [`update_from`](Self::update_from).
    pub async fn try_update_from(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.write_parts("update", offset, Source::Slices(&[data]), OnConflict::Fail)
            .await
    }

    /// Writes `parts` back to back at `offset`, as one update (a record
    /// header and its payload, without joining them first).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mmap_actor::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = mmap_actor::MappedFile::create(dir.path().join("f"), 4096).await?;
    /// let payload = b"payload";
    /// let header = (payload.len() as u32).to_le_bytes();
    /// file.update_vectored(0, &[&header, payload]).await?;
    /// assert_eq!(&file.load(4, 7).await?[..], b"payload");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`update`](Self::update), for the whole range.
    ///
    /// # Cancel safety
    ///
    /// As [`update_from`](Self::update_from).
    pub async fn update_vectored(&self, offset: u64, parts: &[&[u8]]) -> Result<()> {
        self.write_parts("update", offset, Source::Slices(parts), OnConflict::Wait)
            .await
    }

    /// Writes `len` zero bytes at `offset`, without allocating them.
    ///
    /// # Errors
    ///
    /// As [`update`](Self::update).
    ///
    /// # Cancel safety
    ///
    /// As [`update_from`](Self::update_from).
    pub async fn zero(&self, offset: u64, len: u64) -> Result<()> {
        self.write_parts("zero", offset, Source::Zeros(len), OnConflict::Wait)
            .await
    }

    /// Grows the file to at least `min_len` bytes; a file already that long
    /// is left alone. Tasks racing to make room can call it freely: it never
    /// shrinks the file, so it never waits for leases either.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mmap_actor::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = mmap_actor::MappedFile::create(dir.path().join("f"), 4096).await?;
    /// file.grow_to(1 << 20).await?;
    /// file.grow_to(8192).await?; // already longer: nothing happens
    /// assert_eq!(file.len(), 1 << 20);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`resize`](Self::resize) (a grow).
    ///
    /// # Cancel safety
    ///
    /// As [`resize`](Self::resize).
    pub async fn grow_to(&self, min_len: u64) -> Result<()> {
        self.resize_with(min_len, crate::request::ResizeKind::AtLeast)
            .await
    }
}
