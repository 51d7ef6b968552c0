//! How small updates reach the page cache: stored through the mapping, or
//! written with `pwrite`. Both are copies into the same page-cache pages
//! (loads, leases and other mappings see the same bytes either way); they
//! differ in what a later flush writes to the device.
//!
//! A store through a shared mapping marks its whole page-cache *folio*
//! dirty, and Linux caches files in large folios (up to megabytes on ext4
//! once they were read or written sequentially): a flush after small
//! scattered stores writes megabytes per update. `pwrite` marks only the
//! blocks it covers. A store costs about a tenth of a `pwrite` syscall, so
//! the fast choice depends on the workload:
//!
//! - updates that are rarely flushed (throughput workloads): stores;
//! - updates that are flushed often (durable workloads: a log, a database
//!   page, update then flush): `pwrite`, so that each flush writes about what
//!   changed.
//!
//! The actor decides at each flush from the number of updates since the
//! previous one ([`next`]); `OpenOptions::write_through` fixes `pwrite`.
//! Copy-on-write opens always store (a `pwrite` would reach the file).

use std::sync::atomic::{AtomicU8, Ordering};

/// At most this many updates between flushes: flushes are frequent enough
/// that the write amplification of stores costs more than `pwrite` does.
pub(crate) const PWRITE_AT_MOST: u64 = 1024;

/// More than this many updates between flushes: back to stores.
pub(crate) const STORE_FROM: u64 = 16 * 1024;

/// The write method of one open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteMethod {
    /// Store through the mapping.
    Store,
    /// `pwrite` to the descriptor.
    Pwrite,
}

/// The method after a flush that followed `writes` updates.
pub(crate) fn next(current: WriteMethod, writes: u64) -> WriteMethod {
    match current {
        WriteMethod::Store if writes <= PWRITE_AT_MOST => WriteMethod::Pwrite,
        WriteMethod::Pwrite if writes > STORE_FROM => WriteMethod::Store,
        same => same,
    }
}

/// An open's write method, read by every small update and set by the actor.
#[derive(Debug)]
pub(crate) struct Method {
    current: AtomicU8,
    /// Fixed by the options (`write_through`, or copy-on-write).
    fixed: bool,
}

impl Method {
    /// `Store` to begin with, unless `fixed` to `method`.
    pub(crate) fn new(method: WriteMethod, fixed: bool) -> Method {
        Method {
            current: AtomicU8::new(method as u8),
            fixed,
        }
    }

    #[inline]
    pub(crate) fn get(&self) -> WriteMethod {
        match self.current.load(Ordering::Relaxed) {
            1 => WriteMethod::Pwrite,
            _ => WriteMethod::Store,
        }
    }

    /// Adapts to a flush that followed `writes` updates.
    pub(crate) fn flushed_after(&self, writes: u64) {
        if self.fixed {
            return;
        }
        let next = next(self.get(), writes);
        self.current.store(next as u8, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequent_flushes_choose_pwrite_and_rare_ones_stores() {
        use WriteMethod::*;
        assert_eq!(next(Store, 1), Pwrite);
        assert_eq!(next(Store, PWRITE_AT_MOST), Pwrite);
        assert_eq!(next(Store, PWRITE_AT_MOST + 1), Store);
        // Hysteresis: between the two bounds nothing changes.
        assert_eq!(next(Pwrite, STORE_FROM), Pwrite);
        assert_eq!(next(Pwrite, STORE_FROM + 1), Store);
        let fixed = Method::new(Pwrite, true);
        fixed.flushed_after(u64::MAX);
        assert_eq!(fixed.get(), Pwrite);
        let auto = Method::new(Store, false);
        auto.flushed_after(3);
        assert_eq!(auto.get(), Pwrite);
        auto.flushed_after(1 << 20);
        assert_eq!(auto.get(), Store);
    }
}
