//! The calls that hand out leases: segments, exclusive segments and atomic
//! views.

use std::sync::atomic::{AtomicU32, AtomicU64};

use super::{request_span, MappedFile};
use crate::error::{Error, Result};
use crate::lease::{width_of, AtomicTarget, AtomicView, Grant, Segment, SegmentMut};
use crate::lease_table::Access;
use crate::request::{Inline, OnConflict, Request};

impl MappedFile {
    async fn lease(
        &self,
        op: &'static str,
        offset: u64,
        len: u64,
        access: Access,
        on_conflict: OnConflict,
    ) -> Result<Grant> {
        if access != Access::Read {
            self.writable(op)?;
        }
        if let Access::Atomic(width) = access {
            crate::region::check_aligned(offset, u64::from(width))?;
        }
        self.call(op, on_conflict, request_span(op, offset, len), |reply| {
            Request::Inline(Inline::Lease {
                op,
                offset,
                len,
                access,
                reply,
            })
        })
        .await
    }

    /// `count` atomics of `T`'s width at `offset`: the one body behind every
    /// atomic-view call.
    async fn atomic<T: ?Sized + AtomicTarget>(
        &self,
        op: &'static str,
        offset: u64,
        count: u64,
        on_conflict: OnConflict,
    ) -> Result<AtomicView<T>> {
        let width = width_of::<T>();
        let len = count
            .checked_mul(u64::from(width))
            .ok_or(Error::OutOfBounds {
                offset,
                len: u64::MAX,
                file_len: self.len(),
            })?;
        self.lease(op, offset, len, Access::Atomic(width), on_conflict)
            .await
            .map(AtomicView::new)
    }

    /// A zero-copy, shared view of `len` bytes at `offset`.
    ///
    /// Waits while an update, a [`SegmentMut`] or an atomic view covers any
    /// of the bytes (and behind earlier waiting requests for them).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mmap_actor::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = mmap_actor::MappedFile::create(dir.path().join("s"), 4096).await?;
    /// file.update(0, &b"zero-copy"[..]).await?;
    /// let seg = file.segment(0, 9).await?;
    /// assert_eq!(&seg[..], b"zero-copy");
    /// let bytes = seg.into_bytes(); // still no copy
    /// assert_eq!(&bytes[..4], b"zero");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`], [`Error::Closed`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a lease granted after the future was dropped is released
    /// at once.
    pub async fn segment(&self, offset: u64, len: u64) -> Result<Segment> {
        self.lease("segment", offset, len, Access::Read, OnConflict::Wait)
            .await
            .map(Segment::new)
    }

