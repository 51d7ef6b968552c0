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
//! writer or a shrink. Disjoint ranges never wait for each other. One
//! exception keeps a holder from deadlocking behind a request that waits
//! for it: a request whose owner holds an active lease overlapping it, and
//! that conflicts with no active lease, is admitted ahead of the waiters
//! (a reader holding a segment can read those bytes again while a writer
//! waits for it; the writer is served as soon as the holder lets go).
//!
//! # Costs
//!
//! Active leases and waiting requests are indexed by a [`Coverage`] per
//! kind of access, so every conflict check costs `O(log n)`. Consecutive
//! waiting requests with the same footprint form one *run*, and a pass over
//! the queue (after a release) visits runs, not requests: thousands of
//! requests queued on one hot range cost one step per pass. The queue is
//! bounded by the actor, which stops taking requests from its channel while
//! [`LeaseTable::is_full`] (the channel then pushes back on callers).

mod coverage;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::ops::Bound::{Excluded, Unbounded};

use crate::region::ByteRange;

use self::coverage::Coverage;

/// How many requests may wait in the table before the actor stops taking
/// more from its channel. Large enough that no ordinary program meets it
/// (a waiting request costs a few hundred bytes), small enough that a flood
/// of requests behind one lease is pushed back on its callers.
pub(crate) const MAX_WAITING: usize = 16 * 1024;

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

/// What the actor hears from the outside besides requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Notice {
    /// The lease with this ticket id was dropped.
    Released(u64),
    /// The caller of request `id` stopped waiting for it (its future was
    /// dropped): if it still waits here, it goes.
    Abandoned(u64),
    /// Direct updates reached a flush policy's threshold.
    PolicyDue,
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
    /// The required alignment for an atomic lease.
    pub(crate) fn atomic_align(&self) -> Option<usize> {
        match self.footprint.access {
            Access::Atomic(width) => Some(usize::from(width)),
            _ => None,
        }
    }
}

/// A set of footprints, indexed by access so that conflict checks cost
/// `O(log n)`.
#[derive(Debug, Default)]
struct Index {
    read: Coverage,
    write: Coverage,
    atomic4: Coverage,
    atomic8: Coverage,
}

impl Index {
    fn class(&mut self, access: Access) -> &mut Coverage {
        match access {
            Access::Read => &mut self.read,
            Access::Atomic(4) => &mut self.atomic4,
            Access::Atomic(8) => &mut self.atomic8,
            // Writes, and (conservatively) atomics of any other width.
            Access::Write | Access::Atomic(_) => &mut self.write,
        }
    }

    fn add(&mut self, fp: &Footprint) {
        self.class(fp.access).add(fp.range);
    }

    fn remove(&mut self, fp: &Footprint) {
        self.class(fp.access).remove(fp.range);
    }

    /// Whether any footprint held here conflicts with `fp`.
    fn conflicts(&self, fp: &Footprint) -> bool {
        let r = &fp.range;
        let others = self.write.overlaps(r);
        match fp.access {
            Access::Read => others || self.atomic4.overlaps(r) || self.atomic8.overlaps(r),
            Access::Atomic(4) => others || self.read.overlaps(r) || self.atomic8.overlaps(r),
            Access::Atomic(8) => others || self.read.overlaps(r) || self.atomic4.overlaps(r),
            Access::Write | Access::Atomic(_) => {
                others
                    || self.read.overlaps(r)
                    || self.atomic4.overlaps(r)
                    || self.atomic8.overlaps(r)
            }
        }
    }
}

/// An active footprint and who asked for it.
#[derive(Debug)]
struct Active<O> {
    footprint: Footprint,
    owner: O,
}

/// Consecutive waiting requests with one footprint, served in order.
struct Run<P> {
    footprint: Footprint,
    /// `(request id, payload)`, oldest first; cancelled ones are skipped
    /// (and dropped) when they reach the front.
    requests: VecDeque<(u64, P)>,
    /// Requests in `requests` not cancelled.
    live: usize,
}

/// Where a pass over the queue is: the next run to look at, and the
/// footprints of the runs before it that still wait (a later request that
/// conflicts with one of them must keep waiting behind it).
struct Pass {
    next: Option<u64>,
    blocked: Index,
}

