//! The lease table: which byte ranges are held, how, and who waits for them.
//!
//! A pure data structure (no tokio, no I/O), so that the actor and the raw
//! module can both depend on it and its admission rules can be tested
//! without a runtime (see the tests at the bottom).
//!
//! # Invariant
//!
//! Two *active* footprints that [`conflict`] never coexist. Every access to
//! mapped bytes is covered by an active footprint for as long as it lasts:
//! a lease's for the lease's life; an inline `load`/`update` is checked with
//! [`LeaseTable::clear`] and runs to completion before the actor looks at
//! another request. The proof types [`Cleared`] and [`Ticket`], which the
//! raw module (`sys`) demands before it hands out bytes, can only be made
//! here, after that check.
//!
//! Waiting requests are served first come, first served: a request is
//! admitted only if it conflicts with no active footprint *and* with no
//! request queued before it, so a steady stream of readers cannot starve a
//! writer or a shrink. Disjoint ranges never wait for each other.

use std::collections::{HashMap, VecDeque};

use crate::region::ByteRange;

/// How a footprint touches its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Plain reads (`Segment`, `load`).
    Read,
    /// Plain writes (`SegmentMut`, `update`, `modify`, a resize's tail).
    Write,
    /// Atomic access of this width in bytes (4 or 8).
    Atomic(u8),
}

/// A byte range and how it is touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Footprint {
    pub(crate) range: ByteRange,
    pub(crate) access: Access,
}

impl Footprint {
    pub(crate) fn new(range: ByteRange, access: Access) -> Footprint {
        Footprint { range, access }
    }
}

/// The compatibility table of the architecture guide: overlapping reads
/// coexist, overlapping same-width atomics coexist, everything else that
/// overlaps conflicts.
pub(crate) fn conflict(a: &Footprint, b: &Footprint) -> bool {
    if !a.range.overlaps(&b.range) {
        return false;
    }
    match (a.access, b.access) {
        (Access::Read, Access::Read) => false,
        (Access::Atomic(x), Access::Atomic(y)) => x != y,
        _ => true,
    }
}

