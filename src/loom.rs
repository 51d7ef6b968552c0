//! One switch between the real primitives and loom's models of them, for
//! the code loom checks (the direct-access gate, `sys/gate.rs`).
//!
//! Normal builds use `std`'s atomics and cell and tokio's `Notify`. Test
//! builds with `RUSTFLAGS="--cfg mmap_actor_loom"` use loom's, so that the
//! gate's code is the same text in both and every path of it, the wake-up
//! of a waiting holder included, is what the model explores. Two
//! differences: how the protocol's store-then-load order is expressed
//! ([`SC`], [`sc_fence`]): `SeqCst` accesses in real builds, `SeqCst` fences
//! in the model, which loom can check; and the model checks the symmetric
//! protocol only, since loom has no model of `membarrier(2)` (real builds
//! use the asymmetric one where the kernel offers it: `sys::barrier`).

#[cfg(all(test, mmap_actor_loom))]
pub(crate) use self::model::*;
#[cfg(not(all(test, mmap_actor_loom)))]
pub(crate) use self::real::*;

#[cfg(not(all(test, mmap_actor_loom)))]
mod real {
    use std::future::Future;

    pub(crate) use std::sync::atomic::{AtomicU64, Ordering};

    /// The ordering of the accesses that must not be reordered with each
    /// other across threads (a store and a later load, on both sides of the
    /// gate's protocol): `SeqCst`, whose accesses have one total order. On
    /// x86 a `SeqCst` read-modify-write is one `lock`-prefixed instruction,
    /// a full barrier already, so no separate fence is needed.
    pub(crate) const SC: Ordering = Ordering::SeqCst;

    /// With `SeqCst` accesses, nothing: see [`SC`].
    #[inline(always)]
    pub(crate) fn sc_fence() {}

    /// `std::cell::UnsafeCell` with loom's access API, so that code using it
    /// reads the same in both builds.
    #[derive(Debug)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) fn new(value: T) -> UnsafeCell<T> {
            UnsafeCell(std::cell::UnsafeCell::new(value))
        }
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    /// The slot the calling thread uses, out of `owned` slots that belong to
    /// one thread each and one more (index `owned`) that threads share once
    /// the owned ones are taken; and whether the slot is the thread's own.
    ///
    /// A thread takes the lowest free owned slot the first time it asks and
    /// gives it back when it exits, so the threads of a runtime (its workers,
    /// the threads of its blocking pool that call in) get one each. The
    /// index is the same in every gate: a thread is in at most one direct
    /// operation at a time, whatever the gate.
    #[inline]
    pub(crate) fn thread_slot(owned: usize) -> (usize, bool) {
        let index = SLOT.get();
        if index < owned {
            return (index, true);
        }
        if index == UNSET {
            return take_slot(owned);
        }
        (owned, false)
    }

    /// No slot yet.
    const UNSET: usize = usize::MAX;
    /// The thread is exiting: the shared slot from now on.
    const GONE: usize = usize::MAX - 1;

    /// Bit `i`: owned slot `i` belongs to a live thread.
    static TAKEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    thread_local! {
        /// The thread's slot (no destructor, so it stays readable while
        /// other thread-locals are destroyed).
        static SLOT: std::cell::Cell<usize> = const { std::cell::Cell::new(UNSET) };
        /// Gives the owned slot back when the thread exits.
        static RETURN: SlotReturn = const { SlotReturn };
    }

    struct SlotReturn;

    impl Drop for SlotReturn {
        fn drop(&mut self) {
            let index = SLOT.replace(GONE);
            if index < 64 {
                TAKEN.fetch_and(!(1u64 << index), Ordering::Release);
            }
        }
    }

    #[cold]
    fn take_slot(owned: usize) -> (usize, bool) {
        debug_assert!(owned <= 64);
        // Registers the return first: a thread that cannot (it is already
        // exiting) keeps to the shared slot.
        if RETURN.try_with(|_| ()).is_err() {
            SLOT.set(GONE);
            return (owned, false);
        }
        let mut taken = TAKEN.load(Ordering::Relaxed);
        let index = loop {
            let free = (!taken).trailing_zeros() as usize;
            if free >= owned {
                break GONE;
            }
            match TAKEN.compare_exchange_weak(
                taken,
                taken | (1 << free),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => break free,
                Err(now) => taken = now,
            }
        };
        SLOT.set(index);
        if index < owned {
            (index, true)
        } else {
            (owned, false)
        }
    }

    /// Keeps the compiler from moving memory accesses across this point (the
    /// processor may still: see `sys::barrier`).
    #[inline(always)]
    pub(crate) fn compiler_fence() {
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    }

    /// Whether holders pair with direct operations through the process-wide
    /// barrier (`sys::barrier`).
    pub(crate) fn asymmetric() -> bool {
        crate::sys::barrier::asymmetric()
    }

    /// The holder's side of the asymmetric protocol.
    pub(crate) fn heavy_fence() {
        crate::sys::barrier::heavy();
    }

    /// A wake-up for tasks that wait for a condition another thread makes
    /// true.
    #[derive(Debug, Default)]
    pub(crate) struct Signal(tokio::sync::Notify);

    impl Signal {
        /// Wakes every listener registered before this call.
        pub(crate) fn notify_all(&self) {
            self.0.notify_waiters();
        }

        /// Registers a listener *now* (a `notify_all` after this call wakes
        /// it even before it is first polled), to be awaited after
        /// checking the condition.
        pub(crate) fn listen(&self) -> impl Future<Output = ()> + '_ {
            self.0.notified()
        }
    }
}

