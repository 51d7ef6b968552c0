//! Flush policies (`OpenOptions::flush_policy`): the actor flushes by
//! itself once enough was written since the last flush, or every so often.
//!
//! A policy flush is a group-commit flush with no one waiting for its
//! reply; at most one is queued or running at a time. Direct updates, which
//! the actor does not see, check the file's totals every few updates
//! (`Tally::due_after`) and send `Notice::PolicyDue` when a threshold is
//! reached; every event of the actor's loop ends with
//! [`check_policies`](Actor::check_policies).

use super::group_commit::Plan;
use super::tally::Written;
use super::{Actor, Open};
use crate::Mode;

impl Actor {
    /// Queues a policy flush if a threshold is reached, and tells direct
    /// updates when the next one is.
    pub(super) fn check_policies(&mut self) {
        let mut due_writes: Option<u64> = None;
        let mut due_bytes: Option<u64> = None;
        let mut owner = None;
        for open in self.opens.iter().filter(|o| flushes(o)) {
            let (writes, bytes) = open.policy.thresholds();
            if writes.is_some() || bytes.is_some() {
                owner.get_or_insert(open.id);
            }
            due_writes = min(due_writes, writes);
            due_bytes = min(due_bytes, bytes);
        }
        let Some(owner) = owner else {
            return;
        };
        let queued = self.commit.waits(|(_, reply)| reply.is_none());
        let pending = self.tally.pending(&self.gate);
        let reached = due_writes.is_some_and(|n| pending.writes >= n)
            || due_bytes.is_some_and(|n| pending.bytes >= n);
        if reached && !queued {
            tracing::debug!(
                writes = pending.writes,
                bytes = pending.bytes,
                "policy flush"
            );
            self.commit.push(Plan::Full, (owner, None));
        }
        // Direct updates report the next threshold; none while a policy
        // flush is under way (its success moves the marks).
        let flushed = self.tally.flushed();
        let armed = !(reached || queued);
        let at = |base: u64, n: Option<u64>| match n {
            Some(n) if armed => base.saturating_add(n),
            _ => u64::MAX,
        };
        let every = match (due_writes, due_bytes) {
            (Some(n), _) => (n / 16).clamp(1, 64).next_power_of_two(),
            (None, Some(_)) => 16,
            (None, None) => 0,
        };
        self.tally.arm(
            every,
            Written {
                writes: at(flushed.writes, due_writes),
                bytes: at(flushed.bytes, due_bytes),
            },
        );
    }

    /// The `Interval` clock ticked: a policy flush if anything is pending.
    pub(super) fn interval_due(&mut self) {
        let pending = self.tally.pending(&self.gate);
        let owner = self
            .opens
            .iter()
            .find(|o| flushes(o) && o.policy.period().is_some())
            .map(|o| o.id);
        let queued = self.commit.waits(|(_, reply)| reply.is_none());
        if let (Some(owner), true, false) = (owner, pending.writes > 0, queued) {
            tracing::debug!(writes = pending.writes, "interval flush");
            self.commit.push(Plan::Full, (owner, None));
        }
    }

    /// Sets the `Interval` clock to the shortest period among the opens.
    pub(super) fn reset_interval(&mut self) {
        let period = self
            .opens
            .iter()
            .filter(|o| flushes(o))
            .filter_map(|o| o.policy.period())
            .min();
        self.interval = period.map(|period| {
            let mut clock = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            clock
        });
    }
}

/// Whether an open's flushes sync anything: read-write, of a file (an
/// anonymous mapping has nothing to make durable), not ending.
fn flushes(open: &Open) -> bool {
    open.mode() == Mode::ReadWrite && !open.hints.is_anonymous() && !open.is_ending()
}

fn min(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The next tick of the `Interval` clock; pending forever without one (the
/// loop guards this branch).
pub(super) async fn tick(clock: &mut Option<tokio::time::Interval>) {
    match clock {
        Some(clock) => {
            clock.tick().await;
        }
        None => std::future::pending::<()>().await,
    }
}
