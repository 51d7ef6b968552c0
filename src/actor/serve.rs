//! Admission: every request from the channel is checked against the lease
//! table and then served now, queued until its bytes are free, or refused
//! (a `try_` call, a bad range, a closing mapping).

use std::panic::{catch_unwind, AssertUnwindSafe};

use tracing::Instrument;

use super::append::AppendRequest;
use super::{Actor, OpenId};
use crate::error::{Error, Result};
use crate::lease_table::{Access, Footprint};
use crate::region::ByteRange;
use crate::request::{Envelope, Inline, OnConflict, Owner, Reply, Request, ResizeKind};
use crate::sys::gate::Hold;

/// A request that passed the channel and is served now or later: every
/// request but a close, which the actor handles at once.
pub(super) enum Admitted {
    Inline(Inline),
    Resize {
        new_len: u64,
        kind: ResizeKind,
        reply: Reply<()>,
    },
    Append(Box<AppendRequest>),
}

impl Admitted {
    fn op(&self) -> &'static str {
        match self {
            Admitted::Inline(op) => op.op(),
            Admitted::Resize { .. } => "resize",
            Admitted::Append(_) => "append",
        }
    }

    fn is_abandoned(&self) -> bool {
        match self {
            Admitted::Inline(op) => op.abandoned(),
            Admitted::Resize { reply, .. } => reply.is_closed(),
            Admitted::Append(append) => append.abandoned(),
        }
    }

    fn fail(self, err: Error) {
        match self {
            Admitted::Inline(op) => op.fail(err),
            Admitted::Resize { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Admitted::Append(append) => append.fail(err),
        }
    }
}

/// What the envelope says about a request, besides the request.
struct Incoming {
    on_conflict: OnConflict,
    span: tracing::Span,
    owner: Owner,
    open: OpenId,
    id: u64,
}

/// A request waiting for its bytes, with what is needed to serve it later.
pub(crate) struct Pending {
    admitted: Admitted,
    span: tracing::Span,
    owner: Owner,
    /// The open it came through.
    open: OpenId,
}

impl Pending {
    /// A request the actor queues itself (the rest of a batch, an append
    /// keeping its place).
    pub(super) fn new(
        admitted: Admitted,
        span: tracing::Span,
        owner: Owner,
        open: OpenId,
    ) -> Pending {
        Pending {
            admitted,
            span,
            owner,
            open,
        }
    }

    /// Answers the waiting request with an error.
    pub(super) fn fail(self, err: Error) {
        self.admitted.fail(err);
    }

    /// Whether it came through open `id`.
    pub(super) fn is_from(&self, id: OpenId) -> bool {
        self.open == id
    }
}

impl Actor {
    /// Serves one request from the channel, then drops the hold its handle
    /// took on the direct path, after the actor took its own if the request
    /// left a lease or a waiter behind (so the path never opens between).
    pub(super) async fn serve(&mut self, open: OpenId, envelope: Envelope) {
        let Envelope {
            request,
            on_conflict,
            hold,
            span,
            owner,
            id,
        } = envelope;
        let pending = Incoming {
            on_conflict,
            span,
            owner,
            open,
            id,
        };
        self.admit(request, pending, hold.as_ref()).await;
        self.sync_hold();
        drop(hold);
    }

    async fn admit(&mut self, request: Request, incoming: Incoming, hold: Option<&Hold>) {
        if request.abandoned() {
            return;
        }
        let Some(index) = self.index_of(incoming.open) else {
            return request.fail(Error::Closed);
        };
        if self.opens[index].is_ending() {
            request.fail(Error::Closed);
            return;
        }
        let admitted = match request {
            Request::Close { reply } => return self.close(index, reply),
            Request::Inline(op) => Admitted::Inline(op),
            Request::Resize {
                new_len,
                kind,
                reply,
            } => Admitted::Resize {
                new_len,
                kind,
                reply,
            },
            Request::Append(append) => Admitted::Append(append),
        };
        let footprint = match self.footprint(index, &admitted) {
            Ok(footprint) => footprint,
            Err(err) => return admitted.fail(err),
        };
        let Incoming {
            on_conflict,
            span,
            owner,
            open,
            id,
        } = incoming;
        let pending = Pending {
            admitted,
            span,
            owner,
            open,
        };
        match footprint {
            Some(fp) if !self.table.admits(&fp, &owner) => {
                self.wait_or_refuse(fp, id, pending, on_conflict)
            }
            _ => self.execute(pending, hold).await,
        }
    }