#[cfg(all(test, mmap_actor_loom))]
mod model {
    use std::future::Future;

    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};

    /// Loom does not model `SeqCst` accesses (it treats them as `AcqRel`,
    /// see its README) but does model `SeqCst` fences: the model gets the
    /// same guarantee, that of the two racing store-then-load sequences at
    /// least one sees the other's store, from a fence between each store
    /// and its load. Both formulations forbid exactly that outcome.
    pub(crate) const SC: Ordering = Ordering::SeqCst;

    pub(crate) fn sc_fence() {
        loom::sync::atomic::fence(Ordering::SeqCst);
    }

    /// Loom threads get slots by their number, so that two model threads
    /// use different slots and a third shares one: both cases are explored.
    /// No slot counts as a thread's own: the model checks the symmetric
    /// protocol (see `real::thread_slot` and `sys::barrier`).
    pub(crate) fn thread_slot(owned: usize) -> (usize, bool) {
        let id = format!("{:?}", loom::thread::current().id());
        let n: usize = id
            .chars()
            .filter(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(0);
        (n % owned.min(2), false)
    }

    pub(crate) fn compiler_fence() {}

    /// The model checks the symmetric protocol only.
    pub(crate) fn asymmetric() -> bool {
        false
    }

    pub(crate) fn heavy_fence() {
        unreachable!("the model never registers the process-wide barrier")
    }

    /// The model of `Signal`: an epoch counter. A listener that never sees
    /// the epoch move spins forever, which loom reports as a failure: a
    /// lost wake-up cannot pass unseen.
    #[derive(Debug)]
    pub(crate) struct Signal(loom::sync::atomic::AtomicUsize);

    impl Default for Signal {
        fn default() -> Self {
            Signal(loom::sync::atomic::AtomicUsize::new(0))
        }
    }

    impl Signal {
        pub(crate) fn notify_all(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }

        pub(crate) fn listen(&self) -> impl Future<Output = ()> + '_ {
            let seen = self.0.load(Ordering::SeqCst);
            async move {
                while self.0.load(Ordering::SeqCst) == seen {
                    loom::thread::yield_now();
                }
            }
        }
    }
}
