//! The actor's side of an [`Appender`](crate::Appender): the cursors, and
//! how a request of records is reserved, grown for, written and made
//! durable.
//!
//! - **The cursor** of each appender lives here, keyed by the appender's
//!   id (its clones share it). Requests reach the actor in the order it
//!   serves them, and it reserves `[next, next + len)` for each in that
//!   order: a record's place is decided by the actor alone.
//! - **Growth**: a request that would pass the end of the file first grows
//!   it by whole `grow_step`s (the resize protocol: blocks are reserved
//!   before the length changes, so a full disk is `ENOSPC` from the append,
//!   never a `SIGBUS`). A failed grow fails the request before anything is
//!   reserved: the cursor stays, and no record straddles the old end.
//! - **Writing**: records of up to [`INLINE_COPY_MAX`] bytes in all are
//!   copied into the page cache by the actor: stored through the mapping,
//!   or written with one `pwrite` each once the open writes with `pwrite`
//!   (`write_method.rs`: frequent flushes, as durable appends make; a small
//!   `pwrite` is a copy into the page cache, as a store is, and it dirties
//!   only the blocks it covers). Larger ones are written on the blocking
//!   pool under a temporary lease, which the actor awaits: records are
//!   written in the order they were reserved.
//! - **Leases**: if a lease covers the bytes at the cursor, the request
//!   keeps its place and waits in the lease table's queue; the cursor's
//!   later requests queue behind it (their footprint reaches back to its
//!   start), so records are still written in order.
//! - **Durability**: a durable request joins the group commit once its
//!   records are written. Every record before it was written earlier, so
//!   the sync that answers it covers them too: an acknowledged record is
//!   never behind a hole.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use tokio::sync::{oneshot, watch};

use super::batch::internal_request_id;
use super::serve::{Admitted, Pending};
use super::write_method::WriteMethod;
use super::{Actor, INLINE_COPY_MAX};
use crate::blocking;
use crate::error::{Error, Result};
use crate::lease_table::{Access, Footprint};
use crate::region::ByteRange;
use crate::request::{OnConflict, Owner, Reply, ResizeKind};
use crate::stream::inbox::Draft;
use crate::stream::ChangeKind;
use crate::Mode;

/// What handles read of one cursor without a round trip; the actor is its
/// one writer.
#[derive(Debug)]
pub(crate) struct Cursor {
    id: u64,
    start: u64,
    /// End of the records written.
    position: AtomicU64,
    /// End of the records known durable.
    durable: AtomicU64,
    /// `durable`, for tailing readers.
    watch: watch::Sender<u64>,
}

impl Cursor {
    /// A new cursor at `start`.
    pub(crate) fn new(start: u64) -> Arc<Cursor> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Arc::new(Cursor {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            start,
            position: AtomicU64::new(start),
            durable: AtomicU64::new(start),
            watch: watch::Sender::new(start),
        })
    }

    pub(crate) fn position(&self) -> u64 {
        self.position.load(Ordering::Acquire)
    }

    pub(crate) fn durable_position(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.watch.subscribe()
    }

    /// Everything up to `end` is durable: moves the durable end forward
    /// (never back) and tells the watchers.
    pub(crate) fn durable_to(&self, end: u64) {
        let before = self.durable.fetch_max(end, Ordering::AcqRel);
        if end > before {
            self.watch.send_if_modified(|v| {
                let moved = end > *v;
                *v = (*v).max(end);
                moved
            });
        }
    }
}

/// Records to append at a cursor (`Request::Append`).
pub(crate) struct AppendRequest {
    pub(crate) cursor: Arc<Cursor>,
    /// Written back to back: one record, or the items of an append sink.
    pub(crate) records: Vec<Bytes>,
    pub(crate) grow_step: u64,
    pub(crate) durable: bool,
    /// The offset reserved for the first record, once the actor has
    /// reserved it (a request waiting for a lease keeps its place).
    reserved: Option<u64>,
    pub(crate) reply: Reply<Appended>,
}

/// The answer to an append.
#[derive(Debug)]
pub(crate) struct Appended {
    /// Offset of the first record.
    pub(crate) offset: u64,
    /// End of the last one.
    pub(crate) end: u64,
    /// For a durable append: the outcome of the sync that covers it.
    pub(crate) synced: Option<oneshot::Receiver<Result<()>>>,
}

impl AppendRequest {
    pub(crate) fn new(
        cursor: Arc<Cursor>,
        records: Vec<Bytes>,
        grow_step: u64,
        durable: bool,
        reply: Reply<Appended>,
    ) -> AppendRequest {
        AppendRequest {
            cursor,
            records,
            grow_step,
            durable,
            reserved: None,
            reply,
        }
    }

