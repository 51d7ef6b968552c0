//! The calls that tell the kernel how the mapping will be used, and the
//! ways to reach the file itself: write-back, advice, prewarm with
//! progress, page locks, huge pages, watching, the descriptor.
//!
//! None of them changes a byte, so none waits for leases (and none has a
//! `try_` twin): they queue behind nothing but the actor's channel.

use std::os::fd::{AsFd, BorrowedFd};

use futures::stream::{self, StreamExt};

use super::{request_span, MappedFile};
use crate::error::{Error, Result};
use crate::hints::{Advice, Hint, LockOp, PrewarmProgress, Progress};
use crate::region::{self, ByteRange};
use crate::request::{Inline, OnConflict, Reply, Request};
use crate::watch::Watch;

/// How much [`MappedFile::prewarm_progress`] faults in per step (steps end
/// at multiples of it, so every step but the first starts at one): a few
/// milliseconds of reading from an SSD, less from the page cache, so that a
/// progress bar moves smoothly while the cost of a step (one request and
/// one blocking-pool hand-off, tens of microseconds) stays around 1 %.
pub const PREWARM_STEP: u64 = 8 << 20;

impl MappedFile {
    /// Sends one hint request.
    async fn hint<T>(
        &self,
        op: &'static str,
        offset: u64,
        len: u64,
        make: impl FnOnce(Reply<T>) -> Hint,
    ) -> Result<T> {
        self.call(
            op,
            OnConflict::Wait,
            request_span(op, offset, len),
            |reply| Request::Inline(Inline::Hint(make(reply))),
        )
        .await
    }

    /// Starts writing the file's dirty pages back now, and returns without
    /// waiting for the writes to finish (`sync_file_range` with
    /// `SYNC_FILE_RANGE_WRITE`, on the blocking pool).
    ///
    /// **Not durable**: when it returns, the writes may still be queued; it
    /// neither waits for them, nor writes the file's metadata, nor flushes
    /// the device's cache. Use it to spread write-back out ahead of a
    /// [`flush`](Self::flush), which then has less left to write; only
    /// `flush` makes data survive power loss. An error of the write-back it
    /// starts is reported by the next `flush` (which then poisons the
    /// mapping), not here. On read-only, copy-on-write and anonymous
    /// mappings it is an `Ok` no-op.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] (`"sync_file_range"`) when the kernel refuses to start
    /// the write-back (`EIO`, `ENOSPC`); [`Error::Closed`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a write-back that was started goes on, which is
    /// harmless.
    pub async fn schedule_flush(&self) -> Result<()> {
        self.hint("schedule_flush", 0, self.len(), |reply| {
            Hint::ScheduleFlush { range: None, reply }
        })
        .await
    }

    /// [`schedule_flush`](Self::schedule_flush) for the pages covering
    /// `[offset, offset + len)` only. The range is checked like
    /// [`flush_range`](Self::flush_range)'s; an empty one does nothing.
    ///
    /// # Errors
    ///
    /// As [`schedule_flush`](Self::schedule_flush), plus
    /// [`Error::OutOfBounds`] unless `offset + len <= len()`.
    ///
    /// # Cancel safety
    ///
    /// As [`schedule_flush`](Self::schedule_flush).
    pub async fn schedule_flush_range(&self, offset: u64, len: u64) -> Result<()> {
        self.hint("schedule_flush_range", offset, len, |reply| {
            Hint::ScheduleFlush {
                range: Some((offset, len)),
                reply,
            }
        })
        .await
    }

    /// Tells the kernel how `[offset, offset + len)` will be used
    /// (`madvise`, on the blocking pool); see [`Advice`].
    ///
    /// The kernel works on whole pages: the start is widened down to its
    /// page, so the advice may also cover up to a page minus one byte
    /// before `offset` (and the rest of the last page). An empty range does
    /// nothing. The advice applies to the current mapping generation: a
    /// resize maps a new one, which starts with the default advice
    /// ([`Advice::Normal`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mmap_actor::Result<()> {
    /// use mmap_actor::{Advice, MappedFile};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let file = MappedFile::create(dir.path().join("log"), 1 << 20).await?;
    /// file.advise(0, file.len(), Advice::Sequential).await?;
    /// file.advise(4096, 100, Advice::WillNeed).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::WouldDiscard`] for [`Advice::DontNeed`] on a writable
    /// copy-on-write or an anonymous mapping (checked first);
    /// [`Error::OutOfBounds`] unless `offset + len <= len()`;
    /// [`Error::Io`] (`"madvise"`) when the kernel refuses the advice
    /// (`EINVAL` for `DontNeed` on locked pages); [`Error::Closed`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an advice that was sent is applied anyway, and changes
    /// no byte.
    pub async fn advise(&self, offset: u64, len: u64, advice: Advice) -> Result<()> {
        self.hint("advise", offset, len, |reply| Hint::Advise {
            offset,
            len,
            advice,
            reply,
        })
        .await
    }