/// Active leases and the queue of requests that wait for them. `P` is what
/// a waiting request carries; `O` names who asked (to detect a caller that
/// would wait on its own lease, and to let a holder's own requests in).
pub(crate) struct LeaseTable<P, O> {
    active: HashMap<u64, Active<O>>,
    active_index: Index,
    /// Active lease ids by owner.
    owners: HashMap<O, Vec<u64>>,
    next_ticket: u64,
    runs: BTreeMap<u64, Run<P>>,
    /// The footprints of runs with live requests (one entry per run).
    waiting_index: Index,
    /// Which run each live waiting request is in.
    run_of: HashMap<u64, u64>,
    /// Cancelled requests still sitting in their run.
    cancelled: HashSet<u64>,
    live: usize,
    next_run: u64,
    pass: Option<Pass>,
}

impl<P, O> Default for LeaseTable<P, O> {
    fn default() -> Self {
        LeaseTable {
            active: HashMap::new(),
            active_index: Index::default(),
            owners: HashMap::new(),
            next_ticket: 0,
            runs: BTreeMap::new(),
            waiting_index: Index::default(),
            run_of: HashMap::new(),
            cancelled: HashSet::new(),
            live: 0,
            next_run: 0,
            pass: None,
        }
    }
}

impl<P, O: Copy + Eq + Hash> LeaseTable<P, O> {
    /// Whether a *new* request with footprint `fp` from `owner` may run
    /// now: no active conflict, and either no conflicting request queued
    /// before it or `owner` holds an active lease overlapping it (the
    /// holder's own request goes ahead of requests that wait for the
    /// holder).
    pub(crate) fn admits(&self, fp: &Footprint, owner: &O) -> bool {
        !self.active_index.conflicts(fp)
            && (!self.waiting_index.conflicts(fp) || self.owner_overlaps(fp, owner))
    }

    /// Whether `owner` holds an active lease sharing a byte with `fp`.
    fn owner_overlaps(&self, fp: &Footprint, owner: &O) -> bool {
        self.owners.get(owner).is_some_and(|ids| {
            ids.iter()
                .filter_map(|id| self.active.get(id))
                .any(|held| held.footprint.range.overlaps(&fp.range))
        })
    }

    /// Whether an active lease taken by `owner` conflicts with `fp`: the
    /// caller would wait on itself if it still holds that lease.
    pub(crate) fn held_by(&self, fp: &Footprint, owner: &O) -> bool {
        self.owners.get(owner).is_some_and(|ids| {
            ids.iter()
                .filter_map(|id| self.active.get(id))
                .any(|held| conflict(&held.footprint, fp))
        })
    }

    /// Proof for an inline access that [`admits`](Self::admits) allowed.
    pub(crate) fn clear(&self, fp: &Footprint) -> Option<Cleared> {
        (!self.active_index.conflicts(fp)).then_some(Cleared { _private: () })
    }

    /// Registers `fp` as active and returns its ticket, or `None` if it
    /// conflicts with an active footprint.
    pub(crate) fn register(&mut self, fp: Footprint, owner: O) -> Option<Ticket> {
        if self.active_index.conflicts(&fp) {
            return None;
        }
        let id = self.next_ticket;
        self.next_ticket += 1;
        self.active_index.add(&fp);
        self.owners.entry(owner).or_default().push(id);
        self.active.insert(
            id,
            Active {
                footprint: fp,
                owner,
            },
        );
        Some(Ticket { id, footprint: fp })
    }

    /// Marks lease `id` released and returns its footprint. Unknown ids (a
    /// ticket never handed out, a double release) are ignored: `None`.
    pub(crate) fn release(&mut self, id: u64) -> Option<Footprint> {
        let held = self.active.remove(&id)?;
        self.active_index.remove(&held.footprint);
        if let Some(ids) = self.owners.get_mut(&held.owner) {
            ids.retain(|other| *other != id);
            if ids.is_empty() {
                self.owners.remove(&held.owner);
            }
        }
        Some(held.footprint)
    }

    /// Whether nothing is leased and nothing waits.
    pub(crate) fn is_idle(&self) -> bool {
        self.active.is_empty() && self.live == 0
    }

    /// Number of active leases.
    pub(crate) fn active_len(&self) -> usize {
        self.active.len()
    }

    /// Whether any request waits.
    pub(crate) fn has_waiting(&self) -> bool {
        self.live > 0
    }

    /// Number of requests waiting.
    #[cfg(test)]
    pub(crate) fn waiting_len(&self) -> usize {
        self.live
    }

    /// Whether the queue is at its bound: the actor takes no new requests
    /// until some are served.
    pub(crate) fn is_full(&self) -> bool {
        self.live >= MAX_WAITING
    }

