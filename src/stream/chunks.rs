//! [`Chunks`] and [`ChunksMut`]: a range of the file as a stream of leases,
//! one at a time.

use std::fmt;
use std::ops::{Bound, RangeBounds};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::stream::{FusedStream, Stream};

use crate::error::{Error, Result};
use crate::lease::{Segment, SegmentMut};
use crate::MappedFile;

impl MappedFile {
    /// The bytes of `range` as a stream of shared leases ([`Segment`]s) of
    /// `chunk_len` bytes each, the last one shorter if `chunk_len` does not
    /// divide the range.
    ///
    /// `range` means what it means for a slice: `0..4096` excludes 4096,
    /// `0..=4095` includes 4095, and an open end (`100..`, `..`) is the
    /// length of the file when `chunks` is called. The range is checked
    /// against that length; an empty range at an offset inside the file (or
    /// at its end) yields no chunk.
    ///
    /// One lease at a time: the stream requests a chunk only when it is
    /// polled for it, and never has more than one request outstanding, so
    /// a chunk not yet yielded holds no lease (drop each chunk before asking
    /// for the next, and nothing of the range stays leased between chunks).
    /// Each request waits as [`segment`](MappedFile::segment) does.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mmap_actor::Result<()> {
    /// use futures::TryStreamExt;
    /// # let dir = tempfile::tempdir().unwrap();
    /// let file = mmap_actor::MappedFile::create(dir.path().join("c"), 10_000).await?;
    /// file.update(0, vec![7u8; 10_000]).await?;
    /// let mut chunks = file.chunks(.., 4096);
    /// let mut lens = Vec::new();
    /// while let Some(chunk) = chunks.try_next().await? {
    ///     assert!(chunk.iter().all(|&b| b == 7));
    ///     lens.push(chunk.len());
    /// } // each chunk is released here, before the next is requested
    /// assert_eq!(lens, [4096, 4096, 1808]);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The stream yields one error item and then ends:
    /// [`Error::InvalidArgument`] if `chunk_len` is 0;
    /// [`Error::ReversedRange`] if the range starts after its end;
    /// [`Error::OutOfBounds`] if it ends past the file (or its end overflows
    /// `u64`); and any error of [`segment`](MappedFile::segment) for a chunk
    /// ([`Error::OutOfBounds`] when the file shrank meanwhile,
    /// [`Error::Closed`]).
    ///
    /// # Cancel safety
    ///
    /// Dropping the stream drops its one outstanding lease request, if any;
    /// a lease granted after that is released at once. Dropping a `next()`
    /// future loses nothing: the request stays in the stream, and the next
    /// poll carries on with it. A lease the actor grants while the stream is
    /// not being polled is held by the stream until it is yielded or the
    /// stream is dropped.
    pub fn chunks(&self, range: impl RangeBounds<u64>, chunk_len: u64) -> Chunks {
        Chunks {
            walk: Walk::new(self, range, chunk_len, |file, offset, len| {
                Box::pin(async move { file.segment(offset, len).await })
            }),
        }
    }

    /// The bytes of `range` as a stream of exclusive, writable leases
    /// ([`SegmentMut`]s) of `chunk_len` bytes each; otherwise as
    /// [`chunks`](MappedFile::chunks).
    ///
    /// Each request waits as [`segment_mut`](MappedFile::segment_mut) does:
    /// for every other lease and request on the chunk's bytes.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mmap_actor::Result<()> {
    /// use futures::TryStreamExt;
    /// # let dir = tempfile::tempdir().unwrap();
    /// let file = mmap_actor::MappedFile::create(dir.path().join("c"), 8192).await?;
    /// let mut chunks = file.chunks_mut(1000..=2999, 512);
    /// while let Some(mut chunk) = chunks.try_next().await? {
    ///     let at = chunk.offset();
    ///     for (i, b) in chunk.iter_mut().enumerate() {
    ///         *b = ((at + i as u64) % 251) as u8;
    ///     }
    /// }
    /// assert_eq!(file.load(2999, 1).await?[0], (2999 % 251) as u8);
    /// assert_eq!(file.load(3000, 1).await?[0], 0);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`chunks`](MappedFile::chunks); on a read-only mapping the one
    /// item is [`Error::ReadOnly`].
    ///
    /// # Cancel safety
    ///
    /// As [`chunks`](MappedFile::chunks).
    pub fn chunks_mut(&self, range: impl RangeBounds<u64>, chunk_len: u64) -> ChunksMut {
        ChunksMut {
            walk: Walk::new(self, range, chunk_len, |file, offset, len| {
                Box::pin(async move { file.segment_mut(offset, len).await })
            }),
        }
    }
}

