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
    /// The one poll of every call future: at the first, spends the budget
    /// as the direct path does ([`budget_due`]; `Pending` when the task
    /// must yield first) and runs `direct`, which answers the call (`None`)
    /// or returns the general path's future to poll from then on.
    #[inline]
    fn poll_call(
        &mut self,
        cx: &mut Context<'_>,
        direct: impl FnOnce() -> Option<BoxFuture<'a, Result<()>>>,
    ) -> Poll<Result<()>> {
        if let Step::First = self {
            if budget_due() {
                let coop = ready!(tokio::task::coop::poll_proceed(cx));
                coop.made_progress();
            }
            match direct() {
                None => {
                    *self = Step::Done;
                    return Poll::Ready(Ok(()));
                }
                Some(general) => *self = Step::General(general),
            }
        }
        match self {
            Step::General(general) => {
                let answer = ready!(general.as_mut().poll(cx));
                *self = Step::Done;
                Poll::Ready(answer)
            }
            Step::Done => panic!("a call future polled after it completed"),
            Step::First => unreachable!("the direct path ran first"),
        }
    }
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

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        let (file, offset, data) = (this.file, this.offset, this.data);
        this.step.poll_call(cx, || {
            if file.update_fast(offset, data) {
                return None;
            }
            Some(Box::pin(async move {
                file.write_parts("update", offset, Source::Slices(&[data]), OnConflict::Wait)
                    .await
            }))
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

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        let (file, offset, buf) = (this.file, this.offset, &mut this.buf);
        this.step.poll_call(cx, || {
            let buf = buf.take().expect("the buffer until the first poll");
            if file.load_fast(offset, buf) {
                return None;
            }
            Some(Box::pin(async move {
                file.read_into("load", offset, buf, OnConflict::Wait).await
            }))
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

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        let (file, offset, data) = (this.file, this.offset, &mut this.data);
        this.step.poll_call(cx, || {
            let data = data.take().expect("the bytes until the first poll");
            if file.update_fast(offset, &data) {
                return None;
            }
            Some(Box::pin(async move {
                file.write_parts("update", offset, Source::Owned(data), OnConflict::Wait)
                    .await
            }))
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
