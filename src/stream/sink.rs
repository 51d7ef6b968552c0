//! [`UpdateSink`]: updates streamed into the mapping, in batches.

use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::Sink;

use super::pipe::{poll_boxed, Pipe};
use super::updates::Updates;
use crate::error::{Error, Result};
use crate::MappedFile;

/// The default bound on the bytes an [`UpdateSink`] holds (buffered and in
/// flight): with 64 B and 4 KiB items alike, larger bounds are no faster
/// on the reference machine (docs/PERFORMANCE.md, P10), and this one keeps
/// a sink's memory small.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1 << 20;

/// A batch carries at most this much (items and their slots): the actor
/// applies it in some tens of microseconds (a copy of this size, or about
/// 4,000 small items), so it never holds its thread long. An item larger
/// than [`INLINE_COPY_MAX`] travels alone, as one `update`.
pub(super) const BATCH_MAX: usize = 256 * 1024;

/// What a sink whose bytes are watched gathers before it stores and
/// publishes a batch itself: enough to publish rarely (each publication
/// costs a lock per subscription), little enough that the items' buffers
/// are still in the cache when they are copied.
pub(super) const GATHER: usize = BATCH_MAX;

/// Batches a sink has in flight at most (sent, not yet answered): enough
/// that the actor finds the next one waiting when it is done with one.
const MAX_BATCHES: usize = 4;

/// What an item costs against the bound besides its bytes: its slot.
pub(super) const ITEM_COST: usize = std::mem::size_of::<(u64, Bytes)>();

impl MappedFile {
    /// A [`Sink`] of `(offset, bytes)` updates, applied in order in batches;
    /// see [`UpdateSink`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mmap_actor::Result<()> {
    /// use bytes::Bytes;
    /// use futures::{stream, SinkExt};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let file = mmap_actor::MappedFile::create(dir.path().join("u"), 1 << 20).await?;
    /// let mut sink = file.update_sink();
    /// sink.send((0, Bytes::from_static(b"first"))).await?; // applied when it returns
    /// let mut updates = stream::iter((1..1000u64).map(|i| Ok((i * 8, Bytes::from(i.to_le_bytes().to_vec())))));
    /// sink.send_all(&mut updates).await?; // batched, backpressured
    /// sink.close().await?;
    /// assert_eq!(&file.load(8 * 999, 8).await?[..], &999u64.to_le_bytes());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// None here; the sink reports them (see [`UpdateSink`]).
    ///
    /// # Cancel safety
    ///
    /// See [`UpdateSink`].
    pub fn update_sink(&self) -> UpdateSink {
        let refused = (!self.mode().is_writable()).then(|| Error::ReadOnly {
            op: "update_sink",
            mode: self.mode(),
        });
        UpdateSink {
            pipe: Pipe::new(
                Updates::new(self.clone()),
                DEFAULT_MAX_IN_FLIGHT,
                MAX_BATCHES,
                refused,
            ),
            file: self.clone(),
            durable: false,
            synced: 0,
            syncing: None,
            unbudgeted: 0,
            held: false,
            staged: Vec::new(),
        }
    }
}

/// Small items a sink gathers before it stores them together
/// ([`MappedFile::update_fast_run`]): enough for the lines they write to
/// be fetched side by side (a core tracks 10 to 16 such fetches at once),
/// few enough to stay in the cache while they wait.
const STAGED_MAX: usize = 16;

/// Items a sink accepts per unit of the task's scheduling budget (a task
/// runs 128 units before tokio makes it yield).
const BUDGET_EVERY: u32 = 16;