/// A stream of [`Segment`]s covering a range of the file, one lease at a
/// time; made by [`MappedFile::chunks`], whose docs tell what it yields,
/// its errors and its cancel safety.
///
/// It is `Send` and `Unpin`, and a [`FusedStream`]: after its last item it
/// keeps returning `None`.
pub struct Chunks {
    walk: Walk<Segment>,
}

/// A stream of [`SegmentMut`]s covering a range of the file, one lease at a
/// time; made by [`MappedFile::chunks_mut`].
///
/// It is `Send` and `Unpin`, and a [`FusedStream`].
pub struct ChunksMut {
    walk: Walk<SegmentMut>,
}

impl Stream for Chunks {
    type Item = Result<Segment>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.walk.poll_next(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.walk.size_hint()
    }
}

impl FusedStream for Chunks {
    fn is_terminated(&self) -> bool {
        self.walk.is_terminated()
    }
}

impl Stream for ChunksMut {
    type Item = Result<SegmentMut>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.walk.poll_next(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.walk.size_hint()
    }
}

impl FusedStream for ChunksMut {
    fn is_terminated(&self) -> bool {
        self.walk.is_terminated()
    }
}

impl fmt::Debug for Chunks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.walk.debug("Chunks", f)
    }
}

impl fmt::Debug for ChunksMut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.walk.debug("ChunksMut", f)
    }
}

/// Requests the lease of one chunk: `(file, offset, len)`.
type Request<T> = fn(MappedFile, u64, u64) -> BoxFuture<'static, Result<T>>;

/// The walk over a range shared by both streams, generic in the lease.
struct Walk<T> {
    file: MappedFile,
    /// Offset of the next chunk to request.
    next: u64,
    /// End of the range (exclusive).
    end: u64,
    chunk_len: u64,
    /// The item to yield before anything else: the range or the chunk
    /// length was invalid. The walk ends after it.
    invalid: Option<Error>,
    /// The one outstanding lease request. Requested by a poll, so that no
    /// lease is held for a chunk the consumer has not asked for.
    pending: Option<BoxFuture<'static, Result<T>>>,
    /// The last item (a final chunk or an error) has been yielded.
    done: bool,
    request: Request<T>,
}

