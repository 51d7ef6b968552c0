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
//! - A direct operation adds one to its thread's slot, then (after a
//!   `SeqCst` fence) reads `holds`. If it sees a hold it takes its one back and goes the
//!   slow way, through the actor, without touching the mapping. Otherwise
//!   it may read the current generation and copy bytes (with relaxed
//!   *atomic* byte accesses, so two direct operations on the same bytes are
//!   not a data race), then takes its one back (`Release`), waking the actor
//!   if a hold now exists.
//! - A hold is taken (followed by a `SeqCst` fence) by a handle before it sends a request that
//!   touches bytes (so that no later direct operation overtakes it), and by
//!   the actor while it has leases, waiting requests, a resize or a close.
//!   Before the actor touches bytes, grants a lease or replaces the
//!   generation, it waits, with a hold in place, until it has seen every
//!   slot at zero.
//! - Why that suffices: the `SeqCst` fences have one total order. If an
//!   operation's fence comes first, the holder's later reading of the slot
//!   sees the operation's one until the operation has left (and the
//!   operation's `Release` decrement orders its accesses before the
//!   holder's); if the holder's fence comes first, the operation sees the
//!   hold. An
//!   operation that reads `holds` after the hold was added sees it and backs
//!   off. Until the holds are gone, the actor has the mapping to itself as
//!   far as direct operations are concerned.
//!
//! The protocol is model-checked with loom (`RUSTFLAGS="--cfg mmap_actor_loom" cargo
//! test --lib gate`).

use std::sync::Arc;

#[cfg(mmap_actor_loom)]
use loom::cell::UnsafeCell;
#[cfg(mmap_actor_loom)]
use loom::sync::atomic::{fence, AtomicU64, Ordering};
#[cfg(not(mmap_actor_loom))]
use std::cell::UnsafeCell;
#[cfg(not(mmap_actor_loom))]
use std::sync::atomic::{fence, AtomicU64, Ordering};

/// Number of slots: more than the threads of a typical runtime, few enough
/// that scanning them is cheap and 10,000 mappings stay small.
const SLOTS: usize = 8;

/// One slot on its own cache line.
#[repr(align(128))]
struct Slot(AtomicU64);

#[cfg(not(mmap_actor_loom))]
fn my_slot() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SLOT.with(|slot| {
        if slot.get() == usize::MAX {
            slot.set(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % SLOTS);
        }
        slot.get()
    })
}

#[cfg(mmap_actor_loom)]
fn my_slot() -> usize {
    // Two model threads in two slots, the others sharing: both cases are
    // explored.
    loom::thread::current()
        .name()
        .map(|n| n.len() % 2)
        .unwrap_or(0)
}

/// The gate's state and the generation direct operations use.
pub(crate) struct Gate<M> {
    holds: AtomicU64,
    slots: [Slot; SLOTS],
    /// Woken when a direct operation leaves while a hold exists.
    #[cfg(not(mmap_actor_loom))]
    drained: tokio::sync::Notify,
    /// Written only by the holder of an [`Exclusive`]; read only by an
    /// [`Entered`] operation. The protocol above keeps the two apart.
    current: UnsafeCell<Arc<M>>,
}

// SAFETY: `current` is only written through `Exclusive::publish`, which
// exists only while a hold is in place and no direct operation is in
// flight, and only read through `Entered`, which exists only while no hold
// was seen; the SeqCst/Release/Acquire operations order the two.
unsafe impl<M: Send + Sync> Sync for Gate<M> {}
// SAFETY: the gate owns an `Arc<M>` and atomics; both may move threads
// when `M` is `Send + Sync`.
unsafe impl<M: Send + Sync> Send for Gate<M> {}

