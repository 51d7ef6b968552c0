//! The direct-access gate: lets a handle copy small updates and loads
//! straight into and out of the current generation, without a round trip
//! to the actor, whenever the actor has nothing that could conflict.
//!
//! # Protocol
//!
//! A `holds` counter, and per-thread *slots* counting the direct operations
//! in flight (one cache line each, so that tasks on different threads do
//! not fight over one line). The gate is open while `holds` is zero.
//!
//! - A direct operation ([`GateCell::enter`]) adds one to its thread's slot,
//!   then reads `holds` (both `SeqCst`, see below). If it sees a hold it takes
//!   its one back and goes the slow way, through the actor, without touching
//!   the mapping. Otherwise it may read the cell's current generation and
//!   copy bytes (with relaxed *atomic* byte accesses, so two direct
//!   operations on the same bytes are not a data race), then takes its one
//!   back, waking a holder that waits in [`Gate::drain`].
//! - A [`Hold`] is an owned guard (it keeps the gate alive through an
//!   `Arc`): taking it adds one to `holds` (then the holder reads the slots,
//!   `SeqCst`), dropping it takes the one back, on every path. A handle takes one before it sends
//!   a request that touches bytes (so that no later direct operation
//!   overtakes it) and sends it along with the request; the actor keeps one
//!   while it has leases, waiting requests, or is closing.
//! - Before the actor touches bytes, grants a lease or replaces the
//!   generation, it waits, with a hold in place, until it has seen every
//!   slot at zero ([`Gate::drain`]).
//! - Why that suffices: the `SeqCst` accesses have one total order. If an
//!   operation's increment comes first, the holder's later reading of the
//!   slot sees the operation's one until the operation has left (and the
//!   operation's decrement, a release, orders its accesses before the
//!   holder's); if the holder's increment comes first, the operation sees
//!   the hold and backs off. Until the holds are gone, the actor has the
//!   mapping to itself as far as direct operations are concerned. On x86 a
//!   `SeqCst` read-modify-write is a single `lock`-prefixed instruction, so
//!   an operation costs two of them and no separate fence; the loom model
//!   expresses the same order with `SeqCst` fences, which loom checks
//!   (`crate::loom`).
//!
//! # The asymmetric form
//!
//! Where the kernel offers `membarrier(2)` (`sys::barrier`), a thread that
//! owns its slot (the first eight threads that call in; the rest share a
//! ninth and keep the form above) enters with a plain store of one, a
//! compiler fence and a plain load of `holds`, and leaves with a plain
//! store of zero and a plain load: no locked instruction, so consecutive
//! direct calls overlap their cache misses. The holder's side pays instead:
//! once per *session* (from `holds` leaving zero until it returns to zero),
//! before it first reads the slots, it runs the process-wide barrier, a full
//! barrier on every running thread of the process. A direct operation whose
//! load of `holds` comes after that barrier sees the hold and backs off; one
//! whose load came before it had its store made visible by it, so the holder
//! sees it in flight and waits for its zero (and, as above, its leaving
//! load sees the hold and wakes the holder). Within a session no operation
//! gets in after the first barrier, so later holds of the session skip it.
//! Sessions are counted before the `holds` increment that opens them, so
//! whoever sees a hold sees its session.
//!
//! One gate may guard several [`GateCell`]s (one per open of a file); a
//! hold on the gate closes all of them.
//!
//! The protocol, the wake-up of a draining holder included, is
//! model-checked with loom: `RUSTFLAGS="--cfg mmap_actor_loom" cargo test
//! --release --lib loom_tests` (the primitives come from `crate::loom`).

use std::sync::Arc;

use crate::loom::{
    asymmetric, compiler_fence, heavy_fence, sc_fence, thread_slot, AtomicU64, Ordering, Signal,
    UnsafeCell, SC,
};

/// Number of slots that belong to one thread each: more than the threads
/// of a typical runtime, few enough that scanning them is cheap and 10,000
/// mappings stay small. One more slot is shared by the threads beyond.
const SLOTS: usize = 8;

/// One slot on its own cache line: the direct operations in flight, and
/// how many updates (and bytes) went through it, ever (for the write-method
/// choice, `pending_bytes` and the flush policies; counted where the
/// updating thread already owns the line).
#[repr(align(128))]
struct Slot {
    in_flight: AtomicU64,
    writes: AtomicU64,
    bytes: AtomicU64,
}