    /// Queues a request whose bytes are taken, or refuses a `try_` call.
    pub(super) fn wait_or_refuse(
        &mut self,
        fp: Footprint,
        id: u64,
        pending: Pending,
        on_conflict: OnConflict,
    ) {
        if on_conflict == OnConflict::Fail {
            let op = pending.admitted.op();
            pending.admitted.fail(Error::Conflict {
                op,
                offset: fp.range.start,
                len: fp.range.len(),
            });
            return;
        }
        if self.table.held_by(&fp, &pending.owner) {
            let _g = pending.span.enter();
            tracing::warn!(
                op = pending.admitted.op(),
                offset = fp.range.start,
                "request waits on a lease taken by the same task; \
                 if that task still holds it, this never completes (use the try_ variant)"
            );
        }
        self.table.enqueue(fp, id, pending);
    }

    /// Serves every queued request that has become free, in order, then
    /// lets the direct path open again if nothing is leased or waiting.
    pub(super) async fn serve_ready(&mut self) {
        if self.table.has_waiting() {
            // Queued requests carry no hold of their own: this one covers
            // the bytes they touch until they are served.
            let hold = self.gate.hold();
            self.table.begin_pass();
            while let Some(ready) = self.table.next_ready(|p| p.admitted.is_abandoned()) {
                self.execute(ready, Some(&hold)).await;
            }
        }
        self.sync_hold();
    }

    /// The bytes a request touches, or `None` for requests that touch none
    /// (flush, prewarm). Errors are immediate refusals (an overflowing range).
    fn footprint(&self, index: usize, admitted: &Admitted) -> Result<Option<Footprint>> {
        let file_len = self.opens[index].current.len();
        let range = |offset: u64, len: u64| {
            ByteRange::new(offset, len).ok_or(Error::OutOfBounds {
                offset,
                len,
                file_len,
            })
        };
        let fp = match admitted {
            Admitted::Inline(Inline::Load { offset, len, .. }) => {
                Footprint::new(range(*offset, *len)?, Access::Read)
            }
            Admitted::Inline(Inline::Update { offset, data, .. }) => {
                Footprint::new(range(*offset, data.len() as u64)?, Access::Write)
            }
            Admitted::Inline(Inline::Modify { offset, len, .. }) => {
                Footprint::new(range(*offset, *len)?, Access::Write)
            }
            Admitted::Inline(Inline::Lease {
                offset,
                len,
                access,
                ..
            }) => Footprint::new(range(*offset, *len)?, *access),
            Admitted::Resize { new_len, kind, .. } => {
                let cut = match kind {
                    ResizeKind::Reset => 0,
                    ResizeKind::Exact => (*new_len).min(file_len),
                    // Never cuts: it only ever grows.
                    ResizeKind::AtLeast => file_len,
                };
                Footprint::new(ByteRange::tail(cut), Access::Write)
            }
            // A batch checks each item as it goes, an append the bytes at
            // its cursor once reserved.
            Admitted::Inline(
                Inline::Flush { .. } | Inline::Populate { .. } | Inline::Hint(_) | Inline::Batch(_),
            )
            | Admitted::Append(_) => return Ok(None),
        };
        Ok(Some(fp))
    }

    /// Runs an admitted request. `hold` (the request's, or the one
    /// `serve_ready` took) keeps direct operations out while the actor
    /// touches bytes.
    async fn execute(&mut self, pending: Pending, hold: Option<&Hold>) {
        let Pending {
            admitted,
            span,
            owner,
            open,
        } = pending;
        let Some(index) = self.index_of(open) else {
            return admitted.fail(Error::Closed);
        };
        let needs_gate = match &admitted {
            Admitted::Resize { .. } | Admitted::Append(_) => true,
            Admitted::Inline(op) => op.touches_bytes(),
        };
        // No direct operation may be in flight while the actor touches
        // bytes, grants a lease or cuts a tail; the hold keeps new ones out
        // until the request is served (`own` lives to the end of this call).
        let own = (needs_gate && hold.is_none()).then(|| self.gate.hold());
        if let Some(hold) = hold.or(own.as_ref()).filter(|_| needs_gate) {
            self.gate.drain(hold).await;
        }
        match admitted {
            Admitted::Resize {
                new_len,
                kind,
                reply,
            } => {
                let result = self.resize(index, new_len, kind).instrument(span).await;
                let _ = reply.send(result);
            }
            Admitted::Append(append) => {
                // Boxed: its future (a grow, a pool copy) would otherwise
                // grow every actor's task, appending or not (P7).
                Box::pin(self.append(index, append, owner))
                    .instrument(span)
                    .await;
            }
            Admitted::Inline(op) => {
                let _enter = span.enter();
                let name = op.op();
                // A bug in serving one request must fail that request only;
                // the reply sender it owned is dropped, which its caller
                // reports as `Panicked` (the actor is still alive).
                if catch_unwind(AssertUnwindSafe(|| self.serve_inline(index, op, owner))).is_err() {
                    tracing::error!(op = name, "request panicked inside the actor");
                }
            }
        }
    }
}
