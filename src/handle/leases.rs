//! The calls that hand out leases: segments, exclusive segments and atomic
//! views.

use std::sync::atomic::{AtomicU32, AtomicU64};

use super::{request_span, MappedFile};
use crate::error::{Error, Result};
use crate::lease::{width_of, AtomicReader, AtomicTarget, AtomicView, Grant, Segment, SegmentMut};
use crate::lease_table::Access;
use crate::request::{Inline, OnConflict, Request};

impl MappedFile {
    /// Sends a lease request; the caller has checked mode and alignment
    /// (the actor checks the bounds, against the current generation).
    pub(super) async fn lease(
        &self,
        op: &'static str,
        offset: u64,
        len: u64,
        access: Access,
        mutable: bool,
        on_conflict: OnConflict,
    ) -> Result<Grant> {
        self.call(op, on_conflict, request_span(op, offset, len), |reply| {
            Request::Inline(Inline::Lease {
                op,
                offset,
                len,
                access,
                mutable,
                reply,
            })
        })
        .await
    }

    /// `count` atomics of `T`'s width at `offset`: the one body behind every
    /// atomic view and reader. Errors come in one order: the mode (for a
    /// view that can store), then the alignment, then the bounds.
    async fn atomic<T: ?Sized + AtomicTarget>(
        &self,
        op: &'static str,
        offset: u64,
        count: u64,
        mutable: bool,
        on_conflict: OnConflict,
    ) -> Result<Grant> {
        if mutable {
            self.writable(op)?;
        }
        let width = width_of::<T>();
        crate::region::check_aligned(offset, u64::from(width))?;
        let len = count
            .checked_mul(u64::from(width))
            .ok_or(Error::OutOfBounds {
                offset,
                len: u64::MAX,
                file_len: self.len(),
            })?;
        self.lease(op, offset, len, Access::Atomic(width), mutable, on_conflict)
            .await
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
        self.lease(
            "segment",
            offset,
            len,
            Access::Read,
            false,
            OnConflict::Wait,
        )
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
        self.lease(
            "segment",
            offset,
            len,
            Access::Read,
            false,
            OnConflict::Fail,
        )
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
        self.writable("segment_mut")?;
        self.lease(
            "segment_mut",
            offset,
            len,
            Access::Write,
            true,
            OnConflict::Wait,
        )
        .await
        .map(|grant| SegmentMut::new(grant, &self.shared))
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
        self.writable("segment_mut")?;
        self.lease(
            "segment_mut",
            offset,
            len,
            Access::Write,
            true,
            OnConflict::Fail,
        )
        .await
        .map(|grant| SegmentMut::new(grant, &self.shared))
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
        self.atomic::<AtomicU32>("atomic_u32", offset, 1, true, OnConflict::Wait)
            .await
            .map(AtomicView::new)
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
        self.atomic::<AtomicU32>("atomic_u32", offset, 1, true, OnConflict::Fail)
            .await
            .map(AtomicView::new)
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
        self.atomic::<AtomicU64>("atomic_u64", offset, 1, true, OnConflict::Wait)
            .await
            .map(AtomicView::new)
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
        self.atomic::<AtomicU64>("atomic_u64", offset, 1, true, OnConflict::Fail)
            .await
            .map(AtomicView::new)
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
        self.atomic::<[AtomicU32]>("atomic_u32_slice", offset, count, true, OnConflict::Wait)
            .await
            .map(AtomicView::new)
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
        self.atomic::<[AtomicU32]>("atomic_u32_slice", offset, count, true, OnConflict::Fail)
            .await
            .map(AtomicView::new)
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
        self.atomic::<[AtomicU64]>("atomic_u64_slice", offset, count, true, OnConflict::Wait)
            .await
            .map(AtomicView::new)
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
        self.atomic::<[AtomicU64]>("atomic_u64_slice", offset, count, true, OnConflict::Fail)
            .await
            .map(AtomicView::new)
    }

    /// A load-only `AtomicU32` at `offset` (4-byte aligned), on a mapping
    /// of any mode: for a process that only reads counters another one
    /// updates through an [`AtomicView`] of the same file.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mmap_actor::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("counters");
    /// # std::fs::write(&path, 7u32.to_le_bytes().repeat(1024)).unwrap();
    /// use std::sync::atomic::Ordering;
    /// let file = mmap_actor::MappedFile::open_ro(&path).await?;
    /// let counter = file.atomic_u32_reader(0).await?;
    /// assert_eq!(counter.load(Ordering::Acquire), 7);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Misaligned`] unless `offset` is a multiple of 4;
    /// [`Error::OutOfBounds`]; [`Error::Closed`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn atomic_u32_reader(&self, offset: u64) -> Result<AtomicReader<AtomicU32>> {
        self.atomic::<AtomicU32>("atomic_u32_reader", offset, 1, false, OnConflict::Wait)
            .await
            .map(AtomicReader::new)
    }

    /// [`atomic_u32_reader`](Self::atomic_u32_reader) that fails with
    /// [`Error::Conflict`] instead of waiting.
    ///
    /// # Errors
    ///
    /// As [`atomic_u32_reader`](Self::atomic_u32_reader), plus
    /// [`Error::Conflict`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn try_atomic_u32_reader(&self, offset: u64) -> Result<AtomicReader<AtomicU32>> {
        self.atomic::<AtomicU32>("atomic_u32_reader", offset, 1, false, OnConflict::Fail)
            .await
            .map(AtomicReader::new)
    }

    /// A load-only `AtomicU64` at `offset` (8-byte aligned), on a mapping
    /// of any mode; see [`atomic_u32_reader`](Self::atomic_u32_reader).
    ///
    /// # Errors
    ///
    /// [`Error::Misaligned`] unless `offset` is a multiple of 8;
    /// [`Error::OutOfBounds`]; [`Error::Closed`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn atomic_u64_reader(&self, offset: u64) -> Result<AtomicReader<AtomicU64>> {
        self.atomic::<AtomicU64>("atomic_u64_reader", offset, 1, false, OnConflict::Wait)
            .await
            .map(AtomicReader::new)
    }

    /// [`atomic_u64_reader`](Self::atomic_u64_reader) that fails with
    /// [`Error::Conflict`] instead of waiting.
    ///
    /// # Errors
    ///
    /// As [`atomic_u64_reader`](Self::atomic_u64_reader), plus
    /// [`Error::Conflict`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn try_atomic_u64_reader(&self, offset: u64) -> Result<AtomicReader<AtomicU64>> {
        self.atomic::<AtomicU64>("atomic_u64_reader", offset, 1, false, OnConflict::Fail)
            .await
            .map(AtomicReader::new)
    }
}
