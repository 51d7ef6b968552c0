//! The actor's side of an [`UpdateSink`](crate::UpdateSink): a batch of
//! updates applied in order, one request for the lot.
//!
//! Each item is checked against the lease table on its own (a batch's items
//! may be scattered over the whole file; their hull would collide with
//! every lease in between). An item whose bytes are taken stops the batch
//! there: the rest of it waits in the table's queue, behind what holds
//! that item's bytes, and carries on from that item once they are free. A
//! sink has at most one batch in flight, so nothing of the same sink can
//! overtake the waiting rest.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::serve::{Admitted, Pending};
use super::Actor;
use crate::error::Error;
use crate::lease_table::{Access, Footprint};
use crate::region;
use crate::request::{Inline, OnConflict, Owner, Reply};
use crate::stream::feed::Draft;
use crate::stream::ChangeKind;

/// A batch of updates (`Inline::Batch`).
pub(crate) struct Batch {
    pub(crate) items: Vec<(u64, Bytes)>,
    /// The first item not applied yet: a batch that waited for a lease
    /// carries on from here.
    pub(crate) next: usize,
    pub(crate) reply: Reply<BatchDone>,
}

/// How a batch ended.
#[derive(Debug)]
pub(crate) struct BatchDone {
    /// Items of the batch applied, from the first.
    pub(crate) applied: usize,
    /// The item that stopped the batch: its offset, and why.
    pub(crate) failed: Option<(u64, Error)>,
}

impl Batch {
    pub(crate) fn new(items: Vec<(u64, Bytes)>, reply: Reply<BatchDone>) -> Batch {
        Batch {
            items,
            next: 0,
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

impl Actor {
    /// Applies the batch's items in order from `batch.next`, until one
    /// fails (reported with its offset) or waits for its bytes.
    pub(super) fn batch(&mut self, index: usize, mut batch: Batch, owner: Owner) {
        let open = &self.opens[index];
        if !open.mode().is_writable() {
            let mode = open.mode();
            return batch.fail(Error::ReadOnly {
                op: "update_sink",
                mode,
            });
        }
        let feed = &open.shared.feed;
        let (watched, with_bytes) = (feed.is_watched(), feed.wants_bytes());
        let mut drafts = Vec::new();
        let mut waits = None;
        let mut failed = None;
        while let Some((offset, data)) = batch.items.get(batch.next) {
            let file_len = self.opens[index].current.len();
            let range = match region::check(*offset, data.len() as u64, file_len) {
                Ok(range) => range,
                Err(err) => {
                    failed = Some(err);
                    break;
                }
            };
            let fp = Footprint::new(range, Access::Write);
            if !self.table.admits(&fp, &owner) {
                waits = Some(fp);
                break;
            }
            let cleared = self.table.clear(&fp).expect("admitted access is clear");
            self.opens[index].current.write(&cleared, *offset, data);
            if watched {
                drafts.push(if with_bytes {
                    Draft::with_bytes(*offset, ChangeKind::Update, data)
                } else {
                    Draft::new(*offset, data.len() as u64, ChangeKind::Update)
                });
            }
            batch.next += 1;
        }
        self.opens[index].shared.feed.publish(&drafts);
        tracing::trace!(applied = batch.next, "batch");
        if let Some(err) = failed {
            return batch.fail(err);
        }
        match waits {
            Some(fp) => {
                let pending = Pending::new(
                    Admitted::Inline(Inline::Batch(batch)),
                    tracing::Span::current(),
                    owner,
                    self.opens[index].id,
                );
                self.wait_or_refuse(fp, internal_request_id(), pending, OnConflict::Wait);
            }
            None => {
                let _ = batch.reply.send(Ok(BatchDone {
                    applied: batch.next,
                    failed: None,
                }));
            }
        }
    }
}
