//! The calls that hand out leases: segments, exclusive segments and atomic
//! views.

use std::sync::atomic::{AtomicU32, AtomicU64};

use super::MappedFile;
use crate::error::{Error, Result};
use crate::lease::{AtomicView, Grant, Segment, SegmentMut};
use crate::request::{LeaseKind, Request};

impl MappedFile {
    async fn lease(
        &self,
        op: &'static str,
        offset: u64,
        len: u64,
        kind: LeaseKind,
        wait: bool,
    ) -> Result<Grant> {
        if kind != LeaseKind::Shared {
            self.writable(op)?;
        }
        if let LeaseKind::Atomic(width) = kind {
            crate::region::check_aligned(offset, u64::from(width))?;
        }
        self.call(op, wait, span!(op, offset, len), |reply| Request::Lease {
            op,
            offset,
            len,
            kind,
            reply,
        })
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
        self.lease("segment", offset, len, LeaseKind::Shared, true)
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
        self.lease("segment", offset, len, LeaseKind::Shared, false)
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
        self.lease("segment_mut", offset, len, LeaseKind::Exclusive, true)
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
        self.lease("segment_mut", offset, len, LeaseKind::Exclusive, false)
            .await
            .map(SegmentMut::new)
    }
}

macro_rules! atomic_methods {
    ($(
        $(#[$doc:meta])*
        $name:ident, $try_name:ident, $target:ty, $width:expr, ($($arg:ident: $argty:ty),*), $count:expr;
    )*) => {
        impl MappedFile {
            $(
                $(#[$doc])*
                ///
                /// # Errors
                ///
                /// [`Error::Misaligned`] unless `offset` is a multiple of the
                /// width; [`Error::ReadOnly`] on a read-only mapping;
                /// [`Error::OutOfBounds`]; [`Error::Closed`].
                ///
                /// # Cancel safety
                ///
                /// Cancel safe.
                pub async fn $name(&self, offset: u64 $(, $arg: $argty)*) -> Result<AtomicView<$target>> {
                    let len = self.atomic_len(offset, $count, $width)?;
                    self.lease(stringify!($name), offset, len, LeaseKind::Atomic($width), true)
                        .await
                        .map(AtomicView::new)
                }

                #[doc = concat!("[`", stringify!($name), "`](Self::", stringify!($name), ") that fails with [`Error::Conflict`] instead of waiting.")]
                ///
                /// # Errors
                ///
                #[doc = concat!("As [`", stringify!($name), "`](Self::", stringify!($name), "), plus [`Error::Conflict`].")]
                ///
                /// # Cancel safety
                ///
                /// Cancel safe.
                pub async fn $try_name(&self, offset: u64 $(, $arg: $argty)*) -> Result<AtomicView<$target>> {
                    let len = self.atomic_len(offset, $count, $width)?;
                    self.lease(stringify!($name), offset, len, LeaseKind::Atomic($width), false)
                        .await
                        .map(AtomicView::new)
                }
            )*
        }
    };
}

impl MappedFile {
    fn atomic_len(&self, offset: u64, count: u64, width: u8) -> Result<u64> {
        count
            .checked_mul(u64::from(width))
            .ok_or(Error::OutOfBounds {
                offset,
                len: u64::MAX,
                file_len: self.len(),
            })
    }
}

atomic_methods! {
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
    atomic_u32, try_atomic_u32, AtomicU32, 4, (), 1;
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
    atomic_u64, try_atomic_u64, AtomicU64, 8, (), 1;
    /// `count` consecutive `AtomicU32`s starting at `offset` (4-byte aligned).
    atomic_u32_slice, try_atomic_u32_slice, [AtomicU32], 4, (count: u64), count;
    /// `count` consecutive `AtomicU64`s starting at `offset` (8-byte aligned).
    atomic_u64_slice, try_atomic_u64_slice, [AtomicU64], 8, (count: u64), count;
}
