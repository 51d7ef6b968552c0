//! The actor's side of the memory hints: starting write-back, advice, page
//! locks, huge pages, and what every new generation of an open inherits.
//!
//! None of these waits for leases: they change no byte. Each runs its
//! syscall on the blocking pool and answers from there; page locks go
//! through the open's lane (`locks.rs`), which keeps their order.
//!
//! **Locks across a resize.** Only an open's current generation is ever
//! locked. When a resize (or the first mapping of a joining open) makes a
//! new generation, the open's locks move to it before it is published: the
//! ranges that `lock` asked for, clipped to the new length, or the whole new
//! generation after `lock_all`; then the old generation is unlocked. If the
//! new generation cannot be locked (the limit), the resize still succeeds,
//! and the failure is logged. Closing an open unlocks it.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::locks::{Lane, Locked};
use super::{Actor, Open};
use crate::anonymous::Memory;
use crate::blocking;
use crate::error::{Error, Result};
use crate::hints::{Advice, Hint, LockOp};
use crate::region;
use crate::request::Reply;
use crate::sys::{self, page_size, Generation};
use crate::Mode;

/// What an open keeps for the hints: its options, what its memory is, and
/// its page locks.
#[derive(Debug)]
pub(crate) struct OpenHints {
    /// `OpenOptions::huge_pages`: every generation gets `MADV_HUGEPAGE`.
    huge_pages: bool,
    /// An anonymous mapping's memory, `None` for a file.
    memory: Option<Memory>,
    lane: Arc<Lane>,
    /// A lock call was ever queued: new generations must take the locks
    /// over (until then nothing can be locked, and a resize skips the
    /// lane).
    locking: bool,
}

impl OpenHints {
    pub(crate) fn new(huge_pages: bool, memory: Option<Memory>) -> OpenHints {
        OpenHints {
            huge_pages,
            memory,
            lane: Arc::default(),
            locking: false,
        }
    }

    pub(crate) fn is_anonymous(&self) -> bool {
        self.memory.is_some()
    }
}

impl Actor {
    /// Serves one admitted hint request.
    pub(super) fn serve_hint(&mut self, index: usize, hint: Hint) {
        match hint {
            Hint::ScheduleFlush { range, reply } => self.schedule_flush(index, range, reply),
            Hint::Advise {
                offset,
                len,
                advice,
                reply,
            } => self.advise(index, offset, len, advice, reply),
            Hint::Lock { op, reply } => self.lock_op(index, op, reply),
            Hint::HugeBacked { reply } => self.huge_backed(index, reply),
        }
    }

    /// `sync_file_range(SYNC_FILE_RANGE_WRITE)` on the blocking pool, for a
    /// read-write mapping of a file; an `Ok` no-op otherwise (once the range
    /// is checked).
    fn schedule_flush(&mut self, index: usize, range: Option<(u64, u64)>, reply: Reply<()>) {
        let open = &self.opens[index];
        let (offset, len) = match range {
            None => (0, open.current.len()),
            Some((offset, len)) => match region::check(offset, len, open.current.len()) {
                Ok(_) => (offset, len),
                Err(err) => return drop(reply.send(Err(err))),
            },
        };
        if open.mode() != Mode::ReadWrite || open.hints.is_anonymous() || len == 0 {
            return drop(reply.send(Ok(())));
        }
        let file = Arc::clone(&open.file);
        let path = open.shared.path.clone();
        blocking::detach(move || {
            let started = sys::hints::start_writeback(&file, offset, len)
                .map_err(|e| Error::io("sync_file_range", &path, e));
            let _ = reply.send(started);
        });
    }

