//! The envelope a handle sends its actor: the request, how to reply, and the
//! caller's tracing span.

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::error::Result;
use crate::lease::Grant;

/// Where the actor sends its answer. The caller may be gone by then, so the
/// actor always ignores the send's result.
pub(crate) type Reply<T> = oneshot::Sender<Result<T>>;

/// A closure run on the mapped bytes inside the actor (`MappedFile::modify`).
pub(crate) type Modify = Box<dyn FnOnce(&mut [u8]) + Send + 'static>;

/// What a lease request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LeaseKind {
    /// `Segment`: shared read access.
    Shared,
    /// `SegmentMut`: exclusive read-write access.
    Exclusive,
    /// `AtomicView`: atomic access of the given width in bytes (4 or 8).
    Atomic(u8),
}

/// One operation on the mapping. Variants mirror `MappedFile` methods;
/// `reply` is always the last field.
pub(crate) enum Request {
    Load {
        offset: u64,
        len: u64,
        reply: Reply<Bytes>,
    },
    Update {
        offset: u64,
        data: Bytes,
        reply: Reply<()>,
    },
    Modify {
        offset: u64,
        len: u64,
        f: Modify,
        reply: Reply<()>,
    },
    Flush {
        /// `None`: the whole file; `Some((offset, len))`: that range.
        range: Option<(u64, u64)>,
        reply: Reply<()>,
    },
    Resize {
        new_len: u64,
        reply: Reply<()>,
    },
    Lease {
        /// The handle method, for errors and logs.
        op: &'static str,
        offset: u64,
        len: u64,
        kind: LeaseKind,
        reply: Reply<Grant>,
    },
    Populate {
        offset: u64,
        len: u64,
        reply: Reply<()>,
    },
    Close {
        reply: Reply<()>,
    },
}

impl Request {
    /// The operation's name, for spans, logs and errors.
    pub(crate) fn op(&self) -> &'static str {
        match self {
            Request::Load { .. } => "load",
            Request::Update { .. } => "update",
            Request::Modify { .. } => "modify",
            Request::Flush { range: None, .. } => "flush",
            Request::Flush { range: Some(_), .. } => "flush_range",
            Request::Resize { .. } => "resize",
            Request::Lease { op, .. } => op,
            Request::Populate { .. } => "populate",
            Request::Close { .. } => "close",
        }
    }

    /// Whether the caller has stopped waiting for the answer.
    pub(crate) fn abandoned(&self) -> bool {
        match self {
            Request::Load { reply, .. } => reply.is_closed(),
            Request::Lease { reply, .. } => reply.is_closed(),
            Request::Update { reply, .. }
            | Request::Modify { reply, .. }
            | Request::Flush { reply, .. }
            | Request::Resize { reply, .. }
            | Request::Populate { reply, .. }
            | Request::Close { reply, .. } => reply.is_closed(),
        }
    }

    /// Answers the request with an error (replies of every type).
    pub(crate) fn fail(self, err: crate::Error) {
        match self {
            Request::Load { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Request::Lease { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Request::Update { reply, .. }
            | Request::Modify { reply, .. }
            | Request::Flush { reply, .. }
            | Request::Resize { reply, .. }
            | Request::Populate { reply, .. }
            | Request::Close { reply, .. } => {
                let _ = reply.send(Err(err));
            }
        }
    }
}

/// A request in transit, with what the actor needs to serve it well.
pub(crate) struct Envelope {
    pub(crate) request: Request,
    /// `false` for `try_` calls: fail with `Conflict` instead of queueing.
    pub(crate) wait: bool,
    /// The handle took a hold on the direct path for this request; the
    /// actor releases it once the request is served.
    pub(crate) held: bool,
    /// The caller's span, entered while the actor serves the request.
    pub(crate) span: tracing::Span,
    /// The calling task, to detect a task waiting on its own lease.
    pub(crate) task: Option<tokio::task::Id>,
}
