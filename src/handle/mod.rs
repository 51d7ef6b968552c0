//! [`MappedFile`]: the cheap, cloneable handle to a mapping actor.
//!
//! - `mod.rs` (this file): the handle, [`MappedFile::pair`] (which builds a
//!   handle and its actor), facts, and the one function that sends a
//!   request;
//! - `open.rs`: opening and creating files;
//! - `calls.rs`: the requests served by the actor (load, update, flush,
//!   resize, ...);
//! - `direct.rs`: small loads and updates served by the calling task;
//!   `publish.rs`: the same for watched bytes, published by the caller;
//!   `quick.rs`: the futures of `update`, `update_from` and `load_into`;
//! - `leases.rs`: the calls that hand out leases;
//! - `hints.rs`: write-back, advice, prewarm progress, page locks, huge
//!   pages, watching, the descriptor;
//! - `anonymous.rs`: anonymous mappings;
//! - `write.rs`: borrowed-slice, vectored and zero-filling updates;
//! - `large.rs`: large loads and updates, copied by the calling task;
//! - `stream_calls.rs`: the requests of sinks and appenders.

mod anonymous;
mod calls;
mod direct;
mod hints;
mod large;
mod leases;
mod open;
mod publish;
mod quick;
mod stream_calls;
mod write;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::actor::hints::OpenHints;
use crate::actor::shared::Shared;
use crate::actor::tally::Tally;
use crate::actor::{Open, OpenParts};
use crate::disk::Probe;
use crate::error::{Error, Result};
use crate::lease_table::Notice;
use crate::options::OpenOptions;
use crate::request::{Envelope, OnConflict, Owner, Reply, Request};
use crate::sys::gate::Gate;
use crate::sys::generation::Keep;
use crate::sys::Generation;
use crate::Mode;

pub use direct::DIRECT_MAX;
pub use hints::PREWARM_STEP;
pub use quick::{LoadInto, Update, UpdateFrom};

/// A memory-mapped file, served by its own actor task.
///
/// `MappedFile` is a cheap handle: clone it into every task that needs the
/// file. Each method sends one request to the mapping's actor and awaits the
/// answer; requests from one handle are served in the order they were sent,
/// and an update whose future has completed is visible to every later load
/// from any handle.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> mmap_actor::Result<()> {
/// use mmap_actor::MappedFile;
/// let dir = tempfile::tempdir().unwrap();
/// let file = MappedFile::create(dir.path().join("data.bin"), 1 << 20).await?;
/// file.update(100, b"hello".to_vec()).await?;
/// assert_eq!(&file.load(100, 5).await?[..], b"hello");
/// file.flush().await?; // durable once this returns Ok
/// file.resize(4 << 20).await?;
/// assert_eq!(file.len(), 4 << 20);
/// file.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct MappedFile {
    tx: mpsc::Sender<Envelope>,
    shared: Arc<Shared>,
}

/// The span a request carries to the actor.
fn request_span(op: &'static str, offset: u64, len: u64) -> tracing::Span {
    tracing::debug_span!("mmap", op, offset, len)
}

impl MappedFile {
    /// Builds a handle and the open the actor serves it through, for a
    /// probed file whose direct path starts with `generation`, on the
    /// file's `gate`, sending its notices to `notices`.
    pub(crate) fn pair(
        opts: &OpenOptions,
        probe: &Probe,
        keep: Keep,
        generation: Arc<Generation>,
        gate: Arc<Gate>,
        tally: Arc<Tally>,
        notices: mpsc::UnboundedSender<Notice>,
    ) -> (MappedFile, Open) {
        let (tx, rx) = mpsc::channel(opts.capacity);
        let shared = Arc::new(Shared::new(
            probe,
            opts.mode,
            Arc::clone(&generation),
            opts.write_through,
            gate,
            tally,
            notices,
        ));
        let open = Open::new(OpenParts {
            rx,
            shared: Arc::clone(&shared),
            file: Arc::clone(&probe.file),
            keep,
            generation,
            preallocate: opts.preallocate,
            shared_lock: opts.lock_shared,
            hints: OpenHints::new(opts.huge_pages, probe.anonymous),
            policy: opts.flush_policy,
        });
        (MappedFile { tx, shared }, open)
    }

    /// A builder for every way of opening a file; see [`OpenOptions`].
    pub fn options() -> OpenOptions {
        OpenOptions::new()
    }

    /// Length of the file in bytes (of the current mapping generation).
    pub fn len(&self) -> u64 {
        self.shared.len.load(Ordering::Acquire)
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The mapping mode.
    pub fn mode(&self) -> Mode {
        self.shared.mode
    }

    /// The path the file was opened with.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Whether the mapping has been closed (or its actor has stopped).
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed() || self.tx.is_closed()
    }

    /// Whether an earlier flush failed, so that every flush now fails with
    /// [`Error::Poisoned`] until the file is reopened.
    pub fn is_poisoned(&self) -> bool {
        self.shared.is_poisoned()
    }

    /// Refuses a write on a read-only mapping.
    fn writable(&self, op: &'static str) -> Result<()> {
        if self.shared.writable {
            Ok(())
        } else {
            Err(Error::ReadOnly {
                op,
                mode: self.shared.mode,
            })
        }
    }

    /// Sends one request and awaits its answer.
    async fn call<T>(
        &self,
        op: &'static str,
        on_conflict: OnConflict,
        span: tracing::Span,
        make: impl FnOnce(Reply<T>) -> Request,
    ) -> Result<T> {
        if self.shared.is_closed() {
            return Err(Error::Closed);
        }
        let (reply, answer) = oneshot::channel();
        let request = make(reply);
        // A request that touches bytes closes the direct path until the
        // actor has served it, so that no direct operation overtakes it.
        // The hold travels in the envelope: if the send fails, or this
        // future is dropped while it waits for room, it is dropped here;
        // once sent, the actor drops it.
        let hold = request.touches_bytes().then(|| self.shared.gate().hold());
        let id = next_request_id();
        let envelope = Envelope {
            request,
            on_conflict,
            hold,
            span,
            owner: Owner::current(),
            id,
        };
        self.tx.send(envelope).await.map_err(|_| Error::Closed)?;
        // From here, dropping this future tells the actor, so that a request
        // waiting for its bytes does not stay queued (or keep the direct
        // path closed) for a caller that is gone.
        let waiting = Waiting {
            notices: &self.shared.notices,
            id,
            armed: true,
        };
        let answer = answer.await;
        waiting.disarm();
        match answer {
            Ok(result) => result,
            // The actor dropped the reply without answering: it stopped
            // (closed or died), or serving this request panicked.
            Err(_) if self.is_closed() => Err(Error::Closed),
            Err(_) => Err(Error::Panicked { op }),
        }
    }
}

/// A request id unique in this process (see `Notice::Abandoned`).
fn next_request_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Says `Notice::Abandoned` when dropped before [`disarm`](Self::disarm):
/// the caller stopped waiting for request `id`.
struct Waiting<'a> {
    notices: &'a mpsc::UnboundedSender<Notice>,
    id: u64,
    armed: bool,
}

impl Waiting<'_> {
    /// The answer came: nothing to tell.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.notices.send(Notice::Abandoned(self.id));
        }
    }
}

#[cfg(all(test, not(mmap_actor_loom)))]
mod tests;