    fn advise(&mut self, index: usize, offset: u64, len: u64, advice: Advice, reply: Reply<()>) {
        let open = &self.opens[index];
        if advice == Advice::DontNeed {
            if let Some(mapping) = discards(open) {
                let _ = reply.send(Err(Error::WouldDiscard {
                    op: "advise(DontNeed)",
                    mapping,
                }));
                return;
            }
        }
        if let Err(err) = region::check(offset, len, open.current.len()) {
            return drop(reply.send(Err(err)));
        }
        if len == 0 {
            return drop(reply.send(Ok(())));
        }
        let generation = Arc::clone(&open.current);
        let path = open.shared.path.clone();
        blocking::detach(move || {
            let advised = generation
                .advise(offset, len, advice)
                .map_err(|e| Error::io("madvise", &path, e));
            let _ = reply.send(advised);
        });
    }

    /// Queues a lock job on the open's lane; see the module docs.
    fn lock_op(&mut self, index: usize, op: LockOp, reply: Reply<()>) {
        let open = &mut self.opens[index];
        if let LockOp::Lock { offset, len } | LockOp::Unlock { offset, len } = op {
            if let Err(err) = region::check(offset, len, open.current.len()) {
                return drop(reply.send(Err(err)));
            }
        }
        open.hints.locking = true;
        let generation = Arc::clone(&open.current);
        let path = open.shared.path.clone();
        open.hints.lane.push(Box::new(move |locked: &mut Locked| {
            let _ = reply.send(apply(op, &generation, &path, locked));
        }));
    }

    /// Whether the current generation is backed by huge pages, from
    /// `/proc/self/smaps`, on the blocking pool.
    fn huge_backed(&mut self, index: usize, reply: Reply<bool>) {
        let generation = Arc::clone(&self.opens[index].current);
        let path = self.opens[index].shared.path.clone();
        blocking::detach(move || {
            let answer = match generation.address_range() {
                None => Ok(false),
                Some((start, end)) => crate::smaps::read_self()
                    .map(|smaps| crate::smaps::huge_backing(&smaps, start, end).any())
                    .map_err(|e| Error::io("read /proc/self/smaps", &path, e)),
            };
            // The generation stays mapped until the answer is known.
            drop(generation);
            let _ = reply.send(answer);
        });
    }

    /// What open `index`'s next generation inherits before it is published:
    /// the huge-page advice, and the page locks (moved from the current
    /// generation, which is then unlocked). Waits for lock jobs queued
    /// before it.
    pub(super) async fn prepare_generation(&mut self, index: usize, next: &Arc<Generation>) {
        let open = &self.opens[index];
        let (huge, locking) = (open.hints.huge_pages, open.hints.locking);
        if !huge && !locking {
            return;
        }
        let old = Arc::clone(&open.current);
        let next = Arc::clone(next);
        let path = open.shared.path.clone();
        let (done, finished) = oneshot::channel();
        open.hints.lane.push(Box::new(move |locked: &mut Locked| {
            if huge {
                advise_huge_pages(&next, &path);
            }
            if locking {
                carry(locked, &old, &next, &path);
            }
            let _ = done.send(());
        }));
        // A job that panicked has logged it: there is nothing else to do.
        let _ = finished.await;
    }

    /// Refuses a length that open `index`'s memory cannot have (a huge-page
    /// anonymous mapping keeps whole huge pages).
    pub(super) fn check_length(&self, index: usize, new_len: u64) -> Result<()> {
        let multiple = self.opens[index]
            .hints
            .memory
            .map_or(1, Memory::len_multiple);
        if new_len % multiple != 0 {
            return Err(Error::Misaligned {
                offset: new_len,
                align: multiple,
            });
        }
        Ok(())
    }
}

/// Unlocks an open that ends (after the lock jobs queued before), so that
/// leases still holding its generation do not keep its pages locked.
pub(super) async fn unlock_on_close(open: &Open) {
    if !open.hints.locking {
        return;
    }
    let generation = Arc::clone(&open.current);
    let path = open.shared.path.clone();
    let (done, finished) = oneshot::channel();
    open.hints.lane.push(Box::new(move |locked: &mut Locked| {
        if locked.any() {
            if let Err(err) = generation.unlock(0, generation.len()) {
                tracing::warn!(%err, path = %path.display(), "could not unlock a closed mapping");
            }
        }
        *locked = Locked::default();
        let _ = done.send(());
    }));
    let _ = finished.await;
}

