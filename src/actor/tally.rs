//! [`Tally`]: what was written to one file through this process, and what
//! of it a successful flush covered: `pending_bytes`, the flush policies
//! and the write-method choice all read it.
//!
//! Direct updates count themselves in the gate's per-thread slots (cheap,
//! no shared cache line); what the actor writes (its own copies, `modify`,
//! released leases that could write) it counts here. Both are monotonic;
//! a successful flush moves the `flushed` marks up to what was written when
//! its sync began, so a failed flush leaves them, and `pending_bytes`, as
//! they were.

use std::sync::atomic::{AtomicU64, Ordering};

use super::caller_sync::CallerSync;
use crate::sys::gate::Gate;

/// Writes and bytes, as one pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Written {
    pub(crate) writes: u64,
    pub(crate) bytes: u64,
}

/// The counts of one file (shared by every open of it).
#[derive(Debug, Default)]
pub(crate) struct Tally {
    actor_writes: AtomicU64,
    actor_bytes: AtomicU64,
    flushed_writes: AtomicU64,
    flushed_bytes: AtomicU64,
    /// Direct updates check the totals against the policy thresholds every
    /// this many of their slot's updates, a power of two (0: no policy
    /// counts writes).
    check_every: AtomicU64,
    /// The totals at which a policy flush is due (`u64::MAX`: none).
    due_writes: AtomicU64,
    due_bytes: AtomicU64,
    /// Whole-file flushes led by their callers, and the file's poisoning
    /// (`caller_sync.rs`).
    pub(crate) sync: CallerSync,
}

impl Tally {
    pub(crate) fn new() -> Tally {
        Tally {
            due_writes: AtomicU64::new(u64::MAX),
            due_bytes: AtomicU64::new(u64::MAX),
            ..Tally::default()
        }
    }

    /// Counts a write the actor made (the actor is the one writer).
    pub(crate) fn actor_wrote(&self, bytes: u64) {
        self.actor_writes.fetch_add(1, Ordering::Relaxed);
        self.actor_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Everything written so far.
    pub(crate) fn total(&self, gate: &Gate) -> Written {
        let (writes, bytes) = gate.written();
        Written {
            writes: writes + self.actor_writes.load(Ordering::Relaxed),
            bytes: bytes + self.actor_bytes.load(Ordering::Relaxed),
        }
    }

    /// What the last successful flush covered.
    pub(crate) fn flushed(&self) -> Written {
        Written {
            writes: self.flushed_writes.load(Ordering::Acquire),
            bytes: self.flushed_bytes.load(Ordering::Acquire),
        }
    }

    /// Written since the last successful flush.
    pub(crate) fn pending(&self, gate: &Gate) -> Written {
        let total = self.total(gate);
        let flushed = self.flushed();
        Written {
            writes: total.writes.saturating_sub(flushed.writes),
            bytes: total.bytes.saturating_sub(flushed.bytes),
        }
    }

    /// A flush whose sync began when `at` was written succeeded.
    pub(crate) fn flushed_up_to(&self, at: Written) {
        self.flushed_writes.fetch_max(at.writes, Ordering::AcqRel);
        self.flushed_bytes.fetch_max(at.bytes, Ordering::AcqRel);
    }

    /// Sets when direct updates must report a due policy flush.
    pub(crate) fn arm(&self, check_every: u64, due: Written) {
        debug_assert!(check_every == 0 || check_every.is_power_of_two());
        self.due_writes.store(due.writes, Ordering::Relaxed);
        self.due_bytes.store(due.bytes, Ordering::Relaxed);
        self.check_every.store(check_every, Ordering::Release);
    }

    /// For a large direct update: whether a policy flush is due now.
    pub(crate) fn due_now(&self, gate: &Gate) -> bool {
        if self.check_every.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let total = self.total(gate);
        total.writes >= self.due_writes.load(Ordering::Relaxed)
            || total.bytes >= self.due_bytes.load(Ordering::Relaxed)
    }

    /// For a direct update that made its slot's `slot_writes`-th update:
    /// whether a policy flush is due now (checked every few updates only).
    #[inline]
    pub(crate) fn due_after(&self, gate: &Gate, slot_writes: u64) -> bool {
        let every = self.check_every.load(Ordering::Relaxed);
        if every == 0 || slot_writes & (every - 1) != 0 {
            return false;
        }
        let total = self.total(gate);
        total.writes >= self.due_writes.load(Ordering::Relaxed)
            || total.bytes >= self.due_bytes.load(Ordering::Relaxed)
    }
}