impl<T> Walk<T> {
    fn new(
        file: &MappedFile,
        range: impl RangeBounds<u64>,
        chunk_len: u64,
        request: Request<T>,
    ) -> Walk<T> {
        let checked = if chunk_len == 0 {
            Err(Error::InvalidArgument {
                what: "chunk_len must be at least 1",
            })
        } else {
            resolve(&range, file.len())
        };
        let ((next, end), invalid) = match checked {
            Ok(span) => (span, None),
            Err(err) => ((0, 0), Some(err)),
        };
        Walk {
            file: file.clone(),
            next,
            end,
            chunk_len,
            invalid,
            pending: None,
            done: false,
            request,
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        if let Some(err) = self.invalid.take() {
            self.done = true;
            return Poll::Ready(Some(Err(err)));
        }
        if self.done {
            return Poll::Ready(None);
        }
        let pending = match &mut self.pending {
            Some(pending) => pending,
            None if self.next >= self.end => {
                self.done = true;
                return Poll::Ready(None);
            }
            None => {
                let len = self.chunk_len.min(self.end - self.next);
                let offset = self.next;
                // `next + len <= end`, so this cannot overflow; the position
                // moves on now because a failed request ends the walk anyway.
                self.next += len;
                self.pending
                    .insert((self.request)(self.file.clone(), offset, len))
            }
        };
        let result = std::task::ready!(pending.as_mut().poll(cx));
        self.pending = None;
        if result.is_err() {
            self.done = true;
        }
        Poll::Ready(Some(result))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.invalid.is_some() {
            return (1, Some(1));
        }
        if self.done {
            return (0, Some(0));
        }
        // A failed request ends the stream early: only an upper bound.
        let left = (self.end - self.next).div_ceil(self.chunk_len);
        let upper = usize::try_from(left)
            .ok()
            .and_then(|n| n.checked_add(usize::from(self.pending.is_some())));
        (usize::from(self.pending.is_some()), upper)
    }

    fn is_terminated(&self) -> bool {
        self.done
    }

    fn debug(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(name)
            .field("next", &self.next)
            .field("end", &self.end)
            .field("chunk_len", &self.chunk_len)
            .field("pending", &self.pending.is_some())
            .field("done", &self.done)
            .finish()
    }
}

/// The half-open span `[start, end)` that `range` names in a file of
/// `file_len` bytes, checked: the start is not after the end, and the end
/// neither overflows `u64` nor passes the end of the file.
pub(super) fn resolve(range: &impl RangeBounds<u64>, file_len: u64) -> Result<(u64, u64)> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        // `(u64::MAX, ..)` starts past every possible file.
        Bound::Excluded(&s) => s.checked_add(1).ok_or(Error::OutOfBounds {
            offset: s,
            len: 0,
            file_len,
        })?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.checked_add(1).ok_or(Error::OutOfBounds {
            offset: start,
            // The true length, 2^64 - start, saturated.
            len: (u64::MAX - start).saturating_add(1),
            file_len,
        })?,
        Bound::Excluded(&e) => e,
        Bound::Unbounded => file_len.max(start),
    };
    if start > end {
        return Err(Error::ReversedRange { start, end });
    }
    crate::region::check(start, end - start, file_len)?;
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_like_slices() {
        assert_eq!(resolve(&(..), 100).unwrap(), (0, 100));
        assert_eq!(resolve(&(10..), 100).unwrap(), (10, 100));
        assert_eq!(resolve(&(100..), 100).unwrap(), (100, 100));
        assert_eq!(resolve(&(..=9), 100).unwrap(), (0, 10));
        assert_eq!(resolve(&(5..5), 100).unwrap(), (5, 5));
        assert_eq!(resolve(&(100..100), 100).unwrap(), (100, 100));
        let excluded = (Bound::Excluded(4), Bound::Included(9));
        assert_eq!(resolve(&excluded, 100).unwrap(), (5, 10));
    }

    #[test]
    #[allow(clippy::reversed_empty_ranges)] // reversed on purpose
    fn bad_ranges_name_their_numbers() {
        assert!(matches!(
            resolve(&(10..5), 100),
            Err(Error::ReversedRange { start: 10, end: 5 })
        ));
        assert!(matches!(
            resolve(&(10..=4), 100),
            Err(Error::ReversedRange { start: 10, end: 5 })
        ));
        assert!(matches!(
            resolve(&(90..101), 100),
            Err(Error::OutOfBounds {
                offset: 90,
                len: 11,
                file_len: 100
            })
        ));
        // An open end past the file is past the file, not reversed.
        assert!(matches!(
            resolve(&(101..), 100),
            Err(Error::OutOfBounds {
                offset: 101,
                len: 0,
                file_len: 100
            })
        ));
        assert!(matches!(
            resolve(&(0..=u64::MAX), 100),
            Err(Error::OutOfBounds {
                offset: 0,
                len: u64::MAX,
                file_len: 100
            })
        ));
        assert!(matches!(
            resolve(&(10..=u64::MAX), 100),
            Err(Error::OutOfBounds {
                offset: 10,
                len,
                file_len: 100
            }) if len == u64::MAX - 9
        ));
        let past_max = (Bound::Excluded(u64::MAX), Bound::Unbounded);
        assert!(matches!(
            resolve(&past_max, 100),
            Err(Error::OutOfBounds {
                offset: u64::MAX,
                ..
            })
        ));
    }
}
