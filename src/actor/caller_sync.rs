//! Whole-file flushes led by their callers: the group commit of
//! [`MappedFile::flush`](crate::MappedFile::flush) without a round trip
//! to the actor.
//!
//! A flush of the whole file needs nothing the actor owns: one
//! `fdatasync` of the file's descriptor covers every page written before
//! it began (stores through the mapping and `pwrite`s alike), and what a
//! flush records (the tally's flushed marks, the write method's count,
//! poisoning) is state every open of the file shares. So the first caller
//! to flush starts a *sync loop* on the blocking pool and awaits its
//! answer; flushes that arrive while a sync runs queue for the next one,
//! which the loop begins as soon as the running one ends, on the same
//! thread. The loop answers each batch itself. A flush through the actor
//! took four hand-offs (caller → actor → pool → actor → caller); this
//! takes two (caller → pool → caller), as `spawn_blocking(fdatasync)`
//! does, and concurrent flushers still share syncs. With few flushers a
//! flush that finds every loop inside its sync starts another loop rather
//! than wait for two syncs ([`LOOPS_MAX`]); with many, batches grow and one
//! loop serves them.
//!
//! The loop, not the leader's future, owns a batch: a dropped flush future
//! stops nothing. A loop that never runs (its runtime shut down before the
//! blocking pool took it) or panics answers every flush it owned with
//! [`Error::Panicked`] from its guard's `Drop` and lets the next flush
//! start a new loop, so nothing waits forever.
//!
//! Ranges (`flush_range`), policy flushes and `close` still go through the
//! actor's group commit (`group_commit.rs`); the two may sync at once, and
//! both poison every read-write open of the file when a sync fails
//! ([`CallerSync::poison_all`]).

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::sync::copy_err;
use super::tally::{Tally, Written};
use crate::blocking;
use crate::error::{Error, Result};
use crate::sys::gate::Gate;

/// At most this many sync loops of one file run at once.
///
/// A flush that arrives while a sync runs cannot be served by it. With few
/// flushers (the last batch had at most [`SMALL_BATCH`]), waiting for the
/// running sync to end and then for the next costs them up to two sync
/// times: a flush then starts its own sync at once, in parallel (the
/// device works on both, and the kernel merges their cache flushes), as
/// each `spawn_blocking(fdatasync)` would. With many flushers, batches
/// grow past that and one loop serves them all with fewer syncs, which
/// also writes less to the device (each sync rewrites the partial blocks
/// at the ends of what changed).
const LOOPS_MAX: usize = 4;

/// A batch of at most this many flushes says concurrency is low: see
/// [`LOOPS_MAX`].
const SMALL_BATCH: usize = 2;

/// Where a flush waits for its sync's outcome.
type Answer = oneshot::Sender<Result<()>>;

/// The caller-led group commit and the poisoning of one file (every open
/// of it shares one, inside its [`Tally`]).
#[derive(Debug, Default)]
pub(crate) struct CallerSync {
    state: Mutex<State>,
    /// Serial numbers of the file's opens, so that a failed sync poisons
    /// the opens made before it and no later one.
    opens: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// Sync loops running (or started and not yet run), at most
    /// [`LOOPS_MAX`].
    running: usize,
    /// Those of them inside a sync; the others look at `next` soon.
    syncing: usize,
    /// Flushes waiting for the next sync of the loop.
    next: Vec<Answer>,
    /// The file's writes counted at the last flush of any kind: the write
    /// method adapts to the number of updates between flushes.
    method_mark: Written,
    /// Failed syncs, oldest first: opens with a serial below `.0` are
    /// poisoned with the kind `.1`.
    failures: Vec<(u64, io::ErrorKind)>,
    /// Syncs the loops began (for tracing).
    syncs: u64,
    /// The flushes of the batch taken last.
    last_batch: usize,
}

impl State {
    fn take_batch(&mut self) -> Vec<Answer> {
        self.last_batch = self.next.len();
        std::mem::take(&mut self.next)
    }
}

/// What a sync loop needs: the file and the counts it updates.
pub(crate) struct Target {
    pub(crate) tally: Arc<Tally>,
    pub(crate) gate: Arc<Gate>,
    pub(crate) file: Arc<File>,
    pub(crate) path: PathBuf,
}

impl CallerSync {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain data, consistent between statements.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The serial number of a new open of the file.
    pub(crate) fn new_open(&self) -> u64 {
        self.opens.fetch_add(1, Ordering::Relaxed)
    }

    /// Records a flush request made when `total` was written; returns the
    /// updates since the previous one (for the write method).
    pub(crate) fn mark_flush(&self, total: Written) -> u64 {
        let mut state = self.lock();
        let writes = total.writes.saturating_sub(state.method_mark.writes);
        state.method_mark = total;
        writes
    }

    /// A sync failed with `kind`: every open of the file made so far is
    /// poisoned (opens made later are not: reopening clears it).
    pub(crate) fn poison_all(&self, kind: io::ErrorKind) {
        let below = self.opens.load(Ordering::Relaxed);
        let mut state = self.lock();
        if state.failures.last().map_or(true, |&(b, _)| b < below) {
            state.failures.push((below, kind));
        }
    }

    /// The kind of the first failed sync that poisons the open `serial`.
    pub(crate) fn poisoned(&self, serial: u64) -> Option<io::ErrorKind> {
        let state = self.lock();
        state
            .failures
            .iter()
            .find(|&&(below, _)| serial < below)
            .map(|&(_, kind)| kind)
    }

