//! The mapping actor: the one owner of a mapped file's mutable state.
//!
//! - `mod.rs` (this file): the actor's state and its run loop;
//! - [`open`]: one open of the file (its channel, mode, descriptor and
//!   current generation); an actor serves every open of its file in this
//!   process;
//! - [`registry`]: how opens of one file find its actor;
//! - [`serve`]: admission of each request through the lease table, and the
//!   queue of requests waiting for their bytes;
//! - [`ops`]: one function per inline operation (load, update, modify,
//!   lease, prewarm, flush);
//! - [`resize`]: the resize protocol;
//! - [`group_commit`] and [`sync`]: the flushes that share one sync;
//!   [`caller_sync`]: whole-file flushes that callers lead themselves;
//! - [`hints`] and [`locks`]: write-back, advice, page locks and huge
//!   pages, and what each new generation inherits;
//! - [`shutdown`]: closing an open, and the actor's end;
//! - [`shared`]: the facts handles read without a round trip.
//!
//! The actor never holds an executor thread: every syscall runs on the
//! blocking pool (`crate::blocking`), and so does every copy larger than
//! [`INLINE_COPY_MAX`].

pub(crate) mod append;
pub(crate) mod batch;
pub(crate) mod caller_sync;
mod changes;
mod group_commit;
pub(crate) mod hints;
mod locks;
mod open;
mod ops;
mod policies;
pub(crate) mod registry;
mod resize;
mod serve;
pub(crate) mod shared;
mod shutdown;
mod sync;
pub(crate) mod tally;
pub(crate) mod write_method;

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tracing::Instrument;

use crate::blocking;
use crate::lease_table::{LeaseTable, Notice};
use crate::request::{Envelope, Owner};
use crate::sys::gate::{Gate, Hold};
use crate::sys::Generation;

use self::group_commit::GroupCommit;
use self::registry::{FileId, Slot};
use self::serve::Pending;
use self::sync::Flusher;

pub(crate) use self::open::{Open, OpenId, OpenParts};
pub use self::ops::INLINE_COPY_MAX;

/// How many requests the actor takes from a channel at once.
const BATCH: usize = 256;

/// A new open of a file the actor already serves: the actor maps it at the
/// file's current length, publishes that to its direct path, then answers.
pub(crate) struct Attach {
    pub(crate) open: Open,
    pub(crate) probe: crate::disk::Probe,
    pub(crate) attached: tokio::sync::oneshot::Sender<crate::error::Result<()>>,
}

/// What the handle side hands a new actor: the file's identity and slot,
/// the channels the slot's door leads to, and the first open.
pub(crate) struct ActorParts {
    pub(crate) id: FileId,
    pub(crate) slot: Arc<Slot>,
    pub(crate) attach_rx: mpsc::UnboundedReceiver<Attach>,
    pub(crate) notices_tx: mpsc::UnboundedSender<Notice>,
    pub(crate) notices_rx: mpsc::UnboundedReceiver<Notice>,
    pub(crate) gate: Arc<Gate>,
    pub(crate) tally: Arc<tally::Tally>,
    pub(crate) first: Open,
}

/// The task that owns one mapped file. Made by
/// [`OpenOptions::open_unspawned`](crate::OpenOptions::open_unspawned); run
/// it with [`run`](MappingActor::run).
///
/// Most users never see it: [`OpenOptions::open`](crate::OpenOptions::open)
/// and the [`MappedFile`](crate::MappedFile) constructors spawn it on the
/// current runtime. Every open of one file in a process is served by one
/// actor: when the file was already mapped here, the new handle joins the
/// actor that serves it, and the `MappingActor` returned for it has nothing
/// to do (its `run` returns at once).
#[must_use = "the mapping serves nothing until its actor runs"]
pub struct MappingActor {
    actor: Option<Box<Actor>>,
}

/// The actor's state.
pub(crate) struct Actor {
    id: FileId,
    /// Held while the actor runs: new opens of the file find it here.
    slot: Arc<Slot>,
    attach_rx: mpsc::UnboundedReceiver<Attach>,
    /// Lease releases and abandoned requests. Leases and handles hold the
    /// sender, so that dropping one never waits; the actor holds one too, to
    /// mint new leases.
    notices_tx: mpsc::UnboundedSender<Notice>,
    notices_rx: mpsc::UnboundedReceiver<Notice>,
    /// The direct-access gate of every open of the file.
    gate: Arc<Gate>,
    opens: Vec<Open>,
    /// Which open's channel is read first next time (round robin).
    next_channel: usize,
    table: LeaseTable<Pending, Owner>,
    /// The actor's own hold on the direct path, kept exactly while it has
    /// leases or waiting requests, or an open is closing.
    hold: Option<Hold>,
    commit: GroupCommit<Flusher>,
    /// The sync of the group commit's current batch, on the blocking pool.
    syncing: Option<blocking::Task<()>>,
    /// What was written when the running sync began: what it covers.
    sync_covers: tally::Written,
    /// The file's counts (written, flushed), shared with every handle.
    tally: Arc<tally::Tally>,
    /// The clock of `FlushPolicy::Interval`, if an open has that policy.
    interval: Option<tokio::time::Interval>,
    /// The appenders' cursors, made by the first append (most mappings
    /// never append).
    appends: Option<Box<append::Appends>>,
}

