//! The mapping actor: the one owner of a mapping's mutable state.
//!
//! - `mod.rs` (this file): the actor's state and its run loop;
//! - [`serve`]: admission of each request through the lease table, and the
//!   queue of requests waiting for their bytes;
//! - [`ops`]: one function per inline operation (load, update, modify,
//!   lease, prewarm, flush);
//! - [`resize`]: the resize protocol;
//! - [`group_commit`]: the flushes that share one sync;
//! - [`shutdown`]: close and the final flush;
//! - [`shared`]: the facts handles read without a round trip.
//!
//! The actor never holds an executor thread: every syscall runs on the
//! blocking pool (`crate::blocking`), and so does every copy larger than
//! [`INLINE_COPY_MAX`], except that on a multi-thread runtime a large update
//! is copied in place under `block_in_place` (the worker's other tasks move
//! to another thread first), which saves a hand-off.

mod group_commit;
mod ops;
mod resize;
mod serve;
pub(crate) mod shared;
mod shutdown;

use std::fs::File;
use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::Instrument;

use crate::blocking;
use crate::error::{copy_io, Error, Result};
use crate::lease_table::{LeaseTable, Notice};
use crate::request::{Envelope, Owner, Reply};
use crate::sys::file::FileLock;
use crate::sys::gate::Hold;
use crate::sys::Generation;

use self::group_commit::GroupCommit;
use self::serve::Pending;
use self::shared::Shared;

pub use self::ops::INLINE_COPY_MAX;

/// How many requests the actor takes from its channel at once.
const BATCH: usize = 256;

/// What the handle side hands a new actor (see `MappedFile::pair`).
pub(crate) struct Parts {
    pub(crate) rx: mpsc::Receiver<Envelope>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) file: Arc<File>,
    /// The advisory lock, if the open took one; every generation keeps it.
    pub(crate) lock: Option<Arc<FileLock>>,
    pub(crate) generation: Arc<Generation>,
    /// `OpenOptions::preallocate`: grows reserve their blocks.
    pub(crate) preallocate: bool,
}

/// The task that owns one mapping. Made by
/// [`OpenOptions::open_unspawned`](crate::OpenOptions::open_unspawned); run
/// it with [`run`](MappingActor::run).
///
/// Most users never see it: [`OpenOptions::open`](crate::OpenOptions::open)
/// and the [`MappedFile`](crate::MappedFile) constructors spawn it on the
/// current runtime.
#[must_use = "the mapping serves nothing until its actor runs"]
pub struct MappingActor {
    rx: mpsc::Receiver<Envelope>,
    /// Lease releases. Leases hold the sender, so that dropping one never
    /// waits; the actor holds one too, to mint new leases.
    notices_tx: mpsc::UnboundedSender<Notice>,
    notices_rx: mpsc::UnboundedReceiver<Notice>,
    shared: Arc<Shared>,
    file: Arc<File>,
    /// Passed to every generation mapped, which keeps it (`sys/file.rs`).
    lock: Option<Arc<FileLock>>,
    /// The current generation (the one `shared.current` publishes too).
    current: Arc<Generation>,
    table: LeaseTable<Pending, Owner>,
    /// The actor's own hold on the direct path, kept exactly while it has
    /// leases or waiting requests, or is closing.
    hold: Option<Hold>,
    commit: GroupCommit<Reply<()>>,
    /// The sync of the group commit's current batch, on the blocking pool.
    syncing: Option<blocking::Task<()>>,
    preallocate: bool,
    /// Every handle is gone: finish what is queued, flush, stop.
    orphaned: bool,
    /// `close()` was called: serve nothing new, answer it once the final
    /// flush is done.
    close_reply: Option<Reply<()>>,
}

impl std::fmt::Debug for MappingActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappingActor")
            .field("path", &self.shared.path)
            .field("len", &self.current.len())
            .field("leases", &self.table.active_len())
            .finish()
    }
}

impl MappingActor {
    pub(crate) fn new(parts: Parts) -> MappingActor {
        let (notices_tx, notices_rx) = mpsc::unbounded_channel();
        MappingActor {
            rx: parts.rx,
            notices_tx,
            notices_rx,
            shared: parts.shared,
            file: parts.file,
            lock: parts.lock,
            current: parts.generation,
            table: LeaseTable::default(),
            hold: None,
            commit: GroupCommit::default(),
            syncing: None,
            preallocate: parts.preallocate,
            orphaned: false,
            close_reply: None,
        }
    }

    /// Serves requests until the mapping is closed, or until every handle
    /// is dropped and the queued requests are done. Then flushes a
    /// read-write mapping one last time (logging a failure, since nobody is
    /// left to tell) and returns.
    ///
    /// Leases still alive when it returns stay valid: each keeps its own
    /// mapping generation.
    ///
    /// # Cancel safety
    ///
    /// Dropping (or aborting) this future stops the actor where it is:
    /// every request waiting for an answer, and every later call, fails with
    /// [`Error::Closed`]; acknowledged updates are in the page cache, but the
    /// final flush does not run.
    pub async fn run(mut self) {
        let span = tracing::debug_span!("mapping_actor", path = %self.shared.path.display());
        async move {
            // Grows to the largest batch seen: an idle mapping stays small.
            let mut batch = Vec::new();
            while !self.finished() {
                tokio::select! {
                    biased;
                    Some(notice) = self.notices_rx.recv() => {
                        self.notice(notice);
                        self.apply_notices();
                        self.serve_ready().await;
                    }
                    result = sync_done(&mut self.syncing), if self.syncing.is_some() => {
                        self.synced(result);
                    }
                    n = self.rx.recv_many(&mut batch, BATCH), if !self.orphaned && !self.closing() => {
                        if n == 0 {
                            tracing::debug!("every handle dropped");
                            self.orphaned = true;
                        }
                        tracing::trace!(requests = n, "batch");
                        // A lease dropped before a request was sent is
                        // released before that request is looked at (the
                        // two travel on different channels).
                        if self.apply_notices() {
                            self.serve_ready().await;
                        }
                        for envelope in batch.drain(..) {
                            self.serve(envelope).await;
                        }
                        self.serve_ready().await;
                    }
                }
                self.start_sync();
            }
            self.stop().await;
        }
        .instrument(span)
        .await
    }