    /// Whether it may be skipped: its caller is gone and it holds no place
    /// (a reserved place is always written, or the log would have a hole).
    pub(crate) fn abandoned(&self) -> bool {
        self.reserved.is_none() && self.reply.is_closed()
    }

    pub(crate) fn fail(self, err: Error) {
        let _ = self.reply.send(Err(err));
    }

    fn len(&self) -> u64 {
        self.records.iter().map(|r| r.len() as u64).sum()
    }
}

/// The actor's cursors.
#[derive(Debug, Default)]
pub(super) struct Appends {
    cursors: HashMap<u64, CursorState>,
}

#[derive(Debug)]
struct CursorState {
    /// Where the next record goes.
    next: u64,
    /// Requests of this cursor waiting in the lease table, and the start
    /// of the first (later ones queue behind it).
    queued: usize,
    blocked_from: u64,
    /// Gone once every clone of the appender is dropped.
    facts: Weak<Cursor>,
}

impl Appends {
    fn state(&mut self, cursor: &Arc<Cursor>) -> &mut CursorState {
        if !self.cursors.contains_key(&cursor.id) {
            // Forget the cursors of appenders that are gone.
            self.cursors.retain(|_, s| s.facts.strong_count() > 0);
        }
        self.cursors
            .entry(cursor.id)
            .or_insert_with(|| CursorState {
                next: cursor.start,
                queued: 0,
                blocked_from: cursor.start,
                facts: Arc::downgrade(cursor),
            })
    }
}

/// The actor's cursors, made on first use.
fn cursors(slot: &mut Option<Box<Appends>>) -> &mut Appends {
    slot.get_or_insert_with(Box::default)
}

/// The length a file of `len` bytes grows to so that `end` fits: whole
/// steps of `step`.
fn grown_len(len: u64, end: u64, step: u64) -> u64 {
    let steps = (end - len).div_ceil(step);
    steps
        .checked_mul(step)
        .and_then(|n| len.checked_add(n))
        .unwrap_or(u64::MAX)
}

impl Actor {
    /// Serves an append: reserves its place (growing the file first if it
    /// must), then writes it, or queues it in its place.
    pub(super) async fn append(&mut self, index: usize, mut req: Box<AppendRequest>, owner: Owner) {
        let mode = self.opens[index].mode();
        if !mode.is_writable() {
            return req.fail(Error::ReadOnly { op: "append", mode });
        }
        if let Some(at) = req.reserved {
            // Out of the queue: its bytes are free now.
            let state = cursors(&mut self.appends).state(&req.cursor);
            state.queued -= 1;
            return self.write_append(index, at, req, owner).await;
        }
        let total = req.len();
        let at = cursors(&mut self.appends).state(&req.cursor).next;
        let file_len = self.opens[index].current.len();
        let Some(end) = at.checked_add(total) else {
            return req.fail(Error::OutOfBounds {
                offset: at,
                len: total,
                file_len,
            });
        };
        if end > file_len {
            if let Err(err) = self.grow_for(index, mode, at, end, req.grow_step).await {
                return req.fail(err);
            }
        }
        let state = cursors(&mut self.appends).state(&req.cursor);
        state.next = end;
        req.reserved = Some(at);
        let record = Footprint::new(ByteRange { start: at, end }, Access::Write);
        if state.queued == 0 && self.table.admits(&record, &owner) {
            return self.write_append(index, at, req, owner).await;
        }
        // Keep the place: wait behind what holds the bytes, and behind the
        // cursor's earlier waiting requests.
        if state.queued == 0 {
            state.blocked_from = at;
        }
        state.queued += 1;
        let behind = ByteRange {
            start: state.blocked_from,
            end: end.max(state.blocked_from + 1),
        };
        let pending = Pending::new(
            Admitted::Append(req),
            tracing::Span::current(),
            owner,
            self.opens[index].id,
        );
        let fp = Footprint::new(behind, Access::Write);
        self.wait_or_refuse(fp, internal_request_id(), pending, OnConflict::Wait);
    }

    /// Grows the file so that `[at, end)` fits, by whole steps.
    async fn grow_for(
        &mut self,
        index: usize,
        mode: Mode,
        at: u64,
        end: u64,
        step: u64,
    ) -> Result<()> {
        let file_len = self.opens[index].current.len();
        if step == 0 {
            // `grow_step(0)`: a fixed-size log.
            return Err(Error::OutOfBounds {
                offset: at,
                len: end - at,
                file_len,
            });
        }
        if mode != Mode::ReadWrite {
            return Err(Error::ReadOnly {
                op: "append (growing the file)",
                mode,
            });
        }
        let new_len = grown_len(file_len, end, step);
        crate::disk::check_len(new_len)?;
        // Never shrinks, even if another open grew the file meanwhile.
        self.resize(index, new_len, ResizeKind::AtLeast).await
    }

