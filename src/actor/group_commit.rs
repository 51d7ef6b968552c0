//! Group commit: one sync serves every flush that was asked for before it
//! started.
//!
//! A flush that arrives while a sync is in flight cannot be served by it
//! (updates acknowledged just before that flush may have missed it), so it
//! joins the *next* batch, which starts as soon as the current sync ends.
//! N concurrent flushers therefore cost at most two syncs, usually one.
//!
//! This is the bookkeeping only (no runtime, no I/O): the actor starts the
//! sync a batch [`begin`](GroupCommit::begin)s on the blocking pool, and
//! hands its result to the waiters [`end`](GroupCommit::end) returns.

use super::OpenId;
use crate::region::ByteRange;

/// What one sync covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// `fdatasync` of the file: every dirty page and the length.
    Full,
    /// `msync(MS_SYNC)` of this range of one open's current generation.
    Range(OpenId, ByteRange),
}

impl Plan {
    /// One sync that covers both: the hull of two ranges of one open,
    /// otherwise the whole file.
    fn merge(self, other: Plan) -> Plan {
        match (self, other) {
            (Plan::Range(x, a), Plan::Range(y, b)) if x == y => Plan::Range(
                x,
                ByteRange {
                    start: a.start.min(b.start),
                    end: a.end.max(b.end),
                },
            ),
            _ => Plan::Full,
        }
    }
}

/// The group-commit state of one mapping; `W` is a waiter (a reply).
#[derive(Debug)]
pub(crate) struct GroupCommit<W> {
    running: bool,
    /// Flushes served by the sync in flight.
    current: Vec<W>,
    /// Flushes that arrived after it started, and what they need.
    next: Vec<W>,
    next_plan: Option<Plan>,
    /// Syncs begun so far (for tracing).
    syncs: u64,
}

impl<W> Default for GroupCommit<W> {
    fn default() -> Self {
        GroupCommit {
            running: false,
            current: Vec::new(),
            next: Vec::new(),
            next_plan: None,
            syncs: 0,
        }
    }
}

impl<W> GroupCommit<W> {
    /// Adds a flush to the next batch.
    pub(crate) fn push(&mut self, plan: Plan, waiter: W) {
        self.next.push(waiter);
        self.next_plan = Some(match self.next_plan {
            Some(p) => p.merge(plan),
            None => plan,
        });
    }

    /// Whether flushes are queued for the next sync.
    pub(crate) fn has_next(&self) -> bool {
        !self.next.is_empty()
    }

    /// If no sync is running and flushes are queued, makes them the current
    /// batch and returns what its sync must cover.
    pub(crate) fn begin(&mut self) -> Option<Plan> {
        if self.running || self.next.is_empty() {
            return None;
        }
        let plan = self.next_plan.take().unwrap_or(Plan::Full);
        self.current = std::mem::take(&mut self.next);
        self.running = true;
        self.syncs += 1;
        tracing::debug!(
            waiters = self.current.len(),
            ?plan,
            sync = self.syncs,
            "sync started"
        );
        Some(plan)
    }

    /// The running sync finished: returns the waiters it served.
    pub(crate) fn end(&mut self) -> Vec<W> {
        debug_assert!(self.running, "end without a sync");
        self.running = false;
        std::mem::take(&mut self.current)
    }

    /// Whether a flush `pick` is true for waits (running or queued).
    pub(crate) fn waits(&self, pick: impl Fn(&W) -> bool) -> bool {
        self.current.iter().chain(&self.next).any(pick)
    }

    /// The first waiter of the running batch.
    pub(crate) fn first_current(&self) -> Option<&W> {
        self.current.first()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: u64, end: u64) -> Plan {
        Plan::Range(0, ByteRange { start, end })
    }

    #[test]
    fn flushes_during_a_sync_share_the_next_one() {
        let mut gc: GroupCommit<u32> = GroupCommit::default();
        assert_eq!(gc.begin(), None);
        gc.push(Plan::Full, 1);
        gc.push(Plan::Full, 2);
        assert_eq!(gc.begin(), Some(Plan::Full));
        // A sync is running: nothing else begins, later flushes queue.
        gc.push(Plan::Full, 3);
        gc.push(Plan::Full, 4);
        gc.push(Plan::Full, 5);
        assert_eq!(gc.begin(), None);
        assert!(gc.running && gc.has_next());
        assert_eq!(gc.end(), vec![1, 2]);
        assert_eq!(gc.begin(), Some(Plan::Full));
        assert_eq!(gc.end(), vec![3, 4, 5]);
        assert!(!gc.running && !gc.has_next());
        assert_eq!(gc.syncs, 2);
    }

    #[test]
    fn plans_merge_ranges_and_any_full_wins() {
        let mut gc: GroupCommit<u32> = GroupCommit::default();
        gc.push(range(100, 200), 1);
        gc.push(range(50, 120), 2);
        assert_eq!(gc.begin(), Some(range(50, 200)));
        gc.end();
        gc.push(range(0, 10), 3);
        gc.push(Plan::Full, 4);
        gc.push(range(20, 30), 5);
        assert_eq!(gc.begin(), Some(Plan::Full));
        gc.end();
        // Ranges of two opens (two generations) make a full sync.
        gc.push(range(0, 10), 6);
        gc.push(Plan::Range(1, ByteRange { start: 0, end: 10 }), 7);
        assert_eq!(gc.begin(), Some(Plan::Full));
        assert!(gc.waits(|w| *w == 7));
        assert_eq!(gc.first_current(), Some(&6));
    }
}