impl std::fmt::Debug for MappingActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.actor {
            None => f
                .debug_struct("MappingActor")
                .field("joined", &"the actor already serving this file")
                .finish(),
            Some(actor) => f
                .debug_struct("MappingActor")
                .field("opens", &actor.opens.len())
                .field("leases", &actor.table.active_len())
                .finish(),
        }
    }
}

impl MappingActor {
    pub(crate) fn new(parts: ActorParts) -> MappingActor {
        let mut actor = Box::new(Actor {
            id: parts.id,
            slot: parts.slot,
            attach_rx: parts.attach_rx,
            notices_tx: parts.notices_tx,
            notices_rx: parts.notices_rx,
            gate: parts.gate,
            opens: vec![parts.first],
            next_channel: 0,
            table: LeaseTable::default(),
            hold: None,
            commit: GroupCommit::default(),
            syncing: None,
            sync_covers: tally::Written::default(),
            tally: parts.tally,
            interval: None,
            appends: None,
        });
        // Arms the direct path's threshold checks before the first update,
        // which may come before the actor's task first runs.
        actor.check_policies();
        MappingActor { actor: Some(actor) }
    }

    /// The actor of a handle that joined a running actor: nothing to run.
    pub(crate) fn joined() -> MappingActor {
        MappingActor { actor: None }
    }

    /// Serves requests until every open of the file is closed (or all its
    /// handles are dropped and what they queued is done) and every lease is
    /// released. Each open is flushed one last time when it ends (a failure
    /// is reported to `close()`, or logged when nobody is left to tell).
    ///
    /// Leases stay valid after `close()`: the actor keeps track of them
    /// until they are dropped, so that a later open of the file cannot cut
    /// their bytes.
    ///
    /// # Cancel safety
    ///
    /// Dropping (or aborting) this future stops the actor where it is:
    /// every request waiting for an answer, and every later call, fails with
    /// [`Error::Closed`](crate::Error::Closed); acknowledged updates are in
    /// the page cache, but the final flushes do not run. Leases stay valid.
    pub async fn run(self) {
        let Some(mut actor) = self.actor else {
            return;
        };
        actor.reset_interval();
        let path = actor.opens[0].shared.path.display().to_string();
        actor
            .run()
            .instrument(tracing::debug_span!("mapping_actor", path))
            .await
    }
}

impl Drop for Actor {
    /// However the actor ends (its normal end, or its task dropped with its
    /// runtime or aborted), every handle learns it at once: the direct path
    /// checks this flag, not the channel. Every subscription of its opens
    /// ends too.
    fn drop(&mut self) {
        for open in &self.opens {
            open.shared
                .closed
                .store(true, std::sync::atomic::Ordering::Release);
            open.shared.feed.end();
        }
    }
}

impl Actor {
    async fn run(mut self: Box<Self>) {
        // Grows to the largest batch seen: an idle mapping stays small.
        let mut batch = Vec::new();
        loop {
            // After every event, and before the first (updates served
            // directly before this task first ran may have made a policy
            // flush due).
            self.check_policies();
            self.start_sync();
            self.finish_opens().await;
            if self.is_done() && self.stop_if_unused().await {
                return;
            }
            tokio::select! {
                biased;
                Some(notice) = self.notices_rx.recv() => {
                    self.notice(notice);
                    self.apply_notices();
                    self.serve_ready().await;
                }
                result = sync::done(&mut self.syncing), if self.syncing.is_some() => {
                    self.synced(result);
                }
                () = policies::tick(&mut self.interval), if self.interval.is_some() => {
                    self.interval_due();
                }
                Some(attach) = self.attach_rx.recv() => self.attach(attach).await,
                (open, n) = poll_fn(|cx| poll_channels(&mut self.opens, &mut self.next_channel, cx, &mut batch)),
                    if !self.table.is_full() =>
                {
                    tracing::trace!(requests = n, open, "batch");
                    // (`n == 0`: an open's handles are all gone; the loop's
                    // end finishes it.)
                    // A lease dropped before a request was sent is
                    // released before that request is looked at (the two
                    // travel on different channels).
                    if self.apply_notices() {
                        self.serve_ready().await;
                    }
                    for envelope in batch.drain(..) {
                        self.serve(open, envelope).await;
                    }
                    self.serve_ready().await;
                }
            }
        }
    }