    /// Writes the request's records at `at` (its reserved place, whose
    /// bytes are clear), publishes them, and answers (a durable request
    /// once the group commit has synced it).
    async fn write_append(&mut self, index: usize, at: u64, req: Box<AppendRequest>, owner: Owner) {
        let total = req.len();
        let end = at + total;
        let written = self
            .write_records(index, at, end, &req.records, owner)
            .await;
        if let Err(err) = written {
            // Nothing reserved after it can have been written: give the
            // place back if nothing was reserved after it either.
            let state = cursors(&mut self.appends).state(&req.cursor);
            if state.next == end {
                state.next = at;
            }
            return req.fail(err);
        }
        req.cursor.position.fetch_max(end, Ordering::AcqRel);
        let feed = &self.opens[index].shared.feed;
        if feed.is_watched() {
            let with_bytes = feed.wants_bytes();
            let mut offset = at;
            let drafts: Vec<Draft> = (req.records.iter())
                .map(|r| {
                    let d = if with_bytes {
                        Draft::with_bytes(offset, ChangeKind::Append, r)
                    } else {
                        Draft::new(offset, r.len() as u64, ChangeKind::Append)
                    };
                    offset += r.len() as u64;
                    d
                })
                .collect();
            feed.publish(drafts);
        }
        let synced = req.durable.then(|| {
            let (tx, rx) = oneshot::channel();
            self.flush(index, None, tx);
            rx
        });
        let _ = req.reply.send(Ok(Appended {
            offset: at,
            end,
            synced,
        }));
    }

    /// Writes `records` back to back at `[at, end)`.
    async fn write_records(
        &mut self,
        index: usize,
        at: u64,
        end: u64,
        records: &[Bytes],
        owner: Owner,
    ) -> Result<()> {
        let fp = Footprint::new(ByteRange { start: at, end }, Access::Write);
        let open = &self.opens[index];
        let write_through = open.shared.method.get() == WriteMethod::Pwrite;
        if end - at <= INLINE_COPY_MAX as u64 {
            // A small `pwrite` is a copy into the page cache, as a store is
            // (`ops.rs`): both run here.
            let cleared = self.table.clear(&fp).expect("admitted append is clear");
            let mut offset = at;
            for record in records {
                if write_through {
                    open.file
                        .write_all_at(record, offset)
                        .map_err(|e| Error::io("pwrite", &open.shared.path, e))?;
                } else {
                    open.current.write(&cleared, offset, record);
                }
                offset += record.len() as u64;
            }
            // Counted for the flush policies; the temporary lease below
            // counts when it is released.
            self.tally.actor_wrote(end - at);
            return Ok(());
        }
        let file = Arc::clone(&open.file);
        let path = open.shared.path.clone();
        let records = records.to_vec();
        let mut grant = self.grant(index, fp, true, owner)?;
        let written = blocking::run("append", move || {
            let mut offset = 0usize;
            for record in &records {
                if write_through {
                    file.write_all_at(record, at + offset as u64)
                        .map_err(|e| Error::io("pwrite", &path, e))?;
                } else {
                    grant.bytes.bytes_mut()[offset..offset + record.len()].copy_from_slice(record);
                }
                offset += record.len();
            }
            drop(grant);
            Ok(())
        })
        .await;
        // The temporary lease's release is on its way: apply it now, so
        // that the cursor's next request finds its bytes free.
        self.apply_notices();
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grown_len_takes_whole_steps() {
        assert_eq!(grown_len(100, 101, 50), 150);
        assert_eq!(grown_len(100, 150, 50), 150);
        assert_eq!(grown_len(100, 151, 50), 200);
        assert_eq!(grown_len(0, 1, 1 << 20), 1 << 20);
        assert_eq!(grown_len(u64::MAX - 10, u64::MAX, 100), u64::MAX);
    }

    #[test]
    fn cursors_of_dropped_appenders_are_forgotten() {
        let mut appends = Appends::default();
        let a = Cursor::new(10);
        assert_eq!(appends.state(&a).next, 10);
        appends.state(&a).next = 20;
        let b = Cursor::new(0);
        appends.state(&b);
        drop(a);
        let c = Cursor::new(5);
        appends.state(&c);
        assert_eq!(appends.cursors.len(), 2, "a's state is gone");
        assert_eq!(appends.state(&b).next, 0);
    }

    #[test]
    fn durable_position_only_moves_forward() {
        let c = Cursor::new(100);
        let mut rx = c.watch();
        c.durable_to(150);
        c.durable_to(120);
        assert_eq!(c.durable_position(), 150);
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 150);
        c.durable_to(150);
        assert!(!rx.has_changed().unwrap());
    }
}