    /// Flushes the whole file of `target`: joins the next sync of the
    /// running loop, or starts a loop. Resolves to the sync's outcome.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops nothing: the sync runs, and the other
    /// flushes it serves are answered.
    pub(crate) async fn flush(&self, target: impl FnOnce() -> Target) -> Result<()> {
        let (answer, outcome) = oneshot::channel();
        let start = {
            let mut state = self.lock();
            state.next.push(answer);
            let start = state.running == 0
                || (state.running < LOOPS_MAX
                    && state.syncing == state.running
                    && state.last_batch <= SMALL_BATCH);
            state.running += usize::from(start);
            start
        };
        if start {
            let sync_loop = SyncLoop {
                target: target(),
                syncing: false,
                ended: false,
            };
            blocking::detach(move || sync_loop.run());
        }
        outcome
            .await
            .unwrap_or(Err(Error::Panicked { op: "flush" }))
    }
}

/// The syncs one loop runs, one batch after another, on one thread of the
/// blocking pool; its `Drop` answers what it owned if it never ended.
struct SyncLoop {
    target: Target,
    /// Inside its sync (counted in `State::syncing`).
    syncing: bool,
    ended: bool,
}

impl SyncLoop {
    fn run(mut self) {
        let sync = &self.target.tally.sync;
        let mut state = sync.lock();
        loop {
            if state.next.is_empty() {
                // Done; or, at the start, another loop took the flushes
                // this one was started for.
                state.running -= 1;
                self.ended = true;
                return;
            }
            let batch = state.take_batch();
            state.syncing += 1;
            self.syncing = true;
            state.syncs += 1;
            let n = state.syncs;
            drop(state);
            // What this sync covers: everything written before it begins,
            // which includes every write of the flushes in `batch`.
            let covers = self.target.tally.total(&self.target.gate);
            tracing::debug!(waiters = batch.len(), sync = n, "sync started");
            let result = self
                .target
                .file
                .sync_data()
                .map_err(|e| Error::io("sync", &self.target.path, e));
            // From here on this loop looks at `next` again soon: flushes
            // arriving now wait for it rather than start another loop.
            sync.lock().syncing -= 1;
            self.syncing = false;
            match &result {
                Ok(()) => self.target.tally.flushed_up_to(covers),
                Err(err) => {
                    tracing::error!(%err, waiters = batch.len(), "sync failed; the mapping is poisoned");
                    sync.poison_all(err.io_kind().unwrap_or(io::ErrorKind::Other));
                }
            }
            for answer in batch {
                let _ = answer.send(result.as_ref().map(|&()| ()).map_err(copy_err));
            }
            state = sync.lock();
        }
    }
}

impl Drop for SyncLoop {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        // Never run (its runtime shut down first) or unwinding: answer the
        // flushes still queued and let the next flush start a loop. Those
        // of a batch being synced see their answer dropped: `Panicked`.
        let mut state = self.target.tally.sync.lock();
        state.running -= 1;
        state.syncing -= usize::from(self.syncing);
        for answer in state.next.drain(..) {
            let _ = answer.send(Err(Error::Panicked { op: "flush" }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> (tempfile::TempDir, Target) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        let target = Target {
            tally: Arc::new(Tally::new()),
            gate: Gate::new(),
            file: Arc::new(file),
            path,
        };
        (dir, target)
    }

    #[test]
    fn a_loop_that_never_runs_answers_its_flushes_and_frees_the_next() {
        let (_dir, target) = target();
        let tally = Arc::clone(&target.tally);
        let (answer, mut outcome) = oneshot::channel();
        {
            let mut state = tally.sync.lock();
            state.next.push(answer);
            state.running = 1;
        }
        // As a runtime shutting down drops a queued blocking task.
        drop(SyncLoop {
            target,
            syncing: false,
            ended: false,
        });
        assert!(matches!(
            outcome.try_recv(),
            Ok(Err(Error::Panicked { op: "flush" }))
        ));
        assert_eq!(
            tally.sync.lock().running,
            0,
            "the next flush could never start"
        );
    }

    #[test]
    fn a_loop_serves_every_batch_queued_while_it_syncs() {
        let (_dir, target) = target();
        let tally = Arc::clone(&target.tally);
        let mut outcomes = Vec::new();
        {
            let mut state = tally.sync.lock();
            for _ in 0..3 {
                let (answer, outcome) = oneshot::channel();
                state.next.push(answer);
                outcomes.push(outcome);
            }
            state.running = 1;
        }
        SyncLoop {
            target,
            syncing: false,
            ended: false,
        }
        .run();
        for mut outcome in outcomes {
            assert!(matches!(outcome.try_recv(), Ok(Ok(()))));
        }
        let state = tally.sync.lock();
        assert_eq!(state.running, 0);
        assert_eq!(state.syncs, 1, "one sync for the three flushes");
    }

    #[test]
    fn a_failure_poisons_the_opens_made_before_it_only() {
        let sync = CallerSync::default();
        let (a, b) = (sync.new_open(), sync.new_open());
        assert_eq!(sync.poisoned(a), None);
        sync.poison_all(io::ErrorKind::Other);
        let c = sync.new_open();
        assert_eq!(sync.poisoned(a), Some(io::ErrorKind::Other));
        assert_eq!(sync.poisoned(b), Some(io::ErrorKind::Other));
        assert_eq!(sync.poisoned(c), None, "a reopen is not poisoned");
        sync.poison_all(io::ErrorKind::OutOfMemory);
        assert_eq!(
            sync.poisoned(a),
            Some(io::ErrorKind::Other),
            "the first failure's kind"
        );
        assert_eq!(sync.poisoned(c), Some(io::ErrorKind::OutOfMemory));
    }
}
