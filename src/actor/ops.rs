//! The inline operations, one function each: the actor has admitted the
//! request and drained the direct path. Small copies run here; large ones,
//! `pwrite`s and prefaulting run on the blocking pool under a temporary
//! lease, so that later requests for the same bytes keep their order.

use std::os::unix::fs::FileExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use bytes::Bytes;

use super::group_commit::Plan;
use super::write_method::WriteMethod;
use super::Actor;
use crate::blocking;
use crate::error::{Error, Result};
use crate::lease::{Grant, Release};
use crate::lease_table::{Access, Footprint};
use crate::region::{self, ByteRange};
use crate::request::{Inline, Modify, Owner, Reply};
use crate::stream::ChangeKind;
use crate::sys::LeasedBytes;
use crate::Mode;

/// The largest copy made in one piece: a load or update up to this size is
/// copied by the actor (or, written with `pwrite`, by the calling task) in
/// one go; a larger one is copied by the calling task under a temporary
/// lease, in chunks of this size that let other tasks run in between.
///
/// Measured on the reference machine (docs/PERFORMANCE.md): copying 64 KiB
/// costs 1.4 µs from cache and about 10 µs when its 16 pages take minor
/// faults, as fresh mapped pages do: short enough not to hold an executor
/// thread, long enough that a round trip (about 1 µs) is paid rarely.
pub const INLINE_COPY_MAX: usize = 64 * 1024;

impl Actor {
    /// Serves one admitted inline request.
    pub(super) fn serve_inline(&mut self, index: usize, op: Inline, owner: Owner) {
        match op {
            Inline::Load { offset, len, reply } => self.load(index, offset, len, owner, reply),
            Inline::Update {
                offset,
                data,
                reply,
            } => self.update(index, offset, data, owner, reply),
            Inline::Modify {
                offset,
                len,
                f,
                reply,
            } => {
                let _ = reply.send(self.modify(index, offset, len, f));
            }
            Inline::Lease {
                offset,
                len,
                access,
                mutable,
                reply,
                ..
            } => {
                // If the caller is gone, the grant drops here and releases.
                let _ = reply.send(self.lease(index, offset, len, access, mutable, owner));
            }
            Inline::Populate { offset, len, reply } => self.populate(index, offset, len, reply),
            Inline::Flush { range, reply } => self.flush(index, range, reply),
            Inline::Hint(hint) => self.serve_hint(index, hint),
            Inline::Batch(batch) => self.batch(index, batch, owner),
        }
    }

    fn check(&self, index: usize, offset: u64, len: u64) -> Result<ByteRange> {
        region::check(offset, len, self.opens[index].current.len())
    }

    fn load(&mut self, index: usize, offset: u64, len: u64, owner: Owner, reply: Reply<Bytes>) {
        let range = match self.check(index, offset, len) {
            Ok(range) => range,
            Err(err) => return drop(reply.send(Err(err))),
        };
        let fp = Footprint::new(range, Access::Read);
        if range.len() > INLINE_COPY_MAX as u64 {
            self.on_blocking_pool(index, fp, owner, reply, |grant| {
                Ok(Bytes::copy_from_slice(grant.bytes.bytes()))
            });
            return;
        }
        let cleared = self.table.clear(&fp).expect("admitted request is clear");
        let mut buf = vec![0u8; range.len() as usize];
        self.opens[index].current.read(&cleared, offset, &mut buf);
        let _ = reply.send(Ok(Bytes::from(buf)));
    }

    fn update(&mut self, index: usize, offset: u64, data: Bytes, owner: Owner, reply: Reply<()>) {
        let range = match self.check(index, offset, data.len() as u64) {
            Ok(range) => range,
            Err(err) => return drop(reply.send(Err(err))),
        };
        let fp = Footprint::new(range, Access::Write);
        let open = &self.opens[index];
        let small = data.len() <= INLINE_COPY_MAX;
        match (open.shared.method.get(), small) {
            (WriteMethod::Pwrite, true) => {
                // A small `pwrite` is a copy into the page cache, as a
                // store is; it marks only the blocks it covers dirty.
                let _cleared = self.table.clear(&fp).expect("admitted request is clear");
                let result = open
                    .file
                    .write_all_at(&data, offset)
                    .map_err(|e| Error::io("pwrite", &open.shared.path, e));
                self.tally.actor_wrote(data.len() as u64);
                if result.is_ok() {
                    let len = data.len() as u64;
                    self.changed(index, offset, len, ChangeKind::Update, Some(&data));
                }
                let _ = reply.send(result);
            }
            (WriteMethod::Pwrite, false) => {
                // Under a temporary lease, which keeps the request order.
                // Copies on the pool report their change from there, once
                // applied.
                let file = Arc::clone(&open.file);
                let shared = Arc::clone(&open.shared);
                self.on_blocking_pool(index, fp, owner, reply, move |_| {
                    file.write_all_at(&data, offset)
                        .map_err(|e| Error::io("pwrite", &shared.path, e))?;
                    shared.feed.publish_bytes(offset, ChangeKind::Update, &data);
                    Ok(())
                });
            }
            (WriteMethod::Store, true) => {
                let cleared = self.table.clear(&fp).expect("admitted request is clear");
                open.current.write(&cleared, offset, &data);
                self.tally.actor_wrote(data.len() as u64);
                let len = data.len() as u64;
                self.changed(index, offset, len, ChangeKind::Update, Some(&data));
                let _ = reply.send(Ok(()));
            }
            (WriteMethod::Store, false) => {
                let shared = Arc::clone(&open.shared);
                self.on_blocking_pool(index, fp, owner, reply, move |grant| {
                    grant.bytes.bytes_mut().copy_from_slice(&data);
                    shared.feed.publish_bytes(offset, ChangeKind::Update, &data);
                    Ok(())
                });
            }
        }
    }