    /// Queues request `id` behind the conflicting ones.
    pub(crate) fn enqueue(&mut self, footprint: Footprint, id: u64, payload: P) {
        let joins_last = self
            .runs
            .iter()
            .next_back()
            .is_some_and(|(_, run)| run.footprint == footprint && run.live > 0);
        let seq = if joins_last {
            self.next_run - 1
        } else {
            let seq = self.next_run;
            self.next_run += 1;
            self.waiting_index.add(&footprint);
            self.runs.insert(
                seq,
                Run {
                    footprint,
                    requests: VecDeque::new(),
                    live: 0,
                },
            );
            seq
        };
        let run = self.runs.get_mut(&seq).expect("the run just found or made");
        run.requests.push_back((id, payload));
        run.live += 1;
        self.run_of.insert(id, seq);
        self.live += 1;
    }

    /// Forgets waiting request `id` (its caller gave up). Returns whether
    /// it was waiting. Its payload is dropped now or when it reaches the
    /// front of its run.
    pub(crate) fn cancel(&mut self, id: u64) -> bool {
        let Some(seq) = self.run_of.remove(&id) else {
            return false;
        };
        self.live -= 1;
        let run = self.runs.get_mut(&seq).expect("a live request's run");
        run.live -= 1;
        if run.live == 0 {
            self.remove_run(seq);
        } else {
            self.cancelled.insert(id);
        }
        true
    }

    /// Removes a run that has no live request left (what it still holds
    /// was cancelled).
    fn remove_run(&mut self, seq: u64) {
        if let Some(run) = self.runs.remove(&seq) {
            debug_assert_eq!(run.live, 0, "removing a run with live requests");
            self.waiting_index.remove(&run.footprint);
            for (id, _) in &run.requests {
                self.cancelled.remove(id);
            }
        }
    }

    /// Starts a pass over the queue, oldest first (after leases were
    /// released or requests served).
    pub(crate) fn begin_pass(&mut self) {
        self.pass = Some(Pass {
            next: self.runs.keys().next().copied(),
            blocked: Index::default(),
        });
    }

    /// The next waiting request of this pass that may run now, removed from
    /// the queue: it conflicts with no active footprint and with no request
    /// still waiting before it. Requests for which `gone` is true are
    /// dropped on the way. `None` ends the pass.
    pub(crate) fn next_ready(&mut self, gone: impl Fn(&P) -> bool) -> Option<P> {
        loop {
            let pass = self.pass.as_mut()?;
            let Some(seq) = pass.next else {
                self.pass = None;
                return None;
            };
            let Some(run) = self.runs.get_mut(&seq) else {
                pass.next = next_key(&self.runs, seq);
                continue;
            };
            // Drop cancelled and abandoned requests at the front.
            while let Some((id, payload)) = run.requests.front() {
                if self.cancelled.remove(id) {
                    run.requests.pop_front();
                } else if gone(payload) {
                    let id = *id;
                    run.requests.pop_front();
                    run.live -= 1;
                    self.live -= 1;
                    self.run_of.remove(&id);
                } else {
                    break;
                }
            }
            if run.requests.is_empty() {
                pass.next = next_key(&self.runs, seq);
                self.remove_run(seq);
                continue;
            }
            let fp = run.footprint;
            if self.active_index.conflicts(&fp) || pass.blocked.conflicts(&fp) {
                pass.blocked.add(&fp);
                pass.next = next_key(&self.runs, seq);
                continue;
            }
            // Admit the front request. The pass stays on this run: the next
            // request of it runs too unless this one left a conflicting
            // lease behind.
            let (id, payload) = run.requests.pop_front().expect("not empty");
            run.live -= 1;
            self.live -= 1;
            self.run_of.remove(&id);
            if run.live == 0 {
                pass.next = next_key(&self.runs, seq);
                self.remove_run(seq);
            }
            return Some(payload);
        }
    }

    /// Removes every waiting request for which `pick` is true (those of a
    /// mapping being closed), oldest first.
    pub(crate) fn drain_waiting(&mut self, pick: impl Fn(&P) -> bool) -> Vec<P> {
        let mut out = Vec::new();
        let seqs: Vec<u64> = self.runs.keys().copied().collect();
        for seq in seqs {
            let run = self.runs.get_mut(&seq).expect("listed");
            let mut kept = VecDeque::new();
            for (id, payload) in run.requests.drain(..) {
                if self.cancelled.contains(&id) {
                    kept.push_back((id, payload));
                } else if pick(&payload) {
                    run.live -= 1;
                    self.live -= 1;
                    self.run_of.remove(&id);
                    out.push(payload);
                } else {
                    kept.push_back((id, payload));
                }
            }
            run.requests = kept;
            if run.live == 0 {
                self.remove_run(seq);
            }
        }
        out
    }
}