/// What the actor hears from the outside besides requests: a lease was
/// dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Notice {
    /// The lease with this ticket id was dropped.
    Released(u64),
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
        self.footprint.range.start
    }
    pub(crate) fn len(&self) -> u64 {
        self.footprint.range.len()
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

/// An active footprint and who asked for it.
#[derive(Debug)]
struct Active<O> {
    footprint: Footprint,
    owner: O,
}

/// A request waiting for its footprint to become free.
pub(crate) struct Waiting<P> {
    pub(crate) footprint: Footprint,
    pub(crate) payload: P,
}

/// Active leases and the FIFO of requests that wait for them. `P` is what a
/// waiting request carries; `O` names who asked (to detect a caller that
/// would wait on its own lease).
pub(crate) struct LeaseTable<P, O> {
    active: HashMap<u64, Active<O>>,
    waiting: VecDeque<Waiting<P>>,
    next_id: u64,
}

impl<P, O> Default for LeaseTable<P, O> {
    fn default() -> Self {
        LeaseTable {
            active: HashMap::new(),
            waiting: VecDeque::new(),
            next_id: 0,
        }
    }
}

impl<P, O: PartialEq> LeaseTable<P, O> {
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

    /// Whether an active lease taken by `owner` conflicts with `fp`: the
    /// caller would wait on itself if it still holds that lease.
    pub(crate) fn held_by(&self, fp: &Footprint, owner: &O) -> bool {
        self.active
            .values()
            .any(|held| held.owner == *owner && conflict(&held.footprint, fp))
    }

    /// Proof for an inline access that [`admits`](Self::admits) allowed.
    pub(crate) fn clear(&self, fp: &Footprint) -> Option<Cleared> {
        (!self.blocked_by_active(fp)).then_some(Cleared { _private: () })
    }

    /// Registers `fp` as active and returns its ticket, or `None` if it
    /// conflicts with an active footprint.
    pub(crate) fn register(&mut self, fp: Footprint, owner: O) -> Option<Ticket> {
        if self.blocked_by_active(&fp) {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.active.insert(
            id,
            Active {
                footprint: fp,
                owner,
            },
        );
        Some(Ticket { id, footprint: fp })
    }

    /// Marks lease `id` released. Unknown ids (a ticket never handed out,
    /// a double release) are ignored: returns whether it was active.
    pub(crate) fn release(&mut self, id: u64) -> bool {
        self.active.remove(&id).is_some()
    }

    /// Whether nothing is leased and nothing waits.
    pub(crate) fn is_idle(&self) -> bool {
        self.active.is_empty() && self.waiting.is_empty()
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
    //! A deterministic harness: the table is driven by a script of
    //! registrations, releases and arrivals, and the order in which waiting
    //! requests are admitted is checked against the rules. No runtime.
    use super::*;

    fn fp(start: u64, end: u64, access: Access) -> Footprint {
        Footprint::new(ByteRange { start, end }, access)
    }

    /// A small driver: requests either run at once (recorded in `served`)
    /// or wait; `settle` admits every waiting request that may run, in the
    /// table's order, as the actor does.
    struct Harness {
        table: LeaseTable<u32, u32>,
        served: Vec<u32>,
    }

    impl Harness {
        fn new() -> Harness {
            Harness {
                table: LeaseTable::default(),
                served: Vec::new(),
            }
        }
        fn arrive(&mut self, id: u32, footprint: Footprint) {
            if self.table.admits(&footprint) {
                self.served.push(id);
            } else {
                self.table.enqueue(footprint, id);
            }
        }
        fn settle(&mut self) {
            while let Some(ready) = self.table.next_ready(|_| false) {
                self.served.push(ready.payload);
            }
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
                assert!(
                    !conflict(&fp(4, 4, a), &fp(0, 8, b)),
                    "empty {a:?} vs {b:?}"
                );
            }
        }
    }

    #[test]
    fn fifo_admission() {
        let mut table: LeaseTable<u32, u32> = LeaseTable::default();
        let reader = table.register(fp(0, 10, Access::Read), 0).unwrap();
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
        let mut table: LeaseTable<u32, u32> = LeaseTable::default();
        let _w = table.register(fp(0, 10, Access::Write), 0).unwrap();
        table.enqueue(fp(0, 10, Access::Read), 7);
        assert!(table.next_ready(|p| *p == 7).is_none());
        assert!(!table.has_waiting());
    }

    #[test]
    fn register_refuses_an_active_conflict_and_clear_ignores_waiters() {
        let mut table: LeaseTable<u32, u32> = LeaseTable::default();
        let atomic = table.register(fp(0, 8, Access::Atomic(8)), 0).unwrap();
        assert!(table.register(fp(0, 8, Access::Atomic(8)), 1).is_some());
        assert!(table.register(fp(4, 8, Access::Atomic(4)), 1).is_none());
        assert!(table.register(fp(0, 1, Access::Read), 1).is_none());
        assert!(table.clear(&fp(0, 8, Access::Write)).is_none());
        assert!(table.clear(&fp(8, 16, Access::Write)).is_some());
        // `clear` is about active leases only: a queued conflicting request
        // is the caller's business (`admits`).
        table.enqueue(fp(8, 16, Access::Write), 9);
        assert!(table.clear(&fp(8, 16, Access::Read)).is_some());
        assert!(!table.admits(&fp(8, 16, Access::Read)));
        assert!(table.release(atomic.id()));
        assert_eq!(table.active_len(), 1);
        assert!(!table.is_idle());
    }

    #[test]
    fn held_by_names_the_owner_of_a_conflicting_lease() {
        let mut table: LeaseTable<u32, u32> = LeaseTable::default();
        let _seg = table.register(fp(0, 8, Access::Read), 1).unwrap();
        assert!(table.held_by(&fp(4, 5, Access::Write), &1));
        assert!(!table.held_by(&fp(4, 5, Access::Write), &2));
        // A compatible request does not wait, whoever holds the bytes.
        assert!(!table.held_by(&fp(4, 5, Access::Read), &1));
    }

    #[test]
    fn a_shrink_is_not_overtaken_by_later_requests_for_its_tail() {
        let mut h = Harness::new();
        let seg = h.table.register(fp(100, 200, Access::Read), 0).unwrap();
        // The shrink to 50 cuts the segment: it waits ...
        h.arrive(1, fp(50, u64::MAX, Access::Write));
        // ... and readers of the tail that arrive later queue behind it,
        h.arrive(2, fp(60, 70, Access::Read));
        // while readers in front of the cut go ahead.
        h.arrive(3, fp(0, 10, Access::Read));
        assert_eq!(h.served, vec![3]);
        assert!(h.table.release(seg.id()));
        h.settle();
        assert_eq!(h.served, vec![3, 1, 2]);
        assert!(h.table.is_idle());
    }

    #[test]
    fn readers_behind_a_writer_are_admitted_together_once_it_is_served() {
        let mut h = Harness::new();
        let first = h.table.register(fp(0, 8, Access::Read), 0).unwrap();
        h.arrive(1, fp(0, 8, Access::Write));
        h.arrive(2, fp(0, 8, Access::Read));
        h.arrive(3, fp(4, 12, Access::Read));
        h.arrive(4, fp(100, 108, Access::Write));
        assert_eq!(h.served, vec![4]);
        h.table.release(first.id());
        h.settle();
        assert_eq!(h.served, vec![4, 1, 2, 3]);
    }
}
