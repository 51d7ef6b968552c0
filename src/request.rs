//! The envelope a handle sends its actor: the request, how to reply, the
//! hold that keeps later direct operations from overtaking it, and the
//! caller's tracing span.

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::actor::append::AppendRequest;
use crate::actor::batch::Batch;
use crate::error::{Error, Result};
use crate::hints::Hint;
use crate::lease::Grant;
use crate::lease_table::Access;
use crate::sys::gate::Hold;

/// Where the actor sends its answer. The caller may be gone by then, so the
/// actor always ignores the send's result.
pub(crate) type Reply<T> = oneshot::Sender<Result<T>>;

/// A closure run on the mapped bytes inside the actor (`MappedFile::modify`).
pub(crate) type Modify = Box<dyn FnOnce(&mut [u8]) + Send + 'static>;

/// One operation on the mapping. Variants mirror `MappedFile` methods;
/// `reply` is always the last field.
pub(crate) enum Request {
    /// Served by the actor without awaiting anything but the gate.
    Inline(Inline),
    /// A resize: awaited by the actor (blocking-pool work, remapping).
    Resize {
        new_len: u64,
        kind: ResizeKind,
        reply: Reply<()>,
    },
    /// A close: the actor stops serving and answers after its final flush.
    Close { reply: Reply<()> },
    /// Records to append at an appender's cursor: awaited by the actor (it
    /// may grow the file first). Boxed, so that every envelope (and every
    /// channel slot) stays as small as without appenders.
    Append(Box<AppendRequest>),
}

/// The requests the actor serves inline, once admitted by the lease table.
pub(crate) enum Inline {
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
    Lease {
        /// The handle method, for errors and logs.
        op: &'static str,
        offset: u64,
        len: u64,
        access: Access,
        /// Whether the lease may write (a segment_mut or an atomic view;
        /// not a segment or an atomic reader).
        mutable: bool,
        reply: Reply<Grant>,
    },
    Populate {
        offset: u64,
        len: u64,
        reply: Reply<()>,
    },
    Flush {
        /// `None`: the whole file; `Some((offset, len))`: that range.
        range: Option<(u64, u64)>,
        reply: Reply<()>,
    },
    /// Write-back, advice, page locks, huge pages (`crate::hints`).
    Hint(Hint),
    /// The updates of an `UpdateSink`, applied in order.
    Batch(Batch),
}

impl Request {
    /// Whether serving the request touches mapped bytes, grants a lease or
    /// replaces the generation: such a request closes the direct path from
    /// the moment it is sent until the actor has served it, so that no
    /// direct operation sent after it overtakes it. This is the one place
    /// that decides it.
    pub(crate) fn touches_bytes(&self) -> bool {
        match self {
            Request::Inline(inline) => inline.touches_bytes(),
            Request::Resize { .. } | Request::Append(_) => true,
            Request::Close { .. } => false,
        }
    }

    /// Whether the caller has stopped waiting for the answer.
    pub(crate) fn abandoned(&self) -> bool {
        match self {
            Request::Inline(inline) => inline.abandoned(),
            Request::Resize { reply, .. } | Request::Close { reply } => reply.is_closed(),
            Request::Append(append) => append.abandoned(),
        }
    }

    /// Answers the request with an error.
    pub(crate) fn fail(self, err: Error) {
        match self {
            Request::Inline(inline) => inline.fail(err),
            Request::Resize { reply, .. } | Request::Close { reply } => {
                let _ = reply.send(Err(err));
            }
            Request::Append(append) => append.fail(err),
        }
    }
}

impl Inline {
    pub(crate) fn op(&self) -> &'static str {
        match self {
            Inline::Load { .. } => "load",
            Inline::Update { .. } => "update",
            Inline::Modify { .. } => "modify",
            Inline::Lease { op, .. } => op,
            Inline::Populate { .. } => "prewarm",
            Inline::Flush { range: None, .. } => "flush",
            Inline::Flush { range: Some(_), .. } => "flush_range",
            Inline::Hint(hint) => hint.op(),
            Inline::Batch(_) => "update_sink",
        }
    }

    /// Whether serving it reads or writes mapped bytes or grants a lease
    /// (a flush only syncs; a prewarm only faults pages in and a hint only
    /// advises or locks; they change no byte, so they need no exclusion).
    pub(crate) fn touches_bytes(&self) -> bool {
        !matches!(
            self,
            Inline::Flush { .. } | Inline::Populate { .. } | Inline::Hint(_)
        )
    }

    pub(crate) fn abandoned(&self) -> bool {
        match self {
            Inline::Load { reply, .. } => reply.is_closed(),
            Inline::Lease { reply, .. } => reply.is_closed(),
            Inline::Hint(hint) => hint.abandoned(),
            Inline::Batch(batch) => batch.abandoned(),
            Inline::Update { reply, .. }
            | Inline::Modify { reply, .. }
            | Inline::Populate { reply, .. }
            | Inline::Flush { reply, .. } => reply.is_closed(),
        }
    }

    pub(crate) fn fail(self, err: Error) {
        match self {
            Inline::Load { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Inline::Lease { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Inline::Hint(hint) => hint.fail(err),
            Inline::Batch(batch) => batch.fail(err),
            Inline::Update { reply, .. }
            | Inline::Modify { reply, .. }
            | Inline::Populate { reply, .. }
            | Inline::Flush { reply, .. } => {
                let _ = reply.send(Err(err));
            }
        }
    }
}

/// What a resize asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ResizeKind {
    /// Exactly `new_len` bytes (`resize`).
    Exact,
    /// At least `new_len` bytes: a no-op for a longer file (`grow_to`).
    AtLeast,
    /// Emptied, then `new_len` zero bytes (an open's `truncate` of a file
    /// this process maps already).
    Reset,
}

/// What a request does when its bytes are taken by a conflicting lease or
/// an earlier waiting request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnConflict {
    /// Queue until the bytes are free (the plain calls).
    Wait,
    /// Fail with `Error::Conflict` (the `try_` calls).
    Fail,
}

/// Who sent a request: the tokio task, or the thread for code that runs
/// outside a task (a `block_on` body, `#[tokio::main]`), to detect a caller
/// that waits on a lease it holds itself and to let a holder's own
/// requests in ahead of requests waiting for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Owner {
    Task(tokio::task::Id),
    Thread(std::thread::ThreadId),
}

impl Owner {
    /// The caller.
    pub(crate) fn current() -> Owner {
        match tokio::task::try_id() {
            Some(id) => Owner::Task(id),
            None => Owner::Thread(std::thread::current().id()),
        }
    }
}

/// A request in transit, with what the actor needs to serve it well.
pub(crate) struct Envelope {
    pub(crate) request: Request,
    pub(crate) on_conflict: OnConflict,
    /// The hold the handle took for a request that touches bytes; dropped
    /// once the actor has served the request (or failed or skipped it), on
    /// every path, which reopens the direct path.
    pub(crate) hold: Option<Hold>,
    /// The caller's span, entered while the actor serves the request.
    pub(crate) span: tracing::Span,
    pub(crate) owner: Owner,
    /// Unique in this process: names the request in a `Notice::Abandoned`
    /// if its caller stops waiting.
    pub(crate) id: u64,
}