fn next_key<V>(map: &BTreeMap<u64, V>, after: u64) -> Option<u64> {
    map.range((Excluded(after), Unbounded))
        .next()
        .map(|(k, _)| *k)
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
            self.arrive_from(id, 0, footprint);
        }
        fn arrive_from(&mut self, id: u32, owner: u32, footprint: Footprint) {
            if self.table.admits(&footprint, &owner) {
                self.served.push(id);
            } else {
                self.table.enqueue(footprint, u64::from(id), id);
            }
        }
        fn settle(&mut self) {
            self.table.begin_pass();
            while let Some(id) = self.table.next_ready(|_| false) {
                self.served.push(id);
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
        assert!(!table.admits(&fp(5, 6, Access::Write), &9));
        table.enqueue(fp(5, 6, Access::Write), 1, 1);
        // ... and a later reader of the same bytes queues behind the writer,
        assert!(!table.admits(&fp(0, 10, Access::Read), &9));
        table.enqueue(fp(0, 10, Access::Read), 2, 2);
        // while a disjoint writer goes ahead.
        assert!(table.admits(&fp(20, 30, Access::Write), &9));
        table.begin_pass();
        assert!(table.next_ready(|_| false).is_none());
        assert!(table.release(reader.id()).is_some());
        assert!(table.release(reader.id()).is_none());
        table.begin_pass();
        assert_eq!(table.next_ready(|_| false), Some(1));
        assert_eq!(table.next_ready(|_| false), Some(2));
        assert_eq!(table.next_ready(|_| false), None);
        assert!(!table.has_waiting());
    }

    #[test]
    fn abandoned_waiters_are_dropped() {
        let mut table: LeaseTable<u32, u32> = LeaseTable::default();
        let _w = table.register(fp(0, 10, Access::Write), 0).unwrap();
        table.enqueue(fp(0, 10, Access::Read), 7, 7);
        table.begin_pass();
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
        table.enqueue(fp(8, 16, Access::Write), 9, 9);
        assert!(table.clear(&fp(8, 16, Access::Read)).is_some());
        assert!(!table.admits(&fp(8, 16, Access::Read), &1));
        assert!(table.release(atomic.id()).is_some());
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
        let seg = h.table.register(fp(100, 200, Access::Read), 99).unwrap();
        // The shrink to 50 cuts the segment: it waits ...
        h.arrive(1, fp(50, u64::MAX, Access::Write));
        // ... and readers of the tail that arrive later queue behind it,
        h.arrive(2, fp(60, 70, Access::Read));
        // while readers in front of the cut go ahead.
        h.arrive(3, fp(0, 10, Access::Read));
        assert_eq!(h.served, vec![3]);
        assert!(h.table.release(seg.id()).is_some());
        h.settle();
        assert_eq!(h.served, vec![3, 1, 2]);
        assert!(h.table.is_idle());
    }

    #[test]
    fn readers_behind_a_writer_are_admitted_together_once_it_is_served() {
        let mut h = Harness::new();
        let first = h.table.register(fp(0, 8, Access::Read), 99).unwrap();
        h.arrive(1, fp(0, 8, Access::Write));
        h.arrive(2, fp(0, 8, Access::Read));
        h.arrive(3, fp(4, 12, Access::Read));
        h.arrive(4, fp(100, 108, Access::Write));
        assert_eq!(h.served, vec![4]);
        h.table.release(first.id());
        h.settle();
        assert_eq!(h.served, vec![4, 1, 2, 3]);
    }

    #[test]
    fn a_cancelled_waiter_leaves_nothing_behind() {
        let mut table: LeaseTable<u32, u32> = LeaseTable::default();
        let seg = table.register(fp(0, 10, Access::Read), 0).unwrap();
        table.enqueue(fp(0, 100, Access::Write), 1, 1);
        assert!(!table.admits(&fp(50, 60, Access::Read), &2));
        assert!(table.cancel(1));
        assert!(!table.cancel(1), "a second cancel finds nothing");
        assert!(!table.has_waiting());
        // The very next request of the range goes ahead: no ghost.
        assert!(table.admits(&fp(50, 60, Access::Read), &2));
        assert!(table.admits(&fp(50, 60, Access::Write), &2));
        assert!(table.release(seg.id()).is_some());
        assert!(table.is_idle());
    }

    #[test]
    fn a_cancelled_request_inside_a_run_is_skipped() {
        let mut h = Harness::new();
        let w = h.table.register(fp(0, 8, Access::Write), 0).unwrap();
        for id in 1..=5 {
            h.arrive(id, fp(0, 8, Access::Write));
        }
        assert!(h.table.cancel(3));
        assert_eq!(h.table.waiting_len(), 4);
        h.table.release(w.id());
        h.settle();
        assert_eq!(h.served, vec![1, 2, 4, 5]);
        assert!(h.table.is_idle());
    }

    #[test]
    fn a_holder_reads_again_ahead_of_a_writer_that_waits_for_it() {
        let mut h = Harness::new();
        // Task 1 holds a segment; task 2 waits to write the same bytes.
        let seg = h.table.register(fp(0, 8, Access::Read), 1).unwrap();
        h.arrive_from(10, 2, fp(0, 8, Access::Write));
        // Task 1 reads the bytes again: admitted ahead of the writer.
        h.arrive_from(11, 1, fp(0, 8, Access::Read));
        h.arrive_from(12, 1, fp(2, 4, Access::Read));
        // A reader that holds nothing queues behind the writer (no
        // starvation of writers).
        h.arrive_from(13, 3, fp(0, 8, Access::Read));
        // The holder's write of its own bytes still waits (it conflicts with
        // its own active segment).
        h.arrive_from(14, 1, fp(0, 8, Access::Write));
        assert_eq!(h.served, vec![11, 12]);
        h.table.release(seg.id());
        h.settle();
        assert_eq!(h.served, vec![11, 12, 10, 13, 14]);
    }

    #[test]
    fn a_pass_stops_on_a_run_once_its_front_leaves_a_lease() {
        let mut table: LeaseTable<u32, u32> = LeaseTable::default();
        let w = table.register(fp(0, 8, Access::Write), 0).unwrap();
        for id in 1..=3 {
            table.enqueue(fp(0, 8, Access::Write), id, id as u32);
        }
        table.enqueue(fp(100, 108, Access::Write), 4, 4);
        table.release(w.id());
        table.begin_pass();
        assert_eq!(table.next_ready(|_| false), Some(1));
        // Request 1 took a lease of its bytes (a large copy): 2 and 3 wait,
        // the disjoint request 4 goes ahead.
        let l = table.register(fp(0, 8, Access::Write), 0).unwrap();
        assert_eq!(table.next_ready(|_| false), Some(4));
        assert_eq!(table.next_ready(|_| false), None);
        table.release(l.id());
        table.begin_pass();
        assert_eq!(table.next_ready(|_| false), Some(2));
        assert_eq!(table.next_ready(|_| false), Some(3));
        assert_eq!(table.next_ready(|_| false), None);
    }

    #[test]
    fn thousands_of_waiters_on_one_range_drain_in_linear_time() {
        let mut table: LeaseTable<u32, u32> = LeaseTable::default();
        let w = table.register(fp(0, 64, Access::Write), 0).unwrap();
        let n = 200_000u32;
        for id in 0..n {
            table.enqueue(fp(0, 64, Access::Write), u64::from(id), id);
        }
        assert_eq!(table.runs.len(), 1, "identical footprints share one run");
        table.release(w.id());
        // Each request takes and releases a lease, as a large copy does: a
        // pass per request, each looking at one run.
        let mut served = 0;
        loop {
            table.begin_pass();
            let Some(id) = table.next_ready(|_| false) else {
                break;
            };
            assert_eq!(id, served);
            served += 1;
            let lease = table.register(fp(0, 64, Access::Write), 0).unwrap();
            assert_eq!(table.next_ready(|_| false), None);
            table.release(lease.id());
        }
        assert_eq!(served, n);
        assert!(table.is_idle());
    }

    #[test]
    fn drain_picks_only_what_it_is_asked_for() {
        let mut table: LeaseTable<u32, u32> = LeaseTable::default();
        let w = table.register(fp(0, 64, Access::Write), 0).unwrap();
        for id in 0..10u32 {
            table.enqueue(fp(0, 64, Access::Write), u64::from(id), id);
        }
        table.cancel(4);
        let odd = table.drain_waiting(|p| p % 2 == 1);
        assert_eq!(odd, vec![1, 3, 5, 7, 9]);
        assert_eq!(table.waiting_len(), 4);
        table.release(w.id());
        table.begin_pass();
        let mut rest = Vec::new();
        while let Some(p) = table.next_ready(|_| false) {
            rest.push(p);
        }
        assert_eq!(rest, vec![0, 2, 6, 8]);
        assert!(table.is_idle());
    }
}
