//! The requests behind the streaming types of `crate::stream`: a sink's
//! batch of updates and an appender's records. The types themselves live
//! there; this is their one door to the actor.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::{request_span, MappedFile};
use crate::actor::append::{AppendRequest, Appended, Cursor};
use crate::actor::batch::{Batch, BatchDone, Line};
use crate::actor::shared::Shared;
use crate::error::{Error, Result};
use crate::lease_table::Notice;
use crate::request::{Envelope, Inline, OnConflict, Owner, Request};

impl MappedFile {
    /// The facts the actor shares with handles (its feed of changes).
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Sends `items` to be applied in order, as one request of `line`;
    /// resolves once the request is in the actor's channel, to the future
    /// of its answer (so that a sink can send its next batch meanwhile).
    ///
    /// # Cancel safety
    ///
    /// Dropped before it resolves, nothing was sent. The answer's future,
    /// dropped, tells the actor, as any abandoned call does.
    pub(crate) async fn send_batch(
        &self,
        items: Vec<(u64, Bytes)>,
        line: Weak<Line>,
    ) -> Result<Answer<BatchDone>> {
        if self.shared.is_closed() {
            return Err(Error::Closed);
        }
        let first = items.first().map_or(0, |(offset, _)| *offset);
        let (reply, answer) = oneshot::channel();
        let request = Request::Inline(Inline::Batch(Batch::new(items, line, reply)));
        // As in `call`: the hold keeps later direct operations from
        // overtaking the batch.
        let hold = Some(self.shared.gate().hold());
        let id = super::next_request_id();
        let envelope = Envelope {
            request,
            on_conflict: OnConflict::Wait,
            hold,
            span: request_span("update_sink", first, 0),
            owner: Owner::current(),
            id,
        };
        self.tx.send(envelope).await.map_err(|_| Error::Closed)?;
        Ok(Answer {
            file: self.clone(),
            answer,
            id,
            armed: true,
        })
    }

    /// Appends `records` back to back at `cursor`, in one request.
    pub(crate) async fn append_records(
        &self,
        cursor: &Arc<Cursor>,
        records: Vec<Bytes>,
        grow_step: u64,
        durable: bool,
    ) -> Result<Appended> {
        let len: u64 = records.iter().map(|r| r.len() as u64).sum();
        let cursor = Arc::clone(cursor);
        self.call(
            "append",
            OnConflict::Wait,
            request_span("append", cursor.position(), len),
            |reply| {
                Request::Append(Box::new(AppendRequest::new(
                    cursor, records, grow_step, durable, reply,
                )))
            },
        )
        .await
    }
}

/// The answer to a request already sent ([`MappedFile::send_batch`]). If
/// dropped before it resolves, it tells the actor, so that nothing it
/// queued is left waiting for a caller that is gone.
pub(crate) struct Answer<T> {
    file: MappedFile,
    answer: oneshot::Receiver<Result<T>>,
    id: u64,
    armed: bool,
}

impl<T> Future for Answer<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let got = std::task::ready!(Pin::new(&mut self.answer).poll(cx));
        self.armed = false;
        Poll::Ready(match got {
            Ok(result) => result,
            // Dropped unanswered: the actor stopped, or serving panicked.
            Err(_) if self.file.is_closed() => Err(Error::Closed),
            Err(_) => Err(Error::Panicked { op: "update_sink" }),
        })
    }
}

impl<T> Drop for Answer<T> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.file.shared.notices.send(Notice::Abandoned(self.id));
        }
    }
}
