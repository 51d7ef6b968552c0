//! Memory hints: the public types of the calls that tell the kernel how a
//! mapping will be used ([`Advice`], [`Progress`], [`PrewarmProgress`]),
//! and the requests those calls send the actor ([`Hint`]).
//!
//! The calls themselves are `MappedFile` methods (`src/handle/hints.rs`);
//! the actor serves them in `src/actor/hints.rs`; the syscalls are in
//! `src/sys/hints.rs`.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{BoxStream, FusedStream, Stream};

use crate::error::{Error, Result};
use crate::request::Reply;

/// How the bytes of a range will be used, for
/// [`MappedFile::advise`](crate::MappedFile::advise) (`madvise(2)`).
///
/// Every advice is a hint: the kernel may ignore it, and none changes a
/// byte of the file. Only [`DontNeed`](Advice::DontNeed) changes what is
/// resident, and it is refused where it could change bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Advice {
    /// No particular pattern (`MADV_NORMAL`): the default read-ahead.
    Normal,
    /// Read in order, each byte once (`MADV_SEQUENTIAL`): aggressive
    /// read-ahead, and pages behind the reader may be dropped early.
    Sequential,
    /// Read in no order (`MADV_RANDOM`): no read-ahead.
    Random,
    /// Needed soon (`MADV_WILLNEED`): start reading the pages in now,
    /// without waiting. [`MappedFile::prewarm`](crate::MappedFile::prewarm)
    /// waits until they are in.
    WillNeed,
    /// Not needed for a while (`MADV_DONTNEED`): the pages leave this
    /// mapping; the next access faults them in again from the page cache
    /// (dirty pages stay in the page cache and are written back as usual,
    /// so no byte changes). Refused with [`Error::WouldDiscard`] on
    /// writable copy-on-write and anonymous mappings, whose memory is the
    /// only copy of their bytes. Fails with `EINVAL` on locked pages
    /// ([`MappedFile::lock`](crate::MappedFile::lock)).
    DontNeed,
}

/// How far [`MappedFile::prewarm_progress`](crate::MappedFile::prewarm_progress)
/// has come: `done` of `total` bytes of the range are faulted in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the range faulted in so far.
    pub done: u64,
    /// Length of the range.
    pub total: u64,
}

/// The stream of [`MappedFile::prewarm_progress`](crate::MappedFile::prewarm_progress):
/// one [`Progress`] item per step, the last with `done == total`, or an
/// error item (after which the stream ends).
///
/// # Cancel safety
///
/// `next()` is cancel safe: dropping its future (or the stream) stops the
/// prewarm after the step in flight, which completes in the background;
/// nothing is left queued, and no byte is changed either way.
#[must_use = "streams do nothing unless polled"]
pub struct PrewarmProgress {
    inner: BoxStream<'static, Result<Progress>>,
    done: bool,
}

impl PrewarmProgress {
    pub(crate) fn new(inner: BoxStream<'static, Result<Progress>>) -> PrewarmProgress {
        PrewarmProgress { inner, done: false }
    }
}

impl std::fmt::Debug for PrewarmProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrewarmProgress")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Stream for PrewarmProgress {
    type Item = Result<Progress>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let next = self.inner.as_mut().poll_next(cx);
        if let Poll::Ready(None) = next {
            self.done = true;
        }
        next
    }
}

impl FusedStream for PrewarmProgress {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

/// A page-lock request (`lock`, `unlock`, `lock_all`, `unlock_all`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LockOp {
    Lock { offset: u64, len: u64 },
    Unlock { offset: u64, len: u64 },
    LockAll,
    UnlockAll,
}

impl LockOp {
    pub(crate) fn op(self) -> &'static str {
        match self {
            LockOp::Lock { .. } => "lock",
            LockOp::Unlock { .. } => "unlock",
            LockOp::LockAll => "lock_all",
            LockOp::UnlockAll => "unlock_all",
        }
    }
}

/// The hint requests: none changes a byte, none takes a lease, so none
/// waits for leases or closes the direct path.
pub(crate) enum Hint {
    /// `sync_file_range(SYNC_FILE_RANGE_WRITE)`: `None` is the whole file.
    ScheduleFlush {
        range: Option<(u64, u64)>,
        reply: Reply<()>,
    },
    Advise {
        offset: u64,
        len: u64,
        advice: Advice,
        reply: Reply<()>,
    },
    Lock {
        op: LockOp,
        reply: Reply<()>,
    },
    /// Whether the current generation is backed by huge pages now.
    HugeBacked {
        reply: Reply<bool>,
    },
}

impl Hint {
    pub(crate) fn op(&self) -> &'static str {
        match self {
            Hint::ScheduleFlush { range: None, .. } => "schedule_flush",
            Hint::ScheduleFlush { range: Some(_), .. } => "schedule_flush_range",
            Hint::Advise { .. } => "advise",
            Hint::Lock { op, .. } => op.op(),
            Hint::HugeBacked { .. } => "is_hugepage_backed",
        }
    }

    pub(crate) fn abandoned(&self) -> bool {
        match self {
            Hint::ScheduleFlush { reply, .. }
            | Hint::Advise { reply, .. }
            | Hint::Lock { reply, .. } => reply.is_closed(),
            Hint::HugeBacked { reply } => reply.is_closed(),
        }
    }

    pub(crate) fn fail(self, err: Error) {
        match self {
            Hint::ScheduleFlush { reply, .. }
            | Hint::Advise { reply, .. }
            | Hint::Lock { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Hint::HugeBacked { reply } => {
                let _ = reply.send(Err(err));
            }
        }
    }
}
