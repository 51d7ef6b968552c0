//! The mapping actor: the one owner of a mapping's mutable state.
//!
//! It drains its request channel in batches, serves requests in the order
//! they arrive (queueing those whose bytes are leased, see [`leases`]),
//! hands syncs to the group commit ([`flush`]) and resizes to the blocking
//! pool ([`resize`]). It never holds an executor thread: every syscall runs
//! on the blocking pool, and so does every copy larger than
//! [`INLINE_COPY_MAX`], except that on a multi-thread runtime a large update
//! is copied in place under `block_in_place` (the worker's other tasks move
//! to another thread first), which saves a hand-off.

mod execute;
pub(crate) mod flush;
pub(crate) mod leases;
pub(crate) mod resize;

use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::Instrument;

use crate::error::{copy_io, Error, Result};
use crate::handle::{MappedFile, Shared};
use crate::options::{OpenOptions, Opened};
use crate::region::Span;
use crate::request::{Envelope, Request};
use crate::sys::Mapping;
use crate::Mode;

use self::flush::GroupCommit;
use self::leases::{Access, Footprint, LeaseTable};

/// Copies up to this many bytes run inline on the actor's thread; larger
/// ones run on the blocking pool under a temporary lease (large updates on a
/// multi-thread runtime: in place under `tokio::task::block_in_place`).
///
/// Measured on the reference machine (docs/PERFORMANCE.md): a
/// `spawn_blocking` round trip costs about 14 µs; copying 64 KiB costs
/// 1.4 µs from cache and about 10 µs when its 16 pages take minor faults, as
/// fresh mapped pages do. Past 64 KiB the copy, not the hand-off, dominates,
/// and it would hold an executor thread.
pub const INLINE_COPY_MAX: usize = 64 * 1024;

/// How many requests the actor takes from its channel at once.
const BATCH: usize = 256;

/// A request that waits for its bytes, with what is needed to serve it later.
struct Pending {
    request: Request,
    span: tracing::Span,
    task: Option<tokio::task::Id>,
}

/// The task that owns one mapping. Made by
/// [`OpenOptions::open_unspawned`]; run it with [`run`](MappingActor::run).
///
/// Most users never see it: [`OpenOptions::open`] and the
/// [`MappedFile`] constructors spawn it on the current runtime.
pub struct MappingActor {
    rx: mpsc::Receiver<Envelope>,
    release_tx: mpsc::UnboundedSender<u64>,
    release_rx: mpsc::UnboundedReceiver<u64>,
    shared: Arc<Shared>,
    file: Arc<File>,
    map: Arc<Mapping>,
    table: LeaseTable<Pending>,
    /// Whether the actor holds the direct path closed because it has
    /// leases, waiting requests, or is closing (see `sys::gate`).
    holding: bool,
    flush: GroupCommit,
    preallocate: bool,
    /// Every handle is gone: finish what is queued, flush, stop.
    orphaned: bool,
    /// `close()` was called: serve nothing new, answer it once the final
    /// flush is done.
    close_reply: Option<crate::request::Reply<()>>,
    /// The file is `flock`ed (`OpenOptions::lock`).
    locked: bool,
}

impl std::fmt::Debug for MappingActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappingActor")
            .field("path", &self.shared.path)
            .field("len", &self.map.len())
            .field("leases", &self.table.active_len())
            .finish()
    }
}