    /// Whether nothing is left to serve: no open, no lease, no sync.
    fn is_done(&self) -> bool {
        self.opens.is_empty()
            && self.table.active_len() == 0
            && self.syncing.is_none()
            && !self.commit.has_next()
    }

    /// Takes in another open of the file, mapped at its current length.
    async fn attach(&mut self, attach: Attach) {
        let Attach {
            open,
            probe,
            attached,
        } = attach;
        tracing::debug!(open = open.id, "another open of the file joins");
        let counts_policy = open.policy != crate::FlushPolicy::Manual;
        let mode = open.mode();
        let keep = Arc::clone(&open.keep);
        let mapped = blocking::run("open", move || {
            let len = probe
                .file
                .metadata()
                .map_err(|e| crate::error::Error::io("stat", &probe.path, e))?
                .len();
            crate::disk::map(&probe, len, mode, &keep)
        })
        .await;
        match mapped {
            Ok(generation) => {
                let len = generation.len();
                self.opens.push(open);
                let index = self.opens.len() - 1;
                self.replace_generation(index, Arc::new(generation)).await;
                self.opens[index]
                    .shared
                    .len
                    .store(len, std::sync::atomic::Ordering::Release);
                let _ = attached.send(Ok(()));
                if counts_policy {
                    self.reset_interval();
                }
            }
            Err(err) => {
                let _ = attached.send(Err(err));
            }
        }
    }

    /// The index of open `id`, if it is still served.
    fn index_of(&self, id: OpenId) -> Option<usize> {
        self.opens.iter().position(|open| open.id == id)
    }

    fn notice(&mut self, notice: Notice) {
        match notice {
            Notice::Released(id) => match self.table.release(id) {
                // A lease that could write counts, whole, when released.
                Some(fp) if fp.access != crate::lease_table::Access::Read => {
                    self.tally.actor_wrote(fp.range.len());
                }
                Some(_) => {}
                None => tracing::warn!(id, "release of an unknown lease"),
            },
            // The loop checks the policies after every event.
            Notice::PolicyDue => {}
            // Gone from the queue (or it was not waiting: nothing to do).
            Notice::Abandoned(id) => {
                self.table.cancel(id);
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
    /// idle or an open is closing.
    fn sync_hold(&mut self) {
        let want = !self.table.is_idle() || self.opens.iter().any(Open::is_closing);
        match (want, self.hold.is_some()) {
            (true, false) => self.hold = Some(self.gate.hold()),
            (false, true) => self.hold = None,
            _ => {}
        }
    }

    /// Makes `next` open `index`'s current generation, for the actor and
    /// the direct path; the old one is retired.
    pub(super) async fn replace_generation(&mut self, index: usize, next: Arc<Generation>) {
        self.prepare_generation(index, &next).await;
        let open = &mut self.opens[index];
        let old = publish(&self.gate, open, Arc::clone(&next)).await;
        retire(old);
        retire(std::mem::replace(&mut open.current, next));
    }
}

/// Reads the next batch from the first open (round robin) whose channel has
/// requests; an open whose handles are all gone is marked orphaned.
fn poll_channels(
    opens: &mut [Open],
    next: &mut usize,
    cx: &mut Context<'_>,
    batch: &mut Vec<Envelope>,
) -> Poll<(OpenId, usize)> {
    let n = opens.len();
    let start = *next;
    let mut orphaned = false;
    for k in 0..n {
        let i = (start + k) % n;
        let open = &mut opens[i];
        if !open.is_receiving() {
            continue;
        }
        // Every receiving channel is polled (so that each registers the
        // waker) until one has requests.
        if let Poll::Ready(got) = open.poll_requests(cx, batch, BATCH) {
            if got == 0 {
                tracing::debug!(open = open.id, "every handle of an open dropped");
                open.orphan();
                orphaned = true;
                continue;
            }
            *next = i + 1;
            return Poll::Ready((open.id, got));
        }
    }
    if orphaned {
        // The loop must look at the open that ended (its final flush).
        return Poll::Ready((OpenId::MAX, 0));
    }
    Poll::Pending
}

/// Publishes `next` to an open's direct path under a hold of its own
/// (waiting for direct operations in flight to leave); returns the
/// previous value.
async fn publish(gate: &Arc<Gate>, open: &Open, next: Arc<Generation>) -> Arc<Generation> {
    let hold = gate.hold();
    loop {
        if let Some(exclusive) = gate.try_exclusive(&hold) {
            return open.shared.current.replace(&exclusive, next);
        }
        gate.drain(&hold).await;
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