impl<M> std::fmt::Debug for Gate<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("holds", &self.holds.load(Ordering::Relaxed))
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl<M> Gate<M> {
    /// A gate, open, over `current`.
    pub(crate) fn new(current: Arc<M>) -> Gate<M> {
        Gate {
            holds: AtomicU64::new(0),
            slots: std::array::from_fn(|_| Slot(AtomicU64::new(0))),
            #[cfg(not(mmap_actor_loom))]
            drained: tokio::sync::Notify::new(),
            current: UnsafeCell::new(current),
        }
    }

    /// Enters for one direct operation, or returns `None` when a hold exists.
    pub(crate) fn enter(&self) -> Option<Entered<'_, M>> {
        let slot = my_slot();
        self.slots[slot].0.fetch_add(1, Ordering::Relaxed);
        let entered = Entered { gate: self, slot };
        // Pairs with the fence in `hold`: of two racing calls, at least one
        // sees the other's increment.
        fence(Ordering::SeqCst);
        if self.holds.load(Ordering::Acquire) != 0 {
            // Held: leave without touching anything (the drop wakes the
            // actor if it waits for the slots to drain).
            drop(entered);
            return None;
        }
        Some(entered)
    }

    /// Takes a hold: no direct operation enters until it is released.
    pub(crate) fn hold(&self) {
        self.holds.fetch_add(1, Ordering::Relaxed);
        // Pairs with the fences in `enter` and in `Entered::drop`.
        fence(Ordering::SeqCst);
    }

    /// Releases a hold taken with [`hold`](Self::hold).
    pub(crate) fn unhold(&self) {
        let prev = self.holds.fetch_sub(1, Ordering::Release);
        debug_assert!(prev > 0, "unhold without a hold");
    }

    /// Direct operations in flight (including ones about to back off).
    pub(crate) fn in_flight(&self) -> u64 {
        self.slots.iter().map(|s| s.0.load(Ordering::Acquire)).sum()
    }

    /// Whether a hold exists.
    pub(crate) fn held(&self) -> bool {
        self.holds.load(Ordering::Acquire) != 0
    }

    /// Waits until no direct operation is in flight. With a hold in place
    /// (the caller's duty), none can enter afterwards, so the caller may
    /// touch the mapping's bytes until it releases its hold.
    #[cfg(mmap_actor_loom)]
    pub(crate) async fn drain(&self) {
        while self.in_flight() != 0 {
            loom::thread::yield_now();
        }
    }

    /// Waits until no direct operation is in flight. With a hold in place
    /// (the caller's duty), none can enter afterwards, so the caller may
    /// touch the mapping's bytes until it releases its hold.
    #[cfg(not(mmap_actor_loom))]
    pub(crate) async fn drain(&self) {
        debug_assert!(self.held(), "drain without a hold");
        loop {
            let notified = self.drained.notified();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Takes a hold and, if no direct operation is in flight, returns the
    /// exclusive right to replace the generation. Returns `None` (and keeps
    /// no hold) when one is in flight: wait and retry.
    pub(crate) fn try_exclusive(&self) -> Option<Exclusive<'_, M>> {
        let hold = self.take_hold();
        (self.in_flight() == 0).then_some(Exclusive { hold })
    }

    /// Takes a hold that is released when the guard drops, unless it is
    /// handed over ([`Hold::hand_over`]).
    pub(crate) fn take_hold(&self) -> Hold<'_, M> {
        self.hold();
        Hold { gate: self }
    }
}

/// A hold, released on drop.
pub(crate) struct Hold<'a, M> {
    gate: &'a Gate<M>,
}

impl<M> Hold<'_, M> {
    /// Keeps the hold past this guard: whoever now owns it releases it
    /// with [`Gate::unhold`] (a request's hold, released by the actor once
    /// it has served the request).
    pub(crate) fn hand_over(self) {
        std::mem::forget(self);
    }
}

impl<M> Drop for Hold<'_, M> {
    fn drop(&mut self) {
        self.gate.unhold();
    }
}

/// One direct operation inside the gate.
pub(crate) struct Entered<'a, M> {
    gate: &'a Gate<M>,
    slot: usize,
}

