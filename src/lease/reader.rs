//! [`AtomicReader`]: a load-only atomic inside the file, for mappings of any
//! mode.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::atomic::{sealed, AtomicTarget};
use super::Grant;

/// A load-only `AtomicU32` or `AtomicU64` inside the file, from
/// [`MappedFile::atomic_u32_reader`](crate::MappedFile::atomic_u32_reader)
/// or [`atomic_u64_reader`](crate::MappedFile::atomic_u64_reader).
///
/// It works on read-only mappings (where an [`AtomicView`](crate::AtomicView),
/// which can store, is refused): a process that only watches counters
/// another process updates needs no write access to the file. It coexists
/// with atomic views and readers of the same width; plain access to its
/// bytes waits until it is dropped, as for an atomic view.
///
/// Loads are plain loads of the width on the platforms this crate supports
/// (x86-64, aarch64), which is what makes them sound on read-only pages.
#[must_use = "a reader holds its bytes until dropped; dropping it at once releases them"]
#[clippy::has_significant_drop]
pub struct AtomicReader<T: AtomicTarget> {
    grant: Grant,
    _marker: PhantomData<fn() -> T>,
}

impl<T: AtomicTarget> AtomicReader<T> {
    pub(crate) fn new(grant: Grant) -> AtomicReader<T> {
        AtomicReader {
            grant,
            _marker: PhantomData,
        }
    }

    /// Offset of the atomic in the file.
    pub fn offset(&self) -> u64 {
        self.grant.offset
    }

    fn target(&self) -> &T {
        <T as sealed::Sealed>::from_bytes(&self.grant.bytes)
    }
}

impl AtomicReader<AtomicU32> {
    /// Loads the value (see [`AtomicU32::load`]).
    pub fn load(&self, order: Ordering) -> u32 {
        self.target().load(order)
    }
}

impl AtomicReader<AtomicU64> {
    /// Loads the value (see [`AtomicU64::load`]).
    pub fn load(&self, order: Ordering) -> u64 {
        self.target().load(order)
    }
}

impl<T: AtomicTarget> fmt::Debug for AtomicReader<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AtomicReader")
            .field("offset", &self.grant.offset)
            .field("len", &self.grant.bytes.len())
            .finish()
    }
}
