//! The actor's side of an [`UpdateSink`](crate::UpdateSink): a batch of
//! updates applied in order, one request for the lot.
//!
//! - Each item is checked against the lease table on its own (a batch's
//!   items may be scattered over the whole file; their hull would collide
//!   with every lease in between), unless nothing is leased or waiting at
//!   all: then one check covers the batch.
//! - An item whose bytes are taken stops the batch there: the rest of it
//!   waits in the table's queue, behind what holds that item's bytes, and
//!   carries on from that item once they are free.
//! - A sink may have several batches in flight. Its [`Line`] keeps them in
//!   order: while one of its batches waits in the queue, the sink's later
//!   batches wait in the line (not in the table), and run, in order, once
//!   it is done; once one of its items has failed, its later batches are
//!   refused unapplied. So the file always holds a prefix of what the sink
//!   sent.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Weak};

use bytes::Bytes;

use super::serve::{Admitted, Pending};
use super::Actor;
use crate::error::Error;
use crate::lease_table::{Access, Footprint};
use crate::region::{self, ByteRange};
use crate::request::{Inline, OnConflict, Owner, Reply};
use crate::stream::inbox::Draft;
use crate::stream::ChangeKind;
use crate::sys::streaming;

/// The order of one sink's batches, as the actor keeps it. The sink owns
/// it; batches point to it weakly (a batch waiting in the line must not
/// keep the line alive: once the sink is gone, so is all it sent).
#[derive(Debug, Default)]
pub(crate) struct Line {
    state: Mutex<LineState>,
}

#[derive(Debug, Default)]
struct LineState {
    /// One of the sink's batches waits in the lease table's queue.
    parked: bool,
    /// An item failed: nothing after it may be applied.
    failed: bool,
    /// Batches that arrived while one was parked, in order.
    behind: VecDeque<Batch>,
}

impl Line {
    fn state(&self) -> std::sync::MutexGuard<'_, LineState> {
        // Only the actor locks it; a poisoned lock holds plain data.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A batch of updates (`Inline::Batch`).
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) items: Vec<(u64, Bytes)>,
    /// The first item not applied yet: a batch that waited for a lease
    /// carries on from here.
    pub(crate) next: usize,
    /// Whether it comes out of the lease table's queue (it was parked).
    resumed: bool,
    line: Weak<Line>,
    pub(crate) reply: Reply<BatchDone>,
}

/// How a batch ended.
#[derive(Debug)]
pub(crate) struct BatchDone {
    /// Items of the batch applied, from the first.
    pub(crate) applied: usize,
    /// The item that stopped the batch: its offset, and why.
    pub(crate) failed: Option<(u64, Error)>,
    /// The items, handed back: the sink's task frees them where it
    /// allocated them (freeing on the actor's thread makes the allocator's
    /// arenas contend).
    pub(crate) items: Vec<(u64, Bytes)>,
}

impl Batch {
    pub(crate) fn new(
        items: Vec<(u64, Bytes)>,
        line: Weak<Line>,
        reply: Reply<BatchDone>,
    ) -> Batch {
        Batch {
            items,
            next: 0,
            resumed: false,
            line,
            reply,
        }
    }

    pub(crate) fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    /// Answers that the batch stopped at its next item, for `err`: the items
    /// before it stay applied.
    pub(crate) fn fail(self, err: Error) {
        let offset = self.items.get(self.next).map_or(0, |(offset, _)| *offset);
        let _ = self.reply.send(Ok(BatchDone {
            applied: self.next,
            failed: Some((offset, err)),
            items: self.items,
        }));
    }
}

/// An id for a request the actor queues itself (the rest of a batch, an
/// append keeping its place): above every id a handle gives out, so that no
/// caller's `Notice::Abandoned` can name it.
pub(super) fn internal_request_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    (1 << 63) | NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Changes published at once at most: a list of this many stays well below
/// the allocator's `mmap` threshold (a larger one would be mapped and
/// faulted in afresh for every batch).
const PUBLISH_MAX: usize = 512;

/// Where applying a batch got to.
enum Outcome {
    Done,
    Failed(Error),
    /// This item's bytes are taken.
    Waits(Footprint),
}