impl<M> Entered<'_, M> {
    /// Runs `f` on the current generation.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&Arc<M>) -> R) -> R {
        #[cfg(not(mmap_actor_loom))]
        {
            // SAFETY: this operation entered without seeing a hold, and the
            // only writer of `current` (`Exclusive::publish`) runs only after
            // a hold was taken and this operation has left (module docs).
            f(unsafe { &*self.gate.current.get() })
        }
        #[cfg(mmap_actor_loom)]
        {
            // SAFETY: as above; loom checks the claim.
            self.gate.current.with(|p| f(unsafe { &*p }))
        }
    }
}

impl<M> Drop for Entered<'_, M> {
    fn drop(&mut self) {
        let prev = self.gate.slots[self.slot].0.fetch_sub(1, Ordering::Release);
        #[cfg(not(mmap_actor_loom))]
        if prev == 1 && {
            // Pairs with the fence in `hold`: a holder that read this slot
            // before the decrement is seen here and woken.
            fence(Ordering::SeqCst);
            self.gate.holds.load(Ordering::Relaxed) != 0
        } {
            // This slot drained while someone holds: it may be waiting in
            // `drain`.
            self.gate.drained.notify_waiters();
        }
        #[cfg(mmap_actor_loom)]
        let _ = prev;
    }
}

/// The right to replace the generation: a hold with no direct operation in
/// flight. Dropping it releases the hold.
pub(crate) struct Exclusive<'a, M> {
    hold: Hold<'a, M>,
}

impl<M> Exclusive<'_, M> {
    /// Makes `next` the generation later direct operations use.
    /// Returns the previous one, for the caller to drop where an `munmap`
    /// may run.
    pub(crate) fn publish(&self, next: Arc<M>) -> Arc<M> {
        #[cfg(not(mmap_actor_loom))]
        {
            // SAFETY: a hold exists and no direct operation was in flight
            // after it was taken, so nothing reads `current` until the hold
            // is released (module docs); `&self` keeps the hold alive.
            unsafe { std::mem::replace(&mut *self.hold.gate.current.get(), next) }
        }
        #[cfg(mmap_actor_loom)]
        {
            // SAFETY: as above; loom checks the claim.
            self.hold
                .gate
                .current
                .with_mut(|p| unsafe { std::mem::replace(&mut *p, next) })
        }
    }
}

#[cfg(all(test, mmap_actor_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc as LoomArc;
    use loom::thread;

    /// Two direct operations race an actor that replaces the generation:
    /// loom checks that no read of `current` overlaps the write, and that a
    /// direct operation that gets in sees either the old or the new value.
    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        // Bounded preemption keeps the search to seconds while still
        // covering every interleaving with up to three forced switches.
        builder.preemption_bound = Some(3);
        builder.check(f);
    }

    #[test]
    fn publish_never_overlaps_a_direct_operation() {
        model(|| {
            let gate = LoomArc::new(Gate::new(Arc::new(1u32)));
            let readers: Vec<_> = (0..2)
                .map(|i| {
                    let gate = gate.clone();
                    thread::Builder::new()
                        .name("r".repeat(i + 1))
                        .spawn(move || {
                            if let Some(entered) = gate.enter() {
                                let v = entered.with(|m| **m);
                                assert!(v == 1 || v == 2);
                            }
                        })
                        .unwrap()
                })
                .collect();
            loop {
                match gate.try_exclusive() {
                    Some(exclusive) => {
                        drop(exclusive.publish(Arc::new(2)));
                        break;
                    }
                    None => thread::yield_now(),
                }
            }
            for r in readers {
                r.join().unwrap();
            }
            assert!(!gate.held());
            let entered = gate.enter().expect("open again");
            assert_eq!(entered.with(|m| **m), 2);
        });
    }

    /// A hold taken while an operation is inside makes the actor wait for it,
    /// and an operation arriving during the hold backs off.
    #[test]
    fn hold_excludes_new_entries() {
        model(|| {
            let gate = LoomArc::new(Gate::new(Arc::new(0u32)));
            gate.hold();
            let g2 = gate.clone();
            let t = thread::spawn(move || g2.enter().is_none());
            assert!(t.join().unwrap());
            gate.unhold();
            assert!(gate.enter().is_some());
        });
    }
}