/// The gate's state: holds, slots, and the wake-up of a draining holder.
pub(crate) struct Gate {
    holds: AtomicU64,
    /// Counts the times `holds` left zero (each starts a *session* of
    /// holds), moved before the `holds` increment that starts it.
    session: AtomicU64,
    /// The last session a process-wide barrier was run in, after it began
    /// (asymmetric protocol only).
    fenced: AtomicU64,
    /// `SLOTS` owned slots, then the shared one.
    slots: [Slot; SLOTS + 1],
    /// Woken when a direct operation leaves while a hold exists.
    drained: Signal,
    /// Whether owned slots use the asymmetric protocol (`sys::barrier`).
    light: bool,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("holds", &self.holds.load(Ordering::Relaxed))
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl Gate {
    /// A gate, open.
    pub(crate) fn new() -> Arc<Gate> {
        Arc::new(Gate {
            holds: AtomicU64::new(0),
            session: AtomicU64::new(0),
            fenced: AtomicU64::new(0),
            light: asymmetric(),
            slots: std::array::from_fn(|_| Slot {
                in_flight: AtomicU64::new(0),
                writes: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
            }),
            drained: Signal::default(),
        })
    }

    /// Enters for one direct operation, or returns `None` when a hold exists.
    #[inline]
    fn enter(&self) -> Option<Entered<'_>> {
        let (slot, own) = thread_slot(SLOTS);
        let light = own && self.light;
        let in_flight = &self.slots[slot].in_flight;
        let held = if light {
            // The thread's own slot: a plain store, and only the compiler
            // kept from moving the load before it; holders run the
            // process-wide barrier for the processor (`sys::barrier`).
            debug_assert_eq!(
                in_flight.load(Ordering::Relaxed),
                0,
                "nested direct operation"
            );
            in_flight.store(1, Ordering::Relaxed);
            compiler_fence();
            self.holds.load(Ordering::Acquire) != 0
        } else {
            in_flight.fetch_add(1, SC);
            // With `hold`'s increment and load: of two racing calls, at
            // least one sees the other's increment.
            sc_fence();
            self.holds.load(SC) != 0
        };
        let entered = Entered {
            gate: self,
            slot,
            light,
        };
        if held {
            // Held: leave without touching anything (the drop wakes the
            // holder if it waits for the slots to drain).
            drop(entered);
            return None;
        }
        Some(entered)
    }

    /// Takes a hold: no direct operation enters until the guard is dropped.
    pub(crate) fn hold(self: &Arc<Self>) -> Hold {
        let mut holds = self.holds.load(SC);
        loop {
            if holds == 0 {
                // A new session: counted before it starts, so that whoever
                // sees this hold sees the session too (`fence_session`).
                self.session.fetch_add(1, SC);
            }
            match self.holds.compare_exchange_weak(holds, holds + 1, SC, SC) {
                Ok(_) => break,
                Err(now) => holds = now,
            }
        }
        // Pairs with `enter` and `Entered::drop`.
        sc_fence();
        Hold {
            gate: Arc::clone(self),
        }
    }

    /// The holder's half of the asymmetric protocol: once per session of
    /// holds, a process-wide barrier, after which every direct operation on
    /// an owned slot either is seen by the holder's reads of the slots or
    /// sees the hold. (A later hold of the same session needs none: no
    /// direct operation has entered since.)
    fn fence_session(&self) {
        if !self.light {
            return;
        }
        let session = self.session.load(SC);
        if self.fenced.load(Ordering::Acquire) != session {
            heavy_fence();
            self.fenced.fetch_max(session, Ordering::AcqRel);
        }
    }

    /// Direct operations in flight (including ones about to back off).
    fn in_flight(&self) -> u64 {
        self.slots.iter().map(|s| s.in_flight.load(SC)).sum()
    }

    /// Waits until no direct operation is in flight. With `hold` in place,
    /// none can enter afterwards, so the caller may touch the bytes of every
    /// cell of this gate until the holds are gone.
    pub(crate) async fn drain(&self, hold: &Hold) {
        debug_assert!(std::ptr::eq(&*hold.gate, self), "a hold on another gate");
        self.fence_session();
        loop {
            let drained = self.drained.listen();
            if self.in_flight() == 0 {
                return;
            }
            drained.await;
        }
    }

    /// The updates and bytes direct operations have written, ever.
    pub(crate) fn written(&self) -> (u64, u64) {
        self.slots.iter().fold((0, 0), |(w, b), s| {
            (
                w + s.writes.load(Ordering::Relaxed),
                b + s.bytes.load(Ordering::Relaxed),
            )
        })
    }

    /// The exclusive right to replace cell values, if no direct operation
    /// is in flight now (with `hold` in place, none can start).
    pub(crate) fn try_exclusive<'a>(&'a self, hold: &'a Hold) -> Option<Exclusive<'a>> {
        debug_assert!(std::ptr::eq(&*hold.gate, self), "a hold on another gate");
        self.fence_session();
        (self.in_flight() == 0).then_some(Exclusive { gate: self })
    }
}