/// `MADV_HUGEPAGE` on a new generation; a failure is logged (it is a hint).
pub(crate) fn advise_huge_pages(generation: &Generation, path: &Path) {
    if let Err(err) = generation.advise_huge_pages() {
        tracing::warn!(%err, path = %path.display(), "the kernel refused the huge-page advice");
    }
}

/// Why `DontNeed` would discard bytes of `open`, if it would: its memory
/// is the only copy of them.
fn discards(open: &Open) -> Option<&'static str> {
    if open.hints.is_anonymous() {
        Some("an anonymous mapping")
    } else if open.mode() == Mode::CopyOnWrite && open.current.is_writable() {
        Some("a writable copy-on-write mapping")
    } else {
        None
    }
}

/// `[offset, offset + len)` widened to whole pages, as file offsets.
fn pages(offset: u64, len: u64) -> (u64, u64) {
    let page = page_size() as u64;
    let start = offset - offset % page;
    // The range was checked against the generation, whose length is far
    // below `u64::MAX`: rounding up cannot overflow.
    let end = (offset + len).next_multiple_of(page);
    (start, end)
}

/// Runs one lock request on `generation` and records what it locked.
fn apply(op: LockOp, generation: &Generation, path: &Path, locked: &mut Locked) -> Result<()> {
    let whole = generation.len();
    match op {
        LockOp::Lock { offset, len } => {
            generation
                .lock(offset, len)
                .map_err(|e| lock_error("lock", pages(offset, len), path, e))?;
            if len > 0 && !locked.all {
                let (start, end) = pages(offset, len);
                locked.ranges.insert(start, end);
            }
        }
        LockOp::Unlock { offset, len } => {
            generation
                .unlock(offset, len)
                .map_err(|e| Error::io("munlock", path, e))?;
            if len > 0 {
                if locked.all {
                    locked.all = false;
                    locked.ranges.insert(0, pages(0, whole).1);
                }
                let (start, end) = pages(offset, len);
                locked.ranges.remove(start, end);
            }
        }
        LockOp::LockAll => {
            generation
                .lock(0, whole)
                .map_err(|e| lock_error("lock_all", pages(0, whole), path, e))?;
            *locked = Locked {
                all: true,
                ranges: Default::default(),
            };
        }
        LockOp::UnlockAll => {
            generation
                .unlock(0, whole)
                .map_err(|e| Error::io("munlock", path, e))?;
            *locked = Locked::default();
        }
    }
    Ok(())
}

/// The error of a failed `mlock`: the locked-memory limit for `ENOMEM` and
/// `EPERM`, an I/O error otherwise.
fn lock_error(
    op: &'static str,
    (start, end): (u64, u64),
    path: &Path,
    err: std::io::Error,
) -> Error {
    match err.raw_os_error() {
        Some(libc::ENOMEM | libc::EPERM) => Error::MemoryLockLimit {
            op,
            len: end - start,
            limit: sys::hints::memlock_limit(),
            source: err,
        },
        _ => Error::io("mlock", path, err),
    }
}

/// Moves the locks from `old` to `next`: the ranges clipped to the new
/// length, or all of it after `lock_all`; then unlocks `old`.
fn carry(locked: &mut Locked, old: &Generation, next: &Generation, path: &Path) {
    if !locked.any() {
        return;
    }
    let len = next.len();
    locked.ranges.clip(pages(0, len).1);
    let spans: Vec<(u64, u64)> = if locked.all {
        vec![(0, len)]
    } else {
        locked
            .ranges
            .iter()
            .map(|(start, end)| (start, end.min(len) - start))
            .collect()
    };
    for (offset, span) in spans {
        if let Err(err) = next.lock(offset, span) {
            tracing::warn!(%err, offset, len = span, path = %path.display(),
                "could not lock the new generation; its bytes stay unlocked");
        }
    }
    if let Err(err) = old.unlock(0, old.len()) {
        tracing::warn!(%err, path = %path.display(), "could not unlock the old generation");
    }
}