    /// Whether `close()` was called.
    fn closing(&self) -> bool {
        self.close_reply.is_some()
    }

    /// Whether the loop is done: closing with no flush left, or orphaned
    /// with nothing queued and no flush left.
    fn finished(&self) -> bool {
        let flushing = self.commit.busy() || self.commit.has_next();
        (self.closing() && !flushing) || (self.orphaned && !flushing && !self.table.has_waiting())
    }

    fn notice(&mut self, notice: Notice) {
        match notice {
            Notice::Released(id) => {
                if !self.table.release(id) {
                    tracing::warn!(id, "release of an unknown lease");
                }
            }
        }
    }

    /// Applies every notice already sent; whether there was one.
    fn apply_notices(&mut self) -> bool {
        let mut any = false;
        while let Ok(notice) = self.notices_rx.try_recv() {
            self.notice(notice);
            any = true;
        }
        any
    }

    /// Holds the direct path closed exactly while the lease table is not
    /// idle or the mapping is closing.
    fn sync_hold(&mut self) {
        let want = self.closing() || !self.table.is_idle();
        match (want, self.hold.is_some()) {
            (true, false) => self.hold = Some(self.shared.gate().hold()),
            (false, true) => self.hold = None,
            _ => {}
        }
    }

    /// Starts the next group-commit sync if none runs and flushes wait.
    fn start_sync(&mut self) {
        if self.syncing.is_some() {
            return;
        }
        if let Some(err) = self.shared.poisoned() {
            for reply in self.commit.take_next() {
                let _ = reply.send(Err(err_copy(&err)));
            }
            return;
        }
        let Some(plan) = self.commit.begin() else {
            return;
        };
        let file = Arc::clone(&self.file);
        let generation = Arc::clone(&self.current);
        let path = self.shared.path.clone();
        self.syncing = Some(blocking::start("sync", move || {
            let synced = match plan {
                group_commit::Plan::Full => file.sync_data(),
                group_commit::Plan::Range(range) => generation.sync_range(range.start, range.len()),
            };
            synced.map_err(|e| Error::io("sync", &path, e))
        }));
    }

    /// Answers the flushes the finished sync served.
    fn synced(&mut self, result: Result<()>) {
        self.syncing = None;
        let waiters = self.commit.end();
        match result {
            Ok(()) => match self.shared.poisoned() {
                // A sync that failed meanwhile (a resize's) reported a
                // write-back error this one's success does not cover.
                Some(err) => {
                    for reply in waiters {
                        let _ = reply.send(Err(err_copy(&err)));
                    }
                }
                None => {
                    tracing::debug!(waiters = waiters.len(), "sync done");
                    for reply in waiters {
                        let _ = reply.send(Ok(()));
                    }
                }
            },
            Err(err) => {
                tracing::error!(%err, waiters = waiters.len(), "sync failed; the mapping is poisoned");
                self.shared.poison(&err);
                for reply in waiters {
                    let _ = reply.send(Err(err_copy(&err)));
                }
            }
        }
    }

    /// Makes `next` the current generation, for the actor and the direct
    /// path; the old one is retired.
    pub(super) async fn replace_generation(&mut self, next: Arc<Generation>) {
        let old = publish(&self.shared, Arc::clone(&next)).await;
        retire(old);
        retire(std::mem::replace(&mut self.current, next));
    }
}

/// Publishes `next` to the direct path under a hold of its own (waiting
/// for direct operations in flight to leave); returns the previous value.
async fn publish(shared: &Shared, next: Arc<Generation>) -> Arc<Generation> {
    let hold = shared.gate().hold();
    loop {
        if let Some(exclusive) = shared.gate().try_exclusive(&hold) {
            return shared.current.replace(&exclusive, next);
        }
        shared.gate().drain(&hold).await;
    }
}

/// Drops a generation on the blocking pool: if it is the last reference,
/// the drop is an `munmap`, which takes milliseconds for a large mapping and
/// must not hold an executor thread.
fn retire(generation: Arc<Generation>) {
    if Arc::strong_count(&generation) == 1 && generation.len() > 0 {
        blocking::detach(move || drop(generation));
    }
}

/// Waits for the running sync; pending forever when none runs (the loop
/// guards this branch with `syncing.is_some()`).
async fn sync_done(syncing: &mut Option<blocking::Task<()>>) -> Result<()> {
    match syncing.as_mut() {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

/// A copy of an error for one more waiter of the same failed sync
/// (`Error` is not `Clone`: an `io::Error` inside is copied by its code).
fn err_copy(err: &Error) -> Error {
    match err {
        Error::Io { op, path, source } => Error::Io {
            op,
            path: path.clone(),
            source: copy_io(source),
        },
        Error::Poisoned { path, kind } => Error::Poisoned {
            path: path.clone(),
            kind: *kind,
        },
        Error::Panicked { op } => Error::Panicked { op },
        other => Error::Io {
            op: "sync",
            path: std::path::PathBuf::new(),
            source: std::io::Error::other(other.to_string()),
        },
    }
}