impl Actor {
    /// Serves a batch: in its sink's order, applied from `batch.next` until
    /// an item fails (reported with its offset) or waits for its bytes.
    pub(super) fn batch(&mut self, index: usize, batch: Batch, owner: Owner) {
        let Some(line) = batch.line.upgrade() else {
            // The sink is gone, and with it whoever waits for this.
            return;
        };
        if !batch.resumed {
            let mut state = line.state();
            if state.failed {
                drop(state);
                return batch.fail(Error::Closed);
            }
            if state.parked {
                state.behind.push_back(batch);
                return;
            }
        }
        let mut next = Some(batch);
        while let Some(mut batch) = next.take() {
            match self.apply(index, &mut batch, &owner) {
                Outcome::Done => {
                    let _ = batch.reply.send(Ok(BatchDone {
                        applied: batch.next,
                        failed: None,
                        items: batch.items,
                    }));
                    let mut state = line.state();
                    state.parked = false;
                    next = state.behind.pop_front();
                }
                Outcome::Failed(err) => {
                    batch.fail(err);
                    let behind = {
                        let mut state = line.state();
                        state.failed = true;
                        state.parked = false;
                        std::mem::take(&mut state.behind)
                    };
                    for later in behind {
                        later.fail(Error::Closed);
                    }
                }
                Outcome::Waits(fp) => {
                    line.state().parked = true;
                    batch.resumed = true;
                    let pending = Pending::new(
                        Admitted::Inline(Inline::Batch(batch)),
                        tracing::Span::current(),
                        owner,
                        self.opens[index].id,
                    );
                    self.wait_or_refuse(fp, internal_request_id(), pending, OnConflict::Wait);
                }
            }
        }
    }

    /// Applies the batch's items from `batch.next`, publishing them.
    fn apply(&mut self, index: usize, batch: &mut Batch, owner: &Owner) -> Outcome {
        let open = &self.opens[index];
        if !open.shared.writable {
            let mode = open.mode();
            return Outcome::Failed(Error::ReadOnly {
                op: "update_sink",
                mode,
            });
        }
        let feed = &open.shared.feed;
        let (watched, with_bytes) = (feed.is_watched(), feed.wants_bytes());
        let mut drafts = Vec::new();
        let remaining = batch.items.len() - batch.next;
        let mut outcome = Outcome::Done;
        let mut written = 0u64;
        // With nothing leased and nothing waiting, every item is clear: one
        // check for the batch instead of one per item.
        let everything = Footprint::new(ByteRange::tail(0), Access::Write);
        let idle = (self.table.is_idle())
            .then(|| self.table.clear(&everything))
            .flatten();
        let file_len = open.current.len();
        // Items of a KiB or more into a mapping larger than the cache are
        // stored past it, with one fence for the batch (as a sink's own
        // runs are, `MappedFile::update_fast_run`).
        let mut streamed = false;
        while let Some((offset, data)) = batch.items.get(batch.next) {
            let range = match region::check(*offset, data.len() as u64, file_len) {
                Ok(range) => range,
                Err(err) => {
                    outcome = Outcome::Failed(err);
                    break;
                }
            };
            let fp = Footprint::new(range, Access::Write);
            let cleared = match &idle {
                Some(cleared) => cleared,
                None if self.table.admits(&fp, owner) => {
                    &self.table.clear(&fp).expect("admitted access is clear")
                }
                None => {
                    outcome = Outcome::Waits(fp);
                    break;
                }
            };
            if streaming::pays(file_len, data.len()) {
                self.opens[index]
                    .current
                    .write_streaming_unfenced(cleared, *offset, data);
                streamed = true;
            } else {
                self.opens[index].current.write(cleared, *offset, data);
            }
            written += data.len() as u64;
            if watched {
                if drafts.len() == PUBLISH_MAX {
                    feed.publish(std::mem::take(&mut drafts));
                }
                if drafts.capacity() == 0 {
                    drafts.reserve_exact(remaining.min(PUBLISH_MAX));
                }
                drafts.push(Draft::of(*offset, ChangeKind::Update, data, with_bytes));
            }
            batch.next += 1;
        }
        if streamed {
            streaming::fence();
        }
        feed.publish(drafts);
        // Counted for the flush policies.
        self.tally.actor_wrote(written);
        tracing::trace!(applied = batch.next, "batch");
        outcome
    }
}
