//! [`Open`]: one open of the file, as the actor serves it.
//!
//! Each open keeps what `OpenOptions` gave it: its own request channel,
//! mode, descriptor (and advisory lock), current generation and `close()`.
//! What belongs to the file rather than to one open (the lease table, the
//! gate, the group commit) lives in the actor.

use std::fs::File;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use super::hints::OpenHints;
use super::shared::Shared;
use crate::request::{Envelope, Reply};
use crate::sys::generation::Keep;
use crate::sys::Generation;
use crate::Mode;

/// Names an open for as long as the process runs.
pub(crate) type OpenId = u32;

/// What an open is made of (see `MappedFile::pair`).
pub(crate) struct OpenParts {
    pub(crate) rx: mpsc::Receiver<Envelope>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) file: Arc<File>,
    /// What every generation of the open keeps (its lock, its count).
    pub(crate) keep: Keep,
    pub(crate) generation: Arc<Generation>,
    /// `OpenOptions::preallocate`: grows through this open reserve blocks.
    pub(crate) preallocate: bool,
    /// `OpenOptions::lock_shared`: other processes may map any byte, so
    /// this open refuses to shrink the file.
    pub(crate) shared_lock: bool,
    /// Huge pages, anonymous memory, page locks.
    pub(crate) hints: OpenHints,
    /// `OpenOptions::flush_policy`.
    pub(crate) policy: crate::FlushPolicy,
}

/// One open of the file.
pub(crate) struct Open {
    pub(crate) id: OpenId,
    rx: mpsc::Receiver<Envelope>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) file: Arc<File>,
    pub(crate) keep: Keep,
    /// The current generation (the one `shared.current` publishes too).
    pub(crate) current: Arc<Generation>,
    pub(crate) preallocate: bool,
    pub(crate) shared_lock: bool,
    pub(crate) hints: OpenHints,
    pub(crate) policy: crate::FlushPolicy,
    /// `close()` was called: serve nothing new, answer it once the final
    /// flush is done.
    pub(crate) close_reply: Option<Reply<()>>,
    /// Every handle is gone: finish what is queued, flush, end.
    orphaned: bool,
}

impl Open {
    pub(crate) fn new(parts: OpenParts) -> Open {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        Open {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            rx: parts.rx,
            shared: parts.shared,
            file: parts.file,
            keep: parts.keep,
            current: parts.generation,
            preallocate: parts.preallocate,
            shared_lock: parts.shared_lock,
            hints: parts.hints,
            policy: parts.policy,
            close_reply: None,
            orphaned: false,
        }
    }

    pub(crate) fn mode(&self) -> Mode {
        self.shared.mode
    }

    /// Whether `close()` was called.
    pub(crate) fn is_closing(&self) -> bool {
        self.close_reply.is_some()
    }

    /// Whether the open ends once its flushes are answered.
    pub(crate) fn is_ending(&self) -> bool {
        self.orphaned || self.is_closing()
    }

    /// Whether its channel is read.
    pub(crate) fn is_receiving(&self) -> bool {
        !self.is_ending()
    }

    pub(crate) fn orphan(&mut self) {
        self.orphaned = true;
    }

    pub(crate) fn poll_requests(
        &mut self,
        cx: &mut Context<'_>,
        batch: &mut Vec<Envelope>,
        limit: usize,
    ) -> Poll<usize> {
        self.rx.poll_recv_many(cx, batch, limit)
    }

    /// Stops the channel and takes what is still in it.
    pub(crate) fn close_channel(&mut self) -> Vec<Envelope> {
        self.rx.close();
        let mut left = Vec::new();
        while let Ok(envelope) = self.rx.try_recv() {
            left.push(envelope);
        }
        left
    }
}
