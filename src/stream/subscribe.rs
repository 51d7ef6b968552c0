//! [`Subscription`]: the changes of a range of the mapping, as a stream.

use std::collections::VecDeque;
use std::fmt;
use std::ops::RangeBounds;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::stream::{FusedStream, Stream};

use super::chunks::resolve;
use super::inbox::{Segment, Subscriber};
use crate::actor::shared::Shared;
use crate::error::{Error, Result};
use crate::MappedFile;

/// What kind of write made a [`Change`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChangeKind {
    /// An [`update`](MappedFile::update) (or `try_update`), an item of an
    /// [`UpdateSink`](crate::UpdateSink), a write of a
    /// [`Writer`](crate::Writer).
    Update,
    /// A [`modify`](MappedFile::modify).
    Modify,
    /// A [`SegmentMut`](crate::SegmentMut) that was written through, when
    /// it was dropped: one change for its whole range.
    SegmentMut,
    /// A record of an [`Appender`](crate::Appender).
    Append,
    /// The file's length changed. The change covers the bytes between the
    /// two lengths, and is reported to every subscription of the mapping,
    /// whatever its range.
    Resize {
        /// Length before.
        old_len: u64,
        /// Length after.
        new_len: u64,
    },
}

/// One change of the mapping, as a [`Subscription`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    seq: u64,
    offset: u64,
    len: u64,
    kind: ChangeKind,
    /// The new bytes inside the subscription's range, and where they start.
    data: Option<(u64, Bytes)>,
}

impl Change {
    pub(crate) fn new(
        seq: u64,
        offset: u64,
        len: u64,
        kind: ChangeKind,
        data: Option<(u64, Bytes)>,
    ) -> Change {
        Change {
            seq,
            offset,
            len,
            kind,
            data,
        }
    }

    /// The change's number in its mapping: increasing (by one per change
    /// reported to any subscription of the mapping) in the order the
    /// changes were applied. Changes to overlapping bytes are numbered in
    /// the order they were applied; a gap in a subscription's numbers is a
    /// change to bytes outside its range.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Offset of the first changed byte. A change that is only partly
    /// inside the subscription's range is reported whole.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Number of changed bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no byte changed (a zero-length write).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// What made the change.
    pub fn kind(&self) -> ChangeKind {
        self.kind
    }

    /// For a [`subscribe_with_data`](MappedFile::subscribe_with_data)
    /// subscription: the new bytes of the part of the change inside the
    /// subscription's range (starting at [`data_offset`](Self::data_offset)).
    /// `None` for a plain subscription and for a resize.
    pub fn data(&self) -> Option<&Bytes> {
        self.data.as_ref().map(|(_, bytes)| bytes)
    }

    /// The file offset of the first byte of [`data`](Self::data).
    pub fn data_offset(&self) -> Option<u64> {
        self.data.as_ref().map(|(at, _)| *at)
    }
}

impl MappedFile {
    /// The changes made to `range` of the mapping from now on, as a stream:
    /// see [`Subscription`].
    ///
    /// `range` means what it means for a slice (`0..4096` excludes 4096;
    /// an open end is the length of the file now) and must be inside the
    /// file and not empty. Registering is immediate: every change applied
    /// after this returns is reported.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mmap_actor::Result<()> {
    /// use futures::StreamExt;
    /// use mmap_actor::ChangeKind;
    /// # let dir = tempfile::tempdir().unwrap();
    /// let file = mmap_actor::MappedFile::create(dir.path().join("s"), 8192).await?;
    /// let mut changes = file.subscribe(0..4096);
    /// file.update(100, b"hello".to_vec()).await?;
    /// file.update(5000, b"elsewhere".to_vec()).await?; // outside the range
    /// file.modify(4090, 10, |b| b.fill(1)).await?;     // partly inside
    /// let first = changes.next().await.unwrap()?;
    /// assert_eq!((first.offset(), first.len(), first.kind()), (100, 5, ChangeKind::Update));
    /// let second = changes.next().await.unwrap()?;
    /// assert_eq!((second.offset(), second.len(), second.kind()), (4090, 10, ChangeKind::Modify));
    /// assert!(second.seq() > first.seq());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The stream yields one error item and ends: [`Error::ReversedRange`]
    /// for a range that starts after its end, [`Error::InvalidArgument`] for
    /// an empty one, [`Error::OutOfBounds`] for one past the end of the file
    /// (or past `u64::MAX`), [`Error::Closed`] if the mapping is closed.
    /// While it runs, [`Error::Lagged`] items say that changes were dropped
    /// because the subscription fell behind.
    ///
    /// # Cancel safety
    ///
    /// See [`Subscription`].
    pub fn subscribe(&self, range: impl RangeBounds<u64>) -> Subscription {
        Subscription::new(self, &range, false)
    }

    /// [`subscribe`](Self::subscribe), with the new bytes of each change
    /// ([`Change::data`]), cut to the range.
    ///
    /// The bytes of an update, a sink item or an append are shared with the
    /// write (no copy); those of a [`modify`](Self::modify) or a
    /// [`SegmentMut`](crate::SegmentMut) are copied out of the mapping by
    /// the writer, the part inside data subscriptions only.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mmap_actor::Result<()> {
    /// use futures::StreamExt;
    /// # let dir = tempfile::tempdir().unwrap();
    /// let file = mmap_actor::MappedFile::create(dir.path().join("d"), 4096).await?;
    /// let mut changes = file.subscribe_with_data(10..20);
    /// file.update(0, vec![7u8; 15]).await?;
    /// let change = changes.next().await.unwrap()?;
    /// assert_eq!((change.offset(), change.len()), (0, 15));
    /// assert_eq!(change.data_offset(), Some(10));
    /// assert_eq!(&change.data().unwrap()[..], &[7u8; 5]);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`subscribe`](Self::subscribe).
    ///
    /// # Cancel safety
    ///
    /// See [`Subscription`].
    pub fn subscribe_with_data(&self, range: impl RangeBounds<u64>) -> Subscription {
        Subscription::new(self, &range, true)
    }
}

