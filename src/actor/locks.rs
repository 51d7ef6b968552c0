//! Page locks of one open: what is locked ([`Locked`], a set of page
//! ranges or "everything"), and the lane that runs `mlock` / `munlock` jobs
//! one at a time, in the order the actor queued them, on the blocking pool.
//!
//! The lane is why the actor never waits for an `mlock` (which faults the
//! whole range in, seconds for gigabytes) yet the locks end up as the
//! requests asked, in their order: each job sees the record left by the
//! one before it. The actor only queues (a `std` mutex held for a push);
//! one blocking task drains the queue while it is not empty. A resize
//! queues a job that moves the locks to the new generation, and waits for
//! it, so the new generation is locked before the old one is retired.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, PoisonError};

use crate::blocking;

/// A sorted set of disjoint, non-adjacent half-open ranges `[start, end)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RangeSet {
    ranges: Vec<(u64, u64)>,
}

impl RangeSet {
    /// Adds `[start, end)`.
    pub(crate) fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut start, mut end) = (start, end);
        // Every range that overlaps or touches `[start, end)` merges in.
        self.ranges.retain(|&(s, e)| {
            if e < start || s > end {
                return true;
            }
            start = start.min(s);
            end = end.max(e);
            false
        });
        let at = self.ranges.partition_point(|&(s, _)| s < start);
        self.ranges.insert(at, (start, end));
    }

    /// Removes `[start, end)`.
    pub(crate) fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let mut kept = Vec::with_capacity(self.ranges.len() + 1);
        for &(s, e) in &self.ranges {
            if e <= start || s >= end {
                kept.push((s, e));
                continue;
            }
            if s < start {
                kept.push((s, start));
            }
            if e > end {
                kept.push((end, e));
            }
        }
        self.ranges = kept;
    }

    /// Keeps only what lies below `end`.
    pub(crate) fn clip(&mut self, end: u64) {
        self.remove(end, u64::MAX);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().copied()
    }
}

/// What is locked in the current generation of an open, in file offsets
/// widened to whole pages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Locked {
    /// `lock_all`: the whole mapping, whatever its length (a grow extends
    /// it to the new bytes).
    pub(crate) all: bool,
    /// `lock` calls (empty while `all`).
    pub(crate) ranges: RangeSet,
}

impl Locked {
    /// Whether anything is locked.
    pub(crate) fn any(&self) -> bool {
        self.all || !self.ranges.is_empty()
    }
}

/// A job on the lane: it runs on the blocking pool with the record, and
/// answers its caller itself.
pub(crate) type Job = Box<dyn FnOnce(&mut Locked) + Send>;

/// The lane of one open; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Lane {
    state: Mutex<LaneState>,
}

#[derive(Default)]
struct LaneState {
    jobs: VecDeque<Job>,
    /// A blocking task is draining `jobs` (and holds the record).
    running: bool,
    /// The record, while no job runs.
    locked: Locked,
}

impl std::fmt::Debug for LaneState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaneState")
            .field("jobs", &self.jobs.len())
            .field("running", &self.running)
            .field("locked", &self.locked)
            .finish()
    }
}

impl Lane {
    /// Queues `job` after every job queued before it.
    pub(crate) fn push(self: &Arc<Self>, job: Job) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.jobs.push_back(job);
        if state.running {
            return;
        }
        state.running = true;
        drop(state);
        let lane = Arc::clone(self);
        blocking::detach(move || lane.drain());
    }

    /// Runs jobs until none is queued. The record travels out of the mutex
    /// while a job runs, so that the actor's `push` never waits for a
    /// syscall.
    fn drain(&self) {
        loop {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(job) = state.jobs.pop_front() else {
                state.running = false;
                return;
            };
            let mut locked = std::mem::take(&mut state.locked);
            drop(state);
            // A panicking job fails its own caller only (its reply is
            // dropped); the record keeps what it held before the job.
            let before = locked.clone();
            if catch_unwind(AssertUnwindSafe(|| job(&mut locked))).is_err() {
                tracing::error!("a page-lock job panicked");
                locked = before;
            }
            self.state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .locked = locked;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn model_of(set: &RangeSet) -> Vec<bool> {
        let mut bits = vec![false; 64];
        for (s, e) in set.iter() {
            for bit in &mut bits[s as usize..e as usize] {
                *bit = true;
            }
        }
        bits
    }

    proptest! {
        /// Inserts, removes and clips agree with a bitmap, and the ranges
        /// stay sorted, disjoint and non-adjacent.
        #[test]
        fn range_set_matches_a_bitmap(ops in proptest::collection::vec((0u8..3, 0u64..64, 0u64..64), 0..40)) {
            let mut set = RangeSet::default();
            let mut bits = vec![false; 64];
            for (op, a, b) in ops {
                let (s, e) = (a.min(b), a.max(b));
                match op {
                    0 => {
                        set.insert(s, e);
                        bits[s as usize..e as usize].iter_mut().for_each(|x| *x = true);
                    }
                    1 => {
                        set.remove(s, e);
                        bits[s as usize..e as usize].iter_mut().for_each(|x| *x = false);
                    }
                    _ => {
                        set.clip(e);
                        bits[e as usize..].iter_mut().for_each(|x| *x = false);
                    }
                }
                prop_assert_eq!(model_of(&set), bits.clone());
                let ranges: Vec<_> = set.iter().collect();
                for w in ranges.windows(2) {
                    prop_assert!(w[0].1 < w[1].0, "not sorted, disjoint and apart: {:?}", ranges);
                }
                prop_assert!(ranges.iter().all(|(s, e)| s < e));
            }
        }
    }

    #[tokio::test]
    async fn lane_runs_jobs_in_order_and_survives_a_panic() {
        let lane = Arc::new(Lane::default());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..50u64 {
            let tx = tx.clone();
            lane.push(Box::new(move |locked: &mut Locked| {
                if i == 10 {
                    panic!("job 10");
                }
                locked.ranges.insert(i, i + 1);
                let _ = tx.send((i, locked.ranges.iter().count()));
            }));
        }
        drop(tx);
        let mut seen = Vec::new();
        while let Some(got) = rx.recv().await {
            seen.push(got);
        }
        let order: Vec<u64> = seen.iter().map(|(i, _)| *i).collect();
        let want: Vec<u64> = (0..50).filter(|i| *i != 10).collect();
        assert_eq!(order, want, "jobs ran out of order");
        // Ranges 0..10 merge into one; 11.. are apart from it (10 is missing).
        assert_eq!(seen.last(), Some(&(49, 2)));
    }
}