/// A [`Sink`] of `(offset, bytes)` updates into a mapping; made by
/// [`MappedFile::update_sink`].
///
/// - **Order and batches**: items are applied in the order they were sent,
///   in batches (one request to the actor per batch, not per item). One
///   batch travels at a time; items sent meanwhile wait in the sink and
///   form the next, so batches grow when the actor is busy. An item larger
///   than [`INLINE_COPY_MAX`](crate::INLINE_COPY_MAX) travels alone, as an
///   [`update`](MappedFile::update). While nothing of the sink is buffered
///   or on its way, items of up to [`DIRECT_MAX`](crate::DIRECT_MAX) bytes
///   are stored by the sending task itself through the direct path (when
///   the mapping has no lease, no waiting request and no subscription of
///   those bytes), sixteen at a time: the sink gathers them, and at the
///   sixteenth, before any other item, at a flush and when it is dropped,
///   stores them in one entry of the gate, their cache lines fetched side
///   by side first. That makes a sink of small random updates about twice
///   as fast as awaited updates, which each wait for their own line; when
///   the actor is busy the sink batches instead. Items of 1 KiB or more
///   into a mapping larger than the processor's last-level cache are
///   stored past the cache (non-temporal stores, no line fetched first), so
///   they are not in the cache afterwards. Such a sink spends the
///   task's scheduling budget as it goes, so `send_all` of a stream that
///   is always ready still yields to the runtime.
/// - **Subscriptions**: changes are published as items are applied. While
///   four or more subscriptions are live, the sink applies small items of
///   watched bytes itself instead of sending them to the actor. An item of
///   1 KiB to [`DIRECT_MAX`](crate::DIRECT_MAX) is stored at once (while
///   nothing of the sink is on its way) and its change numbered then and
///   held by the feed, which delivers held changes 256 at a time, with any
///   other delivery, when the sink flushes and when it is dropped. Smaller
///   items are gathered (256 KiB, or less at a flush) and stored 64 KiB per
///   gate entry, each part published as one list of changes; the
///   subscriptions they reach are woken once per 256 changes, at a flush
///   and when the sink is dropped. Either way a change may reach the
///   subscriptions only at the sink's next flush: `send` and `send_all`
///   flush, `feed` does not.
/// - **Backpressure**: at most [`max_in_flight`](Self::max_in_flight) bytes
///   (default [`DEFAULT_MAX_IN_FLIGHT`]; each item counts its bytes plus a
///   few dozen for its slot) are held by the sink at once, buffered or in
///   flight: `poll_ready` waits while the bound is reached, so a slow
///   actor slows the producer and nothing is dropped. An item larger than
///   the bound is accepted once nothing else is held.
/// - **Flush** (`poll_flush`, `SinkExt::flush`, and the end of
///   `SinkExt::send` and `send_all`) completes once every item sent is
///   applied: visible to every load, in the page cache. With
///   [`durable(true)`](Self::durable) it also makes them durable, with one
///   `fdatasync` of the file shared with concurrent flushes (group commit),
///   as [`MappedFile::flush`] does. `poll_close` flushes.
/// - **Failure**: an item that fails (out of bounds, the mapping closed)
///   stops the sink there. The next `poll_ready`, `poll_flush` or
///   `poll_close` returns [`Error::SinkItem`] with the item's offset, the
///   number of items applied before it and the cause; the file then holds
///   exactly those items (nothing sent after the failing one is applied),
///   and every later call fails with [`Error::Closed`]. A failed durable
///   sync is returned as is ([`Error::Io`]; the mapping is poisoned).
/// - **Leases**: an item waits while a lease or an earlier request holds
///   its bytes, as an `update` does, and the items after it wait behind
///   it. A task that holds a lease on bytes it sends to its own sink never
///   finishes the flush.
///
/// On a read-only mapping the first call fails with [`Error::ReadOnly`].
/// Batched items are stored through the mapping also on an
/// [`OpenOptions::write_through`](crate::OpenOptions::write_through) open
/// (items sent alone, as `update`s, follow that option). It is `Send` and
/// `Unpin`.
///
/// # Cancel safety
///
/// - A dropped `send` (or `feed`) future either had not handed its item to
///   the sink (the item is dropped, nothing else changes) or had (the item
///   stays in the sink and is applied by the next flush). A dropped flush
///   loses nothing: the sink carries on where it was. A dropped `send_all`
///   keeps every item it handed over; the one item it may hold itself
///   (taken from the stream while the sink was full) goes with it, as
///   with any `Sink`.
/// - Dropping the sink drops the items it still buffers for the actor
///   (never applied; the small items it gathered to store itself it
///   stores); of the batch in flight, a prefix may have been applied. The
///   file always holds a prefix of what was sent.
pub struct UpdateSink {
    pipe: Pipe<Updates>,
    file: MappedFile,
    durable: bool,
    /// Items applied when the last durable flush began.
    synced: u64,
    /// A durable flush's sync, and the items it covers.
    syncing: Option<(BoxFuture<'static, Result<()>>, u64)>,
    /// Items accepted since the sink last spent the task's budget.
    unbudgeted: u32,
    /// Items stored here whose changes the feed may still hold
    /// (`MappedFile::update_held`).
    held: bool,
    /// Small items accepted while nothing of the sink was buffered or on
    /// its way, to be stored together by this task (at `STAGED_MAX`, before
    /// any other item, at a flush and when the sink is dropped).
    staged: Vec<(u64, Bytes)>,
}

impl UpdateSink {
    /// Stores the staged items (in order, one gate entry); what the direct
    /// path refuses goes the batched way, still ahead of everything sent
    /// after it.
    fn store_staged(&mut self) -> Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let stored = self.file.update_fast_run(&self.staged);
        for _ in 0..stored {
            self.pipe.applied_now();
        }
        let mut rest = self.staged.drain(stored..);
        let sent = rest.try_for_each(|item| self.pipe.start_send(item));
        drop(rest);
        self.staged.clear();
        sent
    }