    /// [`segment`](Self::segment) that fails with [`Error::Conflict`]
    /// instead of waiting.
    ///
    /// # Errors
    ///
    /// As [`segment`](Self::segment), plus [`Error::Conflict`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn try_segment(&self, offset: u64, len: u64) -> Result<Segment> {
        self.lease("segment", offset, len, Access::Read, OnConflict::Fail)
            .await
            .map(Segment::new)
    }

    /// An exclusive, writable view of `len` bytes at `offset`.
    ///
    /// Waits while anything else covers any of the bytes.
    ///
    /// # Errors
    ///
    /// [`Error::ReadOnly`], [`Error::OutOfBounds`], [`Error::Closed`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn segment_mut(&self, offset: u64, len: u64) -> Result<SegmentMut> {
        self.lease("segment_mut", offset, len, Access::Write, OnConflict::Wait)
            .await
            .map(SegmentMut::new)
    }

    /// [`segment_mut`](Self::segment_mut) that fails with
    /// [`Error::Conflict`] instead of waiting.
    ///
    /// # Errors
    ///
    /// As [`segment_mut`](Self::segment_mut), plus [`Error::Conflict`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn try_segment_mut(&self, offset: u64, len: u64) -> Result<SegmentMut> {
        self.lease("segment_mut", offset, len, Access::Write, OnConflict::Fail)
            .await
            .map(SegmentMut::new)
    }

    /// An `AtomicU32` at `offset` inside the file (4-byte aligned).
    ///
    /// Views of the same width coexist; plain access to the same bytes waits
    /// until the view is released.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mmap_actor::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = mmap_actor::MappedFile::create(dir.path().join("a"), 4096).await?;
    /// use std::sync::atomic::Ordering;
    /// let flag = file.atomic_u32(16).await?;
    /// flag.store(7, Ordering::Release);
    /// assert_eq!(flag.load(Ordering::Acquire), 7);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Misaligned`] unless `offset` is a multiple of 4;
    /// [`Error::ReadOnly`] on a read-only mapping; [`Error::OutOfBounds`];
    /// [`Error::Closed`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn atomic_u32(&self, offset: u64) -> Result<AtomicView<AtomicU32>> {
        self.atomic("atomic_u32", offset, 1, OnConflict::Wait).await
    }

    /// [`atomic_u32`](Self::atomic_u32) that fails with [`Error::Conflict`]
    /// instead of waiting.
    ///
    /// # Errors
    ///
    /// As [`atomic_u32`](Self::atomic_u32), plus [`Error::Conflict`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn try_atomic_u32(&self, offset: u64) -> Result<AtomicView<AtomicU32>> {
        self.atomic("atomic_u32", offset, 1, OnConflict::Fail).await
    }

    /// An `AtomicU64` at `offset` inside the file (8-byte aligned).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mmap_actor::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = mmap_actor::MappedFile::create(dir.path().join("a"), 4096).await?;
    /// use std::sync::atomic::Ordering;
    /// let hits = file.atomic_u64(64).await?;
    /// hits.fetch_add(1, Ordering::Relaxed);
    /// assert_eq!(hits.load(Ordering::Relaxed), 1);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Misaligned`] unless `offset` is a multiple of 8;
    /// [`Error::ReadOnly`] on a read-only mapping; [`Error::OutOfBounds`];
    /// [`Error::Closed`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn atomic_u64(&self, offset: u64) -> Result<AtomicView<AtomicU64>> {
        self.atomic("atomic_u64", offset, 1, OnConflict::Wait).await
    }

    /// [`atomic_u64`](Self::atomic_u64) that fails with [`Error::Conflict`]
    /// instead of waiting.
    ///
    /// # Errors
    ///
    /// As [`atomic_u64`](Self::atomic_u64), plus [`Error::Conflict`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn try_atomic_u64(&self, offset: u64) -> Result<AtomicView<AtomicU64>> {
        self.atomic("atomic_u64", offset, 1, OnConflict::Fail).await
    }

    /// `count` consecutive `AtomicU32`s starting at `offset` (4-byte
    /// aligned). A `count` of zero gives an empty slice.
    ///
    /// # Errors
    ///
    /// As [`atomic_u32`](Self::atomic_u32); [`Error::OutOfBounds`] also when
    /// `count * 4` overflows.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn atomic_u32_slice(
        &self,
        offset: u64,
        count: u64,
    ) -> Result<AtomicView<[AtomicU32]>> {
        self.atomic("atomic_u32_slice", offset, count, OnConflict::Wait)
            .await
    }

    /// [`atomic_u32_slice`](Self::atomic_u32_slice) that fails with
    /// [`Error::Conflict`] instead of waiting.
    ///
    /// # Errors
    ///
    /// As [`atomic_u32_slice`](Self::atomic_u32_slice), plus
    /// [`Error::Conflict`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn try_atomic_u32_slice(
        &self,
        offset: u64,
        count: u64,
    ) -> Result<AtomicView<[AtomicU32]>> {
        self.atomic("atomic_u32_slice", offset, count, OnConflict::Fail)
            .await
    }

    /// `count` consecutive `AtomicU64`s starting at `offset` (8-byte
    /// aligned). A `count` of zero gives an empty slice.
    ///
    /// # Errors
    ///
    /// As [`atomic_u64`](Self::atomic_u64); [`Error::OutOfBounds`] also when
    /// `count * 8` overflows.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn atomic_u64_slice(
        &self,
        offset: u64,
        count: u64,
    ) -> Result<AtomicView<[AtomicU64]>> {
        self.atomic("atomic_u64_slice", offset, count, OnConflict::Wait)
            .await
    }

    /// [`atomic_u64_slice`](Self::atomic_u64_slice) that fails with
    /// [`Error::Conflict`] instead of waiting.
    ///
    /// # Errors
    ///
    /// As [`atomic_u64_slice`](Self::atomic_u64_slice), plus
    /// [`Error::Conflict`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn try_atomic_u64_slice(
        &self,
        offset: u64,
        count: u64,
    ) -> Result<AtomicView<[AtomicU64]>> {
        self.atomic("atomic_u64_slice", offset, count, OnConflict::Fail)
            .await
    }
}
