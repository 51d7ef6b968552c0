//! The futures of the calls a task usually serves itself through the
//! direct path (`update_from`, `load_into`, `update`), written by hand.
//!
//! An `async fn` keeps its arguments, its state and the state of every
//! future it awaits in its own frame: a dozen stores before the first byte
//! is copied. A loop of small random updates is bound by those stores, not
//! by the copy: each update's store into the mapping waits for its cache
//! line, and every later store of the thread queues behind it, so the more
//! stores a call makes, the fewer calls the processor can overlap
//! (`docs/PERFORMANCE.md`, P1). These futures hold only their arguments;
//! a call the direct path refuses boxes the general path's future at its
//! first poll.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;

use super::direct::budget_due;
use super::write::Source;
use super::MappedFile;
use crate::error::Result;
use crate::request::OnConflict;

/// Where a hand-written call future is.
enum Step<'a> {
    /// Not polled yet: the direct path may serve it.
    First,
    /// The general path, boxed.
    General(BoxFuture<'a, Result<()>>),
    /// Answered.
    Done,
}

impl<'a> Step<'a> {
    /// The start of every call future's poll, inlined into the caller:
    /// `Ready(true)` at the first poll, when the direct path may be tried
    /// (after spending a unit of the task's budget when one is due,
    /// [`budget_due`]; `Pending` when the task must yield first),
    /// `Ready(false)` later. What follows the direct path is out of line
    /// ([`poll_general`](Self::poll_general)), so the inline part stays a
    /// few instructions in the caller's loop: the fewer instructions a
    /// call takes, the more calls' cache misses the processor overlaps
    /// (`docs/PERFORMANCE.md`, P1).
    #[inline(always)]
    fn poll_first(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        match self {
            Step::First => {
                if budget_due() {
                    ready!(spend_unit(cx));
                }
                Poll::Ready(true)
            }
            _ => Poll::Ready(false),
        }
    }

    /// The general path, out of line: at the first poll (the direct path
    /// refused the call), `general` makes its future, boxed; it is polled
    /// from then on.
    #[cold]
    #[inline(never)]
    fn poll_general(
        &mut self,
        cx: &mut Context<'_>,
        general: &mut dyn FnMut() -> BoxFuture<'a, Result<()>>,
    ) -> Poll<Result<()>> {
        if let Step::First = self {
            *self = Step::General(general());
        }
        match self {
            Step::General(future) => {
                let answer = ready!(future.as_mut().poll(cx));
                *self = Step::Done;
                Poll::Ready(answer)
            }
            Step::Done => panic!("a call future polled after it completed"),
            Step::First => unreachable!("the general path was made"),
        }
    }
}

/// Spends a unit of the task's scheduling budget (`Pending` when the task
/// must yield first), out of line: one direct call in
/// [`BUDGET_EVERY`](super::direct) comes here.
#[cold]
#[inline(never)]
fn spend_unit(cx: &mut Context<'_>) -> Poll<()> {
    let coop = ready!(tokio::task::coop::poll_proceed(cx));
    coop.made_progress();
    Poll::Ready(())
}

/// The future of [`MappedFile::update_from`]: `Send` and `Unpin`; it panics
/// if polled again after it completed.
#[must_use = "futures do nothing unless polled"]
pub struct UpdateFrom<'a> {
    file: &'a MappedFile,
    offset: u64,
    data: &'a [u8],
    step: Step<'a>,
}

impl<'a> UpdateFrom<'a> {
    pub(super) fn new(file: &'a MappedFile, offset: u64, data: &'a [u8]) -> UpdateFrom<'a> {
        UpdateFrom {
            file,
            offset,
            data,
            step: Step::First,
        }
    }
}

impl Future for UpdateFrom<'_> {
    type Output = Result<()>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        let (file, offset, data) = (this.file, this.offset, this.data);
        if ready!(this.step.poll_first(cx)) && file.update_fast(offset, data) {
            this.step = Step::Done;
            return Poll::Ready(Ok(()));
        }
        this.step.poll_general(cx, &mut || {
            Box::pin(async move {
                file.write_parts("update", offset, Source::Slices(&[data]), OnConflict::Wait)
                    .await
            })
        })
    }
}

impl std::fmt::Debug for UpdateFrom<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateFrom")
            .field("offset", &self.offset)
            .field("len", &self.data.len())
            .finish_non_exhaustive()
    }
}

/// The future of [`MappedFile::load_into`]: `Send` and `Unpin`; it panics
/// if polled again after it completed.
#[must_use = "futures do nothing unless polled"]
pub struct LoadInto<'a> {
    file: &'a MappedFile,
    offset: u64,
    /// The caller's buffer until the general path takes it.
    buf: Option<&'a mut [u8]>,
    step: Step<'a>,
}

impl<'a> LoadInto<'a> {
    pub(super) fn new(file: &'a MappedFile, offset: u64, buf: &'a mut [u8]) -> LoadInto<'a> {
        LoadInto {
            file,
            offset,
            buf: Some(buf),
            step: Step::First,
        }
    }
}

impl Future for LoadInto<'_> {
    type Output = Result<()>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        let (file, offset, buf) = (this.file, this.offset, &mut this.buf);
        if ready!(this.step.poll_first(cx)) {
            let buf = buf.as_deref_mut().expect("the buffer until the first poll");
            if file.load_fast(offset, buf) {
                this.step = Step::Done;
                return Poll::Ready(Ok(()));
            }
        }
        this.step.poll_general(cx, &mut || {
            let buf = buf.take().expect("the buffer until the first poll");
            Box::pin(async move { file.read_into("load", offset, buf, OnConflict::Wait).await })
        })
    }
}

impl std::fmt::Debug for LoadInto<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadInto")
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

/// The future of [`MappedFile::update`]: `Send` and `Unpin`; it panics
/// if polled again after it completed.
#[must_use = "futures do nothing unless polled"]
pub struct Update<'a> {
    file: &'a MappedFile,
    offset: u64,
    /// The bytes until the general path takes them.
    data: Option<Bytes>,
    step: Step<'a>,
}

impl<'a> Update<'a> {
    pub(super) fn new(file: &'a MappedFile, offset: u64, data: Bytes) -> Update<'a> {
        Update {
            file,
            offset,
            data: Some(data),
            step: Step::First,
        }
    }
}

impl Future for Update<'_> {
    type Output = Result<()>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        let (file, offset, data) = (this.file, this.offset, &mut this.data);
        if ready!(this.step.poll_first(cx)) {
            let bytes = data.as_ref().expect("the bytes until the first poll");
            if file.update_fast(offset, bytes) {
                // Dropped here, as the caller would: the call is over.
                *data = None;
                this.step = Step::Done;
                return Poll::Ready(Ok(()));
            }
        }
        this.step.poll_general(cx, &mut || {
            let data = data.take().expect("the bytes until the first poll");
            Box::pin(async move {
                file.write_parts("update", offset, Source::Owned(data), OnConflict::Wait)
                    .await
            })
        })
    }
}

impl std::fmt::Debug for Update<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Update")
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}
