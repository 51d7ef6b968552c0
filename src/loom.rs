//! One switch between the real primitives and loom's models of them, for
//! the code loom checks (the direct-access gate, `sys/gate.rs`).
//!
//! Normal builds use `std`'s atomics and cell and tokio's `Notify`. Test
//! builds with `RUSTFLAGS="--cfg mmap_actor_loom"` use loom's, so that the
//! gate's code is the same text in both and every path of it, the wake-up
//! of a waiting holder included, is what the model explores. The one
//! difference is how the protocol's store-then-load order is expressed
//! ([`SC`], [`sc_fence`]): `SeqCst` accesses in real builds, `SeqCst` fences
//! in the model, which loom can check.

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

    /// Which of `slots` counters the calling thread uses: threads are dealt
    /// slots round robin, once each, so that threads of one runtime rarely
    /// share a cache line.
    pub(crate) fn slot_index(slots: usize) -> usize {
        use std::cell::Cell;
        use std::sync::atomic::AtomicUsize;
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
        }
        SLOT.with(|slot| {
            if slot.get() == usize::MAX {
                slot.set(NEXT.fetch_add(1, Ordering::Relaxed));
            }
            slot.get() % slots
        })
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
    pub(crate) fn slot_index(slots: usize) -> usize {
        let id = format!("{:?}", loom::thread::current().id());
        let n: usize = id
            .chars()
            .filter(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(0);
        n % slots.min(2)
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