    /// Faults `[offset, offset + len)` in, like [`prewarm`](Self::prewarm),
    /// in steps of [`PREWARM_STEP`] bytes, yielding a [`Progress`] after
    /// each, so that a caller can draw a progress bar:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mmap_actor::Result<()> {
    /// use futures::StreamExt;
    /// use mmap_actor::{MappedFile, Progress};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let file = MappedFile::create(dir.path().join("big"), 20 << 20).await?;
    /// let mut progress = file.prewarm_progress(0, file.len());
    /// let mut last = None;
    /// while let Some(step) = progress.next().await {
    ///     let step = step?;
    ///     println!("{} of {} bytes", step.done, step.total);
    ///     last = Some(step);
    /// }
    /// assert_eq!(last, Some(Progress { done: 20 << 20, total: 20 << 20 }));
    /// # Ok(()) }
    /// ```
    ///
    /// Nothing happens until the stream is polled. Each step is one
    /// `MADV_POPULATE_READ` on the blocking pool (or `MADV_WILLNEED` on
    /// kernels before 5.14, which only starts the reads). Like `prewarm`,
    /// it changes no byte and never waits for leases. The last item has
    /// `done == total`; an empty range yields one item, `{ done: 0,
    /// total: 0 }`.
    ///
    /// # Errors
    ///
    /// Yields one error item, then ends: [`Error::OutOfBounds`] first if
    /// the range is not inside the file (nothing is faulted in then), or
    /// when a resize has cut the range meanwhile; [`Error::Io`]
    /// (`"madvise"`, `EFAULT`) when a page cannot be read in: an I/O error
    /// under it, or the file was truncated by another process (this is an
    /// error item, never a `SIGBUS`); [`Error::Closed`].
    ///
    /// # Cancel safety
    ///
    /// See [`PrewarmProgress`]: dropping the stream stops after the step
    /// in flight.
    pub fn prewarm_progress(&self, offset: u64, len: u64) -> PrewarmProgress {
        PrewarmProgress::new(steps(self.clone(), offset, len).boxed())
    }

    /// Locks the pages covering `[offset, offset + len)` in memory
    /// (`mlock`, on the blocking pool, which faults them in first): they
    /// stay resident, and accesses never wait for the disk.
    ///
    /// Locks are per page and do not nest: one [`unlock`](Self::unlock)
    /// undoes any number of locks of a page. A resize keeps them: the new
    /// mapping generation is locked over the ranges locked so far (clipped
    /// to the new length) before it replaces the old one; if that fails
    /// (the limit below), the resize still succeeds and a warning is
    /// logged. [`close`](Self::close) (or the end of the mapping) unlocks
    /// everything. Locking a writable copy-on-write mapping makes private
    /// copies of its pages (the kernel's way to make them resident), which
    /// costs memory but changes no byte.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`] unless `offset + len <= len()`;
    /// [`Error::MemoryLockLimit`] when `RLIMIT_MEMLOCK` does not allow it
    /// (`ENOMEM`, or `EPERM` when the limit is zero), naming the limit;
    /// [`Error::Io`] (`"mlock"`) otherwise, e.g. `EAGAIN` when some pages
    /// could not be locked; [`Error::Closed`].
    ///
    /// # Cancel safety
    ///
    /// Lock calls run in the order they were sent; one that was sent is
    /// applied even if its future is dropped (then unknown to the caller:
    /// [`unlock`](Self::unlock) what you may have locked).
    pub async fn lock(&self, offset: u64, len: u64) -> Result<()> {
        self.hint("lock", offset, len, |reply| Hint::Lock {
            op: LockOp::Lock { offset, len },
            reply,
        })
        .await
    }

    /// Unlocks the pages covering `[offset, offset + len)` (`munlock`):
    /// whole pages, also ones only partly in the range, whichever call
    /// locked them.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`] unless `offset + len <= len()`;
    /// [`Error::Io`] (`"munlock"`); [`Error::Closed`].
    ///
    /// # Cancel safety
    ///
    /// As [`lock`](Self::lock).
    pub async fn unlock(&self, offset: u64, len: u64) -> Result<()> {
        self.hint("unlock", offset, len, |reply| Hint::Lock {
            op: LockOp::Unlock { offset, len },
            reply,
        })
        .await
    }

    /// Locks the whole mapping in memory, as [`lock`](Self::lock) does a
    /// range; across a resize the lock covers the whole new length (a grow
    /// locks the new bytes too).
    ///
    /// # Errors
    ///
    /// As [`lock`](Self::lock), without `OutOfBounds`.
    ///
    /// # Cancel safety
    ///
    /// As [`lock`](Self::lock).
    pub async fn lock_all(&self) -> Result<()> {
        self.hint("lock_all", 0, self.len(), |reply| Hint::Lock {
            op: LockOp::LockAll,
            reply,
        })
        .await
    }

    /// Unlocks every page of the mapping.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] (`"munlock"`); [`Error::Closed`].
    ///
    /// # Cancel safety
    ///
    /// As [`lock`](Self::lock).
    pub async fn unlock_all(&self) -> Result<()> {
        self.hint("unlock_all", 0, self.len(), |reply| Hint::Lock {
            op: LockOp::UnlockAll,
            reply,
        })
        .await
    }

