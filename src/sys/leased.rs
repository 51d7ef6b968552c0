//! [`LeasedBytes`]: a leased byte range of one generation, the only way safe
//! code outside `sys` gets references into mapped memory.

use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;

use super::Generation;
use crate::lease_table::Ticket;

/// A leased byte range of one generation.
///
/// Invariant: `[start, start + len)` lies inside `generation` (checked in
/// [`LeasedBytes::new`]), and the lease table has registered the range with
/// the kind of access the ticket names, so the references handed out below
/// do not alias a conflicting access in this process for as long as the
/// lease (which owns this value) lives. Atomic leases are aligned to their
/// width (checked in `new`).
pub(crate) struct LeasedBytes {
    /// Keeps the generation mapped for as long as the lease lives.
    _generation: Arc<Generation>,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: `LeasedBytes` only holds an `Arc<Generation>` (Send + Sync) and a
// pointer into it; which threads may touch the bytes is decided by the lease.
unsafe impl Send for LeasedBytes {}
// SAFETY: `&LeasedBytes` only gives `&[u8]` (shared lease: no writer exists)
// or atomics (atomic lease: only same-width atomic access exists).
unsafe impl Sync for LeasedBytes {}

impl LeasedBytes {
    /// Builds the range a ticket grants, writable when `mutable`. Returns
    /// `None` when the ticket's range is outside `generation`, asks to
    /// write a read-only generation, or is misaligned for its atomic width,
    /// so a bookkeeping bug cannot become an out-of-range or misaligned
    /// access.
    pub(crate) fn new(
        generation: Arc<Generation>,
        ticket: &Ticket,
        mutable: bool,
    ) -> Option<LeasedBytes> {
        let len = usize::try_from(ticket.len()).ok()?;
        let start = generation.start_of(ticket.offset(), len)?;
        if mutable && !generation.is_writable() {
            return None;
        }
        if let Some(align) = ticket.atomic_align() {
            if start % align != 0 || len % align != 0 {
                return None;
            }
        }
        let ptr = generation.ptr_at(start);
        Some(LeasedBytes {
            _generation: generation,
            ptr,
            len,
        })
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The generation the bytes are in.
    pub(crate) fn generation(&self) -> &Arc<Generation> {
        &self._generation
    }

    /// The bytes, for a shared or exclusive lease.
    pub(crate) fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr..ptr+len` is inside the generation kept alive by
        // `self._generation` (invariant); the lease that owns this value
        // excludes any writer of these bytes in this process while the
        // returned borrow of `self` lives. That no other process truncates
        // or writes the file meanwhile is the assumption `memmap2` makes
        // its constructors `unsafe` for; we take it on (`sys` module docs,
        // crate docs "Soundness").
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The bytes, writable, for an exclusive lease.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: as in `bytes`, and the exclusive lease excludes every other
        // reader and writer in this process; `&mut self` makes the borrow
        // unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// The bytes as `AtomicU32`s, for an atomic lease of width 4.
    pub(crate) fn atomics_u32(&self) -> &[AtomicU32] {
        if self.len == 0 {
            // A zero-length lease may point anywhere (an empty mapping's
            // dangling address): never make a typed reference from it.
            return &[];
        }
        debug_assert_eq!(self.ptr as usize % 4, 0);
        // SAFETY: `new` checked the start and length for 4-byte alignment
        // and the generation is page aligned, so `ptr` is aligned for
        // `AtomicU32`; the atomic lease excludes every non-atomic and
        // other-width access to these bytes in this process; the memory
        // lives as long as `self._generation`.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<AtomicU32>(), self.len / 4) }
    }

    /// The bytes as `AtomicU64`s, for an atomic lease of width 8.
    pub(crate) fn atomics_u64(&self) -> &[AtomicU64] {
        if self.len == 0 {
            return &[];
        }
        debug_assert_eq!(self.ptr as usize % 8, 0);
        // SAFETY: as in `atomics_u32`, with 8-byte alignment checked in `new`.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<AtomicU64>(), self.len / 8) }
    }
}