/// A hold on a gate, released when dropped (like tokio's
/// `OwnedSemaphorePermit`: it owns an `Arc` of the gate, so it can travel
/// with a request to the actor and be dropped there on every path).
#[derive(Debug)]
#[must_use = "dropping a hold reopens the direct path at once"]
pub(crate) struct Hold {
    gate: Arc<Gate>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let prev = self.gate.holds.fetch_sub(1, Ordering::Release);
        debug_assert!(prev > 0, "a hold released twice");
    }
}

/// One direct operation inside the gate.
pub(crate) struct Entered<'a> {
    gate: &'a Gate,
    slot: usize,
    /// Entered through the thread's own slot, asymmetric protocol.
    light: bool,
}

impl Drop for Entered<'_> {
    #[inline]
    fn drop(&mut self) {
        let in_flight = &self.gate.slots[self.slot].in_flight;
        if self.light {
            // Orders this operation's accesses before a holder's that sees
            // the zero.
            in_flight.store(0, Ordering::Release);
            compiler_fence();
            // A holder that read this slot before the store ran its barrier
            // after its hold: this load sees the hold, and wakes it.
            if self.gate.holds.load(Ordering::Relaxed) != 0 {
                self.gate.drained.notify_all();
            }
            return;
        }
        let prev = in_flight.fetch_sub(1, SC);
        if prev == 1 {
            // Pairs with `hold`: a holder that read this slot before the
            // decrement is seen here and woken.
            sc_fence();
            if self.gate.holds.load(SC) != 0 {
                // This slot drained while someone holds: it may wait in
                // `drain`.
                self.gate.drained.notify_all();
            }
        }
    }
}

/// The right to replace the values of a gate's cells: a hold with no direct
/// operation in flight.
pub(crate) struct Exclusive<'a> {
    gate: &'a Gate,
}

/// A value that direct operations read under a gate, and that only the
/// holder of an [`Exclusive`] of that gate replaces.
pub(crate) struct GateCell<M> {
    gate: Arc<Gate>,
    value: UnsafeCell<Arc<M>>,
}

// SAFETY: `value` is only written through `replace`, which demands an
// `Exclusive` of the cell's own gate (a hold in place and no direct
// operation in flight after it was taken), and only read through `Reading`,
// which exists only while a direct operation is inside the gate without
// having seen a hold; the SeqCst/Release/Acquire operations of the protocol
// order the two (module docs).
unsafe impl<M: Send + Sync> Sync for GateCell<M> {}
// SAFETY: the cell owns an `Arc<M>` and an `Arc<Gate>`; both may move
// between threads when `M` is `Send + Sync`.
unsafe impl<M: Send + Sync> Send for GateCell<M> {}

impl<M> std::fmt::Debug for GateCell<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateCell")
            .field("gate", &self.gate)
            .finish()
    }
}

impl<M> GateCell<M> {
    /// A cell guarded by `gate`, holding `value`.
    pub(crate) fn new(gate: Arc<Gate>, value: Arc<M>) -> GateCell<M> {
        GateCell {
            gate,
            value: UnsafeCell::new(value),
        }
    }

    /// The gate guarding this cell.
    pub(crate) fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// Enters the gate for one direct operation on this cell's value, or
    /// returns `None` when a hold exists.
    #[inline]
    pub(crate) fn enter(&self) -> Option<Reading<'_, M>> {
        let entered = self.gate.enter()?;
        Some(Reading {
            cell: self,
            entered,
        })
    }

    /// Makes `next` the value later direct operations use and returns the
    /// previous one, for the caller to drop where an `munmap` may run.
    ///
    /// # Panics
    ///
    /// If `exclusive` belongs to another gate (an internal bug).
    pub(crate) fn replace(&self, exclusive: &Exclusive<'_>, next: Arc<M>) -> Arc<M> {
        assert!(
            std::ptr::eq(exclusive.gate, &*self.gate),
            "exclusive right of another gate"
        );
        // SAFETY: `exclusive` proves a hold on this cell's gate exists and
        // no direct operation was in flight after it was taken, so no
        // `Reading` of this cell exists until the hold is released, and the
        // borrow of the hold inside `exclusive` outlives this call.
        self.value
            .with_mut(|value| unsafe { std::mem::replace(&mut *value, next) })
    }
}

/// A direct operation inside the gate, reading a cell's value.
pub(crate) struct Reading<'a, M> {
    cell: &'a GateCell<M>,
    entered: Entered<'a>,
}