/// The changes of a range of a mapping, in the order they were applied;
/// made by [`MappedFile::subscribe`] and
/// [`MappedFile::subscribe_with_data`].
///
/// - **What is reported**: every change applied after the subscription was
///   made that touches its range, from every path through this mapping
///   (every clone of its [`MappedFile`]): updates (small ones too: while a
///   subscription covers their bytes they go through the actor, which
///   reports them), [`modify`](MappedFile::modify), the items of an
///   [`UpdateSink`](crate::UpdateSink), [`Writer`](crate::Writer) writes,
///   appends, a [`SegmentMut`](crate::SegmentMut) written through and then
///   dropped (one change for its range), and resizes (reported to every
///   subscription).
/// - **What is not**: writes through [`AtomicView`](crate::AtomicView)s
///   (shared memory, by design: they are not seen one by one), writes
///   through another open of the file (another `MappedFile::open*` call)
///   or another process.
/// - **Order**: [`Change::seq`] increases in the order the changes were
///   applied.
/// - **Falling behind**: the subscription buffers at most
///   [`SUBSCRIPTION_CAPACITY`](crate::stream::SUBSCRIPTION_CAPACITY)
///   changes. When more arrive before it reads them, the oldest are dropped
///   and the next item is `Err(`[`Error::Lagged`]` { missed })`; the stream
///   then goes on with the oldest change still held. Never a silent gap,
///   and a slow subscriber never slows a writer or grows without bound.
/// - **End**: the stream ends (`None`) once the mapping is closed (or its
///   actor stops) and the changes it holds are taken.
///
/// It is `Send`, `Unpin` and a [`FusedStream`]; dropping it unsubscribes.
/// While it lives, small updates of the bytes it covers (and of the bytes
/// between the ranges of the mapping's subscriptions) cost a round trip to
/// the actor instead of a direct copy; updates of other bytes do not.
///
/// # Cancel safety
///
/// Cancel safe: a dropped `next()` future loses nothing (a change is taken
/// out of the subscription only when it is yielded).
pub struct Subscription {
    shared: Arc<Shared>,
    sub: Option<Arc<Subscriber>>,
    /// What was taken from the inbox, not yet yielded.
    taken: VecDeque<Segment>,
    /// An error to yield, after which the stream ends.
    invalid: Option<Error>,
    done: bool,
}

impl Subscription {
    fn new(file: &MappedFile, range: &impl RangeBounds<u64>, with_data: bool) -> Subscription {
        let shared = Arc::clone(file.shared());
        let checked = resolve(range, file.len()).and_then(|(start, end)| {
            if start == end {
                return Err(Error::InvalidArgument {
                    what: "a subscription range must not be empty",
                });
            }
            if file.is_closed() {
                return Err(Error::Closed);
            }
            shared
                .feed
                .subscribe(start, end, with_data)
                .ok_or(Error::Closed)
        });
        let (sub, invalid) = match checked {
            Ok(sub) => (Some(sub), None),
            Err(err) => (None, Some(err)),
        };
        Subscription {
            shared,
            sub,
            taken: VecDeque::new(),
            invalid,
            done: false,
        }
    }
}

impl Stream for Subscription {
    type Item = Result<Change>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.invalid.is_some() {
            this.done = true;
            return Poll::Ready(this.invalid.take().map(Err));
        }
        let Some(sub) = this.sub.as_ref() else {
            return Poll::Ready(None);
        };
        if let Some(change) = sub.take(&mut this.taken) {
            return Poll::Ready(Some(Ok(change)));
        }
        if this.done {
            return Poll::Ready(None);
        }
        let mut inbox = sub.inbox();
        if inbox.missed > 0 {
            let missed = std::mem::take(&mut inbox.missed);
            return Poll::Ready(Some(Err(Error::Lagged { missed })));
        }
        if !inbox.is_empty() {
            // Take the whole inbox at once: one lock per batch of changes.
            inbox.take_all(&mut this.taken);
            drop(inbox);
            if let Some(change) = sub.take(&mut this.taken) {
                return Poll::Ready(Some(Ok(change)));
            }
            // (Held segments always report a change; defensive.)
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if inbox.ended {
            drop(inbox);
            this.done = true;
            return Poll::Ready(None);
        }
        inbox.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match (&self.invalid, self.done) {
            (Some(_), _) => (1, Some(1)),
            (None, true) if self.taken.is_empty() => (0, Some(0)),
            (None, _) => (0, None),
        }
    }
}

impl FusedStream for Subscription {
    fn is_terminated(&self) -> bool {
        self.done && self.taken.is_empty() && self.invalid.is_none()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(sub) = self.sub.take() {
            self.shared.feed.unsubscribe(&sub);
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("subscribed", &self.sub.is_some())
            .field("taken", &self.taken.len())
            .field("done", &self.done)
            .finish()
    }
}