impl MappingActor {
    pub(crate) fn start(opts: &OpenOptions, opened: Opened) -> (MappedFile, MappingActor) {
        let (tx, rx) = mpsc::channel(opts.capacity);
        let (release_tx, release_rx) = mpsc::unbounded_channel();
        let map = Arc::new(opened.map);
        let shared = Arc::new(Shared::new(
            opened.path,
            opts.mode,
            Arc::clone(&map),
            opts.write_through,
        ));
        let actor = MappingActor {
            rx,
            release_tx,
            release_rx,
            shared: Arc::clone(&shared),
            file: Arc::new(opened.file),
            map,
            table: LeaseTable::default(),
            holding: false,
            flush: GroupCommit::default(),
            preallocate: opts.preallocate,
            orphaned: false,
            close_reply: None,
            locked: opts.lock,
        };
        (MappedFile::new(tx, shared), actor)
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
            loop {
                if self.finished() {
                    break;
                }
                tokio::select! {
                    biased;
                    Some(id) = self.release_rx.recv() => {
                        self.release(id);
                        self.release_pending();
                        self.serve_ready().await;
                    }
                    (result, waiters) = self.flush.finished(), if self.flush.busy() => {
                        self.flushed(result, waiters);
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
                        if self.release_pending() {
                            self.serve_ready().await;
                        }
                        for envelope in batch.drain(..) {
                            self.serve(envelope).await;
                        }
                        self.serve_ready().await;
                    }
                }
                self.start_flush();
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
        let flushing = self.flush.busy() || self.flush.has_next();
        (self.closing() && !flushing) || (self.orphaned && !flushing && !self.table.has_waiting())
    }

    /// The end: release the mapping, make the data durable one last time,
    /// unlock and close the file, then answer `close()` (if that is why).
    async fn stop(self) {
        self.shared.closed.store(true, Ordering::Release);
        if !self.holding {
            // Direct operations fail once `closed` is set; the hold makes
            // sure none is still using the mapping we replace below.
            self.shared.gate.hold();
        }
        // Swap the mapping direct operations use for an empty one, so that
        // only leases keep the file mapped.
        publish(&self.shared, Arc::new(Mapping::empty())).await;
        // A read-write mapping poisoned before now fails its close.
        let poisoned = self
            .shared
            .poisoned()
            .filter(|_| self.shared.mode == Mode::ReadWrite);
        retire(self.map);
        let file = self.file;
        let sync = self.shared.mode == Mode::ReadWrite && poisoned.is_none();
        let locked = self.locked;
        let result = tokio::task::spawn_blocking(move || {
            let result = if sync { file.sync_data() } else { Ok(()) };
            if locked {
                // Leases may keep the file description alive; the lock must
                // not outlive the close.
                let _ = crate::sys::unlock(&file);
            }
            drop(file);
            result
        })
        .await
        .unwrap_or_else(|join| {
            Err(std::io::Error::other(format!(
                "final flush task failed: {join}"
            )))
        });
        let result = match result {
            Ok(()) => match poisoned {
                Some(err) => Err(err),
                None => Ok(()),
            },
            Err(source) => {
                let err = Error::io("fdatasync", &self.shared.path, source);
                self.shared.poison(&err);
                Err(err)
            }
        };
        match (self.close_reply, result) {
            (Some(reply), result) => {
                let _ = reply.send(result);
            }
            (None, Ok(())) => tracing::debug!("final flush done"),
            (None, Err(err)) => tracing::error!(%err, "final flush failed; nobody is left to tell"),
        }
    }

    fn release(&mut self, id: u64) {
        if !self.table.release(id) {
            tracing::warn!(id, "release of an unknown lease");
        }
    }

    /// Applies every release already sent; whether there was one.
    fn release_pending(&mut self) -> bool {
        let mut any = false;
        while let Ok(id) = self.release_rx.try_recv() {
            self.release(id);
            any = true;
        }
        any
    }

    fn start_flush(&mut self) {
        if self.shared.poisoned.get().is_some() {
            for reply in self.flush.take_next() {
                let _ = reply.send(Err(self.shared.poisoned().expect("poisoned")));
            }
            return;
        }
        self.flush.start(&self.file, &self.map);
    }

    fn flushed(&mut self, result: std::io::Result<()>, waiters: Vec<crate::request::Reply<()>>) {
        match result {
            Ok(()) => match self.shared.poisoned() {
                // A sync that failed meanwhile (a resize's) reported a
                // write-back error this one's success does not cover.
                Some(_) => {
                    for reply in waiters {
                        let _ = reply.send(Err(self.shared.poisoned().expect("poisoned")));
                    }
                }
                None => {
                    tracing::debug!(waiters = waiters.len(), "sync done");
                    for reply in waiters {
                        let _ = reply.send(Ok(()));
                    }
                }
            },
            Err(source) => {
                let err = Error::io("sync", &self.shared.path, copy_io(&source));
                tracing::error!(%err, waiters = waiters.len(), "sync failed; the mapping is poisoned");
                self.shared.poison(&err);
                for reply in waiters {
                    let _ = reply.send(Err(Error::io("sync", &self.shared.path, copy_io(&source))));
                }
            }
        }
    }

    /// Serves one request from the channel, then releases the hold its
    /// handle took on the direct path (after the actor took its own, if the
    /// request left a lease or a waiter behind).
    async fn serve(&mut self, envelope: Envelope) {
        let held = envelope.held;
        self.serve_request(envelope).await;
        self.sync_hold();
        if held {
            self.shared.gate.unhold();
        }
    }

    /// Holds the direct path closed exactly while the lease table is not
    /// empty or the mapping is closing.
    fn sync_hold(&mut self) {
        let want = self.closing() || self.table.active_len() > 0 || self.table.has_waiting();
        if want != self.holding {
            if want {
                self.shared.gate.hold();
            } else {
                self.shared.gate.unhold();
            }
            self.holding = want;
        }
    }

    /// Serves one request: now, queued, or refused.
    async fn serve_request(&mut self, envelope: Envelope) {
        let Envelope {
            request,
            wait,
            span,
            task,
            held: _,
        } = envelope;
        if request.abandoned() {
            return;
        }
        if self.closing() {
            request.fail(Error::Closed);
            return;
        }
        let footprint = match self.footprint(&request) {
            Ok(fp) => fp,
            Err(err) => {
                request.fail(err);
                return;
            }
        };
        let pending = Pending {
            request,
            span,
            task,
        };
        match footprint {
            Some(fp) if !self.table.admits(&fp) => {
                if !wait {
                    let op = pending.request.op();
                    pending.request.fail(Error::Conflict {
                        op,
                        offset: fp.span.start,
                        len: fp.span.len(),
                    });
                    return;
                }
                if self.table.held_by(&fp, pending.task) {
                    let _g = pending.span.enter();
                    tracing::warn!(
                        op = pending.request.op(),
                        offset = fp.span.start,
                        "request waits on a lease taken by the same task; \
                         if that task still holds it, this never completes (use the try_ variant)"
                    );
                }
                self.table.enqueue(fp, pending);
            }
            _ => self.execute(pending).await,
        }
    }

    /// Serves every queued request that has become free, in order, then
    /// lets the direct path open again if nothing is leased or waiting.
    async fn serve_ready(&mut self) {
        if !self.table.has_waiting() {
            self.sync_hold();
            return;
        }
        while let Some(ready) = self.table.next_ready(|p| p.request.abandoned()) {
            self.execute(ready.payload).await;
        }
        self.sync_hold();
    }

    /// The bytes a request touches, or `None` for requests that touch none
    /// (flush, close). Errors are immediate refusals (an overflowing range).
    fn footprint(&self, request: &Request) -> Result<Option<Footprint>> {
        let file_len = self.map.len();
        let span = |offset: u64, len: u64| {
            Span::new(offset, len).ok_or(Error::OutOfBounds {
                offset,
                len,
                file_len,
            })
        };
        let fp = match request {
            Request::Load { offset, len, .. } | Request::Populate { offset, len, .. } => {
                Footprint {
                    span: span(*offset, *len)?,
                    access: Access::Read,
                }
            }
            Request::Update { offset, data, .. } => Footprint {
                span: span(*offset, data.len() as u64)?,
                access: Access::Write,
            },
            Request::Modify { offset, len, .. } => Footprint {
                span: span(*offset, *len)?,
                access: Access::Write,
            },
            Request::Lease {
                offset, len, kind, ..
            } => Footprint {
                span: span(*offset, *len)?,
                access: Access::from(*kind),
            },
            Request::Resize { new_len, .. } => Footprint {
                span: Span::tail((*new_len).min(file_len)),
                access: Access::Write,
            },
            Request::Flush { .. } | Request::Close { .. } => return Ok(None),
        };
        Ok(Some(fp))
    }

    /// Runs an admitted request.
    async fn execute(&mut self, pending: Pending) {
        let Pending {
            request,
            span,
            task,
        } = pending;
        if let Request::Resize { new_len, reply } = request {
            // No direct operation may still be writing the tail a shrink is
            // about to cut.
            self.shared.gate.drain().await;
            let result = self.resize(new_len).instrument(span).await;
            let _ = reply.send(result);
            return;
        }
        if let Request::Close { reply } = request {
            self.close(reply);
            return;
        }
        if !matches!(request, Request::Flush { .. }) {
            // A hold is in place (the request's own, or the actor's while
            // requests wait): once no direct operation is in flight, the
            // bytes are the actor's to touch and lease.
            self.shared.gate.drain().await;
        }
        let _enter = span.enter();
        let op = request.op();
        // A bug in serving one request must fail that request only; the
        // reply sender it owned is dropped, which its caller reports as
        // `Panicked` (the actor is still alive).
        if catch_unwind(AssertUnwindSafe(|| self.execute_inline(request, task))).is_err() {
            tracing::error!(op, "request panicked inside the actor");
        }
    }

    async fn resize(&mut self, new_len: u64) -> Result<()> {
        let old_len = self.map.len();
        if new_len == old_len {
            return Ok(());
        }
        let file = Arc::clone(&self.file);
        let path = self.shared.path.clone();
        let preallocate = self.preallocate;
        tracing::debug!(old_len, new_len, "resize");
        let outcome = tokio::task::spawn_blocking(move || {
            resize::resize_blocking(&file, &path, old_len, new_len, preallocate)
        })
        .await
        .map_err(|_| Error::Panicked { op: "resize" })?;
        if let Some(map) = outcome.map {
            // The file has its new length: map it, even if the sync failed.
            let map = Arc::new(map);
            publish(&self.shared, Arc::clone(&map)).await;
            retire(std::mem::replace(&mut self.map, map));
            self.shared.len.store(new_len, Ordering::Release);
        }
        if let Err(err) = &outcome.result {
            if outcome.sync_failed {
                // That sync also wrote back dirty pages; the kernel reports
                // such a failure once, so a later flush could succeed
                // although data was lost.
                tracing::error!(%err, "sync failed during a resize; the mapping is poisoned");
                self.shared.poison(err);
            } else {
                tracing::warn!(%err, "resize refused");
            }
        }
        outcome.result
    }

    fn close(&mut self, reply: crate::request::Reply<()>) {
        // Answered by `stop`, after the final flush.
        self.close_reply = Some(reply);
        self.sync_hold();
        self.shared.closed.store(true, Ordering::Release);
        self.rx.close();
        while let Ok(envelope) = self.rx.try_recv() {
            if envelope.held {
                self.shared.gate.unhold();
            }
            envelope.request.fail(Error::Closed);
        }
        for waiting in self.table.drain_waiting() {
            waiting.payload.request.fail(Error::Closed);
        }
    }
}

/// Makes `map` the generation direct operations use. Called with a hold in
/// place (the resize request's).
async fn publish(shared: &Shared, map: Arc<Mapping>) {
    loop {
        if let Some(exclusive) = shared.gate.try_exclusive() {
            retire(exclusive.publish(map));
            return;
        }
        // A direct operation is in flight (or backing off); the hold in
        // place keeps new ones out, so this drains.
        shared.gate.drain().await;
    }
}

/// Drops a mapping generation on the blocking pool: if it is the last
/// reference, the drop is an `munmap`, which takes milliseconds for a large
/// mapping and must not hold an executor thread.
fn retire(map: Arc<Mapping>) {
    if Arc::strong_count(&map) == 1 && map.len() > 0 {
        tokio::task::spawn_blocking(move || drop(map));
    }
}