    /// Whether the kernel backs this mapping with huge pages *now*: any
    /// transparent huge page (`AnonHugePages`, `FilePmdMapped`,
    /// `ShmemPmdMapped`) or hugetlb page in the mapping's entries of
    /// `/proc/self/smaps`, read on the blocking pool.
    ///
    /// It reports what the kernel did, not what was asked
    /// ([`OpenOptions::huge_pages`](crate::OpenOptions::huge_pages) says
    /// when the kernel ignores the request): pages not faulted in yet count
    /// as small, so [`prewarm`](Self::prewarm) first to see what touching
    /// the mapping gives. Reading smaps walks this process's page tables:
    /// milliseconds in a large process, not for a hot path.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `/proc/self/smaps` cannot be read (no `/proc`);
    /// [`Error::Closed`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn is_hugepage_backed(&self) -> Result<bool> {
        self.hint("is_hugepage_backed", 0, self.len(), |reply| {
            Hint::HugeBacked { reply }
        })
        .await
    }

    /// Watches the file for changes made by others: a stream of
    /// [`FileEvent`](crate::FileEvent)s, as [`watch`](crate::watch) gives
    /// for [`path()`](Self::path) (see there for what inotify reports:
    /// **stores through any mapping, this one's included, are not
    /// reported**; `write(2)`, truncation, renames and removal are).
    ///
    /// The path is watched as it names a file now: if the file was renamed
    /// or replaced since it was opened, the watch follows what the path
    /// names today.
    ///
    /// Setting a watch up runs on the blocking pool (inline when called
    /// outside a tokio runtime): it takes a few microseconds while other
    /// watches exist, but the first one after the last was dropped starts
    /// the process's watcher thread (after the previous one has stopped),
    /// which took 13 ms on the reference machine: too long to hold an
    /// executor thread.
    ///
    /// # Errors
    ///
    /// As [`watch`](crate::watch); [`Error::Watch`] of kind `Unsupported`
    /// for an anonymous mapping, which has no file to watch;
    /// [`Error::Closed`] after [`close`](Self::close).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a watch set up after the future was dropped is dropped
    /// too, which stops it.
    pub async fn watch(&self) -> Result<Watch> {
        if self.shared.is_closed() {
            return Err(Error::Closed);
        }
        if self.shared.anonymous {
            return Err(Error::Watch {
                path: self.path().to_path_buf(),
                source: notify::Error::io(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "an anonymous mapping has no file to watch",
                )),
            });
        }
        let path = self.path().to_path_buf();
        if tokio::runtime::Handle::try_current().is_err() {
            // No executor to hold up.
            return crate::watch::watch(path);
        }
        crate::blocking::run("watch", move || crate::watch::watch(path)).await
    }
}

/// The open's descriptor: the file as this handle's open opened it
/// (read-only for read-only and copy-on-write mappings), or an anonymous
/// mapping's memory file. It stays open as long as any handle of the open
/// lives, even after [`close`](MappedFile::close). Reading, writing or
/// truncating the file through it bypasses the actor: truncating a mapped
/// file is what the crate's "Soundness" section warns about.
impl AsFd for MappedFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.shared.file.as_fd()
    }
}

/// Where a prewarm walk is: not started, or the next offset to fault in.
struct Walk {
    file: MappedFile,
    offset: u64,
    len: u64,
    /// The range and the next step's start, once the range was checked.
    at: Option<(ByteRange, u64)>,
}

/// The steps of `prewarm_progress`.
fn steps(
    file: MappedFile,
    offset: u64,
    len: u64,
) -> impl futures::Stream<Item = Result<Progress>> + Send + 'static {
    let walk = Walk {
        file,
        offset,
        len,
        at: None,
    };
    stream::unfold(Some(walk), |walk| async move {
        let mut walk = walk?;
        let (range, at) = match walk.at {
            Some(at) => at,
            None => {
                // The whole range first, so that a bad one faults nothing
                // in (each step is checked again by the actor).
                let range = match region::check(walk.offset, walk.len, walk.file.len()) {
                    Ok(range) => range,
                    Err(err) => return Some((Err(err), None)),
                };
                if range.len() == 0 {
                    return match walk.file.prewarm(range.start, 0).await {
                        Ok(()) => Some((Ok(Progress { done: 0, total: 0 }), None)),
                        Err(err) => Some((Err(err), None)),
                    };
                }
                (range, range.start)
            }
        };
        let step_end = (at / PREWARM_STEP + 1)
            .saturating_mul(PREWARM_STEP)
            .min(range.end);
        if let Err(err) = walk.file.prewarm(at, step_end - at).await {
            return Some((Err(err), None));
        }
        let progress = Progress {
            done: step_end - range.start,
            total: range.len(),
        };
        walk.at = Some((range, step_end));
        Some((Ok(progress), (step_end < range.end).then_some(walk)))
    })
}