    fn modify(&mut self, index: usize, offset: u64, len: u64, f: Modify) -> Result<()> {
        let range = self.check(index, offset, len)?;
        self.tally.actor_wrote(len);
        let cleared = self
            .table
            .clear(&Footprint::new(range, Access::Write))
            .expect("admitted request is clear");
        let result = self.opens[index]
            .current
            .with_mut(&cleared, offset, range.len() as usize, |bytes| {
                catch_unwind(AssertUnwindSafe(|| f(bytes)))
            })
            .map_err(|_| Error::Panicked { op: "modify" });
        // Reported even if `f` panicked: what it wrote before stays.
        self.changed_in_place(index, &cleared, offset, range.len(), ChangeKind::Modify);
        result
    }

    fn lease(
        &mut self,
        index: usize,
        offset: u64,
        len: u64,
        access: Access,
        mutable: bool,
        owner: Owner,
    ) -> Result<Grant> {
        let range = self.check(index, offset, len)?;
        self.grant(index, Footprint::new(range, access), mutable, owner)
    }

    /// Prefaults on the blocking pool. Needs no lease: it changes no byte,
    /// and a page that cannot be faulted in (cut by a shrink meanwhile) is
    /// an error from `madvise`, not a signal.
    fn populate(&mut self, index: usize, offset: u64, len: u64, reply: Reply<()>) {
        if let Err(err) = self.check(index, offset, len) {
            let _ = reply.send(Err(err));
            return;
        }
        let generation = Arc::clone(&self.opens[index].current);
        let path = self.opens[index].shared.path.clone();
        blocking::detach(move || {
            let result = generation
                .populate(offset, len)
                .map_err(|e| Error::io("madvise", &path, e));
            let _ = reply.send(result);
        });
    }

    /// Queues a flush for the group commit (or answers it at once: a
    /// mapping that never writes the file, an empty range, a poisoned file).
    pub(super) fn flush(&mut self, index: usize, range: Option<(u64, u64)>, reply: Reply<()>) {
        let open = &self.opens[index];
        let plan = match range {
            None => Plan::Full,
            Some((offset, len)) => match self.check(index, offset, len) {
                Ok(range) => Plan::Range(open.id, range),
                Err(err) => return drop(reply.send(Err(err))),
            },
        };
        // Anonymous memory has nothing to be durable on.
        if open.mode() != Mode::ReadWrite || open.hints.is_anonymous() {
            return drop(reply.send(Ok(())));
        }
        if let Plan::Range(_, range) = plan {
            if range.len() == 0 {
                return drop(reply.send(Ok(())));
            }
        }
        if let Some(err) = open.shared.poisoned() {
            return drop(reply.send(Err(err)));
        }
        // How updates should reach the page cache from now on depends on
        // how many came between flushes (`write_method.rs`).
        let writes = self.tally.sync.mark_flush(self.tally.total(&self.gate));
        for other in &self.opens {
            other.shared.method.flushed_after(writes);
        }
        let open = &self.opens[index];
        self.commit.push(plan, (open.id, Some(reply)));
    }

    /// Runs `work` on the blocking pool under a temporary lease of `fp`,
    /// then releases the lease and answers from there. Later requests for
    /// the same bytes wait for the release, so the order of requests holds
    /// although the actor goes on serving others meanwhile.
    fn on_blocking_pool<T: Send + 'static>(
        &mut self,
        index: usize,
        fp: Footprint,
        owner: Owner,
        reply: Reply<T>,
        work: impl FnOnce(&mut Grant) -> Result<T> + Send + 'static,
    ) {
        let mutable = fp.access != Access::Read;
        match self.grant(index, fp, mutable, owner) {
            Ok(mut grant) => blocking::detach(move || {
                let result = work(&mut grant);
                drop(grant);
                let _ = reply.send(result);
            }),
            Err(err) => {
                let _ = reply.send(Err(err));
            }
        }
    }

    /// Registers a lease on the current generation.
    pub(super) fn grant(
        &mut self,
        index: usize,
        fp: Footprint,
        mutable: bool,
        owner: Owner,
    ) -> Result<Grant> {
        let Some(ticket) = self.table.register(fp, owner) else {
            return Err(Error::Conflict {
                op: "lease",
                offset: fp.range.start,
                len: fp.range.len(),
            });
        };
        let release = Release::new(ticket.id(), self.notices_tx.clone());
        let generation = &self.opens[index].current;
        match LeasedBytes::new(Arc::clone(generation), &ticket, mutable) {
            Some(bytes) => Ok(Grant {
                bytes,
                offset: fp.range.start,
                _release: release,
            }),
            None => {
                // Dropping `release` unregisters the ticket.
                drop(release);
                Err(Error::OutOfBounds {
                    offset: fp.range.start,
                    len: fp.range.len(),
                    file_len: generation.len(),
                })
            }
        }
    }
}
