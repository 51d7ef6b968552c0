//! The lease table: which byte ranges are held, how, and who waits for them.
//!
//! # Invariant
//!
//! Two *active* footprints that [`conflict`] never coexist. Every access to
//! mapped bytes is covered by an active footprint for as long as it lasts:
//! a lease's for the lease's life; an inline `load`/`update` is checked with
//! [`LeaseTable::clear`] and runs to completion before the actor looks at
//! another request. The proof types [`Cleared`] and [`Ticket`], which the
//! unsafe module demands, can only be made here, after that check.
//!
//! Waiting requests are served first come, first served: a request is
//! admitted only if it conflicts with no active footprint *and* with no
//! request queued before it, so a steady stream of readers cannot starve a
//! writer or a shrink. Disjoint ranges never wait for each other.

use std::collections::{HashMap, VecDeque};

use crate::region::Span;
use crate::request::LeaseKind;

/// How a footprint touches its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Plain reads (`Segment`, `load`).
    Read,
    /// Plain writes (`SegmentMut`, `update`, `modify`, a resize's tail).
    Write,
    /// Atomic access of this width in bytes.
    Atomic(u8),
}

impl From<LeaseKind> for Access {
    fn from(kind: LeaseKind) -> Access {
        match kind {
            LeaseKind::Shared => Access::Read,
            LeaseKind::Exclusive => Access::Write,
            LeaseKind::Atomic(width) => Access::Atomic(width),
        }
    }
}

/// A byte range and how it is touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Footprint {
    pub(crate) span: Span,
    pub(crate) access: Access,
}

/// The compatibility table of the design notes: overlapping reads coexist,
/// overlapping same-width atomics coexist, everything else that overlaps
/// conflicts.
pub(crate) fn conflict(a: &Footprint, b: &Footprint) -> bool {
    if !a.span.overlaps(&b.span) {
        return false;
    }
    match (a.access, b.access) {
        (Access::Read, Access::Read) => false,
        (Access::Atomic(x), Access::Atomic(y)) => x != y,
        _ => true,
    }
}

/// Proof that an inline access was checked against the table and that the
/// actor performs it before serving anything else. Only this module makes it.
#[derive(Debug)]
pub(crate) struct Cleared {
    _private: (),
}

/// Proof that a lease's footprint is registered as active. Only this module
/// makes it.
#[derive(Debug)]
pub(crate) struct Ticket {
    id: u64,
    footprint: Footprint,
}

impl Ticket {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
    pub(crate) fn offset(&self) -> u64 {
        self.footprint.span.start
    }
    pub(crate) fn len(&self) -> u64 {
        self.footprint.span.len()
    }
    /// Whether the lease may write (exclusive or atomic).
    pub(crate) fn writes(&self) -> bool {
        !matches!(self.footprint.access, Access::Read)
    }
    /// The required alignment for an atomic lease.
    pub(crate) fn atomic_align(&self) -> Option<usize> {
        match self.footprint.access {
            Access::Atomic(width) => Some(usize::from(width)),
            _ => None,
        }
    }
}

/// An active footprint and the task that asked for it.
#[derive(Debug)]
struct Held {
    footprint: Footprint,
    task: Option<tokio::task::Id>,
}

/// A request waiting for its footprint to become free.
pub(crate) struct Waiting<P> {
    pub(crate) footprint: Footprint,
    pub(crate) payload: P,
}

/// Active leases and the FIFO of requests that wait for them.
pub(crate) struct LeaseTable<P> {
    active: HashMap<u64, Held>,
    waiting: VecDeque<Waiting<P>>,
    next_id: u64,
}

impl<P> Default for LeaseTable<P> {
    fn default() -> Self {
        LeaseTable {
            active: HashMap::new(),
            waiting: VecDeque::new(),
            next_id: 0,
        }
    }
}

impl<P> LeaseTable<P> {
    /// Whether `fp` conflicts with an active footprint.
    fn blocked_by_active(&self, fp: &Footprint) -> bool {
        self.active
            .values()
            .any(|held| conflict(&held.footprint, fp))
    }

    /// Whether a *new* request with footprint `fp` may run now: no active
    /// conflict and no conflicting request queued before it.
    pub(crate) fn admits(&self, fp: &Footprint) -> bool {
        !self.blocked_by_active(fp) && !self.waiting.iter().any(|w| conflict(&w.footprint, fp))
    }

    /// Whether an active lease taken by `task` conflicts with `fp`: the
    /// caller would wait on itself if it still holds that lease.
    pub(crate) fn held_by(&self, fp: &Footprint, task: Option<tokio::task::Id>) -> bool {
        task.is_some()
            && self
                .active
                .values()
                .any(|held| held.task == task && conflict(&held.footprint, fp))
    }