    /// Delivers the changes of the items this sink stored and the feed
    /// still holds.
    fn deliver_held(&mut self) {
        if std::mem::take(&mut self.held) {
            self.file.shared().feed.deliver_held();
        }
    }

    /// With `true`, every flush (and close) also makes the applied items
    /// durable. Default `false`.
    pub fn durable(mut self, durable: bool) -> UpdateSink {
        self.durable = durable;
        self
    }

    /// The most bytes the sink holds at once, buffered and in flight
    /// (default [`DEFAULT_MAX_IN_FLIGHT`]; 0 means 1: one item at a time).
    pub fn max_in_flight(mut self, bytes: usize) -> UpdateSink {
        self.pipe.set_max_in_flight(bytes);
        self
    }

    /// How many items of this sink have been applied.
    pub fn applied(&self) -> u64 {
        self.pipe.applied()
    }

    /// The mapping it writes to.
    pub fn file(&self) -> &MappedFile {
        &self.file
    }
}

impl Sink<(u64, Bytes)> for UpdateSink {
    type Error = Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        // Items stored directly (`start_send`) never make the sink wait: it
        // spends the task's scheduling budget instead, one unit every
        // `BUDGET_EVERY` items, so that `send_all` of a stream that is
        // always ready still yields to the runtime.
        if self.unbudgeted >= BUDGET_EVERY {
            let coop = ready!(tokio::task::coop::poll_proceed(cx));
            coop.made_progress();
            self.unbudgeted = 0;
        }
        self.unbudgeted += 1;
        self.pipe.poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: (u64, Bytes)) -> Result<()> {
        let this = &mut *self;
        // With nothing of this sink on its way, a small item is stored
        // through the direct path at once (the gate open, no subscription
        // of its bytes): in order, and with no request at all. Anything
        // else (and every error) goes the batched way.
        if this.pipe.may_apply_now()? {
            if this.file.may_store_direct(item.0, item.1.len()) {
                if this.staged.capacity() == 0 {
                    this.staged.reserve_exact(STAGED_MAX);
                }
                this.staged.push(item);
                if this.staged.len() >= STAGED_MAX {
                    this.store_staged()?;
                }
                return Ok(());
            }
            this.store_staged()?;
            if !this.pipe.may_apply_now()? {
                return this.pipe.start_send(item);
            }
            // Watched by many subscriptions: stored here, its change held
            // until the sink flushes (or enough are held).
            if this.file.update_held(item.0, &item.1) {
                this.pipe.applied_now();
                this.held = true;
                return Ok(());
            }
        }
        this.pipe.start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = &mut *self;
        this.store_staged()?;
        this.deliver_held();
        loop {
            let sent = this.pipe.poll_sent(cx);
            // What this sink published itself is told now.
            this.pipe.launcher_mut().wake_subscribers();
            ready!(sent)?;
            if !this.durable {
                return Poll::Ready(Ok(()));
            }
            let Some((syncing, covers)) = this.syncing.as_mut() else {
                let applied = this.pipe.applied();
                if this.synced == applied {
                    return Poll::Ready(Ok(()));
                }
                // Covers every item applied before it starts.
                let file = this.file.clone();
                this.syncing = Some((Box::pin(async move { file.flush().await }), applied));
                continue;
            };
            let synced = ready!(poll_boxed(syncing, cx));
            let covers = *covers;
            this.syncing = None;
            match synced {
                Ok(()) => this.synced = covers,
                Err(err) => return Poll::Ready(Err(this.pipe.fail(err))),
            }
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.pipe.is_closed() && self.syncing.is_none() {
            return Poll::Ready(Ok(()));
        }
        ready!(self.as_mut().poll_flush(cx))?;
        self.pipe.close();
        Poll::Ready(Ok(()))
    }
}

impl Drop for UpdateSink {
    fn drop(&mut self) {
        // What was accepted while nothing was on its way is stored, as it
        // would have been at once (a prefix of what was sent, still).
        let _ = self.store_staged();
        self.deliver_held();
    }
}

impl fmt::Debug for UpdateSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.pipe.debug("UpdateSink", f)
    }
}