impl<M> Reading<'_, M> {
    /// Counts one update of `bytes` made by this operation; returns this
    /// slot's count of updates.
    #[inline]
    pub(crate) fn wrote(&self, bytes: u64) -> u64 {
        let slot = &self.entered.gate.slots[self.entered.slot];
        // Plain adds (no locked instruction, no barrier): slots are shared
        // by threads only when there are more threads than slots, and a
        // count lost there only delays a policy flush or the write-method
        // choice a little.
        let writes = slot.writes.load(Ordering::Relaxed) + 1;
        slot.writes.store(writes, Ordering::Relaxed);
        let total = slot.bytes.load(Ordering::Relaxed) + bytes;
        slot.bytes.store(total, Ordering::Relaxed);
        writes
    }

    /// Counts `bytes` more for the update this operation continues (a
    /// large update copied a piece per entry counts as one update).
    pub(crate) fn wrote_more(&self, bytes: u64) {
        let slot = &self.entered.gate.slots[self.entered.slot];
        // Plain add, as in `wrote`.
        let total = slot.bytes.load(Ordering::Relaxed) + bytes;
        slot.bytes.store(total, Ordering::Relaxed);
    }

    /// Runs `f` on the cell's current value; the proof of being inside the
    /// gate goes along, for the raw accesses that demand it.
    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(&M, &Entered<'_>) -> R) -> R {
        // SAFETY: this operation entered the gate without seeing a hold,
        // and the only writer of the value (`GateCell::replace`) runs only
        // after a hold was taken and this operation has left (module docs).
        self.cell
            .value
            .with(|value| f(unsafe { &**value }, &self.entered))
    }
}

#[cfg(all(test, mmap_actor_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc as LoomArc;
    use loom::thread;

    /// Runs `f` under loom with bounded preemption: every interleaving with
    /// up to three forced switches, in seconds.
    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(f);
    }

    /// Two direct operations race a holder that replaces the value: no read
    /// of the value overlaps the write, and an operation that gets in sees
    /// the old or the new value.
    #[test]
    fn gate_replace_never_overlaps_a_direct_operation() {
        model(|| {
            let cell = LoomArc::new(GateCell::new(Gate::new(), Arc::new(1u32)));
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    let cell = cell.clone();
                    thread::spawn(move || {
                        if let Some(reading) = cell.enter() {
                            let v = reading.with(|m, _| *m);
                            assert!(v == 1 || v == 2);
                        }
                    })
                })
                .collect();
            let hold = cell.gate().hold();
            loop {
                match cell.gate().try_exclusive(&hold) {
                    Some(exclusive) => {
                        drop(cell.replace(&exclusive, Arc::new(2)));
                        break;
                    }
                    None => thread::yield_now(),
                }
            }
            drop(hold);
            for r in readers {
                r.join().unwrap();
            }
            let reading = cell.enter().expect("open again");
            assert_eq!(reading.with(|m, _| *m), 2);
        });
    }

    /// A holder that waits in `drain` for a direct operation in flight is
    /// woken when it leaves: the wake-up path is part of the model (a lost
    /// wake-up would spin forever and fail the check).
    #[test]
    fn gate_drain_is_woken_by_the_last_operation_to_leave() {
        model(|| {
            let cell = LoomArc::new(GateCell::new(Gate::new(), Arc::new(0u32)));
            let c2 = cell.clone();
            let op = thread::spawn(move || {
                if let Some(reading) = c2.enter() {
                    // Before the replace, or after the hold is gone.
                    reading.with(|m, _| assert!(*m == 0 || *m == 1));
                }
            });
            let hold = cell.gate().hold();
            // As the actor publishes: drain, then try; an operation that
            // arrives meanwhile sees the hold and backs off, so this ends.
            loop {
                loom::future::block_on(cell.gate().drain(&hold));
                if let Some(exclusive) = cell.gate().try_exclusive(&hold) {
                    drop(cell.replace(&exclusive, Arc::new(1)));
                    break;
                }
            }
            drop(hold);
            op.join().unwrap();
        });
    }

    /// A hold excludes new entries, and dropping it reopens the gate.
    #[test]
    fn gate_hold_excludes_new_entries() {
        model(|| {
            let cell = LoomArc::new(GateCell::new(Gate::new(), Arc::new(0u32)));
            let hold = cell.gate().hold();
            let c2 = cell.clone();
            let t = thread::spawn(move || c2.enter().is_none());
            assert!(t.join().unwrap());
            drop(hold);
            assert!(cell.enter().is_some());
        });
    }
}