    /// Proof for an inline access that [`admits`](Self::admits) allowed.
    pub(crate) fn clear(&self, fp: &Footprint) -> Option<Cleared> {
        (!self.blocked_by_active(fp)).then_some(Cleared { _private: () })
    }

    /// Registers `fp` as active and returns its ticket, or `None` if it
    /// conflicts with an active footprint.
    pub(crate) fn register(
        &mut self,
        fp: Footprint,
        task: Option<tokio::task::Id>,
    ) -> Option<Ticket> {
        if self.blocked_by_active(&fp) {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.active.insert(
            id,
            Held {
                footprint: fp,
                task,
            },
        );
        Some(Ticket { id, footprint: fp })
    }

    /// Marks lease `id` released. Unknown ids (a ticket never handed out,
    /// a double release) are ignored.
    pub(crate) fn release(&mut self, id: u64) -> bool {
        self.active.remove(&id).is_some()
    }

    /// Number of active leases.
    pub(crate) fn active_len(&self) -> usize {
        self.active.len()
    }

    /// Queues a request behind the conflicting ones.
    pub(crate) fn enqueue(&mut self, footprint: Footprint, payload: P) {
        self.waiting.push_back(Waiting { footprint, payload });
    }

    /// Whether any request waits.
    pub(crate) fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Removes and returns the first waiting request that may run now: it
    /// conflicts with no active footprint and no request queued before it.
    /// Requests for which `gone` is true are dropped on the way.
    pub(crate) fn next_ready(&mut self, gone: impl Fn(&P) -> bool) -> Option<Waiting<P>> {
        self.waiting.retain(|w| !gone(&w.payload));
        let mut index = None;
        for (i, w) in self.waiting.iter().enumerate() {
            let before = self.waiting.iter().take(i);
            if !self.blocked_by_active(&w.footprint)
                && !before.clone().any(|b| conflict(&b.footprint, &w.footprint))
            {
                index = Some(i);
                break;
            }
        }
        index.and_then(|i| self.waiting.remove(i))
    }

    /// Empties the queue (on close).
    pub(crate) fn drain_waiting(&mut self) -> impl Iterator<Item = Waiting<P>> + '_ {
        self.waiting.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(start: u64, end: u64, access: Access) -> Footprint {
        Footprint {
            span: Span { start, end },
            access,
        }
    }

    #[test]
    fn compatibility_table() {
        use Access::*;
        let kinds = [Read, Write, Atomic(4), Atomic(8)];
        for a in kinds {
            for b in kinds {
                let expected = match (a, b) {
                    (Read, Read) => false,
                    (Atomic(x), Atomic(y)) => x != y,
                    _ => true,
                };
                assert_eq!(
                    conflict(&fp(0, 8, a), &fp(4, 12, b)),
                    expected,
                    "{a:?} vs {b:?}"
                );
                assert!(
                    !conflict(&fp(0, 8, a), &fp(8, 16, b)),
                    "disjoint {a:?} vs {b:?}"
                );
            }
        }
    }

    #[test]
    fn fifo_admission() {
        let mut table: LeaseTable<u32> = LeaseTable::default();
        let reader = table.register(fp(0, 10, Access::Read), None).unwrap();
        // A writer must wait for the reader ...
        assert!(!table.admits(&fp(5, 6, Access::Write)));
        table.enqueue(fp(5, 6, Access::Write), 1);
        // ... and a later reader of the same bytes queues behind the writer,
        assert!(!table.admits(&fp(0, 10, Access::Read)));
        table.enqueue(fp(0, 10, Access::Read), 2);
        // while a disjoint writer goes ahead.
        assert!(table.admits(&fp(20, 30, Access::Write)));
        assert!(table.next_ready(|_| false).is_none());
        assert!(table.release(reader.id()));
        assert!(!table.release(reader.id()));
        assert_eq!(table.next_ready(|_| false).unwrap().payload, 1);
        assert_eq!(table.next_ready(|_| false).unwrap().payload, 2);
        assert!(!table.has_waiting());
    }

    #[test]
    fn abandoned_waiters_are_dropped() {
        let mut table: LeaseTable<u32> = LeaseTable::default();
        let _w = table.register(fp(0, 10, Access::Write), None).unwrap();
        table.enqueue(fp(0, 10, Access::Read), 7);
        assert!(table.next_ready(|p| *p == 7).is_none());
        assert!(!table.has_waiting());
    }
}
